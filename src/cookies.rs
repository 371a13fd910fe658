//! usher's cookies on the wire: read once per request into [`UsherCookies`], removed before
//! the request goes upstream, and written with the flags of DESIGN §4.
//!
//! Passes and tickets are named per room (`usher_pass_<room>`, `usher_ticket_<room>`), so
//! that rooms on one host never evict each other's cookies. Every cookie whose name starts
//! with `usher_` is usher's: the upstream never receives one.

use crate::pages::i18n::{LANG_COOKIE, Lang};
use http::header::{COOKIE, HeaderMap, HeaderValue};

/// The prefix of every cookie usher reads, sets and strips.
pub const PREFIX: &str = "usher_";
/// A pass's name is this, `_` and the room's name.
pub const PASS_COOKIE: &str = "usher_pass";
/// A ticket's name is this, `_` and the room's name.
pub const TICKET_COOKIE: &str = "usher_ticket";

/// Which of usher's cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pass,
    Ticket,
}

impl Kind {
    /// The cookie's name prefix, also its label in `usher_token_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Pass => PASS_COOKIE,
            Kind::Ticket => TICKET_COOKIE,
        }
    }

    /// The cookie's name for `room`.
    pub fn name(self, room: &str) -> String {
        format!("{}_{room}", self.label())
    }
}

/// What one pass over a request's `Cookie` headers learns; passes and tickets are then
/// looked up in the headers themselves ([`find`], [`all`]), borrowed, so a request that
/// carries them costs no allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsherCookies {
    /// The visitor's language choice (`usher_lang`), if valid.
    pub lang: Option<Lang>,
    /// Whether any `usher_` cookie came, valid or not: only then is there anything to strip.
    pub present: bool,
}

impl UsherCookies {
    pub fn read(headers: &HeaderMap) -> Self {
        let mut cookies = Self::default();
        for (name, value) in pairs(headers) {
            cookies.present = true;
            if name == LANG_COOKIE {
                cookies.lang = Lang::parse(value);
            }
        }
        cookies
    }
}

/// Every `usher_…` cookie of the request, as (name, value), in the order sent.
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        // Most requests carry no usher cookie: skip them without splitting.
        .filter(|v| v.as_bytes().windows(PREFIX.len()).any(|w| w == PREFIX.as_bytes()))
        .filter_map(|v| v.to_str().ok())
        .flat_map(|text| text.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| name.starts_with(PREFIX))
}

/// Every `kind` cookie, as (room name, value), in the order sent (unverified).
pub fn all(headers: &HeaderMap, kind: Kind) -> impl Iterator<Item = (&str, &str)> {
    pairs(headers).filter_map(move |(name, value)| {
        let room = name.strip_prefix(kind.label())?.strip_prefix('_')?;
        Some((room, value))
    })
}

/// The first `kind` cookie of `room` (unverified).
pub fn find<'a>(headers: &'a HeaderMap, kind: Kind, room: &str) -> Option<&'a str> {
    all(headers, kind).find(|(r, _)| *r == room).map(|(_, value)| value)
}

/// Removes usher's cookies from the `Cookie` header(s), keeping the upstream's own.
pub fn strip(headers: &mut HeaderMap) {
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    headers.remove(COOKIE);
    let kept: Vec<&str> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|t| t.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with(PREFIX))
        .collect();
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(COOKIE, value);
        }
    }
}

/// Adds a `Set-Cookie` value, replacing an earlier one for the same cookie in this response
/// (RFC 6265: one response should not set a name twice, e.g. clear a bad pass and set a new one).
pub fn push(list: &mut Vec<HeaderValue>, value: HeaderValue) {
    let name = value.as_bytes().split(|b| *b == b'=').next().unwrap_or_default().to_vec();
    list.retain(|v| v.as_bytes().split(|b| *b == b'=').next() != Some(name.as_slice()));
    list.push(value);
}

/// A `Set-Cookie` value for one of usher's cookies; `None` value clears it.
pub fn set_cookie(name: &str, value: Option<&str>, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = match value {
        Some(v) => format!("{name}={v}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"),
        None => format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"),
    };
    // Names and base64url values are always valid header text.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("usher_invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_per_room_cookies_and_strips_every_usher_cookie() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; usher_pass_citizens=PPP; usher_lang=da; b=2"));
        h.append(COOKIE, HeaderValue::from_static("usher_ticket_business=TTT; usher_pass_business=QQQ"));
        let c = UsherCookies::read(&h);
        assert_eq!(find(&h, Kind::Pass, "citizens"), Some("PPP"));
        assert_eq!(find(&h, Kind::Pass, "business"), Some("QQQ"));
        assert_eq!(find(&h, Kind::Ticket, "business"), Some("TTT"));
        assert_eq!(find(&h, Kind::Ticket, "citizens"), None);
        assert_eq!(all(&h, Kind::Ticket).collect::<Vec<_>>(), vec![("business", "TTT")]);
        assert_eq!((c.lang, c.present), (Some(Lang::Da), true));
        strip(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), vec![&HeaderValue::from_static("a=1; b=2")]);
        let mut only = HeaderMap::new();
        only.insert(COOKIE, HeaderValue::from_static("usher_pass_x=x; usher_junk=1"));
        strip(&mut only);
        assert!(only.get(COOKIE).is_none());
    }

    #[test]
    fn a_request_without_usher_cookies_has_none() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("session=abc; theme=dark"));
        let c = UsherCookies::read(&h);
        assert!(!c.present && c.lang.is_none() && all(&h, Kind::Pass).next().is_none());
    }
}
