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
}

impl Call {
    pub fn rooms() -> Self {
        Self { method: Method::GET, path: "/admin/rooms".into(), body: None }
    }

    pub fn room(name: &str) -> Self {
        Self { method: Method::GET, path: format!("/admin/rooms/{name}"), body: None }
    }

    /// `PATCH` with only the fields given.
    pub fn set(name: &str, fields: Map<String, Value>) -> Self {
        Self { method: Method::PATCH, path: format!("/admin/rooms/{name}"), body: Some(Value::Object(fields)) }
    }

    pub fn pause(name: &str, message: Option<String>) -> Self {
        let body = message.map(|m| json!({ "message": m }));
        Self { method: Method::POST, path: format!("/admin/rooms/{name}/pause"), body }
    }

    pub fn resume(name: &str) -> Self {
        Self { method: Method::POST, path: format!("/admin/rooms/{name}/resume"), body: None }
    }

    pub fn drain(name: &str, oldest: Option<u64>) -> Self {
        let body = oldest.map(|n| json!({ "oldest": n }));
        Self { method: Method::POST, path: format!("/admin/rooms/{name}/drain"), body }
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
        let req = req.body(Full::new(Bytes::from(body))).map_err(std::io::Error::other)?;
        let response = sender.send_request(req).await.map_err(std::io::Error::other)?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
        let text = match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        Ok((status, text))
    }
}
