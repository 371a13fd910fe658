//! The response body type: either the upstream's streamed body, passed through untouched,
//! or a small body usher made itself. An enum rather than a boxed trait object, so the
//! forwarding path allocates nothing for it.

pub use crate::idle::BoxError;
use crate::idle::IdleBody;
use crate::pool::Checkin;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
pub enum Body {
    /// Streamed from the upstream; its connection goes back to the pool at the end.
    Upstream(IdleBody<Incoming>, Option<Checkin>),
    /// A complete body held in memory (`None` once sent).
    Full(Option<Bytes>),
    /// The admin event stream, until the client goes or usher stops.
    Events(crate::events::EventBody),
}

impl Body {
    pub fn empty() -> Self {
        Body::Full(None)
    }

    pub fn from_static(text: &'static str) -> Self {
        Body::Full(Some(Bytes::from_static(text.as_bytes())))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::from(Bytes::from(text))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Upstream(incoming, checkin) => {
                let polled = Pin::new(&mut *incoming).poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => incoming.is_end_stream(),
                    Poll::Ready(Some(Err(_))) | Poll::Pending => false,
                };
                if ended && let Some(checkin) = checkin.take() {
                    checkin.done();
                }
                polled
            }
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Events(events) => events.poll_next(cx).map(|next| next.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(incoming, _) => incoming.is_end_stream(),
            Body::Full(bytes) => bytes.is_none(),
            Body::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream(incoming, _) => incoming.size_hint(),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Events(_) => SizeHint::default(),
        }
    }
}
