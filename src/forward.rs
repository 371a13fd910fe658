//! Forwarding to the upstream (DESIGN §7): HTTP/1.1 over a pool of keep-alive connections
//! per worker ([`crate::pool`]), header hygiene, timeouts, WebSocket/`Upgrade` pass-through,
//! and round robin over several addresses with passive health.
//!
//! Balancing happens when a connection is made, not per request: every pooled connection
//! is equivalent, and [`Addresses`] picks the address of a new one. An address that refuses
//! or times out is rested for `upstream.rest` and the next one is tried within the same
//! connect, so a dead address costs no failed request.
//!
//! Every place a peer could hold resources by going quiet is bounded: a streamed body in
//! either direction by `upstream.body_idle_timeout` ([`IdleBody`]), a tunnel by
//! `upstream.tunnel_idle_timeout`, the worker's upstream connections by
//! `upstream.max_connections_per_worker`. Only the `Upgrade` protocols the operator lists
//! become tunnels, and a tunnel holds its client connection's places ([`Lease`]).

use crate::body::Body;
use crate::canonical::authority::Authority;
use crate::config::{UpstreamAddress, UpstreamConfig};
use crate::connection::{Lease, Places};
use crate::error::ProxyError;
use crate::idle::{IdleBody, Stalled};
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::pool::{Checkin, Pool, Sender, UploadBody};
use crate::upstream_tls::{UpstreamProtocol, UpstreamTlsError};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Headers that describe one connection and must not cross the proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Client-supplied address headers; removed unless the operator opted in to forwarding.
const CLIENT_ADDRESS_HEADERS: [HeaderName; 3] =
    [HeaderName::from_static("x-forwarded-for"), header::FORWARDED, HeaderName::from_static("x-real-ip")];

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// What the request path knows about the client connection that forwarding needs.
#[derive(Debug, Clone, Copy)]
pub struct ClientConn {
    pub tls: bool,
    /// The client's address; only sent upstream when `forward_client_ip` is on.
    pub addr: IpAddr,
}

/// The upstream addresses and their health, shared by every worker.
#[derive(Debug)]
pub struct Addresses {
    addresses: Vec<UpstreamAddress>,
    /// Per address: milliseconds since `epoch` until which it is rested (0 = healthy).
    rested_until: Vec<AtomicU64>,
    next: AtomicUsize,
    epoch: Instant,
    connect_timeout: Duration,
    rest: Duration,
}

