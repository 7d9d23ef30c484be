//! The client side of the proxy: one task per accepted connection.
//!
//! The first bytes decide the protocol. The HTTP/2 connection preface hands
//! the connection to hyper's HTTP/2 server ([`h2`]); anything else is
//! HTTP/1.x on lb's own engine ([`h1`]). Both turn each request into an
//! [`Exchange`](crate::forward::Exchange) for the one attempt loop, so
//! routing, retries, health, metrics and tracing do not care which engine
//! carried a request.

mod bridge;
pub(crate) mod h1;
pub(crate) mod h2;
mod native;
mod prefixed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::Global;
use crate::http1::buffer::{INITIAL, ReadBuffer};
use crate::http1::request::HeadLimits;
use crate::runtime::Runtime;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connection-level settings, fixed for a listener's life.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrontSettings {
    pub(crate) head_limits: HeadLimits,
    /// Wait for the next request on a kept-alive connection.
    pub(crate) idle_timeout: Duration,
    /// A request head, once begun, must arrive within this.
    pub(crate) header_timeout: Duration,
    /// Longest wait between reads of a request body.
    pub(crate) body_timeout: Duration,
    /// Longest wait for one write to the client.
    pub(crate) send_timeout: Duration,
}

impl FrontSettings {
    pub(crate) fn new(global: &Global) -> Self {
        FrontSettings {
            head_limits: HeadLimits {
                max_bytes: *global.max_header_bytes.get_ref(),
                max_fields: *global.max_headers.get_ref(),
            },
            idle_timeout: global.client_idle_timeout,
            header_timeout: global.client_header_timeout,
            body_timeout: global.client_body_timeout,
            send_timeout: global.send_timeout,
        }
    }
}

/// Serves one client connection until it closes, fails, or a stop ends it.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    runtime: Arc<ArcSwap<Runtime>>,
    settings: FrontSettings,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = ReadBuffer::default();
    // The first bytes, within the idle timeout: a connection that sends nothing closes then.
    let sniffed = tokio::select! {
        sniffed = tokio::time::timeout(settings.idle_timeout, sniff(&mut stream, &mut buf, settings.header_timeout)) => sniffed,
        () = crate::server::stop_requested(&mut stop) => return,
    };
    match sniffed {
        Ok(Ok(Protocol::Http2)) => {
            h2::serve(prefixed::Prefixed::new(buf, stream), peer, runtime, settings, stop).await
        }
        Ok(Ok(Protocol::Http1)) => h1::serve(stream, buf, peer, runtime, settings, stop).await,
        Ok(Err(())) | Err(_) => {}
    }
}

enum Protocol {
    Http1,
    Http2,
}

/// Reads until the bytes tell HTTP/2's preface from an HTTP/1 request line.
/// The caller bounds the wait for the first byte; the rest of a preface
/// gets the header timeout.
async fn sniff(
    stream: &mut TcpStream,
    buf: &mut ReadBuffer,
    header_timeout: Duration,
) -> Result<Protocol, ()> {
    let mut deadline = None;
    loop {
        let seen = buf.bytes();
        let n = seen.len().min(PREFACE.len());
        if seen[..n] != PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        let filled = match deadline {
            None => buf.fill(stream, INITIAL).await,
            Some(at) => tokio::time::timeout_at(at, buf.fill(stream, INITIAL)).await.map_err(|_| ())?,
        };
        if !matches!(filled, Ok(1..)) {
            return Err(());
        }
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + header_timeout);
    }
}
