//! The configuration file and command line (DESIGN §9, §11): `usher check-config FILE` exits 0
//! with a summary, or 2 with every error naming its key; `usher run` refuses a broken file.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::TempDir;

fn usher(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(args)
        .env_remove("USHER_CONFIG")
        .env_remove("USHER_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run the usher binary")
}

fn check_config(path: &Path) -> Output {
    usher(&["check-config", path.to_str().expect("UTF-8 path")])
}

/// Writes `text` as a config file in `dir`.
fn file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the config file");
    path
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `  key: reason` lines of a failed check, as (key, reason).
fn errors(output: &Output) -> Vec<(String, String)> {
    stderr(output)
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|line| line.split_once(": "))
        .map(|(key, reason)| (key.to_string(), reason.to_string()))
        .collect()
}

fn assert_rejected_naming(output: &Output, key: &str) {
    assert_eq!(output.status.code(), Some(2), "stdout: {}\nstderr: {}", stdout(output), stderr(output));
    let errors = errors(output);
    assert!(errors.iter().any(|(k, _)| k == key), "no error names {key}: {errors:?}");
    assert!(errors.iter().all(|(_, reason)| !reason.trim().is_empty()), "every error gives a reason: {errors:?}");
}

#[test]
fn shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/usher.toml");
    let output = check_config(&path);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let summary = stdout(&output);
    assert!(summary.contains("valid"), "{summary}");
    assert!(summary.contains("upstream: 127.0.0.1:8081"), "{summary}");
    assert!(summary.contains("admin: 127.0.0.1:9090"), "{summary}");
}

#[test]
fn minimal_config_is_valid_and_summarised() {
    let dir = TempDir::new("config");
    let path = file(
        &dir,
        "ok.toml",
        "[listen]\nhttp = \"127.0.0.1:8080\"\n[upstream]\naddresses = [\"mailbox.internal:8081\", \"[::1]:8082\"]\n",
    );
    let output = check_config(&path);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let summary = stdout(&output);
    assert!(summary.contains("mailbox.internal:8081"), "{summary}");
    assert!(summary.contains("[::1]:8082"), "{summary}");
}

#[test]
fn upstream_address_with_an_impossible_port_is_named() {
    let dir = TempDir::new("config");
    let path = file(&dir, "bad.toml", "[upstream]\naddresses = [\"localhost:99999\"]\n");
    let output = check_config(&path);
    assert_rejected_naming(&output, "upstream.addresses[0]");
    assert!(stderr(&output).contains("localhost:99999"), "the bad value is quoted: {}", stderr(&output));
}

#[test]
fn unreadable_duration_is_named() {
    let dir = TempDir::new("config");
    let path =
        file(&dir, "bad.toml", "[upstream]\naddresses = [\"127.0.0.1:8081\"]\nconnect_timeout = \"2 seconds\"\n");
    assert_rejected_naming(&check_config(&path), "upstream.connect_timeout");
}

#[test]
fn a_hold_shorter_than_waiter_ttl_or_past_a_day_is_named() {
    let dir = TempDir::new("config");
    for (name, hold) in [("short.toml", "20s"), ("long.toml", "2d"), ("zero.toml", "0s")] {
        let text = format!("[[room]]\nname = \"citizens\"\nwaiter_ttl = \"30s\"\nhold = \"{hold}\"\n");
        assert_rejected_naming(&check_config(&file(&dir, name, &text)), "room[0].hold");
    }
    let ok = file(&dir, "ok.toml", "[[room]]\nname = \"citizens\"\nwaiter_ttl = \"30s\"\nhold = \"30s\"\n");
    assert_eq!(check_config(&ok).status.code(), Some(0), "a hold as long as waiter_ttl is valid");
}

