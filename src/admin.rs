//! The admin listener (DESIGN §9): `/healthz`, `/readyz`, `/metrics`, and the admin API
//! under `/admin/` ([`crate::admin_api`]). It runs on its own small runtime so a flood on the public listeners cannot
//! starve the SRE's view of it.

use crate::body::Body;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the admin endpoints read.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub api: crate::admin_api::AdminApi,
    /// False until every listener is bound, and again once shutdown has begun.
    pub ready: AtomicBool,
}

pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            () = shutdown.wait() => return Ok(()),
        };
        let (state, builder) = (state.clone(), builder.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    if req.uri().path().starts_with("/admin/") {
                        return Ok::<_, Infallible>(state.api.handle(req, peer.ip()).await);
                    }
                    Ok::<_, Infallible>(handle(&state, &req))
                }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
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
            let mut response = Response::new(Body::from(state.metrics.render()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from_static(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
