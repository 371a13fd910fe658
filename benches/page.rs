//! What a waiter costs usher per answer: the queue page rendered from its template (each
//! no-JavaScript refresh), the status JSON a polling page receives, and choosing the language.
//!
//! `cargo bench --bench page`

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{ACCEPT, ACCEPT_LANGUAGE, HeaderMap, HeaderValue};
use std::hint::black_box;
use usher::pages::i18n::Lang;
use usher::pages::{self, Answer, View};

fn page(c: &mut Criterion) {
    let view = View::samples().remove(0);
    c.bench_function("page/render_waiting_da", |b| b.iter(|| pages::page(black_box(&view), Lang::Da)));
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("da-DK,da;q=0.9,en-US;q=0.8,en;q=0.7"));
    c.bench_function("page/status_json", |b| b.iter(|| pages::status_json(black_box(&headers), &view, Vec::new())));
    let mut browser = HeaderMap::new();
    browser.insert(ACCEPT, HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"));
    browser.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("en-GB,en;q=0.9,da;q=0.8"));
    c.bench_function("page/answer_and_language", |b| b.iter(|| Answer::for_request(black_box(&browser))));
}

criterion_group!(benches, page);
criterion_main!(benches);
