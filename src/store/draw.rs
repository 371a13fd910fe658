//! The pre-queue's draw, checkable by anyone (DESIGN §3, "A draw anyone can check").
//!
//! Each pre-queue gets a fresh secret seed before its first ticket is issued, and usher
//! publishes the seed's SHA-256 (the commitment) at once. At the opening the tickets of the
//! pre-queue are put in the order of `SHA-256(seed ":" ticket)`, and the seed is published.
//! Anyone can then check, with nothing but `sha256sum`, that the seed is the one committed
//! to and that the order follows from it: nobody could choose the order after the tickets
//! were known, the operator included. The seed is ASCII hex, hashed as written:
//!
//! ```text
//! printf %s "$seed" | sha256sum              # the commitment
//! printf %s "$seed:$ticket" | sha256sum      # a ticket's key; the order is by key
//! ```
//!
//! What the admitter then did with the order is published too: each place it walked past,
//! with its ticket and whether it was admitted or passed over (away or gone), so
//! `usher verify-draw` can check that the line was served in the drawn order.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::operators::hex;

/// Where a room's draw stands, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draw {
    /// 64 hex digits; secret until drawn.
    pub seed: String,
    /// When the seed was fixed (Unix ms): before the first ticket of its pre-queue.
    pub committed_ms: u64,
    /// Once drawn: the pre-queue's tickets `[first, end)` and when they were drawn.
    pub drawn: Option<Drawn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drawn {
    pub first: u64,
    pub end: u64,
    pub at_ms: u64,
}

/// One place the admitter walked past in a drawn range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The place in the drawn order, from 0.
    pub position: u64,
    pub ticket: u64,
    /// Admitted when its turn came, or passed over (away or gone).
    pub admitted: bool,
}

/// The commitment to `seed`: the SHA-256 of its hex text.
pub fn commitment(seed: &str) -> String {
    hex(digest(&SHA256, seed.as_bytes()).as_ref())
}

/// A ticket's key in the draw: `SHA-256(seed ":" ticket)`.
pub fn key(seed: &str, ticket: u64) -> [u8; 32] {
    let mut text = String::with_capacity(seed.len() + 21);
    let _ = write!(text, "{seed}:{ticket}");
    let mut key = [0u8; 32];
    key.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    key
}

/// The tickets `[first, end)` in their drawn order: by key, then (never seen with 256-bit
/// keys) by number. A million tickets take about a second on one core.
pub fn order(seed: &str, first: u64, end: u64) -> Vec<u64> {
    let mut keyed: Vec<([u8; 32], u64)> = (first..end).map(|t| (key(seed, t), t)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, t)| t).collect()
}

/// A source of seeds: ChaCha20 seeded once from the system's secure source, so a seed per
/// join (the Redis store offers one with each, used only when a pre-queue begins) costs no
/// system call.
pub struct Seeds {
    rng: Mutex<ChaCha20Rng>,
}

impl Default for Seeds {
    fn default() -> Self {
        Self::new()
    }
}

impl Seeds {
    /// Seeded from the system's secure source. Should that fail (the OS has none), the seed
    /// is a hash of the clock and the process, and it is logged as an error: the draw is
    /// then still checkable but its seed could be guessed.
    pub fn new() -> Self {
        let mut seed = [0u8; 32];
        if SystemRandom::new().fill(&mut seed).is_err() {
            tracing::error!("the system's secure random source failed: the draw's seeds come from the clock");
            let fallback = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
            seed.copy_from_slice(digest(&SHA256, fallback.as_bytes()).as_ref());
        }
        Self { rng: Mutex::new(ChaCha20Rng::from_seed(seed)) }
    }

    /// A fresh seed: 256 bits as 64 hex digits.
    pub fn next(&self) -> String {
        let mut bytes = [0u8; 32];
        self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).fill_bytes(&mut bytes);
        hex(&bytes)
    }
}

