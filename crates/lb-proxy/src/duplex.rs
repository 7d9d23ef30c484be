//! The byte streams the HTTP/1.1 engine reads and writes, on either side:
//! plain TCP, or TLS (a client's, terminated here; or ours, to an endpoint).
//!
//! The engine is generic over [`Duplex`], so the plain path compiles as
//! before (no dynamic dispatch, no extra copy) and TLS adds only what it
//! needs: no peek (a TLS stream cannot show plaintext without decrypting
//! it), and halves that share the stream through a lock where TCP lends
//! out two borrows.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf as TcpReadHalf, WriteHalf as TcpWriteHalf};
use tokio_rustls::server::TlsStream;

/// A connection's byte stream, both ways.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The read half of [`split`](Self::split).
    type Read<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    /// The write half of [`split`](Self::split).
    type Write<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;

    /// Waits until reading would not block (a byte came, or the end), taking
    /// nothing, so a buffer is allocated only once data is there.
    fn readable(&mut self) -> impl Future<Output = io::Result<()>> + Send;

    /// Both directions at once, for a tunnel or a full-duplex relay.
    fn split(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

impl Duplex for TcpStream {
    type Read<'a> = TcpReadHalf<'a>;
    type Write<'a> = TcpWriteHalf<'a>;

    async fn readable(&mut self) -> io::Result<()> {
        // `readable()` may wake before any byte came; a peek waits for one (or the end).
        self.peek(&mut [0u8; 1]).await.map(|_| ())
    }

    fn split(&mut self) -> (TcpReadHalf<'_>, TcpWriteHalf<'_>) {
        TcpStream::split(self)
    }
}

impl Duplex for TlsStream<TcpStream> {
    type Read<'a> = ReadHalf<&'a mut TlsStream<TcpStream>>;
    type Write<'a> = WriteHalf<&'a mut TlsStream<TcpStream>>;

    async fn readable(&mut self) -> io::Result<()> {
        // Plaintext may already sit in rustls' buffers; the read itself waits.
        Ok(())
    }

    fn split(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        tokio::io::split(self)
    }
}
