//! Adaptive outflow (DESIGN §3, issue 17): the controller that sets a room's effective
//! `admit_per_minute` from what the mailbox's answers show, within the operator's bounds.
//!
//! The law is AIMD with a gradient on latency, as in TCP congestion control and Envoy's
//! adaptive concurrency filter, and like Envoy (its `minRTT`) and TCP Vegas it judges the
//! latency against the mailbox's own floor as well as the operator's target:
//! - errors over the budget: cut at once to [`ERROR_CUT`] of the rate (back off fast);
//! - the latency quantile over its *cut line*: scale by the gradient `line / sampled`,
//!   smoothed by half as Netflix's concurrency-limits smooths its own (`(1 + gradient) / 2`):
//!   a queue just begun is trimmed, a collapse is about halved;
//! - the quantile under its *growth line*: grow by [`GROWTH`] of the rate, at least one
//!   admission a minute (grow slowly);
//! - between the two, or too few answers to judge: hold.
//!
//! The **floor** is the lowest quantile of the last [`FLOOR_WINDOW`]: what the mailbox answers
//! in when no queue has formed. The growth line is [`AT_FLOOR`] × the floor (and never above
//! [`HEADROOM`] × the target); the cut line is [`QUEUED`] × the floor (and never above the
//! target). So the rate grows only while the mailbox answers as fast as it can, and is cut
//! once a queue as long as its own service time has formed, whatever target the operator
//! chose. The target alone was tried first, and measured (BENCHMARKS.md, "Adaptive outflow"):
//! the controller held the quantile anywhere up to the target, so the mailbox sat on a queue,
//! and each probe's overshoot (the visitors' requests come seconds after their admission)
//! landed on it: p99 329 ms against a target of 250 ms. With a target at or past the latency
//! at which the mailbox refuses, it let the mailbox fill until its 503s cut the rate.
//!
//! The band between the two lines is what keeps a steady mailbox from oscillating: once its
//! latency settles inside, nothing moves. A decrease is never followed by growth in the next
//! period ([`COOL_DOWN`]): the answers of that period were still served at the old rate. Nor,
//! in those periods, by a second decrease, unless the latency is past [`COLLAPSE`] × the cut
//! line: the queue the overshoot built is still draining, and the first measured run cut three
//! times for one overshoot (to 0.55 of the capacity).
//!
//! Near the rate of the last decrease (from [`PROBE_FROM`] of it) growth slows to
//! [`PROBE_GROWTH`], as TCP CUBIC flattens near its last loss: the capacity was found there,
//! so it is probed gently, and each overshoot is small. Past it by a tenth, the mailbox has
//! grown and the memory is dropped.

pub use crate::config::AdaptiveConfig as Bounds;
use crate::store::RoomLimits;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Share of the rate kept when errors pass the budget.
pub const ERROR_CUT: f64 = 0.7;
/// Latency under this share of the target leaves room to grow (a bound on the growth line).
pub const HEADROOM: f64 = 0.8;
/// The growth line, as a multiple of the floor: within a tenth of it, no queue has formed.
/// (Latency is read in buckets 20 % wide, so this is "in the floor's own bucket".)
pub const AT_FLOOR: f64 = 1.1;
/// The cut line, as a multiple of the floor: a queue as long as the service itself.
pub const QUEUED: f64 = 2.0;
/// How far back the floor looks. Long enough that a mailbox held near its capacity (whose
/// quantile leaves the floor in most periods) still remembers it; short enough that a mailbox
/// that became slower for good is judged by its new floor within minutes.
pub const FLOOR_WINDOW: Duration = Duration::from_secs(150);
/// Latency differences smaller than this are jitter, not a queue: the growth line is at
/// least this far above the floor, and the cut line [`SHORTEST_QUEUE`] (a mailbox answering
/// in 2 ms is not queueing at 4 ms).
pub const NOISE: Duration = Duration::from_millis(10);
/// The shortest queue the cut line stands for, however fast the mailbox.
pub const SHORTEST_QUEUE: Duration = Duration::from_millis(50);
/// Growth per period, as a share of the rate.
pub const GROWTH: f64 = 0.05;
/// The most a latency decrease cuts in one period (to half).
pub const MOST_CUT: f64 = 0.5;
/// How much of the latency gradient a period applies. The rest keeps the rate: the first
/// measured run cut by the whole gradient, and a 5 % overshoot (which builds a queue, so
/// the quantile reads 1.5–2× the target) cost a third of the rate each time.
pub const SMOOTHING: f64 = 0.5;
/// Periods after a decrease before growth may resume.
pub const COOL_DOWN: u32 = 2;
/// Latency past this multiple of the cut line is a collapse: cut even while cooling down.
pub const COLLAPSE: f64 = 2.0;
/// Growth slows from this share of the rate last cut from...
pub const PROBE_FROM: f64 = 0.9;
/// ...to this share a period.
pub const PROBE_GROWTH: f64 = 0.01;
/// Fewer forwarded answers than this in a period say nothing: hold.
pub const FEWEST_ANSWERS: u64 = 20;

