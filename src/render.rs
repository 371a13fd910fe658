//! The one place where usher's own answers become responses (DESIGN §5): a decision of the
//! request path ([`Answer`]) is rendered as HTML, JSON or a bare status by what the client
//! accepts, always with the security headers. Nothing else on the request path builds a
//! response of usher's, as linkerd2-proxy maps its typed errors in one layer.

use crate::body::Body;
use crate::error::ProxyError;
use crate::pages::{self, Status, View};
use crate::refused_lane::Refused;
use crate::request::{Accepts, RequestView};
use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, REFERRER_POLICY,
    RETRY_AFTER, SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Response, StatusCode};
use serde::Serialize;

/// Strict: only usher's own script and style, no inline code, no third parties.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   worker-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What usher answers a request with, when it answers itself.
#[derive(Debug)]
pub enum Answer {
    /// The visitor's situation in a room (waiting, paused, closed, unavailable): the queue
    /// page for browsers, `503` JSON for apps, a bare `503` for the rest.
    Wait(View),
    /// `GET /.usher/status`: the view as JSON, `200`.
    Status(View),
    /// Over a rate limit: `429` with `Retry-After`.
    Limited { retry_after_secs: u64 },
    /// Everything else usher refuses or fails at.
    Error(ProxyError),
}

/// Renders `answer` for the request in `view`, with the `Set-Cookie` values a decision made.
pub fn render(answer: Answer, view: &RequestView, set_cookies: Vec<HeaderValue>) -> Response<Body> {
    let mut response = match answer {
        Answer::Wait(waiting) => wait(&waiting, view),
        Answer::Status(status) => {
            let json = status.json(view.lang());
            response(StatusCode::OK, "application/json", Body::from(json))
        }
        Answer::Limited { retry_after_secs } => limited(retry_after_secs, view),
        Answer::Error(error) => self::error(error, view.accepts),
    };
    for cookie in set_cookies {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

fn wait(waiting: &View, view: &RequestView) -> Response<Body> {
    let mut r = match view.accepts {
        Accepts::Html => {
            let status = match waiting.status {
                Status::Closed | Status::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::OK,
            };
            response(status, "text/html; charset=utf-8", Body::from(pages::page(waiting, view.lang())))
        }
        Accepts::Json => {
            response(StatusCode::SERVICE_UNAVAILABLE, "application/json", Body::from(waiting.json(view.lang())))
        }
        Accepts::Other if waiting.status == Status::Challenge => response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            Body::from_static(
                "The service is busy and asks newcomers for a small proof of work before a place in the queue: \
                 ask with Accept: application/json to be given it.\n",
            ),
        ),
        Accepts::Other => response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            Body::from_static("The service is busy; you are in the queue. Please retry later.\n"),
        ),
    };
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(waiting.poll_after_seconds.max(1)));
    r
}

/// `429`: for browsers the localized page that retries by itself; for the rest the error's.
fn limited(retry_after_secs: u64, view: &RequestView) -> Response<Body> {
    if view.accepts != Accepts::Html {
        return error(ProxyError::RateLimited { retry_after_secs }, view.accepts);
    }
    let page = View { status: Status::RateLimited, poll_after_seconds: retry_after_secs.max(1), ..View::none() };
    let mut r = response(
        StatusCode::TOO_MANY_REQUESTS,
        "text/html; charset=utf-8",
        Body::from(pages::page(&page, view.lang())),
    );
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
    r.extensions_mut().insert(Refused);
    r
}

/// An error as JSON (for apps) or its page.
pub fn error(error: ProxyError, accepts: Accepts) -> Response<Body> {
    let status = error.status();
    let mut r = if accepts.json() {
        #[derive(Serialize)]
        struct Json {
            status: u16,
            error: &'static str,
            message: String,
        }
        let body = Json { status: status.as_u16(), error: error.code(), message: error.to_string() };
        let mut json = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
        json.push('\n');
        response(status, "application/json", Body::from(json))
    } else {
        response(status, "text/html; charset=utf-8", Body::from_static(error.page()))
    };
    let headers = r.headers_mut();
    match error {
        ProxyError::RateLimited { retry_after_secs } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
        }
        // Busy connections free up within seconds; a long wait would waste the visitor's time.
        ProxyError::UpstreamSaturated => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        _ if status.is_server_error() => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("30"));
        }
        _ => {}
    }
    if matches!(error, ProxyError::RateLimited { .. } | ProxyError::UpstreamSaturated) {
        r.extensions_mut().insert(Refused);
    }
    r
}

/// `303` to a local path, with the cookies a decision made.
pub fn see_other(path: &str, set_cookies: Vec<HeaderValue>) -> Response<Body> {
    let mut r = response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", Body::from_static(""));
    r.headers_mut().insert(LOCATION, HeaderValue::from_str(path).unwrap_or(HeaderValue::from_static("/")));
    for cookie in set_cookies {
        r.headers_mut().append(SET_COOKIE, cookie);
    }
    r
}

/// `GET /.usher/draw/{room}`: the draw's publication, JSON made by the room.
pub fn draw(json: Bytes) -> Response<Body> {
    response(StatusCode::OK, "application/json", Body::Full(Some(json)))
}

/// An embedded asset under `/.usher/`, cacheable, or `None`.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (content_type, text) = pages::asset(path)?;
    let mut r = response(StatusCode::OK, content_type, Body::Full(Some(Bytes::from_static(text.as_bytes()))));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Some(r)
}

/// `GET /.usher/lang`: the redirect back, with the language cookie (see [`pages::switch_language`]).
pub fn language_switch(view: &RequestView) -> Response<Body> {
    let authority = view.authority.as_ref().and_then(|a| a.header_value().to_str().ok());
    let switch = pages::switch_language(view.headers(), view.query(), authority);
    let mut r = response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", Body::from_static(""));
    let headers = r.headers_mut();
    headers.insert(LOCATION, HeaderValue::from_str(&switch.back).unwrap_or(HeaderValue::from_static("/")));
    if let Some(lang) = switch.lang {
        let cookie = crate::cookies::set_cookie(
            crate::pages::i18n::LANG_COOKIE,
            Some(lang.code()),
            365 * 24 * 3600,
            view.secure_cookies,
        );
        headers.insert(SET_COOKIE, cookie);
    }
    r
}

/// The headers every usher page carries: no caching, no sniffing, no framing, no referrer,
/// and a CSP that allows nothing but usher's own files.
pub fn security_headers(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=()"));
}

fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(headers);
    r
}
