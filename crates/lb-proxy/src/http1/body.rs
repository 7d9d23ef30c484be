//! Message bodies: read off a connection's buffer with their framing
//! removed, and written out with the framing the other side gets.
//!
//! Small pieces are gathered with the head into one write; a large piece is
//! written straight from the buffer it was read into, with its chunk framing
//! around it in the same `writev`.

use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::buffer::{FillError, ReadBuffer};
use super::chunked::{self, ChunkError, ChunkedDecoder};
use super::request::Framing;

/// Pieces up to this size are copied into the pending output; larger ones are written in place.
const GATHER: usize = 16 * 1024;

/// The next thing a body has at the front of its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// The first `n` buffered bytes are body data (consume them once used).
    Data(usize),
    /// More bytes must be read.
    NeedMore,
    /// The body is complete.
    End,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The connection ended before the body did.
    #[error("the body was cut short")]
    Truncated,
    /// Chunked framing was malformed.
    #[error("bad chunked framing: {0}")]
    Framing(#[from] ChunkError),
    /// The sender went quiet for longer than the read timeout.
    #[error("timed out reading the body")]
    Timeout,
    /// The socket failed.
    #[error("reading the body failed: {0}")]
    Io(io::Error),
}

/// Reads one body off a connection's buffer; see [`Piece`].
#[derive(Debug)]
pub(crate) struct BodyReader {
    framing: Framing,
    /// Bytes still to come of a `Length` body.
    left: u64,
    decoder: Option<ChunkedDecoder>,
    ended: bool,
}

impl BodyReader {
    /// A reader for a body delimited as `framing`; chunked trailers up to `max_trailer_bytes`.
    pub(crate) fn new(framing: Framing, max_trailer_bytes: usize) -> Self {
        let left = if let Framing::Length(n) = framing { n } else { 0 };
        let decoder = (framing == Framing::Chunked).then(|| ChunkedDecoder::new(max_trailer_bytes));
        BodyReader { framing, left, decoder, ended: framing == Framing::Empty }
    }

    /// Whether the whole body was read.
    pub(crate) fn is_done(&self) -> bool {
        self.ended
    }

    /// The raw trailer section of a chunked body, once read.
    pub(crate) fn trailers(&self) -> &[u8] {
        self.decoder.as_ref().map_or(&[], ChunkedDecoder::trailers)
    }

    /// Consumes framing at the front of `buf` and says what comes next.
    pub(crate) fn next(&mut self, buf: &mut ReadBuffer) -> Result<Piece, SourceError> {
        if self.ended {
            return Ok(Piece::End);
        }
        match self.framing {
            Framing::Empty => Ok(Piece::End),
            Framing::Length(_) if self.left == 0 => {
                self.ended = true;
                Ok(Piece::End)
            }
            Framing::Length(_) if buf.is_empty() => Ok(Piece::NeedMore),
            Framing::Length(_) => {
                let n = (buf.len() as u64).min(self.left) as usize;
                self.left -= n as u64;
                Ok(Piece::Data(n))
            }
            Framing::UntilClose if buf.is_empty() => Ok(Piece::NeedMore),
            Framing::UntilClose => Ok(Piece::Data(buf.len())),
            Framing::Chunked => {
                let Some(decoder) = self.decoder.as_mut() else { return Ok(Piece::End) };
                loop {
                    if decoder.is_done() {
                        self.ended = true;
                        return Ok(Piece::End);
                    }
                    if buf.is_empty() {
                        return Ok(Piece::NeedMore);
                    }
                    let decoded = decoder.decode(buf.bytes())?;
                    match decoded.data {
                        Some(data) => {
                            buf.consume(data.start);
                            return Ok(Piece::Data(data.len()));
                        }
                        None => buf.consume(decoded.consumed),
                    }
                }
            }
        }
    }

    /// The connection ended: the end of a close-delimited body, or a cut one.
    pub(crate) fn at_eof(&mut self) -> Result<(), SourceError> {
        if self.framing == Framing::UntilClose {
            self.ended = true;
            return Ok(());
        }
        Err(SourceError::Truncated)
    }
}

