//! Forwarding (DESIGN §7): requests and bodies cross usher intact and streaming, headers are
//! cleaned and annotated, the client's address stays private unless the operator opts in,
//! and a failing upstream gets a clear answer instead of a hang.

mod support;

use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use usher::config::{Config, UpstreamAddress};

/// Large enough that buffering it would show in usher's memory, small enough for debug builds.
const LARGE: u64 = 256 << 20;
/// How much usher's peak resident memory may grow while a [`LARGE`] body passes through.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

fn upstream_address(addr: std::net::SocketAddr) -> UpstreamAddress {
    UpstreamAddress { host: addr.ip().to_string(), port: addr.port() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_arrives_with_method_path_query_and_every_header() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let req = Request::get("/inbox/letters?page=2&sort=new")
        .header("x-custom", "abc")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("user-agent", "usher-tests/1")
        .header("cookie", "session=s3cr3t")
        .body(empty())
        .expect("request");
    let reply = http1(http_addr(&usher), req).await;
    assert_eq!(reply.header("x-upstream"), Some("echo"), "the upstream's own headers come back");
    let echo = reply.echo();
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/inbox/letters");
    assert_eq!(echo.query.as_deref(), Some("page=2&sort=new"));
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.header("x-custom"), Some("abc"));
    assert_eq!(echo.all("x-multi"), ["one", "two"]);
    assert_eq!(echo.header("user-agent"), Some("usher-tests/1"));
    assert_eq!(echo.header("cookie"), Some("session=s3cr3t"));
    assert_eq!(echo.body_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_and_put_bodies_arrive_byte_for_byte() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for method in [Method::POST, Method::PUT] {
        let req = Request::builder()
            .method(method.clone())
            .uri("/letters/42")
            .header("content-type", "application/octet-stream")
            .body(full(body.clone()))
            .expect("request");
        let echo = http1(http_addr(&usher), req).await.echo();
        assert_eq!(echo.method, method.as_str());
        assert_eq!(echo.header("content-type"), Some("application/octet-stream"));
        assert_eq!(echo.header("content-length"), Some("100000"));
        assert_eq!(echo.body_bytes, body.len() as u64, "{method} body length");
        assert_eq!(echo.body_sha256, sha256_hex(&body), "{method} body content");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_through_without_being_buffered() {
    let upstream = Upstream::start().await;
    let mut usher = UsherProcess::spawn(&binary_config(&[upstream.addr], "", ""), Logs::Text, &[]);
    assert_eq!(http1(usher.http_addr, get("/warm-up")).await.status, StatusCode::OK);
    let before = usher.status_kib("VmHWM");

    let req = Request::post("/upload").body(PatternBody::chunked(LARGE).boxed()).expect("request");
    let reply = http1(usher.http_addr, req).await;

    let growth = usher.status_kib("VmHWM").saturating_sub(before);
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let (bytes, sha256) = expected_digest(LARGE);
    let json = reply.json();
    assert_eq!(json["bytes"], bytes, "every byte reached the upstream");
    assert_eq!(json["sha256"], sha256.as_str(), "in order and unchanged");
    assert!(
        growth < MAX_GROWTH_KIB,
        "usher's peak memory grew by {growth} KiB while a {} MiB upload passed: it buffers",
        LARGE >> 20
    );
    assert!(usher.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_through_without_being_buffered() {
    let upstream = Upstream::start().await;
    let usher = UsherProcess::spawn(&binary_config(&[upstream.addr], "", ""), Logs::Text, &[]);
    assert_eq!(http1(usher.http_addr, get("/warm-up")).await.status, StatusCode::OK);
    let before = usher.status_kib("VmHWM");

    let response = http1_stream(usher.http_addr, get(&format!("/download?bytes={LARGE}"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().get("content-length").and_then(|v| v.to_str().ok()), Some(&*LARGE.to_string()));
    let received = digest_body(response.into_body()).await.expect("read the download");

    let growth = usher.status_kib("VmHWM").saturating_sub(before);
    assert_eq!(received, expected_digest(LARGE), "the download arrived whole, in order and unchanged");
    assert!(
        growth < MAX_GROWTH_KIB,
        "usher's peak memory grew by {growth} KiB while a {} MiB download passed: it buffers",
        LARGE >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let req = Request::get("/hops")
        .header("connection", "keep-alive, X-Hop-Secret")
        .header("x-hop-secret", "only-for-the-next-hop")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("proxy-authorization", "Basic dXNlcjpwYXNz")
        .header("proxy-connection", "keep-alive")
        .header("x-end-to-end", "kept")
        .body(empty())
        .expect("request");
    let echo = http1(http_addr(&usher), req).await.echo();
    for name in ["x-hop-secret", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection"] {
        assert_eq!(echo.header(name), None, "{name} crossed usher: {:?}", echo.headers);
    }
    for value in echo.all("connection") {
        assert!(!value.to_ascii_lowercase().contains("x-hop-secret"), "connection: {value}");
    }
    assert_eq!(echo.header("x-end-to-end"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_not_passed_back() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let reply = http1(http_addr(&usher), get("/hop-response")).await;
    assert_eq!(reply.status, StatusCode::OK);
    for name in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert_eq!(reply.header(name), None, "{name} came back through usher: {:?}", reply.headers);
    }
    for value in reply.headers.get_all("connection") {
        assert!(!value.to_str().unwrap_or("").contains("x-upstream-hop"), "connection: {value:?}");
    }
    assert_eq!(reply.header("x-end-to-end"), Some("kept"));
    assert_eq!(reply.text(), "hop\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_kept_and_via_and_forwarded_proto_and_host_are_added() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let req = Request::get("/")
        .header("host", "post.example.dk")
        .header("via", "1.0 corporate-proxy")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .body(empty())
        .expect("request");
    let reply = http1(http_addr(&usher), req).await;
    let via = reply.headers.get_all("via").iter().map(|v| v.to_str().unwrap_or("").to_string()).collect::<Vec<_>>();
    assert!(via.iter().any(|v| v.contains("usher")), "the response names usher in Via: {via:?}");
    let echo = reply.echo();
    assert_eq!(echo.all("host"), ["post.example.dk"], "the client's Host reaches the upstream unchanged");
    assert_eq!(echo.all("x-forwarded-host"), ["post.example.dk"]);
    assert_eq!(echo.all("x-forwarded-proto"), ["http"], "the client's own claim is replaced by what usher saw");
    assert_eq!(echo.all("via"), ["1.0 corporate-proxy", "1.1 usher"], "usher appends itself to Via");
}

/// Every header value the upstream saw, for scanning.
fn values(echo: &Echo) -> Vec<String> {
    echo.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_never_reaches_the_upstream_by_default() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let spoofed = || {
        Request::get("/who")
            .header("host", "post.example.dk")
            .header("x-forwarded-for", "10.9.8.7")
            .header("forwarded", "for=10.9.8.7;proto=https")
            .header("x-real-ip", "10.9.8.7")
            .body(empty())
            .expect("request")
    };
    let from_default = http1(http_addr(&usher), spoofed()).await.echo();
    let from_client_ip = http1_from(CLIENT_IP, http_addr(&usher), spoofed()).await.echo();
    for echo in [from_default, from_client_ip] {
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            assert_eq!(echo.header(name), None, "{name} reached the upstream: {:?}", echo.headers);
        }
        for header in values(&echo) {
            for address in ["127.0.0.1", "127.0.0.77", "10.9.8.7"] {
                assert!(!header.contains(address), "{address} reached the upstream in {header:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_is_forwarded_only_when_the_operator_opts_in() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.forward_client_ip = true;
    let usher = start_usher(config);
    let req = Request::get("/who")
        .header("x-forwarded-for", "10.9.8.7")
        .header("forwarded", "for=10.9.8.7")
        .header("x-real-ip", "10.9.8.7")
        .body(empty())
        .expect("request");
    let echo = http1_from(CLIENT_IP, http_addr(&usher), req).await.echo();
    assert_eq!(echo.all("x-forwarded-for"), ["127.0.0.77"], "exactly the client's own address");
    assert_eq!(echo.header("forwarded"), None);
    assert_eq!(echo.header("x-real-ip"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_answers_502_with_a_page() {
    let nobody = closed_addr();
    let usher = start_usher(Config::for_upstream(nobody.addr));
    let reply = http1(http_addr(&usher), Request::get("/").header("accept", "text/html").body(empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert!(reply.header("retry-after").is_some(), "a 502 says when to retry");
    assert!(reply.text().starts_with("<!doctype html>"), "{}", reply.text());
    assert!(reply.text().contains("temporarily unavailable"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_answers_502_with_json_to_api_clients() {
    let nobody = closed_addr();
    let usher = start_usher(Config::for_upstream(nobody.addr));
    let req = Request::get("/api/letters").header("accept", "application/json").body(empty()).expect("request");
    let reply = http1(http_addr(&usher), req).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json = reply.json();
    assert_eq!(json["status"], 502);
    assert_eq!(json["error"], "upstream_unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_answers_504() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.response_timeout = std::time::Duration::from_millis(300);
    let usher = start_usher(config);
    let reply = http1(http_addr(&usher), get("/slow?ms=5000")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.text());
    assert!(reply.text().contains("taking too long"), "{}", reply.text());

    let req = Request::get("/slow?ms=5000").header("accept", "application/json").body(empty()).expect("request");
    let json = http1(http_addr(&usher), req).await.json();
    assert_eq!(json["error"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_breaks_the_connection_answers_502() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let req = Request::get("/abort").header("accept", "application/json").body(empty()).expect("request");
    let reply = http1(http_addr(&usher), req).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["error"], "upstream_error");
    assert_eq!(http1(http_addr(&usher), get("/after")).await.status, StatusCode::OK, "usher recovers at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_address_among_two_costs_no_failed_request() {
    let upstream = Upstream::start().await;
    let dead = closed_addr();
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.addresses = vec![upstream_address(dead.addr), upstream_address(upstream.addr)];
    let usher = start_usher(config);
    for i in 0..12 {
        let reply = http1(http_addr(&usher), get(&format!("/letters/{i}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {}", reply.text());
    }
    assert_eq!(upstream.seen().len(), 12);
    let metrics = usher.metrics.render();
    assert!(metrics.contains("usher_requests_total{route=\"upstream\",code=\"200\"} 12\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_are_echoed_through_usher() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let addr = http_addr(&usher);
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), connect(addr).await)
        .await
        .expect("WebSocket handshake through usher");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    ws.send(Message::text("hej fra køen")).await.expect("send text");
    let echoed = ws.next().await.expect("an answer").expect("a message");
    assert_eq!(echoed, Message::text("hej fra køen"));

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(payload.clone())).await.expect("send binary");
    let echoed = ws.next().await.expect("an answer").expect("a message");
    assert_eq!(echoed.into_data().as_ref(), payload.as_slice());
    ws.close(None).await.expect("close");

    let seen = upstream.wait_for("/ws").await;
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert!(seen.header("sec-websocket-key").is_some());
}

/// A listening socket that never accepts and whose one-slot backlog is already full, so a
/// connection attempt to it hangs, as to an upstream behind a dead network path. Returned
/// with the connection that fills the backlog; both must stay alive for the test.
fn unresponsive_upstream() -> (socket2::Socket, Vec<std::net::TcpStream>, std::net::SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket.local_addr().expect("address").as_socket().expect("an IP address");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => return (socket, fillers, addr),
        }
    }
    panic!("the backlog of {addr} never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_accepts_answers_502_after_the_connect_timeout() {
    let (_socket, _fillers, addr) = unresponsive_upstream();
    let mut config = Config::for_upstream(addr);
    config.upstream.connect_timeout = std::time::Duration::from_millis(300);
    let usher = start_usher(config);
    let req = Request::get("/").header("accept", "application/json").body(empty()).expect("request");
    let reply = http1(http_addr(&usher), req).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.json()["error"], "upstream_unreachable");
    let metrics = usher.metrics.render();
    assert!(metrics.contains("usher_upstream_errors_total{kind=\"connect\"} 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_expect_100_continue_is_forwarded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let mut stream = connect(http_addr(&usher)).await;
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: post.example.dk\r\nContent-Length: 11\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("send the head");
    let mut interim = Vec::new();
    let read_interim = async {
        let mut byte = [0u8; 1];
        while !interim.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.expect("read"), 1, "closed before 100 Continue");
            interim.push(byte[0]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read_interim).await.expect("a 100 Continue");
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{:?}", String::from_utf8_lossy(&interim));

    stream.write_all(b"hello world").await.expect("send the body");
    let mut answer = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("the final answer")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).expect("a body");
    let json: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON");
    assert_eq!(json["bytes"], 11);
    assert_eq!(json["sha256"], sha256_hex(b"hello world").as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_upload_is_not_an_upstream_error() {
    use tokio::io::AsyncWriteExt;
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let mut stream = connect(http_addr(&usher)).await;
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: post.example.dk\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .expect("send the head");
    stream.write_all(&[b'x'; 1000]).await.expect("send part of the body");
    upstream.wait_for("/upload").await;
    drop(stream);
    let counted = "usher_requests_total{route=\"upstream\",code=\"400\"} 1\n";
    for _ in 0..100 {
        if usher.metrics.render().contains(counted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = usher.metrics.render();
    assert!(metrics.contains(counted), "the aborted request is counted as the client's: {metrics}");
    for kind in ["connect", "timeout", "protocol"] {
        assert!(metrics.contains(&format!("usher_upstream_errors_total{{kind=\"{kind}\"}} 0\n")), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_request_without_host_reaches_the_upstream_with_one() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let answer = raw_exchange(http_addr(&usher), b"GET /old-client HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = upstream.wait_for("/old-client").await;
    assert_eq!(seen.header("host"), Some(upstream.addr.to_string().as_str()), "the upstream's own address");
    assert_eq!(seen.header("x-forwarded-host"), None, "the client named no host");
    usher.stop();
}
