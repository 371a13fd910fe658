//! What the canonical request view costs each request (DESIGN §1): the path's canonical
//! form (borrowed when already canonical, as nearly every request is), the authority, and
//! the whole view of a browser's request with cookies.
//!
//! `cargo bench --bench request`

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http::header::{ACCEPT, ACCEPT_LANGUAGE, COOKIE, HOST, USER_AGENT};
use std::hint::black_box;
use std::time::Duration;
use usher::identity::ClientAddr;
use usher::request::{Authority, RequestView, path};

fn canonical_path(c: &mut Criterion) {
    c.bench_function("request/path_canonical_already", |b| {
        b.iter(|| path::canonical(black_box("/inbox/messages/2024/letter-17")))
    });
    c.bench_function("request/path_with_dot_segments", |b| {
        b.iter(|| path::canonical(black_box("/static/%2e%2e/inbox/./messages/%7Euser")))
    });
    c.bench_function("request/authority", |b| b.iter(|| Authority::parse(black_box("post.example.dk"), false)));
}

fn whole_view(c: &mut Criterion) {
    let (head, ()) = Request::get("/inbox/messages")
        .header(HOST, "post.example.dk")
        .header(ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
        .header(ACCEPT_LANGUAGE, "da-DK,da;q=0.9,en;q=0.8")
        .header(USER_AGENT, "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X)")
        .header(COOKIE, "JSESSIONID=1A2B3C; usher_pass_citizens=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .body(())
        .expect("request")
        .into_parts();
    let client = ClientAddr { ip: [203, 0, 113, 9].into(), https: true };
    c.bench_function("request/view_of_an_admitted_browser", |b| {
        b.iter(|| RequestView::new(black_box(&head).clone(), client, false))
    });
    c.bench_function("request/clone_of_the_head_alone", |b| b.iter(|| black_box(&head).clone()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = canonical_path, whole_view
}
criterion_main!(benches);
