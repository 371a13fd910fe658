//! Every metric usher exports, defined in one place with its help text (DESIGN §10).
//!
//! Two kinds live here. Low-rate figures (build info, open connections, process metrics,
//! later the admission gauges) are ordinary `prometheus` metrics in a [`Registry`]. The
//! per-request figures are counted in per-worker shards, each on its own cache lines, so the
//! hot path does one uncontended atomic add instead of a label lookup behind a shared lock;
//! they are summed and written in the text format at scrape time by [`Metrics::render`].

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What kind of answer a request got; the `route` label of `usher_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Forwarded to the upstream.
    Upstream,
    /// Answered by usher itself under its reserved prefix (status, assets).
    Usher,
    /// A waiting-room answer: queue page, 503 for waiters, maintenance or unavailable page.
    Queue,
    /// Refused by a rate limit (429).
    Limited,
    /// Refused by the deny list (403).
    Denied,
    /// A request target with no unambiguous meaning (400).
    Invalid,
}

impl Route {
    const ALL: [Route; 6] =
        [Route::Upstream, Route::Usher, Route::Queue, Route::Limited, Route::Denied, Route::Invalid];

    fn label(self) -> &'static str {
        match self {
            Route::Upstream => "upstream",
            Route::Usher => "usher",
            Route::Queue => "queue",
            Route::Limited => "limited",
            Route::Denied => "denied",
            Route::Invalid => "invalid",
        }
    }
}

/// Why a request could not be forwarded; the `kind` label of `usher_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Protocol,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 3] = [Self::Connect, Self::Timeout, Self::Protocol];

    fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
        }
    }
}

/// Status codes 100..=599 are counted exactly; anything else is folded into 599.
const CODES: usize = 500;
/// Upper bounds of `usher_upstream_duration_seconds`, in seconds.
const DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One worker's counters, aligned so two workers never write the same cache line.
#[repr(align(128))]
struct Shard {
    requests: [AtomicU64; Route::ALL.len() * CODES],
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_nanos: AtomicU64,
    upstream_errors: [AtomicU64; UpstreamErrorKind::ALL.len()],
}

impl Shard {
    fn new() -> Self {
        Self {
            requests: [const { AtomicU64::new(0) }; Route::ALL.len() * CODES],
            duration_buckets: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len() + 1],
            duration_sum_nanos: AtomicU64::new(0),
            upstream_errors: [const { AtomicU64::new(0) }; UpstreamErrorKind::ALL.len()],
        }
    }
}

/// The process's metrics; shared by all workers and the admin listener.
pub struct Metrics {
    registry: Registry,
    /// The admin event stream: the same figures and changes, pushed as they happen.
    pub events: Arc<crate::events::Events>,
    shards: Box<[Shard]>,
    /// Client connections open now, across workers.
    pub connections: IntGauge,
    /// Cookies not accepted, by cookie and reason (`Rejection`).
    pub token_rejected: IntCounterVec,
    pub store_errors: IntCounter,
    /// How far the system's wall clock moved from usher's since start ([`crate::clock`]).
    pub clock_step: prometheus::Gauge,
    /// Requests answered 429, by rule.
    pub rate_limited: IntCounterVec,
    /// Checks made on a limiter's shared overflow cells (its table was full), by rule.
    limiter_overflow: IntCounterVec,
    /// Client keys a limiter holds, by rule.
    limiter_tracked: IntGaugeVec,
    /// Changes applied while running, by source (api, reload), target and field.
    pub changes: IntCounterVec,
    /// What the connection defences refused or closed; see [`Defences`].
    pub defences: Defences,
    rooms: RoomFamilies,
}

