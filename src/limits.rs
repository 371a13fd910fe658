//! Rate limits and access lists (DESIGN §6): GCRA limiters from `governor`, keyed by
//! [`ClientKey`], on all requests, on joining the queue and per route; CIDR allow and deny
//! lists checked on the client's real address before it is hashed.
//!
//! Keyed state is bounded: each limiter keeps its per-client state in a [`ClientStates`]
//! table with a hard cap on entries, swept every second of the entries whose limit has fully
//! recovered. When the table is full, a client it does not hold is limited on one of a fixed
//! set of shared overflow cells, picked by its key: a flood of fresh addresses (one IPv6 /48
//! holds 65,536 /64s) costs no memory and never turns limiting off; a flooding client keeps
//! meeting the same cell and is limited as before. The price, paid only while the table is
//! full: a newcomer shares its cell with whoever else hashes there.
//!
//! Status polls have a limiter of their own, sized for a carrier-grade NAT's crowd of waiting
//! pages, so that people behind one address never lose polls to each other's page views.
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
use prometheus::{IntCounter, IntGauge};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Shared cells for clients a full table does not hold (8 bytes each: 512 KiB a limiter).
/// Many, so that a newcomer seldom shares its cell with a flood: a ticket flood's 61,000
/// fresh /64s a second over 4,096 cells came to 15 a second each, near the 20 of the
/// request limit, and refused 5 of 6,000 citizens' requests in a run.
const OVERFLOW_CELLS: usize = 65_536;

/// A limiter's figures (`rule` label): requests refused, clients limited on an overflow
/// cell, and clients held in its table.
#[derive(Clone)]
pub struct LimiterMetrics {
    pub hits: IntCounter,
    pub overflow: IntCounter,
    pub tracked: IntGauge,
}

impl LimiterMetrics {
    /// Figures registered nowhere (unit tests, benches).
    pub fn unregistered() -> Self {
        let counter = |name: &str| IntCounter::new(name, "unregistered").expect("static metric definition");
        Self {
            hits: counter("hits"),
            overflow: counter("overflow"),
            tracked: IntGauge::new("tracked", "unregistered").expect("static metric definition"),
        }
    }
}

/// Per-client GCRA state: each key's theoretical arrival time, in nanoseconds since the
/// limiter started (governor's representation), with a hard cap on entries and a fixed set of
/// overflow cells for clients beyond it.
pub struct ClientStates {
    map: DashMap<ClientKey, AtomicU64, KeyHashing>,
    cap: usize,
    len: AtomicUsize,
    overflow: Box<[AtomicU64]>,
    /// Checks made on an overflow cell because the table was full.
    overflowed: IntCounter,
}

impl ClientStates {
    fn new(cap: usize, overflowed: IntCounter) -> Self {
        let overflow = (0..OVERFLOW_CELLS).map(|_| AtomicU64::new(0)).collect();
        Self { map: DashMap::default(), cap, len: AtomicUsize::new(0), overflow, overflowed }
    }

    /// The overflow cell of `key`: keys are keyed hashes already, so their first bytes spread
    /// evenly and cannot be aimed at one cell without the secret.
    fn overflow_cell(&self, key: &ClientKey) -> &AtomicU64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&key.0[..8]);
        &self.overflow[(u64::from_le_bytes(first) % OVERFLOW_CELLS as u64) as usize]
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
            states.overflowed.inc();
            return measure_and_replace(states.overflow_cell(key), f);
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
    /// Status polls (`/.usher/status`), a budget of their own.
    Polls,
    Joins,
    /// Requests from one IPv6 site (/48), beside its /64s' own.
    SiteRequests,
    /// Joins from one IPv6 site (/48).
    SiteJoins,
    /// `route:METHOD /path` as configured.
    Route(String),
}

