//! Attack runs (issue 14): one hostile pattern against a running usher, bounded in time and
//! sent to loopback only, beside a real client measured in the same run. The report says
//! what the attack did, how the real client fared (p50/p99, errors), what it cost usher
//! (peak RSS and open descriptors from `/proc/<pid>`), whether usher stayed up, and how soon
//! after the attack it was back to where it started.
//!
//! Read it from [`run`]: sample, start the real client, attack for `seconds`, stop, wait for
//! recovery, report. Each kind lives in a submodule: [`conns`] (sockets held open),
//! [`h2`] (hand-written HTTP/2 frames), [`flood`] (many client keys through a trusted proxy).

pub mod client;
pub mod conns;
pub mod flood;
pub mod frames;
pub mod h2;
pub mod table;

use crate::idle::rss_kib;
use crate::sources::Sources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The hostile patterns; `none` is the baseline (the real client alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    None,
    Slowloris,
    H2Idle,
    H2RapidReset,
    H2Continuation,
    H2Settings,
    H2Ping,
    H2Hpack,
    KeyFlood,
    TicketFlood,
    WebsocketFlood,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "baseline",
            Kind::Slowloris => "slowloris",
            Kind::H2Idle => "h2-idle",
            Kind::H2RapidReset => "h2-rapid-reset",
            Kind::H2Continuation => "h2-continuation",
            Kind::H2Settings => "h2-settings",
            Kind::H2Ping => "h2-ping",
            Kind::H2Hpack => "h2-hpack",
            Kind::KeyFlood => "key-flood",
            Kind::TicketFlood => "ticket-flood",
            Kind::WebsocketFlood => "websocket-flood",
        }
    }

    /// The path the attack asks for when none is given: the room that ticket farming targets,
    /// a path the upstream upgrades, or one that no room guards (the limiter alone decides).
    pub fn default_path(self) -> &'static str {
        match self {
            Kind::TicketFlood => "/event",
            Kind::WebsocketFlood => "/ws",
            _ => "/",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub target: SocketAddr,
    /// usher's process: its memory and descriptors are sampled.
    pub pid: u32,
    /// usher's admin listener: its limiter metrics are read after the attack.
    pub admin: Option<SocketAddr>,
    pub seconds: Duration,
    /// The path the attack asks for.
    pub path: String,
    /// Sockets (slowloris), connections (h2 kinds, floods) or tunnels (websocket).
    pub sockets: u64,
    /// Seconds between a slowloris socket's bytes.
    pub trickle: Duration,
    /// Distinct client keys (key-flood: IPv6 /64s).
    pub keys: u64,
    /// Requests per second of the one flooding client that key-flood checks is still limited.
    pub flooder_rate: f64,
    /// Bytes of each oversized header block (h2-hpack).
    pub header_bytes: usize,
    pub client: client::Plan,
    /// How long to wait for usher to come back after the attack.
    pub recover_limit: Duration,
}

/// Named counters an attack keeps, and gauges with their peak (`open` and `open_peak`).
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<&'static str, i64>>);

impl Tally {
    pub fn add(&self, name: &'static str, n: i64) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(name).or_default() += n;
        }
    }

    /// One more open connection; keeps the peak as `open_peak`.
    pub fn open(&self) {
        if let Ok(mut map) = self.0.lock() {
            let open = {
                let open = map.entry("open").or_default();
                *open += 1;
                *open
            };
            let peak = map.entry("open_peak").or_default();
            *peak = (*peak).max(open);
        }
    }

    pub fn close(&self) {
        self.add("open", -1);
    }

    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        self.0.lock().map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect()).unwrap_or_default()
    }
}

/// What one attack run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub kind: Kind,
    pub seconds: f64,
    /// The attack's own counters (kind-specific: sockets opened, frames sent, 429s, ...).
    pub attack: BTreeMap<String, i64>,
    pub client: client::Summary,
    pub usher: UsherFigures,
    /// `usher_limiter_*` series from usher's `/metrics` after the attack, summed per name
    /// (over rules), and `usher_limiter_tracked_clients_peak`, the largest seen during it.
    pub limiter: BTreeMap<String, f64>,
}

/// usher's process during and after the attack.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsherFigures {
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_after_kib: u64,
    pub fds_before: u64,
    pub fds_peak: u64,
    pub fds_after: u64,
    /// The process still ran and answered a fresh request after the attack.
    pub alive: bool,
    /// Seconds from the attack's end until a fresh request was answered 200 and usher held
    /// no more than a few client connections; `None` when that did not happen in
    /// `recover_limit`.
    pub recovered_after_s: Option<f64>,
    /// The slowest answer to the recovery probes (a fresh visitor every 20 ms from the
    /// attack's end): what the end of the attack, every socket closing at once, costs.
    #[serde(default)]
    pub ending_worst_ms: f64,
}

