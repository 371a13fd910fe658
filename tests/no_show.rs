//! No-show compensation (issue 17, `room.no_show_bound`): turns that come and are never
//! claimed are spent all the same, so the admitter measures their share and releases that
//! much more, within the bound; a room with the bound at 0 releases what it is set to.

mod support;

use std::time::Duration;
use support::*;
use usher::config::RoomMode;

fn outflow(text: &str, room: &str, kind: &str) -> f64 {
    metric(text, "usher_outflow_per_minute", &[("room", room), ("kind", kind)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_turns_are_made_up_for_within_the_bound_and_not_where_it_is_off() {
    let backend = Upstream::start_mailbox().await;
    // Everyone queues; nobody who joins ever polls again, so every turn that comes expires
    // unclaimed a second later. waiter_ttl is long, so they still count as present.
    let gone = |name: &str, path: &str, bound: f64| {
        let mut r = room(name);
        r.paths = vec![path.to_string()];
        r.mode = RoomMode::QueueAll;
        r.max_active = 100_000;
        r.admit_per_minute = 1200;
        r.waiter_ttl = Duration::from_secs(120);
        r.hold = Duration::from_secs(300);
        r.claim_window = Duration::from_secs(1);
        r.no_show_bound = bound;
        r
    };
    let usher = usher_with_rooms(&backend, vec![gone("made-up", "/a", 0.3), gone("as-set", "/b", 0.0)]);
    let (addr, admin) = (usher.http_addr.expect("http"), usher.admin_addr);
    for i in 0..120 {
        let mut v = Visitor::new(ip(19, i), addr);
        for path in ["/a/inbox", "/b/inbox"] {
            let reply = v.api(path).await;
            assert_eq!(reply.status, http::StatusCode::SERVICE_UNAVAILABLE, "queued: {}", reply.text());
        }
    }

    eventually("the no-shows are measured", Duration::from_secs(30), || async {
        metric(&metrics_text(admin).await, "usher_no_show_share", &[("room", "made-up")]) >= 0.9
    })
    .await;
    // A share near 1 is believed only up to the bound: 1 / (1 − 0.3) of 1200.
    eventually("the release makes up for them", Duration::from_secs(5), || async {
        outflow(&metrics_text(admin).await, "made-up", "release") == 1714.0
    })
    .await;
    let text = metrics_text(admin).await;
    assert_eq!(outflow(&text, "made-up", "effective"), 1200.0, "the rate set is unchanged");
    assert_eq!(outflow(&text, "made-up", "configured"), 1200.0);
    assert!(metric(&text, "usher_expired_grants_total", &[("room", "made-up")]) >= 50.0);
    // Measured there too, but not made up for.
    assert!(metric(&text, "usher_no_show_share", &[("room", "as-set")]) >= 0.5, "{text}");
    assert_eq!(outflow(&text, "as-set", "release"), 1200.0);
    stop_usher(usher).await;
}
