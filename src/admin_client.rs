//! `usher admin …`: a client of the admin API, so nobody has to hand-write curl at peak.

use crate::upstream_tls::{UpstreamProtocol, UpstreamTls, client_config};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The admin listener: its address and, when it speaks TLS, how to verify it.
pub struct Admin {
    pub addr: SocketAddr,
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl Admin {
    /// Over TLS, verified against `ca_file` (default: the system's roots) for `server_name`
    /// (default: the address itself). A certificate that does not verify fails the call.
    pub fn tls(
        addr: SocketAddr,
        ca_file: Option<PathBuf>,
        server_name: Option<&str>,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let server_name = match server_name {
            Some(name) => ServerName::try_from(name.to_string())?,
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let tls = UpstreamTls { server_name: server_name.clone(), ca_file, client: None };
        let config = client_config(&tls, UpstreamProtocol::Http1)?;
        Ok(Self { addr, tls: Some((config, server_name)) })
    }
}

/// One admin call: what to send where.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    /// `Last-Event-ID` for the event stream.
    pub last_event_id: Option<u64>,
}

impl Call {
    fn new(method: Method, path: String, body: Option<Value>) -> Self {
        Self { method, path, body, last_event_id: None }
    }

    pub fn rooms() -> Self {
        Self::new(Method::GET, "/admin/rooms".into(), None)
    }

    pub fn room(name: &str) -> Self {
        Self::new(Method::GET, format!("/admin/rooms/{name}"), None)
    }

    /// `PATCH` with only the fields given.
    pub fn set(name: &str, fields: Map<String, Value>) -> Self {
        Self::new(Method::PATCH, format!("/admin/rooms/{name}"), Some(Value::Object(fields)))
    }

    pub fn pause(name: &str, message: Option<String>) -> Self {
        let body = message.map(|m| json!({ "message": m }));
        Self::new(Method::POST, format!("/admin/rooms/{name}/pause"), body)
    }

    pub fn resume(name: &str) -> Self {
        Self::new(Method::POST, format!("/admin/rooms/{name}/resume"), None)
    }

    pub fn drain(name: &str, oldest: Option<u64>) -> Self {
        let body = oldest.map(|n| json!({ "oldest": n }));
        Self::new(Method::POST, format!("/admin/rooms/{name}/drain"), body)
    }

    /// The break-glass: everyone in for `seconds`, then back by itself.
    pub fn off(name: &str, seconds: u64) -> Self {
        Self::new(Method::POST, format!("/admin/rooms/{name}/off"), Some(json!({ "for_seconds": seconds })))
    }

    /// `GET /admin/events` (Server-Sent Events), resumed after `last_id` if given.
    pub fn watch(last_id: Option<u64>) -> Self {
        Self { last_event_id: last_id, ..Self::new(Method::GET, "/admin/events".into(), None) }
    }

    /// Sends the call; returns the status and the JSON body, pretty-printed.
    pub async fn send(&self, admin: &Admin, token: Option<&str>) -> std::io::Result<(StatusCode, String)> {
        let stream = tokio::net::TcpStream::connect(admin.addr).await?;
        match &admin.tls {
            None => self.exchange(stream, admin.addr, token).await,
            Some((config, name)) => {
                let stream = tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), stream).await?;
                self.exchange(stream, admin.addr, token).await
            }
        }
    }

    async fn exchange<I>(&self, io: I, admin: SocketAddr, token: Option<&str>) -> std::io::Result<(StatusCode, String)>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        let body = self.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header(http::header::HOST, admin.to_string())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(id) = self.last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(std::io::Error::other)?;
        let response = sender.send_request(req).await.map_err(std::io::Error::other)?;
        let status = response.status();
        let streamed = response.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v == "text/event-stream");
        if status.is_success() && streamed {
            follow(response.into_body()).await?;
            return Ok((status, String::new()));
        }
        let bytes = response.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
        let text = match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        Ok((status, text))
    }
}

/// Prints each Server-Sent Event as one line (`ID KIND DATA`) as it arrives, until the stream
/// ends; comments (heartbeats) and `retry` are skipped.
async fn follow(mut body: hyper::body::Incoming) -> std::io::Result<()> {
    use std::io::Write;
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        let Some(data) = frame.data_ref() else { continue };
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = ("-", "message", String::new());
            for line in block.lines() {
                match line.split_once(": ") {
                    Some(("id", v)) => id = v,
                    Some(("event", v)) => kind = v,
                    Some(("data", v)) => data.push_str(v),
                    _ => {}
                }
            }
            if !data.is_empty() {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{id:>6} {kind:<8} {data}")?;
                out.flush()?;
            }
        }
    }
    Ok(())
}
