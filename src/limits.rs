//! Rate limits and access lists (DESIGN §6): GCRA limiters from `governor`, keyed by
//! [`ClientKey`], on all requests, on joining the queue and per route; CIDR allow and deny
//! lists checked on the client's real address before it is hashed.
//!
//! Keyed state is bounded: each limiter keeps its per-client state in a [`ClientStates`]
//! table with a hard cap on entries, swept every second of the entries whose limit has fully
//! recovered. When the table is full, a new client is checked but not remembered (its first
//! request would have passed anyway), so a flood of fresh addresses costs no memory.
//!
//! A reload swaps the whole [`Gate`] in a [`LiveGate`] (read per request without a lock). A
//! limiter whose quota is unchanged is carried over with its state, so a reload gives no
//! client a fresh burst; a changed limit starts afresh.

use crate::config::{ClientConfig, LimitsConfig, RouteLimit};
use crate::identity::{ClientKey, KeyHashing};
use dashmap::DashMap;
use governor::clock::{Clock, QuantaClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use http::Method;
use ipnet::IpNet;
use prometheus::IntCounter;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Per-client GCRA state: each key's theoretical arrival time, in nanoseconds since the
/// limiter started (governor's representation), with a hard cap on entries.
pub struct ClientStates {
    map: DashMap<ClientKey, AtomicU64, KeyHashing>,
    cap: usize,
    len: AtomicUsize,
    /// New clients checked but not remembered because the table was full.
    pub overflowed: AtomicU64,
}

impl ClientStates {
    fn new(cap: usize) -> Self {
        Self { map: DashMap::default(), cap, len: AtomicUsize::new(0), overflowed: AtomicU64::new(0) }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every client whose limit has fully recovered by `now` (nanoseconds since start).
    fn sweep(&self, now: u64) {
        self.map.retain(|_, tat| tat.load(Ordering::Relaxed) > now);
        self.map.shrink_to_fit();
        self.len.store(self.map.len(), Ordering::Relaxed);
    }
}

/// governor's compare-and-swap update, on one atomic; `0` means "never seen".
fn measure_and_replace<T, E>(cell: &AtomicU64, f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>) -> Result<T, E> {
    let mut prev = cell.load(Ordering::Acquire);
    loop {
        let (result, next) = f((prev != 0).then(|| Nanos::from(prev)))?;
        match cell.compare_exchange_weak(prev, u64::from(next).max(1), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
    }
}

/// The store governor's limiter uses; shares the table with the sweeper.
#[derive(Clone)]
pub struct SharedStates(Arc<ClientStates>);

impl StateStore for SharedStates {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let states = &self.0;
        if let Some(cell) = states.map.get(key) {
            return measure_and_replace(&cell, f);
        }
        if states.len.load(Ordering::Relaxed) >= states.cap {
            states.overflowed.fetch_add(1, Ordering::Relaxed);
            return f(None).map(|(result, _)| result);
        }
        let cell = states.map.entry(*key).or_insert_with(|| {
            states.len.fetch_add(1, Ordering::Relaxed);
            AtomicU64::new(0)
        });
        measure_and_replace(&cell, f)
    }
}

/// Which limit a request hit; the `rule` label of `usher_rate_limited_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Requests,
    Joins,
    /// `route:METHOD /path` as configured.
    Route(String),
}

impl Rule {
    pub fn label(&self) -> &str {
        match self {
            Rule::Requests => "requests",
            Rule::Joins => "joins",
            Rule::Route(label) => label,
        }
    }
}

/// A request over a limit: which one, and when to come back (whole seconds, rounded up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub rule: Rule,
    pub retry_after_secs: u64,
}

/// One keyed GCRA limiter with its bounded state.
pub struct Limiter<C: Clock = QuantaClock> {
    limiter: RateLimiter<ClientKey, SharedStates, C, NoOpMiddleware<C::Instant>>,
    states: Arc<ClientStates>,
    clock: C,
    start: C::Instant,
    rule: Rule,
    hits: IntCounter,
    /// What it was built with, so a reload can tell whether it changed.
    quota: Quota,
    cap: usize,
}

impl<C: Clock + Clone> Limiter<C> {
    pub fn new(rule: Rule, quota: Quota, cap: usize, clock: C, hits: IntCounter) -> Self {
        let states = Arc::new(ClientStates::new(cap));
        // Taken just before governor takes its own start, so both measure from the same moment
        // (to within the nanoseconds between the two calls).
        let start = clock.now();
        let limiter = RateLimiter::new(quota, SharedStates(states.clone()), clock.clone());
        Self { limiter, states, clock, start, rule, hits, quota, cap }
    }

