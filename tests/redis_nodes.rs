//! Several usher nodes on one Redis behave as one fair queue (DESIGN §3, §8): a spike spread
//! round-robin over two nodes is admitted in one FIFO order and never over `max_active` in
//! total; when the node running the admitter dies (SIGKILL, mid-spike; of two nodes, or of
//! three), another takes over, the order holds and nobody is admitted twice. Also: the
//! password from the environment, a wrong password, and TLS.
//!
//! Each node is the real binary; Redis is a real `redis-server` started by the test.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{
    BalancedClient, Logs, Record, RedisServer, SpikeRoom, Upstream, UsherProcess, all_within, decode_pass, ip,
    kendall_tau, spike_config,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-shared-by-both-nodes";

fn spawn_node(config: &str, extra_env: &[(&str, &str)]) -> UsherProcess {
    let mut env = vec![("USHER_SECRET", SECRET)];
    env.extend_from_slice(extra_env);
    UsherProcess::spawn(config, Logs::Json, &env)
}

/// A node's view of the room's `active + pending_grants`, from the admin API (one atomic
/// read of Redis, where two metric gauges could be read between two ticks), or None if the
/// node is gone.
async fn taken(admin: SocketAddr) -> Option<u64> {
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        let stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let req = Request::get("/admin/rooms/spike").header(header::HOST, "admin").body(Empty::<Bytes>::new()).ok()?;
        let body = sender.send_request(req).await.ok()?.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<Value>(&body).ok()
    })
    .await
    .ok()??;
    Some(answer["active"].as_u64()? + answer["pending_grants"].as_u64()?)
}

/// The node (index) whose process holds the admitter lease now.
fn lease_holder(redis: &RedisServer, nodes: &[UsherProcess]) -> Option<(usize, u64)> {
    let lease = redis.cli(&["GET", "{usher:spike}:lease"]);
    let (node, fence) = lease.trim().split_once(':')?;
    let index =
        nodes.iter().position(|n| n.logs().iter().any(|l| l.contains("connected to Redis") && l.contains(node)))?;
    Some((index, fence.parse().ok()?))
}

