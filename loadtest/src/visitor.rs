//! One visitor's script: join, wait by polling `/.usher/status` as usher's own page does
//! (the suggested interval × 0.8–1.2), be admitted, use the mailbox with the pass, then
//! linger or leave. Everything it sees goes into its [`VisitorRecord`].

use crate::browser::{Answer, Browser, Gateway, RequestError};
use crate::record::{Admission, Failure, Route, Sample, VisitorRecord};
use crate::rng::Rng;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::HeaderValue;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The names of usher's cookies start with these, then `_` and the room's name.
pub const TICKET_COOKIE: &str = "usher_ticket";
pub const PASS_COOKIE: &str = "usher_pass";
const STATUS_PATH: &str = "/.usher/status";

/// What every visitor of a run does.
#[derive(Debug, Clone)]
pub struct Script {
    /// usher's nodes: visitor `i` goes to node `i mod n` (or through the gateway).
    pub targets: Vec<SocketAddr>,
    /// When set, visitors reach usher through this load balancer instead of their own
    /// connections.
    pub gateway: Option<Arc<Gateway>>,
    pub host: HeaderValue,
    /// The room path the visitor first asks for.
    pub join_path: String,
    /// Requests made with the pass once admitted, in order.
    pub mailbox_paths: Vec<String>,
    /// Pause before each mailbox request.
    pub think: Duration,
    /// How long to keep the connection open after the last request (idling), before leaving.
    pub linger: Duration,
    pub request_timeout: Duration,
    /// Multiplies usher's suggested poll interval (1 = as a browser does).
    pub poll_scale: f64,
    /// Before a pause longer than this, the connection is closed (usher closes idle
    /// keep-alive connections too; closing first avoids racing it).
    pub idle_close: Duration,
    /// Some visitors step away while they wait (a locked phone), then come back.
    pub away: Option<Away>,
}

/// Stepping away: a share of the waiting visitors stops polling for a while, as a phone
/// that locks its screen does, then asks at once on return, as usher's page does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Away {
    /// The share of queued visitors who step away, 0 to 1.
    pub share: f64,
    /// How long after joining they go.
    pub after: Duration,
    /// How long they stay away.
    pub stay: Duration,
}

/// The fields of usher's status JSON that a visitor uses.
#[derive(Debug, Deserialize)]
struct StatusJson {
    status: String,
    ahead: Option<u64>,
    eta_seconds: Option<u64>,
    poll_after_seconds: Option<u64>,
}

/// The ticket number inside an `usher_ticket` cookie: `base64url(payload ‖ tag)`, payload
/// version 2, kind `T`, room, store generation, number (8 bytes each, big-endian), joined-at,
/// renewed-at; a 16-byte tag. Only read, never verified (the load generator has no secret).
/// `None` for any other format.
pub fn ticket_number(cookie: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(cookie).ok()?;
    // Version 2: 42 bytes, or 58 with what the waiter was shown (Redis mode); a 16-byte tag.
    if !(raw.len() == 42 + 16 || raw.len() == 58 + 16) || raw[0] != 2 || raw[1] != b'T' {
        return None;
    }
    Some(u64::from_be_bytes(raw[18..26].try_into().ok()?))
}

/// Runs one visit. `start` is the run's time origin, `deadline` its end.
pub async fn visit(
    script: &Script,
    index: u64,
    source: IpAddr,
    start: Instant,
    deadline: Instant,
    mut rng: Rng,
) -> VisitorRecord {
    let (host, timeout) = (script.host.clone(), script.request_timeout);
    let browser = match &script.gateway {
        Some(gateway) => Browser::behind(gateway.clone(), index as usize, source, host, timeout),
        None => Browser::new(script.targets[(index % script.targets.len() as u64) as usize], source, host, timeout),
    };
    let mut visit = Visit { browser, record: VisitorRecord::new(index), start };
    visit.run(script, deadline, &mut rng).await;
    visit.record.connects = visit.browser.connects;
    visit.record
}

struct Visit {
    browser: Browser,
    record: VisitorRecord,
    start: Instant,
}

/// Why a visit stopped before admission.
enum Stop {
    Failed,
    TimeUp,
}

