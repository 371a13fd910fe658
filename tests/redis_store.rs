//! The Redis store as two nodes see it (DESIGN §8), below HTTP: two `RedisRoom`s on one real
//! `redis-server`, as two usher processes would hold them. One line and one session table
//! for both; only the lease holder grants, and the lease passes on when it is not renewed;
//! a session ended on one node stops passing on the other after that node's next tick.

mod support;

use std::time::Duration;
use support::RedisServer;
use usher::config::RoomMode;
use usher::identity::ClientKey;
use usher::store::redis::{self, RedisRoom};
use usher::store::{JoinOutcome, Pace, PollOutcome, RoomLimits};

const T0: u64 = 1_800_000_000_000;

fn limits() -> RoomLimits {
    RoomLimits {
        max_active: 1,
        admit_per_minute: 6000,
        session_idle: Duration::from_secs(60),
        session_max: Duration::from_secs(3600),
        waiter_ttl: Duration::from_secs(30),
        claim_window: Duration::from_secs(20),
        hold: Duration::from_secs(600),
        mode: RoomMode::Auto,
        opens_at_ms: None,
        message: None,
        tickets_per_client: 3,
        break_glass: None,
        adaptive_pinned: false,
    }
}

fn client(n: u8) -> ClientKey {
    ClientKey([n; 16])
}

const LEASE: Duration = Duration::from_millis(300);

async fn node(redis: &RedisServer, name: &str) -> RedisRoom {
    let conn = redis::connect(&redis.url()).await.expect("connect");
    RedisRoom::new(conn, "shared", name.to_string(), limits(), LEASE).with_given_clock()
}

#[tokio::test]
async fn two_nodes_share_one_line_and_only_the_lease_holder_grants() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    assert!(a.seed().await.expect("seed"), "the first node writes the limits");
    assert!(!b.seed().await.expect("seed"), "the second keeps them");

    let JoinOutcome::Admitted(first) = a.join(client(1), T0).await.expect("join") else { panic!("admitted at once") };
    let Ok(JoinOutcome::Queued { ticket: t0, .. }) = b.join(client(2), T0).await else { panic!("queued") };
    let Ok(JoinOutcome::Queued { ticket: t1, .. }) = a.join(client(3), T0).await else { panic!("queued") };
    assert_eq!((t0.number, t1.number), (0, 1), "one ticket counter for both nodes");
    assert_eq!(t0.generation, t1.generation, "one generation for both nodes");
    assert!(b.touch(first.id, T0 + 1).await.expect("touch"), "a pass from node a is live on node b");

    // Node a takes the lease first; node b's tick grants nothing while a holds it.
    a.tick(T0 + 200).await.expect("tick");
    a.end_session(first.id).await.expect("end");
    assert_eq!(b.tick(T0 + 400).await.expect("tick").granted, 0, "b does not hold the lease");
    assert_eq!(a.tick(T0 + 400).await.expect("tick").granted, 1, "a grants the freed place");
    let PollOutcome::Admitted { session, .. } = b.poll(t0, None, Pace::FIXED, T0 + 500).await.expect("poll") else {
        panic!("t0's turn is claimed on node b")
    };

    // a stops renewing (as if it died): after the lease's TTL, b takes over; a is fenced out.
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    b.tick(T0 + 1000).await.expect("tick");
    b.end_session(session.id).await.expect("end");
    assert_eq!(a.tick(T0 + 1200).await.expect("tick").granted, 0, "a's old lease is void");
    assert_eq!(b.tick(T0 + 1200).await.expect("tick").granted, 1, "b admits now");
    let PollOutcome::Admitted { session, .. } = a.poll(t1, None, Pace::FIXED, T0 + 1300).await.expect("poll") else {
        panic!("t1's turn is claimed on node a")
    };

    // Drained on b: still passing on a until a's next tick, which learns it ended.
    assert!(a.touch(session.id, T0 + 2500).await.expect("touch"));
    assert_eq!(b.drain(None).await.expect("drain"), 1);
    assert!(a.touch(session.id, T0 + 3600).await.expect("touch"), "known live on a until its tick");
    a.tick(T0 + 3700).await.expect("tick");
    assert!(!a.touch(session.id, T0 + 3800).await.expect("touch"), "ended on a after its tick");
    assert_eq!(b.drain(Some(0)).await.expect("drain"), 0, "draining none ends none");
}

#[tokio::test]
async fn a_live_limit_change_on_one_node_reaches_the_other_with_its_next_tick() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    a.seed().await.expect("seed");
    let mut paused = limits();
    paused.mode = RoomMode::Paused;
    paused.message = Some("Back at nine".into());
    a.set_limits(paused.clone()).await.expect("set");
    b.tick(T0).await.expect("tick");
    assert_eq!(b.limits().await.expect("limits"), paused);
}

