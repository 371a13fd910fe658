//! Idle timeouts for streamed bodies, in either direction (the client's upload to the
//! upstream, the upstream's response to the client). A leaf module: the body and pool types
//! both wrap their bodies in [`IdleBody`].

use http_body::{Frame, SizeHint};
use prometheus::IntCounter;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The error type of usher's bodies: hyper's, or [`Stalled`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body that moved no bytes for `upstream.body_idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes for {0:?}")]
pub struct Stalled(pub Duration);

impl Stalled {
    /// Whether `error`, or any error it wraps, is a stall.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<Stalled>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// A streamed body that ends with [`Stalled`] when no frame comes for `timeout`: a peer that
/// stops sending in the middle of a body (an upload, or an upstream's response) cannot hold
/// a connection, a pool slot and a request in flight for ever.
///
/// The timer is made the first time the body has to wait, and re-armed only when it waits
/// again after progress, so a body that arrives in one piece costs no timer at all.
pub struct IdleBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    /// Counts the stall (the body's direction's metric).
    stalled: IntCounter,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, timeout: Duration, stalled: IntCounter) -> Self {
        Self { inner, timeout, sleep: None, progressed: false, stalled }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for IdleBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleBody").field("inner", &self.inner).field("timeout", &self.timeout).finish()
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let deadline = Instant::now() + this.timeout;
        let sleep = match &mut this.sleep {
            Some(sleep) => {
                if this.progressed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => this.sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        this.progressed = false;
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.stalled.inc();
                Poll::Ready(Some(Err(Box::new(Stalled(this.timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
