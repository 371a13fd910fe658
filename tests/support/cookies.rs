//! usher's cookies in the byte layout of DESIGN §4 (src/room/tokens.rs), written out here
//! independently: their names, decoding (signature not checked) and forging with a known
//! secret (see [`secret`](super::room::secret)).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The kinds of usher's cookies; each room's are named `<kind>_<room>`.
pub const PASS: &str = "usher_pass";
pub const TICKET: &str = "usher_ticket";

/// The name of `room`'s cookie of `kind` (`usher_pass_citizens`).
pub fn named(kind: &str, room: &str) -> String {
    format!("{kind}_{room}")
}

/// Whether a cookie name is of `kind`, for any room (or is exactly `kind`).
pub fn is_kind(name: &str, kind: &str) -> bool {
    name.strip_prefix(kind).is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
}

/// A decoded `usher_ticket` (signature not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketBytes {
    pub room: u64,
    pub generation: u64,
    pub number: u64,
    pub joined_ms: u64,
    pub renewed_secs: u64,
}

/// A decoded `usher_pass` (signature not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassBytes {
    pub room: u64,
    pub generation: u64,
    pub session: u128,
    pub issued_secs: u64,
    pub expires_secs: u64,
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

/// base64url without padding, as usher's cookies are.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap_or_else(|e| panic!("cookie {text:?} is not base64url: {e}"))
}

/// version 2, 'T', room, generation, number, joined-at (ms), renewed-at (s), and in Redis mode
/// the number ahead last shown and the grants then (16 more bytes); then a 16-byte tag.
pub fn decode_ticket(cookie: &str) -> TicketBytes {
    let raw = unb64(cookie);
    assert!(raw.len() == 42 + 16 || raw.len() == 58 + 16, "ticket length {}", raw.len());
    assert_eq!((raw[0], raw[1]), (2, b'T'), "ticket version and kind");
    TicketBytes {
        room: be64(&raw[2..10]),
        generation: be64(&raw[10..18]),
        number: be64(&raw[18..26]),
        joined_ms: be64(&raw[26..34]),
        renewed_secs: be64(&raw[34..42]),
    }
}

/// version 2, 'P', room, generation, session id, issued-at, expires-at; then a 16-byte tag.
pub fn decode_pass(cookie: &str) -> PassBytes {
    let raw = unb64(cookie);
    assert_eq!(raw.len(), 50 + 16, "pass length");
    assert_eq!((raw[0], raw[1]), (2, b'P'), "pass version and kind");
    PassBytes {
        room: be64(&raw[2..10]),
        generation: be64(&raw[10..18]),
        session: u128::from_be_bytes(raw[18..34].try_into().expect("16 bytes")),
        issued_secs: be64(&raw[34..42]),
        expires_secs: be64(&raw[42..50]),
    }
}

/// A room's id inside cookies: the first 64 bits of SHA-256 of its name.
pub fn room_id(name: &str) -> u64 {
    be64(&ring::digest::digest(&ring::digest::SHA256, name.as_bytes()).as_ref()[..8])
}

/// `base64url(payload ‖ first 16 bytes of HMAC-SHA256(secret, payload))`.
pub fn seal(secret: &[u8], payload: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, payload);
    let mut sealed = payload.to_vec();
    sealed.extend_from_slice(&tag.as_ref()[..16]);
    b64(&sealed)
}

pub fn ticket_payload(t: &TicketBytes) -> Vec<u8> {
    let mut p = vec![2, b'T'];
    for field in [t.room, t.generation, t.number, t.joined_ms, t.renewed_secs] {
        p.extend_from_slice(&field.to_be_bytes());
    }
    p
}

/// A ticket in the format before generations (version 1: room, number, issued-at), as
/// browsers still hold them right after an upgrade.
pub fn ticket_payload_v1(room: u64, number: u64, issued_secs: u64) -> Vec<u8> {
    let mut p = vec![1, b'T'];
    for field in [room, number, issued_secs] {
        p.extend_from_slice(&field.to_be_bytes());
    }
    p
}

pub fn pass_payload(p: &PassBytes) -> Vec<u8> {
    let mut out = vec![2, b'P'];
    out.extend_from_slice(&p.room.to_be_bytes());
    out.extend_from_slice(&p.generation.to_be_bytes());
    out.extend_from_slice(&p.session.to_be_bytes());
    out.extend_from_slice(&p.issued_secs.to_be_bytes());
    out.extend_from_slice(&p.expires_secs.to_be_bytes());
    out
}

pub fn forge_ticket(secret: &[u8], t: &TicketBytes) -> String {
    seal(secret, &ticket_payload(t))
}

pub fn forge_pass(secret: &[u8], p: &PassBytes) -> String {
    seal(secret, &pass_payload(p))
}

/// `n` bytes from the system's secure random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("random bytes");
    bytes
}

/// A version 1 ticket (before generations), signed with `secret`.
pub fn forge_ticket_v1(secret: &[u8], room: u64, number: u64, issued_secs: u64) -> String {
    seal(secret, &ticket_payload_v1(room, number, issued_secs))
}
