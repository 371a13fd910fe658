//! The Redis store (DESIGN §8): one room's line, grants and sessions in Redis, shared by
//! every usher node in front of the same upstream, with the memory store's semantics.
//!
//! - Every key of a room is under one hash tag, `{usher:ROOM}`, so a room lives in one
//!   Redis Cluster slot and its scripts work unchanged on a cluster. Every key has a TTL.
//! - Every change that touches several keys is one Lua script (`lua/`), loaded once and
//!   called by its SHA (the `redis::Script` type falls back to loading it on `NOSCRIPT`),
//!   so a crash between two commands cannot leave half a change.
//! - The line is a sorted set of tickets by slot: a waiter's place is its rank, O(log n).
//!   A pre-queued ticket waits at its arrival slot, shown no place, until the opening: the
//!   lease holder then moves the pre-queue to the slots of its seed's order, which anyone
//!   can check (`draw_*.lua`, `super::draw`).
//! - One node at a time admits: the tick script holds a lease with a fencing token and
//!   grants only while the caller's token is the lease's (see `lua/tick.lua`).
//! - No Redis call per proxied request: passes are checked against this node's
//!   [`LocalSessions`] and their uses written once per tick, in the tick call; the room's
//!   figures and limits come back in that call and are cached for the tick.
//!
//! - Time comes from Redis (`TIME`, in the scripts), so nodes with skewed clocks agree on
//!   heartbeats, grants and leases; tests give the time instead ([`RedisRoom::with_given_clock`]).
//! - The keyspace has a *generation* (DESIGN §8), created with the room's state and gone
//!   with it: a ticket of another generation names no place here and is restored by its
//!   join time instead (`lua/restore.lua`).
//!
//! Nothing personal is stored: a waiter is its ticket, its join time and its `ClientKey`.

mod connect;
mod connection;
mod runtime;
mod sentinel;
mod sessions;
mod waiters;

use waiters::{Learned, LineView, Waiters};

pub use connect::{ConnectError, PASSWORD_ENV, connect, connect_to, redacted};
pub use connection::StoreConnection;
pub use runtime::{RedisRuntime, RoomSpec};
pub use sentinel::SentinelConnection;

use super::draw::{Draw, Drawn, Step};
use super::{
    Admitted, BreakGlass, JoinOutcome, Pace, Place, PollOutcome, Returning, RoomFigures, RoomLimits, Session,
    StoreError, TickReport, TicketRef,
};
use crate::config::RoomMode;
use crate::identity::ClientKey;
use redis::{Script, ScriptInvocation, Value};
use ring::rand::{SecureRandom, SystemRandom};
use sessions::{Local, LocalSessions};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/prelude.lua"), include_str!(concat!("lua/", $file)))))
    };
}

static JOIN: LazyLock<Script> = script!("join.lua");
static POLL: LazyLock<Script> = script!("poll.lua");
static TOUCH: LazyLock<Script> = script!("touch.lua");
static END_SESSION: LazyLock<Script> = script!("end_session.lua");
static DRAIN: LazyLock<Script> = script!("drain.lua");
static TICK: LazyLock<Script> = script!("tick.lua");
static SET_LIMITS: LazyLock<Script> = script!("set_limits.lua");
static FIGURES: LazyLock<Script> = script!("figures.lua");
static RESTORE: LazyLock<Script> = script!("restore.lua");
static ADOPT: LazyLock<Script> = script!("adopt.lua");
static DRAW_BEGIN: LazyLock<Script> = script!("draw_begin.lua");
static DRAW_PLACE: LazyLock<Script> = script!("draw_place.lua");
static DRAW_READ: LazyLock<Script> = script!("draw_read.lua");

/// The keys of a room, in the order of `lua/prelude.lua`.
const KEY_NAMES: [&str; 21] = [
    "limits",
    "state",
    "line",
    "heartbeats",
    "grants",
    "tickets",
    "clients",
    "newest",
    "sessions:seen",
    "sessions:expires",
    "sessions:created",
    "meter",
    "lease",
    "claims",
    "claims:at",
    "away",
    "away:seen",
    "returns",
    "returns:away_ms",
    "restored",
    "draw:walk",
];

/// Tickets one `draw_place.lua` call moves: a few milliseconds of Redis's time, so a
/// million-ticket draw never blocks Redis for long at once; and within what Lua's `unpack`
/// takes (8,000 values: a ticket and its slot each).
const DRAW_BATCH: usize = 2_000;

/// Most expired or abandoned entries one tick handles of each kind; the rest wait for the
/// next tick, so one tick never blocks Redis for long.
const TICK_BOUND: u64 = 10_000;

/// Ticks between sweeps of this node's session map.
const SWEEP_EVERY: u64 = 25;

/// The longest restore window (see `lua/restore.lua`): the page asks for its status at least
/// every 10 s, so within this everyone still watching has come back.
const RESTORE_WINDOW_MAX_MS: u64 = 15_000;

/// The room's figures and limits as of one tick.
#[derive(Clone)]
struct Cached {
    now_ms: u64,
    figures: RoomFigures,
    limits: RoomLimits,
}

