//! The request path of DESIGN §1, one step per numbered block, called in order from
//! [`Worker::handle`]:
//!
//! 1. identify the client (the peer, or the one source a trusted proxy is believed through);
//! 2. build the canonical [`RequestView`]: a target with no unambiguous meaning is `400`;
//! 3. usher's embedded assets (the rate-limited page needs them, so before any limit);
//! 4. access lists; 5. rate limits;
//! 6. usher's own paths (`/.usher/…`): status JSON, the language switch;
//! 7. the room this request belongs to, if any, decides: forward, or answer;
//! 8. forward the canonical request without usher's cookies; add the cookies the room set.
//!
//! Every step reads the view; [`render`] makes every answer of usher's own.

use crate::body::Body;
use crate::error::ProxyError;
use crate::forward::{ClientConn, Upstream};
use crate::identity::{self, ClientSource, Identity, KeyCache};
use crate::limits::{Access, LiveGate};
use crate::metrics::{Metrics, Route};
use crate::pages;
use crate::refused_lane::RefusedLane;
use crate::render::{self, Answer};
use crate::request::RequestView;
use crate::room::{Decision, Room, Rooms, Visitor, challenge, published};
use http::header::{HeaderName, HeaderValue, SET_COOKIE};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// usher's reserved path prefix; nothing under it is forwarded.
pub const USHER_PREFIX: &str = "/.usher/";

/// The status JSON a waiting page polls; limited by the poll budget, not the request limit.
pub const STATUS_PATH: &str = "/.usher/status";

/// The mailbox's origin signal: a response header `Usher-Session: end` ends the visitor's
/// session (after the login step, or at logout), freeing its place at once.
/// A parsed name, so that looking for it in every upstream answer costs no parsing.
pub const ORIGIN_SIGNAL: HeaderName = HeaderName::from_static("usher-session");

/// One worker thread's request handler: its upstream pool and the shared state.
pub struct Worker {
    pub index: usize,
    pub upstream: Upstream,
    pub identity: Identity,
    /// Whom to believe about the client's address (restart-only, like the listeners).
    pub client_source: ClientSource,
    /// `listen.cookie_secure = "always"`.
    pub cookie_secure_always: bool,
    pub gate: Arc<LiveGate>,
    pub rooms: Arc<Rooms>,
    pub metrics: Arc<Metrics>,
    /// `listen.idle_timeout`: a waiter told to come back later than this is better served
    /// by closing its connection now than by holding it idle until then.
    pub idle_timeout: Duration,
    /// Where a connection whose last answer was 429 waits its turn ([`RefusedLane`]).
    pub refused_lane: RefusedLane,
    /// Where this worker hands the new connections of clients refused lately: the refused
    /// worker's queue (`None` on the refused worker itself).
    pub sideline: Option<tokio::sync::mpsc::Sender<crate::listener::Sidelined>>,
}

impl Worker {
    /// Answers one request; never fails (every error becomes a response here).
    /// `keys` is the connection's cache of its client key.
    pub async fn handle(&self, req: Request<Incoming>, conn: ClientConn, keys: &KeyCache) -> Response<Body> {
        let (route, response) = self.respond(req, conn, keys).await;
        self.metrics.request(self.index, route, response.status().as_u16());
        response
    }