/// A spike of clients spread round-robin over `node_count` nodes; with `kill_the_admitter`,
/// the node holding the admitter lease is SIGKILLed a third of the way through and another
/// must take the lease over. Checks the cap, one pass per client, and one FIFO order.
async fn spike(node_count: usize, kill_the_admitter: bool) {
    const CLIENTS: usize = 300;
    const MAX_ACTIVE: u64 = 10;
    const POLL: Duration = Duration::from_millis(100);
    let redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    let config = spike_config(backend.addr, Some(&redis.url()), &SpikeRoom::new(MAX_ACTIVE));
    let nodes: Vec<UsherProcess> = (0..node_count).map(|_| spawn_node(&config, &[])).collect();
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http_addr).collect();
    let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin_addr).collect();

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, admins) = (done.clone(), admins.clone());
        tokio::spawn(async move {
            let mut max_taken = 0u64;
            while !done.load(Ordering::Relaxed) {
                for admin in &admins {
                    if let Some(t) = taken(*admin).await {
                        max_taken = max_taken.max(t);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            max_taken
        })
    };

    let live = Arc::new(AtomicI64::new(0));
    let max_live = Arc::new(AtomicI64::new(0));
    let admitted = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (live, max_live, admitted, barrier, http) =
            (live.clone(), max_live.clone(), admitted.clone(), barrier.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            // Round-robin over the nodes.
            let mut c = BalancedClient::new(ip(3, i as u32), http, i % node_count);
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
                    tokio::time::sleep(POLL).await;
                    let sent = Instant::now();
                    let reply = c.get("/.usher/status").await;
                    let arrived = Instant::now();
                    let status: Value = reply.json();
                    match status["status"].as_str() {
                        Some("waiting") => {
                            let position = status["position"].as_u64().expect("a position");
                            assert!(position <= last_position, "{}: position grew to {position}", c.ip);
                            last_position = position;
                            record.last_waiting_sent = Some(sent);
                        }
                        Some("admitted") => {
                            record.admitted_seen = arrived;
                            break;
                        }
                        other => panic!("{}: expected waiting or admitted, got {other:?}: {status}", c.ip),
                    }
                }
            }
            admitted.fetch_add(1, Ordering::SeqCst);
            let now_live = live.fetch_add(1, Ordering::SeqCst) + 1;
            max_live.fetch_max(now_live, Ordering::SeqCst);
            // The pass works on another node too: it verifies there on its own.
            c.move_on();
            let work = c.get("/work").await;
            assert!(work.forwarded(), "{}: an admitted client is forwarded: {} {}", c.ip, work.status, work.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
            live.fetch_sub(1, Ordering::SeqCst);
            let at = c.at;
            let out = c.get("/logout").await;
            // A logout in flight when its node was killed may have ended the session there
            // already; sent again to the next node, its pass is rightly refused. Anywhere
            // else a logout is forwarded.
            assert!(out.forwarded() || c.at != at, "{}: logout is forwarded: {}", c.ip, out.text());
            record.passes = c.passes;
            record
        }));
    }

    let mut takeover = None;
    if kill_the_admitter {
        let deadline = Instant::now() + Duration::from_secs(60);
        while admitted.load(Ordering::SeqCst) < CLIENTS / 3 {
            assert!(Instant::now() < deadline, "the spike never got a third of the way");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (holder, fence) = lease_holder(&redis, &nodes).expect("one node holds the lease");
        let before = admitted.load(Ordering::SeqCst);
        nodes[holder].signal("KILL");
        let killed_at = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(10);
        let survivor = loop {
            if let Some((now_holder, now_fence)) = lease_holder(&redis, &nodes) {
                if now_holder != holder {
                    assert!(now_fence > fence, "a new holder has a higher fence ({now_fence} after {fence})");
                    break now_holder;
                }
            }
            assert!(Instant::now() < deadline, "no node took the admitter lease over within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        takeover = Some((killed_at.elapsed(), before, holder, survivor));
    }

    let records = all_within(tasks, Duration::from_secs(120), "spike clients").await;
    done.store(true, Ordering::Relaxed);
    let max_taken = sampler.await.expect("sampler");

    // Never over max_active in total, as the clients saw it and as the nodes counted it.
    let max_live = max_live.load(Ordering::SeqCst);
    assert!(max_live <= MAX_ACTIVE as i64, "{max_live} sessions were live at once across the nodes");
    assert!(max_live >= 2, "the spike never had two sessions at once: it did not test the cap");
    assert!(max_taken <= MAX_ACTIVE, "active + pending grants reached {max_taken}");

    // Everybody got in exactly once: one pass each, no session shared.
    let mut sessions = HashSet::new();
    for r in &records {
        assert_eq!(r.passes.len(), 1, "a client got {} passes", r.passes.len());
        assert!(sessions.insert(decode_pass(&r.passes[0]).session), "two clients share a session");
    }
    let queued: Vec<&Record> = records.iter().filter(|r| r.ticket.is_some()).collect();
    assert!(queued.len() >= CLIENTS - 2 * MAX_ACTIVE as usize, "only {} clients queued", queued.len());
    let tickets: HashSet<u64> = queued.iter().filter_map(|r| r.ticket).collect();
    assert_eq!(tickets.len(), queued.len(), "ticket numbers are unique across the nodes");

    // One global FIFO order.
    let (tau, concordant, discordant, ties) = kendall_tau(&queued);
    let pairs = (queued.len() * (queued.len() - 1) / 2) as u64;
    assert!(concordant + discordant > pairs / 2, "too few pairs could be ordered ({concordant} of {pairs})");
    assert_eq!(discordant, 0, "{discordant} overtakes among clients that kept polling");
    assert!(tau >= 0.999, "Kendall's tau {tau}");
    eprintln!(
        "{CLIENTS} clients over {node_count} nodes: tau {tau:.4} ({concordant} pairs in order, {discordant} overtakes, \
         {ties} within one poll), max live {max_live}, max active+pending {max_taken}"
    );
    // Every key expires some day, and no client address is in Redis (only ClientKey hashes).
    let keys = redis.cli(&["--scan", "--pattern", "*"]);
    for kept in ["limits", "state", "lease"] {
        assert!(keys.lines().any(|k| k == format!("{{usher:spike}}:{kept}")), "no {kept} key in {keys}");
    }
    for key in keys.lines() {
        assert!(key.starts_with("{usher:spike}:"), "{key} is under the room's hash tag");
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().expect("PTTL");
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    let snapshot = redis.snapshot();
    assert!(!snapshot.windows(6).any(|w| w == b"127.3."), "a client address is stored in Redis");
    if let Some((took, before, holder, survivor)) = takeover {
        eprintln!(
            "killed node {holder} of {node_count} (the admitter) after {before} admissions; \
             node {survivor} held the lease {took:?} later"
        );
        assert!(before < CLIENTS, "the kill came mid-spike");
        assert!(nodes[survivor].logs().iter().any(|l| l.contains("this node runs the admitter")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_over_two_nodes_is_admitted_in_one_fifo_order_never_over_max_active() {
    spike(2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_admitter_node_dies_mid_spike_the_other_takes_over_and_nobody_is_admitted_twice() {
    spike(2, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_admitter_of_three_nodes_dies_mid_spike_another_takes_over_in_order_and_nobody_is_admitted_twice() {
    spike(3, true).await;
}

/// The number ahead a waiter is told, through `c`'s current node.
async fn ahead_via(c: &mut BalancedClient, node: usize) -> u64 {
    c.sender = None;
    c.at = node;
    let status: Value = c.get("/.usher/status").await.json();
    assert_eq!(status["status"], "waiting", "{status}");
    status["ahead"].as_u64().expect("a number ahead")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_moving_between_nodes_never_sees_its_number_grow_when_someone_ahead_gives_up() {
    const AHEAD: usize = 24;
    let redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    let room = SpikeRoom { waiter_ttl: "1s", hold: "2s", ..SpikeRoom::new(1) };
    let config = spike_config(backend.addr, Some(&redis.url()), &room);
    let nodes: Vec<UsherProcess> = (0..2).map(|_| spawn_node(&config, &[])).collect();
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http_addr).collect();
    let mut holder = BalancedClient::new(ip(4, 0), http.clone(), 0);
    assert!(holder.get("/inbox").await.forwarded(), "the first visitor fills the room");
    // 24 ahead of the watched waiter, all polling but one, who gives up.
    let mut ahead = Vec::new();
    for i in 1..=AHEAD {
        let mut c = BalancedClient::new(ip(4, i as u32), http.clone(), 1);
        assert_eq!(c.get("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
        ahead.push(c);
    }
    let mut watched = BalancedClient::new(ip(4, 100), http.clone(), 0);
    assert_eq!(watched.get("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let gives_up = ahead.remove(3);
    let keep_polling = tokio::spawn(async move {
        for _ in 0..40 {
            for c in &mut ahead {
                c.get("/.usher/status").await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    // Node 0 learns the watched waiter's place (24 ahead) and answers it itself from then on.
    let mut shown = vec![ahead_via(&mut watched, 0).await];
    shown.push(ahead_via(&mut watched, 0).await);
    // The one who gave up is abandoned after hold; node 1, asked for the first time, counts it out.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        shown.push(ahead_via(&mut watched, 0).await);
        let text = support::metrics_text(nodes[0].admin_addr).await + &support::metrics_text(nodes[1].admin_addr).await;
        if text.lines().any(|l| l.starts_with("usher_abandoned_total{room=\"spike\"} 1")) {
            break;
        }
        assert!(Instant::now() < deadline, "the one who gave up was never abandoned");
    }
    shown.push(ahead_via(&mut watched, 1).await);
    // Back on node 0, which still counts the one who left: the cookie holds it to what was shown.
    for _ in 0..3 {
        shown.push(ahead_via(&mut watched, 0).await);
    }
    drop(gives_up);
    keep_polling.await.expect("the others polled");
    assert_eq!(shown[0], AHEAD as u64, "{shown:?}");
    assert!(shown.windows(2).all(|w| w[1] <= w[0]), "the number ahead grew: {shown:?}");
    assert_eq!(*shown.last().expect("shown"), AHEAD as u64 - 1, "{shown:?}");
}
