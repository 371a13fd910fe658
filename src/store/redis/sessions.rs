//! This node's view of the sessions it serves, so a proxied request makes no Redis call:
//! a pass is checked against this map, its use recorded here, and the uses are written to
//! Redis once per tick (in the tick script, DESIGN §8). A session this node has not seen yet
//! (admitted on another node) or that looks idle here costs one Redis call, then is known.

use dashmap::DashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

struct Entry {
    expires_ms: u64,
    seen_ms: AtomicU64,
    /// Whether a use is waiting to be written; set once per tick, so the dirty list
    /// is locked once per session per tick, not once per request.
    dirty: AtomicBool,
}

/// Sessions known to be live, with their last use on this node.
#[derive(Default)]
pub struct LocalSessions {
    map: DashMap<u128, Entry>,
    dirty: Mutex<Vec<u128>>,
}

/// The answer of the local check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Known and live; the use is recorded.
    Live,
    /// Unknown here, or idle or expired as far as this node saw: ask Redis, which has the
    /// uses of every node.
    Ask,
}

impl LocalSessions {
    pub fn insert(&self, id: u128, seen_ms: u64, expires_ms: u64) {
        self.map.insert(id, Entry { expires_ms, seen_ms: AtomicU64::new(seen_ms), dirty: AtomicBool::new(false) });
    }

    pub fn remove(&self, id: u128) {
        self.map.remove(&id);
    }

    /// Checks `id` at `now_ms` against what this node knows, recording the use when live.
    pub fn touch(&self, id: u128, now_ms: u64, idle_ms: u64) -> Local {
        let Some(entry) = self.map.get(&id) else { return Local::Ask };
        let seen = entry.seen_ms.load(Relaxed);
        if entry.expires_ms <= now_ms || seen.saturating_add(idle_ms) <= now_ms {
            return Local::Ask;
        }
        // Written at most once a second (or a quarter of the idle limit), as in the memory
        // store: a session busy on several cores shares a cache line that is mostly read.
        if now_ms.saturating_sub(seen) >= (idle_ms / 4).min(1000) {
            entry.seen_ms.store(now_ms, Relaxed);
            if !entry.dirty.swap(true, Relaxed) {
                lock(&self.dirty).push(id);
            }
        }
        Local::Live
    }

    /// The uses not yet written: (session, last seen here). They count as written from now;
    /// [`LocalSessions::restore`] puts them back if the write fails.
    pub fn take_dirty(&self) -> Vec<(u128, u64)> {
        let ids = std::mem::take(&mut *lock(&self.dirty));
        ids.into_iter()
            .filter_map(|id| {
                let entry = self.map.get(&id)?;
                entry.dirty.store(false, Relaxed);
                Some((id, entry.seen_ms.load(Relaxed)))
            })
            .collect()
    }

    pub fn restore(&self, uses: &[(u128, u64)]) {
        let mut dirty = lock(&self.dirty);
        for (id, _) in uses {
            if let Some(entry) = self.map.get(id) {
                if !entry.dirty.swap(true, Relaxed) {
                    dirty.push(*id);
                }
            }
        }
    }

    /// Forgets sessions idle or expired here; Redis is asked again if they come back.
    pub fn sweep(&self, now_ms: u64, idle_ms: u64) {
        self.map.retain(|_, e| e.expires_ms > now_ms && e.seen_ms.load(Relaxed).saturating_add(idle_ms) > now_ms);
    }

    pub fn clear(&self) {
        self.map.clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_session_is_live_until_idle_or_expired_here() {
        let s = LocalSessions::default();
        assert_eq!(s.touch(1, 0, 60_000), Local::Ask, "unknown");
        s.insert(1, 1_000, 100_000);
        assert_eq!(s.touch(1, 30_000, 60_000), Local::Live);
        assert_eq!(s.take_dirty(), vec![(1, 30_000)]);
        assert!(s.take_dirty().is_empty(), "written once");
        assert_eq!(s.touch(1, 85_000, 60_000), Local::Live, "seen at 30 s");
        assert_eq!(s.touch(1, 160_000, 60_000), Local::Ask, "idle for 70 s");
        assert_eq!(s.touch(1, 100_000, 60_000), Local::Ask, "past its lifetime");
    }

    #[test]
    fn failed_writes_are_kept_for_the_next_tick() {
        let s = LocalSessions::default();
        s.insert(7, 0, 100_000);
        s.touch(7, 5_000, 60_000);
        let uses = s.take_dirty();
        s.restore(&uses);
        assert_eq!(s.take_dirty(), uses);
    }
}