/// What a room's forwarded requests met over one period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Period {
    pub answers: u64,
    pub errors: u64,
    /// The watched quantile of the upstream's latency (`None` with no answers).
    pub latency: Option<Duration>,
}

/// Why the controller moved, or did not move, the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Errors,
    /// Over the target.
    Latency,
    /// Over the cut line drawn from the floor, under the target: a queue has formed.
    Queue,
    Headroom,
    Steady,
    FewAnswers,
    CoolingDown,
}

impl Reason {
    /// Every reason, for the metric's series to exist from the start (a dashboard querying
    /// them must find them before the first decision).
    pub const ALL: [Reason; 7] = [
        Reason::Errors,
        Reason::Latency,
        Reason::Queue,
        Reason::Headroom,
        Reason::Steady,
        Reason::FewAnswers,
        Reason::CoolingDown,
    ];

    /// The `reason` label of its metric.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Errors => "errors",
            Reason::Latency => "latency",
            Reason::Queue => "queue",
            Reason::Headroom => "headroom",
            Reason::Steady => "steady",
            Reason::FewAnswers => "few_answers",
            Reason::CoolingDown => "cooling_down",
        }
    }
}

/// The lowest of the watched quantile over the last judged periods (those with answers
/// enough; [`FLOOR_WINDOW`]'s worth of periods): the mailbox unloaded. A quiet spell adds
/// nothing, so the floor stays what the mailbox last showed under load.
#[derive(Debug, Clone)]
struct Floor {
    recent: VecDeque<f64>,
    keep: usize,
}

impl Floor {
    fn new(period: Duration) -> Self {
        let keep = (FLOOR_WINDOW.as_secs_f64() / period.as_secs_f64().max(0.001)).ceil() as usize;
        Floor { recent: VecDeque::new(), keep: keep.max(1) }
    }

    fn see(&mut self, latency: f64) {
        if self.recent.len() == self.keep {
            self.recent.pop_front();
        }
        self.recent.push_back(latency);
    }

    fn lowest(&self) -> Option<f64> {
        self.recent.iter().copied().reduce(f64::min)
    }
}

/// What the controller judged a period by, in seconds: exported so that an SRE sees why it
/// moved (`usher_adaptive_latency_seconds`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lines {
    /// The period's watched quantile.
    pub watched: f64,
    /// The lowest of it over [`FLOOR_WINDOW`].
    pub floor: f64,
    /// Under this the rate grows.
    pub grow_below: f64,
    /// Over this the rate is cut.
    pub cut_above: f64,
}

/// One room's controller: the effective rate and what it remembers between periods.
#[derive(Debug, Clone)]
pub struct Controller {
    bounds: Bounds,
    /// Admissions per minute, fractional so that small steps accumulate.
    rate: f64,
    cooling: u32,
    /// The rate the last decrease cut from (0: none, or grown past).
    ceiling: f64,
    floor: Floor,
    lines: Option<Lines>,
}

impl Controller {
    /// Starts at `start` (the configured `admit_per_minute`), within the bounds.
    pub fn new(bounds: Bounds, start: u64) -> Self {
        let floor = Floor::new(bounds.period);
        let mut c = Self { bounds, rate: 0.0, cooling: 0, ceiling: 0.0, floor, lines: None };
        c.restart(start);
        c
    }

    /// Goes on from `start`, a rate set by someone else: what the controller learnt of the
    /// rate is dropped, what it learnt of the mailbox (its floor) is kept.
    pub fn restart(&mut self, start: u64) {
        let b = &self.bounds;
        self.rate = (start as f64).clamp(b.min_per_minute as f64, b.max_per_minute as f64);
        self.cooling = 0;
        self.ceiling = 0.0;
    }

