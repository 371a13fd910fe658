//! The admin API (DESIGN §9): rooms with their live figures, and the operator's levers:
//! pause, resume, limits, event start, message, drain. JSON in and out.
//!
//! Reads are open to loopback peers, and to others with the token. Writes need
//! `Authorization: Bearer <USHER_ADMIN_TOKEN>` (compared in constant time); with no token
//! configured, writes are refused. Every change is one log line naming the token by its id
//! (a hash prefix), never the token itself.

use crate::body::Body;
use crate::changes::{self, Source};
use crate::clock::now_ms;
use crate::config::{RoomMode, parse_rfc3339};
use crate::metrics::Metrics;
use crate::room::tokens::constant_time_eq;
use crate::room::{Room, Rooms};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::net::IpAddr;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// The admin API's state: the rooms, and the write token if one is configured.
pub struct AdminApi {
    pub rooms: std::sync::Arc<Rooms>,
    pub token: Option<String>,
    pub metrics: std::sync::Arc<Metrics>,
}

/// An answer: status and JSON body.
type Answer = (StatusCode, Value);

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Answer {
    let mut body = json!({ "error": message });
    if let Some(field) = field {
        body["field"] = json!(field);
    }
    (status, body)
}

impl AdminApi {
    /// The token's id for logs: the first 8 hex digits of its SHA-256.
    fn token_id(&self) -> String {
        let token = self.token.as_deref().unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        digest.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn presented_valid_token<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.token else { return false };
        req.headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }

    /// Answers a request under `/admin/`.
    pub async fn handle(&self, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let (status, body) = self.route(req, peer).await;
        let mut response = Response::new(Body::from(format!("{body}\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn route(&self, req: Request<Incoming>, peer: IpAddr) -> Answer {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        let authorised = self.presented_valid_token(&req);
        let write = !matches!(method, Method::GET | Method::HEAD);
        if write {
            if self.token.is_none() {
                return error(StatusCode::FORBIDDEN, "admin writes are disabled: set USHER_ADMIN_TOKEN", None);
            }
            if !authorised {
                return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token", None);
            }
        } else if !peer.to_canonical().is_loopback() && !authorised {
            return error(StatusCode::UNAUTHORIZED, "reads from other hosts need the bearer token", None);
        }
        let room = |name: &str| self.rooms.get(name).cloned();
        match (method, parts.as_slice()) {
            (Method::GET, ["admin", "rooms"]) => {
                let mut list = Vec::new();
                for r in self.rooms.all() {
                    list.push(room_json(r).await);
                }
                (StatusCode::OK, json!({ "rooms": list }))
            }
            (Method::GET, ["admin", "rooms", name]) => match room(name) {
                Some(r) => (StatusCode::OK, room_json(&r).await),
                None => error(StatusCode::NOT_FOUND, "no such room", None),
            },
            (method, ["admin", "rooms", name, rest @ ..]) if method != Method::GET => {
                let Some(r) = room(name) else { return error(StatusCode::NOT_FOUND, "no such room", None) };
                let body = match read_json(req.into_body()).await {
                    Ok(body) => body,
                    Err(answer) => return answer,
                };
                match (method, rest) {
                    (Method::PATCH, []) => self.patch(&r, &body).await,
                    (Method::POST, ["pause"]) => {
                        let mut patch = json!({ "mode": "paused" });
                        if let Some(message) = body.get("message") {
                            patch["message"] = message.clone();
                        }
                        self.patch(&r, &patch).await
                    }
                    (Method::POST, ["resume"]) => {
                        let mode = r.resume_mode.as_str();
                        self.patch(&r, &json!({ "mode": mode, "message": null })).await
                    }
                    (Method::POST, ["drain"]) => self.drain(&r, &body).await,
                    _ => error(StatusCode::NOT_FOUND, "no such admin route", None),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such admin route", None),
        }
    }

    /// Applies any of `max_active`, `admit_per_minute`, `mode`, `opens_at`, `message`,
    /// `hold_seconds` (lengthened live when, say, a mobile network drops out at peak).
    async fn patch(&self, room: &Room, body: &Value) -> Answer {
        let Some(fields) = body.as_object() else {
            return error(StatusCode::BAD_REQUEST, "the body must be a JSON object", None);
        };
        let old = room.limits();
        let mut new = old.clone();
        // The adaptive outflow pinned (an operator's rate stands) or let go; setting
        // admit_per_minute by hand pins it, so the controller never overwrites an operator.
        let mut pin = None;
        for (field, value) in fields {
            let bad = |why: &str| error(StatusCode::BAD_REQUEST, why, Some(field));
            match field.as_str() {
                "max_active" | "admit_per_minute" => {
                    let Some(n) = value.as_u64().filter(|n| (1..=100_000_000).contains(n)) else {
                        return bad("must be a whole number from 1 to 100000000");
                    };
                    if field == "max_active" {
                        new.max_active = n
                    } else {
                        new.admit_per_minute = n;
                        if room.adaptive.is_some() {
                            pin = pin.or(Some(true));
                        }
                    }
                }
                "adaptive" => match (value.as_bool(), &room.adaptive) {
                    (Some(on), Some(_)) => pin = Some(!on),
                    (None, _) => return bad("must be true (the controller sets the outflow) or false (pinned)"),
                    (Some(_), None) => return bad("this room has no [room.adaptive] section"),
                },
                "hold_seconds" => {
                    let ttl = old.waiter_ttl.as_secs().max(1);
                    let Some(n) = value.as_u64().filter(|n| (ttl..=86_400).contains(n)) else {
                        return bad(&format!("must be a whole number of seconds from waiter_ttl ({ttl}) to 86400"));
                    };
                    new.hold = std::time::Duration::from_secs(n);
                }
                "mode" => match value.as_str().and_then(RoomMode::parse) {
                    Some(mode) => new.mode = mode,
                    None => return bad("must be one of auto, queue_all, paused, closed"),
                },
                "opens_at" => match value {
                    Value::Null => new.opens_at_ms = None,
                    Value::String(text) => match parse_rfc3339(text).and_then(|s| u64::try_from(s).ok()) {
                        Some(secs) => new.opens_at_ms = Some(secs * 1000),
                        None => return bad("must be an RFC 3339 time such as 2027-03-14T09:00:00+01:00, or null"),
                    },
                    _ => return bad("must be an RFC 3339 time string or null"),
                },
                "message" => match value {
                    Value::Null => new.message = None,
                    Value::String(text) if text.len() <= 1000 => new.message = Some(text.clone()),
                    _ => return bad("must be a string of at most 1000 bytes, or null"),
                },
                _ => return bad("is not a field that can be changed"),
            }
        }
        let applied = match room.apply(&old, &new).await {
            Ok(applied) => applied,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), None),
        };
        changes::room_limits(&self.metrics, Source::Api { token_id: &self.token_id() }, &room.name, &old, &new);
        if let (Some(adaptive), Some(pinned)) = (&room.adaptive, pin) {
            let was = adaptive_state(room);
            adaptive.pin(pinned, applied.admit_per_minute);
            let target = format!("room:{}", room.name);
            let source = Source::Api { token_id: &self.token_id() };
            if was != adaptive_state(room) {
                changes::record(
                    &self.metrics,
                    source,
                    &target,
                    "adaptive",
                    was.unwrap_or("-"),
                    adaptive_state(room).unwrap_or("-"),
                );
            }
        }
        (StatusCode::OK, room_json(room).await)
    }

    async fn drain(&self, room: &Room, body: &Value) -> Answer {
        let oldest = match body.get("oldest") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(n),
                None => return error(StatusCode::BAD_REQUEST, "must be a whole number", Some("oldest")),
            },
        };
        match room.store.drain(oldest).await {
            Ok(drained) => {
                let asked = oldest.map_or("all sessions".into(), |n| format!("oldest {n} sessions"));
                let done = format!("{drained} ended");
                let target = format!("room:{}", room.name);
                changes::record(
                    &self.metrics,
                    Source::Api { token_id: &self.token_id() },
                    &target,
                    "drain",
                    &asked,
                    &done,
                );
                (StatusCode::OK, json!({ "room": room.name, "drained": drained }))
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), None),
        }
    }
}

