//! `SIGHUP` reloads room limits live, keeps waiters and in-flight requests, and rejects a
//! broken file while the running configuration stays.

mod support;

use http::Request;
use std::time::Duration;
use support::*;

fn config(upstream: &Upstream, max_active: u32, hold_hours: u32) -> String {
    format!(
        "{}\n[[room]]\nname = \"citizens\"\nmode = \"queue_all\"\nmax_active = {max_active}\nwaiter_ttl = \"1h\"\nhold = \"{hold_hours}h\"\nbypass = [\"/slow\"]\n",
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
    let usher = UsherProcess::spawn(&config(&upstream, 2, 1), Logs::Text, &[]);
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
    std::fs::write(usher.config_path(), config(&upstream, 5, 2)).expect("rewrite the config");
    usher.signal("HUP");
    assert!(wait_until_max_active(&usher, 5).await, "the new max_active applies");
    let room = http1(usher.admin_addr, get("/admin/rooms/citizens")).await.json();
    assert_eq!(room["hold_seconds"], 7200, "the new hold applies too: {room}");
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
    assert!(
        usher.logs().iter().any(|l| l.contains("change applied") && l.contains("max_active")),
        "{:?}",
        usher.logs()
    );
}

const TOKEN: &str = "reload-test-admin-token-0123456789";

/// A room on `/inbox` only, so `/` measures the gate alone; `client` and `limits` vary.
fn gated_config(upstream: &Upstream, client: &str, limits: &str, max_active: u32) -> String {
    format!(
        "{}\n[client]\n{client}\n[limits]\n{limits}\n[[room]]\nname = \"citizens\"\npaths = [\"/inbox\"]\nmode = \"queue_all\"\nmax_active = {max_active}\n",
        binary_config(&[upstream.addr], "", "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_access_lists_and_rate_limits_live_and_keeps_an_operators_pause() {
    let upstream = Upstream::start().await;
    let loose = "requests_per_second = 1000\nburst = 1000";
    let usher =
        UsherProcess::spawn(&gated_config(&upstream, "", loose, 2), Logs::Text, &[("USHER_ADMIN_TOKEN", TOKEN)]);
    for _ in 0..5 {
        assert_eq!(http1(usher.http_addr, get("/")).await.status, 200);
    }
    // The operator pauses the room through the API; a later reload must not undo that.
    let pause = Request::post("/admin/rooms/citizens/pause")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(empty())
        .expect("request");
    assert_eq!(http1(usher.admin_addr, pause).await.status, 200);

    // A strict limit and a raised max_active: both apply, the pause stays.
    std::fs::write(usher.config_path(), gated_config(&upstream, "", "requests_per_second = 1\nburst = 2", 3))
        .expect("rewrite the config");
    usher.signal("HUP");
    assert!(wait_until_max_active(&usher, 3).await, "the new max_active applies");
    let room = http1(usher.admin_addr, get("/admin/rooms/citizens")).await.json();
    assert_eq!(room["mode"], "paused", "the reload kept the operator's pause: {room}");
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..4 {
            s.push(http1(usher.http_addr, get("/")).await.status.as_u16());
        }
        s
    };
    assert!(statuses.contains(&429), "the stricter limit applies at once: {statuses:?}");
    let text = metrics_text(usher.admin_addr).await;
    let changes = |source: &str, target: &str, field: &str| {
        metric(&text, "usher_changes_total", &[("source", source), ("target", target), ("field", field)])
    };
    assert_eq!(changes("reload", "limits", "requests_per_second"), 1.0);
    assert_eq!(changes("reload", "room:citizens", "max_active"), 1.0);
    assert_eq!(changes("api", "room:citizens", "mode"), 1.0);

    // Deny this client's address: 403 from the next request on, without a restart.
    std::fs::write(usher.config_path(), gated_config(&upstream, "deny = [\"127.0.0.0/8\"]", loose, 3))
        .expect("rewrite the config");
    usher.signal("HUP");
    let mut denied = false;
    for _ in 0..100 {
        if http1(usher.http_addr, get("/")).await.status == 403 {
            denied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(denied, "the deny list applies live");
    let logs = usher.logs();
    assert!(
        logs.iter().any(|l| l.contains("change applied") && l.contains("deny") && l.contains("127.0.0.0/8")),
        "one log line says what changed, old and new: {logs:?}"
    );
    assert!(!logs.iter().any(|l| l.contains(TOKEN)), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_signal_right_after_start_up_neither_kills_nor_drops_anything() {
    let upstream = Upstream::start().await;
    // The first moment the process says it listens, its handlers are in place: SIGHUP's
    // default action would end it.
    let mut usher = UsherProcess::spawn(&config(&upstream, 2, 1), Logs::Text, &[]);
    for _ in 0..3 {
        usher.signal("HUP");
    }
    let reply = http1(usher.http_addr, get("/slow?ms=10")).await;
    assert_eq!(reply.status, 200, "still serving");
    assert!(usher.running(), "a SIGHUP right after start-up reloads, never kills");
    assert_eq!(max_active(&usher).await, 2);
}
