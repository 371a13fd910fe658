//! What a waiting visitor is shown (DESIGN §5): the [`View`] of its situation, the queue page
//! and the JSON made from it, the embedded assets and the language switch's way back.
//! [`crate::render`] makes responses of them.

pub mod i18n;
pub mod template;

use http::header::{HeaderMap, REFERER};
use i18n::Lang;
use serde::Serialize;
pub use template::{PageContext, PageTemplate, RoomPage, TemplateError};

pub const QUEUE_JS: &str = include_str!("queue.js");
pub const CHALLENGE_JS: &str = include_str!("challenge.js");
pub const QUEUE_CSS: &str = include_str!("queue.css");

/// The path of the language switch.
pub const LANG_PATH: &str = "/.usher/lang";

/// A waiter's situation, as the page and the JSON show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In line, moving.
    Waiting,
    /// In line before the event opens; the order is drawn at opening.
    Prequeue,
    /// In line; the operator has paused admission.
    Paused,
    /// The turn came: the pass is set, go on.
    Admitted,
    /// The place was lost (stopped polling, or the turn was not claimed in time).
    Expired,
    /// The room is closed for maintenance.
    Closed,
    /// usher cannot reach its store just now.
    Unavailable,
    /// Too many requests from this client (the page only; the JSON is the 429 body).
    RateLimited,
    /// No ticket was presented.
    None,
    /// A newcomer's browser solves a proof of work before it gets a ticket (`[room.challenge]`).
    Challenge,
}

/// Everything the page, the JSON and a custom template may show (the documented variables).
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub status: Status,
    pub room: String,
    /// Live waiters ahead of this one.
    pub ahead: Option<u64>,
    pub eta_seconds: Option<u64>,
    /// The estimate at the fastest and the slowest outflow of the last minutes, when those
    /// differ enough to show a range (`[low, high]` seconds in the JSON).
    pub eta_range_seconds: Option<(u64, u64)>,
    pub poll_after_seconds: u64,
    /// How long the place is held after the page last checked in (the room's `hold`).
    pub hold_seconds: u64,
    /// Unix seconds.
    pub joined_at: Option<u64>,
    /// Unix seconds of the event start, if one is set.
    pub opens_at: Option<u64>,
    pub message: Option<String>,
    /// Unix seconds when this view was made, so that clients count down without trusting
    /// their own clock.
    pub server_time: u64,
    /// The waiter's ticket number: with the room's draw ([`View::draw_url`]), anyone can
    /// check where a pre-queued ticket was drawn (`usher verify-draw --ticket`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u64>,
    /// The room has an event, so a draw: a pre-queue, or a line drawn from one.
    #[serde(skip)]
    pub drawn: bool,
    /// What to compute before a ticket (status `challenge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<Box<crate::room::challenge::Issued>>,
    /// The room's page template (not part of the JSON).
    #[serde(skip)]
    pub page: RoomPage,
}

impl View {
    pub fn none() -> Self {
        View {
            status: Status::None,
            room: String::new(),
            ahead: None,
            eta_seconds: None,
            eta_range_seconds: None,
            poll_after_seconds: 10,
            hold_seconds: 600,
            joined_at: None,
            opens_at: None,
            message: None,
            server_time: crate::clock::unix_now(),
            ticket: None,
            drawn: false,
            challenge: None,
            page: RoomPage::default(),
        }
    }

    /// Where the room's draw is published: `/.usher/draw/ROOM`.
    pub fn draw_url(&self) -> Option<String> {
        self.drawn.then(|| format!("{}{}", crate::room::published::PATH, self.room))
    }

    /// With the waiter's ticket number.
    pub fn with_ticket(mut self, number: u64) -> Self {
        self.ticket = Some(number);
        self
    }

    /// 1 = next in line.
    pub fn position(&self) -> Option<u64> {
        self.ahead.map(|a| a + 1)
    }

    pub fn eta_text(&self, lang: Lang) -> String {
        let t = lang.strings();
        match (self.status, self.eta_seconds) {
            (Status::Paused, _) => t.eta_paused.into(),
            (_, Some(s)) => self
                .eta_range_seconds
                .and_then(|(low, high)| lang.eta_range_text(low, high))
                .unwrap_or_else(|| lang.eta_text(s)),
            (_, None) => t.eta_unknown.into(),
        }
    }