impl Visit {
    fn us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    fn fail(&mut self, route: Route, failure: Failure) {
        self.record.failures.push((route, failure));
    }

    async fn request(&mut self, route: Route, path: &str, accept: &'static str) -> Option<Answer> {
        match self.browser.get(path, accept).await {
            Ok(answer) => {
                self.record.samples.push(Sample {
                    route,
                    sent_us: self.us(answer.sent),
                    latency_us: u32::try_from(answer.latency.as_micros()).unwrap_or(u32::MAX),
                    status: answer.status.as_u16(),
                });
                Some(answer)
            }
            Err(e) => {
                let failure = match e {
                    RequestError::Connect(_) => Failure::Connect,
                    RequestError::Timeout => Failure::Timeout,
                    RequestError::Http(_) | RequestError::Build(_) => Failure::Protocol,
                };
                self.fail(route, failure);
                None
            }
        }
    }

    async fn run(&mut self, script: &Script, deadline: Instant, rng: &mut Rng) {
        // Drawn first, so the same seed makes the same visitors step away whatever happens.
        let away = script.away.filter(|a| rng.unit() < a.share);
        let first_poll = match self.join(script).await {
            Ok(Some(poll_after)) => poll_after,
            Ok(None) => 0,
            Err(_) => return,
        };
        if self.record.admission == Admission::No && self.wait(script, first_poll, deadline, rng, away).await.is_err() {
            return;
        }
        for path in &script.mailbox_paths {
            if !pause(script.think, deadline).await {
                return;
            }
            let Some(answer) = self.request(Route::Mailbox, path, "text/html").await else { continue };
            if !answer.status.is_success() {
                self.fail(Route::Mailbox, Failure::Status(answer.status.as_u16()));
            }
        }
        pause(script.linger, deadline).await;
    }

    /// The join request. `Ok(Some(poll_after))` when queued, `Ok(None)` when admitted at once.
    async fn join(&mut self, script: &Script) -> Result<Option<u64>, Stop> {
        let sent = Instant::now();
        self.record.join_sent_us = Some(self.us(sent));
        let answer = self.request(Route::Join, &script.join_path, "application/json").await.ok_or(Stop::Failed)?;
        self.record.join_answered_us = Some(self.us(answer.received));
        if answer.status.is_success() {
            if self.browser.usher_cookie(PASS_COOKIE).is_none() {
                self.fail(Route::Join, Failure::MissingCookie);
                return Err(Stop::Failed);
            }
            self.record.admission = Admission::Direct;
            self.record.admitted_us = self.record.join_answered_us;
            return Ok(None);
        }
        if answer.status != http::StatusCode::SERVICE_UNAVAILABLE {
            self.fail(Route::Join, Failure::Status(answer.status.as_u16()));
            return Err(Stop::Failed);
        }
        let Ok(json) = serde_json::from_slice::<StatusJson>(&answer.body) else {
            self.fail(Route::Join, Failure::BadJson);
            return Err(Stop::Failed);
        };
        let Some(ticket) = self.browser.usher_cookie(TICKET_COOKIE) else {
            let failure = match json.status.as_str() {
                "closed" => Failure::Closed,
                "unavailable" => Failure::Unavailable,
                _ => Failure::MissingCookie,
            };
            self.fail(Route::Join, failure);
            return Err(Stop::Failed);
        };
        self.record.ticket = ticket_number(ticket);
        self.record.prequeued = json.status == "prequeue";
        self.record.ahead_at_join = json.ahead;
        self.record.eta_at_join_s = json.eta_seconds;
        self.record.last_waiting_sent_us = Some(self.us(answer.sent));
        Ok(Some(json.poll_after_seconds.unwrap_or(5)))
    }