async fn read_json(body: Incoming) -> Result<Value, Answer> {
    let bytes: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(error(StatusCode::BAD_REQUEST, "the body is unreadable or over 64 KiB", None)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}"), None))
}

/// `on` while the controller sets the room's outflow, `pinned` while an operator does; `None`
/// without `[room.adaptive]`.
fn adaptive_state(room: &Room) -> Option<&'static str> {
    room.adaptive.as_ref().map(|a| if a.pinned() { "pinned" } else { "on" })
}

/// A room's configuration and live figures.
async fn room_json(room: &Room) -> Value {
    let limits = room.limits();
    let figures = room.store.figures(now_ms()).await.ok();
    json!({
        "name": room.name,
        "mode": limits.mode.as_str(),
        "max_active": limits.max_active,
        "admit_per_minute": limits.admit_per_minute,
        "adaptive": adaptive_state(room),
        "session_idle_seconds": limits.session_idle.as_secs(),
        "session_max_seconds": limits.session_max.as_secs(),
        "waiter_ttl_seconds": limits.waiter_ttl.as_secs(),
        "claim_window_seconds": limits.claim_window.as_secs(),
        "hold_seconds": limits.hold.as_secs(),
        "opens_at": limits.opens_at_ms.map(|ms| ms / 1000),
        "message": limits.message,
        "waiting": figures.map(|f| f.waiting),
        "held": figures.map(|f| f.held),
        "active": figures.map(|f| f.active),
        "pending_grants": figures.map(|f| f.pending),
        "measured_per_minute": figures.and_then(|f| f.measured_per_minute),
        "eta_tail_seconds": room.metrics.eta_seconds.get(),
    })
}
