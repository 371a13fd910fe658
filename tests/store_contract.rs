//! The store contract (DESIGN §3, §8): the admission semantics every store implementation
//! must keep, driven with an explicit clock so each rule is checked exactly. Every test runs
//! against the memory store and against the Redis store on a real `redis-server` that the
//! test starts on a free port, and on a real three-master Redis Cluster.

mod support;

use std::time::Duration;
use support::{RedisCluster, RedisServer};
use usher::config::{RedisTarget, RoomMode};
use usher::identity::ClientKey;
use usher::store::{
    Admitted, JoinOutcome, Pace, Place, PollOutcome, Returning, RoomLimits, RoomStore, TickInput, TicketRef, redis,
};

const T0: u64 = 1_800_000_000_000;

fn limits() -> RoomLimits {
    RoomLimits {
        max_active: 2,
        admit_per_minute: 6000,
        session_idle: Duration::from_secs(60),
        session_max: Duration::from_secs(3600),
        waiter_ttl: Duration::from_secs(30),
        claim_window: Duration::from_secs(20),
        hold: Duration::from_secs(120),
        mode: RoomMode::Auto,
        opens_at_ms: None,
        message: None,
        tickets_per_client: 3,
        break_glass: None,
        adaptive_pinned: false,
    }
}

/// The stores under test, and the Redis processes behind them (stopped on drop).
struct Stores {
    list: Vec<(&'static str, RoomStore)>,
    _redis: RedisServer,
    _cluster: RedisCluster,
}

/// Each store in turn (a cheap handle); the Redis processes live as long as the `Stores`.
impl<'a> IntoIterator for &'a Stores {
    type Item = (&'static str, RoomStore);
    type IntoIter = std::iter::Cloned<std::slice::Iter<'a, (&'static str, RoomStore)>>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter().cloned()
    }
}

/// The memory store, the Redis store on one server, and the Redis store on a three-master
/// cluster: the room's scripts must keep the contract unchanged in the room's one slot.
async fn stores(limits: RoomLimits) -> Stores {
    let redis = RedisServer::start();
    let cluster = RedisCluster::start(None);
    let single = redis::connect(&redis.url()).await.expect("connect to the test's redis-server");
    let target = RedisTarget::cluster(&cluster.addresses()).expect("the cluster's nodes");
    let clustered = redis::connect_to(&target).await.expect("connect to the test's cluster");
    let mut list = vec![("memory", RoomStore::memory(limits.clone(), T0))];
    for (name, conn) in [("redis", single), ("redis cluster", clustered)] {
        let room = redis::RedisRoom::new(conn, "contract", redis::node_id(), limits.clone(), Duration::from_secs(1))
            .with_given_clock();
        assert!(room.seed().await.expect("seed the room's limits"), "{name}: a fresh Redis has no limits yet");
        list.push((name, RoomStore::redis(room)));
    }
    Stores { list, _redis: redis, _cluster: cluster }
}

impl Stores {
    /// The store `name` in a new generation, as after a restart: a new memory room (the
    /// process's state is gone), or the same Redis room after Redis lost its data.
    fn next_generation(&self, name: &str, store: &RoomStore, limits: &RoomLimits, now: u64) -> RoomStore {
        match name {
            "memory" => return RoomStore::memory(limits.clone(), now),
            "redis" => {
                self._redis.cli(&["FLUSHALL"]);
            }
            _ => {
                for node in &self._cluster.nodes {
                    node.cli(&["FLUSHALL"]);
                }
            }
        }
        store.clone()
    }
}

fn client(n: u32) -> ClientKey {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&n.to_be_bytes());
    ClientKey(k)
}

async fn ticket(store: &RoomStore, c: u32, now: u64) -> TicketRef {
    match store.join(client(c), now).await.expect("join") {
        JoinOutcome::Queued { ticket, .. } => ticket,
        other => panic!("expected a ticket, got {other:?}"),
    }
}

async fn session(store: &RoomStore, c: u32, now: u64) -> u128 {
    match store.join(client(c), now).await.expect("join") {
        JoinOutcome::Admitted(s) => s.id,
        other => panic!("expected admission, got {other:?}"),
    }
}

async fn ahead(store: &RoomStore, t: TicketRef, now: u64) -> u64 {
    place(store, t, now).await.ahead
}

async fn place(store: &RoomStore, t: TicketRef, now: u64) -> Place {
    match store.poll(t, now).await.expect("poll") {
        PollOutcome::Waiting(p) => p,
        other => panic!("expected waiting, got {other:?}"),
    }
}

/// Polls every ticket until each is admitted, ticking between rounds; returns admission order.
async fn admit_all(store: &RoomStore, tickets: &[TicketRef], mut now: u64) -> Vec<TicketRef> {
    let mut order = Vec::new();
    let mut left: Vec<TicketRef> = tickets.to_vec();
    for _ in 0..10_000 {
        if left.is_empty() {
            break;
        }
        now += 200;
        store.tick(now).await.expect("tick");
        let mut still = Vec::new();
        for t in left {
            match store.poll(t, now).await.expect("poll") {
                PollOutcome::Admitted { session, .. } => {
                    order.push(t);
                    store.end_session(session.id).await.expect("end");
                }
                PollOutcome::Waiting(_) => still.push(t),
                other => panic!("ticket {t:?} lost while polling: {other:?}"),
            }
        }
        left = still;
    }
    assert!(left.is_empty(), "never admitted: {left:?}");
    order
}

#[tokio::test]
async fn an_idle_room_admits_a_newcomer_at_once() {
    for (name, store) in &stores(limits()).await {
        let id = session(&store, 1, T0).await;
        assert!(store.touch(id, T0 + 1000).await.expect("touch"), "{name}");
        assert_eq!(store.figures(T0).await.expect("figures").active, 1, "{name}");
    }
}

