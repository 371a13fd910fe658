//! The server secret (DESIGN §4): signs cookies and keys the client hash.
//!
//! From `USHER_SECRET` (one or more secrets separated by whitespace) or `secret.file` (one
//! per line); the first signs, all verify, so a secret can be rotated without logging anyone
//! out. Without either, a random secret is made at start (fine for one node only).

use crate::config::{AdminConfig, SecretConfig};
use ring::rand::{SecureRandom, SystemRandom};

/// Shortest secret accepted: 256 bits, the strength of the HMAC it keys.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{source_name}: a secret is {len} bytes; at least {MIN_SECRET_BYTES} are required")]
    TooShort { source_name: &'static str, len: usize },
    #[error("secret.file: cannot read {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("admin.token_file: cannot read {path}: {error}")]
    AdminTokenFile { path: String, error: std::io::Error },
    #[error("{source_name}: the admin token is {len} bytes; at least {MIN_SECRET_BYTES} are required")]
    AdminTokenTooShort { source_name: &'static str, len: usize },
    #[error("cannot make a random secret: the system random source failed")]
    Random,
}

/// The secrets in use: the first signs, all verify.
#[derive(Clone)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// Secrets given directly (tests, embedding); each must be long enough.
    pub fn new(secrets: Vec<Vec<u8>>) -> Result<Self, SecretError> {
        check("secret", &secrets)?;
        if secrets.is_empty() { Self::random() } else { Ok(Self(secrets)) }
    }

    /// Resolves the secrets: `USHER_SECRET`, else `secret.file`, else a random one.
    pub fn resolve(config: &SecretConfig) -> Result<Self, SecretError> {
        if let Ok(text) = std::env::var("USHER_SECRET") {
            let secrets = split(&text);
            if !secrets.is_empty() {
                check("USHER_SECRET", &secrets)?;
                return Ok(Self(secrets));
            }
        }
        if let Some(path) = &config.file {
            let text = std::fs::read_to_string(path)
                .map_err(|error| SecretError::File { path: path.display().to_string(), error })?;
            let secrets = split(&text);
            check("secret.file", &secrets)?;
            if !secrets.is_empty() {
                return Ok(Self(secrets));
            }
        }
        tracing::warn!(
            "no secret configured (USHER_SECRET or secret.file): using a random one; \
             passes and tickets will not survive a restart and other nodes cannot verify them"
        );
        Self::random()
    }

    fn random() -> Result<Self, SecretError> {
        let mut secret = vec![0u8; 32];
        SystemRandom::new().fill(&mut secret).map_err(|_| SecretError::Random)?;
        Ok(Self(vec![secret]))
    }

    /// The signing secret.
    pub fn primary(&self) -> &[u8] {
        &self.0[0]
    }

    /// Every secret that verifies, the signing one first.
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }
}

fn split(text: &str) -> Vec<Vec<u8>> {
    text.split_whitespace().map(|s| s.as_bytes().to_vec()).collect()
}

fn check(source_name: &'static str, secrets: &[Vec<u8>]) -> Result<(), SecretError> {
    match secrets.iter().find(|s| s.len() < MIN_SECRET_BYTES) {
        Some(short) => Err(SecretError::TooShort { source_name, len: short.len() }),
        None => Ok(()),
    }
}

/// The admin API's write token: `USHER_ADMIN_TOKEN`, else `admin.token_file`, else the one set
/// in the configuration directly (tests, embedders). `None`: admin writes are refused.
///
/// A token shorter than [`MIN_SECRET_BYTES`] is a start-up error naming where it came from:
/// the token is the only thing between the network and pausing the queue, so it must not be
/// guessable, and a typo'd or truncated file must not quietly weaken it.
pub fn admin_token(config: &AdminConfig) -> Result<Option<String>, SecretError> {
    let non_empty = |t: String| Some(t.trim().to_string()).filter(|t| !t.is_empty());
    let long_enough = |source_name: &'static str, token: Option<String>| match token {
        Some(token) if token.len() < MIN_SECRET_BYTES => {
            Err(SecretError::AdminTokenTooShort { source_name, len: token.len() })
        }
        token => Ok(token),
    };
    if let Some(token) = std::env::var("USHER_ADMIN_TOKEN").ok().and_then(non_empty) {
        return long_enough("USHER_ADMIN_TOKEN", Some(token));
    }
    if let Some(path) = &config.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|error| SecretError::AdminTokenFile { path: path.display().to_string(), error })?;
        return long_enough("admin.token_file", non_empty(text));
    }
    long_enough("admin.token", config.token.clone().and_then(non_empty))
}
