//! The admin event stream (issue 19): `GET /admin/events` delivers each room's figures every
//! tick and a change made through the API before the next figures show it, resumes with
//! `Last-Event-ID` without a gap or a repeat, needs a token even from loopback, and serves
//! a hundred subscribers while the queue keeps answering. `usher admin watch` follows it.

mod support;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use std::io::BufRead;
use std::time::Duration;
use support::*;
use usher::operators::{hex, token_sha256};

const VIEWER: &str = "viewer-token-vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";
const OPERATOR: &str = "operator-token-oooooooooooooooooooooooooooooooo";

fn config(upstream: &Upstream) -> String {
    let operator = |name: &str, role: &str, token: &str| {
        format!(
            "[[admin.operator]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n",
            hex(&token_sha256(token))
        )
    };
    format!(
        "{}\n[[room]]\nname = \"citizens\"\npaths = [\"/inbox\"]\nmax_active = 5\n\n{}{}",
        binary_config(&[upstream.addr], "", ""),
        operator("vera", "viewer", VIEWER),
        operator("otto", "operator", OPERATOR)
    )
}

/// One subscriber: the events as they arrive.
struct Subscriber {
    body: Incoming,
    pending: String,
}

#[derive(Debug, Clone)]
struct Event {
    id: u64,
    kind: String,
    data: Value,
}

impl Subscriber {
    async fn open(usher: &UsherProcess, token: Option<&str>, last_id: Option<u64>) -> Result<Self, StatusCode> {
        let mut req = Request::get("/admin/events");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let response = http1_stream(usher.admin_addr, req.body(empty()).expect("request")).await;
        if response.status() != StatusCode::OK {
            return Err(response.status());
        }
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Ok(Self { body: response.into_body(), pending: String::new() })
    }

    /// The next event (comments and `retry` skipped); panics after 10 s without one.
    async fn next(&mut self) -> Event {
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let field =
                    |name: &str| block.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(String::from));
                if let (Some(id), Some(kind), Some(data)) = (field("id"), field("event"), field("data")) {
                    let data = serde_json::from_str(&data).expect("data is JSON");
                    return Event { id: id.parse().expect("numeric id"), kind, data };
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")
                .expect("the stream is open")
                .expect("a frame");
            if let Some(data) = frame.data_ref() {
                self.pending.push_str(std::str::from_utf8(data).expect("UTF-8"));
            }
        }
    }

    /// Reads until an event matches (at most `limit` events).
    async fn until(&mut self, limit: usize, wanted: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
        let mut seen = Vec::new();
        for _ in 0..limit {
            let event = self.next().await;
            if wanted(&event) {
                return (event, seen);
            }
            seen.push(event);
        }
        panic!("no matching event among {limit}: {seen:?}");
    }
}

fn is_change(field: &'static str) -> impl Fn(&Event) -> bool {
    move |e: &Event| e.kind == "change" && e.data["field"] == field
}