#[tokio::test]
async fn a_full_room_queues_and_admits_in_ticket_order() {
    for (name, store) in &stores(limits()).await {
        let s1 = session(&store, 1, T0).await;
        let s2 = session(&store, 2, T0).await;
        let tickets: Vec<TicketRef> = futures_collect(&store, 3..13, T0).await;
        // Full: ticks grant nothing.
        assert_eq!(store.tick(T0 + 200).await.expect("tick").granted, 0, "{name}");
        for (i, t) in tickets.iter().enumerate() {
            assert_eq!(ahead(&store, *t, T0 + 300).await, i as u64, "{name}");
        }
        store.end_session(s1).await.expect("end");
        store.end_session(s2).await.expect("end");
        let order = admit_all(&store, &tickets, T0 + 400).await;
        assert_eq!(order, tickets, "{name}: admission must follow ticket order");
    }
}

async fn futures_collect(store: &RoomStore, clients: std::ops::Range<u32>, now: u64) -> Vec<TicketRef> {
    let mut out = Vec::new();
    for c in clients {
        out.push(ticket(store, c, now).await);
    }
    out
}

#[tokio::test]
async fn nobody_is_admitted_past_max_active_or_pending_grants() {
    for (name, store) in &stores(limits()).await {
        let first = session(&store, 0, T0).await;
        session(&store, 1, T0).await;
        let tickets = futures_collect(&store, 2..7, T0).await;
        let mut now = T0;
        for round in 0..20 {
            now += 200;
            if round == 5 {
                store.end_session(first).await.expect("end");
            }
            store.tick(now).await.expect("tick");
            let f = store.figures(now).await.expect("figures");
            assert!(f.active + f.pending <= 2, "{name}: {f:?}");
            for t in &tickets {
                let _ = store.poll(*t, now).await.expect("poll");
            }
        }
        assert_eq!(store.figures(now).await.expect("figures").active, 2, "{name}: the freed place was refilled");
    }
}

/// Polls `present` once a second from `from` to `to`, ticking after each round; returns
/// the tick reports' sums of (granted, away, abandoned, returned) and checks that no present
/// waiter's number ahead ever grows.
async fn keep_polling(store: &RoomStore, present: &[TicketRef], from: u64, to: u64) -> [u64; 4] {
    let mut sums = [0; 4];
    let mut last: Vec<u64> = vec![u64::MAX; present.len()];
    let mut now = from;
    while now < to {
        now += 1000;
        for (k, t) in present.iter().enumerate() {
            if let PollOutcome::Waiting(p) = store.poll(*t, now).await.expect("poll") {
                assert!(p.ahead <= last[k], "ticket {t:?}: ahead grew from {} to {}", last[k], p.ahead);
                last[k] = p.ahead;
            }
        }
        let r = store.tick(now).await.expect("tick");
        for (sum, n) in sums.iter_mut().zip([r.granted, r.away, r.abandoned, r.returned]) {
            *sum += n;
        }
    }
    sums
}

#[tokio::test]
async fn an_away_waiter_is_skipped_while_those_behind_it_are_granted() {
    for (name, store) in &stores(limits()).await {
        let a = session(&store, 1, T0).await;
        let _b = session(&store, 2, T0).await;
        let t1 = ticket(&store, 3, T0).await;
        let t2 = ticket(&store, 4, T0).await;
        let t3 = ticket(&store, 5, T0).await;
        // t1 stops polling; past waiter_ttl it is away, its place held and still counted.
        let [granted, away, abandoned, _] = keep_polling(&store, &[t2, t3], T0, T0 + 40_000).await;
        assert_eq!((granted, away, abandoned), (0, 1, 0), "{name}");
        assert_eq!(store.figures(T0 + 40_000).await.expect("figures").held, 1, "{name}");
        let p3 = place(&store, t3, T0 + 40_000).await;
        assert_eq!((p3.ahead, p3.away_ahead), (2, 1), "{name}: t1's held place is ahead of t3");
        // A place frees: the turn skips t1 (not there) and goes to t2, then t3.
        store.end_session(a).await.expect("end");
        let order = admit_all(&store, &[t2, t3], T0 + 40_000).await;
        assert_eq!(order, vec![t2, t3], "{name}");
        let f = store.figures(T0 + 60_000).await.expect("figures");
        assert_eq!((f.held, f.pending), (1, 0), "{name}: nothing was granted to the away waiter");
        assert!(matches!(store.poll(t1, T0 + 60_000).await.expect("poll"), PollOutcome::Waiting(_)), "{name}: held");
    }
}

#[tokio::test]
async fn an_away_waiter_returning_within_hold_is_granted_before_anyone_who_joined_after_it() {
    for (name, store) in &stores(limits()).await {
        let a = session(&store, 1, T0).await;
        let b = session(&store, 2, T0).await;
        let t1 = ticket(&store, 3, T0).await;
        let t2 = ticket(&store, 4, T0).await;
        let t3 = ticket(&store, 5, T0).await;
        keep_polling(&store, &[t2, t3], T0, T0 + 40_000).await;
        // Its turn passes while it is away: t2 gets the free place.
        store.end_session(a).await.expect("end");
        assert_eq!(admit_all(&store, &[t2], T0 + 40_000).await, vec![t2], "{name}");
        let t4 = ticket(&store, 6, T0 + 45_000).await;
        let before = place(&store, t3, T0 + 50_000).await.ahead;
        // Back 60 s later (hold is 120 s): in line again, nobody ahead, never told "expired".
        let back = place(&store, t1, T0 + 60_000).await;
        assert_eq!((back.ahead, back.away_ahead), (0, 0), "{name}");
        assert!(place(&store, t3, T0 + 60_000).await.ahead <= before, "{name}: a return grew t3's number");
        let r = store.tick(T0 + 60_200).await.expect("tick");
        assert_eq!((r.returned, r.away_ms.len()), (1, 1), "{name}");
        assert!((39_000..=61_000).contains(&r.away_ms[0]), "{name}: away for {:?} ms", r.away_ms);
        // The next free place is t1's, before t3 (behind it) and t4 (joined after it left).
        store.end_session(b).await.expect("end");
        let order = admit_all(&store, &[t1, t3, t4], T0 + 60_200).await;
        assert_eq!(order, vec![t1, t3, t4], "{name}");
    }
}

