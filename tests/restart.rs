//! A restart loses nobody's place (DESIGN §8, "Generations"). A memory-store node is killed
//! with SIGKILL in the middle of a spike and started again with the same secret: its state
//! is gone, but every waiter's signed ticket says when it joined, so each is put back in line
//! by its join time on its next poll; nobody is handed a stranger's place (ticket numbers
//! start again from 0), the order holds across the restart, and visitors admitted before it
//! keep their sessions. Also: a ticket in the format before generations (version 1) is put
//! back too, so an upgrade is a restart like any other.
//!
//! The node is the real binary; every visitor has its own loopback address and cookie jar.

mod support;

use http::{Request, StatusCode, header};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use support::{
    Logs, PASS, Reply, SpikeRoom, TICKET, Upstream, UsherProcess, all_within, cookie_header, decode_pass,
    decode_ticket, empty, forge_ticket_v1, ip, is_kind, keep_cookies, metric, room_id, spike_config, try_http1_on,
};

const SECRET: &str = "0123456789abcdef0123456789abcdef-kept-across-restarts";

fn spawn(config: &str) -> UsherProcess {
    UsherProcess::spawn(config, Logs::Json, &[("USHER_SECRET", SECRET)])
}

/// A visitor's browser: its own address and cookie jar, a new connection per request to
/// wherever the node listens now (it moves when the node restarts), retrying while it is down.
struct Browser {
    ip: IpAddr,
    node: Arc<RwLock<SocketAddr>>,
    jar: BTreeMap<String, String>,
    passes: Vec<String>,
}