    /// The share of the expected wait already behind the visitor: time waited over time
    /// waited plus the estimate. It moves as people ahead are admitted (the estimate falls)
    /// and needs no state beyond the join time. `None` while no estimate exists.
    pub fn progress_percent(&self) -> Option<u8> {
        let eta = self.eta_seconds.filter(|_| self.status == Status::Waiting)?;
        let waited = self.server_time.saturating_sub(self.joined_at?);
        let total = waited + eta;
        Some((waited * 100).checked_div(total).map_or(0, |p| p.min(99) as u8))
    }

    /// One view per state with plausible values: what templates are test-rendered with.
    pub fn samples() -> Vec<View> {
        let now = 1_795_000_000;
        let waiting = View {
            status: Status::Waiting,
            room: "citizens".into(),
            ahead: Some(42),
            eta_seconds: Some(700),
            eta_range_seconds: None,
            poll_after_seconds: 5,
            hold_seconds: 600,
            joined_at: Some(now - 300),
            opens_at: None,
            message: None,
            server_time: now,
            ticket: Some(1234),
            drawn: false,
            challenge: None,
            page: RoomPage::default(),
        };
        let with = |status, f: fn(&mut View)| {
            let mut v = View { status, ..waiting.clone() };
            f(&mut v);
            v
        };
        vec![
            waiting.clone(),
            with(Status::Prequeue, |v| {
                v.ahead = None;
                v.eta_seconds = None;
                v.opens_at = Some(v.server_time + 250);
                v.drawn = true;
            }),
            with(Status::Paused, |v| {
                v.eta_seconds = None;
                v.message = Some("Back at 10:30.".into());
            }),
            with(Status::Challenge, |v| {
                v.ahead = None;
                v.eta_seconds = None;
                v.joined_at = None;
                v.ticket = None;
                v.poll_after_seconds = 20;
                v.challenge = Some(Box::new(crate::room::challenge::Issued {
                    token: "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
                    algorithm: "sha256-leading-zero-bits",
                    bits: 13,
                    puzzles: 8,
                    answer_url: "/.usher/challenge?room=citizens".into(),
                    expires_in_seconds: 120,
                    noscript_wait_seconds: 20,
                    noscript_url: "/.usher/challenge?room=citizens&token=AgAA&to=/inbox".into(),
                }));
            }),
            with(Status::Admitted, |v| v.ahead = None),
            with(Status::Expired, |v| v.ahead = None),
            with(Status::Closed, |v| {
                v.ahead = None;
                v.joined_at = None;
                v.message = Some("Back tonight.".into());
            }),
            with(Status::Unavailable, |v| {
                v.ahead = None;
                v.joined_at = None;
            }),
            with(Status::RateLimited, |v| {
                v.ahead = None;
                v.joined_at = None;
            }),
            with(Status::None, |v| {
                v.ahead = None;
                v.joined_at = None;
            }),
        ]
    }

    /// The JSON body: the view plus derived fields (documented in README "Status JSON").
    pub fn json(&self, lang: Lang) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            view: &'a View,
            position: Option<u64>,
            eta_text: String,
            progress_percent: Option<u8>,
            lang: Lang,
            #[serde(skip_serializing_if = "Option::is_none")]
            draw_url: Option<String>,
        }
        let body = Json {
            view: self,
            draw_url: self.draw_url(),
            position: self.position(),
            eta_text: self.eta_text(lang),
            progress_percent: self.progress_percent(),
            lang,
        };
        serde_json::to_string(&body).unwrap_or_else(|_| "{\"status\":\"unavailable\"}".into())
    }
}

/// The page HTML for a view, in a language, from the room's template.
pub fn page(view: &View, lang: Lang) -> String {
    view.page.render(&PageContext::new(view, lang))
}

/// An embedded asset under `/.usher/`: its content type and text, or `None`.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/.usher/queue.js" => Some(("text/javascript; charset=utf-8", QUEUE_JS)),
        "/.usher/challenge.js" => Some(("text/javascript; charset=utf-8", CHALLENGE_JS)),
        "/.usher/queue.css" => Some(("text/css; charset=utf-8", QUEUE_CSS)),
        _ => None,
    }
}

/// Where the language switch sends the visitor, and the language it remembers.
#[derive(Debug, PartialEq, Eq)]
pub struct LanguageSwitch {
    pub back: String,
    pub lang: Option<Lang>,
}

