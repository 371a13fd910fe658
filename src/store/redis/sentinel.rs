//! A master that Sentinel names, followed across failovers.
//!
//! The redis crate's `SentinelClient` finds the master once, and a `ConnectionManager`
//! reconnects to one fixed address: on its own it would keep knocking on the dead master.
//! So [`SentinelConnection`] holds a manager for the master the sentinels named last, and one
//! task asks them again whenever a call fails (and every few seconds anyway, so a master that
//! was demoted while still reachable is left too), then swaps in a manager for the new
//! master. Calls never wait for that: while no master answers they fail at once and the
//! store answers `Unavailable`.

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::SentinelClient;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, ServerErrorKind, Value};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How long one look-up through the sentinels may take (they, then the master's `ROLE`).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Between look-ups while no master answers (a failover takes seconds).
const RETRY: Duration = Duration::from_millis(250);
/// Between look-ups while all is well.
const RECHECK: Duration = Duration::from_secs(5);

/// A connection to the current master; cheap to clone (all clones follow the same master).
#[derive(Clone)]
pub struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    master: ArcSwap<Master>,
    /// Wakes the follower task early: a call failed.
    wake: Arc<Notify>,
}

struct Master {
    manager: ConnectionManager,
    /// `host:port`, as the sentinels gave it.
    addr: String,
}

/// Asks the sentinels for the master and connects to it.
struct Follower {
    sentinels: SentinelClient,
    config: ConnectionManagerConfig,
}

impl Follower {
    /// The master's address now, checked by the crate with `ROLE`.
    async fn locate(&mut self) -> RedisResult<redis::Client> {
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.sentinels.async_get_client()).await {
            Ok(found) => found,
            Err(_) => Err(redis::RedisError::from((ErrorKind::Io, "the sentinels did not name a master in time"))),
        }
    }

    async fn connect(&mut self) -> RedisResult<Master> {
        let client = self.locate().await?;
        let addr = client.get_connection_info().addr().to_string();
        let manager = ConnectionManager::new_with_config(client, self.config.clone()).await?;
        Ok(Master { manager, addr })
    }

    /// Moves to the master the sentinels name if it is another one; `false` if none could
    /// be reached (try again soon).
    async fn follow(&mut self, shared: &Shared) -> bool {
        let client = match self.locate().await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, "no Redis master through the sentinels yet");
                return false;
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        let old = shared.master.load().addr.clone();
        if addr == old {
            // Same master: its manager reconnects by itself.
            return true;
        }
        match ConnectionManager::new_with_config(client, self.config.clone()).await {
            Ok(manager) => {
                tracing::warn!(from = %old, to = %addr, "the sentinels name a new Redis master: following it");
                shared.master.store(Arc::new(Master { manager, addr }));
                true
            }
            Err(e) => {
                tracing::debug!(master = %addr, error = %e, "cannot connect to the new Redis master yet");
                false
            }
        }
    }
}

impl SentinelConnection {
    /// Finds the master, connects, and starts following it on the current runtime (the one
    /// that outlives every user, see `runtime.rs`).
    pub async fn connect(sentinels: SentinelClient, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let mut follower = Follower { sentinels, config };
        let master = follower.connect().await?;
        tracing::info!(master = %master.addr, "the sentinels name this Redis master");
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared { master: ArcSwap::from_pointee(master), wake: wake.clone() });
        tokio::spawn(follow(Arc::downgrade(&shared), wake, follower));
        Ok(Self { shared })
    }

    fn manager(&self) -> ConnectionManager {
        self.shared.master.load().manager.clone()
    }

    /// A call failed: unless it was only a script to load, look for the master again.
    fn failed(&self, e: &redis::RedisError) {
        if e.kind() != ErrorKind::Server(ServerErrorKind::NoScript) {
            self.shared.wake.notify_one();
        }
    }
}

/// Runs until every [`SentinelConnection`] is gone: looks the master up when woken, every
/// [`RECHECK`], and every [`RETRY`] while none answers.
async fn follow(shared: Weak<Shared>, wake: Arc<Notify>, mut follower: Follower) {
    let mut found = true;
    loop {
        if found {
            let _ = tokio::time::timeout(RECHECK, wake.notified()).await;
        } else {
            tokio::time::sleep(RETRY).await;
        }
        let Some(shared) = shared.upgrade() else { return };
        let now_found = follower.follow(&shared).await;
        if found && !now_found {
            tracing::warn!("no Redis master through the sentinels: asking them again every 250 ms");
        } else if !found && now_found {
            tracing::info!(master = %shared.master.load().addr, "reached the Redis master again");
        }
        found = now_found;
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.manager().req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.failed(e);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.manager().req_packed_commands(cmd, offset, count).await;
            if let Err(e) = &result {
                self.failed(e);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.master.load().manager.get_db()
    }
}
