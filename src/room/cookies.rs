//! Reading usher's cookies from a request, removing them before it goes upstream, and
//! writing `Set-Cookie` values with the flags of DESIGN §4.

use super::tokens::{PASS_COOKIE, TICKET_COOKIE};
use crate::pages::i18n::LANG_COOKIE;
use http::header::{COOKIE, HeaderMap, HeaderValue};

/// usher's two cookies as the browser sent them (raw, unverified).
#[derive(Debug, Default, Clone, Copy)]
pub struct UsherCookies<'a> {
    pub pass: Option<&'a str>,
    pub ticket: Option<&'a str>,
}

impl<'a> UsherCookies<'a> {
    pub fn read(headers: &'a HeaderMap) -> Self {
        let mut found = Self::default();
        for value in headers.get_all(COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for pair in text.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else { continue };
                match name {
                    PASS_COOKIE => found.pass = Some(value),
                    TICKET_COOKIE => found.ticket = Some(value),
                    _ => {}
                }
            }
        }
        found
    }

    pub fn any(&self) -> bool {
        self.pass.is_some() || self.ticket.is_some()
    }
}

/// Removes usher's cookies from the `Cookie` header(s), keeping the upstream's own.
pub fn strip(headers: &mut HeaderMap) {
    // Most requests carry no usher cookie: answer those without allocating.
    if !headers.get_all(COOKIE).iter().any(|v| v.as_bytes().windows(6).any(|w| w == b"usher_")) {
        return;
    }
    let values: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    headers.remove(COOKIE);
    let kept: Vec<&str> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|t| t.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && name != PASS_COOKIE && name != TICKET_COOKIE && name != LANG_COOKIE
        })
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
    let text = match value {
        Some(v) => format!(
            "{name}={v}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        ),
        None => format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}", if secure { "; Secure" } else { "" }),
    };
    // Names and base64url values are always valid header text.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("usher_invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_strips_only_usher_cookies() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; usher_pass=PPP; usher_lang=da; b=2"));
        h.append(COOKIE, HeaderValue::from_static("usher_ticket=TTT"));
        let c = UsherCookies::read(&h);
        assert_eq!((c.pass, c.ticket), (Some("PPP"), Some("TTT")));
        strip(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().collect::<Vec<_>>(), vec![&HeaderValue::from_static("a=1; b=2")]);
        let mut only = HeaderMap::new();
        only.insert(COOKIE, HeaderValue::from_static("usher_pass=x"));
        strip(&mut only);
        assert!(only.get(COOKIE).is_none());
    }
}
