//! The body types on both sides of the proxy.
//!
//! Both are enums rather than boxed trait objects, so the common cases (an
//! empty request body, a streamed upstream response) cost no allocation, and
//! both are generic over the HTTP version hyper speaks on either side.

mod replay;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

pub use replay::{BodyError, ReplayBody, ReplayStats};

/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every body here returns from `poll_frame`.
pub type PolledFrame = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// What the proxy sends to an endpoint.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (most GETs): nothing to stream or replay.
    Empty,
    /// The client's body, streamed and kept for replay up to a limit.
    Streamed(ReplayBody<Incoming>),
}

impl RequestBody {
    /// The body for another try, or `None` if it cannot be replayed.
    pub fn replay(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Streamed(body) => body.replay().map(RequestBody::Streamed),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Streamed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streamed(body) => body.size_hint(),
        }
    }
}

/// How a response body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The upstream body was read to its end.
    Complete,
    /// The upstream body broke mid-stream.
    Failed,
    /// The body was dropped before its end (the client went away).
    Abandoned,
}

/// Something to run once when a response body ends or is dropped.
pub trait OnEnd: Send + Unpin + 'static {
    /// Called exactly once, with how the body stopped.
    fn on_end(self, end: BodyEnd);
}

/// What the proxy sends back to the client.
pub enum ResponseBody<E: OnEnd> {
    /// An endpoint's body, streamed; `E` runs when it ends.
    Upstream {
        /// The body.
        body: Incoming,
        /// The end hook; taken when it runs.
        on_end: Option<E>,
    },
    /// A response the proxy made itself (errors, admin pages).
    Local(Full<Bytes>),
}

impl<E: OnEnd> std::fmt::Debug for ResponseBody<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Upstream { .. } => f.write_str("ResponseBody::Upstream"),
            ResponseBody::Local(_) => f.write_str("ResponseBody::Local"),
        }
    }
}

impl<E: OnEnd> ResponseBody<E> {
    /// A local body holding `text`.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Full::new(text.into()))
    }

    fn finish(&mut self, end: BodyEnd) {
        if let ResponseBody::Upstream { on_end, .. } = self
            && let Some(hook) = on_end.take()
        {
            hook.on_end(end);
        }
    }
}

impl<E: OnEnd> Body for ResponseBody<E> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        match this {
            ResponseBody::Local(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            ResponseBody::Upstream { body, .. } => {
                let polled = Pin::new(body).poll_frame(cx);
                match polled {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        this.finish(BodyEnd::Complete);
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(e))) => {
                        this.finish(BodyEnd::Failed);
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let ResponseBody::Upstream { body, .. } = this
                            && body.is_end_stream()
                        {
                            this.finish(BodyEnd::Complete);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Local(full) => full.size_hint(),
        }
    }
}

impl<E: OnEnd> Drop for ResponseBody<E> {
    fn drop(&mut self) {
        // The client went away or the body ended: the request is over either way.
        // A body never polled because it was empty from the start still counts as read.
        let end = match self {
            ResponseBody::Upstream { body, .. } if body.is_end_stream() => BodyEnd::Complete,
            _ => BodyEnd::Abandoned,
        };
        self.finish(end);
    }
}
