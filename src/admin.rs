//! The admin listener (DESIGN §9): `/healthz`, `/readyz`, `/metrics`, and the admin API
//! under `/admin/` ([`crate::admin_api`]). It runs on its own small runtime so a flood on the public listeners cannot
//! starve the SRE's view of it.
//!
//! It speaks HTTP/1.1 only (Prometheus, curl, the console and its event stream need no
//! more), so hyper's header read timeout (`admin.header_read_timeout`) bounds every
//! connection, silent ones included: a client that opens connections and says nothing
//! cannot pile them up here.

use crate::body::Body;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the admin endpoints read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Ends the event streams when usher stops.
    pub stop: crate::shutdown::Shutdown,
    pub api: crate::admin_api::AdminApi,
    /// False until every listener is bound, and again once shutdown has begun.
    pub ready: AtomicBool,
}

/// Serves the admin listener until shutdown, over TLS when `tls` is given. `header_read_timeout`
/// bounds how long a connection may take to send a request head (and, with TLS, to finish
/// its handshake), and how long it may sit idle between requests.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    header_read_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // As the public listeners do: out of file descriptors is not a reason to spin.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => return Ok(()),
        };
        let (state, builder, tls) = (state.clone(), builder.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, peer, state, builder).await,
                Some(tls) => match tokio::time::timeout(header_read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, peer, state, builder).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "admin TLS handshake failed"),
                    Err(_) => state.metrics.defences.closed_admin_header_timeout.inc(),
                },
            }
        });
    }
}

/// One admin connection, plain or TLS.
async fn serve_connection<I>(io: I, peer: std::net::SocketAddr, state: Arc<AdminState>, builder: Arc<http1::Builder>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let metrics = state.metrics.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            if req.method() == Method::GET
                && let Some(file) = crate::console::file(req.uri().path())
            {
                return Ok::<_, Infallible>(file);
            }
            if req.uri().path() == "/admin/events" {
                return Ok::<_, Infallible>(events(&state, &req));
            }
            if req.uri().path().starts_with("/admin/") {
                return Ok::<_, Infallible>(state.api.handle(req, peer.ip()).await);
            }
            Ok::<_, Infallible>(handle(&state, &req))
        }
    });
    let served = builder.serve_connection(TokioIo::new(io), service).await;
    if let Err(e) = served {
        if e.is_timeout() {
            metrics.defences.closed_admin_header_timeout.inc();
        }
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // Ready means "this node can serve": its listeners are bound and it is not shutting
        // down. A store outage is not a reason: pass holders are still served, and with a
        // shared Redis every node would fail at once and the load balancer would drop them
        // all. Store health is `usher_store_up` and its alert instead.
        "/readyz" if !state.ready.load(Ordering::Relaxed) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/readyz" if !state.api.rooms.all().iter().all(|r| r.store_up()) => {
            text(StatusCode::OK, "ready (store unreachable: pass holders are served, newcomers told to wait)\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let access = state.api.access.load();
            let allowed = !access.metrics_need_token || matches!(access.caller(req), Ok(Some(_)));
            if !allowed {
                // Prometheus: `authorization: { credentials_file: ... }` in the scrape job.
                return text(StatusCode::UNAUTHORIZED, "/metrics needs a bearer token (admin.metrics = \"viewer\")\n");
            }
            let mut response = Response::new(Body::from(state.metrics.render()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /admin/events`: Server-Sent Events for any operator's token (never anonymous, not
/// even from loopback: changes carry operators' names). `Last-Event-ID` resumes.
fn events(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match state.api.access.load().caller(req) {
        Ok(Some(_)) => {}
        Ok(None) | Err(_) => return text(StatusCode::UNAUTHORIZED, "the event stream needs a bearer token\n"),
    }
    let last_id = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let mut response = Response::new(Body::Events(state.metrics.events.stream(last_id, state.stop.clone())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from_static(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
