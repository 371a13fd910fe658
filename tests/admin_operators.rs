//! Named operators with roles (issue 20): each role can do exactly what it may, a token that
//! is nobody's is a 401 and a role too small a 403, a revoked token is refused after SIGHUP,
//! and every change is logged with the operator's name, never a token or an address.

mod support;

use http::{Method, Request, StatusCode};
use std::net::IpAddr;
use std::time::Duration;
use support::*;
use usher::operators::{hex, token_sha256};

const VIEWER: &str = "viewer-token-vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";
const OPERATOR: &str = "operator-token-oooooooooooooooooooooooooooooooo";
const ADMIN: &str = "admin-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NEWCOMER: &str = "newcomer-token-nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn";
const UNKNOWN: &str = "nobodys-token-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
/// The operators call from an address of their own, so any trace of it can be looked for.
const OPERATOR_ADDRESS: &str = "127.8.6.4";

fn operator(name: &str, role: &str, token: &str) -> String {
    format!(
        "[[admin.operator]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n",
        hex(&token_sha256(token))
    )
}

/// A room on `/inbox`, the given operators, and `/metrics` behind the viewer role.
fn config(upstream: &Upstream, operators: &[String]) -> String {
    let base = binary_config(&[upstream.addr], "", "")
        .replace("[admin]\nlisten = \"127.0.0.1:0\"\n", "[admin]\nlisten = \"127.0.0.1:0\"\nmetrics = \"viewer\"\n");
    format!("{base}\n[[room]]\nname = \"citizens\"\npaths = [\"/inbox\"]\nmax_active = 5\n\n{}", operators.concat())
}

