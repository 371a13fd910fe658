//! The file as serde reads it, and the checks that turn it into a [`Config`].

use super::{
    AdaptiveConfig, AdminConfig, ChallengeConfig, ClientConfig, Config, ConfigError, ConfigErrors, LimitsConfig,
    ListenConfig, RealIpFrom, RedisTarget, RoomConfig, RoomMode, RouteLimit, SecretConfig, StoreConfig, TlsFiles,
    UpstreamAddress, UpstreamConfig, duration,
};
use crate::operators::{Operator, Role};
use crate::pages::PageTemplate;
use crate::upstream_tls::{UpstreamProtocol, UpstreamTls};
use ipnet::IpNet;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Away after three of the longest poll interval the page is told (10 s): a waiter who
/// misses that many polls is skipped, which costs it nothing while its place is held.
const DEFAULT_WAITER_TTL: Duration = Duration::from_secs(30);
/// A waiter whose turn came polls every 2 s; half a minute is 15 polls. An unclaimed turn
/// only returns its slot to the budget (the place is held), so the window can be short and
/// pending grants block `max_active` for little time.
const DEFAULT_CLAIM_WINDOW: Duration = Duration::from_secs(30);
/// Twice what Cloudflare keeps (5 min after the last refresh): a locked phone, a tunnel.
const DEFAULT_HOLD: Duration = Duration::from_secs(600);
const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);
/// Up to three in ten grants left unclaimed are made up for (release up to about 1.43×): a
/// share above that is more likely a fault (the page broken, a claim path blocked) than
/// people, and should page someone rather than be admitted around.
const DEFAULT_NO_SHOW_BOUND: f64 = 0.3;

