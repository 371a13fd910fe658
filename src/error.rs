//! Errors on the request path and the one place where each becomes a response.

use crate::body::Body;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

/// Why usher answered a request itself instead of passing on the upstream's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no upstream address accepted a connection")]
    UpstreamUnreachable,
    #[error("the upstream did not answer within the response timeout")]
    UpstreamTimeout,
    #[error("the upstream broke the connection or answered with invalid HTTP")]
    UpstreamProtocol,
    #[error("no such usher path")]
    NotFound,
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("access denied")]
    Denied,
    #[error("the request body ended early")]
    ClientAborted,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::UpstreamUnreachable | Self::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::ClientAborted => StatusCode::BAD_REQUEST,
        }
    }

    /// A stable machine-readable name for the JSON variant.
    fn code(self) -> &'static str {
        match self {
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamProtocol => "upstream_error",
            Self::NotFound => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Denied => "denied",
            Self::ClientAborted => "client_aborted",
        }
    }

    fn page(self) -> &'static str {
        match self {
            Self::UpstreamUnreachable | Self::UpstreamProtocol => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">",
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                "<title>Temporarily unavailable</title>",
                "<link rel=\"stylesheet\" href=\"/.usher/queue.css\"><body><main>",
                "<h1>The service is temporarily unavailable</h1>",
                "<p>We could not reach the service just now. Please try again in a minute.</p>",
                "<p lang=\"da\">Tjenesten kan ikke nås lige nu. Prøv igen om et minut.</p></main></body></html>\n"
            ),
            Self::UpstreamTimeout => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">",
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                "<title>Taking too long</title>",
                "<link rel=\"stylesheet\" href=\"/.usher/queue.css\"><body><main>",
                "<h1>The service is taking too long to answer</h1>",
                "<p>It is very busy. Please try again in a minute.</p>",
                "<p lang=\"da\">Tjenesten er meget travl og svarer ikke. Prøv igen om et minut.</p></main></body></html>\n"
            ),
            Self::NotFound => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Not found</title>",
                "<body><h1>Not found</h1></body></html>\n"
            ),
            Self::RateLimited { .. } => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">",
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                "<title>Too many requests</title>",
                "<link rel=\"stylesheet\" href=\"/.usher/queue.css\"><body><main>",
                "<h1>Too many requests</h1>",
                "<p>Too many requests came from your connection. Please wait a moment and try again.</p>",
                "<p lang=\"da\">Der er kommet for mange forespørgsler fra din forbindelse. Vent et øjeblik, og prøv igen.</p>",
                "</main></body></html>\n"
            ),
            Self::Denied => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Access denied</title>",
                "<body><h1>Access denied</h1></body></html>\n"
            ),
            Self::ClientAborted => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Bad request</title>",
                "<body><h1>The request ended early</h1></body></html>\n"
            ),
        }
    }

    /// The answer for a client that prefers JSON (`wants_json`) or HTML.
    pub fn response(self, wants_json: bool) -> Response<Body> {
        let status = self.status();
        let (content_type, body) = if wants_json {
            let json =
                format!("{{\"status\":{},\"error\":\"{}\",\"message\":\"{self}\"}}\n", status.as_u16(), self.code());
            ("application/json", Body::from(json))
        } else {
            ("text/html; charset=utf-8", Body::from_static(self.page()))
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        // The same strict CSP and headers as every usher page (the pages use no inline style).
        crate::pages::security_headers(headers);
        match self {
            Self::RateLimited { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            _ if status.is_server_error() => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("30"));
            }
            _ => {}
        }
        response
    }
}

/// Whether the client asked for JSON rather than a page (API clients, XHR/fetch).
pub fn wants_json(headers: &http::HeaderMap) -> bool {
    let accept_json = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") && !v.contains("text/html"));
    accept_json || headers.get("x-requested-with").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"))
}
