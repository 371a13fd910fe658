//! The admin API (DESIGN §9): each call's success, bad input, missing or wrong token, and
//! unknown room; pause keeps order and resume continues; drain frees places.

mod support;

use http::{Method, Request, StatusCode};
use support::*;
use usher::config::Config;

const TOKEN: &str = "test-admin-token-0123456789abcdef";

fn usher_with_room(upstream: &Upstream, mode: &str, token: Option<&str>) -> usher::Running {
    let mut config =
        Config::parse(&format!("[[room]]\nname = \"citizens\"\nmode = \"{mode}\"\nmax_active = 2\n")).expect("config");
    let base = Config::for_upstream(upstream.addr);
    (config.listen, config.admin.listen, config.upstream, config.limits) =
        (base.listen, base.admin.listen, base.upstream, base.limits);
    config.admin.token = token.map(String::from);
    start_usher(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_listed_with_their_live_figures() {
    let upstream = Upstream::start().await;
    let usher = usher_with_room(&upstream, "auto", Some(TOKEN));
    let list = admin_call(usher.admin_addr, Method::GET, "/admin/rooms", None, "").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    let rooms = list.json()["rooms"].as_array().cloned().expect("rooms");
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["name"], "citizens");
    assert_eq!(rooms[0]["max_active"], 2);
    assert_eq!(rooms[0]["waiting"], 0);
    let one = admin_call(usher.admin_addr, Method::GET, "/admin/rooms/citizens", None, "").await;
    assert_eq!(one.json()["mode"], "auto");
    let missing = admin_call(usher.admin_addr, Method::GET, "/admin/rooms/nobody", None, "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_limits_with_the_token_and_names_the_bad_field() {
    let upstream = Upstream::start().await;
    let usher = usher_with_room(&upstream, "auto", Some(TOKEN));
    let admin = usher.admin_addr;
    let path = "/admin/rooms/citizens";
    let body = r#"{"admit_per_minute": 3000, "max_active": 7, "message": "Tax day", "hold_seconds": 1200}"#;
    assert_eq!(admin_call(admin, Method::PATCH, path, None, body).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(admin_call(admin, Method::PATCH, path, Some("wrong"), body).await.status, StatusCode::UNAUTHORIZED);
    let ok = admin_call(admin, Method::PATCH, path, Some(TOKEN), body).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let room = ok.json();
    assert_eq!((room["admit_per_minute"].as_u64(), room["max_active"].as_u64()), (Some(3000), Some(7)));
    assert_eq!(room["message"], "Tax day");
    assert_eq!(room["hold_seconds"], 1200);
    for (bad, field) in [
        (r#"{"hold_seconds": 1}"#, "hold_seconds"),
        (r#"{"hold_seconds": 90000}"#, "hold_seconds"),
        (r#"{"max_active": 0}"#, "max_active"),
        (r#"{"mode": "sideways"}"#, "mode"),
        (r#"{"opens_at": "tomorrow"}"#, "opens_at"),
        (r#"{"colour": "blue"}"#, "colour"),
    ] {
        let reply = admin_call(admin, Method::PATCH, path, Some(TOKEN), bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.json()["field"], field, "{bad}");
    }
    assert_eq!(admin_call(admin, Method::PATCH, path, Some(TOKEN), "{not json").await.status, StatusCode::BAD_REQUEST);
    let unknown = admin_call(admin, Method::PATCH, "/admin/rooms/nobody", Some(TOKEN), body).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let metrics = http1(admin, get("/metrics")).await.text();
    assert!(metrics.contains("usher_outflow_per_minute{kind=\"effective\",room=\"citizens\"} 3000"), "{metrics}");
    assert!(
        metrics.contains("usher_outflow_per_minute{kind=\"configured\",room=\"citizens\"} 600"),
        "the file's: {metrics}"
    );
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_configured_writes_are_refused() {
    let upstream = Upstream::start().await;
    let usher = usher_with_room(&upstream, "auto", None);
    let reply = admin_call(usher.admin_addr, Method::POST, "/admin/rooms/citizens/pause", Some("anything"), "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(admin_call(usher.admin_addr, Method::GET, "/admin/rooms", None, "").await.status, StatusCode::OK);
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_shows_the_message_and_resume_returns_to_the_configured_mode() {
    let upstream = Upstream::start().await;
    let usher = usher_with_room(&upstream, "queue_all", Some(TOKEN));
    let admin = usher.admin_addr;
    let paused =
        admin_call(admin, Method::POST, "/admin/rooms/citizens/pause", Some(TOKEN), r#"{"message":"Back at 9"}"#).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text());
    assert_eq!(
        (paused.json()["mode"].clone(), paused.json()["message"].clone()),
        ("paused".into(), "Back at 9".into())
    );
    let waiter = http1(
        http_addr(&usher),
        Request::get("/inbox").header("accept", "application/json").body(empty()).expect("request"),
    )
    .await;
    assert_eq!(waiter.status, 503);
    assert_eq!(waiter.json()["status"], "paused");
    assert_eq!(waiter.json()["message"], "Back at 9");
    let resumed = admin_call(admin, Method::POST, "/admin/rooms/citizens/resume", Some(TOKEN), "").await;
    assert_eq!(resumed.json()["mode"], "queue_all");
    assert_eq!(resumed.json()["message"], serde_json::Value::Null);
    let missing = admin_call(admin, Method::POST, "/admin/rooms/nobody/resume", Some(TOKEN), "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_sessions_and_their_passes_no_longer_pass() {
    let upstream = Upstream::start().await;
    let usher = usher_with_room(&upstream, "auto", Some(TOKEN));
    let admin = usher.admin_addr;
    let first = http1(http_addr(&usher), get("/inbox")).await;
    assert_eq!(first.status, StatusCode::OK);
    let pass = first.header("set-cookie").and_then(|c| c.split(';').next()).expect("a pass").to_string();
    let bad = admin_call(admin, Method::POST, "/admin/rooms/citizens/drain", Some(TOKEN), r#"{"oldest": "all"}"#).await;
    assert_eq!((bad.status, bad.json()["field"].clone()), (StatusCode::BAD_REQUEST, "oldest".into()));
    let drained = admin_call(admin, Method::POST, "/admin/rooms/citizens/drain", Some(TOKEN), "").await;
    assert_eq!(drained.status, StatusCode::OK, "{}", drained.text());
    assert_eq!(drained.json()["drained"], 1);
    let again = http1(
        http_addr(&usher),
        Request::get("/inbox").header("cookie", pass).header("accept", "application/json").body(empty()).expect("r"),
    )
    .await;
    assert!(again.headers.get_all("set-cookie").iter().any(|c| c.to_str().is_ok_and(|c| c.starts_with("usher_pass_"))));
    let metrics = http1(admin, get("/metrics")).await.text();
    assert!(metrics.contains("usher_token_rejected_total{cookie=\"usher_pass\",reason=\"ended\"} 1"), "{metrics}");
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_command_line_sets_pauses_and_lists() {
    let upstream = Upstream::start().await;
    let usher = usher_with_room(&upstream, "auto", Some(TOKEN));
    let admin = usher.admin_addr.to_string();
    let run = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_usher"));
        command.arg("admin").arg("--addr").arg(&admin).args(args).env_remove("USHER_ADMIN_TOKEN");
        if let Some(token) = token {
            command.env("USHER_ADMIN_TOKEN", token);
        }
        command.output().expect("run usher admin")
    };
    let set = run(&["set", "citizens", "--admit-per-minute", "3000"], Some(TOKEN));
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert!(String::from_utf8_lossy(&set.stdout).contains("\"admit_per_minute\": 3000"));
    let pause = run(&["pause", "citizens", "--message", "Back soon"], Some(TOKEN));
    assert!(pause.status.success());
    let rooms = run(&["rooms"], None);
    let listed = String::from_utf8_lossy(&rooms.stdout);
    assert!(listed.contains("\"mode\": \"paused\"") && listed.contains("Back soon"), "{listed}");
    let refused = run(&["resume", "citizens"], Some("wrong"));
    assert!(!refused.status.success(), "a wrong token fails the command");
    let missing = run(&["room", "nobody"], None);
    assert!(!missing.status.success());
    usher.stop();
}

/// Follows a local `$ref` (`#/components/...`) in the OpenAPI document.
fn resolve<'a>(doc: &'a serde_json::Value, node: &'a serde_json::Value) -> &'a serde_json::Value {
    match node.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => {
            resolve(doc, r.strip_prefix('#').and_then(|p| doc.pointer(p)).unwrap_or_else(|| panic!("dangling {r}")))
        }
        None => node,
    }
}

/// Checks `value` against the object schema: every required field present, and no field the
/// document does not describe.
fn check_object(doc: &serde_json::Value, schema: &serde_json::Value, value: &serde_json::Value, at: &str) {
    let schema = resolve(doc, schema);
    if schema["type"] == "array" {
        for item in value.as_array().unwrap_or_else(|| panic!("{at}: expected an array, got {value}")) {
            check_object(doc, &schema["items"], item, at);
        }
        return;
    }
    if schema["type"] != "object" {
        return;
    }
    let object = value.as_object().unwrap_or_else(|| panic!("{at}: expected an object, got {value}"));
    let properties = schema["properties"].as_object().cloned().unwrap_or_default();
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().expect("required names are strings");
        assert!(object.contains_key(name), "{at}: documented field {name} missing from {value}");
    }
    for (name, field) in object {
        let described = properties.get(name).unwrap_or_else(|| panic!("{at}: field {name} is not in the OpenAPI file"));
        if !field.is_null() {
            check_object(doc, described, field, &format!("{at}.{name}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_file_describes_every_answer_of_the_admin_listener() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-openapi.json")).expect("file");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the OpenAPI file is JSON");
    let upstream = Upstream::start().await;
    let usher = usher_with_room(&upstream, "auto", Some(TOKEN));
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 8, "every route is described");
    for (template, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            if method == "parameters" {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("an HTTP method");
            let responses = operation["responses"].as_object().expect("responses");
            if operation.pointer("/responses/200/content/text~1event-stream").is_some() {
                // A stream never ends, so it is not collected here: tests/admin_events.rs.
                let refused = admin_call(usher.admin_addr, method.clone(), template, None, "").await;
                assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{template} without a token");
                assert!(responses.contains_key("401"), "{template}: 401 is documented");
                continue;
            }
            let body = operation.pointer("/requestBody/content/application~1json/example").map(ToString::to_string);
            let body = body.unwrap_or_default();
            let call_as = |room: &str, token: Option<&'static str>| {
                let (method, path, body) = (method.clone(), template.replace("{room}", room), body.clone());
                let admin = usher.admin_addr;
                async move { admin_call(admin, method, &path, token, &body).await }
            };
            let what = format!("{method} {template}");
            let reply = call_as("citizens", Some(TOKEN)).await;
            let code = reply.status.as_u16().to_string();
            let documented = responses.get(&code).unwrap_or_else(|| panic!("{what} answered {code}, not documented"));
            assert!(reply.status.is_success(), "{what}: {} {}", reply.status, reply.text());
            let schema = resolve(&doc, documented).pointer("/content/application~1json/schema");
            if let Some(schema) = schema {
                check_object(&doc, schema, &reply.json(), &what);
            }
            if template.contains("{room}") {
                let missing = call_as("nobody", Some(TOKEN)).await;
                assert_eq!(missing.status, StatusCode::NOT_FOUND, "{what}");
                assert!(responses.contains_key("404"), "{what}: 404 is documented");
                check_object(&doc, &serde_json::json!({"$ref": "#/components/schemas/Error"}), &missing.json(), &what);
            }
            if operation.get("security").is_some() {
                let refused = call_as("citizens", None).await;
                assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{what} without the token");
                assert!(responses.contains_key("401"), "{what}: 401 is documented");
            }
        }
    }
    usher.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_token_can_come_from_admin_token_file() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("admin-token");
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write the token file");
    let mut config = Config::parse(&format!(
        "[admin]\ntoken_file = {:?}\n[[room]]\nname = \"citizens\"\n",
        path.to_str().expect("UTF-8 path")
    ))
    .expect("config");
    let base = Config::for_upstream(upstream.addr);
    (config.listen, config.admin.listen, config.upstream) = (base.listen, base.admin.listen, base.upstream);
    let usher = start_usher(config);
    let pause = |token| admin_call(usher.admin_addr, Method::POST, "/admin/rooms/citizens/pause", token, "");
    assert_eq!(pause(Some("wrong-token-0123456789")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(pause(Some(TOKEN)).await.status, StatusCode::OK, "the file's token (its newline trimmed) is the token");
    usher.stop();

    let mut config = Config::for_upstream(upstream.addr);
    config.admin.token_file = Some(dir.path().join("missing"));
    let error = usher::Server::start(config).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("admin.token_file"), "a missing token file names its key: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_shorter_than_32_bytes_stops_the_start_naming_its_key() {
    let upstream = Upstream::start().await;
    let dir = TempDir::new("short-admin-token");
    let path = dir.path().join("token");
    std::fs::write(&path, "short-token\n").expect("write the token file");
    let mut config = Config::for_upstream(upstream.addr);
    config.admin.token_file = Some(path);
    let error = usher::Server::start(config).err().map(|e| e.to_string()).expect("a short token is refused");
    assert!(error.contains("admin.token_file") && error.contains("32"), "{error}");

    let mut config = Config::for_upstream(upstream.addr);
    config.admin.token = Some("x".repeat(31));
    assert!(usher::Server::start(config).is_err(), "31 bytes are too few");
    let mut config = Config::for_upstream(upstream.addr);
    config.admin.token = Some("x".repeat(32));
    usher::Server::start(config).expect("32 bytes are enough").stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_connection_that_stalls_in_its_request_head_is_closed() {
    let upstream = Upstream::start().await;
    let mut config = Config::for_upstream(upstream.addr);
    config.admin.header_read_timeout = std::time::Duration::from_millis(300);
    let usher = start_usher(config);
    let admin = usher.admin_addr;

    // Silent, and half a head: both closed (raw_exchange panics if not within 10 s).
    let silent = raw_exchange(admin, b"").await;
    assert!(!silent.starts_with("HTTP/1.1 200"), "{silent}");
    let half = raw_exchange(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
    assert!(!half.starts_with("HTTP/1.1 200"), "{half}");
    // The SRE's scrape beside them is served, and counts the closes.
    let text = metrics_text(admin).await;
    assert!(metric(&text, "usher_connections_closed_total", &[("reason", "admin_header_timeout")]) >= 1.0, "{text}");
    usher.stop();
}
