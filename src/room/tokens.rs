//! The two cookies (DESIGN §4): `usher_ticket_<room>` (a place in line) and `usher_pass_<room>`
//! (an admitted session). Each is `base64url(payload ‖ tag)`, the tag the first 128 bits of
//! HMAC-SHA256 over the payload, compared in constant time against every configured secret.
//!
//! Payloads are fixed-size big-endian records starting with a version and a kind byte, so a
//! ticket can never be read as a pass and a future format can coexist with this one.
//!
//! Version 2 carries the store's generation (DESIGN §8), a ticket's join time and when it was
//! last renewed. Version 1 cookies (before generations) are still read, as of generation 0
//! ("not known"), so an upgrade is a restart like any other: nobody loses a place.

use crate::secrets::Secrets;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const KIND_TICKET: u8 = b'T';
const KIND_PASS: u8 = b'P';
const KIND_CHALLENGE: u8 = b'C';
const TAG_LEN: usize = 16;
/// version, kind, room, generation, ticket number, joined-at (ms), renewed-at (s).
const TICKET_LEN: usize = 1 + 1 + 8 + 8 + 8 + 8 + 8;
/// The same, then the number ahead last shown and the grants counted then (see [`Shown`]).
const TICKET_SHOWN_LEN: usize = TICKET_LEN + 8 + 8;
/// version, kind, room, generation, session id, issued-at, expires-at.
const PASS_LEN: usize = 1 + 1 + 8 + 8 + 16 + 8 + 8;
/// version, kind, room, client tag, issued-at (ms), bits, puzzles, salt (see `challenge.rs`).
const CHALLENGE_LEN: usize = 1 + 1 + 8 + 8 + 8 + 1 + 1 + 16;
/// Version 1: version, kind, room, ticket number, issued-at.
const TICKET_1_LEN: usize = 1 + 1 + 8 + 8 + 8;
/// Version 1: version, kind, room, session id, issued-at, expires-at.
const PASS_1_LEN: usize = 1 + 1 + 8 + 16 + 8 + 8;

/// A place in a room's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub room: u64,
    /// The store generation the number belongs to (0: a version 1 cookie, not known).
    pub generation: u64,
    pub number: u64,
    /// When its holder joined the line: after a restart, the place is restored by it.
    pub joined_ms: u64,
    /// When the cookie was last issued or renewed (polls renew it now and then): a place is
    /// only restored if it would still be held, i.e. within `hold` of this.
    pub renewed_secs: u64,
    /// What the waiter was last shown, where the store counts grants (Redis).
    pub shown: Option<Shown>,
}

/// The number ahead a waiter was last shown, and the line's grants counted when it was. Behind
/// several nodes, each answers from its own last look at the line; the cookie carries what the
/// waiter saw, so that no node shows it a larger number than that, less the grants since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    pub ahead: u64,
    pub granted: u64,
}

impl Shown {
    /// The most a waiter may be shown now, when the line has counted `granted` grants: what
    /// it saw, less those let in since (none, if this node's count is behind).
    pub fn bound(&self, granted: u64) -> u64 {
        self.ahead.saturating_sub(granted.saturating_sub(self.granted))
    }
}

/// An admitted session in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub room: u64,
    /// The store generation that admitted it (0: a version 1 cookie, not known).
    pub generation: u64,
    pub session: u128,
    pub issued_secs: u64,
    pub expires_secs: u64,
}

/// Why a cookie was not accepted; the `reason` label of `usher_token_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not base64url, the wrong length, or an unknown version or kind.
    Malformed,
    /// The tag matches none of the secrets: tampered or signed elsewhere.
    Signature,
    /// Past its expiry.
    Expired,
    /// Valid, but for another room.
    WrongRoom,
    /// Valid, but its session has ended (idle, drained, logged out) or its ticket is gone.
    Ended,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [Self::Malformed, Self::Signature, Self::Expired, Self::WrongRoom, Self::Ended];

    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::WrongRoom => "wrong_room",
            Self::Ended => "ended",
        }
    }
}

/// Seals and opens cookies with the server secrets.
pub struct Sealer {
    keys: Vec<hmac::Key>,
}

