//! The process's wall clock, in one place: admission (Unix milliseconds, shared with other
//! nodes through the store) and the pages' `server_time` (Unix seconds) read it here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds: the one clock of admission.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix time in whole seconds.
pub fn unix_now() -> u64 {
    now_ms() / 1000
}
