//! The worker's lane for clients over their limits: a connection whose last answer was
//! `429` waits its turn here before its next request is handled.
//!
//! A worker serves its ready connections in turn. Under a flood of requests that are refused
//! (a /48 farming tickets on 32 keep-alive connections), each turn of the worker ran a
//! refused request of every flooding connection before it came back to a citizen's: the
//! citizen's answer waited behind 32 refusals per step of its request (the pinned attack
//! run: p50 1.9 ms, p99 3.9 ms, against 0.25 and 0.6 ms without the flood). Here refused
//! connections take one turn per round between them: the holder yields once, the others wait
//! parked (costing nothing), and whoever was ready meanwhile goes first. A lone client that
//! was refused once waits for nobody; when no one else is ready the flood still gets the
//! whole core. The turn is held across the yield only, never while a request is handled, so
//! a slow store or upstream cannot stall the lane.

use prometheus::IntCounter;
use tokio::sync::Semaphore;

/// One worker's lane (a worker is one thread, so one turn per worker).
pub struct RefusedLane {
    turn: Semaphore,
    /// Requests that found another in the lane and waited for it.
    waited: IntCounter,
}

impl RefusedLane {
    pub fn new(waited: IntCounter) -> Self {
        Self { turn: Semaphore::new(1), waited }
    }

    /// Returns once it is this request's turn: after every task that was ready before it, and
    /// after the requests already waiting here.
    pub async fn wait_turn(&self) {
        let permit = match self.turn.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.waited.inc();
                match self.turn.acquire().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed; should it be, there is no lane to keep.
                    Err(_) => return,
                }
            }
        };
        tokio::task::yield_now().await;
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// On one thread, as a worker runs: refused requests take one turn each, and a task that
    /// became ready while they wait runs before the second of them.
    #[tokio::test(flavor = "current_thread")]
    async fn refused_requests_take_turns_and_others_go_between() {
        let lane = Rc::new(RefusedLane::new(IntCounter::new("w", "w").expect("counter")));
        let order = Rc::new(RefCell::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let mut tasks = Vec::new();
                for name in ["refused-1", "refused-2", "refused-3"] {
                    let (lane, order) = (lane.clone(), order.clone());
                    tasks.push(tokio::task::spawn_local(async move {
                        lane.wait_turn().await;
                        order.borrow_mut().push(name);
                    }));
                }
                let citizen = {
                    let order = order.clone();
                    tokio::task::spawn_local(async move { order.borrow_mut().push("citizen") })
                };
                for task in tasks {
                    task.await.expect("refused task");
                }
                citizen.await.expect("citizen");
            })
            .await;
        let order = order.borrow().clone();
        assert_eq!(order.iter().position(|n| *n == "citizen"), Some(0), "{order:?}");
        assert_eq!(order[1..], ["refused-1", "refused-2", "refused-3"]);
        assert_eq!(lane.waited.get(), 2, "the second and third waited for the first");
    }
}
