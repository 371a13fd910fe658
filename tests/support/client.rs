//! Clients that talk to usher the ways real clients do: HTTP/1.1, HTTP/2 with prior
//! knowledge (h2c), HTTPS with ALPN, and raw bytes for malformed input. Each request opens
//! its own connection, so tests never depend on pooling.

use super::TempDir;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use usher::config::TlsFiles;

use super::upstream::Echo;

/// The request body type of every helper.
pub type ReqBody = BoxBody<Bytes, Infallible>;

/// No body.
pub fn empty() -> ReqBody {
    Empty::new().boxed()
}

/// A small body held in memory.
pub fn full(body: impl Into<Bytes>) -> ReqBody {
    Full::new(body.into()).boxed()
}

/// `GET path` with no body.
pub fn get(path: &str) -> Request<ReqBody> {
    Request::get(path).body(empty()).expect("valid request")
}

/// A complete response, body read to the end: what every client helper here (and the
/// waiting-room [`Visitor`](super::visitor::Visitor)) returns.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The reply made of a response's head and its whole body.
    pub fn new(head: http::response::Parts, body: Bytes) -> Self {
        Self { status: head.status, version: head.version, headers: head.headers, body }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// The upstream's echo of the request (panics if this is not an echo answer).
    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, StatusCode::OK, "expected the upstream's echo, got {}: {}", self.status, self.text());
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not an echo ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the upstream answered this (not usher): every answer of the test upstream
    /// carries `x-upstream`.
    pub fn forwarded(&self) -> bool {
        self.header("x-upstream").is_some()
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The `Set-Cookie` value for cookie `name` (or, for `usher_pass` / `usher_ticket`, of
    /// any room's cookie of that kind), if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split_once('=').is_some_and(|(n, _)| super::cookies::is_kind(n, name)))
    }
}

/// Reads a streamed response to its end.
pub async fn collect_reply(response: Response<Incoming>) -> Reply {
    let (head, body) = response.into_parts();
    Reply::new(head, body.collect().await.expect("read the response body").to_bytes())
}

/// A TCP connection to `addr`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A TCP connection to `addr` from the loopback address `source` (e.g. 127.0.0.77), so a
/// test can tell the client's address apart from every address usher itself uses.
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("client socket");
    socket.bind(SocketAddr::new(source, 0)).unwrap_or_else(|e| panic!("bind the client to {source}: {e}"));
    socket.connect(addr).await.unwrap_or_else(|e| panic!("connect from {source} to {addr}: {e}"))
}

/// Sends one HTTP/1.1 request on `io`; the response body is still streaming. Adds a `Host`
/// header (`authority`) when the request has none.
pub async fn try_http1_on<I>(
    io: I,
    mut req: Request<ReqBody>,
    authority: &str,
) -> Result<Response<Incoming>, hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !req.headers().contains_key(header::HOST) {
        req.headers_mut().insert(header::HOST, HeaderValue::from_str(authority).expect("authority is a header value"));
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, ReqBody>(TokioIo::new(io)).await?;
    tokio::spawn(conn.with_upgrades());
    sender.send_request(req).await
}

/// [`try_http1_on`] for requests that must get an answer.
pub async fn http1_stream_on<I>(io: I, req: Request<ReqBody>, authority: &str) -> Response<Incoming>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    try_http1_on(io, req, authority).await.expect("send the HTTP/1.1 request")
}

/// One HTTP/1.1 request that may fail (the server may close the connection without answering).
pub async fn try_http1(addr: SocketAddr, req: Request<ReqBody>) -> Result<Reply, hyper::Error> {
    let response = try_http1_on(connect(addr).await, req, &addr.to_string()).await?;
    let (head, body) = response.into_parts();
    Ok(Reply::new(head, body.collect().await?.to_bytes()))
}