impl Sealer {
    pub fn new(secrets: &Secrets) -> Self {
        Self { keys: secrets.all().map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)).collect() }
    }

    fn seal<const N: usize>(&self, payload: [u8; N]) -> String {
        let tag = hmac::sign(&self.keys[0], &payload);
        let mut sealed = Vec::with_capacity(N + TAG_LEN);
        sealed.extend_from_slice(&payload);
        sealed.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// Whether a cookie has the length of an `N`-byte payload and its tag.
    fn fits<const N: usize>(cookie: &str) -> bool {
        cookie.len() == (4 * (N + TAG_LEN)).div_ceil(3)
    }

    /// Decodes and checks the tag; returns the payload of exactly `N` bytes.
    fn open<const N: usize>(&self, cookie: &str, version: u8, kind: u8) -> Result<[u8; N], Rejection> {
        // Fixed-size buffer: a cookie of the wrong length is rejected before any work.
        let mut raw = [0u8; 80];
        if !Self::fits::<N>(cookie) {
            return Err(Rejection::Malformed);
        }
        let len = URL_SAFE_NO_PAD.decode_slice(cookie.as_bytes(), &mut raw).map_err(|_| Rejection::Malformed)?;
        if len != N + TAG_LEN || raw[0] != version || raw[1] != kind {
            return Err(Rejection::Malformed);
        }
        let (payload, tag) = raw[..len].split_at(N);
        let verified = self.keys.iter().any(|key| {
            let expected = hmac::sign(key, payload);
            constant_time_eq(&expected.as_ref()[..TAG_LEN], tag)
        });
        if !verified {
            return Err(Rejection::Signature);
        }
        let mut out = [0u8; N];
        out.copy_from_slice(payload);
        Ok(out)
    }

    pub fn seal_ticket(&self, t: &Ticket) -> String {
        let mut p = [0u8; TICKET_SHOWN_LEN];
        p[0] = VERSION;
        p[1] = KIND_TICKET;
        p[2..10].copy_from_slice(&t.room.to_be_bytes());
        p[10..18].copy_from_slice(&t.generation.to_be_bytes());
        p[18..26].copy_from_slice(&t.number.to_be_bytes());
        p[26..34].copy_from_slice(&t.joined_ms.to_be_bytes());
        p[34..42].copy_from_slice(&t.renewed_secs.to_be_bytes());
        let Some(shown) = t.shown else {
            let mut short = [0u8; TICKET_LEN];
            short.copy_from_slice(&p[..TICKET_LEN]);
            return self.seal(short);
        };
        p[42..50].copy_from_slice(&shown.ahead.to_be_bytes());
        p[50..58].copy_from_slice(&shown.granted.to_be_bytes());
        self.seal(p)
    }

    pub fn open_ticket(&self, cookie: &str, room: u64) -> Result<Ticket, Rejection> {
        let ticket = self.open_ticket_any_room(cookie)?;
        if ticket.room != room {
            return Err(Rejection::WrongRoom);
        }
        Ok(ticket)
    }

    /// Opens a ticket of whichever room it names (for the status endpoint, which serves all rooms).
    pub fn open_ticket_any_room(&self, cookie: &str) -> Result<Ticket, Rejection> {
        if Self::fits::<TICKET_1_LEN>(cookie) {
            let p: [u8; TICKET_1_LEN] = self.open(cookie, VERSION_1, KIND_TICKET)?;
            let issued_secs = be_u64(&p[18..26]);
            return Ok(Ticket {
                room: be_u64(&p[2..10]),
                generation: 0,
                number: be_u64(&p[10..18]),
                joined_ms: issued_secs.saturating_mul(1000),
                renewed_secs: issued_secs,
                shown: None,
            });
        }
        let (p, shown) = if Self::fits::<TICKET_SHOWN_LEN>(cookie) {
            let p: [u8; TICKET_SHOWN_LEN] = self.open(cookie, VERSION, KIND_TICKET)?;
            (p, Some(Shown { ahead: be_u64(&p[42..50]), granted: be_u64(&p[50..58]) }))
        } else {
            let short: [u8; TICKET_LEN] = self.open(cookie, VERSION, KIND_TICKET)?;
            let mut p = [0u8; TICKET_SHOWN_LEN];
            p[..TICKET_LEN].copy_from_slice(&short);
            (p, None)
        };
        Ok(Ticket {
            room: be_u64(&p[2..10]),
            generation: be_u64(&p[10..18]),
            number: be_u64(&p[18..26]),
            joined_ms: be_u64(&p[26..34]),
            renewed_secs: be_u64(&p[34..42]),
            shown,
        })
    }

    /// A proof-of-work challenge's token: signed, so the server keeps no state until it is
    /// answered (see `challenge.rs`).
    pub fn seal_challenge(&self, c: &super::challenge::Challenge) -> String {
        let mut p = [0u8; CHALLENGE_LEN];
        p[0] = VERSION;
        p[1] = KIND_CHALLENGE;
        p[2..10].copy_from_slice(&c.room.to_be_bytes());
        p[10..18].copy_from_slice(&c.client);
        p[18..26].copy_from_slice(&c.issued_ms.to_be_bytes());
        p[26] = c.bits;
        p[27] = c.puzzles;
        p[28..44].copy_from_slice(&c.salt);
        self.seal(p)
    }

    pub fn open_challenge(&self, token: &str) -> Result<super::challenge::Challenge, Rejection> {
        let p: [u8; CHALLENGE_LEN] = self.open(token, VERSION, KIND_CHALLENGE)?;
        let mut client = [0u8; 8];
        client.copy_from_slice(&p[10..18]);
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&p[28..44]);
        Ok(super::challenge::Challenge {
            room: be_u64(&p[2..10]),
            client,
            issued_ms: be_u64(&p[18..26]),
            bits: p[26],
            puzzles: p[27],
            salt,
        })
    }

    pub fn seal_pass(&self, pass: &Pass) -> String {
        let mut p = [0u8; PASS_LEN];
        p[0] = VERSION;
        p[1] = KIND_PASS;
        p[2..10].copy_from_slice(&pass.room.to_be_bytes());
        p[10..18].copy_from_slice(&pass.generation.to_be_bytes());
        p[18..34].copy_from_slice(&pass.session.to_be_bytes());
        p[34..42].copy_from_slice(&pass.issued_secs.to_be_bytes());
        p[42..50].copy_from_slice(&pass.expires_secs.to_be_bytes());
        self.seal(p)
    }

    pub fn open_pass(&self, cookie: &str, room: u64, now_secs: u64) -> Result<Pass, Rejection> {
        let pass = if Self::fits::<PASS_1_LEN>(cookie) {
            let p: [u8; PASS_1_LEN] = self.open(cookie, VERSION_1, KIND_PASS)?;
            Pass {
                room: be_u64(&p[2..10]),
                generation: 0,
                session: be_u128(&p[10..26]),
                issued_secs: be_u64(&p[26..34]),
                expires_secs: be_u64(&p[34..42]),
            }
        } else {
            let p: [u8; PASS_LEN] = self.open(cookie, VERSION, KIND_PASS)?;
            Pass {
                room: be_u64(&p[2..10]),
                generation: be_u64(&p[10..18]),
                session: be_u128(&p[18..34]),
                issued_secs: be_u64(&p[34..42]),
                expires_secs: be_u64(&p[42..50]),
            }
        };
        if pass.room != room {
            return Err(Rejection::WrongRoom);
        }
        if pass.expires_secs <= now_secs {
            return Err(Rejection::Expired);
        }
        Ok(pass)
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    u64::from_be_bytes(b)
}

