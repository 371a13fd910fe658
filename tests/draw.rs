//! A draw anyone can check (DESIGN §3, issue 18), end to end over real sockets: before the
//! opening `GET /.usher/draw/ROOM` publishes only the commitment, and the page links to it
//! and shows the visitor's ticket number; after it, the seed (whose SHA-256 is the
//! commitment), the pre-queued tickets and the admitter's walk. The visitors are admitted in
//! exactly the order the seed draws, and `usher verify-draw` (the real binary) says so, and
//! says otherwise of a tampered copy. In memory on one node, and on a real Redis with two
//! nodes taking the visitors in turn (the lease holder draws).

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use usher::config::{RedisTarget, StoreConfig};
use usher::store::draw::{self, Publication};

const EARLY: u32 = 16;

async fn publication(addr: SocketAddr) -> (Value, Publication) {
    let mut v = Visitor::new(ip(9, 250), addr);
    let reply = v.api("/.usher/draw/event").await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let json = reply.json();
    let parsed = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}: {json}"));
    (json, parsed)
}

/// Runs `usher verify-draw` on `p`; its exit code and what it printed.
fn verify_draw(p: &Publication, ticket: u64) -> (Option<i32>, String) {
    let dir = TempDir::new("draw");
    let file = dir.path().join("draw.json");
    std::fs::write(&file, serde_json::to_vec(p).expect("json")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .arg("verify-draw")
        .arg(&file)
        .args(["--ticket", &ticket.to_string()])
        .output()
        .expect("usher verify-draw");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The event on `nodes` (visitor i joins and polls through node i mod n).
async fn the_draw_is_published_checkable_and_kept(nodes: &[SocketAddr], opens_at: u64) {
    let (before, committed) = publication(nodes[0]).await;
    assert_eq!(committed.state, "committed", "{before}");
    assert!(committed.seed.is_none() && committed.walk.is_empty(), "the seed stays secret: {before}");
    let commitment = committed.commitment.clone().expect("a commitment before anyone came");

    let mut early = Vec::new();
    for i in 0..EARLY {
        let mut v = Visitor::new(ip(9, i), nodes[i as usize % nodes.len()]);
        let page = v.page("/inbox").await;
        let html = String::from_utf8_lossy(&page.body).into_owned();
        assert!(html.contains("href=\"&#x2f;.usher&#x2f;draw&#x2f;event\""), "the page links to the draw: {html}");
        let number = v.ticket_number().expect("a ticket");
        assert!(html.contains(&format!("<dd id=\"ticket\">{number}</dd>")), "the page shows the ticket: {html}");
        let status = v.status().await;
        assert_eq!(status["status"], "prequeue", "{status}");
        assert_eq!(status["ticket"].as_u64(), Some(number), "{status}");
        assert_eq!(status["draw_url"], "/.usher/draw/event", "{status}");
        early.push(v);
    }
    assert!(unix_secs() < opens_at, "the setup was too slow: the event opened while visitors were arriving");
    let (_, still) = publication(nodes[1 % nodes.len()]).await;
    assert_eq!(still.commitment.as_deref(), Some(commitment.as_str()), "one commitment on every node");

    // One at a time (max_active 1, each logs out at once): the order visitors see "admitted"
    // in is the order of the grants.
    let order = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = early
        .into_iter()
        .map(|mut v| {
            let order = order.clone();
            tokio::spawn(async move {
                let number = v.ticket_number().expect("ticket");
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let s = v.status().await;
                    match s["status"].as_str() {
                        Some("prequeue" | "waiting") => {}
                        Some("admitted") => break,
                        _ => panic!("{} unexpected status: {s}", v.ip),
                    }
                }
                order.lock().expect("order").push(number);
                assert!(v.api("/logout").await.forwarded());
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(40), task).await.expect("everyone is admitted").expect("visitor");
    }

    let (json, drawn) = publication(nodes[0]).await;
    assert_eq!(drawn.state, "drawn", "{json}");
    let seed = drawn.seed.clone().expect("the seed, once drawn");
    assert_eq!(draw::commitment(&seed), commitment, "the seed is the one committed to");
    let (first, end) = (drawn.first_ticket.expect("first"), drawn.end_ticket.expect("end"));
    assert_eq!(end - first, u64::from(EARLY), "{json}");
    let order = order.lock().expect("order").clone();
    assert_eq!(order, draw::order(&seed, first, end), "admitted in the seed's order");
    assert_eq!(drawn.walk.len(), EARLY as usize, "{json}");
    // Privacy: ticket numbers and hashes only, nothing about a client.
    let fields: Vec<&str> = json.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "commitment",
            "committed_at_ms",
            "drawn_at_ms",
            "end_ticket",
            "first_ticket",
            "room",
            "rule",
            "seed",
            "state",
            "walk"
        ]
    );

    let mine = order[3];
    let (code, said) = verify_draw(&drawn, mine);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("the draw holds"), "{said}");
    assert!(said.contains(&format!("ticket {mine} was drawn at place 4 of {EARLY}")), "{said}");

    // Someone moved ticket 5 before ticket 4 (and says so in the walk): caught.
    let mut tampered = drawn.clone();
    let (a, b) = (tampered.walk[4].ticket, tampered.walk[5].ticket);
    (tampered.walk[4].ticket, tampered.walk[5].ticket) = (b, a);
    let (code, said) = verify_draw(&tampered, mine);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("does NOT hold") && said.contains("place 4 of the walk"), "{said}");
    // A seed other than the committed one: caught.
    let mut reseeded = drawn.clone();
    reseeded.seed = Some(seed.chars().rev().collect());
    let (code, said) = verify_draw(&reseeded, mine);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("not the commitment"), "{said}");

    let mut v = Visitor::new(ip(9, 251), nodes[0]);
    assert_eq!(v.api("/.usher/draw/nosuchroom").await.status, http::StatusCode::NOT_FOUND);
}

fn event(opens_at: u64) -> usher::config::RoomConfig {
    let mut r = room("event");
    r.max_active = 1;
    r.opens_at = Some(opens_at as i64);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_the_draw_is_committed_revealed_and_checkable() {
    let backend = Upstream::start_mailbox().await;
    let opens_at = unix_secs() + 4;
    let usher = usher_with_rooms(&backend, vec![event(opens_at)]);
    the_draw_is_published_checkable_and_kept(&[usher.http_addr.expect("http")], opens_at).await;
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_two_nodes_publish_one_draw_and_serve_its_order() {
    let redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    let opens_at = unix_secs() + 5;
    let r = event(opens_at);
    let node = || {
        let url = redis.url();
        usher_with_rooms_and(&backend, vec![r.clone()], move |c| {
            c.store = StoreConfig::Redis(RedisTarget::Server { url })
        })
    };
    let (a, b) = (node(), node());
    let nodes = [a.http_addr.expect("http"), b.http_addr.expect("http")];
    the_draw_is_published_checkable_and_kept(&nodes, opens_at).await;
    stop_usher(a).await;
    stop_usher(b).await;
}
