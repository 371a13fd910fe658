//! The process's table of open descriptors, grown once at start to what the configuration
//! may hold.
//!
//! Linux grows a process's descriptor table by doubling it (128, 256, ..., 8,192, ...), and
//! in a process with more than one thread each growth waits for an RCU grace period
//! (`expand_fdtable` in fs/file.c calls `synchronize_rcu`), 10-30 ms, inside the `accept`
//! that needed the room. That worker serves nobody meanwhile. Found in the pinned slowloris
//! run (`loadtest/attack.sh -c`): the real client's slowest answers, 15-34 ms, came at 0.1,
//! 0.3, 0.5, 1.0, 2.0 and 4.1 s, just as the open descriptors passed 256, 512, ..., 8,192.
//! Growing the table before the first connection costs one grace period at start and about
//! 9 bytes per descriptor (512 KiB for the 50,000 connections of the default).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Descriptors a configuration may hold at once: its client connections, each worker's
/// upstream connections, and room for the rest (listeners, admin, Redis, files).
pub fn wanted(max_connections: usize, workers: usize, upstream_per_worker: usize) -> usize {
    const OTHERS: usize = 1024;
    max_connections.saturating_add(workers.saturating_mul(upstream_per_worker)).saturating_add(OTHERS)
}

/// The process's limits of open descriptors (`RLIMIT_NOFILE`).
fn limits() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// The open-files limit that applies (the soft one).
pub fn limit() -> io::Result<u64> {
    limits().map(|l| l.rlim_cur)
}

/// Raises the soft open-files limit towards `wanted`, up to the hard limit, as Go's runtime
/// and nginx's `worker_rlimit_nofile` do: the soft default of 1,024 is kept for programs
/// that use select(2), which usher does not. Returns the limit now in force.
pub fn raise_limit(wanted: usize) -> io::Result<u64> {
    let current = limits()?;
    let wanted = u64::try_from(wanted).unwrap_or(u64::MAX);
    if current.rlim_cur >= wanted || current.rlim_cur >= current.rlim_max {
        return Ok(current.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: wanted.min(current.rlim_max), rlim_max: current.rlim_max };
    // SAFETY: setrlimit reads the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(raised.rlim_cur)
}

/// Grows the descriptor table to hold `wanted` descriptors (at most the open-files limit)
/// by opening one descriptor at the top and closing it: the table never shrinks. Returns the
/// number of descriptors the table now holds without growing.
pub fn reserve(wanted: usize) -> io::Result<usize> {
    let slots = wanted.min(usize::try_from(limit()?).unwrap_or(usize::MAX));
    let Some(top) = slots.checked_sub(1).and_then(|top| libc::c_int::try_from(top).ok()) else {
        return Ok(slots);
    };
    let any = std::fs::File::open("/dev/null")?;
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own onto the lowest free number at
    // or above `top`; the new one is owned below and closed when dropped.
    let duplicate = unsafe { libc::fcntl(any.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top) };
    if duplicate < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `duplicate` was just opened by fcntl and belongs to nothing else.
    drop(unsafe { OwnedFd::from_raw_fd(duplicate) });
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's size as the kernel reports it (`FDSize` in /proc/self/status).
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = status.lines().find(|l| l.starts_with("FDSize:")).expect("FDSize");
        line["FDSize:".len()..].trim().parse().expect("a number")
    }

    /// One test, not two: the limit is the process's, and tests run in parallel.
    #[test]
    fn the_limit_is_raised_within_the_hard_one_and_the_table_grown_at_once_within_it() {
        let before = limits().expect("limits");
        let hard = before.rlim_max;
        assert_eq!(raise_limit(0).expect("raise"), before.rlim_cur, "never lowered");
        let most = hard.min(1 << 20).max(before.rlim_cur);
        assert_eq!(raise_limit(usize::try_from(most).expect("fits")).expect("raise"), most);
        assert!(limit().expect("limit") <= hard);

        let limit = usize::try_from(limit().expect("limit")).expect("fits");
        let wanted = 4_000.min(limit);
        assert_eq!(reserve(wanted).expect("reserve"), wanted);
        assert!(table_size() >= wanted, "FDSize {} < {wanted}", table_size());
        // Beyond the limit it stops at the limit, and is no error.
        if limit <= 1 << 20 {
            assert_eq!(reserve(limit + 1).expect("reserve"), limit);
        }
    }

    #[test]
    fn wanted_counts_clients_upstreams_and_the_rest() {
        assert_eq!(wanted(50_000, 2, 1024), 50_000 + 2048 + 1024);
        assert_eq!(wanted(usize::MAX, 2, 1024), usize::MAX);
    }
}
