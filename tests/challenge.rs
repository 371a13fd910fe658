//! Proof of work at join (DESIGN §3 "Bots pay", issue 18), over real sockets: a newcomer to a
//! line gets a challenge instead of a ticket; a solved one gives one ticket, once. Forged,
//! replayed, expired, wrong-room, wrong-client, wrong and malformed answers are refused with
//! a clear answer and counted. The page without JavaScript joins after its wait; an empty
//! room asks nothing; difficulty rises for a client that keeps asking. Solutions come from
//! the native solver (`room::challenge::solve`); a real browser solves one in
//! `tests/browser.rs`.

mod support;

use http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use support::*;
use usher::config::{ChallengeConfig, RoomConfig, RoomMode};
use usher::room::challenge::{self, Challenge, client_tag};
use usher::room::tokens::Sealer;

fn challenged(name: &str) -> RoomConfig {
    let mut r = room(name);
    r.mode = RoomMode::QueueAll;
    r.challenge = Some(ChallengeConfig {
        bits: 6,
        puzzles: 4,
        max_bits: 9,
        ttl: Duration::from_secs(60),
        noscript_wait: Duration::from_secs(2),
        busy_per_second: 1000,
    });
    r
}

/// The challenge a newcomer asking for JSON is given.
async fn challenge_of(v: &mut Visitor) -> Value {
    let reply = v.api("/inbox").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["status"], "challenge", "{json}");
    assert!(v.ticket_number().is_none(), "no ticket before the work is done");
    json["challenge"].clone()
}

fn solved(c: &Value) -> String {
    let token = c["token"].as_str().expect("token");
    let (nonces, _) =
        challenge::solve(token, c["bits"].as_u64().expect("bits") as u8, c["puzzles"].as_u64().expect("n") as u8);
    json!({ "token": token, "nonces": nonces }).to_string()
}

