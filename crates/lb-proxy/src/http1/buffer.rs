//! A connection's read buffer: bytes read and not yet consumed.
//!
//! No memory until the first read (an idle connection holds none); then a
//! small block that grows by doubling only while one message head or body
//! read needs it, up to a cap. Consumed bytes are dropped from the front by
//! moving the rest down, which is rare and short: a request or response
//! head is usually consumed whole.

use std::io;
use std::task::{Context, Poll};

use crate::duplex::Duplex;
use tokio::io::{AsyncRead, ReadBuf};

/// The first allocation of a buffer (nginx's `client_header_buffer_size` is 1 KiB).
pub(crate) const INITIAL: usize = 2048;

/// Bytes read from a socket and not yet consumed: `data[start..end]`.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

/// The buffer is at its cap and still holds no complete message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl ReadBuffer {
    /// The unconsumed bytes.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// How many bytes are unconsumed.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` unconsumed bytes.
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes free space after the unconsumed bytes, growing up to `max` bytes.
    fn make_room(&mut self, max: usize) -> Result<(), Full> {
        if self.end < self.data.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return Ok(());
        }
        let size = self.data.len();
        if size >= max {
            return Err(Full);
        }
        let grown = if size == 0 { INITIAL.min(max) } else { (size * 2).min(max) };
        self.data.resize(grown, 0);
        Ok(())
    }

    /// Reads once from `stream`, growing the buffer to at most `max` bytes;
    /// how many bytes came (0 at end of stream). The first read waits for
    /// data before it allocates, so an idle connection holds no buffer.
    pub(crate) async fn fill<S: Duplex>(&mut self, stream: &mut S, max: usize) -> Result<usize, FillError> {
        if self.data.is_empty() {
            stream.readable().await.map_err(FillError::Io)?;
        }
        std::future::poll_fn(|cx| self.poll_fill(cx, stream, max)).await
    }

    /// Like [`fill`](Self::fill), as a poll (for bodies read by hyper).
    pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut R,
        max: usize,
    ) -> Poll<Result<usize, FillError>> {
        self.make_room(max).map_err(|Full| FillError::Full)?;
        let mut spare = ReadBuf::new(&mut self.data[self.end..]);
        match std::pin::Pin::new(stream).poll_read(cx, &mut spare) {
            Poll::Ready(Ok(())) => {
                let n = spare.filled().len();
                self.end += n;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(FillError::Io(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Bytes of memory held.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Gives back memory above `keep` bytes once nothing is buffered (after a large body).
    pub(crate) fn shrink(&mut self, keep: usize) {
        if self.is_empty() && self.data.len() > keep {
            self.data = vec![0; keep.min(INITIAL)];
        }
    }
}

/// Why a read into a buffer failed.
#[derive(Debug)]
pub(crate) enum FillError {
    /// The buffer is at its cap.
    Full,
    /// The socket failed.
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn the_buffer_grows_only_to_its_cap_and_reuses_consumed_space() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut reader, _) = listener.accept().await.unwrap();
        let mut buf = ReadBuffer::default();
        assert_eq!(buf.capacity(), 0, "no memory before the first read");
        writer.write_all(&[7u8; 5000]).await.unwrap();
        let mut total = 0;
        while total < 5000 {
            total += buf.fill(&mut reader, 8192).await.unwrap();
        }
        assert_eq!(buf.bytes(), &[7u8; 5000][..]);
        assert_eq!(buf.capacity(), 8192, "doubled from 2 KiB up to the cap");
        buf.consume(4000);
        writer.write_all(&[8u8; 4000]).await.unwrap();
        while buf.len() < 5000 {
            buf.fill(&mut reader, 8192).await.unwrap();
        }
        assert_eq!(buf.capacity(), 8192, "the consumed front was reused");
        writer.write_all(&[9u8; 4000]).await.unwrap();
        let mut full = false;
        for _ in 0..100 {
            if let Err(FillError::Full) = buf.fill(&mut reader, 8192).await {
                full = true;
                break;
            }
        }
        assert!(full, "a full buffer says so instead of growing");
        buf.consume(buf.len());
        buf.shrink(INITIAL);
        assert_eq!(buf.capacity(), INITIAL);
    }
}
