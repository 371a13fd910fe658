//! The demo mailbox behind `usher demo`: a login page and an inbox, small enough to read,
//! real enough that a newcomer sees usher forward to something that looks like the mailbox.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HeaderValue, LOCATION, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;

const STYLE: &str = "body{font:1.05rem/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}\
header{border-bottom:3px solid #0b5394;margin-bottom:1.5rem}h1{font-size:1.6rem}\
li{padding:.4rem 0;border-bottom:1px solid #ddd;list-style:none}ul{padding:0}\
button{font:inherit;padding:.5rem 1.2rem;background:#0b5394;color:#fff;border:0;border-radius:4px}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Demo Mailbox</title><style>{STYLE}</style>\
         <header><p><strong>Demo Mailbox</strong> — a stand-in for the national digital mailbox</p></header>\
         <main><h1>{title}</h1>{body}</main></html>"
    )
}

fn html(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

fn redirect(to: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(LOCATION, HeaderValue::from_static(to));
    r
}

fn signed_in(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(';').any(|c| c.trim() == "demo_session=1")))
}

/// Answers one request to the demo mailbox.
pub fn mailbox(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => redirect("/login"),
        (&Method::GET, "/login") => html(
            StatusCode::OK,
            page(
                "Log in",
                "<p>You are through the queue. Log in to read your post.</p>\
                 <form method=\"post\" action=\"/login\"><button>Log in as the demo citizen</button></form>",
            ),
        ),
        (&Method::POST, "/login") => {
            let mut r = redirect("/inbox");
            r.headers_mut()
                .insert(SET_COOKIE, HeaderValue::from_static("demo_session=1; Path=/; HttpOnly; SameSite=Lax"));
            r
        }
        (&Method::GET, "/inbox") if signed_in(req) => html(
            StatusCode::OK,
            page(
                "Inbox",
                "<ul><li><a href=\"/letters/1\">Your annual tax statement is ready</a> — Tax Agency</li>\
                 <li><a href=\"/letters/2\">Appointment reminder</a> — Regional Hospital</li>\
                 <li><a href=\"/letters/3\">Change of address confirmed</a> — Civil Registry</li></ul>\
                 <form method=\"post\" action=\"/logout\"><button>Log out</button></form>",
            ),
        ),
        (&Method::GET, "/inbox") => redirect("/login"),
        (&Method::GET, path) if path.starts_with("/letters/") && signed_in(req) => html(
            StatusCode::OK,
            page(
                "Letter",
                "<p>This is a demo letter. Nothing personal is stored anywhere.</p><p><a href=\"/inbox\">Back to the inbox</a></p>",
            ),
        ),
        (&Method::POST, "/logout") => {
            let mut r = redirect("/login");
            r.headers_mut().insert(SET_COOKIE, HeaderValue::from_static("demo_session=; Path=/; Max-Age=0"));
            r
        }
        (&Method::GET, "/healthz") => html(StatusCode::OK, "ok".into()),
        _ => html(StatusCode::NOT_FOUND, page("Not found", "<p><a href=\"/inbox\">Go to the inbox</a></p>")),
    }
}

/// Serves the demo mailbox on `listener` until the task is dropped.
pub async fn serve_mailbox(listener: tokio::net::TcpListener) {
    let builder = std::sync::Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(mailbox(&req)) });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
