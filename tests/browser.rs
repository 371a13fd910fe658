//! The queue page in a real browser (DESIGN §5, issue 6): headless Chromium (Debian's
//! `chromium`) driven by `playwright-core` from `tests/browser/queue.test.mjs`, against usher
//! and a real upstream started here. Each test starts its own usher with a small room and
//! runs one scenario of the script, which drives the browser, admits people through the
//! admin API, audits accessibility with axe-core, asserts the network log and saves
//! screenshots under `target/screenshots/`.
//!
//! `tests/run.sh` installs Chromium and runs `npm ci` in `tests/browser/`; without them these
//! tests fail and say so (they never skip).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::*;
use usher::config::{Config, RoomConfig};

const TOKEN: &str = "browser-test-admin-token-0123456789";

/// One Chromium at a time: the machine is small, and a starved browser makes slow tests.
/// (Under cargo-nextest, which runs each test in its own process, `.config/nextest.toml`
/// puts these tests in one group of one.)
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// A full-ish room: two places, fast ticks, admission limited only by `max_active`.
fn small_room() -> RoomConfig {
    RoomConfig { max_active: 2, admit_per_minute: 6000, tick: Duration::from_millis(50), ..room("citizens") }
}

/// Starts usher (admin token set) in front of a recording backend and runs `scenario` of the
/// queue page's script; returns the backend so the test can check what reached the mailbox.
async fn run(scenario: &str, room: RoomConfig, tweak: impl FnOnce(&mut Config)) -> Upstream {
    run_script("queue.test.mjs", scenario, room, tweak, &[]).await
}

/// [`run`] with any script of `tests/browser/` and more environment for it.
async fn run_script(
    script: &str,
    scenario: &str,
    room: RoomConfig,
    tweak: impl FnOnce(&mut Config),
    env: &[(&str, &str)],
) -> Upstream {
    let _one = BROWSER.lock().await;
    let modules = browser_dir().join("node_modules");
    assert!(
        modules.join("playwright-core").is_dir() && modules.join("axe-core").is_dir(),
        "the browser tests need their npm packages: run `npm ci` in tests/browser (tests/run.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "no Chromium at {chromium}: install Debian's chromium (tests/run.sh does)");

    let backend = Upstream::start_mailbox().await;
    let usher = usher_with_rooms_and(&backend, vec![room], |config| {
        config.admin.token = Some(TOKEN.into());
        tweak(config);
    });
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).expect("create target/screenshots");

    let child = tokio::process::Command::new("node")
        .arg(browser_dir().join(script))
        .arg(scenario)
        .envs(env.iter().copied())
        .env("USHER_URL", format!("http://{}", usher.http_addr.expect("http listener")))
        .env("ADMIN_URL", format!("http://{}", usher.admin_addr))
        .env("ADMIN_TOKEN", TOKEN)
        .env("ROOM", "citizens")
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &shots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (Node.js 18 or newer)");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("scenario {scenario} did not finish within 120 s"))
        .expect("node output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "scenario {scenario} failed ({}):\n{stdout}\n{stderr}", output.status);
    stop_usher(usher).await;
    backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_sees_position_fall_and_lands_on_the_page_first_asked_for() {
    let backend = run("queue", small_room(), |_| {}).await;
    let landed = backend.seen_path("/letters/7");
    assert!(
        landed.iter().any(|s| s.query.as_deref() == Some("from=queue")),
        "the mailbox never served the page first asked for: {landed:?}"
    );
    assert!(
        landed.iter().all(|s| s.all("cookie").iter().all(|c| !c.contains("usher_"))),
        "usher's cookies reached the mailbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_javascript_the_page_refreshes_itself_to_the_mailbox() {
    let backend = run("nojs", small_room(), |_| {}).await;
    assert!(!backend.seen_path("/letters/8").is_empty(), "the mailbox never served the page first asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn danish_and_english_by_accept_language_and_the_switch_keeps_the_place() {
    run("languages", small_room(), |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_queue_shows_the_operators_message_and_moves_on_after_resume() {
    let backend = run("paused", small_room(), |_| {}).await;
    assert!(!backend.seen_path("/letters/9").is_empty(), "the mailbox never served the page first asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prequeue_counts_down_to_the_opening_and_lets_the_visitor_in() {
    // The opening is set when usher starts (after waiting for the browser), 15 s ahead.
    let room = RoomConfig { max_active: 100, ..small_room() };
    let backend = run("prequeue", room, |config| config.rooms[0].opens_at = Some(unix_secs() as i64 + 15)).await;
    assert!(!backend.seen_path("/letters/10").is_empty(), "the mailbox never served the page first asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_solves_a_real_challenge_calmly_and_without_javascript_waits_instead() {
    // Every newcomer queues (so each is asked), with the default challenge.
    let room = RoomConfig {
        max_active: 100,
        mode: usher::config::RoomMode::QueueAll,
        challenge: Some(usher::config::ChallengeConfig {
            bits: 13,
            puzzles: 8,
            max_bits: 13,
            ttl: Duration::from_secs(120),
            noscript_wait: Duration::from_secs(3),
            busy_per_second: 50,
        }),
        ..small_room()
    };
    let backend = run("challenge", room, |_| {}).await;
    assert!(!backend.seen_path("/letters/16").is_empty(), "the page without JavaScript never reached the mailbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_frozen_past_waiter_ttl_keeps_its_place_polls_at_once_on_resume_and_gets_in_in_its_turn() {
    let room = RoomConfig { waiter_ttl: Duration::from_secs(9), hold: Duration::from_secs(60), ..small_room() };
    let backend = run("stepaway", room, |_| {}).await;
    assert!(!backend.seen_path("/letters/11").is_empty(), "the mailbox never served the page first asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_rate_limited_pages_are_accessible() {
    // One place, taken by the script's first visitor; the browser's join is the second and
    // last one allowed, the next browser's is over the limit.
    run("closed_and_limited", RoomConfig { max_active: 1, ..small_room() }, |config| {
        config.limits.joins_per_minute = 1;
        config.limits.join_burst = 2;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_room_live_and_pauses_and_resumes_it_after_confirmation() {
    use usher::operators::{Operator, Role, token_sha256};
    const OPERATOR: &str = "console-operator-token-0123456789abcdef";
    const VIEWER: &str = "console-viewer-token-0123456789abcdefgh";
    let room = RoomConfig { max_active: 1, tick: Duration::from_millis(200), ..small_room() };
    let operator = |name: &str, role, token| Operator { name: name.into(), role, token_sha256: token_sha256(token) };
    run_script(
        "console.test.mjs",
        "console",
        room,
        |config| {
            config.admin.operators =
                vec![operator("otto", Role::Operator, OPERATOR), operator("vera", Role::Viewer, VIEWER)]
        },
        &[("OPERATOR_TOKEN", OPERATOR), ("VIEWER_TOKEN", VIEWER)],
    )
    .await;
}
