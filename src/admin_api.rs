//! The admin API (DESIGN §9): rooms with their live figures, and the operator's levers:
//! pause, resume, limits, event start, message, drain. JSON in and out.
//!
//! Who may do what is [`crate::operators`]: reads need the viewer role (or a loopback peer,
//! so an SRE on the host and the health checks need no token), changes the operator role, and
//! the list of operators the admin role. A token that is no operator's is a 401, a role too
//! small a 403. Every change is one log line naming the operator, never a token.

use crate::body::Body;
use crate::changes::{Changes, Source};
use crate::clock::now_ms;
use crate::config::{RoomMode, parse_rfc3339};
use crate::operators::{Operator, Operators, Role};
use crate::room::{Room, Rooms};
use crate::store::{BreakGlass, RoomLimits};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// Who may use the admin listener, swapped whole by a reload.
#[derive(Debug, Default)]
pub struct Access {
    pub operators: Operators,
    /// `admin.metrics = "viewer"`.
    pub metrics_need_token: bool,
}

/// Why a request is refused before it is routed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No token where one is needed, or a token that is no operator's (perhaps revoked).
    Unauthorised(&'static str),
    /// A known operator whose role is too small, or writes with nobody configured to make them.
    Forbidden(String),
}

impl Refused {
    fn answer(self) -> Answer {
        match self {
            Refused::Unauthorised(why) => error(StatusCode::UNAUTHORIZED, why, None),
            Refused::Forbidden(why) => error(StatusCode::FORBIDDEN, &why, None),
        }
    }
}

impl Access {
    /// The operator behind the request's bearer token, if it carries one; a token that
    /// identifies nobody is refused, so a revoked token never falls back to anonymous reads.
    pub fn caller<B>(&self, req: &Request<B>) -> Result<Option<Operator>, Refused> {
        let Some(value) = req.headers().get(AUTHORIZATION) else { return Ok(None) };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or_default();
        match self.operators.identify(token) {
            Some(operator) => Ok(Some(operator.clone())),
            None => Err(Refused::Unauthorised("unknown or revoked bearer token")),
        }
    }

    /// Checks that the request may do what needs `needed`; returns the operator, or `None`
    /// for an anonymous read from loopback.
    pub fn authorise<B>(&self, req: &Request<B>, peer: IpAddr, needed: Role) -> Result<Option<Operator>, Refused> {
        self.permit(self.caller(req), peer, needed)
    }

    /// [`Access::authorise`] for a caller already identified (the token is hashed once per
    /// request).
    fn permit(
        &self,
        caller: Result<Option<Operator>, Refused>,
        peer: IpAddr,
        needed: Role,
    ) -> Result<Option<Operator>, Refused> {
        if needed > Role::Viewer && self.operators.is_empty() {
            // Said plainly even to a caller with a token: nothing it could send would work.
            return Err(Refused::Forbidden(
                "admin changes are disabled: add an [[admin.operator]] or set USHER_ADMIN_TOKEN".into(),
            ));
        }
        match caller? {
            Some(operator) if operator.role >= needed => Ok(Some(operator)),
            Some(operator) => Err(Refused::Forbidden(format!(
                "{} has the {} role; this needs {}",
                operator.name, operator.role, needed
            ))),
            None if needed == Role::Viewer && peer.to_canonical().is_loopback() => Ok(None),
            None if needed > Role::Viewer => Err(Refused::Unauthorised("this needs a bearer token")),
            None => Err(Refused::Unauthorised("reads from other hosts need a bearer token")),
        }
    }
}

