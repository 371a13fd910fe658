//! Simulated visitors of a waiting room: each connects from its own loopback address
//! (127.x.y.z), keeps its connection alive and keeps its own cookie jar, as a browser or an
//! app would.

use super::client::{Reply, ReqBody, connect_from, empty, full};
use super::cookies::{TICKET, decode_ticket};
use http::Request;
use http::header;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A loopback address of its own for visitor `n` of the test family `family`:
/// 127.family.(1 + n / 250).(1 + n % 250).
pub fn ip(family: u8, n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, family, 1 + (n / 250) as u8, 1 + (n % 250) as u8))
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
    sender: Option<SendRequest<ReqBody>>,
}

impl Visitor {
    pub fn new(ip: IpAddr, usher: SocketAddr) -> Self {
        Self { ip, usher, jar: BTreeMap::new(), received: Vec::new(), sender: None }
    }

    /// Opens the connection now (so a burst of visitors can be released at one moment).
    pub async fn connect(&mut self) {
        let stream = connect_from(self.ip, self.usher).await;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        self.sender = Some(sender);
    }

    /// The jar's cookie `name`, if any; `usher_pass` and `usher_ticket` find the cookie of
    /// that kind whatever its room.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.iter().find(|(n, _)| super::cookies::is_kind(n, name)).map(|(_, v)| v.as_str())
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
        assert_eq!(reply.status, http::StatusCode::OK, "status endpoint: {}", reply.text());
        reply.json()
    }

    /// `GET path` with extra headers; retried on a fresh connection if the kept one closed.
    pub async fn request(&mut self, path: &str, headers: Vec<(&str, &str)>) -> Reply {
        self.send(http::Method::GET, path, headers, None).await
    }

    /// `POST path` with a JSON body, as a page's script answers usher.
    pub async fn post_json(&mut self, path: &str, body: &str) -> Reply {
        let headers = vec![("accept", "application/json"), ("content-type", "application/json")];
        self.send(http::Method::POST, path, headers, Some(body)).await
    }

    async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        headers: Vec<(&str, &str)>,
        body: Option<&str>,
    ) -> Reply {
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut builder =
                Request::builder().method(method.clone()).uri(path).header(header::HOST, self.usher.to_string());
            for (name, value) in &headers {
                builder = builder.header(*name, *value);
            }
            if let Some(cookies) = cookie_header(&self.jar) {
                builder = builder.header(header::COOKIE, cookies);
            }
            let req = builder.body(body.map_or_else(empty, |b| full(b.to_string()))).expect("valid request");
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
            let (head, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    last_error = e.to_string();
                    self.sender = None;
                    continue;
                }
            };
            let reply = Reply::new(head, body);
            keep_cookies(&mut self.jar, &reply);
            self.received.extend(reply.set_cookies());
            return reply;
        }
        panic!("{method} {path} from {} failed three times: {last_error}", self.ip);
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
