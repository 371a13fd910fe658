//! The operator's levers under load (DESIGN §9), through real sockets: a new admission rate
//! takes effect within a few ticks in the middle of a spike, and a pause admits nobody while
//! the line keeps its order, then resumes first come, first served.

mod support;

use http::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;
use usher::config::RoomMode;

const TOKEN: &str = "operations-test-token-0123456789";

fn admitted(text: &str, room: &str) -> f64 {
    metric(text, "usher_admitted_total", &[("room", room)])
}

/// Starts `count` waiters (family 3) that each join, then poll every `every` until admitted
/// or told to stop. Returns the stop flag and their tasks.
async fn waiters(
    addr: std::net::SocketAddr,
    count: u32,
    every: Duration,
) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..count {
        let stop = stop.clone();
        let mut v = Visitor::new(ip(3, i), addr);
        let joined = v.api("/inbox").await;
        assert_eq!(joined.status, 503, "visitor {i} waits: {}", joined.text());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(every * (i % 10) / 10).await;
            while !stop.load(Ordering::Relaxed) {
                if v.status().await["status"] == "admitted" {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    (stop, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_admit_per_minute_mid_spike_changes_the_outflow_within_a_few_ticks() {
    const SLOW: u64 = 60;
    const FAST: u64 = 1200;
    let backend = Upstream::start_mailbox().await;
    let mut spike = room("spike");
    (spike.mode, spike.admit_per_minute, spike.max_active) = (RoomMode::QueueAll, SLOW, 100_000);
    spike.tick = Duration::from_millis(200);
    let usher = usher_with_rooms_and(&backend, vec![spike], |c| c.admin.token = Some(TOKEN.into()));
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);
    let (stop_polling, tasks) = waiters(addr, 250, Duration::from_millis(200)).await;

    // A slow trickle first: one a second, plus the bucket's reserve of two.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_change = admitted(&metrics_text(admin).await, "spike");
    let slow_window = started.elapsed().as_secs_f64();
    assert!(
        before_change <= SLOW as f64 / 60.0 * slow_window + 2.0 + 2.0,
        "{before_change} admitted in {slow_window:.1} s at {SLOW}/min"
    );

    // The operator opens the tap.
    let patched = admin_call(
        admin,
        Method::PATCH,
        "/admin/rooms/spike",
        Some(TOKEN),
        &format!("{{\"admit_per_minute\": {FAST}}}"),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let changed = Instant::now();

    // Give it a few ticks, then measure a window at the new rate.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (window_start, at_start) = (Instant::now(), admitted(&metrics_text(admin).await, "spike"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_end = admitted(&metrics_text(admin).await, "spike");
    let window = window_start.elapsed().as_secs_f64();
    let text = metrics_text(admin).await;
    stop_polling.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("waiter");
    }

    let rate = FAST as f64 / 60.0;
    let in_window = at_end - at_start;
    // Claims follow grants by up to one poll interval, at either end of the window.
    let (low, high) = (rate * (window - 0.5), rate * (window + 0.5) + rate * 2.0);
    assert!(
        (low..=high).contains(&in_window),
        "{in_window} admitted in {window:.1} s starting {:.1} s after the change to {FAST}/min; expected [{low:.0}, {high:.0}]",
        (window_start - changed).as_secs_f64()
    );
    assert!(metric(&text, "usher_waiting", &[("room", "spike")]) > 0.0, "the line never ran dry");
    assert_eq!(metric(&text, "usher_outflow_per_minute", &[("room", "spike"), ("kind", "effective")]), FAST as f64);
    assert_eq!(
        metric(
            &text,
            "usher_changes_total",
            &[("source", "api"), ("target", "room:spike"), ("field", "admit_per_minute")]
        ),
        1.0
    );
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_room_admits_nobody_keeps_the_order_and_resumes_first_come_first_served() {
    // More than the two seconds of reserve the bucket fills while paused (8 at 240/min).
    const WAITERS: u32 = 14;
    let backend = Upstream::start_mailbox().await;
    let mut lobby = room("lobby");
    (lobby.mode, lobby.admit_per_minute, lobby.max_active) = (RoomMode::QueueAll, 240, 100);
    let usher = usher_with_rooms_and(&backend, vec![lobby], |c| c.admin.token = Some(TOKEN.into()));
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let paused =
        admin_call(admin, Method::POST, "/admin/rooms/lobby/pause", Some(TOKEN), r#"{"message":"Back at 9"}"#).await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let mut line = Vec::new();
    for i in 0..WAITERS {
        let mut v = Visitor::new(ip(4, i), addr);
        let joined = v.api("/inbox").await;
        assert_eq!((joined.status.as_u16(), joined.json()["status"].clone()), (503, "paused".into()));
        line.push(v);
    }
    // Many ticks pass while paused: nobody gets in, and every place stays where it was.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (i, v) in line.iter_mut().enumerate() {
            let status = v.status().await;
            assert_eq!(status["status"], "paused", "{status}");
            assert_eq!(status["position"], i as u64 + 1, "waiter {i} kept its place: {status}");
        }
    }
    assert_eq!(admitted(&metrics_text(admin).await, "lobby"), 0.0);

    let resumed = admin_call(admin, Method::POST, "/admin/rooms/lobby/resume", Some(TOKEN), "").await;
    assert_eq!(resumed.json()["mode"], "queue_all");
    // Eight at once, then four a second. Each round polls from the back of the line to the front, so a waiter seen
    // admitted implies everyone before it is seen admitted in the same round: those admitted
    // are always the front of the line.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut done = vec![false; line.len()];
    while done.iter().any(|d| !d) {
        assert!(Instant::now() < deadline, "everyone admitted after resume: {done:?}");
        for (i, v) in line.iter_mut().enumerate().rev() {
            if !done[i] && v.status().await["status"] == "admitted" {
                done[i] = true;
            }
        }
        let admitted_prefix = done.iter().take_while(|d| **d).count();
        assert!(done[admitted_prefix..].iter().all(|d| !d), "admitted out of order: {done:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_usher(usher).await;
}

/// Polls every 50 ms until the visitor is admitted; panics after `timeout`.
async fn admitted_within(v: &mut Visitor, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while v.status().await["status"] != "admitted" {
        assert!(Instant::now() < deadline, "{} not admitted within {timeout:?}", v.ip);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_sessions_frees_their_places_for_the_next_waiters_in_order() {
    let backend = Upstream::start_mailbox().await;
    let mut full = room("full");
    (full.max_active, full.admit_per_minute) = (2, 60_000);
    let usher = usher_with_rooms_and(&backend, vec![full], |c| c.admin.token = Some(TOKEN.into()));
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut inside = Vec::new();
    for i in 0..2 {
        let mut v = Visitor::new(ip(5, i), addr);
        assert!(v.api("/inbox").await.forwarded(), "visitor {i} gets in while there is room");
        inside.push(v);
        // Sessions are drained oldest first, by creation time in ms: two in the same ms would
        // be drained in either order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut line = Vec::new();
    for i in 2..5 {
        let mut v = Visitor::new(ip(5, i), addr);
        assert_eq!(v.api("/inbox").await.status, 503, "visitor {i} waits in a full room");
        line.push(v);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for v in &mut line {
        assert_eq!(v.status().await["status"], "waiting", "nobody gets in while the room is full");
    }

    // The oldest session ends: exactly the first waiter gets its place.
    let one = admin_call(admin, Method::POST, "/admin/rooms/full/drain", Some(TOKEN), r#"{"oldest": 1}"#).await;
    assert_eq!((one.status.as_u16(), one.json()["drained"].as_u64()), (200, Some(1)), "{}", one.text());
    admitted_within(&mut line[0], Duration::from_secs(10)).await;
    assert_eq!(line[1].status().await["status"], "waiting", "only one place was freed");
    assert!(!inside[0].api("/inbox").await.forwarded(), "the drained session's pass no longer passes");
    assert!(inside[1].api("/inbox").await.forwarded(), "the newer session lives on");

    // Drain the rest: the two remaining waiters take the two places.
    let all = admin_call(admin, Method::POST, "/admin/rooms/full/drain", Some(TOKEN), "").await;
    assert_eq!(all.json()["drained"].as_u64(), Some(2), "{}", all.text());
    for v in &mut line[1..] {
        admitted_within(v, Duration::from_secs(10)).await;
    }
    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, "usher_changes_total", &[("source", "api"), ("field", "drain")]), 2.0);
    stop_usher(usher).await;
}
