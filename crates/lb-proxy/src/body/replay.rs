//! A request body that streams to the endpoint and keeps a bounded copy so a
//! failed try can be sent again.
//!
//! Data flows straight through with the source's backpressure; nothing waits
//! for the whole body. The first `limit` bytes are also kept; once the body
//! grows past that, the copy is dropped and the request is no longer
//! replayable (it is simply not retried).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::{BoxError, PolledFrame};

/// Counters about replay buffering, shared by every request of a proxy.
#[derive(Debug, Default)]
pub(crate) struct ReplayStats {
    peak_bytes: AtomicUsize,
}

impl ReplayStats {
    /// The most bytes any one request body ever held in its replay buffer.
    pub(crate) fn peak_buffered_bytes(&self) -> usize {
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// Notes that a replay buffer holds `bytes`.
    pub(crate) fn note(&self, bytes: usize) {
        self.peak_bytes.fetch_max(bytes, Ordering::Relaxed);
    }
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The body exceeded `max_body_bytes`.
    #[error("request body larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// A try ended without the source, so a later try cannot read it.
    #[error("request body was lost by an earlier try and cannot be replayed")]
    Lost,
    /// Reading the client's body failed (it went away, or sent a malformed body).
    #[error("the client's request body failed: {0}")]
    Client(BoxError),
}

struct Shared<B> {
    source: Option<B>,
    size_hint: SizeHint,
    kept: Vec<Bytes>,
    kept_bytes: usize,
    limit: usize,
    overflowed: bool,
    read_bytes: u64,
    max_body_bytes: u64,
    trailers: Option<HeaderMap>,
    stats: Arc<ReplayStats>,
}

/// One try's view of a request body; see the module docs.
pub(crate) struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    position: usize,
    seen_bytes: u64,
    trailers_sent: bool,
    ended: bool,
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody").field("position", &self.position).finish()
    }
}

impl<B: Body<Data = Bytes>> ReplayBody<B> {
    /// Wraps `source`, keeping up to `limit` bytes for replay and failing past
    /// `max_body_bytes` (0: no limit).
    pub(crate) fn new(source: B, limit: usize, max_body_bytes: u64, stats: Arc<ReplayStats>) -> Self {
        let size_hint = source.size_hint();
        let shared = Shared {
            source: Some(source),
            size_hint,
            kept: Vec::new(),
            kept_bytes: 0,
            limit,
            overflowed: false,
            read_bytes: 0,
            max_body_bytes,
            trailers: None,
            stats,
        };
        ReplayBody {
            shared: Arc::new(Mutex::new(shared)),
            position: 0,
            seen_bytes: 0,
            trailers_sent: false,
            ended: false,
        }
    }

    /// A body for another try, replaying what was read so far, or `None` if
    /// the body outgrew the replay buffer.
    pub(crate) fn replay(&self) -> Option<Self> {
        let shared = lock(&self.shared);
        if shared.overflowed {
            return None;
        }
        drop(shared);
        Some(ReplayBody {
            shared: Arc::clone(&self.shared),
            position: 0,
            seen_bytes: 0,
            trailers_sent: false,
            ended: false,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let mut shared = lock(&this.shared);
        if !shared.overflowed && this.position < shared.kept.len() {
            let chunk = shared.kept[this.position].clone();
            this.position += 1;
            this.seen_bytes += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.seen_bytes != shared.read_bytes {
            // Another try read past the replay limit: the bytes this one missed are gone.
            return Poll::Ready(Some(Err(BodyError::Lost.into())));
        }
        let Some(source) = shared.source.as_mut() else {
            if let Some(trailers) = shared.trailers.clone().filter(|_| !this.trailers_sent) {
                this.trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            this.ended = true;
            return Poll::Ready(None);
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.source = None;
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e.into()).into()))),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(chunk) => {
                    shared.read_bytes += chunk.len() as u64;
                    this.seen_bytes = shared.read_bytes;
                    if shared.max_body_bytes != 0 && shared.read_bytes > shared.max_body_bytes {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(shared.max_body_bytes).into())));
                    }
                    keep(&mut shared, &chunk);
                    this.position = shared.kept.len();
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        shared.trailers = Some(trailers.clone());
                        this.trailers_sent = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.shared).size_hint
    }
}

/// Keeps a copy of `chunk` if it still fits, else gives up on replay.
fn keep<B>(shared: &mut Shared<B>, chunk: &Bytes) {
    if shared.overflowed {
        return;
    }
    if shared.kept_bytes + chunk.len() > shared.limit {
        shared.overflowed = true;
        shared.kept = Vec::new();
        shared.kept_bytes = 0;
        return;
    }
    shared.kept_bytes += chunk.len();
    shared.kept.push(chunk.clone());
    shared.stats.note(shared.kept_bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Chunks = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn chunks(parts: &[&'static str]) -> Chunks {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read_all<B>(body: ReplayBody<B>) -> Result<Vec<u8>, BoxError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn a_small_body_replays_whole() {
        let stats = Arc::new(ReplayStats::default());
        let first = ReplayBody::new(chunks(&["ab", "cd"]), 16, 0, Arc::clone(&stats));
        let second = first.replay().expect("fits the buffer");
        assert_eq!(read_all(first).await.unwrap(), b"abcd");
        assert_eq!(read_all(second).await.unwrap(), b"abcd");
        assert_eq!(stats.peak_buffered_bytes(), 4);
    }

    #[tokio::test]
    async fn a_partly_read_body_replays_then_continues() {
        let stats = Arc::new(ReplayStats::default());
        let mut first = ReplayBody::new(chunks(&["ab", "cd", "ef"]), 16, 0, stats);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        let second = first.replay().unwrap();
        drop(first);
        assert_eq!(read_all(second).await.unwrap(), b"abcdef");
    }

    #[tokio::test]
    async fn a_big_body_streams_but_does_not_replay() {
        let stats = Arc::new(ReplayStats::default());
        let first = ReplayBody::new(chunks(&["0123", "4567", "89"]), 5, 0, Arc::clone(&stats));
        let late = first.replay().unwrap();
        assert_eq!(read_all(first).await.unwrap(), b"0123456789");
        assert!(stats.peak_buffered_bytes() <= 5);
        let tail = ReplayBody::new(chunks(&["0123", "4567"]), 5, 0, Arc::clone(&stats));
        let mut tail_reader = tail;
        let _ = tail_reader.frame().await;
        let _ = tail_reader.frame().await;
        assert!(tail_reader.replay().is_none(), "past the limit a body is not replayable");
        assert!(read_all(late).await.is_err(), "a try that started before the overflow cannot finish");
    }

    #[tokio::test]
    async fn the_body_limit_is_enforced_while_streaming() {
        let stats = Arc::new(ReplayStats::default());
        let body = ReplayBody::new(chunks(&["0123", "4567"]), 64, 6, stats);
        let err = read_all(body).await.unwrap_err();
        assert!(err.to_string().contains("larger than the limit of 6 bytes"), "{err}");
    }
}
