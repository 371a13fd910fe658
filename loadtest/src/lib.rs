//! The waiting-room load generator (DESIGN §12): browser-like visitors, each with its own
//! cookie jar and its own loopback source address, arrive by a profile, join usher's line,
//! poll `/.usher/status` at the interval usher suggests, are admitted, use the mailbox, and
//! leave. The report says how fast (throughput and latency per route), how honest (ETA shown
//! against the wait lived) and how fair (Kendall's tau between arrival and admission order,
//! overtakes) usher was.
//!
//! Read it from [`run::run`] (the visitors) to [`report::Report::build`] (the figures).

pub mod adaptive;
pub mod attack;
pub mod browser;
pub mod fairness;
pub mod idle;
pub mod plot;
pub mod profile;
pub mod record;
pub mod report;
pub mod rlimit;
pub mod rng;
pub mod run;
pub mod scrape;
pub mod sources;
pub mod stats;
pub mod upstream;
pub mod visitor;
