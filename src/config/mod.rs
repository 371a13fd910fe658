//! The configuration file (DESIGN §11): its schema, defaults and validation.
//!
//! Parsing happens in two steps so that a broken file yields *every* problem at once:
//! serde reads the TOML into loosely typed `raw` structs (strings for addresses and
//! durations, unknown keys collected instead of rejected), then [`validate`] checks each
//! value and records an error naming its key. Only a file without errors becomes a [`Config`].

pub mod duration;
mod raw;
pub mod redis;
pub(crate) use raw::parse_rfc3339;

pub use self::redis::{RedisTarget, SentinelTarget};
use crate::operators::Operator;
pub use crate::tls::TlsFiles;
use ipnet::IpNet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated configuration; every field holds a usable value.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenConfig,
    pub admin: AdminConfig,
    pub secret: SecretConfig,
    pub upstream: UpstreamConfig,
    pub client: ClientConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub rooms: Vec<RoomConfig>,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    /// Worker threads, each with its own runtime, listener and upstream pool.
    pub workers: usize,
    /// Open client connections allowed at once, across all workers.
    pub max_connections: usize,
    /// Open connections one client key may hold at once (counted at accept time on the peer,
    /// or on the address a PROXY header names); over it, a new connection is closed at once.
    pub max_connections_per_client: usize,
    /// A connection with no request in flight for this long is closed (HTTP/2 with a GOAWAY).
    /// HTTP/1.1 keep-alive connections are closed sooner, by `header_read_timeout`.
    pub idle_timeout: Duration,
    /// Time a client has to send a complete request head (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Largest request head accepted; bigger heads are answered 431.
    pub max_header_bytes: usize,
    /// Every connection starts with a PROXY protocol v2 header from a load balancer.
    pub proxy_protocol: bool,
    /// `cookie_secure = "always"`: usher's cookies are `Secure` even on plain HTTP, for a
    /// TLS-terminating proxy in front that does not say so. `"auto"` (false): when the
    /// client came over TLS.
    pub cookie_secure_always: bool,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Time an admin client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// The bearer token for admin writes, when set here directly (tests, embedders).
    pub token: Option<String>,
    /// `admin.token_file`: a file holding the token. `USHER_ADMIN_TOKEN` wins over both.
    pub token_file: Option<PathBuf>,
    /// `admin.tls_cert`/`admin.tls_key`: the admin API over TLS, so tokens never cross a
    /// network in clear.
    pub tls: Option<TlsFiles>,
    /// `[[admin.operator]]`: named people (or services) with roles; a reload applies changes.
    pub operators: Vec<Operator>,
    /// `admin.metrics = "viewer"`: `/metrics` needs a token of any role, not only reachability.
    pub metrics_need_token: bool,
    /// `admin.audit_file`: the append-only JSON-lines audit trail of admin actions and reloads.
    pub audit_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SecretConfig {
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub addresses: Vec<UpstreamAddress>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Idle upstream connections are closed after this long.
    pub idle_timeout: Duration,
    /// Idle upstream connections kept per worker thread.
    pub pool_per_worker: usize,
    /// How long an address that failed to connect is left out of the rotation.
    pub rest: Duration,
    /// Opt-in: send the client's address upstream in `X-Forwarded-For`.
    pub forward_client_ip: bool,
    /// Once a body is streaming (the upstream's response, or the client's upload), it ends
    /// with an error if no bytes move for this long.
    pub body_idle_timeout: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// `Upgrade` protocols passed through (lowercase names, e.g. `websocket`); a request to
    /// upgrade to any other is forwarded as a plain request without the upgrade.
    pub upgrade_protocols: Vec<String>,
    /// Upstream connections one worker may have open at once (busy and idle); beyond it a
    /// request that finds no idle connection is answered 503.
    pub max_connections_per_worker: usize,
    /// Of those, how many tunnels (upgraded connections) may hold at once; the rest stay
    /// for requests, so a flood of WebSockets cannot take every upstream connection.
    pub max_tunnels_per_worker: usize,
    /// `upstream.tls = true`: every connection is TLS, verified; `None`: plain TCP.
    pub tls: Option<crate::upstream_tls::UpstreamTls>,
    /// `upstream.protocol`: the HTTP version spoken to the upstream.
    pub protocol: crate::upstream_tls::UpstreamProtocol,
}