    /// The effective admissions per minute.
    pub fn rate(&self) -> u64 {
        self.rate.round() as u64
    }

    /// What the last period with enough answers was judged by.
    pub fn lines(&self) -> Option<Lines> {
        self.lines
    }

    /// Decides from one period: the new effective rate and why.
    pub fn step(&mut self, period: &Period) -> (u64, Reason) {
        let b = &self.bounds;
        let (lo, hi) = (b.min_per_minute as f64, b.max_per_minute as f64);
        let target = b.target.as_secs_f64();
        let errors = period.errors as f64 > b.error_budget * period.answers as f64;
        let latency = period.latency.map_or(0.0, |l| l.as_secs_f64());
        if period.answers >= FEWEST_ANSWERS && period.latency.is_some() {
            self.floor.see(latency);
        }
        let floor = self.floor.lowest().unwrap_or(target);
        let grow_below = (AT_FLOOR * floor).max(floor + NOISE.as_secs_f64()).min(HEADROOM * target);
        let cut_above = (QUEUED * floor).max(floor + SHORTEST_QUEUE.as_secs_f64()).min(target);
        let (cooling, before) = (self.cooling > 0, self.rate);
        let reason = match () {
            _ if period.answers < FEWEST_ANSWERS => Reason::FewAnswers,
            _ if errors && !cooling => {
                self.rate *= ERROR_CUT;
                Reason::Errors
            }
            _ if latency > cut_above && (!cooling || latency >= COLLAPSE * cut_above) => {
                let gradient = cut_above / latency;
                self.rate *= (1.0 - SMOOTHING + SMOOTHING * gradient).max(MOST_CUT);
                if latency > target { Reason::Latency } else { Reason::Queue }
            }
            _ if errors || latency > cut_above || (cooling && latency < grow_below) => Reason::CoolingDown,
            _ if latency < grow_below => {
                let probing = self.ceiling > 0.0 && self.rate >= PROBE_FROM * self.ceiling;
                let growth = if probing { PROBE_GROWTH } else { GROWTH };
                self.rate += (self.rate * growth).max(1.0);
                if self.rate > 1.1 * self.ceiling {
                    self.ceiling = 0.0;
                }
                Reason::Headroom
            }
            _ => Reason::Steady,
        };
        if period.answers >= FEWEST_ANSWERS {
            self.lines = Some(Lines { watched: latency, floor, grow_below, cut_above });
        }
        if matches!(reason, Reason::Errors | Reason::Latency | Reason::Queue) {
            self.cooling = COOL_DOWN;
            self.ceiling = before;
        } else {
            self.cooling = self.cooling.saturating_sub(1);
        }
        self.rate = self.rate.clamp(lo, hi);
        (self.rate(), reason)
    }
}

/// Latency buckets: each 20 % wider than the last, from 1 ms to about 50 s, so that a
/// quantile read from them is within 20 % of the truth (and never below it).
pub const BUCKETS: usize = 60;
const GROWTH_PER_BUCKET: f64 = 1.2;

/// Forwarded answers as counts: the failures and the latency histogram. What a node sends
/// with its tick, and what the store sums over every node for the controller (DESIGN §8).
/// As a slice: `[errors, bucket 0, bucket 1, ...]`, [`SLOTS`] long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers(pub [u64; SLOTS]);

/// Slots of [`Answers`]: the errors and each bucket (the Redis tick script has the same).
pub const SLOTS: usize = 1 + BUCKETS;

impl Default for Answers {
    fn default() -> Self {
        Answers([0; SLOTS])
    }
}

impl Answers {
    /// From the store's sums; `None` unless exactly [`SLOTS`] long.
    pub fn from_slice(counts: &[u64]) -> Option<Self> {
        counts.try_into().ok().map(Answers)
    }

