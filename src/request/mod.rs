//! The canonical view of one request (DESIGN §1), built once, right after the client is
//! identified. Every later step — access lists, limits, route rules, usher's own paths, room
//! and bypass matching, rendering, forwarding — reads this view and nothing else, so what
//! usher judged is what the mailbox serves.

pub use crate::canonical::authority::{Authority, AuthorityError};
pub use crate::canonical::path::{self, PathError};
use crate::cookies::UsherCookies;
use crate::identity::ClientAddr;
use crate::pages::i18n::Lang;
use http::header::{ACCEPT, HeaderMap};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use std::borrow::Cow;

/// Why a request target was refused; each is answered `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Authority(#[from] AuthorityError),
}

/// The kind of answer a client can use when usher answers it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// A browser: pages.
    Html,
    /// An app or a script (`Accept: application/json` without HTML, or XHR): JSON.
    Json,
    /// Anything else: a bare status.
    Other,
}

impl Accepts {
    pub fn of(headers: &HeaderMap) -> Self {
        let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let html = accept.contains("text/html");
        let xhr = headers.get("x-requested-with").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest"));
        if (accept.contains("application/json") && !html) || xhr {
            Accepts::Json
        } else if html || accept.contains("application/xhtml") {
            Accepts::Html
        } else {
            Accepts::Other
        }
    }

    pub fn json(self) -> bool {
        self == Accepts::Json
    }
}

/// One request, canonical: its head (with the canonical origin-form target), who sent it,
/// the authority it names, what it accepts, and usher's cookies.
#[derive(Debug)]
pub struct RequestView {
    head: Parts,
    pub client: ClientAddr,
    /// `None` only for an HTTP/1.0 request without `Host`.
    pub authority: Option<Authority>,
    pub accepts: Accepts,
    pub cookies: UsherCookies,
    /// Whether usher's cookies must be `Secure`: the client came over TLS (to usher or to a
    /// trusted proxy), or `cookie_secure = "always"`.
    pub secure_cookies: bool,
}

/// A request refused before any rule saw it, with what the client accepts for the answer.
#[derive(Debug)]
pub struct Refused {
    pub accepts: Accepts,
    pub error: TargetError,
}

impl RequestView {
    /// Canonicalises `head` in place. `secure_always`: `cookie_secure = "always"`.
    pub fn new(mut head: Parts, client: ClientAddr, secure_always: bool) -> Result<Self, Refused> {
        let accepts = Accepts::of(&head.headers);
        let refuse = |error: TargetError| Refused { accepts, error };
        let authority = Authority::of_request(&head.uri, head.version, &head.headers, client.https)
            .map_err(|e| refuse(e.into()))?;
        let canonical = path::canonical(head.uri.path()).map_err(|e| refuse(e.into()))?;
        // The upstream is sent the origin form: its host goes in `Host`.
        if let Cow::Owned(path) = canonical {
            head.uri = origin_form(&path, head.uri.query()).ok_or_else(|| refuse(PathError::NotAbsolute.into()))?;
        } else if head.uri.authority().is_some() || head.uri.scheme().is_some() {
            let path = head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            head.uri = Uri::from(path);
        }
        let cookies = UsherCookies::read(&head.headers);
        Ok(Self { head, client, authority, accepts, cookies, secure_cookies: client.https || secure_always })
    }

    /// The request's HTTP version.
    pub fn version(&self) -> http::Version {
        self.head.version
    }

    /// The canonical path.
    pub fn path(&self) -> &str {
        self.head.uri.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.head.uri.query()
    }

    pub fn method(&self) -> &Method {
        &self.head.method
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The first `kind` cookie of `room`, as sent (unverified).
    pub fn cookie(&self, kind: crate::cookies::Kind, room: &str) -> Option<&str> {
        crate::cookies::find(&self.head.headers, kind, room)
    }

    /// Every `kind` cookie, as (room name, value), as sent (unverified).
    pub fn cookies_of(&self, kind: crate::cookies::Kind) -> impl Iterator<Item = (&str, &str)> {
        crate::cookies::all(&self.head.headers, kind)
    }

    /// The host name the request names (lower case, no port), for room matching.
    pub fn host(&self) -> Option<&str> {
        self.authority.as_ref().map(Authority::host)
    }

    /// The visitor's language: its own choice (the `usher_lang` cookie), else the best of
    /// `Accept-Language`, else English.
    pub fn lang(&self) -> Lang {
        self.cookies.lang.or_else(|| Lang::from_accept_language(&self.head.headers)).unwrap_or(Lang::En)
    }

    /// The request to forward: the canonical head, without usher's cookies, with `body`.
    pub fn into_request<B>(mut self, body: B) -> (Request<B>, Option<Authority>) {
        if self.cookies.present {
            crate::cookies::strip(&mut self.head.headers);
        }
        (Request::from_parts(self.head, body), self.authority)
    }
}

fn origin_form(path: &str, query: Option<&str>) -> Option<Uri> {
    let target = match query {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    };
    target.ok().map(Uri::from)
}
