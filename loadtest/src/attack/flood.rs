//! Floods of client keys through a trusted proxy (usher configured with
//! `client.trusted_proxies` covering loopback): every request names another IPv6 client in
//! `X-Forwarded-For`, so each is a new key for usher's limiters and rooms.
//! - key-flood: `plan.keys` distinct /64s against the limiter's bounded table, while one
//!   flooding client (a /64 of its own) asks far beyond its limit: it must still be limited.
//! - ticket-flood: joins from the /64s of one /48 against a room: tickets issued vs 429s,
//!   bounded by `limits.site_join_burst` and `limits.site_joins_per_minute`.

use super::{Plan, Tally, connect, source, sources};
use bytes::Bytes;
use http::header::{ACCEPT, HOST, HeaderValue, SET_COOKIE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The flooding client's own /64, outside the flood's keys (they fill 2001:db8:0-7fff::/33).
const FLOODER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0xffff, 0, 0, 0, 1);

/// The flood's `i`-th /64 of 2001:db8::/32 (the documentation prefix).
fn flood_key(i: u64) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, ((i >> 16) & 0x7fff) as u16, (i & 0xffff) as u16, 0, 0, 0, 1)
}

/// The `i`-th /64 of the one /48 2001:db8:42::/48.
fn site_key(i: u64) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x42, (i & 0xffff) as u16, 0, 0, 0, 1)
}

/// One keep-alive HTTP/1.1 connection of the "proxy", reopened when usher closes it.
struct ProxyConn {
    target: SocketAddr,
    from: Ipv4Addr,
    host: HeaderValue,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl ProxyConn {
    fn new(target: SocketAddr, from: Ipv4Addr) -> Self {
        let host = HeaderValue::from_str(&target.to_string()).unwrap_or(HeaderValue::from_static("localhost"));
        Self { target, from, host, sender: None }
    }

    /// `GET path` for `client`; the status and whether a ticket cookie was set, or `None`
    /// when usher closed or did not answer within 10 s.
    async fn get(&mut self, path: &str, client: Ipv6Addr, accept: &'static str) -> Option<(StatusCode, bool)> {
        let reused = match self.sender.take() {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut sender = match reused {
            Some(s) => s,
            None => {
                let stream = connect(self.from, self.target).await.ok()?;
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
                tokio::spawn(connection);
                sender
            }
        };
        let request = Request::get(path)
            .header(HOST, self.host.clone())
            .header(ACCEPT, accept)
            .header("x-forwarded-for", client.to_string())
            .body(Empty::new())
            .ok()?;
        let exchange = async {
            let response = sender.send_request(request).await.ok()?;
            let ticket =
                response.headers().get_all(SET_COOKIE).iter().any(|v| v.as_bytes().starts_with(b"usher_ticket"));
            let status = response.status();
            response.into_body().collect().await.ok()?;
            Some((status, ticket))
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), exchange).await.ok()??;
        self.sender = Some(sender);
        Some(answer)
    }
}

fn count(tally: &Tally, prefix: &str, answer: Option<(StatusCode, bool)>) {
    let name = match (prefix, answer.map(|(s, _)| s.as_u16())) {
        ("flood", Some(200..=399)) => "flood_passed",
        ("flood", Some(429)) => "flood_429",
        ("flood", Some(_)) => "flood_other_status",
        ("flood", None) => "flood_failed",
        (_, Some(200..=399)) => "flooder_passed",
        (_, Some(429)) => "flooder_429",
        (_, Some(_)) => "flooder_other_status",
        (_, None) => "flooder_failed",
    };
    tally.add(name, 1);
}

/// `plan.keys` distinct /64s, in turn, over `plan.sockets` proxy connections; meanwhile one
/// flooding client asks `plan.flooder_rate` times a second and counts its 200s and 429s.
pub async fn keys(plan: &Plan, tally: Arc<Tally>) {
    let Ok(addresses) = sources(source::PROXY, plan.sockets + 1) else { return };
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..plan.sockets {
        let (tally, next, path, keys) = (tally.clone(), next.clone(), plan.path.clone(), plan.keys.max(1));
        let mut conn = ProxyConn::new(plan.target, addresses.get(c));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let answer = conn.get(&path, flood_key(i % keys), "*/*").await;
                count(&tally, "flood", answer);
            }
        });
    }
    let (tally_f, path, rate) = (tally.clone(), plan.path.clone(), plan.flooder_rate.max(1.0));
    let mut flooder = ProxyConn::new(plan.target, addresses.get(plan.sockets));
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            let answer = flooder.get(&path, FLOODER, "*/*").await;
            count(&tally_f, "flooder", answer);
        }
    });
    // Requests and distinct keys sent so far, read from the counter when the run drops this.
    let reporter = {
        let (tally, next, keys) = (tally.clone(), next.clone(), plan.keys.max(1));
        scopeguard(move || {
            let sent = next.load(Ordering::Relaxed);
            tally.add("flood_requests", i64::try_from(sent).unwrap_or(i64::MAX));
            tally.add("distinct_keys", i64::try_from(sent.min(keys)).unwrap_or(i64::MAX));
        })
    };
    while tasks.join_next().await.is_some() {}
    drop(reporter);
}

/// Joins of a room from the /64s of one /48, in turn, over `plan.sockets` proxy connections:
/// how many got a ticket and how many were refused.
pub async fn tickets(plan: &Plan, tally: Arc<Tally>) {
    let Ok(addresses) = sources(source::PROXY, plan.sockets) else { return };
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..plan.sockets {
        let (tally, next, path) = (tally.clone(), next.clone(), plan.path.clone());
        let mut conn = ProxyConn::new(plan.target, addresses.get(c));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let name = match conn.get(&path, site_key(i), "application/json").await {
                    Some((_, true)) => "tickets_issued",
                    Some((s, false)) if s == StatusCode::TOO_MANY_REQUESTS => "join_429",
                    Some(_) => "join_other",
                    None => "join_failed",
                };
                tally.add(name, 1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs `f` when dropped: the attack's future is dropped at its deadline, not returned from.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_keys_are_distinct_64s_and_never_the_flooders() {
        let mask = |a: Ipv6Addr| u128::from(a) >> 64;
        let keys: std::collections::HashSet<_> = (0..200_000).map(|i| mask(flood_key(i))).collect();
        assert_eq!(keys.len(), 200_000);
        assert!(!keys.contains(&mask(FLOODER)));
        assert_eq!(mask(flood_key(1_000_000 - 1)) >> 16, mask(flood_key(0)) >> 16 | 0xf);
        let site: std::collections::HashSet<_> = (0..65_536).map(|i| u128::from(site_key(i)) >> 80).collect();
        assert_eq!(site.len(), 1, "one /48");
    }
}
