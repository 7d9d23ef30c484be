//! Telling the caller's request body failing apart from the endpoint failing.
//!
//! A streamed request body can fail while reqwest sends it (the file being
//! read breaks, the producer gives up). reqwest then reports a request
//! error, much like a connection the endpoint broke; the body is watched so
//! that such an attempt is blamed on nobody (it counts as 499, client closed
//! request) instead of on the endpoint's breaker, outlier detector and
//! `request_errors_total`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Set once the caller's body has yielded an error.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyFailed(Arc<AtomicBool>);

impl BodyFailed {
    /// Whether the watched body failed.
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A body that remembers whether it failed.
struct Watched {
    inner: reqwest::Body,
    failed: BodyFailed,
}

impl Body for Watched {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.failed.0.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Watches `request`'s body if it is a stream (a byte body cannot fail);
/// returns the flag to read after sending.
pub(crate) fn watch(request: &mut reqwest::Request) -> Option<BodyFailed> {
    if request.body().is_none_or(|body| body.as_bytes().is_some()) {
        return None;
    }
    let inner = request.body_mut().take()?;
    let failed = BodyFailed::default();
    *request.body_mut() = Some(reqwest::Body::wrap(Watched { inner, failed: failed.clone() }));
    Some(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn request(body: reqwest::Body) -> reqwest::Request {
        let mut request = reqwest::Request::new(reqwest::Method::POST, "http://users/".parse().unwrap());
        *request.body_mut() = Some(body);
        request
    }

    #[tokio::test]
    async fn a_failing_stream_is_noticed_and_a_byte_body_is_left_alone() {
        let mut bytes = request(reqwest::Body::from("abc"));
        assert!(watch(&mut bytes).is_none());
        assert_eq!(bytes.body().and_then(reqwest::Body::as_bytes), Some(&b"abc"[..]));

        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data(Bytes::from_static(b"a"))), Err(std::io::Error::other("the caller broke"))];
        let stream = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut streamed = request(reqwest::Body::wrap(stream));
        let failed = watch(&mut streamed).expect("a stream is watched");
        let mut body = streamed.body_mut().take().unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(!failed.get(), "a good frame is no failure");
        assert!(body.frame().await.unwrap().is_err());
        assert!(failed.get());
    }
}
