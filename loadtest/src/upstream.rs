//! A fixed upstream for the load runs: every request gets the same 1 KiB page, so usher's
//! cost is what is measured, not the mailbox's. A WebSocket upgrade is accepted (101) and
//! the tunnel echoes what it gets until the client leaves, so the attack runs can hold
//! tunnels through usher.
//!
//! With a [`Knee`] it behaves like an application that saturates (issue 17's "mailbox with a
//! knee"): quick up to its capacity in requests in flight, then slower the more it is
//! overloaded, and refusing with 503 well past it. `GET /.upstream/stats` (asked directly,
//! not through usher) says what it served.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// An application's saturation, as a model: `capacity` workers share the requests in flight
/// (processor sharing), each request needing `base` of one worker's time. Up to `capacity`
/// in flight a request takes `base`; beyond, `base × in_flight / capacity` (×2 at twice the
/// capacity), so the mailbox answers at most `capacity / base` requests a second however
/// loaded, and the latency says how overloaded it is. Past [`REFUSE_AT`] × `capacity` in
/// flight, an immediate 503, as a server whose worker pool and queue are full.
///
/// The latency is fixed when a request starts. A steeper law (the fourth power was tried
/// first) has a second, collapsed steady state: one burst made every later request slow
/// enough to keep the server full, and a third of the capacity then met 503s for minutes.
/// Requests in flight, in capacities, past which the mailbox refuses.
pub const REFUSE_AT: u64 = 4;

#[derive(Debug, Clone, Copy)]
pub struct Knee {
    pub capacity: u64,
    pub base: Duration,
}

impl Knee {
    /// How long a request takes with `in_flight` requests in flight (itself included), or
    /// `None` for a 503.
    pub fn latency(&self, in_flight: u64) -> Option<Duration> {
        let capacity = self.capacity.max(1);
        if in_flight > REFUSE_AT * capacity {
            return None;
        }
        let load = (in_flight as f64 / capacity as f64).max(1.0);
        Some(self.base.mul_f64(load))
    }
}

/// What the upstream served: answers and refusals, and its own service times in whole
/// milliseconds (one counter per millisecond up to 10 s, the rest in the last).
pub struct Stats {
    started: Instant,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    refused: AtomicU64,
    millis: Vec<AtomicU64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            millis: (0..=10_000).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Stats {
    fn served(&self, took: Duration) {
        let ms = usize::try_from(took.as_millis()).unwrap_or(usize::MAX).min(self.millis.len() - 1);
        self.millis[ms].fetch_add(1, Relaxed);
    }

    /// The service time below which `q` of the answers fell, in milliseconds.
    fn quantile(&self, counts: &[u64], q: f64) -> u64 {
        let total: u64 = counts.iter().sum();
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (ms, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                return ms as u64;
            }
        }
        0
    }

    /// `{answered, refused, error_ratio, p50_ms, p90_ms, p99_ms, max_in_flight, seconds}`.
    pub fn json(&self) -> serde_json::Value {
        let counts: Vec<u64> = self.millis.iter().map(|c| c.load(Relaxed)).collect();
        let answered: u64 = counts.iter().sum();
        let refused = self.refused.load(Relaxed);
        serde_json::json!({
            "answered": answered,
            "refused": refused,
            "error_ratio": refused as f64 / (answered + refused).max(1) as f64,
            "p50_ms": self.quantile(&counts, 0.50),
            "p90_ms": self.quantile(&counts, 0.90),
            "p99_ms": self.quantile(&counts, 0.99),
            "max_in_flight": self.max_in_flight.load(Relaxed),
            "seconds": self.started.elapsed().as_secs_f64(),
        })
    }
}

/// The page: 1 KiB of HTML.
pub fn page() -> Bytes {
    let mut body = String::from("<!doctype html><title>mailbox</title><p>Your inbox.</p>\n");
    while body.len() < 1024 {
        body.push_str("<!-- padding to one kibibyte -->\n");
    }
    body.truncate(1024);
    Bytes::from(body)
}

/// Serves the page on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) {
    serve_with(listener, None).await;
}

/// [`serve`], saturating as `knee` says when one is given.
pub async fn serve_with(listener: tokio::net::TcpListener, knee: Option<Knee>) {
    serve_moving(listener, knee, Vec::new()).await;
}

