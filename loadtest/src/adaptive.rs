//! The three-run comparison of issue 17 (`loadtest/adaptive.sh`): the same spike against the
//! mailbox with a knee, with the outflow fixed too high, fixed too low, and adaptive. Each run
//! leaves the visitors' report and the upstream's own `/.upstream/stats`; this reads them back
//! and says, per run, what the mailbox met (its p99 and error rate), what usher admitted
//! against the mailbox's true capacity, and what the citizens waited.

use crate::plot;
use crate::scrape::ServerSample;
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::Path;

/// What one run left behind.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    /// usher's figures over the run (grants, line, effective outflow), once a second or so.
    pub server: Vec<ServerSample>,
    pub upstream: UpstreamStats,
    /// The citizens' median wait, join to admission, seconds.
    pub wait_p50_s: f64,
    /// usher's grants per minute while the line never ran dry.
    pub granted_per_minute: Option<f64>,
    pub admitted: u64,
    pub not_admitted: u64,
    /// Requests the visitors saw fail (any route).
    pub visitor_errors: u64,
}

/// `GET /.upstream/stats` at the end of a run.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct UpstreamStats {
    pub answered: u64,
    pub refused: u64,
    pub error_ratio: f64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_in_flight: u64,
}

#[derive(Deserialize)]
struct VisitorsReport {
    server: Vec<ServerSample>,
    waits: Waits,
    outflow: Outflow,
    visitors: Visitors,
    errors: Errors,
}

#[derive(Deserialize)]
struct Waits {
    seconds: Spread,
}

#[derive(Deserialize)]
struct Spread {
    p50: f64,
}

#[derive(Deserialize)]
struct Outflow {
    granted_per_minute: Option<f64>,
}

#[derive(Deserialize)]
struct Visitors {
    admitted: u64,
    not_admitted: u64,
}

#[derive(Deserialize)]
struct Errors {
    total: u64,
}

impl Run {
    /// Reads `visitors.json` and `upstream.json` from a run's directory.
    pub fn read(name: &str, dir: &Path) -> Result<Self, String> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let report: VisitorsReport = serde_json::from_str(&read("visitors.json")?)
            .map_err(|e| format!("{}/visitors.json is not a visitors report: {e}", dir.display()))?;
        let upstream: UpstreamStats = serde_json::from_str(&read("upstream.json")?)
            .map_err(|e| format!("{}/upstream.json is not the upstream's stats: {e}", dir.display()))?;
        Ok(Run {
            name: name.to_string(),
            server: report.server,
            upstream,
            wait_p50_s: report.waits.seconds.p50,
            granted_per_minute: report.outflow.granted_per_minute,
            admitted: report.visitors.admitted,
            not_admitted: report.visitors.not_admitted,
            visitor_errors: report.errors.total,
        })
    }

    /// The effective `admit_per_minute` over the run: its mean from the first sample on, and
    /// its last value.
    pub fn outflow_setting(&self) -> (f64, f64) {
        let n = self.server.len().max(1) as f64;
        let mean = self.server.iter().map(|s| s.configured_per_minute).sum::<f64>() / n;
        (mean, self.server.last().map_or(0.0, |s| s.configured_per_minute))
    }
}

/// The mailbox's true capacity in admissions per minute: `first`, then from each
/// `(seconds, per_minute)` of `changes` on (in order).
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub first: f64,
    pub changes: Vec<(f64, f64)>,
}

impl Capacity {
    pub fn fixed(per_minute: f64) -> Self {
        Capacity { first: per_minute, changes: Vec::new() }
    }

    pub fn at(&self, t: f64) -> f64 {
        self.changes.iter().take_while(|(from, _)| *from <= t).last().map_or(self.first, |c| c.1)
    }

    /// Its mean over the seconds a run's line was waiting (the first capacity if never).
    fn mean_while_waiting(&self, samples: &[ServerSample]) -> f64 {
        let (mut sum, mut seconds) = (0.0, 0.0);
        for w in samples.windows(2) {
            let dt = w[1].t - w[0].t;
            if dt > 0.0 && w[0].waiting > 0.0 && w[1].waiting > 0.0 {
                sum += self.at(w[0].t) * dt;
                seconds += dt;
            }
        }
        if seconds > 0.0 { sum / seconds } else { self.first }
    }

    /// The step line to plot, from 0 to `end` seconds.
    fn line(&self, end: f64) -> Vec<(f64, f64)> {
        let mut points = vec![(0.0, self.first)];
        for &(t, c) in self.changes.iter().filter(|(t, _)| *t < end) {
            points.push((t, self.at(t - 1e-9)));
            points.push((t, c));
        }
        points.push((end, self.at(end)));
        points
    }
}

