//! Client-facing listeners and the per-core worker shape.
//!
//! Each worker thread runs its own current-thread runtime with its own `SO_REUSEPORT`
//! listener socket per address and its own upstream pool, as nginx's workers do: the kernel
//! spreads connections over workers and nothing on the hot path is shared between cores
//! except the connection caps (a semaphore, the per-client count) and the metrics.
//!
//! One more worker, the refused worker ([`serve_sidelined`]), accepts nothing: it serves at
//! idle CPU priority the new connections of clients refused in the last seconds, which the
//! other workers hand it at accept.
//!
//! A connection is closed when it starts no request within `header_read_timeout`, when it
//! has had no request in flight for `idle_timeout`, and at once when its client key already
//! holds `max_connections_per_client` connections.

use crate::body::Body;
use crate::config::ListenConfig;
use crate::connection::{Activity, ClientConnections, ClientSlot, InFlight, Lease, Places};
use crate::forward::ClientConn;
use crate::frame_guard::FrameGuard;
use crate::identity::{ClientKey, KeyCache};
use crate::limits::Access;
use crate::metrics::Metrics;
use crate::proxy::Worker;
use crate::refused_lane::{Refused, Why};
use crate::shutdown::Shutdown;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listening socket, not yet attached to a runtime.
pub struct BoundSocket {
    pub listener: std::net::TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Binds `count` sockets to `addr` with `SO_REUSEPORT`, so that the kernel spreads
/// connections over the workers.
///
/// Port 0 (tests, a quick local run) is bound once, without `SO_REUSEPORT`, and every worker
/// gets a handle to that one socket: a socket with `SO_REUSEPORT` set before `bind(0)` may be
/// given a port that another process of the same user is listening on with it, and the
/// kernel then spreads *that* process's connections over both. Seen in CI: two tests each
/// got the first request of their visitors answered by another test's usher.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let ephemeral = addr.port() == 0;
    let listen = |at: SocketAddr, reuse_port: bool| -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(reuse_port)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&at.into())?;
        socket.listen(4096)?;
        Ok(socket.into())
    };
    let first = listen(addr, !ephemeral)?;
    let bound = first.local_addr()?;
    let mut sockets = Vec::with_capacity(count.max(1));
    for _ in 1..count.max(1) {
        sockets.push(if ephemeral { first.try_clone()? } else { listen(bound, true)? });
    }
    sockets.insert(0, first);
    Ok((bound, sockets))
}

/// HTTP/2 limits, each set explicitly rather than left to library defaults that may change
/// (DESIGN §1; issue 14). `max_header_list_size` comes from `listen.max_header_bytes`.
pub mod http2 {
    /// Streams one connection may have open at once: RFC 9113 §6.5.2 asks for at least 100,
    /// and a browser loading the queue page needs a handful.
    pub const MAX_CONCURRENT_STREAMS: u32 = 100;
    /// Streams the client reset before usher accepted them, held at once; more is the rapid
    /// reset attack (CVE-2023-44487) and ends the connection with ENHANCE_YOUR_CALM.
    pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
    /// Streams usher had to reset because the client broke the protocol; a client past this is
    /// hostile and gets a GOAWAY (ENHANCE_YOUR_CALM).
    pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;
    /// The largest frame usher accepts: the protocol's minimum. With the header list size
    /// (16 KiB by default) it also bounds the CONTINUATION frames one header block may use:
    /// h2 allows max(5, 1.25 × header list size / frame size), so 5 by default (80 at the
    /// largest `max_header_bytes`, 1 MiB); a longer chain is the CONTINUATION flood and a
    /// connection error. h2 offers no separate setting for it.
    pub const MAX_FRAME_SIZE: u32 = 16_384;
    /// A connection whose client answers no PING within this long is dead and closed.
    pub const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
    pub const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
}

