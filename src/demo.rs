//! The demo mailbox behind `usher demo`: a login page and an inbox, small enough to read,
//! real enough that a newcomer sees usher forward to something that looks like the mailbox.

use crate::config::{Config, ConfigErrors};
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, HOST, HeaderValue, LOCATION, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The demo's room: three places and an outflow of one visitor every five seconds, so the
/// queue shows at once and moves visibly.
const DEMO_CONFIG: &str = r#"
[[room]]
name = "mailbox"
paths = ["/"]
bypass = ["/healthz", "/favicon.ico"]
logout_path = "/logout"
max_active = 3
admit_per_minute = 12
session_idle = "30s"
session_max = "10m"
waiter_ttl = "20s"
claim_window = "30s"
"#;

/// The configuration of `usher demo`: usher on `listen`, in front of the mailbox.
pub fn config(mailbox: SocketAddr, listen: SocketAddr, admin: SocketAddr) -> Result<Config, ConfigErrors> {
    let mut config = Config::parse(DEMO_CONFIG)?;
    let loopback = Config::for_upstream(mailbox);
    config.upstream = loopback.upstream;
    config.listen.http = Some(listen);
    config.admin.listen = admin;
    Ok(config)
}

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

/// A simulated crowd so the demo's queue is busy: `size` visitors, each from its own
/// loopback address (127.0.0.2 onwards), who queue, log in, read for a while, log out, and
/// come back later. Runs until the task is dropped.
pub async fn crowd(usher: SocketAddr, size: u8) {
    let mut visitors = tokio::task::JoinSet::new();
    for i in 0..size {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i));
        visitors.spawn(async move {
            tokio::time::sleep(Duration::from_millis(400 * u64::from(i))).await;
            loop {
                // A failed visit (usher restarting, say) is simply tried again later.
                let _ = visit(usher, source).await;
                tokio::time::sleep(random_between(20, 60)).await;
            }
        });
    }
    while visitors.join_next().await.is_some() {}
}

fn random_between(low_secs: u64, high_secs: u64) -> Duration {
    let mut b = [0u8; 8];
    let _ = SystemRandom::new().fill(&mut b);
    let span = (high_secs - low_secs) * 1000;
    Duration::from_millis(low_secs * 1000 + u64::from_le_bytes(b) % span.max(1))
}

/// One visitor with a cookie jar on one keep-alive connection from `source`.
struct Browser {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    jar: BTreeMap<String, String>,
    host: HeaderValue,
}

impl Browser {
    async fn connect(usher: SocketAddr, source: IpAddr) -> std::io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(usher).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        let host = HeaderValue::from_str(&usher.to_string()).map_err(std::io::Error::other)?;
        Ok(Self { sender, jar: BTreeMap::new(), host })
    }

    /// Sends a request with the jar's cookies; returns the status and body.
    async fn send(&mut self, method: Method, path: &str, accept: &'static str) -> std::io::Result<(StatusCode, Bytes)> {
        let mut req =
            Request::builder().method(method).uri(path).header(HOST, self.host.clone()).header(ACCEPT, accept);
        if !self.jar.is_empty() {
            let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(COOKIE, cookies.join("; "));
        }
        let req = req.body(Empty::new()).map_err(std::io::Error::other)?;
        let response = self.sender.send_request(req).await.map_err(std::io::Error::other)?;
        for value in response.headers().get_all(SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let Some((name, rest)) = text.split_once('=') else { continue };
            let value = rest.split(';').next().unwrap_or("");
            if value.is_empty() || text.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_string(), value.to_string());
            }
        }
        let status = response.status();
        let body = response.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
        Ok((status, body))
    }
}

/// One visit: queue until admitted, log in, read a few letters, log out.
async fn visit(usher: SocketAddr, source: IpAddr) -> std::io::Result<()> {
    let mut browser = Browser::connect(usher, source).await?;
    browser.send(Method::GET, "/login", "text/html").await?;
    while !browser.jar.keys().any(|name| name.starts_with("usher_pass_")) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, body) = browser.send(Method::GET, "/.usher/status", "application/json").await?;
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if matches!(status["status"].as_str(), Some("expired" | "none")) {
            browser.send(Method::GET, "/login", "text/html").await?;
        }
    }
    browser.send(Method::POST, "/login", "text/html").await?;
    for letter in 1..=3 {
        tokio::time::sleep(random_between(3, 6)).await;
        browser.send(Method::GET, &format!("/letters/{letter}"), "text/html").await?;
    }
    browser.send(Method::POST, "/logout", "text/html").await?;
    Ok(())
}