    /// `Ok` if `key` may go on now; else which rule and when to retry.
    pub fn check(&self, key: &ClientKey) -> Result<(), Limited> {
        self.limiter.check_key(key).map_err(|not_until| {
            self.hits.inc();
            let wait = not_until.wait_time_from(self.clock.now());
            Limited { rule: self.rule.clone(), retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
        })
    }

    pub fn states(&self) -> &ClientStates {
        &self.states
    }

    pub fn sweep(&self) {
        let now = self.clock.now().duration_since(self.start);
        self.states.sweep(u64::from(now));
    }
}

/// The client-gate of the request path: access lists, then the request and route limits.
/// The join limit is checked by the room, only when a visitor would get a new ticket.
pub struct Gate<C: Clock = QuantaClock> {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    requests: Arc<Limiter<C>>,
    joins: Arc<Limiter<C>>,
    routes: Vec<(Option<Method>, String, Arc<Limiter<C>>)>,
    clock: C,
}

/// The gate in force. Workers `load()` it per request (no lock, no shared counter);
/// a reload `store()`s a [`Gate::reconfigured`] one.
pub type LiveGate = arc_swap::ArcSwap<Gate>;

/// What the gate says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// On the allow list: skips limits and queue.
    Allowed,
    /// On the deny list: 403.
    Denied,
    /// Subject to limits and the queue as usual.
    Normal,
}

fn per_second(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl<C: Clock + Clone> Gate<C> {
    /// Builds the gate; `hits(rule_label)` gives the counter of each rule.
    pub fn new(client: &ClientConfig, limits: &LimitsConfig, clock: C, hits: impl Fn(&str) -> IntCounter) -> Self {
        Self::build(client, limits, clock, None, hits)
    }

    /// A gate with new access lists and limits, for a reload. Limiters whose quota and cap are
    /// unchanged are shared with this gate, state and all.
    pub fn reconfigured(
        &self,
        client: &ClientConfig,
        limits: &LimitsConfig,
        hits: impl Fn(&str) -> IntCounter,
    ) -> Self {
        Self::build(client, limits, self.clock.clone(), Some(self), hits)
    }

    fn build(
        client: &ClientConfig,
        limits: &LimitsConfig,
        clock: C,
        previous: Option<&Self>,
        hits: impl Fn(&str) -> IntCounter,
    ) -> Self {
        let cap = limits.max_tracked_clients;
        let limiter = |rule: Rule, quota: Quota, old: Option<&Arc<Limiter<C>>>| match old {
            Some(old) if old.quota == quota && old.cap == cap => old.clone(),
            _ => Arc::new(Limiter::new(rule.clone(), quota, cap, clock.clone(), hits(rule.label()))),
        };
        let requests = Quota::per_second(per_second(limits.requests_per_second)).allow_burst(per_second(limits.burst));
        let joins = Quota::per_minute(per_second(limits.joins_per_minute)).allow_burst(per_second(limits.join_burst));
        let routes = limits
            .routes
            .iter()
            .map(|RouteLimit { method, path, per_minute }| {
                let label = format!("route:{} {path}", method.as_ref().map_or("*", Method::as_str));
                let quota = Quota::per_minute(per_second(*per_minute));
                let old = previous.and_then(|g| g.routes.iter().find(|(_, _, l)| l.rule.label() == label));
                (method.clone(), path.clone(), limiter(Rule::Route(label), quota, old.map(|(_, _, l)| l)))
            })
            .collect();
        Self {
            allow: client.allow.clone(),
            deny: client.deny.clone(),
            requests: limiter(Rule::Requests, requests, previous.map(|g| &g.requests)),
            joins: limiter(Rule::Joins, joins, previous.map(|g| &g.joins)),
            routes,
            clock,
        }
    }

    /// Allow and deny lists, on the unmasked address. Deny wins over allow.
    pub fn access(&self, ip: IpAddr) -> Access {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(&ip)) {
            Access::Denied
        } else if self.allow.iter().any(|n| n.contains(&ip)) {
            Access::Allowed
        } else {
            Access::Normal
        }
    }

    /// The limit on all requests, then the first route rule matching method and path prefix.
    pub fn check_request(&self, key: &ClientKey, method: &Method, path: &str) -> Result<(), Limited> {
        self.requests.check(key)?;
        for (m, prefix, limiter) in &self.routes {
            if m.as_ref().is_none_or(|m| m == method) && path.starts_with(prefix.as_str()) {
                limiter.check(key)?;
            }
        }
        Ok(())
    }

    /// The stricter limit on taking a new ticket.
    pub fn check_join(&self, key: &ClientKey) -> Result<(), Limited> {
        self.joins.check(key)
    }

    /// Forgets recovered clients in every limiter; run about once a second.
    pub fn sweep(&self) {
        self.requests.sweep();
        self.joins.sweep();
        for (_, _, limiter) in &self.routes {
            limiter.sweep();
        }
    }

    /// Client entries held, across limiters.
    pub fn tracked(&self) -> usize {
        self.requests.states().len()
            + self.joins.states().len()
            + self.routes.iter().map(|(_, _, l)| l.states().len()).sum::<usize>()
    }
}

