//! Keeping a request body so a call that never left can be sent again.
//!
//! A unary gRPC call's body is complete when the call starts; a streaming
//! call's body is not. So the frames already available are read without
//! waiting: if the body ends there, it is kept and can be replayed; if it
//! would wait, the call is a stream, and it is sent once, the frames read
//! so far put back in front of the rest.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body::{Body, Frame, SizeHint};
use tonic::body::Body as TonicBody;

/// What reading the ready part of a body found.
pub(crate) enum Buffered {
    /// The whole body: it can be sent any number of times.
    Complete(Bytes),
    /// A body still streaming: send it once.
    Streaming(TonicBody),
}

/// Bodies larger than this are never kept for a replay.
const MAX_REPLAY_BYTES: usize = 4 * 1024 * 1024;

/// Reads the frames `body` has ready now, without waiting.
pub(crate) fn buffer(mut body: TonicBody) -> Result<Buffered, tonic::Status> {
    let mut data = BytesMut::new();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).now_or_never();
        match next {
            Some(None) => return Ok(Buffered::Complete(data.freeze())),
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    if data.len() > MAX_REPLAY_BYTES {
                        return Ok(Buffered::Streaming(prefixed(data.freeze(), body)));
                    }
                }
                // Request trailers are rare in gRPC; such a call is sent once, as is.
                Err(trailers_frame) => {
                    let rest = TonicBody::new(Prefixed { prefix: Some(trailers_frame), rest: body });
                    return Ok(Buffered::Streaming(prefixed(data.freeze(), rest)));
                }
            },
            Some(Some(Err(status))) => return Err(status),
            None => return Ok(Buffered::Streaming(prefixed(data.freeze(), body))),
        }
    }
}

fn prefixed(data: Bytes, rest: TonicBody) -> TonicBody {
    if data.is_empty() { rest } else { TonicBody::new(Prefixed { prefix: Some(Frame::data(data)), rest }) }
}

/// A body that yields one frame, then another body.
struct Prefixed {
    prefix: Option<Frame<Bytes>>,
    rest: TonicBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(frame) = self.prefix.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        if let Some(n) = self.prefix.as_ref().and_then(Frame::data_ref).map(|d| d.len() as u64) {
            hint.set_lower(hint.lower() + n);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
        }
        hint
    }
}

/// A fresh body holding `data`.
pub(crate) fn replay(data: &Bytes) -> TonicBody {
    if data.is_empty() { TonicBody::empty() } else { TonicBody::new(http_body_util::Full::new(data.clone())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_complete_body_is_kept_whole() {
        let body = TonicBody::new(http_body_util::Full::new(Bytes::from_static(b"hello")));
        let Ok(Buffered::Complete(data)) = buffer(body) else { panic!("a full body is complete") };
        assert_eq!(&data[..], b"hello");
        let again = replay(&data).collect().await.unwrap().to_bytes();
        assert_eq!(&again[..], b"hello");
    }

    #[tokio::test]
    async fn a_streaming_body_is_sent_once_with_nothing_lost() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first ")))).await.unwrap();
        let stream = http_body_util::StreamBody::new(tokio_stream_like(rx));
        let Ok(Buffered::Streaming(body)) = buffer(TonicBody::new(stream)) else { panic!("a stream waits") };
        tx.send(Ok(Frame::data(Bytes::from_static(b"second")))).await.unwrap();
        drop(tx);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"first second");
    }

    fn tokio_stream_like<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send + 'static {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
