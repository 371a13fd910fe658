//! The event stream behind `GET /admin/events` (Server-Sent Events): each room's figures once
//! per tick, every change applied (who, what, old, new), store outages and recoveries, and
//! lease hand-overs, so the operators' console and `usher admin watch` see the room move
//! without polling.
//!
//! Events are numbered and the last [`BUFFER`] are kept, so a subscriber that reconnects with
//! `Last-Event-ID` misses nothing that is still in the buffer. Publishing never waits for a
//! subscriber: a slow one is told how many events it lost and carries on.

use bytes::Bytes;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Events kept for resuming: at one figures event per room per second, a few minutes' worth.
pub const BUFFER: usize = 4096;
/// A comment line this often keeps idle connections (and the proxies between) open.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// One event, already in its wire form, and its id for resuming.
#[derive(Debug)]
struct Event {
    id: u64,
    wire: Bytes,
}

/// The hub: publishers on one side, subscribers on the other.
#[derive(Debug)]
pub struct Events {
    /// The buffer and the next id, under one lock with the send, so a subscriber's backlog
    /// and its live stream neither overlap nor leave a gap.
    state: Mutex<(VecDeque<Arc<Event>>, u64)>,
    live: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Self { state: Mutex::new((VecDeque::with_capacity(BUFFER), 1)), live: broadcast::channel(BUFFER).0 }
    }
}

impl Events {
    /// Publishes `data` (a JSON object) as an event of `kind`.
    pub fn publish(&self, kind: &'static str, data: &Value) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = state.1;
        state.1 += 1;
        let wire = Bytes::from(format!("id: {id}\nevent: {kind}\ndata: {data}\n\n"));
        let event = Arc::new(Event { id, wire });
        if state.0.len() == BUFFER {
            state.0.pop_front();
        }
        state.0.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.live.send(event);
    }

    /// The events after `last_id` still in the buffer, and the live stream from there on.
    fn subscribe(&self, last_id: Option<u64>) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let backlog = match last_id {
            Some(last) => state.0.iter().filter(|e| e.id > last).cloned().collect(),
            None => Vec::new(),
        };
        (backlog, self.live.subscribe())
    }

    /// A response body streaming events after `last_id` until the client goes or `stop` fires.
    pub fn stream(self: &Arc<Self>, last_id: Option<u64>, mut stop: crate::shutdown::Shutdown) -> EventBody {
        let (backlog, mut live) = self.subscribe(last_id);
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            // `retry` tells the browser's EventSource how soon to reconnect.
            let mut out = vec![Bytes::from_static(b"retry: 2000\n\n")];
            out.extend(backlog.iter().map(|e| e.wire.clone()));
            for bytes in out {
                if tx.send(bytes).await.is_err() {
                    return;
                }
            }
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            heartbeat.tick().await;
            loop {
                let next = tokio::select! {
                    received = live.recv() => match received {
                        Ok(event) => event.wire.clone(),
                        Err(broadcast::error::RecvError::Lagged(lost)) => {
                            Bytes::from(format!("event: lagged\ndata: {{\"lost\":{lost}}}\n\n"))
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
                    () = stop.wait() => return,
                };
                if tx.send(next).await.is_err() {
                    return;
                }
            }
        });
        EventBody { rx }
    }
}

/// The streamed body of `GET /admin/events`.
#[derive(Debug)]
pub struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

impl EventBody {
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Bytes>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_backlog_is_what_came_after_the_last_id_and_the_buffer_is_bounded() {
        let events = Events::default();
        for i in 0..(BUFFER as u64 + 10) {
            events.publish("figures", &json!({ "i": i }));
        }
        let (backlog, _) = events.subscribe(Some(BUFFER as u64 + 5));
        assert_eq!(
            backlog.iter().map(|e| e.id).collect::<Vec<_>>(),
            (BUFFER as u64 + 6..=BUFFER as u64 + 10).collect::<Vec<_>>()
        );
        let (all, _) = events.subscribe(Some(0));
        assert_eq!(all.len(), BUFFER, "only the last BUFFER are kept");
        assert_eq!(all[0].id, 11);
        let (none, _) = events.subscribe(None);
        assert!(none.is_empty(), "without Last-Event-ID the stream starts now");
    }

    #[test]
    fn an_event_is_in_the_sse_wire_form() {
        let events = Events::default();
        events.publish("change", &json!({ "who": "anne" }));
        let (backlog, _) = events.subscribe(Some(0));
        assert_eq!(&backlog[0].wire[..], b"id: 1\nevent: change\ndata: {\"who\":\"anne\"}\n\n");
    }
}