/// The admin API's state: the rooms, and who may use them.
pub struct AdminApi {
    pub rooms: Arc<Rooms>,
    pub access: ArcSwap<Access>,
    /// `USHER_ADMIN_TOKEN`'s operator, kept across reloads (the environment does not change).
    pub shortcut: Option<Operator>,
    pub changes: Arc<Changes>,
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
    pub fn new(
        rooms: Arc<Rooms>,
        admin: &crate::config::AdminConfig,
        shortcut_token: Option<&str>,
        changes: Arc<Changes>,
    ) -> Self {
        let shortcut = shortcut_token.map(Operator::shortcut);
        let access = ArcSwap::from_pointee(Access {
            operators: Operators::new(&admin.operators, shortcut.as_ref()),
            metrics_need_token: admin.metrics_need_token,
        });
        Self { rooms, access, shortcut, changes }
    }

    /// Applies a reloaded `[admin]`: additions, role changes and revocations take effect on
    /// the next request. Returns how many operators changed, each logged as a change.
    pub fn reload(&self, old: &crate::config::AdminConfig, new: &crate::config::AdminConfig) -> usize {
        let mut changed = 0;
        let describe =
            |o: Option<&Operator>| o.map_or("-".to_string(), |o| format!("{} (token {})", o.role, o.token_id()));
        let names = old.operators.iter().chain(&new.operators).map(|o| o.name.as_str());
        let mut seen = std::collections::BTreeSet::new();
        for name in names.filter(|n| seen.insert(*n)) {
            let before = old.operators.iter().find(|o| o.name == name);
            let after = new.operators.iter().find(|o| o.name == name);
            if before != after {
                let target = format!("operator:{name}");
                self.changes.record(Source::Reload, &target, "access", &describe(before), &describe(after));
                changed += 1;
            }
        }
        if changed > 0 || old.metrics_need_token != new.metrics_need_token {
            self.access.store(Arc::new(Access {
                operators: Operators::new(&new.operators, self.shortcut.as_ref()),
                metrics_need_token: new.metrics_need_token,
            }));
        }
        changed
    }

