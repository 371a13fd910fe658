//! usher on a Redis that goes away (DESIGN §8): pass holders keep being served, newcomers
//! get the "temporarily unavailable" answer with `Retry-After`, `/readyz` stays ready (the
//! node can serve) while `usher_store_up` says the store is down, the errors are counted; when Redis comes back (with its append-only file) the node recovers
//! by itself, and no admitted session and no ticket was lost.

mod support;

use http::StatusCode;
use std::time::Duration;
use support::*;
use usher::config::{RedisTarget, StoreConfig};

async fn readyz(admin: std::net::SocketAddr) -> StatusCode {
    let mut v = Visitor::new(ip(9, 1), admin);
    v.get("/readyz", None).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_stops_pass_holders_are_served_newcomers_get_503_and_the_node_recovers_alone() {
    let mut redis = RedisServer::start_with(RedisOptions { persist: true, ..RedisOptions::default() });
    let backend = Upstream::start_mailbox().await;
    let mut one = room("outage");
    one.max_active = 1;
    let url = redis.url();
    let usher =
        usher_with_rooms_and(&backend, vec![one], |c| c.store = StoreConfig::Redis(RedisTarget::Server { url }));
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);

    let mut holder = Visitor::new(ip(2, 1), addr);
    assert!(holder.api("/inbox").await.forwarded(), "the first visitor is admitted at once");
    let mut waiter = Visitor::new(ip(2, 2), addr);
    let queued = waiter.api("/inbox").await;
    assert_eq!(queued.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(queued.json()["status"], "waiting");
    let ticket = waiter.ticket_number().expect("a ticket");
    assert_eq!(readyz(admin).await, StatusCode::OK);

    redis.stop();

    // The pass holder keeps being served by the upstream.
    for i in 0..5 {
        let reply = holder.api(&format!("/inbox/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(reply.forwarded(), "a pass holder reaches the upstream while Redis is down");
    }
    // Newcomers: 503 with Retry-After, JSON or page; never a 500.
    let mut newcomer = Visitor::new(ip(2, 3), addr);
    let json = newcomer.api("/inbox").await;
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE, "{}", json.text());
    assert!(json.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    assert_eq!(json.json()["status"], "unavailable", "{}", json.text());
    let mut browser = Visitor::new(ip(2, 4), addr);
    let page = browser.page("/inbox").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.header("retry-after").is_some());
    assert!(page.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    // The waiter is told, not dropped.
    assert_eq!(waiter.status().await["status"], "unavailable");

    // The node can still serve (pass holders), so it stays in the load balancer's rotation;
    // the store's health is its own figure.
    assert_eq!(readyz(admin).await, StatusCode::OK, "a store outage does not take every node out of rotation");
    eventually("usher_store_up turns 0", Duration::from_secs(10), || async {
        metric(&metrics_text(admin).await, "usher_store_up", &[("room", "outage")]) == 0.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert!(metric(&text, "usher_store_errors_total", &[]) >= 3.0, "store errors are counted");

    redis.restart();

    eventually("usher_store_up turns 1 again", Duration::from_secs(20), || async {
        metric(&metrics_text(admin).await, "usher_store_up", &[("room", "outage")]) == 1.0
    })
    .await;
    assert_eq!(readyz(admin).await, StatusCode::OK);
    // Nothing was lost: the session still holds the only place, the waiter keeps its ticket.
    let reply = holder.api("/inbox/after").await;
    assert!(reply.forwarded(), "the pass still works");
    let status = waiter.status().await;
    assert_eq!(status["status"], "waiting", "{status}");
    assert_eq!(status["ahead"], 0, "{status}");
    assert_eq!(waiter.ticket_number(), Some(ticket));
    let late = newcomer.api("/inbox").await;
    assert_eq!(late.json()["status"], "waiting", "a newcomer queues again: {}", late.text());
    assert_eq!(late.json()["ahead"], 1, "behind the waiter from before the outage: {}", late.text());
    // The session ends at logout and the waiter from before the outage gets the place.
    assert!(holder.api("/logout").await.forwarded());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while waiter.status().await["status"] != "admitted" {
        assert!(std::time::Instant::now() < deadline, "the waiter from before the outage never got in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_usher(usher).await;
}
