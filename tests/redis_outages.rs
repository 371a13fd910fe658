//! The line survives store outages and skewed clocks (DESIGN §3 "Restarts and failovers lose
//! nobody's place", §8; issue 15). Two usher nodes share a real `redis-server`; a line forms
//! behind a full room (the first four visitors are admitted and hold their sessions), then:
//! - Redis is frozen (SIGSTOP) for twice `waiter_ttl` and resumed: every waiter that keeps
//!   polling keeps its place (the number ahead never grows), nobody is found away or
//!   abandoned (the outage grace), and the line is admitted in join order;
//! - Redis is killed and started empty: each waiter's next poll puts it back by its own
//!   signed join time (never a stranger's place), the sessions are adopted, and the line is
//!   admitted in join order; the same with the nodes' clocks 60 s ahead and 60 s behind;
//! - the nodes' clocks are 120 s apart without an outage: still one queue in one order.
//!
//! And a stall of Redis shorter than the admitter lease but longer than a node's response
//! timeout: the answers of the ticks that ran in it are lost, yet the waiters those ticks
//! found away still reach the node's `usher_away_total` (with the next answer's totals).
//!
//! The order is measured as in tests/redis_nodes.rs (Kendall's tau over the pairs the
//! visitors could observe); every wait is bounded.

mod support;

use http::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{
    BalancedClient, Logs, Record, RedisServer, SpikeRoom, Upstream, UsherProcess, all_within, decode_pass, ip,
    kendall_tau, metric, metrics_text, spike_config,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-outages-of-redis";
const VISITORS: usize = 40;
const MAX_ACTIVE: u64 = 4;
const POLL: Duration = Duration::from_millis(200);

/// What happens to Redis while the line waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    None,
    /// SIGSTOP for twice `waiter_ttl`, then SIGCONT.
    Frozen,
    /// SIGKILL and a start without data.
    KilledEmpty,
}

fn spawn_node(config: &str, clock_offset_ms: i64) -> UsherProcess {
    let offset = clock_offset_ms.to_string();
    UsherProcess::spawn(config, Logs::Json, &[("USHER_SECRET", SECRET), ("USHER_TEST_CLOCK_OFFSET_MS", &offset)])
}

/// The sum over the nodes of a room counter.
async fn total(admins: &[SocketAddr], name: &str) -> f64 {
    let mut sum = 0.0;
    for admin in admins {
        sum += metric(&metrics_text(*admin).await, name, &[("room", "spike")]);
    }
    sum
}

