//! All admission state goes through here (DESIGN §8): one interface, implemented in memory
//! (one node) and in Redis (several nodes, one queue). Callers never know which.
//!
//! Every operation takes `now` (Unix milliseconds) so the semantics can be tested exactly,
//! and returns a `Result`, because a shared store can be unreachable.

pub mod draw;
pub mod memory;
pub mod pace;
pub mod redis;

use crate::config::{RoomConfig, RoomMode};
use crate::identity::ClientKey;
pub use pace::Pace;
use std::sync::Arc;
use std::time::Duration;

/// A room's limits (DESIGN §3), all changeable while running.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomLimits {
    pub max_active: u64,
    pub admit_per_minute: u64,
    pub session_idle: Duration,
    pub session_max: Duration,
    /// A waiter that does not poll for this long is *away*: skipped, its place held.
    pub waiter_ttl: Duration,
    pub claim_window: Duration,
    /// How long an away waiter's place is held, counted from its last poll (DESIGN §3,
    /// "Stepping away keeps the place"); never shorter than `waiter_ttl` in effect.
    pub hold: Duration,
    pub mode: RoomMode,
    /// Event start in Unix milliseconds: before it, everyone is pre-queued.
    pub opens_at_ms: Option<u64>,
    /// Shown to waiters (e.g. why the room is paused).
    pub message: Option<String>,
    /// Live tickets one client key may hold; above it the newest is reused.
    pub tickets_per_client: u32,
    /// A break-glass `off` with a deadline: when it passes, the room returns to the mode
    /// it had (kept in the store, so every node and a restart honour it).
    pub break_glass: Option<BreakGlass>,
    /// An operator has pinned `admit_per_minute`: the adaptive controller rests until
    /// unpinned (kept in the store, so whichever node runs the controller obeys it).
    pub adaptive_pinned: bool,
}

/// `mode = off` until `until_ms`, then `then`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakGlass {
    pub until_ms: u64,
    pub then: RoomMode,
}

impl RoomLimits {
    pub fn from_config(room: &RoomConfig, tickets_per_client: u32) -> Self {
        Self {
            max_active: room.max_active,
            admit_per_minute: room.admit_per_minute,
            session_idle: room.session_idle,
            session_max: room.session_max,
            waiter_ttl: room.waiter_ttl,
            claim_window: room.claim_window,
            hold: room.hold,
            mode: room.mode,
            opens_at_ms: room.opens_at.and_then(|s| u64::try_from(s).ok()).map(|s| s * 1000),
            message: room.message.clone(),
            tickets_per_client,
            break_glass: None,
            adaptive_pinned: false,
        }
    }
}

impl RoomLimits {
    /// The fields (by their store names) in which `self` differs from `old`: what a change
    /// writes, so that two operators changing different fields at once both keep theirs.
    pub fn changed_from(&self, old: &RoomLimits) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("max_active", self.max_active != old.max_active);
        check("admit_per_minute", self.admit_per_minute != old.admit_per_minute);
        check("session_idle", self.session_idle != old.session_idle);
        check("session_max", self.session_max != old.session_max);
        check("waiter_ttl", self.waiter_ttl != old.waiter_ttl);
        check("claim_window", self.claim_window != old.claim_window);
        check("mode", self.mode != old.mode);
        check("opens_at", self.opens_at_ms != old.opens_at_ms);
        check("tickets_per_client", self.tickets_per_client != old.tickets_per_client);
        check("message", self.message != old.message);
        check("hold", self.hold != old.hold);
        check("adaptive_pinned", self.adaptive_pinned != old.adaptive_pinned);
        // One field here, two in Redis: written together, so never half a break-glass.
        if self.break_glass != old.break_glass {
            changed.extend(["off_until", "off_then"]);
        }
        changed
    }

    /// Copies the named `fields` from `new` into `self`.
    pub fn take_fields(&mut self, new: &RoomLimits, fields: &[&str]) {
        for field in fields {
            match *field {
                "max_active" => self.max_active = new.max_active,
                "admit_per_minute" => self.admit_per_minute = new.admit_per_minute,
                "session_idle" => self.session_idle = new.session_idle,
                "session_max" => self.session_max = new.session_max,
                "waiter_ttl" => self.waiter_ttl = new.waiter_ttl,
                "claim_window" => self.claim_window = new.claim_window,
                "mode" => self.mode = new.mode,
                "opens_at" => self.opens_at_ms = new.opens_at_ms,
                "tickets_per_client" => self.tickets_per_client = new.tickets_per_client,
                "message" => self.message = new.message.clone(),
                "hold" => self.hold = new.hold,
                "adaptive_pinned" => self.adaptive_pinned = new.adaptive_pinned,
                "off_until" | "off_then" => self.break_glass = new.break_glass,
                _ => {}
            }
        }
    }
}