/// Everything a worker's connections share.
pub struct ConnectionSettings {
    pub builder: auto::Builder<TokioExecutor>,
    pub connections: Arc<Semaphore>,
    /// Open connections per client key (`listen.max_connections_per_client`), across workers.
    pub per_client: Arc<ClientConnections>,
    pub metrics: Arc<Metrics>,
    /// Time a new connection has to start its first request (`listen.header_read_timeout`).
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (`listen.idle_timeout`).
    pub idle_timeout: Duration,
    /// Every connection starts with a PROXY protocol v2 header (`listen.proxy_protocol`).
    pub proxy_protocol: bool,
    /// Peers whose PROXY header is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ConnectionSettings {
    pub fn new(
        config: &ListenConfig,
        trusted_proxies: Vec<ipnet::IpNet>,
        connections: Arc<Semaphore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            .max_frame_size(http2::MAX_FRAME_SIZE)
            .max_concurrent_streams(http2::MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(http2::MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(http2::MAX_LOCAL_ERROR_RESET_STREAMS)
            .keep_alive_interval(Some(http2::KEEP_ALIVE_INTERVAL))
            .keep_alive_timeout(http2::KEEP_ALIVE_TIMEOUT);
        Self {
            builder,
            connections,
            per_client: ClientConnections::new(config.max_connections, config.max_connections_per_client),
            metrics,
            first_request_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            proxy_protocol: config.proxy_protocol,
            trusted_proxies,
        }
    }

    /// The first-request and idle timeouts of a worker's `n`-th accepted connection
    /// ([`timeout_share`]). Counted per worker: a counter shared by the workers would be one
    /// more contended write per accept, and each worker's sequence spreads as evenly.
    fn timeouts(&self, n: u64) -> Timeouts {
        let share = timeout_share(n);
        Timeouts { first_request: self.first_request_timeout.mul_f64(share), idle: self.idle_timeout.mul_f64(share) }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Counts a new connection from `client` against its key's cap; `Err` when the key holds
    /// its cap already. Not counted: a trusted proxy that forwards in HTTP headers (its
    /// connections carry many clients; their requests are limited by the real address) and
    /// the allow list. The key is remembered in `keys` for the connection's first request.
    fn count_client(
        &self,
        worker: &Worker,
        client: IpAddr,
        keys: &KeyCache,
    ) -> Result<Option<(ClientSlot, ClientKey)>, ClientOverCap> {
        if !self.proxy_protocol && self.trusted(client) {
            return Ok(None);
        }
        if matches!(worker.gate.load().access(client), Access::Allowed) {
            return Ok(None);
        }
        let keys = worker.identity.key_cached(keys, client, crate::clock::now_ms() / 1000);
        let slot = self.per_client.open(&keys.client).ok_or(ClientOverCap)?;
        Ok(Some((slot, keys.client)))
    }
}

/// A client key already holds `listen.max_connections_per_client` connections.
struct ClientOverCap;

/// Connections a worker accepts in a row before it lets the requests ready meanwhile run.
const ACCEPT_BATCH: u64 = 8;

/// How much of the configured timeouts a connection may lose: its share is in `(0.75, 1]`.
const TIMEOUT_SPREAD: f64 = 0.25;

/// The share of the configured timeouts the `n`-th accepted connection gets. Connections
/// opened in one burst (10,000 slowloris sockets in a second) would otherwise all time out in
/// the same instant, and closing them at once holds the worker for a third of a second (30 µs
/// of kernel work each), with every real request behind it. Spread over the last quarter of
/// the timeout, the same closes cost a few percent of a core. The share comes from the golden
/// ratio's sequence (n·φ mod 1, in 64-bit fixed point), which spreads any run of consecutive
/// connections evenly, and from a counter the client cannot steer; it only shortens, so the
/// configured timeout stays the bound.
fn timeout_share(n: u64) -> f64 {
    const PHI_FRACTION: u64 = 0x9E37_79B9_7F4A_7C15;
    let place = (n.wrapping_mul(PHI_FRACTION) >> 11) as f64 / (1u64 << 53) as f64;
    1.0 - TIMEOUT_SPREAD * place
}

/// One connection's timeouts (see [`ConnectionSettings::timeouts`]).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    first_request: Duration,
    idle: Duration,
}

/// Accepts on one socket until shutdown, serving each connection with `worker`.
pub async fn accept_loop(
    socket: BoundSocket,
    worker: Arc<Worker>,
    settings: Arc<ConnectionSettings>,
    graceful: &GracefulShutdown,
    mut shutdown: Shutdown,
) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(socket.listener)?;
    let tls = socket.tls;
    // Connections this worker has accepted: the batches below, and each one's timeouts.
    let mut accepted = 0u64;
    loop {
        // A burst of new connections (a slowloris opens 10,000 in a second) must not stand
        // in front of the requests of connections already open: each connection's first
        // poll costs 10-20 µs, and tokio lets one task accept 128 before it yields, so the
        // connections of a whole batch ran before any waiting request. Yielding after every
        // ACCEPT_BATCH lets the requests ready meanwhile (and the I/O driver) go first, at the
        // cost of one task switch per batch.
        if accepted % ACCEPT_BATCH == 0 && accepted > 0 {
            tokio::task::yield_now().await;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: back off
                    // briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => return Ok(()),
        };
        // The permit is taken after accepting: a worker that waited for one before accepting
        // would hold a free place while the next connection sits on another worker's socket.
        // Over the cap this worker stops accepting until a place frees up, so at most one
        // connection per worker waits here and the rest wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = settings.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return Ok(()),
            },
            () = shutdown.wait() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        // A client that stops reading keeps a request in flight for ever: hyper stops
        // polling the response body while the socket is full, so neither the body's nor the
        // connection's idle timeout runs. The kernel sees it: a window that stays shut (or
        // data unacknowledged) for idle_timeout aborts the connection (Linux 5.11 and later
        // count zero-window time too). A slow client that still takes bytes is never cut.
        let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(settings.idle_timeout));
        let conn = ClientConn { tls: tls.is_some(), addr: peer.ip() };
        let timeouts = settings.timeouts(accepted);
        accepted += 1;
        let drain = graceful.watcher();
        let (worker, settings, tls, shutdown) = (worker.clone(), settings.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            settings.metrics.connections.inc();
            let mut stream = stream;
            let mut conn = conn;
            let keys = KeyCache::default();
            // The client's key when the connection is its own (not a trusted proxy's, not
            // allow-listed): what the refused lane remembers it by.
            let mut own = None;
            let places = async {
                if settings.proxy_protocol {
                    conn.addr = proxy_header(&mut stream, peer.ip(), &settings).await?;
                }
                // Counted before the TLS handshake, so a client over its cap costs no handshake.
                match settings.count_client(&worker, conn.addr, &keys) {
                    Ok(counted) => {
                        own = counted.as_ref().map(|(_, key)| *key);
                        Some(Places { permit, client: counted.map(|(slot, _)| slot), drain })
                    }
                    Err(ClientOverCap) => {
                        settings.metrics.defences.refused_per_client.inc();
                        tracing::debug!("client over listen.max_connections_per_client; connection closed");
                        None
                    }
                }
            };
            if let Some(places) = places.await {
                let accepted = Accepted { stream, conn, keys, own, places, timeouts, tls, shutdown };
                // A client refused lately is served by the refused worker, before its
                // connection costs this worker anything more (a TLS handshake, reading and
                // parsing its request); when that worker cannot take it, it waits its turn here.
                // Handed over, the connection is counted off where it ends, not here.
                let accepted = if own
                    .is_some_and(|key| worker.refused_lane.recent.remembers(&key, crate::clock::now_ms() / 1000))
                {
                    let Some(kept) = sideline(&worker, accepted) else { return };
                    worker.refused_lane.wait_turn(Why::Client).await;
                    kept
                } else {
                    accepted
                };
                accepted.serve(worker, &settings).await;
            }
            settings.metrics.connections.dec();
        });
    }
}

