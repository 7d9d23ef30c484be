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
mod transport;
mod tunnel;

use lb_core::Timestamp;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub(crate) use transport::ClientStream;

use crate::config::Global;
use crate::forward::TryError;
use crate::http1::buffer::{FillError, INITIAL, ReadBuffer};
use crate::http1::request::HeadLimits;
use crate::pool::http1::{EndpointPool, UpstreamConn};
use crate::runtime::Runtime;
use crate::upstream::Backend;

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
    /// An upgraded connection closes after this long with no byte either way.
    pub(crate) tunnel_idle_timeout: Duration,
    /// What one HTTP/2 connection may use.
    pub(crate) http2: Http2Settings,
    /// Answer every request with a 308 to its https URL (a plain listener's
    /// `redirect_to_https`).
    pub(crate) redirect_to_https: bool,
}

/// `[global.http2]`, copied out for each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Http2Settings {
    pub(crate) max_concurrent_streams: u32,
    pub(crate) initial_stream_window: u32,
    pub(crate) initial_connection_window: u32,
    pub(crate) max_frame_size: u32,
    pub(crate) max_pending_reset_streams: usize,
    pub(crate) max_error_reset_streams: usize,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
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
            tunnel_idle_timeout: global.tunnel_idle_timeout,
            http2: Http2Settings {
                max_concurrent_streams: *global.http2.max_concurrent_streams.get_ref(),
                initial_stream_window: *global.http2.initial_stream_window.get_ref(),
                initial_connection_window: *global.http2.initial_connection_window.get_ref(),
                max_frame_size: *global.http2.max_frame_size.get_ref(),
                max_pending_reset_streams: global.http2.max_pending_reset_streams,
                max_error_reset_streams: global.http2.max_error_reset_streams,
                keepalive_interval: Some(global.http2.keepalive_interval).filter(|d| !d.is_zero()),
                keepalive_timeout: global.http2.keepalive_timeout,
            },
            redirect_to_https: false,
        }
    }
}

/// Serves one client connection until it closes, fails, or a stop ends it.
pub(crate) async fn serve<S: ClientStream>(
    mut stream: S,
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
    // The engines' states are boxed once a connection is known to need them, so a
    // connection that never sends a whole head costs this small task and its buffer.
    match sniffed {
        Ok(Ok(Protocol::Http2)) => {
            Box::pin(h2::serve(prefixed::Prefixed::new(buf, stream), peer, runtime, settings, stop)).await;
        }
        Ok(Ok(Protocol::Http1)) => loop {
            if !first_head(&mut stream, &mut buf, &settings, &mut stop).await {
                return;
            }
            let serving = h1::serve(stream, buf, peer, Arc::clone(&runtime), settings, stop.clone());
            let Some(parked) = Box::pin(serving).await else { return };
            // Parked: the engine's state and buffers are gone until the next request's first byte.
            (stream, buf) = (parked.stream, ReadBuffer::default());
            let woke = tokio::select! {
                filled = tokio::time::timeout_at(parked.idle_until, buf.fill(&mut stream, INITIAL)) => {
                    matches!(filled, Ok(Ok(1..)))
                }
                () = crate::server::stop_requested(&mut stop) => false,
            };
            if !woke {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                return;
            }
        },
        Ok(Err(())) | Err(_) => {}
    }
}

/// Waits until the first request head is whole in `buf` (or the buffer is
/// full, for the engine to refuse): `client_header_timeout` from its first
/// byte. False when the connection ends first (closed, timed out, stopped).
async fn first_head<S: ClientStream>(
    stream: &mut S,
    buf: &mut ReadBuffer,
    settings: &FrontSettings,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = tokio::time::Instant::now() + settings.header_timeout;
    let max = settings.head_limits.max_bytes;
    let mut searched = 0;
    loop {
        if crate::http1::request::head_end(buf.bytes(), searched).is_some() || buf.len() >= max {
            return true;
        }
        searched = buf.len();
        let filled = tokio::select! {
            filled = tokio::time::timeout_at(deadline, buf.fill(stream, max)) => filled,
            () = crate::server::stop_requested(stop) => return false,
        };
        match filled {
            Ok(Ok(1..)) => {}
            // A full buffer is the engine's to refuse with 431.
            Ok(Err(FillError::Full)) => return true,
            Ok(Ok(0) | Err(FillError::Io(_))) | Err(_) => return false,
        }
    }
}

enum Protocol {
    Http1,
    Http2,
}

/// Reads until the bytes tell HTTP/2's preface from an HTTP/1 request line.
/// The caller bounds the wait for the first byte; the rest of a preface
/// gets the header timeout.
async fn sniff<S: ClientStream>(
    stream: &mut S,
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

/// The endpoint's most recent idle HTTP/1.1 connection still fresh at
/// `now`, or a new one within `timeout`.
async fn http1_connection(
    pool: &EndpointPool,
    backend: &Backend,
    now: Timestamp,
    timeout: Duration,
) -> Result<UpstreamConn, TryError> {
    if let Some(conn) = pool.checkout(now) {
        return Ok(conn);
    }
    match tokio::time::timeout(timeout, pool.connect(&backend.authority)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(_)) => Err(TryError::Connect),
        Err(_) => Err(TryError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpStream;

    use super::*;

    /// What a connection costs before its first whole head: this task's
    /// state (the engines' larger states are boxed only after), plus its buffer.
    #[tokio::test]
    async fn a_connection_waiting_for_its_first_head_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stream = TcpStream::connect(address).await.unwrap();
        let text = "[admin]\nenabled = false\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"web\"\n\
                    [upstreams.web]\ndiscovery.static.endpoints = [\"127.0.0.1:9\"]\n";
        let config = crate::Config::parse(text, "test.toml").unwrap();
        let clock = Arc::new(lb_core::MonotonicClock::new());
        let access_log =
            Arc::new(crate::access_log::AccessSink::open(config.global.access_log, None).unwrap());
        let runtime = Arc::new(ArcSwap::new(Arc::new(Runtime::build(
            &config,
            clock,
            None,
            access_log,
            &Default::default(),
            None,
        ))));
        let (_stop, stopped) = watch::channel(false);
        let serving = serve(stream, address, runtime, FrontSettings::new(&config.global), stopped);
        let size = std::mem::size_of_val(&serving);
        assert!(size <= 2048, "a connection's task state grew to {size} bytes");
    }
}
