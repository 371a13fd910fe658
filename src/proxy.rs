//! The request path of DESIGN §1, one step per function, called in order from [`Worker::handle`].
//!
//! Today: usher's own paths, else forward. Later steps (identify the client, access lists,
//! rate limits, room admission) slot in between, each as a named step here.

use crate::body::Body;
use crate::error::{ProxyError, wants_json};
use crate::forward::{ClientConn, Upstream};
use crate::metrics::{Metrics, Route};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// usher's reserved path prefix; nothing under it is forwarded.
pub const USHER_PREFIX: &str = "/.usher/";

/// One worker thread's request handler: its upstream pool and the shared state.
pub struct Worker {
    pub index: usize,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
}

impl Worker {
    /// Answers one request; never fails (every error becomes a response here).
    pub async fn handle(&self, req: Request<Incoming>, conn: ClientConn) -> Response<Body> {
        let (route, response) = if req.uri().path().starts_with(USHER_PREFIX) {
            (Route::Usher, self.usher_path(&req))
        } else {
            (Route::Upstream, self.forward(req, conn).await)
        };
        self.metrics.request(self.index, route, response.status().as_u16());
        response
    }

    /// usher's own pages and API under [`USHER_PREFIX`].
    fn usher_path(&self, req: &Request<Incoming>) -> Response<Body> {
        ProxyError::NotFound.response(wants_json(req.headers()))
    }

    /// Forwards to the upstream, turning failures into the friendly 502/504 answers.
    async fn forward(&self, req: Request<Incoming>, conn: ClientConn) -> Response<Body> {
        let json = wants_json(req.headers());
        let started = Instant::now();
        match self.upstream.forward(req, conn).await {
            Ok(response) => {
                self.metrics.upstream_duration(self.index, started.elapsed());
                response.map(Body::Upstream)
            }
            Err(e) => {
                self.metrics.upstream_error(self.index, e.kind);
                e.error.response(json)
            }
        }
    }
}
