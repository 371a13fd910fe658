//! Shared parts of the waiting-room tests (admission, tokens, privacy): a recording upstream,
//! simulated visitors that each connect from their own loopback address and keep their own
//! cookie jar, usher started in-process with a known secret (the binary is started by
//! `support::process`), metrics reading, and the cookie byte layout of DESIGN §4 for decoding
//! and forging.
//!
//! Each test binary uses only some of these helpers.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpSocket;
use usher::config::{Config, RoomConfig, RoomMode};
use usher::secrets::Secrets;
use usher::{Running, Server};

pub const PASS: &str = "usher_pass";
pub const TICKET: &str = "usher_ticket";

/// The byte every in-process usher's secret is made of, so tests can forge cookies.
pub const SECRET_BYTE: u8 = 0x5a;

/// The secret of every in-process usher started here.
pub fn secret() -> Vec<u8> {
    vec![SECRET_BYTE; 32]
}

// ---------------------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------------------

/// The head of one request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header, names lowercase, values lossily decoded.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The path with its query, as the client asked for it.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// A real HTTP/1.1 upstream on 127.0.0.1:0: answers 200 with the request target as body and
/// `x-backend: 1`, and records every request head it sees.
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Backend {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the backend");
        let addr = listener.local_addr().expect("backend address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            let seen = Seen {
                                method: req.method().to_string(),
                                path: req.uri().path().to_string(),
                                query: req.uri().query().map(str::to_string),
                                headers: req
                                    .headers()
                                    .iter()
                                    .map(|(n, v)| {
                                        (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                                    })
                                    .collect(),
                            };
                            let body = seen.target();
                            record.lock().expect("backend record").push(seen);
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            response.headers_mut().insert("x-backend", HeaderValue::from_static("1"));
                            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, accept }
    }

    /// Every request head seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("backend record").clone()
    }

    /// The requests seen for `path`.
    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

// ---------------------------------------------------------------------------------------
// usher
// ---------------------------------------------------------------------------------------

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
    }
}

/// usher in-process in front of `backend`, with these rooms and the known secret.
pub fn start(backend: &Backend, rooms: Vec<RoomConfig>) -> Running {
    start_with(backend, rooms, |_| {})
}

