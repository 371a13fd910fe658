//! No way around the queue (DESIGN §1): with the room full, every other spelling of a path,
//! a host or a client address is either queued like the plain request or refused with `400`;
//! none reaches the mailbox. Rules hold whatever the spelling, the upstream receives the
//! canonical target, and rooms on one host keep each other's passes.

mod support;

use http::{Request, StatusCode};
use std::net::SocketAddr;
use support::*;
use usher::Running;
use usher::config::RealIpFrom;

/// Sends `GET target` with `Host: host` (and more header lines) from a visitor of its own, as
/// an app would, and returns the status.
async fn raw_get(addr: SocketAddr, n: u32, target: &str, headers: &str) -> (u16, String) {
    let request = format!("GET {target} HTTP/1.1\r\n{headers}Accept: application/json\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange_on(connect_from(ip(60, n), addr).await, request.as_bytes()).await;
    (raw_status(&answer).unwrap_or(0), answer)
}

/// A room on `/` with one place, taken, and `/static/` bypassed; requests to it other than the
/// holder's must not reach the mailbox.
async fn full_room(tweak: impl FnOnce(&mut usher::config::Config)) -> (Upstream, Running, Visitor) {
    let mailbox = Upstream::start_mailbox().await;
    let mut r = room("citizens");
    r.max_active = 1;
    r.admit_per_minute = 1;
    r.bypass = vec!["/static/".into()];
    let usher = usher_with_rooms_and(&mailbox, vec![r], tweak);
    let mut holder = Visitor::new(ip(61, 0), usher.http_addr.expect("http"));
    assert!(holder.api("/home").await.forwarded(), "the first visitor takes the one place");
    (mailbox, usher, holder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_path_walks_around_a_full_room() {
    let (mailbox, usher, _holder) = full_room(|_| {}).await;
    let addr = usher.http_addr.expect("http");
    let host = "Host: post.example.dk\r\n";
    let spellings = [
        "/inbox",
        "/static/../inbox",
        "/static/%2e%2e/inbox",
        "/static/%2E%2e/inbox",
        "/static/.%2e/inbox",
        "/static/./../inbox",
        "/static/..%2finbox",
        "/static/..%2Finbox",
        "/static/%2e%2e%2finbox",
        "/static/..%5cinbox",
        "/static/..\\inbox",
        "/static/..;/inbox",
        "/static/.;/../inbox",
        "/static;x/../inbox",
        "/static/%c0%ae%c0%ae/inbox",
        "/static/%e0%80%ae%e0%80%ae/inbox",
        "//static/../inbox",
        "/static//../../inbox",
        "/static/../../inbox",
        "/static/%00/../inbox",
        "/%73tatic/../inbox",
        "http://post.example.dk/static/../inbox",
    ];
    for (n, target) in spellings.iter().enumerate() {
        let (status, answer) = raw_get(addr, n as u32 + 1, target, host).await;
        assert!(status == 503 || status == 400, "{target}: queued or refused, not {status}: {answer}");
    }
    let reached: Vec<String> = mailbox.seen().iter().map(Seen::target).filter(|t| t != "/home").collect();
    assert!(reached.is_empty(), "nothing but the holder's request reached the mailbox: {reached:?}");

    // The bypass still works, and the mailbox is sent the canonical target.
    for (target, canonical) in
        [("/static/app.js", "/static/app.js"), ("/static/./x/../app.js?v=1", "/static/app.js?v=1")]
    {
        let (status, answer) = raw_get(addr, 90, target, host).await;
        assert_eq!(status, 200, "{target}: {answer}");
        assert!(answer.ends_with(canonical), "{target} reaches the mailbox as {canonical}: {answer}");
    }
    let (status, answer) = raw_get(addr, 91, "/static/%7euser/a%3bb", host).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(mailbox.seen().last().map(Seen::target).as_deref(), Some("/static/~user/a%3Bb"));
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_targets_are_answered_400_in_the_language_of_apps() {
    let (mailbox, usher, _holder) = full_room(|_| {}).await;
    let addr = usher.http_addr.expect("http");
    for target in ["/static/..%2finbox", "/a\\b", "/..", "/%ff", "/static/..;/inbox"] {
        let (status, answer) = raw_get(addr, 1, target, "Host: post.example.dk\r\n").await;
        assert_eq!(status, 400, "{target}: {answer}");
        assert!(answer.contains("\"error\":\"bad_request\""), "{target}: the JSON error: {answer}");
        assert!(answer.contains("content-security-policy"), "{target}: usher's security headers: {answer}");
    }
    assert_eq!(mailbox.seen().len(), 1, "only the holder reached the mailbox");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_scoped_room_holds_whatever_the_authority_spelling() {
    let mailbox = Upstream::start_mailbox().await;
    let mut r = room("citizens");
    r.hosts = vec!["post.example.dk".into()];
    r.max_active = 1;
    r.admit_per_minute = 1;
    let usher = usher_with_rooms(&mailbox, vec![r]);
    let addr = usher.http_addr.expect("http");
    let (status, _) = raw_get(addr, 0, "/home", "Host: post.example.dk\r\n").await;
    assert_eq!(status, 200, "the first visitor takes the one place");

    let queued = [
        ("/inbox", "Host: post.example.dk.\r\n"),
        ("/inbox", "Host: POST.Example.DK\r\n"),
        ("/inbox", "Host: post.example.dk:80\r\n"),
        ("/inbox", "Host: post.example.dk:8080\r\n"),
        ("http://post.example.dk/inbox", "Host: post.example.dk\r\n"),
        ("http://POST.example.dk./inbox", "Host: post.example.dk\r\n"),
    ];
    for (n, (target, host)) in queued.iter().enumerate() {
        let (status, answer) = raw_get(addr, n as u32 + 1, target, host).await;
        assert_eq!(status, 503, "{target} with {host:?} is queued: {answer}");
    }
    let refused = [
        ("http://post.example.dk/inbox", "Host: other.example\r\n"),
        ("/inbox", "Host: post.example.dk\r\nHost: other.example\r\n"),
        ("/inbox", ""),
        ("/inbox", "Host: user@post.example.dk\r\n"),
    ];
    for (n, (target, host)) in refused.iter().enumerate() {
        let (status, answer) = raw_get(addr, n as u32 + 20, target, host).await;
        assert_eq!(status, 400, "{target} with {host:?} is refused: {answer}");
    }
    // HTTP/2: `:authority` names the room's host, `host` another.
    let req = Request::get("http://post.example.dk/inbox")
        .header("host", "other.example")
        .header("accept", "application/json")
        .body(empty())
        .expect("request");
    let reply = h2c(addr, req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, ":authority and host disagree: {}", reply.text());
    let req = Request::get("http://POST.example.dk/inbox").header("accept", "application/json").body(empty());
    assert_eq!(h2c(addr, req.expect("request")).await.status, StatusCode::SERVICE_UNAVAILABLE, "h2 is queued");

    let reached: Vec<String> = mailbox.seen().iter().map(Seen::target).filter(|t| t != "/home").collect();
    assert!(reached.is_empty(), "no spelling of the host reached the mailbox: {reached:?}");
    // Another host is not this room's: forwarded, with its canonical Host.
    let (status, _) = raw_get(addr, 40, "/inbox", "Host: Other.Example.:80\r\n").await;
    assert_eq!(status, 200);
    let seen = mailbox.seen_path("/inbox");
    assert_eq!(seen.last().and_then(|s| s.header("host")), Some("other.example"), "{seen:?}");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_rule_holds_whatever_the_spelling() {
    let upstream = Upstream::start().await;
    let mut config = usher::config::Config::for_upstream(upstream.addr);
    config.limits.routes =
        vec![usher::config::RouteLimit { method: Some(http::Method::POST), path: "/login".into(), per_minute: 1 }];
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let post = |target: &str| {
        format!("POST {target} HTTP/1.1\r\nHost: post.example.dk\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    };
    let first = raw_exchange_on(connect_from(ip(62, 1), addr).await, post("/login").as_bytes()).await;
    assert_eq!(raw_status(&first), Some(200), "{first}");
    for target in
        ["/login", "/./login", "/%6cogin", "/%6Cogin", "//login", "/x/../login", "/login/", "/login;jsessionid=1"]
    {
        let again = raw_exchange_on(connect_from(ip(62, 1), addr).await, post(target).as_bytes()).await;
        assert_eq!(raw_status(&again), Some(429), "{target} is the same route: {again}");
    }
    assert_eq!(upstream.seen().len(), 1, "one login reached the mailbox");
    usher.stop();
}

/// Trusted proxies on loopback; `allow` holds an address a client might claim.
async fn behind_a_proxy(from: RealIpFrom) -> (Upstream, Running, Visitor) {
    full_room(|config| {
        config.client.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
        config.client.real_ip_from = from;
        config.client.allow = vec!["198.51.100.0/24".parse().expect("cidr")];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_forwarding_header_is_believed() {
    let (mailbox, usher, _holder) = behind_a_proxy(RealIpFrom::XForwardedFor).await;
    let addr = usher.http_addr.expect("http");
    // A client's own Forwarded naming an allow-listed address, passed on by a balancer that
    // appends X-Forwarded-For: ignored, so the client is queued like everyone.
    let spoof = "Host: h\r\nForwarded: for=198.51.100.7\r\nX-Forwarded-For: 203.0.113.9\r\n";
    assert_eq!(raw_get(addr, 1, "/inbox", spoof).await.0, 503);
    // The header the balancer sets is believed: the allow-listed address passes.
    assert_eq!(raw_get(addr, 2, "/inbox", "Host: h\r\nX-Forwarded-For: 198.51.100.7\r\n").await.0, 200);
    assert_eq!(mailbox.seen_path("/inbox").len(), 1);
    assert!(mailbox.seen_path("/inbox").iter().all(|s| s.header("forwarded").is_none()), "Forwarded is stripped");
    stop_usher(usher).await;

    let (mailbox, usher, _holder) = behind_a_proxy(RealIpFrom::Forwarded).await;
    let addr = usher.http_addr.expect("http");
    let spoof = "Host: h\r\nX-Forwarded-For: 198.51.100.7\r\nForwarded: for=203.0.113.9\r\n";
    assert_eq!(raw_get(addr, 1, "/inbox", spoof).await.0, 503);
    assert_eq!(raw_get(addr, 2, "/inbox", "Host: h\r\nForwarded: for=198.51.100.7\r\n").await.0, 200);
    assert!(mailbox.seen_path("/inbox").iter().all(|s| s.header("x-forwarded-for").is_none()), "XFF is stripped");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_on_one_host_keep_each_others_passes() {
    let mailbox = Upstream::start_mailbox().await;
    let mut citizens = room("citizens");
    citizens.paths = vec!["/citizens/".into()];
    let mut business = room("business");
    business.paths = vec!["/business/".into()];
    let usher = usher_with_rooms(&mailbox, vec![citizens, business]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);
    let mut visitor = Visitor::new(ip(63, 1), addr);
    assert!(visitor.api("/citizens/inbox").await.forwarded());
    assert!(visitor.api("/business/inbox").await.forwarded());
    assert!(visitor.jar.contains_key("usher_pass_citizens") && visitor.jar.contains_key("usher_pass_business"));
    for path in ["/citizens/inbox", "/business/inbox", "/citizens/letters"] {
        let reply = visitor.api(path).await;
        assert!(reply.forwarded(), "{path}");
        assert!(reply.set_cookies().is_empty(), "{path}: no pass replaced or cleared: {:?}", reply.set_cookies());
    }
    let text = metrics_text(admin).await;
    assert_eq!(rejected(&text, PASS, "wrong_room"), 0.0);
    assert_eq!(metric(&text, "usher_admitted_total", &[("room", "citizens"), ("via", "direct")]), 1.0);
    // Neither room's cookie reaches the mailbox.
    assert!(mailbox.seen().iter().all(|s| s.header("cookie").is_none_or(|c| !c.contains("usher_"))));
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_always_when_configured_so() {
    let mailbox = Upstream::start_mailbox().await;
    let usher = usher_with_rooms_and(&mailbox, vec![room("citizens")], |c| c.listen.cookie_secure_always = true);
    let mut visitor = Visitor::new(ip(64, 1), usher.http_addr.expect("http"));
    let reply = visitor.api("/inbox").await;
    let pass = reply.set_cookie(PASS).expect("a pass");
    assert!(pass.ends_with("; Secure"), "over plain HTTP too: {pass}");
    stop_usher(usher).await;

    let usher = usher_with_rooms(&mailbox, vec![room("citizens")]);
    let mut visitor = Visitor::new(ip(64, 2), usher.http_addr.expect("http"));
    let pass = visitor.api("/inbox").await.set_cookie(PASS).expect("a pass");
    assert!(!pass.contains("Secure"), "auto: not over plain HTTP: {pass}");
    stop_usher(usher).await;
}
