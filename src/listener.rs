//! Client-facing listeners and the per-core worker shape.
//!
//! Each worker thread runs its own current-thread runtime with its own `SO_REUSEPORT`
//! listener socket per address and its own upstream pool, as nginx's workers do: the kernel
//! spreads connections over workers and nothing on the hot path is shared between cores
//! except a connection-cap semaphore and the per-worker metric shards.

use crate::body::Body;
use crate::config::ListenConfig;
use crate::forward::ClientConn;
use crate::identity::KeyCache;
use crate::metrics::Metrics;
use crate::proxy::Worker;
use crate::shutdown::Shutdown;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
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

/// Binds `count` sockets to `addr` with `SO_REUSEPORT`; port 0 resolves to one port for all.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&bound.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok((bound, sockets))
}

/// Everything a worker's connections share.
pub struct ConnectionSettings {
    pub builder: auto::Builder<TokioExecutor>,
    pub connections: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// Time a new connection has to start its first request (`listen.header_read_timeout`).
    pub first_request_timeout: Duration,
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
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Self {
            builder,
            connections,
            metrics,
            first_request_timeout: config.header_read_timeout,
            proxy_protocol: config.proxy_protocol,
            trusted_proxies,
        }
    }
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
    loop {
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
        let conn = ClientConn { tls: tls.is_some(), addr: peer.ip() };
        let watcher = graceful.watcher();
        let (worker, settings, tls) = (worker.clone(), settings.clone(), tls.clone());
        tokio::spawn(async move {
            settings.metrics.connections.inc();
            let mut stream = stream;
            let mut conn = conn;
            if settings.proxy_protocol {
                match proxy_header(&mut stream, peer.ip(), &settings).await {
                    Some(client) => conn.addr = client,
                    None => {
                        settings.metrics.connections.dec();
                        return;
                    }
                }
            }
            match tls {
                None => serve(TokioIo::new(stream), conn, worker, &settings, watcher).await,
                Some(acceptor) => {
                    if let Some(stream) = handshake(&acceptor, stream).await {
                        serve(TokioIo::new(stream), conn, worker, &settings, watcher).await;
                    }
                }
            }
            settings.metrics.connections.dec();
            drop(permit);
        });
    }
}

/// Reads the PROXY v2 header every connection on this listener starts with. Returns the
/// client address to use (the header's, if the peer is a trusted proxy; else the peer's), or
/// `None` when the connection must be closed (no valid header in time).
async fn proxy_header(
    stream: &mut TcpStream,
    peer: std::net::IpAddr,
    settings: &ConnectionSettings,
) -> Option<std::net::IpAddr> {
    let header = tokio::time::timeout(settings.first_request_timeout, crate::proxy_protocol::read_v2(stream)).await;
    match header {
        Ok(Ok(source)) => {
            let peer = peer.to_canonical();
            let trusted = settings.trusted_proxies.iter().any(|net| net.contains(&peer));
            Some(match source {
                Some(source) if trusted => source.ip().to_canonical(),
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

async fn serve<I>(
    io: TokioIo<I>,
    conn: ClientConn,
    worker: Arc<Worker>,
    settings: &ConnectionSettings,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(KeyCache::default());
    let service = {
        let started = started.clone();
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            started.store(true, Relaxed);
            let (worker, keys) = (worker.clone(), keys.clone());
            async move { Ok::<http::Response<Body>, Infallible>(worker.handle(req, conn, &keys).await) }
        })
    };
    let connection = watcher.watch(settings.builder.serve_connection_with_upgrades(io, service));
    tokio::pin!(connection);
    // hyper's header read timeout starts only once the protocol is known (after the first 24
    // bytes), and never for HTTP/2; until the first request starts, this bounds how long a
    // silent client may hold a connection and its place under `max_connections`.
    let silent = async {
        tokio::time::sleep(settings.first_request_timeout).await;
        if started.load(Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        }
        () = silent => tracing::debug!("no request within the header read timeout; connection closed"),
    }
}
