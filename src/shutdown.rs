//! Shutdown signalling shared by every worker, runtime and task.
//!
//! A `watch` channel works across the per-core runtimes; each task that must stop holds a
//! [`Shutdown`] and selects on [`Shutdown::wait`].

use tokio::sync::watch;

/// Starts the shutdown of everything that holds a [`Shutdown`] made from it.
#[derive(Debug, Clone)]
pub struct Trigger(watch::Sender<bool>);

/// Resolves [`Shutdown::wait`] once the [`Trigger`] fires (or is dropped).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means: stop.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}
