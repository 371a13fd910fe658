//! What a waiting visitor receives (DESIGN §5): the queue page for browsers, JSON for apps,
//! a bare 503 for everything else, and the status JSON that the page polls. Assets are
//! embedded in the binary.

use crate::body::Body;
use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderMap, HeaderValue, REFERRER_POLICY, RETRY_AFTER,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Response, StatusCode};
use serde::Serialize;
use std::fmt::Write as _;

pub const QUEUE_JS: &str = include_str!("queue.js");
pub const QUEUE_CSS: &str = include_str!("queue.css");

/// Strict: only usher's own script and style, no inline code, no third parties.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The kind of answer a client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Html,
    Json,
    Other,
}

impl Answer {
    pub fn for_request(headers: &HeaderMap) -> Self {
        if crate::error::wants_json(headers) {
            Answer::Json
        } else if headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html") || a.contains("application/xhtml"))
        {
            Answer::Html
        } else {
            Answer::Other
        }
    }
}

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
    /// No ticket was presented.
    None,
}

/// Everything the page, the JSON and a custom template may show (the documented variables).
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub status: Status,
    pub room: String,
    /// Live waiters ahead of this one.
    pub ahead: Option<u64>,
    pub eta_seconds: Option<u64>,
    pub poll_after_seconds: u64,
    /// Unix seconds.
    pub joined_at: Option<u64>,
    /// Unix seconds of the event start, if one is set.
    pub opens_at: Option<u64>,
    pub message: Option<String>,
}

impl View {
    pub fn none() -> Self {
        View {
            status: Status::None,
            room: String::new(),
            ahead: None,
            eta_seconds: None,
            poll_after_seconds: 10,
            joined_at: None,
            opens_at: None,
            message: None,
        }
    }

    /// The JSON body: the view plus `position` (1 = next in line).
    fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            view: &'a View,
            position: Option<u64>,
        }
        serde_json::to_string(&Json { view: self, position: self.ahead.map(|a| a + 1) })
            .unwrap_or_else(|_| "{\"status\":\"unavailable\"}".into())
    }
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Body,
    set_cookies: Vec<HeaderValue>,
) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(headers);
    for c in set_cookies {
        headers.append(SET_COOKIE, c);
    }
    r
}

/// The answer to a request that must wait (or cannot be served now).
pub fn respond(answer: Answer, view: &View, set_cookies: Vec<HeaderValue>) -> Response<Body> {
    let retry = HeaderValue::from(view.poll_after_seconds.max(1));
    let mut r = match answer {
        Answer::Html => {
            let status = match view.status {
                Status::Closed | Status::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::OK,
            };
            response(status, "text/html; charset=utf-8", Body::from(page(view)), set_cookies)
        }
        Answer::Json => {
            response(StatusCode::SERVICE_UNAVAILABLE, "application/json", Body::from(view.json()), set_cookies)
        }
        Answer::Other => response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            Body::from_static("The service is busy; you are in the queue. Please retry later.\n"),
            set_cookies,
        ),
    };
    r.headers_mut().insert(RETRY_AFTER, retry);
    r
}

/// `GET /.usher/status`.
pub fn status_json(view: &View, set_cookies: Vec<HeaderValue>) -> Response<Body> {
    response(StatusCode::OK, "application/json", Body::from(view.json()), set_cookies)
}

/// An embedded asset under `/.usher/`, or `None`.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (content_type, text) = match path {
        "/.usher/queue.js" => ("text/javascript; charset=utf-8", QUEUE_JS),
        "/.usher/queue.css" => ("text/css; charset=utf-8", QUEUE_CSS),
        _ => return None,
    };
    let mut r = Response::new(Body::Full(Some(Bytes::from_static(text.as_bytes()))));
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Some(r)
}

/// "about 12 minutes": rounded, never falsely precise.
pub fn describe_eta(seconds: u64) -> String {
    match seconds {
        0..60 => "less than a minute".into(),
        60..5400 => {
            let minutes = seconds.div_ceil(60);
            if minutes == 1 { "about a minute".into() } else { format!("about {minutes} minutes") }
        }
        _ => format!("about {} hours", (seconds + 1800) / 3600),
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The queue page. Works alone with a `<noscript>` meta refresh; with JavaScript it polls
/// `/.usher/status` and reloads the page it was shown on when the turn comes, so the
/// visitor lands on the URL they first asked for.
pub fn page(view: &View) -> String {
    let (title, lead) = match view.status {
        Status::Waiting => ("You are in the queue", "The service is very busy, so visitors are let in one by one."),
        Status::Prequeue => (
            "You are in the queue",
            "The service opens soon. Everyone here now gets a fair, random place when it opens.",
        ),
        Status::Paused => ("The queue is paused", "Admission is paused for a moment. You keep your place."),
        Status::Closed => ("Closed for maintenance", "The service is closed for maintenance. Please come back later."),
        Status::Unavailable => {
            ("Temporarily unavailable", "The queue cannot be reached just now. Please try again in a minute.")
        }
        Status::Admitted | Status::Expired | Status::None => ("One moment", "Taking you on…"),
    };
    let mut body = String::with_capacity(2048);
    let _ = write!(body, "<h1>{title}</h1><p>{lead}</p>");
    if let Some(message) = &view.message {
        let _ = write!(body, "<p class=\"message\">{}</p>", escape(message));
    }
    if matches!(view.status, Status::Waiting | Status::Paused | Status::Prequeue) {
        let ahead = view.ahead.map_or("–".to_string(), |a| a.to_string());
        let eta = view.eta_seconds.map_or("not known yet".to_string(), describe_eta);
        let _ = write!(
            body,
            "<div aria-live=\"polite\" aria-atomic=\"true\">\
             <p>People ahead of you: <strong id=\"ahead\">{ahead}</strong></p>\
             <p>Estimated wait: <strong id=\"eta\">{eta}</strong></p></div>\
             <p>You keep your place. There is no need to refresh this page: \
             you will be let in automatically when it is your turn.</p>"
        );
    }
    let refresh = view.poll_after_seconds.max(1);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{refresh}\"></noscript>\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/.usher/queue.css\"></head>\
         <body><main id=\"usher\" data-poll=\"{refresh}\" data-status=\"{status}\">{body}</main>\
         <script src=\"/.usher/queue.js\" defer></script></body></html>\n",
        status = serde_json::to_value(view.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_rounded_not_precise() {
        assert_eq!(describe_eta(20), "less than a minute");
        assert_eq!(describe_eta(61), "about 2 minutes");
        assert_eq!(describe_eta(720), "about 12 minutes");
        assert_eq!(describe_eta(4 * 3600), "about 4 hours");
    }

    #[test]
    fn operator_messages_are_escaped() {
        let mut v = View::none();
        v.status = Status::Paused;
        v.message = Some("<script>x</script>".into());
        let html = page(&v);
        assert!(!html.contains("<script>x"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
