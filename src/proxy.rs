//! The request path of DESIGN §1, one step per function, called in order from [`Worker::handle`]:
//!
//! 1. usher's own paths (`/.usher/…`): embedded assets, status JSON, the language switch;
//! 2. the room this request belongs to, if any, decides: forward (valid pass, or admitted
//!    now) or answer with the visitor's place in line;
//! 3. usher's cookies are removed and the request is forwarded; cookies the decision set
//!    are added to the upstream's response.
//!

use crate::body::Body;
use crate::error::{ProxyError, wants_json};
use crate::forward::{ClientConn, Upstream};
use crate::identity::{self, Identity, KeyCache};
use crate::limits::{Access, LiveGate};
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
    pub identity: Identity,
    pub gate: Arc<LiveGate>,
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
}

impl Worker {
    /// Answers one request; never fails (every error becomes a response here).
    /// `keys` is the connection's cache of its client key.
    pub async fn handle(&self, req: Request<Incoming>, conn: ClientConn, keys: &KeyCache) -> Response<Body> {
        let (route, response) = self.respond(req, conn, keys).await;
        self.metrics.request(self.index, route, response.status().as_u16());
        response
    }

    async fn respond(&self, mut req: Request<Incoming>, conn: ClientConn, keys: &KeyCache) -> (Route, Response<Body>) {
        // 0. usher's embedded assets: static, cacheable, and needed by the rate-limited page
        //    itself, so they are served before any limit.
        if let Some(asset) = pages::asset(req.uri().path()) {
            return (Route::Usher, asset);
        }

        // Steps 1 to 3 read the gate in force; a reload may swap it at any time.
        let gate = self.gate.load();

        // 1. Identify the client: the peer, or who a trusted proxy says it is.
        let client = identity::client_addr(conn.addr, conn.tls, req.headers(), &gate.trusted_proxies);
        let conn = ClientConn { tls: client.https, addr: client.ip };

        // 2. Access lists, on the real address.
        match gate.access(client.ip) {
            Access::Denied => return (Route::Denied, ProxyError::Denied.response(wants_json(req.headers()))),
            Access::Allowed => {
                drop(gate);
                cookies::strip(req.headers_mut());
                return (Route::Upstream, self.forward(req, conn).await);
            }
            Access::Normal => {}
        }

        // 3. Rate limits, by client key, before anything can cost the room.
        let now_ms = now_ms();
        let key = self.identity.key_cached(keys, client.ip, now_ms / 1000);
        if let Err(limited) = gate.check_request(&key, req.method(), req.uri().path()) {
            let answer = pages::Answer::for_request(req.headers());
            return (Route::Limited, pages::rate_limited(answer, limited.retry_after_secs));
        }
        drop(gate);
        let visitor = Visitor { key, tls: client.https, now_ms, gate: &self.gate };

        // 4. usher's own paths.
        if req.uri().path().starts_with(USHER_PREFIX) {
            return (Route::Usher, self.usher_path(&req, visitor).await);
        }

        // 5. The room decides: forward, or the visitor's place in line.
        let mut set_cookies = Vec::new();
        if let Some(room) = self.rooms.find(&req) {
            match self.rooms.decide(room, &req, visitor).await {
                Decision::Forward(cookies) => set_cookies = cookies,
                Decision::Respond(response) => return (Route::Queue, response),
            }
        }

        // 6. Forward, without usher's cookies; add the ones the room set.
        cookies::strip(req.headers_mut());
        let mut response = self.forward(req, conn).await;
        for cookie in set_cookies {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        (Route::Upstream, response)
    }

    /// usher's own pages and API under [`USHER_PREFIX`].
    async fn usher_path(&self, req: &Request<Incoming>, visitor: Visitor<'_>) -> Response<Body> {
        let path = req.uri().path();
        match path {
            "/.usher/status" => self.rooms.status(req, visitor).await,
            pages::LANG_PATH => pages::switch_language(req.headers(), req.uri().query(), visitor.tls),
            _ => ProxyError::NotFound.response(wants_json(req.headers())),
        }
    }

    /// Forwards to the upstream, turning failures into the friendly 502/504 answers.
    async fn forward(&self, req: Request<Incoming>, conn: ClientConn) -> Response<Body> {
        let json = wants_json(req.headers());
        let started = Instant::now();
        match self.upstream.forward(req, conn).await {
            Ok(response) => {
                self.metrics.upstream_duration(self.index, started.elapsed());
                response
            }
            Err(e) => {
                if let Some(kind) = e.kind {
                    self.metrics.upstream_error(self.index, kind);
                }
                e.error.response(json)
            }
        }
    }
}
