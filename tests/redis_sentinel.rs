//! usher on a Sentinel-managed Redis (DESIGN §8): when the master dies mid-spike, the
//! sentinels promote the replica and every node finds the new master by itself. Meanwhile
//! pass holders keep being served and waiters are told "unavailable"; afterwards every waiter
//! is still in line, in its place, and the line is admitted in its order. Over TLS too
//! (`rediss+sentinel://`), with the operator's CA.
//!
//! Every process is real: two usher binaries, a master, a replica and three sentinels.

mod support;

use http::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{
    BalancedClient, Logs, Record, RedisOptions, RedisSentinels, SpikeRoom, Upstream, UsherProcess, Visitor, all_within,
    decode_pass, eventually, ip, kendall_tau, spike_config,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-sentinel-tests";
const PASSWORD: &str = "door-sentinel-4711";

/// One node's configuration: a room `spike` on the Sentinel URL. Waiters are kept for two
/// minutes without a heartbeat, far longer than a failover, so none is dropped by it.
fn node_config(backend: SocketAddr, url: &str, max_active: u64) -> String {
    spike_config(backend, Some(url), &SpikeRoom { waiter_ttl: "120s", ..SpikeRoom::new(max_active) })
}

/// What the clients saw, shared with the test's main task.
#[derive(Default)]
struct Seen {
    /// Admitted and holding their session until released.
    holding: AtomicUsize,
    /// Queued clients that have seen their place at least once.
    placed: AtomicUsize,
    /// "waiting" answers, all clients together.
    waiting: AtomicUsize,
    /// "unavailable" answers, and when the last one arrived.
    unavailable: AtomicUsize,
    last_unavailable: Mutex<Option<Instant>>,
    /// Requests of pass holders while they held (each one must reach the upstream).
    served: AtomicUsize,
    released: AtomicBool,
}

/// One spike client: joins; if queued, polls until admitted (a place never grows; "unavailable"
/// is allowed, "expired" is not); once admitted, uses its pass on the other node, holds it
/// until released if the test has not released yet, and logs out.
async fn client(mut c: BalancedClient, i: usize, seen: Arc<Seen>, barrier: Arc<tokio::sync::Barrier>) -> Record {
    barrier.wait().await;
    let sent = Instant::now();
    let joined = c.get("/inbox").await;
    let mut record =
        Record { ticket: None, last_waiting_sent: None, admitted_seen: Instant::now(), passes: Vec::new() };
    if joined.status != StatusCode::OK {
        assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE, "{}", joined.text());
        assert_eq!(joined.json()["status"], "waiting", "{}", joined.text());
        record.ticket = Some(c.ticket().number);
        record.last_waiting_sent = Some(sent);
        let mut last_position = u64::MAX;
        tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 100)).await;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let sent = Instant::now();
            let reply = c.get("/.usher/status").await;
            let arrived = Instant::now();
            let status: Value = reply.json();
            match status["status"].as_str() {
                Some("waiting") => {
                    let position = status["position"].as_u64().expect("a position");
                    assert!(position <= last_position, "{}: position grew to {position}", c.ip);
                    if last_position == u64::MAX {
                        seen.placed.fetch_add(1, Ordering::SeqCst);
                    }
                    last_position = position;
                    record.last_waiting_sent = Some(sent);
                    seen.waiting.fetch_add(1, Ordering::SeqCst);
                }
                Some("unavailable") => {
                    seen.unavailable.fetch_add(1, Ordering::SeqCst);
                    *seen.last_unavailable.lock().expect("lock") = Some(arrived);
                }
                Some("admitted") => {
                    record.admitted_seen = arrived;
                    break;
                }
                other => panic!("{}: expected waiting, unavailable or admitted, got {other:?}: {status}", c.ip),
            }
        }
    }
    // The pass works on the other node too: it verifies there on its own.
    c.move_on();
    let work = c.get("/work").await;
    assert!(work.forwarded(), "{}: an admitted client is forwarded: {} {}", c.ip, work.status, work.text());
    if !seen.released.load(Ordering::SeqCst) {
        seen.holding.fetch_add(1, Ordering::SeqCst);
        while !seen.released.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let work = c.get("/work").await;
            assert!(work.forwarded(), "{}: a pass holder is served during the failover: {}", c.ip, work.text());
            seen.served.fetch_add(1, Ordering::SeqCst);
        }
    }
    let out = c.get("/logout").await;
    assert!(out.forwarded(), "{}: logout is forwarded: {}", c.ip, out.text());
    record.passes = c.passes;
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_master_dies_mid_spike_the_nodes_follow_the_new_master_and_the_line_holds() {
    const CLIENTS: usize = 100;
    const MAX_ACTIVE: usize = 10;
    let started = Instant::now();
    let mut redis = RedisSentinels::start(Some(PASSWORD));
    let backend = Upstream::start_mailbox().await;
    let config = node_config(backend.addr, &redis.url(), MAX_ACTIVE as u64);
    let env = [("USHER_SECRET", SECRET), ("USHER_REDIS_PASSWORD", PASSWORD)];
    let nodes = [UsherProcess::spawn(&config, Logs::Json, &env), UsherProcess::spawn(&config, Logs::Json, &env)];
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http_addr).collect();
    let ready = started.elapsed();

    let seen = Arc::new(Seen::default());
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let c = BalancedClient::new(ip(5, i as u32), http.clone(), i % 2);
            tokio::spawn(client(c, i, seen.clone(), barrier.clone()))
        })
        .collect();

    // A quiet moment: the room is full of holders and every waiter knows its place, so no
    // admission is in flight when the master dies.
    let queued = CLIENTS - MAX_ACTIVE;
    eventually("the room is full and every waiter has seen its place", Duration::from_secs(30), || {
        let seen = seen.clone();
        async move { seen.holding.load(Ordering::SeqCst) == MAX_ACTIVE && seen.placed.load(Ordering::SeqCst) == queued }
    })
    .await;

    let old = redis.kill_master();
    let killed_at = Instant::now();
    eventually("the sentinels name a new master", Duration::from_secs(30), || {
        let now = redis.master_port();
        async move { now.is_some_and(|p| p != old) }
    })
    .await;
    let promoted = killed_at.elapsed();
    eventually("both nodes follow the new master", Duration::from_secs(30), || {
        let followed = nodes.iter().all(|n| n.logs().iter().any(|l| l.contains("new Redis master: following it")));
        async move { followed }
    })
    .await;
    let followed = killed_at.elapsed();
    let waiting_then = seen.waiting.load(Ordering::SeqCst);
    eventually("every waiter sees its place again", Duration::from_secs(30), || {
        let now = seen.waiting.load(Ordering::SeqCst);
        async move { now >= waiting_then + 2 * queued }
    })
    .await;
    let serving = killed_at.elapsed();

    // Nothing admitted or queued was lost with the old master: every session and every
    // waiter is on the new one.
    let master = redis.master();
    assert_eq!(master.cli(&["ZCARD", "{usher:spike}:sessions:seen"]).trim(), MAX_ACTIVE.to_string(), "sessions");
    assert_eq!(master.cli(&["ZCARD", "{usher:spike}:line"]).trim(), queued.to_string(), "waiters in line");
    assert_eq!(seen.holding.load(Ordering::SeqCst), MAX_ACTIVE, "nobody was admitted while the room was full");

    seen.released.store(true, Ordering::SeqCst);
    let records = all_within(tasks, Duration::from_secs(60), "spike clients (after the failover)").await;

    // Everybody got in exactly once: one pass each, no session shared.
    let mut sessions = HashSet::new();
    for r in &records {
        assert_eq!(r.passes.len(), 1, "a client got {} passes", r.passes.len());
        assert!(sessions.insert(decode_pass(&r.passes[0]).session), "two clients share a session");
    }
    let queued_records: Vec<&Record> = records.iter().filter(|r| r.ticket.is_some()).collect();
    assert_eq!(queued_records.len(), queued, "clients queued");

    // The line kept its order across the failover.
    let (tau, concordant, discordant, ties) = kendall_tau(&queued_records);
    let pairs = (queued * (queued - 1) / 2) as u64;
    assert!(concordant + discordant > pairs / 2, "too few pairs could be ordered ({concordant} of {pairs})");
    assert_eq!(discordant, 0, "{discordant} overtakes among clients that kept polling");
    assert!(tau >= 0.999, "Kendall's tau {tau}");

    for node in &nodes {
        assert!(!node.logs().iter().any(|l| l.contains("panicked")), "a node panicked:\n{}", node.logs().join("\n"));
    }
    let unavailable = seen.unavailable.load(Ordering::SeqCst);
    assert!(unavailable > 0, "no waiter noticed the failover: it did not test anything");
    let last_unavailable = seen.last_unavailable.lock().expect("lock").map(|t| t.saturating_duration_since(killed_at));
    let served = seen.served.load(Ordering::SeqCst);
    assert!(served >= MAX_ACTIVE, "pass holders were served {served} times while they held");
    eprintln!(
        "sentinels and 2 nodes ready in {ready:?}; master killed with {MAX_ACTIVE} holders and {queued} waiters; \
         sentinels promoted the replica after {promoted:?}; both nodes followed after {followed:?}; every \
         waiter saw its place again after {serving:?}; last 'unavailable' {last_unavailable:?} after the kill \
         ({unavailable} 'unavailable' answers); holders served {served} times while holding; tau {tau:.4} \
         ({concordant} pairs in order, {discordant} overtakes, {ties} within one poll); total {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_master_is_found_through_the_sentinels_before_and_after_a_failover() {
    let mut redis = RedisSentinels::start_with(RedisOptions {
        tls: true,
        password: Some(PASSWORD.into()),
        ..RedisOptions::default()
    });
    assert!(redis.url().starts_with("rediss+sentinel://"));
    let backend = Upstream::start_mailbox().await;
    let config = node_config(backend.addr, &redis.url(), 1);
    let ca = redis.ca_file();
    let env =
        [("USHER_SECRET", SECRET), ("USHER_REDIS_PASSWORD", PASSWORD), ("SSL_CERT_FILE", ca.to_str().expect("UTF-8"))];
    let node = UsherProcess::spawn(&config, Logs::Text, &env);

    let mut first = Visitor::new(ip(8, 1), node.http_addr);
    assert!(first.api("/inbox").await.forwarded(), "the first visitor is admitted at once");
    let old = redis.kill_master();
    eventually("the sentinels name a new master", Duration::from_secs(30), || {
        let now = redis.master_port();
        async move { now.is_some_and(|p| p != old) }
    })
    .await;
    // The room is full (the first visitor's session survived): a newcomer is queued, as soon
    // as the node has followed the master.
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 2.. {
        let answer = Visitor::new(ip(8, n), node.http_addr).api("/inbox").await;
        if answer.json()["status"] != "unavailable" {
            assert_eq!(answer.json()["status"], "waiting", "the room is still full: {}", answer.text());
            break;
        }
        assert!(Instant::now() < deadline, "the node did not follow the new master within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first.api("/inbox").await.forwarded(), "the pass holder is still served");
}
