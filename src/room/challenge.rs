//! Proof of work at join (DESIGN §3, "Bots pay"): with `[room.challenge]`, a newcomer to a
//! line gets a challenge instead of a ticket, solves it in a Web Worker (`challenge.js`) and
//! answers it at [`ANSWER_PATH`]; a valid answer yields the ticket. Self-hosted: no third
//! party is called, and nothing asks the person to do anything.
//!
//! - **Several small puzzles** (Friendly Captcha's finding): the time to solve `n` puzzles of
//!   `b` bits varies far less than one puzzle of `b + log2 n` bits. Puzzle `i` of a token is
//!   to find a nonce whose `SHA-256(SHA-256(token ":" i) ‖ nonce as 8 bytes big-endian)`
//!   starts with `b` zero bits: 2^b hashes expected, checked with two.
//! - **Stateless until answered:** the token is sealed like the cookies (HMAC under the
//!   server secret) and carries the room, a tag of the client key, when it was issued, the
//!   difficulty and a random salt. An answer is accepted once: the salt is spent in the
//!   room's store (so on every node) until the token expires.
//! - **Harder under load and suspicion,** within `max_bits`: each doubling of the room's
//!   challenges per second past `busy_per_second` adds a bit, and so does each doubling past
//!   4 a minute of those issued to one client key (or past 32 to its IPv6 /48), counted in
//!   a fixed-size count-min sketch that holds no key.
//! - **Without JavaScript** the page refreshes itself after `noscript_wait` to the same
//!   answer path with no nonces, which is accepted from then on: a slower lane that costs a
//!   script time rather than CPU, never a wall. The wait doubles with each bit that load or
//!   suspicion added, as the work does, up to 90 % of the challenge's lifetime.

use crate::config::{ChallengeConfig, RoomMode};
use crate::identity::ClientKey;
use crate::metrics::ChallengeMetrics;
use ring::digest::{Context, SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Where answers go: `POST` (JSON: `{"token", "nonces"}`) from the worker, or `GET
/// ?token=…&to=/path` from the page without JavaScript.
pub const ANSWER_PATH: &str = "/.usher/challenge";

/// The largest answer body read.
pub const ANSWER_MAX_BYTES: usize = 4096;

/// How far a token's issue time may lie ahead of this node's clock (another node's clock).
const SKEW_MS: u64 = 5_000;

/// What a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub room: u64,
    /// A tag of the client key it was issued to (see [`client_tag`]).
    pub client: [u8; 8],
    pub issued_ms: u64,
    pub bits: u8,
    pub puzzles: u8,
    /// Random: what makes each challenge unique, and what is spent when it is answered.
    pub salt: [u8; 16],
}

/// A client key's tag in a token: a hash of the key, itself a keyed hash of the address,
/// so the token names no address and links to nothing outside this deployment.
pub fn client_tag(key: &ClientKey) -> [u8; 8] {
    let mut hash = Context::new(&SHA256);
    hash.update(b"usher challenge client ");
    hash.update(&key.0);
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&hash.finish().as_ref()[..8]);
    tag
}

/// Puzzle `i`'s prefix: `SHA-256(token ":" i)`.
pub fn prefix(token: &str, i: u8) -> [u8; 32] {
    let mut p = [0u8; 32];
    p.copy_from_slice(digest(&SHA256, format!("{token}:{i}").as_bytes()).as_ref());
    p
}

/// Whether `nonce` solves the puzzle with `prefix` at `bits`.
pub fn solves(prefix: &[u8; 32], nonce: u64, bits: u8) -> bool {
    let mut block = [0u8; 40];
    block[..32].copy_from_slice(prefix);
    block[32..].copy_from_slice(&nonce.to_be_bytes());
    leading_zero_bits(digest(&SHA256, &block).as_ref()) >= u32::from(bits)
}

fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut zeros = 0;
    for &b in hash {
        zeros += b.leading_zeros();
        if b != 0 {
            break;
        }
    }
    zeros
}

