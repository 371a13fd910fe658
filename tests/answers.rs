//! usher's own answers, byte for byte: every queue page, status JSON, 429 and error answer
//! that the renderer makes is compared with `tests/golden/answers.txt`, which the renderer
//! from before the request path was restructured produced for the same views (wave 1's code
//! with the stepping-away page of commit 8afc5e7, whose text the golden file includes). The
//! intended changes since: the page names its room (`data-room`) so its script polls that
//! room's status; the ETA range (issue 17); the ticket number and the link to the room's
//! draw (issue 18). `USHER_BLESS_GOLDEN=1` rewrites the file after such a change. (The embedded script and style are files of their own, not answers, and
//! are left out.)

use http::Request;
use http::header::{ACCEPT, ACCEPT_LANGUAGE};
use http_body_util::BodyExt;
use usher::error::ProxyError;
use usher::identity::ClientAddr;
use usher::pages::View;
use usher::render::{self, Answer};
use usher::request::{Accepts, RequestView};

const GOLDEN: &str = include_str!("golden/answers.txt");

/// The view of a request that accepts `accept` in `lang`.
fn request(accept: &str, lang: Option<&str>) -> RequestView {
    let mut req = Request::get("/inbox").header("host", "post.example.dk").header(ACCEPT, accept);
    if let Some(lang) = lang {
        req = req.header(ACCEPT_LANGUAGE, lang);
    }
    let (head, ()) = req.body(()).expect("request").into_parts();
    RequestView::new(head, ClientAddr { ip: [192, 0, 2, 1].into(), https: false }, false).expect("canonical")
}

async fn dump(out: &mut String, what: &str, r: http::Response<usher::body::Body>) {
    let (head, body) = r.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    out.push_str(&format!("=== {what}\nstatus {}\n", head.status.as_u16()));
    let mut headers: Vec<String> =
        head.headers.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("<binary>"))).collect();
    headers.sort();
    for h in headers {
        out.push_str(&h);
        out.push('\n');
    }
    out.push_str(&format!("body {}\n{}\n", bytes.len(), String::from_utf8_lossy(&bytes)));
}

/// The intended change: ` data-room="…"` on the page's root element (and the length it adds).
fn without_room_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for block in text.split_inclusive("\n=== ") {
        let mut block = block.to_string();
        while let Some(start) = block.find(" data-room=\"") {
            let end = block[start + 12..].find('"').map_or(block.len(), |e| start + 12 + e + 1);
            let removed = end - start;
            block.replace_range(start..end, "");
            // Correct the recorded body length of this block by what was removed.
            if let Some(line_start) = block.find("\nbody ") {
                let line_end = block[line_start + 1..].find('\n').map_or(block.len(), |e| line_start + 1 + e);
                let len: usize = block[line_start + 6..line_end].parse().unwrap_or(0);
                block.replace_range(line_start + 6..line_end, &(len - removed).to_string());
            }
        }
        out.push_str(&block);
    }
    out
}

#[tokio::test]
async fn usher_answers_are_byte_for_byte_what_they_were() {
    let mut out = String::new();
    let html = "text/html,application/xhtml+xml";
    for (i, view) in View::samples().into_iter().enumerate() {
        let kinds = [
            ("html-da", request(html, Some("da"))),
            ("html-en", request(html, Some("en"))),
            ("json-da", request("application/json", Some("da"))),
            ("json-en", request("application/json", Some("en"))),
            ("other", request("*/*", None)),
        ];
        for (name, req) in &kinds {
            let answer = render::render(Answer::Wait(view.clone()), req, Vec::new());
            dump(&mut out, &format!("wait {i} {:?} {name}", view.status), answer).await;
        }
        for lang in ["da", "en"] {
            let req = request("application/json", Some(lang));
            let answer = render::render(Answer::Status(view.clone()), &req, Vec::new());
            dump(&mut out, &format!("status {i} {:?} {lang}", view.status), answer).await;
        }
    }
    let limited = [
        ("html-da", request(html, Some("da"))),
        ("html-en", request(html, Some("en"))),
        ("json-da", request("application/json", Some("da"))),
        ("other", request("*/*", None)),
    ];
    for (name, req) in &limited {
        dump(
            &mut out,
            &format!("limited {name}"),
            render::render(Answer::Limited { retry_after_secs: 7 }, req, vec![]),
        )
        .await;
    }
    let errors = [
        ProxyError::UpstreamUnreachable,
        ProxyError::UpstreamTimeout,
        ProxyError::UpstreamProtocol,
        ProxyError::NotFound,
        ProxyError::RateLimited { retry_after_secs: 3 },
        ProxyError::Denied,
        ProxyError::ClientAborted,
    ];
    for e in errors {
        for json in [false, true] {
            let accepts = if json { Accepts::Json } else { Accepts::Html };
            dump(&mut out, &format!("error {e:?} json={json}"), render::error(e, accepts)).await;
        }
    }
    let now = without_room_attribute(&out);
    if std::env::var_os("USHER_BLESS_GOLDEN").is_some() {
        // An intended change: rewrite the golden file, then read its diff before committing.
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/answers.txt"), &now).expect("golden");
        return;
    }
    let before: Vec<&str> = GOLDEN.split("\n=== ").collect();
    let after: Vec<&str> = now.split("\n=== ").collect();
    assert_eq!(before.len(), after.len(), "the same answers");
    for (b, a) in before.iter().zip(&after) {
        let what = b.lines().next().unwrap_or_default();
        assert!(b == a, "the answer `{what}` changed:\n--- before\n{b}\n--- now\n{a}");
    }
    assert!(out.contains("data-room=\"citizens\""), "the page names its room");
}