#[tokio::test]
async fn an_away_waiter_returning_after_hold_is_told_its_place_expired() {
    let mut l = limits();
    l.session_idle = Duration::from_secs(3600);
    for (name, store) in &stores(l).await {
        let _a = session(&store, 1, T0).await;
        let _b = session(&store, 2, T0).await;
        let t1 = ticket(&store, 3, T0).await;
        let t2 = ticket(&store, 4, T0).await;
        let [_, away, abandoned, _] = keep_polling(&store, &[t2], T0, T0 + 119_000).await;
        assert_eq!((away, abandoned), (1, 0), "{name}: held until hold has passed");
        assert_eq!(place(&store, t2, T0 + 119_000).await.ahead, 1, "{name}");
        let [_, _, abandoned, _] = keep_polling(&store, &[t2], T0 + 119_000, T0 + 125_000).await;
        assert_eq!(abandoned, 1, "{name}");
        assert_eq!(store.poll(t1, T0 + 125_000).await.expect("poll"), PollOutcome::Gone, "{name}");
        assert_eq!(place(&store, t2, T0 + 125_000).await.ahead, 0, "{name}: t2 moved up");
        let f = store.figures(T0 + 125_000).await.expect("figures");
        assert_eq!((f.held, f.abandoned_total), (0, 1), "{name}");
    }
}

#[tokio::test]
async fn returns_never_push_anyone_past_max_active() {
    let mut l = limits();
    l.max_active = 3;
    l.session_idle = Duration::from_secs(3600);
    l.mode = RoomMode::Paused;
    for (name, store) in &stores(l.clone()).await {
        // Ten waiters go away; ten others behind them fill the room, their turns passing the
        // away ones by.
        let away = futures_collect(&store, 0..10, T0).await;
        let present = futures_collect(&store, 10..20, T0).await;
        let [_, gone, _, _] = keep_polling(&store, &present, T0, T0 + 31_000).await;
        assert_eq!(gone, 10, "{name}");
        store.set_limits(RoomLimits { mode: RoomMode::QueueAll, ..l.clone() }).await.expect("limits");
        let mut now = T0 + 31_000;
        let mut admitted = Vec::new();
        for _ in 0..20 {
            now += 200;
            store.tick(now).await.expect("tick");
            for t in &present {
                // A claimed ticket answers with its session again (Redis remembers claims).
                if let PollOutcome::Admitted { session, .. } = store.poll(*t, now).await.expect("poll") {
                    if !admitted.contains(&session.id) {
                        admitted.push(session.id);
                    }
                }
            }
        }
        assert_eq!(admitted.len(), 3, "{name}: the room is full with three of the present");
        // All ten come back at once: in line at the front, but the room is full.
        for (i, t) in away.iter().enumerate() {
            let p = place(&store, *t, now).await;
            assert_eq!(p.ahead, i as u64, "{name}: only returners who joined earlier are ahead");
        }
        let mut back = Vec::new();
        for round in 0..30 {
            now += 200;
            if round % 10 == 0 {
                // One place frees every two seconds.
                let id = admitted.remove(0);
                store.end_session(id).await.expect("end");
            }
            store.tick(now).await.expect("tick");
            let f = store.figures(now).await.expect("figures");
            assert!(f.active + f.pending <= 3, "{name}: {f:?}");
            for t in away.iter().filter(|t| !back.contains(*t)).copied().collect::<Vec<_>>() {
                match store.poll(t, now).await.expect("poll") {
                    PollOutcome::Admitted { session, .. } => {
                        back.push(t);
                        admitted.push(session.id);
                    }
                    PollOutcome::Waiting(_) => {}
                    other => panic!("{name}: a returner lost its place: {other:?}"),
                }
            }
            assert!(store.figures(now).await.expect("figures").active <= 3, "{name}");
        }
        assert_eq!(back, away[..3].to_vec(), "{name}: one return per freed place, in their order");
    }
}

#[tokio::test]
async fn an_unclaimed_turn_goes_to_the_next_and_the_waiter_keeps_its_place() {
    let mut l = limits();
    l.max_active = 1;
    for (name, store) in &stores(l.clone()).await {
        let s = session(&store, 1, T0).await;
        let t1 = ticket(&store, 2, T0).await;
        let t2 = ticket(&store, 3, T0).await;
        let behind = ticket(&store, 5, T0).await;
        store.end_session(s).await.expect("end");
        assert_eq!(store.tick(T0 + 200).await.expect("tick").granted, 1, "{name}");
        assert_eq!(store.figures(T0 + 200).await.expect("figures").pending, 1);
        // t1 does not come back within the claim window; t2 keeps polling.
        let mut now = T0 + 200;
        let mut expired = 0;
        let mut t2_admitted = false;
        let mut last = u64::MAX;
        while now < T0 + 30_000 && !t2_admitted {
            now += 1000;
            t2_admitted = matches!(store.poll(t2, now).await.expect("poll"), PollOutcome::Admitted { .. });
            expired += store.tick(now).await.expect("tick").expired_grants;
            // The held place of t1 is not counted again when its turn expires.
            let ahead = ahead(&store, behind, now).await;
            assert!(ahead <= last, "{name}: the waiter behind saw its number grow from {last} to {ahead}");
            last = ahead;
        }
        assert_eq!(expired, 1, "{name}");
        assert!(t2_admitted, "{name}: the expired grant's place went to t2");
        assert!(now > T0 + 20_000, "{name}: t2 only got the place after the claim window");
        // t1's turn came while it was away: its place is held, and on return it is granted
        // (once a place is free), never told its place expired.
        assert!(matches!(store.poll(t1, now).await.expect("poll"), PollOutcome::Waiting(_)), "{name}");
        let t3 = ticket(&store, 4, now).await;
        assert_eq!(admit_all(&store, &[t1, behind, t3], now).await, vec![t1, behind, t3], "{name}");
    }
}

