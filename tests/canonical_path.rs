//! Properties of the canonical request view (DESIGN §1), over many generated targets:
//! canonicalisation is idempotent; usher's canonical path matches a prefix exactly when the
//! path a Java or nginx upstream resolves from the same target does; nothing panics on any
//! input. Cases per property: `USHER_PROPTEST_CASES` (default 100,000).

use http::Request;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::borrow::Cow;
use usher::identity::ClientAddr;
use usher::request::{Authority, RequestView, path};

fn cases() -> u32 {
    std::env::var("USHER_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() })
}

/// Paths built from the pieces attackers use: dot segments raw and encoded, encoded
/// separators, mixed-case and overlong encodings, parameters, doubled slashes, non-ASCII.
fn attack_path() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2e%2e",
        ".%2e",
        "%2E.",
        "static",
        "inbox",
        "login",
        "a",
        "A",
        "~user",
        "%7euser",
        "%7E",
        "%41",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        ";",
        ";x=1",
        "..;",
        ".;",
        "%3b",
        "%3B",
        "a;b",
        "%c0%ae",
        "%e0%80%ae",
        "%ff",
        "%",
        "%2",
        "%zz",
        "é",
        "%c3%a9",
        "%00",
        "{x}",
        "a b",
        "%20",
        "@",
        ":",
        "+",
    ]);
    prop::collection::vec(piece, 0..8).prop_map(|pieces| format!("/{}", pieces.join("/")))
}

/// How an upstream that strips path parameters, then decodes, then resolves dot segments and
/// merges slashes (Tomcat, Spring; nginx does the same without the parameters) reads a path.
fn upstream_resolves(raw: &str) -> Vec<u8> {
    let segments: Vec<Vec<u8>> =
        raw[1..].split('/').map(|s| percent_decode(s.split(';').next().unwrap_or_default())).collect();
    let last = segments.len() - 1;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut trailing = false;
    for (i, s) in segments.into_iter().enumerate() {
        trailing = i == last;
        match s.as_slice() {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            _ => {
                kept.push(s);
                trailing = false;
            }
        }
    }
    let mut out = Vec::new();
    for s in &kept {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || kept.is_empty() {
        out.push(b'/');
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

const PREFIXES: [&str; 9] = ["/", "/static/", "/static", "/inbox", "/inbox/", "/a/", "/login", "/~user/", "/A/inbox"];

#[test]
fn canonicalisation_is_idempotent() {
    runner()
        .run(&prop_oneof![attack_path(), "/\\PC{0,30}"], |raw| {
            if let Ok(canonical) = path::canonical(&raw) {
                let again = path::canonical(&canonical);
                prop_assert_eq!(again.as_deref(), Ok(canonical.as_ref()), "{:?}", raw);
                // Without escapes, a canonical path is recognised as one without copying.
                if !canonical.contains(['%', ';']) {
                    prop_assert!(matches!(again, Ok(Cow::Borrowed(_))), "{:?} -> {:?}", raw, canonical);
                }
            }
            Ok(())
        })
        .expect("idempotent");
}

#[test]
fn the_canonical_path_matches_a_prefix_exactly_when_the_upstreams_path_does() {
    runner()
        .run(&attack_path(), |raw| {
            if let Ok(canonical) = path::canonical(&raw) {
                let resolved = upstream_resolves(&raw);
                for prefix in PREFIXES {
                    prop_assert_eq!(
                        canonical.starts_with(prefix),
                        resolved.starts_with(prefix.as_bytes()),
                        "{:?}: usher sees {:?}, the upstream {:?}, prefix {:?}",
                        raw,
                        canonical,
                        String::from_utf8_lossy(&resolved),
                        prefix
                    );
                }
            }
            Ok(())
        })
        .expect("usher judges what the upstream serves");
}

#[test]
fn no_target_or_host_makes_the_view_panic() {
    runner()
        .run(&(prop::collection::vec(any::<u8>(), 0..64), ".{0,40}", any::<bool>()), |(bytes, host, https)| {
            let _ = Authority::parse(&host, https);
            let target = String::from_utf8_lossy(&bytes).into_owned();
            let _ = path::canonical(&target);
            let Ok(req) = Request::get(bytes.as_slice()).header("host", host.as_str()).body(()) else { return Ok(()) };
            let (head, ()) = req.into_parts();
            let client = ClientAddr { ip: [192, 0, 2, 1].into(), https };
            let _ = RequestView::new(head, client, false);
            Ok(())
        })
        .expect("no panic");
}