/// Solves every puzzle of `token` natively (the tests, and the attacker's cost in
/// BENCHMARKS.md); also returns the hashes it took.
pub fn solve(token: &str, bits: u8, puzzles: u8) -> (Vec<u64>, u64) {
    let mut hashes = 0;
    let nonces = (0..puzzles)
        .map(|i| {
            let p = prefix(token, i);
            let nonce = (0u64..).find(|&n| solves(&p, n, bits)).unwrap_or_default();
            hashes += nonce + 1;
            nonce
        })
        .collect();
    (nonces, hashes)
}

/// Why an answer is refused; each is counted and told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the answer is not a challenge's answer (a token and one nonce per puzzle)")]
    Malformed,
    #[error("the challenge was not issued by this service (its signature does not match)")]
    Forged,
    #[error("the challenge is for another room")]
    WrongRoom,
    #[error("the challenge was issued to another client")]
    WrongClient,
    #[error("the challenge has expired; load the page again for a new one")]
    Expired,
    #[error("without JavaScript the page waits a little before joining; it will refresh by itself")]
    TooEarly,
    #[error("the answer does not solve the challenge")]
    WrongAnswer,
    #[error("the challenge was already answered")]
    Replayed,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Self::Malformed,
        Self::Forged,
        Self::WrongRoom,
        Self::WrongClient,
        Self::Expired,
        Self::TooEarly,
        Self::WrongAnswer,
        Self::Replayed,
    ];

    /// The `error` of its JSON answer.
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "challenge_malformed",
            Self::Forged => "challenge_forged",
            Self::WrongRoom => "challenge_wrong_room",
            Self::WrongClient => "challenge_wrong_client",
            Self::Expired => "challenge_expired",
            Self::TooEarly => "challenge_too_early",
            Self::WrongAnswer => "challenge_wrong_answer",
            Self::Replayed => "challenge_replayed",
        }
    }

    /// Its `reason` label in the metrics: the code without the prefix.
    pub fn label(self) -> &'static str {
        &self.code()["challenge_".len()..]
    }
}

/// What a newcomer is given: in the JSON answer (`challenge`) and the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issued {
    pub token: String,
    /// `sha256-leading-zero-bits`: see the module docs.
    pub algorithm: &'static str,
    pub bits: u8,
    pub puzzles: u8,
    /// `/.usher/challenge?room=NAME`.
    pub answer_url: String,
    pub expires_in_seconds: u64,
    /// Without JavaScript: answer with `GET answer_url&token=…` after this many seconds.
    pub noscript_wait_seconds: u64,
    /// That answer, which sends the visitor back to the page it asked for (the page's
    /// meta refresh; not part of the JSON).
    #[serde(skip)]
    pub noscript_url: String,
}

/// An answer as received.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Answer {
    pub token: String,
    /// One per puzzle; none for the page without JavaScript.
    #[serde(default)]
    pub nonces: Vec<u64>,
}

/// One room's challenges: issues them at the difficulty of the moment, checks answers, and
/// counts both. Without `[room.challenge]` (it may come and go with reloads) it asks nothing.
pub struct Challenger {
    config: RwLock<Option<ChallengeConfig>>,
    load: PerSecond,
    suspicion: Sketch,
    random: SystemRandom,
    metrics: ChallengeMetrics,
}

impl Challenger {
    pub fn new(metrics: ChallengeMetrics) -> Self {
        Self {
            config: RwLock::new(None),
            load: PerSecond::default(),
            suspicion: Sketch::default(),
            random: SystemRandom::new(),
            metrics,
        }
    }

