//! One visitor's HTTP client: a cookie jar, a fixed loopback source address and one
//! keep-alive HTTP/1.1 connection, reopened when the server has closed it, as a browser does.
//! Or, behind a [`Gateway`], the same visitor reaching usher through a load balancer's
//! shared keep-alive connections, named by `X-Forwarded-For`.

use bytes::Bytes;
use http::header::{ACCEPT, COOKIE, HOST, HeaderValue, SET_COOKIE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

type Sender = SendRequest<Empty<Bytes>>;

/// A load balancer in front of usher nodes: `slots` keep-alive HTTP/1.1 connections from
/// 127.0.0.1, shared by every visitor (slot `i` goes to target `i mod targets`), each request
/// naming its visitor's address in `X-Forwarded-For`, as a proxy that usher trusts does. This
/// is how a million browsers reach usher in practice (a TLS-terminating balancer keeps a few
/// connections to each node), and it leaves connection costs, measured on their own by
/// `connections`, out of a run about the line.
pub struct Gateway {
    targets: Vec<SocketAddr>,
    slots: Vec<Mutex<Option<Sender>>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("targets", &self.targets).field("slots", &self.slots.len()).finish()
    }
}

impl Gateway {
    /// `slots` connections (at least one per target), opened on first use.
    pub fn new(targets: Vec<SocketAddr>, slots: usize) -> Self {
        let slots = slots.max(targets.len()).max(1);
        Self { targets, slots: (0..slots).map(|_| Mutex::new(None)).collect() }
    }
}

/// How a browser reaches usher.
enum Path {
    /// Its own connection from its own source address.
    Direct { target: SocketAddr, connection: Option<Sender> },
    /// Slot `slot` of a shared gateway.
    Gateway { gateway: Arc<Gateway>, slot: usize, forwarded: HeaderValue },
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer in time")]
    Timeout,
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Build(#[from] http::Error),
}

/// An answer, with the cookies it set already in the jar.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// From just before the request was written to the end of the body.
    pub latency: Duration,
    /// When the request was handed to the connection.
    pub sent: Instant,
    /// When the body had arrived.
    pub received: Instant,
}

/// A browser tab's worth of HTTP: one origin, one connection at a time, a cookie jar.
pub struct Browser {
    path: Path,
    source: IpAddr,
    host: HeaderValue,
    timeout: Duration,
    jar: Vec<(String, String)>,
    /// Connections opened, the first included (a gateway's are counted by the visitor whose
    /// request opened them).
    pub connects: u32,
}

impl Browser {
    pub fn new(target: SocketAddr, source: IpAddr, host: HeaderValue, timeout: Duration) -> Self {
        let path = Path::Direct { target, connection: None };
        Self { path, source, host, timeout, jar: Vec::new(), connects: 0 }
    }

    /// A browser at `source` behind `gateway`, on the slot `slot` (modulo the slots).
    pub fn behind(gateway: Arc<Gateway>, slot: usize, source: IpAddr, host: HeaderValue, timeout: Duration) -> Self {
        let slot = slot % gateway.slots.len();
        // An IP address's text is always a valid header value.
        let forwarded = HeaderValue::from_str(&source.to_string()).unwrap_or(HeaderValue::from_static("0.0.0.0"));
        Self { path: Path::Gateway { gateway, slot, forwarded }, source, host, timeout, jar: Vec::new(), connects: 0 }
    }

    /// The value of a cookie in the jar.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of the first cookie of one of usher's kinds (`usher_pass`, `usher_ticket`),
    /// whatever room it is for: usher names them `<kind>_<room>`.
    pub fn usher_cookie(&self, kind: &str) -> Option<&str> {
        self.jar
            .iter()
            .find(|(n, _)| n.strip_prefix(kind).is_some_and(|room| room.starts_with('_')))
            .map(|(_, v)| v.as_str())
    }

    /// Closes the connection (a browser drops idle ones); the next request opens a new one.
    /// Behind a gateway there is nothing of the visitor's own to close.
    pub fn close(&mut self) {
        if let Path::Direct { connection, .. } = &mut self.path {
            *connection = None;
        }
    }

    /// A connection to `target`, from `source` when given (else the kernel's choice).
    async fn connect(&mut self, target: SocketAddr, source: Option<IpAddr>) -> Result<Sender, RequestError> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(RequestError::Connect)?;
        if let Some(source) = source {
            socket.bind(SocketAddr::new(source, 0)).map_err(RequestError::Connect)?;
        }
        socket.set_nodelay(true).map_err(RequestError::Connect)?;
        let stream = socket.connect(target).await.map_err(RequestError::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        self.connects += 1;
        Ok(sender)
    }