/// A connection accepted, counted and placed, not yet served; `S` is its socket (a standard
/// one while it passes between runtimes).
pub struct Accepted<S = TcpStream> {
    stream: S,
    conn: ClientConn,
    keys: KeyCache,
    own: Option<ClientKey>,
    places: Places,
    timeouts: Timeouts,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
}

/// A connection handed to the refused worker.
pub type Sidelined = Accepted<std::net::TcpStream>;

/// Connections that may wait for the refused worker; past it a worker keeps a connection and
/// serves it itself after its refused lane.
pub const SIDELINE_QUEUE: usize = 1024;

impl<S> Accepted<S> {
    /// The same connection over another form of its socket; on `Err` it is closed.
    fn try_map<T>(self, into: impl FnOnce(S) -> io::Result<T>) -> io::Result<Accepted<T>> {
        let Accepted { stream, conn, keys, own, places, timeouts, tls, shutdown } = self;
        Ok(Accepted { stream: into(stream)?, conn, keys, own, places, timeouts, tls, shutdown })
    }
}

impl Accepted {
    /// Serves the connection with `worker` until it ends: its TLS handshake, then its requests.
    async fn serve(self, worker: Arc<Worker>, settings: &ConnectionSettings) {
        let Accepted { stream, conn, keys, own, places, timeouts, tls, shutdown } = self;
        let (flood, refused) =
            (settings.metrics.defences.closed_h2_control_flood.clone(), worker.refused_lane.recent.clone());
        let lease = Lease::new(places);
        let serve = Serve { conn, keys, own, worker, settings, timeouts, shutdown, lease };
        let reported = move || {
            flood.inc();
            // As refused as a 429: the client's next connections go to the refused worker.
            if let Some(key) = own {
                refused.remember(&key, crate::clock::now_ms() / 1000);
            }
            tracing::debug!("HTTP/2 control frames over their budget; connection closed");
        };
        match tls {
            None => serve.run(TokioIo::new(FrameGuard::new(stream, reported))).await,
            Some(acceptor) => {
                if let Some(stream) = handshake(&acceptor, stream).await {
                    serve.run(TokioIo::new(FrameGuard::new(stream, reported))).await;
                }
            }
        }
    }
}

