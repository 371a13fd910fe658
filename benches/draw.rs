//! The draw at a million (issue 18): how long the opening takes when a million visitors
//! were pre-queued. Reports the seed's order alone, the memory store's opening tick, and,
//! when `redis-server` is on the PATH, the Redis store's: the lease holder moving a million
//! tickets to their drawn slots in batches (a real `redis-server` on a free loopback port,
//! without persistence, stopped at the end).
//!
//! `cargo bench --bench draw [-- TICKETS]` (default 1,000,000)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use usher::config::RoomMode;
use usher::store::{RoomLimits, RoomStore, draw, redis};

mod support;
use support::{T0, client as key};

const OPENS: u64 = T0 + 3_600_000;

fn limits() -> RoomLimits {
    RoomLimits { hold: Duration::from_secs(7200), opens_at_ms: Some(OPENS), ..support::limits(RoomMode::Auto) }
}

/// Pre-queues `n` visitors, then times the first tick after the opening (the draw).
async fn opening(store: &RoomStore, n: u64, joins_in_flight: usize) -> (Duration, Duration) {
    let started = Instant::now();
    let mut next = 0;
    while next < n {
        let mut batch = tokio::task::JoinSet::new();
        for i in next..(next + joins_in_flight as u64).min(n) {
            let store = store.clone();
            batch.spawn(async move { store.join(key(i), T0 + 1).await.map(|_| ()) });
        }
        next = (next + joins_in_flight as u64).min(n);
        for joined in batch.join_all().await {
            joined.expect("join");
        }
    }
    let joins = started.elapsed();
    let started = Instant::now();
    let report = store.tick(OPENS).await.expect("tick");
    assert!(report.opened, "the opening tick draws");
    (joins, started.elapsed())
}

struct RedisProcess(Child, u16);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<RedisProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(RedisProcess(child, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);

    let seed = draw::Seeds::new().next();
    let started = Instant::now();
    let order = draw::order(&seed, 0, n);
    println!("draw/order:  {n} tickets in the seed's order in {:>7.0} ms (one core)", ms(started.elapsed()));
    drop(order);

    let memory = RoomStore::memory(limits(), T0);
    let (joins, draw) = opening(&memory, n, 1).await;
    println!(
        "draw/memory: {n} pre-queued ({:.1} s to join), the opening tick drew them in {:>7.0} ms",
        joins.as_secs_f64(),
        ms(draw)
    );
    drop(memory);

    let Some(server) = start_redis() else {
        println!("draw/redis:  skipped (no redis-server on the PATH)");
        return;
    };
    let conn = redis::connect(&format!("redis://127.0.0.1:{}", server.1)).await.expect("connect");
    let room =
        redis::RedisRoom::new(conn, "draw", redis::node_id(), limits(), Duration::from_secs(60)).with_given_clock();
    room.seed().await.expect("limits");
    let store = RoomStore::redis(room);
    let (joins, draw) = opening(&store, n, 64).await;
    println!(
        "draw/redis:  {n} pre-queued ({:.1} s to join), the holder's opening tick drew them in {:>7.0} ms",
        joins.as_secs_f64(),
        ms(draw)
    );
    // Redis's own time in the scripts, to tell it from the round trips.
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{}", server.1)).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let stats: String = ::redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.expect("info");
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_evalsha") || l.starts_with("cmdstat_eval:")) {
        println!("draw/redis:  {line}");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
