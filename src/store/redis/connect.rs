//! Connecting to Redis in any of its shapes ([`RedisTarget`]): one server, the master that
//! Sentinel names, or a cluster. TLS (`rediss://`, `rediss+sentinel://`) is rustls with the
//! system's roots, or those of `SSL_CERT_FILE`; the password comes from the URL or
//! `USHER_REDIS_PASSWORD`. Connections fail fast while Redis is away, so newcomers get a
//! quick 503 rather than a hanging request.

use super::connection::StoreConnection;
use super::sentinel::SentinelConnection;
use crate::config::{RedisTarget, SentinelTarget};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{IntoConnectionInfo, RedisConnectionInfo, RedisResult, TlsMode, Value};
use std::time::Duration;

pub use crate::config::redis::redacted;

/// The environment variable that holds the password when the URL has none.
pub const PASSWORD_ENV: &str = "USHER_REDIS_PASSWORD";

/// Why usher could not use its Redis at start-up. Names the key and shows where Redis is,
/// passwords hidden.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{key} = {at}: not a valid Redis address: {reason}")]
    Invalid { key: &'static str, at: String, reason: String },
    #[error("{key} = {at}: cannot connect to Redis: {reason}")]
    Connect { key: &'static str, at: String, reason: String },
}

fn env_password() -> Option<String> {
    std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())
}

/// Connects to the server or Sentinel master `store.url` names (tests and tools).
pub async fn connect(url: &str) -> Result<StoreConnection, ConnectError> {
    let target = RedisTarget::from_url(url).map_err(|reason| ConnectError::Invalid {
        key: "store.url",
        at: redacted(url),
        reason,
    })?;
    connect_to(&target).await
}

/// Connects and checks the connection (and the password) with a first round trip.
pub async fn connect_to(target: &RedisTarget) -> Result<StoreConnection, ConnectError> {
    let invalid =
        |e: redis::RedisError| ConnectError::Invalid { key: target.key(), at: target.shown(), reason: e.to_string() };
    let failed =
        |e: redis::RedisError| ConnectError::Connect { key: target.key(), at: target.shown(), reason: e.to_string() };
    let mut conn = match target {
        RedisTarget::Server { url } => {
            let client = redis::Client::open(server_info(url).map_err(invalid)?).map_err(invalid)?;
            let manager = ConnectionManager::new_with_config(client, manager_config()).await.map_err(failed)?;
            StoreConnection::Single(manager)
        }
        RedisTarget::Sentinel(sentinel) => {
            let sentinels = sentinel_client(sentinel).map_err(invalid)?;
            let conn =
                SentinelConnection::connect(sentinels, manager_config()).await.map_err(|e| ConnectError::Connect {
                    key: target.key(),
                    at: target.shown(),
                    reason: format!("no master through the sentinels: {e}"),
                })?;
            StoreConnection::Sentinel(conn)
        }
        RedisTarget::Cluster { nodes } => {
            let client = cluster_client(nodes).map_err(invalid)?;
            StoreConnection::Cluster(client.get_async_connection().await.map_err(failed)?)
        }
    };
    let _: Value = redis::cmd("PING").query_async(&mut conn).await.map_err(failed)?;
    Ok(conn)
}

/// Short timeouts and one quick retry: while Redis is away, a newcomer's request should fail
/// over to the "temporarily unavailable" answer at once, not wait for a backoff.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200))
}

/// The URL's settings, with the password from the environment if the URL has none.
fn server_info(url: &str) -> RedisResult<redis::ConnectionInfo> {
    let info = url.into_connection_info()?;
    let settings = with_env_password(info.redis_settings().clone());
    Ok(info.set_redis_settings(settings))
}

fn with_env_password(settings: RedisConnectionInfo) -> RedisConnectionInfo {
    match env_password() {
        Some(password) if settings.password().is_none() => settings.set_password(password),
        _ => settings,
    }
}

/// The sentinels (without credentials), and the master's credentials, database and TLS.
fn sentinel_client(target: &SentinelTarget) -> RedisResult<SentinelClient> {
    let scheme = if target.tls { "rediss" } else { "redis" };
    let host = |h: &str| if h.contains(':') { format!("[{h}]") } else { h.to_string() };
    let sentinels = target
        .sentinels
        .iter()
        .map(|(h, port)| format!("{scheme}://{}:{port}", host(h)).into_connection_info())
        .collect::<RedisResult<Vec<_>>>()?;
    // The redis crate reads the user, password (percent-decoded) and database from a URL.
    let userinfo = target.userinfo.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
    let master = format!("redis://{userinfo}localhost/{}", target.db).into_connection_info()?;
    let mut node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(with_env_password(master.redis_settings().clone()));
    if target.tls {
        node = node.set_tls_mode(TlsMode::Secure);
    }
    SentinelClient::build(sentinels, &target.master, Some(node), SentinelServerType::Master)
}

/// Any node finds the others; short timeouts and few retries, as for one server.
fn cluster_client(nodes: &[String]) -> RedisResult<ClusterClient> {
    let first = nodes.first().map(|n| n.as_str()).unwrap_or_default().into_connection_info()?;
    let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(2))
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(200);
    if first.redis_settings().password().is_none() {
        if let Some(password) = env_password() {
            builder = builder.password(password);
        }
    }
    builder.build()
}