/// Sweeps the gate in force once a second until `shutdown`.
pub async fn sweep_every_second(gate: Arc<LiveGate>, mut shutdown: crate::shutdown::Shutdown) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interval.tick() => gate.load().sweep(),
            () = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use governor::clock::FakeRelativeClock;

    fn gate(toml: &str) -> (Gate<FakeRelativeClock>, FakeRelativeClock) {
        let config = Config::parse(toml).expect("config");
        let clock = FakeRelativeClock::default();
        let hits = |rule: &str| IntCounter::new(format!("t_{}", rule.len()), "test").expect("counter");
        (Gate::new(&config.client, &config.limits, clock.clone(), hits), clock)
    }

    fn key(n: u32) -> ClientKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&n.to_be_bytes());
        ClientKey(k)
    }

    #[test]
    fn requests_pass_under_the_limit_and_recover_after_the_window() {
        let (g, clock) = gate("[limits]\nrequests_per_second = 2\nburst = 4\n");
        for _ in 0..4 {
            assert_eq!(g.check_request(&key(1), &Method::GET, "/"), Ok(()));
        }
        let limited = g.check_request(&key(1), &Method::GET, "/").expect_err("over the burst");
        assert_eq!(limited, Limited { rule: Rule::Requests, retry_after_secs: 1 });
        assert_eq!(g.check_request(&key(2), &Method::GET, "/"), Ok(()), "another client is not limited");
        clock.advance(Duration::from_millis(500));
        assert_eq!(g.check_request(&key(1), &Method::GET, "/"), Ok(()));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let (g, clock) = gate("[limits]\njoins_per_minute = 2\njoin_burst = 1\n");
        assert_eq!(g.check_join(&key(1)), Ok(()));
        assert_eq!(g.check_join(&key(1)).map_err(|l| l.retry_after_secs), Err(30));
        clock.advance(Duration::from_millis(29_500));
        assert_eq!(g.check_join(&key(1)).map_err(|l| l.retry_after_secs), Err(1));
    }

    #[test]
    fn a_route_rule_applies_only_to_its_route() {
        let (g, _) = gate(
            "[limits]\nrequests_per_second = 1000\nburst = 1000\n[[limits.route]]\nmethod = \"POST\"\npath = \"/login\"\nper_minute = 1\n",
        );
        assert_eq!(g.check_request(&key(1), &Method::POST, "/login"), Ok(()));
        let limited = g.check_request(&key(1), &Method::POST, "/login").expect_err("second login");
        assert_eq!(limited.rule, Rule::Route("route:POST /login".into()));
        assert_eq!(g.check_request(&key(1), &Method::GET, "/login"), Ok(()));
        assert_eq!(g.check_request(&key(1), &Method::POST, "/inbox"), Ok(()));
    }

    #[test]
    fn a_flood_of_new_clients_stays_under_the_cap_and_is_swept() {
        let (g, clock) = gate("[limits]\nmax_tracked_clients = 10000\n");
        for n in 0..200_000 {
            let _ = g.check_request(&key(n), &Method::GET, "/");
        }
        assert_eq!(g.requests.states().len(), 10_000);
        assert_eq!(g.requests.states().map.len(), 10_000);
        assert_eq!(g.requests.states().overflowed.load(Ordering::Relaxed), 190_000);
        clock.advance(Duration::from_secs(5));
        g.sweep();
        assert_eq!(g.tracked(), 0, "recovered clients are forgotten");
    }

    #[test]
    fn a_reconfigured_gate_keeps_the_state_of_unchanged_limits_and_applies_new_ones() {
        let (g, _) = gate("[limits]\nrequests_per_second = 1\nburst = 2\njoins_per_minute = 1\njoin_burst = 1\n");
        for _ in 0..2 {
            assert_eq!(g.check_request(&key(1), &Method::GET, "/"), Ok(()));
        }
        assert_eq!(g.check_join(&key(1)), Ok(()));
        let new = Config::parse(
            "[client]\ndeny = [\"192.0.2.0/24\"]\n[limits]\nrequests_per_second = 1\nburst = 2\njoins_per_minute = 60\njoin_burst = 5\n",
        )
        .expect("config");
        let hits = |rule: &str| IntCounter::new(format!("r_{}", rule.len()), "test").expect("counter");
        let r = g.reconfigured(&new.client, &new.limits, hits);
        assert!(Arc::ptr_eq(&g.requests, &r.requests), "an unchanged limiter is carried over");
        assert!(r.check_request(&key(1), &Method::GET, "/").is_err(), "no fresh burst at reload");
        assert_eq!(r.check_join(&key(1)), Ok(()), "the raised join limit applies at once");
        assert_eq!(r.access("192.0.2.9".parse().expect("ip")), Access::Denied);
        assert_eq!(g.access("192.0.2.9".parse().expect("ip")), Access::Normal);
    }

    #[test]
    fn deny_and_allow_lists_see_through_ipv4_mapped_addresses() {
        let (g, _) = gate("[client]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.6.6.0/24\", \"2001:db8::/32\"]\n");
        assert_eq!(g.access("::ffff:10.1.2.3".parse().expect("ip")), Access::Allowed);
        assert_eq!(g.access("10.6.6.6".parse().expect("ip")), Access::Denied);
        assert_eq!(g.access("::ffff:10.6.6.7".parse().expect("ip")), Access::Denied);
        assert_eq!(g.access("2001:db8::1".parse().expect("ip")), Access::Denied);
        assert_eq!(g.access("192.0.2.1".parse().expect("ip")), Access::Normal);
    }
}