#[test]
fn an_adaptive_room_names_each_bad_bound_and_runs_on_redis_too() {
    let dir = TempDir::new("config");
    let room = "[[room]]\nname = \"citizens\"\n[room.adaptive]\n";
    let good = "target_latency = \"800ms\"\nmin_per_minute = 100\nmax_per_minute = 5000\n";
    let ok = file(&dir, "ok.toml", &format!("{room}{good}"));
    assert_eq!(check_config(&ok).status.code(), Some(0), "{}", String::from_utf8_lossy(&check_config(&ok).stderr));
    for (name, text, key) in [
        ("no-target.toml", "min_per_minute = 1\nmax_per_minute = 2\n", "room[0].adaptive.target_latency"),
        ("no-max.toml", "target_latency = \"1s\"\nmin_per_minute = 1\n", "room[0].adaptive.max_per_minute"),
        (
            "inverted.toml",
            "target_latency = \"1s\"\nmin_per_minute = 9\nmax_per_minute = 2\n",
            "room[0].adaptive.min_per_minute",
        ),
        ("quantile.toml", &format!("{good}quantile = 1.5\n"), "room[0].adaptive.quantile"),
        ("budget.toml", &format!("{good}error_budget = -0.1\n"), "room[0].adaptive.error_budget"),
        ("period.toml", &format!("{good}period = \"100ms\"\n"), "room[0].adaptive.period"),
        ("typo.toml", &format!("{good}target = \"1s\"\n"), "room[0].adaptive.target"),
    ] {
        assert_rejected_naming(&check_config(&file(&dir, name, &format!("{room}{text}"))), key);
    }
    let redis = format!("[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n{room}{good}");
    let on_redis = check_config(&file(&dir, "redis.toml", &redis));
    assert_eq!(on_redis.status.code(), Some(0), "{}", String::from_utf8_lossy(&on_redis.stderr));
}

#[test]
fn a_challenge_names_each_bad_setting() {
    let dir = TempDir::new("config");
    let room = "[[room]]\nname = \"citizens\"\n[room.challenge]\n";
    let ok = file(&dir, "ok.toml", room);
    assert_eq!(check_config(&ok).status.code(), Some(0), "every setting has a default");
    for (name, text, key) in [
        ("bits.toml", "bits = 0\n", "room[0].challenge.bits"),
        ("max.toml", "bits = 16\nmax_bits = 12\n", "room[0].challenge.max_bits"),
        ("puzzles.toml", "puzzles = 100\n", "room[0].challenge.puzzles"),
        ("ttl.toml", "ttl = \"5s\"\n", "room[0].challenge.ttl"),
        ("wait.toml", "noscript_wait = \"0s\"\n", "room[0].challenge.noscript_wait"),
        ("late.toml", "ttl = \"30s\"\nnoscript_wait = \"40s\"\n", "room[0].challenge.noscript_wait"),
        ("typo.toml", "bit = 14\n", "room[0].challenge.bit"),
    ] {
        assert_rejected_naming(&check_config(&file(&dir, name, &format!("{room}{text}"))), key);
    }
}

#[test]
fn unknown_key_is_named_not_ignored() {
    let dir = TempDir::new("config");
    let path = file(&dir, "bad.toml", "[upstream]\naddresses = [\"127.0.0.1:8081\"]\nbogus = true\n");
    assert_rejected_naming(&check_config(&path), "upstream.bogus");
}

#[test]
fn unknown_section_is_named() {
    let dir = TempDir::new("config");
    let path = file(&dir, "bad.toml", "[upstrem]\naddresses = [\"127.0.0.1:8081\"]\n");
    assert_rejected_naming(&check_config(&path), "upstrem");
}

#[test]
fn missing_file_is_reported() {
    let dir = TempDir::new("config");
    let path = dir.path().join("does-not-exist.toml");
    let output = check_config(&path);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("does-not-exist.toml"), "{}", stderr(&output));
}

#[test]
fn toml_syntax_error_names_its_line() {
    let dir = TempDir::new("config");
    let path = file(&dir, "bad.toml", "[listen]\nhttp = \"127.0.0.1:8080\"\n[upstream\naddresses = []\n");
    assert_rejected_naming(&check_config(&path), "line 3");
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    let dir = TempDir::new("config");
    let path = file(
        &dir,
        "bad.toml",
        concat!(
            "[listen]\nhttp = \"not-an-address\"\nworkers = -1\n",
            "[upstream]\naddresses = [\"127.0.0.1:8081\", \"localhost:99999\"]\n",
            "connect_timeout = \"1h30m\"\nbogus = 1\n",
            "[store]\nkind = \"sqlite\"\n",
        ),
    );
    let output = check_config(&path);
    let expected = [
        "listen.http",
        "listen.workers",
        "upstream.addresses[1]",
        "upstream.connect_timeout",
        "upstream.bogus",
        "store.kind",
    ];
    for key in expected {
        assert_rejected_naming(&output, key);
    }
    assert_eq!(errors(&output).len(), expected.len(), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("{} error(s)", expected.len())), "{}", stderr(&output));
    assert!(stdout(&output).is_empty(), "no summary for a broken file: {}", stdout(&output));
}