#[tokio::test]
async fn sessions_end_when_idle_past_their_lifetime_on_logout_and_on_drain() {
    for (name, store) in &stores(limits()).await {
        let idle = session(&store, 1, T0).await;
        let busy = session(&store, 2, T0).await;
        let mut now = T0;
        for _ in 0..9 {
            now += 10_000;
            assert!(store.touch(busy, now).await.expect("touch"));
            store.tick(now).await.expect("tick");
        }
        assert!(!store.touch(idle, now).await.expect("touch"), "{name}: idle session must have ended");
        assert_eq!(store.figures(now).await.expect("figures").active, 1, "{name}");
        assert!(store.end_session(busy).await.expect("end"), "{name}");
        assert_eq!(store.figures(now).await.expect("figures").active, 0, "{name}");
        // Lifetime: touched every 30 s but past session_max.
        let mut l = limits();
        l.session_max = Duration::from_secs(90);
        store.set_limits(l).await.expect("limits");
        let s = session(&store, 3, now).await;
        for _ in 0..3 {
            now += 30_000;
            store.touch(s, now).await.expect("touch");
        }
        assert!(!store.touch(s, now + 1).await.expect("touch"), "{name}: past session_max");
        // Drain the oldest N.
        let a = session(&store, 4, now).await;
        let b = session(&store, 5, now + 1).await;
        assert_eq!(store.drain(Some(1)).await.expect("drain"), 1, "{name}");
        assert!(!store.touch(a, now + 2).await.expect("touch"), "{name}: oldest drained");
        assert!(store.touch(b, now + 2).await.expect("touch"), "{name}: newer kept");
    }
}

/// A session idle for `session_idle` ends at the next tick, also behind the deadlines of many
/// sessions that began after it: while it still counted, a room at `max_active` admitted
/// nobody in its place. (The memory store kept its deadlines in a FIFO, and a session seen
/// after it began went back to the end, behind a whole `session_idle` of newer ones: a room
/// full of idle sessions moved at half speed, and the soak saw twice the sessions live.)
#[tokio::test]
async fn an_idle_session_ends_at_session_idle_even_behind_many_newer_sessions() {
    let mut l = limits();
    l.max_active = 1000;
    for (name, store) in &stores(l).await {
        let early = session(&store, 1, T0).await;
        assert!(store.touch(early, T0 + 1_000).await.expect("touch"), "{name}");
        // Fifty sessions begin after it, one a second.
        for c in 0..50u32 {
            session(&store, 100 + c, T0 + 2_000 + u64::from(c) * 1_000).await;
        }
        store.tick(T0 + 60_000).await.expect("tick");
        // Idle since T0 + 1 s, it ends at T0 + 61 s: the next tick ends it.
        store.tick(T0 + 61_500).await.expect("tick");
        let figures = store.figures(T0 + 61_500).await.expect("figures");
        assert_eq!(figures.active, 50, "{name}: the session idle past session_idle still counts as active");
        assert!(!store.touch(early, T0 + 61_500).await.expect("touch"), "{name}");
    }
}

#[tokio::test]
async fn one_client_key_cannot_hold_more_than_its_cap_of_tickets() {
    let mut l = limits();
    l.max_active = 1;
    for (name, store) in &stores(l.clone()).await {
        session(&store, 99, T0).await;
        let mut tickets = Vec::new();
        for _ in 0..10 {
            match store.join(client(7), T0).await.expect("join") {
                JoinOutcome::Queued { ticket, .. } => tickets.push(ticket),
                other => panic!("{other:?}"),
            }
        }
        tickets.sort_unstable();
        tickets.dedup();
        assert_eq!(tickets.len(), 3, "{name}: cap is 3, got {tickets:?}");
        assert_eq!(store.figures(T0).await.expect("figures").waiting, 3, "{name}");
    }
}

#[tokio::test]
async fn pre_queued_visitors_are_drawn_in_random_order_all_before_later_arrivals() {
    let mut l = limits();
    l.opens_at_ms = Some(T0 + 60_000);
    l.max_active = 1000;
    l.admit_per_minute = 600; // a reserve of 20: the opening grants 20 of 60
    for (name, store) in &stores(l.clone()).await {
        let early = futures_collect(&store, 0..60, T0).await;
        for t in &early {
            match store.poll(*t, T0 + 1).await.expect("poll") {
                PollOutcome::Waiting(p) => assert!(p.prequeue, "{name}"),
                other => panic!("{other:?}"),
            }
        }
        for at in [20_000, 40_000, 55_000] {
            assert_eq!(store.tick(T0 + at).await.expect("tick").granted, 0, "{name}: not open yet");
            for t in &early {
                ahead(&store, *t, T0 + at).await;
            }
        }
        let opened = store.tick(T0 + 60_000).await.expect("tick");
        assert!(opened.opened, "{name}");
        let late = futures_collect(&store, 100..110, T0 + 60_001).await;
        let all: Vec<TicketRef> = early.iter().chain(&late).copied().collect();
        let order = admit_all(&store, &all, T0 + 60_001).await;
        let (first, rest) = order.split_at(early.len());
        let mut sorted = first.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, early, "{name}: every pre-queued visitor comes first");
        assert_ne!(first, early.as_slice(), "{name}: the draw must not keep arrival order");
        assert_eq!(rest, late.as_slice(), "{name}: later arrivals follow in order");
    }
}

