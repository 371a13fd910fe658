//! A run: every visitor on its own task, started at its arrival time, all bounded by the
//! run's time limit; usher's metrics sampled alongside when its admin address is known.

use crate::profile::Profile;
use crate::record::VisitorRecord;
use crate::rng::Rng;
use crate::scrape::{self, ServerSample};
use crate::sources::Sources;
use crate::visitor::{self, Script};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub script: Script,
    pub visitors: u64,
    pub profile: Profile,
    /// Nothing runs past this, counted from the start.
    pub time_limit: Duration,
    pub sources: Sources,
    pub seed: u64,
    pub scrape: Option<scrape::Target>,
}

/// What a run produced, for [`crate::report::Report::build`].
#[derive(Debug)]
pub struct Outcome {
    pub records: Vec<VisitorRecord>,
    pub server: Vec<ServerSample>,
    pub failed_scrapes: u32,
    pub started_unix_ms: u64,
    pub elapsed: Duration,
}

/// Runs the plan to its end: every visitor done, or the time limit reached.
pub async fn run(plan: Plan) -> Outcome {
    let started_unix_ms =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let start = Instant::now();
    let deadline = start + plan.time_limit;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scraper =
        plan.scrape.clone().map(|t| tokio::spawn(scrape::sample(t, start, Duration::from_millis(250), stopped)));

    let script = Arc::new(plan.script);
    let mut visitors = tokio::task::JoinSet::new();
    for index in 0..plan.visitors {
        let script = script.clone();
        let arrival = start + plan.profile.arrival(index, plan.visitors);
        let source = IpAddr::V4(plan.sources.get(index));
        let rng = Rng::new(plan.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        visitors.spawn(async move {
            if arrival >= deadline {
                return VisitorRecord::new(index);
            }
            tokio::time::sleep_until(arrival).await;
            visitor::visit(&script, index, source, start, deadline, rng).await
        });
    }
    let mut records = Vec::with_capacity(usize::try_from(plan.visitors).unwrap_or(0));
    while let Some(done) = visitors.join_next().await {
        // A visitor task only ends by returning its record; a panic would be a bug here.
        if let Ok(record) = done {
            records.push(record);
        }
    }
    records.sort_unstable_by_key(|r| r.index);
    let elapsed = start.elapsed();
    let _ = stop.send(true);
    let (server, failed_scrapes) = match scraper {
        Some(task) => task.await.unwrap_or_default(),
        None => (Vec::new(), 0),
    };
    Outcome { records, server, failed_scrapes, started_unix_ms, elapsed }
}
