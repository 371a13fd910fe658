//! The queue page over real sockets (DESIGN §5, issue 6), without a browser: the language by
//! `Accept-Language` and by the switch, the status JSON's fields, the security headers on
//! every usher answer, and operators' own templates — served when valid, refused at start-up
//! with the key named when broken. The browser side is in `tests/browser.rs`.

mod support;

use std::process::Command;
use std::sync::Arc;
use support::*;
use usher::config::{Config, RoomConfig};
use usher::pages::PageTemplate;

const BROWSER: &str = "text/html,application/xhtml+xml";

/// A room of one place: after [`take_the_place`], everybody else waits and nobody is admitted
/// (the one session stays active for the whole test).
fn full_room() -> RoomConfig {
    RoomConfig { max_active: 1, ..room("citizens") }
}

async fn take_the_place(usher: &usher::Running) {
    let mut first = Visitor::new(ip(60, 250), usher.http_addr.expect("http"));
    assert!(first.page("/inbox").await.forwarded(), "the first visitor takes the one place");
}

async fn page_in(visitor: &mut Visitor, path: &str, language: &str) -> Reply {
    visitor.request(path, vec![("accept", BROWSER), ("accept-language", language)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_follows_accept_language_and_the_switch_keeps_ticket_and_url() {
    let backend = Upstream::start_mailbox().await;
    let usher = usher_with_rooms(&backend, vec![full_room()]);
    take_the_place(&usher).await;
    let addr = usher.http_addr.expect("http");

    let mut dane = Visitor::new(ip(61, 1), addr);
    let reply = page_in(&mut dane, "/inbox?folder=2", "da-DK,da;q=0.9,en;q=0.5").await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("<html lang=\"da\">") && reply.text().contains("Du er i kø"), "{}", reply.text());
    let ticket = dane.cookie(TICKET).expect("a ticket").to_string();

    let mut other = Visitor::new(ip(61, 2), addr);
    let reply = page_in(&mut other, "/inbox", "fr-FR,en-GB;q=0.8,da;q=0.2").await;
    assert!(reply.text().contains("<html lang=\"en\">") && reply.text().contains("You are in the queue"));

    // The switch: a cookie for the choice and back to the very URL; the ticket is untouched.
    let switch = dane.request("/.usher/lang?to=en&back=%2Finbox%3Ffolder%3D2", vec![("accept", BROWSER)]).await;
    assert_eq!(switch.status, 303);
    assert_eq!(switch.header("location"), Some("/inbox?folder=2"));
    assert!(switch.set_cookie("usher_lang").is_some_and(|c| c.contains("usher_lang=en") && c.contains("HttpOnly")));
    assert_eq!(dane.cookie(TICKET), Some(ticket.as_str()), "the switch does not touch the ticket");
    let reply = page_in(&mut dane, "/inbox?folder=2", "da-DK").await;
    assert!(reply.text().contains("<html lang=\"en\">"), "the choice wins over the browser's languages");
    assert_eq!(dane.cookie(TICKET), Some(ticket.as_str()), "same place after the switch");

    // Another site is never a way back.
    let evil = dane.request("/.usher/lang?to=da&back=%2F%2Fevil.example%2F", vec![]).await;
    assert_eq!(evil.header("location"), Some("/"));
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_cookie_never_reaches_the_mailbox() {
    let backend = Upstream::start_mailbox().await;
    let usher = usher_with_rooms(&backend, vec![room("citizens")]);
    let mut visitor = Visitor::new(ip(62, 1), usher.http_addr.expect("http"));
    visitor.jar.insert("usher_lang".into(), "da".into());
    visitor.jar.insert("app".into(), "1".into());
    let reply = visitor.page("/inbox").await;
    assert!(reply.forwarded(), "an empty room forwards");
    let seen = backend.seen_path("/inbox");
    let cookies: Vec<&str> = seen.iter().flat_map(|s| s.all("cookie")).collect();
    assert_eq!(cookies, vec!["app=1"], "only the mailbox's own cookie is forwarded");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_carries_the_documented_fields() {
    let backend = Upstream::start_mailbox().await;
    let usher = usher_with_rooms(&backend, vec![full_room()]);
    take_the_place(&usher).await;
    let mut visitor = Visitor::new(ip(63, 1), usher.http_addr.expect("http"));
    let queued = visitor.api("/letters/1").await;
    assert_eq!(queued.status, 503);
    assert!(queued.header("retry-after").is_some());
    let body = queued.json();
    for field in ["status", "room", "ahead", "position", "eta_seconds", "eta_text", "poll_after_seconds", "joined_at"] {
        assert!(body.get(field).is_some(), "503 JSON lacks {field}: {body}");
    }
    let status =
        visitor.request("/.usher/status", vec![("accept", "application/json"), ("accept-language", "da")]).await;
    let json = status.json();
    assert_eq!(json["status"], "waiting");
    assert_eq!(json["position"], 1);
    assert_eq!(json["lang"], "da");
    assert!(json["eta_text"].as_str().is_some_and(|t| !t.is_empty()), "{json}");
    assert!(json["server_time"].as_u64().is_some_and(|t| t > 1_700_000_000), "{json}");
    for field in ["opens_at", "message", "progress_percent"] {
        assert!(json.get(field).is_some(), "status JSON lacks {field}: {json}");
    }
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_usher_answer_carries_the_security_headers() {
    let backend = Upstream::start_mailbox().await;
    let usher = usher_with_rooms(&backend, vec![full_room()]);
    take_the_place(&usher).await;
    let mut visitor = Visitor::new(ip(64, 1), usher.http_addr.expect("http"));
    for (path, accept) in [
        ("/inbox", BROWSER),
        ("/inbox", "application/json"),
        ("/.usher/status", "application/json"),
        ("/.usher/queue.css", "text/css"),
        ("/.usher/queue.js", "*/*"),
        ("/.usher/lang?to=da", BROWSER),
    ] {
        let reply = visitor.get(path, Some(accept)).await;
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{path}: CSP {csp:?}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
    let page = visitor.page("/inbox").await;
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let weight = page.text().len()
        + visitor.get("/.usher/queue.css", None).await.text().len()
        + visitor.get("/.usher/queue.js", None).await.text().len();
    assert!(weight < 20 * 1024, "the page with its CSS and JS weighs {weight} bytes");
    stop_usher(usher).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_own_template_is_served_with_the_documented_variables() {
    let dir = TempDir::new("template");
    let path = dir.path().join("queue.html");
    std::fs::write(
        &path,
        "<!doctype html><html lang=\"{{ lang }}\"><title>{{ title }}</title>\
         <link rel=\"stylesheet\" href=\"{{ css_url }}\">\
         <main id=\"usher\" data-status=\"{{ status }}\" data-poll=\"{{ poll_after_seconds }}\">\
         <h1>Kommunen: {{ title }}</h1><p>nr. {{ position }}, {{ eta_text }}</p>\
         {% if message %}<p>{{ message }}</p>{% endif %}\
         <a href=\"{{ switch.url }}\">{{ switch.name }}</a></main><script src=\"{{ js_url }}\"></script>",
    )
    .expect("write the template");
    let template = Arc::new(PageTemplate::load(&path).expect("a valid template"));
    let backend = Upstream::start_mailbox().await;
    let room = RoomConfig { template: Some(template), message: Some("<b>soon</b>".into()), ..full_room() };
    let usher = usher_with_rooms(&backend, vec![room]);
    take_the_place(&usher).await;
    let mut visitor = Visitor::new(ip(65, 1), usher.http_addr.expect("http"));
    let reply = page_in(&mut visitor, "/inbox", "da").await;
    assert_eq!(reply.status, 200);
    let html = reply.text();
    assert!(html.contains("<h1>Kommunen: Du er i kø</h1>") && html.contains("nr. 1, "), "{html}");
    assert!(html.contains("&lt;b&gt;soon"), "the operator's message is escaped: {html}");
    assert!(reply.header("content-security-policy").is_some(), "custom pages get the same headers");
    stop_usher(usher).await;
}

fn check_config(text: &str, dir: &TempDir) -> std::process::Output {
    let path = dir.path().join("usher.toml");
    std::fs::write(&path, text).expect("write the config");
    Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["check-config", path.to_str().expect("UTF-8 path")])
        .env("NO_COLOR", "1")
        .output()
        .expect("run usher check-config")
}

#[test]
fn a_broken_or_missing_template_is_a_config_error_naming_the_key() {
    let dir = TempDir::new("broken-template");
    let broken = dir.path().join("broken.html");
    std::fs::write(&broken, "<h1>{{ title }</h1>").expect("write");
    let typo = dir.path().join("typo.html");
    std::fs::write(&typo, "<h1>{{ titel }}</h1>").expect("write");
    let good = dir.path().join("good.html");
    std::fs::write(&good, "<h1>{{ title }}</h1>").expect("write");
    let config = format!(
        "[[room]]\nname = \"a\"\npaths = [\"/a/\"]\ntemplate = {broken:?}\n\n\
         [[room]]\nname = \"b\"\npaths = [\"/b/\"]\ntemplate = {typo:?}\n\n\
         [[room]]\nname = \"c\"\npaths = [\"/c/\"]\ntemplate = \"{}/missing.html\"\n\n\
         [[room]]\nname = \"d\"\npaths = [\"/d/\"]\ntemplate = {good:?}\n",
        dir.path().display()
    );
    let output = check_config(&config, &dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("room[0].template:") && stderr.contains("line 1"), "{stderr}");
    assert!(stderr.contains("room[1].template:") && stderr.contains("undefined"), "{stderr}");
    assert!(stderr.contains("room[2].template:") && stderr.contains("cannot read"), "{stderr}");
    assert!(!stderr.contains("room[3]"), "a valid template is accepted: {stderr}");

    // The same errors stop `Config::parse`, which `usher run` starts from.
    let errors = Config::parse(&config).expect_err("refused").0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["room[0].template", "room[1].template", "room[2].template"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_carry_the_security_headers_and_no_inline_style() {
    // Nobody listens upstream: the friendly 502 page.
    let nobody = closed_addr();
    let usher = start_usher(Config::for_upstream(nobody.addr));
    let mut visitor = Visitor::new(ip(66, 1), usher.http_addr.expect("http"));
    for (path, code) in [("/inbox", 502), ("/.usher/nothing", 404)] {
        let reply = visitor.page(path).await;
        assert_eq!(reply.status, code, "{path}");
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{path}: CSP {csp:?}");
        assert!(!reply.text().contains("style="), "{path}: inline style would be blocked: {}", reply.text());
    }
    stop_usher(usher).await;
}