impl Rule {
    pub fn label(&self) -> &str {
        match self {
            Rule::Requests => "requests",
            Rule::Polls => "polls",
            Rule::Joins => "joins",
            Rule::SiteRequests => "site_requests",
            Rule::SiteJoins => "site_joins",
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
    tracked: IntGauge,
    /// What it was built with, so a reload can tell whether it changed.
    quota: Quota,
    cap: usize,
}

impl<C: Clock + Clone> Limiter<C> {
    pub fn new(rule: Rule, quota: Quota, cap: usize, clock: C, metrics: LimiterMetrics) -> Self {
        let LimiterMetrics { hits, overflow, tracked } = metrics;
        let states = Arc::new(ClientStates::new(cap, overflow));
        // Taken just before governor takes its own start, so both measure from the same moment
        // (to within the nanoseconds between the two calls).
        let start = clock.now();
        let limiter = RateLimiter::new(quota, SharedStates(states.clone()), clock.clone());
        Self { limiter, states, clock, start, rule, hits, tracked, quota, cap }
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

    /// Forgets recovered clients and reports how many are held.
    pub fn sweep(&self) {
        let now = self.clock.now().duration_since(self.start);
        self.states.sweep(u64::from(now));
        self.tracked.set(i64::try_from(self.states.len()).unwrap_or(i64::MAX));
    }
}

/// The client-gate of the request path: access lists, then the request and route limits.
/// The join limit is checked by the room, only when a visitor would get a new ticket.
pub struct Gate<C: Clock = QuantaClock> {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    requests: Arc<Limiter<C>>,
    /// Requests per IPv6 site (`client.ipv6_site_prefix`), beside the /64's: a flood that
    /// sends each request from a fresh /64 of its /48 meets every /64's limit new.
    site_requests: Arc<Limiter<C>>,
    polls: Arc<Limiter<C>>,
    joins: Arc<Limiter<C>>,
    /// Joins per IPv6 site (`client.ipv6_site_prefix`, a /48 by default), beside the /64's.
    site_joins: Arc<Limiter<C>>,
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
    pub fn new(
        client: &ClientConfig,
        limits: &LimitsConfig,
        clock: C,
        metrics: impl Fn(&str) -> LimiterMetrics,
    ) -> Self {
        Self::build(client, limits, clock, None, metrics)
    }

    /// A gate with new access lists and limits, for a reload. Limiters whose quota and cap are
    /// unchanged are shared with this gate, state and all.
    pub fn reconfigured(
        &self,
        client: &ClientConfig,
        limits: &LimitsConfig,
        metrics: impl Fn(&str) -> LimiterMetrics,
    ) -> Self {
        Self::build(client, limits, self.clock.clone(), Some(self), metrics)
    }

    fn build(
        client: &ClientConfig,
        limits: &LimitsConfig,
        clock: C,
        previous: Option<&Self>,
        metrics: impl Fn(&str) -> LimiterMetrics,
    ) -> Self {
        let cap = limits.max_tracked_clients;
        let limiter = |rule: Rule, quota: Quota, old: Option<&Arc<Limiter<C>>>| match old {
            Some(old) if old.quota == quota && old.cap == cap => old.clone(),
            _ => Arc::new(Limiter::new(rule.clone(), quota, cap, clock.clone(), metrics(rule.label()))),
        };
        let requests = Quota::per_second(per_second(limits.requests_per_second)).allow_burst(per_second(limits.burst));
        let site_requests = Quota::per_second(per_second(limits.site_requests_per_second))
            .allow_burst(per_second(limits.site_request_burst));
        let polls = Quota::per_second(per_second(limits.polls_per_second)).allow_burst(per_second(limits.poll_burst));
        let joins = Quota::per_minute(per_second(limits.joins_per_minute)).allow_burst(per_second(limits.join_burst));
        let site_joins =
            Quota::per_minute(per_second(limits.site_joins_per_minute)).allow_burst(per_second(limits.site_join_burst));
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
            site_requests: limiter(Rule::SiteRequests, site_requests, previous.map(|g| &g.site_requests)),
            polls: limiter(Rule::Polls, polls, previous.map(|g| &g.polls)),
            joins: limiter(Rule::Joins, joins, previous.map(|g| &g.joins)),
            site_joins: limiter(Rule::SiteJoins, site_joins, previous.map(|g| &g.site_joins)),
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

    /// The limit on all requests, then for IPv6 its site's (`site`: the key of the client's
    /// /48), then every route rule matching method and path prefix. The client's own limit
    /// goes first, so one flooding /64 spends its own budget, not its neighbours' on the site.
    pub fn check_request(
        &self,
        key: &ClientKey,
        site: Option<&ClientKey>,
        method: &Method,
        path: &str,
    ) -> Result<(), Limited> {
        self.requests.check(key)?;
        if let Some(site) = site {
            self.site_requests.check(site)?;
        }
        for (m, prefix, limiter) in &self.routes {
            if m.as_ref().is_none_or(|m| m == method) && path.starts_with(prefix.as_str()) {
                limiter.check(key)?;
            }
        }
        Ok(())
    }

    /// The budget of status polls, instead of the request limit: a waiting page polls every
    /// few seconds, and hundreds may wait behind one carrier-grade NAT address.
    pub fn check_poll(&self, key: &ClientKey) -> Result<(), Limited> {
        self.polls.check(key)
    }

    /// The stricter limits on taking a new ticket: per client key, and for IPv6 per site
    /// (`site`: the key of the client's /48), so that one site cannot hold a line's worth of
    /// tickets through its 65,536 /64s.
    pub fn check_join(&self, key: &ClientKey, site: Option<&ClientKey>) -> Result<(), Limited> {
        if let Some(site) = site {
            self.site_joins.check(site)?;
        }
        self.joins.check(key)
    }

    /// Forgets recovered clients in every limiter; run about once a second.
    pub fn sweep(&self) {
        self.requests.sweep();
        self.site_requests.sweep();
        self.polls.sweep();
        self.joins.sweep();
        self.site_joins.sweep();
        for (_, _, limiter) in &self.routes {
            limiter.sweep();
        }
    }

    /// Client entries held, across limiters.
    pub fn tracked(&self) -> usize {
        self.requests.states().len()
            + self.site_requests.states().len()
            + self.polls.states().len()
            + self.joins.states().len()
            + self.site_joins.states().len()
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
        (Gate::new(&config.client, &config.limits, clock.clone(), |_| LimiterMetrics::unregistered()), clock)
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
            assert_eq!(g.check_request(&key(1), None, &Method::GET, "/"), Ok(()));
        }
        let limited = g.check_request(&key(1), None, &Method::GET, "/").expect_err("over the burst");
        assert_eq!(limited, Limited { rule: Rule::Requests, retry_after_secs: 1 });
        assert_eq!(g.check_request(&key(2), None, &Method::GET, "/"), Ok(()), "another client is not limited");
        clock.advance(Duration::from_millis(500));
        assert_eq!(g.check_request(&key(1), None, &Method::GET, "/"), Ok(()));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let (g, clock) = gate("[limits]\njoins_per_minute = 2\njoin_burst = 1\n");
        assert_eq!(g.check_join(&key(1), None), Ok(()));
        assert_eq!(g.check_join(&key(1), None).map_err(|l| l.retry_after_secs), Err(30));
        clock.advance(Duration::from_millis(29_500));
        assert_eq!(g.check_join(&key(1), None).map_err(|l| l.retry_after_secs), Err(1));
    }

    #[test]
    fn a_route_rule_applies_only_to_its_route() {
        let (g, _) = gate(
            "[limits]\nrequests_per_second = 1000\nburst = 1000\n[[limits.route]]\nmethod = \"POST\"\npath = \"/login\"\nper_minute = 1\n",
        );
        assert_eq!(g.check_request(&key(1), None, &Method::POST, "/login"), Ok(()));
        let limited = g.check_request(&key(1), None, &Method::POST, "/login").expect_err("second login");
        assert_eq!(limited.rule, Rule::Route("route:POST /login".into()));
        assert_eq!(g.check_request(&key(1), None, &Method::GET, "/login"), Ok(()));
        assert_eq!(g.check_request(&key(1), None, &Method::POST, "/inbox"), Ok(()));
    }

    #[test]
    fn a_flood_of_new_clients_stays_under_the_cap_and_is_swept() {
        let (g, clock) = gate("[limits]\nmax_tracked_clients = 10000\n");
        for n in 0..200_000 {
            let _ = g.check_request(&key(n), None, &Method::GET, "/");
        }
        assert_eq!(g.requests.states().len(), 10_000);
        assert_eq!(g.requests.states().map.len(), 10_000);
        assert_eq!(g.requests.states().overflowed.get(), 190_000);
        clock.advance(Duration::from_secs(5));
        g.sweep();
        assert_eq!(g.tracked(), 0, "recovered clients are forgotten");
    }

    #[test]
    fn a_full_table_never_turns_limiting_off() {
        let (g, _) = gate("[limits]\nmax_tracked_clients = 100\nrequests_per_second = 1\nburst = 2\n");
        for n in 0..100 {
            assert_eq!(g.check_request(&key(n), None, &Method::GET, "/"), Ok(()));
        }
        assert_eq!(g.requests.states().len(), 100, "the table is full");
        // A client the table cannot hold floods: it is limited on its overflow cell.
        let flooder = ClientKey([0xab; 16]);
        let passed = (0..50).filter(|_| g.check_request(&flooder, None, &Method::GET, "/").is_ok()).count();
        assert_eq!(passed, 2, "the burst, then 429s");
        // A flood of fresh keys cannot pass more than the cells' bursts in all.
        let flood = OVERFLOW_CELLS as u32 * 2 * 2;
        let fresh = (0..flood)
            .filter(|n| {
                let mut k = [0u8; 16];
                k[..4].copy_from_slice(&n.to_le_bytes());
                k[4] = 0x5a;
                g.check_request(&ClientKey(k), None, &Method::GET, "/").is_ok()
            })
            .count();
        assert!(fresh <= OVERFLOW_CELLS * 2, "{fresh} of {flood} fresh keys passed");
        assert!(fresh < flood as usize / 2, "most of the flood is refused: {fresh} passed");
    }

    #[test]
    fn polls_have_their_own_budget_and_ipv6_sites_their_own_join_limit() {
        let (g, _) = gate(
            "[limits]\nrequests_per_second = 1\nburst = 1\npolls_per_second = 1\npoll_burst = 3\n\
             joins_per_minute = 1\njoin_burst = 100\nsite_joins_per_minute = 1\nsite_join_burst = 2\n",
        );
        assert_eq!(g.check_request(&key(1), None, &Method::GET, "/"), Ok(()));
        assert!(g.check_request(&key(1), None, &Method::GET, "/").is_err(), "pages are limited");
        for _ in 0..3 {
            assert_eq!(g.check_poll(&key(1)), Ok(()), "polls are not spent by page views");
        }
        assert_eq!(g.check_poll(&key(1)).map_err(|l| l.rule), Err(Rule::Polls));
        let site = key(99);
        assert_eq!(g.check_join(&key(1), Some(&site)), Ok(()));
        assert_eq!(g.check_join(&key(2), Some(&site)), Ok(()));
        let third = g.check_join(&key(3), Some(&site));
        assert_eq!(third.map_err(|l| l.rule), Err(Rule::SiteJoins), "a third /64 of the same /48");
        assert_eq!(g.check_join(&key(3), None), Ok(()), "IPv4 clients have no site");
    }

    #[test]
    fn a_site_is_limited_across_its_64s_and_one_flooding_64_spends_only_its_own_budget() {
        let (g, clock) = gate(
            "[limits]\nrequests_per_second = 1\nburst = 2\nsite_requests_per_second = 2\nsite_request_burst = 4\n",
        );
        let (site, other_site) = (key(900), key(901));
        // One /64 floods: its own limit stops it after 2, and the site keeps the rest.
        let flooding = (0..10).filter(|_| g.check_request(&key(1), Some(&site), &Method::GET, "/").is_ok()).count();
        assert_eq!(flooding, 2);
        // Fresh /64s of the same site, one request each: the site has 2 of its 4 left.
        for n in 2..4 {
            assert_eq!(g.check_request(&key(n), Some(&site), &Method::GET, "/"), Ok(()));
        }
        let fifth = g.check_request(&key(4), Some(&site), &Method::GET, "/").expect_err("the site's burst is spent");
        assert_eq!(fifth, Limited { rule: Rule::SiteRequests, retry_after_secs: 1 });
        assert_eq!(g.check_request(&key(5), Some(&other_site), &Method::GET, "/"), Ok(()), "another site");
        assert_eq!(g.check_request(&key(6), None, &Method::GET, "/"), Ok(()), "IPv4 clients have no site");
        assert_eq!(g.check_poll(&key(7)), Ok(()), "polls are not the site's requests");
        clock.advance(Duration::from_millis(500));
        assert_eq!(g.check_request(&key(8), Some(&site), &Method::GET, "/"), Ok(()), "2 a second come back");
    }

    #[test]
    fn a_reconfigured_gate_keeps_the_state_of_unchanged_limits_and_applies_new_ones() {
        let (g, _) = gate("[limits]\nrequests_per_second = 1\nburst = 2\njoins_per_minute = 1\njoin_burst = 1\n");
        for _ in 0..2 {
            assert_eq!(g.check_request(&key(1), None, &Method::GET, "/"), Ok(()));
        }
        assert_eq!(g.check_join(&key(1), None), Ok(()));
        let new = Config::parse(
            "[client]\ndeny = [\"192.0.2.0/24\"]\n[limits]\nrequests_per_second = 1\nburst = 2\njoins_per_minute = 60\njoin_burst = 5\n",
        )
        .expect("config");
        let r = g.reconfigured(&new.client, &new.limits, |_| LimiterMetrics::unregistered());
        assert!(Arc::ptr_eq(&g.requests, &r.requests), "an unchanged limiter is carried over");
        assert!(r.check_request(&key(1), None, &Method::GET, "/").is_err(), "no fresh burst at reload");
        assert_eq!(r.check_join(&key(1), None), Ok(()), "the raised join limit applies at once");
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