/// `GET /.usher/lang?to=da&back=/path`: remembers the language in a cookie and sends the
/// visitor back where they were (their ticket cookie is untouched, so is their place). The
/// way back is the `back` parameter (added by the script), else the same-host `Referer`
/// (sent by the link without script), else `/`; only local paths, never another site.
pub fn switch_language(headers: &HeaderMap, query: Option<&str>, authority: Option<&str>) -> LanguageSwitch {
    let params = || query.unwrap_or_default().split('&').filter_map(|p| p.split_once('='));
    let lang = params().find(|(k, _)| *k == "to").and_then(|(_, v)| Lang::parse(v));
    let back = params()
        .find(|(k, _)| *k == "back")
        .and_then(|(_, v)| percent_decode(v))
        .or_else(|| authority.and_then(|a| referer_path(headers, a)))
        .filter(|p| is_local_path(p))
        .unwrap_or_else(|| "/".into());
    LanguageSwitch { back, lang }
}

/// A path on this site: starts with one `/`, printable ASCII only (no `//evil`, `/\\evil`).
pub fn is_local_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() <= 4096
        && path.bytes().all(|b| b.is_ascii_graphic())
}

/// The path and query of a `Referer` on the same host as the request (`authority`: the
/// request's canonical `host[:port]`).
fn referer_path(headers: &HeaderMap, host: &str) -> Option<String> {
    let referer = headers.get(REFERER)?.to_str().ok()?;
    let rest = referer.strip_prefix("https://").or_else(|| referer.strip_prefix("http://"))?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    (authority.eq_ignore_ascii_case(host)).then(|| path.split('#').next().unwrap_or(path).to_string())
}

/// `%XX` encoding of a query value: all but unreserved characters and `/`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` decoding of a query value; `None` for broken escapes or non-UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(view: &View, lang: Lang) -> String {
        page(view, lang)
    }

    #[test]
    fn operator_messages_are_escaped() {
        let mut v = View::samples().remove(2);
        v.message = Some("<script>x</script>".into());
        let page = html(&v, Lang::En);
        assert!(!page.contains("<script>x"));
        assert!(page.contains("&lt;script&gt;"));
    }

    #[test]
    fn every_state_in_both_languages() {
        for v in View::samples() {
            let da = html(&v, Lang::Da);
            let en = html(&v, Lang::En);
            assert!(da.contains("<html lang=\"da\">") && en.contains("<html lang=\"en\">"));
            assert_ne!(da, en, "{:?}", v.status);
        }
        let waiting = html(&View::samples().remove(0), Lang::Da);
        assert!(
            waiting.contains("Personer foran dig")
                && waiting.contains(">42<")
                && waiting.contains("omkring 12 minutter")
        );
        assert!(waiting.contains("http-equiv=\"refresh\" content=\"5\""));
        assert!(waiting.contains("aria-live=\"polite\""));
    }

    #[test]
    fn progress_grows_as_the_estimate_falls() {
        let mut v = View::samples().remove(0);
        let early = v.progress_percent().expect("an estimate");
        v.eta_seconds = Some(60);
        let later = v.progress_percent().expect("an estimate");
        assert!(later > early, "{early} -> {later}");
        v.status = Status::Paused;
        assert_eq!(v.progress_percent(), None);
    }

    #[test]
    fn the_language_switch_stays_on_this_site() {
        use http::header::HeaderValue;
        let mut h = HeaderMap::new();
        let back = |h: &HeaderMap, q, authority| switch_language(h, Some(q), authority).back;
        assert_eq!(back(&h, "to=da&back=%2Fmail%3Fa%3D1", None), "/mail?a=1");
        assert_eq!(back(&h, "to=da&back=%2F%2Fevil.example", None), "/");
        assert_eq!(back(&h, "to=da&back=https://evil.example/", None), "/");
        h.insert(REFERER, HeaderValue::from_static("http://post.example/inbox?x=2#top"));
        let switch = switch_language(&h, Some("to=en"), Some("post.example"));
        assert_eq!(switch, LanguageSwitch { back: "/inbox?x=2".into(), lang: Some(Lang::En) });
        assert_eq!(back(&h, "to=en", Some("other.example")), "/", "a referer on another host is not followed");
        h.insert(REFERER, HeaderValue::from_static("http://other.example/inbox"));
        assert_eq!(
            switch_language(&h, Some("to=xx"), Some("post.example")),
            LanguageSwitch { back: "/".into(), lang: None }
        );
    }
}