    /// The period these answers make, with the `quantile` of their latency (the upper edge
    /// of its bucket).
    pub fn period(&self, quantile: f64) -> Period {
        let (errors, counts) = (self.0[0], &self.0[1..]);
        let answers: u64 = counts.iter().sum();
        let rank = (quantile * answers as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        let latency = counts.iter().position(|&n| {
            seen += n;
            seen >= rank
        });
        let latency =
            latency.filter(|_| answers > 0).map(|i| Duration::from_secs_f64(GROWTH_PER_BUCKET.powi(i as i32) / 1000.0));
        Period { answers, errors, latency }
    }
}

/// What a room's forwarded requests met since the last drain: counts and a latency
/// histogram, written by every request without a lock.
#[derive(Debug)]
pub struct Recorder {
    slots: [AtomicU64; SLOTS],
}

impl Default for Recorder {
    fn default() -> Self {
        Self { slots: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Recorder {
    /// One upstream answer (or failure) after `latency`.
    pub fn record(&self, latency: Duration, failed: bool) {
        let ms = latency.as_secs_f64() * 1000.0;
        let index = if ms <= 1.0 { 0 } else { (ms.ln() / GROWTH_PER_BUCKET.ln()).ceil() as usize };
        self.slots[1 + index.min(BUCKETS - 1)].fetch_add(1, Relaxed);
        if failed {
            self.slots[0].fetch_add(1, Relaxed);
        }
    }

    /// Everything recorded since the last drain, and a fresh start.
    pub fn drain(&self) -> Answers {
        Answers(std::array::from_fn(|i| self.slots[i].swap(0, Relaxed)))
    }

    /// Puts drained answers back (their tick failed: they go with the next one).
    pub fn restore(&self, answers: &Answers) {
        for (slot, n) in self.slots.iter().zip(answers.0) {
            slot.fetch_add(n, Relaxed);
        }
    }
}

/// A room's adaptive outflow: the recorder its requests write, and the controller its
/// admitter runs once a period on the answers of every node (the lease holder's, with Redis).
/// Whether an operator has pinned the rate is part of the room's limits, so every node obeys.
#[derive(Debug)]
pub struct Adaptive {
    pub bounds: Bounds,
    pub recorder: Recorder,
    controller: Mutex<Controller>,
    last_ms: AtomicU64,
}

impl Adaptive {
    pub fn new(bounds: Bounds, start: u64, now_ms: u64) -> Self {
        let controller = Mutex::new(Controller::new(bounds.clone(), start));
        Self { bounds, recorder: Recorder::default(), controller, last_ms: AtomicU64::new(now_ms) }
    }

    /// Whether a period has passed since the last: the caller then takes the period's answers
    /// and [`Self::decide`]s.
    pub fn due(&self, now_ms: u64) -> bool {
        let last = self.last_ms.load(Relaxed);
        let period_ms = u64::try_from(self.bounds.period.as_millis()).unwrap_or(u64::MAX);
        if now_ms < last.saturating_add(period_ms) {
            return false;
        }
        self.last_ms.store(now_ms, Relaxed);
        true
    }

    /// The limits with the new rate and why, from one period's answers; `None` while pinned.
    /// A rate in force other than the controller's (an operator's, another node's controller
    /// before the lease moved) is where it goes on from.
    pub fn decide(&self, limits: &RoomLimits, answers: &Answers) -> Option<(RoomLimits, Reason)> {
        if limits.adaptive_pinned {
            return None;
        }
        let mut controller = self.controller.lock().unwrap_or_else(|p| p.into_inner());
        if controller.rate() != limits.admit_per_minute {
            controller.restart(limits.admit_per_minute);
        }
        let (rate, reason) = controller.step(&answers.period(self.bounds.quantile));
        Some((RoomLimits { admit_per_minute: rate, ..limits.clone() }, reason))
    }

    /// What the last judged period was judged by.
    pub fn lines(&self) -> Option<Lines> {
        self.controller.lock().unwrap_or_else(|p| p.into_inner()).lines()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            target: Duration::from_millis(800),
            quantile: 0.9,
            error_budget: 0.01,
            min_per_minute: 100,
            max_per_minute: 10_000,
            period: Duration::from_secs(10),
        }
    }

    fn ok(ms: u64) -> Period {
        Period { answers: 1000, errors: 0, latency: Some(Duration::from_millis(ms)) }
    }

    fn run(c: &mut Controller, periods: impl IntoIterator<Item = Period>) -> Vec<(u64, Reason)> {
        periods.into_iter().map(|p| c.step(&p)).collect()
    }

    #[test]
    fn a_steady_mailbox_inside_the_band_never_moves_the_rate() {
        let mut c = Controller::new(bounds(), 1200);
        let steps = run(&mut c, (0..500).map(|i| ok(700 + (i % 7) * 10)));
        assert!(steps.iter().all(|&(rate, reason)| rate == 1200 && reason == Reason::Steady), "{steps:?}");
    }

    #[test]
    fn headroom_grows_the_rate_slowly_up_to_the_bound_and_never_past_it() {
        let mut c = Controller::new(bounds(), 1000);
        let steps = run(&mut c, (0..200).map(|_| ok(200)));
        assert_eq!(steps[0], (1050, Reason::Headroom), "5 % a period");
        assert!(steps.windows(2).all(|w| w[1].0 >= w[0].0 && w[1].0 <= 10_000), "monotone, bounded");
        assert_eq!(steps.last().map(|s| s.0), Some(10_000));
        // A tiny rate still grows by at least one a minute.
        let mut small = Controller::new(Bounds { min_per_minute: 1, ..bounds() }, 1);
        assert_eq!(small.step(&ok(100)).0, 2);
    }

    #[test]
    fn an_error_burst_cuts_at_once_and_growth_waits_out_the_cool_down() {
        let mut c = Controller::new(bounds(), 5000);
        let burst = Period { answers: 1000, errors: 50, latency: Some(Duration::from_millis(300)) };
        assert_eq!(c.step(&burst), (3500, Reason::Errors), "back off in the period the errors are seen");
        assert_eq!(c.step(&ok(200)), (3500, Reason::CoolingDown));
        assert_eq!(c.step(&ok(200)), (3500, Reason::CoolingDown));
        assert_eq!(c.step(&ok(200)), (3675, Reason::Headroom));
        // Errors within the budget are not a reason.
        let mut d = Controller::new(bounds(), 5000);
        assert_eq!(
            d.step(&Period { answers: 1000, errors: 10, latency: Some(Duration::from_millis(700)) }).1,
            Reason::Steady
        );
    }

    #[test]
    fn latency_over_the_target_scales_the_rate_by_the_smoothed_gradient_at_most_halving_it() {
        let mut c = Controller::new(bounds(), 4000);
        assert_eq!(c.step(&ok(1000)), (3600, Reason::Latency), "half of 800/1000, half kept: 0.9");
        assert_eq!(c.step(&ok(8000)), (1980, Reason::Latency), "a tenth is far over: 0.55");
        assert_eq!(c.step(&ok(80_000)), (1000, Reason::Latency), "never more than half at once");
        // Down to the floor and no further, however bad.
        let steps = run(&mut c, (0..20).map(|_| ok(30_000)));
        assert_eq!(steps.last(), Some(&(100, Reason::Latency)));
    }

    #[test]
    fn flapping_errors_keep_the_rate_down_and_bounds_always_hold() {
        let mut c = Controller::new(bounds(), 8000);
        let bad = Period { answers: 500, errors: 100, latency: Some(Duration::from_millis(2000)) };
        let steps = run(&mut c, (0..300).map(|i| if i % 4 == 0 { bad } else { ok(100) }));
        assert!(steps.iter().all(|&(r, _)| (100..=10_000).contains(&r)), "{steps:?}");
        // One bad period in four: each cut (×0.7) outweighs the one growth step the cool-down
        // leaves (×1.05), so the rate sinks to the floor and stays within a step of it.
        assert!(steps[60..].iter().all(|&(r, _)| r <= 105), "{:?}", &steps[60..]);
    }

    #[test]
    fn one_overshoot_is_cut_once_while_its_queue_drains_and_a_collapse_again() {
        let mut c = Controller::new(bounds(), 5000);
        assert_eq!(c.step(&ok(1200)), (4167, Reason::Latency), "(1 + 800/1200) / 2");
        // The queue built before the cut drains: still over the target, but not cut again.
        assert_eq!(c.step(&ok(1000)), (4167, Reason::CoolingDown));
        let drain_errors = Period { answers: 1000, errors: 50, latency: Some(Duration::from_millis(900)) };
        assert_eq!(c.step(&drain_errors), (4167, Reason::CoolingDown));
        // Over again after the cool-down: cut again.
        assert_eq!(c.step(&ok(1000)).1, Reason::Latency);
        // A collapse is cut at once, cooling or not.
        let mut d = Controller::new(bounds(), 5000);
        d.step(&ok(1200));
        assert_eq!(d.step(&ok(2000)), (2917, Reason::Latency), "2.5× the target while cooling: (1 + 0.4) / 2");
    }

    #[test]
    fn growth_slows_near_the_rate_last_cut_from_and_resumes_past_it() {
        let mut c = Controller::new(bounds(), 5000);
        assert_eq!(c.step(&ok(2000)).0, 3500, "cut from 5000");
        c.step(&ok(200));
        c.step(&ok(200));
        let steps = run(&mut c, (0..80).map(|_| ok(200)));
        // 5 % a period below 4500 (0.9 of 5000), 1 % from there to 5500, 5 % past it.
        for w in steps.windows(2) {
            let (from, to) = (w[0].0 as f64, w[1].0 as f64);
            let expected = if (4500.0..=5500.0).contains(&from) { 1.01 } else { 1.05 };
            if to < 10_000.0 {
                assert!((to / from - expected).abs() < 0.002, "{from} to {to}: {steps:?}");
            }
        }
        assert!(steps.iter().any(|s| s.0 > 5500), "the old ceiling is passed: {steps:?}");
    }

    #[test]
    fn a_queue_is_cut_against_the_floor_long_before_the_target() {
        let mut c = Controller::new(bounds(), 1000);
        assert_eq!(c.step(&ok(100)), (1050, Reason::Headroom), "at the floor: grow");
        let lines = c.lines().expect("judged");
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            close(lines.floor, 0.1) && close(lines.grow_below, 0.11) && close(lines.cut_above, 0.2),
            "grow within a tenth of the floor, cut past twice it: {lines:?}"
        );
        assert_eq!(c.step(&ok(150)), (1050, Reason::Steady), "off the floor, far under 640 ms: hold");
        assert_eq!(c.step(&ok(300)), (875, Reason::Queue), "a queue twice the floor: (1 + 200/300) / 2");
        assert_eq!(c.step(&ok(300)), (875, Reason::CoolingDown), "the queue drains: not cut again");
        // The target stays the ceiling: a floor near it cuts at the target, named so.
        let mut d = Controller::new(bounds(), 1000);
        assert_eq!(d.step(&ok(700)), (1000, Reason::Steady), "floor 700: grow below 640, cut above 800");
        assert_eq!(d.step(&ok(1000)), (900, Reason::Latency));
    }

    #[test]
    fn the_floor_is_the_lowest_of_its_window_and_then_forgotten() {
        let mut c = Controller::new(bounds(), 5000);
        let window = (FLOOR_WINDOW.as_secs() / bounds().period.as_secs()) as usize;
        c.step(&ok(100));
        // The mailbox became three times slower for good: a queue, by the old floor...
        let steps = run(&mut c, (0..window - 1).map(|_| ok(300)));
        assert!(steps.iter().any(|s| s.1 == Reason::Queue), "{steps:?}");
        assert!(steps.iter().all(|s| s.1 != Reason::Headroom), "{steps:?}");
        // ...until the window has passed; then 300 ms is the floor, and once the last cut's
        // cool-down is over it grows again.
        let after = run(&mut c, (0..=COOL_DOWN).map(|_| ok(300)));
        assert!(
            after.iter().all(|s| s.1 != Reason::Queue) && after.last().map(|s| s.1) == Some(Reason::Headroom),
            "{after:?}"
        );
        assert_eq!(c.lines().map(|l| l.floor), Some(0.3));
        let rate = c.rate();
        // A rate set by someone else restarts the rate, not what was learnt of the mailbox.
        c.restart(rate * 2);
        assert_eq!(c.step(&ok(700)).1, Reason::Queue, "700 ms is past twice the remembered 300");
    }

    #[test]
    fn a_fast_mailbox_jitter_is_no_queue() {
        let mut c = Controller::new(bounds(), 1000);
        assert_eq!(c.step(&ok(2)).1, Reason::Headroom);
        assert_eq!(c.step(&ok(8)).1, Reason::Headroom, "within NOISE of a 2 ms floor");
        assert_eq!(c.step(&ok(40)).1, Reason::Steady, "4 ms would be twice the floor, but under SHORTEST_QUEUE");
        assert_eq!(c.step(&ok(60)).1, Reason::Queue, "past floor + SHORTEST_QUEUE");
    }

    #[test]
    fn too_few_answers_say_nothing() {
        let mut c = Controller::new(bounds(), 3000);
        let quiet = Period { answers: 5, errors: 5, latency: Some(Duration::from_secs(10)) };
        assert_eq!(c.step(&quiet), (3000, Reason::FewAnswers));
        assert_eq!(c.step(&Period { answers: 0, errors: 0, latency: None }), (3000, Reason::FewAnswers));
    }

    #[test]
    fn the_recorder_reads_the_quantile_within_a_bucket_and_never_below_it() {
        let r = Recorder::default();
        for ms in 1..=100u64 {
            r.record(Duration::from_millis(ms * 10), ms > 98);
        }
        let p = r.drain().period(0.9);
        assert_eq!((p.answers, p.errors), (100, 2));
        let p90 = p.latency.expect("answers").as_secs_f64() * 1000.0;
        assert!((900.0..=900.0 * 1.2).contains(&p90), "p90 of 10..1000 ms read as {p90} ms");
        assert_eq!(r.drain().period(0.9), Period { answers: 0, errors: 0, latency: None }, "taken: a fresh period");
        r.record(Duration::from_secs(3600), false);
        assert!(
            r.drain().period(0.99).latency.expect("one") >= Duration::from_secs(40),
            "past the last bucket: the last"
        );
    }

    #[test]
    fn a_pinned_room_is_not_decided_and_unpinning_starts_from_the_rate_in_force() {
        let limits = RoomLimits {
            max_active: 10,
            admit_per_minute: 1000,
            session_idle: Duration::from_secs(60),
            session_max: Duration::from_secs(3600),
            waiter_ttl: Duration::from_secs(30),
            claim_window: Duration::from_secs(30),
            hold: Duration::from_secs(600),
            mode: crate::config::RoomMode::Auto,
            opens_at_ms: None,
            message: None,
            tickets_per_client: 3,
            break_glass: None,
            adaptive_pinned: false,
        };
        let a = Adaptive::new(bounds(), 1000, 0);
        let fast = || {
            for _ in 0..100 {
                a.recorder.record(Duration::from_millis(100), false);
            }
            a.recorder.drain()
        };
        assert!(!a.due(5_000), "within the first period");
        assert!(a.due(10_000) && !a.due(12_000), "a period passed, then not again at once");
        let (grown, reason) = a.decide(&limits, &fast()).expect("not pinned");
        assert_eq!((grown.admit_per_minute, reason), (1050, Reason::Headroom));
        let pinned = RoomLimits { adaptive_pinned: true, ..grown.clone() };
        assert_eq!(a.decide(&pinned, &fast()), None, "pinned: the operator's rate stands");
        let unpinned = RoomLimits { admit_per_minute: 400, ..grown };
        assert_eq!(a.decide(&unpinned, &fast()).map(|(l, _)| l.admit_per_minute), Some(420), "from 400, not 1050");
    }

    #[test]
    fn answers_drained_and_restored_are_summed_as_one_period() {
        let r = Recorder::default();
        r.record(Duration::from_millis(50), false);
        r.record(Duration::from_millis(900), true);
        let drained = r.drain();
        assert_eq!(r.drain(), Answers::default(), "drained: a fresh start");
        r.record(Duration::from_millis(50), false);
        r.restore(&drained);
        let p = r.drain().period(0.5);
        assert_eq!((p.answers, p.errors), (3, 1));
        assert_eq!(Answers::from_slice(&drained.0), Some(drained.clone()));
        assert_eq!(Answers::from_slice(&drained.0[1..]), None, "one slot short");
    }

    #[test]
    fn the_redis_tick_script_sums_as_many_slots_as_answers_have() {
        let script = include_str!("../store/redis/lua/tick.lua");
        assert!(script.contains(&format!("local ANSWER_SLOTS = {SLOTS}\n")), "tick.lua's ANSWER_SLOTS is {SLOTS}");
    }

    #[test]
    fn the_start_is_clamped_into_the_bounds() {
        assert_eq!(Controller::new(bounds(), 50).rate(), 100);
        assert_eq!(Controller::new(bounds(), 50_000).rate(), 10_000);
    }
}