    async fn respond(&self, req: Request<Incoming>, conn: ClientConn, keys: &KeyCache) -> (Route, Response<Body>) {
        // 1. Identify the client.
        let client = identity::client_addr(conn.addr, conn.tls, req.headers(), &self.client_source);

        // 2. One canonical view of the request; every later step reads it.
        let (head, body) = req.into_parts();
        let view = match RequestView::new(head, client, self.cookie_secure_always) {
            Ok(view) => view,
            Err(refused) => {
                tracing::debug!(error = %refused.error, "request target refused");
                return (Route::Invalid, render::error(ProxyError::BadTarget(refused.error), refused.accepts));
            }
        };

        // 3. usher's embedded assets: static, and needed by the rate-limited page itself.
        if let Some(asset) = render::asset(view.path()) {
            return (Route::Usher, asset);
        }

        // Steps 4 and 5 read the gate in force; a reload may swap it at any time.
        let gate = self.gate.load();

        // 4. Access lists, on the real address.
        match gate.access(client.ip) {
            Access::Denied => return (Route::Denied, render::error(ProxyError::Denied, view.accepts)),
            Access::Allowed => {
                drop(gate);
                return (Route::Upstream, self.forward(view, body, Vec::new(), None).await);
            }
            Access::Normal => {}
        }

        // 5. Rate limits, by client key, before anything can cost the room. A waiting page's
        //    polls have a budget of their own, so page views never starve them.
        let now_ms = crate::clock::now_ms();
        let keys = self.identity.key_cached(keys, client.ip, now_ms / 1000);
        let checked = if view.path() == STATUS_PATH {
            gate.check_poll(&keys.client)
        } else {
            gate.check_request(&keys.client, keys.site.as_ref(), view.method(), view.path())
        };
        if let Err(limited) = checked {
            if view.path() == STATUS_PATH {
                self.rooms.heartbeat(&view, now_ms);
            }
            let answer = Answer::Limited { retry_after_secs: limited.retry_after_secs };
            return (Route::Limited, render::render(answer, &view, Vec::new()));
        }
        drop(gate);
        let visitor =
            Visitor { key: keys.client, site: keys.site, secure: view.secure_cookies, now_ms, gate: &self.gate };

        // 6. usher's own paths.
        if view.path().starts_with(USHER_PREFIX) {
            return (Route::Usher, self.usher_path(&view, body, visitor, conn).await);
        }

        // 7. The room decides: forward, or answer.
        let mut set_cookies = Vec::new();
        let mut session = None;
        if let Some(room) = self.rooms.find(&view) {
            match self.rooms.decide(room, &view, visitor).await {
                Decision::Forward(cookies, admitted) => {
                    set_cookies = cookies;
                    session = admitted.map(|id| (room.as_ref(), id));
                }
                Decision::Answer(answer, cookies) => {
                    let route = if matches!(answer, Answer::Limited { .. }) { Route::Limited } else { Route::Queue };
                    let next_poll = match &answer {
                        Answer::Wait(waiting) => Some(waiting.poll_after_seconds),
                        _ => None,
                    };
                    let response = render::render(answer, &view, cookies);
                    return (route, self.close_if_idle_until(response, next_poll, &view, conn));
                }
            }
        }

        // 8. Forward the canonical request.
        (Route::Upstream, self.forward(view, body, set_cookies, session).await)
    }

    /// usher's own pages and API under [`USHER_PREFIX`].
    async fn usher_path(
        &self,
        view: &RequestView,
        body: Incoming,
        visitor: Visitor<'_>,
        conn: ClientConn,
    ) -> Response<Body> {
        match view.path() {
            STATUS_PATH => {
                let (status, cookies) = self.rooms.status(view, visitor).await;
                let next_poll = status.poll_after_seconds;
                let response = render::render(Answer::Status(status), view, cookies);
                self.close_if_idle_until(response, Some(next_poll), view, conn)
            }
            pages::LANG_PATH => render::language_switch(view),
            challenge::ANSWER_PATH => self.challenge_answer(view, body, visitor).await,
            path if path.starts_with(published::PATH) => {
                let Some(room) = self.rooms.get(&path[published::PATH.len()..]) else {
                    return render::error(ProxyError::NotFound, view.accepts);
                };
                match room.published.json(&room.name, &room.store, visitor.now_ms).await {
                    Ok(json) => render::draw(json),
                    Err(e) => {
                        room.store_failed(&e);
                        render::error(ProxyError::StoreUnavailable, view.accepts)
                    }
                }
            }
            _ => render::error(ProxyError::NotFound, view.accepts),
        }
    }

