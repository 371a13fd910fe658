//! Client identity (DESIGN §2): the address usher believes, masked, turned into a
//! [`ClientKey`] that cannot be reversed and that changes every `hash_rotation`.
//!
//! The raw address exists only inside connection and request handling; everything that is
//! kept, counted or logged uses the key.

use crate::config::ClientConfig;
pub use crate::config::RealIpFrom;
use ring::hmac;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

/// A keyed hash of a masked client address: 128 bits, stable within one epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientKey(pub [u8; 16]);

/// Hashes as its first 8 bytes: see [`KeyHasher`].
impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(first));
    }
}

/// A [`ClientKey`] is already a keyed hash, unpredictable without the secret, so a table
/// keyed by it needs no keyed second hash (SipHash would cost more than the lookup): the
/// key's first 8 bytes go through a few-instruction mix (murmur3's finaliser), which also
/// spreads the non-uniform keys of tests and benches. Anything else written is folded in,
/// FNV-style.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The hasher of tables keyed by [`ClientKey`].
pub type KeyHashing = BuildHasherDefault<KeyHasher>;

/// The last keys computed on one connection. A keep-alive connection sends many requests from
/// one address, and each would otherwise cost an HMAC (two for IPv6). It lives exactly as
/// long as the connection, which holds the address anyway.
#[derive(Default)]
pub struct KeyCache(Mutex<Option<(IpAddr, u64, Keys)>>);

/// A client's keys: its own, and for IPv6 its site's (see `client.ipv6_site_prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    pub client: ClientKey,
    pub site: Option<ClientKey>,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Derives client keys. Every node with the same secret derives the same key in the same
/// epoch without talking to the others; a past epoch's key is never kept. Holds a small
/// cache behind a lock: give each worker its own `Identity` rather than sharing one.
pub struct Identity {
    /// Keys the per-epoch derivation; never used on addresses directly.
    root: hmac::Key,
    rotation_secs: u64,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    ipv6_site_prefix: u8,
    current: Mutex<Option<(u64, hmac::Key)>>,
}

impl Identity {
    pub fn new(secret: &[u8], config: &ClientConfig) -> Self {
        Self {
            root: hmac::Key::new(hmac::HMAC_SHA256, secret),
            rotation_secs: config.hash_rotation.as_secs().max(60),
            ipv4_prefix: config.ipv4_prefix,
            ipv6_prefix: config.ipv6_prefix,
            ipv6_site_prefix: config.ipv6_site_prefix,
            current: Mutex::new(None),
        }
    }

    /// [`Identity::keys`], remembered in the connection's `cache` for the rest of the epoch.
    pub fn key_cached(&self, cache: &KeyCache, addr: IpAddr, now_secs: u64) -> Keys {
        let epoch = now_secs / self.rotation_secs;
        let mut last = cache.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match *last {
            Some((a, e, keys)) if a == addr && e == epoch => keys,
            _ => {
                let keys = self.keys(addr, now_secs);
                *last = Some((addr, epoch, keys));
                keys
            }
        }
    }

    /// The client's key and, for IPv6, its site's key.
    pub fn keys(&self, addr: IpAddr, now_secs: u64) -> Keys {
        let site = match addr.to_canonical() {
            IpAddr::V4(_) => None,
            IpAddr::V6(_) => Some(self.hash(mask(addr, 32, self.ipv6_site_prefix), b'S', now_secs)),
        };
        Keys { client: self.key(addr, now_secs), site }
    }

    /// The key of `addr` at `now_secs` (Unix time).
    pub fn key(&self, addr: IpAddr, now_secs: u64) -> ClientKey {
        let masked = mask(addr, self.ipv4_prefix, self.ipv6_prefix);
        let family = if masked.is_ipv4() { 4 } else { 6 };
        self.hash(masked, family, now_secs)
    }

    /// The keyed hash of a masked address; `tag` keeps a site's key apart from a client's.
    fn hash(&self, masked: IpAddr, tag: u8, now_secs: u64) -> ClientKey {
        let epoch = now_secs / self.rotation_secs;
        let mut octets = [0u8; 17];
        octets[0] = tag;
        let bytes: &[u8] = match masked {
            IpAddr::V4(v4) => {
                octets[1..5].copy_from_slice(&v4.octets());
                &octets[..5]
            }
            IpAddr::V6(v6) => {
                octets[1..17].copy_from_slice(&v6.octets());
                &octets[..17]
            }
        };
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = match &*current {
            Some((e, key)) if *e == epoch => key,
            _ => {
                let derived =
                    hmac::sign(&self.root, &[b"usher/client-key/v1/".as_slice(), &epoch.to_be_bytes()].concat());
                &current.insert((epoch, hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))).1
            }
        };
        let tag = hmac::sign(key, bytes);
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        ClientKey(out)
    }
}