/// A mailbox whose capacity moves: from each `(after, capacity)` on (time since it started,
/// `changes` in order of time), `knee` has that capacity. A real mailbox loses half its workers to a deploy or
/// a neighbour's batch job, and gets them back.
pub fn capacity_at(knee: Knee, changes: &[(Duration, u64)], elapsed: Duration) -> Knee {
    let capacity = changes.iter().take_while(|(after, _)| *after <= elapsed).last().map_or(knee.capacity, |c| c.1);
    Knee { capacity, ..knee }
}

/// [`serve_with`], the capacity moving as `changes` says (in any order; see [`capacity_at`]).
pub async fn serve_moving(listener: tokio::net::TcpListener, knee: Option<Knee>, mut changes: Vec<(Duration, u64)>) {
    changes.sort_by_key(|change| change.0);
    let changes: Arc<[(Duration, u64)]> = changes.into();
    let stats = Arc::new(Stats::default());
    let page = page();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (builder, page, stats, changes) = (builder.clone(), page.clone(), stats.clone(), changes.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                if req.headers().contains_key(UPGRADE) {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(upgraded) = upgrade.await {
                            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
                            let _ = tokio::io::copy(&mut read, &mut write).await;
                        }
                    });
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket"));
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
                    return Box::pin(std::future::ready(Ok::<_, Infallible>(response)))
                        as std::pin::Pin<Box<dyn std::future::Future<Output = Result<_, Infallible>> + Send>>;
                }
                let (page, stats) = (page.clone(), stats.clone());
                let knee = knee.map(|k| capacity_at(k, &changes, stats.started.elapsed()));
                Box::pin(async move {
                    if req.uri().path() == "/.upstream/stats" {
                        let mut response = Response::new(Full::new(Bytes::from(stats.json().to_string())));
                        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        return Ok::<_, Infallible>(response);
                    }
                    let started = Instant::now();
                    let in_flight = stats.in_flight.fetch_add(1, Relaxed) + 1;
                    stats.max_in_flight.fetch_max(in_flight, Relaxed);
                    let wait = knee.map(|k| k.latency(in_flight));
                    let response = match wait {
                        Some(None) => {
                            stats.refused.fetch_add(1, Relaxed);
                            let mut response = Response::new(Full::new(Bytes::from_static(b"overloaded\n")));
                            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                            response
                        }
                        Some(Some(wait)) => {
                            tokio::time::sleep(wait).await;
                            stats.served(started.elapsed());
                            ok(page)
                        }
                        None => {
                            stats.served(started.elapsed());
                            ok(page)
                        }
                    };
                    stats.in_flight.fetch_sub(1, Relaxed);
                    Ok::<_, Infallible>(response)
                })
            });
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
        });
    }
}

fn ok(page: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(page));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capacity_moves_at_its_times() {
        let knee = Knee { capacity: 32, base: Duration::from_millis(100) };
        let changes = [(Duration::from_secs(60), 16), (Duration::from_secs(120), 48)];
        let at = |s| capacity_at(knee, &changes, Duration::from_secs(s)).capacity;
        assert_eq!((at(0), at(59), at(60), at(119), at(120), at(600)), (32, 32, 16, 16, 48, 48));
    }

    #[test]
    fn the_knee_is_flat_to_capacity_then_steep_then_a_refusal() {
        let knee = Knee { capacity: 100, base: Duration::from_millis(20) };
        assert_eq!(knee.latency(1), Some(Duration::from_millis(20)));
        assert_eq!(knee.latency(100), Some(Duration::from_millis(20)));
        let at = |n| knee.latency(n).map(|d| d.as_millis());
        assert_eq!(at(150), Some(30), "×1.5 at 1.5× capacity");
        assert_eq!(at(400), Some(80), "×4 at 4×");
        assert_eq!(at(401), None, "past 4× a 503");
        let mut last = Duration::ZERO;
        for n in 1..=400 {
            let d = knee.latency(n).expect("answered");
            assert!(d >= last, "never faster with more load");
            last = d;
        }
    }

    #[test]
    fn stats_give_quantiles_of_the_service_times() {
        let stats = Stats::default();
        for ms in 1..=100 {
            stats.served(Duration::from_millis(ms));
        }
        stats.refused.fetch_add(1, Relaxed);
        let json = stats.json();
        assert_eq!((json["answered"].as_u64(), json["refused"].as_u64()), (Some(100), Some(1)));
        assert_eq!((json["p50_ms"].as_u64(), json["p99_ms"].as_u64()), (Some(50), Some(99)));
        assert!((json["error_ratio"].as_f64().unwrap_or(0.0) - 1.0 / 101.0).abs() < 1e-9);
    }
}