/// Reads more of a body into `buf` within `timeout`; the end of the stream
/// is told to `reader`.
pub(crate) async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut BodyReader,
    source: &mut R,
    buf: &mut ReadBuffer,
    max_buffer: usize,
    timeout: Duration,
) -> Result<(), SourceError> {
    let filled = std::future::poll_fn(|cx| buf.poll_fill(cx, source, max_buffer));
    match crate::bounded::within(timeout, filled).await {
        None => Err(SourceError::Timeout),
        Some(Ok(0)) => reader.at_eof(),
        Some(Ok(_)) => Ok(()),
        Some(Err(FillError::Io(e))) => Err(SourceError::Io(e)),
        // A body reader consumes each piece before reading more: the buffer is never full of it.
        Some(Err(FillError::Full)) => Err(SourceError::Io(io::ErrorKind::OutOfMemory.into())),
    }
}

/// How a body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As is: its length was sent ahead, or the connection closes after it.
    Plain,
    /// In chunks.
    Chunked,
}

/// A connection's pending output: what is gathered for the next write.
#[derive(Debug, Default)]
pub(crate) struct Output {
    pub(crate) pending: Vec<u8>,
}

impl Output {
    /// Queues raw bytes (a head, a last chunk).
    #[inline]
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Writes what is pending.
    pub(crate) async fn flush<W: AsyncWrite + Unpin>(&mut self, sink: &mut W) -> io::Result<()> {
        if !self.pending.is_empty() {
            sink.write_all(&self.pending).await?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Queues a piece of body data, or writes it with what is pending when it is large.
    pub(crate) async fn data<W: AsyncWrite + Unpin>(
        &mut self,
        sink: &mut W,
        encoding: Encoding,
        data: &[u8],
    ) -> io::Result<()> {
        let mut size = [0u8; 18];
        let size = match encoding {
            Encoding::Chunked => chunked::size_line(data.len(), &mut size),
            Encoding::Plain => &[],
        };
        let crlf: &[u8] = if encoding == Encoding::Chunked { b"\r\n" } else { b"" };
        if self.pending.len() + data.len() <= GATHER {
            self.pending.extend_from_slice(size);
            self.pending.extend_from_slice(data);
            self.pending.extend_from_slice(crlf);
            return Ok(());
        }
        let mut slices =
            [IoSlice::new(&self.pending), IoSlice::new(size), IoSlice::new(data), IoSlice::new(crlf)];
        write_all_vectored(sink, &mut slices).await?;
        self.pending.clear();
        Ok(())
    }

    /// Queues the end of a chunked body: the last chunk and `trailers` (raw lines).
    pub(crate) fn last_chunk(&mut self, trailers: &[u8]) {
        self.pending.extend_from_slice(b"0\r\n");
        self.pending.extend_from_slice(trailers);
        self.pending.extend_from_slice(b"\r\n");
    }
}

/// Writes every byte of `slices`, in as few system calls as the socket allows.
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    sink: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let n = sink.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Why relaying a body failed, and on which side.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// The side the body came from.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// The side it went to failed or stalled.
    #[error("writing the body failed: {0}")]
    Sink(io::Error),
}

/// Where a body goes and within which timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relay {
    pub(crate) encoding: Encoding,
    /// Pass the trailers of a chunked body on (else they are dropped).
    pub(crate) trailers: bool,
    /// Longest wait for the next bytes from the source.
    pub(crate) read_timeout: Duration,
    /// Longest wait for one write to the sink.
    pub(crate) write_timeout: Duration,
    pub(crate) max_buffer: usize,
}

/// Copies a body from `source` (via `buf`) to `sink` (via `out`), then
/// writes everything pending. Returns the body's length.
pub(crate) async fn relay<R, W>(
    reader: &mut BodyReader,
    source: &mut R,
    buf: &mut ReadBuffer,
    sink: &mut W,
    out: &mut Output,
    relay: Relay,
) -> Result<u64, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        match reader.next(buf)? {
            Piece::Data(n) => {
                let writing = out.data(sink, relay.encoding, &buf.bytes()[..n]);
                timed_write(relay.write_timeout, writing).await?;
                buf.consume(n);
                total += n as u64;
            }
            Piece::NeedMore => {
                // Nothing waits in our buffer while the source is slow.
                timed_write(relay.write_timeout, out.flush(sink)).await?;
                read_more(reader, source, buf, relay.max_buffer, relay.read_timeout).await?;
            }
            Piece::End => {
                if relay.encoding == Encoding::Chunked {
                    out.last_chunk(if relay.trailers { reader.trailers() } else { &[] });
                }
                timed_write(relay.write_timeout, out.flush(sink)).await?;
                return Ok(total);
            }
        }
    }
}

