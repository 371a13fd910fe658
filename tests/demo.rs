//! The first of the two commands (README): `usher demo` starts a demo mailbox with usher in
//! front of it, prints where to go, queues a browser and lets it in, and prints the console
//! with a token that works for this run only.

mod support;

use http::{Request, StatusCode};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A loopback address free right now.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_its_urls_serves_the_queue_and_the_console_takes_its_token() {
    let (listen, admin) = (free_addr(), free_addr());
    let mut demo = Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["demo", "--listen", &listen.to_string(), "--admin", &admin.to_string()])
        .env_remove("USHER_ADMIN_TOKEN")
        .env_remove("USHER_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run usher demo");
    let stdout = demo.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.contains("Metrics:")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = demo.kill();
                panic!("the demo did not print its URLs: {printed:?}");
            }
        }
    }
    let text = printed.join("\n");
    assert!(text.contains(&format!("http://{listen}/login")), "{text}");
    let token = text
        .split("token for this run: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no console token printed: {text}"))
        .to_string();

    // A browser asking for the login page is queued (the crowd keeps the room full) or let in.
    let page =
        http1(listen, Request::get("/login").header("accept", "text/html").body(empty()).expect("request")).await;
    assert!(matches!(page.status.as_u16(), 200 | 503), "{} {}", page.status, page.text());
    // The console loads, and the printed token signs in as the demo's admin.
    assert_eq!(http1(admin, get("/admin/")).await.status, StatusCode::OK);
    let me = http1(
        admin,
        Request::get("/admin/me").header("authorization", format!("Bearer {token}")).body(empty()).expect("request"),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(me.json()["role"], "admin");
    let _ = demo.kill();
    let _ = demo.wait();
}
