//! Protocols (DESIGN §1): the same request path serves HTTP/1.1 and HTTP/2, plain or TLS,
//! with ALPN choosing h2 when the client offers it. The upstream always gets HTTP/1.1.

mod support;

use http::uri::Scheme;
use http::{Request, StatusCode, Version};
use support::*;
use usher::Running;
use usher::config::Config;

/// usher with an https listener and a fresh certificate (kept alive by the caller).
fn usher_with_tls(upstream: &Upstream) -> (Running, TestCert) {
    let cert = test_cert();
    let mut config = Config::for_upstream(upstream.addr);
    config.listen.https = Some("127.0.0.1:0".parse().expect("address"));
    config.listen.tls = Some(cert.files.clone());
    (start_usher(config), cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_served_over_plain_tcp() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let addr = http_addr(&usher);

    let reply = h2c(addr, get("/inbox?page=1")).await;
    assert_eq!(reply.version, Version::HTTP_2);
    let echo = reply.echo();
    assert_eq!(echo.version, "HTTP/1.1", "usher speaks HTTP/1.1 to the upstream");
    assert_eq!((echo.path.as_str(), echo.query.as_deref()), ("/inbox", Some("page=1")));
    assert_eq!(echo.all("host"), [addr.to_string()], ":authority becomes the upstream's Host");
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));

    let body = vec![7u8; 300_000];
    let req = Request::post("/letters").body(full(body.clone())).expect("request");
    let echo = h2c(addr, req).await.echo();
    assert_eq!((echo.method.as_str(), echo.body_bytes), ("POST", body.len() as u64));
    assert_eq!(echo.body_sha256, sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_on_one_connection_are_served_concurrently() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let addr = http_addr(&usher);
    let sender = h2_sender(connect(addr).await).await;
    let requests = (0..20).map(|i| {
        let mut sender = sender.clone();
        tokio::spawn(async move {
            h2_send(&mut sender, get(&format!("/slow?ms=200&n={i}")), Scheme::HTTP, &addr.to_string()).await
        })
    });
    for request in requests.collect::<Vec<_>>() {
        let reply = request.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.text(), "slept\n");
    }
    assert_eq!(upstream.seen().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_negotiates_h2_and_serves_requests() {
    let upstream = Upstream::start().await;
    let (usher, cert) = usher_with_tls(&upstream);
    let addr = usher.https_addr.expect("usher listens for https");

    let stream = tls_connect(addr, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(negotiated(&stream).as_deref(), Some("h2"));
    let mut sender = h2_sender(stream).await;
    let authority = format!("localhost:{}", addr.port());
    let reply = h2_send(&mut sender, get("/secure"), Scheme::HTTPS, &authority).await;
    assert_eq!(reply.version, Version::HTTP_2);
    let echo = reply.echo();
    assert_eq!(echo.all("host"), [authority.as_str()]);
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("via"), Some("1.1 usher (tls)"));

    let body = vec![42u8; 70_000];
    let req = Request::put("/secure/upload").body(full(body.clone())).expect("request");
    let echo = h2_send(&mut sender, req, Scheme::HTTPS, &authority).await.echo();
    assert_eq!(echo.body_sha256, sha256_hex(&body), "a second stream on the same TLS connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http1_clients_that_do_not_offer_h2() {
    let upstream = Upstream::start().await;
    let (usher, cert) = usher_with_tls(&upstream);
    let addr = usher.https_addr.expect("usher listens for https");

    let stream = tls_connect(addr, &cert, &[b"http/1.1"]).await;
    assert_eq!(negotiated(&stream).as_deref(), Some("http/1.1"));
    let req = Request::get("/secure").header("host", "post.example.dk").body(empty()).expect("request");
    let reply = collect_reply(http1_stream_on(stream, req, "post.example.dk").await).await;
    assert_eq!(reply.version, Version::HTTP_11);
    let echo = reply.echo();
    assert_eq!(echo.all("host"), ["post.example.dk"]);
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_alpn_falls_back_to_http1() {
    let upstream = Upstream::start().await;
    let (usher, cert) = usher_with_tls(&upstream);
    let addr = usher.https_addr.expect("usher listens for https");

    let stream = tls_connect(addr, &cert, &[]).await;
    assert_eq!(negotiated(&stream), None);
    let reply = collect_reply(http1_stream_on(stream, get("/plain-tls"), "localhost").await).await;
    assert_eq!(reply.echo().path, "/plain-tls");
}