/// What `GET /.usher/draw/{room}` publishes, and what `usher verify-draw` reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub room: String,
    /// `committed` (the seed is secret), `drawn`, or `none` (no event announced).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at_ms: Option<u64>,
    /// Published once drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// The pre-queued tickets: every number from `first_ticket` up to (not including)
    /// `end_ticket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ticket: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ticket: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drawn_at_ms: Option<u64>,
    /// How to recompute the order, in words.
    pub rule: String,
    /// The places the admitter has walked past so far, in its order.
    #[serde(default)]
    pub walk: Vec<Step>,
}

pub const RULE: &str = "commitment = SHA-256(seed); the pre-queued tickets are served in ascending order of \
                        SHA-256(seed + \":\" + ticket), ticket in decimal, hashes compared as hex text";

impl Publication {
    pub fn new(room: &str, draw: Option<&Draw>, walk: Vec<Step>) -> Self {
        let drawn = draw.and_then(|d| d.drawn);
        Self {
            room: room.to_string(),
            state: match (draw, drawn) {
                (None, _) => "none",
                (Some(_), None) => "committed",
                (Some(_), Some(_)) => "drawn",
            }
            .to_string(),
            commitment: draw.map(|d| commitment(&d.seed)),
            committed_at_ms: draw.map(|d| d.committed_ms),
            seed: draw.filter(|d| d.drawn.is_some()).map(|d| d.seed.clone()),
            first_ticket: drawn.map(|d| d.first),
            end_ticket: drawn.map(|d| d.end),
            drawn_at_ms: drawn.map(|d| d.at_ms),
            rule: RULE.to_string(),
            walk,
        }
    }
}

/// Why a publication does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the draw is not made yet (state {0:?}): only its commitment can be kept for later")]
    NotDrawn(String),
    #[error("the publication lacks {0}")]
    Missing(&'static str),
    #[error("the seed is not 64 hex digits")]
    BadSeed,
    #[error("the seed's SHA-256 is {actual}, not the commitment {committed}")]
    Commitment { committed: String, actual: String },
    #[error("place {position} of the walk holds ticket {ticket}, but the seed draws ticket {drawn} there")]
    OutOfOrder { position: u64, ticket: u64, drawn: u64 },
    #[error("place {position} of the walk is past the {count} drawn tickets")]
    PastTheEnd { position: u64, count: u64 },
    #[error("the walk goes back: place {position} after place {after}")]
    WentBack { position: u64, after: u64 },
}

/// What a publication proves once checked.
#[derive(Debug)]
pub struct Verified {
    pub order: Vec<u64>,
    pub walked: usize,
    pub admitted: usize,
}

impl Verified {
    /// Where `ticket` was drawn (from 0), if it was in the pre-queue.
    pub fn position(&self, ticket: u64) -> Option<usize> {
        self.order.iter().position(|&t| t == ticket)
    }
}