/// One room's state in Redis, as seen from this node.
pub struct RedisRoom {
    conn: StoreConnection,
    keys: Vec<String>,
    /// This node's name in the lease (random per process).
    node: String,
    lease_ms: u64,
    /// The lease token this node holds, or empty.
    token: Mutex<String>,
    sessions: LocalSessions,
    session_idle_ms: AtomicU64,
    /// `waiter_ttl` as of the last tick, for polls answered by this node.
    waiter_ttl_ms: AtomicU64,
    /// Figures and limits of the last tick; dropped by this node's own changes.
    cached: Mutex<Option<Cached>>,
    /// The latest limits this node knows, written back if Redis lost the room (a restart
    /// without persistence), so the room keeps working.
    known_limits: Mutex<RoomLimits>,
    ticks: AtomicU64,
    random: SystemRandom,
    /// Seeds for the pre-queues' draws (see `lua/join.lua`).
    seeds: super::draw::Seeds,
    /// The keyspace's generation as of the last answer (0 before the first).
    generation: AtomicU64,
    /// This node's view of the line: polls answered without a Redis call, and the
    /// heartbeats the next tick writes (see `waiters.rs`).
    waiters: Waiters,
    /// Times come from Redis (production); the tests give them.
    given_clock: bool,
    /// The room's running totals as of this node's last answer while it held the lease, and
    /// their generation: what a tick counts is taken from them, so the counts of an answer
    /// that was lost arrive with the next one (see [`Totals`]).
    totals: Mutex<Option<(u64, Totals)>>,
}

/// What the admitter counts for the metrics, as running totals kept in the room's state
/// (`lua/tick.lua`) or as one tick's share of them. A tick's answer can be lost while the
/// tick itself ran: Redis stalled past the node's response timeout, then ran the commands
/// queued in the socket. Counted from the totals, those counts still reach the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    abandoned: u64,
    away: u64,
    returned: u64,
    expired_grants: u64,
}

impl Totals {
    fn from_answer(v: &Value, what: &str) -> Result<Self, StoreError> {
        let &[abandoned, away, returned, expired_grants] = ints(v, what)?.as_slice() else {
            return Err(malformed(what));
        };
        let [abandoned, away, returned, expired_grants] = [abandoned, away, returned, expired_grants].map(to_u64);
        Ok(Self { abandoned, away, returned, expired_grants })
    }