/// The Markdown table: one row per run.
pub fn table(runs: &[Run], capacity: &Capacity) -> String {
    let mut out = String::new();
    out.push_str(
        "| run | outflow set (mean / last) | granted /min | of capacity | upstream p50 / p99 | upstream errors | \
         admitted | not admitted | visitor errors | median wait |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for run in runs {
        let (mean, last) = run.outflow_setting();
        let granted = run.granted_per_minute.unwrap_or(0.0);
        let u = &run.upstream;
        let _ = writeln!(
            out,
            "| {} | {mean:.0} / {last:.0} | {granted:.0} | {:.0} % | {} / {} ms | {:.2} % ({} of {}) | {} | {} | {} | {:.1} s |",
            run.name,
            100.0 * granted / capacity.mean_while_waiting(&run.server).max(1.0),
            u.p50_ms,
            u.p99_ms,
            100.0 * u.error_ratio,
            u.refused,
            u.answered + u.refused,
            run.admitted,
            run.not_admitted,
            run.visitor_errors,
            run.wait_p50_s,
        );
    }
    out
}

/// One SVG: the effective outflow and the grants over time for every run, against the
/// mailbox's true capacity, and the line each run left waiting.
pub fn svg(runs: &[Run], capacity: &Capacity, title: &str) -> String {
    let end = runs.iter().filter_map(|r| r.server.last()).fold(1.0f64, |m, s| m.max(s.t));
    let capacity = || plot::Series::dashed("true capacity", "#7f7f7f", capacity.line(end));
    let mut setting = Vec::new();
    let mut granted = Vec::new();
    let mut waiting = Vec::new();
    for (run, color) in runs.iter().zip(plot::PALETTE.iter().cycle()) {
        setting.push(plot::Series::line(
            &run.name,
            color,
            run.server.iter().map(|s| (s.t, s.configured_per_minute)).collect(),
        ));
        granted.push(plot::Series::line(&run.name, color, grants_per_minute(&run.server, 5.0)));
        waiting.push(plot::Series::line(&run.name, color, run.server.iter().map(|s| (s.t, s.waiting)).collect()));
    }
    setting.push(capacity());
    granted.push(capacity());
    plot::document(
        title,
        vec![
            plot::Panel::new("Effective admit_per_minute", "seconds into the run", "per minute", setting),
            plot::Panel::new("Grants per minute (5 s windows)", "seconds into the run", "per minute", granted),
            plot::Panel::new("Waiting in line (usher_waiting)", "seconds into the run", "visitors", waiting),
        ],
    )
}

/// Grants per minute over windows of about `window` seconds.
fn grants_per_minute(samples: &[ServerSample], window: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut from = match samples.first() {
        Some(s) => *s,
        None => return out,
    };
    for s in samples {
        if s.t - from.t >= window {
            out.push((s.t, 60.0 * (s.granted - from.granted) / (s.t - from.t)));
            from = *s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, granted: f64) -> ServerSample {
        ServerSample { t, granted, configured_per_minute: 600.0, ..ServerSample::default() }
    }

    #[test]
    fn a_moving_capacity_is_read_at_its_times_and_averaged_while_the_line_waits() {
        let capacity = Capacity { first: 600.0, changes: vec![(10.0, 300.0), (20.0, 900.0)] };
        assert_eq!(
            (capacity.at(0.0), capacity.at(10.0), capacity.at(19.9), capacity.at(25.0)),
            (600.0, 300.0, 300.0, 900.0)
        );
        let waiting = |t: f64, w: f64| ServerSample { t, waiting: w, ..ServerSample::default() };
        // Waiting from 5 s to 25 s: 5 s at 600, 10 s at 300, 5 s at 900.
        let samples: Vec<_> =
            (0..=30).map(|t| waiting(t as f64, if (5..=25).contains(&t) { 1.0 } else { 0.0 })).collect();
        assert_eq!(capacity.mean_while_waiting(&samples), (5.0 * 600.0 + 10.0 * 300.0 + 5.0 * 900.0) / 20.0);
        assert_eq!(
            capacity.line(30.0),
            vec![(0.0, 600.0), (10.0, 600.0), (10.0, 300.0), (20.0, 300.0), (20.0, 900.0), (30.0, 900.0)]
        );
    }

    #[test]
    fn grants_are_read_per_minute_over_windows() {
        let samples: Vec<_> = (0..=20).map(|t| sample(t as f64, 10.0 * t as f64)).collect();
        assert_eq!(grants_per_minute(&samples, 5.0), vec![(5.0, 600.0), (10.0, 600.0), (15.0, 600.0), (20.0, 600.0)]);
        assert!(grants_per_minute(&[], 5.0).is_empty());
    }

    #[test]
    fn the_table_puts_grants_against_the_capacity() {
        let run = Run {
            name: "adaptive".into(),
            server: vec![sample(0.0, 0.0), sample(60.0, 900.0)],
            upstream: UpstreamStats {
                answered: 999,
                refused: 1,
                error_ratio: 0.001,
                p50_ms: 50,
                p99_ms: 180,
                max_in_flight: 5,
            },
            wait_p50_s: 42.0,
            granted_per_minute: Some(900.0),
            admitted: 900,
            not_admitted: 0,
            visitor_errors: 1,
        };
        let table = table(&[run], &Capacity::fixed(1000.0));
        assert!(table.contains("| adaptive | 600 / 600 | 900 | 90 % | 50 / 180 ms | 0.10 % (1 of 1000) |"), "{table}");
    }
}
