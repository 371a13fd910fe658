//! Malformed input: a broken request gets a clear 4xx and its connection closed, and usher
//! goes on serving everyone else.

mod support;

use http::StatusCode;
use support::*;

async fn still_serving(upstream: &Upstream, usher: &usher::Running) {
    let reply = http1(http_addr(usher), get("/after-the-bad-one")).await;
    assert_eq!(reply.status, StatusCode::OK, "usher goes on serving");
    assert!(upstream.seen().iter().all(|s| s.path == "/after-the-bad-one"), "nothing malformed was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_request_line_gets_400_and_usher_keeps_serving() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let answer = raw_exchange(http_addr(&usher), b"THIS IS NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(raw_status(&answer), Some(400), "{answer:?}");
    still_serving(&upstream, &usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_noise_gets_400_and_usher_keeps_serving() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let noise: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(97) % 256) as u8).collect();
    let answer = raw_exchange(http_addr(&usher), &noise).await;
    assert_eq!(raw_status(&answer), Some(400), "{answer:?}");
    still_serving(&upstream, &usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_header_gets_400_and_usher_keeps_serving() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let answer = raw_exchange(http_addr(&usher), b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n").await;
    assert_eq!(raw_status(&answer), Some(400), "{answer:?}");
    still_serving(&upstream, &usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_gets_431_and_usher_keeps_serving() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let mut request = b"GET / HTTP/1.1\r\nHost: post.example.dk\r\n".to_vec();
    // 24 KiB of headers: over the default `listen.max_header_bytes` of 16 KiB.
    for i in 0..24 {
        request.extend_from_slice(format!("x-filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let answer = raw_exchange(http_addr(&usher), &request).await;
    assert_eq!(raw_status(&answer), Some(431), "{answer:?}");
    still_serving(&upstream, &usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_within_the_limit_is_forwarded() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    // About 12 KiB of headers: under the 16 KiB default, so it must not be refused.
    let mut req = get("/big-but-fine");
    for i in 0..12 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).expect("name"),
            http::HeaderValue::from_str(&"b".repeat(1000)).expect("value"),
        );
    }
    let echo = http1(http_addr(&usher), req).await.echo();
    assert_eq!(echo.header("x-filler-11").map(str::len), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_http2_header_list_gets_431_and_the_connection_keeps_serving() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let addr = http_addr(&usher);
    let mut sender = h2_sender(connect(addr).await).await;
    let mut req = get("/too-big");
    for i in 0..24 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).expect("name"),
            http::HeaderValue::from_str(&"c".repeat(1000)).expect("value"),
        );
    }
    let reply = h2_send(&mut sender, req, http::uri::Scheme::HTTP, &addr.to_string()).await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let reply = h2_send(&mut sender, get("/after-the-bad-one"), http::uri::Scheme::HTTP, &addr.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "the same HTTP/2 connection goes on serving");
    still_serving(&upstream, &usher).await;
}
