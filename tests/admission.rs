//! The waiting room through real sockets (DESIGN §3, §5): pass-through when idle, FIFO and the
//! `max_active` cap under a spike, the outflow rate, abandonment, session ends, unclaimed
//! grants, honest positions and estimates, the pre-queue draw, the per-client ticket cap, and
//! what each kind of client receives while it waits.
//!
//! Every visitor connects from its own loopback address (127.x.y.z) and keeps its own cookie
//! jar; the upstream is a real server that records what reached it.

mod support;

use http::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use support::*;
use usher::config::RoomMode;

/// The spike and the outflow measurement load the machine; they run one at a time so
/// neither slows the other down.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_else(|| panic!("no status in {v}"))
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("no integer {field} in {v}"))
}

/// Polls each visitor's status once; returns the JSON answers in order.
async fn poll_all(visitors: &mut [Visitor]) -> Vec<Value> {
    let mut out = Vec::with_capacity(visitors.len());
    for v in visitors.iter_mut() {
        out.push(v.status().await);
    }
    out
}

/// Polls every `every` until the status is `admitted`, checking on the way that the place
/// never grows; panics after `timeout`. Returns the positions seen.
async fn poll_until_admitted(v: &mut Visitor, every: Duration, timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    let mut positions = Vec::new();
    loop {
        let status = v.status().await;
        match status_of(&status) {
            "admitted" => return positions,
            "waiting" => {
                let position = u64_of(&status, "position");
                if let Some(&last) = positions.last() {
                    assert!(position <= last, "the position of {} grew from {last} to {position}", v.ip);
                }
                positions.push(position);
            }
            other => panic!("{} expected to wait or be admitted, got {other}: {status}", v.ip),
        }
        assert!(Instant::now() < deadline, "{} not admitted within {timeout:?}; positions {positions:?}", v.ip);
        tokio::time::sleep(every).await;
    }
}

/// The attributes of a `Set-Cookie` line after its `name=value`, trimmed.
fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie.split(';').skip(1).map(|a| a.trim().to_string()).collect()
}

// -----------------------------------------------------------------------------------------
// Idle room
// -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_room_forwards_a_newcomer_at_once_with_a_pass_that_keeps_working_and_never_reaches_the_upstream() {
    let backend = Upstream::start_mailbox().await;
    let usher = usher_with_rooms(&backend, vec![room("mailbox")]);
    let mut v = Visitor::new(ip(10, 0), usher.http_addr.expect("http"));
    // The visitor also carries the mailbox's own cookies, on both sides of usher's name.
    v.jar.insert("a_site".into(), "1".into());
    v.jar.insert("zz_site".into(), "2".into());

    let first = v.page("/inbox?x=1").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert!(first.forwarded(), "a newcomer in an idle room is forwarded at once, not queued: {}", first.text());
    assert_eq!(first.text(), "/inbox?x=1");
    let set_pass = first.set_cookie(PASS).expect("the newcomer gets a pass cookie");
    let attrs = attributes(&set_pass);
    for wanted in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attrs.iter().any(|a| a == wanted), "pass cookie lacks {wanted}: {set_pass}");
    }
    assert!(
        !attrs.iter().any(|a| a.eq_ignore_ascii_case("secure")),
        "no Secure flag over plain http (the browser would drop it): {set_pass}"
    );
    assert!(first.set_cookie(TICKET).is_none(), "no ticket for a visitor admitted at once");
    let pass = decode_pass(cookie_value(&set_pass));
    assert_eq!(pass.room, room_id("mailbox"));
    assert!(pass.expires_secs > pass.issued_secs);

    // Later requests with the pass pass, without a new admission.
    for path in ["/letters", "/letters/42?read=1"] {
        let again = v.page(path).await;
        assert!(again.forwarded(), "{path} with a valid pass must be forwarded: {}", again.text());
        assert!(again.set_cookie(PASS).is_none(), "a valid pass is not replaced: {:?}", again.set_cookies());
    }

    let seen = backend.seen();
    assert_eq!(seen.iter().map(Seen::target).collect::<Vec<_>>(), ["/inbox?x=1", "/letters", "/letters/42?read=1"]);
    for s in &seen {
        for (name, value) in &s.headers {
            assert!(!value.contains("usher_"), "usher's cookie reached the upstream in {name}: {value}");
        }
        assert_eq!(s.all("cookie"), ["a_site=1; zz_site=2"], "the site's own cookies arrive untouched");
    }
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_admitted_total", &[("room", "mailbox"), ("via", "direct")]), 1.0);
    assert_eq!(metric(&text, "usher_joined_total", &[("room", "mailbox")]), 0.0);
    assert_eq!(metric(&text, "usher_token_rejected_total", &[]), 0.0);
    drop(v);
    stop_usher(usher).await;
}

// -----------------------------------------------------------------------------------------
// Spike: the cap and FIFO
// -----------------------------------------------------------------------------------------

