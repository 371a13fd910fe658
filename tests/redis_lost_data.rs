//! Redis loses its data while a line waits, under two nodes whose clocks are two minutes
//! apart (+60 s and −60 s, the debug-only `USHER_TEST_CLOCK_OFFSET_MS`), and newcomers arrive
//! at once (DESIGN §8, "Restarts and failovers lose nobody's place"):
//! - every waiter still polling is put back by the join time its signed ticket carries (a new
//!   ticket, the same join time);
//! - the newcomers, who get the new generation's first numbers (the very numbers the old
//!   cookies carry), are neither handed those places nor let in first: the nodes knew the
//!   generation before, so the new one opens with a restore window in which nobody is let in
//!   at once, though the room looks empty;
//! - the admitted keep their sessions, and the line is admitted in join order.
//!
//! tests/redis_outages.rs covers a frozen Redis and the restart without newcomers. Real
//! processes throughout; every visitor has its own loopback address and cookie jar, and moves
//! to the other node on each poll, as a load balancer without affinity would send it.

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{
    BalancedClient, Logs, Record, RedisServer, SpikeRoom, TICKET, Upstream, UsherProcess, all_within, ip, is_kind,
    kendall_tau, metric, metrics_text, spike_config,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-lost-data-shared";
const WAITERS: usize = 12;
const POLL: Duration = Duration::from_millis(500);

/// A node with one room, `spike`, that admits one at a time; `waiter_ttl` 10 s.
fn node(backend: SocketAddr, redis: &RedisServer, offset_ms: &str) -> UsherProcess {
    let room = SpikeRoom { waiter_ttl: "10s", ..SpikeRoom::new(1) };
    let config = spike_config(backend, Some(&redis.url()), &room);
    UsherProcess::spawn(&config, Logs::Json, &[("USHER_SECRET", SECRET), ("USHER_TEST_CLOCK_OFFSET_MS", offset_ms)])
}

/// Two nodes, their clocks 60 s ahead and 60 s behind.
fn skewed_nodes(backend: SocketAddr, redis: &RedisServer) -> Vec<UsherProcess> {
    vec![node(backend, redis, "60000"), node(backend, redis, "-60000")]
}

/// The ticket cookie a client holds now: (generation, number, join time in ms).
fn ticket_of(c: &BalancedClient) -> (u64, u64, u64) {
    let t = c.ticket();
    (t.generation, t.number, t.joined_ms)
}

/// What a waiter saw: its record (ordered by join time) and every number ahead it was shown.
struct Seen {
    record: Record,
    aheads: Vec<u64>,
    /// Tickets it was given: (generation, number, join time).
    tickets: Vec<(u64, u64, u64)>,
}

/// A waiter that joined on `nodes[at]` and polls, moving to the other node each time, until
/// it is admitted; then it logs out, freeing the one place. Statuses other than waiting and
/// admitted are taken as they come (Redis is away for part of the time): only a waiting
/// answer's number counts.
fn waiter(mut c: BalancedClient, released: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let first = ticket_of(&c);
        let mut seen = Seen {
            record: Record {
                ticket: Some(first.2),
                last_waiting_sent: Some(Instant::now()),
                admitted_seen: Instant::now(),
                passes: Vec::new(),
            },
            aheads: Vec::new(),
            tickets: vec![first],
        };
        loop {
            tokio::time::sleep(POLL).await;
            c.move_on();
            let sent = Instant::now();
            let reply = c.get("/.usher/status").await;
            let arrived = Instant::now();
            let status: serde_json::Value = reply.json();
            match status["status"].as_str() {
                Some("waiting") => {
                    let held = ticket_of(&c);
                    if seen.tickets.last().map(|t| t.0) != Some(held.0) {
                        seen.tickets.push(held);
                    }
                    if let Some(ahead) = status["ahead"].as_u64() {
                        seen.aheads.push(ahead);
                    }
                    seen.record.last_waiting_sent = Some(sent);
                }
                Some("admitted") => {
                    assert!(released.load(Ordering::SeqCst), "{}: admitted while the place was taken", c.ip);
                    seen.record.admitted_seen = arrived;
                    break;
                }
                Some("unavailable") => {}
                other => panic!("{}: lost its place: {other:?}: {status}", c.ip),
            }
        }
        assert!(c.get("/logout").await.forwarded(), "{}: logout", c.ip);
        seen.record.passes = c.passes;
        seen
    })
}

