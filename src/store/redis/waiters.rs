//! This node's view of the line, so that most status polls make no Redis call (DESIGN §8: a
//! status poll is answered from what the node learned at its last tick; heartbeats ride in
//! the tick's one call).
//!
//! A waiter's first poll on this node asks Redis (`lua/poll.lua`), which tells its slot, the
//! number ahead of it, and how many had then left the line by a grant. From then on, while
//! the admitter's cursor (as of this node's last tick) is short of its slot, every grant takes
//! someone ahead of it, so the number ahead is the one Redis gave less the grants since. That
//! is never less than the truth (someone ahead who is abandoned is counted out only when
//! Redis is asked again), so it never grows, and it is exact at a tick's granularity as long
//! as nobody ahead gives up. Its heartbeat is noted here and written by the node's next tick.
//!
//! Redis is asked again when the turn may have come (the cursor reached the slot: a claim),
//! when this node has not heard the waiter within its deadline (it may be away in Redis),
//! after [`REFRESH_POLLS`] of its polls, at least every [`REFRESH_MS`] (to count out those
//! ahead who gave up), and whenever the line is not as it
//! was (another generation, a restore window, the pre-queue drawn, this node's view stale).

use super::super::{Pace, Place, TicketRef};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, RwLock};

/// A waiter's place is asked of Redis again after this many of its poll intervals: a
/// thirtieth of the wait each, so within two thirds of its remaining wait, those ahead who
/// gave up are counted out. Each refresh is one Redis call, so this is what a million
/// waiters far back cost Redis: one call per this many polls.
pub const REFRESH_POLLS: u64 = 20;

/// ... and never less often than this (near the front, where intervals are short, and for
/// forgetting waiters this node no longer hears).
pub const REFRESH_MS: u64 = 120_000;

/// Most heartbeats one tick carries; beyond them a poll asks Redis itself.
pub const HEARTBEATS_PER_TICK: usize = 16_384;

/// The line as of this node's last tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineView {
    pub generation: u64,
    /// The slot the admitter has reached (none yet: nobody was granted from the line).
    pub cursor: Option<f64>,
    /// Waiters that ever left the line by a grant, in this generation.
    pub granted: u64,
    /// The first ticket of a pre-queue not drawn yet, and once the event opened its end.
    pub prequeue_from: Option<u64>,
    pub prequeue_end: Option<u64>,
    /// A restore window is open: places are being settled.
    pub restoring: bool,
    /// When this node learned it (its own clock).
    pub at_ms: u64,
}

/// Waiters this close to the front (present ahead, as estimated) always ask Redis: their turn
/// may come between two ticks, and they must hear of it at once, before anyone behind them.
/// The margin adds four ticks' worth of grants at the recent pace.
const NEAR_FRONT: u64 = 20;
const MARGIN_TICKS: u64 = 4;

/// What Redis told about one waiter, and what this node has told it since.
#[derive(Debug, Clone, Copy)]
struct Known {
    generation: u64,
    slot: f64,
    joined_ms: u64,
    ahead: u64,
    away_ahead: u64,
    /// [`LineView::granted`] when Redis answered.
    granted: u64,
    prequeue: bool,
    /// When Redis was last asked, and when this node last heard the waiter (its clock).
    asked_ms: u64,
    heard_ms: u64,
    /// How long after `heard_ms` it stays present (its deadline, as Redis keeps it).
    allowance_ms: u64,
}

/// A place Redis gave, to be remembered (see [`Waiters::learn`]).
#[derive(Debug, Clone, Copy)]
pub struct Learned {
    pub place: Place,
    pub slot: f64,
    pub granted: u64,
}