/// Hands the connection of a client refused lately to the refused worker, or gives it back
/// when there is none or its queue is full.
/// `None`: handed over, or its socket was lost on the way (then it is closed).
fn sideline(worker: &Worker, accepted: Accepted) -> Option<Accepted> {
    use tokio::sync::mpsc::error::TrySendError;
    let Some(queue) = &worker.sideline else { return Some(accepted) };
    let lost = |e: io::Error| {
        tracing::debug!(error = %e, "a connection moving to or from the refused worker was lost; closed");
        worker.metrics.connections.dec();
    };
    let sidelined = accepted.try_map(TcpStream::into_std).map_err(lost).ok()?;
    match queue.try_send(sidelined) {
        Ok(()) => {
            worker.metrics.defences.refused_worker_connections.inc();
            None
        }
        Err(TrySendError::Full(back) | TrySendError::Closed(back)) => {
            back.try_map(TcpStream::from_std).map_err(lost).ok()
        }
    }
}

/// The refused worker: one more worker, with its own runtime and upstream pool, that runs at
/// the lowest CPU priority there is (`SCHED_IDLE`) and serves only the new connections of
/// clients refused in the last seconds, handed over by the workers that accepted them.
///
/// Why: a flood that opens a fresh connection for every try (2,500 refused WebSocket
/// upgrades a second) costs the worker that serves it an accept, a read, an answer and a
/// close each time, and the kernel's loopback or network work of each runs on that worker's
/// time. On a worker of its own at idle priority, the scheduler takes the core from it the
/// moment a worker has a citizen's request to run, so the flood uses only the time nobody
/// else wants. Its requests are still answered (a client behind the same NAT address as an
/// abuser is served as ever, only not ahead of anyone).
pub async fn serve_sidelined(
    mut queue: tokio::sync::mpsc::Receiver<Sidelined>,
    worker: Arc<Worker>,
    settings: Arc<ConnectionSettings>,
) {
    run_at_idle_priority();
    while let Some(sidelined) = queue.recv().await {
        let (worker, settings) = (worker.clone(), settings.clone());
        tokio::spawn(async move {
            match sidelined.try_map(TcpStream::from_std) {
                Ok(accepted) => accepted.serve(worker, &settings).await,
                Err(e) => tracing::debug!(error = %e, "cannot attach a sidelined connection; closed"),
            }
            settings.metrics.connections.dec();
        });
    }
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no other thread of normal
/// priority wants the core. Lowering one's own priority needs no privilege.
fn run_at_idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "the refused worker keeps its normal CPU priority");
    }
}