#[test]
fn run_refuses_to_start_with_a_broken_file() {
    let dir = TempDir::new("config");
    let path = file(&dir, "bad.toml", "[upstream]\naddresses = [\"localhost:99999\"]\n");
    let output = usher(&["run", "--config", path.to_str().expect("UTF-8 path")]);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("upstream.addresses[0]"), "{}", stderr(&output));
}

#[test]
fn check_config_says_which_forwarding_header_is_believed() {
    let dir = TempDir::new("config");
    let path = file(&dir, "xff.toml", "[client]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let summary = stdout(&check_config(&path));
    assert!(
        summary.contains("right-most untrusted X-Forwarded-For entry (Forwarded ignored and stripped)"),
        "{summary}"
    );
    let path = file(&dir, "fwd.toml", "[client]\ntrusted_proxies = [\"10.0.0.0/8\"]\nreal_ip_from = \"forwarded\"\n");
    let summary = stdout(&check_config(&path));
    assert!(summary.contains("Forwarded for= (X-Forwarded-For ignored and stripped)"), "{summary}");
    let path = file(&dir, "pp.toml", "[listen]\nproxy_protocol = true\n[client]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    assert!(stdout(&check_config(&path)).contains("PROXY protocol v2 header"), "proxy_protocol is the default with it");
}

#[test]
fn a_forwarding_source_that_cannot_work_is_an_error_naming_the_key() {
    let dir = TempDir::new("config");
    for (name, text) in [
        ("junk.toml", "[client]\nreal_ip_from = \"x-real-ip\"\n"),
        ("pp-off.toml", "[client]\nreal_ip_from = \"proxy_protocol\"\n"),
        ("pp-on.toml", "[listen]\nproxy_protocol = true\n[client]\nreal_ip_from = \"x-forwarded-for\"\n"),
    ] {
        assert_rejected_naming(&check_config(&file(&dir, name, text)), "client.real_ip_from");
    }
    assert_rejected_naming(
        &check_config(&file(&dir, "cs.toml", "[listen]\ncookie_secure = \"yes\"\n")),
        "listen.cookie_secure",
    );
}

#[test]
fn path_prefixes_and_hosts_are_canonical_or_an_error_naming_the_key() {
    let dir = TempDir::new("config");
    let ok = "[[room]]\nname = \"a\"\npaths = [\"/In%62ox/./x/\"]\nhosts = [\"Post.Example.DK.\"]\n";
    let output = check_config(&file(&dir, "ok.toml", ok));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("paths [\"/Inbox/x/\"]"), "kept in canonical form: {}", stdout(&output));
    let cases = [
        ("room[0].paths[0]", "[[room]]\nname = \"a\"\npaths = [\"/a%2Fb/\"]\n"),
        ("room[0].bypass[0]", "[[room]]\nname = \"a\"\nbypass = [\"/static/../../x\"]\n"),
        ("room[0].hosts[0]", "[[room]]\nname = \"a\"\nhosts = [\"post.example.dk:443\"]\n"),
        ("limits.route[0].path", "[[limits.route]]\npath = \"/log%5cin\"\nper_minute = 1\n"),
    ];
    for (n, (key, text)) in cases.iter().enumerate() {
        assert_rejected_naming(&check_config(&file(&dir, &format!("bad{n}.toml"), text)), key);
    }
}

#[test]
fn connection_defence_settings_are_checked_and_named() {
    let dir = TempDir::new("config");
    let path = file(
        &dir,
        "defences.toml",
        "[listen]\nmax_connections_per_client = 0\nidle_timeout = \"0s\"\n\
         [admin]\nheader_read_timeout = \"soon\"\n\
         [upstream]\nbody_idle_timeout = \"-1s\"\ntunnel_idle_timeout = \"0ms\"\n\
         upgrade_protocols = [\"websocket\", \"not a token\"]\nmax_connections_per_worker = 8\n\
         max_tunnels_per_worker = 8\n",
    );
    let output = check_config(&path);
    for key in [
        "listen.max_connections_per_client",
        "listen.idle_timeout",
        "admin.header_read_timeout",
        "upstream.body_idle_timeout",
        "upstream.tunnel_idle_timeout",
        "upstream.upgrade_protocols[1]",
        // Below the default pool_per_worker (256): idle connections alone would fill it.
        "upstream.max_connections_per_worker",
        // Tunnels as many as the connections: none would be left for requests.
        "upstream.max_tunnels_per_worker",
    ] {
        assert_rejected_naming(&output, key);
    }
}

#[test]
fn a_redis_address_that_cannot_work_is_an_error_naming_its_key_and_why() {
    let dir = TempDir::new("config");
    let redis = "[store]\nkind = \"redis\"\n";
    for (text, key, why) in [
        ("", "store.url", "required"),
        ("url = \"redis://a:6379\"\ncluster = [\"b:6379\"]\n", "store.cluster", "both set"),
        ("url = \"http://a:6379\"\n", "store.url", "must start with"),
        ("url = \"redis+sentinel://a:26379,b:26379\"\n", "store.url", "names no master"),
        ("url = \"redis+sentinel://a:26379,,b:26379/main\"\n", "store.url", "empty sentinel"),
        ("url = \"redis+sentinel://a:99999/main\"\n", "store.url", "not a port"),
        ("url = \"redis+sentinel://a:26379/main/x\"\n", "store.url", "not a database"),
        ("cluster = []\n", "store.cluster", "lists no node"),
        ("cluster = [\"a:7000\", \"rediss://b:7000\"]\n", "store.cluster", "mixes"),
        ("cluster = [\"a:port\"]\n", "store.cluster", "not a port"),
        ("sentinels = [\"a:26379\"]\nmaster_name = \"main\"\n", "store.sentinels", "redis+sentinel://"),
        ("sentinels = [\"a:26379\"]\nmaster_name = \"main\"\n", "store.master_name", "redis+sentinel://"),
    ] {
        let output = check_config(&file(&dir, "redis.toml", &format!("{redis}{text}")));
        assert_rejected_naming(&output, key);
        let reason = errors(&output).into_iter().find(|(k, _)| k == key).map(|(_, r)| r).unwrap_or_default();
        assert!(reason.contains(why), "{text}: {key}: {reason:?} does not say {why:?}");
    }
    let output = check_config(&file(&dir, "secret.toml", &format!("{redis}url = \"redis+sentinel://:hunter2@a:1\"\n")));
    assert_rejected_naming(&output, "store.url");
    assert!(!stderr(&output).contains("hunter2"), "the password never shows: {}", stderr(&output));
}

#[test]
fn check_config_says_which_redis_shape_is_used() {
    let dir = TempDir::new("config");
    for (text, summary) in [
        ("url = \"redis://db:6379\"\n", "store: redis (one server)"),
        (
            "url = \"rediss+sentinel://s1:26379,s2,s3:26380/main\"\n",
            "store: redis (master \"main\" through 3 sentinel(s))",
        ),
        ("cluster = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"]\n", "store: redis (cluster, 2 seed node(s))"),
    ] {
        let output = check_config(&file(&dir, "redis.toml", &format!("[store]\nkind = \"redis\"\n{text}")));
        assert_eq!(output.status.code(), Some(0), "{text}: {}", stderr(&output));
        assert!(stdout(&output).contains(summary), "{text}: {}", stdout(&output));
    }
}

#[test]
fn operators_are_checked_and_each_error_names_its_key() {
    let dir = TempDir::new("config");
    let hash = "a".repeat(64);
    let entry = |body: &str| format!("[[admin.operator]]\n{body}\n");
    let ok = file(&dir, "ok.toml", &entry(&format!("name = \"anne\"\nrole = \"viewer\"\ntoken_sha256 = \"{hash}\"")));
    assert_eq!(check_config(&ok).status.code(), Some(0), "{}", stderr(&check_config(&ok)));
    let short = file(&dir, "short.token", "too-short\n");
    let good = format!("token_sha256 = \"{hash}\"");
    for (name, text, key) in [
        ("no-name.toml", entry(&format!("role = \"viewer\"\n{good}")), "admin.operator[0].name"),
        ("bad-name.toml", entry(&format!("name = \"an ne\"\nrole = \"viewer\"\n{good}")), "admin.operator[0].name"),
        (
            "shortcut-name.toml",
            entry(&format!("name = \"admin-token\"\nrole = \"viewer\"\n{good}")),
            "admin.operator[0].name",
        ),
        ("bad-role.toml", entry(&format!("name = \"anne\"\nrole = \"root\"\n{good}")), "admin.operator[0].role"),
        (
            "bad-hash.toml",
            entry("name = \"anne\"\nrole = \"viewer\"\ntoken_sha256 = \"abc\""),
            "admin.operator[0].token_sha256",
        ),
        ("no-token.toml", entry("name = \"anne\"\nrole = \"viewer\""), "admin.operator[0].token_sha256"),
        (
            "short-file.toml",
            entry(&format!("name = \"anne\"\nrole = \"viewer\"\ntoken_file = {short:?}")),
            "admin.operator[0].token_file",
        ),
        (
            "missing-file.toml",
            entry("name = \"anne\"\nrole = \"viewer\"\ntoken_file = \"/nonexistent/token\""),
            "admin.operator[0].token_file",
        ),
        (
            "same-name.toml",
            format!(
                "{}{}",
                entry(&format!("name = \"anne\"\nrole = \"viewer\"\n{good}")),
                entry(&format!("name = \"anne\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"", "b".repeat(64)))
            ),
            "admin.operator[1].name",
        ),
        (
            "same-token.toml",
            format!(
                "{}{}",
                entry(&format!("name = \"anne\"\nrole = \"viewer\"\n{good}")),
                entry(&format!("name = \"bo\"\nrole = \"admin\"\n{good}"))
            ),
            "admin.operator[1].token_sha256",
        ),
        (
            "typo.toml",
            entry(&format!("name = \"anne\"\nrole = \"viewer\"\n{good}\nrights = 1")),
            "admin.operator[0].rights",
        ),
        ("metrics.toml", "[admin]\nmetrics = \"closed\"\n".into(), "admin.metrics"),
    ] {
        assert_rejected_naming(&check_config(&file(&dir, name, &text)), key);
    }
    // The short token itself is never printed.
    assert!(!stderr(&check_config(&dir.path().join("short-file.toml"))).contains("too-short"));
}

#[test]
fn token_new_prints_a_token_once_and_lines_that_make_a_valid_config() {
    let made = usher(&["admin", "token", "new", "anne", "--role", "viewer"]);
    assert_eq!(made.status.code(), Some(0), "{}", stderr(&made));
    let text = stdout(&made);
    let token = text.lines().map(str::trim).find(|l| l.len() == 43).expect("a 43-character token line").to_string();
    let block = &text[text.find("[[admin.operator]]").expect("the lines to paste")..];
    assert!(!block.contains(&token), "the lines to paste hold only the hash:\n{block}");
    let dir = TempDir::new("config");
    let path = file(&dir, "usher.toml", block);
    assert_eq!(check_config(&path).status.code(), Some(0), "{}", stderr(&check_config(&path)));
    let config = usher::config::Config::load(&path).expect("config");
    assert_eq!(config.admin.operators[0].token_sha256, usher::operators::token_sha256(&token));
    let again = stdout(&usher(&["admin", "token", "new", "anne"]));
    assert!(!again.contains(&token), "every token is new");
    assert_eq!(usher(&["admin", "token", "new", "an ne"]).status.code(), Some(2));
    assert_eq!(usher(&["admin", "token", "new", "anne", "--role", "root"]).status.code(), Some(2));
}
