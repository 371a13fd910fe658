//! The one connection type the store uses, whichever shape Redis has, so [`super::RedisRoom`]
//! and its scripts do not care: a room's keys share one hash tag, so every script runs in one
//! slot of a cluster as it does on one server.

use super::sentinel::SentinelConnection;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to usher's Redis; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum StoreConnection {
    /// One server, reconnected by the manager.
    Single(ConnectionManager),
    /// The master Sentinel names, followed across failovers.
    Sentinel(SentinelConnection),
    /// A cluster: each call goes to the master of its keys' slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for StoreConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
