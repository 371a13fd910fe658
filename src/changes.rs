//! Every change to a running usher, from the admin API or a reload (DESIGN §9), is one
//! structured log line per field (who, what, old → new) and one count in
//! `usher_changes_total`, so an SRE can line a graph's bend up with what an operator did.
//! Who is the operator's name (never a token), or `reload`.

use crate::config::{ClientConfig, LimitsConfig};
use crate::metrics::Metrics;
use crate::store::RoomLimits;
use std::fmt::Debug;

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

/// Records one changed field of `target` (`room:NAME`, `client` or `limits`).
pub fn record(metrics: &Metrics, source: Source, target: &str, field: &str, old: &str, new: &str) {
    tracing::info!(who = source.who(), source = source.label(), target, field, old, new, "change applied");
    metrics.changes.with_label_values(&[source.label(), target, field]).inc();
}

/// Records each field that differs; returns how many did.
fn record_fields(metrics: &Metrics, source: Source, target: &str, fields: &[(&str, String, String)]) -> usize {
    let mut changed = 0;
    for (field, old, new) in fields {
        if old != new {
            record(metrics, source, target, field, old, new);
            changed += 1;
        }
    }
    changed
}

fn pair<T: Debug>(field: &'static str, old: T, new: T) -> (&'static str, String, String) {
    (field, format!("{old:?}"), format!("{new:?}"))
}

/// A room's limits, field by field.
pub fn room_limits(metrics: &Metrics, source: Source, room: &str, old: &RoomLimits, new: &RoomLimits) -> usize {
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
    ];
    record_fields(metrics, source, &format!("room:{room}"), &fields)
}

/// The access lists and rate limits that a reload can change live; returns how many changed.
pub fn gate(metrics: &Metrics, old: (&ClientConfig, &LimitsConfig), new: (&ClientConfig, &LimitsConfig)) -> usize {
    let nets = |c: &ClientConfig, deny: bool| {
        let list = if deny { &c.deny } else { &c.allow };
        list.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let client =
        [pair("allow", nets(old.0, false), nets(new.0, false)), pair("deny", nets(old.0, true), nets(new.0, true))];
    let routes = |l: &LimitsConfig| {
        l.routes
            .iter()
            .map(|r| format!("{} {} {}/min", r.method.as_ref().map_or("*", http::Method::as_str), r.path, r.per_minute))
            .collect::<Vec<_>>()
    };
    let (o, n) = (old.1, new.1);
    let limits = [
        pair("requests_per_second", o.requests_per_second, n.requests_per_second),
        pair("burst", o.burst, n.burst),
        pair("joins_per_minute", o.joins_per_minute, n.joins_per_minute),
        pair("join_burst", o.join_burst, n.join_burst),
        pair("max_tracked_clients", o.max_tracked_clients, n.max_tracked_clients),
        pair("route", routes(o), routes(n)),
    ];
    record_fields(metrics, Source::Reload, "client", &client)
        + record_fields(metrics, Source::Reload, "limits", &limits)
}
