//! What bounds usher's side of the upstream: a streamed body that stops moving, in either
//! direction, ends after `upstream.body_idle_timeout`; a worker opens at most
//! `upstream.max_connections_per_worker` upstream connections, and a request that finds them
//! all busy is answered 503 with `Retry-After` at once instead of piling up connects.

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use usher::config::Config;

fn usher_with_body_idle_timeout(upstream: &Upstream) -> usher::Running {
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.body_idle_timeout = Duration::from_millis(300);
    start_usher(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_ended() {
    let upstream = Upstream::start().await;
    let usher = usher_with_body_idle_timeout(&upstream);
    let addr = http_addr(&usher);

    let response = http1_stream(addr, get("/stall?bytes=10")).await;
    assert_eq!(response.status(), StatusCode::OK, "the head arrived");
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("usher ended the stalled body instead of waiting for ever");
    assert!(body.is_err(), "the body ends with an error, not as if complete");
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_body_stalled_total", &[("from", "upstream")]), 1.0, "{text}");

    // A body that keeps moving is not cut, however long it runs.
    let reply = http1(addr, get("/download?bytes=5000000")).await;
    assert_eq!(reply.body.len(), 5_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_stalls_is_ended_with_408() {
    let upstream = Upstream::start().await;
    let usher = usher_with_body_idle_timeout(&upstream);
    let addr = http_addr(&usher);

    // 10 of the 100 announced bytes, then nothing.
    let mut stream = connect(addr).await;
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let answer = raw_exchange_on(stream, b"").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_body_stalled_total", &[("from", "client")]), 1.0, "{text}");

    // An upload that keeps coming is forwarded whole beside it.
    let reply = http1(addr, Request::post("/upload").body(full(vec![7u8; 300_000])).expect("request")).await;
    assert_eq!(reply.json()["bytes"], 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_every_upstream_connection_busy_answers_503() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.workers = 1;
    config.upstream.max_connections_per_worker = 1;
    config.upstream.pool_per_worker = 1;
    let usher = start_usher(config);
    let addr = http_addr(&usher);

    // The one upstream connection is busy with a slow request...
    let slow = tokio::spawn(async move { http1(addr, get("/slow?ms=1500")).await });
    upstream.wait_for("/slow").await;
    // ...so the next request is answered at once, and never reaches the upstream.
    let req = Request::get("/busy").header("accept", "application/json").body(empty()).expect("request");
    let busy = http1(addr, req).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.header("retry-after"), Some("5"));
    assert_eq!(busy.json()["error"], "upstream_busy");
    assert!(upstream.seen_path("/busy").is_empty());
    let text = metrics_text(usher.admin_addr).await;
    assert_eq!(metric(&text, "usher_upstream_saturated_total", &[]), 1.0, "{text}");
    assert_eq!(metric(&text, "usher_upstream_connections", &[]), 1.0, "{text}");

    // Once the slow request is done, its connection serves the next one.
    assert_eq!(slow.await.expect("slow request").status, StatusCode::OK);
    assert_eq!(http1(addr, get("/after")).await.status, StatusCode::OK);
}