/// An admitted session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: u128,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// A ticket as the store knows it: a number within one *generation* of the room's state.
///
/// A generation is a random id of the state's lifetime: the memory store's process, or the
/// Redis keyspace's (created with it, gone with it). Numbers start again in a new generation,
/// so a number alone could name a stranger's place after a restart; with its generation it
/// never does (DESIGN §8, "Generations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketRef {
    /// 0: not known (a ticket cookie from before generations existed).
    pub generation: u64,
    pub number: u64,
}

/// What became of a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Nobody waits and there is room: admitted at once.
    Admitted(Session),
    /// In line with this ticket (`reused`: the client was at its cap and got its newest one).
    Queued { ticket: TicketRef, reused: bool },
}

/// A waiter from an earlier generation, as its signed ticket tells: put back in line by when
/// it joined (see [`RoomStore::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Returning {
    pub client: ClientKey,
    /// The ticket it holds, of another generation.
    pub old: TicketRef,
    pub joined_ms: u64,
}

/// A visitor admitted in an earlier generation, as its signed pass tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub session: u128,
    /// The generation the pass was issued in (0: not known).
    pub generation: u64,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// A waiter's place, as of one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Waiters in line ahead of this one, those away with a held place included: a place
    /// held ahead is a claim ahead, so counting it keeps the number from ever growing.
    pub ahead: u64,
    /// Of `ahead`, those away now (each may come back, or be abandoned after `hold`).
    pub away_ahead: u64,
    pub joined_ms: u64,
    /// Waiting for `opens_at`: the order is not drawn yet.
    pub prequeue: bool,
    /// Put back after a restart, in the restore window: the order of those coming back is
    /// settled when it ends, so no position is known yet.
    pub restoring: bool,
    /// When to poll next, in seconds: the interval its deadline was set by (see [`Pace`]).
    pub poll_secs: u64,
    /// The grants the line had counted when `ahead` was (Redis; None in memory, where one
    /// node answers every poll): see [`crate::room::tokens::Shown`].
    pub granted: Option<u64>,
}

/// The answer to a waiter's poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    Waiting(Place),
    /// The turn came and is claimed now: a new session.
    Admitted {
        session: Session,
        waited_ms: u64,
    },
    /// Unknown, abandoned or expired ticket: the visitor must join again.
    Gone,
    /// A ticket of another generation: its number means nothing here. The room restores it
    /// by its join time ([`RoomStore::restore`]) if it is still within `hold`.
    OtherGeneration,
}

/// What one admitter tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub granted: u64,
    /// Away longer than `hold`: the place is given up.
    pub abandoned: u64,
    /// Found away in this tick (no poll for `waiter_ttl`, or a turn not claimed in time):
    /// skipped, their places held.
    pub away: u64,
    /// Away waiters that polled again within `hold` since the last tick.
    pub returned: u64,
    /// How long each of those returns had been away, in milliseconds.
    pub away_ms: Vec<u64>,
    pub expired_grants: u64,
    pub expired_sessions: u64,
    /// Join-to-grant waits of the granted waiters, in milliseconds.
    pub waits_ms: Vec<u64>,
    /// The pre-queue was drawn into a random order in this tick.
    pub opened: bool,
    /// With several nodes: this node took the room's admitter lease (`Some(true)`) or lost
    /// it to another node (`Some(false)`) in this tick.
    pub lease: Option<bool>,
    /// The forwarded answers of every node since the last take, when [`TickInput`] asked to
    /// take them and this node admits (holds the lease): `[errors, latency buckets...]`.
    pub answers: Option<Vec<u64>>,
}