    /// Answers a request under `/admin/`.
    pub async fn handle(&self, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let caller = self.access.load().caller(&req);
        let who = match &caller {
            Ok(Some(operator)) => operator.name.clone(),
            Ok(None) => "-".to_string(),
            Err(_) => "unknown".to_string(),
        };
        let (status, body) = self.route(req, peer, caller).await;
        // Attempts that changed nothing go to the audit trail too: a change refused, failed or
        // malformed, and any request refused for its token or role.
        let write = !matches!(method, Method::GET | Method::HEAD);
        let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        if refused || (write && !status.is_success()) {
            let verb = if status.is_server_error() { "failed" } else { "refused" };
            let outcome = format!("{verb} ({})", status.as_u16());
            let target: String = path.chars().take(200).collect();
            self.changes.refused(&who, &target, method.as_str(), &outcome);
        }
        let mut response = Response::new(Body::from(format!("{body}\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn route(&self, req: Request<Incoming>, peer: IpAddr, caller: Result<Option<Operator>, Refused>) -> Answer {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        let needed = match (&method, parts.as_slice()) {
            (&Method::GET | &Method::HEAD, ["admin", "operators"]) => Role::Admin,
            (&Method::GET | &Method::HEAD, _) => Role::Viewer,
            // The break-glass lets everyone past the queue.
            (_, ["admin", "rooms", _, "off"]) => Role::Admin,
            _ => Role::Operator,
        };
        let caller = match self.access.load().permit(caller, peer, needed) {
            Ok(caller) => caller,
            Err(refused) => return refused.answer(),
        };
        // Only reads go unnamed; every change has an operator behind it.
        let who = caller.as_ref().map_or("-", |o| o.name.as_str()).to_string();
        let role = caller.as_ref().map_or(Role::Viewer, |o| o.role);
        let room = |name: &str| self.rooms.get(name).cloned();
        match (method, parts.as_slice()) {
            (Method::GET, ["admin", "rooms"]) => {
                let mut list = Vec::new();
                for r in self.rooms.all() {
                    list.push(room_json(r).await);
                }
                (StatusCode::OK, json!({ "rooms": list }))
            }
            (Method::GET, ["admin", "me"]) => match &caller {
                Some(me) => (StatusCode::OK, json!({ "name": me.name, "role": me.role.as_str() })),
                None => error(StatusCode::UNAUTHORIZED, "this needs a bearer token", None),
            },
            (Method::GET, ["admin", "operators"]) => {
                let access = self.access.load();
                let list: Vec<Value> = access
                    .operators
                    .all()
                    .iter()
                    .map(|o| json!({ "name": o.name, "role": o.role.as_str(), "token_id": o.token_id() }))
                    .collect();
                (StatusCode::OK, json!({ "operators": list }))
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
                    (Method::PATCH, []) => self.patch(&r, &body, &who, role).await,
                    (Method::POST, ["pause"]) => {
                        let mut patch = json!({ "mode": "paused" });
                        if let Some(message) = body.get("message") {
                            patch["message"] = message.clone();
                        }
                        self.patch(&r, &patch, &who, role).await
                    }
                    (Method::POST, ["resume"]) => {
                        let mode = r.resume_mode.as_str();
                        self.patch(&r, &json!({ "mode": mode, "message": null }), &who, role).await
                    }
                    (Method::POST, ["off"]) => {
                        let seconds =
                            body.get("for_seconds").and_then(Value::as_u64).filter(|n| (60..=86_400).contains(n));
                        match seconds {
                            Some(seconds) => self.off_for(&r, seconds, &who).await,
                            None => error(
                                StatusCode::BAD_REQUEST,
                                "must be a whole number of seconds from 60 to 86400",
                                Some("for_seconds"),
                            ),
                        }
                    }
                    (Method::POST, ["drain"]) => self.drain(&r, &body, &who).await,
                    _ => error(StatusCode::NOT_FOUND, "no such admin route", None),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "no such admin route", None),
        }
    }

    /// Applies any of `max_active`, `admit_per_minute`, `mode`, `opens_at`, `message`,
    /// `hold_seconds` (lengthened live when, say, a mobile network drops out at peak).
    async fn patch(&self, room: &Room, body: &Value, who: &str, role: Role) -> Answer {
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
                    Some(RoomMode::Off) if role < Role::Admin => {
                        let why = "off lets everyone past the queue: it needs the admin role";
                        return error(StatusCode::FORBIDDEN, why, Some(field));
                    }
                    Some(mode) => {
                        // A mode set by hand ends a break-glass deadline: it is the operator's now.
                        new.mode = mode;
                        new.break_glass = None;
                    }
                    None => return bad("must be one of auto, queue_all, paused, closed, off"),
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
        // In the store with the rest, so whichever node runs the controller obeys it.
        if let Some(pinned) = pin {
            new.adaptive_pinned = pinned;
        }
        let applied = match room.apply(&old, &new).await {
            Ok(applied) => applied,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), None),
        };
        self.changes.room_limits(Source::Api { operator: who }, &room.name, &old, &new);
        if room.adaptive.is_some() && applied.adaptive_pinned != old.adaptive_pinned {
            let target = format!("room:{}", room.name);
            let state = |l: &RoomLimits| adaptive_state(room, l).unwrap_or("-");
            self.changes.record(Source::Api { operator: who }, &target, "adaptive", state(&old), state(&applied));
        }
        (StatusCode::OK, room_json(room).await)
    }

