//! Memory per idle keep-alive connection: open N connections from distinct loopback
//! addresses, make one request on each (so each is a served, kept-alive connection, as a
//! browser leaves it), let them sit, and read the server's resident memory (`VmRSS` in
//! `/proc/PID/status`) before, while they are open, and after they are closed. With a CA
//! file the connections are TLS (verified against it), to weigh a TLS connection too.

use bytes::Bytes;
use http::Request;
use http::header::HOST;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::sources::Sources;
use tokio_rustls::TlsConnector;

/// What to measure.
#[derive(Clone)]
pub struct Plan {
    pub target: SocketAddr,
    pub count: u64,
    /// The one request made on each connection.
    pub path: String,
    pub sources: Sources,
    /// The server's processes (e.g. nginx's master and workers): their memory is summed.
    pub pids: Vec<u32>,
    /// Pause before each memory reading, so the server settles.
    pub settle: Duration,
    /// Connections being opened at once.
    pub parallel: usize,
    /// TLS to the server, verified against a CA of the caller's; plain TCP when `None`.
    pub tls: Option<TlsConnector>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub planned: u64,
    pub opened: u64,
    pub failed: u64,
    /// Open when the memory was read with all of them open.
    pub open_at_reading: u64,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub rss_closed_kib: u64,
    /// `(rss_open − rss_before) / open_at_reading`.
    pub bytes_per_connection: f64,
}

impl IdleReport {
    pub fn summary(&self) -> String {
        format!(
            "idle keep-alive connections: {} of {} open ({} failed); server VmRSS {} KiB before, {} KiB with them open, {} KiB after closing: {:.0} bytes per connection\n",
            self.open_at_reading,
            self.planned,
            self.failed,
            self.rss_before_kib,
            self.rss_open_kib,
            self.rss_closed_kib,
            self.bytes_per_connection
        )
    }
}

/// Why the measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IdleError {
    #[error("cannot read the memory of process {pid}: {source}")]
    Rss { pid: u32, source: std::io::Error },
    #[error("cannot read the CA certificates in {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// A TLS client (ring, TLS 1.2 and 1.3) that trusts the certificates in the PEM file `ca`.
pub fn tls_connector(ca: &std::path::Path) -> Result<TlsConnector, IdleError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let failed = |reason: String| IdleError::Ca { path: ca.display().to_string(), reason };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| failed(e.to_string()))? {
        roots.add(cert.map_err(|e| failed(e.to_string()))?).map_err(|e| failed(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The summed `VmRSS` of `pids`, in KiB.
pub fn total_rss_kib(pids: &[u32]) -> Result<u64, IdleError> {
    pids.iter().map(|&pid| rss_kib(pid)).sum()
}

/// `VmRSS` of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, IdleError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|source| IdleError::Rss { pid, source })?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| IdleError::Rss { pid, source: std::io::Error::other("no VmRSS line") })
}

/// Opens one connection from `source` (TLS if `tls`, the name to verify being the target's
/// address), makes one request and keeps the connection.
async fn open(
    target: SocketAddr,
    source: IpAddr,
    path: &str,
    tls: Option<&TlsConnector>,
) -> Option<SendRequest<Empty<Bytes>>> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let stream = socket.connect(target).await.ok()?;
    let mut sender = match tls {
        None => {
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(connection);
            sender
        }
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
            let stream = tls.connect(name, stream).await.ok()?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(connection);
            sender
        }
    };
    let request = Request::get(path).header(HOST, target.to_string()).body(Empty::new()).ok()?;
    let response = sender.send_request(request).await.ok()?;
    response.into_body().collect().await.ok()?;
    Some(sender)
}

/// Runs the measurement.
pub async fn measure(plan: Plan) -> Result<IdleReport, IdleError> {
    tokio::time::sleep(plan.settle).await;
    let rss_before_kib = total_rss_kib(&plan.pids)?;
    let gate = Arc::new(tokio::sync::Semaphore::new(plan.parallel.max(1)));
    let path: Arc<str> = Arc::from(plan.path.as_str());
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..plan.count {
        let (gate, path, source) = (gate.clone(), path.clone(), IpAddr::V4(plan.sources.get(i)));
        let tls = plan.tls.clone();
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            open(plan.target, source, &path, tls.as_ref()).await
        });
    }
    let mut connections = Vec::with_capacity(usize::try_from(plan.count).unwrap_or(0));
    let mut failed = 0;
    while let Some(done) = opening.join_next().await {
        match done {
            Ok(Some(sender)) => connections.push(sender),
            _ => failed += 1,
        }
    }
    tokio::time::sleep(plan.settle).await;
    let rss_open_kib = total_rss_kib(&plan.pids)?;
    let open_at_reading = connections.iter().filter(|c| !c.is_closed()).count() as u64;
    let opened = connections.len() as u64;
    drop(connections);
    tokio::time::sleep(plan.settle).await;
    let rss_closed_kib = total_rss_kib(&plan.pids)?;
    let bytes_per_connection = if open_at_reading == 0 {
        0.0
    } else {
        rss_open_kib.saturating_sub(rss_before_kib) as f64 * 1024.0 / open_at_reading as f64
    };
    Ok(IdleReport {
        planned: plan.count,
        opened,
        failed,
        open_at_reading,
        rss_before_kib,
        rss_open_kib,
        rss_closed_kib,
        bytes_per_connection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_memory_of_this_process_is_read() {
        let kib = rss_kib(std::process::id()).expect("own /proc status");
        assert!(kib > 100, "{kib} KiB");
        assert!(matches!(rss_kib(u32::MAX), Err(IdleError::Rss { .. })));
    }
}
