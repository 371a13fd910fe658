//! When visitors arrive: a steady stream, a spike, or a crowd waiting for an event to open.

use serde::Serialize;
use std::time::Duration;

/// An arrival profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Profile {
    /// `per_second` arrivals each second, evenly spaced, until every visitor has come.
    Steady { per_second: f64 },
    /// Every visitor within `over` (evenly spaced; all at once when zero).
    Spike {
        #[serde(serialize_with = "seconds")]
        over: Duration,
    },
    /// Every visitor within `over`, all before the room's `opens_at` (Unix seconds), so they
    /// are pre-queued and drawn into a random order at opening.
    Opening {
        #[serde(serialize_with = "seconds")]
        over: Duration,
        opens_at: u64,
    },
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Why a profile cannot be run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("--rate must be a positive number of arrivals per second, not {0}")]
    Rate(f64),
    #[error("the event opens at {opens_at} (Unix seconds), before the last arrival at {last_arrival}: arrive sooner")]
    OpensTooSoon { opens_at: u64, last_arrival: u64 },
}

impl Profile {
    /// Checks the profile against the clock (`now_unix` seconds).
    pub fn check(&self, now_unix: u64) -> Result<(), ProfileError> {
        match *self {
            Profile::Steady { per_second } if !(per_second.is_finite() && per_second > 0.0) => {
                Err(ProfileError::Rate(per_second))
            }
            Profile::Opening { over, opens_at } => {
                let last_arrival = now_unix + over.as_secs() + 1;
                if opens_at <= last_arrival {
                    return Err(ProfileError::OpensTooSoon { opens_at, last_arrival });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// When visitor `index` of `count` arrives, from the start of the run.
    pub fn arrival(&self, index: u64, count: u64) -> Duration {
        match *self {
            Profile::Steady { per_second } => Duration::from_secs_f64(index as f64 / per_second.max(f64::MIN_POSITIVE)),
            Profile::Spike { over } | Profile::Opening { over, .. } => over.mul_f64(index as f64 / count.max(1) as f64),
        }
    }

    /// One line for the summary.
    pub fn describe(&self, count: u64) -> String {
        match *self {
            Profile::Steady { per_second } => format!("steady: {count} visitors at {per_second}/s"),
            Profile::Spike { over } => format!("spike: {count} visitors within {:.1} s", over.as_secs_f64()),
            Profile::Opening { over, opens_at } => {
                format!("event opening: {count} visitors within {:.1} s, opens at {opens_at}", over.as_secs_f64())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_spread_over_the_profile() {
        let spike = Profile::Spike { over: Duration::from_secs(10) };
        assert_eq!(spike.arrival(0, 100), Duration::ZERO);
        assert_eq!(spike.arrival(50, 100), Duration::from_secs(5));
        let steady = Profile::Steady { per_second: 4.0 };
        assert_eq!(steady.arrival(8, 100), Duration::from_secs(2));
        assert_eq!(Profile::Spike { over: Duration::ZERO }.arrival(99, 100), Duration::ZERO);
    }

    #[test]
    fn impossible_profiles_are_refused_with_the_reason() {
        assert_eq!(Profile::Steady { per_second: 0.0 }.check(0), Err(ProfileError::Rate(0.0)));
        let opening = Profile::Opening { over: Duration::from_secs(10), opens_at: 1005 };
        assert_eq!(opening.check(1000), Err(ProfileError::OpensTooSoon { opens_at: 1005, last_arrival: 1011 }));
        assert!(Profile::Opening { over: Duration::from_secs(10), opens_at: 1020 }.check(1000).is_ok());
    }
}
