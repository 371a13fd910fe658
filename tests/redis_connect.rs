//! Reaching Redis (DESIGN §8, §9): the password from the URL or `USHER_REDIS_PASSWORD`, TLS
//! (`rediss://`) with a certificate made by the test, and a clear start-up error naming
//! `store.url` or `store.cluster` (password hidden) when Redis, its sentinels or its cluster
//! cannot be reached, or Redis refuses the password.

mod support;

use http::StatusCode;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Logs, RedisOptions, RedisServer, TempDir, Upstream, UsherProcess, Visitor, closed_addr, ip};

const SECRET: &str = "0123456789abcdef0123456789abcdef-connect-tests";

fn config(backend: std::net::SocketAddr, url: &str) -> String {
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream]\naddresses = [\"{backend}\"]\n\n[store]\nkind = \"redis\"\nurl = \"{url}\"\n\n\
         [[room]]\nname = \"citizens\"\nmax_active = 1\ntick = \"50ms\"\n"
    )
}

/// Runs the binary with `config`, expecting it to stop at start-up; returns (exit code, stderr).
fn failed_start(config: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = TempDir::new("redis-connect");
    let path = dir.path().join("usher.toml");
    std::fs::write(&path, config).expect("write the config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_usher"));
    command.arg("run").arg("--config").arg(&path);
    command.env_remove("USHER_LOG").env_remove(usher::store::redis::PASSWORD_ENV).env("NO_COLOR", "1");
    command.env("USHER_SECRET", SECRET);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start usher");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("poll usher").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("usher kept running although it cannot use its Redis");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("usher's output");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The first visitor is admitted through the room; the second, with the only place taken,
/// is queued: the room works, on Redis.
async fn room_works(node: &UsherProcess) {
    let mut first = Visitor::new(ip(4, 1), node.http_addr);
    assert!(first.api("/inbox").await.forwarded(), "the first visitor is admitted at once");
    let mut second = Visitor::new(ip(4, 2), node.http_addr);
    let queued = second.api("/inbox").await;
    assert_eq!(queued.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(queued.json()["status"], "waiting", "{}", queued.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_the_url_or_the_environment_works_and_a_wrong_one_stops_start_up() {
    let redis =
        RedisServer::start_with(RedisOptions { password: Some("door-4711-open".into()), ..RedisOptions::default() });
    let backend = Upstream::start_mailbox().await;

    let from_env = UsherProcess::spawn(
        &config(backend.addr, &redis.url_without_password()),
        Logs::Text,
        &[("USHER_SECRET", SECRET), ("USHER_REDIS_PASSWORD", "door-4711-open")],
    );
    room_works(&from_env).await;
    drop(from_env);
    assert_eq!(redis.cli(&["ZCARD", "{usher:citizens}:sessions:seen"]).trim(), "1", "the session is in Redis");
    redis.cli(&["FLUSHALL"]);

    let from_url = UsherProcess::spawn(&config(backend.addr, &redis.url()), Logs::Text, &[("USHER_SECRET", SECRET)]);
    room_works(&from_url).await;
    drop(from_url);

    let wrong_url = format!("redis://:not-the-password@127.0.0.1:{}", redis.port);
    for (url, env) in [
        (wrong_url.as_str(), vec![]),
        (redis.url_without_password().as_str(), vec![("USHER_REDIS_PASSWORD", "not-the-password")]),
        (redis.url_without_password().as_str(), vec![]),
    ] {
        let (code, stderr) = failed_start(&config(backend.addr, url), &env);
        assert_eq!(code, Some(1), "exit status; stderr:\n{stderr}");
        assert!(stderr.contains("store.url"), "the error names store.url:\n{stderr}");
        assert!(stderr.contains(&format!("127.0.0.1:{}", redis.port)), "and the address:\n{stderr}");
        assert!(!stderr.contains("not-the-password"), "the password never shows:\n{stderr}");
        assert!(!stderr.contains("panicked"), "no panic:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_stops_start_up_with_an_error_naming_store_url() {
    let backend = Upstream::start_mailbox().await;
    let nobody = closed_addr();
    let (code, stderr) = failed_start(&config(backend.addr, &format!("redis://{}", nobody.addr)), &[]);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("store.url") && stderr.contains(&nobody.addr.to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_sentinels_or_cluster_nodes_stop_start_up_with_an_error_naming_the_key() {
    let backend = Upstream::start_mailbox().await;
    let (one, two) = (closed_addr(), closed_addr());
    let sentinels = format!("redis+sentinel://:hunter2@{},{}/usher", one.addr, two.addr);
    let cluster = config(backend.addr, "unused")
        .replace("url = \"unused\"", &format!("cluster = [\"{}\", \"{}\"]", one.addr, two.addr));
    for (config, key) in [(config(backend.addr, &sentinels), "store.url"), (cluster, "store.cluster")] {
        let (code, stderr) = failed_start(&config, &[]);
        assert_eq!(code, Some(1), "stderr:\n{stderr}");
        assert!(stderr.contains(key) && stderr.contains(&one.addr.to_string()), "names {key} and where:\n{stderr}");
        assert!(!stderr.contains("hunter2") && !stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_works_with_the_operators_ca_and_is_refused_without_it() {
    let redis = RedisServer::start_with(RedisOptions { tls: true, ..RedisOptions::default() });
    let backend = Upstream::start_mailbox().await;
    let url = redis.url();
    assert!(url.starts_with("rediss://"));
    let ca = redis.ca_file();
    let ca = ca.to_str().expect("a UTF-8 path");
    let node = UsherProcess::spawn(
        &config(backend.addr, &url),
        Logs::Text,
        &[("USHER_SECRET", SECRET), ("SSL_CERT_FILE", ca)],
    );
    room_works(&node).await;
    drop(node);

    // Without the CA the server's certificate is not trusted: a clear start-up error.
    let (code, stderr) = failed_start(&config(backend.addr, &url), &[("SSL_CERT_FILE", "/nonexistent/ca.pem")]);
    assert_eq!(code, Some(1), "stderr:\n{stderr}");
    assert!(stderr.contains("store.url"), "{stderr}");
}

#[test]
fn the_shipped_multi_node_configurations_are_valid() {
    for file in ["config/redis-node-a.toml", "config/redis-node-b.toml", "config/redis-compose.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let out = Command::new(env!("CARGO_BIN_EXE_usher")).arg("check-config").arg(&path).output().expect("run usher");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("store: redis"), "{file} uses Redis: {stdout}");
    }
}
