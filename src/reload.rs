//! `SIGHUP`: re-read the configuration file and apply what can change without a restart.
//!
//! Room limits change live, in the store, so every node and every waiter sees them; the access
//! lists and rate limits change by swapping the gate (limiters whose quota is unchanged keep
//! their state); operators are added, changed and revoked from the next admin request on.
//! Tickets, sessions and connections are untouched. Changes that need a restart (listeners,
//! store, upstreams, secrets, how clients are identified, added or removed rooms) are
//! reported, not half-applied. A broken file is rejected and the running configuration stays.

use crate::Running;
use crate::changes::Source;
use crate::config::{ClientConfig, Config, RoomConfig};
use crate::store::RoomLimits;
use std::sync::Arc;

/// What a reload did: what changed live, and what still needs a restart.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub rooms_changed: Vec<String>,
    /// The access lists or rate limits changed.
    pub gate_changed: bool,
    pub needs_restart: Vec<String>,
}

/// Applies `new` over `old` to a running usher.
pub async fn apply(running: &Running, old: &Config, new: &Config) -> Reloaded {
    let mut done = Reloaded::default();
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    // How a client is identified is fixed at start: the listeners and each worker's key
    // derivation hold it. Allow and deny lists are not part of it.
    let identification = |c: &ClientConfig| (c.trusted_proxies.clone(), c.ipv4_prefix, c.ipv6_prefix, c.hash_rotation);
    for (section, changed) in [
        ("listen", !same(&old.listen, &new.listen)),
        (
            "admin",
            !same(
                &(old.admin.listen, old.admin.header_read_timeout, &old.admin.audit_file),
                &(new.admin.listen, new.admin.header_read_timeout, &new.admin.audit_file),
            ),
        ),
        ("store", old.store != new.store),
        ("upstream", !same(&old.upstream, &new.upstream)),
        ("secret", !same(&old.secret, &new.secret)),
        (
            "client (trusted_proxies, prefixes, hash_rotation)",
            identification(&old.client) != identification(&new.client),
        ),
    ] {
        if changed {
            done.needs_restart.push(section.to_string());
        }
    }

    // Operators added, changed or revoked take effect on the next admin request.
    running.admin_state.api.reload(&old.admin, &new.admin);

    let metrics = &running.metrics;
    if running.changes.gate((&old.client, &old.limits), (&new.client, &new.limits)) > 0 {
        let gate = running.gate.load().reconfigured(&new.client, &new.limits, |rule| metrics.limiter(rule));
        running.gate.store(Arc::new(gate));
        done.gate_changed = true;
    }

    for room_config in &new.rooms {
        let (Some(room), Some(old_config)) =
            (running.rooms.get(&room_config.name), old.rooms.iter().find(|r| r.name == room_config.name))
        else {
            done.needs_restart.push(format!("room {} (added)", room_config.name));
            continue;
        };
        room.reconfigure(room_config);
        let fixed = |r: &RoomConfig| {
            format!("{:?}", (&r.hosts, &r.paths, &r.bypass, &r.logout_path, r.tick, &r.template, &r.adaptive))
        };
        if fixed(old_config) != fixed(room_config) {
            done.needs_restart
                .push(format!("room {} (hosts, paths, bypass, logout_path, tick, template or adaptive)", room.name));
        }
        // Only what the file changed is applied, over the live limits: a reload for another
        // reason must not undo what an operator set through the admin API (a pause, say).
        let live = room.limits();
        let limits = merge(
            &live,
            &RoomLimits::from_config(old_config, old.limits.tickets_per_client),
            &RoomLimits::from_config(room_config, new.limits.tickets_per_client),
        );
        if limits == live {
            continue;
        }
        match room.apply(&live, &limits).await {
            Ok(_) => {
                running.changes.room_limits(Source::Reload, &room.name, &live, &limits);
                done.rooms_changed.push(room.name.clone());
            }
            Err(e) => tracing::warn!(room = %room.name, error = %e, "reload could not change the room"),
        }
    }
    for room in running.rooms.all() {
        if !new.rooms.iter().any(|r| r.name == room.name) {
            done.needs_restart.push(format!("room {} (removed)", room.name));
        }
    }
    done
}

/// `live` with each field that differs between the old and the new file set to the new value.
fn merge(live: &RoomLimits, old: &RoomLimits, new: &RoomLimits) -> RoomLimits {
    let mut out = live.clone();
    macro_rules! take_changed {
        ($($field:ident),*) => { $( if old.$field != new.$field { out.$field = new.$field.clone(); } )* };
    }
    take_changed!(
        max_active,
        admit_per_minute,
        session_idle,
        session_max,
        waiter_ttl,
        claim_window,
        hold,
        mode,
        opens_at_ms,
        message,
        tickets_per_client
    );
    out
}

/// The configuration in force after [`apply`]: `old`, with what `apply` changed live taken
/// from `new`. What needs a restart stays as it runs, so the next reload reports it again.
pub fn in_force(old: &Config, new: &Config) -> Config {
    let mut config = old.clone();
    config.client.allow.clone_from(&new.client.allow);
    config.client.deny.clone_from(&new.client.deny);
    config.limits = new.limits.clone();
    config.admin.operators.clone_from(&new.admin.operators);
    config.admin.metrics_need_token = new.admin.metrics_need_token;
    for room in &mut config.rooms {
        if let Some(n) = new.rooms.iter().find(|r| r.name == room.name) {
            room.max_active = n.max_active;
            room.admit_per_minute = n.admit_per_minute;
            room.session_idle = n.session_idle;
            room.session_max = n.session_max;
            room.waiter_ttl = n.waiter_ttl;
            room.claim_window = n.claim_window;
            room.hold = n.hold;
            room.mode = n.mode;
            room.opens_at = n.opens_at;
            room.message.clone_from(&n.message);
        }
    }
    config
}