/// What one spike visitor saw.
#[derive(Debug)]
struct SpikeRecord {
    ip: std::net::IpAddr,
    /// `None` when admitted at once.
    ticket: Option<u64>,
    /// When the last request that found it still waiting was sent (its join, or a poll).
    last_waiting_sent: Option<Instant>,
    /// When the answer that said `admitted` arrived.
    admitted_seen: Instant,
    positions: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spike_of_500_clients_never_exceeds_max_active_and_is_admitted_in_ticket_order() {
    const CLIENTS: u32 = 500;
    const MAX_ACTIVE: u64 = 10;
    const POLL: Duration = Duration::from_millis(100);
    let _heavy = HEAVY.lock().await;
    let backend = Upstream::start_mailbox().await;
    let mut spike = room("spike");
    spike.max_active = MAX_ACTIVE;
    spike.admit_per_minute = 60_000;
    spike.session_idle = Duration::from_secs(120);
    spike.claim_window = Duration::from_secs(30);
    spike.waiter_ttl = Duration::from_secs(60);
    let usher = usher_with_rooms(&backend, vec![spike]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    // The server's own figures, sampled all along from the admin API: one snapshot of the
    // store per answer. (The two gauges in /metrics are set one after the other, so a scrape
    // between them may pair an old figure with a new one.)
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut max_active, mut max_taken, mut samples) = (0.0f64, 0.0f64, 0u32);
            while !done.load(Ordering::Relaxed) {
                let room = admin_call(admin, http::Method::GET, "/admin/rooms/spike", None, "").await.json();
                let figure = |name: &str| room[name].as_f64().unwrap_or_else(|| panic!("{name} in {room}"));
                let (active, pending) = (figure("active"), figure("pending_grants"));
                max_active = max_active.max(active);
                max_taken = max_taken.max(active + pending);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (max_active, max_taken, samples)
        })
    };

    // Sessions live as the clients know them: counted from the answer that admitted them to
    // just before they log out, so always inside the server's own session lifetime.
    let live = Arc::new(AtomicI64::new(0));
    let max_live = Arc::new(AtomicI64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS as usize));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (live, max_live, barrier) = (live.clone(), max_live.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut v = Visitor::new(ip(1, i), addr);
            v.connect().await;
            barrier.wait().await;
            let sent = Instant::now();
            let joined = v.api("/inbox").await;
            let mut record = SpikeRecord {
                ip: v.ip,
                ticket: None,
                last_waiting_sent: None,
                admitted_seen: Instant::now(),
                positions: Vec::new(),
            };
            if joined.status == StatusCode::OK {
                assert!(joined.forwarded(), "200 without the upstream: {}", joined.text());
            } else {
                assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE, "{}", joined.text());
                let json = joined.json();
                assert_eq!(status_of(&json), "waiting", "{json}");
                record.ticket = Some(v.ticket_number().expect("a queued client holds a ticket"));
                record.last_waiting_sent = Some(sent);
                record.positions.push(u64_of(&json, "position"));
                // Spread the polls over the interval.
                tokio::time::sleep(Duration::from_millis(u64::from(i * 7 % 100))).await;
                loop {
                    tokio::time::sleep(POLL).await;
                    let sent = Instant::now();
                    let status = v.status().await;
                    let arrived = Instant::now();
                    match status_of(&status) {
                        "waiting" => {
                            record.last_waiting_sent = Some(sent);
                            record.positions.push(u64_of(&status, "position"));
                        }
                        "admitted" => {
                            record.admitted_seen = arrived;
                            break;
                        }
                        other => panic!("{} expected waiting or admitted, got {other}: {status}", v.ip),
                    }
                }
            }
            let now_live = live.fetch_add(1, Ordering::SeqCst) + 1;
            max_live.fetch_max(now_live, Ordering::SeqCst);
            let work = v.api("/work").await;
            assert!(work.forwarded(), "an admitted client is forwarded: {} {}", work.status, work.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
            live.fetch_sub(1, Ordering::SeqCst);
            let out = v.api("/logout").await;
            assert!(out.forwarded(), "logout is forwarded: {}", out.text());
            record
        }));
    }
    let started = Instant::now();
    let records = all_within(tasks, Duration::from_secs(90), "500 spike clients").await;
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (max_active, max_taken, samples) = sampler.await.expect("sampler");

    // The cap.
    let max_live = max_live.load(Ordering::SeqCst);
    assert!(max_live <= MAX_ACTIVE as i64, "{max_live} sessions were live at once (max_active {MAX_ACTIVE})");
    assert!(max_live >= 2, "the spike never had two sessions at once ({max_live}): it did not test the cap");
    assert!(max_active <= MAX_ACTIVE as f64, "usher_active_sessions reached {max_active}");
    assert!(max_taken <= MAX_ACTIVE as f64, "active + pending grants reached {max_taken}");
    assert!(samples > 0);

    // Every client got in; tickets are unique.
    assert_eq!(records.len(), CLIENTS as usize);
    let mut queued: Vec<&SpikeRecord> = records.iter().filter(|r| r.ticket.is_some()).collect();
    assert!(queued.len() >= (CLIENTS as usize) - 2 * MAX_ACTIVE as usize, "only {} clients queued", queued.len());
    let tickets: HashSet<u64> = queued.iter().filter_map(|r| r.ticket).collect();
    assert_eq!(tickets.len(), queued.len(), "ticket numbers are unique");

    // A polling client's place never grows.
    for r in &records {
        assert!(r.positions.windows(2).all(|w| w[1] <= w[0]), "{}: positions grew: {:?}", r.ip, r.positions);
    }

    // FIFO: if ticket a < b, a was granted no later than b. So b's "admitted" answer (after
    // b's grant) cannot arrive before a request that still found a waiting was even sent.
    queued.sort_by_key(|r| r.ticket);
    let mut latest: Option<(u64, Instant)> = None;
    let mut violations = Vec::new();
    for r in &queued {
        if let Some((earlier, still_waiting)) = latest {
            if r.admitted_seen < still_waiting {
                violations.push(format!(
                    "ticket {} was admitted {:?} before ticket {earlier} stopped waiting",
                    r.ticket.unwrap_or_default(),
                    still_waiting - r.admitted_seen
                ));
            }
        }
        let waited = r.last_waiting_sent.expect("queued clients waited");
        if latest.is_none_or(|(_, t)| waited > t) {
            latest = Some((r.ticket.unwrap_or_default(), waited));
        }
    }
    assert!(
        violations.is_empty(),
        "{} FIFO violations, e.g. {:?}",
        violations.len(),
        &violations[..3.min(violations.len())]
    );

    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, "usher_admitted_total", &[("room", "spike")]), f64::from(CLIENTS));
    assert_eq!(metric(&text, "usher_joined_total", &[("room", "spike")]), queued.len() as f64);
    assert_eq!(metric(&text, "usher_abandoned_total", &[("room", "spike")]), 0.0);
    assert_eq!(metric(&text, "usher_expired_grants_total", &[("room", "spike")]), 0.0);
    eprintln!("spike: {CLIENTS} clients in {took:?}; max live {max_live}, max active {max_active}");
    stop_usher(usher).await;
}