    /// Polls until admitted, the place is lost, or the run's time is up.
    async fn wait(
        &mut self,
        script: &Script,
        mut poll_after: u64,
        deadline: Instant,
        rng: &mut Rng,
        mut away: Option<Away>,
    ) -> Result<(), Stop> {
        let mut last_ahead = self.record.ahead_at_join;
        let mut failures_in_a_row = 0u32;
        let joined = Instant::now();
        loop {
            if let Some(a) = away.filter(|a| joined.elapsed() >= a.after) {
                // Gone: no poll, no connection, for the whole stay; then back, asking at once.
                away = None;
                self.browser.close();
                self.record.away_from_us = Some(self.us(Instant::now()));
                if !pause(a.stay, deadline).await {
                    return Err(Stop::TimeUp);
                }
                self.record.back_us = Some(self.us(Instant::now()));
                poll_after = 0;
            }
            let seconds = if failures_in_a_row == 0 {
                poll_after as f64 * rng.between(0.8, 1.2) * script.poll_scale
            } else {
                // As usher's page does: back off on errors, up to a minute.
                (poll_after.max(1) as f64 * 2f64.powi(failures_in_a_row.min(6) as i32)).min(60.0)
            };
            let mut pause_for = Duration::from_secs_f64(seconds.max(0.0));
            // Wake for the step away if it falls inside this pause.
            if let Some(a) = away {
                pause_for = pause_for.min(a.after.saturating_sub(joined.elapsed()));
            }
            if pause_for > script.idle_close {
                self.browser.close();
            }
            if !pause(pause_for, deadline).await {
                return Err(Stop::TimeUp);
            }
            if away.is_some_and(|a| joined.elapsed() >= a.after) {
                continue;
            }
            self.record.polls += 1;
            let Some(answer) = self.request(Route::Status, STATUS_PATH, "application/json").await else {
                failures_in_a_row += 1;
                continue;
            };
            if answer.status != http::StatusCode::OK {
                self.fail(Route::Status, Failure::Status(answer.status.as_u16()));
                failures_in_a_row += 1;
                continue;
            }
            let Ok(json) = serde_json::from_slice::<StatusJson>(&answer.body) else {
                self.fail(Route::Status, Failure::BadJson);
                failures_in_a_row += 1;
                continue;
            };
            failures_in_a_row = 0;
            match json.status.as_str() {
                "waiting" | "paused" | "prequeue" => {
                    self.record.last_waiting_sent_us = Some(self.us(answer.sent));
                    if let (Some(before), Some(now)) = (last_ahead, json.ahead)
                        && now > before
                    {
                        self.record.position_increases += 1;
                    }
                    last_ahead = json.ahead.or(last_ahead);
                    poll_after = json.poll_after_seconds.unwrap_or(poll_after);
                }
                "admitted" => {
                    if self.browser.usher_cookie(PASS_COOKIE).is_none() {
                        self.fail(Route::Status, Failure::MissingCookie);
                        return Err(Stop::Failed);
                    }
                    self.record.admission = Admission::FromLine;
                    self.record.admitted_us = Some(self.us(answer.received));
                    return Ok(());
                }
                "closed" => {
                    self.fail(Route::Status, Failure::Closed);
                    return Err(Stop::Failed);
                }
                "unavailable" => {
                    self.fail(Route::Status, Failure::Unavailable);
                    failures_in_a_row += 1;
                }
                _ => {
                    self.fail(Route::Status, Failure::PlaceLost);
                    return Err(Stop::Failed);
                }
            }
        }
    }
}

/// Sleeps for `d`, unless that passes `deadline`; false when the time is up.
async fn pause(d: Duration, deadline: Instant) -> bool {
    let until = Instant::now() + d;
    if until >= deadline {
        tokio::time::sleep_until(deadline).await;
        return false;
    }
    tokio::time::sleep_until(until).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticket_number_is_read_from_the_cookie_layout() {
        let mut raw = vec![2u8, b'T'];
        for field in [7u64, 99, 12_345, 1_700_000_000_000, 1_700_000_000] {
            raw.extend_from_slice(&field.to_be_bytes());
        }
        raw.extend_from_slice(&[0xAA; 16]);
        let cookie = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(ticket_number(&cookie), Some(12_345));
        raw[1] = b'P';
        assert_eq!(ticket_number(&URL_SAFE_NO_PAD.encode(&raw)), None, "a pass is not a ticket");
        assert_eq!(ticket_number("not base64!"), None);
        assert_eq!(ticket_number(&URL_SAFE_NO_PAD.encode([2u8, b'T', 0])), None, "too short");
    }
}
