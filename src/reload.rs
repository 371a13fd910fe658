//! `SIGHUP`: re-read the configuration file and apply what can change without a restart.
//!
//! Room limits change live, in the store, so every node and every waiter sees them; tickets,
//! sessions and connections are untouched. Changes that need a restart (listeners, store,
//! upstreams, secrets, client lists and limits, added or removed rooms) are reported, not
//! half-applied. A broken file is rejected and the running configuration stays.

use crate::Running;
use crate::config::Config;
use crate::store::RoomLimits;

/// What a reload did: per room, whether it changed; and what still needs a restart.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub rooms_changed: Vec<String>,
    pub needs_restart: Vec<String>,
}

/// Applies `new` over `old` to a running usher.
pub async fn apply(running: &Running, old: &Config, new: &Config) -> Reloaded {
    let mut done = Reloaded::default();
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    for (section, changed) in [
        ("listen", !same(&old.listen, &new.listen)),
        ("admin", !same(&old.admin.listen, &new.admin.listen)),
        ("store", old.store != new.store),
        ("upstream", !same(&old.upstream, &new.upstream)),
        ("secret", !same(&old.secret, &new.secret)),
        ("client", !same(&old.client, &new.client)),
        ("limits", !same(&old.limits, &new.limits)),
    ] {
        if changed {
            done.needs_restart.push(section.to_string());
        }
    }
    for room_config in &new.rooms {
        let Some(room) = running.rooms.get(&room_config.name) else {
            done.needs_restart.push(format!("room {} (added)", room_config.name));
            continue;
        };
        let old_limits = room.limits();
        let limits = RoomLimits::from_config(room_config, new.limits.tickets_per_client);
        if limits == old_limits {
            continue;
        }
        match room.apply(limits.clone()).await {
            Ok(()) => {
                crate::admin_api::log_change("reload", &room.name, &old_limits, &limits);
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
