//! Privacy (DESIGN §2): the real binary, logging everything at debug level in JSON, takes a
//! spike of visitors through a small room; none of their addresses shows up in a log line,
//! in `/metrics`, in a cookie (as text or as bytes inside the decoded cookie), or in anything
//! the upstream receives.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const CLIENTS: u8 = 50;

fn client(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 9, n))
}

/// Every textual form of a client address that must never appear: dotted (which covers the
/// whole 127.0.9.0/24), the 32-bit number in decimal, and in hex.
fn forbidden_texts(n: u8) -> Vec<String> {
    let number = u32::from_be_bytes([127, 0, 9, n]);
    vec!["127.0.9.".to_string(), number.to_string(), format!("{number:08x}"), format!("{number:08X}")]
}

fn leaks<'a>(text: &str, forbidden: &'a [String]) -> Option<&'a str> {
    forbidden.iter().find(|f| text.contains(f.as_str())).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_never_reach_logs_metrics_cookies_or_the_upstream() {
    let backend = Upstream::start_mailbox().await;
    let config = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nworkers = 2\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream]\naddresses = [\"{}\"]\n\n\
         [limits]\nrequests_per_second = 100000\nburst = 100000\njoins_per_minute = 100000\njoin_burst = 100000\n\n\
         [[room]]\nname = \"mailbox\"\npaths = [\"/\"]\nmax_active = 3\nadmit_per_minute = 6000\n\
         tick = \"50ms\"\nwaiter_ttl = \"30s\"\nlogout_path = \"/logout\"\n",
        backend.addr
    );
    let mut usher = UsherProcess::spawn(
        &config,
        Logs::Json,
        &[("USHER_LOG", "debug"), ("USHER_SECRET", "privacy-test-secret-0123456789-abcdefghijklmnop")],
    );
    let addr = usher.http_addr;

    // The spike: every visitor joins at once, polls its place, uses its session, logs out.
    let barrier = Arc::new(tokio::sync::Barrier::new(usize::from(CLIENTS)));
    let mut tasks = Vec::new();
    for n in 1..=CLIENTS {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = Visitor::new(client(n), addr);
            v.connect().await;
            barrier.wait().await;
            let joined = if n % 2 == 0 { v.page("/inbox?folder=new").await } else { v.api("/inbox?folder=new").await };
            if !joined.forwarded() {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let status = v.status().await;
                    match status["status"].as_str() {
                        Some("admitted") => break,
                        Some("waiting") => {}
                        _ => panic!("{}: unexpected status {status}", v.ip),
                    }
                    assert!(Instant::now() < deadline, "{} never got in", v.ip);
                }
                assert!(v.page("/inbox?folder=new").await.forwarded());
            }
            assert!(v.api("/letters/1").await.forwarded());
            assert!(v.api("/logout").await.forwarded());
            (n, v.received)
        }));
    }
    let mut cookies = Vec::new();
    for task in tasks {
        cookies.push(tokio::time::timeout(Duration::from_secs(90), task).await.expect("in time").expect("visitor"));
    }
    // Less friendly visitors, so the error paths log too.
    let mut forger = Visitor::new(client(201), addr);
    forger.jar.insert(named(PASS, "mailbox"), "forged-pass".into());
    forger.jar.insert(named(TICKET, "mailbox"), b64(&random_bytes(42)));
    let forged = forger.page("/inbox").await;
    cookies.push((201, forger.received.clone()));
    assert!(forged.status.is_success() || forged.status.as_u16() == 503);
    let bad_header = b"GET /inbox HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n";
    let garbage = raw_exchange_on(connect_from(client(202), addr).await, bad_header).await;
    assert!(garbage.starts_with("HTTP/1.1 4"), "a malformed request is refused: {garbage:?}");

    let metrics = metrics_text(usher.admin_addr).await;
    usher.signal("TERM");
    assert!(usher.exit_status().await.success(), "usher stops cleanly");
    let logs = usher.logs();

    let forbidden: Vec<String> = (1..=CLIENTS).chain([201, 202]).flat_map(forbidden_texts).collect();

    // Logs: debug level was really on, and the room's work was logged.
    assert!(logs.iter().any(|l| l.contains("\"level\":\"DEBUG\"")), "no debug lines: is USHER_LOG honoured?");
    assert!(logs.iter().any(|l| l.contains("waiter claimed its turn")), "the admissions were not logged");
    // Addresses that may be logged (usher's own listener) are found by this scan.
    assert!(logs.iter().any(|l| l.contains(&addr.to_string())), "the scan reads the lines addresses would be in");
    for line in &logs {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not a JSON log line: {line}");
        if let Some(leak) = leaks(line, &forbidden) {
            panic!("a client address ({leak}) is in the log: {line}");
        }
    }

    // Metrics.
    assert!(metric(&metrics, "usher_admitted_total", &[("room", "mailbox")]) >= f64::from(CLIENTS));
    if let Some(leak) = leaks(&metrics, &forbidden) {
        let line = metrics.lines().find(|l| l.contains(leak)).unwrap_or_default();
        panic!("a client address ({leak}) is in /metrics: {line}");
    }

    // Cookies, as text and as the bytes inside them.
    let mut usher_cookies = 0;
    for (n, received) in &cookies {
        let address = [127, 0, 9, *n];
        let reversed = [*n, 9, 0, 127];
        for set_cookie in received {
            if let Some(leak) = leaks(set_cookie, &forbidden) {
                panic!("a client address ({leak}) is in a cookie: {set_cookie}");
            }
            let value = cookie_value(set_cookie);
            if set_cookie.starts_with("usher_") && !value.is_empty() {
                usher_cookies += 1;
                let bytes = unb64(value);
                assert!(
                    !bytes.windows(4).any(|w| w == address || w == reversed),
                    "the address of 127.0.9.{n} is inside a cookie: {set_cookie}"
                );
            }
        }
    }
    assert!(usher_cookies >= usize::from(CLIENTS), "too few cookies to check ({usher_cookies})");

    // The upstream.
    let seen = backend.seen();
    assert!(seen.len() >= 2 * usize::from(CLIENTS), "the upstream saw only {} requests", seen.len());
    for s in &seen {
        if let Some(leak) = leaks(&s.target(), &forbidden) {
            panic!("a client address ({leak}) reached the upstream in the path: {}", s.target());
        }
        for (name, value) in &s.headers {
            if let Some(leak) = leaks(value, &forbidden) {
                panic!("a client address ({leak}) reached the upstream in {name}: {value}");
            }
        }
    }
}