/// Checks that the seed is the one committed to, and that every place the admitter walked
/// past holds the ticket the seed draws there, in order.
pub fn verify(p: &Publication) -> Result<Verified, VerifyError> {
    if p.state != "drawn" {
        return Err(VerifyError::NotDrawn(p.state.clone()));
    }
    let seed = p.seed.as_deref().ok_or(VerifyError::Missing("seed"))?;
    let committed = p.commitment.as_deref().ok_or(VerifyError::Missing("commitment"))?;
    let first = p.first_ticket.ok_or(VerifyError::Missing("first_ticket"))?;
    let end = p.end_ticket.ok_or(VerifyError::Missing("end_ticket"))?;
    if seed.len() != 64 || !seed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VerifyError::BadSeed);
    }
    let actual = commitment(seed);
    if !actual.eq_ignore_ascii_case(committed) {
        return Err(VerifyError::Commitment { committed: committed.to_string(), actual });
    }
    let order = order(seed, first, end.max(first));
    let mut last: Option<u64> = None;
    for step in &p.walk {
        if last.is_some_and(|after| step.position <= after) {
            return Err(VerifyError::WentBack { position: step.position, after: last.unwrap_or_default() });
        }
        let drawn = usize::try_from(step.position)
            .ok()
            .and_then(|k| order.get(k))
            .copied()
            .ok_or(VerifyError::PastTheEnd { position: step.position, count: order.len() as u64 })?;
        if drawn != step.ticket {
            return Err(VerifyError::OutOfOrder { position: step.position, ticket: step.ticket, drawn });
        }
        last = Some(step.position);
    }
    Ok(Verified { walked: p.walk.len(), admitted: p.walk.iter().filter(|s| s.admitted).count(), order })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn keys_and_commitment_are_plain_sha256_of_the_text() {
        // `printf %s 00112233...eeff | sha256sum`, and with ":7" appended.
        assert_eq!(commitment(SEED), "2a8abfa8cb9906290437854193ca6bca41d4d4e26d1d454bd66a35158095e737");
        assert_eq!(hex(&key(SEED, 7)), "73b05c84d0b145b913d2917ef14089d6870f632b61dba6a065997e771ff7caf1");
    }

    #[test]
    fn the_order_holds_every_ticket_once_and_is_not_arrival() {
        let order = order(SEED, 100, 10_100);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (100..10_100).collect::<Vec<_>>());
        assert!(order.iter().zip(100..).filter(|(t, i)| **t == *i).count() < 100, "not shuffled");
    }

    #[test]
    fn first_places_are_uniform_within_chance() {
        // 6,000 seeds drawing 6 tickets: each ticket first about 1,000 times (±5 sigma ≈ 150).
        let seeds = Seeds::new();
        let mut counts = [0u32; 6];
        for _ in 0..6_000 {
            counts[(order(&seeds.next(), 0, 6)[0]) as usize] += 1;
        }
        assert!(counts.iter().all(|c| c.abs_diff(1_000) < 150), "{counts:?}");
    }

    fn published(walk: Vec<Step>) -> Publication {
        let draw = Draw { seed: SEED.into(), committed_ms: 1, drawn: Some(Drawn { first: 10, end: 30, at_ms: 2 }) };
        Publication::new("r", Some(&draw), walk)
    }

    #[test]
    fn an_honest_walk_verifies_and_a_tampered_one_does_not() {
        let order = order(SEED, 10, 30);
        let walk: Vec<Step> = order
            .iter()
            .enumerate()
            .filter(|(k, _)| k % 3 != 1)
            .map(|(k, &ticket)| Step { position: k as u64, ticket, admitted: k % 5 != 0 })
            .collect();
        let verified = verify(&published(walk.clone())).expect("honest");
        assert_eq!(verified.walked, walk.len());
        assert_eq!(verified.position(order[4]), Some(4));

        let mut swapped = walk.clone();
        let (a, b) = (swapped[1].ticket, swapped[2].ticket);
        swapped[1].ticket = b;
        swapped[2].ticket = a;
        assert!(matches!(verify(&published(swapped)), Err(VerifyError::OutOfOrder { .. })));

        let mut back = walk.clone();
        back.swap(1, 2);
        assert!(matches!(verify(&published(back)), Err(VerifyError::WentBack { .. })));

        let mut other_seed = published(walk.clone());
        other_seed.seed = Some(SEED.replace('0', "1"));
        assert!(matches!(verify(&other_seed), Err(VerifyError::Commitment { .. })));

        let mut past = walk;
        past.push(Step { position: 20, ticket: 99, admitted: true });
        assert!(matches!(verify(&published(past)), Err(VerifyError::PastTheEnd { .. })));
    }

    #[test]
    fn a_committed_draw_publishes_no_seed() {
        let draw = Draw { seed: SEED.into(), committed_ms: 1, drawn: None };
        let p = Publication::new("r", Some(&draw), Vec::new());
        assert_eq!(p.state, "committed");
        assert_eq!(p.seed, None);
        assert_eq!(p.commitment.as_deref(), Some(commitment(SEED).as_str()));
        assert!(matches!(verify(&p), Err(VerifyError::NotDrawn(_))));
    }
}
