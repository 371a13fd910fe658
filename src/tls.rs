//! TLS for the client-facing listener: rustls with the `ring` provider, TLS 1.2 and 1.3
//! only, and ALPN offering `h2` before `http/1.1`.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::Arc;

/// The certificate chain and key files of the TLS listener (`listen.tls_cert`, `listen.tls_key`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read a private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the certificate and key do not form a usable TLS configuration: {0}")]
    Config(rustls::Error),
}

impl TlsError {
    /// The configuration key this error is about.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Cert { .. } | Self::Config(_) => "listen.tls_cert",
            Self::Key { .. } => "listen.tls_key",
        }
    }
}

impl TlsError {
    /// The key this error is about when the files are `{section}.tls_cert`/`tls_key`.
    pub fn key_in(&self, section: &str) -> String {
        match self {
            Self::Cert { .. } | Self::Config(_) => format!("{section}.tls_cert"),
            Self::Key { .. } => format!("{section}.tls_key"),
        }
    }
}

/// The admin listener's configuration: as the public one, but ALPN offers only
/// `http/1.1`, since the admin API is served over HTTP/1.1 alone.
pub fn load_admin_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = (*load_server_config(files)?).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect())
        .map_err(|e| TlsError::Cert { path: files.cert.clone(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { path: files.cert.clone(), reason: "no PEM certificate found".into() });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Key { path: files.key.clone(), reason: e.to_string() })?;
    server_config(certs, key)
}

/// Builds the server configuration from certificates and key already in memory (tests, demo).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
