//! The worker's lane for clients usher has just refused: a request whose client was refused
//! (a `429` of its limits, or a `503` because the upstream's places were taken) waits its turn
//! here before it is handled.
//!
//! A worker serves its ready connections in turn. Under a flood of requests that are refused
//! (a /48 farming tickets on 32 keep-alive connections), each turn of the worker ran a
//! refused request of every flooding connection before it came back to a citizen's: the
//! citizen's answer waited behind 32 refusals per step of its request (the pinned attack
//! run: p50 1.9 ms, p99 3.9 ms, against 0.25 and 0.6 ms without the flood). Here refused
//! requests take one turn per round between them: the holder yields once, the others wait
//! parked (costing nothing), and whoever was ready meanwhile goes first. A lone client that
//! was refused once waits for nobody; when no one else is ready the flood still gets the
//! whole core. The turn is held across the yield only, never while a request is handled, so
//! a slow store or upstream cannot stall the lane.
//!
//! Who takes the lane:
//! - a connection whose last answer was a refusal (its own flag, [`crate::connection::Activity`]);
//! - a new connection of a client refused in the last few seconds ([`RecentlyRefused`]; an
//!   HTTP/2 control-frame flood counts as a refusal too), when the refused worker cannot take
//!   it. Such connections go to the refused worker first ([`crate::listener::serve_sidelined`]),
//!   which serves them at idle CPU priority: a flood that opens a fresh connection for every
//!   try (2,500 refused WebSocket upgrades a second) would otherwise be accepted, answered and
//!   closed on the citizens' worker, in bursts. Only clients keyed by their own connection are
//!   remembered: a trusted proxy carries many clients, and its connections keep the
//!   per-connection flag.
//!
//! Waiting a turn is never a refusal: a citizen who shares a remembered slot (a 32-bit
//! fingerprint collision) or who was refused once is still served, after its turn.

use crate::identity::ClientKey;
use prometheus::IntCounter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::Semaphore;

/// Marks a response usher gave as a refusal of the request (its client over a limit, or the
/// upstream's places all taken), rather than an answer: the client's next request takes the
/// lane. Set where the response is made; a `503` of the waiting room's own is not one.
#[derive(Debug, Clone, Copy)]
pub struct Refused;

/// Why a turn is taken (the label of `usher_refused_lane_turns_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A request: the last answer on its connection was a refusal.
    Connection,
    /// A new connection, before it is served: its client was refused within the last
    /// [`REMEMBERED_SECS`], and the refused worker's queue was full.
    Client,
}

/// How long a refused client is remembered: longer than a flood's pause between tries (the
/// WebSocket flood waits 0.6 s, `Retry-After` is at least 1 s), short enough that a citizen
/// refused once is soon forgotten. The memory is in whole seconds: 2 to 3 s.
pub const REMEMBERED_SECS: u64 = 2;

/// Slots of the memory: 16,384 × 8 bytes = 128 KiB, whatever the flood.
const SLOTS: usize = 1 << 14;
/// Slots a client may take: one bucket of 8, a cache line. With one slot per client, 2,000
/// flooding clients collided on 11 % of them and, overwriting each other, were forgotten
/// (6-9 % of a WebSocket flood's repeated tries missed the lane); in buckets of 8 that needs
/// 9 of them in one bucket of 2,048.
const WAYS: usize = 8;

/// Clients refused lately, in a fixed table: each slot holds one client's fingerprint and
/// until when it is remembered. A refusal takes its client's slot in its bucket, else one
/// whose memory has run out, else the one nearest its end (a flood larger than the table is
/// partly forgotten, and takes the lane less, never more); a lookup matches only its own
/// fingerprint, so a citizen is not taken for a flooder unless 32 bits of two keyed hashes
/// agree. Slots are read and written whole, without a lock: two workers remembering into
/// one bucket at once may lose one of the two, which costs that client one turn.
pub struct RecentlyRefused {
    slots: Box<[AtomicU64]>,
}

