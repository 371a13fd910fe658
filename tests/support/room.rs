//! usher in-process with waiting rooms in front of the [`Upstream`], signing its cookies with
//! a known secret so that tests can forge them ([`super::cookies`]). (The binary is started
//! by [`super::process`].)

use super::upstream::Upstream;
use std::net::SocketAddr;
use std::time::Duration;
use usher::config::{Config, RoomConfig, RoomMode};
use usher::secrets::Secrets;
use usher::{Running, Server};

/// The byte every in-process usher's secret is made of, so tests can forge cookies.
pub const SECRET_BYTE: u8 = 0x5a;

/// The secret of every usher started by [`usher_with_rooms`].
pub fn secret() -> Vec<u8> {
    vec![SECRET_BYTE; 32]
}

/// A room guarding `/`, roomy and fast: change what a test is about.
pub fn room(name: &str) -> RoomConfig {
    RoomConfig {
        name: name.to_string(),
        hosts: Vec::new(),
        paths: vec!["/".to_string()],
        bypass: Vec::new(),
        max_active: 1000,
        admit_per_minute: 60_000,
        session_idle: Duration::from_secs(600),
        session_max: Duration::from_secs(8 * 3600),
        waiter_ttl: Duration::from_secs(30),
        claim_window: Duration::from_secs(30),
        hold: Duration::from_secs(600),
        mode: RoomMode::Auto,
        opens_at: None,
        logout_path: Some("/logout".to_string()),
        message: None,
        tick: Duration::from_millis(50),
        template: None,
        adaptive: None,
        no_show_bound: 0.3,
        challenge: None,
    }
}

/// usher in-process in front of `upstream`, with these rooms and the known secret.
pub fn usher_with_rooms(upstream: &Upstream, rooms: Vec<RoomConfig>) -> Running {
    usher_with_rooms_and(upstream, rooms, |_| {})
}

/// [`usher_with_rooms`], with a last change to the configuration.
pub fn usher_with_rooms_and(upstream: &Upstream, rooms: Vec<RoomConfig>, tweak: impl FnOnce(&mut Config)) -> Running {
    usher_with_rooms_at(upstream.addr, rooms, tweak)
}

/// [`usher_with_rooms_and`] in front of any upstream address (e.g. a
/// [`FaultyUpstream`](super::faulty::FaultyUpstream)).
pub fn usher_with_rooms_at(upstream: SocketAddr, rooms: Vec<RoomConfig>, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::for_upstream(upstream);
    config.listen.workers = 2;
    config.listen.shutdown_grace = Duration::from_secs(2);
    config.rooms = rooms;
    // These tests are about the room, not the rate limits: keep the limits out of the way.
    config.limits.requests_per_second = 1_000_000;
    config.limits.burst = 1_000_000;
    config.limits.joins_per_minute = 1_000_000;
    config.limits.join_burst = 1_000_000;
    tweak(&mut config);
    let secrets = Secrets::new(vec![secret()]).expect("a valid secret");
    Server::start_with_secrets(config, secrets).expect("usher starts")
}

/// Stops usher without blocking the test's runtime.
pub async fn stop_usher(running: Running) {
    tokio::task::spawn_blocking(move || running.stop()).await.expect("usher stops");
}
