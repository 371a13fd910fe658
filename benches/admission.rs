//! Hot paths of admission: what a request costs before it is forwarded or answered.
//!
//! `cargo bench --bench admission`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use usher::config::{Config, RoomMode};
use usher::identity::Identity;
use usher::room::tokens::{Pass, Sealer, Ticket};
use usher::secrets::Secrets;
use usher::store::memory::MemoryRoom;
use usher::store::{JoinOutcome, Pace, RoomLimits, TicketRef};

mod support;
use support::{T0, client};

fn limits(mode: RoomMode) -> RoomLimits {
    RoomLimits {
        max_active: 100_000_000,
        admit_per_minute: 30_000, // a reserve of 1000: each tick below grants exactly 1000
        session_max: Duration::from_secs(8 * 3600),
        waiter_ttl: Duration::from_secs(36_000),
        ..support::limits(mode)
    }
}

fn fill(room: &MemoryRoom, from: u64, n: u64, now: u64) {
    for i in from..from + n {
        room.join(client(i), now);
    }
}

fn secrets() -> Secrets {
    Secrets::new(vec![vec![42; 32]]).expect("secret")
}

fn client_key(c: &mut Criterion) {
    let identity = Identity::new(&[7; 32], &Config::parse("").expect("defaults").client);
    let v4: IpAddr = "203.0.113.77".parse().expect("ip");
    let v6: IpAddr = "2001:db8:1:2::77".parse().expect("ip");
    c.bench_function("client_key/ipv4", |b| b.iter(|| identity.key(black_box(v4), black_box(1_800_000_000))));
    c.bench_function("client_key/ipv6", |b| b.iter(|| identity.key(black_box(v6), black_box(1_800_000_000))));
}

fn pass(c: &mut Criterion) {
    let sealer = Sealer::new(&secrets());
    let room = MemoryRoom::new(limits(RoomMode::Auto), T0);
    let JoinOutcome::Admitted(session) = room.join(client(1), T0) else { panic!("idle room admits") };
    let cookie = sealer.seal_pass(&Pass {
        room: 5,
        generation: room.generation(),
        session: session.id,
        issued_secs: T0 / 1000,
        expires_secs: session.expires_ms / 1000,
    });
    c.bench_function("pass/verify", |b| b.iter(|| sealer.open_pass(black_box(&cookie), 5, T0 / 1000 + 1)));
    c.bench_function("pass/verify_and_touch", |b| {
        b.iter(|| {
            let pass = sealer.open_pass(black_box(&cookie), 5, T0 / 1000 + 1).expect("valid");
            room.touch(pass.session, T0 + 1000)
        })
    });
}

fn ticket(c: &mut Criterion) {
    let sealer = Sealer::new(&secrets());
    let room = MemoryRoom::new(limits(RoomMode::QueueAll), T0);
    let mut n = 0u64;
    c.bench_function("ticket/issue", |b| {
        b.iter(|| {
            n += 1;
            let JoinOutcome::Queued { ticket, .. } = room.join(client(n), T0) else { panic!("queue_all queues") };
            sealer.seal_ticket(&Ticket {
                room: 5,
                generation: ticket.generation,
                number: ticket.number,
                joined_ms: T0,
                renewed_secs: T0 / 1000,
                shown: None,
            })
        })
    });
}

fn status(c: &mut Criterion) {
    let room = MemoryRoom::new(limits(RoomMode::QueueAll), T0);
    fill(&room, 0, 1_000_000, T0);
    let mut t = 0u64;
    c.bench_function("status/poll_in_1M_line", |b| {
        b.iter(|| {
            t = (t + 7919) % 1_000_000;
            room.poll(black_box(TicketRef { generation: room.generation(), number: t }), T0 + 1000, Pace::FIXED)
        })
    });
}

fn admitter(c: &mut Criterion) {
    let room = MemoryRoom::new(limits(RoomMode::QueueAll), T0);
    fill(&room, 0, 1_000_000, T0);
    let mut next_client = 1_000_000u64;
    let mut now = T0;
    let mut group = c.benchmark_group("admitter");
    group.throughput(criterion::Throughput::Elements(1000));
    // Each measured tick grants 1000 from the head of a line of ~1,000,000; the same number
    // join at the tail outside the measurement, so the line keeps its length.
    group.bench_function("tick_grants_1000_of_1M", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                now += 2000;
                let started = Instant::now();
                let report = room.tick(now);
                spent += started.elapsed();
                assert_eq!(report.granted, 1000);
                fill(&room, next_client, 1000, now);
                next_client += 1000;
            }
            spent
        })
    });
    group.finish();
}

/// The opening of an event with 1,000,000 pre-queued visitors: the tick that draws their
/// order, and beside it the longest a status poll waited on the room while it ran (what the
/// request path feels at 09:00), printed once per measured opening.
fn opening(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let opens = T0 + 3_600_000;
    let mut group = c.benchmark_group("prequeue");
    group.sample_size(10);
    group.bench_function("open_1M", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let room = std::sync::Arc::new(MemoryRoom::new(
                    RoomLimits { opens_at_ms: Some(opens), ..limits(RoomMode::Auto) },
                    T0,
                ));
                fill(&room, 0, N, T0);
                let polling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
                let poller = {
                    let (room, polling) = (room.clone(), polling.clone());
                    std::thread::spawn(move || {
                        let (mut longest, mut t) = (Duration::ZERO, 0u64);
                        while polling.load(std::sync::atomic::Ordering::Relaxed) {
                            t = (t + 7919) % N;
                            let started = Instant::now();
                            room.poll(TicketRef { generation: room.generation(), number: t }, opens + 1, Pace::FIXED);
                            longest = longest.max(started.elapsed());
                        }
                        longest
                    })
                };
                std::thread::sleep(Duration::from_millis(20));
                let started = Instant::now();
                assert!(room.tick(opens).opened);
                spent += started.elapsed();
                polling.store(false, std::sync::atomic::Ordering::Relaxed);
                let longest = poller.join().expect("poller");
                println!("prequeue/open_1M: draw {:?}, longest poll during it {longest:?}", started.elapsed());
            }
            spent
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = client_key, pass, ticket, status, admitter, opening
}
criterion_main!(benches);