impl Browser {
    async fn try_get(&self, path: &str) -> Result<Reply, String> {
        let addr = *self.node.read().expect("node address");
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind(SocketAddr::new(self.ip, 0)).map_err(|e| e.to_string())?;
        let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let mut req =
            Request::get(path).header(header::HOST, "mailbox.test").header(header::ACCEPT, "application/json");
        if let Some(cookies) = cookie_header(&self.jar) {
            req = req.header(header::COOKIE, cookies);
        }
        let req = req.body(empty()).map_err(|e| e.to_string())?;
        let response = try_http1_on(stream, req, "mailbox.test").await.map_err(|e| e.to_string())?;
        let (head, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body).await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply::new(head, body))
    }

    async fn get(&mut self, path: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_get(path).await {
                Ok(reply) => {
                    for (name, value) in keep_cookies(&mut self.jar, &reply) {
                        if is_kind(&name, PASS) {
                            self.passes.push(value);
                        }
                    }
                    return reply;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "{}: GET {path} failed for 30 s: {e}", self.ip);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn ticket(&self) -> Option<&String> {
        self.jar.iter().find(|(n, _)| is_kind(n, TICKET)).map(|(_, v)| v)
    }
}

/// What one spike visitor saw.
struct Record {
    /// Its place in the first generation's order (its first ticket's number), if it queued.
    first: Option<u64>,
    /// That first ticket's generation.
    first_generation: u64,
    /// When a request that found it still waiting was last sent.
    last_waiting_sent: Option<Instant>,
    admitted_seen: Instant,
    passes: Vec<String>,
}

/// Kendall's tau between join order and admission order over the pairs whose order the
/// visitors could observe (see tests/redis_nodes.rs for the same measure).
fn kendall_tau(queued: &[&Record]) -> (f64, u64, u64) {
    let (mut concordant, mut discordant) = (0u64, 0u64);
    for (i, a) in queued.iter().enumerate() {
        for b in &queued[i + 1..] {
            let (a, b) = if a.first < b.first { (a, b) } else { (b, a) };
            let (Some(a_waiting), Some(b_waiting)) = (a.last_waiting_sent, b.last_waiting_sent) else { continue };
            if b.admitted_seen < a_waiting {
                discordant += 1;
            } else if a.admitted_seen < b_waiting {
                concordant += 1;
            }
        }
    }
    let decided = concordant + discordant;
    let tau = if decided == 0 { 0.0 } else { (concordant as f64 - discordant as f64) / decided as f64 };
    (tau, concordant, discordant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_spike_and_started_again_keeps_every_place_and_session() {
    const VISITORS: usize = 300;
    const MAX_ACTIVE: u64 = 10;
    let backend = Upstream::start_mailbox().await;
    let config = spike_config(backend.addr, None, &SpikeRoom::new(MAX_ACTIVE));
    let usher = spawn(&config);
    let node = Arc::new(RwLock::new(usher.http_addr));
    let admitted = Arc::new(AtomicUsize::new(0));
    let joined_count = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(VISITORS + 1));
    // Visitors admitted before the restart hold on to their session until after it.
    let restarted = Arc::new(tokio::sync::Notify::new());
    let restarted_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut tasks = Vec::new();
    for i in 0..VISITORS {
        let (node, admitted, barrier) = (node.clone(), admitted.clone(), barrier.clone());
        let joined_count = joined_count.clone();
        let (restarted, restarted_flag) = (restarted.clone(), restarted_flag.clone());
        tasks.push(tokio::spawn(async move {
            let mut b = Browser { ip: ip(41, i as u32), node, jar: BTreeMap::new(), passes: Vec::new() };
            barrier.wait().await;
            let sent = Instant::now();
            let joined = b.get("/inbox").await;
            joined_count.fetch_add(1, Ordering::SeqCst);
            let mut record = Record {
                first: None,
                first_generation: 0,
                last_waiting_sent: None,
                admitted_seen: Instant::now(),
                passes: vec![],
            };
            if !joined.forwarded() {
                assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE, "{}", joined.text());
                let first = decode_ticket(b.ticket().expect("a ticket"));
                record.first = Some(first.number);
                record.first_generation = first.generation;
                record.last_waiting_sent = Some(sent);
                tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 100)).await;
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let sent = Instant::now();
                    let reply = b.get("/.usher/status").await;
                    let arrived = Instant::now();
                    let status: Value = reply.json();
                    match status["status"].as_str() {
                        Some("waiting") => {
                            record.last_waiting_sent = Some(sent);
                            // Put back or not, the ticket always says when this visitor joined.
                            let now = decode_ticket(b.ticket().expect("still a ticket"));
                            assert_eq!(now.joined_ms, first.joined_ms, "{}: its own join time, no other", b.ip);
                        }
                        Some("admitted") => {
                            record.admitted_seen = arrived;
                            break;
                        }
                        other => panic!("{}: expected waiting or admitted, got {other:?}: {status}", b.ip),
                    }
                }
            }
            admitted.fetch_add(1, Ordering::SeqCst);
            let work = b.get("/work").await;
            assert!(work.forwarded(), "{}: admitted and forwarded: {} {}", b.ip, work.status, work.text());
            if !restarted_flag.load(Ordering::SeqCst) {
                // Admitted before the restart: keep the session across it.
                restarted.notified().await;
                let after = b.get("/work/after-the-restart").await;
                assert!(after.forwarded(), "{}: the session survived the restart: {}", b.ip, after.text());
            }
            let out = b.get("/logout").await;
            assert!(out.forwarded(), "{}: logout is forwarded: {}", b.ip, out.text());
            record.passes = b.passes;
            record
        }));
    }
    barrier.wait().await;

    // Kill it when the room is full: its sessions are held across the restart, everyone
    // else is in line. Everyone: a visitor whose join reached only the new node would join
    // its generation afresh, with a number of its own that says nothing of the first order
    // (on a busy machine the room can fill before the last joins are answered).
    let deadline = Instant::now() + Duration::from_secs(60);
    while admitted.load(Ordering::SeqCst) < MAX_ACTIVE as usize || joined_count.load(Ordering::SeqCst) < VISITORS {
        assert!(Instant::now() < deadline, "the room never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    usher.signal("KILL");
    let before = admitted.load(Ordering::SeqCst);
    drop(usher);
    let usher = spawn(&config);
    *node.write().expect("node address") = usher.http_addr;
    restarted_flag.store(true, Ordering::SeqCst);
    restarted.notify_waiters();
    // A waiter that was admitted in the very moment of the kill may still be on its way to
    // waiting for the restart: tell it again until everyone has moved on.
    let notifier = {
        let restarted = restarted.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                restarted.notify_waiters();
            }
        })
    };

    let records = all_within(tasks, Duration::from_secs(120), "spike visitors").await;
    notifier.abort();

    // Everybody got in exactly once after the restart too: no session shared, no place given
    // to a stranger (each saw only its own join time, checked above).
    let mut sessions = HashSet::new();
    for r in &records {
        let last = r.passes.last().expect("a pass");
        assert!(sessions.insert(decode_pass(last).session), "two visitors share a session");
    }
    let queued: Vec<&Record> = records.iter().filter(|r| r.first.is_some()).collect();
    let generations: HashSet<u64> = queued.iter().map(|r| r.first_generation).collect();
    assert_eq!(generations.len(), 1, "everyone joined before the kill, so their numbers are of one order");
    let (tau, concordant, discordant) = kendall_tau(&queued);
    eprintln!(
        "{VISITORS} visitors, node killed after {before} admissions: tau {tau:.4} ({concordant} pairs in order, \
         {discordant} overtakes)"
    );
    assert!(before < VISITORS, "the kill came mid-spike");
    assert!(tau >= 0.999, "Kendall's tau across the restart: {tau} ({discordant} overtakes)");

    let text = support::metrics_text(usher.admin_addr).await;
    let places = metric(&text, "usher_restored_total", &[("room", "spike"), ("what", "place")]);
    let sessions_kept = metric(&text, "usher_restored_total", &[("room", "spike"), ("what", "session")]);
    assert!(places >= 1.0, "places were restored ({places})");
    assert!(sessions_kept >= 1.0, "sessions were kept ({sessions_kept})");
    eprintln!("restored {places} places and {sessions_kept} sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_from_before_generations_is_put_back_by_when_it_was_issued() {
    let backend = Upstream::start_mailbox().await;
    let usher = spawn(&spike_config(backend.addr, None, &SpikeRoom::new(1)));
    let node = Arc::new(RwLock::new(usher.http_addr));
    let secs = support::unix_secs();
    // Two visitors of the old version: one joined two minutes ago, one a minute ago; and a
    // newcomer now.
    let mut early = Browser { ip: ip(42, 1), node: node.clone(), jar: BTreeMap::new(), passes: vec![] };
    let mut later = Browser { ip: ip(42, 2), node: node.clone(), jar: BTreeMap::new(), passes: vec![] };
    let mut newcomer = Browser { ip: ip(42, 3), node: node.clone(), jar: BTreeMap::new(), passes: vec![] };
    // The one place in the room is taken, so the others wait.
    let mut occupant = Browser { ip: ip(42, 4), node, jar: BTreeMap::new(), passes: vec![] };
    assert!(occupant.get("/inbox").await.forwarded());
    let name = support::named(TICKET, "spike");
    let room = room_id("spike");
    later.jar.insert(name.clone(), forge_ticket_v1(SECRET.as_bytes(), room, 7, secs - 60));
    early.jar.insert(name.clone(), forge_ticket_v1(SECRET.as_bytes(), room, 3, secs - 120));
    assert_eq!(newcomer.get("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    for b in [&mut later, &mut early] {
        let reply = b.get("/.usher/status").await;
        assert_eq!(reply.json()["status"], "waiting", "{}", reply.text());
        let ticket = decode_ticket(b.ticket().expect("a new ticket"));
        assert_ne!(ticket.generation, 0, "reissued in this generation");
    }
    assert_eq!(decode_ticket(early.ticket().expect("ticket")).joined_ms, (secs - 120) * 1000);
    // After the restore window, by join time: early, later, then the newcomer.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let mut positions = Vec::new();
    for b in [&mut early, &mut later, &mut newcomer] {
        positions.push(b.get("/.usher/status").await.json()["position"].clone());
    }
    assert_eq!(positions, [Value::from(1), Value::from(2), Value::from(3)], "by join time");
}
