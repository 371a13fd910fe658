//! Upgraded connections (WebSocket tunnels): only the protocols in
//! `upstream.upgrade_protocols` become tunnels; a tunnel holds its client connection's place
//! under `listen.max_connections`, is closed after `upstream.tunnel_idle_timeout` without a
//! byte either way, and is closed at the end of the shutdown grace.

mod support;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use usher::config::Config;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket through usher to the upstream's echo, checked with one message.
async fn open_tunnel(addr: std::net::SocketAddr) -> Ws {
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), connect(addr).await)
        .await
        .expect("WebSocket handshake through usher");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo(&mut ws, "hej").await;
    ws
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an echo in time");
    assert_eq!(echoed.expect("a message").expect("a message"), Message::text(text));
}

/// Waits (at most 10 s) until usher closes the tunnel under `ws`.
async fn closed_by_usher(ws: &mut Ws) {
    let closed = async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed).await.expect("usher closed the tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_is_not_allowed_is_forwarded_as_a_plain_request() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let addr = http_addr(&usher);
    let req =
        Request::get("/plain").header("connection", "upgrade").header("upgrade", "h2c").body(empty()).expect("request");
    let reply = http1(addr, req).await;
    let echo = reply.echo();
    assert!(echo.header("upgrade").is_none(), "the upgrade is not passed on: {:?}", echo.headers);
    assert!(echo.header("connection").is_none_or(|c| !c.to_ascii_lowercase().contains("upgrade")));
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_upgrades_refused_total", &[]), 1.0, "{text}");
    assert_eq!(metric(&text, "usher_tunnels", &[]), 0.0);

    // WebSocket, in the default allow-list, still tunnels beside it.
    let mut ws = open_tunnel(addr).await;
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_without_traffic_is_closed_after_its_idle_timeout() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.tunnel_idle_timeout = Duration::from_millis(800);
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    let mut ws = open_tunnel(addr).await;
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_tunnels", &[]), 1.0, "{text}");
    // Traffic keeps it open past the timeout...
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        echo(&mut ws, &format!("still here {i}")).await;
    }
    // ...silence ends it.
    closed_by_usher(&mut ws).await;
    eventually("the idle close is counted", Duration::from_secs(5), || async {
        let text = metrics_text(usher.admin_addr).await;
        metric(&text, "usher_connections_closed_total", &[("reason", "tunnel_idle")]) == 1.0
            && metric(&text, "usher_tunnels", &[]) == 0.0
    })
    .await;
    assert_eq!(http1(addr, get("/after")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_holds_its_place_under_max_connections() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.max_connections = 1;
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    let mut ws = open_tunnel(addr).await;
    // The one place is the tunnel's: a new connection waits in the backlog...
    let waiting = tokio::spawn(async move { http1(addr, get("/waiting")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a connection got past max_connections while a tunnel held the place");
    assert!(upstream.seen_path("/waiting").is_empty());
    // ...and is served once the tunnel closes.
    ws.close(None).await.expect("close");
    drop(ws);
    let reply = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("served").expect("task");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_drains_with_shutdown_and_is_closed_at_the_end_of_the_grace() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.shutdown_grace = Duration::from_millis(800);
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    let mut ws = open_tunnel(addr).await;
    usher.shutdown();
    // Within the grace the tunnel still carries traffic...
    echo(&mut ws, "during the grace").await;
    // ...and at its end it is closed, and usher stops.
    let stopped = tokio::task::spawn_blocking(move || usher.wait());
    closed_by_usher(&mut ws).await;
    tokio::time::timeout(Duration::from_secs(10), stopped).await.expect("usher stopped").expect("wait");
}

/// Tunnels hold their upstream connections for their whole life, so they get only part of
/// the worker's (`upstream.max_tunnels_per_worker`, half by default): a flood of WebSockets
/// is refused with 503 once it has its share, and requests keep the rest. Found by the
/// WebSocket flood of `loadtest/attack.sh -c` (usher on one CPU, so one worker): 1,024
/// tunnels took all 1,024 connections and the real client met 503 on 97 % of its requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_take_at_most_their_share_of_upstream_connections_and_requests_keep_the_rest() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.workers = 1;
    config.upstream.max_connections_per_worker = 3;
    config.upstream.max_tunnels_per_worker = 2;
    config.upstream.pool_per_worker = 1;
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    let mut first = open_tunnel(addr).await;
    let mut second = open_tunnel(addr).await;
    // From an address of its own: a refused client's next connections go to the refused
    // worker, and what follows is about this worker's places.
    let refused = http1_from(
        "127.0.8.1".parse().expect("ip"),
        addr,
        Request::get("/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
    assert!(refused.text().contains("The service is very busy"), "{}", refused.text());
    // The worker's third connection is the requests'.
    for path in ["/beside", "/and-again"] {
        assert_eq!(http1(addr, get(path)).await.status, StatusCode::OK, "{path}");
    }
    echo(&mut first, "still open").await;
    echo(&mut second, "still open").await;
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_tunnels_refused_total", &[]), 1.0, "{text}");
    assert_eq!(metric(&text, "usher_tunnels", &[]), 2.0, "{text}");

    first.close(None).await.expect("close");
    drop(first);
    eventually("a tunnel's place is free again", Duration::from_secs(5), || async {
        metric(&metrics_text(usher.admin_addr).await, "usher_tunnels", &[]) == 1.0
    })
    .await;
    let mut third = open_tunnel(addr).await;
    third.close(None).await.expect("close");
    second.close(None).await.expect("close");
}
