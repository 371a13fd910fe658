//! Rooms and the admission decision (DESIGN §3–§5): which room a request belongs to, and
//! whether it is forwarded (with a valid pass, or admitted now) or answered with its place
//! in line. The state lives in the [`store`](crate::store); this module decides.

pub mod adaptive;
pub mod admitter;
pub mod challenge;
pub mod estimate;
pub mod no_show;
pub mod published;
pub mod tokens;

use crate::config::{Config, RoomConfig, RoomMode};
use crate::cookies::{self, Kind};
use crate::identity::ClientKey;
use crate::limits::LiveGate;
use crate::metrics::{Metrics, RoomMetrics};
use crate::pages::{self, Status, View};
use crate::render::Answer;
use crate::request::RequestView;
use crate::secrets::Secrets;
use crate::store::{
    Admitted, JoinOutcome, Pace, PollOutcome, Returning, RoomLimits, RoomStore, Session, StoreError, TicketRef, pace,
};
use http::header::HeaderValue;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokens::{Pass, Rejection, Sealer, Shown, Ticket};

/// How long a ticket cookie lives in the browser; the place itself expires by `waiter_ttl`.
const TICKET_COOKIE_SECS: u64 = 24 * 3600;

/// A ticket cookie is renewed by a poll at most this often (or a quarter of `hold`): it tells
/// when its waiter was last seen, should the store forget the line (see [`Rooms::poll_ticket`]).
const TICKET_RENEW_SECS: u64 = 60;

/// Keeps `place` from showing more ahead than the waiter was last `shown`, less the grants
/// since (several nodes each answer from their own last look at the line), and returns what
/// it shows now. Only where the store counts grants (Redis), and only for a place in the
/// drawn line: a pre-queued or restoring place shows no number, and its store rank then is
/// not one to hold the next to.
fn shown_at_most(place: &mut crate::store::Place, was: Option<Shown>) -> Option<Shown> {
    let granted = place.granted.filter(|_| !place.prequeue && !place.restoring)?;
    if let Some(was) = was {
        place.ahead = place.ahead.min(was.bound(granted));
    }
    place.away_ahead = place.away_ahead.min(place.ahead);
    Some(Shown { ahead: place.ahead, granted })
}

/// Rooms a refused poll's tickets are heard in (see [`Rooms::heartbeat`]): a page polls for
/// one room; a visitor waiting in a few at once is still heard in each.
const HEARTBEAT_ROOMS: usize = 4;

/// One room: what it guards, its store, and its figures as of the last admitter tick.
pub struct Room {
    pub name: String,
    /// The room's id inside cookies.
    pub id: u64,
    /// The names of its pass and ticket cookies (per room, so rooms on one host keep both).
    pass_cookie: String,
    ticket_cookie: String,
    hosts: Vec<String>,
    paths: Vec<String>,
    bypass: Vec<String>,
    logout_path: Option<String>,
    pub store: RoomStore,
    pub metrics: RoomMetrics,
    pub tick: Duration,
    /// The mode `resume` returns to: the configured one, or `auto` if that was `paused`.
    pub resume_mode: RoomMode,
    /// `admit_per_minute` as the configuration file sets it (at start, then at each reload),
    /// beside the effective one in `limits`, which an operator or the adaptive controller may
    /// have changed.
    pub configured_per_minute: AtomicU64,
    /// Limits as of the last tick, so a request reads them without asking the store.
    limits: RwLock<RoomLimits>,
    /// Changes applied through [`Room::apply`], so a tick's older copy never replaces one.
    limits_changes: AtomicU64,
    /// The queue page: the operator's template or the built-in one.
    page: pages::RoomPage,
    /// Admissions per minute used for estimates, refreshed every tick.
    rate_per_minute: AtomicU64,
    /// Per mille of away waiters who come back, for estimates; see [`admitter::expected_ahead`].
    return_share_pm: AtomicU64,
    /// Whether the last store call worked; `/readyz` reports it.
    store_up: AtomicBool,
    store_errors: IntCounter,
    /// `[room.adaptive]`: the outflow set from the mailbox's answers (DESIGN §3).
    pub adaptive: Option<adaptive::Adaptive>,
    /// Recent outflow and join-time estimates: the ETA's range and its accuracy.
    pub estimates: estimate::Estimates,
    /// Grants left unclaimed, made up for within `no_show_bound_pm`.
    pub no_shows: no_show::NoShows,
    /// `room.no_show_bound` in per mille (follows reloads).
    pub no_show_bound_pm: AtomicU64,
    /// The draw as published (`GET /.usher/draw/{room}`).
    pub published: published::Published,
    /// `[room.challenge]`: the proof of work asked of newcomers to a line.
    pub challenger: challenge::Challenger,
}

