//! One worker's keep-alive connections to the upstream (DESIGN §7).
//!
//! hyper-util's pooled client is general: any host, HTTP/2, a hash of the host and a lock per
//! request. usher speaks HTTP/1.1 to one logical upstream from one thread per core, so its
//! pool is a stack of idle connections: the most recently used is taken first (the likeliest
//! to be alive), those idle longer than `upstream.idle_timeout` are dropped. A connection goes
//! back on the stack only once the response it carried has been read to the end; one whose
//! response was cut short is closed.
//!
//! An HTTP/2 upstream connection (over TLS when ALPN picks `h2`) carries many requests at
//! once, so it is not lent to one response: the pool keeps one shared HTTP/2 connection per
//! worker and hands out clones of its sender while it is open.
//!
//! The pool also caps the connections a worker has open at all, busy or idle
//! (`upstream.max_connections_per_worker`): a slow upstream must not turn a burst of requests
//! into an unbounded pile of connects and sockets.

use crate::idle::IdleBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A client's request body on its way upstream, bounded by `upstream.body_idle_timeout`.
pub type UploadBody = IdleBody<Incoming>;

/// Sends requests on one upstream connection.
pub enum Sender {
    Http1(http1::SendRequest<UploadBody>),
    Http2(http2::SendRequest<UploadBody>),
}

impl Sender {
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Http1(s) => s.is_closed(),
            Self::Http2(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Self::Http1(s) => s.ready().await,
            Self::Http2(s) => s.ready().await,
        }
    }

    /// Sends `req`; on a connection that closed before sending, the error gives it back.
    pub async fn try_send_request(
        &mut self,
        req: http::Request<UploadBody>,
    ) -> Result<http::Response<Incoming>, hyper::client::conn::TrySendError<http::Request<UploadBody>>> {
        match self {
            Self::Http1(s) => s.try_send_request(req).await,
            Self::Http2(s) => s.try_send_request(req).await,
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Self::Http2(_))
    }
}

pub struct Pool {
    idle: Mutex<VecDeque<(http1::SendRequest<UploadBody>, Instant)>>,
    /// This worker's HTTP/2 connection, shared by all its requests while open.
    shared: Mutex<Option<http2::SendRequest<UploadBody>>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// One permit per open connection of this worker; a connection's driver holds it.
    open: Arc<Semaphore>,
    /// One permit per tunnel of this worker, held for the tunnel's life besides its
    /// connection's: fewer than `open`, so requests always keep connections of their own.
    tunnels: Arc<Semaphore>,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration, max_open: usize, max_tunnels: usize) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(VecDeque::new()),
            shared: Mutex::new(None),
            max_idle,
            idle_timeout,
            open: Arc::new(Semaphore::new(max_open)),
            tunnels: Arc::new(Semaphore::new(max_tunnels)),
        })
    }

    /// A place for one more tunnel, held for its life; `None` when the worker has its
    /// maximum of tunnels already (the upgrade is then refused, never waited for).
    pub fn reserve_tunnel(&self) -> Option<OwnedSemaphorePermit> {
        self.tunnels.clone().try_acquire_owned().ok()
    }

    /// A place for one more open connection, held for that connection's life; `None` when
    /// the worker has its maximum open already. Never waits: the caller answers 503 instead.
    pub fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    /// Only this worker's thread takes the lock, so it is never contended.
    fn lock(&self) -> MutexGuard<'_, VecDeque<(http1::SendRequest<UploadBody>, Instant)>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_shared(&self) -> MutexGuard<'_, Option<http2::SendRequest<UploadBody>>> {
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shared HTTP/2 connection if one is open, else the most recently used idle
    /// HTTP/1.1 connection that is still open, ready for a request.
    pub async fn checkout(&self) -> Option<Sender> {
        let shared = {
            let mut shared = self.lock_shared();
            if shared.as_ref().is_some_and(|s| s.is_closed()) {
                *shared = None;
            }
            shared.clone()
        };
        if let Some(mut sender) = shared.map(Sender::Http2) {
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
        loop {
            let (sender, since) = self.lock().pop_back()?;
            if since.elapsed() > self.idle_timeout || sender.is_closed() {
                continue;
            }
            let mut sender = Sender::Http1(sender);
            // Ready at once unless hyper has not yet seen the last response end.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender` for the next request, unless the pool is full; drops the stale.
    pub fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let sender = match sender {
            Sender::Http1(sender) => sender,
            Sender::Http2(sender) => {
                let mut shared = self.lock_shared();
                if shared.as_ref().is_none_or(|s| s.is_closed()) {
                    *shared = Some(sender);
                }
                return;
            }
        };
        let now = Instant::now();
        let mut idle = self.lock();
        while idle.front().is_some_and(|(_, since)| now.duration_since(*since) > self.idle_timeout) {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back((sender, now));
        }
    }
}

/// A connection lent to one response: [`Checkin::done`] returns it once the body has ended;
/// dropped before that, the connection closes.
pub struct Checkin {
    sender: Sender,
    pool: Arc<Pool>,
}

impl Checkin {
    pub fn new(sender: Sender, pool: Arc<Pool>) -> Self {
        Self { sender, pool }
    }

    pub fn done(self) {
        self.pool.checkin(self.sender);
    }
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checkin")
    }
}
