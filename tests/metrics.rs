//! Metrics and health (DESIGN §9, §10): `/metrics` is valid Prometheus text format and counts
//! what happened; `/healthz` and `/readyz` answer on the admin listener.

mod support;

use http::{Request, StatusCode};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use support::*;
use usher::config::Config;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A metric family: its HELP, TYPE and samples.
#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

/// A strict reader of the Prometheus text exposition format (0.0.4): every family has one HELP
/// and one TYPE before its samples, samples of a family are contiguous, names, labels and
/// values are well formed, no sample repeats, counters are not negative, and histograms have
/// cumulative buckets ending in `+Inf` that equal `_count`, and a `_sum`.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut closed: HashSet<String> = HashSet::new();
    let mut seen: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (keyword, name, rest) = (words.next(), words.next(), words.next());
            if !matches!(keyword, Some("HELP" | "TYPE")) {
                continue; // an ordinary comment
            }
            let name = name.filter(|n| valid_metric_name(n)).ok_or_else(|| at("bad metric name"))?;
            if current.as_deref() != Some(name) {
                if let Some(previous) = current.take() {
                    closed.insert(previous);
                }
                if closed.contains(name) {
                    return Err(at("metadata for a family that already ended"));
                }
                current = Some(name.to_string());
            }
            let family = families.entry(name.to_string()).or_default();
            if !family.samples.is_empty() {
                return Err(at("HELP/TYPE after the family's samples"));
            }
            if keyword == Some("HELP") {
                if family.help.replace(rest.unwrap_or("").to_string()).is_some() {
                    return Err(at("second HELP"));
                }
            } else {
                let kind = rest.ok_or_else(|| at("TYPE without a type"))?;
                if !matches!(kind, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                    return Err(at("unknown type"));
                }
                if family.kind.replace(kind.to_string()).is_some() {
                    return Err(at("second TYPE"));
                }
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|e| at(&e))?;
        let family_name = current.clone().ok_or_else(|| at("sample before any TYPE"))?;
        let family = families.get_mut(&family_name).expect("current family exists");
        let kind = family.kind.clone().ok_or_else(|| at("sample of a family without TYPE"))?;
        let belongs = sample.name == family_name
            || (matches!(kind.as_str(), "histogram" | "summary")
                && ["_sum", "_count"].iter().any(|s| sample.name == format!("{family_name}{s}")))
            || (kind == "histogram" && sample.name == format!("{family_name}_bucket"));
        if !belongs {
            return Err(at(&format!("sample outside its family (current family {family_name})")));
        }
        if kind == "counter" && (sample.value.is_nan() || sample.value < 0.0) {
            return Err(at("negative or NaN counter"));
        }
        if !seen.insert((sample.name.clone(), sample.labels.clone())) {
            return Err(at("repeated sample"));
        }
        family.samples.push(sample);
    }
    for (name, family) in &families {
        if family.help.is_none() || family.kind.is_none() {
            return Err(format!("{name} lacks HELP or TYPE"));
        }
        if family.kind.as_deref() == Some("histogram") {
            check_histogram(name, &family.samples)?;
        }
    }
    Ok(families)
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse::<f64>().map_err(|_| format!("bad value {text:?}")),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=').ok_or("label without '='")?;
            let label = &inner[..eq];
            if !valid_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let mut chars = inner[eq + 1..].char_indices();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value is not quoted".into());
            }
            let mut value = String::new();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break eq + 1 + i + 1,
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    (_, '\n') => return Err("newline in label value".into()),
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            inner = &inner[end..];
            inner = inner.strip_prefix(',').unwrap_or(inner);
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut words = rest.split(' ');
    let value = parse_value(words.next().ok_or("no value")?)?;
    if let Some(timestamp) = words.next() {
        timestamp.parse::<i64>().map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if words.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

fn check_histogram(name: &str, samples: &[Sample]) -> Result<(), String> {
    let series_of = |s: &Sample| {
        let mut labels = s.labels.clone();
        labels.remove("le");
        labels
    };
    let series: HashSet<BTreeMap<String, String>> = samples.iter().map(series_of).collect();
    for labels in series {
        let of = |suffix: &str| -> Vec<&Sample> {
            let full = format!("{name}{suffix}");
            samples.iter().filter(|s| s.name == full && series_of(s) == labels).collect()
        };
        let mut previous = (f64::NEG_INFINITY, 0.0);
        for bucket in of("_bucket") {
            let le = parse_value(bucket.labels.get("le").ok_or(format!("{name}: bucket without le"))?)?;
            if le <= previous.0 || bucket.value < previous.1 {
                return Err(format!("{name}{labels:?}: buckets not increasing and cumulative at le={le}"));
            }
            previous = (le, bucket.value);
        }
        if previous.0 != f64::INFINITY {
            return Err(format!("{name}{labels:?}: no +Inf bucket"));
        }
        let count = *of("_count").first().ok_or(format!("{name}{labels:?}: no _count"))?;
        if count.value != previous.1 {
            return Err(format!(
                "{name}{labels:?}: _count {} differs from the +Inf bucket {}",
                count.value, previous.1
            ));
        }
        of("_sum").first().ok_or(format!("{name}{labels:?}: no _sum"))?;
    }
    Ok(())
}

/// The value of the sample `name` with exactly `labels`.
fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    families.values().flat_map(|f| &f.samples).find(|s| s.name == name && s.labels == labels).map(|s| s.value)
}