#[tokio::test]
async fn the_draw_is_committed_before_the_first_ticket_and_the_line_is_served_in_its_order() {
    use usher::store::draw::{self, Publication};
    let mut l = limits();
    l.opens_at_ms = Some(T0 + 60_000);
    l.max_active = 1000;
    for (name, store) in &stores(l.clone()).await {
        // Announced: a commitment before anyone came, kept through the pre-queue.
        let (before, walk) = store.draw(T0 - 1000).await.expect("draw");
        let before = before.expect("a commitment while the event is announced");
        assert!(before.drawn.is_none() && walk.is_empty(), "{name}");
        let early = futures_collect(&store, 0..30, T0).await;
        let gone = early[7];
        // Ticks each second (a longer gap would be an outage, with its grace); all but one
        // poll, and that one is away long before the opening.
        for at in (1..60).map(|s| s * 1000) {
            if at % 10_000 == 0 {
                for t in early.iter().filter(|t| **t != gone) {
                    let _ = store.poll(*t, T0 + at).await.expect("poll");
                }
            }
            store.tick(T0 + at).await.expect("tick");
        }
        let (committed, _) = store.draw(T0 + 59_000).await.expect("draw");
        assert_eq!(committed.as_ref(), Some(&before), "{name}: one seed for the whole pre-queue");

        assert!(store.tick(T0 + 60_000).await.expect("tick").opened, "{name}");
        let present: Vec<TicketRef> = early.iter().copied().filter(|t| *t != gone).collect();
        let admitted = admit_all(&store, &present, T0 + 60_000).await;

        let (drawn, walk) = store.draw(T0 + 70_000).await.expect("draw");
        let drawn = drawn.expect("drawn");
        let range = drawn.drawn.expect("drawn");
        assert_eq!((range.first, range.end), (early[0].number, early[29].number + 1), "{name}");
        assert_eq!(drawn.seed, before.seed, "{name}");
        let order = draw::order(&drawn.seed, range.first, range.end);
        // The admitter's own record of its grants: the seed's order, every place once.
        let walked: Vec<u64> = walk.iter().map(|s| s.ticket).collect();
        assert_eq!(walked, order, "{name}: served in the seed's order");
        assert!(walk.iter().enumerate().all(|(k, s)| s.position == k as u64), "{name}: {walk:?}");
        let mut numbers: Vec<u64> = admitted.iter().map(|t| t.number).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, present.iter().map(|t| t.number).collect::<Vec<_>>(), "{name}");
        assert_eq!(walk.iter().filter(|s| !s.admitted).map(|s| s.ticket).collect::<Vec<_>>(), [gone.number], "{name}");

        let publication = Publication::new("r", Some(&drawn), walk);
        assert_eq!(draw::verify(&publication).expect("verifies").admitted, 29, "{name}");
        let mut tampered = publication.clone();
        tampered.walk.swap(3, 4);
        (tampered.walk[3].position, tampered.walk[4].position) = (3, 4);
        assert!(draw::verify(&tampered).is_err(), "{name}: a tampered walk must fail");
    }
}

/// The first drawn waiter leaves its turn unclaimed: it is held at its drawn place, not at
/// the place it arrived at (in Redis the draw moves the line, the record follows at the grant).
#[tokio::test]
async fn a_drawn_turn_left_unclaimed_is_held_at_its_drawn_place() {
    use usher::store::draw;
    let mut l = limits();
    l.opens_at_ms = Some(T0 + 10_000);
    l.max_active = 1;
    for (name, store) in &stores(l.clone()).await {
        let early = futures_collect(&store, 0..30, T0).await;
        let mut now = T0;
        while now < T0 + 10_000 {
            now += 1000;
            for t in &early {
                let _ = store.poll(*t, now).await.expect("poll");
            }
            store.tick(now).await.expect("tick");
        }
        let (drawn, _) = store.draw(now).await.expect("draw");
        let drawn = drawn.expect("drawn");
        let range = drawn.drawn.expect("drawn");
        let order = draw::order(&drawn.seed, range.first, range.end);
        let first = early.iter().copied().find(|t| t.number == order[0]).expect("first drawn");
        // Everyone else polls through the claim window (20 s); the first drawn does not.
        while now < T0 + 10_000 + 25_000 {
            now += 1000;
            for t in early.iter().filter(|t| **t != first) {
                let _ = store.poll(*t, now).await.expect("poll");
            }
            store.tick(now).await.expect("tick");
        }
        let held = place(&store, first, now).await;
        assert_eq!(held.ahead, 0, "{name}: held at the head of the drawn line (arrived {}th)", order[0] - range.first);
    }
}

#[tokio::test]
async fn pause_admits_nobody_and_resume_continues_in_order() {
    let mut l = limits();
    l.max_active = 1000;
    l.mode = RoomMode::QueueAll;
    for (name, store) in &stores(l.clone()).await {
        let tickets = futures_collect(&store, 0..6, T0).await;
        let mut paused = l.clone();
        paused.mode = RoomMode::Paused;
        store.set_limits(paused).await.expect("limits");
        for i in 1..5 {
            for t in &tickets {
                ahead(&store, *t, T0 + i * 1000).await;
            }
            assert_eq!(store.tick(T0 + i * 1000).await.expect("tick").granted, 0, "{name}");
        }
        store.set_limits(l.clone()).await.expect("limits");
        assert_eq!(admit_all(&store, &tickets, T0 + 5000).await, tickets, "{name}");
    }
}

/// `waiters` join at T0 and keep polling; the grants of 100 ticks, 200 ms apart.
async fn granted_in_20_s(store: &RoomStore, waiters: u32, input: &TickInput<'_>) -> u64 {
    let tickets = futures_collect(store, 0..waiters, T0).await;
    let mut granted = 0;
    let mut now = T0;
    for _ in 0..100 {
        now += 200;
        for t in tickets.iter().skip(granted as usize).take(200) {
            let _ = store.poll(*t, now).await.expect("poll");
        }
        granted += store.tick_with(now, input).await.expect("tick").granted;
    }
    granted
}

#[tokio::test]
async fn admissions_follow_the_configured_outflow() {
    let mut l = limits();
    l.max_active = 100_000;
    l.admit_per_minute = 600; // 10 per second, a reserve of 20
    l.mode = RoomMode::QueueAll;
    for (name, store) in &stores(l.clone()).await {
        let granted = granted_in_20_s(&store, 500, &TickInput::PLAIN).await;
        // 20 s at 10/s plus the reserve of 20.
        assert!((195..=221).contains(&granted), "{name}: granted {granted}");
    }
}

/// No-show compensation (issue 17): the admitter asks for a release above the outflow, and
/// the store's budget refills that much faster, within the same reserve rule.
#[tokio::test]
async fn a_release_above_the_outflow_grants_that_much_more() {
    let mut l = limits();
    l.max_active = 100_000;
    l.admit_per_minute = 600; // 10 per second; released at 1.5×, 15 per second
    l.mode = RoomMode::QueueAll;
    for (name, store) in &stores(l.clone()).await {
        let granted = granted_in_20_s(&store, 800, &TickInput { release_pm: 1500, ..TickInput::PLAIN }).await;
        // 20 s at 15/s plus the reserve of 30 (the reserve is two seconds of the release).
        assert!((295..=331).contains(&granted), "{name}: granted {granted}");
        // Released, not configured: the limits are unchanged.
        assert_eq!(store.limits().await.expect("limits").admit_per_minute, 600, "{name}");
    }
}

