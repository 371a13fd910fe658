//! usher's clock, in one place: admission (Unix milliseconds, shared with other nodes through
//! the store) and the pages' `server_time` (Unix seconds) read it here.
//!
//! It is the system's wall clock as read at start, advanced by the monotonic clock: a step of
//! the system clock after start (an operator's `date -s`, NTP correcting a bad boot time, a VM
//! resumed) moves neither deadlines nor the admission rate. A forward step longer than
//! `waiter_ttl` would otherwise abandon the whole line at once, and a backward one stop the
//! outflow for its length. How far the system clock has moved away from usher's since start
//! is exported as `usher_clock_step_seconds`, so a stepped clock is seen and, if it matters
//! (an event's `opens_at` is wall time), fixed by a restart at a calm moment. In Redis mode
//! the stores' scripts use Redis's own clock, so nodes agree whatever theirs say.

use std::sync::LazyLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wall clock at start (ms), the monotonic instant it was read at, and a test offset.
struct Anchor {
    wall_ms: u64,
    at: Instant,
    offset_ms: i64,
}

static ANCHOR: LazyLock<Anchor> =
    LazyLock::new(|| Anchor { wall_ms: system_ms(), at: Instant::now(), offset_ms: test_offset_ms() });

/// The system's wall clock now, in Unix milliseconds.
fn system_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A skew the tests give a node (`USHER_TEST_CLOCK_OFFSET_MS`), to show that nodes with
/// skewed clocks still agree; read only by debug builds, never by a release.
fn test_offset_ms() -> i64 {
    if cfg!(debug_assertions) {
        std::env::var("USHER_TEST_CLOCK_OFFSET_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
    } else {
        0
    }
}

fn anchored(anchor: &Anchor, elapsed_ms: u64) -> u64 {
    anchor.wall_ms.saturating_add(elapsed_ms).saturating_add_signed(anchor.offset_ms)
}

/// Unix time in milliseconds: the one clock of admission (never steps; see the module docs).
pub fn now_ms() -> u64 {
    let anchor = &*ANCHOR;
    anchored(anchor, u64::try_from(anchor.at.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// Unix time in whole seconds.
pub fn unix_now() -> u64 {
    now_ms() / 1000
}

/// How far the system's wall clock is from usher's, in seconds (positive: ahead): 0 unless
/// it was stepped since start (or drifts, which NTP slews away).
pub fn step_seconds() -> f64 {
    let ours = now_ms();
    (system_ms() as f64 - ours as f64 + ANCHOR.offset_ms as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_start_time_advanced_by_elapsed_time_whatever_the_wall_clock_does() {
        let anchor = Anchor { wall_ms: 1_800_000_000_000, at: Instant::now(), offset_ms: 0 };
        assert_eq!(anchored(&anchor, 0), 1_800_000_000_000);
        assert_eq!(anchored(&anchor, 1500), 1_800_000_001_500);
        let skewed = Anchor { offset_ms: -60_000, ..anchor };
        assert_eq!(anchored(&skewed, 1500), 1_799_999_941_500);
    }

    #[test]
    fn it_never_goes_backwards() {
        let mut last = now_ms();
        for _ in 0..10_000 {
            let now = now_ms();
            assert!(now >= last);
            last = now;
        }
        assert!(step_seconds().abs() < 5.0, "the test machine's clock did not step: {}", step_seconds());
    }
}
