//! Cookie attacks (DESIGN §4): a pass or ticket that is tampered with, truncated, random,
//! signed with another secret, replayed into another room, expired, or whose session has
//! ended is never honoured. The visitor is treated as a newcomer (queued here, since both
//! rooms are full), never answered 500, and the rejection is counted in
//! `usher_token_rejected_total{cookie,reason}`.
//!
//! The usher under test signs with a known secret, so the tests can forge cookies in the
//! documented layout (HMAC-SHA256 truncated to 128 bits, computed here with `ring`).

mod support;

use http::StatusCode;
use std::net::SocketAddr;
use support::*;
use usher::Running;

/// Two rooms on their own path prefixes, each with room for one session, both taken.
struct Setup {
    _backend: Upstream,
    usher: Running,
    addr: SocketAddr,
    admin: SocketAddr,
    citizen: Visitor,
    business: Visitor,
    /// The next attacker's address.
    next: u32,
}

impl Setup {
    async fn start() -> Self {
        let backend = Upstream::start_mailbox().await;
        let mut citizens = room("citizens");
        citizens.paths = vec!["/citizens/".into()];
        citizens.logout_path = Some("/citizens/logout".into());
        citizens.max_active = 1;
        let mut business = room("business");
        business.paths = vec!["/business/".into()];
        business.logout_path = Some("/business/logout".into());
        business.max_active = 1;
        let usher = usher_with_rooms(&backend, vec![citizens, business]);
        let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);
        let mut citizen = Visitor::new(ip(20, 0), addr);
        assert!(citizen.api("/citizens/home").await.forwarded());
        let mut business = Visitor::new(ip(20, 1), addr);
        assert!(business.api("/business/home").await.forwarded());
        Self { _backend: backend, usher, addr, admin, citizen, business, next: 0 }
    }

    fn citizen_pass(&self) -> String {
        self.citizen.cookie(PASS).expect("the citizen holds a pass").to_string()
    }

    /// A new visitor from its own address presents `value` as the `kind` cookie of the room
    /// of `path` (citizens for usher's own paths) on `GET path`.
    async fn present(&mut self, kind: &str, value: &str, path: &str) -> (Visitor, Reply) {
        let mut v = Visitor::new(ip(21, self.next), self.addr);
        self.next += 1;
        let room = if path.starts_with("/business/") { "business" } else { "citizens" };
        let cookie = named(kind, room);
        v.jar.insert(cookie.clone(), value.to_string());
        let reply = v.api(path).await;
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{cookie}={value:?} made usher fail");
        (v, reply)
    }

    /// Presents a bad pass and checks that it was refused and the visitor queued afresh.
    async fn refused_pass(&mut self, what: &str, value: &str, path: &str) {
        let (v, reply) = self.present(PASS, value, path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: a bad pass must not pass: {}", reply.text());
        assert!(!reply.forwarded());
        assert_eq!(reply.json()["status"], "waiting", "{what}: queued as a newcomer");
        assert!(
            reply.set_cookies().iter().any(|c| c.starts_with("usher_pass_") && is_deletion(c)),
            "{what}: the bad pass is cleared: {:?}",
            reply.set_cookies()
        );
        assert!(v.cookie(TICKET).is_some(), "{what}: a fresh ticket");
        assert!(v.cookie(PASS).is_none());
    }

    /// Presents a bad ticket on a page and checks that the visitor got a fresh one.
    async fn refused_ticket(&mut self, what: &str, value: &str, path: &str) {
        let (v, reply) = self.present(TICKET, value, path).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", reply.text());
        assert_eq!(reply.json()["status"], "waiting", "{what}: queued as a newcomer");
        let fresh = v.cookie(TICKET).expect("a fresh ticket");
        assert_ne!(fresh, value, "{what}: the bad ticket was replaced");
        decode_ticket(fresh);
    }

    async fn metrics(&self) -> String {
        metrics_text(self.admin).await
    }

    async fn finish(self) {
        let text = self.metrics().await;
        assert_eq!(metric(&text, "usher_requests_total", &[("code", "500")]), 0.0, "no request failed with 500");
        drop((self.citizen, self.business));
        stop_usher(self.usher).await;
    }
}

