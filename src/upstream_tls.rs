//! TLS from usher to the upstream (DESIGN §7): rustls with the `ring` provider, the system's
//! roots or a given CA bundle, an optional client certificate for mutual TLS, and ALPN that
//! decides between HTTP/2 and HTTP/1.1. A certificate that does not verify fails the
//! connect; there is no fallback to plain text.

use crate::tls::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::path::PathBuf;
use std::sync::Arc;

/// Which HTTP version usher speaks to the upstream (`upstream.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/2 when the upstream's ALPN agrees, else HTTP/1.1; without TLS, HTTP/1.1.
    Auto,
    Http1,
    /// HTTP/2 always: ALPN `h2` only over TLS, prior knowledge (h2c) without.
    Http2,
}

/// `upstream.tls = true` and its settings, checked but not yet loaded.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// The name sent as SNI and verified against the certificate.
    pub server_name: ServerName<'static>,
    /// A PEM bundle of trusted CAs; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key for mutual TLS.
    pub client: Option<TlsFiles>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("cannot read CA certificates from {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("no usable root certificate in the system's trust store")]
    NoSystemRoots,
    #[error("cannot read certificates from {path}: {reason}")]
    ClientCert { path: PathBuf, reason: String },
    #[error("cannot read a private key from {path}: {reason}")]
    ClientKey { path: PathBuf, reason: String },
    #[error("the client certificate and key do not form a usable TLS configuration: {0}")]
    Config(rustls::Error),
}

impl UpstreamTlsError {
    /// The configuration key this error is about.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Ca { .. } | Self::NoSystemRoots => "upstream.ca_file",
            Self::ClientCert { .. } | Self::Config(_) => "upstream.client_cert",
            Self::ClientKey { .. } => "upstream.client_key",
        }
    }
}

/// The rustls client configuration for `tls`, ALPN offered as `protocol` asks.
pub fn client_config(tls: &UpstreamTls, protocol: UpstreamProtocol) -> Result<Arc<ClientConfig>, UpstreamTlsError> {
    let roots = match &tls.ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect())
                .map_err(|e| UpstreamTlsError::Ca { path: path.clone(), reason: e.to_string() })?;
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(UpstreamTlsError::Ca { path: path.clone(), reason: "no usable PEM certificate".into() });
            }
            roots
        }
        None => {
            // Certificates the platform cannot parse are skipped, as a browser would.
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(UpstreamTlsError::NoSystemRoots);
            }
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(UpstreamTlsError::Config)?
        .with_root_certificates(roots);
    let mut config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
                .and_then(|iter| iter.collect())
                .map_err(|e| UpstreamTlsError::ClientCert { path: files.cert.clone(), reason: e.to_string() })?;
            if certs.is_empty() {
                return Err(UpstreamTlsError::ClientCert {
                    path: files.cert.clone(),
                    reason: "no PEM certificate found".into(),
                });
            }
            let key: PrivateKeyDer<'static> = PrivateKeyDer::from_pem_file(&files.key)
                .map_err(|e| UpstreamTlsError::ClientKey { path: files.key.clone(), reason: e.to_string() })?;
            builder.with_client_auth_cert(certs, key).map_err(UpstreamTlsError::Config)?
        }
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(config))
}
