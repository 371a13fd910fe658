//! Client identity (DESIGN §2): the address usher believes, masked, turned into a
//! [`ClientKey`] that cannot be reversed and that changes every `hash_rotation`.
//!
//! The raw address exists only inside request handling; everything that is kept, counted
//! or logged uses the key.

use crate::config::ClientConfig;
use ring::hmac;
use std::net::IpAddr;
use std::sync::Mutex;

/// A keyed hash of a masked client address: 128 bits, stable within one epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(pub [u8; 16]);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// Derives client keys. Every node with the same secret derives the same key in the same
/// epoch without talking to the others; a past epoch's key is never kept.
pub struct Identity {
    /// Keys the per-epoch derivation; never used on addresses directly.
    root: hmac::Key,
    rotation_secs: u64,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    current: Mutex<Option<(u64, hmac::Key)>>,
}

impl Identity {
    pub fn new(secret: &[u8], config: &ClientConfig) -> Self {
        Self {
            root: hmac::Key::new(hmac::HMAC_SHA256, secret),
            rotation_secs: config.hash_rotation.as_secs().max(60),
            ipv4_prefix: config.ipv4_prefix,
            ipv6_prefix: config.ipv6_prefix,
            current: Mutex::new(None),
        }
    }

    /// The key of `addr` at `now_secs` (Unix time).
    pub fn key(&self, addr: IpAddr, now_secs: u64) -> ClientKey {
        let masked = mask(addr, self.ipv4_prefix, self.ipv6_prefix);
        let epoch = now_secs / self.rotation_secs;
        let mut octets = [0u8; 17];
        let bytes: &[u8] = match masked {
            IpAddr::V4(v4) => {
                octets[0] = 4;
                octets[1..5].copy_from_slice(&v4.octets());
                &octets[..5]
            }
            IpAddr::V6(v6) => {
                octets[0] = 6;
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
