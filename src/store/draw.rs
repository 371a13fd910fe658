//! The pre-queue's draw (DESIGN §3): one CSPRNG per room, ChaCha20 seeded once from the
//! system's secure source, so nobody can predict or buy a place, and a draw of a million
//! places costs no system call per place.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::Mutex;

/// A room's source of draws.
pub struct Shuffler {
    rng: Mutex<ChaCha20Rng>,
}

impl Default for Shuffler {
    fn default() -> Self {
        Self::new()
    }
}

impl Shuffler {
    /// Seeded from the system's secure source. Should that fail (the OS has none), the seed
    /// is a hash of the clock and the process, and it is logged as an error: the order is
    /// then fair but not secret.
    pub fn new() -> Self {
        let mut seed = [0u8; 32];
        if SystemRandom::new().fill(&mut seed).is_err() {
            tracing::error!("the system's secure random source failed: the pre-queue's draw is seeded from the clock");
            let fallback = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
            seed.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, fallback.as_bytes()).as_ref());
        }
        Self { rng: Mutex::new(ChaCha20Rng::from_seed(seed)) }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, ChaCha20Rng> {
        self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A uniformly random order of `0..n`: `order[k]` is the one placed `k`-th (Fisher–Yates).
    pub fn permutation(&self, n: usize) -> Vec<u32> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let mut order: Vec<u32> = (0..n).collect();
        let mut rng = self.rng();
        for i in (1..n as usize).rev() {
            let j = uniform(&mut rng, i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }

    /// A uniform draw in [0, 1) with 53 bits.
    pub fn fraction(&self) -> f64 {
        (self.rng().next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Exactly uniform in `0..bound` (Lemire's multiply-and-reject; `bound` > 0).
fn uniform(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let wide = u128::from(rng.next_u64()) * u128::from(bound);
        if (wide as u64) >= threshold {
            return (wide >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permutation_holds_every_place_once() {
        let order = Shuffler::new().permutation(10_000);
        let mut seen = vec![false; order.len()];
        for &k in &order {
            assert!(!std::mem::replace(&mut seen[k as usize], true), "{k} twice");
        }
        assert!(order.iter().enumerate().filter(|(i, k)| *i as u32 == **k).count() < 100, "not shuffled");
    }

    #[test]
    fn draws_are_uniform_within_chance() {
        // 60,000 draws of the first place among 6: each about 10,000 (±5 sigma, about 460).
        let s = Shuffler::new();
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[s.permutation(6)[0] as usize] += 1;
        }
        assert!(counts.iter().all(|c| c.abs_diff(10_000) < 460), "{counts:?}");
        let f = s.fraction();
        assert!((0.0..1.0).contains(&f));
    }

    #[test]
    fn two_rooms_draw_differently() {
        assert_ne!(Shuffler::new().permutation(64), Shuffler::new().permutation(64));
    }
}
