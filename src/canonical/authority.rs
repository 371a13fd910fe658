//! The authority a request names, in one canonical spelling: the absolute-form target or
//! HTTP/2 `:authority` first, which must agree with `Host`; lower case, without a trailing
//! dot, without the scheme's default port. Rooms match its host; the upstream receives it.

use http::header::{HOST, HeaderMap, HeaderValue};
use http::{Uri, Version};

/// Why a request's authority is refused (answered `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the request has more than one Host header")]
    SeveralHosts,
    #[error("an HTTP/1.1 request needs a Host header")]
    MissingHost,
    #[error("the Host header is not a valid host[:port]")]
    Invalid,
    #[error("the request target's authority and the Host header disagree")]
    Mismatch,
}

/// A canonical `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// `host[:port]`, ready to be sent upstream as `Host`.
    value: HeaderValue,
    /// Length of the host part of `value`.
    host_len: usize,
}

impl Authority {
    /// The host name (or bracketed IPv6 literal), lower case, no trailing dot, no port.
    pub fn host(&self) -> &str {
        self.value.to_str().ok().and_then(|v| v.get(..self.host_len)).unwrap_or_default()
    }

    /// `host[:port]` as the upstream receives it in `Host` and `X-Forwarded-Host`.
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }

    /// Parses one spelling of an authority; `https` picks the default port that is dropped.
    pub fn parse(text: &str, https: bool) -> Result<Self, AuthorityError> {
        Self::parse_keeping(text, https, None)
    }

    /// [`Authority::parse`]; when `text` is canonical already (nearly every `Host` header is)
    /// and `original` holds it, that value is kept instead of copied.
    fn parse_keeping(text: &str, https: bool, original: Option<&HeaderValue>) -> Result<Self, AuthorityError> {
        if text.is_empty() || text.contains('@') {
            return Err(AuthorityError::Invalid);
        }
        let (host, port) = if text.starts_with('[') {
            let end = text.find(']').ok_or(AuthorityError::Invalid)?;
            let (literal, rest) = text.split_at(end + 1);
            let inside = &literal[1..literal.len() - 1];
            if inside.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(AuthorityError::Invalid);
            }
            match rest {
                "" => (literal, None),
                _ => (literal, Some(rest.strip_prefix(':').ok_or(AuthorityError::Invalid)?)),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let number = match port {
            None | Some("") => None,
            Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => {
                Some(digits.parse::<u16>().map_err(|_| AuthorityError::Invalid)?)
            }
            Some(_) => return Err(AuthorityError::Invalid),
        };
        let name = host.strip_suffix('.').unwrap_or(host);
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && (name.starts_with('[')
                || name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
        if !valid_name {
            return Err(AuthorityError::Invalid);
        }
        let number = number.filter(|p| *p != if https { 443 } else { 80 });
        // Most requests spell their authority canonically: keep the text, allocate nothing.
        let canonical_already = name.len() == host.len()
            && !text.bytes().any(|b| b.is_ascii_uppercase())
            && match (port, number) {
                (None, None) => true,
                (Some(digits), Some(_)) => !digits.starts_with('0'),
                _ => false,
            };
        let value = if canonical_already {
            match original {
                Some(value) => Ok(value.clone()),
                None => HeaderValue::from_str(text),
            }
        } else {
            let mut out = name.to_ascii_lowercase();
            if let Some(p) = number {
                out.push(':');
                out.push_str(&p.to_string());
            }
            HeaderValue::from_str(&out)
        }
        .map_err(|_| AuthorityError::Invalid)?;
        Ok(Self { value, host_len: name.len() })
    }

    /// The authority of a request: the target's (absolute-form, HTTP/2 `:authority`) and the
    /// `Host` header's must agree when both are present. `None` for an HTTP/1.0 request
    /// without either.
    pub fn of_request(
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
        https: bool,
    ) -> Result<Option<Self>, AuthorityError> {
        let mut hosts = headers.get_all(HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(AuthorityError::SeveralHosts);
        }
        let https = uri.scheme().map_or(https, |s| *s == http::uri::Scheme::HTTPS);
        let from_target = uri.authority().map(|a| Self::parse(a.as_str(), https)).transpose()?;
        let from_host = host
            .map(|h| {
                let text = h.to_str().map_err(|_| AuthorityError::Invalid)?;
                let trimmed = text.trim();
                Self::parse_keeping(trimmed, https, (trimmed.len() == text.len()).then_some(h))
            })
            .transpose()?;
        match (from_target, from_host) {
            (Some(target), Some(host)) if target != host => Err(AuthorityError::Mismatch),
            (Some(authority), _) | (None, Some(authority)) => Ok(Some(authority)),
            (None, None) if version == Version::HTTP_11 => Err(AuthorityError::MissingHost),
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str, https: bool) -> (String, String) {
        let a = Authority::parse(text, https).unwrap_or_else(|e| panic!("{text}: {e}"));
        (a.host().to_string(), a.header_value().to_str().unwrap_or_default().to_string())
    }

    #[test]
    fn spellings_of_one_host_are_one_authority() {
        for text in
            ["post.example.dk", "POST.Example.DK", "post.example.dk.", "post.example.dk:80", "post.example.dk.:80"]
        {
            assert_eq!(host(text, false), ("post.example.dk".into(), "post.example.dk".into()), "{text}");
        }
        assert_eq!(host("post.example.dk:443", true).1, "post.example.dk");
        assert_eq!(host("post.example.dk:8443", true), ("post.example.dk".into(), "post.example.dk:8443".into()));
        assert_eq!(host("[2001:DB8::1]:8080", false), ("[2001:db8::1]".into(), "[2001:db8::1]:8080".into()));
        assert_eq!(host("127.0.0.1:8080", false).1, "127.0.0.1:8080");
    }

    #[test]
    fn junk_is_refused() {
        for text in
            ["", "user@post.example.dk", "a b", "post.example.dk:99999", "post:x", "[::1", "[zz]:80", ".", "a/b"]
        {
            assert_eq!(Authority::parse(text, false), Err(AuthorityError::Invalid), "{text:?}");
        }
    }

    #[test]
    fn target_and_host_must_agree() {
        let uri: Uri = "http://post.example.dk/inbox".parse().expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("other.example"));
        assert_eq!(Authority::of_request(&uri, Version::HTTP_11, &headers, false), Err(AuthorityError::Mismatch));
        headers.insert(HOST, HeaderValue::from_static("POST.example.dk.:80"));
        let a = Authority::of_request(&uri, Version::HTTP_11, &headers, false).expect("agree").expect("some");
        assert_eq!(a.host(), "post.example.dk");
        headers.append(HOST, HeaderValue::from_static("post.example.dk"));
        assert_eq!(Authority::of_request(&uri, Version::HTTP_11, &headers, false), Err(AuthorityError::SeveralHosts));
        let origin: Uri = "/inbox".parse().expect("uri");
        assert_eq!(
            Authority::of_request(&origin, Version::HTTP_11, &HeaderMap::new(), false),
            Err(AuthorityError::MissingHost)
        );
        assert_eq!(Authority::of_request(&origin, Version::HTTP_10, &HeaderMap::new(), false), Ok(None));
    }
}
