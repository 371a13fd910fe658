//! Memory per waiter: fills a room's line with 100,000 and then 1,000,000 waiters (each a
//! distinct client key) and reports the heap bytes the line holds per waiter; then the bytes
//! per client key a rate limiter tracks. Counted exactly by a counting allocator rather
//! than estimated.
//!
//! `cargo bench --bench memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use usher::config::RoomMode;
use usher::store::memory::MemoryRoom;

mod support;
use support::{T0, client};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    for waiters in [100_000u64, 1_000_000] {
        let limits = support::limits(RoomMode::QueueAll);
        let before = LIVE.load(Relaxed);
        let room = MemoryRoom::new(limits, T0);
        for i in 0..waiters {
            room.join(client(i), T0);
        }
        // Every waiter polls twice across the ttl, as live browsers do, so the heartbeat
        // deadlines are at their steady-state count too.
        for step in 1..=2u64 {
            for t in 0..waiters {
                room.poll(
                    usher::store::TicketRef { generation: room.generation(), number: t },
                    T0 + step * 16_000,
                    usher::store::Pace::FIXED,
                );
            }
        }
        let bytes = LIVE.load(Relaxed) - before;
        println!(
            "memory/waiter: {waiters:>9} waiters hold {:>6.1} MiB on the heap: {:.1} bytes per waiter",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / waiters as f64
        );
        drop(room);
    }

    let config = usher::config::Config::parse("[limits]\nmax_tracked_clients = 1000000\n").expect("config");
    let gate =
        usher::limits::Gate::new(&config.client, &config.limits, governor::clock::QuantaClock::default(), |_| {
            usher::limits::LimiterMetrics::unregistered()
        });
    let before = LIVE.load(Relaxed);
    let clients = 1_000_000u64;
    for i in 0..clients {
        let _ = gate.check_request(&client(i), None, &http::Method::GET, "/");
    }
    let bytes = LIVE.load(Relaxed) - before;
    println!(
        "memory/limiter: {clients} tracked client keys hold {:.1} MiB: {:.1} bytes per key (cap: limits.max_tracked_clients)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / clients as f64
    );
}