async fn refused(v: &mut Visitor, url: &str, body: &str, code: &str) {
    let reply = v.post_json(url, body).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{code}: {}", reply.text());
    assert_eq!(reply.json()["error"], code, "{}", reply.text());
    assert!(v.ticket_number().is_none() || code == "challenge_replayed", "{code}: no ticket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solved_challenge_gives_one_ticket_and_every_bad_answer_is_refused_and_counted() {
    let backend = Upstream::start_mailbox().await;
    let usher =
        usher_with_rooms(&backend, vec![challenged("a"), RoomConfig { paths: vec!["/b".into()], ..challenged("b") }]);
    let addr = usher.http_addr.expect("http");

    let mut alice = Visitor::new(ip(31, 1), addr);
    let c = challenge_of(&mut alice).await;
    assert_eq!((c["bits"].as_u64(), c["puzzles"].as_u64()), (Some(6), Some(4)), "{c}");
    assert_eq!(c["algorithm"], "sha256-leading-zero-bits");
    let url = c["answer_url"].as_str().expect("url").to_string();
    assert_eq!(url, "/.usher/challenge?room=a");
    let answer = solved(&c);

    // Another client cannot use Alice's work.
    let mut mallory = Visitor::new(ip(31, 2), addr);
    refused(&mut mallory, &url, &answer, "challenge_wrong_client").await;
    // Nor can it be taken to another room.
    refused(&mut alice, "/.usher/challenge?room=b", &answer, "challenge_wrong_room").await;
    // A wrong nonce, a missing one, junk, a token changed by one character.
    let token = c["token"].as_str().expect("token");
    let (mut nonces, _) = challenge::solve(token, 6, 4);
    nonces[2] += 1;
    while challenge::solves(&challenge::prefix(token, 2), nonces[2], 6) {
        nonces[2] += 1;
    }
    refused(&mut alice, &url, &json!({ "token": token, "nonces": nonces }).to_string(), "challenge_wrong_answer").await;
    refused(&mut alice, &url, &json!({ "token": token, "nonces": [1, 2, 3] }).to_string(), "challenge_wrong_answer")
        .await;
    refused(&mut alice, &url, "{not json", "challenge_malformed").await;
    let mut forged = token.to_string();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    refused(&mut alice, &url, &json!({ "token": forged, "nonces": nonces }).to_string(), "challenge_forged").await;

    // A token sealed with the server's secret but issued three minutes ago: expired.
    let sealer = Sealer::new(&usher::secrets::Secrets::new(vec![secret()]).expect("secret"));
    let client = usher::config::Config::parse("").expect("defaults").client;
    let key = usher::identity::Identity::new(&secret(), &client).key(alice.ip, unix_secs());
    let old = Challenge {
        room: usher::room::tokens::room_id("a"),
        client: client_tag(&key),
        issued_ms: unix_secs() * 1000 - 180_000,
        bits: 1,
        puzzles: 1,
        salt: [7; 16],
    };
    let old_token = sealer.seal_challenge(&old);
    let (old_nonces, _) = challenge::solve(&old_token, 1, 1);
    refused(&mut alice, &url, &json!({ "token": old_token, "nonces": old_nonces }).to_string(), "challenge_expired")
        .await;

    // The honest answer: one ticket, and the line as JSON.
    let joined = alice.post_json(&url, &answer).await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.text());
    assert_eq!(joined.json()["status"], "waiting", "{}", joined.text());
    let ticket = alice.ticket_number().expect("a ticket");
    // Once only: the same answer again is refused, and the ticket is still the one.
    refused(&mut alice, &url, &answer, "challenge_replayed").await;
    assert_eq!(alice.ticket_number(), Some(ticket));
    // With the ticket, no further challenge: the place.
    let again = alice.api("/inbox").await;
    assert_eq!(again.json()["status"], "waiting", "{}", again.text());

    let text = metrics_text(usher.admin_addr).await;
    let count = |outcome: &str| metric(&text, "usher_challenges_total", &[("room", "a"), ("outcome", outcome)]);
    assert_eq!(count("issued"), 1.0, "{text}");
    assert_eq!(count("solved"), 1.0, "{text}");
    let reasons = ["wrong_client", "wrong_answer", "malformed", "forged", "expired", "replayed"];
    for reason in reasons {
        let n = metric(&text, "usher_challenge_refusals_total", &[("room", "a"), ("reason", reason)]);
        assert!(n >= 1.0, "{reason} counted: {text}");
    }
    let wrong_room = metric(&text, "usher_challenge_refusals_total", &[("room", "b"), ("reason", "wrong_room")]);
    assert_eq!(wrong_room, 1.0, "the room answered to counts it: {text}");
    assert_eq!(count("refused"), 7.0, "{text}");
    assert_eq!(metric(&text, "usher_challenge_solve_seconds_count", &[("room", "a")]), 1.0, "{text}");
    assert_eq!(metric(&text, "usher_challenge_difficulty_sum", &[("room", "a")]), 6.0, "{text}");
    // Privacy: nothing of the client's address in the token or the metrics.
    assert!(!text.contains("127.31."), "{text}");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_page_joins_after_its_wait_and_an_empty_room_asks_nothing() {
    let backend = Upstream::start_mailbox().await;
    let mut open = room("open");
    open.paths = vec!["/open".into()];
    open.challenge = challenged("x").challenge;
    let usher = usher_with_rooms(&backend, vec![challenged("a"), open]);
    let addr = usher.http_addr.expect("http");

    let mut bob = Visitor::new(ip(32, 1), addr);
    let page = bob.page("/letters/3?x=1").await;
    let html = page.text();
    assert_eq!(page.status, StatusCode::OK);
    assert!(html.contains("<h1 id=\"title\">One moment</h1>"), "{html}");
    assert!(html.contains("Without JavaScript this takes about 2 seconds"), "{html}");
    let refresh = html.split("http-equiv=\"refresh\" content=\"").nth(1).expect("a meta refresh");
    let target = refresh.split('"').next().expect("content").replace("&amp;", "&").replace("&#x2f;", "/");
    let url = target.split_once(";url=").expect("a refresh with a url").1.to_string();
    assert!(url.starts_with("/.usher/challenge?room=a&token=") && url.ends_with("&to=/letters/3%3Fx%3D1"), "{url}");

    // Too early: refused, and said so; after the wait, the ticket and back to the page.
    let early = bob.page(&url).await;
    assert_eq!(early.status, StatusCode::TOO_EARLY, "{}", early.text());
    assert!(bob.ticket_number().is_none());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let joined = bob.page(&url).await;
    assert_eq!(joined.status, StatusCode::SEE_OTHER, "{}", joined.text());
    assert_eq!(joined.headers["location"], "/letters/3?x=1");
    assert!(bob.ticket_number().is_some(), "the wait earned a ticket");
    let queue = bob.page("/letters/3?x=1").await;
    assert!(queue.text().contains("You are in the queue"), "{}", queue.text());

    // The open room has nobody waiting: a newcomer walks in, no challenge.
    let mut carol = Visitor::new(ip(32, 2), addr);
    assert!(carol.api("/open").await.forwarded(), "an empty room asks no work");
    stop_usher(usher).await;
}

/// Two nodes on one Redis: an answer spent on one is spent on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_an_answer_spent_on_one_node_is_refused_on_the_other() {
    let redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    let node = || {
        let url = redis.url();
        usher_with_rooms_and(&backend, vec![challenged("a")], move |c| {
            c.store = usher::config::StoreConfig::Redis(usher::config::RedisTarget::Server { url })
        })
    };
    let (a, b) = (node(), node());
    let mut on_a = Visitor::new(ip(34, 1), a.http_addr.expect("http"));
    let c = challenge_of(&mut on_a).await;
    let (url, answer) = (c["answer_url"].as_str().expect("url").to_string(), solved(&c));
    let joined = on_a.post_json(&url, &answer).await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.text());
    assert!(on_a.ticket_number().is_some());
    // The same client, the same answer, through the other node.
    let mut on_b = Visitor::new(ip(34, 1), b.http_addr.expect("http"));
    refused(&mut on_b, &url, &answer, "challenge_replayed").await;
    stop_usher(a).await;
    stop_usher(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_asking_gets_harder_challenges_within_max_bits() {
    let backend = Upstream::start_mailbox().await;
    let usher = usher_with_rooms(&backend, vec![challenged("a")]);
    let addr = usher.http_addr.expect("http");
    // Counted per minute: start well inside one.
    let into_minute = unix_secs() % 60;
    if into_minute > 50 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let (mut bits, mut waits) = (Vec::new(), Vec::new());
    let mut eve = Visitor::new(ip(33, 1), addr);
    for _ in 0..40 {
        let c = challenge_of(&mut eve).await;
        bits.push(c["bits"].as_u64().expect("bits"));
        waits.push(c["noscript_wait_seconds"].as_u64().expect("wait"));
    }
    // Without JavaScript the wait doubles as the work does (2 s at the base).
    assert_eq!((waits[0], waits[4], waits[8], waits[39]), (2, 4, 8, 16), "{waits:?}");
    // 4 a minute at the base; each doubling past that a bit more, up to max_bits (9).
    assert_eq!(&bits[..4], [6, 6, 6, 6], "{bits:?}");
    assert_eq!(&bits[4..8], [7, 7, 7, 7], "{bits:?}");
    assert_eq!(bits[8], 8, "{bits:?}");
    assert_eq!(bits[39], 9, "{bits:?}");
    // Someone else on another address is not charged for Eve's asking.
    let mut frank = Visitor::new(ip(33, 2), addr);
    assert_eq!(challenge_of(&mut frank).await["bits"], 6);
    stop_usher(usher).await;
}
