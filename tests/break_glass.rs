//! Off and the break-glass (issue 19): `mode = "off"` lets everyone in without a ticket while
//! sessions are still made and counted; `POST /admin/rooms/{name}/off` (admin role only) does
//! it for a while and the room returns to its mode by itself at the deadline, with nobody
//! inside losing their session and the line starting empty.

mod support;

use http::{Method, StatusCode};
use std::time::Duration;
use support::*;
use usher::operators::{Operator, Role, token_sha256};

const ADMIN: &str = "break-glass-admin-token-0123456789abcdef";
const OPERATOR: &str = "break-glass-operator-token-0123456789abc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_break_glass_lets_everyone_in_until_its_deadline_then_the_room_queues_again() {
    let backend = Upstream::start_mailbox().await;
    let mut r = room("citizens");
    r.paths = vec!["/inbox".into()];
    r.max_active = 1;
    // Longer than the break-glass: the deadline's tick, run 10 minutes ahead, must find the
    // sessions alive for what it does, not for how long they sat idle.
    r.session_idle = Duration::from_secs(7200);
    // The test runs the ticks itself, at the times it needs (the deadline among them).
    r.tick = Duration::from_secs(3600);
    let usher = usher_with_rooms_and(&backend, vec![r], |c| {
        c.admin.token = Some(ADMIN.into());
        c.admin.operators =
            vec![Operator { name: "otto".into(), role: Role::Operator, token_sha256: token_sha256(OPERATOR) }];
    });
    let (admin, addr) = (usher.admin_addr, usher.http_addr.expect("http"));
    let path = "/admin/rooms/citizens";

    // Only the admin role may open the gates, for a while or for good.
    let denied =
        admin_call(admin, Method::POST, &format!("{path}/off"), Some(OPERATOR), r#"{"for_seconds": 600}"#).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text());
    let denied = admin_call(admin, Method::PATCH, path, Some(OPERATOR), r#"{"mode": "off"}"#).await;
    assert_eq!((denied.status, denied.json()["field"].as_str()), (StatusCode::FORBIDDEN, Some("mode")));
    let short = admin_call(admin, Method::POST, &format!("{path}/off"), Some(ADMIN), r#"{"for_seconds": 5}"#).await;
    assert_eq!((short.status, short.json()["field"].as_str()), (StatusCode::BAD_REQUEST, Some("for_seconds")));

    // One waiter is in line before the break-glass.
    let mut early = Visitor::new(ip(30, 0), addr);
    assert!(early.page("/inbox").await.forwarded(), "the first goes in");
    let mut waiter = Visitor::new(ip(30, 1), addr);
    assert_eq!(waiter.api("/inbox").await.json()["status"], "waiting");

    let before = usher::clock::now_ms();
    let off = admin_call(admin, Method::POST, &format!("{path}/off"), Some(ADMIN), r#"{"for_seconds": 600}"#).await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.text());
    let room = off.json();
    assert_eq!((room["mode"].as_str(), room["off_then"].as_str()), (Some("off"), Some("auto")));
    let until = room["off_until"].as_u64().expect("a deadline");
    assert!((before / 1000 + 599..=before / 1000 + 601).contains(&until), "{until}");

    // Everyone goes in at once, past max_active, each with a pass; the one in line at the
    // next tick.
    for n in 2..6 {
        let mut v = Visitor::new(ip(30, n), addr);
        let reply = v.page("/inbox").await;
        assert!(reply.forwarded(), "a newcomer passes straight through: {}", reply.text());
        assert!(reply.set_cookie(PASS).is_some(), "and still gets a pass, so the session is counted");
    }
    let citizens = usher.rooms.get("citizens").expect("room").clone();
    usher::room::admitter::tick(&citizens, usher::clock::now_ms()).await;
    assert_eq!(waiter.status().await["status"], "admitted", "the one in line is let in too");
    let figures = admin_call(admin, Method::GET, path, None, "").await.json();
    assert_eq!((figures["active"].as_u64(), figures["waiting"].as_u64()), (Some(6), Some(0)), "{figures}");

    // The deadline passes: the room queues again by itself, the six inside stay inside.
    usher::room::admitter::tick(&citizens, (until + 1) * 1000).await;
    let back = admin_call(admin, Method::GET, path, None, "").await.json();
    assert_eq!((back["mode"].as_str(), back["off_until"].as_u64()), (Some("auto"), None), "{back}");
    assert!(early.page("/inbox").await.forwarded(), "a session from before the break-glass still works");
    let mut later = Visitor::new(ip(30, 9), addr);
    let queued = later.api("/inbox").await.json();
    assert_eq!((queued["status"].as_str(), queued["ahead"].as_u64()), (Some("waiting"), Some(0)), "{queued}");

    let text = metrics_text(admin).await;
    assert_eq!(metric(&text, "usher_changes_total", &[("source", "api"), ("field", "break_glass")]), 1.0);
    stop_usher(usher).await;
}

#[test]
fn off_is_a_mode_the_configuration_file_accepts() {
    let config = usher::config::Config::parse("[[room]]\nname = \"citizens\"\nmode = \"off\"\n").expect("config");
    assert_eq!(config.rooms[0].mode, usher::config::RoomMode::Off);
    let error = usher::config::Config::parse("[[room]]\nname = \"citizens\"\nmode = \"of\"\n").expect_err("a typo");
    assert!(format!("{error:?}").contains("room[0].mode"), "{error:?}");
}