/// A line of `VISITORS` over two nodes with these clock offsets; `outage` strikes once the
/// room is full and everyone has joined, and the sessions are held until after it.
async fn line(offsets_ms: [i64; 2], outage: Outage) {
    let mut redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    let room = SpikeRoom { waiter_ttl: "4s", tick: "100ms", ..SpikeRoom::new(MAX_ACTIVE) };
    let config = spike_config(backend.addr, Some(&redis.url()), &room);
    let nodes: Vec<UsherProcess> = offsets_ms.iter().map(|ms| spawn_node(&config, *ms)).collect();
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http_addr).collect();
    let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin_addr).collect();

    let (release, released) = tokio::sync::watch::channel(false);
    let joined = Arc::new(AtomicUsize::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let restored = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(VISITORS));
    let mut tasks = Vec::new();
    for i in 0..VISITORS {
        let (joined, holding, restored, barrier, http) =
            (joined.clone(), holding.clone(), restored.clone(), barrier.clone(), http.clone());
        let mut released = released.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = BalancedClient::new(ip(61, i as u32), http, i % 2);
            barrier.wait().await;
            let sent = Instant::now();
            let reply = c.get("/inbox").await;
            joined.fetch_add(1, Ordering::SeqCst);
            let mut record =
                Record { ticket: None, last_waiting_sent: None, admitted_seen: Instant::now(), passes: Vec::new() };
            if reply.status != StatusCode::OK {
                assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
                let first = c.ticket();
                record.ticket = Some(first.number);
                record.last_waiting_sent = Some(sent);
                let (mut generation, mut last_position) = (first.generation, u64::MAX);
                loop {
                    tokio::time::sleep(POLL).await;
                    let sent = Instant::now();
                    let reply = c.get("/.usher/status").await;
                    let arrived = Instant::now();
                    let status: Value = reply.json();
                    match status["status"].as_str() {
                        Some("waiting") => {
                            let now = c.ticket();
                            assert_eq!(now.joined_ms, first.joined_ms, "{}: its own join time, no other", c.ip);
                            if now.generation != generation {
                                // Put back in a new generation: positions start again.
                                assert_eq!(outage, Outage::KilledEmpty, "{}: a new generation", c.ip);
                                restored.fetch_add(1, Ordering::SeqCst);
                                (generation, last_position) = (now.generation, u64::MAX);
                            }
                            // While a new generation collects those coming back, no position yet.
                            let position = status["position"].as_u64();
                            assert!(position.is_some() || outage == Outage::KilledEmpty, "a position: {status}");
                            if let Some(position) = position {
                                assert!(position <= last_position, "{}: ahead grew to {position}", c.ip);
                                last_position = position;
                            }
                            record.last_waiting_sent = Some(sent);
                        }
                        Some("admitted") => {
                            record.admitted_seen = arrived;
                            break;
                        }
                        // Redis is away: the node says so; the visitor keeps polling.
                        Some("unavailable") if outage != Outage::None => {}
                        other => panic!("{}: expected waiting or admitted, got {other:?}: {status}", c.ip),
                    }
                }
            }
            let work = c.get("/work").await;
            assert!(work.forwarded(), "{}: admitted and forwarded: {} {}", c.ip, work.status, work.text());
            if !*released.borrow() {
                // Admitted before the outage: keep the session across it.
                holding.fetch_add(1, Ordering::SeqCst);
                released.wait_for(|r| *r).await.expect("the test releases");
                let after = c.get("/work/after-the-outage").await;
                assert!(after.forwarded(), "{}: the session survived: {} {}", c.ip, after.status, after.text());
            }
            let out = c.get("/logout").await;
            assert!(out.forwarded(), "{}: logout is forwarded: {}", c.ip, out.text());
            record.passes = c.passes;
            record
        }));
    }

    // Everyone has joined and the room is full: the others wait in line.
    let deadline = Instant::now() + Duration::from_secs(20);
    while joined.load(Ordering::SeqCst) < VISITORS || holding.load(Ordering::SeqCst) < MAX_ACTIVE as usize {
        assert!(Instant::now() < deadline, "the line never formed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(4 * POLL).await;
    match outage {
        Outage::None => {}
        Outage::Frozen => {
            redis.signal("STOP");
            tokio::time::sleep(Duration::from_secs(8)).await;
            redis.signal("CONT");
            for n in &nodes {
                assert!(n.logs().iter().any(|l| l.contains("store unreachable")), "each node felt the outage");
            }
        }
        Outage::KilledEmpty => {
            redis.restart();
            // The sessions are held until both nodes know Redis lost them: a node serves a
            // pass from its own map until its next tick tells it so, and only then are
            // passes adopted (counted against max_active) in the new generation.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !nodes.iter().all(|n| n.logs().iter().any(|l| l.contains("the room's state in Redis is new"))) {
                assert!(Instant::now() < deadline, "a node did not notice that Redis lost the room");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    release.send(true).expect("visitors listen");

    let records = all_within(tasks, Duration::from_secs(60), "visitors").await;

    let mut sessions = HashSet::new();
    for r in &records {
        let last = r.passes.last().expect("a pass");
        assert!(sessions.insert(decode_pass(last).session), "two visitors share a session");
    }
    let queued: Vec<&Record> = records.iter().filter(|r| r.ticket.is_some()).collect();
    assert!(queued.len() >= VISITORS - 2 * MAX_ACTIVE as usize, "only {} visitors queued", queued.len());
    let (tau, concordant, discordant, ties) = kendall_tau(&queued);
    let pairs = (queued.len() * (queued.len() - 1) / 2) as u64;
    assert!(concordant + discordant > pairs / 2, "too few pairs could be ordered ({concordant} of {pairs})");
    let (away, abandoned) = (total(&admins, "usher_away_total").await, total(&admins, "usher_abandoned_total").await);
    eprintln!(
        "{outage:?}, clocks {offsets_ms:?}: tau {tau:.4} ({concordant} in order, {discordant} overtakes, {ties} ties), \
         away {away}, abandoned {abandoned}, {} waiters restored",
        restored.load(Ordering::SeqCst)
    );
    assert_eq!(discordant, 0, "{discordant} overtakes among visitors that kept polling");
    assert!(tau >= 0.999, "Kendall's tau {tau}");
    assert_eq!((away, abandoned), (0.0, 0.0), "nobody who kept polling is away or abandoned");
    let stored = |field| redis.cli(&["HGET", "{usher:spike}:state", field]).trim().parse::<f64>().unwrap_or(0.0);
    assert_eq!(
        (stored("away_total"), stored("abandoned_total")),
        (away, abandoned),
        "the nodes counted what Redis did"
    );
    if outage == Outage::KilledEmpty {
        let text = [metrics_text(admins[0]).await, metrics_text(admins[1]).await];
        let sum = |what: &str| -> f64 {
            text.iter().map(|t| metric(t, "usher_restored_total", &[("room", "spike"), ("what", what)])).sum()
        };
        let (places, kept) = (sum("place"), sum("session"));
        assert!(places >= 1.0 && restored.load(Ordering::SeqCst) >= 1, "places were restored ({places})");
        eprintln!("restored {places} places, adopted {kept} sessions");
        assert!((1.0..=MAX_ACTIVE as f64).contains(&kept), "sessions adopted up to max_active ({kept})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_for_twice_waiter_ttl_keeps_every_place_and_the_order() {
    line([0, 0], Outage::Frozen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_started_empty_puts_everyone_back_by_their_own_join_time() {
    line([0, 0], Outage::KilledEmpty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_started_empty_under_nodes_a_minute_ahead_and_behind() {
    line([60_000, -60_000], Outage::KilledEmpty).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_clocks_are_two_minutes_apart_admit_as_one_queue() {
    line([0, 120_000], Outage::None).await;
}

/// Redis's clock now, in Unix milliseconds.
fn redis_now_ms(redis: &RedisServer) -> u64 {
    let time = redis.cli(&["TIME"]);
    let mut parts = time.lines().map(|l| l.trim().parse::<u64>().expect("TIME"));
    let (secs, micros) = (parts.next().expect("seconds"), parts.next().expect("microseconds"));
    secs * 1000 + micros / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_found_away_by_ticks_whose_answers_were_lost_are_still_counted() {
    const QUITTERS: usize = 5;
    let redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    // A tick every 2 s: the lease (five ticks) outlasts the stall, so there is no outage
    // grace, while a tick's answer (2 s response timeout) does not.
    let room = SpikeRoom { waiter_ttl: "2s", tick: "2s", ..SpikeRoom::new(1) };
    let node = spawn_node(&spike_config(backend.addr, Some(&redis.url()), &room), 0);
    let mut holder = BalancedClient::new(ip(62, 0), vec![node.http_addr], 0);
    assert!(holder.get("/inbox").await.forwarded(), "the one place is taken");
    for i in 1..=QUITTERS {
        let mut c = BalancedClient::new(ip(62, i as u32), vec![node.http_addr], 0);
        assert_eq!(c.get("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE, "in line");
    }
    // They never poll again. Freeze Redis just before the first would be found away, for
    // longer than a tick's answer is awaited: the tick that finds them runs when Redis
    // resumes, and its answer is thrown away by then.
    let scores = redis.cli(&["ZRANGE", "{usher:spike}:heartbeats", "0", "-1", "WITHSCORES"]);
    let seen: Vec<u64> = scores.lines().skip(1).step_by(2).map(|s| s.trim().parse().expect("a score")).collect();
    assert_eq!(seen.len(), QUITTERS, "every quitter is present: {scores}");
    let away_at = seen.iter().min().expect("quitters") + 2_000;
    let wait = away_at.saturating_sub(redis_now_ms(&redis) + 300);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    redis.signal("STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis.signal("CONT");

    let deadline = Instant::now() + Duration::from_secs(20);
    let counted = loop {
        let stored: u64 = redis.cli(&["HGET", "{usher:spike}:state", "away_total"]).trim().parse().unwrap_or(0);
        let counted = room_away(node.admin_addr).await;
        if stored == QUITTERS as u64 && counted == stored {
            break counted;
        }
        assert!(Instant::now() < deadline, "the store found {stored} away, the node counted {counted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(node.logs().iter().any(|l| l.contains("store unreachable")), "a tick's answer was lost in the stall");
    eprintln!("{counted} away counted after the stall");
}

async fn room_away(admin: SocketAddr) -> u64 {
    metric(&metrics_text(admin).await, "usher_away_total", &[("room", "spike")]) as u64
}
