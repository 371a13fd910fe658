//! Privacy on the proxy's error paths (DESIGN §2): with debug logging on, a client whose
//! requests time out, break, hit a dead upstream address, speak HTTP/2, send garbage or hang
//! up mid-upload leaves its raw IP address in no log line and no metric.
//!
//! The client connects from 127.0.0.77, an address usher never uses itself, so any trace of it
//! can only have come from the client. usher's own addresses (127.0.0.1: its listeners and its
//! upstreams) may appear, but only in the fields that announce them.

mod support;

use http::uri::Scheme;
use http::{Request, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use support::*;

const CLIENT: &str = "127.0.0.77";

/// Removes from a JSON log line the fields in which usher names its own addresses: the
/// listener announcements and the upstream address that a warning is about.
fn without_own_addresses(
    mut line: serde_json::Map<String, Value>,
    own: &[SocketAddr],
) -> serde_json::Map<String, Value> {
    let is_own = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|a| own.iter().any(|o| o.to_string() == a));
    let announces = line.get("message").and_then(Value::as_str).is_some_and(|m| m.starts_with("listening ("));
    if announces && is_own(line.get("addr")) {
        line.remove("addr");
    }
    if is_own(line.get("upstream")) {
        line.remove("upstream");
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_appears_in_no_log_line_and_no_metric_on_any_error_path() {
    let upstream = Upstream::start().await;
    let closed = closed_addr();
    let dead = closed.addr;
    let config = binary_config(&[dead, upstream.addr], "", "response_timeout = \"300ms\"");
    let mut usher = UsherProcess::spawn(&config, Logs::Json, &[("USHER_LOG", "debug")]);
    let (addr, admin) = (usher.http_addr, usher.admin_addr);
    let client = CLIENT.parse().expect("client address");

    // Successes, a client's own claims about its address, and every kind of failure.
    let claims = Request::get("/inbox")
        .header("x-forwarded-for", CLIENT)
        .header("forwarded", format!("for={CLIENT}"))
        .body(empty())
        .expect("request");
    assert_eq!(http1_from(client, addr, claims).await.status, StatusCode::OK);
    let upload = Request::post("/upload").body(full(vec![1u8; 10_000])).expect("request");
    assert_eq!(http1_from(client, addr, upload).await.status, StatusCode::OK);
    assert_eq!(http1_from(client, addr, get("/slow?ms=3000")).await.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(http1_from(client, addr, get("/abort")).await.status, StatusCode::BAD_GATEWAY);
    let mut h2 = h2_sender(connect_from(client, addr).await).await;
    assert_eq!(h2_send(&mut h2, get("/h2"), Scheme::HTTP, &addr.to_string()).await.status, StatusCode::OK);
    drop(h2);
    let answer = raw_exchange_on(connect_from(client, addr).await, b"NOT HTTP\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let cut = raw_exchange_on(
        connect_from(client, addr).await,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort",
    );
    // The body is incomplete; hang up mid-body so usher sees a broken client connection.
    drop(tokio::time::timeout(std::time::Duration::from_millis(200), cut).await);
    let metrics = http1_from(client, admin, get("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);

    usher.signal("TERM");
    assert_eq!(usher.exit_status().await.code(), Some(0));
    let logs = usher.logs();

    assert!(logs.iter().any(|l| l.contains("\"DEBUG\"")), "debug logging is on, so the test sees everything");
    let names_dead = |l: &&String| l.contains(&format!("\"upstream\":\"{dead}\""));
    assert!(logs.iter().any(|l| names_dead(&l)), "the dead upstream address is logged, so the exclusion is tested");
    let own = [addr, admin, dead, upstream.addr];
    for line in &logs {
        assert!(!line.contains(CLIENT), "a log line names the client's address: {line}");
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
            panic!("not a JSON log line: {line}");
        };
        let rest = Value::Object(without_own_addresses(fields, &own)).to_string();
        assert!(!rest.contains("127.0.0.1"), "a log line names an address outside its announcement field: {line}");
    }
    let text = metrics.text();
    assert!(!text.contains(CLIENT) && !text.contains("127.0.0.1"), "a metric names an address:\n{text}");
    for seen in upstream.seen() {
        assert!(seen.headers.iter().all(|(_, v)| !v.contains(CLIENT)), "the upstream saw the client: {seen:?}");
    }
}