    /// The break-glass: `off` for `seconds`, then back to the mode the room had, by itself
    /// (the admitter's tick watches the deadline). Repeated, it moves the deadline and keeps
    /// the mode to return to.
    async fn off_for(&self, room: &Room, seconds: u64, who: &str) -> Answer {
        let old = room.limits();
        let then = match (old.mode, old.break_glass) {
            (RoomMode::Off, Some(glass)) => glass.then,
            (RoomMode::Off, None) => room.resume_mode,
            (mode, _) => mode,
        };
        let mut new = old.clone();
        new.mode = RoomMode::Off;
        new.break_glass = Some(BreakGlass { until_ms: now_ms() + seconds * 1000, then });
        if let Err(e) = room.apply(&old, &new).await {
            return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), None);
        }
        tracing::warn!(room = %room.name, who, seconds, then = then.as_str(), "break-glass: the room lets everyone in");
        self.changes.room_limits(Source::Api { operator: who }, &room.name, &old, &new);
        (StatusCode::OK, room_json(room).await)
    }

    async fn drain(&self, room: &Room, body: &Value, who: &str) -> Answer {
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
                self.changes.record(Source::Api { operator: who }, &target, "drain", &asked, &done);
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
fn adaptive_state(room: &Room, limits: &RoomLimits) -> Option<&'static str> {
    room.adaptive.as_ref().map(|_| if limits.adaptive_pinned { "pinned" } else { "on" })
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
        "adaptive": adaptive_state(room, &limits),
        "session_idle_seconds": limits.session_idle.as_secs(),
        "session_max_seconds": limits.session_max.as_secs(),
        "waiter_ttl_seconds": limits.waiter_ttl.as_secs(),
        "claim_window_seconds": limits.claim_window.as_secs(),
        "hold_seconds": limits.hold.as_secs(),
        "opens_at": limits.opens_at_ms.map(|ms| ms / 1000),
        "message": limits.message,
        "off_until": limits.break_glass.map(|g| g.until_ms / 1000),
        "off_then": limits.break_glass.map(|g| g.then.as_str()),
        "waiting": figures.map(|f| f.waiting),
        "held": figures.map(|f| f.held),
        "active": figures.map(|f| f.active),
        "pending_grants": figures.map(|f| f.pending),
        "measured_per_minute": figures.and_then(|f| f.measured_per_minute),
        "eta_tail_seconds": room.metrics.eta_seconds.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::token_sha256;

    fn access(operators: &[(&str, Role, &str)]) -> Access {
        let list: Vec<Operator> = operators
            .iter()
            .map(|(name, role, token)| Operator {
                name: name.to_string(),
                role: *role,
                token_sha256: token_sha256(token),
            })
            .collect();
        Access { operators: Operators::new(&list, None), metrics_need_token: false }
    }

    fn request(token: Option<&str>) -> Request<()> {
        let mut req = Request::builder().uri("/admin/rooms");
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        req.body(()).expect("request")
    }

    #[test]
    fn another_host_needs_a_token_even_to_read() {
        let access = access(&[("vera", Role::Viewer, "v-token")]);
        let remote: IpAddr = "192.0.2.10".parse().expect("address");
        let loopback_v6: IpAddr = "::ffff:127.0.0.1".parse().expect("address");
        assert!(matches!(access.authorise(&request(None), remote, Role::Viewer), Err(Refused::Unauthorised(_))));
        assert!(matches!(access.authorise(&request(None), loopback_v6, Role::Viewer), Ok(None)));
        let named = access.authorise(&request(Some("v-token")), remote, Role::Viewer).expect("viewer reads");
        assert_eq!(named.map(|o| o.name), Some("vera".to_string()));
        assert!(matches!(
            access.authorise(&request(Some("v-token")), remote, Role::Operator),
            Err(Refused::Forbidden(_))
        ));
    }

    #[test]
    fn with_nobody_configured_changes_are_forbidden_not_unauthorised() {
        let nobody = access(&[]);
        let loopback: IpAddr = "127.0.0.1".parse().expect("address");
        assert!(matches!(nobody.authorise(&request(None), loopback, Role::Operator), Err(Refused::Forbidden(_))));
        let some_token = request(Some("anything"));
        assert!(matches!(nobody.authorise(&some_token, loopback, Role::Operator), Err(Refused::Forbidden(_))));
        let malformed = Request::builder().uri("/").header(AUTHORIZATION, "Basic abc").body(()).expect("request");
        assert!(matches!(nobody.authorise(&malformed, loopback, Role::Viewer), Err(Refused::Unauthorised(_))));
    }
}
