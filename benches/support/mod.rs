//! What the benches share: the clock they start at, a room's limits, and client keys.
//! (A folder, so that cargo does not take it for a bench of its own.)

#![allow(dead_code)] // each bench uses its part

use std::time::Duration;
use usher::config::RoomMode;
use usher::identity::ClientKey;
use usher::store::RoomLimits;

/// A fixed "now" in Unix milliseconds (2027), so runs are alike.
pub const T0: u64 = 1_800_000_000_000;

/// A room of `mode` admitting 1,000 a minute into 1,000 places; benches change what they
/// measure with struct update syntax.
pub fn limits(mode: RoomMode) -> RoomLimits {
    RoomLimits {
        max_active: 1000,
        admit_per_minute: 1000,
        session_idle: Duration::from_secs(600),
        session_max: Duration::from_secs(3600),
        waiter_ttl: Duration::from_secs(45),
        claim_window: Duration::from_secs(120),
        hold: Duration::from_secs(600),
        mode,
        opens_at_ms: None,
        message: None,
        tickets_per_client: 50,
        break_glass: None,
        adaptive_pinned: false,
    }
}

/// The `n`th distinct client key.
pub fn client(n: u64) -> ClientKey {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&n.to_le_bytes());
    ClientKey(k)
}