/// The connection defences' counts (issue 14): each refusal and each close that a limit
/// made, so an SRE can tell an attack being held off from real clients being turned away.
/// Each is resolved once; the counts happen per connection or per stalled body, never per
/// request.
pub struct Defences {
    /// New connections closed at once: their client key already held
    /// `listen.max_connections_per_client`.
    pub refused_per_client: IntCounter,
    /// Connections closed after `listen.idle_timeout` with no request in flight.
    pub closed_idle: IntCounter,
    /// Tunnels closed after `upstream.tunnel_idle_timeout` with no bytes either way.
    pub closed_tunnel_idle: IntCounter,
    /// Connections the kernel aborted because the client took none of the bytes usher had
    /// for it (or acknowledged none) for `listen.idle_timeout` (TCP_USER_TIMEOUT).
    pub closed_send_stall: IntCounter,
    /// HTTP/2 connections closed for sending control frames (SETTINGS, PING, PRIORITY,
    /// RST_STREAM) faster than their budget ([`crate::frame_guard`]).
    pub closed_h2_control_flood: IntCounter,
    /// Admin connections closed by `admin.header_read_timeout`.
    pub closed_admin_header_timeout: IntCounter,
    /// Upgraded connections (WebSocket) open now.
    pub tunnels: IntGauge,
    /// `Upgrade` requests for a protocol not in `upstream.upgrade_protocols`, forwarded
    /// without the upgrade.
    pub upgrades_refused: IntCounter,
    /// `Upgrade` requests answered 503 because the worker holds `upstream.max_tunnels_per_worker`.
    pub tunnels_refused: IntCounter,
    /// Response bodies from the upstream ended by `upstream.body_idle_timeout`.
    pub stalled_upstream_body: IntCounter,
    /// Request bodies (uploads) from clients ended by `upstream.body_idle_timeout`.
    pub stalled_client_body: IntCounter,
    /// Upstream connections open now (busy and idle), across workers.
    pub upstream_connections: IntGauge,
    /// Requests answered 503 because the worker already had
    /// `upstream.max_connections_per_worker` upstream connections open.
    pub upstream_saturated: IntCounter,
    /// Turns taken in the worker's [`crate::refused_lane::RefusedLane`]: by requests whose
    /// connection's last answer was a refusal, and by new connections of clients refused lately.
    pub refused_lane_turns: [IntCounter; 2],
    /// Requests that waited in the lane behind another's.
    pub refused_lane_waits: IntCounter,
    /// New connections of clients refused lately, handed to the refused worker.
    pub refused_worker_connections: IntCounter,
}

impl Defences {
    fn new(r: &Registry) -> Self {
        let refused = counter_vec(
            r,
            "usher_connections_refused_total",
            "Client connections closed at accept, by the limit that refused them.",
            &["reason"],
        );
        let closed = counter_vec(
            r,
            "usher_connections_closed_total",
            "Connections usher closed because a timeout ran out or a budget was spent, by reason.",
            &["reason"],
        );
        let stalled = counter_vec(
            r,
            "usher_body_stalled_total",
            "Bodies ended because no bytes moved for upstream.body_idle_timeout, by whose body stalled.",
            &["from"],
        );
        let turns = counter_vec(
            r,
            "usher_refused_lane_turns_total",
            "Turns taken in the worker's lane for refused clients, by why: a request whose connection's last \
             answer was a refusal, or a new connection of a client refused in the last seconds.",
            &["why"],
        );
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            r.register(Box::new(g.clone())).expect("each metric is registered once");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            r.register(Box::new(c.clone())).expect("each metric is registered once");
            c
        };
        Self {
            refused_per_client: refused.with_label_values(&["per_client"]),
            closed_idle: closed.with_label_values(&["idle"]),
            closed_send_stall: closed.with_label_values(&["send_stall"]),
            closed_tunnel_idle: closed.with_label_values(&["tunnel_idle"]),
            closed_h2_control_flood: closed.with_label_values(&["h2_control_flood"]),
            closed_admin_header_timeout: closed.with_label_values(&["admin_header_timeout"]),
            tunnels: gauge("usher_tunnels", "Upgraded connections (WebSocket) open now."),
            upgrades_refused: counter(
                "usher_upgrades_refused_total",
                "Upgrade requests for a protocol not in upstream.upgrade_protocols, forwarded without the upgrade.",
            ),
            tunnels_refused: counter(
                "usher_tunnels_refused_total",
                "Upgrade requests answered 503 because the worker already holds upstream.max_tunnels_per_worker tunnels.",
            ),
            stalled_upstream_body: stalled.with_label_values(&["upstream"]),
            stalled_client_body: stalled.with_label_values(&["client"]),
            upstream_connections: gauge(
                "usher_upstream_connections",
                "Upstream connections open now (busy and idle), across workers.",
            ),
            upstream_saturated: counter(
                "usher_upstream_saturated_total",
                "Requests answered 503 because the worker's upstream connections were all in use \
                 (upstream.max_connections_per_worker).",
            ),
            refused_lane_turns: [turns.with_label_values(&["connection"]), turns.with_label_values(&["client"])],
            refused_lane_waits: counter(
                "usher_refused_lane_waits_total",
                "Requests of refused clients that waited for their turn behind another such request, so that \
                 clients within their limits went first.",
            ),
            refused_worker_connections: counter(
                "usher_refused_worker_connections_total",
                "New connections of clients refused in the last seconds, served by the refused worker at idle \
                 CPU priority.",
            ),
        }
    }
}