impl Addresses {
    pub fn new(config: &UpstreamConfig) -> Arc<Self> {
        Arc::new(Self {
            addresses: config.addresses.clone(),
            rested_until: config.addresses.iter().map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            connect_timeout: config.connect_timeout,
            rest: config.rest,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Connects to the next healthy address in turn, resting each one that fails.
    /// When every address is rested they are all tried anyway: a rested address is a
    /// guess about health, not a reason to refuse a request that might succeed.
    async fn connect(self: Arc<Self>) -> io::Result<TcpStream> {
        let n = self.addresses.len();
        let start = self.next.fetch_add(1, Relaxed);
        let now = self.now_ms();
        let order = (0..n).map(|i| (start + i) % n);
        let healthy: Vec<usize> = order.clone().filter(|&i| self.rested_until[i].load(Relaxed) <= now).collect();
        let candidates = if healthy.is_empty() { order.collect() } else { healthy };
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no upstream address configured");
        for i in candidates {
            let address = &self.addresses[i];
            match self.connect_one(address).await {
                Ok(stream) => {
                    self.rested_until[i].store(0, Relaxed);
                    return Ok(stream);
                }
                Err(e) => {
                    let until = self.now_ms().saturating_add(u64::try_from(self.rest.as_millis()).unwrap_or(u64::MAX));
                    self.rested_until[i].store(until, Relaxed);
                    tracing::warn!(upstream = %address, error = %e, rest = ?self.rest, "upstream address failed; resting it");
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    async fn connect_one(&self, address: &UpstreamAddress) -> io::Result<TcpStream> {
        let attempt = async {
            let stream = match address.host.parse::<IpAddr>() {
                Ok(ip) => TcpStream::connect(SocketAddr::new(ip, address.port)).await?,
                Err(_) => TcpStream::connect((address.host.as_str(), address.port)).await?,
            };
            stream.set_nodelay(true)?;
            Ok(stream)
        };
        tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))
    }
}

/// One worker's view of the upstream: its own connection pool (no lock shared with other
/// workers), over the shared address list.
pub struct Upstream {
    pool: Arc<Pool>,
    connector: Arc<Connector>,
    addresses: Arc<Addresses>,
    metrics: Arc<Metrics>,
    response_timeout: Duration,
    body_idle_timeout: Duration,
    tunnel_idle_timeout: Duration,
    /// `upstream.upgrade_protocols`, lowercase.
    upgrade_protocols: Vec<String>,
    forward_client_ip: bool,
    /// `Host` for a request that came without one (HTTP/1.0): the first upstream address, as
    /// a client configured with that address would send.
    default_host: Option<HeaderValue>,
}

/// Why forwarding failed, with the upstream-error kind it counts as (`None`: not the upstream's fault).
#[derive(Debug)]
pub struct ForwardError {
    pub kind: Option<UpstreamErrorKind>,
    pub error: ProxyError,
}

impl Upstream {
    pub fn new(
        config: &UpstreamConfig,
        addresses: Arc<Addresses>,
        connector: Arc<Connector>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let pool = Pool::new(
            config.pool_per_worker,
            config.idle_timeout,
            config.max_connections_per_worker,
            config.max_tunnels_per_worker,
        );
        let default_host = config.addresses.first().and_then(|a| HeaderValue::from_str(&a.to_string()).ok());
        Self {
            pool,
            connector,
            addresses,
            metrics,
            response_timeout: config.response_timeout,
            body_idle_timeout: config.body_idle_timeout,
            tunnel_idle_timeout: config.tunnel_idle_timeout,
            upgrade_protocols: config.upgrade_protocols.clone(),
            forward_client_ip: config.forward_client_ip,
            default_host,
        }
    }

    /// A new connection to the next healthy address; its driver runs on this worker and
    /// holds the connection's place under `upstream.max_connections_per_worker`. The place
    /// is taken before connecting, so connects in progress count too.
    async fn connect(&self) -> Result<Sender, Failure> {
        let place = self.pool.reserve().ok_or(Failure::Saturated)?;
        let stream = self.addresses.clone().connect().await.map_err(Failure::Connect)?;
        let socket = UpstreamSocket::new(stream, place, self.metrics.defences.upstream_connections.clone());
        let sender = match &self.connector.tls {
            None => handshake(socket, self.connector.protocol == UpstreamProtocol::Http2).await?,
            Some((tls, name)) => {
                let stream = tls.connect(name.clone(), socket).await.map_err(Failure::Tls)?;
                let h2 = match self.connector.protocol {
                    UpstreamProtocol::Http1 => false,
                    UpstreamProtocol::Http2 => true,
                    UpstreamProtocol::Auto => stream.get_ref().1.alpn_protocol() == Some(b"h2"),
                };
                handshake(stream, h2).await?
            }
        };
        if let Sender::Http2(shared) = &sender {
            self.pool.checkin(Sender::Http2(shared.clone()));
        }
        Ok(sender)
    }

    /// One exchange: on a pooled connection if one is open, else on a new one. A pooled
    /// connection the upstream closed meanwhile returns the request unsent: it is sent again
    /// on a new connection.
    async fn exchange(&self, req: Request<UploadBody>) -> Result<(Response<Incoming>, Sender), Failure> {
        let (mut sender, reused) = match self.pool.checkout().await {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        let req = self.for_sender(req, &sender);
        match sender.try_send_request(req).await {
            Ok(response) => Ok((response, sender)),
            Err(mut e) => match e.take_message() {
                Some(req) if reused => {
                    let mut fresh = self.connect().await?;
                    let req = self.for_sender(req, &fresh);
                    let response = fresh.try_send_request(req).await.map_err(|e| Failure::Exchange(e.into_error()))?;
                    Ok((response, fresh))
                }
                _ => Err(Failure::Exchange(e.into_error())),
            },
        }
    }

    /// An HTTP/2 request names its target in pseudo-headers: the scheme of the upstream hop
    /// and the authority the client asked for (the `Host` already set).
    fn for_sender(&self, mut req: Request<UploadBody>, sender: &Sender) -> Request<UploadBody> {
        if !sender.is_http2() || req.uri().scheme().is_some() {
            return req;
        }
        *req.version_mut() = Version::HTTP_2;
        let scheme = if self.connector.tls.is_some() { "https" } else { "http" };
        let authority = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
        if let Some(authority) = authority {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = http::Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build() {
                *req.uri_mut() = uri;
            }
        }
        req
    }

    /// Sends `req` upstream and returns the response head; bodies stream in both directions.
    /// `authority` is the request's canonical one, sent as `Host` (see [`crate::request`]).
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        conn: ClientConn,
        authority: Option<&Authority>,
    ) -> Result<Response<Body>, ForwardError> {
        let host = authority.map(Authority::header_value);
        // Carried only by requests that ask to upgrade (see `Lease`).
        let lease = req.extensions_mut().remove::<Lease>();
        let upgrade = prepare_request(&mut req, conn, self.forward_client_ip, host, self.default_host.as_ref());
        let upgrade = match upgrade {
            Some(protocol) if upgrade_allowed(&protocol, &self.upgrade_protocols) => Some(protocol),
            Some(_) => {
                // RFC 9110 §7.8: a server may ignore Upgrade; the upstream answers the plain request.
                self.metrics.defences.upgrades_refused.inc();
                req.headers_mut().remove(header::UPGRADE);
                req.headers_mut().remove(header::CONNECTION);
                None
            }
            None => None,
        };
        // A tunnel holds its upstream connection for its whole life: it needs a tunnel place
        // too, or a flood of WebSockets would take every connection from the requests.
        let tunnel_place = match &upgrade {
            Some(_) => match self.pool.reserve_tunnel() {
                Some(place) => Some(place),
                None => {
                    self.metrics.defences.tunnels_refused.inc();
                    return Err(ForwardError { kind: None, error: ProxyError::UpstreamSaturated });
                }
            },
            None => None,
        };
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let stalled = self.metrics.defences.stalled_client_body.clone();
        let req = req.map(|body| IdleBody::new(body, self.body_idle_timeout, stalled));

        let sent = tokio::time::timeout(self.response_timeout, self.exchange(req)).await;
        let (mut response, sender) = match sent {
            Ok(Ok(exchanged)) => exchanged,
            Ok(Err(Failure::Connect(e))) => {
                tracing::debug!(error = %e, "upstream connect failed");
                return Err(ForwardError {
                    kind: Some(UpstreamErrorKind::Connect),
                    error: ProxyError::UpstreamUnreachable,
                });
            }
            Ok(Err(Failure::Tls(e))) => {
                // The reason (say, an unknown issuer or a name mismatch) is what the operator
                // needs; the request is refused, never retried in plain text.
                tracing::warn!(reason = %e, "upstream TLS handshake failed");
                return Err(ForwardError {
                    kind: Some(UpstreamErrorKind::Connect),
                    error: ProxyError::UpstreamUnreachable,
                });
            }
            Ok(Err(Failure::Saturated)) => {
                self.metrics.defences.upstream_saturated.inc();
                return Err(ForwardError { kind: None, error: ProxyError::UpstreamSaturated });
            }
            Ok(Err(Failure::Exchange(e))) if e.is_user() && Stalled::caused(&e) => {
                tracing::debug!(error = %e, "client's request body stalled");
                return Err(ForwardError { kind: None, error: ProxyError::ClientStalled });
            }
            // The client's own request body failed (it hung up mid-upload): not the upstream's fault.
            Ok(Err(Failure::Exchange(e))) if e.is_user() => {
                tracing::debug!(error = %e, "client aborted its request body");
                return Err(ForwardError { kind: None, error: ProxyError::ClientAborted });
            }
            Ok(Err(Failure::Exchange(e))) => {
                tracing::debug!(error = %e, "upstream request failed");
                return Err(ForwardError {
                    kind: Some(UpstreamErrorKind::Protocol),
                    error: ProxyError::UpstreamProtocol,
                });
            }
            Err(_) => {
                return Err(ForwardError {
                    kind: Some(UpstreamErrorKind::Timeout),
                    error: ProxyError::UpstreamTimeout,
                });
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let (Some(protocol), Some(client_upgrade)) = (upgrade, client_upgrade) {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                let places = lease.and_then(|lease| lease.take());
                let tunnel = Tunnel {
                    idle_timeout: self.tunnel_idle_timeout,
                    metrics: self.metrics.clone(),
                    places,
                    tunnel_place,
                };
                tokio::spawn(tunnel.run(client_upgrade, upstream_upgrade));
                strip_hop_by_hop(response.headers_mut());
                let headers = response.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, protocol);
                // The connection now belongs to the tunnel.
                return Ok(response.map(|body| Body::Upstream(self.idle_body(body), None)));
            }
        }
        strip_hop_by_hop(response.headers_mut());
        response.headers_mut().append(header::VIA, HeaderValue::from_static("1.1 usher"));
        let checkin = Checkin::new(sender, self.pool.clone());
        // An empty body (HEAD, 204, 304, Content-Length: 0) may never be polled.
        if http_body::Body::is_end_stream(response.body()) {
            checkin.done();
            return Ok(response.map(|body| Body::Upstream(self.idle_body(body), None)));
        }
        Ok(response.map(|body| Body::Upstream(self.idle_body(body), Some(checkin))))
    }

    /// The upstream's response body, bounded by `upstream.body_idle_timeout`.
    fn idle_body(&self, body: Incoming) -> IdleBody<Incoming> {
        IdleBody::new(body, self.body_idle_timeout, self.metrics.defences.stalled_upstream_body.clone())
    }
}

/// An upstream socket with its place under `upstream.max_connections_per_worker`: the place
/// is the socket's, so it is freed when the socket closes, whether the pooled connection
/// closed it or the tunnel it became (an upgrade moves the socket into the tunnel).
struct UpstreamSocket {
    stream: TcpStream,
    _place: tokio::sync::OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl UpstreamSocket {
    fn new(stream: TcpStream, place: tokio::sync::OwnedSemaphorePermit, open: prometheus::IntGauge) -> Self {
        open.inc();
        Self { stream, _place: place, open }
    }
}

impl Drop for UpstreamSocket {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for UpstreamSocket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamSocket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Why an exchange failed.
enum Failure {
    /// The worker has `upstream.max_connections_per_worker` open and none idle.
    Saturated,
    Connect(io::Error),
    /// The TLS handshake failed: the certificate did not verify, or the upstream refused ours.
    Tls(io::Error),
    Exchange(hyper::Error),
}

/// How connections to the upstream are made, shared by all workers: plain TCP, or TLS with
/// the name to verify, and the HTTP version to speak.
pub struct Connector {
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    protocol: UpstreamProtocol,
}

impl Connector {
    /// Loads the CA bundle and client certificate once, at start-up.
    pub fn new(config: &UpstreamConfig) -> Result<Arc<Self>, UpstreamTlsError> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let client = crate::upstream_tls::client_config(tls, config.protocol)?;
                Some((tokio_rustls::TlsConnector::from(client), tls.server_name.clone()))
            }
        };
        Ok(Arc::new(Self { tls, protocol: config.protocol }))
    }
}

/// The HTTP handshake on an open connection; its driver task runs on this worker.
async fn handshake<I>(io: I, h2: bool) -> Result<Sender, Failure>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, connection) =
            http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(io)).await.map_err(Failure::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        return Ok(Sender::Http2(sender));
    }
    let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(io)).await.map_err(Failure::Exchange)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Sender::Http1(sender))
}

