//! Every change to a running usher, from the admin API or a reload (DESIGN §9), is one
//! structured log line per field (who, what, old → new), one count in `usher_changes_total`
//! and, with `admin.audit_file`, one line in the audit trail, so an SRE can line a graph's
//! bend up with what an operator did and the data protection officer can see who did it.
//! Who is the operator's name (never a token), or `reload`. Refused admin requests are written
//! to the audit trail too.

use crate::audit::{AuditFile, Entry};
use crate::config::{ClientConfig, LimitsConfig};
use crate::metrics::Metrics;
use crate::store::RoomLimits;
use std::fmt::Debug;
use std::sync::Arc;

/// Where a change came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The admin API, with the name of the operator whose token authorised it.
    Api { operator: &'a str },
    /// `SIGHUP` re-read the configuration file.
    Reload,
}

impl Source<'_> {
    fn label(&self) -> &'static str {
        match self {
            Source::Api { .. } => "api",
            Source::Reload => "reload",
        }
    }

    fn who(&self) -> &str {
        match self {
            Source::Api { operator } => operator,
            Source::Reload => "reload",
        }
    }
}

/// Where changes are recorded: the log, the metrics, the audit trail.
pub struct Changes {
    metrics: Arc<Metrics>,
    pub audit: AuditFile,
}

impl Changes {
    pub fn new(metrics: Arc<Metrics>, audit: AuditFile) -> Self {
        Self { metrics, audit }
    }

    /// Records one changed field of `target` (`room:NAME`, `client`, `limits` or `operator:NAME`).
    pub fn record(&self, source: Source, target: &str, field: &str, old: &str, new: &str) {
        tracing::info!(who = source.who(), source = source.label(), target, field, old, new, "change applied");
        self.metrics.changes.with_label_values(&[source.label(), target, field]).inc();
        let event = serde_json::json!({ "who": source.who(), "source": source.label(), "target": target, "field": field, "old": old, "new": new });
        self.metrics.events.publish("change", &event);
        self.audit.write(&Entry {
            who: source.who(),
            source: source.label(),
            target,
            field,
            old: Some(old),
            new: Some(new),
            outcome: "applied",
        });
    }

    /// An admin request that changed nothing because it was refused (401, 403, 400, 404) or
    /// failed (503): the audit trail keeps attempts as well as changes. `who` is the
    /// operator's name when the token was known, else `unknown` or `-` (no token).
    pub fn refused(&self, who: &str, target: &str, action: &str, outcome: &str) {
        self.audit.write(&Entry { who, source: "api", target, field: action, old: None, new: None, outcome });
    }

    /// Records each field that differs; returns how many did.
    fn record_fields(&self, source: Source, target: &str, fields: &[(&str, String, String)]) -> usize {
        let mut changed = 0;
        for (field, old, new) in fields {
            if old != new {
                self.record(source, target, field, old, new);
                changed += 1;
            }
        }
        changed
    }

    /// A room's limits, field by field.
    pub fn room_limits(&self, source: Source, room: &str, old: &RoomLimits, new: &RoomLimits) -> usize {
        let fields = [
            pair("max_active", old.max_active, new.max_active),
            pair("admit_per_minute", old.admit_per_minute, new.admit_per_minute),
            ("mode", old.mode.as_str().to_string(), new.mode.as_str().to_string()),
            pair("opens_at_ms", old.opens_at_ms, new.opens_at_ms),
            pair("message", &old.message, &new.message),
            pair("session_idle", old.session_idle, new.session_idle),
            pair("session_max", old.session_max, new.session_max),
            pair("waiter_ttl", old.waiter_ttl, new.waiter_ttl),
            pair("claim_window", old.claim_window, new.claim_window),
            pair("hold", old.hold, new.hold),
            pair("tickets_per_client", old.tickets_per_client, new.tickets_per_client),
            pair("break_glass", old.break_glass, new.break_glass),
        ];
        self.record_fields(source, &format!("room:{room}"), &fields)
    }

    /// The access lists and rate limits that a reload can change live; returns how many changed.
    pub fn gate(&self, old: (&ClientConfig, &LimitsConfig), new: (&ClientConfig, &LimitsConfig)) -> usize {
        let nets = |c: &ClientConfig, deny: bool| {
            let list = if deny { &c.deny } else { &c.allow };
            list.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        let client =
            [pair("allow", nets(old.0, false), nets(new.0, false)), pair("deny", nets(old.0, true), nets(new.0, true))];
        let routes = |l: &LimitsConfig| {
            l.routes
                .iter()
                .map(|r| {
                    format!("{} {} {}/min", r.method.as_ref().map_or("*", http::Method::as_str), r.path, r.per_minute)
                })
                .collect::<Vec<_>>()
        };
        let (o, n) = (old.1, new.1);
        let limits = [
            pair("requests_per_second", o.requests_per_second, n.requests_per_second),
            pair("burst", o.burst, n.burst),
            pair("site_requests_per_second", o.site_requests_per_second, n.site_requests_per_second),
            pair("site_request_burst", o.site_request_burst, n.site_request_burst),
            pair("polls_per_second", o.polls_per_second, n.polls_per_second),
            pair("poll_burst", o.poll_burst, n.poll_burst),
            pair("joins_per_minute", o.joins_per_minute, n.joins_per_minute),
            pair("join_burst", o.join_burst, n.join_burst),
            pair("site_joins_per_minute", o.site_joins_per_minute, n.site_joins_per_minute),
            pair("site_join_burst", o.site_join_burst, n.site_join_burst),
            pair("max_tracked_clients", o.max_tracked_clients, n.max_tracked_clients),
            pair("route", routes(o), routes(n)),
        ];
        self.record_fields(Source::Reload, "client", &client) + self.record_fields(Source::Reload, "limits", &limits)
    }
}

fn pair<T: Debug>(field: &'static str, old: T, new: T) -> (&'static str, String, String) {
    (field, format!("{old:?}"), format!("{new:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_reload_sees_a_change_to_any_rate_limit_of_the_gate() {
        let changes = Changes::new(Arc::new(Metrics::new(1)), AuditFile::open(None).expect("no audit file"));
        let old = Config::parse("").expect("config");
        for limits in [
            "requests_per_second = 7",
            "burst = 7",
            "site_requests_per_second = 7",
            "site_request_burst = 7",
            "polls_per_second = 7",
            "poll_burst = 7",
            "joins_per_minute = 7",
            "join_burst = 7",
            "site_joins_per_minute = 7",
            "site_join_burst = 7",
            "max_tracked_clients = 700",
        ] {
            let new = Config::parse(&format!("[limits]\n{limits}\n")).expect("config");
            let seen = changes.gate((&old.client, &old.limits), (&new.client, &new.limits));
            assert_eq!(seen, 1, "`{limits}` must swap the gate");
        }
    }
}