#[tokio::test]
async fn a_redis_that_lost_its_data_gets_the_room_back_from_the_node() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    a.seed().await.expect("seed");
    redis.cli(&["FLUSHALL"]);
    // Restarted without persistence: the next call writes the limits back and works.
    let outcome = a.join(client(1), T0).await.expect("join after the data was lost");
    assert!(matches!(outcome, JoinOutcome::Admitted(_)), "{outcome:?}");
    assert_eq!(a.limits().await.expect("limits"), limits());
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_gets_the_same_session_on_the_next_poll_anywhere() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    let b = node(&redis, "node-b").await;
    a.seed().await.expect("seed");
    let JoinOutcome::Admitted(first) = a.join(client(1), T0).await.expect("join") else { panic!("admitted") };
    let Ok(JoinOutcome::Queued { ticket, .. }) = a.join(client(2), T0).await else { panic!("queued") };
    a.end_session(first.id).await.expect("end");
    assert_eq!(a.tick(T0 + 200).await.expect("tick").granted, 1);
    // Node a claims the turn, then dies before its answer leaves; the visitor polls node b.
    let PollOutcome::Admitted { session, .. } = a.poll(ticket, None, Pace::FIXED, T0 + 300).await.expect("poll") else {
        panic!("claim")
    };
    let again = b.poll(ticket, None, Pace::FIXED, T0 + 400).await.expect("poll");
    assert!(
        matches!(again, PollOutcome::Admitted { session: s, .. } if s.id == session.id),
        "the same session, not a second one: {again:?}"
    );
    assert!(b.touch(session.id, T0 + 500).await.expect("touch"));
    // Once the session has ended, the ticket is spent.
    b.end_session(session.id).await.expect("end");
    assert_eq!(a.poll(ticket, None, Pace::FIXED, T0 + 600).await.expect("poll"), PollOutcome::Gone);
}

#[tokio::test]
async fn a_number_a_failover_gave_to_someone_else_is_not_the_old_cookies_place() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    a.seed().await.expect("seed");
    let JoinOutcome::Admitted(_) = a.join(client(1), T0).await.expect("join") else { panic!("admitted at once") };
    let Ok(JoinOutcome::Queued { ticket: lost, .. }) = a.join(client(2), T0 + 10).await else { panic!("queued") };
    // The replica was promoted before it saw this join: the join is gone, its number is free.
    redis.cli(&["HINCRBY", "{usher:shared}:state", "next_ticket", "-1"]);
    redis.cli(&["ZREM", "{usher:shared}:line", &lost.number.to_string()]);
    redis.cli(&["ZREM", "{usher:shared}:heartbeats", &lost.number.to_string()]);
    redis.cli(&["HDEL", "{usher:shared}:tickets", &lost.number.to_string()]);
    let Ok(JoinOutcome::Queued { ticket: stranger, .. }) = a.join(client(3), T0 + 5000).await else { panic!("queued") };
    assert_eq!(stranger, lost, "the next newcomer got the lost number");
    // The old cookie's join time is not the record's: not its place.
    assert_eq!(a.poll(lost, Some(T0 + 10), Pace::FIXED, T0 + 6000).await.expect("poll"), PollOutcome::OtherGeneration);
    let PollOutcome::Waiting(p) = a.poll(stranger, Some(T0 + 5000), Pace::FIXED, T0 + 6000).await.expect("poll") else {
        panic!("the newcomer keeps its place")
    };
    assert_eq!(p.joined_ms, T0 + 5000);
}

