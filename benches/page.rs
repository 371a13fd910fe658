//! What a waiter costs usher per answer: the queue page rendered from its template (each
//! no-JavaScript refresh), the status JSON a polling page receives, and choosing the language.
//!
//! `cargo bench --bench page`

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http::header::{ACCEPT, ACCEPT_LANGUAGE, HOST};
use std::hint::black_box;
use usher::identity::ClientAddr;
use usher::pages::i18n::Lang;
use usher::pages::{self, View};
use usher::render::{self, Answer};
use usher::request::RequestView;

/// The view of a request with these headers (the status path, from a browser on loopback).
fn request_view(headers: &[(http::header::HeaderName, &str)]) -> RequestView {
    let mut req = Request::get("/.usher/status").header(HOST, "post.example.dk");
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    let (head, ()) = req.body(()).expect("request").into_parts();
    let client = ClientAddr { ip: [127, 0, 0, 1].into(), https: false };
    RequestView::new(head, client, false).expect("a canonical request")
}

fn page(c: &mut Criterion) {
    let view = View::samples().remove(0);
    c.bench_function("page/render_waiting_da", |b| b.iter(|| pages::page(black_box(&view), Lang::Da)));
    let app = request_view(&[(ACCEPT, "application/json"), (ACCEPT_LANGUAGE, "da-DK,da;q=0.9,en-US;q=0.8,en;q=0.7")]);
    c.bench_function("page/status_json", |b| {
        b.iter(|| render::render(Answer::Status(black_box(&view).clone()), &app, Vec::new()))
    });
    let browser = request_view(&[
        (ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8"),
        (ACCEPT_LANGUAGE, "en-GB,en;q=0.9,da;q=0.8"),
    ]);
    c.bench_function("page/answer_and_language", |b| b.iter(|| (black_box(&browser).accepts, browser.lang())));
}

criterion_group!(benches, page);
criterion_main!(benches);