async fn patch(usher: &UsherProcess, body: &str) {
    let reply = admin_call(usher.admin_addr, Method::PATCH, "/admin/rooms/citizens", Some(OPERATOR), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_flow_each_tick_and_a_change_arrives_before_the_next_figures() {
    let upstream = Upstream::start().await;
    let usher = UsherProcess::spawn(&config(&upstream), Logs::Text, &[]);
    let mut events = Subscriber::open(&usher, Some(VIEWER), None).await.expect("subscribed");
    let (figures, _) = events.until(50, |e| e.kind == "figures").await;
    assert_eq!(figures.data["room"], "citizens");
    assert_eq!(figures.data["max_active"], 5);
    for field in
        ["waiting", "active", "pending_grants", "configured_per_minute", "effective_per_minute", "eta_tail_seconds"]
    {
        assert!(figures.data.get(field).is_some(), "figures carry {field}: {}", figures.data);
    }

    patch(&usher, r#"{"max_active": 9}"#).await;
    let (change, before) = events.until(100, is_change("max_active")).await;
    assert_eq!(change.data["who"], "otto");
    assert_eq!((change.data["old"].as_str(), change.data["new"].as_str()), (Some("5"), Some("9")));
    // Published as it is applied: within one tick, so at most one figures event (a tick that
    // ran between the store's write and the publication) can show the new value first.
    let early = before.iter().filter(|e| e.kind == "figures" && e.data["max_active"] == 9).count();
    assert!(early <= 1, "the change came {early} ticks late: {before:?}");
    let (after, _) = events.until(50, |e| e.kind == "figures").await;
    assert_eq!(after.data["max_active"], 9, "the next tick's figures show it");
    assert!(after.id > change.id);

    // `usher admin watch` prints the same stream, one line per event.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["admin", "--addr", &usher.admin_addr.to_string(), "watch"])
        .env("USHER_ADMIN_TOKEN", VIEWER)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run usher admin watch");
    let stdout = watch.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        std::io::BufReader::new(stdout).lines().map_while(Result::ok).find(|l| l.contains("\"message\""))
    });
    let mut printed = None;
    for _ in 0..100 {
        // Changes until watch has printed one (it may subscribe after the first).
        patch(&usher, r#"{"message": "Tax day"}"#).await;
        patch(&usher, r#"{"message": null}"#).await;
        if lines.is_finished() {
            printed = lines.join().expect("reader");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let line = printed.expect("watch printed the change");
    assert!(line.contains(" change ") && line.contains("\"who\":\"otto\""), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_without_a_gap_or_a_repeat() {
    let upstream = Upstream::start().await;
    let usher = UsherProcess::spawn(&config(&upstream), Logs::Text, &[]);
    let mut first = Subscriber::open(&usher, Some(VIEWER), None).await.expect("subscribed");
    patch(&usher, r#"{"max_active": 7}"#).await;
    let (seen, _) = first.until(100, is_change("max_active")).await;
    drop(first);

    // Away for a while: more ticks and a change happen meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;
    patch(&usher, r#"{"message": "Back at 09:15"}"#).await;
    let mut resumed = Subscriber::open(&usher, Some(VIEWER), Some(seen.id)).await.expect("resumed");
    let next = resumed.next().await;
    assert_eq!(next.id, seen.id + 1, "the stream resumes right after the last event seen");
    let (missed, between) = resumed.until(100, is_change("message")).await;
    let ids: Vec<u64> = std::iter::once(next.id).chain(between.iter().map(|e| e.id)).chain([missed.id]).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "no gap and no repeat: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_a_token_even_from_loopback() {
    let upstream = Upstream::start().await;
    let usher = UsherProcess::spawn(&config(&upstream), Logs::Text, &[]);
    assert_eq!(Subscriber::open(&usher, None, None).await.err(), Some(StatusCode::UNAUTHORIZED));
    let unknown = "nobodys-token-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    assert_eq!(Subscriber::open(&usher, Some(unknown), None).await.err(), Some(StatusCode::UNAUTHORIZED));
    assert!(Subscriber::open(&usher, Some(VIEWER), None).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_each_get_the_change_while_the_queue_keeps_answering() {
    let upstream = Upstream::start().await;
    let usher = UsherProcess::spawn(&config(&upstream), Logs::Text, &[]);
    let mut subscribers = Vec::new();
    for _ in 0..100 {
        subscribers.push(Subscriber::open(&usher, Some(VIEWER), None).await.expect("subscribed"));
    }
    patch(&usher, r#"{"max_active": 11}"#).await;
    for _ in 0..20 {
        assert_eq!(http1(usher.http_addr, get("/")).await.status, StatusCode::OK);
    }
    let received = futures_util::future::join_all(
        subscribers
            .iter_mut()
            .map(|s| async move { s.until(200, is_change("max_active")).await.0.data["new"].clone() }),
    )
    .await;
    assert!(received.iter().all(|new| new == "11"), "every subscriber got the change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_the_configured_outflow_the_figures_report() {
    let upstream = Upstream::start().await;
    let usher = UsherProcess::spawn(&config(&upstream), Logs::Text, &[]);
    let mut events = Subscriber::open(&usher, Some(VIEWER), None).await.expect("subscribed");
    let (before, _) = events.until(50, |e| e.kind == "figures").await;
    let configured = before.data["configured_per_minute"].as_u64().expect("a configured outflow");
    let text = config(&upstream)
        .replace("max_active = 5\n", &format!("max_active = 5\nadmit_per_minute = {}\n", configured + 7));
    std::fs::write(usher.config_path(), text).expect("rewrite the config");
    usher.signal("HUP");
    let (after, _) = events
        .until(200, |e| e.kind == "figures" && e.data["configured_per_minute"] != before.data["configured_per_minute"])
        .await;
    assert_eq!(after.data["configured_per_minute"].as_u64(), Some(configured + 7));
    assert_eq!(after.data["effective_per_minute"].as_u64(), Some(configured + 7), "the reload applied it too");
}
