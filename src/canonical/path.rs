//! The canonical form of a request path (RFC 3986 §6.2.2), so that every rule matches the
//! path the mailbox will serve and not one of its other spellings.
//!
//! - Percent-encoded unreserved characters are decoded (`%7E` → `~`, `%2e` → `.`); the other
//!   encodings are kept, in upper case (`%3b` → `%3B`); characters a path may not hold raw
//!   (`{`, a space, non-ASCII) are encoded.
//! - `.` and `..` segments are resolved, raw or encoded.
//! - Empty segments are merged (`//inbox` → `/inbox`), as nginx (`merge_slashes`), Tomcat and
//!   Spring do: a room on `/inbox/` must see `//inbox/` as the mailbox will, and a path that
//!   differs only in doubled slashes names no other resource on any server we front.
//!
//! A target whose meaning depends on who decodes it is refused (answered `400`), never
//! forwarded: an encoded `/` or `\`, a raw `\`, a NUL, a `..` above the root, bytes that are not
//! UTF-8 once decoded (overlong encodings included), a dot segment carrying parameters
//! (`..;`, which Tomcat resolves), and parameters (`;`) on any segment but the last, which a
//! Java server strips before matching while nginx does not.

use std::borrow::Cow;

/// Why a path cannot be canonicalised unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("a '%' is not followed by two hex digits")]
    BadEscape,
    #[error("an encoded '/' or '\\' in the path is ambiguous")]
    EncodedSeparator,
    #[error("a raw '\\' in the path is ambiguous")]
    Backslash,
    #[error("the path holds a NUL byte")]
    Nul,
    #[error("a '..' segment climbs above the root")]
    AboveRoot,
    #[error("the decoded path is not UTF-8")]
    InvalidUtf8,
    #[error("a dot segment with parameters ('..;') is ambiguous")]
    DotParameter,
    #[error("path parameters (';') are allowed on the last segment only")]
    InnerParameter,
}

/// Byte classes of RFC 3986 §2.
const UNRESERVED: u8 = 1;
/// Bytes a path holds raw: unreserved, sub-delims, `:`, `@` and `/` (not `%`).
const PATH_CHAR: u8 = 2;

const CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            table[b] = UNRESERVED | PATH_CHAR;
        } else if matches!(c, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
            || matches!(c, b':' | b'@' | b'/')
        {
            table[b] = PATH_CHAR;
        }
        b += 1;
    }
    table
};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The canonical form of `raw` (an origin-form path, without the query). Borrows when
/// `raw` is canonical already, which is what nearly every request sends.
pub fn canonical(raw: &str) -> Result<Cow<'_, str>, PathError> {
    // `OPTIONS *` (asterisk-form) has no path to match.
    if raw == "*" {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let escaped = normalise_escapes(raw)?;
    resolve_segments(&escaped).map(Cow::Owned)
}

/// Whether `path` is canonical as it stands: only raw path characters, no `%`, no `;`, no
/// empty and no dot segment. A `/.` is let through only where a name follows (`/.usher/`).
fn is_canonical(path: &[u8]) -> bool {
    let mut previous = 0u8;
    for (i, &b) in path.iter().enumerate() {
        if CLASSES[usize::from(b)] & PATH_CHAR == 0 || b == b';' {
            return false;
        }
        if previous == b'/' {
            let rest = &path[i..];
            let dot_segment = matches!(rest, [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]);
            if b == b'/' || dot_segment {
                return false;
            }
        }
        previous = b;
    }
    true
}

/// Decodes unreserved escapes, upper-cases the others and encodes what may not stand raw.
/// Checks that the fully decoded bytes are UTF-8 and hold no separator or NUL.
fn normalise_escapes(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len() + 8);
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (byte, was_escaped) = if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|h| hex_value(*h));
            let lo = bytes.get(i + 2).and_then(|l| hex_value(*l));
            let (Some(hi), Some(lo)) = (hi, lo) else { return Err(PathError::BadEscape) };
            i += 3;
            ((hi << 4) | lo, true)
        } else {
            i += 1;
            (b, false)
        };
        match byte {
            0 => return Err(PathError::Nul),
            b'\\' if was_escaped => return Err(PathError::EncodedSeparator),
            b'\\' => return Err(PathError::Backslash),
            b'/' if was_escaped => return Err(PathError::EncodedSeparator),
            _ => {}
        }
        decoded.push(byte);
        let class = CLASSES[usize::from(byte)];
        if class & UNRESERVED != 0 || (!was_escaped && class & PATH_CHAR != 0) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Resolves dot segments and merges empty ones in an escape-normalised path (which starts
/// with `/`, and whose every `/` is a real separator).
fn resolve_segments(path: &str) -> Result<String, PathError> {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, segment) in segments.into_iter().enumerate() {
        if let Some((name, _params)) = segment.split_once(';') {
            if name == "." || name == ".." {
                return Err(PathError::DotParameter);
            }
            if i != last {
                return Err(PathError::InnerParameter);
            }
        }
        trailing_slash = i == last;
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop().ok_or(PathError::AboveRoot)?;
            }
            name => {
                kept.push(name);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for name in &kept {
        out.push('/');
        out.push_str(name);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        canonical(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}")).into_owned()
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for raw in ["/", "/inbox", "/static/app.js", "/.usher/status", "/a/b/", "/.well-known/x", "/a..b/c.", "*"] {
            assert!(matches!(canonical(raw), Ok(Cow::Borrowed(_))), "{raw}");
        }
    }

    #[test]
    fn dot_segments_resolve_raw_and_encoded() {
        assert_eq!(ok("/static/../inbox"), "/inbox");
        assert_eq!(ok("/static/%2e%2e/inbox"), "/inbox");
        assert_eq!(ok("/static/%2E./inbox"), "/inbox");
        assert_eq!(ok("/static/./../inbox"), "/inbox");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/a/./b"), "/a/b");
    }

    #[test]
    fn escapes_are_normalised() {
        assert_eq!(ok("/%7euser/%41"), "/~user/A");
        assert_eq!(ok("/a%3bb"), "/a%3Bb");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/café"), "/caf%C3%A9");
        assert_eq!(ok("/a{b}"), "/a%7Bb%7D");
        assert_eq!(ok("//inbox//x/"), "/inbox/x/");
    }

    #[test]
    fn ambiguous_targets_are_refused() {
        let refused = [
            ("/static/..%2finbox", PathError::EncodedSeparator),
            ("/static/..%2Finbox", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::Nul),
            ("/..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%c0%ae%c0%ae/x", PathError::InvalidUtf8),
            ("/%ff", PathError::InvalidUtf8),
            ("/static/..;/inbox", PathError::DotParameter),
            ("/static/.;x/inbox", PathError::DotParameter),
            ("/static;x/../inbox", PathError::InnerParameter),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("inbox", PathError::NotAbsolute),
        ];
        for (raw, why) in refused {
            assert_eq!(canonical(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn parameters_on_the_last_segment_are_kept() {
        assert_eq!(ok("/inbox;jsessionid=AB12"), "/inbox;jsessionid=AB12");
        assert_eq!(ok("/a/./inbox;x=1"), "/a/inbox;x=1");
    }
}