    fn config(&self) -> Option<ChallengeConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The file's settings, at start and at each reload.
    pub fn reconfigure(&self, config: Option<&ChallengeConfig>) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config.cloned();
    }

    /// Whether a newcomer is asked now: the room has a challenge and a newcomer would take a
    /// ticket rather than walk in (someone waits, the event has not opened, or every newcomer
    /// queues). An empty room's newcomers are not held up: there is no line to jump.
    pub fn applies(&self, limits: &crate::store::RoomLimits, waiting: i64, now_ms: u64) -> bool {
        self.config.read().unwrap_or_else(|p| p.into_inner()).is_some()
            && limits.mode != RoomMode::Off
            && (waiting > 0
                || matches!(limits.mode, RoomMode::QueueAll | RoomMode::Paused)
                || limits.opens_at_ms.is_some_and(|opens| now_ms < opens))
    }

    /// The difficulty for this client now: the base, a bit per doubling of the room's load
    /// past `busy_per_second`, a bit per doubling of this key's challenges this minute past
    /// 4 (or its /48's past 32), at most `max_bits`.
    fn bits(&self, config: &ChallengeConfig, client: &ClientKey, site: Option<&ClientKey>, now_ms: u64) -> u8 {
        let rate = self.load.add(now_ms);
        let load = doublings(rate, u64::from(config.busy_per_second));
        let own = self.suspicion.add(client, now_ms);
        let site = site.map_or(0, |s| self.suspicion.add(s, now_ms) / 8);
        let suspicion = doublings(u64::from(own.max(site)), 4);
        (u32::from(config.bits) + load + suspicion).min(u32::from(config.max_bits)) as u8
    }

    /// A challenge for `client` (and its IPv6 `site`), who asked for the local path `back`.
    pub fn issue(
        &self,
        sealer: &super::tokens::Sealer,
        room: u64,
        room_name: &str,
        (client, site, back): (&ClientKey, Option<&ClientKey>, &str),
        now_ms: u64,
    ) -> Issued {
        let config = self.config().unwrap_or_else(default_config);
        let bits = self.bits(&config, client, site, now_ms);
        let mut salt = [0u8; 16];
        // The OS random source only fails if it is gone; the clock still makes salts differ.
        if self.random.fill(&mut salt).is_err() {
            salt[..8].copy_from_slice(&now_ms.to_be_bytes());
        }
        let challenge =
            Challenge { room, client: client_tag(client), issued_ms: now_ms, bits, puzzles: config.puzzles, salt };
        self.metrics.issued.inc();
        self.metrics.bits.observe(f64::from(bits));
        let token = sealer.seal_challenge(&challenge);
        let answer_url = format!("{ANSWER_PATH}?room={room_name}");
        Issued {
            noscript_url: format!("{answer_url}&token={token}&to={}", crate::pages::percent_encode(back)),
            token,
            algorithm: "sha256-leading-zero-bits",
            bits,
            puzzles: config.puzzles,
            answer_url,
            expires_in_seconds: config.ttl.as_secs(),
            noscript_wait_seconds: noscript_wait_ms(&config, bits).div_ceil(1000),
        }
    }

    /// Checks an answer, all but whether it was spent already (the store's, so every node
    /// agrees): returns the challenge, whose salt the caller spends until [`Self::expires_ms`].
    pub fn check(
        &self,
        sealer: &super::tokens::Sealer,
        room: u64,
        client: &ClientKey,
        answer: &Answer,
        now_ms: u64,
    ) -> Result<Challenge, Refusal> {
        // Turned off by a reload meanwhile: an answer to one issued before still counts.
        let config = self.config().unwrap_or_else(default_config);
        let c = sealer.open_challenge(&answer.token).map_err(|why| match why {
            super::tokens::Rejection::Signature => Refusal::Forged,
            _ => Refusal::Malformed,
        })?;
        if c.room != room {
            return Err(Refusal::WrongRoom);
        }
        if c.client != client_tag(client) {
            return Err(Refusal::WrongClient);
        }
        if c.issued_ms > now_ms + SKEW_MS || now_ms >= expiry(&c, &config) {
            return Err(Refusal::Expired);
        }
        if answer.nonces.is_empty() {
            // The page without JavaScript: its wait is its work.
            if now_ms < c.issued_ms + noscript_wait_ms(&config, c.bits) {
                return Err(Refusal::TooEarly);
            }
        } else if answer.nonces.len() != usize::from(c.puzzles)
            || !answer.nonces.iter().enumerate().all(|(i, &n)| solves(&prefix(&answer.token, i as u8), n, c.bits))
        {
            return Err(Refusal::WrongAnswer);
        }
        Ok(c)
    }

    /// Until when a challenge can be answered (and its salt must stay spent).
    pub fn expires_ms(&self, c: &Challenge) -> u64 {
        expiry(c, &self.config().unwrap_or_else(default_config))
    }

    pub fn solved(&self, c: &Challenge, now_ms: u64) {
        self.metrics.solved.inc();
        self.metrics.solve_seconds.observe(now_ms.saturating_sub(c.issued_ms) as f64 / 1000.0);
    }

    pub fn refused(&self, why: Refusal) {
        self.metrics.refused.inc();
        self.metrics.refusals[why as usize].inc();
    }
}

