//! The attacker's side of the proof of work's cost (issue 18): a native solver (ring's
//! SHA-256, the same puzzles as the browser's worker) on this machine, one core and every
//! core, and what a ticket costs at each difficulty: expected hashes (puzzles × 2^bits) and
//! CPU-seconds. Run beside `loadtest/challenge.sh`, which measures the browser.
//!
//! `cargo bench --bench challenge`

use std::time::Instant;
use usher::room::challenge::{prefix, solve, solves};

fn main() {
    // One core: 64 puzzles of 16 bits, counted exactly (nonces are tried from 0).
    let started = Instant::now();
    let (_, hashes) = solve("native-measurement", 16, 64);
    let secs = started.elapsed().as_secs_f64();
    let one_core = hashes as f64 / secs;
    println!("native: {hashes} hashes in {secs:.2} s on one core: {one_core:.0} hashes/s");

    // Every core: one solver thread per core, as a farm would run it.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..cores).map(|c| s.spawn(move || solve(&format!("native-core-{c}"), 16, 32).1)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let all = total as f64 / started.elapsed().as_secs_f64();
    println!("native: {cores} cores: {all:.0} hashes/s");

    // Checking an answer of 8 puzzles: a prefix and a try each, 16 hashes.
    let started = Instant::now();
    let mut ok = 0u32;
    for n in 0..100_000u64 {
        ok += (0..8).map(|i| u32::from(solves(&prefix("check", i), n, 8))).sum::<u32>();
    }
    let per_check = started.elapsed().as_secs_f64() / 100_000.0;
    println!("native: an answer of 8 puzzles checked in {:.2} µs ({ok} tries of 800,000 pass 8 bits)", per_check * 1e6);

    println!("\n| bits | puzzles | expected hashes | CPU-seconds per ticket (one core) | tickets per core-hour |");
    println!("|---|---|---|---|---|");
    for bits in [13u32, 14, 15, 16, 17, 18, 20] {
        let expected = 8.0 * f64::from(1u32 << bits);
        let cpu = expected / one_core;
        println!("| {bits} | 8 | {expected:.0} | {cpu:.4} | {:.0} |", 3600.0 / cpu);
    }
}
