//! The identify-and-limit step every request takes: resolve the client address (through
//! trusted proxies), derive its key, check the access lists and the request limit.
//!
//! `cargo bench --bench limits`

use criterion::{Criterion, criterion_group, criterion_main};
use governor::clock::QuantaClock;
use http::{HeaderMap, Method};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;
use usher::config::Config;
use usher::identity::{self, ClientKey, ClientSource, Identity};
use usher::limits::{Gate, LimiterMetrics};

fn gate(config: &Config) -> Gate {
    Gate::new(&config.client, &config.limits, QuantaClock::default(), |_| LimiterMetrics::unregistered())
}

fn config() -> Config {
    let mut config = Config::parse(
        "[client]\ntrusted_proxies = [\"10.0.0.0/8\"]\ndeny = [\"192.0.2.0/24\"]\nallow = [\"198.51.100.0/24\"]\n\
         [limits]\nrequests_per_second = 1000000\nburst = 1000000\n",
    )
    .expect("config");
    config.limits.max_tracked_clients = 10_000_000;
    config
}

fn limiter(c: &mut Criterion) {
    let config = config();
    let gate = gate(&config);
    let hot = ClientKey([7; 16]);
    c.bench_function("limit/hot_key", |b| b.iter(|| gate.check_request(black_box(&hot), None, &Method::GET, "/inbox")));
    let mut n = 0u64;
    c.bench_function("limit/cold_key", |b| {
        b.iter(|| {
            n += 1;
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&n.to_le_bytes());
            gate.check_request(&ClientKey(k), None, &Method::GET, "/inbox")
        })
    });
}

fn forwarded_for(c: &mut Criterion) {
    let config = config();
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().expect("value"));
    let peer: IpAddr = "10.0.0.1".parse().expect("ip");
    let source = ClientSource::new(&config.client);
    c.bench_function("identify/x_forwarded_for", |b| {
        b.iter(|| identity::client_addr(black_box(peer), false, &headers, &source))
    });
}

fn whole_step(c: &mut Criterion) {
    let config = config();
    let gate = gate(&config);
    let identity = Identity::new(&[9; 32], &config.client);
    let source = ClientSource::new(&config.client);
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", "203.0.113.9".parse().expect("value"));
    let peer: IpAddr = "10.0.0.1".parse().expect("ip");
    c.bench_function("identify_and_limit/through_a_trusted_proxy", |b| {
        b.iter(|| {
            let client = identity::client_addr(black_box(peer), false, &headers, &source);
            let _ = gate.access(client.ip);
            let key = identity.key(client.ip, 1_800_000_000);
            gate.check_request(&key, None, &Method::GET, "/inbox")
        })
    });
    let direct: IpAddr = "203.0.113.10".parse().expect("ip");
    let none = HeaderMap::new();
    c.bench_function("identify_and_limit/direct_client", |b| {
        b.iter(|| {
            let client = identity::client_addr(black_box(direct), false, &none, &source);
            let _ = gate.access(client.ip);
            let key = identity.key(client.ip, 1_800_000_000);
            gate.check_request(&key, None, &Method::GET, "/inbox")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = limiter, forwarded_for, whole_step
}
criterion_main!(benches);
