//! Client connections: `listen.header_read_timeout` bounds how long a connection may sit
//! without sending a request (slowloris), `listen.idle_timeout` how long it may sit after its
//! last one (HTTP/2 included), `listen.max_connections` caps open connections, with the
//! surplus waiting in the backlog rather than being refused, and
//! `listen.max_connections_per_client` caps one client's, closing the surplus at once.

mod support;

use http::StatusCode;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use usher::config::Config;

/// usher in front of `upstream`, with a short header read timeout.
fn usher_with_short_header_timeout(upstream: &Upstream) -> usher::Running {
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.header_read_timeout = Duration::from_millis(400);
    start_usher(config)
}

/// Reads until the server closes the connection (at most 10 s); returns what it sent.
async fn closed_by_server<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("usher kept a connection open that sent no complete request");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_sends_nothing_is_closed() {
    let upstream = Upstream::start().await;
    let usher = usher_with_short_header_timeout(&upstream);
    let mut stream = connect(http_addr(&usher)).await;
    closed_by_server(&mut stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_stalls_in_the_http2_preface_is_closed() {
    let upstream = Upstream::start().await;
    let usher = usher_with_short_header_timeout(&upstream);
    let mut stream = connect(http_addr(&usher)).await;
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    closed_by_server(&mut stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_that_stalls_in_the_request_head_is_closed() {
    let upstream = Upstream::start().await;
    let usher = usher_with_short_header_timeout(&upstream);
    let mut stream = connect(http_addr(&usher)).await;
    stream.write_all(b"GET /inbox HTTP/1.1\r\nHost: post.example.dk\r\nX-Slow: ").await.expect("write");
    closed_by_server(&mut stream).await;
    assert!(upstream.seen().is_empty(), "an incomplete head is never forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let upstream = Upstream::start().await;
    let usher = usher_with_short_header_timeout(&upstream);
    let mut stream = connect(http_addr(&usher)).await;
    stream.write_all(b"GET /once HTTP/1.1\r\nHost: post.example.dk\r\n\r\n").await.expect("write");
    let answer = String::from_utf8_lossy(&closed_by_server(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "the request on it was answered first: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connection_that_sends_nothing_after_the_handshake_is_closed() {
    let upstream = Upstream::start().await;
    let cert = test_cert();
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.header_read_timeout = Duration::from_millis(400);
    config.listen.https = Some("127.0.0.1:0".parse().expect("address"));
    config.listen.tls = Some(cert.files.clone());
    let usher = start_usher(config);
    let mut stream = tls_connect(usher.https_addr.expect("https"), &cert, &[b"h2", b"http/1.1"]).await;
    closed_by_server(&mut stream).await;
}

/// Opens `n` connections that never send anything.
async fn silent_connections(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(connect(addr).await);
    }
    streams
}

/// A burst of silent connections (slowloris opens thousands in a second) is not closed in one
/// instant, which would hold the worker for the whole batch of closes, but spread over the
/// last quarter of `header_read_timeout`: none earlier, none kept past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_silent_connections_is_closed_spread_out_within_the_timeout() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    let timeout = Duration::from_secs(2);
    config.listen.header_read_timeout = timeout;
    let usher = start_usher(config);
    let opened = tokio::time::Instant::now();
    let closes: Vec<_> = silent_connections(http_addr(&usher), 60)
        .await
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                closed_by_server(&mut stream).await;
                opened.elapsed()
            })
        })
        .collect();
    let mut closed = Vec::new();
    for close in closes {
        closed.push(close.await.expect("reader"));
    }
    closed.sort();
    let (first, last) = (closed[0], closed[closed.len() - 1]);
    // The shares are in (0.75, 1]: closes from 1.5 s, the last before 2 s (plus scheduling).
    assert!(first >= timeout.mul_f64(0.7), "closed before three quarters of the timeout: {closed:?}");
    assert!(last <= timeout + Duration::from_secs(1), "kept past the timeout: {closed:?}");
    assert!(last - first >= Duration::from_millis(200), "closed all at once: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_lock_everyone_else_out() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.header_read_timeout = Duration::from_millis(400);
    config.listen.max_connections = 2;
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let _silent = silent_connections(addr, 2).await;
    // Both slots are held by clients that say nothing; they must be let go so this one is served.
    let reply = tokio::time::timeout(Duration::from_secs(10), http1(addr, get("/me-too")))
        .await
        .expect("a real client was locked out by silent connections");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_instead_of_being_refused() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.max_connections = 1;
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    // The one allowed connection is busy with a slow request...
    let first = tokio::spawn(async move { http1(addr, get("/slow?ms=600")).await });
    upstream.wait_for("/slow").await;
    // ...so the next one queues, and is served once the first is done.
    let second = tokio::time::timeout(Duration::from_secs(10), http1(addr, get("/queued")))
        .await
        .expect("the queued connection was never served");
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(first.await.expect("first request").status, StatusCode::OK);
    let order: Vec<String> = upstream.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(order, ["/slow", "/queued"]);
}

const CROWDED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 21));
const NEIGHBOUR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 22));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_connection_cap_is_closed_and_another_client_is_served() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.max_connections_per_client = 2;
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    // Two keep-alive connections held open by one client, each answered once (so usher has
    // surely accepted and counted both)...
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(CROWDED, addr).await;
        stream.write_all(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.expect("an answer");
        assert_eq!(&answer, b"HTTP/1.1 200");
        held.push(stream);
    }
    // ...so its third is closed without an answer, before it can send anything useful.
    let third = b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let refused = raw_exchange_on(connect_from(CROWDED, addr).await, third).await;
    assert_eq!(refused, "", "the connection over the cap is closed at once, unanswered");
    assert!(upstream.seen_path("/third").is_empty());

    // Another client (another key) is served as usual.
    let reply = http1_from(NEIGHBOUR, addr, get("/neighbour")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = metrics_text(usher.admin_addr).await;
    assert!(metric(&text, "usher_connections_refused_total", &[("reason", "per_client")]) >= 1.0, "{text}");

    // A closed connection gives its place back.
    drop(held);
    eventually("the client is let in again once it closed a connection", Duration::from_secs(5), || async {
        let stream = connect_from(CROWDED, addr).await;
        try_http1_on(stream, get("/again"), &addr.to_string()).await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connection_is_closed_after_its_last_request() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.idle_timeout = Duration::from_millis(300);
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    let io = hyper_util::rt::TokioIo::new(connect(addr).await);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, ReqBody>(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    // A request that runs longer than the idle timeout is not cut short: it is in flight.
    let slow = h2_send(&mut sender, get("/slow?ms=700"), http::uri::Scheme::HTTP, &addr.to_string()).await;
    assert_eq!(slow.status, StatusCode::OK);
    let next = h2_send(&mut sender, get("/next"), http::uri::Scheme::HTTP, &addr.to_string()).await;
    assert_eq!(next.status, StatusCode::OK, "the connection serves requests until it goes idle");

    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("usher closed the idle HTTP/2 connection")
        .expect("the client's connection task")
        .expect("closed with a GOAWAY, not an error");
    let text = metrics_text(usher.admin_addr).await;
    assert!(metric(&text, "usher_connections_closed_total", &[("reason", "idle")]) >= 1.0, "{text}");
    // A new connection is served as usual.
    assert_eq!(h2c(addr, get("/fresh")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_proxy_protocol_the_cap_counts_the_client_the_header_names() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.proxy_protocol = true;
    config.client.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    config.listen.max_connections_per_client = 1;
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let header = |client: &str| usher::proxy_protocol::encode_v2(client.parse().expect("address"), addr);

    // One balancer (one peer address) carries a connection of 192.0.2.50, held open...
    let mut held = connect_from(CROWDED, addr).await;
    let mut first = header("192.0.2.50:40000");
    first.extend_from_slice(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n");
    held.write_all(&first).await.expect("write");
    let mut answer = [0u8; 12];
    held.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");

    // ...so a second of the same client is closed, while another client through the same
    // balancer is served: the cap is on the named client, not on the balancer.
    let request = b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut same = header("192.0.2.50:40001");
    same.extend_from_slice(request);
    assert_eq!(raw_exchange_on(connect_from(CROWDED, addr).await, &same).await, "");
    let mut other = header("192.0.2.51:40000");
    other.extend_from_slice(request);
    let served = raw_exchange_on(connect_from(CROWDED, addr).await, &other).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_forwarding_in_headers_is_not_capped_as_one_client() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.client.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
    config.listen.max_connections_per_client = 1;
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    // The balancer's connections carry many clients: a held one does not shut out the next.
    let mut held = connect_from(CROWDED, addr).await;
    held.write_all(b"GET /held HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.50\r\n\r\n").await.expect("write");
    let mut answer = [0u8; 12];
    held.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    let next = b"GET /next HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 192.0.2.50\r\nConnection: close\r\n\r\n";
    let served = raw_exchange_on(connect_from(CROWDED, addr).await, next).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    drop(held);
}

/// One HTTP/2 frame header and payload, written by hand as a flooding client would.
fn h2_frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_settings_or_ping_flood_ends_its_connection_its_client_is_sidelined_and_others_are_served() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let addr = http_addr(&usher);
    for (kind, payload) in [(0x4u8, vec![0u8, 3, 0, 0, 0, 100]), (0x6u8, vec![7u8; 8])] {
        let mut stream = connect(addr).await;
        let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for _ in 0..2_000 {
            flood.extend(h2_frame(kind, 0, &payload));
        }
        // The server may close before it has read everything: a failed write is the point.
        let _ = stream.write_all(&flood).await;
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 65_536];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a flood of frame type {kind} ends its connection");
        // A client beside it is served over HTTP/2.
        assert_eq!(h2c(addr, get("/after-flood")).await.status, 200);
    }
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_connections_closed_total", &[("reason", "h2_control_flood")]), 2.0);
    // The flood made its client (all of these come from 127.0.0.1) a refused one: every later
    // connection of it (the first client beside, the second flood, the second client) was
    // served by the refused worker, and still answered.
    assert_eq!(metric(&text, "usher_refused_worker_connections_total", &[]), 3.0);
    usher.stop();
}

/// A raw connection with a small receive buffer, so that a client that does not read fills
/// up after a few hundred kilobytes rather than many megabytes.
async fn small_window(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_a_slow_reader_is_not() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.idle_timeout = Duration::from_secs(2);
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    // More than the kernel buffers on both sides hold (several MiB on loopback), so usher's
    // writes to both clients wait.
    const BYTES: usize = 64 << 20;
    let request = format!("GET /download?bytes={BYTES} HTTP/1.1\r\nHost: post.example.dk\r\n\r\n");

    // It asks for a large download and never reads: once its socket is full, its window
    // stays shut; after idle_timeout the connection is aborted.
    let mut stuck = small_window(addr).await;
    stuck.write_all(request.as_bytes()).await.expect("write");
    // The slow one reads 16 KiB every 200 ms, well within idle_timeout each time, for as long
    // as it takes the stuck one to be closed (and at least twice idle_timeout).
    let mut slow = small_window(addr).await;
    slow.write_all(request.as_bytes()).await.expect("write");
    let mut received = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let started = std::time::Instant::now();
    let closed = || async {
        metric(&metrics_text(usher.admin_addr).await, "usher_connections_closed_total", &[("reason", "send_stall")])
    };
    loop {
        match slow.read(&mut buf).await {
            Ok(0) | Err(_) => panic!("the slow reader was cut off after {received} bytes"),
            Ok(n) => received += n,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(4) && closed().await >= 1.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the stuck client's connection was never closed");
    }
    assert!(received < BYTES, "the download is still going: {received} of {BYTES}");
    assert_eq!(closed().await, 1.0, "the stuck client's connection, and only it, was closed");
    // What the stuck client finds when it reads at last: part of the body, then the end.
    let answer = closed_by_server(&mut stuck).await;
    assert!(answer.starts_with(b"HTTP/1.1 200") && answer.len() < BYTES, "{} bytes", answer.len());
    // The slow reader gets the rest, and its connection was never closed.
    tokio::time::timeout(Duration::from_secs(30), async {
        while received < BYTES {
            let n = slow.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the end");
            received += n;
        }
    })
    .await
    .expect("the rest in time");
}
