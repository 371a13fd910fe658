//! One worker's keep-alive connections to the upstream (DESIGN §7).
//!
//! hyper-util's pooled client is general: any host, HTTP/2, a hash of the host and a lock per
//! request. usher speaks HTTP/1.1 to one logical upstream from one thread per core, so its
//! pool is a stack of idle connections: the most recently used is taken first (the likeliest
//! to be alive), those idle longer than `upstream.idle_timeout` are dropped. A connection goes
//! back on the stack only once the response it carried has been read to the end; one whose
//! response was cut short is closed.
//!
//! The pool also caps the connections a worker has open at all, busy or idle
//! (`upstream.max_connections_per_worker`): a slow upstream must not turn a burst of requests
//! into an unbounded pile of connects and sockets.

use crate::idle::IdleBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A client's request body on its way upstream, bounded by `upstream.body_idle_timeout`.
pub type UploadBody = IdleBody<Incoming>;

/// Sends requests on one upstream connection.
pub type Sender = http1::SendRequest<UploadBody>;

pub struct Pool {
    idle: Mutex<VecDeque<(Sender, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// One permit per open connection of this worker; a connection's driver holds it.
    open: Arc<Semaphore>,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration, max_open: usize) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            open: Arc::new(Semaphore::new(max_open)),
        })
    }

    /// A place for one more open connection, held for that connection's life; `None` when
    /// the worker has its maximum open already. Never waits: the caller answers 503 instead.
    pub fn reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.open.clone().try_acquire_owned().ok()
    }

    /// Only this worker's thread takes the lock, so it is never contended.
    fn lock(&self) -> MutexGuard<'_, VecDeque<(Sender, Instant)>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection that is still open, ready for a request.
    pub async fn checkout(&self) -> Option<Sender> {
        loop {
            let (mut sender, since) = self.lock().pop_back()?;
            if since.elapsed() > self.idle_timeout || sender.is_closed() {
                continue;
            }
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
