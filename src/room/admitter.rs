//! The admitter (DESIGN §3): every `tick`, one store call expires what is due and grants
//! the next waiters within the budget; then the room's cached figures and metrics are
//! refreshed from the result, so requests never ask the store for them.

use super::Room;
use crate::clock::now_ms;
use crate::shutdown::Shutdown;
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
    let report = match room.store.tick(now_ms).await {
        Ok(report) => report,
        Err(e) => {
            room.store_failed(&e);
            return;
        }
    };
    room.store_answered();
    let m = &room.metrics;
    m.abandoned.inc_by(report.abandoned);
    m.expired_grants.inc_by(report.expired_grants);
    for wait in &report.waits_ms {
        m.wait_seconds.observe(*wait as f64 / 1000.0);
    }
    if report.opened {
        tracing::info!(room = %room.name, "event opened: pre-queue drawn into a random order");
    }
    let (Ok(figures), Ok(limits)) = (room.store.figures(now_ms).await, room.store.limits().await) else {
        return;
    };
    // Estimates use the measured outflow once there is enough of it, else the configured one.
    let rate = figures.measured_per_minute.filter(|r| *r > 0).unwrap_or(limits.admit_per_minute);
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    m.waiting.set(to_i64(figures.waiting));
    m.active.set(to_i64(figures.active));
    m.pending.set(to_i64(figures.pending));
    m.outflow_measured.set(to_i64(figures.measured_per_minute.unwrap_or(0)));
    m.eta_seconds.set(to_i64(figures.waiting.saturating_mul(60).div_ceil(rate.max(1))));
    room.set_cached(limits, rate);
}
