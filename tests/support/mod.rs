//! Shared parts of every integration test, one tree for the proxy and the waiting-room tests:
//!
//! - [`upstream`]: the one real upstream, which records what reaches it (echo or mailbox);
//! - [`faulty`]: an upstream that misbehaves on purpose (slow, half-open, resetting);
//! - [`client`]: clients for every protocol usher serves, raw bytes included, and the one
//!   [`Reply`] type they all return;
//! - [`visitor`]: waiting-room visitors, each from its own loopback address with its own
//!   cookie jar;
//! - [`room`]: usher started in-process with rooms and a known secret;
//! - [`cookies`]: usher's cookies, decoded and forged in the byte layout of DESIGN §4;
//! - [`admin`]: the admin listener: `/metrics` read and summed, admin API calls;
//! - [`process`]: the real `usher` binary as a child process;
//! - [`redis_server`]: a real `redis-server`; [`redis_sentinel`] and [`redis_cluster`]: a
//!   master, replica and sentinels, or a cluster of three masters, of real processes;
//! - [`spike`]: spikes of clients over several nodes, and the order they were admitted in;
//! - [`data`]: large bodies made and checked on the fly.
//!
//! Every server a test starts listens on port 0 and reports the port it got: usher
//! in-process ([`usher::Running`]), the binary (its `listening (...)` log lines) and the
//! upstreams ([`Upstream::addr`], [`FaultyUpstream::addr`]). Only `redis-server` cannot (see [`redis_server`]).
//!
//! Each test binary uses only some of these helpers.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod client;
pub mod cookies;
pub mod data;
pub mod faulty;
pub mod process;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;
pub mod room;
pub mod spike;
pub mod upstream;
pub mod visitor;

pub use admin::*;
pub use client::*;
pub use cookies::*;
pub use data::*;
pub use faulty::*;
pub use process::*;
pub use redis_cluster::*;
pub use redis_sentinel::*;
pub use redis_server::*;
pub use room::*;
pub use spike::*;
pub use upstream::*;
pub use visitor::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use usher::config::Config;
use usher::{Running, Server};

/// A loopback address that usher never uses itself, for the client side of privacy tests:
/// if it shows up anywhere, it came from the client's connection.
pub const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));

/// Starts usher in-process; every listener is on an ephemeral port, already bound on return.
pub fn start_usher(config: Config) -> Running {
    Server::start(config).expect("usher starts")
}

/// The usual test setup: usher in front of `upstream` with the default configuration.
pub fn usher_for(upstream: &Upstream) -> Running {
    start_usher(Config::for_upstream(upstream.addr))
}

/// The http address of a started usher.
pub fn http_addr(running: &Running) -> SocketAddr {
    running.http_addr.expect("usher listens for http")
}

/// A loopback address nobody listens on, for tests about an unreachable upstream or Redis:
/// connecting to it is refused at once.
///
/// The port is bound (so the kernel gives it to nobody else) but never listened on (so a
/// connection attempt is answered with a reset), and it stays so for as long as this value
/// lives: keep it until the test is done. Releasing it early would let any server started
/// meanwhile, by this test or by another one running in parallel, be given the port.
pub struct ClosedAddr {
    pub addr: SocketAddr,
    _bound: socket2::Socket,
}

/// See [`ClosedAddr`].
pub fn closed_addr() -> ClosedAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind port 0");
    let addr = socket.local_addr().expect("local address").as_socket().expect("an IP address");
    ClosedAddr { addr, _bound: socket }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Unix time in seconds.
pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("usher-test-{}-{what}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