/// The adaptive outflow's answers (issue 17): what each tick brings is summed until the
/// admitting node takes the sums, which starts the next period from nothing.
#[tokio::test]
async fn answers_brought_by_ticks_are_summed_until_taken_then_start_again() {
    let slots = |pairs: &[(usize, u64)]| {
        let mut v = vec![0u64; 61];
        for &(i, n) in pairs {
            v[i] = n;
        }
        v
    };
    for (name, store) in &stores(limits()).await {
        fn bring(answers: &[u64], take: bool) -> TickInput<'_> {
            TickInput { release_pm: 1000, answers, take_answers: take }
        }
        let (first, second) = (slots(&[(0, 1), (3, 10)]), slots(&[(3, 5), (60, 2)]));
        assert_eq!(store.tick_with(T0, &bring(&first, false)).await.expect("tick").answers, None, "{name}: not asked");
        let taken = store.tick_with(T0 + 200, &bring(&second, true)).await.expect("tick").answers;
        assert_eq!(taken, Some(slots(&[(0, 1), (3, 15), (60, 2)])), "{name}: both ticks' answers, summed");
        let next = store.tick_with(T0 + 400, &bring(&[], true)).await.expect("tick").answers;
        assert!(
            next.as_ref().is_none_or(|v| v.iter().all(|n| *n == 0)),
            "{name}: a new period starts from nothing: {next:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_change_writes_only_its_fields_so_two_operators_both_keep_theirs() {
    for (name, store) in &stores(limits()).await {
        let seen = store.limits().await.expect("limits");
        // Two operators (or two nodes) start from the same limits and change different fields.
        let one = RoomLimits { max_active: 7, ..seen.clone() };
        let other = RoomLimits { admit_per_minute: 1234, mode: RoomMode::Paused, ..seen.clone() };
        let after_one = store.update_limits(&one, &one.changed_from(&seen)).await.expect("update");
        assert_eq!(after_one.max_active, 7, "{name}");
        let after_both = store.update_limits(&other, &other.changed_from(&seen)).await.expect("update");
        assert_eq!(
            (after_both.max_active, after_both.admit_per_minute, after_both.mode),
            (7, 1234, RoomMode::Paused),
            "{name}: the second change kept the first"
        );
        assert_eq!(store.limits().await.expect("limits"), after_both, "{name}: the store holds both");
        // Nothing named, nothing written.
        let unchanged = store.update_limits(&seen, &[]).await.expect("update");
        assert_eq!(unchanged, after_both, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_of_another_generation_never_names_a_strangers_place_and_is_restored_by_its_join_time() {
    let mut l = limits();
    l.max_active = 1;
    let stores = stores(l.clone()).await;
    for (name, old) in &stores {
        let (old_session, old_tickets) = {
            let session = session(&old, 1000, T0).await;
            let mut out = Vec::new();
            for i in 0..5u32 {
                out.push(ticket(&old, i, T0 + u64::from(i) * 1000).await);
            }
            (session, out)
        };
        let t1 = T0 + 20_000;
        let store = stores.next_generation(name, &old, &l, t1);
        // The session from before is kept. From then on (Redis: from the loss, which the node
        // saw) nobody is let in at once, though the new generation's line looks empty.
        let before = Admitted {
            session: old_session,
            generation: old_tickets[0].generation,
            created_ms: T0,
            expires_ms: T0 + 3_600_000,
        };
        assert!(store.adopt(before, t1).await.expect("adopt"), "{name}: the session from before is kept");
        let holder = old_session;
        // The first newcomer of the new generation gets number 0 again, as o0 had.
        let n0 = ticket(&store, 100, t1).await;
        assert_eq!(n0.number, old_tickets[0].number, "{name}: numbers start again");
        assert_ne!(n0.generation, old_tickets[0].generation, "{name}: in another generation");
        for old in &old_tickets {
            assert_eq!(store.poll(*old, t1 + 1).await.expect("poll"), PollOutcome::OtherGeneration, "{name}");
        }
        assert!(matches!(store.poll(n0, t1 + 1).await.expect("poll"), PollOutcome::Waiting(_)), "{name}");

        // They come back in another order than they joined; one twice.
        let mut restored = vec![None; 5];
        for (k, i) in [4usize, 2, 0, 3, 1, 2].into_iter().enumerate() {
            let returning =
                Returning { client: client(i as u32), old: old_tickets[i], joined_ms: T0 + i as u64 * 1000 };
            let new = store.restore(returning, t1 + 100 + k as u64).await.expect("restore");
            assert_eq!(*restored[i].get_or_insert(new), new, "{name}: the same old ticket, the same place");
        }
        let restored: Vec<TicketRef> = restored.into_iter().map(|t| t.expect("restored")).collect();
        let n1 = ticket(&store, 101, t1 + 500).await;
        // In the restore window nobody is granted and no position is shown.
        store.end_session(holder).await.expect("end");
        assert_eq!(store.tick(t1 + 1000).await.expect("tick").granted, 0, "{name}: the restore window holds");
        let p = place(&store, restored[3], t1 + 1100).await;
        assert!(p.restoring, "{name}: {p:?}");
        assert_eq!(p.joined_ms, T0 + 3000, "{name}: its own join time");
        // Afterwards: those who joined first, first; the newcomers after all of them.
        let mut all = restored.clone();
        all.extend([n0, n1]);
        for t in &all {
            place(&store, *t, t1 + 10_000).await;
        }
        let after = t1 + 16_000;
        assert_eq!(ahead(&store, restored[0], after).await, 0, "{name}");
        assert_eq!(ahead(&store, restored[4], after).await, 4, "{name}: behind those restored who joined earlier");
        assert_eq!(ahead(&store, n0, after).await, 5, "{name}: every restored waiter is ahead of a newcomer");
        let order = admit_all(&store, &all, after).await;
        assert_eq!(order, all, "{name}: restored by join time, then the newcomers in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_of_another_generation_is_taken_over_up_to_max_active_and_an_ended_one_never() {
    let l = limits();
    let stores = stores(l.clone()).await;
    for (name, old) in &stores {
        let (a, b) = (session(&old, 1, T0).await, session(&old, 2, T0).await);
        let before = old.generation();
        let t1 = T0 + 5000;
        let store = stores.next_generation(name, &old, &l, t1);
        store.tick(t1).await.expect("tick");
        assert!(!store.touch(a, t1 + 1).await.expect("touch"), "{name}: unknown here");
        let pass = |session| Admitted { session, generation: before, created_ms: T0, expires_ms: T0 + 3_600_000 };
        assert!(store.adopt(pass(a), t1 + 2).await.expect("adopt"), "{name}: taken over");
        assert!(store.adopt(pass(a), t1 + 3).await.expect("adopt"), "{name}: twice is once");
        assert!(store.touch(a, t1 + 4).await.expect("touch"), "{name}: live now");
        // A pass of this generation whose session is gone has ended: never revived.
        let now_gen = Admitted { generation: store.generation(), ..pass(b) };
        assert!(!store.adopt(now_gen, t1 + 5).await.expect("adopt"), "{name}");
        // Up to max_active (2): a newcomer takes the second place, then b finds none. (It
        // queues first: a session from before opened the restore window, in which nobody is
        // let in at once.)
        let newcomer = ticket(&store, 3, t1 + 6).await;
        let after = t1 + 16_000;
        assert!(store.touch(a, after).await.expect("touch"), "{name}");
        assert_eq!(store.tick(after).await.expect("tick").granted, 1, "{name}: after the window");
        assert!(matches!(store.poll(newcomer, after + 1).await.expect("poll"), PollOutcome::Admitted { .. }));
        assert!(!store.adopt(pass(b), after + 2).await.expect("adopt"), "{name}: no room beyond max_active");
        assert_eq!(store.figures(after + 3).await.expect("figures").active, 2, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_the_opening_time_draws_the_pre_queue_at_once_and_admits_everyone_once() {
    let mut l = limits();
    l.opens_at_ms = Some(T0 + 3_600_000);
    l.max_active = 1000;
    l.admit_per_minute = 600; // a reserve of 20: the opening grants 20 of 60
    for (name, store) in &stores(l.clone()).await {
        let early = futures_collect(&store, 0..60, T0).await;
        assert_eq!(store.tick(T0 + 1000).await.expect("tick").granted, 0, "{name}: not open");
        // The operator opens now: the pre-queue's order is drawn, not its arrival order.
        let open = RoomLimits { opens_at_ms: None, ..l.clone() };
        store.update_limits(&open, &["opens_at"]).await.expect("update");
        let report = store.tick(T0 + 2000).await.expect("tick");
        assert!(report.opened, "{name}: drawn at once");
        let late = futures_collect(&store, 100..110, T0 + 2001).await;
        let mut all = early.clone();
        all.extend(&late);
        let order = admit_all(&store, &all, T0 + 2001).await;
        let (first, rest) = order.split_at(early.len());
        let mut sorted = first.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, early, "{name}: every pre-queued visitor first, each once");
        assert_ne!(first, early.as_slice(), "{name}: in the drawn order, not arrival order");
        assert_eq!(rest, late.as_slice(), "{name}: later arrivals after, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_waiters_get_one_waiter_ttl_of_grace_from_the_first_tick() {
    let mut l = limits();
    l.mode = RoomMode::Paused;
    for (name, store) in &stores(l.clone()).await {
        let (t1, t2) = (ticket(&store, 1, T0).await, ticket(&store, 2, T0).await);
        for at in [200, 400, 600] {
            store.tick(T0 + at).await.expect("tick");
        }
        // Nothing ticked and nobody could poll for 70 s: more than waiter_ttl (30 s).
        let back = T0 + 70_000;
        let report = store.tick(back).await.expect("tick");
        assert_eq!((report.away, report.abandoned), (0, 0), "{name}: nobody is taken for away");
        // Ticking on as usual; t1 polls again, t2 never does.
        let mut away = 0;
        for at in (back + 500..back + 29_500).step_by(500) {
            if at % 10_000 == 0 {
                place(&store, t1, at).await;
            }
            away += store.tick(at).await.expect("tick").away;
        }
        assert_eq!(away, 0, "{name}: nobody is away within the grace");
        // One waiter_ttl after the store came back, the one that never polled again is away.
        for at in (back + 29_500..back + 31_000).step_by(500) {
            away += store.tick(at).await.expect("tick").away;
        }
        assert_eq!(away, 1, "{name}");
        let p1 = place(&store, t1, back + 30_600).await;
        assert_eq!(p1.away_ahead, 0, "{name}: t1 polled and is present");
        let p2 = place(&store, t2, back + 30_700).await;
        assert_eq!(p2.ahead, 1, "{name}: t2 came back within hold and kept its place");
    }
}

#[tokio::test]
async fn a_waiter_told_to_poll_every_minute_is_not_away_for_obeying_and_is_after_missing_three_polls() {
    // Paced as a room admitting one a minute would be (the room's rate itself does not
    // matter to the store: it is full).
    let pace = Pace::new(1, limits().claim_window);
    let mut l = limits();
    l.session_idle = Duration::from_secs(3600);
    for (name, store) in &stores(l).await {
        // The room is full, so the line stands still: 60 present ahead at one a minute is an
        // hour's wait.
        let (_a, _b) = (session(&store, 1, T0).await, session(&store, 2, T0).await);
        let mut front = Vec::new();
        for c in 0..60 {
            front.push(ticket(&store, 10 + c, T0).await);
        }
        let (obeys, leaves) = (ticket(&store, 100, T0).await, ticket(&store, 101, T0).await);
        let poll = |t, now| {
            let store = store.clone();
            async move {
                match store.poll_as(t, None, pace, now).await.expect("poll") {
                    PollOutcome::Waiting(p) => p,
                    other => panic!("expected waiting, got {other:?}"),
                }
            }
        };
        assert_eq!(poll(front[0], T0).await.poll_secs, 2, "{name}: at the front");
        assert_eq!(poll(obeys, T0).await.poll_secs, 60, "{name}: an hour away");
        assert_eq!(poll(leaves, T0).await.poll_secs, 60, "{name}");
        // Those ahead poll every second; `obeys` once a minute, as told; `leaves` never again.
        let mut away = 0;
        for second in 1..=190u64 {
            let now = T0 + second * 1000;
            for t in &front {
                poll(*t, now).await;
            }
            if second % 60 == 0 {
                assert_eq!(poll(obeys, now).await.away_ahead, 0, "{name}: nobody ahead is away");
            }
            away += store.tick(now).await.expect("tick").away;
            if second == 180 {
                assert_eq!(away, 0, "{name}: three minutes without a poll, within three missed ones and slack");
            }
        }
        assert_eq!(away, 1, "{name}: the one that left is away after three missed polls");
        assert_eq!(store.figures(T0 + 190_000).await.expect("figures").held, 1, "{name}");
        let back = poll(leaves, T0 + 191_000).await;
        assert_eq!(back.ahead, 61, "{name}: its place was held");
    }
}

#[tokio::test]
async fn heartbeats_of_more_waiters_than_one_command_carries_keep_every_one_present() {
    let mut l = limits();
    l.session_idle = Duration::from_secs(3600);
    for (name, store) in &stores(l).await {
        let (_a, _b) = (session(&store, 1, T0).await, session(&store, 2, T0).await);
        // The Redis tick writes heartbeats 512 to a command: 1,100 is two full ones and a rest.
        let mut waiters = Vec::new();
        for id in 0..1100 {
            waiters.push(ticket(&store, 10 + id, T0).await);
        }
        // One heartbeat each, at 29 s, one second before waiter_ttl: every one of them must
        // reach the store in that one tick, or its waiter is away from 30 s on.
        let mut away = 0;
        for second in 1..=45u64 {
            let now = T0 + second * 1000;
            if second == 29 {
                for w in &waiters {
                    store.heartbeat(*w, now);
                }
            }
            away += store.tick(now).await.expect("tick").away;
        }
        assert_eq!(away, 0, "{name}: every waiter was heard, the last of them included");
        let last = place(&store, waiters[1099], T0 + 45_500).await;
        assert_eq!((last.ahead, last.away_ahead), (1099, 0), "{name}");
    }
}

#[tokio::test]
async fn a_heartbeat_of_a_refused_poll_keeps_a_waiter_present_but_never_brings_back_an_away_one() {
    let mut l = limits();
    l.session_idle = Duration::from_secs(3600);
    for (name, store) in &stores(l).await {
        let (_a, _b) = (session(&store, 1, T0).await, session(&store, 2, T0).await);
        let (heard, silent) = (ticket(&store, 3, T0).await, ticket(&store, 4, T0).await);
        let stranger = TicketRef { generation: heard.generation ^ 1, number: silent.number };
        // `heard`'s polls are refused for 50 s (waiter_ttl is 30 s), but each is a heartbeat;
        // `silent` sends nothing but a heartbeat of another generation with its number.
        let mut away = 0;
        for second in 1..=50u64 {
            let now = T0 + second * 1000;
            store.heartbeat(heard, now);
            store.heartbeat(stranger, now);
            away += store.tick(now).await.expect("tick").away;
        }
        assert_eq!(away, 1, "{name}: only `silent` is away");
        assert_eq!(store.figures(T0 + 50_000).await.expect("figures").held, 1, "{name}");
        // Once away, a heartbeat alone does not bring it back (a poll has to get through),
        // and `heard`, no longer heard, is away after waiter_ttl.
        let mut after = 0;
        for second in 51..=90u64 {
            let now = T0 + second * 1000;
            store.heartbeat(silent, now);
            after += store.tick(now).await.expect("tick").away;
        }
        assert_eq!(after, 1, "{name}");
        assert_eq!(store.figures(T0 + 90_000).await.expect("figures").held, 2, "{name}: both held");
        let back = place(&store, silent, T0 + 90_500).await;
        assert_eq!((back.ahead, back.away_ahead), (1, 1), "{name}: its place was kept, behind `heard`'s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_lets_everyone_in_past_every_limit_and_a_queueing_mode_after_it_starts_with_an_empty_line() {
    let mut l = limits();
    l.max_active = 1;
    l.mode = RoomMode::QueueAll;
    l.session_idle = Duration::from_secs(3600);
    for (name, store) in &stores(l.clone()).await {
        let line = futures_collect(&store, 0..3, T0).await;
        let seen = store.limits().await.expect("limits");
        let glass = usher::store::BreakGlass { until_ms: T0 + 900_000, then: RoomMode::QueueAll };
        let off = RoomLimits { mode: RoomMode::Off, break_glass: Some(glass), ..seen.clone() };
        let stored = store.update_limits(&off, &off.changed_from(&seen)).await.expect("off");
        assert_eq!((stored.mode, stored.break_glass), (RoomMode::Off, Some(glass)), "{name}: kept whole");

        // Newcomers go in at once, well past max_active, and are counted.
        let now = T0 + 1000;
        let inside = [session(&store, 10, now).await, session(&store, 11, now).await];
        assert_ne!(inside[0], inside[1], "{name}");
        // Those already in line are let in at the next tick, in their order.
        let report = store.tick(now + 200).await.expect("tick");
        assert_eq!(report.granted, 3, "{name}: the whole line is let in");
        for t in &line {
            assert!(
                matches!(store.poll(*t, now + 300).await.expect("poll"), PollOutcome::Admitted { .. }),
                "{name}: a waiter from before is let in"
            );
        }
        let figures = store.figures(now + 300).await.expect("figures");
        assert_eq!((figures.waiting, figures.active), (0, 5), "{name}: everyone inside is counted");

        // Back to queueing: nobody inside is dropped, and the line starts empty.
        let back = RoomLimits { mode: RoomMode::QueueAll, break_glass: None, ..stored.clone() };
        store.update_limits(&back, &back.changed_from(&stored)).await.expect("back");
        let newcomer = ticket(&store, 20, now + 400).await;
        assert_eq!(ahead(&store, newcomer, now + 400).await, 0, "{name}: first in a new, empty line");
        store.tick(now + 600).await.expect("tick");
        assert_eq!(store.figures(now + 600).await.expect("figures").active, 5, "{name}: all five sessions stand");
        assert!(
            matches!(store.poll(newcomer, now + 700).await.expect("poll"), PollOutcome::Waiting(_)),
            "{name}: max_active binds again"
        );
    }
}
