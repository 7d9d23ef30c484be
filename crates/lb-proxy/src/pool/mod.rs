//! Connections to one endpoint: a pool of keep-alive HTTP/1.1 connections
//! on lb's own engine, or one shared, multiplexed HTTP/2 connection (h2c or h2)
//! on hyper, as gRPC servers want.

pub(crate) mod h2;
pub(crate) mod http1;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;

use crate::config::UpstreamProtocol;
use lb_core::Clock;
use stream::EndpointStream;

/// How an upstream's connections are secured; a reload that reads its files
/// again renews it in place (connections already open keep theirs).
pub(crate) type UpstreamTls = lb_tls::TlsConnector;

/// A connection to `authority` within `timeout`, over TLS when `tls` is
/// set (the handshake within the same timeout), with Nagle off (requests
/// are small and latency-bound).
async fn dial(
    authority: &Authority,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> std::io::Result<EndpointStream> {
    let connecting = async {
        let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        match tls {
            None => Ok(EndpointStream::Plain(stream)),
            Some(tls) => match tls.connect(authority.host(), stream).await {
                Ok(stream) => Ok(EndpointStream::tls(stream)),
                Err(error) => {
                    // As nginx does: a failed upstream handshake is a setup problem an operator must see.
                    tracing::warn!(endpoint = %authority, %error, "TLS handshake with the endpoint failed");
                    Err(error)
                }
            },
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// How requests reach one endpoint.
#[derive(Debug)]
pub(crate) enum Connections {
    /// Keep-alive HTTP/1.1 connections, one request at a time on each.
    Http1(http1::EndpointPool),
    /// One HTTP/2 connection (h2c, or h2 over TLS), many requests at once.
    H2(h2::SharedConnection),
}

impl Connections {
    /// Connections of `protocol` for `workers` threads, over TLS when `tls`
    /// is set; the idle limits apply to HTTP/1.1.
    pub(crate) fn new(
        protocol: UpstreamProtocol,
        workers: usize,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        tls: Option<UpstreamTls>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        match protocol {
            UpstreamProtocol::Http1 => Connections::Http1(http1::EndpointPool::new(
                workers,
                max_idle,
                idle_timeout,
                connect_timeout,
                tls,
                clock,
            )),
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                Connections::H2(h2::SharedConnection::new(connect_timeout, tls))
            }
        }
    }

    /// Closes HTTP/1.1 connections idle longer than the idle timeout.
    pub(crate) fn evict_expired(&self) {
        if let Connections::Http1(pool) = self {
            pool.evict_expired();
        }
    }
}