/// An upstream `host:port`; an IP literal is used as is, a name is resolved on connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddress {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub trusted_proxies: Vec<IpNet>,
    /// The one forwarding source believed from `trusted_proxies`.
    pub real_ip_from: RealIpFrom,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// The prefix of an IPv6 *site* (a /48 by default: what one customer or company is
    /// given), over which `limits.site_join*` apply beside the per-/64 limits.
    pub ipv6_site_prefix: u8,
    pub hash_rotation: Duration,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// The one source of the client's address that usher believes from a trusted proxy
/// (`client.real_ip_from`). The others are ignored (and stripped before forwarding): a load
/// balancer that appends one header passes the client's own version of the other untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealIpFrom {
    /// The right-most untrusted entry of `X-Forwarded-For`; `X-Forwarded-Proto` for the scheme.
    XForwardedFor,
    /// The right-most untrusted `for=` of `Forwarded` (RFC 7239); its `proto=` for the scheme.
    Forwarded,
    /// The PROXY protocol v2 header, read by the listener before any HTTP.
    ProxyProtocol,
}

impl RealIpFrom {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "x-forwarded-for" => Some(Self::XForwardedFor),
            "forwarded" => Some(Self::Forwarded),
            "proxy_protocol" => Some(Self::ProxyProtocol),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::ProxyProtocol => "proxy_protocol",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Memory,
    Redis(RedisTarget),
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub requests_per_second: u32,
    pub burst: u32,
    /// Requests per IPv6 site (`client.ipv6_site_prefix`), beside the per-client limit.
    pub site_requests_per_second: u32,
    pub site_request_burst: u32,
    /// Status polls per client key: a budget of their own, sized for a NAT's crowd of pages.
    pub polls_per_second: u32,
    pub poll_burst: u32,
    pub joins_per_minute: u32,
    /// Tickets one client key may take at once before `joins_per_minute` applies.
    pub join_burst: u32,
    /// New tickets per IPv6 site (`client.ipv6_site_prefix`).
    pub site_joins_per_minute: u32,
    pub site_join_burst: u32,
    /// Client entries each limiter may track; beyond it new clients are checked, not kept.
    pub max_tracked_clients: usize,
    /// Live tickets one client key may hold; high enough for carrier-grade NAT.
    pub tickets_per_client: u32,
    pub routes: Vec<RouteLimit>,
}

#[derive(Debug, Clone)]
pub struct RouteLimit {
    pub method: Option<http::Method>,
    pub path: String,
    pub per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomMode {
    Auto,
    QueueAll,
    Paused,
    Closed,
    /// Passthrough: everyone goes in at once, no ticket, no limit; sessions are still made
    /// and counted, and those already in line are let in, so nothing is lost either way.
    Off,
}

impl RoomMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Self::Auto),
            "queue_all" => Some(Self::QueueAll),
            "paused" => Some(Self::Paused),
            "closed" => Some(Self::Closed),
            "off" => Some(Self::Off),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::QueueAll => "queue_all",
            Self::Paused => "paused",
            Self::Closed => "closed",
            Self::Off => "off",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub name: String,
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub bypass: Vec<String>,
    pub max_active: u64,
    pub admit_per_minute: u64,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub waiter_ttl: Duration,
    pub claim_window: Duration,
    /// How long the place of a waiter who stepped away is held (DESIGN §3).
    pub hold: Duration,
    pub mode: RoomMode,
    /// Event start, as seconds since the Unix epoch.
    pub opens_at: Option<i64>,
    pub logout_path: Option<String>,
    pub message: Option<String>,
    /// How often the admitter runs.
    pub tick: Duration,
    /// The operator's queue page template (compiled and test-rendered at load), or `None`
    /// for the built-in page.
    pub template: Option<std::sync::Arc<crate::pages::PageTemplate>>,
    /// `[room.adaptive]`: the outflow follows the mailbox's health within these bounds.
    pub adaptive: Option<AdaptiveConfig>,
    /// The largest share of unclaimed grants made up for by releasing more (0 to 0.9; 0
    /// turns no-show compensation off). See `room::no_show`.
    pub no_show_bound: f64,
    /// `[room.challenge]`: newcomers to a line solve a proof of work first (`room::challenge`).
    pub challenge: Option<ChallengeConfig>,
}

/// `[room.challenge]`: the proof of work asked of a newcomer before a ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct ChallengeConfig {
    /// Leading zero bits each puzzle's hash needs: 2^bits hashes expected per puzzle.
    pub bits: u8,
    /// Puzzles per challenge: several small ones vary less in solving time than one big one.
    pub puzzles: u8,
    /// What load and suspicion may raise `bits` to.
    pub max_bits: u8,
    /// How long a challenge may be answered.
    pub ttl: Duration,
    /// Without JavaScript, the page waits this long instead (a slower lane, never a wall).
    pub noscript_wait: Duration,
    /// Challenges issued per second in the room above which each doubling adds a bit.
    pub busy_per_second: u32,
}

