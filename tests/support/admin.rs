//! The admin listener: `/metrics` read and summed by name and labels, and admin API calls.
//! Each request goes on its own connection ([`http1`]).

use super::client::{Reply, full, get, http1};
use http::{Method, Request, StatusCode};
use std::net::SocketAddr;

/// `GET /metrics` from the admin listener.
pub async fn metrics_text(admin: SocketAddr) -> String {
    metrics_reply_text(http1(admin, get("/metrics")).await)
}

/// `GET /metrics` with a bearer token (`admin.metrics = "viewer"`).
pub async fn metrics_text_with(admin: SocketAddr, token: &str) -> String {
    let req = Request::get("/metrics").header("authorization", format!("Bearer {token}")).body(full(""));
    metrics_reply_text(http1(admin, req.expect("request")).await)
}

fn metrics_reply_text(reply: Reply) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    String::from_utf8(reply.body.to_vec()).expect("metrics are text")
}

/// The sum of every sample of `name` whose labels include all of `labels` (0 if none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let matches = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// One metric of one room, read now.
pub async fn room_metric(admin: SocketAddr, name: &str, room: &str) -> f64 {
    metric(&metrics_text(admin).await, name, &[("room", room)])
}

/// How many cookies were rejected for `reason`.
pub fn rejected(text: &str, cookie: &str, reason: &str) -> f64 {
    metric(text, "usher_token_rejected_total", &[("cookie", cookie), ("reason", reason)])
}

/// An admin API call (`Authorization: Bearer token` when given).
pub async fn admin_call(admin: SocketAddr, method: Method, path: &str, token: Option<&str>, body: &str) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    http1(admin, req.body(full(body.to_string())).expect("request")).await
}