/// Joins `n` waiters one after another (alternating nodes), so their join times differ.
async fn join(
    first_ip: u32,
    n: usize,
    http: &[SocketAddr],
    released: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = BalancedClient::new(ip(21, first_ip + i as u32), http.to_vec(), i % http.len());
        // Right after Redis came back, a node may not have reconnected yet: it says so with a
        // 503 and no ticket, and the visitor tries again, as the page does.
        for _ in 0..100 {
            let joined = c.get("/inbox").await;
            assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE, "{}", joined.text());
            if c.jar.keys().any(|name| is_kind(name, TICKET)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        tasks.push(waiter(c, released.clone()));
    }
    tasks
}

/// Waits for every waiter, then checks one order by join time and that no number grew.
async fn admitted_in_join_order(tasks: Vec<tokio::task::JoinHandle<Seen>>) -> Vec<Seen> {
    let seen = all_within(tasks, Duration::from_secs(90), "waiters").await;
    for s in &seen {
        assert!(s.aheads.windows(2).all(|w| w[1] <= w[0]), "a number ahead grew: {:?}", s.aheads);
        assert_eq!(s.record.passes.len(), 1, "one pass each");
    }
    let records: Vec<&Record> = seen.iter().map(|s| &s.record).collect();
    let (tau, concordant, discordant, ties) = kendall_tau(&records);
    eprintln!("tau {tau:.4}: {concordant} pairs in join order, {discordant} overtakes, {ties} within one poll");
    assert_eq!(discordant, 0, "{discordant} overtakes");
    assert!(concordant > 0 && tau >= 0.999, "Kendall's tau {tau}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_puts_everyone_back_by_join_time_on_nodes_two_minutes_apart() {
    let mut redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    let nodes = skewed_nodes(backend.addr, &redis);
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http_addr).collect();
    let mut holder = BalancedClient::new(ip(21, 1), http.clone(), 0);
    assert!(holder.get("/inbox").await.forwarded(), "the first visitor is let in");
    let released = Arc::new(AtomicBool::new(false));
    let mut tasks = join(10, WAITERS, &http, &released).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Redis dies and comes back with nothing: ticket numbers start again from 0.
    redis.restart();
    // Restarted empty: nothing was loaded. (Counting keys would race the nodes, which write
    // the room's limits back within a tick.)
    let persistence = redis.cli(&["INFO", "persistence"]);
    assert!(persistence.contains("rdb_last_load_keys_loaded:0"), "restarted empty: {persistence}");
    // Newcomers at once get the new generation's first numbers, which the old waiters'
    // cookies also carry: they must not be handed those places, nor go first.
    tasks.extend(join(40, 3, &http, &released).await);
    // The admitted visitor keeps its session: its pass is taken over.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let work = holder.get("/work").await;
        if work.forwarded() {
            break;
        }
        assert!(Instant::now() < deadline, "the pass holder was never served again: {}", work.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    released.store(true, Ordering::SeqCst);
    assert!(holder.get("/logout").await.forwarded());
    let seen = admitted_in_join_order(tasks).await;
    let restored = seen.iter().take(WAITERS).filter(|s| s.tickets.len() == 2).count();
    assert_eq!(restored, WAITERS, "every waiter from before got one ticket of the new generation");
    for s in seen.iter().take(WAITERS) {
        let joined = s.tickets[0].2;
        assert!(s.tickets.iter().all(|t| t.2 == joined), "a restored ticket keeps its join time: {:?}", s.tickets);
    }
    let newcomers: Vec<u64> = seen.iter().skip(WAITERS).map(|s| s.tickets[0].1).collect();
    let reused = seen.iter().take(WAITERS).filter(|s| newcomers.contains(&s.tickets[0].1)).count();
    eprintln!("newcomers after the restart got numbers {newcomers:?}, {reused} of them also in old cookies");
    let restored_metric = metric_sum(&nodes, "usher_restored_total", "place").await;
    assert_eq!(restored_metric, WAITERS as f64, "each place was restored once");
}

/// `usher_restored_total{what}` summed over the nodes.
async fn metric_sum(nodes: &[UsherProcess], name: &str, what: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += metric(&metrics_text(n.admin_addr).await, name, &[("room", "spike"), ("what", what)]);
    }
    sum
}