    /// `GET path` with the jar's cookies. A request on a kept-alive connection that the
    /// server had closed meanwhile is sent once more on a new connection. A request that
    /// times out leaves no connection behind (its answer may still be coming on it).
    pub async fn get(&mut self, path: &str, accept: &'static str) -> Result<Answer, RequestError> {
        match &self.path {
            Path::Direct { target, .. } => {
                let target = *target;
                let held = match &mut self.path {
                    Path::Direct { connection, .. } => connection.take(),
                    Path::Gateway { .. } => None,
                };
                let (timeout, source) = (self.timeout, self.source);
                let exchange = self.exchange(held, target, Some(source), None, path, accept);
                let (result, kept) = match tokio::time::timeout(timeout, exchange).await {
                    Ok(Ok((answer, sender))) => (Ok(answer), Some(sender)),
                    Ok(Err(e)) => (Err(e), None),
                    Err(_) => (Err(RequestError::Timeout), None),
                };
                if let Path::Direct { connection, .. } = &mut self.path {
                    *connection = kept;
                }
                result
            }
            Path::Gateway { gateway, slot, forwarded } => {
                let (gateway, slot, forwarded) = (gateway.clone(), *slot, forwarded.clone());
                let target = gateway.targets[slot % gateway.targets.len()];
                let timeout = self.timeout;
                let asked = async {
                    let mut held = gateway.slots[slot].lock().await;
                    let exchange = self.exchange(held.take(), target, None, Some(forwarded), path, accept).await;
                    exchange.map(|(answer, sender)| {
                        *held = Some(sender);
                        answer
                    })
                };
                tokio::time::timeout(timeout, asked).await.unwrap_or(Err(RequestError::Timeout))
            }
        }
    }

    /// One request on `held` (or a new connection), the connection handed back for reuse.
    async fn exchange(
        &mut self,
        held: Option<Sender>,
        target: SocketAddr,
        source: Option<IpAddr>,
        forwarded: Option<HeaderValue>,
        path: &str,
        accept: &'static str,
    ) -> Result<(Answer, Sender), RequestError> {
        let reused = match held {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let was_reused = reused.is_some();
        let mut sender = match reused {
            Some(sender) => sender,
            None => self.connect(target, source).await?,
        };
        let sent = Instant::now();
        let response = match sender.send_request(self.request(path, accept, forwarded.clone())?).await {
            Ok(response) => response,
            // The server closed the idle connection as the request left: nothing was
            // answered, so asking again on a fresh connection is what a browser does.
            Err(e) if was_reused && (e.is_canceled() || e.is_incomplete_message() || e.is_closed()) => {
                sender = self.connect(target, source).await?;
                sender.send_request(self.request(path, accept, forwarded)?).await?
            }
            Err(e) => return Err(e.into()),
        };
        let status = response.status();
        for value in response.headers().get_all(SET_COOKIE) {
            if let Ok(text) = value.to_str() {
                self.store_cookie(text);
            }
        }
        let body = response.into_body().collect().await?.to_bytes();
        let received = Instant::now();
        Ok((Answer { status, body, latency: received - sent, sent, received }, sender))
    }

    fn request(
        &self,
        path: &str,
        accept: &'static str,
        forwarded: Option<HeaderValue>,
    ) -> Result<Request<Empty<Bytes>>, http::Error> {
        let mut builder =
            Request::get(path).header(HOST, self.host.clone()).header(ACCEPT, HeaderValue::from_static(accept));
        if let Some(client) = forwarded {
            builder = builder.header("x-forwarded-for", client);
        }
        if !self.jar.is_empty() {
            let mut line = String::with_capacity(256);
            for (name, value) in &self.jar {
                if !line.is_empty() {
                    line.push_str("; ");
                }
                line.push_str(name);
                line.push('=');
                line.push_str(value);
            }
            builder = builder.header(COOKIE, line);
        }
        builder.body(Empty::new())
    }

    /// Applies one `Set-Cookie`: an empty value or `Max-Age=0` removes the cookie.
    fn store_cookie(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|kv| kv.split_once('=')) else { return };
        let (name, value) = (name.trim(), value.trim());
        let removed = value.is_empty() || parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
        self.jar.retain(|(n, _)| n != name);
        if !removed {
            self.jar.push((name.to_string(), value.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn browser() -> Browser {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        Browser::new(addr, addr.ip(), HeaderValue::from_static("x"), Duration::from_secs(1))
    }

    #[test]
    fn the_jar_keeps_set_cookies_and_forgets_cleared_ones() {
        let mut b = browser();
        b.store_cookie("usher_ticket=abc; Path=/; HttpOnly; Max-Age=86400");
        b.store_cookie("site=1");
        assert_eq!(b.cookie("usher_ticket"), Some("abc"));
        b.store_cookie("usher_ticket=; Path=/; Max-Age=0");
        assert_eq!(b.cookie("usher_ticket"), None);
        b.store_cookie("site=2; Max-Age=0");
        assert_eq!(b.cookie("site"), None);
        b.store_cookie("no-equals-sign");
        assert!(b.jar.is_empty());
    }
}