    /// `/.usher/challenge?room=NAME`: a proof-of-work answer (see [`challenge`]). The worker
    /// `POST`s `{"token", "nonces"}` and is answered with the status JSON and the ticket
    /// cookie; the page without JavaScript comes back by `GET ?token=…&to=/path` after its
    /// wait and is sent on to `to` with the cookie. A refusal says why (`403`; `425` when
    /// early).
    async fn challenge_answer(&self, view: &RequestView, body: Incoming, visitor: Visitor<'_>) -> Response<Body> {
        let query = view.query().unwrap_or_default();
        let param = |name: &str| query.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('='));
        let Some(room) = param("room").and_then(|name| self.rooms.get(name)) else {
            return render::error(ProxyError::NotFound, view.accepts);
        };
        let by_page = view.method() == http::Method::GET;
        let answer = if by_page {
            param("token").map(|token| challenge::Answer { token: token.to_string(), nonces: Vec::new() })
        } else if view.method() == http::Method::POST {
            use http_body_util::BodyExt;
            match http_body_util::Limited::new(body, challenge::ANSWER_MAX_BYTES).collect().await {
                Ok(bytes) => serde_json::from_slice(&bytes.to_bytes()).ok(),
                Err(_) => None,
            }
        } else {
            None
        };
        let decision = match self.rooms.answer_challenge(room, answer, visitor).await {
            Ok(decision) => decision,
            Err(why) => return render::error(ProxyError::ChallengeRefused(why), view.accepts),
        };
        let (answer, cookies) = match decision {
            Decision::Forward(cookies, _) => {
                let admitted =
                    pages::View { status: pages::Status::Admitted, room: room.name.clone(), ..pages::View::none() };
                (Answer::Status(admitted), cookies)
            }
            Decision::Answer(Answer::Wait(waiting), cookies) => (Answer::Status(waiting), cookies),
            Decision::Answer(other, cookies) => (other, cookies),
        };
        if !by_page || !matches!(answer, Answer::Status(_)) {
            return render::render(answer, view, cookies);
        }
        // Back to where the visitor was, now holding its ticket (or its pass).
        let to = param("to").and_then(pages::percent_decode).filter(|p| pages::is_local_path(p));
        render::see_other(to.as_deref().unwrap_or("/"), cookies)
    }

    /// A waiter told to poll again in `next_poll` seconds, later than the connection's idle
    /// timeout, would leave its connection idle until usher closes it anyway: closing it
    /// with this answer (`Connection: close`) frees its memory at once, which is what lets a
    /// million waiters far back in line cost no connection at all between their polls. Only
    /// a client's own HTTP/1 connection: a trusted proxy's is shared by many clients, and
    /// HTTP/2 multiplexes.
    fn close_if_idle_until(
        &self,
        mut response: Response<Body>,
        next_poll: Option<u64>,
        view: &RequestView,
        conn: ClientConn,
    ) -> Response<Body> {
        let far = next_poll.is_some_and(|secs| Duration::from_secs(secs) > self.idle_timeout);
        if far && view.version() <= http::Version::HTTP_11 && self.client_source.own_connection(conn.addr) {
            response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// Forwards to the upstream, turning failures into the friendly 502/504 answers. The
    /// upstream's origin signal (`Usher-Session: end`) ends `session`, the admitted session
    /// the request went in with; it is read only here, from the upstream's answer (a client
    /// cannot send it to usher), and never passed on to the client.
    async fn forward(
        &self,
        view: RequestView,
        body: Incoming,
        set_cookies: Vec<HeaderValue>,
        session: Option<(&Room, u128)>,
    ) -> Response<Body> {
        let (accepts, secure) = (view.accepts, view.secure_cookies);
        let conn = ClientConn { tls: view.client.https, addr: view.client.ip };
        let (req, authority) = view.into_request(body);
        let started = Instant::now();
        let mut response = match self.upstream.forward(req, conn, authority.as_ref()).await {
            Ok(response) => {
                self.metrics.upstream_duration(self.index, started.elapsed());
                if let Some((room, _)) = session {
                    room.upstream_answered(started.elapsed(), response.status().is_server_error());
                }
                response
            }
            Err(e) => {
                if let Some(kind) = e.kind {
                    self.metrics.upstream_error(self.index, kind);
                }
                if let Some((room, _)) = session {
                    room.upstream_answered(started.elapsed(), true);
                }
                render::error(e.error, accepts)
            }
        };
        for cookie in set_cookies {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        let signal = response.headers_mut().remove(&ORIGIN_SIGNAL);
        if let (Some(signal), Some((room, id))) = (signal, session)
            && signal.as_bytes().eq_ignore_ascii_case(b"end")
        {
            let cleared = self.rooms.end_by_origin(room, id, secure).await;
            response.headers_mut().append(SET_COOKIE, cleared);
        }
        response
    }
}
