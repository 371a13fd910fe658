//! usher: a fair, privacy-first login queue and rate-limiting reverse proxy.
//!
//! [`Server::start`] is the one way to run it, shared by `main`, the tests and the benches.
//! Read the request path from [`listener`] (accept) to [`proxy`] (the steps of DESIGN §1,
//! on the canonical [`request::RequestView`]) to [`forward`] (the upstream); usher's own
//! answers are made in [`render`].

pub mod admin;
pub mod admin_api;
pub mod admin_client;
pub mod audit;
pub mod body;
pub mod canonical;
pub mod changes;
pub mod clock;
pub mod config;
pub mod connection;
pub mod console;
pub mod cookies;
pub mod demo;
pub mod descriptors;
pub mod error;
pub mod events;
pub mod forward;
pub mod frame_guard;
pub mod identity;
pub mod idle;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod operators;
pub mod pages;
pub mod pool;
pub mod proxy;
pub mod proxy_protocol;
pub mod refused_lane;
pub mod reload;
pub mod render;
pub mod request;
pub mod room;
pub mod secrets;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod upstream_tls;

use crate::admin::AdminState;
use crate::config::{Config, StoreConfig, UpstreamConfig};
use crate::forward::{Addresses, Upstream};
use crate::identity::{ClientSource, Identity};
use crate::limits::{Gate, LiveGate};
use crate::listener::{BoundSocket, ConnectionSettings};
use crate::metrics::Metrics;
use crate::proxy::Worker;
use crate::refused_lane::{RecentlyRefused, RefusedLane};
use crate::room::Rooms;
use crate::room::admitter;
use crate::secrets::Secrets;
use crate::shutdown::{Shutdown, Trigger};
use crate::store::RoomLimits;
use governor::clock::QuantaClock;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Why usher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("upstream TLS: {0}")]
    UpstreamTls(#[from] upstream_tls::UpstreamTlsError),
    #[error("cannot start a worker thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    #[error(transparent)]
    Store(#[from] store::redis::ConnectError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

/// Builds and starts usher from a validated [`Config`].
pub struct Server;

/// A started usher: its bound addresses and the handle to stop it.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// Where changes are logged, counted and written to the audit trail.
    pub changes: Arc<changes::Changes>,
    pub rooms: Arc<Rooms>,
    /// Access lists and rate limits in force; a reload swaps them.
    pub gate: Arc<LiveGate>,
    trigger: Trigger,
    admin_trigger: Trigger,
    admin_state: Arc<AdminState>,
    workers: Vec<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
    /// The Redis connection's thread, stopped after the workers that use it.
    redis: Option<store::redis::RedisRuntime>,
}

/// Every listening socket, bound before anything runs so that errors surface at start.
struct Sockets {
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    /// One `SO_REUSEPORT` socket per worker and address.
    http: Vec<std::net::TcpListener>,
    https: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
}

impl Server {
    /// Starts with the secrets from `USHER_SECRET` or `secret.file` (or a random one).
    pub fn start(config: Config) -> Result<Running, StartError> {
        let secrets = Secrets::resolve(&config.secret)?;
        Self::start_with_secrets(config, secrets)
    }

    /// Binds every socket, connects the store, then starts one worker thread per configured
    /// worker, the background thread (admitters, limiter sweep) and the admin thread.
    /// Returns at once.
    pub fn start_with_secrets(config: Config, secrets: Secrets) -> Result<Running, StartError> {
        let config = Arc::new(config);
        let workers = config.listen.workers.max(1);
        Self::reserve_descriptors(&config, workers);
        // One shard per worker and one for the refused worker.
        let metrics = Arc::new(Metrics::new(workers + 1));
        let admin_token = secrets::admin_token(&config.admin)?;
        let audit = audit::AuditFile::open(config.admin.audit_file.as_deref())?;
        let changes = Arc::new(changes::Changes::new(metrics.clone(), audit));
        let sockets = Self::bind(&config, workers)?;
        let (redis, rooms) = Self::rooms(&config, &secrets, &metrics)?;
        let gate = Arc::new(LiveGate::from_pointee(Gate::new(
            &config.client,
            &config.limits,
            QuantaClock::default(),
            |rule| metrics.limiter(rule),
        )));
        let (trigger, _) = shutdown::channel();
        let (admin_trigger, _) = shutdown::channel();

        let Sockets { http_addr, https_addr, admin_addr, http, https, admin } = sockets;
        let mut handles = Self::workers(&config, &secrets, http, https, &rooms, &gate, &metrics, &trigger)?;
        handles.push(Self::background(&rooms, &gate, trigger.subscribe())?);
        let api = admin_api::AdminApi::new(rooms.clone(), &config.admin, admin_token.as_deref(), changes.clone());
        let admin_state =
            Arc::new(AdminState { metrics: metrics.clone(), stop: admin_trigger.subscribe(), api, ready: true.into() });
        let admin = match admin {
            None => None,
            Some(socket) => {
                let (state, shutdown) = (admin_state.clone(), admin_trigger.subscribe());
                let header_read_timeout = config.admin.header_read_timeout;
                let admin_tls = match &config.admin.tls {
                    Some(files) => Some(TlsAcceptor::from(tls::load_admin_config(files)?)),
                    None => None,
                };
                if admin_tls.is_none() && !admin_addr.ip().is_loopback() {
                    // Tokens and operator actions would cross the network in clear.
                    tracing::warn!(
                        addr = %admin_addr,
                        "admin listener is reachable beyond loopback without TLS: set admin.tls_cert and admin.tls_key"
                    );
                }
                Some(spawn_runtime_thread("usher-admin".into(), move || async move {
                    if let Err(e) = admin::serve(socket, state, header_read_timeout, admin_tls, shutdown).await {
                        tracing::error!(error = %e, "admin listener failed");
                    }
                })?)
            }
        };

        for (what, addr) in [("http", http_addr), ("https", https_addr), ("admin", Some(admin_addr))] {
            if let Some(addr) = addr {
                tracing::info!(%addr, workers, "listening ({what})");
            }
        }
        Ok(Running {
            http_addr,
            https_addr,
            admin_addr,
            metrics,
            changes,
            rooms,
            gate,
            trigger,
            admin_trigger,
            admin_state,
            workers: handles,
            admin,
            redis,
        })
    }

    /// Raises the open-files limit and grows the descriptor table to what the configuration
    /// may hold ([`descriptors`]), so no worker stalls in `accept` while the table grows.
    /// Neither stops the start: a limit too low is warned about, as connections beyond it
    /// will be refused by the kernel.
    fn reserve_descriptors(config: &Config, workers: usize) {
        let wanted =
            descriptors::wanted(config.listen.max_connections, workers, config.upstream.max_connections_per_worker);
        let limit = match descriptors::raise_limit(wanted) {
            Ok(limit) => limit,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the open-files limit");
                return;
            }
        };
        if limit < wanted as u64 {
            tracing::warn!(
                limit,
                wanted,
                "the open-files limit is below listen.max_connections plus the workers' upstream connections: \
                 connections beyond it fail at accept (raise LimitNOFILE, or ulimit -n)"
            );
        }
        if let Err(e) = descriptors::reserve(wanted) {
            tracing::warn!(error = %e, "cannot grow the descriptor table at start: it grows as connections come");
        }
    }

    /// Binds the public sockets (one per worker) and the admin socket.
    fn bind(config: &Config, workers: usize) -> Result<Sockets, StartError> {
        let bind = |what: &'static str, addr: Option<SocketAddr>, sockets: usize| -> Result<_, StartError> {
            match addr {
                None => Ok((None, Vec::new())),
                Some(addr) => listener::bind_reuseport(addr, sockets)
                    .map(|(bound, sockets)| (Some(bound), sockets))
                    .map_err(|source| StartError::Bind { what, addr, source }),
            }
        };
        let (http_addr, http) = bind("http", config.listen.http, workers)?;
        let (https_addr, https) = bind("https", config.listen.https, workers)?;
        // One admin socket: a spare one listening on the same port would take a share of the
        // connections and reset them when dropped.
        let (admin_addr, mut admin) = bind("admin", Some(config.admin.listen), 1)?;
        Ok(Sockets {
            http_addr,
            https_addr,
            admin_addr: admin_addr.unwrap_or(config.admin.listen),
            http,
            https,
            admin: admin.pop(),
        })
    }

    /// The rooms on their store. With Redis, every room's state is there; connecting first
    /// makes a wrong URL or password a start-up error rather than a stream of 503s.
    fn rooms(
        config: &Config,
        secrets: &Secrets,
        metrics: &Arc<Metrics>,
    ) -> Result<(Option<store::redis::RedisRuntime>, Arc<Rooms>), StartError> {
        match &config.store {
            StoreConfig::Memory => Ok((None, Arc::new(Rooms::new(config, secrets, metrics.clone(), clock::now_ms())))),
            StoreConfig::Redis(target) => {
                let specs = config
                    .rooms
                    .iter()
                    .map(|rc| store::redis::RoomSpec {
                        name: rc.name.clone(),
                        limits: RoomLimits::from_config(rc, config.limits.tickets_per_client),
                        lease: rc.tick * 5,
                    })
                    .collect();
                let (runtime, stores) = store::redis::RedisRuntime::start(target, specs)?;
                Ok((Some(runtime), Arc::new(Rooms::with_stores(config, secrets, metrics.clone(), stores))))
            }
        }
    }

    /// One thread per worker, each with its own runtime, sockets and upstream pool, and the
    /// refused worker's thread ([`listener::serve_sidelined`]).
    #[allow(clippy::too_many_arguments)]
    fn workers(
        config: &Arc<Config>,
        secrets: &Secrets,
        mut http: Vec<std::net::TcpListener>,
        mut https: Vec<std::net::TcpListener>,
        rooms: &Arc<Rooms>,
        gate: &Arc<LiveGate>,
        metrics: &Arc<Metrics>,
        trigger: &Trigger,
    ) -> Result<Vec<JoinHandle<()>>, StartError> {
        let acceptor = match (&config.listen.https, &config.listen.tls) {
            (Some(_), Some(files)) => Some(TlsAcceptor::from(tls::load_server_config(files)?)),
            _ => None,
        };
        let connections = Arc::new(Semaphore::new(config.listen.max_connections));
        let addresses = Addresses::new(&config.upstream);
        let connector = forward::Connector::new(&config.upstream)?;
        let settings = Arc::new(ConnectionSettings::new(
            &config.listen,
            config.client.trusted_proxies.clone(),
            connections,
            metrics.clone(),
        ));
        let workers = config.listen.workers.max(1);
        let refused_lately = Arc::new(RecentlyRefused::default());
        let worker = |index: usize, upstream: &UpstreamConfig, sideline| {
            Arc::new(Worker {
                index,
                upstream: Upstream::new(upstream, addresses.clone(), connector.clone(), metrics.clone()),
                // Each worker derives keys with its own cache of the epoch key, so the cache's
                // lock is never contended across cores.
                identity: Identity::new(secrets.primary(), &config.client),
                client_source: ClientSource::new(&config.client),
                cookie_secure_always: config.listen.cookie_secure_always,
                gate: gate.clone(),
                rooms: rooms.clone(),
                metrics: metrics.clone(),
                idle_timeout: config.listen.idle_timeout,
                refused_lane: RefusedLane::new(
                    refused_lately.clone(),
                    metrics.defences.refused_lane_turns.clone(),
                    metrics.defences.refused_lane_waits.clone(),
                ),
                sideline,
            })
        };
        let mut handles = Vec::with_capacity(workers + 2);
        // The refused worker (index `workers`): it ends once every worker has (its queue closes).
        // Most of what it answers are refusals, which need no upstream: an eighth of a worker's
        // upstream places, so the mailbox sees at most `workers + 1/8` workers' worth of
        // connections, and a flood of refused clients holds few tunnels.
        let (sideline, sidelined) = tokio::sync::mpsc::channel(listener::SIDELINE_QUEUE);
        const SHARE: usize = 8;
        let mut sparse = config.upstream.clone();
        sparse.max_connections_per_worker = (sparse.max_connections_per_worker / SHARE).max(1);
        sparse.max_tunnels_per_worker /= SHARE;
        sparse.pool_per_worker = sparse.pool_per_worker.min(sparse.max_connections_per_worker);
        let (refused, refused_settings) = (worker(workers, &sparse, None), settings.clone());
        handles.push(spawn_runtime_thread("usher-refused".into(), move || {
            listener::serve_sidelined(sidelined, refused, refused_settings)
        })?);
        for index in 0..workers {
            let http = http.pop().map(|listener| BoundSocket { listener, tls: None });
            let https = https.pop().map(|listener| BoundSocket { listener, tls: acceptor.clone() });
            let worker = worker(index, &config.upstream, Some(sideline.clone()));
            let (settings, shutdown, grace) = (settings.clone(), trigger.subscribe(), config.listen.shutdown_grace);
            handles.push(spawn_runtime_thread(format!("usher-worker-{index}"), move || async move {
                let graceful = GracefulShutdown::new();
                let serve = |socket: Option<BoundSocket>| {
                    let (worker, settings, shutdown, graceful) =
                        (worker.clone(), settings.clone(), shutdown.clone(), &graceful);
                    async move {
                        let Some(socket) = socket else { return };
                        if let Err(e) = listener::accept_loop(socket, worker, settings, graceful, shutdown).await {
                            tracing::error!(error = %e, "listener failed");
                        }
                    }
                };
                tokio::join!(serve(http), serve(https));
                if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
                    tracing::warn!(?grace, "shutdown grace period over; closing remaining connections");
                }
            })?);
        }
        Ok(handles)
    }

    /// Background work off the request path: each room's admitter and the limiter sweep.
    fn background(rooms: &Arc<Rooms>, gate: &Arc<LiveGate>, shutdown: Shutdown) -> Result<JoinHandle<()>, StartError> {
        let (rooms, gate) = (rooms.clone(), gate.clone());
        spawn_runtime_thread("usher-background".into(), move || async move {
            let mut tasks: Vec<_> =
                rooms.all().iter().map(|room| tokio::spawn(admitter::run(room.clone(), shutdown.clone()))).collect();
            tasks.push(tokio::spawn(limits::sweep_every_second(gate, shutdown)));
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}

/// A named thread running the future `work()` makes to completion on its own current-thread
/// runtime: the shape of every usher thread (workers, background, admin), so nothing is
/// shared but what is passed in.
fn spawn_runtime_thread<F: Future<Output = ()>>(
    name: String,
    work: impl FnOnce() -> F + Send + 'static,
) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(work()),
            Err(e) => tracing::error!(error = %e, thread = ?std::thread::current().name(), "cannot build a runtime"),
        })
        .map_err(StartError::Thread)
}

impl Running {
    /// Stops accepting and lets in-flight requests finish (within `listen.shutdown_grace`).
    /// `/readyz` turns 503 at once so a load balancer stops sending new clients.
    pub fn shutdown(&self) {
        self.admin_state.ready.store(false, Ordering::Relaxed);
        self.trigger.fire();
    }

    /// Blocks until every worker has finished, then stops the admin listener.
    pub fn wait(mut self) {
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
        if let Some(redis) = self.redis.take() {
            redis.stop();
        }
        self.admin_trigger.fire();
        if let Some(admin) = self.admin.take() {
            let _ = admin.join();
        }
    }

    /// [`Running::shutdown`] then [`Running::wait`].
    pub fn stop(self) {
        self.shutdown();
        self.wait();
    }
}
