//! Adaptive outflow (`[room.adaptive]`, issue 17) end to end: admitted visitors use a real
//! mailbox, usher times its answers, and the room's `admit_per_minute` follows: down while
//! the mailbox is slower than the target, up again once it is fast, held while an operator
//! has pinned it.

mod support;

use http::{Method, StatusCode};
use std::time::Duration;
use support::*;
use usher::config::AdaptiveConfig;

const TOKEN: &str = "adaptive-test-token-0123456789abcdef";

/// `n` admitted visitors (sharing one pass, each from its own address) asking `path` in a
/// loop, `pause` apart (under the per-client request limit), until aborted.
fn load(
    addr: std::net::SocketAddr,
    jar: &std::collections::BTreeMap<String, String>,
    path: &str,
    n: u32,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let mut v = Visitor::new(ip(18, 10 + i), addr);
            v.jar = jar.clone();
            let path = path.to_string();
            tokio::spawn(async move {
                loop {
                    let reply = v.api(&path).await;
                    assert!(reply.forwarded(), "{} {}", reply.status, reply.text());
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}

fn outflow(text: &str) -> f64 {
    metric(text, "usher_outflow_per_minute", &[("room", "adapt"), ("kind", "configured")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_mailbox_lowers_the_outflow_a_pin_holds_it_and_a_fast_mailbox_raises_it_again() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("adapt");
    r.max_active = 1000;
    r.admit_per_minute = 600;
    r.adaptive = Some(AdaptiveConfig {
        target: Duration::from_millis(150),
        quantile: 0.9,
        error_budget: 0.05,
        min_per_minute: 60,
        max_per_minute: 6000,
        period: Duration::from_secs(1),
    });
    let usher = usher_with_rooms_and(&backend, vec![r], |c| c.admin.token = Some(TOKEN.into()));
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);
    let mut first = Visitor::new(ip(18, 0), addr);
    assert!(first.api("/inbox").await.forwarded());

    // 16 at a time, each answer 400 ms against a 150 ms target: about 40 answers a period.
    let slow = load(addr, &first.jar, "/slow?ms=400", 16, Duration::ZERO);
    eventually("the outflow falls below 600", Duration::from_secs(20), || async {
        outflow(&metrics_text(admin).await) < 600.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert!(metric(&text, "usher_adaptive_decisions_total", &[("room", "adapt"), ("reason", "latency")]) >= 1.0);
    assert!(outflow(&text) >= 60.0, "never under min_per_minute");

    // Pinned: an operator's rate stands, however slow the mailbox.
    let pinned =
        admin_call(admin, Method::PATCH, "/admin/rooms/adapt", Some(TOKEN), r#"{"admit_per_minute": 500}"#).await;
    assert_eq!(pinned.status, StatusCode::OK, "{}", pinned.text());
    assert_eq!(pinned.json()["adaptive"], "pinned", "{}", pinned.text());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(outflow(&metrics_text(admin).await), 500.0);
    for task in slow {
        task.abort();
    }

    // Let go, with a fast mailbox: it grows again from the pinned 500.
    let fast = load(addr, &first.jar, "/inbox", 8, Duration::from_millis(100));
    let on = admin_call(admin, Method::PATCH, "/admin/rooms/adapt", Some(TOKEN), r#"{"adaptive": true}"#).await;
    assert_eq!(on.json()["adaptive"], "on", "{}", on.text());
    eventually("the outflow grows past 500", Duration::from_secs(20), || async {
        outflow(&metrics_text(admin).await) > 500.0
    })
    .await;
    for task in fast {
        task.abort();
    }
    let refused = admin_call(admin, Method::PATCH, "/admin/rooms/adapt", Some(TOKEN), r#"{"adaptive": "yes"}"#).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    stop_usher(usher).await;
}
