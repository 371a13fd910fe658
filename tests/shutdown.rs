//! Graceful shutdown (DESIGN §7, §9): on SIGTERM usher stops accepting at once, lets
//! in-flight requests finish within `listen.shutdown_grace`, and exits 0.

mod support;

use http::StatusCode;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::net::TcpStream;
use usher::config::Config;

/// Waits (at most 10 s) until connecting to `addr` is refused.
async fn until_refused(addr: SocketAddr) {
    let refused = async {
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
                // Caught in the backlog of a listener as it closed, or accepted by the kernel
                // just before: try again.
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("connecting to {addr} failed oddly: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .unwrap_or_else(|_| panic!("{addr} still accepts connections after shutdown began"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_lets_in_flight_requests_finish_and_exits_zero() {
    let upstream = Upstream::start().await;
    let mut usher = UsherProcess::spawn(&binary_config(&[upstream.addr], "", ""), Logs::Text, &[]);
    let addr = usher.http_addr;
    let in_flight = tokio::spawn(async move { http1(addr, get("/slow?ms=2000")).await });
    upstream.wait_for("/slow").await;

    usher.signal("TERM");
    until_refused(addr).await;
    // The request takes two seconds; a listener that closed only when the process exited
    // would have let it finish first.
    assert!(!in_flight.is_finished(), "the listener closed only after the in-flight request ended");

    let reply = in_flight.await.expect("the in-flight request");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "slept\n");
    let status = usher.exit_status().await;
    assert_eq!(status.code(), Some(0), "logs:\n{}", usher.logs().join("\n"));
    let logs = usher.logs().join("\n");
    assert!(logs.contains("SIGTERM"), "the shutdown is logged:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_how_long_in_flight_requests_may_run() {
    let upstream = Upstream::start().await;
    let config = binary_config(&[upstream.addr], "shutdown_grace = \"300ms\"", "response_timeout = \"5m\"");
    let mut usher = UsherProcess::spawn(&config, Logs::Text, &[]);
    let addr = usher.http_addr;
    // Far longer than the 30 s that `exit_status` waits: only the grace period can end it.
    let in_flight = tokio::spawn(async move { try_http1(addr, get("/slow?ms=120000")).await });
    upstream.wait_for("/slow").await;

    usher.signal("TERM");
    let status = usher.exit_status().await;
    assert_eq!(status.code(), Some(0), "logs:\n{}", usher.logs().join("\n"));
    let outcome = in_flight.await.expect("the in-flight request");
    assert!(outcome.is_err(), "a request cut off by the grace period gets no answer: {outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_as_soon_as_shutdown_begins() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let (addr, admin) = (http_addr(&usher), usher.admin_addr);
    assert_eq!(http1(admin, get("/readyz")).await.status, StatusCode::OK);
    let in_flight = tokio::spawn(async move { http1(addr, get("/slow?ms=1500")).await });
    upstream.wait_for("/slow").await;

    usher.shutdown();
    let readyz = http1(admin, get("/readyz")).await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE, "a load balancer must stop sending clients");
    assert_eq!(http1(admin, get("/healthz")).await.status, StatusCode::OK, "still alive while draining");
    until_refused(addr).await;

    assert_eq!(in_flight.await.expect("the in-flight request").status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(move || usher.wait()))
        .await
        .expect("usher finishes once the in-flight request is done")
        .expect("wait");
    until_refused(admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.shutdown_grace = Duration::from_secs(120);
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    // An HTTP/1.1 and an HTTP/2 connection, each used once and then left open and idle.
    let (mut h1, h1_conn) =
        hyper::client::conn::http1::handshake::<_, ReqBody>(hyper_util::rt::TokioIo::new(connect(addr).await))
            .await
            .expect("HTTP/1.1 handshake");
    let h1_conn = tokio::spawn(h1_conn);
    let mut req = get("/one");
    req.headers_mut().insert("host", addr.to_string().parse().expect("host"));
    let response = h1.send_request(req).await.expect("HTTP/1.1 request");
    assert_eq!(collect_reply(response).await.status, StatusCode::OK);
    let mut h2 = h2_sender(connect(addr).await).await;
    assert_eq!(h2_send(&mut h2, get("/two"), http::uri::Scheme::HTTP, &addr.to_string()).await.status, StatusCode::OK);

    // Far shorter than the 120 s grace: idle connections are closed, not waited for.
    tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(move || usher.stop()))
        .await
        .expect("usher stopped without waiting for idle connections")
        .expect("stop");
    let _ = tokio::time::timeout(Duration::from_secs(5), h1_conn).await.expect("usher closed the idle connection");
    drop((h1, h2));
}