/// What to do with a request that belongs to a room; each carries the `Set-Cookie` values
/// the decision made.
#[derive(Debug)]
pub enum Decision {
    /// Forward it; the cookies are added to the upstream's response. The session is the
    /// admitted one the request goes in with, which the upstream may end (`Usher-Session`).
    Forward(Vec<HeaderValue>, Option<u128>),
    /// Answer it here: the visitor's place, the maintenance page, a limit.
    Answer(Answer, Vec<HeaderValue>),
}

/// All rooms and what deciding admission needs: the cookie sealer and the rejection counters.
pub struct Rooms {
    rooms: Vec<Arc<Room>>,
    sealer: Sealer,
    /// `usher_token_rejected_total` per (cookie, reason), resolved once: a flood of junk
    /// cookies then costs an atomic add each, not a label lookup behind a shared lock.
    rejections: [[IntCounter; Rejection::ALL.len()]; 2],
}

/// The request facts a decision needs.
#[derive(Clone, Copy)]
pub struct Visitor<'a> {
    /// The client's key (its address never reaches the room).
    pub key: ClientKey,
    /// For IPv6, the key of the client's site (/48), for the site's join limit.
    pub site: Option<ClientKey>,
    /// Whether cookies must be `Secure`.
    pub secure: bool,
    pub now_ms: u64,
    /// For the join limit, checked only when a visitor would take a new ticket.
    pub gate: &'a LiveGate,
}

impl Room {
    fn new(
        config: &RoomConfig,
        limits: RoomLimits,
        store: RoomStore,
        metrics: RoomMetrics,
        store_errors: IntCounter,
        challenge_metrics: crate::metrics::ChallengeMetrics,
    ) -> Self {
        metrics.outflow_effective.set(i64::try_from(limits.admit_per_minute).unwrap_or(i64::MAX));
        metrics.outflow_release.set(i64::try_from(limits.admit_per_minute).unwrap_or(i64::MAX));
        let room = Self {
            name: config.name.clone(),
            id: tokens::room_id(&config.name),
            pass_cookie: Kind::Pass.name(&config.name),
            ticket_cookie: Kind::Ticket.name(&config.name),
            hosts: config.hosts.clone(),
            paths: config.paths.clone(),
            bypass: config.bypass.clone(),
            logout_path: config.logout_path.clone(),
            store,
            metrics,
            tick: config.tick,
            resume_mode: if config.mode == RoomMode::Paused { RoomMode::Auto } else { config.mode },
            configured_per_minute: AtomicU64::new(0),
            rate_per_minute: AtomicU64::new(limits.admit_per_minute),
            return_share_pm: AtomicU64::new(admitter::return_share_per_mille(0, 0)),
            limits: RwLock::new(limits),
            limits_changes: AtomicU64::new(0),
            page: config.template.clone().map(pages::RoomPage::custom).unwrap_or_default(),
            store_up: AtomicBool::new(true),
            store_errors,
            adaptive: config
                .adaptive
                .clone()
                .map(|bounds| adaptive::Adaptive::new(bounds, config.admit_per_minute, crate::clock::now_ms())),
            estimates: estimate::Estimates::default(),
            no_shows: no_show::NoShows::default(),
            no_show_bound_pm: AtomicU64::new(0),
            published: published::Published::default(),
            challenger: challenge::Challenger::new(challenge_metrics),
        };
        room.reconfigure(config);
        room
    }

    /// What the configuration file sets that is not a stored limit, at start and at each
    /// reload: the configured outflow (reported beside the effective one) and the no-show bound.
    pub fn reconfigure(&self, config: &RoomConfig) {
        self.configured_per_minute.store(config.admit_per_minute, Relaxed);
        self.metrics.outflow_configured.set(i64::try_from(config.admit_per_minute).unwrap_or(i64::MAX));
        self.no_show_bound_pm.store(no_show::bound_pm(config.no_show_bound), Relaxed);
        self.challenger.reconfigure(config.challenge.as_ref());
    }

    /// One answer of the upstream to a request of this room's admitted visitors (or its
    /// failure), for the adaptive outflow. Nothing when the room is not adaptive.
    pub fn upstream_answered(&self, latency: Duration, failed: bool) {
        if let Some(adaptive) = &self.adaptive {
            adaptive.recorder.record(latency, failed);
        }
    }