/// Keys that serde did not recognise; reported as errors, not silently ignored.
type Unknown = BTreeMap<String, toml::Value>;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawConfig {
    listen: RawListen,
    admin: RawAdmin,
    secret: RawSecret,
    upstream: RawUpstream,
    client: RawClient,
    store: RawStore,
    limits: RawLimits,
    room: Vec<RawRoom>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawListen {
    http: Option<String>,
    https: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    workers: Option<i64>,
    max_connections: Option<i64>,
    max_connections_per_client: Option<i64>,
    idle_timeout: Option<String>,
    header_read_timeout: Option<String>,
    shutdown_grace: Option<String>,
    max_header_bytes: Option<i64>,
    proxy_protocol: Option<bool>,
    cookie_secure: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAdmin {
    listen: Option<String>,
    header_read_timeout: Option<String>,
    token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    metrics: Option<String>,
    audit_file: Option<PathBuf>,
    operator: Vec<RawOperator>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawOperator {
    name: Option<String>,
    role: Option<String>,
    token_sha256: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSecret {
    file: Option<PathBuf>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUpstream {
    addresses: Option<Vec<String>>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    idle_timeout: Option<String>,
    pool_per_worker: Option<i64>,
    rest: Option<String>,
    forward_client_ip: Option<bool>,
    body_idle_timeout: Option<String>,
    tunnel_idle_timeout: Option<String>,
    upgrade_protocols: Option<Vec<String>>,
    max_connections_per_worker: Option<i64>,
    max_tunnels_per_worker: Option<i64>,
    tls: Option<bool>,
    server_name: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    protocol: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawClient {
    trusted_proxies: Vec<String>,
    real_ip_from: Option<String>,
    ipv4_prefix: Option<i64>,
    ipv6_prefix: Option<i64>,
    ipv6_site_prefix: Option<i64>,
    hash_rotation: Option<String>,
    allow: Vec<String>,
    deny: Vec<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawStore {
    kind: Option<String>,
    url: Option<String>,
    cluster: Option<Vec<String>>,
    /// Not keys: read only to point at `store.url`, where a Sentinel setup is written.
    sentinels: Option<toml::Value>,
    master_name: Option<toml::Value>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawLimits {
    requests_per_second: Option<i64>,
    burst: Option<i64>,
    site_requests_per_second: Option<i64>,
    site_request_burst: Option<i64>,
    polls_per_second: Option<i64>,
    poll_burst: Option<i64>,
    site_joins_per_minute: Option<i64>,
    site_join_burst: Option<i64>,
    joins_per_minute: Option<i64>,
    join_burst: Option<i64>,
    max_tracked_clients: Option<i64>,
    tickets_per_client: Option<i64>,
    route: Vec<RawRouteLimit>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRouteLimit {
    method: Option<String>,
    path: Option<String>,
    per_minute: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRoom {
    name: Option<String>,
    hosts: Vec<String>,
    paths: Vec<String>,
    bypass: Vec<String>,
    max_active: Option<i64>,
    admit_per_minute: Option<i64>,
    session_idle: Option<String>,
    session_max: Option<String>,
    waiter_ttl: Option<String>,
    claim_window: Option<String>,
    hold: Option<String>,
    mode: Option<String>,
    opens_at: Option<String>,
    logout_path: Option<String>,
    message: Option<String>,
    tick: Option<String>,
    template: Option<String>,
    adaptive: Option<RawAdaptive>,
    no_show_bound: Option<f64>,
    challenge: Option<RawChallenge>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawChallenge {
    bits: Option<i64>,
    puzzles: Option<i64>,
    max_bits: Option<i64>,
    ttl: Option<String>,
    noscript_wait: Option<String>,
    busy_per_second: Option<i64>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAdaptive {
    target_latency: Option<String>,
    quantile: Option<f64>,
    error_budget: Option<f64>,
    min_per_minute: Option<i64>,
    max_per_minute: Option<i64>,
    period: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Collects errors while values are checked, so that one bad key does not hide the next.
#[derive(Default)]
struct Checker {
    errors: Vec<ConfigError>,
}

impl Checker {
    fn error(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError { key: key.into(), reason: reason.into() });
    }

    fn unknown(&mut self, section: &str, unknown: &Unknown) {
        for key in unknown.keys() {
            let full = if section.is_empty() { key.clone() } else { format!("{section}.{key}") };
            self.error(full, "unknown key");
        }
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        text.parse()
            .map_err(|_| self.error(key, format!("{text:?} is not a valid socket address (e.g. \"0.0.0.0:8080\")")))
            .ok()
    }

    fn duration(&mut self, key: &str, text: Option<&str>, default: Duration) -> Duration {
        match text.map(duration::parse) {
            None => default,
            Some(Ok(d)) if d.is_zero() => {
                self.error(key, "must be longer than zero");
                default
            }
            Some(Ok(d)) => d,
            Some(Err(reason)) => {
                self.error(key, reason);
                default
            }
        }
    }

    /// An integer in `min..=max`, or the default when absent.
    fn int(&mut self, key: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.error(key, format!("{v} is out of range ({min} to {max})"));
                default
            }
        }
    }

    /// `Upgrade` protocol names (RFC 9110 tokens, without a version), lowercased; the
    /// default passes WebSocket only.
    fn upgrade_protocols(&mut self, key: &str, items: Option<&[String]>) -> Vec<String> {
        let Some(items) = items else { return vec!["websocket".to_string()] };
        let tchar = |ch: char| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch);
        let mut names = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.is_empty() || !item.chars().all(tchar) {
                self.error(format!("{key}[{i}]"), format!("{item:?} is not a protocol name (e.g. \"websocket\")"));
            } else {
                names.push(item.to_ascii_lowercase());
            }
        }
        names
    }

    fn cidrs(&mut self, key: &str, items: &[String]) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let parsed = item.parse::<IpNet>().or_else(|_| item.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => self.error(format!("{key}[{i}]"), format!("{item:?} is not an IP address or CIDR")),
            }
        }
        nets
    }

    /// Path prefixes in canonical form (see [`crate::request::path`]), so that they are
    /// compared with requests' canonical paths: `/Static/%7e/` is kept as `/Static/~/`.
    fn path_prefixes(&mut self, key: &str, items: &[String]) -> Vec<String> {
        items.iter().enumerate().filter_map(|(i, item)| self.path_prefix(&format!("{key}[{i}]"), item)).collect()
    }

    fn path_prefix(&mut self, key: &str, item: &str) -> Option<String> {
        if !item.starts_with('/') {
            self.error(key, format!("{item:?} must start with \"/\""));
            return None;
        }
        match crate::canonical::path::canonical(item) {
            Ok(path) => Some(path.into_owned()),
            Err(e) => {
                self.error(key, format!("{item:?} is not a usable path prefix: {e}"));
                None
            }
        }
    }
}

/// `[[admin.operator]]`: each with a printable name of its own, a role, and exactly one of
/// `token_sha256` and `token_file` (read now, so a reload re-reads it). Two operators with one
/// token would make the log's "who" a guess, so that is an error too.
fn operators(c: &mut Checker, raw: &[RawOperator]) -> Vec<Operator> {
    let mut out: Vec<Operator> = Vec::with_capacity(raw.len());
    for (i, o) in raw.iter().enumerate() {
        let key = format!("admin.operator[{i}]");
        c.unknown(&key, &o.unknown);
        let name = match o.name.as_deref() {
            None => {
                c.error(format!("{key}.name"), "is required");
                continue;
            }
            Some(name) if !crate::operators::valid_name(name) => {
                c.error(format!("{key}.name"), "must be 1 to 64 letters, digits, '.', '_', '-' or '@'");
                continue;
            }
            Some(crate::operators::SHORTCUT_NAME) => {
                let why = format!("{:?} is the name of USHER_ADMIN_TOKEN", crate::operators::SHORTCUT_NAME);
                c.error(format!("{key}.name"), why);
                continue;
            }
            Some(name) if out.iter().any(|other| other.name == name) => {
                c.error(format!("{key}.name"), format!("{name:?} is already an operator"));
                continue;
            }
            Some(name) => name.to_string(),
        };
        let Some(role) = o.role.as_deref().and_then(Role::parse) else {
            c.error(format!("{key}.role"), "must be one of viewer, operator, admin");
            continue;
        };
        let token_sha256 = match (&o.token_sha256, &o.token_file) {
            (Some(hash), None) => match crate::operators::parse_sha256(hash) {
                Some(hash) => hash,
                None => {
                    let why = "must be the 64 hex digits of the token's SHA-256 (usher admin token new prints it)";
                    c.error(format!("{key}.token_sha256"), why);
                    continue;
                }
            },
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(text) if text.trim().len() >= crate::secrets::MIN_SECRET_BYTES => {
                    crate::operators::token_sha256(text.trim())
                }
                Ok(text) => {
                    let why = format!(
                        "{} holds a token of {} bytes; at least {} are required",
                        path.display(),
                        text.trim().len(),
                        crate::secrets::MIN_SECRET_BYTES
                    );
                    c.error(format!("{key}.token_file"), why);
                    continue;
                }
                Err(e) => {
                    c.error(format!("{key}.token_file"), format!("cannot read {}: {e}", path.display()));
                    continue;
                }
            },
            _ => {
                c.error(format!("{key}.token_sha256"), "exactly one of token_sha256 and token_file is required");
                continue;
            }
        };
        if let Some(other) = out.iter().find(|other| other.token_sha256 == token_sha256) {
            c.error(
                format!("{key}.token_sha256"),
                format!("is the same token as {:?}'s: give each their own", other.name),
            );
            continue;
        }
        out.push(Operator { name, role, token_sha256 });
    }
    out
}

/// `admin.tls_cert` and `admin.tls_key`, both or neither, loaded once to check them.
fn admin_tls(c: &mut Checker, a: &RawAdmin) -> Option<TlsFiles> {
    let files = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => TlsFiles { cert: cert.clone(), key: key.clone() },
        (None, None) => return None,
        (Some(_), None) => {
            c.error("admin.tls_key", "is required with admin.tls_cert");
            return None;
        }
        (None, Some(_)) => {
            c.error("admin.tls_cert", "is required with admin.tls_key");
            return None;
        }
    };
    match crate::tls::load_admin_config(&files) {
        Ok(_) => Some(files),
        Err(e) => {
            c.error(e.key_in("admin"), e.to_string());
            None
        }
    }
}

fn upstream_protocol(c: &mut Checker, text: Option<&str>) -> UpstreamProtocol {
    match text {
        None | Some("auto") => UpstreamProtocol::Auto,
        Some("http1") => UpstreamProtocol::Http1,
        Some("http2") => UpstreamProtocol::Http2,
        Some(other) => {
            c.error("upstream.protocol", format!("{other:?} is not one of \"auto\", \"http1\", \"http2\""));
            UpstreamProtocol::Auto
        }
    }
}

/// `upstream.tls` and the keys that go with it; each file is loaded once here so that a bad
/// bundle or key is a configuration error naming its key, not a failure at the first request.
fn upstream_tls(
    c: &mut Checker,
    u: &RawUpstream,
    first: Option<&UpstreamAddress>,
    protocol: UpstreamProtocol,
) -> Option<UpstreamTls> {
    if u.tls != Some(true) {
        for (key, set) in [
            ("upstream.server_name", u.server_name.is_some()),
            ("upstream.ca_file", u.ca_file.is_some()),
            ("upstream.client_cert", u.client_cert.is_some()),
            ("upstream.client_key", u.client_key.is_some()),
        ] {
            if set {
                c.error(key, "needs upstream.tls = true");
            }
        }
        return None;
    }
    let name = u.server_name.clone().or_else(|| first.map(|a| a.host.clone()));
    let server_name = match name.map(|n| (ServerName::try_from(n.clone()), n)) {
        Some((Ok(server_name), _)) => server_name,
        Some((Err(_), n)) => {
            c.error("upstream.server_name", format!("{n:?} is not a DNS name or IP address"));
            return None;
        }
        None => {
            c.error("upstream.server_name", "is required with upstream.tls when there is no upstream address");
            return None;
        }
    };
    let client = match (&u.client_cert, &u.client_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
        (None, None) => None,
        (Some(_), None) => {
            c.error("upstream.client_key", "is required with upstream.client_cert");
            return None;
        }
        (None, Some(_)) => {
            c.error("upstream.client_cert", "is required with upstream.client_key");
            return None;
        }
    };
    let tls = UpstreamTls { server_name, ca_file: u.ca_file.clone(), client };
    match crate::upstream_tls::client_config(&tls, protocol) {
        Ok(_) => Some(tls),
        Err(e) => {
            c.error(e.key(), e.to_string());
            None
        }
    }
}

fn upstream_address(text: &str) -> Option<UpstreamAddress> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(UpstreamAddress { host: addr.ip().to_string(), port: addr.port() });
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid_host.then(|| UpstreamAddress { host: host.to_ascii_lowercase(), port })
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut c = Checker::default();
    c.unknown("", &raw.unknown);

    // [listen]
    let l = &raw.listen;
    c.unknown("listen", &l.unknown);
    let mut http = l.http.as_deref().and_then(|t| c.socket_addr("listen.http", t));
    let https = l.https.as_deref().and_then(|t| c.socket_addr("listen.https", t));
    if l.http.is_none() && l.https.is_none() {
        http = Some(SocketAddr::from(([0, 0, 0, 0], 8080)));
    }
    let tls = match (&l.tls_cert, &l.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
        (None, None) => None,
        (Some(_), None) => {
            c.error("listen.tls_key", "is required with listen.tls_cert");
            None
        }
        (None, Some(_)) => {
            c.error("listen.tls_cert", "is required with listen.tls_key");
            None
        }
    };
    if l.https.is_some() && tls.is_none() && l.tls_cert.is_none() && l.tls_key.is_none() {
        c.error("listen.https", "needs listen.tls_cert and listen.tls_key");
    }
    if let Some(files) = &tls {
        if let Err(e) = crate::tls::load_server_config(files) {
            c.error(e.key(), e.to_string());
        }
    }
    let listen = ListenConfig {
        http,
        https,
        tls,
        workers: c.int("listen.workers", l.workers, 0, 0, 1024) as usize,
        max_connections: c.int("listen.max_connections", l.max_connections, 50_000, 1, 10_000_000) as usize,
        // Carrier-grade NAT puts a few hundred phones behind one IPv4 address, each with one
        // HTTP/2 connection or a few HTTP/1.1 ones (README, "Carrier-grade NAT").
        max_connections_per_client: c.int(
            "listen.max_connections_per_client",
            l.max_connections_per_client,
            1000,
            1,
            10_000_000,
        ) as usize,
        idle_timeout: c.duration("listen.idle_timeout", l.idle_timeout.as_deref(), Duration::from_secs(30)),
        header_read_timeout: c.duration(
            "listen.header_read_timeout",
            l.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        shutdown_grace: c.duration("listen.shutdown_grace", l.shutdown_grace.as_deref(), Duration::from_secs(30)),
        max_header_bytes: c.int("listen.max_header_bytes", l.max_header_bytes, 16 * 1024, 8 * 1024, 1024 * 1024)
            as usize,
        proxy_protocol: l.proxy_protocol.unwrap_or(false),
        cookie_secure_always: match l.cookie_secure.as_deref() {
            None | Some("auto") => false,
            Some("always") => true,
            Some(other) => {
                c.error("listen.cookie_secure", format!("{other:?} is not \"auto\" or \"always\""));
                false
            }
        },
    };
    let listen =
        ListenConfig { workers: if listen.workers == 0 { default_workers() } else { listen.workers }, ..listen };

    // [admin]
    c.unknown("admin", &raw.admin.unknown);
    let admin_listen = raw.admin.listen.as_deref().unwrap_or("127.0.0.1:9090");
    let admin = AdminConfig {
        listen: c.socket_addr("admin.listen", admin_listen).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
        header_read_timeout: c.duration(
            "admin.header_read_timeout",
            raw.admin.header_read_timeout.as_deref(),
            Duration::from_secs(10),
        ),
        token: None,
        token_file: raw.admin.token_file.clone(),
        tls: admin_tls(&mut c, &raw.admin),
        operators: operators(&mut c, &raw.admin.operator),
        audit_file: raw.admin.audit_file.clone(),
        metrics_need_token: match raw.admin.metrics.as_deref() {
            None | Some("open") => false,
            Some("viewer") => true,
            Some(other) => {
                c.error("admin.metrics", format!("{other:?} is not \"open\" or \"viewer\""));
                false
            }
        },
    };

    // [secret]
    c.unknown("secret", &raw.secret.unknown);
    let secret = SecretConfig { file: raw.secret.file.clone() };

    // [upstream]
    let u = &raw.upstream;
    c.unknown("upstream", &u.unknown);
    let default_addresses = vec!["127.0.0.1:8081".to_string()];
    let texts = u.addresses.as_ref().unwrap_or(&default_addresses);
    if texts.is_empty() {
        c.error("upstream.addresses", "needs at least one address");
    }
    let mut addresses = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        match upstream_address(text) {
            Some(a) => addresses.push(a),
            None => c.error(
                format!("upstream.addresses[{i}]"),
                format!("{text:?} is not a valid socket address (host:port, port 1 to 65535)"),
            ),
        }
    }
    let mut upstream = UpstreamConfig {
        addresses,
        connect_timeout: c.duration("upstream.connect_timeout", u.connect_timeout.as_deref(), Duration::from_secs(2)),
        response_timeout: c.duration(
            "upstream.response_timeout",
            u.response_timeout.as_deref(),
            Duration::from_secs(30),
        ),
        idle_timeout: c.duration("upstream.idle_timeout", u.idle_timeout.as_deref(), Duration::from_secs(60)),
        pool_per_worker: c.int("upstream.pool_per_worker", u.pool_per_worker, 256, 1, 65_536) as usize,
        rest: c.duration("upstream.rest", u.rest.as_deref(), Duration::from_secs(10)),
        forward_client_ip: u.forward_client_ip.unwrap_or(false),
        body_idle_timeout: c.duration(
            "upstream.body_idle_timeout",
            u.body_idle_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        tunnel_idle_timeout: c.duration(
            "upstream.tunnel_idle_timeout",
            u.tunnel_idle_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        upgrade_protocols: c.upgrade_protocols("upstream.upgrade_protocols", u.upgrade_protocols.as_deref()),
        max_connections_per_worker: c.int(
            "upstream.max_connections_per_worker",
            u.max_connections_per_worker,
            1024,
            1,
            1_000_000,
        ) as usize,
        max_tunnels_per_worker: 0,
        protocol: upstream_protocol(&mut c, u.protocol.as_deref()),
        tls: None,
    };
    upstream.tls = upstream_tls(&mut c, u, upstream.addresses.first(), upstream.protocol);
    let most = upstream.max_connections_per_worker;
    upstream.max_tunnels_per_worker =
        c.int("upstream.max_tunnels_per_worker", u.max_tunnels_per_worker, (most / 2) as i64, 0, 1_000_000) as usize;
    if upstream.max_tunnels_per_worker >= most {
        c.error(
            "upstream.max_tunnels_per_worker",
            format!(
                "{} is not below upstream.max_connections_per_worker ({most}): tunnels could take every connection \
                 and leave none for requests",
                upstream.max_tunnels_per_worker
            ),
        );
    }
    if upstream.max_connections_per_worker < upstream.pool_per_worker {
        c.error(
            "upstream.max_connections_per_worker",
            format!(
                "{} is below upstream.pool_per_worker ({}): idle connections alone could fill it",
                upstream.max_connections_per_worker, upstream.pool_per_worker
            ),
        );
    }

    // [client]
    let cl = &raw.client;
    c.unknown("client", &cl.unknown);
    let real_ip_from = match (cl.real_ip_from.as_deref(), listen.proxy_protocol) {
        (None, true) => RealIpFrom::ProxyProtocol,
        (None, false) => RealIpFrom::XForwardedFor,
        (Some(text), proxy_protocol) => match RealIpFrom::parse(text) {
            Some(RealIpFrom::ProxyProtocol) if !proxy_protocol => {
                c.error("client.real_ip_from", "\"proxy_protocol\" needs listen.proxy_protocol = true");
                RealIpFrom::ProxyProtocol
            }
            Some(from) if proxy_protocol && from != RealIpFrom::ProxyProtocol => {
                c.error(
                    "client.real_ip_from",
                    format!("with listen.proxy_protocol = true the PROXY header names the client; {text:?} would be ignored (use \"proxy_protocol\")"),
                );
                from
            }
            Some(from) => from,
            None => {
                c.error(
                    "client.real_ip_from",
                    format!("{text:?} is not a source (use \"x-forwarded-for\", \"forwarded\" or \"proxy_protocol\")"),
                );
                RealIpFrom::XForwardedFor
            }
        },
    };
    let client = ClientConfig {
        trusted_proxies: c.cidrs("client.trusted_proxies", &cl.trusted_proxies),
        real_ip_from,
        ipv4_prefix: c.int("client.ipv4_prefix", cl.ipv4_prefix, 32, 8, 32) as u8,
        ipv6_prefix: c.int("client.ipv6_prefix", cl.ipv6_prefix, 64, 16, 128) as u8,
        ipv6_site_prefix: c.int("client.ipv6_site_prefix", cl.ipv6_site_prefix, 48, 16, 128) as u8,
        hash_rotation: c.duration("client.hash_rotation", cl.hash_rotation.as_deref(), Duration::from_secs(24 * 3600)),
        allow: c.cidrs("client.allow", &cl.allow),
        deny: c.cidrs("client.deny", &cl.deny),
    };
    if client.ipv6_site_prefix > client.ipv6_prefix {
        c.error("client.ipv6_site_prefix", "must not be longer than client.ipv6_prefix (a site holds clients)");
    }
    if client.hash_rotation < Duration::from_secs(60) {
        c.error("client.hash_rotation", "must be at least 1m");
    }

    // [store]
    c.unknown("store", &raw.store.unknown);
    let st = &raw.store;
    for (key, given) in [("store.sentinels", st.sentinels.is_some()), ("store.master_name", st.master_name.is_some())] {
        if given {
            c.error(key, "is not a key: a Sentinel-managed Redis is store.url = \"redis+sentinel://HOST:26379,HOST:26379/MASTER_NAME\"");
        }
    }
    let store = match (st.kind.as_deref().unwrap_or("memory"), &st.url, &st.cluster) {
        ("memory", _, _) => StoreConfig::Memory,
        ("redis", Some(_), Some(_)) => {
            c.error(
                "store.cluster",
                "and store.url are both set: give store.url for one server or Sentinel, store.cluster for a cluster",
            );
            StoreConfig::Memory
        }
        ("redis", Some(url), None) => match RedisTarget::from_url(url) {
            Ok(target) => StoreConfig::Redis(target),
            Err(reason) => {
                c.error("store.url", reason);
                StoreConfig::Memory
            }
        },
        ("redis", None, Some(nodes)) => match RedisTarget::cluster(nodes) {
            Ok(target) => StoreConfig::Redis(target),
            Err(reason) => {
                c.error("store.cluster", reason);
                StoreConfig::Memory
            }
        },
        ("redis", None, None) => {
            c.error("store.url", "is required when store.kind = \"redis\" (or store.cluster, for a Redis Cluster)");
            StoreConfig::Memory
        }
        (other, _, _) => {
            c.error("store.kind", format!("{other:?} is not a store (use \"memory\" or \"redis\")"));
            StoreConfig::Memory
        }
    };

    // [limits]
    let li = &raw.limits;
    c.unknown("limits", &li.unknown);
    let mut routes = Vec::with_capacity(li.route.len());
    for (i, r) in li.route.iter().enumerate() {
        let key = format!("limits.route[{i}]");
        c.unknown(&key, &r.unknown);
        let method = match r.method.as_deref() {
            None => None,
            Some(m) => match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    c.error(format!("{key}.method"), format!("{m:?} is not an HTTP method"));
                    None
                }
            },
        };
        let path = match r.path.as_deref() {
            None => {
                c.error(format!("{key}.path"), "is required and must start with \"/\"");
                String::new()
            }
            Some(path) => c.path_prefix(&format!("{key}.path"), path).unwrap_or_default(),
        };
        let per_minute = match r.per_minute {
            None => {
                c.error(format!("{key}.per_minute"), "is required");
                1
            }
            v => c.int(&format!("{key}.per_minute"), v, 1, 1, 1_000_000) as u32,
        };
        routes.push(RouteLimit { method, path, per_minute });
    }
    let limits = LimitsConfig {
        requests_per_second: c.int("limits.requests_per_second", li.requests_per_second, 20, 1, 1_000_000) as u32,
        burst: c.int("limits.burst", li.burst, 40, 1, 1_000_000) as u32,
        site_requests_per_second: c.int(
            "limits.site_requests_per_second",
            li.site_requests_per_second,
            1000,
            1,
            10_000_000,
        ) as u32,
        site_request_burst: c.int("limits.site_request_burst", li.site_request_burst, 2000, 1, 10_000_000) as u32,
        polls_per_second: c.int("limits.polls_per_second", li.polls_per_second, 100, 1, 1_000_000) as u32,
        poll_burst: c.int("limits.poll_burst", li.poll_burst, 300, 1, 1_000_000) as u32,
        site_joins_per_minute: c.int("limits.site_joins_per_minute", li.site_joins_per_minute, 60, 1, 1_000_000) as u32,
        site_join_burst: c.int("limits.site_join_burst", li.site_join_burst, 1000, 1, 1_000_000) as u32,
        joins_per_minute: c.int("limits.joins_per_minute", li.joins_per_minute, 6, 1, 1_000_000) as u32,
        join_burst: c.int("limits.join_burst", li.join_burst, 300, 1, 1_000_000) as u32,
        max_tracked_clients: c.int("limits.max_tracked_clients", li.max_tracked_clients, 1_000_000, 100, 100_000_000)
            as usize,
        tickets_per_client: c.int("limits.tickets_per_client", li.tickets_per_client, 300, 1, 100_000) as u32,
        routes,
    };

    // [[room]]
    let mut names = HashSet::new();
    let mut rooms = Vec::with_capacity(raw.room.len());
    for (i, r) in raw.room.iter().enumerate() {
        let key = format!("room[{i}]");
        c.unknown(&key, &r.unknown);
        let name = r.name.clone().unwrap_or_default();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !valid_name {
            c.error(format!("{key}.name"), "is required: 1 to 64 letters, digits, '-' or '_'");
        } else if !names.insert(name.clone()) {
            c.error(format!("{key}.name"), format!("{name:?} is used by another room"));
        }
        let paths = if r.paths.is_empty() { vec!["/".to_string()] } else { r.paths.clone() };
        let paths = c.path_prefixes(&format!("{key}.paths"), &paths);
        let bypass = c.path_prefixes(&format!("{key}.bypass"), &r.bypass);
        let logout_path = r.logout_path.as_deref().and_then(|p| c.path_prefix(&format!("{key}.logout_path"), p));
        let mut hosts = Vec::with_capacity(r.hosts.len());
        for (j, host) in r.hosts.iter().enumerate() {
            match crate::canonical::authority::Authority::parse(host, false) {
                Ok(a) if !host.contains(':') || host.starts_with('[') && host.ends_with(']') => {
                    hosts.push(a.host().to_string());
                }
                _ => c.error(format!("{key}.hosts[{j}]"), format!("{host:?} is not a host name (without a port)")),
            }
        }
        let mode = match r.mode.as_deref() {
            None => RoomMode::Auto,
            Some(m) => RoomMode::parse(m).unwrap_or_else(|| {
                c.error(format!("{key}.mode"), format!("{m:?} is not a mode (auto, queue_all, paused, closed, off)"));
                RoomMode::Auto
            }),
        };
        let opens_at = r.opens_at.as_deref().and_then(|t| match parse_rfc3339(t) {
            Some(secs) => Some(secs),
            None => {
                c.error(
                    format!("{key}.opens_at"),
                    format!("{t:?} is not an RFC 3339 time (e.g. \"2027-03-14T09:00:00+01:00\")"),
                );
                None
            }
        });
        let session_idle =
            c.duration(&format!("{key}.session_idle"), r.session_idle.as_deref(), Duration::from_secs(600));
        let session_max =
            c.duration(&format!("{key}.session_max"), r.session_max.as_deref(), Duration::from_secs(8 * 3600));
        if session_max < session_idle {
            c.error(format!("{key}.session_max"), "must not be shorter than session_idle");
        }
        // A waiter is judged away after waiter_ttl without a poll; a hold shorter than that
        // would give up places before anyone noticed the waiter was gone.
        let waiter_ttl = c.duration(&format!("{key}.waiter_ttl"), r.waiter_ttl.as_deref(), DEFAULT_WAITER_TTL);
        // Unset, it is at least waiter_ttl, so a file that only sets a long waiter_ttl stays valid.
        let hold = match r.hold.as_deref() {
            None => DEFAULT_HOLD.max(waiter_ttl),
            Some(text) => {
                let hold = c.duration(&format!("{key}.hold"), Some(text), DEFAULT_HOLD);
                if hold < waiter_ttl {
                    c.error(format!("{key}.hold"), "must not be shorter than waiter_ttl");
                } else if hold > MAX_HOLD {
                    c.error(format!("{key}.hold"), "must be at most 24h (a place held longer is a place nobody uses)");
                }
                hold
            }
        };
        // Compiled and rendered in every state now, so a broken page is a start-up error.
        let template = r.template.as_deref().and_then(|path| match PageTemplate::load(Path::new(path)) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                c.error(format!("{key}.template"), e.to_string());
                None
            }
        });
        let adaptive = r.adaptive.as_ref().map(|a| adaptive(&mut c, &format!("{key}.adaptive"), a));
        let challenge = r.challenge.as_ref().map(|ch| challenge(&mut c, &format!("{key}.challenge"), ch));
        let no_show_bound = r.no_show_bound.unwrap_or(DEFAULT_NO_SHOW_BOUND);
        if !(0.0..=0.9).contains(&no_show_bound) {
            c.error(
                format!("{key}.no_show_bound"),
                format!("must be from 0 (no compensation) to 0.9 (release up to 10×), not {no_show_bound}"),
            );
        }
        rooms.push(RoomConfig {
            name,
            hosts,
            paths,
            bypass,
            max_active: c.int(&format!("{key}.max_active"), r.max_active, 1000, 1, 100_000_000) as u64,
            admit_per_minute: c.int(&format!("{key}.admit_per_minute"), r.admit_per_minute, 600, 1, 100_000_000) as u64,
            session_idle,
            session_max,
            waiter_ttl,
            claim_window: c.duration(&format!("{key}.claim_window"), r.claim_window.as_deref(), DEFAULT_CLAIM_WINDOW),
            hold,
            mode,
            opens_at,
            logout_path,
            message: r.message.clone(),
            tick: c.duration(&format!("{key}.tick"), r.tick.as_deref(), Duration::from_millis(200)),
            template,
            adaptive,
            no_show_bound,
            challenge,
        });
    }

    if c.errors.is_empty() {
        Ok(Config { listen, admin, secret, upstream, client, store, limits, rooms })
    } else {
        Err(ConfigErrors(c.errors))
    }
}

/// `[room.adaptive]` under `key`, checked.
fn adaptive(c: &mut Checker, key: &str, a: &RawAdaptive) -> AdaptiveConfig {
    c.unknown(key, &a.unknown);
    let target = match a.target_latency.as_deref() {
        None => {
            c.error(format!("{key}.target_latency"), "is required (e.g. \"800ms\")");
            Duration::from_millis(800)
        }
        text => c.duration(&format!("{key}.target_latency"), text, Duration::from_millis(800)),
    };
    let mut share = |field: &str, value: Option<f64>, default: f64, range: std::ops::RangeInclusive<f64>| {
        let v = value.unwrap_or(default);
        if !range.contains(&v) {
            c.error(format!("{key}.{field}"), format!("must be from {} to {}, not {v}", range.start(), range.end()));
        }
        v
    };
    let quantile = share("quantile", a.quantile, 0.9, 0.5..=0.999);
    let error_budget = share("error_budget", a.error_budget, 0.01, 0.0..=0.5);
    let mut bound = |field: &str, value: Option<i64>| match value {
        None => {
            c.error(format!("{key}.{field}"), "is required: the outflow the controller may not leave");
            1
        }
        v => c.int(&format!("{key}.{field}"), v, 1, 1, 100_000_000) as u64,
    };
    let min_per_minute = bound("min_per_minute", a.min_per_minute);
    let max_per_minute = bound("max_per_minute", a.max_per_minute);
    if min_per_minute > max_per_minute {
        c.error(format!("{key}.min_per_minute"), format!("must not be above max_per_minute ({max_per_minute})"));
    }
    let period = c.duration(&format!("{key}.period"), a.period.as_deref(), Duration::from_secs(10));
    if period < Duration::from_secs(1) {
        c.error(format!("{key}.period"), "must be at least 1s (a period needs answers to judge)");
    }
    AdaptiveConfig { target, quantile, error_budget, min_per_minute, max_per_minute, period }
}

/// `[room.challenge]` under `key`, checked. The defaults: 8 puzzles of 15 bits, about
/// 262,000 hashes: about a second for a mid-range phone's browser (BENCHMARKS.md), and up
/// to 3 bits (8×) more under load or suspicion.
fn challenge(c: &mut Checker, key: &str, r: &RawChallenge) -> ChallengeConfig {
    c.unknown(key, &r.unknown);
    let bits = c.int(&format!("{key}.bits"), r.bits, 15, 1, 24) as u8;
    let puzzles = c.int(&format!("{key}.puzzles"), r.puzzles, 8, 1, 64) as u8;
    let max_bits = c.int(&format!("{key}.max_bits"), r.max_bits, i64::from(bits) + 3, 1, 28) as u8;
    if max_bits < bits {
        c.error(format!("{key}.max_bits"), format!("must not be below bits ({bits})"));
    }
    let ttl = c.duration(&format!("{key}.ttl"), r.ttl.as_deref(), Duration::from_secs(120));
    if !(Duration::from_secs(10)..=Duration::from_secs(600)).contains(&ttl) {
        c.error(format!("{key}.ttl"), "must be from 10s (a slow phone needs time) to 10m");
    }
    let noscript_wait =
        c.duration(&format!("{key}.noscript_wait"), r.noscript_wait.as_deref(), Duration::from_secs(20));
    if noscript_wait.is_zero() || noscript_wait >= ttl {
        c.error(
            format!("{key}.noscript_wait"),
            "must be more than 0s and less than ttl (its challenge must still be valid)",
        );
    }
    let busy_per_second = c.int(&format!("{key}.busy_per_second"), r.busy_per_second, 50, 1, 1_000_000) as u32;
    ChallengeConfig { bits, puzzles, max_bits, ttl, noscript_wait, busy_per_second }
}

/// Seconds since the Unix epoch of an RFC 3339 time such as `2027-03-14T09:00:00+01:00`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') && rest.as_bytes()[3] == b':' => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let (h, m) = (rest[1..3].parse::<i64>().ok()?, rest[4..6].parse::<i64>().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_with_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2027-03-14T09:00:00+01:00"), Some(1_805_011_200));
        assert_eq!(parse_rfc3339("2027-03-14T08:00:00.250Z"), Some(1_805_011_200));
        for bad in ["2027-03-14", "2027-13-01T00:00:00Z", "2027-03-14T09:00:00", "2027-03-14T09:00:00+1:00"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn upstream_addresses_accept_names_and_reject_bad_ports() {
        assert_eq!(upstream_address("mailbox:8080").map(|a| a.port), Some(8080));
        assert_eq!(upstream_address("[::1]:80").map(|a| a.host), Some("::1".into()));
        for bad in ["localhost:99999", "localhost", ":80", "a b:80", "host:0"] {
            assert!(upstream_address(bad).is_none(), "{bad}");
        }
    }
}