impl Default for RecentlyRefused {
    fn default() -> Self {
        Self { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

/// The low 32 bits of a slot: until when (usher's clock, whole seconds, wrapping).
const UNTIL: u64 = u32::MAX as u64;

impl RecentlyRefused {
    /// The bucket of `key` and its fingerprint: two independent 32-bit parts of the keyed hash.
    fn place(&self, key: &ClientKey) -> (&[AtomicU64], u64) {
        let part = |i: usize| u32::from_le_bytes([key.0[i], key.0[i + 1], key.0[i + 2], key.0[i + 3]]);
        let bucket = part(8) as usize % (SLOTS / WAYS) * WAYS;
        (&self.slots[bucket..bucket + WAYS], u64::from(part(12)))
    }

    /// Seconds of memory a slot has left at `now_secs` (0 when it has run out, or is empty).
    fn left(held: u64, now_secs: u64) -> u64 {
        // The clock's seconds wrap in 32 bits every 136 years; compared as a distance.
        let left = (held & UNTIL).wrapping_sub(now_secs & UNTIL) & UNTIL;
        if held != 0 && left <= REMEMBERED_SECS { left + 1 } else { 0 }
    }

    /// Remembers `key` as refused at `now_secs` (usher's clock, [`crate::clock`]).
    pub fn remember(&self, key: &ClientKey, now_secs: u64) {
        let (bucket, fingerprint) = self.place(key);
        let held = |slot: &AtomicU64| slot.load(Relaxed);
        let slot = bucket
            .iter()
            .find(|slot| held(slot) >> 32 == fingerprint)
            .or_else(|| bucket.iter().min_by_key(|slot| Self::left(held(slot), now_secs)))
            .unwrap_or(&bucket[0]);
        slot.store(fingerprint << 32 | ((now_secs + REMEMBERED_SECS) & UNTIL), Relaxed);
    }

    /// Whether `key` was refused within the last [`REMEMBERED_SECS`] of `now_secs`.
    pub fn remembers(&self, key: &ClientKey, now_secs: u64) -> bool {
        let (bucket, fingerprint) = self.place(key);
        bucket.iter().any(|slot| {
            let held = slot.load(Relaxed);
            held >> 32 == fingerprint && Self::left(held, now_secs) > 0
        })
    }
}

/// One worker's lane (a worker is one thread, so one turn per worker).
pub struct RefusedLane {
    turn: Semaphore,
    /// Clients refused lately, by any worker: a flooder's next connection may land on another.
    pub recent: Arc<RecentlyRefused>,
    /// Requests that took the lane because of their connection's last answer, and because
    /// of their client's.
    turns_connection: IntCounter,
    turns_client: IntCounter,
    /// Requests that found another in the lane and waited for it.
    waited: IntCounter,
}

impl RefusedLane {
    /// `recent` is shared by the workers; `turns` are the counters for [`Why::Connection`] and
    /// [`Why::Client`].
    pub fn new(recent: Arc<RecentlyRefused>, turns: [IntCounter; 2], waited: IntCounter) -> Self {
        let [turns_connection, turns_client] = turns;
        Self { turn: Semaphore::new(1), recent, turns_connection, turns_client, waited }
    }

    /// Returns once it is this request's turn: after every task that was ready before it, and
    /// after the requests already waiting here.
    pub async fn wait_turn(&self, why: Why) {
        match why {
            Why::Connection => self.turns_connection.inc(),
            Why::Client => self.turns_client.inc(),
        }
        let permit = match self.turn.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.waited.inc();
                match self.turn.acquire().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed; should it be, there is no lane to keep.
                    Err(_) => return,
                }
            }
        };
        tokio::task::yield_now().await;
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// On one thread, as a worker runs: refused requests take one turn each, and a task that
    /// became ready while they wait runs before the second of them.
    #[tokio::test(flavor = "current_thread")]
    async fn refused_requests_take_turns_and_others_go_between() {
        let counter = |name: &str| IntCounter::new(name, name).expect("counter");
        let recent = Arc::new(RecentlyRefused::default());
        let lane = Rc::new(RefusedLane::new(recent, [counter("c"), counter("k")], counter("w")));
        let order = Rc::new(RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut tasks = Vec::new();
                for name in ["refused-1", "refused-2", "refused-3"] {
                    let (lane, order) = (lane.clone(), order.clone());
                    tasks.push(tokio::task::spawn_local(async move {
                        lane.wait_turn(Why::Connection).await;
                        order.borrow_mut().push(name);
                    }));
                }
                let citizen = {
                    let order = order.clone();
                    tokio::task::spawn_local(async move { order.borrow_mut().push("citizen") })
                };
                for task in tasks {
                    task.await.expect("refused task");
                }
                citizen.await.expect("citizen");
            })
            .await;
        let order = order.borrow().clone();
        assert_eq!(order.iter().position(|n| *n == "citizen"), Some(0), "{order:?}");
        assert_eq!(order[1..], ["refused-1", "refused-2", "refused-3"]);
        assert_eq!(lane.waited.get(), 2, "the second and third waited for the first");
    }

