//! One Markdown table from the JSON reports of a series of attack runs (the first is the
//! baseline), as `loadtest/attack.sh` prints it and SECURITY.md carries it. A row is a miss
//! when the real client's p99 is more than twice the lowest baseline's, it saw any error, or usher
//! did not stay up: the targets, judged in one place.

use super::Report;
use std::fmt::Write;

/// The verdict on one row against the baseline.
pub fn verdict(baseline: &Report, row: &Report) -> String {
    let mut misses = Vec::new();
    if !row.usher.alive {
        misses.push("usher down".to_string());
    }
    if row.client.errors > 0 {
        misses.push(format!("{} client errors", row.client.errors));
    }
    if row.client.ok == 0 {
        misses.push("client never served".to_string());
    }
    let ratio = ratio(baseline, row);
    if ratio > 2.0 {
        misses.push(format!("p99 {ratio:.1}x"));
    }
    if row.usher.recovered_after_s.is_none() {
        misses.push("no recovery".to_string());
    }
    if misses.is_empty() { "ok".to_string() } else { format!("MISS: {}", misses.join(", ")) }
}

fn ratio(baseline: &Report, row: &Report) -> f64 {
    if baseline.client.p99_ms > 0.0 { row.client.p99_ms / baseline.client.p99_ms } else { 0.0 }
}

/// The baseline a run's rows are judged against: of its baselines (`attack.sh` runs one
/// first and one last), the one with the lowest p99, so a noisy baseline cannot flatter a row.
fn strictest_baseline(reports: &[Report]) -> Option<&Report> {
    let baselines = reports.iter().filter(|r| r.kind == super::Kind::None);
    baselines.min_by(|a, b| a.client.p99_ms.total_cmp(&b.client.p99_ms)).or(reports.first())
}

/// The table: the baseline first, then each attack; ratios are to the strictest baseline.
pub fn markdown(reports: &[Report]) -> String {
    let mut out = String::from(
        "| kind | client p50 ms | client p99 ms (x baseline) | client errors / requests | usher peak RSS MiB | peak fds | up | recovered s (slowest answer ms) | verdict | what the attack did |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |\n",
    );
    let Some(baseline) = strictest_baseline(reports) else { return out };
    for (i, r) in reports.iter().enumerate() {
        let name = if i > 0 && r.kind == super::Kind::None { "baseline (again)" } else { r.kind.name() };
        let mut did: Vec<String> = r.attack.iter().filter(|(_, v)| **v != 0).map(|(k, v)| format!("{k} {v}")).collect();
        for (name, value) in &r.limiter {
            if name.ends_with("overflow_total") || name.ends_with("tracked_clients_peak") {
                did.push(format!("{} {value}", name.trim_start_matches("usher_")));
            }
        }
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} ({:.1}x) | {} / {} | {:.1} | {} | {} | {} ({:.0}) | {} | {} |",
            name,
            r.client.p50_ms,
            r.client.p99_ms,
            ratio(baseline, r),
            r.client.errors,
            r.client.requests,
            r.usher.rss_peak_kib as f64 / 1024.0,
            r.usher.fds_peak,
            if r.usher.alive { "yes" } else { "NO" },
            r.usher.recovered_after_s.map_or("never".to_string(), |s| format!("{s:.1}")),
            r.usher.ending_worst_ms,
            verdict(baseline, r),
            did.join(", "),
        );
    }
    out
}