    fn since(self, before: Self) -> Self {
        Self {
            abandoned: self.abandoned.saturating_sub(before.abandoned),
            away: self.away.saturating_sub(before.away),
            returned: self.returned.saturating_sub(before.returned),
            expired_grants: self.expired_grants.saturating_sub(before.expired_grants),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

use crate::operators::hex;

/// The error code `prelude.lua` answers when the room's limits are gone from Redis (it was
/// restarted without its data): matched by code, not by message text.
const NO_LIMITS: &str = "USHER_NOLIMITS";

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn malformed(what: &str) -> StoreError {
    StoreError::Unavailable(format!("unexpected answer from Redis ({what})"))
}

/// The name of this process in admitter leases: random, so a restarted node is a new holder.
pub fn node_id() -> String {
    hex(&random_u64().to_be_bytes())
}

fn random_u64() -> u64 {
    let mut id = [0u8; 8];
    // The OS random source only fails if it is gone; the clock still differs between nodes.
    if SystemRandom::new().fill(&mut id).is_err() {
        id = crate::clock::now_ms().to_be_bytes();
    }
    u64::from_be_bytes(id)
}

impl RedisRoom {
    /// A room named `room` on `conn`. `lease` is how long an admitter lease lasts without
    /// renewal: a few ticks, so another node takes over quickly when the holder dies.
    pub fn new(conn: StoreConnection, room: &str, node: String, limits: RoomLimits, lease: Duration) -> Self {
        let keys = KEY_NAMES.iter().map(|k| format!("{{usher:{room}}}:{k}")).collect();
        Self {
            conn,
            keys,
            node,
            lease_ms: millis(lease).max(100),
            token: Mutex::new(String::new()),
            sessions: LocalSessions::default(),
            session_idle_ms: AtomicU64::new(millis(limits.session_idle)),
            waiter_ttl_ms: AtomicU64::new(millis(limits.waiter_ttl)),
            cached: Mutex::new(None),
            known_limits: Mutex::new(limits),
            ticks: AtomicU64::new(0),
            random: SystemRandom::new(),
            seeds: super::draw::Seeds::new(),
            generation: AtomicU64::new(0),
            waiters: Waiters::default(),
            given_clock: false,
            totals: Mutex::new(None),
        }
    }

    /// Scripts take the `now` they are given instead of Redis's clock (the contract tests,
    /// which step time exactly).
    pub fn with_given_clock(mut self) -> Self {
        self.given_clock = true;
        self
    }

    /// The time argument of a script: empty for "Redis's own clock".
    fn at(&self, now_ms: u64) -> String {
        if self.given_clock { now_ms.to_string() } else { String::new() }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// The generation this call proposes should the room's state be new: random for each
    /// call (a node that saw its state lost must not bring back the old id), 53 bits (exact
    /// as a Lua number), never 0.
    fn candidate(&self) -> String {
        let mut r = [0u8; 8];
        let _ = self.random.fill(&mut r);
        let id = (u64::from_be_bytes(r) >> 11).max(1);
        if self.generation.load(Relaxed) == 0 {
            return id.to_string();
        }
        // This node knew a generation before: should Redis have lost it, the new one opens
        // with a restore window (see `generation` in `lua/prelude.lua`).
        let window = self.waiter_ttl_ms.load(Relaxed).min(RESTORE_WINDOW_MAX_MS);
        format!("{id}:{window}")
    }

    /// Notes the generation of an answer. A new one means Redis lost the room's state: the
    /// sessions this node knows are gone there too, so passes are checked with Redis again
    /// (and taken over, see `lua/adopt.lua`) instead of being served from this node's map
    /// without being counted against `max_active`.
    fn saw_generation(&self, generation: i64) {
        let new = to_u64(generation);
        let old = self.generation.swap(new, Relaxed);
        if old != 0 && old != new {
            tracing::warn!(
                old,
                new,
                "the room's state in Redis is new (it lost its data): restoring places and sessions"
            );
            self.sessions.clear();
        }
    }

    /// Notes a heartbeat of `ticket` for the next tick to write (see
    /// [`super::RoomStore::heartbeat`]): no Redis call. Only tickets of the generation this
    /// node knows, and at most [`waiters::HEARTBEATS_PER_TICK`] of them, so the tick stays
    /// bounded.
    pub fn heartbeat(&self, ticket: TicketRef) {
        if ticket.generation == 0 || ticket.generation != self.generation.load(Relaxed) {
            return;
        }
        self.waiters.heard(ticket.number);
    }

    /// Writes this node's limits unless another node already has (start-up), so a live
    /// change made through the admin API is not undone when a node restarts.
    pub async fn seed(&self) -> Result<bool, StoreError> {
        let limits = lock(&self.known_limits).clone();
        self.write_limits(&limits, true).await
    }

    async fn write_limits(&self, limits: &RoomLimits, only_if_missing: bool) -> Result<bool, StoreError> {
        let mut call = self.invocation(&SET_LIMITS);
        call.arg(if only_if_missing { "1" } else { "0" });
        for (field, value) in limit_fields(limits) {
            call.arg(field).arg(value);
        }
        let written: i64 = call.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(written == 1)
    }

    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        for key in &self.keys {
            call.key(key);
        }
        call
    }

    /// Runs a script; if Redis lost the room (restarted without its data), writes the
    /// limits back and runs it once more.
    async fn run(&self, call: &ScriptInvocation<'_>) -> Result<Value, StoreError> {
        match call.invoke_async::<Value>(&mut self.conn.clone()).await {
            Err(e) if e.code() == Some(NO_LIMITS) => {
                tracing::warn!("the room's state is gone from Redis; writing its limits back");
                self.seed().await?;
                call.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }

    fn forget_cache(&self) {
        *lock(&self.cached) = None;
    }

    fn random_u128(&self) -> u128 {
        let mut id = [0u8; 16];
        // The OS random source only fails if it is gone; the pass is signed either way.
        let _ = self.random.fill(&mut id);
        u128::from_be_bytes(id)
    }

    fn new_session(&self, id: u128, now_ms: u64, expires_ms: u64) -> Session {
        self.sessions.insert(id, now_ms, expires_ms);
        Session { id, created_ms: now_ms, expires_ms }
    }

    pub async fn join(&self, client: ClientKey, now_ms: u64) -> Result<JoinOutcome, StoreError> {
        let id = self.random_u128();
        let mut call = self.invocation(&JOIN);
        call.arg(self.at(now_ms)).arg(hex(&client.0)).arg(format!("{id:032x}")).arg(self.seeds.next());
        call.arg(self.candidate());
        let answer = ints(&self.run(&call).await?, "join")?;
        self.forget_cache();
        let &[kind, value, generation] = answer.as_slice() else { return Err(malformed("join")) };
        self.saw_generation(generation);
        let ticket = TicketRef { generation: to_u64(generation), number: to_u64(value) };
        match kind {
            1 => Ok(JoinOutcome::Admitted(self.new_session(id, now_ms, to_u64(value)))),
            0 => Ok(JoinOutcome::Queued { ticket, reused: false }),
            2 => Ok(JoinOutcome::Queued { ticket, reused: true }),
            _ => Err(malformed("join")),
        }
    }

    /// See [`super::RoomStore::poll_as`].
    pub async fn poll(
        &self,
        ticket: TicketRef,
        joined_ms: Option<u64>,
        pace: Pace,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        // The fixed pace asks for the store's exact answer (see `waiting`): always Redis.
        let ttl_ms = self.waiter_ttl_ms.load(Relaxed);
        let local = (pace != Pace::FIXED)
            .then(|| self.waiters.answer(ticket, joined_ms, pace, ttl_ms, self.lease_ms, now_ms))
            .flatten();
        if let Some(place) = local {
            return Ok(PollOutcome::Waiting(place));
        }
        let outcome = self.poll_exact(ticket, joined_ms, pace, now_ms).await;
        if !matches!(outcome, Ok(PollOutcome::Waiting(_))) {
            self.waiters.forget(ticket.number);
        }
        outcome
    }

    /// [`Self::poll`] without this node's view: always one call (`lua/poll.lua`). What it
    /// answers a paced poll is remembered, so the next polls of the same waiter need none.
    async fn poll_exact(
        &self,
        ticket: TicketRef,
        joined_ms: Option<u64>,
        pace: Pace,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        let id = self.random_u128();
        let mut call = self.invocation(&POLL);
        call.arg(self.at(now_ms)).arg(ticket.number).arg(format!("{id:032x}")).arg(ticket.generation);
        call.arg(joined_ms.map(|ms| ms.to_string()).unwrap_or_default());
        // The fixed pace is sent as none (credit 0), which poll.lua reads as waiter_ttl alone.
        let paced = pace != Pace::FIXED;
        call.arg(pace.ms_per_admission).arg(if paced { pace.prequeue_secs } else { 0 });
        let answer = self.run(&call).await?;
        // A claim answers with the session's id: this poll's, or the one of an earlier claim
        // of the same ticket whose answer was lost.
        if let Value::Array(parts) = &answer {
            if let [Value::Int(1), expires, waited, session] = parts.as_slice() {
                let session = string(session).and_then(|s| u128::from_str_radix(&s, 16).ok());
                let (Some(session), Some(expires), Some(waited)) = (session, int(expires), int(waited)) else {
                    return Err(malformed("poll"));
                };
                self.forget_cache();
                return Ok(PollOutcome::Admitted {
                    session: self.new_session(session, now_ms, to_u64(expires)),
                    waited_ms: to_u64(waited),
                });
            }
        }
        if let Value::Array(parts) = &answer {
            if let [Value::Int(2), rest @ ..] = parts.as_slice() {
                return self.waiting(ticket, rest, pace, now_ms);
            }
        }
        match ints(&answer, "poll")?.as_slice() {
            [0] => Ok(PollOutcome::Gone),
            [3] => Ok(PollOutcome::OtherGeneration),
            _ => Err(malformed("poll")),
        }
    }

    /// A waiting answer of `lua/poll.lua`: {ahead, joined, prequeue, away_ahead, restoring,
    /// interval, slot, grants so far}, remembered for this node's next answers.
    fn waiting(&self, ticket: TicketRef, parts: &[Value], pace: Pace, now_ms: u64) -> Result<PollOutcome, StoreError> {
        let bad = || malformed("poll");
        let [ahead, joined, prequeue, away_ahead, restoring, poll_secs, slot, granted] = parts else {
            return Err(bad());
        };
        let number = |v: &Value| int(v).map(to_u64).ok_or_else(bad);
        let granted = number(granted)?;
        let place = Place {
            ahead: number(ahead)?,
            away_ahead: number(away_ahead)?,
            joined_ms: number(joined)?,
            prequeue: number(prequeue)? == 1,
            restoring: number(restoring)? == 1,
            poll_secs: number(poll_secs)?,
            granted: Some(granted),
        };
        let slot: f64 = string(slot).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let ttl = Duration::from_millis(self.waiter_ttl_ms.load(Relaxed));
        let present = place.ahead - place.away_ahead.min(place.ahead);
        let allowance = millis(ttl) + pace.credit_ms(present, place.prequeue, ttl);
        // Only a paced poll (a waiter's page or app) is answered locally next time; the fixed
        // pace is for callers that want the store's exact answer each time.
        if pace != Pace::FIXED {
            self.waiters.learn(ticket, Learned { place, slot, granted }, allowance, now_ms);
        }
        Ok(PollOutcome::Waiting(place))
    }

    /// See [`super::RoomStore::restore`] and `lua/restore.lua`.
    pub async fn restore(&self, returning: Returning, now_ms: u64) -> Result<TicketRef, StoreError> {
        let window = lock(&self.known_limits).waiter_ttl;
        let mut call = self.invocation(&RESTORE);
        call.arg(self.at(now_ms))
            .arg(hex(&returning.client.0))
            .arg(format!("{}:{}", returning.old.generation, returning.old.number))
            .arg(returning.joined_ms)
            .arg(self.candidate())
            .arg(millis(window).min(RESTORE_WINDOW_MAX_MS))
            .arg(self.seeds.next());
        let answer = ints(&self.run(&call).await?, "restore")?;
        self.forget_cache();
        let &[number, generation] = answer.as_slice() else { return Err(malformed("restore")) };
        self.saw_generation(generation);
        Ok(TicketRef { generation: to_u64(generation), number: to_u64(number) })
    }

    /// See [`super::RoomStore::adopt`] and `lua/adopt.lua`.
    pub async fn adopt(&self, admitted: Admitted, now_ms: u64) -> Result<bool, StoreError> {
        let mut call = self.invocation(&ADOPT);
        call.arg(self.at(now_ms))
            .arg(format!("{:032x}", admitted.session))
            .arg(admitted.generation)
            .arg(admitted.created_ms)
            .arg(admitted.expires_ms)
            .arg(self.candidate());
        let adopted = int(&self.run(&call).await?).ok_or_else(|| malformed("adopt"))? == 1;
        if adopted {
            self.sessions.insert(admitted.session, now_ms, admitted.expires_ms);
            self.forget_cache();
        }
        Ok(adopted)
    }

    /// Answered from this node's map when it can (no Redis call); see [`LocalSessions`].
    pub async fn touch(&self, id: u128, now_ms: u64) -> Result<bool, StoreError> {
        if self.sessions.touch(id, now_ms, self.session_idle_ms.load(Relaxed)) == Local::Live {
            return Ok(true);
        }
        let mut call = self.invocation(&TOUCH);
        call.arg(self.at(now_ms)).arg(format!("{id:032x}"));
        let answer = ints(&self.run(&call).await?, "touch")?;
        match answer.as_slice() {
            [1, expires, seen] => {
                self.sessions.insert(id, to_u64(*seen), to_u64(*expires));
                Ok(true)
            }
            [0] => {
                self.sessions.remove(id);
                self.forget_cache();
                Ok(false)
            }
            _ => Err(malformed("touch")),
        }
    }

    /// See [`super::RoomStore::spend`]: one key per answered challenge, gone when the
    /// challenge expires, in the room's hash slot.
    pub async fn spend(&self, salt: u128, until_ms: u64, now_ms: u64) -> Result<bool, StoreError> {
        let room = self.keys[0].strip_suffix(":limits").unwrap_or(&self.keys[0]);
        let key = format!("{room}:spent:{salt:032x}");
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(until_ms.saturating_sub(now_ms).max(1))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    pub async fn end_session(&self, id: u128) -> Result<bool, StoreError> {
        self.sessions.remove(id);
        let mut call = self.invocation(&END_SESSION);
        call.arg(format!("{id:032x}"));
        // Ending twice is harmless, and the first call after Redis came back fails on the
        // dropped connection (which it replaces): a logout is worth a second try, or the
        // session would hold its place until idle.
        let ended: i64 = match call.invoke_async(&mut self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                call.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?
            }
            other => other.map_err(unavailable)?,
        };
        self.forget_cache();
        Ok(ended == 1)
    }

    pub async fn drain(&self, oldest: Option<u64>) -> Result<u64, StoreError> {
        let mut call = self.invocation(&DRAIN);
        call.arg(oldest.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)));
        let ids: Vec<String> = call.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        for id in &ids {
            if let Ok(id) = u128::from_str_radix(id, 16) {
                self.sessions.remove(id);
            }
        }
        self.forget_cache();
        Ok(ids.len() as u64)
    }

    /// Every node calls this every tick: it writes the node's session uses, and, on the
    /// node holding the admitter lease, admits. One Redis call.
    pub async fn tick(&self, now_ms: u64) -> Result<TickReport, StoreError> {
        self.tick_with(now_ms, &super::TickInput::PLAIN).await
    }

    /// [`Self::tick`] with what the admitter brings (see [`super::TickInput`]).
    pub async fn tick_with(&self, now_ms: u64, input: &super::TickInput<'_>) -> Result<TickReport, StoreError> {
        let uses = self.sessions.take_dirty();
        let heard = self.waiters.take_heard();
        let token = lock(&self.token).clone();
        let mut call = self.invocation(&TICK);
        call.arg(self.at(now_ms)).arg(&self.node).arg(&token).arg(self.lease_ms).arg(TICK_BOUND).arg(self.candidate());
        // Heartbeats count only in the generation they were heard in.
        call.arg(self.generation.load(Relaxed)).arg(heard.len());
        for (number, credit) in &heard {
            call.arg(*number).arg(*credit);
        }
        for (id, seen) in &uses {
            call.arg(format!("{id:032x}")).arg(self.at(*seen));
        }
        call.arg(input.release_pm).arg(u8::from(input.take_answers)).arg(encode_answers(input.answers));
        let answer = match self.run(&call).await {
            Ok(answer) => answer,
            Err(e) => {
                self.sessions.restore(&uses);
                self.waiters.restore_heard(heard);
                // Unreachable: polls ask Redis themselves, and are told it is down.
                self.waiters.lost_view();
                return Err(e);
            }
        };
        let Value::Array(parts) = answer else { return Err(malformed("tick")) };
        let [new_token, counts, figures, ended, waits, limits, away_ms, generation, totals, view, answers] =
            parts.as_slice()
        else {
            return Err(malformed("tick"));
        };
        let generation = int(generation).ok_or_else(|| malformed("tick generation"))?;
        self.saw_generation(generation);
        let view = parse_view(view, to_u64(generation), now_ms)?;
        let undrawn = view.prequeue_from.is_some();
        self.waiters.set_view(view);
        let new_token = string(new_token).ok_or_else(|| malformed("tick token"))?;
        let lease = self.lease_changed(&token, &new_token);
        let holder = !new_token.is_empty();
        *lock(&self.token) = new_token;

        let counts = ints(counts, "tick counts")?;
        let [granted, abandoned, expired_grants, expired_sessions, away, returned] = counts.as_slice() else {
            return Err(malformed("tick counts"));
        };
        let this_tick = Totals {
            abandoned: to_u64(*abandoned),
            away: to_u64(*away),
            returned: to_u64(*returned),
            expired_grants: to_u64(*expired_grants),
        };
        let counted = self.counted(to_u64(generation), holder, Totals::from_answer(totals, "tick totals")?, this_tick);
        let Value::Array(ended) = ended else { return Err(malformed("tick ended")) };
        for id in ended.iter().filter_map(string) {
            if let Ok(id) = u128::from_str_radix(&id, 16) {
                self.sessions.remove(id);
            }
        }
        let limits = parse_limits(limits)?;
        self.session_idle_ms.store(millis(limits.session_idle), Relaxed);
        self.waiter_ttl_ms.store(millis(limits.waiter_ttl), Relaxed);
        *lock(&self.known_limits) = limits.clone();
        let figures = parse_figures(figures)?;
        let open = limits.opens_at_ms.is_none_or(|opens| now_ms >= opens);
        *lock(&self.cached) = Some(Cached { now_ms, figures, limits });
        // Unreachable midway, the draw is made again in full at the next tick.
        let drawn = holder && undrawn && open && {
            self.draw_prequeue(now_ms).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the pre-queue's draw was interrupted; it is made again at the next tick");
                false
            })
        };
        if self.ticks.fetch_add(1, Relaxed) % SWEEP_EVERY == 0 {
            self.sessions.sweep(now_ms, self.session_idle_ms.load(Relaxed));
            self.waiters.sweep(now_ms);
        }
        Ok(TickReport {
            granted: to_u64(*granted),
            abandoned: counted.abandoned,
            expired_grants: counted.expired_grants,
            expired_sessions: to_u64(*expired_sessions),
            waits_ms: ints(waits, "tick waits")?.into_iter().map(to_u64).collect(),
            opened: drawn,
            away: counted.away,
            returned: counted.returned,
            away_ms: ints(away_ms, "tick away")?.into_iter().map(to_u64).collect(),
            lease,
            // Empty unless this node took them (it holds the lease and asked).
            answers: Some(ints(answers, "tick answers")?.into_iter().map(to_u64).collect::<Vec<_>>())
                .filter(|a| !a.is_empty()),
        })
    }

    /// The lease holder draws the pre-queue once the event opened (DESIGN §3, `draw.rs`):
    /// its tickets move to the slots of the seed's order, a batch per call. Nobody is granted
    /// until the last batch, which opens the line (`lua/tick.lua`, `lua/draw_place.lua`); the
    /// next tick grants in the drawn order. True once drawn.
    async fn draw_prequeue(&self, now_ms: u64) -> Result<bool, StoreError> {
        let mut call = self.invocation(&DRAW_BEGIN);
        call.arg(self.at(now_ms)).arg(self.seeds.next());
        let Value::Array(parts) = self.run(&call).await? else { return Err(malformed("draw")) };
        let [from, end, seed] = parts.as_slice() else { return Ok(false) };
        let (Some(from), Some(end), Some(seed)) = (int(from), int(end), string(seed)) else {
            return Err(malformed("draw"));
        };
        let (from, end) = (to_u64(from), to_u64(end));
        let started = std::time::Instant::now();
        let order = super::draw::order(&seed, from, end);
        let batches = order.len().div_ceil(DRAW_BATCH).max(1);
        for (i, batch) in order.chunks(DRAW_BATCH).chain(order.is_empty().then_some(&[][..])).enumerate() {
            let mut call = self.invocation(&DRAW_PLACE);
            call.arg(self.at(now_ms)).arg(from).arg(end).arg(u8::from(i + 1 == batches));
            call.arg(lock(&self.token).clone()).arg(self.lease_ms);
            let place = from + (i * DRAW_BATCH) as u64;
            for (k, ticket) in batch.iter().enumerate() {
                call.arg(*ticket).arg(place + k as u64);
            }
            if int(&self.run(&call).await?) != Some(1) {
                return Ok(false);
            }
        }
        self.forget_cache();
        tracing::info!(tickets = order.len(), ms = started.elapsed().as_millis() as u64, "the pre-queue was drawn");
        Ok(true)
    }

    /// The room's draw as published, with the admitter's walk through it.
    pub async fn draw(&self, now_ms: u64) -> Result<(Option<Draw>, Vec<Step>), StoreError> {
        let mut call = self.invocation(&DRAW_READ);
        call.arg(self.at(now_ms)).arg(self.seeds.next());
        let Value::Array(parts) = self.run(&call).await? else { return Err(malformed("draw")) };
        let [seed, committed, first, end, drawn, walk] = parts.as_slice() else { return Err(malformed("draw")) };
        let number = |v: &Value| string(v).and_then(|s| s.parse::<u64>().ok());
        let draw = string(seed).filter(|s| !s.is_empty()).map(|seed| Draw {
            seed,
            committed_ms: number(committed).unwrap_or_default(),
            drawn: match (number(first), number(end), number(drawn)) {
                (Some(first), Some(end), Some(at_ms)) => Some(Drawn { first, end, at_ms }),
                _ => None,
            },
        });
        let Value::Array(walk) = walk else { return Err(malformed("draw walk")) };
        let steps = walk.iter().filter_map(string).filter_map(|s| parse_step(&s)).collect();
        Ok((draw, steps))
    }

    /// What an answer's tick counted, from the room's running `totals`: the difference from
    /// the totals of this node's last answer as the holder (same generation), so the counts
    /// of lost answers in between are in it. Only the lease holder counts (the others' ticks
    /// count nothing, and two nodes must not count the same). A node that has just become
    /// the holder, or sees a new generation, has no earlier totals to go by: it counts this
    /// tick's own share and takes the totals as its baseline.
    fn counted(&self, generation: u64, holder: bool, totals: Totals, this_tick: Totals) -> Totals {
        let mut last = lock(&self.totals);
        let counted = match *last {
            _ if !holder => Totals::default(),
            Some((seen, before)) if seen == generation => totals.since(before),
            _ => this_tick,
        };
        *last = holder.then_some((generation, totals));
        counted
    }

    /// Logs a hand-over of the admitter lease; returns whether this node now holds it.
    fn lease_changed(&self, old: &str, new: &str) -> Option<bool> {
        if old == new {
            return None;
        }
        match (old.is_empty(), new.is_empty()) {
            (_, false) => {
                tracing::info!(node = %self.node, lease = %new, "this node runs the admitter");
                Some(true)
            }
            (false, true) => {
                tracing::info!(node = %self.node, "another node runs the admitter now");
                Some(false)
            }
            (true, true) => None,
        }
    }

    /// Cached from this tick when asked for the same instant; otherwise read from Redis.
    pub async fn figures(&self, now_ms: u64) -> Result<RoomFigures, StoreError> {
        if let Some(cached) = lock(&self.cached).as_ref().filter(|c| c.now_ms == now_ms) {
            return Ok(cached.figures);
        }
        let mut call = self.invocation(&FIGURES);
        call.arg(self.at(now_ms));
        parse_figures(&self.run(&call).await?)
    }

    pub async fn limits(&self) -> Result<RoomLimits, StoreError> {
        if let Some(cached) = lock(&self.cached).as_ref() {
            return Ok(cached.limits.clone());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.keys[0]).arg(&LIMIT_FIELDS[..]);
        let value: Value = cmd.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        match parse_limits(&value) {
            Ok(limits) => Ok(limits),
            // Not written yet (or lost with Redis's data): this node's are the room's.
            Err(_) => Ok(lock(&self.known_limits).clone()),
        }
    }

    /// Writes only the named fields, in one script (no read-modify-write between nodes); if
    /// the room's limits are gone from Redis, writes them whole. Returns the limits in force.
    pub async fn update_limits(&self, limits: &RoomLimits, fields: &[&str]) -> Result<RoomLimits, StoreError> {
        let mut call = self.invocation(&SET_LIMITS);
        call.arg("2");
        for (field, value) in limit_fields(limits) {
            if fields.contains(&field) {
                call.arg(field).arg(value);
            }
        }
        let written: i64 = call.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        if written < 0 {
            self.write_limits(limits, false).await?;
        }
        self.forget_cache();
        let now = self.limits().await?;
        self.session_idle_ms.store(millis(now.session_idle), Relaxed);
        *lock(&self.known_limits) = now.clone();
        Ok(now)
    }

    pub async fn set_limits(&self, limits: RoomLimits) -> Result<(), StoreError> {
        self.write_limits(&limits, false).await?;
        self.session_idle_ms.store(millis(limits.session_idle), Relaxed);
        *lock(&self.known_limits) = limits;
        self.forget_cache();
        Ok(())
    }

    /// Forgets what this node knows of sessions (tests: a node restarted).
    pub fn forget_local_sessions(&self) {
        self.sessions.clear();
    }
}

const LIMIT_FIELDS: [&str; 14] = [
    "max_active",
    "admit_per_minute",
    "session_idle",
    "session_max",
    "waiter_ttl",
    "claim_window",
    "mode",
    "opens_at",
    "tickets_per_client",
    "message",
    "hold",
    "off_until",
    "off_then",
    "adaptive_pinned",
];

fn limit_fields(l: &RoomLimits) -> [(&'static str, String); 14] {
    [
        ("max_active", l.max_active.to_string()),
        ("admit_per_minute", l.admit_per_minute.to_string()),
        ("session_idle", millis(l.session_idle).to_string()),
        ("session_max", millis(l.session_max).to_string()),
        ("waiter_ttl", millis(l.waiter_ttl).to_string()),
        ("claim_window", millis(l.claim_window).to_string()),
        ("mode", l.mode.as_str().to_string()),
        ("opens_at", l.opens_at_ms.map(|ms| ms.to_string()).unwrap_or_default()),
        ("tickets_per_client", l.tickets_per_client.to_string()),
        ("message", l.message.clone().unwrap_or_default()),
        ("hold", millis(l.hold).to_string()),
        ("off_until", l.break_glass.map(|b| b.until_ms.to_string()).unwrap_or_default()),
        ("off_then", l.break_glass.map(|b| b.then.as_str().to_string()).unwrap_or_default()),
        ("adaptive_pinned", if l.adaptive_pinned { "1" } else { "" }.to_string()),
    ]
}

fn parse_limits(v: &Value) -> Result<RoomLimits, StoreError> {
    let Value::Array(fields) = v else { return Err(malformed("limits")) };
    let text: Vec<Option<String>> = fields.iter().map(string).collect();
    let [max_active, per_minute, idle, max, ttl, claim, mode, opens, cap, message, hold, off_until, off_then, pinned] =
        text.as_slice()
    else {
        return Err(malformed("limits"));
    };
    let num = |f: &Option<String>| f.as_deref().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| malformed("limits"));
    Ok(RoomLimits {
        max_active: num(max_active)?,
        admit_per_minute: num(per_minute)?,
        session_idle: Duration::from_millis(num(idle)?),
        session_max: Duration::from_millis(num(max)?),
        waiter_ttl: Duration::from_millis(num(ttl)?),
        claim_window: Duration::from_millis(num(claim)?),
        // Rooms written before `hold` existed get the default.
        hold: Duration::from_millis(hold.as_deref().and_then(|s| s.parse().ok()).unwrap_or(600_000)),
        mode: mode.as_deref().and_then(RoomMode::parse).ok_or_else(|| malformed("limits mode"))?,
        opens_at_ms: opens.as_deref().and_then(|s| s.parse().ok()),
        tickets_per_client: u32::try_from(num(cap)?).unwrap_or(u32::MAX),
        message: message.clone().filter(|m| !m.is_empty()),
        // Rooms written before break-glass existed have neither field.
        break_glass: match (
            off_until.as_deref().and_then(|s| s.parse().ok()),
            off_then.as_deref().and_then(RoomMode::parse),
        ) {
            (Some(until_ms), Some(then)) => Some(BreakGlass { until_ms, then }),
            _ => None,
        },
        // Rooms written before pinning was shared have no field: not pinned.
        adaptive_pinned: pinned.as_deref() == Some("1"),
    })
}

/// A node's answers for `tick.lua`: `slot:count` for each slot that is not 0, so a node with
/// nothing forwarded sends an empty string.
fn encode_answers(answers: &[u64]) -> String {
    let mut out = String::new();
    for (i, n) in answers.iter().enumerate().filter(|(_, n)| **n > 0) {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{i}:{n}");
    }
    out
}

fn parse_figures(v: &Value) -> Result<RoomFigures, StoreError> {
    match ints(v, "figures")?.as_slice() {
        [waiting, active, pending, per_minute, held, returned_total, abandoned_total] => Ok(RoomFigures {
            waiting: to_u64(*waiting),
            held: to_u64(*held),
            returned_total: to_u64(*returned_total),
            abandoned_total: to_u64(*abandoned_total),
            active: to_u64(*active),
            pending: to_u64(*pending),
            measured_per_minute: u64::try_from(*per_minute).ok(),
        }),
        _ => Err(malformed("figures")),
    }
}

/// The tick's view of the line: {cursor or '', grants so far, pre-queue start or '', restoring}.
fn parse_view(v: &Value, generation: u64, now_ms: u64) -> Result<LineView, StoreError> {
    let Value::Array(parts) = v else { return Err(malformed("tick view")) };
    let [cursor, granted, prequeue_from, restoring, prequeue_end] = parts.as_slice() else {
        return Err(malformed("tick view"));
    };
    let text = |v: &Value| string(v).filter(|s| !s.is_empty());
    Ok(LineView {
        generation,
        cursor: text(cursor).and_then(|s| s.parse().ok()),
        granted: to_u64(int(granted).ok_or_else(|| malformed("tick view"))?),
        prequeue_from: text(prequeue_from).and_then(|s| s.parse().ok()),
        prequeue_end: text(prequeue_end).and_then(|s| s.parse().ok()),
        restoring: int(restoring) == Some(1),
        at_ms: now_ms,
    })
}

/// A walk entry of `lua/tick.lua`: "position:ticket:admitted".
fn parse_step(s: &str) -> Option<Step> {
    let mut parts = s.split(':').map(str::parse::<u64>);
    let (Some(Ok(position)), Some(Ok(ticket)), Some(Ok(admitted))) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    Some(Step { position, ticket, admitted: admitted == 1 })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => string(other)?.parse().ok(),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<i64>, StoreError> {
    let Value::Array(items) = v else { return Err(malformed(what)) };
    items
        .iter()
        .map(|item| match item {
            Value::Int(n) => Ok(*n),
            other => string(other).and_then(|s| s.parse().ok()).ok_or_else(|| malformed(what)),
        })
        .collect()
}
