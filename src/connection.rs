//! What one client connection holds while it is open, and the per-client count of them.
//!
//! A connection takes three places when it is accepted: one under `listen.max_connections`
//! (a semaphore permit), one in its client key's count ([`ClientConnections`]), and a hold on
//! its worker's graceful drain. They travel together as [`Places`], so that an upgraded
//! connection hands all three to its tunnel ([`Lease`]) and no tunnel escapes the budgets or
//! the shutdown grace. [`Activity`] tracks the requests in flight, for the idle timeout.
//!
//! It sits below both the listener and forwarding, which share it.

use crate::identity::ClientKey;
use hyper_util::server::graceful::Watcher;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// Rows of the counting sketch: a client is refused only if all rows say it is over the cap.
const ROWS: usize = 4;
/// Widest row: 2^20 counters, so the table never passes 16 MiB whatever the configuration.
const MAX_WIDTH: usize = 1 << 20;

/// Open connections per client key, in a fixed-size counting sketch (count-min, as in
/// `pingora-limits`): memory is set at start from `listen.max_connections` and does not grow
/// with the number of clients, so a flood of fresh addresses cannot grow it. Shared by every
/// worker; opening or closing a connection is four atomic adds, no lock.
///
/// A sketch may over-count (two keys sharing a counter in every row), never under-count: a
/// client is never let past its cap. The table is at least twice as wide as the number of
/// connections that can be open, and the key is a keyed hash the client cannot aim, so an
/// over-count that matters needs a collision in all four rows.
pub struct ClientConnections {
    rows: Box<[AtomicU32]>,
    width_mask: usize,
    cap: u32,
}

impl std::fmt::Debug for ClientConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnections").field("width", &(self.width_mask + 1)).field("cap", &self.cap).finish()
    }
}

impl ClientConnections {
    /// A table for at most `max_connections` open connections, each client key allowed `cap`.
    pub fn new(max_connections: usize, cap: usize) -> Arc<Self> {
        let width = max_connections.saturating_mul(2).clamp(1024, MAX_WIDTH).next_power_of_two();
        Arc::new(Self {
            rows: (0..ROWS * width).map(|_| AtomicU32::new(0)).collect(),
            width_mask: width - 1,
            cap: u32::try_from(cap).unwrap_or(u32::MAX),
        })
    }

    /// The counter of `key` in each row: four independent 32-bit parts of the keyed hash.
    fn cells(&self, key: &ClientKey) -> [usize; ROWS] {
        let width = self.width_mask + 1;
        std::array::from_fn(|row| {
            let mut part = [0u8; 4];
            part.copy_from_slice(&key.0[row * 4..row * 4 + 4]);
            row * width + (u32::from_le_bytes(part) as usize & self.width_mask)
        })
    }

    /// Counts one more connection of `key`, or refuses it (`None`) when the key already holds
    /// its cap. The count lasts as long as the returned [`ClientSlot`].
    pub fn open(self: &Arc<Self>, key: &ClientKey) -> Option<ClientSlot> {
        let cells = self.cells(key);
        let counted = cells.map(|cell| self.rows[cell].fetch_add(1, Relaxed).saturating_add(1));
        let slot = ClientSlot { table: self.clone(), cells };
        // Over the cap in every row: refused (dropping the slot takes the counts back).
        if counted.iter().min().is_some_and(|n| *n > self.cap) { None } else { Some(slot) }
    }
}

/// One connection's count in [`ClientConnections`]; released on drop.
pub struct ClientSlot {
    table: Arc<ClientConnections>,
    cells: [usize; ROWS],
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        for cell in self.cells {
            self.table.rows[cell].fetch_sub(1, Relaxed);
        }
    }
}

/// Everything an open client connection holds; dropped when the connection (or the tunnel it
/// became) ends.
pub struct Places {
    /// Its place under `listen.max_connections`.
    pub permit: OwnedSemaphorePermit,
    /// Its count under `listen.max_connections_per_client` (`None`: not counted, e.g. a
    /// trusted proxy that carries many clients).
    pub client: Option<ClientSlot>,
    /// Keeps the worker's graceful shutdown waiting (up to `listen.shutdown_grace`) until
    /// this connection ends.
    pub drain: Watcher,
}

/// A connection's [`Places`], shared with a request that asks to upgrade: if the upstream
/// agrees, the tunnel takes them ([`Lease::take`]) and holds them for its life. Only
/// requests with an `Upgrade` header carry one, so other requests allocate nothing for it.
#[derive(Clone)]
pub struct Lease(Arc<Mutex<Option<Places>>>);

impl Lease {
    pub fn new(places: Places) -> Self {
        Self(Arc::new(Mutex::new(Some(places))))
    }

    /// The places, for a tunnel; `None` once taken.
    pub fn take(&self) -> Option<Places> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }
}

/// Requests in flight on one connection and when the last one ended: what its idle timeout
/// reads. Kept with atomics and no timer per request; the connection's one idle timer reads
/// them when it fires ([`Activity::idle_deadline`]).
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Requests begun so far (0: the first-request timeout applies, not the idle one).
    begun: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request.
    last_end_ms: AtomicU64,
    /// The last answer was a refusal ([`crate::refused_lane::Refused`]): the next request takes
    /// its turn in the worker's [`crate::refused_lane::RefusedLane`].
    refused_last: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            refused_last: AtomicBool::new(false),
        }
    }
}

impl Activity {
    /// Marks a request as in flight until the returned guard is dropped (when its response
    /// body has been sent, or the request was abandoned).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.begun.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// Whether any request has begun on this connection.
    pub fn started(&self) -> bool {
        self.begun.load(Relaxed) > 0
    }

    /// When the connection becomes idle for `timeout` if nothing changes: `None` while a
    /// request is in flight.
    pub fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.last_end_ms.load(Relaxed)) + timeout)
    }

    /// Whether the connection's last answer was a refusal.
    pub fn refused_last(&self) -> bool {
        self.refused_last.load(Relaxed)
    }

    /// Records whether the answer just given was a refusal.
    pub fn set_refused(&self, refused: bool) {
        self.refused_last.store(refused, Relaxed);
    }
}

/// A request in flight on a connection; see [`Activity::begin`].
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// The connection the request is on.
    pub fn activity(&self) -> &Activity {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since_open = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_end_ms.store(since_open, Relaxed);
        activity.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_refused_over_its_cap_and_let_in_again_when_one_closes() {
        let table = ClientConnections::new(100, 2);
        let (a, b) = (ClientKey([1; 16]), ClientKey([2; 16]));
        let first = table.open(&a).expect("first");
        let _second = table.open(&a).expect("second");
        assert!(table.open(&a).is_none(), "a third connection of the same key is refused");
        assert!(table.open(&b).is_some(), "another key is not affected");
        drop(first);
        assert!(table.open(&a).is_some(), "a closed connection frees its place");
    }

    #[test]
    fn the_table_size_is_bounded_whatever_the_configuration() {
        let table = ClientConnections::new(10_000_000, 1000);
        assert_eq!(table.width_mask + 1, MAX_WIDTH);
        let small = ClientConnections::new(1, 1);
        assert_eq!(small.width_mask + 1, 1024);
    }

    #[test]
    fn idle_deadline_waits_for_requests_in_flight() {
        let activity = Arc::new(Activity::default());
        assert!(!activity.started());
        let request = activity.begin();
        assert!(activity.started());
        assert_eq!(activity.idle_deadline(Duration::from_secs(1)), None);
        drop(request);
        let deadline = activity.idle_deadline(Duration::from_secs(1)).expect("idle");
        assert!(deadline > Instant::now());
    }
}