fn expiry(c: &Challenge, config: &ChallengeConfig) -> u64 {
    c.issued_ms + millis(config.ttl)
}

/// How long the page without JavaScript waits for a challenge of `bits`: `noscript_wait`,
/// doubled for each bit above the base, and always inside the challenge's lifetime.
fn noscript_wait_ms(config: &ChallengeConfig, bits: u8) -> u64 {
    let extra = u32::from(bits.saturating_sub(config.bits)).min(16);
    (millis(config.noscript_wait) << extra).min(millis(config.ttl) / 10 * 9)
}

/// `[room.challenge]` with every default (what `config::raw` fills in).
fn default_config() -> ChallengeConfig {
    ChallengeConfig {
        bits: 15,
        puzzles: 8,
        max_bits: 18,
        ttl: Duration::from_secs(120),
        noscript_wait: Duration::from_secs(20),
        busy_per_second: 50,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How many times `n` doubles past `threshold`: 0 up to it, 1 up to twice it, and so on.
fn doublings(n: u64, threshold: u64) -> u32 {
    if n <= threshold { 0 } else { (n - 1) / threshold.max(1) }.checked_ilog2().map_or(0, |l| l + 1)
}

/// Challenges issued per second in the room, over the last 10 s.
#[derive(Default)]
struct PerSecond {
    /// (second, count) per slot, the second packed in the high 32 bits.
    slots: [AtomicU64; 10],
}

impl PerSecond {
    /// Counts one now; returns the rate over the last 10 s, this one included.
    fn add(&self, now_ms: u64) -> u64 {
        let second = now_ms / 1000;
        let slot = &self.slots[(second % 10) as usize];
        let tag = (second & 0xffff_ffff) << 32;
        let old = slot.load(Relaxed);
        // Another second's count is replaced; should another thread replace it first, add.
        if old >> 32 == tag >> 32 || slot.compare_exchange(old, tag | 1, Relaxed, Relaxed).is_err() {
            slot.fetch_add(1, Relaxed);
        }
        let recent = |s: &AtomicU64| {
            let v = s.load(Relaxed);
            let age = (second & 0xffff_ffff).wrapping_sub(v >> 32);
            if age < 10 { v & 0xffff_ffff } else { 0 }
        };
        self.slots.iter().map(recent).sum::<u64>() / 10
    }
}

const SKETCH_ROWS: usize = 4;
const SKETCH_WIDTH: usize = 1 << 14;

/// Challenges per client key this minute, as a count-min sketch: 256 KiB whatever the
/// number of clients, no key kept (a count may be high by collisions, never low).
struct Sketch {
    minute: AtomicU64,
    counts: Box<[AtomicU32]>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self { minute: AtomicU64::new(0), counts: (0..SKETCH_ROWS * SKETCH_WIDTH).map(|_| AtomicU32::new(0)).collect() }
    }
}

impl Sketch {
    /// Counts one for `key`; returns its count this minute.
    fn add(&self, key: &ClientKey, now_ms: u64) -> u32 {
        let minute = now_ms / 60_000;
        let seen = self.minute.load(Relaxed);
        if seen != minute && self.minute.compare_exchange(seen, minute, Relaxed, Relaxed).is_ok() {
            for c in self.counts.iter() {
                c.store(0, Relaxed);
            }
        }
        // The key is a keyed hash already: its four 32-bit words index the four rows.
        (0..SKETCH_ROWS)
            .map(|row| {
                let word =
                    u32::from_le_bytes([key.0[4 * row], key.0[4 * row + 1], key.0[4 * row + 2], key.0[4 * row + 3]]);
                self.counts[row * SKETCH_WIDTH + word as usize % SKETCH_WIDTH].fetch_add(1, Relaxed) + 1
            })
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doublings_add_a_bit_each() {
        assert_eq!([1, 4, 5, 8, 9, 16, 17, 33].map(|n| doublings(n, 4)), [0, 0, 1, 1, 2, 2, 3, 4]);
        assert_eq!(doublings(0, 50), 0);
        assert_eq!(doublings(100, 50), 1);
        assert_eq!(doublings(101, 50), 2);
    }

    #[test]
    fn a_solution_is_checked_with_two_hashes_a_puzzle() {
        let (nonces, hashes) = solve("token", 8, 4);
        assert_eq!(nonces.len(), 4);
        assert!(hashes >= 4, "{hashes}");
        for (i, &n) in nonces.iter().enumerate() {
            assert!(solves(&prefix("token", i as u8), n, 8));
        }
        assert!(!solves(&prefix("other", 0), nonces[0], 8) || !solves(&prefix("other", 1), nonces[1], 8));
        assert_eq!(leading_zero_bits(&[0, 0, 0b0001_0000, 1]), 19);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
    }

    #[test]
    fn the_sketch_counts_a_key_and_forgets_it_the_next_minute() {
        let s = Sketch::default();
        let (a, b) = (ClientKey([1; 16]), ClientKey([2; 16]));
        for n in 1..=10 {
            assert_eq!(s.add(&a, 60_000), n);
        }
        assert_eq!(s.add(&b, 60_000), 1, "another key is not charged");
        assert_eq!(s.add(&a, 120_000), 1, "a new minute");
    }

    #[test]
    fn a_busy_room_asks_more_of_everyone_within_max_bits() {
        let metrics = crate::metrics::Metrics::new(1);
        let challenger = Challenger::new(metrics.challenge("r"));
        challenger.reconfigure(Some(&ChallengeConfig { busy_per_second: 2, ..default_config() }));
        let sealer =
            super::super::tokens::Sealer::new(&crate::secrets::Secrets::new(vec![vec![9; 32]]).expect("secret"));
        let bits: Vec<u8> = (0u8..200)
            .map(|i| challenger.issue(&sealer, 1, "r", (&ClientKey([i; 16]), None, "/"), 5_000_000 + u64::from(i)).bits)
            .collect();
        // Distinct clients, so no suspicion. The rate is over 10 s: up to 2 a second (29
        // issued) the room is not busy (15 bits); then a bit per doubling, never past 18.
        assert_eq!((bits[28], bits[29]), (15, 16), "{bits:?}");
        assert_eq!((bits[48], bits[49]), (16, 17), "{bits:?}");
        assert_eq!(bits[199], 18, "{bits:?}");
        let issued = challenger.issue(&sealer, 1, "r", (&ClientKey([1; 16]), None, "/a b"), 5_000_500);
        assert!(issued.noscript_url.ends_with("&to=/a%20b"), "{}", issued.noscript_url);
    }

    #[test]
    fn the_load_is_the_last_ten_seconds_rate() {
        let l = PerSecond::default();
        for i in 0..1000 {
            l.add(1_000_000 + i * 10); // 100 a second for 10 s
        }
        assert_eq!(l.add(1_009_999), 100);
        assert_eq!(l.add(1_030_000), 0, "twenty seconds later");
    }
}