/// The labelled families behind [`RoomMetrics`]; registered once.
struct RoomFamilies {
    waiting: IntGaugeVec,
    active: IntGaugeVec,
    pending: IntGaugeVec,
    eta: IntGaugeVec,
    outflow: IntGaugeVec,
    store_up: IntGaugeVec,
    joined: IntCounterVec,
    admitted: IntCounterVec,
    abandoned: IntCounterVec,
    expired_grants: IntCounterVec,
    wait: HistogramVec,
    held: IntGaugeVec,
    away: IntCounterVec,
    returned: IntCounterVec,
    away_seconds: HistogramVec,
    tick_seconds: HistogramVec,
    no_show_share: prometheus::GaugeVec,
    eta_accuracy: HistogramVec,
    origin_ended: IntCounterVec,
    adaptive: IntCounterVec,
    adaptive_lines: prometheus::GaugeVec,
    restored: IntCounterVec,
    challenges: IntCounterVec,
    challenge_refusals: IntCounterVec,
    challenge_solve: HistogramVec,
    challenge_bits: HistogramVec,
}

/// One room's proof-of-work counts (see `room::challenge`), resolved once.
#[derive(Clone)]
pub struct ChallengeMetrics {
    pub issued: IntCounter,
    pub solved: IntCounter,
    pub refused: IntCounter,
    /// By [`crate::room::challenge::Refusal`], in its order.
    pub refusals: [IntCounter; crate::room::challenge::Refusal::ALL.len()],
    /// From issue to a valid answer, as the server sees it.
    pub solve_seconds: Histogram,
    /// The difficulty each challenge was issued at.
    pub bits: Histogram,
}

/// One room's metrics, resolved once so the request path does no label lookup.
#[derive(Clone)]
pub struct RoomMetrics {
    pub events: Arc<crate::events::Events>,
    pub waiting: IntGauge,
    pub active: IntGauge,
    pub pending: IntGauge,
    pub eta_seconds: IntGauge,
    /// `admit_per_minute` as the configuration file sets it.
    pub outflow_configured: IntGauge,
    /// `admit_per_minute` in force: the file's, an operator's, or the adaptive controller's.
    pub outflow_effective: IntGauge,
    /// What the admitter releases: the effective outflow with no-shows made up for.
    pub outflow_release: IntGauge,
    pub outflow_measured: IntGauge,
    /// The share of grants left unclaimed over the last five minutes, 0 to 1.
    pub no_show_share: prometheus::Gauge,
    /// The wait lived over the wait shown at join, one per admission from the line.
    pub eta_accuracy: Histogram,
    /// 1 while the room's store answers, 0 from its first failed call until it answers again.
    pub store_up: IntGauge,
    pub joined: IntCounter,
    pub admitted_direct: IntCounter,
    pub admitted_queue: IntCounter,
    pub abandoned: IntCounter,
    pub expired_grants: IntCounter,
    pub wait_seconds: Histogram,
    /// Places held now for waiters who are away (DESIGN §3, "Stepping away keeps the place").
    pub held: IntGauge,
    pub away: IntCounter,
    pub returned: IntCounter,
    /// How long those who came back had been away.
    pub away_seconds: Histogram,
    /// How long the admitter's store call took: the line stands still while it runs.
    pub tick_seconds: Histogram,
    /// Sessions the mailbox ended with `Usher-Session: end` (its origin signal).
    pub origin_ended: IntCounter,
    /// The adaptive controller's decisions, one per period, by reason (labels: room, reason).
    adaptive: IntCounterVec,
    /// What it judged the last period by: watched, floor, grow_below, cut_above.
    adaptive_lines: [prometheus::Gauge; 4],
    room: String,
    /// Places and sessions of an earlier store generation taken over (DESIGN §8).
    pub restored_places: IntCounter,
    pub restored_sessions: IntCounter,
}