impl Report {
    pub fn summary(&self) -> String {
        let c = &self.client;
        let u = &self.usher;
        let mut text = format!(
            "attack {} for {:.0} s\n  real client: {} requests, {} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n  usher: RSS {} -> peak {} -> {} KiB; fds {} -> peak {} -> {}; {}; recovered {} (slowest probe answer {:.1} ms)\n  attack:",
            self.kind.name(),
            self.seconds,
            c.requests,
            c.errors,
            c.p50_ms,
            c.p99_ms,
            c.max_ms,
            u.rss_before_kib,
            u.rss_peak_kib,
            u.rss_after_kib,
            u.fds_before,
            u.fds_peak,
            u.fds_after,
            if u.alive { "up" } else { "DOWN" },
            u.recovered_after_s.map_or("never (within the limit)".to_string(), |s| format!("after {s:.1} s")),
            u.ending_worst_ms,
        );
        for (name, value) in &self.attack {
            text.push_str(&format!(" {name}={value}"));
        }
        text.push_str(&format!(
            "\n  real client{}: p99 of first requests (new connections) {:.2} ms, of later ones {:.2} ms; slowest (s, ms):",
            if c.realtime { " (ahead of the attack tool, SCHED_FIFO)" } else { "" },
            c.first_p99_ms,
            c.later_p99_ms
        ));
        for (at, ms) in &c.slowest {
            text.push_str(&format!(" {at:.1}:{ms:.1}"));
        }
        if !c.error_kinds.is_empty() {
            text.push_str("\n  client errors:");
            for (name, value) in &c.error_kinds {
                text.push_str(&format!(" {name}: {value};"));
            }
        }
        if !self.limiter.is_empty() {
            text.push_str("\n  limiter:");
            for (name, value) in &self.limiter {
                text.push_str(&format!(" {name}={value}"));
            }
        }
        text.push('\n');
        text
    }
}

/// usher's resident memory and open descriptors, sampled.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    rss_kib: u64,
    fds: u64,
}

fn proc_sample(pid: u32) -> Option<ProcSample> {
    let rss_kib = rss_kib(pid).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample { rss_kib, fds })
}

/// Where each role's loopback source addresses start, so they never share a client key.
pub mod source {
    use std::net::Ipv4Addr;
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 3, 0, 1);
    /// The first of the recovery probes' addresses: each probe is a new visitor from its own.
    pub const PROBE: Ipv4Addr = Ipv4Addr::new(127, 2, 0, 1);
    pub const SLOWLORIS: Ipv4Addr = Ipv4Addr::new(127, 4, 0, 1);
    pub const WEBSOCKET: Ipv4Addr = Ipv4Addr::new(127, 5, 0, 1);
    pub const H2: Ipv4Addr = Ipv4Addr::new(127, 6, 0, 1);
    pub const PROXY: Ipv4Addr = Ipv4Addr::new(127, 7, 0, 1);
}

/// Runs the attack beside the real client and reports. Never panics on a server that
/// closes, refuses or dies: those are findings.
pub async fn run(plan: Plan) -> Report {
    let before = proc_sample(plan.pid).unwrap_or_default();
    let peak = Arc::new(Mutex::new(before));
    let limiter_peak = Arc::new(Mutex::new(BTreeMap::<String, f64>::new()));
    let sampler = {
        let (peak, limiter_peak, pid, admin) = (peak.clone(), limiter_peak.clone(), plan.pid, plan.admin);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(200));
            for tick in 0u64.. {
                every.tick().await;
                if let (Some(s), Ok(mut p)) = (proc_sample(pid), peak.lock()) {
                    p.rss_kib = p.rss_kib.max(s.rss_kib);
                    p.fds = p.fds.max(s.fds);
                }
                // The limiter's table is swept every second, so its size is read during the
                // attack (the largest seen), not only after it.
                if let Some(admin) = admin.filter(|_| tick % 5 == 0) {
                    let now = limiter_metrics(admin).await;
                    if let Ok(mut m) = limiter_peak.lock() {
                        for (name, value) in now {
                            let v = m.entry(name).or_default();
                            *v = v.max(value);
                        }
                    }
                }
            }
        })
    };
    let client = client::start(plan.client.clone());
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    // The attack runs on the runtime's worker threads, which run at the lowest priority
    // (`run_attack`), the real client on a thread of its own at the normal one. Aborting the
    // attack's task at the deadline drops its tasks and closes its sockets.
    let attacking = {
        let (plan, tally) = (plan.clone(), tally.clone());
        tokio::spawn(async move { attack(&plan, tally).await })
    };
    let abort = attacking.abort_handle();
    let _ = tokio::time::timeout(plan.seconds, attacking).await;
    // The client is measured during the attack: it stops (its last visitors finish) while
    // the attack still runs. The attack's end, when every one of its sockets closes at once,
    // is measured by the recovery probes.
    let client = client.stop().await;
    abort.abort();
    let seconds = started.elapsed().as_secs_f64();
    let (recovered_after_s, ending_worst_ms) = recover(&plan).await;
    sampler.abort();
    let after = proc_sample(plan.pid);
    let alive = after.is_some() && client::probe(plan.client.target, &plan.client.path).await.is_some();
    let after = after.unwrap_or_default();
    let peak = peak.lock().map(|p| *p).unwrap_or_default();
    let mut limiter = match plan.admin {
        Some(admin) => limiter_metrics(admin).await,
        None => BTreeMap::new(),
    };
    if let Ok(m) = limiter_peak.lock() {
        for (name, value) in m.iter().filter(|(n, _)| n.ends_with("tracked_clients")) {
            limiter.insert(format!("{name}_peak"), *value);
        }
    }
    let mut attack = tally.snapshot();
    attack.remove("open");
    Report {
        kind: plan.kind,
        seconds,
        attack,
        client,
        usher: UsherFigures {
            rss_before_kib: before.rss_kib,
            rss_peak_kib: peak.rss_kib,
            rss_after_kib: after.rss_kib,
            fds_before: before.fds,
            fds_peak: peak.fds,
            fds_after: after.fds,
            alive,
            recovered_after_s,
            ending_worst_ms,
        },
        limiter,
    }
}

