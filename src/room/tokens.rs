//! The two cookies (DESIGN §4): `usher_ticket_<room>` (a place in line) and `usher_pass_<room>`
//! (an admitted session). Each is `base64url(payload ‖ tag)`, the tag the first 128 bits of
//! HMAC-SHA256 over the payload, compared in constant time against every configured secret.
//!
//! Payloads are fixed-size big-endian records starting with a version and a kind byte, so a
//! ticket can never be read as a pass and a future format can coexist with this one.

use crate::secrets::Secrets;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

const VERSION: u8 = 1;
const KIND_TICKET: u8 = b'T';
const KIND_PASS: u8 = b'P';
const TAG_LEN: usize = 16;
/// version, kind, room, ticket number, issued-at.
const TICKET_LEN: usize = 1 + 1 + 8 + 8 + 8;
/// version, kind, room, session id, issued-at, expires-at.
const PASS_LEN: usize = 1 + 1 + 8 + 16 + 8 + 8;

/// A place in a room's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub room: u64,
    pub number: u64,
    pub issued_secs: u64,
}

/// An admitted session in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub room: u64,
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

    /// Decodes and checks the tag; returns the payload of exactly `N` bytes.
    fn open<const N: usize>(&self, cookie: &str, kind: u8) -> Result<[u8; N], Rejection> {
        // Fixed-size buffer: a cookie of the wrong length is rejected before any work.
        let mut raw = [0u8; 64];
        if cookie.len() != (4 * (N + TAG_LEN)).div_ceil(3) {
            return Err(Rejection::Malformed);
        }
        let len = URL_SAFE_NO_PAD.decode_slice(cookie.as_bytes(), &mut raw).map_err(|_| Rejection::Malformed)?;
        if len != N + TAG_LEN || raw[0] != VERSION || raw[1] != kind {
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
        let mut p = [0u8; TICKET_LEN];
        p[0] = VERSION;
        p[1] = KIND_TICKET;
        p[2..10].copy_from_slice(&t.room.to_be_bytes());
        p[10..18].copy_from_slice(&t.number.to_be_bytes());
        p[18..26].copy_from_slice(&t.issued_secs.to_be_bytes());
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
        let p: [u8; TICKET_LEN] = self.open(cookie, KIND_TICKET)?;
        Ok(Ticket { room: be_u64(&p[2..10]), number: be_u64(&p[10..18]), issued_secs: be_u64(&p[18..26]) })
    }

    pub fn seal_pass(&self, pass: &Pass) -> String {
        let mut p = [0u8; PASS_LEN];
        p[0] = VERSION;
        p[1] = KIND_PASS;
        p[2..10].copy_from_slice(&pass.room.to_be_bytes());
        p[10..26].copy_from_slice(&pass.session.to_be_bytes());
        p[26..34].copy_from_slice(&pass.issued_secs.to_be_bytes());
        p[34..42].copy_from_slice(&pass.expires_secs.to_be_bytes());
        self.seal(p)
    }

    pub fn open_pass(&self, cookie: &str, room: u64, now_secs: u64) -> Result<Pass, Rejection> {
        let p: [u8; PASS_LEN] = self.open(cookie, KIND_PASS)?;
        let mut session = [0u8; 16];
        session.copy_from_slice(&p[10..26]);
        let pass = Pass {
            room: be_u64(&p[2..10]),
            session: u128::from_be_bytes(session),
            issued_secs: be_u64(&p[26..34]),
            expires_secs: be_u64(&p[34..42]),
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

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&Secrets::new(vec![vec![byte; 32]]).expect("secret"))
    }

    #[test]
    fn tickets_and_passes_round_trip() {
        let s = sealer(1);
        let t = Ticket { room: 9, number: 12345, issued_secs: 1_700_000_000 };
        assert_eq!(s.open_ticket(&s.seal_ticket(&t), 9), Ok(t));
        let p = Pass { room: 9, session: u128::MAX - 5, issued_secs: 10, expires_secs: 100 };
        assert_eq!(s.open_pass(&s.seal_pass(&p), 9, 50), Ok(p));
    }

    #[test]
    fn every_kind_of_bad_cookie_is_rejected_with_its_reason() {
        let s = sealer(1);
        let p = Pass { room: 9, session: 42, issued_secs: 10, expires_secs: 100 };
        let good = s.seal_pass(&p);
        assert_eq!(s.open_pass(&good, 8, 50), Err(Rejection::WrongRoom));
        assert_eq!(s.open_pass(&good, 9, 100), Err(Rejection::Expired));
        assert_eq!(sealer(2).open_pass(&good, 9, 50), Err(Rejection::Signature));
        assert_eq!(s.open_pass(&good[..good.len() - 2], 9, 50), Err(Rejection::Malformed));
        assert_eq!(s.open_pass("", 9, 50), Err(Rejection::Malformed));
        assert_eq!(s.open_pass(&"!".repeat(good.len()), 9, 50), Err(Rejection::Malformed));
        // A ticket is not a pass, even correctly signed.
        let ticket = s.seal_ticket(&Ticket { room: 9, number: 1, issued_secs: 1 });
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
        let t = Ticket { room: 1, number: 7, issued_secs: 3 };
        assert_eq!(both.open_ticket(&old.seal_ticket(&t), 1), Ok(t));
        assert_eq!(old.open_ticket(&both.seal_ticket(&t), 1), Err(Rejection::Signature));
    }
}