/// What a node brings to its tick besides the time.
#[derive(Debug, Clone, Copy)]
pub struct TickInput<'a> {
    /// The budget refills at this per mille of `admit_per_minute` (no-show compensation,
    /// see `room::no_show`); 1000 for the rate as set.
    pub release_pm: u64,
    /// This node's forwarded answers since its last tick, as `room::adaptive::Answers`
    /// (empty without an adaptive outflow): added to the room's sums.
    pub answers: &'a [u64],
    /// Take the sums (the adaptive controller's period is due).
    pub take_answers: bool,
}

impl TickInput<'_> {
    /// A plain tick: the rate as set, no answers.
    pub const PLAIN: TickInput<'static> = TickInput { release_pm: 1000, answers: &[], take_answers: false };
}

/// A room's live figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomFigures {
    /// Waiters in line, those away with a held place included.
    pub waiting: u64,
    /// Of `waiting`, those away now whose place is held.
    pub held: u64,
    /// Away waiters that came back, and those abandoned after `hold`, since the room's state
    /// began: the share that comes back is what the ETA expects of the away ahead.
    pub returned_total: u64,
    pub abandoned_total: u64,
    pub active: u64,
    pub pending: u64,
    /// Admissions per minute, measured over the last minute (or less, early on).
    pub measured_per_minute: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// One room's admission state, wherever it lives.
#[derive(Clone)]
pub enum RoomStore {
    Memory(Arc<memory::MemoryRoom>),
    Redis(Arc<redis::RedisRoom>),
}

impl RoomStore {
    /// A room in this process's memory.
    pub fn memory(limits: RoomLimits, now_ms: u64) -> Self {
        Self::Memory(Arc::new(memory::MemoryRoom::new(limits, now_ms)))
    }

    /// A room in memory whose admitter ticks every `tick` (a longer pause is an outage).
    pub fn memory_ticking(limits: RoomLimits, tick: Duration, now_ms: u64) -> Self {
        Self::Memory(Arc::new(memory::MemoryRoom::new(limits, now_ms).with_tick(tick)))
    }

    /// A room in Redis, shared with every node on the same Redis; see [`redis::RedisRoom`].
    pub fn redis(room: redis::RedisRoom) -> Self {
        Self::Redis(Arc::new(room))
    }