    /// Whether the room's store answered its last call.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Relaxed)
    }

    /// A store call failed: counted, and logged once when the store starts failing.
    pub fn store_failed(&self, e: &StoreError) {
        self.store_errors.inc();
        self.metrics.store_up.set(0);
        if self.store_up.swap(false, Relaxed) {
            tracing::warn!(room = %self.name, error = %e, "store unreachable");
            let event = serde_json::json!({ "room": self.name, "up": false, "error": e.to_string() });
            self.metrics.events.publish("store", &event);
        }
    }

    /// A store call worked (the admitter's tick): logged once when the store is back.
    pub fn store_answered(&self) {
        self.metrics.store_up.set(1);
        if !self.store_up.swap(true, Relaxed) {
            tracing::info!(room = %self.name, "store reachable again");
            self.metrics.events.publish("store", &serde_json::json!({ "room": self.name, "up": true }));
        }
    }

    /// The longest path prefix of this room that matches, if the host matches too. Both come
    /// canonical: the host without port or trailing dot, in lower case, as `hosts` is kept.
    fn matches(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| Some(h.as_str()) == host) {
            return None;
        }
        self.paths.iter().filter(|p| path.starts_with(p.as_str())).map(String::len).max()
    }

    pub fn limits(&self) -> RoomLimits {
        self.limits.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the fields in which `new` differs from `old` now (admin API, reload): in the
    /// store, which is what every node admits by, and in this node's cached copy. Only those
    /// fields are written, so a change made meanwhile to another field (another operator,
    /// another node) is kept. Returns the limits in force.
    pub async fn apply(&self, old: &RoomLimits, new: &RoomLimits) -> Result<RoomLimits, StoreError> {
        let now = self.store.update_limits(new, &new.changed_from(old)).await?;
        self.limits_changes.fetch_add(1, Relaxed);
        self.set_cached(now.clone());
        Ok(now)
    }

    /// How many changes [`Self::apply`] has made: the admitter reads it before it asks the
    /// store for the limits, and [`Self::set_cached_from_tick`] keeps a change made since.
    pub fn limits_changes(&self) -> u64 {
        self.limits_changes.load(Relaxed)
    }

    /// The admitter's copy of the limits, read from the store when `limits_changes` was
    /// `seen`, and the rate for estimates. A change applied since (an operator's answer
    /// already shows it) is newer than this copy and is kept: a tick that read the store
    /// just before a PATCH once put the old limits back after it (seen on a clean clone).
    pub fn set_cached_from_tick(&self, limits: RoomLimits, rate_per_minute: u64, seen: u64) {
        self.rate_per_minute.store(rate_per_minute, Relaxed);
        let mut cached = self.limits.write().unwrap_or_else(|p| p.into_inner());
        if self.limits_changes.load(Relaxed) == seen {
            self.replace_cached(&mut cached, limits);
        }
    }

    fn set_cached(&self, limits: RoomLimits) {
        self.replace_cached(&mut self.limits.write().unwrap_or_else(|p| p.into_inner()), limits);
    }

    fn replace_cached(&self, cached: &mut RoomLimits, limits: RoomLimits) {
        self.metrics.outflow_effective.set(i64::try_from(limits.admit_per_minute).unwrap_or(i64::MAX));
        *cached = limits;
    }

    /// How this room's waiters are told to poll now: by the faster of the measured and the
    /// configured outflow, so that nobody is paced slower than their turn may come.
    fn pace(&self, limits: &RoomLimits) -> Pace {
        Pace::new(self.rate_per_minute.load(Relaxed).max(limits.admit_per_minute), limits.claim_window)
    }

    /// Estimated seconds until someone with `ahead` waiters before them is admitted.
    fn eta_secs(&self, ahead: u64) -> Option<u64> {
        let rate = self.rate_per_minute.load(Relaxed);
        (rate > 0).then(|| (ahead + 1).saturating_mul(60).div_ceil(rate))
    }
}

impl Rooms {
    /// Rooms in this process's memory.
    pub fn new(config: &Config, secrets: &Secrets, metrics: Arc<Metrics>, now_ms: u64) -> Self {
        let stores = config
            .rooms
            .iter()
            .map(|rc| {
                RoomStore::memory_ticking(
                    RoomLimits::from_config(rc, config.limits.tickets_per_client),
                    rc.tick,
                    now_ms,
                )
            })
            .collect();
        Self::with_stores(config, secrets, metrics, stores)
    }

    /// Rooms on the given stores, one per configured room, in order.
    pub fn with_stores(config: &Config, secrets: &Secrets, metrics: Arc<Metrics>, stores: Vec<RoomStore>) -> Self {
        let rooms = config
            .rooms
            .iter()
            .zip(stores)
            .map(|(rc, store)| {
                let limits = RoomLimits::from_config(rc, config.limits.tickets_per_client);
                let (room, errors, challenges) =
                    (metrics.room(&rc.name), metrics.store_errors.clone(), metrics.challenge(&rc.name));
                Arc::new(Room::new(rc, limits, store, room, errors, challenges))
            })
            .collect();
        let rejections = [Kind::Pass, Kind::Ticket].map(|cookie| {
            Rejection::ALL.map(|why| metrics.token_rejected.with_label_values(&[cookie.label(), why.label()]))
        });
        Self { rooms, sealer: Sealer::new(secrets), rejections }
    }