/// A write bounded by `timeout`; a stall is a sink failure.
pub(crate) async fn timed_write(
    timeout: Duration,
    write: impl Future<Output = io::Result<()>>,
) -> Result<(), RelayError> {
    match crate::bounded::within(timeout, write).await {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(RelayError::Sink(e)),
        None => Err(RelayError::Sink(io::ErrorKind::TimedOut.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: Relay = Relay {
        encoding: Encoding::Plain,
        trailers: true,
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        max_buffer: 64,
    };

    /// Relays `input` framed as `framing`, read 7 bytes at a time, re-encoded as `encoding`.
    async fn relayed(
        input: &[u8],
        framing: Framing,
        encoding: Encoding,
    ) -> (Result<u64, String>, Vec<u8>, usize) {
        let mut source = Trickle(input.to_vec(), 0);
        let (mut reader, mut buf) = (BodyReader::new(framing, 256), ReadBuffer::default());
        let (mut sink, mut out) = (Vec::new(), Output::default());
        let result =
            relay(&mut reader, &mut source, &mut buf, &mut sink, &mut out, Relay { encoding, ..RELAY })
                .await
                .map_err(|e| e.to_string());
        (result, sink, buf.len())
    }

    /// A reader handing out its bytes 7 at a time.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let (at, len) = (self.1, self.0.len());
            let n = 7.min(len - at).min(buf.remaining());
            buf.put_slice(&self.0[at..at + n]);
            self.1 += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Decodes a chunked body we wrote: its data and trailers.
    fn dechunk(out: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut decoder = ChunkedDecoder::new(256);
        let (mut data, mut at) = (Vec::new(), 0);
        while !decoder.is_done() {
            let decoded = decoder.decode(&out[at..]).expect("our own framing is valid");
            if let Some(range) = decoded.data {
                data.extend_from_slice(&out[at..][range]);
            }
            at += decoded.consumed;
        }
        assert_eq!(at, out.len(), "nothing after the last chunk");
        (data, decoder.trailers().to_vec())
    }

    #[tokio::test]
    async fn lengths_and_chunks_are_re_framed() {
        let (result, out, left) =
            relayed(b"hello world and more", Framing::Length(11), Encoding::Chunked).await;
        assert_eq!(result.unwrap(), 11);
        assert_eq!(dechunk(&out), (b"hello world".to_vec(), Vec::new()));
        assert!(
            out.starts_with(b"7\r\nhello w\r\n"),
            "one chunk per read: {:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(left, 3, "bytes past the body stay buffered for the next message");
        let chunked = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        let (result, out, _) = relayed(chunked, Framing::Chunked, Encoding::Plain).await;
        assert_eq!(result.unwrap(), 11);
        assert_eq!(out, b"hello world");
        let (_, out, _) = relayed(chunked, Framing::Chunked, Encoding::Chunked).await;
        assert_eq!(dechunk(&out), (b"hello world".to_vec(), b"X-T: 1\r\n".to_vec()), "trailers kept");
        assert!(!out.windows(3).any(|w| w == b"x=y"), "extensions dropped");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_never_ends_cleanly() {
        let (result, out, _) = relayed(b"hel", Framing::Length(5), Encoding::Chunked).await;
        assert_eq!(result.unwrap_err(), "the body was cut short");
        assert!(!out.ends_with(b"0\r\n\r\n"), "no last chunk for a cut body: {out:?}");
        let (result, out, _) = relayed(b"5\r\nhello\r\n", Framing::Chunked, Encoding::Chunked).await;
        assert_eq!(result.unwrap_err(), "the body was cut short");
        assert!(!out.ends_with(b"0\r\n\r\n"), "{out:?}");
        let (result, out, _) = relayed(b"until the end", Framing::UntilClose, Encoding::Plain).await;
        assert_eq!(result.unwrap(), 13);
        assert_eq!(out, b"until the end");
    }

    #[tokio::test]
    async fn large_pieces_are_written_in_place() {
        let body = vec![b'z'; 3 * GATHER];
        let mut source = &body[..];
        let (mut reader, mut buf) =
            (BodyReader::new(Framing::Length(body.len() as u64), 0), ReadBuffer::default());
        let (mut sink, mut out) = (Vec::new(), Output::default());
        let relay_settings = Relay { max_buffer: 2 * GATHER, ..RELAY };
        let n = relay(&mut reader, &mut source, &mut buf, &mut sink, &mut out, relay_settings).await.unwrap();
        assert_eq!(n as usize, body.len());
        assert_eq!(sink, body);
        assert!(out.pending.capacity() <= GATHER, "never gathered more than {GATHER} bytes");
    }
}