/// A pass with one bit flipped at byte `at` of its decoded form.
fn flip(cookie: &str, at: usize) -> String {
    let mut raw = unb64(cookie);
    raw[at] ^= 0x01;
    b64(&raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_pass_is_refused_and_the_visitor_queued_as_a_newcomer() {
    let mut s = Setup::start().await;
    let pass = s.citizen_pass();
    // Room, session id, issued-at, expires-at, tag: each flip breaks the signature.
    for (what, at) in [("room", 5), ("session", 12), ("issued", 30), ("expires", 40), ("tag", 50)] {
        s.refused_pass(what, &flip(&pass, at), "/citizens/inbox").await;
    }
    s.refused_pass("version", &flip(&pass, 0), "/citizens/inbox").await;
    let text = s.metrics().await;
    assert_eq!(rejected(&text, PASS, "signature"), 5.0);
    assert_eq!(rejected(&text, PASS, "malformed"), 1.0);
    // The untouched pass still works.
    assert!(s.citizen.api("/citizens/home").await.forwarded());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_is_only_honoured_in_the_room_that_issued_it() {
    let mut s = Setup::start().await;
    let pass = s.citizen_pass();
    assert_eq!(decode_pass(&pass).room, room_id("citizens"));
    s.refused_pass("citizens pass in business", &pass, "/business/inbox").await;
    let business_pass = s.business.cookie(PASS).expect("pass").to_string();
    s.refused_pass("business pass in citizens", &business_pass, "/citizens/inbox").await;
    assert_eq!(rejected(&s.metrics().await, PASS, "wrong_room"), 2.0);
    // Each pass still works in its own room.
    assert!(s.citizen.api("/citizens/inbox").await.forwarded());
    assert!(s.business.api("/business/inbox").await.forwarded());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pass_is_refused_even_when_correctly_signed() {
    let mut s = Setup::start().await;
    let real = decode_pass(&s.citizen_pass());
    let now = unix_secs();
    // The forging is right: the same session with a future expiry is honoured.
    let good = forge_pass(&secret(), &PassBytes { expires_secs: now + 3600, ..real });
    let (_, reply) = s.present(PASS, &good, "/citizens/inbox").await;
    assert!(reply.forwarded(), "a correctly forged live pass passes: {} {}", reply.status, reply.text());

    let expired = forge_pass(&secret(), &PassBytes { issued_secs: now - 7200, expires_secs: now - 60, ..real });
    s.refused_pass("expired", &expired, "/citizens/inbox").await;
    let now_expired = forge_pass(&secret(), &PassBytes { expires_secs: now - 1, ..real });
    s.refused_pass("expired a second ago", &now_expired, "/citizens/inbox").await;
    assert_eq!(rejected(&s.metrics().await, PASS, "expired"), 2.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_signed_pass_for_a_session_that_never_existed_is_refused() {
    let mut s = Setup::start().await;
    let real = decode_pass(&s.citizen_pass());
    let session = u128::from_be_bytes(random_bytes(16).try_into().expect("16 bytes"));
    let invented = forge_pass(&secret(), &PassBytes { session, ..real });
    s.refused_pass("invented session", &invented, "/citizens/inbox").await;
    assert_eq!(rejected(&s.metrics().await, PASS, "ended"), 1.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_random_and_foreign_passes_are_refused_as_malformed_or_unsigned() {
    let mut s = Setup::start().await;
    let pass = s.citizen_pass();
    let real = decode_pass(&pass);
    let len = unb64(&pass).len();

    let mut malformed = vec![
        ("truncated", pass[..pass.len() - 4].to_string()),
        ("one character short", pass[..pass.len() - 1].to_string()),
        ("empty", String::new()),
        ("not base64url", "!".repeat(pass.len())),
        ("very long", "A".repeat(4000)),
    ];
    let mut junk = random_bytes(len);
    junk[0] = 0xff;
    malformed.push(("random bytes", b64(&junk)));
    let now = unix_secs();
    let ticket = TicketBytes { room: real.room, generation: 1, number: 0, joined_ms: now * 1000, renewed_secs: now };
    let ticket = forge_ticket(&secret(), &ticket);
    malformed.push(("a ticket as a pass", ticket));
    for (what, value) in &malformed {
        s.refused_pass(what, value, "/citizens/inbox").await;
    }

    let mut random_signed = random_bytes(len);
    random_signed[..2].copy_from_slice(&[2, b'P']);
    let other_secret = forge_pass(&[0x11; 32], &real);
    for (what, value) in [("random bytes in pass form", b64(&random_signed)), ("another secret", other_secret)] {
        s.refused_pass(what, &value, "/citizens/inbox").await;
    }

    let text = s.metrics().await;
    assert_eq!(rejected(&text, PASS, "malformed"), malformed.len() as f64);
    assert_eq!(rejected(&text, PASS, "signature"), 2.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_forged_tickets_are_refused_and_the_visitor_gets_a_fresh_one() {
    let mut s = Setup::start().await;
    let now = unix_secs();
    let citizens = room_id("citizens");
    let mut junk = random_bytes(42);
    junk[0] = 0xff;
    let garbage = [("garbage", "xyz".to_string()), ("random", b64(&junk))];
    for (what, value) in &garbage {
        s.refused_ticket(what, value, "/citizens/inbox").await;
    }
    // Numbers belong to this run's store generation: a ticket of another generation would be
    // put back in line by its join time (see tests/restart.rs), so these forge this one's.
    let generation = s.usher.rooms.all()[0].store.generation();
    let ticket = |room, number| TicketBytes { room, generation, number, joined_ms: now * 1000, renewed_secs: now };
    let foreign = forge_ticket(&[0x11; 32], &ticket(citizens, 0));
    s.refused_ticket("another secret", &foreign, "/citizens/inbox").await;
    let other_room = forge_ticket(&secret(), &ticket(room_id("business"), 0));
    s.refused_ticket("another room", &other_room, "/citizens/inbox").await;
    let never = forge_ticket(&secret(), &ticket(citizens, 999_999));
    s.refused_ticket("never issued", &never, "/citizens/inbox").await;

    // The status endpoint says "none" to a garbage ticket; it does not fail.
    let (_, reply) = s.present(TICKET, "%%%garbage%%%", "/.usher/status").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "none");

    let text = s.metrics().await;
    assert_eq!(rejected(&text, TICKET, "malformed"), 3.0);
    assert_eq!(rejected(&text, TICKET, "signature"), 1.0);
    assert_eq!(rejected(&text, TICKET, "wrong_room"), 1.0);
    assert_eq!(rejected(&text, TICKET, "ended"), 1.0);
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_pass_of_a_drained_session_is_refused() {
    let mut s = Setup::start().await;
    let old = s.citizen_pass();
    let drained = s.usher.rooms.all()[0].store.drain(None).await.expect("drain");
    assert_eq!(drained, 1);

    let reply = s.citizen.api("/citizens/inbox").await;
    assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(rejected(&s.metrics().await, PASS, "ended"), 1.0, "the drained pass was refused");
    // The room is free again, so the visitor is let in as a newcomer: with a new session.
    assert!(reply.forwarded(), "{} {}", reply.status, reply.text());
    let new = s.citizen.cookie(PASS).expect("a new pass");
    assert_ne!(decode_pass(new).session, decode_pass(&old).session, "a new session, not the drained one");
    // Presented again, the drained pass stays refused.
    s.refused_pass("drained, again", &old, "/citizens/inbox").await;
    assert_eq!(rejected(&s.metrics().await, PASS, "ended"), 2.0);
    s.finish().await;
}
