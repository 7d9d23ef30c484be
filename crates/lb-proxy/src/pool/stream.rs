//! A connection to an endpoint: plain TCP, or TLS made by us.
//!
//! The engine asks an endpoint connection two questions without reading
//! from it: "did the endpoint say something?" (an early answer while the
//! body is still going out) and "is this parked connection still quiet?".
//! Over TCP the socket's readiness answers. Over TLS it cannot: a TLS 1.3
//! server sends session tickets after the handshake, records that are not
//! an answer. So the TLS side feeds what arrived to rustls and looks for
//! plaintext (or the end) there, leaving it for the next read.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf as TcpReadHalf, WriteHalf as TcpWriteHalf};
use tokio_rustls::client::TlsStream;

use crate::duplex::Duplex;

/// One connection's bytes to and from an endpoint.
#[derive(Debug)]
pub(crate) enum EndpointStream {
    Plain(TcpStream),
    /// In a lock only so [`split`](Duplex::split) can lend it to both halves;
    /// a connection is used by one request at a time, so it is never contended.
    Tls(Box<Mutex<TlsStream<TcpStream>>>),
}

impl EndpointStream {
    pub(crate) fn tls(stream: TlsStream<TcpStream>) -> Self {
        EndpointStream::Tls(Box::new(Mutex::new(stream)))
    }

    /// Whether a parked connection heard nothing: no FIN, no reset, no stray
    /// bytes. Over TCP, reads the socket's readiness and makes a system call
    /// only when it says something arrived.
    pub(crate) fn is_quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self {
            EndpointStream::Plain(tcp) => match tcp.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                // Readiness can be stale: only a read that would block proves the socket quiet.
                Poll::Ready(Ok(())) => {
                    matches!(tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            },
            EndpointStream::Tls(tls) => {
                plaintext_ready(tls.get_mut().unwrap_or_else(PoisonError::into_inner), &mut cx).is_pending()
            }
        }
    }
}

/// Ready once rustls holds plaintext, the peer closed, or the connection
/// failed; TLS records that carry no data (session tickets) are taken in
/// and waited past.
fn plaintext_ready(tls: &mut TlsStream<TcpStream>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let (tcp, session) = tls.get_mut();
    loop {
        match session.process_new_packets() {
            // The next read reports it.
            Err(_) => return Poll::Ready(Ok(())),
            Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => {
                return Poll::Ready(Ok(()));
            }
            Ok(_) => {}
        }
        ready!(tcp.poll_read_ready(cx))?;
        match session.read_tls(&mut TryRead(tcp)) {
            Ok(0) => return Poll::Ready(Ok(())),
            Ok(_) => {}
            // The readiness is cleared; the next poll waits for more.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// A non-blocking read of the socket, as rustls' `read_tls` wants one.
struct TryRead<'a>(&'a TcpStream);

impl io::Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

fn lock(tls: &Mutex<TlsStream<TcpStream>>) -> MutexGuard<'_, TlsStream<TcpStream>> {
    tls.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Duplex for EndpointStream {
    type Read<'a> = EndpointRead<'a>;
    type Write<'a> = EndpointWrite<'a>;

    async fn readable(&mut self) -> io::Result<()> {
        match self {
            EndpointStream::Plain(tcp) => Duplex::readable(tcp).await,
            EndpointStream::Tls(tls) => {
                let tls = tls.get_mut().unwrap_or_else(PoisonError::into_inner);
                std::future::poll_fn(|cx| plaintext_ready(tls, cx)).await
            }
        }
    }

    fn split(&mut self) -> (EndpointRead<'_>, EndpointWrite<'_>) {
        match self {
            EndpointStream::Plain(tcp) => {
                let (read, write) = tcp.split();
                (EndpointRead::Plain(read), EndpointWrite::Plain(write))
            }
            EndpointStream::Tls(tls) => (EndpointRead::Tls(tls), EndpointWrite::Tls(tls)),
        }
    }
}

/// The reading half of a split [`EndpointStream`].
#[derive(Debug)]
pub(crate) enum EndpointRead<'a> {
    Plain(TcpReadHalf<'a>),
    Tls(&'a Mutex<TlsStream<TcpStream>>),
}

impl EndpointRead<'_> {
    /// Waits until the endpoint said something (data, or the end), taking nothing.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            EndpointRead::Plain(half) => half.readable().await,
            EndpointRead::Tls(tls) => std::future::poll_fn(|cx| plaintext_ready(&mut lock(tls), cx)).await,
        }
    }
}

/// The writing half of a split [`EndpointStream`].
#[derive(Debug)]
pub(crate) enum EndpointWrite<'a> {
    Plain(TcpWriteHalf<'a>),
    Tls(&'a Mutex<TlsStream<TcpStream>>),
}

/// Delegates a poll to the plain stream, or to the TLS stream (locked when shared).
macro_rules! each {
    ($this:expr, $stream:ident => $poll:expr) => {
        match $this {
            Self::Plain($stream) => $poll,
            Self::Tls(tls) => {
                let mut guard = TlsAccess::access(tls);
                let $stream = &mut *guard;
                $poll
            }
        }
    };
}

/// The TLS stream inside an owned box, or behind a shared lock.
trait TlsAccess {
    fn access(&mut self) -> impl std::ops::DerefMut<Target = TlsStream<TcpStream>>;
}

impl TlsAccess for Box<Mutex<TlsStream<TcpStream>>> {
    fn access(&mut self) -> impl std::ops::DerefMut<Target = TlsStream<TcpStream>> {
        Box::as_mut(self).get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TlsAccess for &Mutex<TlsStream<TcpStream>> {
    fn access(&mut self) -> impl std::ops::DerefMut<Target = TlsStream<TcpStream>> {
        lock(self)
    }
}

impl AsyncRead for EndpointStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(&mut *s).poll_read(cx, buf))
    }
}

impl AsyncRead for EndpointRead<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), s => Pin::new(&mut *s).poll_read(cx, buf))
    }
}

/// AsyncWrite by delegation, vectored writes included (the engine writes heads and bodies together).
macro_rules! delegate_write {
    ($type:ty) => {
        impl AsyncWrite for $type {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                each!(self.get_mut(), s => Pin::new(&mut *s).poll_write(cx, buf))
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                each!(self.get_mut(), s => Pin::new(&mut *s).poll_write_vectored(cx, bufs))
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    Self::Tls(_) => true,
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                each!(self.get_mut(), s => Pin::new(&mut *s).poll_flush(cx))
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                each!(self.get_mut(), s => Pin::new(&mut *s).poll_shutdown(cx))
            }
        }
    };
}

delegate_write!(EndpointStream);
delegate_write!(EndpointWrite<'_>);
