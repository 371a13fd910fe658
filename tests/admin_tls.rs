//! The admin listener over TLS (issue 20): tokens and operator actions never cross a network
//! in clear, and an admin listener bound beyond loopback without TLS is warned about.

mod support;

use http::{Request, StatusCode};
use support::*;

const TOKEN: &str = "admin-tls-test-token-0123456789abcdef";

fn config_with_admin(admin_lines: &str) -> String {
    let upstream: std::net::SocketAddr = "127.0.0.1:1".parse().expect("address");
    binary_config(&[upstream], "", "")
        .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{admin_lines}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_served_over_tls() {
    let cert = test_cert();
    let lines = format!("tls_cert = {:?}\ntls_key = {:?}", cert.files.cert, cert.files.key);
    let usher = UsherProcess::spawn(&config_with_admin(&lines), Logs::Text, &[("USHER_ADMIN_TOKEN", TOKEN)]);
    let addr = usher.admin_addr;

    let stream = tls_connect(addr, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(negotiated(&stream).as_deref(), Some("http/1.1"), "the admin API speaks HTTP/1.1 only");
    let req =
        Request::get("/admin/rooms").header("authorization", format!("Bearer {TOKEN}")).body(empty()).expect("request");
    let reply = collect_reply(http1_stream_on(stream, req, "localhost").await).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let health =
        collect_reply(http1_stream_on(tls_connect(addr, &cert, &[]).await, get("/healthz"), "localhost").await).await;
    assert_eq!(health.status, StatusCode::OK);

    // Plain HTTP on the TLS port gets no answer.
    assert!(try_http1(addr, get("/healthz")).await.is_err(), "plain HTTP was answered on the TLS admin port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_command_line_speaks_tls_and_verifies_the_certificate() {
    let cert = test_cert();
    let lines = format!("tls_cert = {:?}\ntls_key = {:?}", cert.files.cert, cert.files.key);
    let usher = UsherProcess::spawn(&config_with_admin(&lines), Logs::Text, &[("USHER_ADMIN_TOKEN", TOKEN)]);
    let run = |tls_args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .arg("admin")
            .arg("--addr")
            .arg(usher.admin_addr.to_string())
            .args(tls_args)
            .args(["pause", "nonexistent-room"])
            .env("USHER_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("run usher admin")
    };
    let ca = cert.files.cert.to_str().expect("UTF-8 path");
    // Verified against the given CA, by the address (the default name) or by a name.
    for args in [vec!["--ca-file", ca], vec!["--ca-file", ca, "--server-name", "localhost"]] {
        let answer = run(&args);
        let text = String::from_utf8_lossy(&answer.stdout);
        assert!(text.contains("no such room"), "{args:?}: the call reached the API: {text}");
    }
    // A name the certificate does not carry, or the system's roots (which do not know this
    // certificate), fail the call before a token is sent.
    for args in [vec!["--ca-file", ca, "--server-name", "mailbox.example"], vec!["--tls"]] {
        let answer = run(&args);
        assert!(!answer.status.success(), "{args:?} succeeded");
        assert!(answer.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&answer.stdout));
        let error = String::from_utf8_lossy(&answer.stderr);
        assert!(error.contains("certificate"), "{args:?}: the error says why: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_beyond_loopback_without_tls_is_warned_about() {
    let text = config_with_admin("").replace("[admin]\nlisten = \"127.0.0.1:0\"", "[admin]\nlisten = \"0.0.0.0:0\"");
    let usher = UsherProcess::spawn(&text, Logs::Text, &[]);
    let warned = |usher: &UsherProcess| {
        usher
            .logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("admin listener is reachable beyond loopback without TLS"))
    };
    assert!(warned(&usher), "no warning:\n{}", usher.logs().join("\n"));

    let on_loopback = UsherProcess::spawn(&config_with_admin(""), Logs::Text, &[]);
    assert!(!warned(&on_loopback), "warned for a loopback admin listener");
}

#[test]
fn admin_tls_needs_both_files_and_names_the_key() {
    let cert = test_cert();
    for (lines, key) in [
        (format!("tls_cert = {:?}", cert.files.cert), "admin.tls_key"),
        (format!("tls_key = {:?}", cert.files.key), "admin.tls_cert"),
        (format!("tls_cert = {:?}\ntls_key = {:?}", cert.files.key, cert.files.key), "admin.tls_cert"),
    ] {
        let errors = match usher::config::Config::parse(&config_with_admin(&lines)) {
            Ok(_) => panic!("accepted:\n{lines}"),
            Err(e) => e.to_string(),
        };
        assert!(errors.contains(key), "{lines}\n→ {errors}");
    }
}
