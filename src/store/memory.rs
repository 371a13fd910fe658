//! The in-process store: one room's line, grants and sessions in memory, nothing on disk.
//!
//! Shape (after mini-redis's `db.rs`): every expiring thing is also entered in a heap or FIFO
//! of deadlines, and the admitter pops only what is due, so a tick costs what it expires,
//! skips and admits, never the length of the line. A waiter has one heartbeat deadline at a
//! time (its `due`); a poll only writes the waiter's last-seen time, and the deadline, when
//! popped, checks it and pushes the next one, so a poll costs no reordering. A FIFO serves
//! only where each deadline pushed is later than all before it (grants: now + `claim_window`);
//! session deadlines move when a session is seen, so they are in a heap.
//!
//! A waiter who misses its polls for `waiter_ttl` is *away* (DESIGN §3): the admitter skips
//! it, and its place is held until `hold` after its last poll. One that polls again within
//! `hold` is present again; if the admitter's cursor has passed its slot, it goes into
//! `returns`, which the admitter serves before the cursor, in slot order, within the same
//! budget. So a return costs one heap push, and a tick still costs only what it grants and
//! skips.
//!
//! Positions are exact: a Fenwick tree over line slots counts the waiters in line (present
//! or away) ahead of a slot in O(log n), a second one those away. Tickets are slots, except
//! inside a pre-queue, whose slots are its tickets in the order of its seed, drawn at the
//! opening (see `super::draw`).
//!
//! The room's state is one *generation* (a random id of this process's room). A waiter whose
//! ticket is from an earlier generation (usher restarted) is *restored*: it takes a slot at
//! the tail but is served from `restored`, a heap by original join time (to the second, then
//! by its old ticket number, which kept the exact order within its generation), before anyone
//! else, and counted among the restored by join time (a third Fenwick tree, over join times). The
//! first restore opens a short window in which nobody is granted, so those coming back over
//! one poll interval are ordered among themselves by when they joined, not by who polled
//! first after the restart (DESIGN §8, "Generations").
//!
//! Deadlines use the caller's `now`, which comes from usher's monotonic clock
//! ([`crate::clock`]): a step of the system clock neither abandons the line nor stops it.
//! A gap between ticks longer than `gap` (the process was stopped or starved) gives every
//! waiter one `waiter_ttl` of grace from the tick after it: nobody could poll meanwhile.

use super::draw::{self, Draw, Drawn, Seeds, Step};
use super::{
    Admitted, JoinOutcome, Pace, Place, PollOutcome, Returning, RoomFigures, RoomLimits, Session, TickReport, TicketRef,
};
use crate::config::RoomMode;
use crate::identity::ClientKey;
use dashmap::DashMap;
use ring::rand::{SecureRandom, SystemRandom};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

/// Waiter times are kept in tenths of a second since the room's origin, in 32 bits
/// (13 years), to keep a waiter small.
type Ds = u32;

/// How far before the room's start its origin lies: restored waiters joined before it, up to
/// the ticket cookie's lifetime ago.
const RESTORE_HORIZON_MS: u64 = 24 * 3600 * 1000;

/// The longest restore window: the page asks for its status at least every 10 s, so within
/// this everyone still watching has come back.
const RESTORE_WINDOW_MAX_MS: u64 = 15_000;

/// The order among restored waiters: when they joined (seconds), then their old ticket number.
type RestoreKey = (u64, u64);

/// Most away or gone waiters one tick looks at while granting; the rest wait for the next
/// tick, so a tick after an outage never walks the whole line under the lock.
const SKIP_BOUND: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In line and polling.
    Waiting,
    /// In line, not polling: skipped, the place held until `seen + hold`.
    Away,
    Granted,
    /// Claimed, abandoned or expired: only kept until it reaches the front.
    Done,
}

/// One place in line: 28 bytes.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    client: ClientKey,
    joined: Ds,
    /// Its last poll, moved later by the credit its poll interval earned (see [`Pace`]): a
    /// waiter is away once `seen + waiter_ttl` has passed.
    seen: Ds,
    /// The deadline of this waiter's one live entry in the heartbeat heap; other entries
    /// for it are stale and skipped.
    due: Ds,
    state: State,
    /// Counted in the Fenwick trees (the positions of those behind). A waiter whose turn
    /// came and went unclaimed is held but no longer counted: counting it again would grow
    /// the number ahead of everyone behind it.
    counted: bool,
    /// Put back from an earlier generation and not granted yet: counted among the restored
    /// (by join time), served from the restored heap.
    restored: bool,
}

impl Waiter {
    /// In line and counted in positions.
    fn in_line(&self) -> bool {
        self.counted && matches!(self.state, State::Waiting | State::Away)
    }
}

/// Finished places below the line's front after which the Fenwick trees are renumbered
/// (at least as many as are in line): see [`MemoryRoom::renumber_if_mostly_gone`]. Small
/// under test, so that a short simulated run renumbers many times.
const RENUMBER_AFTER: u64 = if cfg!(test) { 512 } else { 65_536 };

/// Counts per slot, prefix sums in O(log n); grows by doubling.
#[derive(Debug, Default)]
struct Fenwick {
    tree: Vec<u32>,
}