    /// Admits a newcomer at once when nobody waits and capacity allows, else gives a ticket.
    pub async fn join(&self, client: ClientKey, now_ms: u64) -> Result<JoinOutcome, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.join(client, now_ms)),
            Self::Redis(room) => room.join(client, now_ms).await,
        }
    }

    /// A waiter's heartbeat and status; claims the turn when it has come.
    /// With the fixed pace: the waiter is away after `waiter_ttl` without a poll.
    pub async fn poll(&self, ticket: TicketRef, now_ms: u64) -> Result<PollOutcome, StoreError> {
        self.poll_as(ticket, None, Pace::FIXED, now_ms).await
    }

    /// [`Self::poll`] for a ticket whose holder joined at `joined_ms` (as its signed cookie
    /// says), told to poll at `pace`: it stays present for as long as its interval allows.
    /// A place recorded with another join time is not its own (a Redis failover lost the
    /// join, and the number went to someone else), so it is [`PollOutcome::OtherGeneration`].
    /// The memory store never gives a number twice and needs no check.
    pub async fn poll_as(
        &self,
        ticket: TicketRef,
        joined_ms: Option<u64>,
        pace: Pace,
        now_ms: u64,
    ) -> Result<PollOutcome, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.poll(ticket, now_ms, pace)),
            Self::Redis(room) => room.poll(ticket, joined_ms, pace, now_ms).await,
        }
    }

    /// A waiter whose poll was refused by the poll budget is present all the same (DESIGN
    /// §6: a refused poll counts as a heartbeat). It costs no store call: the memory store
    /// records it at once, the Redis store with this node's next tick.
    pub fn heartbeat(&self, ticket: TicketRef, now_ms: u64) {
        match self {
            Self::Memory(room) => room.heartbeat(ticket, now_ms),
            Self::Redis(room) => room.heartbeat(ticket),
        }
    }

    /// Puts a waiter whose ticket is of an earlier generation back in line by its original
    /// join time: ahead of everyone who joined later, behind everyone who joined earlier.
    /// Idempotent: the same old ticket always gets the same new one.
    pub async fn restore(&self, returning: Returning, now_ms: u64) -> Result<TicketRef, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.restore(returning, now_ms)),
            Self::Redis(room) => room.restore(returning, now_ms).await,
        }
    }

    /// Spends an answered challenge's salt until `until_ms` (DESIGN §3, "Bots pay"): true
    /// the first time on any node, so each answer yields one ticket.
    pub async fn spend(&self, salt: u128, until_ms: u64, now_ms: u64) -> Result<bool, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.spend(salt, until_ms, now_ms)),
            Self::Redis(room) => room.spend(salt, until_ms, now_ms).await,
        }
    }

    /// The room's draw (DESIGN §3, "A draw anyone can check"), with the admitter's walk
    /// through it. While an event is announced, asking makes the commitment if there is none
    /// yet.
    pub async fn draw(&self, now_ms: u64) -> Result<(Option<draw::Draw>, Vec<draw::Step>), StoreError> {
        match self {
            Self::Memory(room) => Ok(room.draw(now_ms)),
            Self::Redis(room) => room.draw(now_ms).await,
        }
    }

    /// Takes over a session admitted in an earlier generation, up to `max_active`; false if
    /// it cannot be (its generation is this one, so it ended; or there is no room).
    pub async fn adopt(&self, admitted: Admitted, now_ms: u64) -> Result<bool, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.adopt(admitted, now_ms)),
            Self::Redis(room) => room.adopt(admitted, now_ms).await,
        }
    }

    /// The generation of the room's state as last seen (Redis: as of the last answer).
    pub fn generation(&self) -> u64 {
        match self {
            Self::Memory(room) => room.generation(),
            Self::Redis(room) => room.generation(),
        }
    }

    /// Whether a session is live, marking it used. Ends it if idle or past its lifetime.
    pub async fn touch(&self, session: u128, now_ms: u64) -> Result<bool, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.touch(session, now_ms)),
            Self::Redis(room) => room.touch(session, now_ms).await,
        }
    }

    /// Ends a session at once (logout), freeing its place.
    pub async fn end_session(&self, session: u128) -> Result<bool, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.end_session(session)),
            Self::Redis(room) => room.end_session(session).await,
        }
    }

    /// Ends all sessions, or the `oldest` N; returns how many ended.
    pub async fn drain(&self, oldest: Option<u64>) -> Result<u64, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.drain(oldest)),
            Self::Redis(room) => room.drain(oldest).await,
        }
    }

    /// One admitter step: expire what is due, then grant the next waiters within budget.
    pub async fn tick(&self, now_ms: u64) -> Result<TickReport, StoreError> {
        self.tick_with(now_ms, &TickInput::PLAIN).await
    }

    /// [`Self::tick`] with what the admitter brings: the release and the adaptive outflow's
    /// answers (see [`TickInput`]).
    pub async fn tick_with(&self, now_ms: u64, input: &TickInput<'_>) -> Result<TickReport, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.tick_with(now_ms, input)),
            Self::Redis(room) => room.tick_with(now_ms, input).await,
        }
    }

    pub async fn figures(&self, now_ms: u64) -> Result<RoomFigures, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.figures(now_ms)),
            Self::Redis(room) => room.figures(now_ms).await,
        }
    }

    pub async fn limits(&self) -> Result<RoomLimits, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.limits()),
            Self::Redis(room) => room.limits().await,
        }
    }

    /// Writes only the named `fields` of `limits`, leaving the others as the store has them
    /// (another node or operator may have changed them meanwhile); returns the limits in force.
    pub async fn update_limits(&self, limits: &RoomLimits, fields: &[&str]) -> Result<RoomLimits, StoreError> {
        match self {
            Self::Memory(room) => Ok(room.update_limits(limits, fields)),
            Self::Redis(room) => room.update_limits(limits, fields).await,
        }
    }

    pub async fn set_limits(&self, limits: RoomLimits) -> Result<(), StoreError> {
        match self {
            Self::Memory(room) => {
                room.set_limits(limits);
                Ok(())
            }
            Self::Redis(room) => room.set_limits(limits).await,
        }
    }
}
