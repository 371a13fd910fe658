//! What SREs get: the alert rules and the live `/metrics` pass `promtool`, and the dashboard
//! and rules query only metrics usher exports.

mod support;

use http::Request;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use support::*;
use usher::config::Config;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Live metrics from a usher that has queued, admitted and rejected someone.
async fn live_metrics() -> String {
    let upstream = Upstream::start().await;
    let mut config = Config::parse("[[room]]\nname = \"citizens\"\nmax_active = 1\n").expect("config");
    let base = Config::for_upstream(upstream.addr);
    (config.listen, config.admin, config.upstream, config.limits) =
        (base.listen, base.admin, base.upstream, base.limits);
    config.admin.token = Some("observability-token-0123456789abcdef".into());
    let usher = start_usher(config);
    let addr = http_addr(&usher);
    let change = Request::patch("/admin/rooms/citizens")
        .header("authorization", "Bearer observability-token-0123456789abcdef")
        .body(full("{\"admit_per_minute\": 601}"))
        .expect("request");
    assert_eq!(http1(usher.admin_addr, change).await.status, 200);
    assert_eq!(http1(addr, get("/inbox")).await.status, 200);
    let queued =
        Request::get("/inbox").header("accept", "application/json").header("cookie", "usher_pass_citizens=forged");
    assert_eq!(http1(addr, queued.body(empty()).expect("request")).await.status, 503);
    // Let the admitter tick once so the room gauges are set.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let text = http1(usher.admin_addr, get("/metrics")).await.text();
    usher.stop();
    text
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; tests/run.sh installs it)");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool output");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_alert_rules_pass_promtool() {
    let rules = repo("config/prometheus/usher-alerts.yml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().expect("path")], None);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool() {
    let text = live_metrics().await;
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));
    assert!(ok, "{out}\n{text}");
}

/// Every `usher_*` metric name in `text`, histogram series folded into their family.
fn usher_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("usher_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        names.insert(family.to_string());
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_rules_query_only_exported_metrics() {
    let text = live_metrics().await;
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("config/grafana/usher-dashboard.json")).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let rules = std::fs::read_to_string(repo("config/prometheus/usher-alerts.yml")).expect("rules");
    let rule_exprs: String =
        rules.lines().filter(|l| l.trim_start().starts_with("expr:")).collect::<Vec<_>>().join("\n");
    let queried: BTreeSet<String> = usher_names(&exprs).union(&usher_names(&rule_exprs)).cloned().collect();
    assert!(queried.len() >= 10, "the dashboard covers the figures: {queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\nexported: {exported:?}");
}
