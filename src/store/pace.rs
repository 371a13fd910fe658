//! How often a waiter is asked to poll, and how long it may then go unheard before it is
//! taken for away (DESIGN §3, "Polling follows the wait").
//!
//! Someone an hour from their turn learns nothing new from a poll every few seconds; a
//! million of them would send 100,000 polls a second. So the interval grows with the wait:
//! a thirtieth of the expected wait, from 2 s near the front to 60 s half an hour or more
//! away; a waiter then polls about 30 times per halving of its wait. And since
//! a waiter told to come back in a minute must not be judged away for obeying, its heartbeat
//! deadline follows its own interval: three missed polls and a little slack, never less than
//! `waiter_ttl`.
//!
//! The stores apply this at each poll, with the number present ahead they compute there;
//! `lua/poll.lua` applies the same arithmetic (keep the two in step).

use std::time::Duration;

/// Waiters with fewer present ahead of them than this are near the front: they poll fast,
/// whatever the estimate says, so a turn is claimed within a few seconds.
pub const NEAR_FRONT: u64 = 20;

/// The shortest suggested interval, near the front.
pub const FASTEST_SECS: u64 = 2;

/// The longest, for those half an hour or more from their turn.
pub const SLOWEST_SECS: u64 = 60;

/// The interval is this fraction of the expected wait: an estimate that is off by half still
/// leaves a waiter many polls before its turn, and its claim window to spare.
const WAIT_SHARE: u64 = 30;

/// While the outflow is unknown (an `admit_per_minute` of 0), the interval before polling
/// followed the wait.
pub const UNKNOWN_SECS: u64 = 10;

/// Polls a waiter may miss before it is away; beyond them, a little slack for a slow network.
const MISSED_POLLS: u64 = 3;
const SLACK_MS: u64 = 2_000;

/// The room's outflow as it bears on pacing, fixed for one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Expected milliseconds between two admissions (0: not known).
    pub ms_per_admission: u64,
    /// The interval for a pre-queued waiter, whose place is not drawn yet: at the opening
    /// some are let in at once, and should hear of it within their claim window.
    pub prequeue_secs: u64,
}

impl Pace {
    /// The pace before polling followed the wait: every waiter's deadline is `waiter_ttl`.
    /// For tests and callers that do not pace.
    pub const FIXED: Pace = Pace { ms_per_admission: 0, prequeue_secs: UNKNOWN_SECS };

    /// The pace of a room admitting `per_minute` (the faster of the measured and configured
    /// outflows, so nobody is paced slower than their turn may come), whose grants are kept
    /// for `claim_window`.
    pub fn new(per_minute: u64, claim_window: Duration) -> Self {
        Pace {
            ms_per_admission: 60_000u64.checked_div(per_minute).unwrap_or(0),
            prequeue_secs: claim_window.as_secs().clamp(FASTEST_SECS, SLOWEST_SECS),
        }
    }

    /// The suggested seconds to the next poll of a waiter with `present_ahead` waiters ahead
    /// that are not away.
    pub fn interval_secs(&self, present_ahead: u64, prequeue: bool) -> u64 {
        if prequeue {
            return self.prequeue_secs;
        }
        if present_ahead < NEAR_FRONT {
            return FASTEST_SECS;
        }
        if self.ms_per_admission == 0 {
            return UNKNOWN_SECS;
        }
        (present_ahead.saturating_mul(self.ms_per_admission) / (1000 * WAIT_SHARE)).clamp(FASTEST_SECS, SLOWEST_SECS)
    }

    /// How long past a poll a waiter stays present with no further poll: its missed polls
    /// and slack, never less than `waiter_ttl`. Returned as the extra beyond `waiter_ttl`, which
    /// the stores add to the time they record the poll at, so their `waiter_ttl` checks hold.
    pub fn credit_ms(&self, present_ahead: u64, prequeue: bool, waiter_ttl: Duration) -> u64 {
        if *self == Self::FIXED {
            return 0;
        }
        let allowance = MISSED_POLLS * self.interval_secs(present_ahead, prequeue) * 1000 + SLACK_MS;
        allowance.saturating_sub(u64::try_from(waiter_ttl.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn the_interval_grows_with_the_wait_from_two_seconds_to_one_minute() {
        let pace = Pace::new(1000, Duration::from_secs(30));
        assert_eq!(pace.interval_secs(0, false), 2);
        assert_eq!(pace.interval_secs(19, false), 2, "near the front");
        assert_eq!(pace.interval_secs(1_000, false), 2, "a minute away");
        assert_eq!(pace.interval_secs(10_000, false), 20, "ten minutes away");
        assert_eq!(pace.interval_secs(30_000, false), 60, "half an hour away");
        assert_eq!(pace.interval_secs(1_000_000, false), 60, "never more than a minute");
        assert_eq!(pace.interval_secs(1_000_000, true), 30, "pre-queued: within the claim window");
    }

    #[test]
    fn the_deadline_follows_the_interval_and_never_undercuts_waiter_ttl() {
        let pace = Pace::new(1000, Duration::from_secs(30));
        assert_eq!(pace.credit_ms(10, false, TTL), 0, "2 s polls: waiter_ttl is enough");
        assert_eq!(pace.credit_ms(60_000, false, TTL), 3 * 60_000 + 2_000 - 30_000);
        assert_eq!(pace.credit_ms(5_000, false, TTL), 3 * 10_000 + 2_000 - 30_000);
        assert_eq!(Pace::FIXED.credit_ms(60_000, false, TTL), 0);
    }

    #[test]
    fn without_a_known_outflow_far_back_polls_every_ten_seconds() {
        let pace = Pace::new(0, Duration::from_secs(30));
        assert_eq!(pace.interval_secs(10_000, false), UNKNOWN_SECS);
        assert_eq!(pace.credit_ms(10_000, false, TTL), 2_000);
        assert_eq!(Pace::FIXED.interval_secs(10_000, false), UNKNOWN_SECS);
        assert_eq!(Pace::FIXED.interval_secs(10, false), 2);
    }
}