async fn attack(plan: &Plan, tally: Arc<Tally>) {
    match plan.kind {
        Kind::None => std::future::pending().await,
        Kind::Slowloris => conns::slowloris(plan, tally).await,
        Kind::WebsocketFlood => conns::websocket(plan, tally).await,
        Kind::H2Idle | Kind::H2RapidReset | Kind::H2Continuation | Kind::H2Settings | Kind::H2Ping | Kind::H2Hpack => {
            h2::run(plan, tally).await
        }
        Kind::KeyFlood => flood::keys(plan, tally).await,
        Kind::TicketFlood => flood::tickets(plan, tally).await,
    }
}

/// Seconds from now until a fresh request is answered 200 and usher holds no more client
/// connections than a few (the real client has stopped; the attack's sockets must be gone),
/// and the slowest probe answer meanwhile. Connections are counted from the kernel's table,
/// not from usher's descriptors: idle upstream connections the attack's requests opened stay
/// pooled, as they should. Probes run for at least a second, so the end's stall is seen.
async fn recover(plan: &Plan) -> (Option<f64>, f64) {
    let start = Instant::now();
    let mut worst_ms = 0f64;
    while start.elapsed() < plan.recover_limit {
        let held = held_connections(plan.target.port());
        let answered = client::probe(plan.client.target, &plan.client.path).await;
        if let Some(latency) = answered {
            worst_ms = worst_ms.max(latency.as_secs_f64() * 1000.0);
        }
        if held <= 16 && answered.is_some() && start.elapsed() >= Duration::from_secs(1) {
            return (Some(start.elapsed().as_secs_f64()), worst_ms);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (None, worst_ms)
}

/// Connections whose local port is `port` that still hold a descriptor on the server's side
/// (ESTABLISHED or CLOSE_WAIT; not TIME_WAIT, which the kernel keeps for a minute after the
/// server closed, nor LISTEN), from `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn held_connections(port: u16) -> u64 {
    let local = format!(":{port:04X} ");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let mut fields = line.split_whitespace();
                    let local_addr = fields.nth(1).unwrap_or("");
                    let state = fields.nth(1).unwrap_or("");
                    format!("{local_addr} ").ends_with(&local) && (state == "01" || state == "08")
                })
                .count() as u64
        })
        .sum()
}

/// The `usher_limiter_*` series of usher's metrics, summed per name (over rules).
async fn limiter_metrics(admin: SocketAddr) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(5), crate::scrape::fetch(admin)).await else {
        return out;
    };
    for line in text.lines().filter(|l| l.starts_with("usher_limiter_")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let name = series.split_once('{').map_or(series, |(n, _)| n);
        *out.entry(name.to_string()).or_default() += value;
    }
    out
}

/// `count` loopback source addresses from `first`, or the error to show.
pub fn sources(first: Ipv4Addr, count: u64) -> Result<Sources, String> {
    Sources::new(first, count.max(1)).map_err(|e| e.to_string())
}

/// A TCP connection from `source` to `target`.
pub async fn connect(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    socket.set_nodelay(true)?;
    socket.connect(target).await
}
