//! Connecting to Redis: the URL (`redis://` or `rediss://`, TLS by rustls with the system's
//! roots, or those of `SSL_CERT_FILE`), the password from the URL or `USHER_REDIS_PASSWORD`,
//! and a connection manager that reconnects by itself and fails fast while Redis is away,
//! so newcomers get a quick 503 rather than a hanging request.

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// The environment variable that holds the password when the URL has none.
pub const PASSWORD_ENV: &str = "USHER_REDIS_PASSWORD";

/// Why usher could not reach its Redis at start-up. Shown with the URL, password hidden.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("store.url = {url}: not a valid Redis URL: {reason}")]
    Url { url: String, reason: String },
    #[error("store.url = {url}: cannot connect to Redis: {reason}")]
    Connect { url: String, reason: String },
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split_once(':').map_or(&rest[..at], |(user, _)| user);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

/// Connects and checks the connection (and the password) with a first round trip.
pub async fn connect(url: &str) -> Result<ConnectionManager, ConnectError> {
    let shown = redacted(url);
    let mut info =
        url.into_connection_info().map_err(|e| ConnectError::Url { url: shown.clone(), reason: e.to_string() })?;
    if info.redis_settings().password().is_none() {
        if let Some(password) = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
    }
    let client =
        redis::Client::open(info).map_err(|e| ConnectError::Url { url: shown.clone(), reason: e.to_string() })?;
    // Short timeouts and one quick retry: while Redis is away, a newcomer's request should
    // fail over to the "temporarily unavailable" answer at once, not wait for a backoff.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200));
    let mut manager = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| ConnectError::Connect { url: shown.clone(), reason: e.to_string() })?;
    let _: String = redis::cmd("PING")
        .query_async(&mut manager)
        .await
        .map_err(|e| ConnectError::Connect { url: shown, reason: e.to_string() })?;
    Ok(manager)
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redacted("redis://:hunter2@db:6379/0"), "redis://:***@db:6379/0");
        assert_eq!(redacted("rediss://usher:hunter2@db:6380"), "rediss://usher:***@db:6380");
        assert_eq!(redacted("redis://db:6379"), "redis://db:6379");
    }
}
