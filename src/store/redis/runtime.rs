//! The Redis connection of a running server lives on its own thread and runtime: the
//! connection manager reconnects from the runtime it was made on, so that runtime must
//! outlive every worker that uses it. Start-up connects and seeds every room there, so a
//! wrong URL or password stops usher with a clear error before it serves anything.

use super::{ConnectError, RedisRoom, connect, node_id};
use crate::store::{RoomLimits, RoomStore};
use std::thread::JoinHandle;
use std::time::Duration;

/// One room to open: its name, configured limits and admitter lease.
pub struct RoomSpec {
    pub name: String,
    pub limits: RoomLimits,
    pub lease: Duration,
}

/// The thread that owns the Redis connection; stopped after the workers.
pub struct RedisRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RedisRuntime {
    /// Connects to `url` and opens `rooms` (in order), writing their limits unless another
    /// node already has.
    pub fn start(url: &str, rooms: Vec<RoomSpec>) -> Result<(Self, Vec<RoomStore>), ConnectError> {
        let (answer, opened) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url_shown = url.to_string();
        let url = url.to_string();
        let shown = super::redacted(&url);
        let thread = std::thread::Builder::new()
            .name("usher-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = answer.send(Err(ConnectError::Connect { url: shown, reason: e.to_string() }));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match open(&url, &shown, rooms).await {
                        Ok(stores) => {
                            let _ = answer.send(Ok(stores));
                            let _ = stopped.await;
                        }
                        Err(e) => {
                            let _ = answer.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| ConnectError::Connect { url: super::redacted(&url_shown), reason: e.to_string() })?;
        let stores = opened.recv().map_err(|_| ConnectError::Connect {
            url: super::redacted(&url_shown),
            reason: "the Redis thread ended before connecting".into(),
        })??;
        Ok((Self { stop: Some(stop), thread: Some(thread) }, stores))
    }

    /// Closes the connection once nothing needs it (after the workers have stopped).
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RedisRuntime {
    fn drop(&mut self) {
        self.finish();
    }
}

async fn open(url: &str, shown: &str, rooms: Vec<RoomSpec>) -> Result<Vec<RoomStore>, ConnectError> {
    let conn = connect(url).await?;
    let node = node_id();
    tracing::info!(url = %shown, node = %node, "connected to Redis");
    let mut stores = Vec::with_capacity(rooms.len());
    for spec in rooms {
        let room = RedisRoom::new(conn.clone(), &spec.name, node.clone(), spec.limits, spec.lease);
        let seeded =
            room.seed().await.map_err(|e| ConnectError::Connect { url: shown.to_string(), reason: e.to_string() })?;
        if !seeded {
            tracing::info!(room = %spec.name, "room already in Redis: keeping its live limits");
        }
        stores.push(RoomStore::redis(room));
    }
    Ok(stores)
}