    pub fn all(&self) -> &[Arc<Room>] {
        &self.rooms
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Room>> {
        self.rooms.iter().find(|r| r.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The room guarding this request: the longest matching path prefix wins.
    pub fn find(&self, req: &RequestView) -> Option<&Arc<Room>> {
        if self.rooms.is_empty() {
            return None;
        }
        let (host, path) = (req.host(), req.path());
        self.rooms
            .iter()
            .filter_map(|r| r.matches(host, path).map(|len| (len, r)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, r)| r)
    }

    fn rejected(&self, cookie: Kind, why: Rejection) {
        self.rejections[usize::from(cookie == Kind::Ticket)][why as usize].inc();
    }

    fn store_error(&self, room: &Room, e: &StoreError) {
        room.store_failed(e);
    }

    /// The mailbox ended `session` (its answer carried `Usher-Session: end`): the place is
    /// freed at once, as by the room's logout path, and the pass cookie is cleared. Returns
    /// the clearing `Set-Cookie`.
    pub async fn end_by_origin(&self, room: &Room, session: u128, secure: bool) -> HeaderValue {
        match room.store.end_session(session).await {
            Ok(_) => room.metrics.origin_ended.inc(),
            Err(e) => self.store_error(room, &e),
        }
        cookies::set_cookie(&room.pass_cookie, None, 0, secure)
    }

    fn pass_cookie(&self, room: &Room, session: &Session, secure: bool) -> HeaderValue {
        let pass = Pass {
            room: room.id,
            generation: room.store.generation(),
            session: session.id,
            issued_secs: session.created_ms / 1000,
            expires_secs: session.expires_ms / 1000,
        };
        let max_age = session.expires_ms.saturating_sub(session.created_ms) / 1000;
        cookies::set_cookie(&room.pass_cookie, Some(&self.sealer.seal_pass(&pass)), max_age, secure)
    }

    /// A ticket cookie renewed at `renewed_secs`, carrying what its waiter was `shown`.
    fn ticket_cookie(
        &self,
        room: &Room,
        held: TicketRef,
        joined_ms: u64,
        renewed_secs: u64,
        shown: Option<Shown>,
        secure: bool,
    ) -> HeaderValue {
        let ticket =
            Ticket { room: room.id, generation: held.generation, number: held.number, joined_ms, renewed_secs, shown };
        cookies::set_cookie(&room.ticket_cookie, Some(&self.sealer.seal_ticket(&ticket)), TICKET_COOKIE_SECS, secure)
    }

    /// Polls a waiter's ticket. One of an earlier store generation (usher restarted, or Redis
    /// lost its data) names no place here: its waiter is put back by its original join time,
    /// if its place would still be held (`hold` since the cookie was last renewed), and gets
    /// a ticket of this generation. Returns the outcome and the ticket cookie to set, if it
    /// is new or due for renewal.
    async fn poll_ticket(
        &self,
        room: &Room,
        limits: &RoomLimits,
        ticket: Ticket,
        visitor: &Visitor<'_>,
    ) -> Result<(PollOutcome, Option<HeaderValue>, u64), StoreError> {
        let now_ms = visitor.now_ms;
        let now_secs = now_ms / 1000;
        let held = TicketRef { generation: ticket.generation, number: ticket.number };
        let joined = (ticket.generation != 0).then_some(ticket.joined_ms);
        let pace = room.pace(limits);
        let outcome = room.store.poll_as(held, joined, pace, now_ms).await?;
        match outcome {
            PollOutcome::OtherGeneration => {
                let hold = limits.hold.max(limits.waiter_ttl).as_secs();
                // A cookie from before generations was never renewed: its issue time is its
                // join time, so its whole lifetime counts.
                let kept_for = if ticket.generation == 0 { TICKET_COOKIE_SECS } else { hold };
                if ticket.renewed_secs.saturating_add(kept_for) <= now_secs {
                    return Ok((PollOutcome::Gone, None, held.number));
                }
                // The join time as signed: in Redis mode the store's clock is Redis's, not this
                // node's, so it is the store that caps it (by its generation's start).
                let returning = Returning { client: visitor.key, old: held, joined_ms: ticket.joined_ms };
                let new = room.store.restore(returning, now_ms).await?;
                room.metrics.restored_places.inc();
                tracing::debug!(room = %room.name, "a place of an earlier generation was restored");
                let outcome = room.store.poll_as(new, None, pace, now_ms).await?;
                let cookie = self.ticket_cookie(room, new, returning.joined_ms, now_secs, None, visitor.secure);
                Ok((outcome, Some(cookie), new.number))
            }
            PollOutcome::Waiting(mut place) => {
                let every = TICKET_RENEW_SECS.min(limits.hold.as_secs() / 4).max(1);
                let due = now_secs.saturating_sub(ticket.renewed_secs) >= every;
                // The cookie keeps its own join time; one from before generations (its number
                // found in this generation, so it is this one's) gets both from the store.
                let (held, joined_ms) = if ticket.generation == 0 {
                    (TicketRef { generation: room.store.generation(), ..held }, place.joined_ms)
                } else {
                    (held, ticket.joined_ms)
                };
                let shown = shown_at_most(&mut place, ticket.shown);
                let moved = shown.map(|s| s.ahead) != ticket.shown.map(|s| s.ahead);
                let renewed = if due { now_secs } else { ticket.renewed_secs };
                let cookie = (due || moved).then(|| {
                    self.ticket_cookie(room, held, joined_ms, renewed, shown.or(ticket.shown), visitor.secure)
                });
                Ok((PollOutcome::Waiting(place), cookie, held.number))
            }
            other => Ok((other, None, held.number)),
        }
    }

    /// Whether a verified pass may go through: its session is live, or it is one of an
    /// earlier generation taken over now.
    async fn live_or_adopted(&self, room: &Room, pass: &Pass, now_ms: u64) -> Result<bool, StoreError> {
        if room.store.touch(pass.session, now_ms).await? {
            return Ok(true);
        }
        self.adopt(room, pass, now_ms).await
    }

    /// A valid pass whose session the store does not know: taken over if it was admitted in
    /// an earlier generation and there is room (DESIGN §8); otherwise it has ended.
    async fn adopt(&self, room: &Room, pass: &Pass, now_ms: u64) -> Result<bool, StoreError> {
        if pass.generation == room.store.generation() {
            return Ok(false);
        }
        let admitted = Admitted {
            session: pass.session,
            generation: pass.generation,
            created_ms: pass.issued_secs.saturating_mul(1000),
            expires_ms: pass.expires_secs.saturating_mul(1000),
        };
        let adopted = room.store.adopt(admitted, now_ms).await?;
        if adopted {
            room.metrics.restored_sessions.inc();
        }
        Ok(adopted)
    }

    /// The admission decision for a request in `room` (DESIGN §1, §3).
    pub async fn decide(&self, room: &Room, req: &RequestView, visitor: Visitor<'_>) -> Decision {
        let path = req.path();
        if room.bypass.iter().any(|b| path.starts_with(b.as_str())) {
            return Decision::Forward(Vec::new(), None);
        }
        let now_ms = visitor.now_ms;
        let secure = visitor.secure;
        let clear = |name: &str| cookies::set_cookie(name, None, 0, secure);
        let mut set_cookies = Vec::new();

        // 1. A valid pass of a live session goes straight through.
        if let Some(raw) = req.cookie(Kind::Pass, &room.name) {
            match self.sealer.open_pass(raw, room.id, now_ms / 1000) {
                Ok(pass) => match self.live_or_adopted(room, &pass, now_ms).await {
                    Ok(true) => {
                        if room.logout_path.as_deref().is_some_and(|p| path.starts_with(p)) {
                            if let Err(e) = room.store.end_session(pass.session).await {
                                self.store_error(room, &e);
                            }
                            cookies::push(&mut set_cookies, clear(&room.pass_cookie));
                            return Decision::Forward(set_cookies, None);
                        }
                        return Decision::Forward(set_cookies, Some(pass.session));
                    }
                    Ok(false) => self.rejected(Kind::Pass, Rejection::Ended),
                    // The store is down: a pass that verifies on its own keeps being served.
                    Err(e) => {
                        self.store_error(room, &e);
                        return Decision::Forward(set_cookies, Some(pass.session));
                    }
                },
                Err(why) => self.rejected(Kind::Pass, why),
            }
            cookies::push(&mut set_cookies, clear(&room.pass_cookie));
        }

        let limits = room.limits();
        if limits.mode == RoomMode::Closed {
            return Decision::Answer(Answer::Wait(self.view(room, &limits, Status::Closed, None)), set_cookies);
        }

        // 2. A waiter polling by reloading the page: its place, or its turn.
        let ticket = req.cookie(Kind::Ticket, &room.name);
        if let Some(raw) = ticket {
            match self.sealer.open_ticket(raw, room.id) {
                Ok(ticket) => match self.poll_ticket(room, &limits, ticket, &visitor).await {
                    Ok((PollOutcome::Admitted { session, waited_ms }, ..)) => {
                        self.admitted_from_line(room, waited_ms);
                        cookies::push(&mut set_cookies, self.pass_cookie(room, &session, secure));
                        cookies::push(&mut set_cookies, clear(&room.ticket_cookie));
                        return Decision::Forward(set_cookies, Some(session.id));
                    }
                    Ok((PollOutcome::Waiting(place), renewed, number)) => {
                        if let Some(cookie) = renewed {
                            cookies::push(&mut set_cookies, cookie);
                        }
                        let view = self.view(room, &limits, Status::Waiting, Some(place)).with_ticket(number);
                        return Decision::Answer(Answer::Wait(view), set_cookies);
                    }
                    Ok((PollOutcome::Gone | PollOutcome::OtherGeneration, ..)) => {
                        self.rejected(Kind::Ticket, Rejection::Ended)
                    }
                    Err(e) => return self.unavailable(room, &limits, &e, set_cookies),
                },
                Err(why) => self.rejected(Kind::Ticket, why),
            }
        }

        // 3. A newcomer to a line in a room with [room.challenge]: a proof of work first,
        //    answered at /.usher/challenge, which then joins (`answer_challenge`).
        if room.challenger.applies(&limits, room.metrics.waiting.get(), now_ms) {
            let back = req.query().map_or_else(|| path.to_string(), |q| format!("{path}?{q}"));
            let to = (&visitor.key, visitor.site.as_ref(), back.as_str());
            let issued = room.challenger.issue(&self.sealer, room.id, &room.name, to, now_ms);
            let mut view = self.view(room, &limits, Status::Challenge, None);
            view.poll_after_seconds = issued.noscript_wait_seconds;
            view.challenge = Some(Box::new(issued));
            return Decision::Answer(Answer::Wait(view), set_cookies);
        }
        self.join(room, &limits, &visitor, ticket.is_some(), set_cookies).await
    }

    /// `/.usher/challenge?room=NAME`: an answer to a challenge (see [`challenge`]). A valid one
    /// joins the line as any newcomer would; each reason for refusing is counted.
    pub async fn answer_challenge(
        &self,
        room: &Room,
        answer: Option<challenge::Answer>,
        visitor: Visitor<'_>,
    ) -> Result<Decision, challenge::Refusal> {
        let now_ms = visitor.now_ms;
        let checked = answer
            .ok_or(challenge::Refusal::Malformed)
            .and_then(|a| room.challenger.check(&self.sealer, room.id, &visitor.key, &a, now_ms));
        let spent = match checked {
            Ok(c) => {
                match room.store.spend(u128::from_be_bytes(c.salt), room.challenger.expires_ms(&c), now_ms).await {
                    Ok(true) => Ok(c),
                    Ok(false) => Err(challenge::Refusal::Replayed),
                    Err(e) => {
                        let limits = room.limits();
                        return Ok(self.unavailable(room, &limits, &e, Vec::new()));
                    }
                }
            }
            Err(why) => Err(why),
        };
        let c = spent.inspect_err(|why| room.challenger.refused(*why))?;
        room.challenger.solved(&c, now_ms);
        let limits = room.limits();
        Ok(self.join(room, &limits, &visitor, false, Vec::new()).await)
    }

    /// A newcomer joins: admitted at once if nobody waits and there is room, else a ticket,
    /// within the join limit so that a flood cannot farm tickets. `had_ticket`: it brought a
    /// ticket cookie that is no more (cleared if it gets a pass).
    async fn join(
        &self,
        room: &Room,
        limits: &RoomLimits,
        visitor: &Visitor<'_>,
        had_ticket: bool,
        mut set_cookies: Vec<HeaderValue>,
    ) -> Decision {
        let (now_ms, secure) = (visitor.now_ms, visitor.secure);
        let clear = |name: &str| cookies::set_cookie(name, None, 0, secure);
        let ticket = had_ticket.then_some(());
        if let Err(limited) = visitor.gate.load().check_join(&visitor.key, visitor.site.as_ref()) {
            return Decision::Answer(Answer::Limited { retry_after_secs: limited.retry_after_secs }, set_cookies);
        }
        match room.store.join(visitor.key, now_ms).await {
            Ok(JoinOutcome::Admitted(session)) => {
                room.metrics.admitted_direct.inc();
                cookies::push(&mut set_cookies, self.pass_cookie(room, &session, secure));
                if ticket.is_some() {
                    cookies::push(&mut set_cookies, clear(&room.ticket_cookie));
                }
                Decision::Forward(set_cookies, Some(session.id))
            }
            Ok(JoinOutcome::Queued { ticket: held, reused }) => {
                if !reused {
                    room.metrics.joined.inc();
                }
                match room.store.poll_as(held, None, room.pace(limits), now_ms).await {
                    // A reused ticket whose turn has come (or a grant between join and poll):
                    // the session exists now, so hand out its pass rather than lose it.
                    Ok(PollOutcome::Admitted { session, waited_ms }) => {
                        self.admitted_from_line(room, waited_ms);
                        cookies::push(&mut set_cookies, self.pass_cookie(room, &session, secure));
                        if ticket.is_some() {
                            cookies::push(&mut set_cookies, clear(&room.ticket_cookie));
                        }
                        Decision::Forward(set_cookies, Some(session.id))
                    }
                    Ok(PollOutcome::Waiting(mut place)) => {
                        let shown = shown_at_most(&mut place, None);
                        let cookie = self.ticket_cookie(room, held, place.joined_ms, now_ms / 1000, shown, secure);
                        cookies::push(&mut set_cookies, cookie);
                        let view = self.view(room, limits, Status::Waiting, Some(place)).with_ticket(held.number);
                        Decision::Answer(Answer::Wait(view), set_cookies)
                    }
                    Ok(PollOutcome::Gone | PollOutcome::OtherGeneration) => {
                        let cookie = self.ticket_cookie(room, held, now_ms, now_ms / 1000, None, secure);
                        cookies::push(&mut set_cookies, cookie);
                        Decision::Answer(Answer::Wait(self.view(room, limits, Status::Waiting, None)), set_cookies)
                    }
                    Err(e) => self.unavailable(room, limits, &e, set_cookies),
                }
            }
            Err(e) => self.unavailable(room, limits, &e, set_cookies),
        }
    }

    fn unavailable(&self, room: &Room, limits: &RoomLimits, e: &StoreError, set_cookies: Vec<HeaderValue>) -> Decision {
        self.store_error(room, e);
        Decision::Answer(Answer::Wait(self.view(room, limits, Status::Unavailable, None)), set_cookies)
    }

    fn admitted_from_line(&self, room: &Room, waited_ms: u64) {
        room.metrics.admitted_queue.inc();
        tracing::debug!(room = %room.name, waited_ms, "waiter claimed its turn");
    }

    /// What a waiter is shown, from its place and the room's state.
    fn view(&self, room: &Room, limits: &RoomLimits, status: Status, place: Option<crate::store::Place>) -> View {
        let status = match (status, limits.mode) {
            (Status::Waiting, RoomMode::Paused) => Status::Paused,
            (Status::Waiting, _) if place.is_some_and(|p| p.prequeue) => Status::Prequeue,
            (status, _) => status,
        };
        // Before the draw the order is not known: showing arrival order would let the
        // position grow at opening, so none is shown.
        let ahead = place.filter(|p| !p.prequeue && !p.restoring).map(|p| p.ahead);
        let share = room.return_share_pm.load(Relaxed);
        let expected = match (status, place) {
            (Status::Waiting, Some(p)) if !p.prequeue && !p.restoring => {
                Some(admitter::expected_ahead(p.ahead, p.away_ahead, share))
            }
            _ => None,
        };
        let eta_seconds = expected.and_then(|e| room.eta_secs(e));
        let eta_range_seconds = expected.filter(|_| eta_seconds.is_some()).and_then(|e| room.estimates.range(e));
        // As the store paced this poll (its deadline follows it); without a place, as for a
        // waiter whose wait is not known.
        let poll_after_seconds = place.map_or(pace::UNKNOWN_SECS, |p| p.poll_secs);
        View {
            status,
            room: room.name.clone(),
            ahead,
            eta_seconds,
            eta_range_seconds,
            poll_after_seconds: poll_after_seconds.max(1),
            hold_seconds: limits.hold.max(limits.waiter_ttl).as_secs(),
            joined_at: place.map(|p| p.joined_ms / 1000),
            opens_at: limits.opens_at_ms.map(|ms| ms / 1000),
            message: limits.message.clone(),
            server_time: crate::clock::unix_now(),
            ticket: None,
            drawn: limits.opens_at_ms.is_some(),
            challenge: None,
            page: room.page.clone(),
        }
    }

    /// A status poll refused by the poll budget still says the waiter's page is there: each
    /// ticket it carries gets a heartbeat, so nobody is taken for away because usher refused
    /// their polls (behind carrier-grade NAT, hundreds of pages share one budget). It costs
    /// one signature check per ticket and no store call (see [`RoomStore::heartbeat`]).
    ///
    /// One ticket per room, and at most [`HEARTBEAT_ROOMS`] rooms, whatever the request
    /// carries: a refused request buys a few signature checks and no allocation.
    pub fn heartbeat(&self, req: &RequestView, now_ms: u64) {
        let mut checked = [0u64; HEARTBEAT_ROOMS];
        let mut n = 0;
        for (name, raw) in req.cookies_of(Kind::Ticket) {
            let Some(room) = self.get(name).filter(|r| !checked[..n].contains(&r.id)) else { continue };
            checked[n] = room.id;
            n += 1;
            if let Ok(ticket) = self.sealer.open_ticket(raw, room.id) {
                room.store.heartbeat(TicketRef { generation: ticket.generation, number: ticket.number }, now_ms);
            }
            if n == HEARTBEAT_ROOMS {
                break;
            }
        }
    }

    /// `GET /.usher/status[?room=NAME]`: a waiter's place as JSON; claims the turn when it has
    /// come. Without `room`, the first room the visitor holds a ticket for.
    pub async fn status(&self, req: &RequestView, visitor: Visitor<'_>) -> (View, Vec<HeaderValue>) {
        let mut set_cookies = Vec::new();
        let wanted = req.query().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("room=")));
        let held = req
            .cookies_of(Kind::Ticket)
            .filter(|(name, _)| wanted.is_none_or(|w| w == *name))
            .find_map(|(name, raw)| self.get(name).map(|room| (room, raw)));
        let Some((room, raw)) = held else {
            return (View::none(), set_cookies);
        };
        let ticket = match self.sealer.open_ticket(raw, room.id) {
            Ok(ticket) => ticket,
            Err(why) => {
                self.rejected(Kind::Ticket, why);
                return (View::none(), set_cookies);
            }
        };
        let limits = room.limits();
        if limits.mode == RoomMode::Closed {
            return (self.view(room, &limits, Status::Closed, None), set_cookies);
        }
        let clear = cookies::set_cookie(&room.ticket_cookie, None, 0, visitor.secure);
        let view = match self.poll_ticket(room, &limits, ticket, &visitor).await {
            Ok((PollOutcome::Admitted { session, waited_ms }, ..)) => {
                self.admitted_from_line(room, waited_ms);
                cookies::push(&mut set_cookies, self.pass_cookie(room, &session, visitor.secure));
                cookies::push(&mut set_cookies, clear);
                self.view(room, &limits, Status::Admitted, None)
            }
            Ok((PollOutcome::Waiting(place), renewed, number)) => {
                if let Some(cookie) = renewed {
                    cookies::push(&mut set_cookies, cookie);
                }
                self.view(room, &limits, Status::Waiting, Some(place)).with_ticket(number)
            }
            Ok((PollOutcome::Gone | PollOutcome::OtherGeneration, ..)) => {
                self.rejected(Kind::Ticket, Rejection::Ended);
                cookies::push(&mut set_cookies, clear);
                self.view(room, &limits, Status::Expired, None)
            }
            Err(e) => {
                self.store_error(room, &e);
                self.view(room, &limits, Status::Unavailable, None)
            }
        };
        (view, set_cookies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Place;

    fn place(ahead: u64, granted: Option<u64>) -> Place {
        Place { ahead, away_ahead: 3, joined_ms: 1, prequeue: false, restoring: false, poll_secs: 2, granted }
    }

    #[test]
    fn a_waiter_is_never_shown_more_ahead_than_its_cookie_says_it_saw_less_the_grants_since() {
        // A node whose view is older answers 60 where the waiter saw 50 ten grants ago.
        let mut p = place(60, Some(1_005));
        let shown = shown_at_most(&mut p, Some(Shown { ahead: 50, granted: 1_000 }));
        assert_eq!((p.ahead, shown), (45, Some(Shown { ahead: 45, granted: 1_005 })));
        // A lower number stands; the first answer sets what was shown.
        let mut p = place(30, Some(1_005));
        assert_eq!(shown_at_most(&mut p, Some(Shown { ahead: 50, granted: 1_000 })).map(|s| s.ahead), Some(30));
        let mut p = place(2, Some(7));
        assert_eq!((shown_at_most(&mut p, None), p.away_ahead), (Some(Shown { ahead: 2, granted: 7 }), 2));
        // Nothing to carry where one node answers every poll, or before the draw.
        assert_eq!(shown_at_most(&mut place(60, None), Some(Shown { ahead: 50, granted: 0 })), None);
        let mut prequeued = Place { prequeue: true, ..place(60, Some(9)) };
        assert_eq!(shown_at_most(&mut prequeued, Some(Shown { ahead: 5, granted: 9 })), None);
        assert_eq!(prequeued.ahead, 60, "a pre-queued rank is not held to anything");
    }
}
