//! The admitter (DESIGN §3): every `tick`, one store call expires what is due and grants
//! the next waiters within the budget; then the room's cached figures and metrics are
//! refreshed from the result, so requests never ask the store for them.

use super::Room;
use super::adaptive::Answers;
use crate::clock::now_ms;
use crate::shutdown::Shutdown;
use crate::store::TickInput;
use std::sync::Arc;

/// Runs one room's admitter until shutdown.
pub async fn run(room: Arc<Room>, mut shutdown: Shutdown) {
    let mut interval = tokio::time::interval(room.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick(&room, now_ms()).await,
            () = shutdown.wait() => return,
        }
    }
}

/// One admitter step for `room` at `now_ms`.
pub async fn tick(room: &Room, now_ms: u64) {
    let bound_pm = room.no_show_bound_pm.load(std::sync::atomic::Ordering::Relaxed);
    let release_pm = super::no_show::release_pm(room.no_shows.share_pm(), bound_pm);
    // The adaptive outflow's answers ride in the tick: every node's are summed in the store,
    // and the one that admits takes the sums once a period (DESIGN §8).
    let answers = room.adaptive.as_ref().map(|a| (a.recorder.drain(), a.due(now_ms)));
    let input = TickInput {
        release_pm,
        answers: answers.as_ref().map_or(&[][..], |(a, _)| &a.0[..]),
        take_answers: answers.as_ref().is_some_and(|(_, due)| *due),
    };
    let started = std::time::Instant::now();
    let result = room.store.tick_with(now_ms, &input).await;
    let took = started.elapsed();
    room.metrics.tick_seconds.observe(took.as_secs_f64());
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if let (Some(adaptive), Some((drained, _))) = (&room.adaptive, &answers) {
                adaptive.recorder.restore(drained);
            }
            room.store_failed(&e);
            return;
        }
    };
    room.store_answered();
    let m = &room.metrics;
    m.abandoned.inc_by(report.abandoned);
    m.expired_grants.inc_by(report.expired_grants);
    m.away.inc_by(report.away);
    m.returned.inc_by(report.returned);
    for away in &report.away_ms {
        m.away_seconds.observe(*away as f64 / 1000.0);
    }
    // Read only when someone was granted (a copy of the limits).
    let opens_at = if report.waits_ms.is_empty() { None } else { room.limits().opens_at_ms };
    for wait in &report.waits_ms {
        m.wait_seconds.observe(*wait as f64 / 1000.0);
        // Against what a newcomer was shown at join; a place drawn at an opening was shown
        // none (its order was not known yet).
        let joined = now_ms.saturating_sub(*wait);
        if opens_at.is_some_and(|opens| joined < opens) {
            continue;
        }
        if let Some(shown) = room.estimates.shown_at(joined).filter(|s| *s > 0) {
            m.eta_accuracy.observe(*wait as f64 / 1000.0 / shown as f64);
        }
    }
    let no_shows = room.no_shows.record(now_ms, report.granted, report.expired_grants);
    m.no_show_share.set(no_shows as f64 / 1000.0);
    if let Some(holder) = report.lease {
        m.events.publish("lease", &serde_json::json!({ "room": room.name, "this_node": holder }));
    }
    if report.opened {
        let tick_ms = took.as_millis();
        tracing::info!(room = %room.name, tick_ms, "event opened: pre-queue drawn into a random order");
    }
    let seen = room.limits_changes();
    let (Ok(figures), Ok(mut limits)) = (room.store.figures(now_ms).await, room.store.limits().await) else {
        return;
    };
    if let Some(back) = break_glass_over(room, &limits, now_ms).await {
        limits = back;
    }
    // Estimates use the measured outflow once there is enough of it, else the configured one.
    let rate = figures.measured_per_minute.filter(|r| *r > 0).unwrap_or(limits.admit_per_minute);
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    m.waiting.set(to_i64(figures.waiting));
    m.held.set(to_i64(figures.held));
    m.active.set(to_i64(figures.active));
    m.pending.set(to_i64(figures.pending));
    m.outflow_measured.set(to_i64(figures.measured_per_minute.unwrap_or(0)));
    let share = return_share_per_mille(figures.returned_total, figures.abandoned_total);
    room.return_share_pm.store(share, std::sync::atomic::Ordering::Relaxed);
    let tail = expected_ahead(figures.waiting, figures.held, share);
    let eta = tail.saturating_mul(60).div_ceil(rate.max(1));
    m.eta_seconds.set(to_i64(eta));
    // What a newcomer joining now is shown (with the waiting ahead, as `Room::eta_secs`).
    room.estimates.note(now_ms, rate, (tail + 1).saturating_mul(60).div_ceil(rate.max(1)));
    let release = limits.admit_per_minute.saturating_mul(release_pm) / 1000;
    m.outflow_release.set(to_i64(release));
    m.events.publish(
        "figures",
        &serde_json::json!({
            "room": room.name,
            "mode": limits.mode.as_str(),
            "waiting": figures.waiting,
            "held": figures.held,
            "active": figures.active,
            "pending_grants": figures.pending,
            "max_active": limits.max_active,
            "configured_per_minute": room.configured_per_minute.load(std::sync::atomic::Ordering::Relaxed),
            "effective_per_minute": limits.admit_per_minute,
            "release_per_minute": release,
            "no_show_share": no_shows as f64 / 1000.0,
            "measured_per_minute": figures.measured_per_minute,
            "eta_tail_seconds": eta,
        }),
    );
    room.set_cached_from_tick(limits, rate, seen);
    if let (Some(adaptive), Some(period)) = (&room.adaptive, report.answers) {
        adapt(room, adaptive, &Answers::from_slice(&period).unwrap_or_default()).await;
    }
}