async fn call(usher: &UsherProcess, method: Method, path: &str, token: Option<&str>, body: &str) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let source: IpAddr = OPERATOR_ADDRESS.parse().expect("address");
    http1_from(source, usher.admin_addr, req.body(full(body.to_string())).expect("request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_exactly_what_it_may() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("operators");
    let admin_file = dir.path().join("admin.token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).expect("write the token file");
    let operators = [
        operator("vera", "viewer", VIEWER),
        operator("otto", "operator", OPERATOR),
        // The admin's token is read from a file rather than given as a hash.
        format!("[[admin.operator]]\nname = \"ada\"\nrole = \"admin\"\ntoken_file = {:?}\n", admin_file),
    ];
    let usher = UsherProcess::spawn(&config(&upstream, &operators), Logs::Text, &[]);
    let room = "/admin/rooms/citizens";
    let (get, patch, post) = (Method::GET, Method::PATCH, Method::POST);
    let pause = format!("{room}/pause");
    let resume = format!("{room}/resume");
    let drain = format!("{room}/drain");
    let limits = r#"{"max_active": 7}"#;
    // (what, method, path, body, [no token, unknown token, viewer, operator, admin])
    let table: [(&str, Method, &str, &str, [u16; 5]); 8] = [
        ("list rooms", get.clone(), "/admin/rooms", "", [200, 401, 200, 200, 200]),
        ("read a room", get.clone(), room, "", [200, 401, 200, 200, 200]),
        ("list operators", get.clone(), "/admin/operators", "", [401, 401, 403, 403, 200]),
        ("change limits", patch, room, limits, [401, 401, 403, 200, 200]),
        ("pause", post.clone(), &pause, "", [401, 401, 403, 200, 200]),
        ("resume", post.clone(), &resume, "", [401, 401, 403, 200, 200]),
        ("drain", post, &drain, "", [401, 401, 403, 200, 200]),
        ("metrics", get, "/metrics", "", [401, 401, 200, 200, 200]),
    ];
    for (what, method, path, body, expected) in table {
        for (token, want) in [None, Some(UNKNOWN), Some(VIEWER), Some(OPERATOR), Some(ADMIN)].into_iter().zip(expected)
        {
            let reply = call(&usher, method.clone(), path, token, body).await;
            let who = token.map_or("no token", |t| &t[..t.find('-').unwrap_or(0)]);
            assert_eq!(reply.status.as_u16(), want, "{what} with {who}: {}", reply.text());
        }
    }
    // A refusal says why, and names the role that was missing.
    let refused = call(&usher, Method::POST, &pause, Some(VIEWER), "").await;
    assert_eq!(refused.json()["error"], "vera has the viewer role; this needs operator");

    // The list of operators: names, roles and token ids; never a token or its full hash.
    let list = call(&usher, Method::GET, "/admin/operators", Some(ADMIN), "").await;
    let names: Vec<(String, String)> = list.json()["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .map(|o| (o["name"].as_str().unwrap_or("").into(), o["role"].as_str().unwrap_or("").into()))
        .collect();
    let expected = [("vera", "viewer"), ("otto", "operator"), ("ada", "admin")];
    assert_eq!(names, expected.map(|(n, r)| (n.to_string(), r.to_string())));
    for token in [VIEWER, OPERATOR, ADMIN] {
        assert!(!list.text().contains(token) && !list.text().contains(&hex(&token_sha256(token))), "{}", list.text());
    }
}

/// Polls (at most 10 s) until `token` gets `want` on a pause.
async fn wait_for_status(usher: &UsherProcess, token: &str, want: StatusCode) -> bool {
    for _ in 0..200 {
        if call(usher, Method::POST, "/admin/rooms/citizens/pause", Some(token), "").await.status == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_after_sighup() {
    let upstream = Upstream::start().await;
    let before = [operator("otto", "operator", OPERATOR), operator("vera", "operator", VIEWER)];
    let usher = UsherProcess::spawn(&config(&upstream, &before), Logs::Text, &[]);
    assert!(wait_for_status(&usher, OPERATOR, StatusCode::OK).await);
    assert!(wait_for_status(&usher, NEWCOMER, StatusCode::UNAUTHORIZED).await);

    // otto leaves the team, vera is demoted to viewer, and nina joins.
    let after = [operator("vera", "viewer", VIEWER), operator("nina", "operator", NEWCOMER)];
    std::fs::write(usher.config_path(), config(&upstream, &after)).expect("rewrite the config");
    usher.signal("HUP");
    assert!(wait_for_status(&usher, OPERATOR, StatusCode::UNAUTHORIZED).await, "the revoked token still works");
    assert_eq!(call(&usher, Method::POST, "/admin/rooms/citizens/pause", Some(VIEWER), "").await.status, 403);
    assert_eq!(call(&usher, Method::POST, "/admin/rooms/citizens/resume", Some(NEWCOMER), "").await.status, 200);
    // A revoked token does not fall back to an anonymous read either.
    assert_eq!(call(&usher, Method::GET, "/admin/rooms", Some(OPERATOR), "").await.status, 401);

    // Each access change is one log line and one count, naming the operator.
    let logs = usher.logs();
    let changed = |name: &str, old: &str, new: &str| {
        logs.iter().any(|l| {
            l.contains("change applied")
                && l.contains(&format!("target=\"operator:{name}\""))
                && l.contains(&format!("old={old}"))
                && l.contains(&format!("new={new}"))
        })
    };
    assert!(changed("otto", "\"operator (token", "\"-\""), "otto's revocation is logged:\n{}", logs.join("\n"));
    assert!(changed("nina", "\"-\"", "\"operator (token"), "nina's addition is logged:\n{}", logs.join("\n"));
    assert!(changed("vera", "\"operator (token", "\"viewer (token"), "vera's new role is logged:\n{}", logs.join("\n"));
    let text = metrics_text_with(usher.admin_addr, VIEWER).await;
    assert_eq!(metric(&text, "usher_changes_total", &[("source", "reload"), ("target", "operator:otto")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_logged_with_the_operators_name_and_never_the_token() {
    let upstream = Upstream::start().await;
    let operators = [operator("otto", "operator", OPERATOR)];
    let mut usher = UsherProcess::spawn(&config(&upstream, &operators), Logs::Json, &[("USHER_ADMIN_TOKEN", ADMIN)]);
    let set = call(&usher, Method::PATCH, "/admin/rooms/citizens", Some(OPERATOR), r#"{"max_active": 9}"#).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text());
    // The single-admin shortcut acts under a name of its own.
    let drained = call(&usher, Method::POST, "/admin/rooms/citizens/drain", Some(ADMIN), "").await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.text());
    // Refused attempts with wrong tokens, which must not be echoed into the log either.
    call(&usher, Method::POST, "/admin/rooms/citizens/pause", Some(UNKNOWN), "").await;

    usher.signal("TERM");
    assert_eq!(usher.exit_status().await.code(), Some(0));
    let logs = usher.logs();
    let entries: Vec<serde_json::Value> = logs.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let change = |field: &str| {
        entries.iter().find(|e| e["message"] == "change applied" && e["field"] == field).cloned().unwrap_or_default()
    };
    assert_eq!(change("max_active")["who"], "otto", "{}", logs.join("\n"));
    assert_eq!(change("max_active")["source"], "api");
    assert_eq!((change("max_active")["old"].as_str(), change("max_active")["new"].as_str()), (Some("5"), Some("9")));
    assert_eq!(change("drain")["who"], usher::operators::SHORTCUT_NAME, "{}", logs.join("\n"));
    for secret in [OPERATOR, ADMIN, UNKNOWN] {
        let hash = hex(&token_sha256(secret));
        for line in &logs {
            assert!(!line.contains(secret), "a token was logged: {line}");
            assert!(!line.contains(&hash), "a token's hash was logged: {line}");
        }
    }
    assert!(!logs.iter().any(|l| l.contains(OPERATOR_ADDRESS)), "the operator's address was logged");
}

/// Every line of a JSON-lines file.
fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_holds_each_change_and_attempt_with_no_token_and_follows_a_rotation() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("audit");
    let audit = dir.path().join("audit.jsonl");
    let operators = [operator("otto", "operator", OPERATOR), operator("vera", "viewer", VIEWER)];
    let with_audit = |max_active: u32| {
        config(&upstream, &operators)
            .replace("metrics = \"viewer\"\n", &format!("metrics = \"viewer\"\naudit_file = {audit:?}\n"))
            .replace("max_active = 5", &format!("max_active = {max_active}"))
    };
    let usher = UsherProcess::spawn(&with_audit(5), Logs::Text, &[]);
    let room = "/admin/rooms/citizens";
    let two_fields = r#"{"max_active": 9, "message": "Tax day"}"#;
    assert_eq!(call(&usher, Method::PATCH, room, Some(OPERATOR), two_fields).await.status, 200);
    assert_eq!(call(&usher, Method::POST, &format!("{room}/pause"), Some(VIEWER), "").await.status, 403);
    assert_eq!(call(&usher, Method::POST, &format!("{room}/pause"), Some(UNKNOWN), "").await.status, 401);
    assert_eq!(call(&usher, Method::PATCH, room, Some(OPERATOR), r#"{"max_active": 0}"#).await.status, 400);
    // A reload's change is in the trail too.
    std::fs::write(usher.config_path(), with_audit(6)).expect("rewrite the config");
    usher.signal("HUP");
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = json_lines(&audit);
        if lines.iter().any(|l| l["source"] == "reload") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|l| {
            let text = |k: &str| l[k].as_str().unwrap_or("").to_string();
            (text("who"), text("target"), text("field"), text("outcome"))
        })
        .collect();
    let expected = [
        ("otto", "room:citizens", "max_active", "applied"),
        ("otto", "room:citizens", "message", "applied"),
        ("vera", "/admin/rooms/citizens/pause", "POST", "refused (403)"),
        ("unknown", "/admin/rooms/citizens/pause", "POST", "refused (401)"),
        ("otto", "/admin/rooms/citizens", "PATCH", "refused (400)"),
        ("reload", "room:citizens", "max_active", "applied"),
    ]
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()));
    assert_eq!(summary, expected, "{lines:#?}");
    assert_eq!((lines[0]["old"].as_str(), lines[0]["new"].as_str()), (Some("5"), Some("9")));
    assert!(lines.iter().all(|l| l["time"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z'))));

    // logrotate moves the file and sends USR1: the next line starts a new file.
    std::fs::rename(&audit, dir.path().join("audit.jsonl.1")).expect("rotate");
    usher.signal("USR1");
    let mut rotated = false;
    for _ in 0..200 {
        // Each try is one more change; once the reopen has happened it lands in the new file.
        call(&usher, Method::PATCH, room, Some(OPERATOR), r#"{"message": null}"#).await;
        call(&usher, Method::PATCH, room, Some(OPERATOR), r#"{"message": "again"}"#).await;
        if json_lines(&audit).iter().any(|l| l["who"] == "otto") {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "USR1 did not reopen the audit file");

    for path in [audit.clone(), dir.path().join("audit.jsonl.1")] {
        let text = std::fs::read_to_string(&path).expect("audit file");
        for secret in [OPERATOR, VIEWER, UNKNOWN] {
            assert!(!text.contains(secret), "a token in {}", path.display());
            assert!(!text.contains(&hex(&token_sha256(secret))), "a token's hash in {}", path.display());
        }
        assert!(!text.contains(OPERATOR_ADDRESS), "the caller's address in {}", path.display());
    }
}