/// One HTTP/1.1 request on its own connection to `addr`; the URI is origin-form (`/path`).
pub async fn http1(addr: SocketAddr, req: Request<ReqBody>) -> Reply {
    collect_reply(http1_stream_on(connect(addr).await, req, &addr.to_string()).await).await
}

/// [`http1`] from the loopback address `source`.
pub async fn http1_from(source: IpAddr, addr: SocketAddr, req: Request<ReqBody>) -> Reply {
    collect_reply(http1_stream_on(connect_from(source, addr).await, req, &addr.to_string()).await).await
}

/// One HTTP/1.1 request whose response body the caller reads as it streams.
pub async fn http1_stream(addr: SocketAddr, req: Request<ReqBody>) -> Response<Incoming> {
    http1_stream_on(connect(addr).await, req, &addr.to_string()).await
}

/// Gives an origin-form URI the scheme and authority that HTTP/2 needs (`:scheme`, `:authority`).
fn absolute(req: &mut Request<ReqBody>, scheme: Scheme, authority: &str) {
    if req.uri().authority().is_some() {
        return;
    }
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(Authority::try_from(authority).expect("valid authority"));
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some("/".parse().expect("valid path"));
    }
    *req.uri_mut() = Uri::from_parts(parts).expect("valid absolute URI");
}

/// An HTTP/2 connection on `io` (h2c with prior knowledge, or h2 after ALPN).
pub async fn h2_sender<I>(io: I) -> hyper::client::conn::http2::SendRequest<ReqBody>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http2::handshake::<_, _, ReqBody>(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

/// Sends one request on an HTTP/2 connection and reads the whole answer.
pub async fn h2_send(
    sender: &mut hyper::client::conn::http2::SendRequest<ReqBody>,
    mut req: Request<ReqBody>,
    scheme: Scheme,
    authority: &str,
) -> Reply {
    absolute(&mut req, scheme, authority);
    sender.ready().await.expect("HTTP/2 connection ready");
    collect_reply(sender.send_request(req).await.expect("send the HTTP/2 request")).await
}

/// One request over h2c (HTTP/2 with prior knowledge, no TLS) on its own connection.
pub async fn h2c(addr: SocketAddr, req: Request<ReqBody>) -> Reply {
    let mut sender = h2_sender(connect(addr).await).await;
    h2_send(&mut sender, req, Scheme::HTTP, &addr.to_string()).await
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
pub struct TestCert {
    pub files: TlsFiles,
    pub der: CertificateDer<'static>,
    _dir: TempDir,
}

/// Makes a fresh certificate with `rcgen`.
pub fn test_cert() -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("generate a test certificate");
    let dir = TempDir::new("tls");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert.pem");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key.pem");
    TestCert { files: TlsFiles { cert, key }, der: certified.cert.der().clone(), _dir: dir }
}

/// A TLS connection to `addr` that trusts only `cert` and offers `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    cert: &TestCert,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).expect("trust the test certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, connect(addr).await)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// The protocol that ALPN settled on, if any.
pub fn negotiated(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Option<String> {
    stream.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
}

/// The status code of a raw HTTP/1.x answer, e.g. 400 from "HTTP/1.1 400 Bad Request".
pub fn raw_status(answer: &str) -> Option<u16> {
    let mut words = answer.lines().next()?.split_whitespace();
    let version = words.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    words.next()?.parse().ok()
}

/// Writes `bytes` to a fresh connection and reads until the server closes it (at most 10 s).
/// A reset after the answer counts as a close: a server may reset a connection it stops
/// reading from, and the answer is what the test is about.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_exchange_on(connect(addr).await, bytes).await
}

/// [`raw_exchange`] on a connection the caller made (e.g. with [`connect_from`]).
pub async fn raw_exchange_on(mut stream: TcpStream, bytes: &[u8]) -> String {
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), read).await.is_err() {
        panic!("the server neither answered nor closed within 10 s");
    }
    String::from_utf8_lossy(&answer).into_owned()
}