/// Reads the PROXY v2 header every connection on this listener starts with. Returns the
/// client address to use (the header's, if the peer is a trusted proxy; else the peer's), or
/// `None` when the connection must be closed (no valid header in time).
async fn proxy_header(stream: &mut TcpStream, peer: IpAddr, settings: &ConnectionSettings) -> Option<IpAddr> {
    let header = tokio::time::timeout(settings.first_request_timeout, crate::proxy_protocol::read_v2(stream)).await;
    match header {
        Ok(Ok(source)) => {
            let peer = peer.to_canonical();
            Some(match source {
                Some(source) if settings.trusted(peer) => source.ip().to_canonical(),
                _ => peer,
            })
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "closing a connection without a valid PROXY header");
            None
        }
        Err(_) => {
            tracing::debug!("closing a connection that sent no PROXY header in time");
            None
        }
    }
}

async fn handshake(acceptor: &TlsAcceptor, stream: TcpStream) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// One accepted client connection being served: what its requests share and what bounds
/// its life (first-request and idle timeouts, shutdown).
struct Serve<'a> {
    conn: ClientConn,
    /// The client key, computed at accept, reused by its requests.
    keys: KeyCache,
    /// The key of the client the connection is, when it is one client's own.
    own: Option<ClientKey>,
    worker: Arc<Worker>,
    settings: &'a ConnectionSettings,
    /// Its share of the configured timeouts ([`ConnectionSettings::timeouts`]).
    timeouts: Timeouts,
    shutdown: Shutdown,
    /// The connection's places; a request that upgrades hands them to its tunnel.
    lease: Lease,
}