/// `[room.adaptive]`: what the adaptive outflow may do (see `room::adaptive`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// The upstream latency the watched quantile must stay under.
    pub target: Duration,
    /// The quantile watched, 0.5 to 0.999 (0.9: p90).
    pub quantile: f64,
    /// Share of forwarded requests that may fail (5xx, timeouts, connect failures).
    pub error_budget: f64,
    pub min_per_minute: u64,
    pub max_per_minute: u64,
    /// How often the controller decides.
    pub period: Duration,
}

/// One problem in a configuration file: the key it is about and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every problem found in one file, section by section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self(vec![ConfigError { key: key.into(), reason: reason.into() }])
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one(path.display().to_string(), format!("cannot read the file: {e}")))?;
        Self::parse(&text)
    }

    /// Validates configuration text (the same rules as [`Config::load`]).
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let key = e.span().map_or_else(|| "(file)".to_string(), |s| line_of(text, s.start));
            ConfigErrors::one(key, e.message().to_string())
        })?;
        raw::validate(raw)
    }

    /// The configuration of `usher demo` and of tests: everything on loopback with
    /// ephemeral ports, one upstream, no rooms, and a request limit high enough that only
    /// tests about limits meet it.
    pub fn for_upstream(upstream: SocketAddr) -> Self {
        let mut config = Self::parse("").expect("the defaults are valid");
        config.limits.requests_per_second = 100_000;
        config.limits.burst = 100_000;
        config.listen.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.upstream.addresses = vec![UpstreamAddress { host: upstream.ip().to_string(), port: upstream.port() }];
        config
    }

    /// A short human summary for `usher check-config`.
    pub fn summary(&self) -> String {
        let mut lines = Vec::new();
        let listen: Vec<String> =
            [self.listen.http.map(|a| format!("http {a}")), self.listen.https.map(|a| format!("https {a}"))]
                .into_iter()
                .flatten()
                .collect();
        lines.push(format!(
            "listen: {} ({} workers, at most {} connections)",
            listen.join(", "),
            self.listen.workers,
            self.listen.max_connections
        ));
        lines.push(format!("admin: {}", self.admin.listen));
        lines.push(self.client_summary());
        let upstreams: Vec<String> = self.upstream.addresses.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "upstream: {} (connect {}, response {})",
            upstreams.join(", "),
            duration::format(self.upstream.connect_timeout),
            duration::format(self.upstream.response_timeout)
        ));
        lines.push(format!(
            "store: {}",
            match &self.store {
                StoreConfig::Memory => "memory".to_string(),
                StoreConfig::Redis(target) => target.summary(),
            }
        ));
        for room in &self.rooms {
            lines.push(format!(
                "room {}: paths {:?}, max_active {}, admit_per_minute {}, mode {}",
                room.name,
                room.paths,
                room.max_active,
                room.admit_per_minute,
                room.mode.as_str()
            ));
        }
        lines.join("\n")
    }
}

impl Config {
    /// How the client's address is found, in words, for `check-config`.
    fn client_summary(&self) -> String {
        let trusted = &self.client.trusted_proxies;
        if trusted.is_empty() {
            return "client address: the connection's peer (no trusted_proxies; forwarding headers ignored and \
                    stripped)"
                .into();
        }
        let nets: Vec<String> = trusted.iter().map(ToString::to_string).collect();
        let source = match self.client.real_ip_from {
            RealIpFrom::XForwardedFor => {
                "the right-most untrusted X-Forwarded-For entry (Forwarded ignored and stripped)"
            }
            RealIpFrom::Forwarded => "the right-most untrusted Forwarded for= (X-Forwarded-For ignored and stripped)",
            RealIpFrom::ProxyProtocol => {
                "the PROXY protocol v2 header (X-Forwarded-For and Forwarded ignored and stripped)"
            }
        };
        format!("client address: from peers in {}: {source}", nets.join(", "))
    }
}

/// "line N" for a byte offset, so TOML syntax errors point somewhere useful.
fn line_of(text: &str, offset: usize) -> String {
    let line = text.get(..offset).map_or(1, |head| head.matches('\n').count() + 1);
    format!("line {line}")
}