#[derive(Default)]
pub struct Waiters {
    view: RwLock<Option<LineView>>,
    /// The generation of the last view, and the most grants seen between two views lately
    /// (decaying): how far the front may move before this node hears of it.
    generation: AtomicU64,
    grants_per_tick: AtomicU64,
    last_granted: AtomicU64,
    known: DashMap<u64, Known>,
    /// Heartbeats for the next tick: ticket number -> credit (ms beyond `waiter_ttl`).
    heard: Mutex<HashMap<u64, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Waiters {
    /// The line as the last tick told it. A new generation forgets every waiter.
    pub fn set_view(&self, view: LineView) {
        let mut held = self.view.write().unwrap_or_else(|p| p.into_inner());
        let old = self.generation.swap(view.generation, Relaxed);
        if old != view.generation {
            self.known.clear();
            lock(&self.heard).clear();
            self.grants_per_tick.store(0, Relaxed);
        } else {
            let delta = view.granted.saturating_sub(self.last_granted.load(Relaxed));
            let recent = self.grants_per_tick.load(Relaxed);
            self.grants_per_tick.store(delta.max(recent - recent / 8), Relaxed);
        }
        self.last_granted.store(view.granted, Relaxed);
        *held = Some(view);
    }

    /// The last tick failed: no answers from the view until a tick succeeds again.
    pub fn lost_view(&self) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Answers a poll of `ticket` from this node's view, or `None`: ask Redis. `stale_ms` is
    /// how old the view may be (a few ticks; older means this node cannot reach Redis).
    pub fn answer(
        &self,
        ticket: TicketRef,
        joined_ms: Option<u64>,
        pace: Pace,
        waiter_ttl_ms: u64,
        stale_ms: u64,
        now_ms: u64,
    ) -> Option<Place> {
        let view = (*self.view.read().unwrap_or_else(|p| p.into_inner()))?;
        if view.restoring || now_ms.saturating_sub(view.at_ms) > stale_ms || ticket.generation != view.generation {
            return None;
        }
        let mut known = self.known.get_mut(&ticket.number)?;
        let k = *known;
        let still_prequeue = view.prequeue_from.is_some_and(|from| ticket.number >= from)
            && view.prequeue_end.is_none_or(|end| ticket.number < end);
        let turn_may_have_come = view.cursor.is_some_and(|cursor| cursor >= k.slot);
        let heard_in_time = now_ms < k.heard_ms.saturating_add(k.allowance_ms).saturating_sub(stale_ms);
        if k.generation != view.generation
            || joined_ms.is_some_and(|j| j != k.joined_ms)
            || k.prequeue != still_prequeue
            || turn_may_have_come
            || !heard_in_time
        {
            return None;
        }
        let left = view.granted.saturating_sub(k.granted);
        let ahead = k.ahead.saturating_sub(left);
        let away_ahead = k.away_ahead.min(ahead);
        let present = ahead - away_ahead;
        if present < NEAR_FRONT + MARGIN_TICKS * self.grants_per_tick.load(Relaxed) {
            return None;
        }
        let poll_secs = pace.interval_secs(present, k.prequeue);
        if now_ms.saturating_sub(k.asked_ms) >= (poll_secs * 1000 * REFRESH_POLLS).max(REFRESH_MS) {
            return None;
        }
        let credit = pace.credit_ms(present, k.prequeue, std::time::Duration::from_millis(waiter_ttl_ms));
        {
            let mut heard = lock(&self.heard);
            if heard.len() >= HEARTBEATS_PER_TICK && !heard.contains_key(&ticket.number) {
                return None;
            }
            heard.insert(ticket.number, credit);
        }
        known.heard_ms = now_ms;
        known.allowance_ms = waiter_ttl_ms + credit;
        Some(Place {
            ahead,
            away_ahead,
            joined_ms: k.joined_ms,
            prequeue: k.prequeue,
            restoring: false,
            poll_secs,
            granted: Some(view.granted),
        })
    }

    /// Remembers what Redis answered a poll of `ticket` at `now_ms` (this node's clock).
    pub fn learn(&self, ticket: TicketRef, learned: Learned, allowance_ms: u64, now_ms: u64) {
        if learned.place.restoring {
            self.known.remove(&ticket.number);
            return;
        }
        self.known.insert(
            ticket.number,
            Known {
                generation: ticket.generation,
                slot: learned.slot,
                joined_ms: learned.place.joined_ms,
                ahead: learned.place.ahead,
                away_ahead: learned.place.away_ahead,
                granted: learned.granted,
                prequeue: learned.place.prequeue,
                asked_ms: now_ms,
                heard_ms: now_ms,
                allowance_ms,
            },
        );
    }

    /// A ticket that is no longer waiting (claimed, gone).
    pub fn forget(&self, number: u64) {
        self.known.remove(&number);
    }

    /// A heartbeat without an answer (a poll refused by the poll budget): written by the
    /// next tick, as it was heard now. False if this tick has no room for it.
    pub fn heard(&self, number: u64) -> bool {
        let mut heard = lock(&self.heard);
        if heard.len() >= HEARTBEATS_PER_TICK {
            return false;
        }
        heard.entry(number).or_insert(0);
        true
    }

    /// The heartbeats for this tick, taken.
    pub fn take_heard(&self) -> HashMap<u64, u64> {
        std::mem::take(&mut *lock(&self.heard))
    }

    /// Heartbeats of a tick that did not reach Redis, for the next one.
    pub fn restore_heard(&self, heard: HashMap<u64, u64>) {
        let mut pending = lock(&self.heard);
        for (number, credit) in heard {
            if pending.len() >= HEARTBEATS_PER_TICK {
                break;
            }
            pending.entry(number).or_insert(credit);
        }
    }

    /// Drops waiters this node has not heard for a while: they poll elsewhere, or left.
    pub fn sweep(&self, now_ms: u64) {
        self.known.retain(|_, k| now_ms.saturating_sub(k.heard_ms) < REFRESH_MS);
    }

    /// How many waiters this node answers for now.
    #[cfg(test)]
    fn known(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 30_000;

    fn view(cursor: Option<f64>, granted: u64, at_ms: u64) -> LineView {
        LineView { generation: 7, cursor, granted, prequeue_from: None, prequeue_end: None, restoring: false, at_ms }
    }

    fn learned(ahead: u64, slot: f64, granted: u64) -> Learned {
        let place = Place {
            ahead,
            away_ahead: 2,
            joined_ms: 5,
            prequeue: false,
            restoring: false,
            poll_secs: 2,
            granted: Some(granted),
        };
        Learned { place, slot, granted }
    }

    const T: TicketRef = TicketRef { generation: 7, number: 40 };

    #[test]
    fn the_number_ahead_falls_with_every_grant_and_the_turn_goes_back_to_redis() {
        let w = Waiters::default();
        w.set_view(view(Some(10.0), 100, 0));
        assert_eq!(w.answer(T, None, Pace::FIXED, TTL, 1000, 10), None, "unknown: ask Redis");
        w.learn(T, learned(60, 40.0, 100), TTL, 10);
        assert_eq!(w.answer(T, None, Pace::FIXED, TTL, 1000, 20).map(|p| p.ahead), Some(60));
        w.set_view(view(Some(20.0), 102, 500));
        let place = w.answer(T, Some(5), Pace::FIXED, TTL, 1000, 600).expect("local");
        assert_eq!((place.ahead, place.away_ahead), (58, 2));
        assert_eq!(w.take_heard().get(&40), Some(&0), "its heartbeat rides the next tick");
        assert_eq!(w.answer(T, Some(6), Pace::FIXED, TTL, 1000, 700), None, "another join time: not its place");
        // 38 granted in one tick: the front moves fast, and 22 ahead is near it now.
        w.set_view(view(Some(30.0), 140, 700));
        assert_eq!(w.answer(T, None, Pace::FIXED, TTL, 1000, 750), None, "near the front at this pace: Redis");
        w.set_view(view(Some(40.0), 140, 800));
        assert_eq!(w.answer(T, None, Pace::FIXED, TTL, 1000, 900), None, "the cursor reached it: a claim");
    }

    #[test]
    fn a_waiter_unheard_past_its_deadline_or_a_stale_view_or_a_new_generation_goes_to_redis() {
        let w = Waiters::default();
        w.set_view(view(None, 0, 0));
        w.learn(T, learned(30, 40.0, 0), TTL, 0);
        w.set_view(view(None, 0, TTL - 2500));
        assert!(w.answer(T, None, Pace::FIXED, TTL, 1000, TTL - 2000).is_some());
        w.set_view(view(None, 0, 2 * TTL));
        assert_eq!(w.answer(T, None, Pace::FIXED, TTL, 1000, 2 * TTL), None, "maybe away in Redis");
        w.learn(T, learned(30, 40.0, 0), TTL, 2 * TTL);
        assert_eq!(w.answer(T, None, Pace::FIXED, TTL, 1000, 2 * TTL + 1500), None, "the view is stale");
        w.set_view(view(None, 0, 2 * TTL + 1600));
        assert!(w.answer(T, None, Pace::FIXED, TTL, 1000, 2 * TTL + 1700).is_some());
        w.lost_view();
        assert_eq!(w.answer(T, None, Pace::FIXED, TTL, 1000, 2 * TTL + 1800), None, "Redis is unreachable");
        w.set_view(LineView { generation: 8, ..view(None, 0, 2 * TTL + 1500) });
        assert_eq!(w.known(), 0, "a new generation forgets every place");
    }

    #[test]
    fn a_waiter_is_asked_again_after_twenty_of_its_intervals_and_at_least_every_two_minutes() {
        // One admission a minute: 998 present ahead is a wait of hours, polled once a minute.
        let slow = Pace { ms_per_admission: 60_000, prequeue_secs: 30 };
        let w = Waiters::default();
        w.set_view(view(None, 0, 0));
        w.learn(T, learned(1000, 2000.0, 0), 200_000, 0);
        for poll in 1..REFRESH_POLLS {
            let now = poll * 60_000;
            w.set_view(view(None, 0, now - 100));
            let place = w.answer(T, None, slow, TTL, 1000, now).unwrap_or_else(|| panic!("poll {poll} asked Redis"));
            assert_eq!(place.poll_secs, 60);
        }
        let now = REFRESH_POLLS * 60_000;
        w.set_view(view(None, 0, now - 100));
        assert_eq!(w.answer(T, None, slow, TTL, 1000, now), None, "twenty minutes on: ask Redis again");
        // At 2 s polls the floor holds: two minutes, not forty seconds.
        let fast = Pace { ms_per_admission: 60, prequeue_secs: 30 };
        w.learn(T, learned(1000, 2000.0, 0), 200_000, now);
        w.set_view(view(None, 0, now + REFRESH_MS - 1100));
        assert!(w.answer(T, None, fast, TTL, 1000, now + REFRESH_MS - 1000).is_some());
        w.set_view(view(None, 0, now + REFRESH_MS - 100));
        assert_eq!(w.answer(T, None, fast, TTL, 1000, now + REFRESH_MS), None);
    }
}