impl RoomMetrics {
    /// Counts one decision of the adaptive outflow.
    pub fn adaptive_decision(&self, reason: &str) {
        self.adaptive.with_label_values(&[self.room.as_str(), reason]).inc();
    }

    /// Sets what the adaptive outflow judged its last period by.
    pub fn adaptive_lines(&self, lines: &crate::room::adaptive::Lines) {
        let [watched, floor, grow_below, cut_above] = &self.adaptive_lines;
        watched.set(lines.watched);
        floor.set(lines.floor);
        grow_below.set(lines.grow_below);
        cut_above.set(lines.cut_above);
    }
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(v.clone())).expect("each metric is registered once");
    v
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let v = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["room"])
        .expect("static metric definition");
    registry.register(Box::new(v.clone())).expect("each metric is registered once");
    v
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(v.clone())).expect("each metric is registered once");
    v
}

impl Metrics {
    /// Creates the metrics with one shard per worker (index `0..workers`).
    pub fn new(workers: usize) -> Self {
        let registry = Registry::new();
        let build_info =
            IntGaugeVec::new(Opts::new("usher_build_info", "Build of this usher process; always 1."), &["version"])
                .expect("static metric definition");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let connections =
            IntGauge::new("usher_connections", "Client connections open now.").expect("static metric definition");
        for collector in [Box::new(build_info) as Box<dyn prometheus::core::Collector>, Box::new(connections.clone())] {
            registry.register(collector).expect("each metric is registered once");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("each metric is registered once");
        let token_rejected = counter_vec(
            &registry,
            "usher_token_rejected_total",
            "Cookies not accepted (the visitor is treated as new), by cookie and reason.",
            &["cookie", "reason"],
        );
        let store_errors = IntCounter::new("usher_store_errors_total", "Store operations that failed.")
            .expect("static metric definition");
        registry.register(Box::new(store_errors.clone())).expect("each metric is registered once");
        let clock_step = prometheus::Gauge::new(
            "usher_clock_step_seconds",
            "How far the system's wall clock is from usher's (the wall clock at start advanced by the \
             monotonic clock); non-zero after the system clock was stepped. Admission is unaffected.",
        )
        .expect("static metric definition");
        registry.register(Box::new(clock_step.clone())).expect("each metric is registered once");
        let rate_limited = counter_vec(
            &registry,
            "usher_rate_limited_total",
            "Requests answered 429, by the rule they broke.",
            &["rule"],
        );
        let limiter_overflow = counter_vec(
            &registry,
            "usher_limiter_overflow_total",
            "Checks of clients a full limiter table could not hold, made on its shared overflow cells, by rule.",
            &["rule"],
        );
        let limiter_tracked = gauge_vec(
            &registry,
            "usher_limiter_tracked_clients",
            "Client keys a limiter holds (at most limits.max_tracked_clients), by rule.",
            &["rule"],
        );
        let changes = counter_vec(
            &registry,
            "usher_changes_total",
            "Changes applied while running (admin API or reload), by source, target and field.",
            &["source", "target", "field"],
        );
        let r = &registry;
        let defences = Defences::new(r);
        let wait = histogram_vec(
            r,
            "usher_wait_seconds",
            "Time from joining the line to being admitted.",
            vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0],
        );
        // From a tunnel's few seconds to past the default hold of ten minutes.
        let away_seconds = histogram_vec(
            r,
            "usher_away_seconds",
            "How long waiters who came back within hold had been away (since their last poll).",
            vec![5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0],
        );
        // From an idle line's tens of microseconds to a million-waiter opening draw.
        let tick_seconds = histogram_vec(
            r,
            "usher_tick_seconds",
            "How long each admitter tick's store call took (expiry, grants, the opening draw).",
            vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0],
        );
        let no_show_share = prometheus::GaugeVec::new(
            prometheus::Opts::new(
                "usher_no_show_share",
                "Share of grants left unclaimed over the last five minutes (0 to 1), which the release makes up for.",
            ),
            &["room"],
        )
        .expect("static metric definition");
        r.register(Box::new(no_show_share.clone())).expect("each metric is registered once");
        let adaptive_lines = prometheus::GaugeVec::new(
            prometheus::Opts::new(
                "usher_adaptive_latency_seconds",
                "What the adaptive outflow judged its last period by: the watched quantile, its floor (lowest over the \
                 last minutes), and the lines under which the rate grows and over which it is cut.",
            ),
            &["room", "line"],
        )
        .expect("static metric definition");
        r.register(Box::new(adaptive_lines.clone())).expect("each metric is registered once");
        // 1 is an exact estimate; under 1 the wait was shorter than shown, over 1 longer.
        let eta_accuracy = histogram_vec(
            r,
            "usher_eta_accuracy_ratio",
            "The wait lived divided by the estimate shown at join, per admission from the line.",
            vec![0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0],
        );
        let rooms = RoomFamilies {
            waiting: gauge_vec(
                r,
                "usher_waiting",
                "Waiters in line, those away with a held place included.",
                &["room"],
            ),
            active: gauge_vec(r, "usher_active_sessions", "Admitted sessions live now.", &["room"]),
            pending: gauge_vec(
                r,
                "usher_pending_grants",
                "Waiters whose turn came and who have not claimed it yet.",
                &["room"],
            ),
            eta: gauge_vec(r, "usher_eta_seconds", "Estimated wait of a newcomer joining the tail now.", &["room"]),
            outflow: gauge_vec(
                r,
                "usher_outflow_per_minute",
                "Admissions per minute, by kind: configured (the file), effective (in force, set by an \
                 operator or the adaptive controller), release (effective with no-shows made up for), measured.",
                &["room", "kind"],
            ),
            store_up: gauge_vec(
                r,
                "usher_store_up",
                "1 while the room's admission store answers, 0 while it does not (the node still serves pass holders).",
                &["room"],
            ),
            joined: counter_vec(r, "usher_joined_total", "Tickets issued.", &["room"]),
            admitted: counter_vec(
                r,
                "usher_admitted_total",
                "Sessions admitted, directly or from the line.",
                &["room", "via"],
            ),
            abandoned: counter_vec(
                r,
                "usher_abandoned_total",
                "Waiters away longer than hold, whose place was given up.",
                &["room"],
            ),
            expired_grants: counter_vec(
                r,
                "usher_expired_grants_total",
                "Turns that came but were not claimed within the claim window (the waiter is away, its place held).",
                &["room"],
            ),
            wait,
            held: gauge_vec(
                r,
                "usher_held",
                "Waiters away now whose place is held (skipped until they return).",
                &["room"],
            ),
            away: counter_vec(
                r,
                "usher_away_total",
                "Waiters found away: no poll for waiter_ttl, or a turn not claimed. Skipped, place held.",
                &["room"],
            ),
            returned: counter_vec(
                r,
                "usher_returned_total",
                "Away waiters who polled again within hold and kept their place.",
                &["room"],
            ),
            away_seconds,
            tick_seconds,
            no_show_share,
            adaptive_lines,
            eta_accuracy,
            adaptive: counter_vec(
                r,
                "usher_adaptive_decisions_total",
                "The adaptive outflow's decisions, one per period, by reason (errors, latency and queue cut it, headroom grows it).",
                &["room", "reason"],
            ),
            origin_ended: counter_vec(
                r,
                "usher_origin_ended_total",
                "Sessions the mailbox ended by answering with Usher-Session: end (the place freed at once).",
                &["room"],
            ),
            restored: counter_vec(
                r,
                "usher_restored_total",
                "Places (what=place) and sessions (what=session) of an earlier store generation \
                 taken over after a restart or a loss of the store's data.",
                &["room", "what"],
            ),
            challenges: counter_vec(
                r,
                "usher_challenges_total",
                "Proof-of-work challenges by outcome: issued to newcomers, solved (a ticket given), refused.",
                &["room", "outcome"],
            ),
            challenge_refusals: counter_vec(
                r,
                "usher_challenge_refusals_total",
                "Challenge answers refused, by reason (forged, replayed, expired, wrong_room, wrong_client, \
                 wrong_answer, too_early, malformed).",
                &["room", "reason"],
            ),
            // A fast laptop's fraction of a second to a slow phone's half minute.
            challenge_solve: histogram_vec(
                r,
                "usher_challenge_solve_seconds",
                "From a challenge's issue to its valid answer, as the server sees it.",
                vec![0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0],
            ),
            challenge_bits: histogram_vec(
                r,
                "usher_challenge_difficulty",
                "The difficulty (leading zero bits per puzzle) each challenge was issued at.",
                (8..=28).map(f64::from).collect(),
            ),
        };
        Self {
            registry,
            shards: (0..workers.max(1)).map(|_| Shard::new()).collect(),
            connections,
            token_rejected,
            store_errors,
            clock_step,
            rate_limited,
            limiter_overflow,
            limiter_tracked,
            changes,
            defences,
            rooms,
            events: Arc::default(),
        }
    }

    /// The figures of the limiter of `rule` (its `rule` label).
    pub fn limiter(&self, rule: &str) -> crate::limits::LimiterMetrics {
        crate::limits::LimiterMetrics {
            hits: self.rate_limited.with_label_values(&[rule]),
            overflow: self.limiter_overflow.with_label_values(&[rule]),
            tracked: self.limiter_tracked.with_label_values(&[rule]),
        }
    }

    /// The metrics of one room (created on first use; cheap to clone).
    pub fn room(&self, name: &str) -> RoomMetrics {
        let f = &self.rooms;
        RoomMetrics {
            events: self.events.clone(),
            waiting: f.waiting.with_label_values(&[name]),
            active: f.active.with_label_values(&[name]),
            pending: f.pending.with_label_values(&[name]),
            eta_seconds: f.eta.with_label_values(&[name]),
            outflow_configured: f.outflow.with_label_values(&[name, "configured"]),
            outflow_effective: f.outflow.with_label_values(&[name, "effective"]),
            outflow_release: f.outflow.with_label_values(&[name, "release"]),
            outflow_measured: f.outflow.with_label_values(&[name, "measured"]),
            no_show_share: f.no_show_share.with_label_values(&[name]),
            eta_accuracy: f.eta_accuracy.with_label_values(&[name]),
            store_up: {
                let up = f.store_up.with_label_values(&[name]);
                up.set(1);
                up
            },
            joined: f.joined.with_label_values(&[name]),
            admitted_direct: f.admitted.with_label_values(&[name, "direct"]),
            admitted_queue: f.admitted.with_label_values(&[name, "queue"]),
            abandoned: f.abandoned.with_label_values(&[name]),
            expired_grants: f.expired_grants.with_label_values(&[name]),
            held: f.held.with_label_values(&[name]),
            away: f.away.with_label_values(&[name]),
            returned: f.returned.with_label_values(&[name]),
            away_seconds: f.away_seconds.with_label_values(&[name]),
            tick_seconds: f.tick_seconds.with_label_values(&[name]),
            origin_ended: f.origin_ended.with_label_values(&[name]),
            adaptive: {
                for reason in crate::room::adaptive::Reason::ALL {
                    f.adaptive.with_label_values(&[name, reason.label()]);
                }
                f.adaptive.clone()
            },
            adaptive_lines: ["watched", "floor", "grow_below", "cut_above"]
                .map(|line| f.adaptive_lines.with_label_values(&[name, line])),
            room: name.to_string(),
            restored_places: f.restored.with_label_values(&[name, "place"]),
            restored_sessions: f.restored.with_label_values(&[name, "session"]),
            wait_seconds: f.wait.with_label_values(&[name]),
        }
    }

    /// The proof-of-work counts of one room.
    pub fn challenge(&self, name: &str) -> ChallengeMetrics {
        let f = &self.rooms;
        ChallengeMetrics {
            issued: f.challenges.with_label_values(&[name, "issued"]),
            solved: f.challenges.with_label_values(&[name, "solved"]),
            refused: f.challenges.with_label_values(&[name, "refused"]),
            refusals: crate::room::challenge::Refusal::ALL
                .map(|why| f.challenge_refusals.with_label_values(&[name, why.label()])),
            solve_seconds: f.challenge_solve.with_label_values(&[name]),
            bits: f.challenge_bits.with_label_values(&[name]),
        }
    }

    /// The registry for low-rate metrics that other modules define.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn shard(&self, worker: usize) -> &Shard {
        &self.shards[worker % self.shards.len()]
    }

    /// Counts one answered request.
    #[inline]
    pub fn request(&self, worker: usize, route: Route, status: u16) {
        let code = usize::from(status).saturating_sub(100).min(CODES - 1);
        self.shard(worker).requests[route as usize * CODES + code].fetch_add(1, Relaxed);
    }

    /// Records how long the upstream took to answer with a response head.
    #[inline]
    pub fn upstream_duration(&self, worker: usize, elapsed: Duration) {
        let shard = self.shard(worker);
        let secs = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS.len());
        shard.duration_buckets[bucket].fetch_add(1, Relaxed);
        shard.duration_sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn upstream_error(&self, worker: usize, kind: UpstreamErrorKind) {
        self.shard(worker).upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    fn sum(&self, cell: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| cell(s).load(Relaxed)).sum()
    }

    /// All metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        self.clock_step.set(crate::clock::step_seconds());
        let mut out = String::with_capacity(16 * 1024);
        self.render_sharded(&mut out);
        let mut buf = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buf).is_ok() {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        out
    }

    fn render_sharded(&self, out: &mut String) {
        // `write!` to a String cannot fail; the results are ignored for that reason.
        out.push_str("# HELP usher_requests_total Requests answered, by route and status code.\n");
        out.push_str("# TYPE usher_requests_total counter\n");
        for route in Route::ALL {
            for code in 0..CODES {
                let n = self.sum(|s| &s.requests[route as usize * CODES + code]);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "usher_requests_total{{route=\"{}\",code=\"{}\"}} {n}",
                        route.label(),
                        code + 100
                    );
                }
            }
        }
        out.push_str(
            "# HELP usher_upstream_duration_seconds Time from sending a request upstream to its response head.\n",
        );
        out.push_str("# TYPE usher_upstream_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.sum(|s| &s.duration_buckets[i]);
            let _ = writeln!(out, "usher_upstream_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.sum(|s| &s.duration_buckets[DURATION_BUCKETS.len()]);
        let _ = writeln!(out, "usher_upstream_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum(|s| &s.duration_sum_nanos) as f64 / 1e9;
        let _ = writeln!(out, "usher_upstream_duration_seconds_sum {sum}");
        let _ = writeln!(out, "usher_upstream_duration_seconds_count {cumulative}");
        out.push_str("# HELP usher_upstream_errors_total Requests that could not be forwarded, by kind.\n");
        out.push_str("# TYPE usher_upstream_errors_total counter\n");
        for kind in UpstreamErrorKind::ALL {
            let n = self.sum(|s| &s.upstream_errors[kind as usize]);
            let _ = writeln!(out, "usher_upstream_errors_total{{kind=\"{}\"}} {n}", kind.label());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_counts_are_summed_across_workers() {
        let m = Metrics::new(2);
        m.request(0, Route::Upstream, 200);
        m.request(1, Route::Upstream, 200);
        m.request(1, Route::Usher, 404);
        m.request(1, Route::Usher, 1000);
        m.upstream_duration(0, Duration::from_millis(3));
        m.upstream_duration(1, Duration::from_secs(60));
        let text = m.render();
        assert!(text.contains("usher_requests_total{route=\"upstream\",code=\"200\"} 2\n"), "{text}");
        assert!(text.contains("usher_requests_total{route=\"usher\",code=\"404\"} 1\n"));
        assert!(text.contains("usher_requests_total{route=\"usher\",code=\"599\"} 1\n"));
        assert!(text.contains("usher_upstream_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("usher_upstream_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("usher_upstream_duration_seconds_bucket{le=\"30\"} 1\n"));
        assert!(text.contains("usher_upstream_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("usher_upstream_duration_seconds_count 2\n"));
        assert!(text.contains("usher_build_info{version="));
    }
}
