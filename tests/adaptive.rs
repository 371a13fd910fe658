//! Adaptive outflow (`[room.adaptive]`, issue 17) end to end: admitted visitors use a real
//! mailbox, usher times its answers, and the room's `admit_per_minute` follows: down while
//! the mailbox is slower than the target, up again once it is fast, held while an operator
//! has pinned it. With two nodes on one real Redis, one controller decides from both nodes'
//! answers, and a pin set on either node holds on both.

mod support;

use http::{Method, StatusCode};
use std::time::Duration;
use support::*;
use usher::config::{AdaptiveConfig, RedisTarget, StoreConfig};

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

/// A p90 target of 150 ms, judged every second, between 60 and 6000 a minute.
fn bounds() -> AdaptiveConfig {
    AdaptiveConfig {
        target: Duration::from_millis(150),
        quantile: 0.9,
        error_budget: 0.05,
        min_per_minute: 60,
        max_per_minute: 6000,
        period: Duration::from_secs(1),
    }
}

fn outflow(text: &str) -> f64 {
    metric(text, "usher_outflow_per_minute", &[("room", "adapt"), ("kind", "effective")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_mailbox_lowers_the_outflow_a_pin_holds_it_and_a_fast_mailbox_raises_it_again() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("adapt");
    r.max_active = 1000;
    r.admit_per_minute = 600;
    r.adaptive = Some(bounds());
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

/// Two nodes on one Redis, each forwarding too few answers a period for a controller to judge
/// by itself (about 15 against the 20 it needs), both together enough: the outflow falls only
/// if the lease holder decides from both nodes' answers. A pin set through one node then holds
/// whichever node runs the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_redis_decide_once_from_both_nodes_answers_and_a_pin_on_either_holds() {
    let redis = RedisServer::start();
    let backend = Upstream::start_mailbox().await;
    let mut r = room("adapt");
    r.max_active = 1000;
    r.admit_per_minute = 600;
    r.adaptive = Some(bounds());
    let node = |r: &usher::config::RoomConfig| {
        let url = redis.url();
        usher_with_rooms_and(&backend, vec![r.clone()], move |c| {
            c.store = StoreConfig::Redis(RedisTarget::Server { url });
            c.admin.token = Some(TOKEN.into());
        })
    };
    let (a, b) = (node(&r), node(&r));
    let (addr_a, addr_b) = (a.http_addr.expect("http"), b.http_addr.expect("http"));
    let mut first = Visitor::new(ip(18, 0), addr_a);
    assert!(first.api("/inbox").await.forwarded());

    // Six at a time on each node, 400 ms an answer: about 15 answers a second on each.
    let mut slow = load(addr_a, &first.jar, "/slow?ms=400", 6, Duration::ZERO);
    slow.extend(load(addr_b, &first.jar, "/slow?ms=400", 6, Duration::ZERO));
    eventually("both nodes' outflow falls below 600", Duration::from_secs(20), || async {
        outflow(&metrics_text(a.admin_addr).await) < 600.0 && outflow(&metrics_text(b.admin_addr).await) < 600.0
    })
    .await;
    let decided = |text: &str, reason: &str| {
        metric(text, "usher_adaptive_decisions_total", &[("room", "adapt"), ("reason", reason)])
    };
    let (text_a, text_b) = (metrics_text(a.admin_addr).await, metrics_text(b.admin_addr).await);
    let latency = decided(&text_a, "latency") + decided(&text_b, "latency");
    assert!(latency >= 1.0, "a decision on latency, from both nodes' answers:\n{text_a}\n{text_b}");

    // Pinned through node B: whichever node holds the lease leaves the rate alone.
    let pinned =
        admin_call(b.admin_addr, Method::PATCH, "/admin/rooms/adapt", Some(TOKEN), r#"{"admit_per_minute": 500}"#)
            .await;
    assert_eq!(pinned.status, StatusCode::OK, "{}", pinned.text());
    assert_eq!(pinned.json()["adaptive"], "pinned", "{}", pinned.text());
    eventually("node A sees the pin", Duration::from_secs(5), || async {
        admin_call(a.admin_addr, Method::GET, "/admin/rooms/adapt", Some(TOKEN), "").await.json()["adaptive"]
            == "pinned"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for admin in [a.admin_addr, b.admin_addr] {
        assert_eq!(outflow(&metrics_text(admin).await), 500.0, "the operator's rate stands on every node");
    }
    for task in slow {
        task.abort();
    }
    stop_usher(a).await;
    stop_usher(b).await;
}

/// A target far above what the mailbox needs (2 s) is no licence to queue: the controller
/// learns the mailbox's floor from its fast answers, and when they slow to 200 ms (a tenth of
/// the target, but many times the floor) it cuts, for a `queue`, and says by what lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_over_the_mailboxs_own_floor_is_cut_long_before_a_generous_target() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("adapt");
    r.max_active = 1000;
    r.admit_per_minute = 600;
    r.adaptive = Some(AdaptiveConfig { target: Duration::from_secs(2), ..bounds() });
    let usher = usher_with_rooms_and(&backend, vec![r], |c| c.admin.token = Some(TOKEN.into()));
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);
    let mut first = Visitor::new(ip(18, 0), addr);
    assert!(first.api("/inbox").await.forwarded());
    let line =
        |text: &str, name: &str| metric(text, "usher_adaptive_latency_seconds", &[("room", "adapt"), ("line", name)]);

    let fast = load(addr, &first.jar, "/inbox", 8, Duration::from_millis(100));
    eventually("the outflow grows on fast answers", Duration::from_secs(20), || async {
        outflow(&metrics_text(admin).await) > 600.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert!(line(&text, "floor") < 0.05, "a loopback mailbox's floor is milliseconds:\n{text}");
    for task in fast {
        task.abort();
    }
    let grown = outflow(&text);

    let slow = load(addr, &first.jar, "/slow?ms=200", 16, Duration::ZERO);
    eventually("a queue is cut", Duration::from_secs(20), || async {
        let text = metrics_text(admin).await;
        metric(&text, "usher_adaptive_decisions_total", &[("room", "adapt"), ("reason", "queue")]) >= 1.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert!(outflow(&text) < grown, "cut from {grown}:\n{text}");
    assert_eq!(
        metric(&text, "usher_adaptive_decisions_total", &[("room", "adapt"), ("reason", "latency")]),
        0.0,
        "never over the 2 s target"
    );
    let (watched, cut_above) = (line(&text, "watched"), line(&text, "cut_above"));
    assert!(cut_above < 0.1 && watched > cut_above, "200 ms answers over a cut line of {cut_above} s:\n{text}");
    for task in slow {
        task.abort();
    }
    stop_usher(usher).await;
}
