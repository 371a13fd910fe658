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

/// `GET path` asking for JSON, for `client` as a trusted proxy names it in `X-Forwarded-For`.
fn forwarded(path: &str, client: &str) -> Request<ReqBody> {
    let mut req = request(Method::GET, path, "application/json");
    req.headers_mut().insert("x-forwarded-for", client.parse().expect("a header value"));
    req
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
    // Paused, so every join waits (see below).
    let mut config = Config::parse("[[room]]\nname = \"r\"\nmode = \"paused\"\n").expect("config");
    let base = Config::for_upstream(upstream.addr);
    (config.listen, config.admin, config.upstream) = (base.listen, base.admin, base.upstream);
    config.limits.joins_per_minute = 1;
    config.limits.join_burst = 2;
    assert_eq!(config.rooms[0].mode, RoomMode::Paused);
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
async fn one_ipv6_site_cannot_farm_tickets_through_its_many_64s() {
    let upstream = Upstream::start().await;
    // Paused: every join waits (a queue_all room with room could grant a ticket between the
    // join and its first poll, and let the visitor in at once).
    let mut config = Config::parse("[[room]]\nname = \"r\"\nmode = \"paused\"\n").expect("config");
    let base = Config::for_upstream(upstream.addr);
    (config.listen, config.admin, config.upstream) = (base.listen, base.admin, base.upstream);
    config.client.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    config.limits.site_joins_per_minute = 1;
    config.limits.site_join_burst = 3;
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let join = |client: &str| forwarded("/", client);
    // Three /64s of one /48 each take a ticket; the fourth is over the site's limit.
    for n in 0..3 {
        assert_eq!(status_of(source(7), addr, join(&format!("2001:db8:9:{n}::1"))).await.status, 503);
    }
    let fourth = status_of(source(7), addr, join("2001:db8:9:ff::1")).await;
    assert_eq!(fourth.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status_of(source(7), addr, join("2001:db8:a:1::1")).await.status, 503, "another site is not limited");
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_rate_limited_total", &[("rule", "site_joins")]), 1.0);
    assert_eq!(metric(&text, "usher_joined_total", &[("room", "r")]), 4.0);
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_fresh_64s_of_one_site_meets_the_site_request_limit_and_others_are_served() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.client.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    config.limits.site_requests_per_second = 1;
    config.limits.site_request_burst = 5;
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    // Each request from a /64 of its own, all of one /48: every /64's limit is fresh, the
    // site's is not.
    for n in 0..5 {
        let reply = status_of(source(8), addr, forwarded("/a", &format!("2001:db8:7:{n}::1"))).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n} is within the site's burst");
    }
    let sixth = status_of(source(8), addr, forwarded("/a", "2001:db8:7:ff::1")).await;
    assert_eq!(sixth.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sixth.header("retry-after"), Some("1"));
    assert_eq!(sixth.json()["error"], "rate_limited");
    // Beside it: another site, an IPv4 client, and the site's own status polls are served.
    assert_eq!(status_of(source(8), addr, forwarded("/a", "2001:db8:8:1::1")).await.status, StatusCode::OK);
    assert_eq!(status_of(source(8), addr, forwarded("/a", "192.0.2.7")).await.status, StatusCode::OK);
    let poll = status_of(source(8), addr, forwarded("/.usher/status", "2001:db8:7:fe::1")).await;
    assert_ne!(poll.status, StatusCode::TOO_MANY_REQUESTS, "polls have their own budget");
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_rate_limited_total", &[("rule", "site_requests")]), 1.0);
    assert_eq!(upstream.seen().len(), 7, "the refused request never reached the upstream");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_polls_have_their_own_budget_so_a_nat_crowd_keeps_polling() {
    let upstream = Upstream::start().await;
    let mut config = with_limits(&upstream, 1, 2);
    config.limits.polls_per_second = 1;
    config.limits.poll_burst = 100;
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    // Page views behind one address spend the request limit...
    for _ in 0..2 {
        assert_eq!(status_of(source(30), addr, get("/inbox")).await.status, StatusCode::OK);
    }
    assert_eq!(status_of(source(30), addr, get("/inbox")).await.status, StatusCode::TOO_MANY_REQUESTS);
    // ...and the waiting pages behind it still poll: a hundred polls at once pass, and the
    // budget has a bound too (1 a second after the burst).
    let mut answers = Vec::new();
    for _ in 0..104 {
        answers
            .push(status_of(source(30), addr, request(Method::GET, "/.usher/status", "application/json")).await.status);
    }
    assert!(answers[..100].iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    let refused = answers.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(refused >= 1, "polls beyond the budget are refused: {answers:?}");
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_rate_limited_total", &[("rule", "polls")]), refused as f64);
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fresh_addresses_fills_the_table_but_never_turns_limiting_off() {
    let upstream = Upstream::start().await;
    let mut config = with_limits(&upstream, 1, 3);
    config.limits.max_tracked_clients = 100;
    config.client.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let from =
        |client: String| Request::get("/inbox").header("x-forwarded-for", client).body(empty()).expect("request");
    // 300 distinct IPv6 /64s of one /48, through the trusted proxy: the table fills at 100.
    // Each spends its burst, so an entry stays (is not recovered and swept) for 3 s: long
    // enough for the once-a-second export to see a full table on a slow machine too.
    for n in 0..300u32 {
        for _ in 0..3 {
            let reply = status_of(source(40), addr, from(format!("2001:db8:7:{n:x}::1"))).await;
            assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        }
    }
    // A client the full table does not hold is still limited: its burst, then 429.
    let flooder = "2001:db8:66:1::1".to_string();
    let passed = {
        let mut passed = 0;
        for _ in 0..20 {
            if status_of(source(40), addr, from(flooder.clone())).await.status == StatusCode::OK {
                passed += 1;
            }
        }
        passed
    };
    assert!(passed <= 4, "the flooding client passed {passed} of 20 (burst 3, 1 a second)");
    let text = metrics_text(usher.admin_addr).await;
    assert!(metric(&text, "usher_limiter_overflow_total", &[("rule", "requests")]) >= 200.0, "{text}");
    eventually("the tracked clients are exported", Duration::from_secs(5), || {
        let admin = usher.admin_addr;
        async move {
            let text = metrics_text(admin).await;
            let tracked = metric(&text, "usher_limiter_tracked_clients", &[("rule", "requests")]);
            tracked > 0.0 && tracked <= 100.0
        }
    })
    .await;
    usher.stop();
}

/// A client over its limit that keeps asking on many keep-alive connections is answered on
/// every one of them (429, nothing lost or hung), its refused requests take turns in the
/// worker's lane rather than each standing in front of everyone else's, and citizens beside
/// it are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_of_a_flood_take_turns_and_citizens_beside_it_are_served() {
    use hyper_util::rt::TokioIo;
    let upstream = Upstream::start().await;
    let mut config = with_limits(&upstream, 1, 1);
    // One worker: every connection shares its one thread, as on the pinned attack run.
    config.listen.workers = 1;
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let flooder = source(50);
    let floods: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let stream = connect_from(flooder, addr).await;
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
                tokio::spawn(connection);
                let mut statuses = Vec::new();
                for _ in 0..40 {
                    sender.ready().await.expect("usher kept the connection open");
                    let request =
                        Request::get("/inbox").header("host", addr.to_string()).body(empty()).expect("request");
                    let response = sender.send_request(request).await.expect("answered");
                    statuses.push(collect_reply(response).await.status);
                }
                statuses
            })
        })
        .collect();
    for n in 0..20u8 {
        assert_eq!(status_of(source(100 + n), addr, get("/inbox")).await.status, StatusCode::OK, "citizen {n}");
    }
    let mut answered = Vec::new();
    for flood in floods {
        let statuses =
            tokio::time::timeout(Duration::from_secs(30), flood).await.expect("a flood hung").expect("flood");
        answered.extend(statuses);
    }
    assert_eq!(answered.len(), 16 * 40);
    let refused = answered.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(refused >= 16 * 40 - 5, "burst 1, 1 a second: {refused} of {} refused: {answered:?}", answered.len());
    let text = metrics_text(usher.admin_addr).await;
    assert!(metric(&text, "usher_refused_lane_waits_total", &[]) > 0.0, "the refused never waited for their turn");
    usher.stop();
}

