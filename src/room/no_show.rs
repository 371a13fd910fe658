//! No-show compensation (DESIGN §3, issue 17): some of those granted a turn never claim it
//! (the tab was closed, the phone died). Their turns are spent all the same, so the mailbox
//! sees fewer arrivals than the outflow promises. The admitter measures the share of grants
//! that expire unclaimed over a recent window and releases `rate / (1 − share)`, as
//! smoketurner's release formula does, with the share bounded by `room.no_show_bound` so that
//! a burst of expiries can raise the release by at most `1 / (1 − bound)`: about 1.43× at the
//! default of 0.3, 10× at the largest bound the configuration takes (0.9).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The window the share is measured over.
pub const WINDOW_MS: u64 = 5 * 60 * 1000;
/// Fewer grants than this in the window say nothing: no compensation.
pub const FEWEST_GRANTS: u64 = 50;
/// Ticks are summed into buckets this long, so the window costs a few hundred entries.
const BUCKET_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    from_ms: u64,
    granted: u64,
    expired: u64,
}

/// Grants and unclaimed expiries of one room over the last [`WINDOW_MS`].
#[derive(Debug, Default)]
pub struct NoShows {
    buckets: Mutex<VecDeque<Bucket>>,
    /// The share in per mille as of the last tick, for metrics and estimates.
    share_pm: AtomicU64,
}

impl NoShows {
    /// One tick's grants and the grants that expired unclaimed in it. Returns the share of
    /// no-shows in per mille over the window (0 while there are too few grants to judge).
    pub fn record(&self, now_ms: u64, granted: u64, expired: u64) -> u64 {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.back_mut() {
            Some(b) if now_ms < b.from_ms.saturating_add(BUCKET_MS) => {
                b.granted += granted;
                b.expired += expired;
            }
            _ => buckets.push_back(Bucket { from_ms: now_ms, granted, expired }),
        }
        while buckets.front().is_some_and(|b| b.from_ms.saturating_add(WINDOW_MS) < now_ms) {
            buckets.pop_front();
        }
        let (granted, expired) = buckets.iter().fold((0, 0), |(g, e), b| (g + b.granted, e + b.expired));
        let share = if granted < FEWEST_GRANTS { 0 } else { (expired.min(granted) * 1000) / granted };
        self.share_pm.store(share, Relaxed);
        share
    }

    /// The share of no-shows in per mille, as of the last tick.
    pub fn share_pm(&self) -> u64 {
        self.share_pm.load(Relaxed)
    }
}

/// `room.no_show_bound` (a share from 0 to 0.9) in per mille.
pub fn bound_pm(bound: f64) -> u64 {
    (bound.clamp(0.0, 0.999) * 1000.0).round() as u64
}

/// The release per mille of the outflow: `1 / (1 − share)` with the share capped at `bound`
/// (per mille, below 1000). 1000 when nothing is to be made up.
pub fn release_pm(share_pm: u64, bound_pm: u64) -> u64 {
    let share = share_pm.min(bound_pm).min(999);
    1_000_000u64.div_ceil(1000 - share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_measured_over_the_window_once_there_are_enough_grants() {
        let n = NoShows::default();
        assert_eq!(n.record(0, 40, 10), 0, "40 grants: too few to judge");
        assert_eq!(n.record(1_000, 60, 10), 200, "20 of 100");
        assert_eq!(n.share_pm(), 200);
        // Six minutes on, the early grants have left the window.
        assert_eq!(n.record(WINDOW_MS + 60_000, 100, 0), 0);
    }

    #[test]
    fn the_release_makes_up_the_no_shows_within_the_bound() {
        assert_eq!(release_pm(0, 300), 1000);
        assert_eq!(release_pm(200, 300), 1250, "a fifth never comes: release a quarter more");
        assert_eq!(release_pm(900, 300), 1429, "bounded at 0.3");
        assert_eq!(release_pm(1000, 1000), 1_000_000, "never a division by zero");
    }
}
