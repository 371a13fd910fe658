//! The figures of a run, as JSON (`--json`) and as a readable summary.
//!
//! Definitions (the report's JSON keys in brackets):
//! - *wait* [`waits`]: from the join answer (ticket and first ETA shown) to the answer that
//!   admitted the visitor, as the visitor lived it (it includes up to one poll interval
//!   between usher's grant and the visitor's next poll).
//! - *ETA error* [`eta`]: wait minus the `eta_seconds` shown at join (positive: longer than
//!   promised), for visitors admitted from the line whose join showed an estimate.
//! - *arrival order* [`fairness.arrival_order`]: the ticket number usher issued (tickets are
//!   numbered in the order usher took the joins), read from the `usher_ticket` cookie; if a
//!   ticket cannot be read, the order in which join answers arrived for everyone. Pre-queued
//!   visitors (before `opens_at`) share one arrival rank: usher draws their order at random.
//! - *admission order*, *overtakes* and *tau*: see [`crate::fairness`].
//! - *outflow* [`outflow`]: usher's grants per minute (from its metrics) over the intervals
//!   in which the line never ran dry, against the configured `admit_per_minute`.

use crate::fairness::{self, Pairs, Waiter};
use crate::profile::Profile;
use crate::record::{Admission, Failure, Route, VisitorRecord};
use crate::run::Outcome;
use crate::scrape::ServerSample;
use crate::stats::{self, Bin, Spread};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_unix_ms: u64,
    pub duration_s: f64,
    pub profile: Profile,
    pub description: String,
    pub visitors: Visitors,
    pub errors: Errors,
    pub routes: BTreeMap<Route, RouteStats>,
    pub waits: Waits,
    pub eta: Eta,
    pub fairness: Fairness,
    pub outflow: Outflow,
    /// Visitors who stepped away and came back (`--away-share`), when any did.
    pub away: Option<AwayFigures>,
    /// One entry per second of the run, on the visitors' side.
    pub timeline: Vec<Second>,
    /// usher's own figures, sampled from `/metrics` (empty without `--admin`).
    pub server: Vec<ServerSample>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Visitors {
    pub planned: u64,
    /// Sent their join request (the rest were due after the time limit).
    pub arrived: u64,
    /// Got a ticket.
    pub queued: u64,
    pub prequeued: u64,
    pub admitted: u64,
    pub admitted_direct: u64,
    pub admitted_from_line: u64,
    /// Arrived but not admitted (an error ended the visit, or time ran out).
    pub not_admitted: u64,
    /// Of those, still waiting when the time limit came.
    pub timed_out: u64,
    pub connections_opened: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    pub total: u64,
    /// `route:kind`, e.g. `join:http_429`, `status:timeout`.
    pub by_kind: BTreeMap<String, u64>,
    pub failed_scrapes: u32,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RouteStats {
    /// Answered requests (any status).
    pub requests: u64,
    /// Requests per second over the route's busy span (first to last request).
    pub per_second: f64,
    pub latency_ms: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct Waits {
    pub seconds: Spread,
    pub histogram: Vec<Bin>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Eta {
    /// Visitors with an estimate at join and an admission from the line.
    pub compared: usize,
    /// Wait minus estimate, seconds (positive: longer than shown).
    pub error_s: Spread,
    pub abs_error_s: Spread,
    /// Wait divided by estimate.
    pub ratio: Spread,
    /// Share whose wait was within ±25 % or ±10 s (the larger) of the estimate.
    pub within_tolerance: f64,
    /// The estimate against usher's grant rather than the visitor's next poll: the grant
    /// came between the last "waiting" poll and the admitting one, so the error is the
    /// distance from the estimate to that window (0 inside it; positive: granted later).
    pub grant_error_s: Spread,
    /// Share of estimates inside the grant window.
    pub inside_grant_window: f64,
    /// (estimate, wait) in seconds, up to 2,000 evenly chosen visitors, for the plot.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fairness {
    /// `ticket` or `join_answer`.
    pub arrival_order: &'static str,
    /// Queued visitors compared.
    pub waiters: u64,
    pub pairs: Pairs,
    /// Kendall's tau over the pairs whose admission order is observable: 1.0 = FIFO.
    pub kendall_tau: f64,
    /// The share of pairs whose admission order is observable.
    pub resolved_share: f64,
    /// Later arrivals admitted while an earlier one was still waiting (and polling).
    pub overtakes: u64,
    /// Newcomers admitted at once while someone who came before them was waiting.
    pub direct_overtakes: u64,
    /// Kendall's tau-b between arrival order and the order in which admissions were *seen*
    /// (blurred by each visitor's poll phase).
    pub seen_order_tau_b: f64,
    /// Polls where `ahead` grew.
    pub position_increases: u64,
}

/// What became of those who stepped away, and the order among those who stayed.
#[derive(Debug, Clone, Serialize)]
pub struct AwayFigures {
    pub went_away: u64,
    pub came_back: u64,
    /// Of those who came back, admitted from the line.
    pub admitted: u64,
    /// Of those who came back, told their place was gone.
    pub places_lost: u64,
    /// Seconds away, as lived by the visitors.
    pub away_s: Spread,
    /// Seconds from coming back to admission, for those admitted after their return.
    pub back_to_admitted_s: Spread,
    /// Fairness over the visitors who never stepped away.
    pub present: Fairness,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Outflow {
    /// usher's `admit_per_minute` (from its metrics, or `--outflow`).
    pub configured_per_minute: Option<f64>,
    /// usher's grants per minute while the line never ran dry.
    pub granted_per_minute: Option<f64>,
    /// Seconds of run in which the line never ran dry.
    pub saturated_s: f64,
    /// `granted_per_minute / configured_per_minute`.
    pub ratio: Option<f64>,
    /// Admissions from the line per minute as the visitors saw them, first to last.
    pub seen_per_minute: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Second {
    pub t: u64,
    /// Visitors holding a ticket, not yet admitted.
    pub waiting: u64,
    pub admitted_from_line: u64,
    pub admitted_direct: u64,
    pub requests: u64,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

impl Report {
    /// Computes every figure from a run. `configured_outflow` (per minute) is used when
    /// usher's metrics were not sampled.
    pub fn build(outcome: &Outcome, profile: Profile, planned: u64, configured_outflow: Option<f64>) -> Self {
        let records = &outcome.records;
        let end_us = u64::try_from(outcome.elapsed.as_micros()).unwrap_or(u64::MAX);
        Report {
            started_unix_ms: outcome.started_unix_ms,
            duration_s: outcome.elapsed.as_secs_f64(),
            profile,
            description: profile.describe(planned),
            visitors: visitors(records, planned),
            errors: errors(records, outcome.failed_scrapes),
            routes: routes(records),
            waits: waits(records),
            eta: eta(records),
            fairness: fairness(records),
            outflow: outflow(records, &outcome.server, configured_outflow),
            away: away(records),
            timeline: timeline(records, end_us),
            server: outcome.server.clone(),
        }
    }

    /// The readable summary printed on stdout.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let v = &self.visitors;
        let _ = writeln!(out, "usher-loadtest: {} ({:.1} s)", self.description, self.duration_s);
        let _ = writeln!(
            out,
            "visitors   {} planned, {} arrived, {} queued ({} pre-queued), {} admitted ({} at once, {} from the line), {} not admitted ({} out of time); {} connections",
            v.planned,
            v.arrived,
            v.queued,
            v.prequeued,
            v.admitted,
            v.admitted_direct,
            v.admitted_from_line,
            v.not_admitted,
            v.timed_out,
            v.connections_opened
        );
        let kinds: Vec<String> = self.errors.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "errors     {}{}",
            self.errors.total,
            if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) }
        );
        let _ = writeln!(out, "route      requests      req/s   p50_ms   p90_ms   p99_ms   max_ms");
        for (route, r) in &self.routes {
            let l = &r.latency_ms;
            let _ = writeln!(
                out,
                "{:<10} {:>8} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                route.label(),
                r.requests,
                r.per_second,
                l.p50,
                l.p90,
                l.p99,
                l.max
            );
        }
        let w = &self.waits.seconds;
        let _ = writeln!(
            out,
            "wait (s)   p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  (n = {})",
            w.p50, w.p90, w.p99, w.max, w.count
        );
        let e = &self.eta;
        let _ = writeln!(
            out,
            "ETA        wait − shown: p50 {:+.1} s, |error| p90 {:.1} s; wait/shown p50 {:.2}; within ±25 %/±10 s: {:.1} % (n = {})",
            e.error_s.p50,
            e.abs_error_s.p90,
            e.ratio.p50,
            e.within_tolerance * 100.0,
            e.compared
        );
        let _ = writeln!(
            out,
            "           against usher's grant (between the last two polls): inside the window {:.1} %, error min {:+.1} s, mean {:+.2} s, max {:+.1} s",
            e.inside_grant_window * 100.0,
            e.grant_error_s.min,
            e.grant_error_s.mean,
            e.grant_error_s.max
        );
        let f = &self.fairness;
        let _ = writeln!(
            out,
            "fairness   Kendall tau {:.6} over {:.1} % of {} pairs observable; overtakes {}, direct overtakes {}; position increases {}; tau-b of seen order {:.4}  (arrival = {})",
            f.kendall_tau,
            f.resolved_share * 100.0,
            f.pairs.compared,
            f.overtakes,
            f.direct_overtakes,
            f.position_increases,
            f.seen_order_tau_b,
            f.arrival_order
        );
        if let Some(a) = &self.away {
            let _ = writeln!(
                out,
                "away       {} stepped away, {} came back ({:.0}–{:.0} s away), {} of them admitted (p50 {:.1} s after return), places lost {}",
                a.went_away,
                a.came_back,
                a.away_s.min,
                a.away_s.max,
                a.admitted,
                a.back_to_admitted_s.p50,
                a.places_lost
            );
            let p = &a.present;
            let _ = writeln!(
                out,
                "present    Kendall tau {:.6} over {:.1} % of {} pairs observable among the {} who stayed; overtakes {}",
                p.kendall_tau,
                p.resolved_share * 100.0,
                p.pairs.compared,
                p.waiters,
                p.overtakes
            );
        }
        let o = &self.outflow;
        let fmt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
        let _ = writeln!(
            out,
            "outflow    configured {}/min, granted {}/min over {:.1} s of full line (ratio {}), seen by visitors {}/min",
            fmt(o.configured_per_minute),
            fmt(o.granted_per_minute),
            o.saturated_s,
            o.ratio.map_or("–".to_string(), |r| format!("{r:.3}")),
            fmt(o.seen_per_minute)
        );
        out
    }
}

fn visitors(records: &[VisitorRecord], planned: u64) -> Visitors {
    let mut v = Visitors { planned, ..Visitors::default() };
    for r in records {
        v.arrived += u64::from(r.join_sent_us.is_some());
        v.queued += u64::from(r.queued());
        v.prequeued += u64::from(r.prequeued);
        v.connections_opened += u64::from(r.connects);
        match r.admission {
            Admission::Direct => v.admitted_direct += 1,
            Admission::FromLine => v.admitted_from_line += 1,
            Admission::No if r.join_sent_us.is_some() => {
                v.not_admitted += 1;
                // Out of time: still in line, nothing ended the visit.
                v.timed_out += u64::from(r.queued() && r.failures.iter().all(|(_, f)| !f.ends_visit()));
            }
            Admission::No => {}
        }
    }
    v.admitted = v.admitted_direct + v.admitted_from_line;
    v
}

fn errors(records: &[VisitorRecord], failed_scrapes: u32) -> Errors {
    let mut e = Errors { failed_scrapes, ..Errors::default() };
    for (route, failure) in records.iter().flat_map(|r| r.failures.iter()) {
        *e.by_kind.entry(format!("{}:{failure}", route.label())).or_default() += 1;
        e.total += 1;
    }
    e
}

fn routes(records: &[VisitorRecord]) -> BTreeMap<Route, RouteStats> {
    let mut out = BTreeMap::new();
    for route in Route::ALL {
        let samples: Vec<_> = records.iter().flat_map(|r| r.samples.iter()).filter(|s| s.route == route).collect();
        if samples.is_empty() {
            continue;
        }
        let first = samples.iter().map(|s| s.sent_us).min().unwrap_or(0);
        let last = samples.iter().map(|s| s.sent_us + u64::from(s.latency_us)).max().unwrap_or(0);
        let span = secs(last.saturating_sub(first)).max(1e-3);
        let latency_ms = Spread::of(samples.iter().map(|s| f64::from(s.latency_us) / 1000.0).collect());
        out.insert(
            route,
            RouteStats { requests: samples.len() as u64, per_second: samples.len() as f64 / span, latency_ms },
        );
    }
    out
}

/// Admitted-from-line visitors' waits, seconds.
fn wait_of(r: &VisitorRecord) -> Option<f64> {
    match (r.admission, r.join_answered_us, r.admitted_us) {
        (Admission::FromLine, Some(joined), Some(admitted)) => Some(secs(admitted.saturating_sub(joined))),
        _ => None,
    }
}

fn waits(records: &[VisitorRecord]) -> Waits {
    let values: Vec<f64> = records.iter().filter_map(wait_of).collect();
    Waits { histogram: stats::histogram(&values, 30), seconds: Spread::of(values) }
}

fn eta(records: &[VisitorRecord]) -> Eta {
    let shown = |r: &VisitorRecord| Some((r.eta_at_join_s? as f64, wait_of(r)?));
    let pairs: Vec<(f64, f64)> = records.iter().filter(|r| !r.prequeued).filter_map(shown).collect();
    let grant_errors: Vec<f64> = records
        .iter()
        .filter(|r| !r.prequeued)
        .filter_map(|r| {
            let (eta, wait) = shown(r)?;
            let earliest = secs(r.last_waiting_sent_us?.saturating_sub(r.join_answered_us?));
            Some(if eta < earliest {
                earliest - eta
            } else if eta > wait {
                wait - eta
            } else {
                0.0
            })
        })
        .collect();
    let inside = grant_errors.iter().filter(|e| **e == 0.0).count();
    let within = pairs.iter().filter(|(shown, wait)| (wait - shown).abs() <= (0.25 * shown).max(10.0)).count();
    let step = pairs.len().div_ceil(2000).max(1);
    Eta {
        compared: pairs.len(),
        error_s: Spread::of(pairs.iter().map(|(shown, wait)| wait - shown).collect()),
        abs_error_s: Spread::of(pairs.iter().map(|(shown, wait)| (wait - shown).abs()).collect()),
        ratio: Spread::of(pairs.iter().filter(|(shown, _)| *shown > 0.0).map(|(shown, wait)| wait / shown).collect()),
        within_tolerance: if pairs.is_empty() { 0.0 } else { within as f64 / pairs.len() as f64 },
        inside_grant_window: if grant_errors.is_empty() { 0.0 } else { inside as f64 / grant_errors.len() as f64 },
        grant_error_s: Spread::of(grant_errors),
        points: pairs.iter().step_by(step).copied().collect(),
    }
}

fn fairness(records: &[VisitorRecord]) -> Fairness {
    let queued: Vec<&VisitorRecord> =
        records.iter().filter(|r| r.queued() && r.last_waiting_sent_us.is_some()).collect();
    let by_ticket = queued.iter().all(|r| r.ticket.is_some());
    // Pre-queued visitors share rank 0; everyone else ranks after them.
    let arrival = |r: &VisitorRecord| -> u64 {
        if r.prequeued {
            0
        } else if by_ticket {
            r.ticket.unwrap_or(0) + 1
        } else {
            r.join_answered_us.unwrap_or(0) + 1
        }
    };
    let waiters: Vec<Waiter> = queued
        .iter()
        .map(|r| Waiter { arrival: arrival(r), lo: r.last_waiting_sent_us.unwrap_or(0), hi: r.admitted_us })
        .collect();
    let pairs = fairness::observed_order(&waiters);
    let ticketed: Vec<(u64, u64)> =
        queued.iter().filter_map(|r| Some((r.join_answered_us?, r.last_waiting_sent_us?))).collect();
    let direct: Vec<(u64, u64)> = records
        .iter()
        .filter(|r| r.admission == Admission::Direct)
        .filter_map(|r| Some((r.join_sent_us?, r.admitted_us?)))
        .collect();
    let seen: Vec<(u64, u64)> =
        queued.iter().filter(|r| !r.prequeued).filter_map(|r| Some((arrival(r), r.admitted_us?))).collect();
    Fairness {
        arrival_order: if by_ticket { "ticket" } else { "join_answer" },
        waiters: waiters.len() as u64,
        kendall_tau: pairs.tau(),
        resolved_share: pairs.resolved_share(),
        overtakes: pairs.discordant,
        pairs,
        direct_overtakes: fairness::direct_overtakes(&ticketed, &direct),
        seen_order_tau_b: fairness::kendall_tau_b(&seen),
        position_increases: records.iter().map(|r| u64::from(r.position_increases)).sum(),
    }
}

fn away(records: &[VisitorRecord]) -> Option<AwayFigures> {
    let went: Vec<&VisitorRecord> = records.iter().filter(|r| r.away_from_us.is_some()).collect();
    if went.is_empty() {
        return None;
    }
    let back: Vec<&VisitorRecord> = went.iter().copied().filter(|r| r.back_us.is_some()).collect();
    let lost = |r: &VisitorRecord| r.failures.iter().any(|(_, f)| *f == Failure::PlaceLost);
    let present: Vec<VisitorRecord> = records.iter().filter(|r| r.away_from_us.is_none()).cloned().collect();
    Some(AwayFigures {
        went_away: went.len() as u64,
        came_back: back.len() as u64,
        admitted: back.iter().filter(|r| r.admission == Admission::FromLine).count() as u64,
        places_lost: back.iter().filter(|r| lost(r)).count() as u64,
        away_s: Spread::of(
            back.iter().filter_map(|r| Some(secs(r.back_us?.saturating_sub(r.away_from_us?)))).collect(),
        ),
        back_to_admitted_s: Spread::of(
            back.iter()
                .filter(|r| r.admission == Admission::FromLine)
                .filter_map(|r| Some(secs(r.admitted_us?.saturating_sub(r.back_us?))))
                .collect(),
        ),
        present: fairness(&present),
    })
}

fn outflow(records: &[VisitorRecord], server: &[ServerSample], configured: Option<f64>) -> Outflow {
    let configured = server.iter().rev().map(|s| s.configured_per_minute).find(|c| *c > 0.0).or(configured);
    let (mut granted, mut seconds) = (0.0, 0.0);
    if let Some(per_minute) = configured {
        for w in server.windows(2) {
            let dt = w[1].t - w[0].t;
            // The line held at least the interval's worth of grants at its start and was
            // not empty at its end: admission was limited by the outflow alone.
            if dt > 0.0 && w[0].waiting >= per_minute / 60.0 * dt && w[1].waiting > 0.0 {
                granted += w[1].granted - w[0].granted;
                seconds += dt;
            }
        }
    }
    let granted_per_minute = (seconds > 0.0).then(|| granted / seconds * 60.0);
    let mut seen: Vec<u64> =
        records.iter().filter(|r| r.admission == Admission::FromLine).filter_map(|r| r.admitted_us).collect();
    seen.sort_unstable();
    let seen_per_minute = match (seen.first(), seen.last()) {
        (Some(a), Some(b)) if b > a => Some((seen.len() - 1) as f64 / secs(b - a) * 60.0),
        _ => None,
    };
    Outflow {
        configured_per_minute: configured,
        granted_per_minute,
        saturated_s: seconds,
        ratio: granted_per_minute.zip(configured).filter(|(_, c)| *c > 0.0).map(|(g, c)| g / c),
        seen_per_minute,
    }
}

fn timeline(records: &[VisitorRecord], end_us: u64) -> Vec<Second> {
    let seconds = usize::try_from(end_us / 1_000_000 + 1).unwrap_or(0);
    let mut out: Vec<Second> = (0..seconds).map(|t| Second { t: t as u64, ..Second::default() }).collect();
    let at = |us: u64| usize::try_from(us / 1_000_000).unwrap_or(usize::MAX).min(seconds.saturating_sub(1));
    let mut delta = vec![0i64; seconds + 1];
    for r in records {
        for s in &r.samples {
            out[at(s.sent_us)].requests += 1;
        }
        match (r.admission, r.admitted_us) {
            (Admission::Direct, Some(t)) => out[at(t)].admitted_direct += 1,
            (Admission::FromLine, Some(t)) => out[at(t)].admitted_from_line += 1,
            _ => {}
        }
        if let (true, Some(from)) = (r.queued(), r.join_answered_us) {
            let to = r.admitted_us.or(r.last_waiting_sent_us).unwrap_or(from);
            delta[at(from)] += 1;
            delta[at(to)] -= 1;
        }
    }
    let mut waiting = 0i64;
    for (second, d) in out.iter_mut().zip(delta) {
        waiting += d;
        second.waiting = u64::try_from(waiting).unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Failure, Sample};
    use std::time::Duration;

    /// A visitor who joined at `join` s (shown `eta` s), last found waiting at `lo` s and
    /// saw its admission at `hi` s.
    fn queued(index: u64, ticket: u64, join: u64, eta: u64, lo: u64, hi: u64) -> VisitorRecord {
        let mut r = VisitorRecord::new(index);
        r.join_sent_us = Some(join * 1_000_000);
        r.join_answered_us = Some(join * 1_000_000 + 1000);
        r.ticket = Some(ticket);
        r.eta_at_join_s = Some(eta);
        r.last_waiting_sent_us = Some(lo * 1_000_000);
        r.admitted_us = Some(hi * 1_000_000);
        r.admission = Admission::FromLine;
        r.samples.push(Sample { route: Route::Join, sent_us: join * 1_000_000, latency_us: 1000, status: 503 });
        r
    }

    fn outcome(records: Vec<VisitorRecord>) -> Outcome {
        Outcome { records, server: Vec::new(), failed_scrapes: 0, started_unix_ms: 0, elapsed: Duration::from_secs(30) }
    }

    #[test]
    fn waits_estimates_and_order_are_measured_from_the_records() {
        let mut late = queued(2, 12, 1, 5, 10, 20);
        late.failures.push((Route::Status, Failure::Timeout));
        let mut lost = VisitorRecord::new(3);
        lost.join_sent_us = Some(2_000_000);
        lost.join_answered_us = Some(2_001_000);
        lost.ticket = Some(13);
        lost.last_waiting_sent_us = Some(4_000_000);
        lost.failures.push((Route::Status, Failure::PlaceLost));
        let records = vec![queued(0, 10, 0, 8, 5, 9), queued(1, 11, 0, 30, 6, 12), late, lost];
        let report = Report::build(&outcome(records), Profile::Spike { over: Duration::ZERO }, 5, Some(60.0));

        let v = report.visitors;
        assert_eq!(
            (v.planned, v.arrived, v.queued, v.admitted_from_line, v.not_admitted, v.timed_out),
            (5, 4, 4, 3, 1, 0)
        );
        assert_eq!(report.errors.total, 2);
        assert_eq!(report.errors.by_kind.get("status:place_lost"), Some(&1));
        assert_eq!(report.waits.seconds.count, 3);
        // Shown 8, granted in (5, 9): inside. Shown 30, granted by 12: 18 s early. Shown 5,
        // granted after 9 s: 4 s late.
        assert_eq!(report.eta.compared, 3);
        assert!((report.eta.inside_grant_window - 1.0 / 3.0).abs() < 1e-9);
        let mut errors = [report.eta.grant_error_s.p50, report.eta.grant_error_s.max];
        errors.sort_by(f64::total_cmp);
        assert!((errors[1] - 4.0).abs() < 0.01, "{:?}", report.eta.grant_error_s);
        // Visitor 0 (seen admitted at 9 s) certainly came in before visitor 2 was last seen
        // waiting (10 s); nobody was admitted before an earlier visitor's last waiting poll.
        assert!(report.fairness.pairs.concordant >= 1);
        assert_eq!(report.fairness.overtakes, 0);
        assert_eq!(report.fairness.kendall_tau, 1.0);
        assert!(report.summary().contains("overtakes 0"));
    }
}
