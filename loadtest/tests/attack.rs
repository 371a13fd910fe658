//! The attack tool against a real usher (in-process, real sockets) in front of a real
//! upstream: a brief run of a few kinds must produce its report, keep the real client served
//! and show the attack happened. Behaviour, not timing: the figures themselves are for
//! `loadtest/attack.sh` on a quiet machine.

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use usher::config::{Config, RealIpFrom, RoomConfig, RoomMode};
use usher::{Running, Server};

async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(usher_loadtest::upstream::serve(listener));
    addr
}

/// usher with the real client's room and the floods' proxy (127.7/16) trusted, as
/// `attack.sh` configures it: every other attacker is a client in its own right.
fn usher(upstream: SocketAddr) -> Running {
    let mut config = Config::for_upstream(upstream);
    config.client.trusted_proxies = vec!["127.7.0.0/16".parse().expect("cidr")];
    config.client.real_ip_from = RealIpFrom::XForwardedFor;
    // The example configuration's per-client limit, so the key flood's flooder meets it.
    config.limits.requests_per_second = 20;
    config.limits.burst = 40;
    config.rooms = vec![RoomConfig {
        name: "inbox".to_string(),
        hosts: Vec::new(),
        paths: vec!["/inbox".to_string()],
        bypass: Vec::new(),
        max_active: 1_000_000,
        admit_per_minute: 6_000_000,
        session_idle: Duration::from_secs(600),
        session_max: Duration::from_secs(3600),
        waiter_ttl: Duration::from_secs(30),
        claim_window: Duration::from_secs(30),
        hold: Duration::from_secs(600),
        mode: RoomMode::Auto,
        opens_at: None,
        logout_path: None,
        message: None,
        tick: Duration::from_millis(200),
        template: None,
        adaptive: None,
        no_show_bound: 0.3,
        challenge: None,
    }];
    Server::start(config).expect("usher starts")
}

async fn stop(usher: Running) {
    tokio::task::spawn_blocking(move || usher.stop()).await.expect("usher stops");
}

/// Runs `usher-loadtest attack KIND` briefly against `usher`; returns the JSON report.
async fn attack(usher: &Running, kind: &str, extra: &[&str]) -> Value {
    let json = std::env::temp_dir().join(format!("usher-attack-{}-{kind}.json", std::process::id()));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_usher-loadtest"))
        .args(["attack", kind, "--seconds", "1.5", "--recover-limit", "5", "--client-rate", "10"])
        .args(["--target", &usher.http_addr.expect("http").to_string()])
        .args(["--admin", &usher.admin_addr.to_string()])
        // usher runs in this process: its memory and descriptors are ours.
        .args(["--pid", &std::process::id().to_string()])
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .await
        .expect("the attack tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "attack {kind} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("attack {kind}")), "{stdout}");
    let text = std::fs::read_to_string(&json).expect("the JSON report is written");
    let _ = std::fs::remove_file(&json);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON ({e}): {text}"))
}

fn int(report: &Value, pointer: &str) -> i64 {
    report.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The real client was served, usher stayed up and came back.
fn assert_served(report: &Value) {
    assert!(int(report, "/client/ok") > 0, "the real client was never served: {report:#}");
    assert_eq!(report.pointer("/usher/alive"), Some(&Value::Bool(true)), "{report:#}");
    assert!(report.pointer("/usher/recovered_after_s").is_some_and(Value::is_number), "{report:#}");
    assert!(int(report, "/usher/rss_peak_kib") > 0 && int(report, "/usher/fds_peak") > 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_rapid_reset_and_key_flood_run_beside_a_served_real_client() {
    let usher = usher(upstream().await);

    let report = attack(&usher, "slowloris", &["--sockets", "50", "--trickle", "0.5"]).await;
    assert_served(&report);
    assert!(int(&report, "/attack/connected") > 0 && int(&report, "/attack/bytes_sent") > 0, "{report:#}");

    let report = attack(&usher, "h2-rapid-reset", &["--sockets", "2"]).await;
    assert_served(&report);
    assert!(int(&report, "/attack/streams_reset") > 0, "{report:#}");

    let report = attack(&usher, "key-flood", &["--sockets", "4", "--keys", "5000", "--flooder-rate", "100"]).await;
    assert_served(&report);
    assert!(int(&report, "/attack/distinct_keys") > 0, "{report:#}");
    // 100 requests a second for 1.5 s against 20 a second after a burst of 40: some refused.
    assert!(int(&report, "/attack/flooder_429") > 0, "the flooding client was not limited: {report:#}");
    assert!(report.pointer("/limiter/usher_limiter_tracked_clients").is_some(), "{report:#}");

    stop(usher).await;
}

#[tokio::test]
async fn the_table_judges_each_row_against_the_baseline() {
    use usher_loadtest::attack::{Kind, Report, UsherFigures, client::Summary, table};
    let row = |kind, p99_ms, errors| Report {
        kind,
        seconds: 1.0,
        attack: Default::default(),
        client: Summary { requests: 10, ok: 10 - errors, errors, p50_ms: 1.0, p99_ms, ..Summary::default() },
        usher: UsherFigures { alive: true, recovered_after_s: Some(0.1), ..UsherFigures::default() },
        limiter: Default::default(),
    };
    let reports =
        [row(Kind::None, 2.0, 0), row(Kind::Slowloris, 3.0, 0), row(Kind::H2Ping, 5.0, 0), row(Kind::H2Idle, 1.0, 2)];
    let text = table::markdown(&reports);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + reports.len(), "{text}");
    assert!(lines[2].starts_with("| baseline") && lines[2].contains("| ok |"), "{text}");
    assert!(lines[3].contains("| ok |"), "{text}");
    assert!(lines[4].contains("MISS: p99 2.5x"), "{text}");
    assert!(lines[5].contains("MISS: 2 client errors"), "{text}");

    // The baseline run again at the end was quieter: rows are judged against it (3.5 ms is
    // 1.75x the first baseline, 2.3x the second).
    let reports = [row(Kind::None, 2.0, 0), row(Kind::Slowloris, 3.5, 0), row(Kind::None, 1.5, 0)];
    let text = table::markdown(&reports);
    assert!(text.lines().nth(3).is_some_and(|l| l.contains("MISS: p99 2.3x")), "{text}");
}
