//! `SIGHUP` reloads room limits live, keeps waiters and in-flight requests, and rejects a
//! broken file while the running configuration stays.

mod support;

use http::Request;
use std::time::Duration;
use support::*;

fn config(upstream: &Upstream, max_active: u32) -> String {
    format!(
        "{}\n[[room]]\nname = \"citizens\"\nmode = \"queue_all\"\nmax_active = {max_active}\nwaiter_ttl = \"1h\"\nbypass = [\"/slow\"]\n",
        binary_config(&[upstream.addr], "", "")
    )
}

async fn max_active(usher: &UsherProcess) -> u64 {
    let room = http1(usher.admin_addr, get("/admin/rooms/citizens")).await.json();
    room["max_active"].as_u64().expect("max_active")
}

async fn wait_until_max_active(usher: &UsherProcess, want: u64) -> bool {
    for _ in 0..100 {
        if max_active(usher).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_limit_without_dropping_a_request_or_a_waiter() {
    let upstream = Upstream::start().await;
    let usher = UsherProcess::spawn(&config(&upstream, 2), Logs::Text, &[]);
    assert_eq!(max_active(&usher).await, 2);

    // A waiter in line, and a slow request in flight (on a bypass path) across the reload.
    let waiter = http1(
        usher.http_addr,
        Request::get("/inbox").header("accept", "application/json").body(empty()).expect("request"),
    )
    .await;
    assert_eq!(waiter.status, 503);
    let ticket = waiter.header("set-cookie").and_then(|c| c.split(';').next()).expect("a ticket").to_string();

    let addr = usher.http_addr;
    let in_flight = tokio::spawn(async move { http1(addr, get("/slow?ms=1500")).await.status });
    upstream.wait_for("/slow").await;
    std::fs::write(usher.config_path(), config(&upstream, 5)).expect("rewrite the config");
    usher.signal("HUP");
    assert!(wait_until_max_active(&usher, 5).await, "the new max_active applies");
    assert_eq!(in_flight.await.expect("the slow request"), 200, "the in-flight request was not dropped");

    let status =
        http1(usher.http_addr, Request::get("/.usher/status").header("cookie", ticket).body(empty()).expect("request"))
            .await
            .json();
    assert_ne!(status["status"], "expired", "the waiter kept its ticket: {status}");
    assert_ne!(status["status"], "none", "{status}");

    // A broken file is rejected, and the running configuration stays.
    std::fs::write(usher.config_path(), "[[room]]\nname = \"citizens\"\nmax_active = \"many\"\n").expect("write");
    usher.signal("HUP");
    let mut rejected = false;
    for _ in 0..100 {
        if usher.logs().iter().any(|l| l.contains("reload rejected")) {
            rejected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rejected, "the log says why: {:?}", usher.logs());
    assert_eq!(max_active(&usher).await, 5);
    assert!(usher.logs().iter().any(|l| l.contains("room changed") && l.contains("max_active")), "{:?}", usher.logs());
}
