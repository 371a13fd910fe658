//! Honest estimates (DESIGN §3, issue 17): what the admitter remembers of its recent ticks so
//! that a waiter is shown a range while the outflow moves, and so that every admission can
//! say how far the estimate a newcomer was shown at join was from the wait it then lived.
//!
//! One sample every [`SAMPLE_EVERY_MS`], kept for [`KEEP_MS`]: a room's memory for this is
//! bounded (at most 21,600 samples of 24 bytes, about 0.5 MB) however long the event runs.
//! What a newcomer was shown between two samples is read between them, linearly: in a spike
//! the line grows by thousands within a second, and the sample before the join alone said
//! far less than the page showed (the first measured spike read waits of 6× the estimate).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A sample at most this often.
pub const SAMPLE_EVERY_MS: u64 = 1_000;
/// How far back join-time estimates are remembered (a wait longer than this is not judged).
pub const KEEP_MS: u64 = 6 * 3600 * 1000;
/// The outflow's range is read over this window.
pub const BAND_MS: u64 = 5 * 60 * 1000;
/// A band narrower than this (high over low) is shown as one figure: the estimate moves less
/// than its own rounding.
const BAND_SHOWN_ABOVE: f64 = 1.25;
/// A join further than this from the nearest earlier sample is not judged.
const NEAREST_MS: u64 = 2 * SAMPLE_EVERY_MS;

#[derive(Debug, Clone, Copy)]
struct Sample {
    ms: u64,
    /// Admissions per minute the estimates used.
    rate: u64,
    /// Seconds a newcomer joining then was shown.
    tail_eta: u64,
}

/// The admitter's recent estimates of one room.
#[derive(Debug, Default)]
pub struct Estimates {
    samples: Mutex<VecDeque<Sample>>,
    /// The lowest and highest outflow over the last [`BAND_MS`], for requests to read
    /// without the lock (0: none yet).
    low: AtomicU64,
    high: AtomicU64,
}

impl Estimates {
    /// One tick's figures: the rate estimates use and what a newcomer is shown.
    pub fn note(&self, now_ms: u64, rate: u64, tail_eta: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.back().is_some_and(|s| now_ms < s.ms.saturating_add(SAMPLE_EVERY_MS)) {
            return;
        }
        samples.push_back(Sample { ms: now_ms, rate, tail_eta });
        while samples.front().is_some_and(|s| s.ms.saturating_add(KEEP_MS) < now_ms) {
            samples.pop_front();
        }
        let recent = samples.iter().rev().take_while(|s| s.ms.saturating_add(BAND_MS) >= now_ms);
        let (low, high) = recent.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.rate), hi.max(s.rate)));
        self.low.store(if high == 0 { 0 } else { low }, Relaxed);
        self.high.store(high, Relaxed);
    }

    /// The wait for someone with `ahead` before them at the fastest and the slowest outflow of
    /// the last [`BAND_MS`], in seconds, when those differ enough to matter.
    pub fn range(&self, ahead: u64) -> Option<(u64, u64)> {
        let (low, high) = (self.low.load(Relaxed), self.high.load(Relaxed));
        if low == 0 || (high as f64) < BAND_SHOWN_ABOVE * low as f64 {
            return None;
        }
        let secs = |rate: u64| (ahead + 1).saturating_mul(60).div_ceil(rate);
        Some((secs(high), secs(low)))
    }

    /// The estimate a newcomer was shown when it joined at `joined_ms`, if remembered: read
    /// between the samples around it.
    pub fn shown_at(&self, joined_ms: u64) -> Option<u64> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let after = samples.partition_point(|s| s.ms <= joined_ms);
        let before = samples.get(after.checked_sub(1)?)?;
        match samples.get(after) {
            Some(next) if next.ms - before.ms <= NEAREST_MS => {
                let share = (joined_ms - before.ms) as f64 / (next.ms - before.ms) as f64;
                let (from, to) = (before.tail_eta as f64, next.tail_eta as f64);
                Some((from + share * (to - from)).round() as u64)
            }
            None if joined_ms - before.ms <= NEAREST_MS => Some(before.tail_eta),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_outflow_gives_one_figure_and_a_moving_one_a_range() {
        let e = Estimates::default();
        assert_eq!(e.range(100), None, "nothing known yet");
        for i in 0..10 {
            e.note(i * SAMPLE_EVERY_MS, 600 + i, 60);
        }
        assert_eq!(e.range(100), None, "600 to 609 a minute: one figure");
        e.note(10 * SAMPLE_EVERY_MS, 300, 60);
        // 101 people at 609/min or at 300/min.
        assert_eq!(e.range(100), Some((10, 21)));
        // Five minutes later the slow tick has left the band.
        for i in 11..=(10 + 2 * BAND_MS / SAMPLE_EVERY_MS) {
            e.note(i * SAMPLE_EVERY_MS, 600, 60);
        }
        assert_eq!(e.range(100), None);
    }

    #[test]
    fn samples_are_taken_at_most_every_second_and_kept_six_hours() {
        let e = Estimates::default();
        for ms in (0..(KEEP_MS + 3_600_000)).step_by(500) {
            e.note(ms, 600, ms / 1000);
        }
        let kept = e.samples.lock().expect("lock").len() as u64;
        assert!(kept <= KEEP_MS / SAMPLE_EVERY_MS + 1, "{kept} samples");
        assert_eq!(e.shown_at(1000), None, "older than six hours: forgotten");
        let late = KEEP_MS + 3_000_000;
        assert_eq!(e.shown_at(late + 250), Some(late / 1000), "one second a second: read between");
    }

    #[test]
    fn a_join_far_from_any_sample_is_not_judged() {
        let e = Estimates::default();
        e.note(10_000, 600, 42);
        assert_eq!(e.shown_at(9_999), None, "before the first sample");
        assert_eq!(e.shown_at(11_000), Some(42), "after the last: the last");
        assert_eq!(e.shown_at(10_000 + NEAREST_MS + 1), None, "a gap: the admitter did not run");
        e.note(60_000, 600, 100);
        assert_eq!(e.shown_at(30_000), None, "between samples a gap apart");
    }

    #[test]
    fn a_join_between_two_samples_is_read_between_them() {
        let e = Estimates::default();
        e.note(0, 600, 1);
        e.note(SAMPLE_EVERY_MS, 600, 31);
        assert_eq!(e.shown_at(SAMPLE_EVERY_MS / 2), Some(16), "a spike: the line grew through the second");
        assert_eq!(e.shown_at(SAMPLE_EVERY_MS), Some(31));
    }
}