async fn scrape(admin: std::net::SocketAddr) -> BTreeMap<String, Family> {
    let reply = http1(admin, get("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    parse_exposition(&text).unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}\n{text}"))
}

#[test]
fn the_exposition_parser_rejects_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n";
    assert!(parse_exposition(good).is_ok());
    let histogram =
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5\nh_count 3\n";
    assert!(parse_exposition(histogram).is_ok());
    for bad in [
        "a_total 3\n",
        "# TYPE a_total counter\na_total 3\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=1} 3\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total three\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total 3\na_total 4\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_requests_are_counted_in_valid_prometheus_text() {
    const N: usize = 7;
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    for i in 0..N {
        assert_eq!(http1(http_addr(&usher), get(&format!("/letters/{i}"))).await.status, StatusCode::OK);
    }
    let metrics = scrape(usher.admin_addr).await;

    let ok = value(&metrics, "usher_requests_total", &[("route", "upstream"), ("code", "200")]);
    assert_eq!(ok, Some(N as f64));
    let count = value(&metrics, "usher_upstream_duration_seconds_count", &[]).expect("duration count");
    assert!(count >= N as f64, "usher_upstream_duration_seconds_count {count} < {N}");
    assert_eq!(metrics.get("usher_upstream_duration_seconds").and_then(|f| f.kind.as_deref()), Some("histogram"));
    assert_eq!(value(&metrics, "usher_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert!(value(&metrics, "usher_connections", &[]).is_some(), "open connections gauge");
    for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
        assert!(metrics.contains_key(name), "process metric {name} missing");
    }
    for kind in ["connect", "timeout", "protocol"] {
        assert_eq!(value(&metrics, "usher_upstream_errors_total", &[("kind", kind)]), Some(0.0), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_forwards_are_counted_by_kind_and_status() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.upstream.response_timeout = Duration::from_millis(300);
    let usher = start_usher(config);
    assert_eq!(http1(http_addr(&usher), get("/slow?ms=5000")).await.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(http1(http_addr(&usher), get("/abort")).await.status, StatusCode::BAD_GATEWAY);
    let nobody = closed_addr();
    let unreachable = start_usher(Config::for_upstream(nobody.addr));
    for _ in 0..3 {
        assert_eq!(http1(http_addr(&unreachable), get("/")).await.status, StatusCode::BAD_GATEWAY);
    }

    let metrics = scrape(usher.admin_addr).await;
    assert_eq!(value(&metrics, "usher_upstream_errors_total", &[("kind", "timeout")]), Some(1.0));
    assert_eq!(value(&metrics, "usher_upstream_errors_total", &[("kind", "protocol")]), Some(1.0));
    assert_eq!(value(&metrics, "usher_requests_total", &[("route", "upstream"), ("code", "504")]), Some(1.0));
    assert_eq!(value(&metrics, "usher_requests_total", &[("route", "upstream"), ("code", "502")]), Some(1.0));

    let metrics = scrape(unreachable.admin_addr).await;
    assert_eq!(value(&metrics, "usher_upstream_errors_total", &[("kind", "connect")]), Some(3.0));
    assert_eq!(value(&metrics, "usher_requests_total", &[("route", "upstream"), ("code", "502")]), Some(3.0));
    assert_eq!(value(&metrics, "usher_upstream_duration_seconds_count", &[]), Some(0.0), "no answer, no duration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_200_on_the_admin_listener() {
    let upstream = Upstream::start().await;
    let usher = usher_for(&upstream);
    let healthz = http1(usher.admin_addr, get("/healthz")).await;
    assert_eq!(healthz.status, StatusCode::OK);
    assert_eq!(healthz.header("cache-control"), Some("no-store"));
    assert_eq!(http1(usher.admin_addr, get("/readyz")).await.status, StatusCode::OK);
    assert_eq!(http1(usher.admin_addr, get("/nothing-here")).await.status, StatusCode::NOT_FOUND);
    let post = Request::post("/metrics").body(empty()).expect("request");
    assert_eq!(http1(usher.admin_addr, post).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(upstream.seen().is_empty(), "admin requests never reach the upstream");
}