/// A break-glass `off` whose deadline has passed: the room returns to the mode it had, by
/// itself, so a forgotten break-glass cannot leave the mailbox unprotected. Every node may
/// see it; the write is the same from each. Returns the limits now in force.
async fn break_glass_over(
    room: &Room,
    limits: &crate::store::RoomLimits,
    now_ms: u64,
) -> Option<crate::store::RoomLimits> {
    let glass = limits.break_glass.filter(|g| now_ms >= g.until_ms)?;
    let mut back = limits.clone();
    back.break_glass = None;
    if back.mode == crate::config::RoomMode::Off {
        back.mode = glass.then;
    }
    match room.apply(limits, &back).await {
        Ok(now) => {
            let target = format!("room:{}", room.name);
            let (old, new) = (limits.mode.as_str(), now.mode.as_str());
            tracing::info!(
                who = "deadline",
                source = "break-glass",
                target,
                field = "mode",
                old,
                new,
                "change applied"
            );
            let event = serde_json::json!({
                "who": "deadline", "source": "break-glass", "target": target, "field": "mode", "old": old, "new": new,
            });
            room.metrics.events.publish("change", &event);
            Some(now)
        }
        Err(e) => {
            room.store_failed(&e);
            None
        }
    }
}

/// Once a period, the adaptive outflow's decision from every node's answers: the new
/// `admit_per_minute` is applied as an operator's change would be (the store, this node's
/// copy, a `change applied` line).
async fn adapt(room: &Room, adaptive: &super::adaptive::Adaptive, answers: &Answers) {
    let old = room.limits();
    let Some((new, reason)) = adaptive.decide(&old, answers) else { return };
    room.metrics.adaptive_decision(reason.label());
    if let Some(lines) = adaptive.lines() {
        room.metrics.adaptive_lines(&lines);
    }
    if new.admit_per_minute == old.admit_per_minute {
        return;
    }
    match room.apply(&old, &new).await {
        Ok(_) => {
            let event = serde_json::json!({
                "who": "adaptive", "source": "adaptive", "target": format!("room:{}", room.name),
                "field": "admit_per_minute", "old": old.admit_per_minute.to_string(),
                "new": new.admit_per_minute.to_string(), "reason": reason.label(),
            });
            room.metrics.events.publish("change", &event);
            tracing::info!(
            who = "adaptive",
            source = "adaptive",
            target = %format!("room:{}", room.name),
            field = "admit_per_minute",
            old = old.admit_per_minute,
            new = new.admit_per_minute,
            reason = reason.label(),
            "change applied"
            )
        }
        Err(e) => room.store_failed(&e),
    }
}

/// The share of away waiters that come back within `hold`, in per mille, as measured over
/// the room's life. Until a few have gone either way it leans on one assumed return and one
/// assumed abandonment (Laplace's rule), so one early return does not promise everyone back.
pub fn return_share_per_mille(returned: u64, abandoned: u64) -> u64 {
    (returned + 1).saturating_mul(1000) / (returned + abandoned + 2)
}

/// How many of `ahead` are expected to take a turn before this waiter: all those present,
/// and of the `away_ahead` the share that comes back (the rest are abandoned after `hold`
/// and never take one). This is what the ETA counts; the page still shows `ahead`, which
/// never grows.
pub fn expected_ahead(ahead: u64, away_ahead: u64, share_per_mille: u64) -> u64 {
    let away = away_ahead.min(ahead);
    (ahead - away) + (away.saturating_mul(share_per_mille)).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_counts_the_away_ahead_by_the_share_that_comes_back() {
        assert_eq!(return_share_per_mille(0, 0), 500);
        assert_eq!(return_share_per_mille(98, 0), 990);
        assert_eq!(return_share_per_mille(0, 98), 10);
        assert_eq!(expected_ahead(100, 0, 500), 100);
        assert_eq!(expected_ahead(100, 40, 500), 80);
        assert_eq!(expected_ahead(100, 40, 0), 60);
        assert_eq!(expected_ahead(10, 40, 1000), 10, "never more than ahead");
    }
}