/// IPv4-mapped IPv6 becomes IPv4; then the address is cut to its prefix, so that one IPv6
/// host cannot rotate through its /64.
pub fn mask(addr: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX.checked_shl(32 - u32::from(ipv4_prefix.min(32))).unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - u32::from(ipv6_prefix.min(128))).unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn identity() -> Identity {
        Identity::new(&[7u8; 32], &Config::parse("").expect("defaults").client)
    }

    #[test]
    fn a_connection_cache_gives_the_same_key_and_follows_address_and_epoch() {
        let config = crate::config::Config::parse("").expect("config").client;
        let identity = Identity::new(b"a-secret-of-at-least-32-bytes-long!!", &config);
        let cache = KeyCache::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().expect("ip"), "192.0.2.2".parse().expect("ip"));
        let now = 1_800_000_000;
        assert_eq!(identity.key_cached(&cache, a, now), identity.keys(a, now));
        assert_eq!(identity.key_cached(&cache, a, now + 1), identity.keys(a, now));
        assert_eq!(
            identity.key_cached(&cache, b, now),
            identity.keys(b, now),
            "another address is not served from the cache"
        );
        let later = now + config.hash_rotation.as_secs();
        assert_eq!(identity.key_cached(&cache, b, later), identity.keys(b, later));
        assert_ne!(identity.key(b, later), identity.key(b, now), "the key rotates with the epoch");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_same_client_as_ipv4() {
        let id = identity();
        let v4: IpAddr = "203.0.113.9".parse().expect("ip");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("ip");
        assert_eq!(id.key(v4, 1000), id.key(mapped, 1000));
    }

    #[test]
    fn one_ipv6_64_is_one_client_and_another_64_is_not() {
        let id = identity();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(id.key(a, 0), id.key(b, 0));
        assert_ne!(id.key(a, 0), id.key(c, 0));
    }

    #[test]
    fn ipv6_clients_of_one_48_share_a_site_key_and_ipv4_clients_have_none() {
        let id = identity();
        let a = id.keys("2001:db8:1:2::1".parse().expect("ip"), 0);
        let b = id.keys("2001:db8:1:ffff::1".parse().expect("ip"), 0);
        let c = id.keys("2001:db8:2:2::1".parse().expect("ip"), 0);
        assert_ne!(a.client, b.client, "two /64s are two clients");
        assert_eq!(a.site, b.site, "of one site");
        assert_ne!(a.site, c.site, "another /48 is another site");
        assert_ne!(a.site, Some(a.client), "a site's key is never a client's");
        assert_eq!(id.keys("192.0.2.1".parse().expect("ip"), 0).site, None);
    }

    #[test]
    fn keys_change_with_the_epoch_and_the_secret() {
        let id = identity();
        let ip: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(id.key(ip, 10), id.key(ip, 20));
        assert_ne!(id.key(ip, 10), id.key(ip, 10 + 24 * 3600));
        let other = Identity::new(&[8u8; 32], &Config::parse("").expect("defaults").client);
        assert_ne!(id.key(ip, 10), other.key(ip, 10));
    }

    #[test]
    fn masking_keeps_only_the_prefix() {
        assert_eq!(mask("10.1.2.3".parse().expect("ip"), 24, 64), "10.1.2.0".parse::<IpAddr>().expect("ip"));
        assert_eq!(mask("10.1.2.3".parse().expect("ip"), 32, 64), "10.1.2.3".parse::<IpAddr>().expect("ip"));
        assert_eq!(mask("2001:db8::1".parse().expect("ip"), 32, 48), "2001:db8::".parse::<IpAddr>().expect("ip"));
    }
}

/// Where a request came from, as usher believes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address: the peer's, or the one a trusted proxy vouched for.
    pub ip: IpAddr,
    /// The client used TLS: to usher, or (said a trusted proxy) to the proxy in front.
    pub https: bool,
}

/// Whom usher believes about the client's address: peers in `trusted`, through `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSource {
    pub trusted: Vec<ipnet::IpNet>,
    pub from: RealIpFrom,
}

impl ClientSource {
    pub fn new(config: &ClientConfig) -> Self {
        Self { trusted: config.trusted_proxies.clone(), from: config.real_ip_from }
    }