// -----------------------------------------------------------------------------------------
// Outflow
// -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_follow_admit_per_minute_plus_at_most_the_bucket_reserve() {
    const PER_MINUTE: u64 = 120;
    const RESERVE: f64 = 4.0; // max(1, 120 / 30)
    const WAITERS: u32 = 40;
    let _heavy = HEAVY.lock().await;
    let backend = Upstream::start_mailbox().await;
    let mut outflow = room("outflow");
    outflow.admit_per_minute = PER_MINUTE;
    outflow.max_active = 100_000;
    let usher = usher_with_rooms(&backend, vec![outflow]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let stop_polling = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let stop_polling = stop_polling.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = Visitor::new(ip(2, i), addr);
            let joined = v.api("/inbox").await;
            if joined.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(u64::from(i * 11 % 100))).await;
            while !stop_polling.load(Ordering::Relaxed) {
                if status_of(&v.status().await) == "admitted" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep_until((started + Duration::from_secs(8)).into()).await;
    let before = Instant::now();
    let text = metrics_text(admin).await;
    let after = Instant::now();
    stop_polling.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("waiter");
    }

    let admitted = metric(&text, "usher_admitted_total", &[("room", "outflow")]);
    let rate = PER_MINUTE as f64 / 60.0;
    let low = rate * (before - started).as_secs_f64();
    let high = rate * (after - started).as_secs_f64() + RESERVE + 2.0;
    assert!(
        (low..=high).contains(&admitted),
        "{admitted} admissions in {:?}; expected within [{low:.1}, {high:.1}] at {PER_MINUTE}/min",
        after - started
    );
    assert!(metric(&text, "usher_waiting", &[("room", "outflow")]) > 0.0, "the line never ran dry");
    stop_usher(usher).await;
}

