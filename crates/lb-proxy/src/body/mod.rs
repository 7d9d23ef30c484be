//! The body types of requests and responses that hyper carries (an
//! HTTP/2 client, or an HTTP/2 endpoint); lb's HTTP/1.1 engine moves bodies
//! itself (`crate::http1::body`).
//!
//! They are enums rather than boxed trait objects, so the common cases (an
//! empty request body, a streamed upstream response) cost no allocation.

mod http1;
mod replay;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

pub(crate) use http1::{Http1Body, parse_trailers};
pub(crate) use replay::{BodyError, ReplayBody, ReplayStats};

/// The error type of proxied bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every body here returns from `poll_frame`.
pub(crate) type PolledFrame = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// A client's body fed by the task that reads it (an HTTP/1 client to an HTTP/2 endpoint).
pub(crate) type PipedBody = http_body_util::channel::Channel<Bytes, BoxError>;

/// What the proxy sends to an endpoint.
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// No body (most GETs): nothing to stream or replay.
    Empty,
    /// An HTTP/2 client's body, streamed and kept for replay up to a limit.
    Streamed(ReplayBody<Incoming>),
    /// An HTTP/1 client's body on its way to an HTTP/2 endpoint, kept the same way.
    Piped(ReplayBody<PipedBody>),
}

impl RequestBody {
    /// The body for another try, or `None` if it cannot be replayed.
    pub(crate) fn replay(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Streamed(body) => body.replay().map(RequestBody::Streamed),
            RequestBody::Piped(body) => body.replay().map(RequestBody::Piped),
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
            RequestBody::Piped(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streamed(body) => body.size_hint(),
            RequestBody::Piped(body) => body.size_hint(),
        }
    }
}

/// How a response body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// The upstream body was read to its end.
    Complete,
    /// The upstream body broke mid-stream.
    Failed,
    /// The body was dropped before its end (the client went away).
    Abandoned,
}

/// Something to run once when a response body ends or is dropped.
pub(crate) trait OnEnd: Send + Unpin + 'static {
    /// Called exactly once, with how the body stopped.
    fn on_end(self, end: BodyEnd);
}

/// An endpoint's response body, as hyper or lb's HTTP/1.1 engine reads it.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// From an HTTP/2 endpoint.
    H2(Incoming),
    /// From an HTTP/1.1 endpoint.
    H1(Box<Http1Body>),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        match self.get_mut() {
            UpstreamBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H1(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H2(body) => body.is_end_stream(),
            UpstreamBody::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H2(body) => body.size_hint(),
            UpstreamBody::H1(body) => body.size_hint(),
        }
    }
}

/// What the proxy sends back to the client.
pub(crate) enum ResponseBody<E: OnEnd> {
    /// An endpoint's body, streamed; `E` runs when it ends.
    Upstream {
        /// The body.
        body: UpstreamBody,
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
    pub(crate) fn text(text: impl Into<Bytes>) -> Self {
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
                        Poll::Ready(Some(Err(e)))
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