    /// Whether a connection from `peer` is one client's own (the client itself, or a PROXY
    /// protocol connection, which a proxy opens per client), not a trusted proxy's shared one.
    pub fn own_connection(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.is_empty()
            || self.from == RealIpFrom::ProxyProtocol
            || !self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// Resolves the client behind `peer` (DESIGN §2). Only a peer inside `source.trusted` is
/// believed, and only through `source.from`; then the right-most address that is not itself
/// trusted is the client. Unparseable entries end the walk and the peer is used: garbage
/// never becomes an identity. With the PROXY protocol, `peer` is already the client.
pub fn client_addr(peer: IpAddr, tls: bool, headers: &http::HeaderMap, source: &ClientSource) -> ClientAddr {
    let peer = peer.to_canonical();
    if source.own_connection(peer) {
        return ClientAddr { ip: peer, https: tls };
    }
    let trusted = &source.trusted;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let split = |name| {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.to_str().map(|t| t.split(',').collect::<Vec<_>>()).unwrap_or_else(|_| vec!["\u{0}"]))
            .collect::<Vec<&str>>()
    };
    let (chain, https): (Vec<Option<IpAddr>>, bool) = match source.from {
        RealIpFrom::Forwarded => {
            let elements = split(http::header::FORWARDED.as_str());
            let proto = elements.last().and_then(|e| forwarded_param(e, "proto"));
            let https = proto.is_some_and(|p| p.eq_ignore_ascii_case("https"));
            (elements.into_iter().map(|e| forwarded_param(e, "for").and_then(parse_node)).collect(), https)
        }
        _ => {
            let https = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            (split("x-forwarded-for").into_iter().map(parse_node).collect(), https)
        }
    };
    let https = tls || https;
    let mut client = peer;
    for entry in chain.iter().rev() {
        match entry {
            None => return ClientAddr { ip: peer, https },
            Some(ip) if is_trusted(ip) => client = *ip,
            Some(ip) => return ClientAddr { ip: *ip, https },
        }
    }
    ClientAddr { ip: client, https }
}

/// One parameter (`for`, `proto`) of one `Forwarded` element, unquoted.
fn forwarded_param<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case(name).then(|| {
            let value = value.trim();
            value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
        })
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`,
/// optionally quoted, IPv6 optionally with a `%zone`. Anything else (`unknown`, obfuscated
/// identifiers, junk) is `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text).trim();
    let host = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok())) {
            return None;
        }
        inside
    } else if text.matches(':').count() == 1 {
        let (ip, port) = text.split_once(':')?;
        port.parse::<u16>().ok()?;
        ip
    } else {
        text
    };
    let host = host.split_once('%').map_or(host, |(ip, _zone)| ip);
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod client_addr_tests {
    use super::*;
    use http::HeaderMap;

    fn from(list: &[&str], from: RealIpFrom) -> ClientSource {
        ClientSource { trusted: list.iter().map(|n| n.parse().expect("cidr")).collect(), from }
    }

    fn xff(list: &[&str]) -> ClientSource {
        from(list, RealIpFrom::XForwardedFor)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        for from in [RealIpFrom::XForwardedFor, RealIpFrom::Forwarded] {
            let got = client_addr(ip("198.51.100.7"), false, &h, &self::from(&["10.0.0.0/8"], from));
            assert_eq!(got.ip, ip("198.51.100.7"));
        }
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let trusted = xff(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.1.1.1"), ("x-forwarded-for", "10.2.2.2")]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &trusted).ip, ip("203.0.113.5"));
    }

    #[test]
    fn forwarded_with_quoted_ipv6_ports_and_zones() {
        let trusted = from(&["10.0.0.0/8"], RealIpFrom::Forwarded);
        let h = headers(&[("forwarded", r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711";by=10.0.0.1"#)]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &trusted).ip, ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", r#"For="192.0.2.61:8080""#)]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &trusted).ip, ip("192.0.2.61"));
        let h = headers(&[("forwarded", "for=192.0.2.9;proto=https")]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &trusted), ClientAddr { ip: ip("192.0.2.9"), https: true });
        let h = headers(&[("x-forwarded-for", "fe80::1%eth0")]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &xff(&["10.0.0.0/8"])).ip, ip("fe80::1"));
    }

    #[test]
    fn garbage_falls_back_to_the_peer() {
        let trusted = xff(&["10.0.0.0/8"]);
        for junk in ["unknown", "_hidden", "1.2.3", "[::1", "1.2.3.4:99999", "<script>", ""] {
            let h = headers(&[("x-forwarded-for", junk)]);
            assert_eq!(client_addr(ip("10.9.9.9"), false, &h, &trusted).ip, ip("10.9.9.9"), "{junk:?}");
        }
    }

    #[test]
    fn ipv4_mapped_peers_and_proto_from_trusted_proxies() {
        let trusted = xff(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]);
        let got = client_addr(ip("::ffff:10.0.0.1"), false, &h, &trusted);
        assert_eq!(got, ClientAddr { ip: ip("203.0.113.9"), https: true });
        let untrusted = client_addr(ip("::ffff:198.51.100.1"), false, &h, &trusted);
        assert_eq!(untrusted, ClientAddr { ip: ip("198.51.100.1"), https: false });
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        // A load balancer that appends X-Forwarded-For passes the client's own Forwarded on.
        let h = headers(&[("forwarded", "for=10.9.9.9"), ("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &xff(&["10.0.0.0/8"])).ip, ip("203.0.113.5"));
        let h = headers(&[("forwarded", "for=203.0.113.6"), ("x-forwarded-for", "10.9.9.9")]);
        let forwarded = from(&["10.0.0.0/8"], RealIpFrom::Forwarded);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &forwarded).ip, ip("203.0.113.6"));
        // Only Forwarded sent, X-Forwarded-For believed: the peer, not the spoofed Forwarded.
        let h = headers(&[("forwarded", "for=198.51.100.1")]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &xff(&["10.0.0.0/8"])).ip, ip("10.0.0.1"));
        // With the PROXY protocol the listener already put the client in `peer`.
        let proxy = from(&["10.0.0.0/8"], RealIpFrom::ProxyProtocol);
        let h = headers(&[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_addr(ip("10.0.0.1"), false, &h, &proxy).ip, ip("10.0.0.1"));
    }
}