// -----------------------------------------------------------------------------------------
// Abandonment, session ends, unclaimed grants
// -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_away_past_hold_are_abandoned_and_those_behind_move_up_and_get_in() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("abandon");
    r.max_active = 1;
    r.waiter_ttl = Duration::from_secs(2);
    r.hold = Duration::from_secs(4);
    let usher = usher_with_rooms(&backend, vec![r]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(3, 0), addr);
    assert!(holder.api("/inbox").await.forwarded());
    let mut waiters = Vec::new();
    for i in 1..=6u32 {
        let mut v = Visitor::new(ip(3, i), addr);
        let joined = v.api("/inbox").await;
        assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(u64_of(&joined.json(), "position"), u64::from(i), "{}", joined.text());
        waiters.push(v);
    }
    // The first three go away; the last three keep polling.
    let (gone, stay) = waiters.split_at_mut(3);
    let mut history: Vec<Vec<u64>> = vec![vec![3], vec![4], vec![5]];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answers = poll_all(stay).await;
        for (k, a) in answers.iter().enumerate() {
            assert_eq!(status_of(a), "waiting", "{a}");
            let ahead = u64_of(a, "ahead");
            assert!(ahead <= *history[k].last().expect("seen"), "ahead grew for waiter {k}: {a}");
            history[k].push(ahead);
        }
        let abandoned = room_metric(admin, "usher_abandoned_total", "abandon").await;
        if answers.iter().map(|a| u64_of(a, "ahead")).eq([0, 1, 2]) && abandoned == 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "abandoned waiters were not skipped: aheads {history:?}, counted {abandoned}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The place frees; the three still polling get in, in their order.
    assert!(holder.api("/logout").await.forwarded());
    for k in 0..stay.len() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answers = poll_all(&mut stay[k..]).await;
            if status_of(&answers[0]) == "admitted" {
                for later in &answers[1..] {
                    assert_eq!(status_of(later), "waiting", "only one place is free: {later}");
                }
                break;
            }
            assert!(Instant::now() < deadline, "waiter {k} not admitted: {answers:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(stay[k].api("/inbox").await.forwarded());
        assert!(stay[k].api("/logout").await.forwarded());
    }

    let back = gone[0].status().await;
    assert_eq!(status_of(&back), "expired", "a waiter who stopped polling lost its place: {back}");
    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, "usher_abandoned_total", &[("room", "abandon")]), 3.0);
    assert_eq!(metric(&text, "usher_admitted_total", &[("room", "abandon"), ("via", "queue")]), 3.0);
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_and_its_place_goes_to_a_waiter_while_a_busy_one_lives_on() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("idle");
    r.max_active = 1;
    r.session_idle = Duration::from_secs(2);
    let usher = usher_with_rooms(&backend, vec![r]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(4, 0), addr);
    assert!(holder.api("/inbox").await.forwarded());
    let mut waiter = Visitor::new(ip(4, 1), addr);
    assert_eq!(waiter.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let positions = poll_until_admitted(&mut waiter, Duration::from_millis(200), Duration::from_secs(15)).await;
    assert!(!positions.is_empty(), "the waiter had to wait for the idle session to end");

    // The idle holder's pass has ended: it is queued as a newcomer.
    let back = holder.api("/inbox").await;
    assert_eq!(back.status, StatusCode::SERVICE_UNAVAILABLE, "an expired session's pass must not pass");
    assert_eq!(status_of(&back.json()), "waiting");
    assert!(holder.cookie(PASS).is_none(), "the ended pass is cleared");
    let text = metrics_text(admin).await;
    assert_eq!(rejected(&text, PASS, "ended"), 1.0);

    // A session that keeps making requests outlives session_idle.
    let pass = waiter.cookie(PASS).expect("pass").to_string();
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = waiter.api("/inbox").await;
        assert!(r.forwarded(), "a busy session must not expire: {} {}", r.status, r.text());
    }
    assert_eq!(waiter.cookie(PASS), Some(pass.as_str()));
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_at_once_and_the_next_waiter_gets_in() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("logout");
    r.max_active = 1;
    r.session_idle = Duration::from_secs(600);
    let usher = usher_with_rooms(&backend, vec![r]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(5, 0), addr);
    assert!(holder.api("/inbox").await.forwarded());
    let old_pass = holder.cookie(PASS).expect("pass").to_string();
    let mut waiter = Visitor::new(ip(5, 1), addr);
    assert_eq!(waiter.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = waiter.status().await;
        assert_eq!((status_of(&s), u64_of(&s, "ahead")), ("waiting", 0), "{s}");
    }

    let out = holder.api("/logout").await;
    assert!(out.forwarded(), "the logout request itself reaches the mailbox");
    assert!(out.set_cookie(PASS).is_some_and(|c| is_deletion(&c)), "logout clears the pass: {:?}", out.set_cookies());
    assert_eq!(backend.seen_path("/logout").len(), 1);
    // Far sooner than session_idle (10 minutes).
    poll_until_admitted(&mut waiter, Duration::from_millis(100), Duration::from_secs(10)).await;

    holder.jar.insert(named(PASS, "logout"), old_pass);
    let replay = holder.api("/inbox").await;
    assert_eq!(replay.status, StatusCode::SERVICE_UNAVAILABLE, "a logged-out pass must not pass");
    assert_eq!(rejected(&metrics_text(admin).await, PASS, "ended"), 1.0);
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailbox_ends_a_session_with_usher_session_end_and_a_client_sending_it_ends_nothing() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("origin");
    r.max_active = 1;
    r.session_idle = Duration::from_secs(600);
    let usher = usher_with_rooms(&backend, vec![r]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(16, 0), addr);
    assert!(holder.api("/inbox").await.forwarded());
    let mut waiter = Visitor::new(ip(16, 1), addr);
    assert_eq!(waiter.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    // The header from a client is nothing to usher: the session stays, the waiter waits.
    let forged = holder.request("/inbox", vec![("accept", "application/json"), ("usher-session", "end")]).await;
    assert!(forged.forwarded() && forged.set_cookie(PASS).is_none(), "{:?}", forged.set_cookies());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = waiter.status().await;
    assert_eq!((status_of(&s), u64_of(&s, "ahead")), ("waiting", 0), "{s}");

    // From the mailbox it ends the session: the pass is cleared, the header is not passed on,
    // and the place goes to the waiter far sooner than session_idle.
    let signed_in = holder.api("/signed-in").await;
    assert!(signed_in.forwarded(), "the answer itself reaches the client");
    assert_eq!(signed_in.header("usher-session"), None, "the origin signal is never passed on");
    assert!(
        signed_in.set_cookie(PASS).is_some_and(|c| is_deletion(&c)),
        "the pass is cleared: {:?}",
        signed_in.set_cookies()
    );
    poll_until_admitted(&mut waiter, Duration::from_millis(100), Duration::from_secs(10)).await;
    assert_eq!(room_metric(admin, "usher_origin_ended_total", "origin").await, 1.0);
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_grant_goes_to_the_next_waiter_after_the_claim_window_and_the_sleeper_keeps_its_place() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("claim");
    r.max_active = 1;
    r.claim_window = Duration::from_secs(1);
    r.waiter_ttl = Duration::from_secs(30);
    let usher = usher_with_rooms(&backend, vec![r]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(12, 0), addr);
    assert!(holder.api("/inbox").await.forwarded());
    let mut sleeper = Visitor::new(ip(12, 1), addr);
    assert_eq!(sleeper.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let old_ticket = sleeper.ticket_number().expect("ticket");
    let mut next = Visitor::new(ip(12, 2), addr);
    let joined = next.api("/inbox").await;
    assert_eq!(u64_of(&joined.json(), "position"), 2);

    assert!(holder.api("/logout").await.forwarded());
    poll_until_admitted(&mut next, Duration::from_millis(200), Duration::from_secs(15)).await;
    let text = metrics_text(admin).await;
    assert_eq!(
        metric(&text, "usher_expired_grants_total", &[("room", "claim")]),
        1.0,
        "the first waiter's turn came, went unclaimed and expired before the next got in"
    );

    // The sleeper's turn came while it was away: its place is held, not lost, and the next
    // free place is its own.
    let back = sleeper.status().await;
    assert_eq!(status_of(&back), "waiting", "never told its place expired: {back}");
    assert_eq!(u64_of(&back, "ahead"), 0, "{back}");
    assert_eq!(sleeper.ticket_number(), Some(old_ticket), "the same ticket");
    assert!(next.api("/logout").await.forwarded());
    poll_until_admitted(&mut sleeper, Duration::from_millis(200), Duration::from_secs(15)).await;
    stop_usher(usher).await;
}

// -----------------------------------------------------------------------------------------
// Position and estimate
// -----------------------------------------------------------------------------------------

/// Checks one waiting answer: position = ahead + 1, and a positive estimate no worse than
/// twice the configured outflow's plus a minute. Returns the position.
fn check_waiting(who: &str, v: &Value, per_minute: u64) -> u64 {
    assert_eq!(status_of(v), "waiting", "{who}: {v}");
    let (ahead, position) = (u64_of(v, "ahead"), u64_of(v, "position"));
    assert_eq!(position, ahead + 1, "{who}: {v}");
    let eta = v["eta_seconds"].as_u64().unwrap_or_else(|| panic!("{who}: no estimate: {v}"));
    let bound = (ahead + 1) * 60 / per_minute * 2 + 60;
    assert!(eta > 0 && eta <= bound, "{who}: estimate {eta}s for {ahead} ahead (bound {bound}s): {v}");
    position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_waiter_never_sees_its_position_grow_and_gets_a_sane_estimate() {
    const PER_MINUTE: u64 = 600;
    let backend = Upstream::start_mailbox().await;
    let mut r = room("eta");
    r.max_active = 3;
    r.admit_per_minute = PER_MINUTE;
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");

    let visitor = move |i: u32, delay: Duration| {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut v = Visitor::new(ip(6, i), addr);
            let joined = v.api("/inbox").await;
            let mut positions = Vec::new();
            if joined.status != StatusCode::OK {
                positions.push(check_waiting(&v.ip.to_string(), &joined.json(), PER_MINUTE));
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let s = v.status().await;
                    if status_of(&s) == "admitted" {
                        break;
                    }
                    positions.push(check_waiting(&v.ip.to_string(), &s, PER_MINUTE));
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(v.api("/work").await.forwarded());
            assert!(v.api("/logout").await.forwarded());
            (v.ip, positions)
        })
    };
    let mut tasks: Vec<_> = (0..40).map(|i| visitor(i, Duration::from_millis(u64::from(i) * 5))).collect();
    tasks.extend((40..50).map(|i| visitor(i, Duration::from_millis(1000 + u64::from(i)))));
    let mut waited = 0;
    for task in tasks {
        let (who, positions) =
            tokio::time::timeout(Duration::from_secs(60), task).await.expect("admitted in time").expect("visitor");
        assert!(positions.windows(2).all(|w| w[1] <= w[0]), "{who}: the position grew: {positions:?}");
        waited += usize::from(positions.len() > 3);
    }
    assert!(waited >= 20, "too few visitors waited long enough to see their place move ({waited})");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_polls_the_poll_budget_refuses_is_not_taken_for_away() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("crowded");
    r.max_active = 1;
    r.waiter_ttl = Duration::from_secs(2);
    let usher = usher_with_rooms_and(&backend, vec![r], |c| {
        c.limits.polls_per_second = 1;
        c.limits.poll_burst = 1;
    });
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);
    let mut holder = Visitor::new(ip(15, 0), addr);
    assert!(holder.api("/start").await.forwarded());
    // `behind_nat` shares its address's poll budget with a crowd that spends all of it;
    // `left` (an address of its own) joins and never polls again.
    let mut behind_nat = Visitor::new(ip(15, 1), addr);
    let mut left = Visitor::new(ip(15, 2), addr);
    assert_eq!(behind_nat.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(left.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    // A waiter near the front is told to poll every 2 s: it is away after three missed polls
    // and 2 s, 8 s after its last poll.
    let until = Instant::now() + Duration::from_secs(10);
    let crowd = tokio::spawn(async move {
        let mut page = Visitor::new(ip(15, 1), addr);
        while Instant::now() < until {
            page.api("/.usher/status").await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut refused = 0;
    while Instant::now() < until {
        if behind_nat.api("/.usher/status").await.status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    crowd.await.expect("crowd");
    assert!(refused >= 10, "the crowd spent the budget: only {refused} of the polls were refused");
    // Over 10 s: the one that left is away, the one refused is not.
    assert_eq!(room_metric(admin, "usher_away_total", "crowded").await, 1.0);
    let place = behind_nat.status().await;
    assert_eq!((u64_of(&place, "ahead"), place["status"].as_str()), (0, Some("waiting")), "{place}");
    stop_usher(usher).await;
}

/// The number after `content="` in the page's no-JS refresh.
fn meta_refresh(page: &str) -> u64 {
    let at = page.find("http-equiv=\"refresh\" content=\"").unwrap_or_else(|| panic!("no meta refresh: {page}"));
    let rest = &page[at + "http-equiv=\"refresh\" content=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].parse().expect("seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_interval_grows_with_the_wait_in_the_json_the_retry_after_and_the_no_js_refresh() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("paced");
    r.max_active = 1;
    // One a minute: someone with 39 ahead waits 39 minutes, and is told to poll every minute
    // (a thirtieth of the wait, at most a minute).
    r.admit_per_minute = 1;
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");
    let mut holder = Visitor::new(ip(14, 0), addr);
    assert!(holder.api("/start").await.forwarded());

    let mut waiters: Vec<Visitor> = (1..=41).map(|i| Visitor::new(ip(14, i), addr)).collect();
    let mut intervals = Vec::new();
    for w in waiters.iter_mut().take(40) {
        let reply = w.api("/inbox").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        let json = reply.json();
        let every = u64_of(&json, "poll_after_seconds");
        assert_eq!(reply.header("retry-after"), Some(every.to_string().as_str()), "{json}");
        intervals.push((u64_of(&json, "ahead"), every));
    }
    assert_eq!(intervals[0], (0, 2), "the front polls every 2 s");
    assert!(intervals.windows(2).all(|w| w[0].1 <= w[1].1), "the interval never shrinks further back: {intervals:?}");
    let (ahead, last) = intervals[39];
    assert_eq!(ahead, 39);
    assert_eq!(last, 60, "39 minutes away polls every minute, not every few seconds: {intervals:?}");
    // A browser gets the same interval in its page and its no-JS refresh, and polling keeps it.
    let page = waiters[40].page("/inbox").await;
    assert_eq!(page.status, StatusCode::OK);
    let body = page.text();
    let refresh = meta_refresh(&body);
    assert!(refresh >= last, "the 41st refreshes every {refresh} s: {body}");
    assert!(body.contains(&format!("data-poll=\"{refresh}\"")), "{body}");
    assert_eq!(u64_of(&waiters[40].status().await, "poll_after_seconds"), refresh);
    stop_usher(usher).await;
}

/// Asks for the status of `visitor` (its ticket) on a connection of its own from `from`,
/// with `extra` headers; returns the answer's `Connection` header, the interval it gives and
/// whether usher had closed the connection 1.5 s after answering.
async fn status_then_closed(visitor: &Visitor, from: IpAddr, extra: Vec<(&str, &str)>) -> (Option<String>, u64, bool) {
    let addr = visitor.usher;
    let stream = connect_from(from, addr).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get("/.usher/status")
        .header("host", addr.to_string())
        .header("accept", "application/json")
        .header("cookie", cookie_header(&visitor.jar).expect("the visitor has its ticket"));
    for (name, value) in extra {
        req = req.header(name, value);
    }
    let response = sender.send_request(req.body(empty()).expect("request")).await.expect("answer");
    let connection = response.headers().get("connection").and_then(|v| v.to_str().ok()).map(str::to_string);
    let reply = collect_reply(response).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (connection, u64_of(&reply.json(), "poll_after_seconds"), sender.is_closed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_told_to_poll_after_the_idle_timeout_has_its_connection_closed_at_once_unless_a_proxy_shares_it() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("far");
    r.max_active = 1;
    r.admit_per_minute = 1;
    let usher = usher_with_rooms_and(&backend, vec![r], |c| {
        c.listen.idle_timeout = Duration::from_secs(20);
        c.client.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
    });
    let addr = usher.http_addr.expect("http");
    let mut holder = Visitor::new(ip(15, 0), addr);
    assert!(holder.api("/start").await.forwarded());
    let mut waiters: Vec<Visitor> = (1..=40).map(|i| Visitor::new(ip(15, i), addr)).collect();
    for w in waiters.iter_mut() {
        assert_eq!(w.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // The front polls every 2 s: its connection is worth keeping.
    let (front, far) = (&waiters[0], &waiters[39]);
    let (connection, every, closed) = status_then_closed(front, front.ip, vec![]).await;
    assert_eq!((connection.as_deref(), every, closed), (None, 2, false));
    // 39 ahead polls every minute, past the 20 s idle timeout: closed with the answer.
    let (connection, every, closed) = status_then_closed(far, far.ip, vec![]).await;
    assert_eq!((connection.as_deref(), every, closed), (Some("close"), 60, true));
    // The same waiter through a trusted balancer: its connection carries others, and stays.
    let far_ip = far.ip.to_string();
    let (connection, every, closed) =
        status_then_closed(far, "127.0.0.1".parse().expect("ip"), vec![("x-forwarded-for", &far_ip)]).await;
    assert_eq!((connection.as_deref(), every, closed), (None, 60, false));
    stop_usher(usher).await;
}

// -----------------------------------------------------------------------------------------
// Pre-queue
// -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_before_opens_at_are_prequeued_then_admitted_shuffled_and_before_later_arrivals() {
    const EARLY: u32 = 30;
    const LATE: u32 = 5;
    let backend = Upstream::start_mailbox().await;
    let opens_at = unix_secs() + 3;
    let mut r = room("event");
    r.max_active = 1;
    r.opens_at = Some(opens_at as i64);
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");

    let mut early = Vec::new();
    for i in 0..EARLY {
        let mut v = Visitor::new(ip(7, i), addr);
        let joined = v.api("/inbox").await;
        assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE, "nobody is admitted before opening");
        let json = joined.json();
        assert_eq!(status_of(&json), "prequeue", "{json}");
        assert_eq!(json["opens_at"].as_u64(), Some(opens_at), "{json}");
        assert_eq!(v.ticket_number(), Some(u64::from(i)), "tickets follow arrival");
        early.push(v);
    }
    assert!(unix_secs() < opens_at, "the setup was too slow: the event opened while visitors were arriving");

    // Admission is one at a time (max_active 1, each logs out at once), so the order in which
    // visitors see "admitted" is the order of the grants.
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let opened = Arc::new(tokio::sync::Notify::new());
    let seen_open = Arc::new(AtomicBool::new(false));
    let run = |mut v: Visitor, label: u64| {
        let (order, opened, seen_open) = (order.clone(), opened.clone(), seen_open.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let s = v.status().await;
                let status = status_of(&s).to_string();
                if status != "prequeue" && !seen_open.swap(true, Ordering::SeqCst) {
                    opened.notify_waiters();
                }
                match status.as_str() {
                    "prequeue" | "waiting" => {}
                    "admitted" => break,
                    other => panic!("{} unexpected status {other}: {s}", v.ip),
                }
            }
            order.lock().expect("order").push(label);
            assert!(v.api("/logout").await.forwarded());
        })
    };
    let notified = opened.notified();
    let mut tasks: Vec<_> = early.into_iter().enumerate().map(|(i, v)| run(v, i as u64)).collect();
    tokio::time::timeout(Duration::from_secs(15), notified).await.expect("the event opens");

    for j in 0..LATE {
        let mut v = Visitor::new(ip(7, 100 + j), addr);
        let joined = v.api("/inbox").await;
        assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE, "late arrivals queue behind the pre-queue");
        assert_eq!(status_of(&joined.json()), "waiting");
        tasks.push(run(v, u64::from(EARLY + j)));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("everyone is admitted").expect("visitor");
    }

    let order = order.lock().expect("order").clone();
    let (first, rest) = order.split_at(EARLY as usize);
    let mut sorted = first.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..u64::from(EARLY)).collect::<Vec<_>>(), "the pre-queued came first: {order:?}");
    assert_ne!(first, sorted.as_slice(), "the pre-queue was admitted in arrival order, not shuffled");
    assert_eq!(rest, (u64::from(EARLY)..u64::from(EARLY + LATE)).collect::<Vec<_>>(), "later arrivals in FIFO order");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_arriving_after_opens_at_is_not_drawn_into_the_prequeue() {
    const EARLY: u32 = 20;
    const LATE: u32 = 5;
    let backend = Upstream::start_mailbox().await;
    let opens_at = unix_secs() + 2;
    let mut r = room("opening");
    r.max_active = 1;
    r.opens_at = Some(opens_at as i64);
    // The admitter ticks once at start and then not for an hour: the test runs the tick at
    // opening itself, so "after opening, before the next tick" is certain, not a race.
    r.tick = Duration::from_secs(3600);
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");

    let mut visitors = Vec::new();
    for i in 0..EARLY {
        let mut v = Visitor::new(ip(11, i), addr);
        assert_eq!(status_of(&v.api("/inbox").await.json()), "prequeue");
        visitors.push(v);
    }
    assert!(unix_secs() < opens_at, "the setup was too slow");
    while usher::clock::now_ms() < opens_at * 1000 + 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut late_status = Vec::new();
    for j in 0..LATE {
        let mut v = Visitor::new(ip(11, 100 + j), addr);
        late_status.push(status_of(&v.api("/inbox").await.json()).to_string());
        visitors.push(v);
    }
    let room = usher.rooms.all()[0].clone();
    usher::room::admitter::tick(&room, usher::clock::now_ms()).await;

    // Rank in the drawn line: 0 for the one granted at opening, else 1 + ahead.
    let mut ranks = Vec::new();
    for v in &mut visitors {
        let s = v.status().await;
        ranks.push(match status_of(&s) {
            "admitted" => 0,
            "waiting" => 1 + u64_of(&s, "ahead"),
            other => panic!("unexpected {other}: {s}"),
        });
    }
    let late_ranks = &ranks[EARLY as usize..];
    assert_eq!(
        late_ranks,
        (u64::from(EARLY)..u64::from(EARLY + LATE)).collect::<Vec<_>>(),
        "visitors who arrived after opens_at were shuffled in with the pre-queue (ranks of all: {ranks:?})"
    );
    assert!(
        late_status.iter().all(|s| s == "waiting"),
        "visitors arriving after opening were told they are pre-queued: {late_status:?}"
    );
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prequeued_visitor_is_never_shown_a_place_that_grows_at_opening() {
    const EARLY: u32 = 20;
    let backend = Upstream::start_mailbox().await;
    let opens_at = unix_secs() + 2;
    let mut r = room("draw");
    // One admitted at opening and nobody leaves: everyone else keeps the place drawn for them.
    r.max_active = 1;
    r.opens_at = Some(opens_at as i64);
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");

    let mut visitors = Vec::new();
    for i in 0..EARLY {
        let mut v = Visitor::new(ip(15, i), addr);
        assert_eq!(status_of(&v.api("/inbox").await.json()), "prequeue");
        visitors.push(v);
    }
    let before: Vec<Option<u64>> = poll_all(&mut visitors).await.iter().map(|s| s["position"].as_u64()).collect();
    assert!(unix_secs() < opens_at, "the setup was too slow");

    // Keep polling (as the page does) until the draw has happened. A visitor admitted in one
    // sweep has spent its ticket (a later poll would answer "none"): its last answer stands.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after: Vec<Value> = vec![Value::Null; visitors.len()];
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (v, last) in visitors.iter_mut().zip(after.iter_mut()) {
            if last.is_null() || status_of(last) != "admitted" {
                *last = v.status().await;
            }
        }
        if after.iter().all(|a| status_of(a) != "prequeue") {
            break;
        }
        assert!(Instant::now() < deadline, "the event never opened");
    }
    let mut grew = Vec::new();
    for (k, (shown, now)) in before.iter().zip(&after).enumerate() {
        let now = match status_of(now) {
            "admitted" => 0,
            "waiting" => u64_of(now, "position"),
            other => panic!("unexpected {other}: {now}"),
        };
        if let Some(shown) = shown {
            if now > *shown {
                grew.push(format!("visitor {k}: shown {shown} before opening, {now} after"));
            }
        }
    }
    assert!(grew.is_empty(), "a polling waiter's place grew at the draw: {grew:?}");
    stop_usher(usher).await;
}

// -----------------------------------------------------------------------------------------
// Per-client cap
// -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_hold_more_than_tickets_per_client_live_tickets() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("cap");
    r.max_active = 1;
    let usher = usher_with_rooms_and(&backend, vec![r], |c| c.limits.tickets_per_client = 3);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(8, 0), addr);
    assert!(holder.api("/inbox").await.forwarded());
    let mut tickets = Vec::new();
    for _ in 0..10 {
        // A fresh jar every time: the same address joining again and again without cookies.
        let mut v = Visitor::new(ip(8, 1), addr);
        let joined = v.api("/inbox").await;
        assert_eq!(joined.status, StatusCode::SERVICE_UNAVAILABLE);
        tickets.push(v.ticket_number().expect("ticket"));
    }
    let distinct: HashSet<u64> = tickets.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "one address got {} live tickets: {tickets:?}", distinct.len());
    assert!(tickets[3..].iter().all(|t| *t == tickets[2]), "over the cap, the newest ticket is reused: {tickets:?}");

    let mut other = Visitor::new(ip(8, 2), addr);
    other.api("/inbox").await;
    assert!(other.ticket_number().is_some_and(|t| !distinct.contains(&t)), "another address is not capped");
    eventually("usher_waiting shows 4", Duration::from_secs(5), move || async move {
        room_metric(admin, "usher_waiting", "cap").await == 4.0
    })
    .await;
    assert_eq!(room_metric(admin, "usher_joined_total", "cap").await, 4.0);
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_at_the_ticket_cap_when_the_turn_has_come_never_leaves_a_session_without_a_pass() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("rejoin");
    r.max_active = 1;
    let usher = usher_with_rooms_and(&backend, vec![r], |c| c.limits.tickets_per_client = 1);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(16, 0), addr);
    assert!(holder.api("/inbox").await.forwarded());
    // One household (one address): a phone joins, then a laptop without the phone's cookies.
    let mut phone = Visitor::new(ip(16, 1), addr);
    assert_eq!(phone.api("/inbox").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(holder.api("/logout").await.forwarded());
    eventually("the phone's turn is granted", Duration::from_secs(10), move || async move {
        room_metric(admin, "usher_pending_grants", "rejoin").await == 1.0
    })
    .await;

    let mut laptop = Visitor::new(ip(16, 1), addr);
    let rejoin = laptop.api("/inbox").await;
    let phone_status = phone.status().await;
    let passes = usize::from(laptop.cookie(PASS).is_some()) + usize::from(phone.cookie(PASS).is_some());
    assert!(
        rejoin.forwarded() || status_of(&phone_status) == "admitted",
        "the turn was claimed but nobody got a pass: the laptop got {} {}, the phone's poll says {phone_status}",
        rejoin.status,
        rejoin.text()
    );
    eventually("the figures are refreshed", Duration::from_secs(5), move || async move {
        room_metric(admin, "usher_pending_grants", "rejoin").await == 0.0
    })
    .await;
    let active = room_metric(admin, "usher_active_sessions", "rejoin").await;
    assert_eq!(active, passes as f64, "every live session belongs to a pass somebody holds");
    stop_usher(usher).await;
}

// -----------------------------------------------------------------------------------------
// What a waiting client receives
// -----------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_browser_gets_the_queue_page_and_lands_on_the_url_it_first_asked_for() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("page");
    r.max_active = 1;
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");

    let mut holder = Visitor::new(ip(9, 0), addr);
    assert!(holder.api("/start").await.forwarded());
    let mut browser = Visitor::new(ip(9, 1), addr);
    let page = browser.page("/inbox?x=1").await;
    assert_eq!(page.status, StatusCode::OK, "a browser gets the page with 200");
    assert!(!page.forwarded());
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{:?}", page.headers);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let csp = page.header("content-security-policy").expect("a CSP header");
    assert!(csp.contains("default-src"), "{csp}");
    let html = page.text();
    assert!(html.contains("<noscript><meta http-equiv=\"refresh\""), "works without JavaScript: {html}");
    let set_ticket = page.set_cookie(TICKET).expect("a ticket cookie");
    for wanted in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes(&set_ticket).iter().any(|a| a == wanted), "ticket lacks {wanted}: {set_ticket}");
    }
    assert_eq!(decode_ticket(cookie_value(&set_ticket)).room, room_id("page"));
    assert!(backend.seen_path("/inbox").is_empty(), "a waiting browser's request is not forwarded");

    // The turn comes; the meta refresh reloads the URL first asked for and is let through to it.
    assert!(holder.api("/logout").await.forwarded());
    let deadline = Instant::now() + Duration::from_secs(10);
    let landed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reload = browser.page("/inbox?x=1").await;
        if reload.forwarded() {
            break reload;
        }
        assert_eq!(reload.status, StatusCode::OK, "still the queue page: {}", reload.text());
        assert!(Instant::now() < deadline, "the browser never got in");
    };
    assert_eq!(landed.text(), "/inbox?x=1");
    assert!(landed.set_cookie(PASS).is_some_and(|c| !is_deletion(&c)), "a pass is set: {:?}", landed.set_cookies());
    assert!(landed.set_cookie(TICKET).is_some_and(|c| is_deletion(&c)), "the ticket is cleared");
    let seen = backend.seen_path("/inbox");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target(), "/inbox?x=1");
    assert!(seen[0].all("cookie").iter().all(|c| !c.contains("usher_")));
    assert!(browser.page("/letters").await.forwarded(), "the pass works afterwards");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_clients_get_503_with_retry_after_and_their_place_and_other_clients_a_bare_503() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("api");
    r.max_active = 1;
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");
    let mut holder = Visitor::new(ip(13, 0), addr);
    assert!(holder.api("/start").await.forwarded());

    let retry_after = |reply: &Reply| -> u64 {
        let value = reply.header("retry-after").unwrap_or_else(|| panic!("no Retry-After: {:?}", reply.headers));
        value.parse().unwrap_or_else(|_| panic!("Retry-After is not seconds: {value}"))
    };

    let mut app = Visitor::new(ip(13, 1), addr);
    let reply = app.api("/api/inbox").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&reply) >= 1);
    assert!(reply.header("content-type").is_some_and(|c| c.starts_with("application/json")));
    let json = reply.json();
    assert_eq!(status_of(&json), "waiting");
    assert_eq!(json["position"].as_u64(), Some(1), "{json}");
    assert!(json["eta_seconds"].as_u64().is_some_and(|e| e > 0), "{json}");
    assert!(json["poll_after_seconds"].as_u64().is_some(), "{json}");

    let mut xhr = Visitor::new(ip(13, 2), addr);
    let reply = xhr.request("/api/inbox", vec![("x-requested-with", "XMLHttpRequest")]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["position"].as_u64(), Some(2));
    assert!(retry_after(&reply) >= 1);

    for accept in [None, Some("*/*"), Some("image/png")] {
        let mut other = Visitor::new(ip(13, 3), addr);
        let reply = other.get("/inbox", accept).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "Accept {accept:?}");
        assert!(retry_after(&reply) >= 1);
        assert!(!reply.forwarded());
    }
    assert!(backend.seen_path("/api/inbox").is_empty() && backend.seen_path("/inbox").is_empty());
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_room_answers_every_newcomer_with_the_maintenance_answer() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("closed");
    r.mode = RoomMode::Closed;
    let usher = usher_with_rooms(&backend, vec![r]);
    let addr = usher.http_addr.expect("http");

    let mut browser = Visitor::new(ip(14, 1), addr);
    let page = browser.page("/inbox").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.text().to_lowercase().contains("maintenance"), "{}", page.text());
    assert!(page.header("retry-after").is_some());
    let mut app = Visitor::new(ip(14, 2), addr);
    let reply = app.api("/inbox").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status_of(&reply.json()), "closed");
    let mut other = Visitor::new(ip(14, 3), addr);
    assert_eq!(other.get("/inbox", None).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(browser.cookie(TICKET).is_none() && app.cookie(TICKET).is_none(), "nobody is queued for a closed room");
    assert!(backend.seen().is_empty(), "nothing reaches the mailbox");
    stop_usher(usher).await;
}