/// An upgraded connection (WebSocket) between a client and the upstream.
///
/// It holds its client connection's [`Places`]: its place under `listen.max_connections` and
/// its client's count, so tunnels cannot outnumber the caps, and a hold on the worker's
/// graceful drain, so shutdown waits for it up to `listen.shutdown_grace` and then closes it
/// with the worker's runtime; and its place under `upstream.max_tunnels_per_worker`, so
/// tunnels never hold every upstream connection. With no bytes either way for `idle_timeout`,
/// it is closed.
struct Tunnel {
    idle_timeout: Duration,
    metrics: Arc<Metrics>,
    places: Option<Places>,
    /// Its place under `upstream.max_tunnels_per_worker`.
    tunnel_place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Tunnel {
    /// Copies bytes both ways until either side closes or the tunnel goes idle.
    async fn run(self, client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
        let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
            return;
        };
        let open = self.metrics.defences.tunnels.clone();
        open.inc();
        // Counted down however the tunnel ends, also when the runtime drops it at shutdown.
        let _open = scopeguard(move || open.dec());
        let moved = Arc::new(LastMove::default());
        let mut client = Moving { io: TokioIo::new(client), last: moved.clone() };
        let mut upstream = Moving { io: TokioIo::new(upstream), last: moved.clone() };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = copied {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            () = moved.idle_for(self.idle_timeout) => {
                self.metrics.defences.closed_tunnel_idle.inc();
                tracing::debug!(timeout = ?self.idle_timeout, "tunnel idle; closed");
            }
        }
        drop(self.places);
        drop(self.tunnel_place);
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// When a tunnel last moved a byte, in milliseconds since it opened; both of its sides write it.
struct LastMove {
    opened: Instant,
    ms: AtomicU64,
}

impl Default for LastMove {
    fn default() -> Self {
        Self { opened: Instant::now(), ms: AtomicU64::new(0) }
    }
}

impl LastMove {
    fn touch(&self) {
        self.ms.store(u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Resolves once no byte has moved for `timeout`. One timer, re-armed only when it fires,
    /// rather than one per read or write.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = self.opened + Duration::from_millis(self.ms.load(Relaxed)) + timeout;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// One side of a tunnel that records when bytes move through it.
struct Moving<T> {
    io: T,
    last: Arc<LastMove>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Moving<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Moving<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether every protocol an `Upgrade` header offers (`websocket`, `h2c`, `foo/2`) is in
/// `allowed` (lowercase names, versions ignored).
fn upgrade_allowed(upgrade: &HeaderValue, allowed: &[String]) -> bool {
    let Ok(text) = upgrade.to_str() else { return false };
    let mut offered = text.split(',').map(str::trim).filter(|p| !p.is_empty()).peekable();
    offered.peek().is_some()
        && offered.all(|p| {
            let name = p.split('/').next().unwrap_or(p);
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
}

/// Rewrites a canonical client request (origin-form target) into the upstream request, in
/// place, with `host` as `Host` and `X-Forwarded-Host`. Returns the `Upgrade` protocol when
/// the client asked to switch protocols (HTTP/1.1 only).
fn prepare_request<B>(
    req: &mut Request<B>,
    conn: ClientConn,
    forward_client_ip: bool,
    host: Option<&HeaderValue>,
    default_host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    let upgrade = requested_upgrade(req);
    *req.version_mut() = Version::HTTP_11;

    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    // Whatever the client claimed is not ours to vouch for: removed, then (opt-in) replaced
    // by the address usher believes.
    if headers.keys().any(|name| CLIENT_ADDRESS_HEADERS.contains(name)) {
        for name in &CLIENT_ADDRESS_HEADERS {
            headers.remove(name);
        }
    }
    if forward_client_ip {
        if let Ok(value) = HeaderValue::from_str(&conn.addr.to_string()) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if conn.tls { "https" } else { "http" }));
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            headers.insert(header::HOST, host.clone());
        }
        // HTTP/1.1 upstream requires a Host; an HTTP/1.0 client may not have sent one.
        None => {
            if let Some(host) = default_host {
                headers.insert(header::HOST, host.clone());
            }
        }
    }
    headers.append(header::VIA, HeaderValue::from_static(if conn.tls { "1.1 usher (tls)" } else { "1.1 usher" }));
    upgrade
}

/// The protocol of an HTTP/1.1 `Connection: upgrade` request, if any.
fn requested_upgrade<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let headers = req.headers();
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade")));
    if wants { headers.get(header::UPGRADE).cloned() } else { None }
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names present is cheaper than a hash
    // lookup per hop-by-hop name.
    if !headers.keys().any(|name| *name == header::UPGRADE || HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret-Hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-end-to-end"));
    }

    #[test]
    fn only_listed_upgrade_protocols_are_allowed() {
        let allowed = vec!["websocket".to_string()];
        for (offer, ok) in [
            ("websocket", true),
            ("WebSocket", true),
            ("h2c", false),
            ("websocket, h2c", false),
            ("websocket/13", true),
            ("", false),
            (",", false),
        ] {
            assert_eq!(upgrade_allowed(&HeaderValue::from_static(offer), &allowed), ok, "{offer:?}");
        }
    }
}