/// [`start`], with a last change to the configuration.
pub fn start_with(backend: &Backend, rooms: Vec<RoomConfig>, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config::for_upstream(backend.addr);
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
pub async fn stop(running: Running) {
    tokio::task::spawn_blocking(move || running.stop()).await.expect("usher stops");
}

// ---------------------------------------------------------------------------------------
// Visitors
// ---------------------------------------------------------------------------------------

/// A loopback address of its own for visitor `n` of the test family `family`:
/// 127.family.(1 + n / 250).(1 + n % 250).
pub fn ip(family: u8, n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, family, 1 + (n / 250) as u8, 1 + (n % 250) as u8))
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The `Set-Cookie` value for cookie `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| c.starts_with(&format!("{name}=")))
    }

    /// Whether the upstream answered this (not usher).
    pub fn forwarded(&self) -> bool {
        self.header("x-backend") == Some("1")
    }
}

/// The value of a `Set-Cookie` line (`name=VALUE; ...`).
pub fn cookie_value(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().unwrap_or_default();
    pair.split_once('=').map_or("", |(_, v)| v)
}

/// Whether a `Set-Cookie` line deletes its cookie.
pub fn is_deletion(set_cookie: &str) -> bool {
    set_cookie.split(';').any(|a| a.trim().eq_ignore_ascii_case("max-age=0")) || cookie_value(set_cookie).is_empty()
}

/// Keeps a reply's cookies in `jar` as a browser would (a deletion removes the cookie);
/// returns the `(name, value)` pairs it set.
pub fn keep_cookies(jar: &mut BTreeMap<String, String>, reply: &Reply) -> Vec<(String, String)> {
    let mut set = Vec::new();
    for set_cookie in reply.set_cookies() {
        let pair = set_cookie.split(';').next().unwrap_or_default();
        if let Some((name, value)) = pair.split_once('=') {
            if is_deletion(&set_cookie) {
                jar.remove(name);
            } else {
                jar.insert(name.to_string(), value.to_string());
                set.push((name.to_string(), value.to_string()));
            }
        }
    }
    set
}

/// The `Cookie` header a browser would send with `jar`, if it holds any cookie.
pub fn cookie_header(jar: &BTreeMap<String, String>) -> Option<String> {
    (!jar.is_empty()).then(|| jar.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "))
}

/// One simulated browser or app: its own source address, its own keep-alive connection and
/// its own cookie jar.
pub struct Visitor {
    pub ip: IpAddr,
    pub usher: SocketAddr,
    /// Cookies sent with every request (usher's and any others), by name.
    pub jar: BTreeMap<String, String>,
    /// Every `Set-Cookie` value ever received, in order.
    pub received: Vec<String>,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Visitor {
    pub fn new(ip: IpAddr, usher: SocketAddr) -> Self {
        Self { ip, usher, jar: BTreeMap::new(), received: Vec::new(), sender: None }
    }

    /// Opens the connection now (so a burst of visitors can be released at one moment).
    pub async fn connect(&mut self) {
        let socket = TcpSocket::new_v4().expect("client socket");
        socket.bind(SocketAddr::new(self.ip, 0)).unwrap_or_else(|e| panic!("bind the client to {}: {e}", self.ip));
        let stream = socket
            .connect(self.usher)
            .await
            .unwrap_or_else(|e| panic!("connect from {} to {}: {e}", self.ip, self.usher));
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        self.sender = Some(sender);
    }

    /// The jar's cookie, if any.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(String::as_str)
    }

    /// `GET path` with an `Accept` header (if given) and the jar's cookies.
    pub async fn get(&mut self, path: &str, accept: Option<&str>) -> Reply {
        self.request(path, accept.map(|a| ("accept", a)).into_iter().collect()).await
    }

    /// `GET path` as a browser would ask for a page.
    pub async fn page(&mut self, path: &str) -> Reply {
        self.get(path, Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")).await
    }

    /// `GET path` as an app wanting JSON.
    pub async fn api(&mut self, path: &str) -> Reply {
        self.get(path, Some("application/json")).await
    }

    /// `GET /.usher/status`: the JSON of the visitor's place.
    pub async fn status(&mut self) -> serde_json::Value {
        let reply = self.api("/.usher/status").await;
        assert_eq!(reply.status, StatusCode::OK, "status endpoint: {}", reply.text());
        reply.json()
    }

    /// `GET path` with extra headers; retried on a fresh connection if the kept one closed.
    pub async fn request(&mut self, path: &str, headers: Vec<(&str, &str)>) -> Reply {
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut builder = Request::get(path).header(header::HOST, self.usher.to_string());
            for (name, value) in &headers {
                builder = builder.header(*name, *value);
            }
            if let Some(cookies) = cookie_header(&self.jar) {
                builder = builder.header(header::COOKIE, cookies);
            }
            let req = builder.body(Empty::new()).expect("valid request");
            let ready = match self.sender.as_mut() {
                Some(sender) => sender.ready().await.is_ok(),
                None => false,
            };
            if !ready {
                self.connect().await;
            }
            let sender = self.sender.as_mut().expect("connected");
            let response = match sender.send_request(req).await {
                Ok(response) => response,
                Err(e) => {
                    last_error = e.to_string();
                    self.sender = None;
                    continue;
                }
            };
            let (parts, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    last_error = e.to_string();
                    self.sender = None;
                    continue;
                }
            };
            let reply = Reply { status: parts.status, headers: parts.headers, body };
            keep_cookies(&mut self.jar, &reply);
            self.received.extend(reply.set_cookies());
            return reply;
        }
        panic!("GET {path} from {} failed three times: {last_error}", self.ip);
    }

    /// The number on the visitor's ticket cookie.
    pub fn ticket_number(&self) -> Option<u64> {
        self.cookie(TICKET).map(|t| decode_ticket(t).number)
    }

    /// Closes the connection (the visitor goes away).
    pub fn disconnect(&mut self) {
        self.sender = None;
    }
}

/// A raw HTTP/1.1 exchange from `source`: writes `bytes`, reads until closed (at most 5 s).
pub async fn raw_exchange_from(source: IpAddr, usher: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = TcpSocket::new_v4().expect("client socket");
    socket.bind(SocketAddr::new(source, 0)).expect("bind the client");
    let mut stream = socket.connect(usher).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    String::from_utf8_lossy(&answer).into_owned()
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// `GET /metrics` from the admin listener, on a fresh connection.
pub async fn metrics_text(admin: SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(admin).await.expect("connect to the admin listener");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("admin handshake");
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header(header::HOST, admin.to_string())
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let response = sender.send_request(req).await.expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.expect("metrics body").to_bytes();
    String::from_utf8(body.to_vec()).expect("metrics are text")
}

/// The sum of every sample of `name` whose labels include all of `labels` (0 if none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let matches = labels.iter().all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// One metric of one room, read now.
pub async fn room_metric(admin: SocketAddr, name: &str, room: &str) -> f64 {
    metric(&metrics_text(admin).await, name, &[("room", room)])
}

/// How many cookies were rejected for `reason`.
pub fn rejected(text: &str, cookie: &str, reason: &str) -> f64 {
    metric(text, "usher_token_rejected_total", &[("cookie", cookie), ("reason", reason)])
}

/// An admin API call (`Authorization: Bearer token` when given), on a fresh connection.
pub async fn admin_call(admin: SocketAddr, method: http::Method, path: &str, token: Option<&str>, body: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(admin).await.expect("connect to the admin listener");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("admin handshake");
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header(header::HOST, admin.to_string());
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).expect("valid request");
    let response = sender.send_request(req).await.expect("admin call");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("admin body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
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

// ---------------------------------------------------------------------------------------
// Cookies: the byte layout of DESIGN §4 (src/room/tokens.rs), written out independently
// ---------------------------------------------------------------------------------------

/// A decoded `usher_ticket` (signature not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketBytes {
    pub room: u64,
    pub number: u64,
    pub issued_secs: u64,
}

/// A decoded `usher_pass` (signature not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassBytes {
    pub room: u64,
    pub session: u128,
    pub issued_secs: u64,
    pub expires_secs: u64,
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

/// base64url without padding, as usher's cookies are.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap_or_else(|e| panic!("cookie {text:?} is not base64url: {e}"))
}

/// version 1, 'T', room, number, issued-at; then a 16-byte tag.
pub fn decode_ticket(cookie: &str) -> TicketBytes {
    let raw = unb64(cookie);
    assert_eq!(raw.len(), 26 + 16, "ticket length");
    assert_eq!((raw[0], raw[1]), (1, b'T'), "ticket version and kind");
    TicketBytes { room: be64(&raw[2..10]), number: be64(&raw[10..18]), issued_secs: be64(&raw[18..26]) }
}

/// version 1, 'P', room, session id, issued-at, expires-at; then a 16-byte tag.
pub fn decode_pass(cookie: &str) -> PassBytes {
    let raw = unb64(cookie);
    assert_eq!(raw.len(), 42 + 16, "pass length");
    assert_eq!((raw[0], raw[1]), (1, b'P'), "pass version and kind");
    PassBytes {
        room: be64(&raw[2..10]),
        session: u128::from_be_bytes(raw[10..26].try_into().expect("16 bytes")),
        issued_secs: be64(&raw[26..34]),
        expires_secs: be64(&raw[34..42]),
    }
}

/// A room's id inside cookies: the first 64 bits of SHA-256 of its name.
pub fn room_id(name: &str) -> u64 {
    be64(&ring::digest::digest(&ring::digest::SHA256, name.as_bytes()).as_ref()[..8])
}

/// `base64url(payload ‖ first 16 bytes of HMAC-SHA256(secret, payload))`.
pub fn seal(secret: &[u8], payload: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, payload);
    let mut sealed = payload.to_vec();
    sealed.extend_from_slice(&tag.as_ref()[..16]);
    b64(&sealed)
}

pub fn ticket_payload(t: &TicketBytes) -> Vec<u8> {
    let mut p = vec![1, b'T'];
    p.extend_from_slice(&t.room.to_be_bytes());
    p.extend_from_slice(&t.number.to_be_bytes());
    p.extend_from_slice(&t.issued_secs.to_be_bytes());
    p
}

pub fn pass_payload(p: &PassBytes) -> Vec<u8> {
    let mut out = vec![1, b'P'];
    out.extend_from_slice(&p.room.to_be_bytes());
    out.extend_from_slice(&p.session.to_be_bytes());
    out.extend_from_slice(&p.issued_secs.to_be_bytes());
    out.extend_from_slice(&p.expires_secs.to_be_bytes());
    out
}

pub fn forge_ticket(secret: &[u8], t: &TicketBytes) -> String {
    seal(secret, &ticket_payload(t))
}

pub fn forge_pass(secret: &[u8], p: &PassBytes) -> String {
    seal(secret, &pass_payload(p))
}

/// `n` bytes from the system's secure random source.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("random bytes");
    bytes
}