/// Script calls Redis has run so far (EVALSHA and EVAL).
fn script_calls(redis: &RedisServer) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_waiters_polls_after_its_first_on_a_node_make_no_redis_call_and_its_turn_is_claimed_anywhere() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "node-a").await, node(&redis, "node-b").await);
    a.seed().await.expect("seed");
    let JoinOutcome::Admitted(first) = a.join(client(1), T0).await.expect("join") else { panic!("admitted at once") };
    let mut tickets = Vec::new();
    for n in 0..60u8 {
        let Ok(JoinOutcome::Queued { ticket, .. }) = a.join(client(10 + n), T0).await else { panic!("queued") };
        tickets.push(ticket);
    }
    let (front, far) = (tickets[0], tickets[50]);
    let pace = Pace::new(6000, limits().claim_window);
    let waiting = |outcome: PollOutcome| match outcome {
        PollOutcome::Waiting(place) => place,
        other => panic!("expected waiting, got {other:?}"),
    };
    a.tick(T0 + 100).await.expect("tick");
    b.tick(T0 + 100).await.expect("tick");
    // The first poll on node b asks Redis; the next ones, while b keeps ticking, do not. (One
    // poll of another waiter first loads the script into Redis.)
    waiting(b.poll(tickets[59], None, pace, T0 + 120).await.expect("poll"));
    let before = script_calls(&redis);
    assert_eq!(waiting(b.poll(far, None, pace, T0 + 150).await.expect("poll")).ahead, 50);
    assert_eq!(script_calls(&redis), before + 1, "the first poll is one call");
    let mut shown = Vec::new();
    for k in 1..=40u64 {
        let now = T0 + 150 + k * 100;
        let before = script_calls(&redis);
        shown.push(waiting(b.poll(far, None, pace, now).await.expect("poll")).ahead);
        assert_eq!(script_calls(&redis), before, "poll {k} was answered by node b itself");
        if k % 2 == 0 {
            a.tick(now).await.expect("tick");
            b.tick(now).await.expect("tick");
        }
    }
    assert!(shown.iter().all(|&n| n == 50), "nobody left the line yet: {shown:?}");
    // Its heartbeats rode node b's ticks: 4 s of polls answered by b alone, and it is present
    // (waiter_ttl is 30 s: check the away count after it would have lapsed without them).
    // Both nodes tick every 200 ms (a gap longer than the lease would be an outage, with its
    // grace); the far waiter polls node b each second, the others node a.
    let mut away = 0;
    for k in 1..=200u64 {
        let now = T0 + 4_150 + k * 200;
        if k % 5 == 0 {
            waiting(b.poll(far, None, pace, now).await.expect("poll"));
            for t in tickets.iter().filter(|t| **t != far) {
                a.poll(*t, None, pace, now).await.expect("poll");
            }
        }
        away += a.tick(now).await.expect("tick").away;
        b.tick(now).await.expect("tick");
    }
    assert_eq!(away, 0, "the waiter polling only node b was never taken for away");

    // A place frees; the front's turn comes and it claims on node b, which never saw it.
    let now = T0 + 45_000;
    assert!(a.end_session(first.id).await.expect("end"), "the first visitor leaves");
    assert_eq!(a.tick(now).await.expect("tick").granted, 1);
    b.tick(now).await.expect("tick");
    assert!(matches!(b.poll(front, None, pace, now + 10).await.expect("poll"), PollOutcome::Admitted { .. }));
    // Node b counts the grant out of the far waiter's number without asking Redis.
    let before = script_calls(&redis);
    let place = waiting(b.poll(far, None, pace, now + 20).await.expect("poll"));
    assert_eq!((place.ahead, script_calls(&redis)), (49, before), "one fewer ahead, from b's view");
}

#[tokio::test]
async fn a_node_whose_lost_answer_took_the_lease_again_goes_on_admitting() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    // A tick of the same process whose answer never arrived: Redis stalled past the node's
    // response timeout, then ran it. It spoke for node-a, so the lease it took is node-a's.
    let lost = node(&redis, "node-a").await;
    a.seed().await.expect("seed");
    let JoinOutcome::Admitted(first) = a.join(client(1), T0).await.expect("join") else { panic!("admitted at once") };
    let Ok(JoinOutcome::Queued { .. }) = a.join(client(2), T0).await else { panic!("queued") };
    a.tick(T0 + 100).await.expect("tick");
    // The stall outlasts the lease; the lost tick takes it again under a new fence.
    tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
    lost.tick(T0 + 2000).await.expect("tick");
    a.end_session(first.id).await.expect("end");
    assert_eq!(a.tick(T0 + 2100).await.expect("tick").granted, 1, "node a goes on admitting under its own lease");
}

/// Deletion by time (PRIVACY.md): every key a room writes to Redis carries an expiry no longer
/// than its longest lifetime (the longest of session_max, session_idle, hold and the claim
/// window) plus an hour, so a room's state, the client keys in it included, is gone from
/// Redis by itself once nothing renews it.
#[tokio::test]
async fn every_key_a_room_writes_expires_by_itself() {
    let redis = RedisServer::start();
    let a = node(&redis, "node-a").await;
    a.seed().await.expect("seed");
    for n in 1..6 {
        a.join(client(n), T0).await.expect("join");
    }
    a.tick(T0 + 200).await.expect("tick");
    let keys = redis.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(keys.len() >= 5, "the room wrote its line, sessions and tickets: {keys:?}");
    let longest_ms = 2 * 3_600_000; // session_max (the longest here) plus an hour
    for key in keys {
        let ttl: i64 = redis.cli(&["PTTL", key]).trim().parse().expect("a PTTL");
        assert!(ttl > 0 && ttl <= longest_ms, "{key} expires in {ttl} ms");
    }
}
