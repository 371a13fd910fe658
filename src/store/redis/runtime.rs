//! The Redis connection of a running server lives on its own thread and runtime: the
//! connection manager reconnects from the runtime it was made on, so that runtime must
//! outlive every worker that uses it (so must the task that follows a Sentinel master).
//! Start-up connects and seeds every room there, so a wrong address or password stops usher
//! with a clear error before it serves anything.

use super::{ConnectError, RedisRoom, connect_to, node_id};
use crate::config::RedisTarget;
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
    /// Connects to `target` and opens `rooms` (in order), writing their limits unless another
    /// node already has.
    pub fn start(target: &RedisTarget, rooms: Vec<RoomSpec>) -> Result<(Self, Vec<RoomStore>), ConnectError> {
        let (answer, opened) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (key, at) = (target.key(), target.shown());
        let failed = move |reason: String| ConnectError::Connect { key, at: at.clone(), reason };
        let thread_failed = failed.clone();
        let target = target.clone();
        let thread = std::thread::Builder::new()
            .name("usher-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = answer.send(Err(thread_failed(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match open(&target, rooms).await {
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
            .map_err(|e| failed(e.to_string()))?;
        let stores = opened.recv().map_err(|_| failed("the Redis thread ended before connecting".into()))??;
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

async fn open(target: &RedisTarget, rooms: Vec<RoomSpec>) -> Result<Vec<RoomStore>, ConnectError> {
    let conn = connect_to(target).await?;
    let node = node_id();
    tracing::info!(at = %target.shown(), node = %node, "connected to Redis");
    let mut stores = Vec::with_capacity(rooms.len());
    for spec in rooms {
        let room = RedisRoom::new(conn.clone(), &spec.name, node.clone(), spec.limits, spec.lease);
        let seeded = room.seed().await.map_err(|e| ConnectError::Connect {
            key: target.key(),
            at: target.shown(),
            reason: e.to_string(),
        })?;
        if !seeded {
            tracing::info!(room = %spec.name, "room already in Redis: keeping its live limits");
        }
        stores.push(RoomStore::redis(room));
    }
    Ok(stores)
}