    fn key(byte: u8) -> ClientKey {
        ClientKey([byte; 16])
    }

    #[test]
    fn a_refused_client_is_remembered_for_a_few_seconds_and_no_one_else_is() {
        let recent = RecentlyRefused::default();
        let (flooder, citizen) = (key(7), key(9));
        assert!(!recent.remembers(&flooder, 100), "nobody is remembered before a refusal");
        recent.remember(&flooder, 100);
        assert!(recent.remembers(&flooder, 100));
        assert!(recent.remembers(&flooder, 100 + REMEMBERED_SECS));
        assert!(!recent.remembers(&flooder, 101 + REMEMBERED_SECS), "forgotten after the memory");
        assert!(!recent.remembers(&citizen, 100), "another client is not taken for the flooder");
        assert!(!recent.remembers(&flooder, 99 - REMEMBERED_SECS), "a time before the refusal");
    }

    /// A key in bucket `bucket` with fingerprint `fingerprint`.
    fn key_in(bucket: u32, fingerprint: u32) -> ClientKey {
        let mut key = [0u8; 16];
        key[8..12].copy_from_slice(&bucket.to_le_bytes());
        key[12..16].copy_from_slice(&fingerprint.to_le_bytes());
        ClientKey(key)
    }

    #[test]
    fn clients_sharing_a_bucket_are_all_remembered_and_told_apart_by_fingerprint() {
        let recent = RecentlyRefused::default();
        for f in 1..=8 {
            recent.remember(&key_in(5, f), 10);
        }
        assert!((1..=8).all(|f| recent.remembers(&key_in(5, f), 10)), "eight clients fill one bucket");
        assert!(!recent.remembers(&key_in(5, 9), 10), "a ninth, never refused, is not taken for them");
        // Remembering one again keeps its slot: the others stay.
        recent.remember(&key_in(5, 3), 11);
        assert!((1..=8).all(|f| recent.remembers(&key_in(5, f), 11)));
        // A ninth refused client takes the slot nearest its end (the first eight's but 3's).
        recent.remember(&key_in(5, 9), 11);
        assert!(recent.remembers(&key_in(5, 9), 11));
        assert!(recent.remembers(&key_in(5, 3), 11), "the freshest memory is kept");
        assert_eq!((1..=8).filter(|f| recent.remembers(&key_in(5, *f), 11)).count(), 7, "one older one gave way");
    }

    #[test]
    fn a_slot_whose_memory_ran_out_is_taken_first() {
        let recent = RecentlyRefused::default();
        recent.remember(&key_in(6, 8), 90);
        for f in 1..=7 {
            recent.remember(&key_in(6, f), 91);
        }
        assert!((1..=8).all(|f| recent.remembers(&key_in(6, f), 92)), "the bucket is full");
        recent.remember(&key_in(6, 9), 93);
        assert!(recent.remembers(&key_in(6, 9), 93));
        assert!((1..=7).all(|f| recent.remembers(&key_in(6, f), 93)), "the run-out slot was taken, no live one");
        assert!(!recent.remembers(&key_in(6, 8), 93));
    }

    #[test]
    fn the_memory_holds_across_the_wrap_of_its_seconds() {
        let recent = RecentlyRefused::default();
        let near_wrap = u64::from(u32::MAX);
        recent.remember(&key(3), near_wrap);
        assert!(recent.remembers(&key(3), near_wrap + 1));
        assert!(recent.remembers(&key(3), near_wrap + REMEMBERED_SECS));
        assert!(!recent.remembers(&key(3), near_wrap + REMEMBERED_SECS + 1));
    }
}
