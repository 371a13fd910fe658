//! The real client measured beside every attack: a steady stream of visitors, each a
//! [`Browser`] from its own loopback address (so usher's per-client limits treat it as one
//! citizen), asking for the room's page a few times with its pass. It runs on a thread and
//! runtime of its own, so the attack's load on the tool does not count as usher's latency.

use crate::browser::Browser;
use crate::sources::Sources;
use crate::stats::Spread;
use http::StatusCode;
use http::header::HeaderValue;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The real client's pace.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: SocketAddr,
    /// The room page a citizen asks for.
    pub path: String,
    /// New visitors per second.
    pub rate: f64,
    /// Requests each visitor makes (the first joins or passes, the rest use the pass).
    pub requests: usize,
    /// Pause between a visitor's requests.
    pub think: Duration,
    pub timeout: Duration,
    pub sources: Sources,
    /// Addresses in `sources`; visitors wrap around after the last.
    pub source_count: u64,
}

/// How the real client fared.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub visitors: u64,
    pub requests: u64,
    pub ok: u64,
    /// Requests not answered 200 (other statuses, refused connections, timeouts).
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The p99 of each visitor's first request (a new connection, so it includes waiting to
    /// be accepted) and of the later ones (on that connection): tells an accept queue from a
    /// busy worker.
    #[serde(default)]
    pub first_p99_ms: f64,
    #[serde(default)]
    pub later_p99_ms: f64,
    /// The slowest answers, slowest first: seconds since the client started, and ms.
    #[serde(default)]
    pub slowest: Vec<(f64, f64)>,
    /// The client's thread ran ahead of the attack tool's (SCHED_FIFO; see
    /// `ahead_of_the_attack`).
    #[serde(default)]
    pub realtime: bool,
}

/// How many of the slowest answers a summary lists.
const SLOWEST: usize = 12;

#[derive(Default)]
struct Record {
    /// (seconds since the start, ms, the visitor's first request)
    latencies: Vec<(f64, f64, bool)>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    visitors: u64,
}

/// A running real client; [`Handle::stop`] ends it and returns its figures.
pub struct Handle {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Summary>,
}

/// Starts the visitors on their own thread.
pub fn start(plan: Plan) -> Handle {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let realtime = ahead_of_the_attack();
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => Summary { realtime, ..runtime.block_on(visitors(plan, stop)) },
                Err(e) => Summary {
                    errors: 1,
                    error_kinds: BTreeMap::from([(format!("no runtime: {e}"), 1)]),
                    ..Summary::default()
                },
            }
        })
    };
    Handle { stop, thread }
}

impl Handle {
    /// Stops new visitors, lets those under way finish (within their timeout), and reports.
    pub async fn stop(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap_or_default()).await.unwrap_or_default()
    }
}

async fn visitors(plan: Plan, stop: Arc<AtomicBool>) -> Summary {
    let record = Arc::new(Mutex::new(Record::default()));
    let host = HeaderValue::from_str(&plan.target.to_string()).unwrap_or(HeaderValue::from_static("localhost"));
    let every = Duration::from_secs_f64(1.0 / plan.rate.max(0.1));
    let mut arrivals = tokio::time::interval(every);
    arrivals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running = tokio::task::JoinSet::new();
    let mut index = 0u64;
    let started = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        arrivals.tick().await;
        while running.try_join_next().is_some() {}
        let source = IpAddr::V4(plan.sources.get(index % plan.source_count.max(1)));
        index += 1;
        let (record, plan, host) = (record.clone(), plan.clone(), host.clone());
        running.spawn(async move {
            let mut browser = Browser::new(plan.target, source, host, plan.timeout);
            for i in 0..plan.requests {
                if i > 0 {
                    tokio::time::sleep(plan.think).await;
                }
                let result = browser.get(&plan.path, "text/html").await;
                let Ok(mut r) = record.lock() else { return };
                match result {
                    Ok(answer) if answer.status == StatusCode::OK => {
                        r.ok += 1;
                        let at = answer.sent.duration_since(started).as_secs_f64();
                        r.latencies.push((at, answer.latency.as_secs_f64() * 1000.0, i == 0));
                    }
                    Ok(answer) => *r.errors.entry(format!("status {}", answer.status.as_u16())).or_default() += 1,
                    Err(e) => *r.errors.entry(short(&e.to_string())).or_default() += 1,
                }
            }
            if let Ok(mut r) = record.lock() {
                r.visitors += 1;
            }
        });
    }
    while running.join_next().await.is_some() {}
    let r = std::mem::take(&mut *record.lock().unwrap_or_else(|e| e.into_inner()));
    let errors: u64 = r.errors.values().sum();
    let ms = |first: Option<bool>| {
        Spread::of(r.latencies.iter().filter(|l| first.is_none_or(|f| l.2 == f)).map(|l| l.1).collect())
    };
    let (spread, first, later) = (ms(None), ms(Some(true)), ms(Some(false)));
    let mut slowest: Vec<(f64, f64)> = r.latencies.iter().map(|l| (l.0, l.1)).collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(SLOWEST);
    Summary {
        visitors: r.visitors,
        requests: r.ok + errors,
        ok: r.ok,
        errors,
        error_kinds: r.errors,
        p50_ms: spread.p50,
        p99_ms: spread.p99,
        max_ms: spread.max,
        first_p99_ms: first.p99,
        later_p99_ms: later.p99,
        slowest,
        realtime: false,
    }
}

/// Puts the calling thread (the client's) ahead of every ordinary thread on its CPU
/// (SCHED_FIFO, the lowest real-time priority), so that on a machine shared with the attack
/// tool its latencies are usher's, not the time it waited for the tool's time slice: the
/// attack's threads run at nice 19, but a thread that has the CPU keeps it for its slice
/// (a few ms). Needs root or CAP_SYS_NICE; without, the client runs as before, and its p99
/// holds the tool's slices too. Whether it took.
fn ahead_of_the_attack() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler reads the struct it is given; pid 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// An error's kind without the details that make every message distinct (ports, addresses).
fn short(message: &str) -> String {
    message.split(':').next().unwrap_or(message).trim().to_string()
}

/// One fresh visitor's request: how long it took, if answered 200 within two seconds. Each
/// probe comes from an address of its own in 127.2/16, as a new visitor would: from one
/// address, 50 probes a second would pass its client's request limit.
pub async fn probe(target: SocketAddr, path: &str) -> Option<Duration> {
    /// Addresses the probes take in turn (all of 127.2/16 but its .0 and .255 hosts).
    const PROBES: u64 = 256 * 254;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let host = HeaderValue::from_str(&target.to_string()).unwrap_or(HeaderValue::from_static("localhost"));
    let addresses = super::sources(super::source::PROBE, PROBES).ok()?;
    let source = IpAddr::V4(addresses.get(NEXT.fetch_add(1, Ordering::Relaxed) % PROBES));
    let mut browser = Browser::new(target, source, host, Duration::from_secs(2));
    match browser.get(path, "text/html").await {
        Ok(a) if a.status == StatusCode::OK => Some(a.latency),
        _ => None,
    }
}
