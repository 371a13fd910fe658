//! The request path of DESIGN §1, one step per function, called in order from [`Worker::handle`]:
//!
//! 1. usher's own paths (`/.usher/…`): status JSON and embedded assets;
//! 2. the room this request belongs to, if any, decides: forward (valid pass, or admitted
//!    now) or answer with the visitor's place in line;
//! 3. usher's cookies are removed and the request is forwarded; cookies the decision set
//!    are added to the upstream's response.
//!
//! Client identification, access lists and rate limits slot in before step 2.

use crate::body::Body;
use crate::error::{ProxyError, wants_json};
use crate::forward::{ClientConn, Upstream};
use crate::metrics::{Metrics, Route};
use crate::pages;
use crate::room::admitter::now_ms;
use crate::room::{Decision, Rooms, Visitor, cookies};
use http::header::SET_COOKIE;
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
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
}

impl Worker {
    /// Answers one request; never fails (every error becomes a response here).
    pub async fn handle(&self, mut req: Request<Incoming>, conn: ClientConn) -> Response<Body> {
        if req.uri().path().starts_with(USHER_PREFIX) {
            let response = self.usher_path(&req, conn).await;
            self.metrics.request(self.index, Route::Usher, response.status().as_u16());
            return response;
        }
        let mut set_cookies = Vec::new();
        if let Some(room) = self.rooms.find(&req) {
            let visitor = Visitor { addr: conn.addr, tls: conn.tls, now_ms: now_ms() };
            match self.rooms.decide(room, &req, visitor).await {
                Decision::Forward(cookies) => set_cookies = cookies,
                Decision::Respond(response) => {
                    self.metrics.request(self.index, Route::Queue, response.status().as_u16());
                    return response;
                }
            }
        }
        cookies::strip(req.headers_mut());
        let mut response = self.forward(req, conn).await;
        for cookie in set_cookies {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        self.metrics.request(self.index, Route::Upstream, response.status().as_u16());
        response
    }

    /// usher's own pages and API under [`USHER_PREFIX`].
    async fn usher_path(&self, req: &Request<Incoming>, conn: ClientConn) -> Response<Body> {
        let path = req.uri().path();
        if path == "/.usher/status" {
            let visitor = Visitor { addr: conn.addr, tls: conn.tls, now_ms: now_ms() };
            return self.rooms.status(req, visitor).await;
        }
        pages::asset(path).unwrap_or_else(|| ProxyError::NotFound.response(wants_json(req.headers())))
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
