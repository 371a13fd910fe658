//! Why usher answered a request itself instead of passing on the upstream's answer: one
//! enum, its status, stable code and page text. [`crate::render`] turns it into a response.

use crate::request::TargetError;
use http::StatusCode;

/// Why usher answered a request itself instead of passing on the upstream's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no upstream address accepted a connection")]
    UpstreamUnreachable,
    #[error("the upstream did not answer within the response timeout")]
    UpstreamTimeout,
    #[error("the upstream broke the connection or answered with invalid HTTP")]
    UpstreamProtocol,
    /// This worker already has `upstream.max_connections_per_worker` upstream connections
    /// open, all busy: answered at once rather than queued behind them.
    #[error("all upstream connections are in use")]
    UpstreamSaturated,
    #[error("no such usher path")]
    NotFound,
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("access denied")]
    Denied,
    #[error("the request body ended early")]
    ClientAborted,
    /// The client's upload sent no bytes for `upstream.body_idle_timeout`.
    #[error("the request body stalled")]
    ClientStalled,
    #[error("the request target is ambiguous: {0}")]
    BadTarget(TargetError),
    /// The room's shared store did not answer (an answer about the room itself, such as
    /// its draw; waiters get the room's own unavailable page).
    #[error("the room's store is unavailable")]
    StoreUnavailable,
    /// A proof-of-work answer refused (see `room::challenge`).
    #[error("{0}")]
    ChallengeRefused(crate::room::challenge::Refusal),
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::UpstreamUnreachable | Self::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Self::UpstreamSaturated | Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::ClientStalled => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::ClientAborted | Self::BadTarget(_) => StatusCode::BAD_REQUEST,
            Self::ChallengeRefused(crate::room::challenge::Refusal::TooEarly) => StatusCode::TOO_EARLY,
            Self::ChallengeRefused(_) => StatusCode::FORBIDDEN,
        }
    }

    /// A stable machine-readable name for the JSON variant.
    pub fn code(self) -> &'static str {
        match self {
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamProtocol => "upstream_error",
            Self::UpstreamSaturated => "upstream_busy",
            Self::ClientStalled => "request_timeout",
            Self::NotFound => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::Denied => "denied",
            Self::ClientAborted => "client_aborted",
            Self::BadTarget(_) => "bad_request",
            Self::StoreUnavailable => "store_unavailable",
            Self::ChallengeRefused(why) => why.code(),
        }
    }

    pub fn page(self) -> &'static str {
        match self {
            Self::UpstreamUnreachable | Self::UpstreamProtocol | Self::StoreUnavailable => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">",
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                "<title>Temporarily unavailable</title>",
                "<link rel=\"stylesheet\" href=\"/.usher/queue.css\"><body><main>",
                "<h1>The service is temporarily unavailable</h1>",
                "<p>We could not reach the service just now. Please try again in a minute.</p>",
                "<p lang=\"da\">Tjenesten kan ikke nås lige nu. Prøv igen om et minut.</p></main></body></html>\n"
            ),
            Self::UpstreamSaturated => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">",
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                "<title>Very busy</title>",
                "<link rel=\"stylesheet\" href=\"/.usher/queue.css\"><body><main>",
                "<h1>The service is very busy</h1>",
                "<p>Every connection to the service is in use. Please try again in a few seconds.</p>",
                "<p lang=\"da\">Alle forbindelser til tjenesten er optaget. Prøv igen om et par sekunder.</p></main></body></html>\n"
            ),
            Self::ClientStalled => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Request timeout</title>",
                "<body><h1>The request stopped arriving</h1></body></html>\n"
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
            Self::ChallengeRefused(_) => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">",
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
                "<title>Please try again</title>",
                "<link rel=\"stylesheet\" href=\"/.usher/queue.css\"><body><main>",
                "<h1>Please try again</h1>",
                "<p>Your browser's check could not be used. Go back and load the page again.</p>",
                "<p lang=\"da\">Din browsers kontrol kunne ikke bruges. Gå tilbage, og indlæs siden igen.</p>",
                "</main></body></html>\n"
            ),
            Self::BadTarget(_) => concat!(
                "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Bad request</title>",
                "<body><h1>Bad request</h1><p>The address of this request cannot be read unambiguously.</p></body></html>\n"
            ),
        }
    }
}