impl Fenwick {
    fn add(&mut self, index: usize, delta: i32) {
        if index >= self.tree.len() {
            self.grow(index + 1);
        }
        let mut i = index + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] = self.tree[i - 1].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Sum of slots `0..index`.
    fn prefix(&self, index: usize) -> u64 {
        let mut i = index.min(self.tree.len());
        let mut sum = 0u64;
        while i > 0 {
            sum += u64::from(self.tree[i - 1]);
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// Doubling a power-of-two tree keeps every old node; the new top node holds the old total.
    fn grow(&mut self, at_least: usize) {
        let mut len = self.tree.len().max(1024);
        while len < at_least {
            let total = self.prefix(self.tree.len());
            self.tree.resize(len, 0);
            len *= 2;
            self.tree.resize(len, 0);
            self.tree[len - 1] = u32::try_from(total).unwrap_or(u32::MAX);
        }
        if self.tree.len() < len {
            self.tree.resize(len, 0);
        }
    }
}

/// The outflow token bucket: `admit_per_minute`, up to two seconds' worth in reserve.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

impl Bucket {
    fn capacity(per_minute: u64) -> f64 {
        (per_minute as f64 / 30.0).max(1.0)
    }

    fn refill(&mut self, per_minute: u64, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.updated_ms) as f64;
        self.tokens = (self.tokens + elapsed * per_minute as f64 / 60_000.0).min(Self::capacity(per_minute));
        self.updated_ms = self.updated_ms.max(now_ms);
    }
}

/// Admissions per second over the last minute, for the measured outflow and the ETA.
#[derive(Debug)]
struct Meter {
    counts: [u32; 60],
    seconds: [u64; 60],
    /// Start of the current busy period (the first admission after a quiet minute).
    since_ms: u64,
    last_ms: u64,
}

impl Default for Meter {
    fn default() -> Self {
        Self { counts: [0; 60], seconds: [0; 60], since_ms: 0, last_ms: 0 }
    }
}

impl Meter {
    fn record(&mut self, now_ms: u64, n: u64) {
        if n == 0 {
            return;
        }
        if now_ms.saturating_sub(self.last_ms) > 60_000 || self.since_ms == 0 {
            self.since_ms = now_ms;
        }
        self.last_ms = now_ms;
        let sec = now_ms / 1000;
        let i = (sec % 60) as usize;
        if self.seconds[i] != sec {
            self.seconds[i] = sec;
            self.counts[i] = 0;
        }
        self.counts[i] = self.counts[i].saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Admissions per minute, scaled up when the busy period is shorter than a minute.
    /// `None` until ten seconds of history exist: too little to be honest about.
    fn per_minute(&self, now_ms: u64) -> Option<u64> {
        let sec = now_ms / 1000;
        let count: u64 = (0..60)
            .filter(|&i| self.seconds[i] + 60 > sec && self.seconds[i] <= sec)
            .map(|i| u64::from(self.counts[i]))
            .sum();
        if self.since_ms == 0 || now_ms.saturating_sub(self.last_ms) > 60_000 {
            return Some(0).filter(|_| self.since_ms != 0);
        }
        let window = now_ms.saturating_sub(self.since_ms).min(60_000);
        (window >= 10_000).then(|| count * 60_000 / window)
    }
}

#[derive(Debug, Clone, Copy)]
struct ClientTickets {
    live: u32,
    newest: u64,
}

/// A range of pre-queue tickets and the slots they were drawn into.
#[derive(Debug)]
struct Shuffle {
    first: u64,
    /// Ticket offset -> slot offset.
    slots: Vec<u32>,
    /// Slot offset -> ticket offset.
    tickets: Vec<u32>,
}

/// Where the restore of an earlier generation's waiters stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestoreWindow {
    /// Nobody has come back from an earlier generation.
    NotYet,
    /// Collecting those coming back; nobody is granted until then.
    Open { until: Ds },
    /// Done: later returners are served first at once (their turn has come, as for anyone
    /// who comes back after the admitter passed their place).
    Closed,
}

/// Everything about the line, behind one lock held for microseconds.
#[derive(Debug)]
struct Line {
    limits: RoomLimits,
    /// The adaptive outflow's answers since the controller last took them (see
    /// [`super::TickInput`]).
    answers: Vec<u64>,
    next_ticket: u64,
    /// Slot of `waiters[0]`.
    base: u64,
    waiters: VecDeque<Waiter>,
    /// Slot of Fenwick index 0; tickets below it are gone.
    fen_base: u64,
    /// In-line waiters (present or away) per slot.
    waiting_at: Fenwick,
    /// Away waiters per slot.
    away_at: Fenwick,
    /// In line, away included.
    waiting: u64,
    /// Of `waiting`, away now.
    away: u64,
    /// Held after a turn not claimed: away, but in neither count above (see `counted`).
    uncounted_held: u64,
    pending: u64,
    /// Slots behind the cursor whose waiters came back: granted first, in slot order.
    returns: BinaryHeap<Reverse<u64>>,
    /// Returns since the last tick and how long each was away (ms), for the tick's report.
    returned: u64,
    away_ms: Vec<u64>,
    /// Returns and abandonments over the room's life, for the ETA's expected returns.
    returned_total: u64,
    abandoned_total: u64,
    /// Next slot the admitter looks at.
    cursor: u64,
    /// First ticket of the pre-queue being collected, until it is drawn.
    prequeue_from: Option<u64>,
    /// Its end, fixed once the event opened: later arrivals are never drawn in with it.
    prequeue_end: Option<u64>,
    shuffles: Vec<Shuffle>,
    /// The current or last pre-queue's draw: committed before its first ticket, drawn at the
    /// opening (see `draw.rs`).
    draw: Option<Draw>,
    /// The places of the last draw the admitter walked past, in its order.
    walk: Vec<Step>,
    /// (deadline, ticket - fen_base) of waiter heartbeats and holds, soonest first.
    heartbeats: BinaryHeap<Reverse<(Ds, u32)>>,
    /// (deadline, slot - fen_base) of grants waiting to be claimed.
    grants: VecDeque<(Ds, u32)>,
    clients: HashMap<ClientKey, ClientTickets>,
    bucket: Bucket,
    meter: Meter,
    /// Earlier generations' tickets restored here: old ticket -> ticket in this generation,
    /// so a replayed or concurrent old cookie gets the same place, never a second one.
    restored_tickets: HashMap<TicketRef, u64>,
    /// (order, slot) of restored waiters to serve first, earliest join first.
    restored: BinaryHeap<Reverse<(RestoreKey, u64)>>,
    /// The order of each restored waiter in line, by slot (to serve it first again when it
    /// comes back from being away).
    restored_keys: HashMap<u64, RestoreKey>,
    /// Restored waiters in line per join time (for their positions among themselves).
    restored_at: Fenwick,
    /// Restored waiters in line (present or away), and of those away now.
    restored_in_line: u64,
    restored_away: u64,
    window: RestoreWindow,
    /// When the last tick ran, and from when the current grace runs (see the module docs).
    last_tick_ms: Option<u64>,
    grace_from: Option<Ds>,
}

struct SessionEntry {
    created_ms: u64,
    expires_ms: u64,
    seen_ms: AtomicU64,
    pushed_ms: AtomicU64,
}

/// One room's state in memory.
pub struct MemoryRoom {
    origin_ms: u64,
    /// This room state's generation (random, never 0) and when it began.
    generation: u64,
    started_ms: u64,
    /// A gap between ticks longer than this starts a grace (see the module docs).
    gap_ms: u64,
    line: Mutex<Line>,
    sessions: DashMap<u128, SessionEntry>,
    /// (idle deadline, session), soonest first; see the module docs. A heap, not a FIFO: a
    /// session seen since its deadline was pushed gets a later one that is still earlier
    /// than those of sessions begun since, and must not wait behind them.
    session_deadlines: Mutex<BinaryHeap<Reverse<(u64, u128)>>>,
    active: AtomicU64,
    /// Mirrors `limits.session_idle` so a pass check takes no line lock.
    session_idle_ms: AtomicU64,
    random: SystemRandom,
    /// The draws' seeds.
    seeds: Seeds,
    /// Challenge salts answered, and until when (see [`Self::spend`]).
    spent: Mutex<HashMap<u128, u64>>,
}

/// The most challenge answers remembered at once: at 16 bytes and a deadline each, some
/// 40 MB, enough for 8,000 joins a second over a two-minute challenge lifetime.
const SPENT_MAX: usize = 1_000_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; carry on rather than take the room down.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryRoom {
    pub fn new(limits: RoomLimits, now_ms: u64) -> Self {
        let idle = millis(limits.session_idle);
        let bucket = Bucket { tokens: Bucket::capacity(limits.admit_per_minute), updated_ms: now_ms };
        let random = SystemRandom::new();
        let mut generation = [0u8; 8];
        // The OS random source only fails if it is gone; the clock still tells generations
        // of one machine apart.
        if random.fill(&mut generation).is_err() {
            generation = now_ms.to_be_bytes();
        }
        Self {
            origin_ms: now_ms.saturating_sub(RESTORE_HORIZON_MS),
            generation: u64::from_be_bytes(generation).max(1),
            started_ms: now_ms,
            gap_ms: 2000,
            line: Mutex::new(Line {
                limits,
                answers: Vec::new(),
                next_ticket: 0,
                base: 0,
                waiters: VecDeque::new(),
                fen_base: 0,
                waiting_at: Fenwick::default(),
                away_at: Fenwick::default(),
                waiting: 0,
                away: 0,
                uncounted_held: 0,
                pending: 0,
                returns: BinaryHeap::new(),
                returned: 0,
                away_ms: Vec::new(),
                returned_total: 0,
                abandoned_total: 0,
                cursor: 0,
                prequeue_from: None,
                prequeue_end: None,
                shuffles: Vec::new(),
                draw: None,
                walk: Vec::new(),
                heartbeats: BinaryHeap::new(),
                grants: VecDeque::new(),
                clients: HashMap::new(),
                bucket,
                meter: Meter::default(),
                restored_tickets: HashMap::new(),
                restored: BinaryHeap::new(),
                restored_keys: HashMap::new(),
                restored_at: Fenwick::default(),
                restored_in_line: 0,
                restored_away: 0,
                window: RestoreWindow::NotYet,
                last_tick_ms: None,
                grace_from: None,
            }),
            sessions: DashMap::new(),
            session_deadlines: Mutex::new(BinaryHeap::new()),
            active: AtomicU64::new(0),
            session_idle_ms: AtomicU64::new(idle),
            random,
            seeds: Seeds::new(),
            spent: Mutex::new(HashMap::new()),
        }
    }

    /// Spends a challenge's salt until `until_ms`: true the first time. Expired ones are
    /// forgotten when the set is full; should it still be full, the answer is refused (and
    /// the page asks again) rather than the set grown without bound.
    pub fn spend(&self, salt: u128, until_ms: u64, now_ms: u64) -> bool {
        let mut spent = lock(&self.spent);
        if spent.len() >= SPENT_MAX {
            spent.retain(|_, until| *until > now_ms);
            if spent.len() >= SPENT_MAX {
                tracing::warn!("the challenge replay set is full: an answer is refused");
                return false;
            }
        }
        // Spent and not yet expired: refused. (An expired one's token is refused before this.)
        let fresh = spent.get(&salt).is_none_or(|until| *until <= now_ms);
        if fresh {
            spent.insert(salt, until_ms);
        }
        fresh
    }

    /// Sets how long a pause between ticks may be before it counts as an outage: a few of
    /// the room's ticks.
    pub fn with_tick(mut self, tick: std::time::Duration) -> Self {
        self.gap_ms = millis(tick).saturating_mul(3).max(1000);
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Rounded up, so a waiter seen at any moment of a tenth counts as seen at its end.
    fn ds(&self, now_ms: u64) -> Ds {
        Ds::try_from(now_ms.saturating_sub(self.origin_ms).div_ceil(100)).unwrap_or(Ds::MAX)
    }

    fn ms(&self, ds: Ds) -> u64 {
        self.origin_ms + u64::from(ds) * 100
    }

    fn ds_len(d: std::time::Duration) -> Ds {
        Ds::try_from(d.as_millis().div_ceil(100)).unwrap_or(Ds::MAX)
    }

    pub fn join(&self, client: ClientKey, now_ms: u64) -> JoinOutcome {
        let mut line = lock(&self.line);
        let prequeue = line.limits.opens_at_ms.is_some_and(|opens| now_ms < opens);
        // The event has opened but no tick has drawn the pre-queue yet: close its range, so
        // this later arrival is not drawn in with those who came before the opening. (Moved
        // back into the future before the draw, it is open again.)
        if line.prequeue_from.is_some() {
            line.prequeue_end = if prequeue { None } else { line.prequeue_end.or(Some(line.next_ticket)) };
        }
        // Those away hold their places but are not in the way: a newcomer behind nobody
        // present is let in, and a returner is served first at the next tick all the same.
        let restoring = matches!(line.window, RestoreWindow::Open { .. });
        let nobody_present = line.waiting == line.away && line.restored_in_line == line.restored_away;
        if line.limits.mode == RoomMode::Off && !restoring {
            // Passthrough: a session at once, past any limit, still counted.
            line.meter.record(now_ms, 1);
            return JoinOutcome::Admitted(self.new_session(&line.limits, now_ms));
        }
        if line.limits.mode == RoomMode::Auto && !prequeue && !restoring && nobody_present {
            let active = self.active.load(Relaxed);
            let per_minute = line.limits.admit_per_minute;
            line.bucket.refill(per_minute, now_ms);
            if active + line.pending < line.limits.max_active && line.bucket.tokens >= 1.0 {
                line.bucket.tokens -= 1.0;
                line.meter.record(now_ms, 1);
                let session = self.new_session(&line.limits, now_ms);
                return JoinOutcome::Admitted(session);
            }
        }
        let cap = line.limits.tickets_per_client;
        if let Some(held) = line.clients.get(&client) {
            if held.live >= cap {
                return JoinOutcome::Queued { ticket: self.ticket_ref(held.newest), reused: true };
            }
        }
        let ticket = self.enqueue(&mut line, client, now_ms, prequeue, None);
        JoinOutcome::Queued { ticket: self.ticket_ref(ticket), reused: false }
    }

    fn ticket_ref(&self, number: u64) -> TicketRef {
        TicketRef { generation: self.generation, number }
    }

    /// Puts a waiter of an earlier generation back in line by its original join time, or
    /// finds where it already was put back; returns its ticket in this generation.
    pub fn restore(&self, returning: Returning, now_ms: u64) -> TicketRef {
        let mut line = lock(&self.line);
        if let Some(&number) = line.restored_tickets.get(&returning.old) {
            return self.ticket_ref(number);
        }
        let prequeue = line.limits.opens_at_ms.is_some_and(|opens| now_ms < opens);
        let joined = self.ds(returning.joined_ms.min(self.started_ms));
        // Inside a pre-queue the order is drawn anyway: back in it like anyone there. Else
        // served from the restored heap, by join time, once the restore window is over.
        let key = (returning.joined_ms / 1000, returning.old.number);
        let restored = (!prequeue).then_some((joined, key));
        if restored.is_some() && line.window == RestoreWindow::NotYet {
            let window = millis(line.limits.waiter_ttl).min(RESTORE_WINDOW_MAX_MS);
            line.window = RestoreWindow::Open { until: self.ds(now_ms.saturating_add(window)) };
        }
        let ticket = self.enqueue(&mut line, returning.client, now_ms, prequeue, restored);
        line.restored_tickets.insert(returning.old, ticket);
        self.ticket_ref(ticket)
    }

    /// A new waiter at the tail: a newcomer, or (`restored`: its join time) one put back from
    /// an earlier generation. Returns its ticket.
    fn enqueue(
        &self,
        line: &mut Line,
        client: ClientKey,
        now_ms: u64,
        prequeue: bool,
        restored: Option<(Ds, RestoreKey)>,
    ) -> u64 {
        let ticket = line.next_ticket;
        line.next_ticket += 1;
        if line.waiters.is_empty() {
            // The line was empty: start its numbering space afresh so memory from the last
            // peak is returned.
            line.base = ticket;
            line.fen_base = ticket;
            line.cursor = ticket;
            line.waiting_at = Fenwick::default();
            line.away_at = Fenwick::default();
            line.shuffles.clear();
            line.heartbeats.clear();
            line.grants.clear();
            line.returns.clear();
            line.restored.clear();
            line.restored_keys.clear();
            line.restored_at = Fenwick::default();
            line.prequeue_from = None;
            line.prequeue_end = None;
            if line.waiters.capacity() > 4096 {
                line.waiters.shrink_to(1024);
            }
        }
        if prequeue && line.prequeue_from.is_none() {
            line.prequeue_from = Some(ticket);
            self.commit(line, now_ms);
        }
        let now = self.ds(now_ms);
        let due = now.saturating_add(Self::ds_len(line.limits.waiter_ttl));
        let index = (ticket - line.fen_base) as usize;
        let joined = restored.map_or(now, |(joined, _)| joined);
        line.waiters.push_back(Waiter {
            client,
            joined,
            seen: now,
            due,
            state: State::Waiting,
            counted: restored.is_none(),
            restored: restored.is_some(),
        });
        if let Some((_, key)) = restored {
            line.restored_at.add(joined as usize, 1);
            line.restored_in_line += 1;
            line.restored.push(Reverse((key, ticket)));
            line.restored_keys.insert(ticket, key);
        } else {
            line.waiting_at.add(index, 1);
            line.waiting += 1;
        }
        line.heartbeats.push(Reverse((due, index as u32)));
        let entry = line.clients.entry(client).or_insert(ClientTickets { live: 0, newest: ticket });
        entry.live += 1;
        entry.newest = ticket;
        ticket
    }

    /// The slot of a ticket: itself, unless it was drawn in a pre-queue.
    fn slot_of(line: &Line, ticket: u64) -> Option<u64> {
        if ticket < line.fen_base || ticket >= line.next_ticket {
            return None;
        }
        for s in &line.shuffles {
            if ticket >= s.first && ticket < s.first + s.slots.len() as u64 {
                return Some(s.first + u64::from(s.slots[(ticket - s.first) as usize]));
            }
        }
        Some(ticket)
    }

    /// The ticket in a slot: the inverse of [`Self::slot_of`].
    fn ticket_of(line: &Line, slot: u64) -> u64 {
        for s in &line.shuffles {
            if slot >= s.first && slot < s.first + s.tickets.len() as u64 {
                return s.first + u64::from(s.tickets[(slot - s.first) as usize]);
            }
        }
        slot
    }

    pub fn poll(&self, ticket: TicketRef, now_ms: u64, pace: Pace) -> PollOutcome {
        if ticket.generation != self.generation {
            return PollOutcome::OtherGeneration;
        }
        let ticket = ticket.number;
        let mut line = lock(&self.line);
        let Some(slot) = Self::slot_of(&line, ticket) else { return PollOutcome::Gone };
        let Some(i) = slot.checked_sub(line.base).map(|i| i as usize).filter(|i| *i < line.waiters.len()) else {
            return PollOutcome::Gone;
        };
        let now = self.ds(now_ms);
        let waiter = line.waiters[i];
        match waiter.state {
            State::Done => PollOutcome::Gone,
            State::Granted => {
                line.waiters[i].state = State::Done;
                line.pending -= 1;
                Self::release_client(&mut line, waiter.client);
                let session = self.new_session(&line.limits, now_ms);
                PollOutcome::Admitted { session, waited_ms: now_ms.saturating_sub(self.ms(waiter.joined)) }
            }
            State::Waiting | State::Away => {
                if waiter.state == State::Away {
                    self.come_back(&mut line, ticket, slot, waiter, now_ms);
                }
                let prequeue = line.prequeue_from.is_some_and(|from| ticket >= from)
                    && line.prequeue_end.is_none_or(|end| ticket < end);
                let restoring = matches!(line.window, RestoreWindow::Open { .. });
                let index = (slot - line.fen_base) as usize;
                // The restored are served first: ahead of a restored waiter are those restored
                // who joined before it; ahead of anyone else, all of them.
                let (ahead, away_ahead) = if waiter.restored {
                    (line.restored_at.prefix(waiter.joined as usize), 0)
                } else {
                    (
                        line.waiting_at.prefix(index) + line.restored_in_line,
                        line.away_at.prefix(index) + line.restored_away,
                    )
                };
                let present = ahead - away_ahead.min(ahead);
                let credit_ms = pace.credit_ms(present, prequeue, line.limits.waiter_ttl);
                self.heard(&mut line, ticket, slot, now, credit_ms);
                let joined_ms = self.ms(waiter.joined);
                let poll_secs = pace.interval_secs(present, prequeue);
                PollOutcome::Waiting(Place {
                    ahead,
                    away_ahead,
                    joined_ms,
                    prequeue,
                    restoring,
                    poll_secs,
                    granted: None,
                })
            }
        }
    }

    /// A heartbeat without an answer: a waiter's poll was refused by the poll budget (its
    /// page is there, behind a crowded address), so it stays present, as from a poll at
    /// `now_ms`. An away waiter stays away until a poll gets through; nothing else changes.
    pub fn heartbeat(&self, ticket: TicketRef, now_ms: u64) {
        if ticket.generation != self.generation {
            return;
        }
        let now = self.ds(now_ms);
        let mut line = lock(&self.line);
        let Some(slot) = Self::slot_of(&line, ticket.number) else { return };
        if let Some(w) = Self::waiter_mut(&mut line, slot).filter(|w| w.state == State::Waiting) {
            w.seen = w.seen.max(now);
        }
    }

    /// A waiter in line polled at `now`: it is present until `waiter_ttl` plus the `credit_ms`
    /// its poll interval earned (see [`Pace::credit_ms`]), recorded as a later `seen`. A
    /// deadline brought forward (the waiter moved up and polls faster now) gets a heap entry
    /// of its own, so its absence is noticed when its own interval says.
    fn heard(&self, line: &mut Line, ticket: u64, slot: u64, now: Ds, credit_ms: u64) {
        let seen = now.saturating_add(Ds::try_from(credit_ms / 100).unwrap_or(Ds::MAX));
        let due = seen.saturating_add(Self::ds_len(line.limits.waiter_ttl));
        let rel = (ticket - line.fen_base) as u32;
        let Some(w) = Self::waiter_mut(line, slot) else { return };
        w.seen = seen;
        if w.state == State::Waiting && due < w.due {
            w.due = due;
            line.heartbeats.push(Reverse((due, rel)));
        }
    }

    /// An away waiter polled within `hold`: present again, with a fresh heartbeat deadline,
    /// and first in line for the next grant if the admitter has already passed its slot.
    fn come_back(&self, line: &mut Line, ticket: u64, slot: u64, was: Waiter, now_ms: u64) {
        let now = self.ds(now_ms);
        let index = (slot - line.fen_base) as usize;
        let due = now.saturating_add(Self::ds_len(line.limits.waiter_ttl));
        if let Some(w) = Self::waiter_mut(line, slot) {
            w.state = State::Waiting;
            w.due = due;
        }
        if was.restored {
            line.restored_away -= 1;
            let key = line.restored_keys.get(&slot).copied().unwrap_or((0, 0));
            line.restored.push(Reverse((key, slot)));
        } else if was.counted {
            line.away_at.add(index, -1);
            line.away -= 1;
        } else {
            line.uncounted_held -= 1;
        }
        line.heartbeats.push(Reverse((due, (ticket - line.fen_base) as u32)));
        // One whose turn came and went (uncounted) is served first wherever its slot is.
        if !was.restored && (slot < line.cursor || !was.counted) {
            line.returns.push(Reverse(slot));
        }
        line.returned += 1;
        line.returned_total += 1;
        // Bounded: the histogram is a sample, and a tick drains it.
        if line.away_ms.len() < 65_536 {
            line.away_ms.push(now_ms.saturating_sub(self.ms(was.seen)));
        }
    }

    fn release_client(line: &mut Line, client: ClientKey) {
        if let Some(held) = line.clients.get_mut(&client) {
            held.live = held.live.saturating_sub(1);
            if held.live == 0 {
                line.clients.remove(&client);
            }
        }
    }

    fn new_session(&self, limits: &RoomLimits, now_ms: u64) -> Session {
        let mut id = [0u8; 16];
        // SystemRandom only fails if the OS random source is gone; a zero id would still be
        // unique enough for one request, and the pass is signed either way.
        let _ = self.random.fill(&mut id);
        let id = u128::from_be_bytes(id);
        let expires_ms = now_ms.saturating_add(millis(limits.session_max));
        self.sessions.insert(
            id,
            SessionEntry {
                created_ms: now_ms,
                expires_ms,
                seen_ms: AtomicU64::new(now_ms),
                pushed_ms: AtomicU64::new(now_ms),
            },
        );
        self.active.fetch_add(1, Relaxed);
        lock(&self.session_deadlines).push(Reverse((now_ms.saturating_add(millis(limits.session_idle)), id)));
        Session { id, created_ms: now_ms, expires_ms }
    }

    pub fn touch(&self, id: u128, now_ms: u64) -> bool {
        let idle = self.session_idle_ms.load(Relaxed);
        let live = match self.sessions.get(&id) {
            None => return false,
            Some(entry) => {
                let seen = entry.seen_ms.load(Relaxed);
                let live = entry.expires_ms > now_ms && seen.saturating_add(idle) > now_ms;
                // Written at most once a second (or a quarter of the idle limit): a session
                // busy on several cores at once then shares a cache line that is read, not
                // fought over.
                if live && now_ms.saturating_sub(seen) >= (idle / 4).min(1000) {
                    entry.seen_ms.store(now_ms, Relaxed);
                    if now_ms.saturating_sub(entry.pushed_ms.load(Relaxed)) >= idle / 4 {
                        entry.pushed_ms.store(now_ms, Relaxed);
                        lock(&self.session_deadlines).push(Reverse((now_ms.saturating_add(idle), id)));
                    }
                }
                live
            }
        };
        if !live {
            self.end_session(id);
        }
        live
    }

    /// Takes over a session admitted in an earlier generation (usher restarted), if its pass
    /// is still valid, it could not have idled out since the restart, and there is room.
    pub fn adopt(&self, admitted: Admitted, now_ms: u64) -> bool {
        let idle = self.session_idle_ms.load(Relaxed);
        // Under the line's lock, so two requests with one pass adopt it once.
        let mut line = lock(&self.line);
        if self.sessions.contains_key(&admitted.session) {
            return true;
        }
        let room = self.active.load(Relaxed) + line.pending < line.limits.max_active;
        if admitted.generation == self.generation
            || admitted.expires_ms <= now_ms
            || self.started_ms.saturating_add(idle) <= now_ms
            || !room
        {
            return false;
        }
        self.sessions.insert(
            admitted.session,
            SessionEntry {
                created_ms: admitted.created_ms,
                expires_ms: admitted.expires_ms,
                seen_ms: AtomicU64::new(now_ms),
                pushed_ms: AtomicU64::new(now_ms),
            },
        );
        self.active.fetch_add(1, Relaxed);
        lock(&self.session_deadlines).push(Reverse((now_ms.saturating_add(idle), admitted.session)));
        // A session from before a restart: its line may be coming back too. Until it has
        // had a poll's time to, nobody is admitted or granted (see `restore`), not even a
        // newcomer to a room that looks empty because its sessions are not back yet.
        if line.window == RestoreWindow::NotYet {
            let window = millis(line.limits.waiter_ttl).min(RESTORE_WINDOW_MAX_MS);
            line.window = RestoreWindow::Open { until: self.ds(now_ms.saturating_add(window)) };
        }
        true
    }

    pub fn end_session(&self, id: u128) -> bool {
        let ended = self.sessions.remove(&id).is_some();
        if ended {
            self.active.fetch_sub(1, Relaxed);
        }
        ended
    }

    pub fn drain(&self, oldest: Option<u64>) -> u64 {
        let mut ids: Vec<(u64, u128)> = self.sessions.iter().map(|e| (e.created_ms, *e.key())).collect();
        ids.sort_unstable();
        let n = oldest.map_or(ids.len(), |n| usize::try_from(n).unwrap_or(usize::MAX).min(ids.len()));
        ids[..n].iter().filter(|(_, id)| self.end_session(*id)).count() as u64
    }

    pub fn tick(&self, now_ms: u64) -> TickReport {
        self.tick_with(now_ms, &super::TickInput::PLAIN)
    }

    /// [`Self::tick`] with what the admitter brings (see [`super::TickInput`]). One process
    /// is the only node: the answers it brings are the room's, taken as they come.
    pub fn tick_with(&self, now_ms: u64, input: &super::TickInput<'_>) -> TickReport {
        let release_pm = input.release_pm;
        let mut report = TickReport {
            expired_sessions: self.expire_sessions(now_ms),
            opened: self.open_prequeue(now_ms),
            ..TickReport::default()
        };
        let mut line = lock(&self.line);
        let line = &mut *line;
        let now = self.ds(now_ms);
        let ttl = Self::ds_len(line.limits.waiter_ttl);
        let hold = Self::ds_len(line.limits.hold).max(ttl);

        // Nobody could poll during a gap between ticks: one waiter_ttl of grace from now.
        if line.last_tick_ms.is_some_and(|last| now_ms.saturating_sub(last) > self.gap_ms) {
            line.grace_from = Some(now);
        }
        line.last_tick_ms = Some(now_ms);
        let in_grace = line.grace_from.is_some_and(|from| now < from.saturating_add(ttl));

        if let RestoreWindow::Open { until } = line.window {
            if now >= until {
                line.window = RestoreWindow::Closed;
            }
        }
        report.returned = std::mem::take(&mut line.returned);
        report.away_ms = std::mem::take(&mut line.away_ms);

        // Grants not claimed in time return their slot to the budget. The waiter is away, not
        // gone: its place is held, and on return it is granted again (its turn has come).
        while let Some(&(deadline, rel)) = line.grants.front() {
            if deadline > now || in_grace {
                break;
            }
            line.grants.pop_front();
            let slot = line.fen_base + u64::from(rel);
            let Some(w) = Self::waiter_mut(line, slot).filter(|w| w.state == State::Granted).copied() else {
                continue;
            };
            line.pending -= 1;
            report.expired_grants += 1;
            if w.seen.saturating_add(hold) <= now {
                Self::set_done(line, slot);
                Self::release_client(line, w.client);
                line.abandoned_total += 1;
                report.abandoned += 1;
                continue;
            }
            // Held, not counted again: those behind it never see their number grow.
            Self::go_away(line, slot, w.seen.saturating_add(hold).max(now + 1));
            report.away += 1;
        }

        // Heartbeat and hold deadlines: present waiters unseen for `waiter_ttl` go away, away
        // waiters unseen for `hold` are abandoned, the rest get their next deadline.
        while let Some(&Reverse((deadline, rel))) = line.heartbeats.peek() {
            if deadline > now || in_grace {
                break;
            }
            line.heartbeats.pop();
            let ticket = line.fen_base + u64::from(rel);
            let Some(slot) = Self::slot_of(line, ticket) else { continue };
            let Some(w) = Self::waiter_mut(line, slot).copied() else { continue };
            if w.due != deadline {
                continue;
            }
            match w.state {
                State::Waiting if w.seen.saturating_add(ttl) <= now => {
                    Self::go_away(line, slot, w.seen.saturating_add(hold).max(now + 1));
                    report.away += 1;
                }
                State::Waiting => Self::set_due(line, slot, rel, w.seen.saturating_add(ttl).max(now + 1)),
                State::Away if w.seen.saturating_add(hold) <= now => {
                    Self::abandon(line, slot);
                    report.abandoned += 1;
                }
                State::Away => Self::set_due(line, slot, rel, w.seen.saturating_add(hold).max(now + 1)),
                State::Granted | State::Done => {}
            }
        }

        // Grant within the budget: first those who came back after their turn passed, then
        // onwards from the cursor. Away waiters are skipped: no turn is spent on someone
        // who is not there.
        // Off lets everyone in: the line drains at up to SKIP_BOUND a tick, past any limit.
        let off = line.limits.mode == RoomMode::Off;
        let closed = matches!(line.window, RestoreWindow::Open { .. })
            || (!off
                && (matches!(line.limits.mode, RoomMode::Paused | RoomMode::Closed)
                    || line.limits.opens_at_ms.is_some_and(|opens| now_ms < opens)));
        if !closed {
            line.bucket.refill(line.limits.admit_per_minute.saturating_mul(release_pm) / 1000, now_ms);
            let free = line.limits.max_active.saturating_sub(self.active.load(Relaxed) + line.pending);
            let mut budget = if off { SKIP_BOUND } else { free.min(line.bucket.tokens as u64) };
            // In a grace, nobody is taken for away: none of them could poll.
            let present_ttl = if in_grace { Ds::MAX } else { ttl };
            // Waiters looked at without a grant (away, gone): bounded per tick.
            let mut skipped = 0;
            while budget > 0 && skipped < SKIP_BOUND {
                // First those from an earlier generation, by join time; then those who came
                // back after their turn passed, in slot order; then onwards from the cursor.
                let (slot, walking) = if let Some(Reverse((_, slot))) = line.restored.pop() {
                    (slot, false)
                } else if let Some(Reverse(slot)) = line.returns.pop() {
                    (slot, false)
                } else if line.cursor < line.base + line.waiters.len() as u64 {
                    line.cursor += 1;
                    (line.cursor - 1, true)
                } else {
                    break;
                };
                // The draw's walk: as in Redis, a place counts once its holder is in line.
                let in_line = walking && Self::waiter_mut(line, slot).is_some_and(|w| w.in_line());
                let granted = self.grant_if_present(line, slot, now, present_ttl, hold, &mut report);
                if in_line {
                    Self::walked(line, slot, granted);
                }
                if granted {
                    budget -= 1;
                } else {
                    skipped += 1;
                }
            }
            // Off spends no tokens: a room switched back starts with what it had, not a debt.
            line.bucket.tokens = line.bucket.tokens.max(0.0);
            line.meter.record(now_ms, report.granted);
        }

        if line.answers.len() < input.answers.len() {
            line.answers.resize(input.answers.len(), 0);
        }
        for (sum, n) in line.answers.iter_mut().zip(input.answers) {
            *sum += n;
        }
        if input.take_answers {
            report.answers = Some(std::mem::take(&mut line.answers));
        }

        // Forget finished places at the front.
        while line.waiters.front().is_some_and(|w| w.state == State::Done) && line.base < line.cursor {
            line.waiters.pop_front();
            line.base += 1;
        }
        Self::renumber_if_mostly_gone(line);
        report
    }

    /// Renumbers the Fenwick trees from `base` once the finished places below it are most of
    /// their range. The trees are indexed from `fen_base`, which otherwise moves only when
    /// the line runs dry: a line that never empties (a busy `queue_all` room) kept 8 bytes
    /// for every ticket it ever issued, and the soak run saw usher's memory grow with them.
    /// Renumbering costs the live line once per as many finished places, so a ticket still
    /// costs O(1) amortised. Not while a pre-queue is collected or drawn (its shuffles map
    /// tickets to slots; an event's line is bounded anyway).
    fn renumber_if_mostly_gone(line: &mut Line) {
        let gone = line.base - line.fen_base;
        if gone < RENUMBER_AFTER.max(line.waiters.len() as u64)
            || !line.shuffles.is_empty()
            || line.prequeue_from.is_some()
        {
            return;
        }
        // Entries below `base` are of finished places, which `waiter_mut` skips: dropped.
        let Ok(shift) = u32::try_from(gone) else { return };
        let (mut waiting_at, mut away_at) = (Fenwick::default(), Fenwick::default());
        for (index, w) in line.waiters.iter().enumerate() {
            if w.in_line() {
                waiting_at.add(index, 1);
                if w.state == State::Away {
                    away_at.add(index, 1);
                }
            }
        }
        line.waiting_at = waiting_at;
        line.away_at = away_at;
        line.heartbeats = std::mem::take(&mut line.heartbeats)
            .into_iter()
            .filter_map(|Reverse((due, rel))| Some(Reverse((due, rel.checked_sub(shift)?))))
            .collect();
        line.grants.retain_mut(|(_, rel)| match rel.checked_sub(shift) {
            Some(moved) => {
                *rel = moved;
                true
            }
            None => false,
        });
        line.fen_base = line.base;
    }

    /// Grants the waiter in `slot` if it is waiting and present; one found unseen for
    /// `waiter_ttl` goes away instead (skipped, place held). True if it granted.
    fn grant_if_present(
        &self,
        line: &mut Line,
        slot: u64,
        now: Ds,
        ttl: Ds,
        hold: Ds,
        report: &mut TickReport,
    ) -> bool {
        let Some(w) = Self::waiter_mut(line, slot).copied() else { return false };
        if w.state != State::Waiting {
            return false;
        }
        if w.seen.saturating_add(ttl) <= now {
            Self::go_away(line, slot, w.seen.saturating_add(hold).max(now + 1));
            report.away += 1;
            return false;
        }
        let index = (slot - line.fen_base) as usize;
        if let Some(w) = Self::waiter_mut(line, slot) {
            // A turn not claimed holds the place from the turn on (as the Redis store does).
            w.state = State::Granted;
            w.seen = now;
            w.counted = false;
            w.restored = false;
        }
        if w.counted {
            line.waiting_at.add(index, -1);
            line.waiting -= 1;
        }
        if w.restored {
            line.restored_at.add(w.joined as usize, -1);
            line.restored_in_line -= 1;
            line.restored_keys.remove(&slot);
        }
        line.pending += 1;
        let claim = Self::ds_len(line.limits.claim_window);
        line.grants.push_back((now.saturating_add(claim), index as u32));
        line.bucket.tokens -= 1.0;
        report.granted += 1;
        report.waits_ms.push(self.ms(now).saturating_sub(self.ms(w.joined)));
        true
    }

    fn waiter_mut(line: &mut Line, slot: u64) -> Option<&mut Waiter> {
        let i = usize::try_from(slot.checked_sub(line.base)?).ok()?;
        line.waiters.get_mut(i)
    }

    /// Gives the in-line waiter in `slot` a new heartbeat deadline (its only live one).
    fn set_due(line: &mut Line, slot: u64, rel: u32, due: Ds) {
        if let Some(w) = Self::waiter_mut(line, slot) {
            w.due = due;
            line.heartbeats.push(Reverse((due, rel)));
        }
    }

    /// The in-line waiter in `slot` is away until `until` (its last poll plus `hold`).
    fn go_away(line: &mut Line, slot: u64, until: Ds) {
        let rel = (Self::ticket_of(line, slot) - line.fen_base) as u32;
        let Some(w) = Self::waiter_mut(line, slot) else { return };
        w.state = State::Away;
        if w.restored {
            line.restored_away += 1;
        } else if w.counted {
            line.away_at.add((slot - line.fen_base) as usize, 1);
            line.away += 1;
        } else {
            line.uncounted_held += 1;
        }
        Self::set_due(line, slot, rel, until);
    }

    /// The away waiter in `slot` was gone past `hold`: its place is given up.
    fn abandon(line: &mut Line, slot: u64) {
        let Some(w) = Self::waiter_mut(line, slot).copied() else { return };
        let index = (slot - line.fen_base) as usize;
        if w.restored {
            line.restored_away -= 1;
            line.restored_in_line -= 1;
            line.restored_at.add(w.joined as usize, -1);
            line.restored_keys.remove(&slot);
        } else if w.counted {
            line.away_at.add(index, -1);
            line.away -= 1;
            line.waiting_at.add(index, -1);
            line.waiting -= 1;
        } else {
            line.uncounted_held -= 1;
        }
        line.abandoned_total += 1;
        Self::set_done(line, slot);
        Self::release_client(line, w.client);
    }

    fn set_done(line: &mut Line, slot: u64) {
        if let Some(w) = Self::waiter_mut(line, slot) {
            w.state = State::Done;
        }
    }

    /// Fixes a new seed for the pre-queue about to begin, unless one not drawn yet was
    /// announced already: the commitment precedes the pre-queue's first ticket.
    fn commit(&self, line: &mut Line, now_ms: u64) {
        if line.draw.as_ref().is_none_or(|d| d.drawn.is_some()) {
            line.draw = Some(Draw { seed: self.seeds.next(), committed_ms: now_ms, drawn: None });
            line.walk.clear();
        }
    }

    /// The room's draw as published (see `draw.rs`). While an event is announced (an
    /// opening time ahead), a commitment exists even before the first visitor.
    pub fn draw(&self, now_ms: u64) -> (Option<Draw>, Vec<Step>) {
        let mut line = lock(&self.line);
        if line.limits.opens_at_ms.is_some_and(|opens| now_ms < opens) {
            self.commit(&mut line, now_ms);
        }
        (line.draw.clone(), line.walk.clone())
    }

    /// Draws the pre-queue into the order of its seed once the event has opened, or at once
    /// when its opening time was cleared: those who came before are never served in arrival
    /// order. The order is drawn without the room's lock (a million places take about a
    /// second); only moving the waiters into it takes the lock. True if it drew.
    fn open_prequeue(&self, now_ms: u64) -> bool {
        let (from, n, seed) = {
            let mut line = lock(&self.line);
            let Some(from) = line.prequeue_from else { return false };
            if line.limits.opens_at_ms.is_some_and(|opens| now_ms < opens) {
                return false;
            }
            let next = line.next_ticket;
            let n = *line.prequeue_end.get_or_insert(next) - from;
            // Committed when the pre-queue began; the fallback is for a state without one.
            self.commit(&mut line, now_ms);
            (from, n, line.draw.as_ref().map(|d| d.seed.clone()).unwrap_or_default())
        };
        let order: Vec<u32> = draw::order(&seed, from, from + n)
            .into_iter()
            .map(|t| u32::try_from(t - from).unwrap_or(u32::MAX))
            .collect();
        let mut line = lock(&self.line);
        // Only this tick draws, and a line holding a pre-queue is never reset; checked anyway.
        if line.prequeue_from != Some(from) || line.prequeue_end != Some(from + n) {
            return false;
        }
        line.prequeue_from = None;
        line.prequeue_end = None;
        if let Some(d) = line.draw.as_mut() {
            d.drawn = Some(Drawn { first: from, end: from + n, at_ms: now_ms });
        }
        line.walk.clear();
        if n >= 2 {
            Self::move_drawn(&mut line, from, order);
        }
        true
    }

    /// Notes the admitter walking past `slot`, if it is a place of the last draw held by
    /// someone still in line: `admitted` or passed over.
    fn walked(line: &mut Line, slot: u64, admitted: bool) {
        let Some(drawn) = line.draw.as_ref().and_then(|d| d.drawn) else { return };
        if !(drawn.first..drawn.end).contains(&slot) {
            return;
        }
        let ticket = Self::ticket_of(line, slot);
        line.walk.push(Step { position: slot - drawn.first, ticket, admitted });
    }

    /// Moves the pre-queue starting at `from` into `order` (`order[k]`: the ticket offset
    /// placed at slot offset `k`).
    fn move_drawn(line: &mut Line, from: u64, order: Vec<u32>) {
        let n = order.len();
        let start = (from - line.base) as usize;
        let before: Vec<Waiter> = line.waiters.range(start..start + n).copied().collect();
        let mut slots = vec![0u32; n];
        for (k, &t) in order.iter().enumerate() {
            line.waiters[start + k] = before[t as usize];
            slots[t as usize] = k as u32;
        }
        // Recount the drawn range in the Fenwick trees: states moved with their waiters.
        for (k, was) in before.iter().enumerate() {
            let now = line.waiters[start + k];
            let index = (from - line.fen_base) as usize + k;
            // Mostly all present before and after: nothing to change.
            let waiting = i32::from(now.in_line()) - i32::from(was.in_line());
            if waiting != 0 {
                line.waiting_at.add(index, waiting);
            }
            let (old, new) = (was.in_line() && was.state == State::Away, now.in_line() && now.state == State::Away);
            if old != new {
                line.away_at.add(index, i32::from(new) - i32::from(old));
            }
        }
        line.shuffles.push(Shuffle { first: from, slots, tickets: order });
    }

    fn expire_sessions(&self, now_ms: u64) -> u64 {
        let idle = self.session_idle_ms.load(Relaxed);
        let mut ended = Vec::new();
        {
            let mut deadlines = lock(&self.session_deadlines);
            while let Some(&Reverse((deadline, id))) = deadlines.peek() {
                if deadline > now_ms {
                    break;
                }
                deadlines.pop();
                let state = self.sessions.get(&id).map(|e| (e.seen_ms.load(Relaxed), e.expires_ms));
                match state {
                    None => {}
                    Some((seen, expires)) if seen.saturating_add(idle) <= now_ms || expires <= now_ms => {
                        ended.push(id);
                    }
                    // Touched since this deadline was pushed without pushing a newer one:
                    // keep exactly one deadline for it.
                    Some((seen, expires)) => {
                        deadlines.push(Reverse((seen.saturating_add(idle).min(expires), id)));
                    }
                }
            }
        }
        let expired = ended.len() as u64;
        for id in ended {
            self.end_session(id);
        }
        expired
    }

    pub fn figures(&self, now_ms: u64) -> RoomFigures {
        let line = lock(&self.line);
        RoomFigures {
            waiting: line.waiting + line.uncounted_held + line.restored_in_line,
            held: line.away + line.uncounted_held + line.restored_away,
            returned_total: line.returned_total,
            abandoned_total: line.abandoned_total,
            active: self.active.load(Relaxed),
            pending: line.pending,
            measured_per_minute: line.meter.per_minute(now_ms),
        }
    }

    pub fn limits(&self) -> RoomLimits {
        lock(&self.line).limits.clone()
    }

    /// Takes the named fields of `new`, under the line's lock; returns the limits in force.
    pub fn update_limits(&self, new: &RoomLimits, fields: &[&str]) -> RoomLimits {
        let mut line = lock(&self.line);
        line.limits.take_fields(new, fields);
        self.session_idle_ms.store(millis(line.limits.session_idle), Relaxed);
        line.limits.clone()
    }

    pub fn set_limits(&self, limits: RoomLimits) {
        self.session_idle_ms.store(millis(limits.session_idle), Relaxed);
        // A moved event keeps its pre-queue; it is drawn at the new time.
        lock(&self.line).limits = limits;
    }

    /// Approximate heap bytes held for the line (for the memory-per-waiter report).
    pub fn line_bytes(&self) -> usize {
        let line = lock(&self.line);
        line.waiters.capacity() * std::mem::size_of::<Waiter>()
            + (line.waiting_at.tree.capacity() + line.away_at.tree.capacity()) * 4
            + line.returns.capacity() * 8
            + line.heartbeats.capacity() * std::mem::size_of::<Reverse<(Ds, u32)>>()
            + line.grants.capacity() * std::mem::size_of::<(Ds, u32)>()
            + line.clients.capacity() * (std::mem::size_of::<(ClientKey, ClientTickets)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    /// A queue_all room whose outflow (40/s) is a little under the arrivals of the test: the
    /// line grows slowly and never runs dry.
    fn limits() -> RoomLimits {
        RoomLimits {
            max_active: 1_000_000_000,
            admit_per_minute: 2400,
            session_idle: Duration::from_secs(60),
            session_max: Duration::from_secs(3600),
            waiter_ttl: Duration::from_secs(30),
            claim_window: Duration::from_secs(20),
            hold: Duration::from_secs(60),
            mode: RoomMode::QueueAll,
            opens_at_ms: None,
            message: None,
            tickets_per_client: 50,
            break_glass: None,
            adaptive_pinned: false,
        }
    }

    /// Every place in line is counted in the trees exactly at its slot under the current
    /// numbering, and has its live deadline there: a heartbeat while waiting or away, a claim
    /// deadline while granted. Nothing beyond the line is counted.
    fn check_numbering(line: &Line) {
        let point = |f: &Fenwick, i: usize| f.prefix(i + 1) - f.prefix(i);
        let beats: HashSet<(Ds, u32)> = line.heartbeats.iter().map(|Reverse(entry)| *entry).collect();
        let claims: HashSet<u32> = line.grants.iter().map(|(_, rel)| *rel).collect();
        for (i, w) in line.waiters.iter().enumerate() {
            let index = (line.base - line.fen_base) as usize + i;
            let slot = line.base + i as u64;
            assert_eq!(point(&line.waiting_at, index), u64::from(w.in_line()), "slot {slot}: {w:?}");
            assert_eq!(point(&line.away_at, index), u64::from(w.in_line() && w.state == State::Away), "slot {slot}");
            match w.state {
                State::Waiting | State::Away => {
                    assert!(beats.contains(&(w.due, index as u32)), "slot {slot} has no heartbeat: {w:?}");
                }
                State::Granted => assert!(claims.contains(&(index as u32)), "slot {slot} has no claim deadline"),
                State::Done => {}
            }
        }
        assert_eq!(line.waiting_at.prefix(usize::MAX), line.waiting, "only the line is counted");
        assert_eq!(line.away_at.prefix(usize::MAX), line.away);
    }

    #[test]
    fn a_line_that_never_runs_dry_is_renumbered_and_its_counts_stay_exact() {
        const T0: u64 = 1_800_000_000_000;
        let room = MemoryRoom::new(limits(), T0);
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // (when, ticket, kind): 0 never polls again (abandons), 1-3 step away once for 45 s
        // (past waiter_ttl and claim_window, within hold), the rest poll every 2 s.
        let mut polls = BinaryHeap::new();
        let (mut joined, mut moved, mut fen_base, mut largest_line, mut largest_tree) = (0u32, 0, 0, 0, 0);
        for step in 0..150_000u64 {
            let now = T0 + step * 10;
            // 42 arrivals a second on average.
            if random() % 1000 < 420 {
                joined += 1;
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&joined.to_le_bytes());
                if let JoinOutcome::Queued { ticket, .. } = room.join(ClientKey(key), now) {
                    polls.push(Reverse((now + 2000, ticket, (random() % 20) as u8)));
                }
            }
            while let Some(&Reverse((at, ticket, kind))) = polls.peek() {
                if at > now {
                    break;
                }
                polls.pop();
                if kind == 0 {
                    continue;
                }
                if let PollOutcome::Waiting(_) = room.poll(ticket, now, Pace::FIXED) {
                    let (after, kind) = if kind <= 3 { (45_000, 4) } else { (2_000, kind) };
                    polls.push(Reverse((now + after, ticket, kind)));
                }
            }
            if step % 20 == 0 {
                room.tick(now);
                let line = lock(&room.line);
                if step % 200 == 0 {
                    check_numbering(&line);
                }
                if line.fen_base != fen_base {
                    moved += 1;
                    fen_base = line.fen_base;
                }
                largest_line = largest_line.max(line.waiters.len());
                largest_tree = largest_tree.max(line.waiting_at.tree.len().max(line.away_at.tree.len()));
            }
        }
        let line = lock(&room.line);
        check_numbering(&line);
        assert!(line.away + line.uncounted_held > 0 && line.waiting > line.away, "the line holds every kind of place");
        assert!(moved >= 5, "renumbered only {moved} times over {} tickets", line.next_ticket);
        // Without renumbering the trees would span every ticket ever issued.
        let bound = 4 * (RENUMBER_AFTER as usize).max(largest_line).next_power_of_two();
        assert!(largest_tree <= bound, "trees of {largest_tree} slots for a line of at most {largest_line}");
        assert!(
            (line.next_ticket as usize) > 2 * bound,
            "the run issued more tickets ({}) than the trees may span ({bound})",
            line.next_ticket
        );
    }
}