/// A client refused on one connection takes the refused lane on the next connection it opens
/// (a flood that opens a fresh connection for every try: on any worker), and is still
/// answered there; a client never refused, and one behind a trusted proxy, do not.
/// The scheduling policy of this process's threads named `name` (field 41 of their `stat`).
fn policies_of_threads(name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis start at field 3.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(policy) = after.split_whitespace().nth(41 - 3).and_then(|p| p.parse().ok()) {
            policies.push(policy);
        }
    }
    policies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refused_lately_is_served_by_the_idle_priority_worker_on_its_next_connections_and_no_one_else_is() {
    let upstream = Upstream::start().await;
    let mut config = with_limits(&upstream, 1, 1);
    config.listen.workers = 2;
    config.client.trusted_proxies = vec!["127.0.0.9/32".parse().expect("net")];
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let sidelined = |text: &str| metric(text, "usher_refused_worker_connections_total", &[]);
    let (flooder, citizen, proxy) = (source(70), source(71), "127.0.0.9".parse().expect("ip"));
    // The thread sets its own policy as it starts, which may be just after usher is ready.
    eventually("the refused worker runs at idle priority", Duration::from_secs(5), || async {
        policies_of_threads("usher-refused").contains(&(libc::SCHED_IDLE as u32))
    })
    .await;

    // Each request on a new connection: the first passes, the second is refused.
    assert_eq!(status_of(flooder, addr, get("/inbox")).await.status, StatusCode::OK);
    assert_eq!(status_of(flooder, addr, get("/inbox")).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(sidelined(&metrics_text(usher.admin_addr).await), 0.0, "nobody was refused before");
    // Its next connections go to the refused worker, whichever worker accepted them, and are
    // answered there; once its limit has recovered, it is served in full.
    for n in 1..=4 {
        assert_eq!(status_of(flooder, addr, get("/inbox")).await.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(sidelined(&metrics_text(usher.admin_addr).await), f64::from(n), "connection {n} of the flooder");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status_of(flooder, addr, get("/inbox")).await.status, StatusCode::OK, "served, not refused");
    assert_eq!(sidelined(&metrics_text(usher.admin_addr).await), 5.0, "still remembered for 2-3 s");
    // A citizen goes straight through. A trusted proxy's connections are not remembered: it
    // carries many clients, and one refused among them says nothing of the others.
    assert_eq!(status_of(citizen, addr, get("/inbox")).await.status, StatusCode::OK);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let forwarded =
            Request::get("/inbox").header("x-forwarded-for", "198.51.100.7").body(empty()).expect("request");
        statuses.push(status_of(proxy, addr, forwarded).await.status);
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS, StatusCode::TOO_MANY_REQUESTS]);
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(sidelined(&text), 5.0, "only the flooder was handed over");
    assert_eq!(metric(&text, "usher_refused_lane_turns_total", &[("why", "client")]), 0.0, "none waited on a worker");
    usher.stop();
}