impl Serve<'_> {
    async fn run<I>(self, io: TokioIo<I>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Serve { conn, keys, own, worker, settings, timeouts, mut shutdown, lease } = self;
        let activity = Arc::new(Activity::default());
        let keys = Arc::new(keys);
        let service = {
            let (activity, lease) = (activity.clone(), lease.clone());
            hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                let in_flight = activity.begin();
                if req.version() == http::Version::HTTP_11 && req.headers().contains_key(http::header::UPGRADE) {
                    req.extensions_mut().insert(lease.clone());
                }
                let (worker, keys) = (worker.clone(), keys.clone());
                async move {
                    // A connection just refused takes its turn in the worker's refused lane
                    // (a new one of a client refused lately took it before it was served).
                    let lane = &worker.refused_lane;
                    if in_flight.activity().refused_last() {
                        lane.wait_turn(Why::Connection).await;
                    }
                    let response = worker.handle(req, conn, &keys).await;
                    let refused = response.extensions().get::<Refused>().is_some();
                    in_flight.activity().set_refused(refused);
                    if let Some(key) = own.filter(|_| refused) {
                        lane.recent.remember(&key, crate::clock::now_ms() / 1000);
                    }
                    Ok::<_, Infallible>(response.map(|body| Tracked { body, _in_flight: in_flight }))
                }
            })
        };
        let connection = settings.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(connection);
        // hyper's header read timeout starts only once the protocol is known (after the first
        // 24 bytes), and never for HTTP/2, which also has no idle timeout of its own: this
        // bounds how long a connection may sit with no request in flight, before its first
        // request (`header_read_timeout`) and after its last (`idle_timeout`).
        // One timer per connection, no timer work per request: it wakes at the deadline the
        // connection's activity gives, and at least every `tick`, since a request that
        // begins or ends meanwhile moves the deadline.
        let tick = timeouts.first_request.min(timeouts.idle);
        let idle = async {
            loop {
                let timeout = if activity.started() { timeouts.idle } else { timeouts.first_request };
                let now = Instant::now();
                match activity.idle_deadline(timeout) {
                    Some(deadline) if deadline <= now => return activity.started(),
                    Some(deadline) => tokio::time::sleep_until(deadline.min(now + tick).into()).await,
                    None => tokio::time::sleep(tick).await,
                }
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    if timed_out(e.as_ref()) {
                        settings.metrics.defences.closed_send_stall.inc();
                    }
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
            }
            () = shutdown.wait() => {
                // In-flight requests finish; the worker's grace bounds how long.
                connection.as_mut().graceful_shutdown();
                let _ = connection.as_mut().await;
            }
            served = idle => {
                if served {
                    // A GOAWAY (HTTP/2) tells the client no request was lost.
                    settings.metrics.defences.closed_idle.inc();
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(settings.first_request_timeout, connection.as_mut()).await;
                } else {
                    tracing::debug!("no request within the header read timeout; connection closed");
                }
            }
        }
        drop(lease);
    }
}

/// Whether a connection's error is the kernel's user timeout (see the accept loop): an I/O
/// error of kind `TimedOut` anywhere in its chain.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        next = e.source();
    }
    false
}

/// A response body that keeps its request counted as in flight until it has been sent.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_connections_times_out_spread_over_the_last_quarter_never_later() {
        let shares: Vec<f64> = (0..10_000u64).map(timeout_share).collect();
        assert!(shares.iter().all(|&s| s > 1.0 - TIMEOUT_SPREAD && s <= 1.0), "{shares:?}");
        // Any 100 connections in a row, wherever the counter stands, fill every tenth of the
        // spread: a burst never lands in one instant.
        for start in [0u64, 4_321, 1 << 40, u64::MAX - 200] {
            let mut tenths = [0u32; 10];
            for n in start..start + 100 {
                let place = (1.0 - timeout_share(n)) / TIMEOUT_SPREAD;
                tenths[((place * 10.0) as usize).min(9)] += 1;
            }
            assert!(tenths.iter().all(|&c| (5..=15).contains(&c)), "from {start}: {tenths:?}");
        }
    }

    #[test]
    fn an_ephemeral_port_is_not_shared_with_another_reuseport_socket() {
        let (bound, sockets) = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), 3).expect("bind");
        assert_eq!(sockets.len(), 3);
        assert!(sockets.iter().all(|s| s.local_addr().ok() == Some(bound)), "one port for every worker");
        // Another process of the same user, binding that port with SO_REUSEPORT, is refused:
        // it cannot take a share of these connections.
        let intruder = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        intruder.set_reuse_port(true).expect("reuseport");
        assert!(intruder.bind(&bound.into()).is_err(), "{bound} was joined by another SO_REUSEPORT socket");
        // A fixed port is shared by its own workers, as nginx's are.
        let (fixed, group) = bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), 1).expect("bind");
        drop(group);
        let (again, workers) = bind_reuseport(fixed, 2).expect("bind the fixed port twice over");
        assert_eq!((again, workers.len()), (fixed, 2));
    }
}
