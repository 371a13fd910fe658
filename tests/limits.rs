//! Rate limits and access lists (DESIGN §6) over real sockets: 429 with `Retry-After`,
//! recovery, per-route rules, the join limit, allow and deny lists.

mod support;

use http::{Method, Request, StatusCode};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use support::*;
use usher::config::{Config, RoomMode};

fn source(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 3, n))
}

fn with_limits(upstream: &Upstream, rps: u32, burst: u32) -> Config {
    let mut config = Config::for_upstream(upstream.addr);
    config.limits.requests_per_second = rps;
    config.limits.burst = burst;
    config
}

async fn status_of(from: IpAddr, addr: SocketAddr, req: Request<ReqBody>) -> Reply {
    http1_from(from, addr, req).await
}

fn request(method: Method, path: &str, accept: &str) -> Request<ReqBody> {
    Request::builder().method(method).uri(path).header("accept", accept).body(empty()).expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_limit_answers_429_with_retry_after_and_recovers() {
    let upstream = Upstream::start().await;
    let usher = start_usher(with_limits(&upstream, 2, 5));
    let addr = http_addr(&usher);
    for i in 0..5 {
        assert_eq!(
            status_of(source(1), addr, get("/a")).await.status,
            StatusCode::OK,
            "request {i} is within the burst"
        );
    }
    let limited = status_of(source(1), addr, request(Method::GET, "/a", "application/json")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("1"), "half a second to the next cell, rounded up");
    assert_eq!(limited.json()["error"], "rate_limited");
    let page = status_of(source(1), addr, request(Method::GET, "/a", "text/html")).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.text().contains("Too many requests"), "{}", page.text());
    assert_eq!(status_of(source(2), addr, get("/a")).await.status, StatusCode::OK, "other clients are not limited");
    // The window passes: two cells a second come back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_of(source(1), addr, get("/a")).await.status, StatusCode::OK);
    assert_eq!(metric(&metrics_text(usher.admin_addr).await, "usher_rate_limited_total", &[("rule", "requests")]), 2.0);
    assert!(upstream.seen().len() == 7, "limited requests never reach the upstream: {}", upstream.seen().len());
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_rule_limits_only_its_route() {
    let upstream = Upstream::start().await;
    let config = Config::parse(&format!(
        "[upstream]\naddresses = [\"{}\"]\n[listen]\nhttp = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [limits]\nrequests_per_second = 1000\nburst = 1000\n\
         [[limits.route]]\nmethod = \"POST\"\npath = \"/login\"\nper_minute = 2\n",
        upstream.addr
    ))
    .expect("config");
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let login = || request(Method::POST, "/login", "*/*");
    for _ in 0..2 {
        assert_eq!(status_of(source(3), addr, login()).await.status, StatusCode::OK, "a minute's worth at once");
    }
    let limited = status_of(source(3), addr, login()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("30"), "2 per minute: the next in 30 s");
    assert_eq!(status_of(source(3), addr, request(Method::GET, "/login", "*/*")).await.status, StatusCode::OK);
    assert_eq!(status_of(source(3), addr, request(Method::POST, "/inbox", "*/*")).await.status, StatusCode::OK);
    assert_eq!(status_of(source(4), addr, login()).await.status, StatusCode::OK);
    assert_eq!(
        metric(&metrics_text(usher.admin_addr).await, "usher_rate_limited_total", &[("rule", "route:POST /login")]),
        1.0
    );
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_limit_stops_one_client_from_farming_tickets() {
    let upstream = Upstream::start().await;
    let mut config = Config::parse("[[room]]\nname = \"r\"\nmode = \"queue_all\"\n").expect("config");
    let base = Config::for_upstream(upstream.addr);
    (config.listen, config.admin, config.upstream) = (base.listen, base.admin, base.upstream);
    config.limits.joins_per_minute = 1;
    config.limits.join_burst = 2;
    assert_eq!(config.rooms[0].mode, RoomMode::QueueAll);
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    // Each request without cookies asks for a new ticket.
    for _ in 0..2 {
        assert_eq!(status_of(source(5), addr, request(Method::GET, "/", "application/json")).await.status, 503);
    }
    let limited = status_of(source(5), addr, request(Method::GET, "/", "application/json")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("60"));
    assert_eq!(status_of(source(6), addr, request(Method::GET, "/", "application/json")).await.status, 503);
    assert_eq!(metric(&metrics_text(usher.admin_addr).await, "usher_rate_limited_total", &[("rule", "joins")]), 1.0);
    assert_eq!(metric(&metrics_text(usher.admin_addr).await, "usher_joined_total", &[("room", "r")]), 3.0);
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_skips_limits_and_queue_and_the_deny_list_gets_403() {
    let upstream = Upstream::start().await;
    let mut config = Config::parse("[[room]]\nname = \"r\"\nmode = \"closed\"\n").expect("config");
    let base = with_limits(&upstream, 1, 1);
    (config.listen, config.admin, config.upstream, config.limits) =
        (base.listen, base.admin, base.upstream, base.limits);
    config.client.allow = vec!["127.0.3.10/32".parse().expect("cidr")];
    config.client.deny = vec!["127.0.3.66/32".parse().expect("cidr"), "127.0.3.10/32".parse().expect("cidr")];
    config.client.allow.push("127.0.3.20/31".parse().expect("cidr"));
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    for _ in 0..5 {
        let staff = status_of(source(20), addr, get("/inbox")).await;
        assert_eq!(staff.status, StatusCode::OK, "allowed clients skip the closed room and the limit");
    }
    assert_eq!(status_of(source(66), addr, get("/inbox")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(status_of(source(10), addr, get("/inbox")).await.status, StatusCode::FORBIDDEN, "deny wins");
    assert_eq!(status_of(source(30), addr, get("/inbox")).await.status, 503, "everyone else meets the closed room");
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_see_ipv4_mapped_ipv6_peers_as_ipv4() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.http = Some("[::]:0".parse().expect("addr"));
    config.client.deny = vec!["127.0.3.66/32".parse().expect("cidr")];
    let usher = start_usher(config);
    let port = http_addr(&usher).port();
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{port}").parse().expect("addr");
    let denied: IpAddr = "::ffff:127.0.3.66".parse().expect("ip");
    let other: IpAddr = "::ffff:127.0.3.67".parse().expect("ip");
    assert_eq!(status_of(denied, mapped, get("/")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(status_of(other, mapped, get("/")).await.status, StatusCode::OK);
    usher.stop();
}