fn be_u128(bytes: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(bytes);
    u128::from_be_bytes(b)
}

/// Compares without an early exit, so timing does not reveal how much of a forged tag matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A room's id inside cookies: the first 64 bits of SHA-256 of its name, the same on every node.
pub fn room_id(name: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    be_u64(&digest.as_ref()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_shown_bounds_the_next_number_by_the_grants_since() {
        let was = Shown { ahead: 100, granted: 1_000 };
        assert_eq!(was.bound(1_000), 100);
        assert_eq!(was.bound(1_030), 70, "thirty let in since");
        assert_eq!(was.bound(990), 100, "a node whose count is behind: never more than was shown");
        assert_eq!(was.bound(5_000), 0);
    }

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&Secrets::new(vec![vec![byte; 32]]).expect("secret"))
    }

    #[test]
    fn tickets_and_passes_round_trip() {
        let s = sealer(1);
        let t = Ticket {
            room: 9,
            generation: 77,
            number: 12345,
            joined_ms: 1_700_000_000_123,
            renewed_secs: 1_700_000_060,
            shown: None,
        };
        assert_eq!(s.open_ticket(&s.seal_ticket(&t), 9), Ok(t));
        let shown = Ticket { shown: Some(Shown { ahead: 4_000, granted: 123_456 }), ..t };
        assert_eq!(s.open_ticket(&s.seal_ticket(&shown), 9), Ok(shown), "with what it was shown");
        let p = Pass { room: 9, generation: 77, session: u128::MAX - 5, issued_secs: 10, expires_secs: 100 };
        assert_eq!(s.open_pass(&s.seal_pass(&p), 9, 50), Ok(p));
    }

    #[test]
    fn every_kind_of_bad_cookie_is_rejected_with_its_reason() {
        let s = sealer(1);
        let p = Pass { room: 9, generation: 3, session: 42, issued_secs: 10, expires_secs: 100 };
        let good = s.seal_pass(&p);
        assert_eq!(s.open_pass(&good, 8, 50), Err(Rejection::WrongRoom));
        assert_eq!(s.open_pass(&good, 9, 100), Err(Rejection::Expired));
        assert_eq!(sealer(2).open_pass(&good, 9, 50), Err(Rejection::Signature));
        assert_eq!(s.open_pass(&good[..good.len() - 2], 9, 50), Err(Rejection::Malformed));
        assert_eq!(s.open_pass("", 9, 50), Err(Rejection::Malformed));
        assert_eq!(s.open_pass(&"!".repeat(good.len()), 9, 50), Err(Rejection::Malformed));
        // A ticket is not a pass, even correctly signed.
        let ticket =
            s.seal_ticket(&Ticket { room: 9, generation: 3, number: 1, joined_ms: 1000, renewed_secs: 1, shown: None });
        assert_eq!(s.open_pass(&ticket, 9, 50), Err(Rejection::Malformed));
        // Flip one bit in every position: never accepted.
        let mut bytes = URL_SAFE_NO_PAD.decode(&good).expect("b64");
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            assert!(s.open_pass(&tampered, 9, 50).is_err(), "bit flip at {i} accepted");
            bytes[i] ^= 1;
        }
    }

    #[test]
    fn a_rotated_secret_still_verifies_but_no_longer_signs() {
        let old = sealer(1);
        let both = Sealer::new(&Secrets::new(vec![vec![2; 32], vec![1; 32]]).expect("secrets"));
        let t = Ticket { room: 1, generation: 5, number: 7, joined_ms: 3000, renewed_secs: 3, shown: None };
        assert_eq!(both.open_ticket(&old.seal_ticket(&t), 1), Ok(t));
        assert_eq!(old.open_ticket(&both.seal_ticket(&t), 1), Err(Rejection::Signature));
    }

    /// A cookie sealed by the format before generations (version 1), byte for byte.
    fn seal_v1(s: &Sealer, kind: u8, fields: &[&[u8]]) -> String {
        let mut p = vec![VERSION_1, kind];
        for f in fields {
            p.extend_from_slice(f);
        }
        let tag = hmac::sign(&s.keys[0], &p);
        p.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(p)
    }

    #[test]
    fn version_1_cookies_still_open_as_of_an_unknown_generation() {
        let s = sealer(1);
        let ticket =
            seal_v1(&s, KIND_TICKET, &[&9u64.to_be_bytes(), &42u64.to_be_bytes(), &1_700_000_000u64.to_be_bytes()]);
        let t = s.open_ticket(&ticket, 9).expect("a version 1 ticket opens");
        assert_eq!((t.generation, t.number, t.joined_ms, t.renewed_secs), (0, 42, 1_700_000_000_000, 1_700_000_000));
        let pass = seal_v1(
            &s,
            KIND_PASS,
            &[&9u64.to_be_bytes(), &7u128.to_be_bytes(), &10u64.to_be_bytes(), &100u64.to_be_bytes()],
        );
        let p = s.open_pass(&pass, 9, 50).expect("a version 1 pass opens");
        assert_eq!((p.generation, p.session, p.expires_secs), (0, 7, 100));
        // Still one kind each: a version 1 ticket is no pass.
        assert_eq!(s.open_pass(&ticket, 9, 50), Err(Rejection::Malformed));
    }
}
