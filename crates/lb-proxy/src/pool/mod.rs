//! Connections to one endpoint: a pool of keep-alive HTTP/1.1 connections
//! on lb's own engine, or one shared, multiplexed HTTP/2 connection (h2c,
//! for gRPC) on hyper.

pub(crate) mod h2;
pub(crate) mod http1;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

use crate::config::UpstreamProtocol;
use lb_core::Clock;

/// A TCP connection to `authority` within `timeout`, with Nagle off (requests are small and latency-bound).
async fn dial(authority: &Authority, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let connecting = tokio::net::TcpStream::connect(authority.as_str());
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How requests reach one endpoint.
#[derive(Debug)]
pub(crate) enum Connections {
    /// Keep-alive HTTP/1.1 connections, one request at a time on each.
    Http1(http1::EndpointPool),
    /// One HTTP/2 connection in cleartext, many requests at once.
    H2c(h2::SharedConnection),
}

impl Connections {
    /// Connections of `protocol` for `workers` threads; the idle limits apply to HTTP/1.1.
    pub(crate) fn new(
        protocol: UpstreamProtocol,
        workers: usize,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        match protocol {
            UpstreamProtocol::Http1 => Connections::Http1(http1::EndpointPool::new(
                workers,
                max_idle,
                idle_timeout,
                connect_timeout,
                clock,
            )),
            UpstreamProtocol::H2c => Connections::H2c(h2::SharedConnection::new(connect_timeout)),
        }
    }

    /// Closes HTTP/1.1 connections idle longer than the idle timeout.
    pub(crate) fn evict_expired(&self) {
        if let Connections::Http1(pool) = self {
            pool.evict_expired();
        }
    }
}
