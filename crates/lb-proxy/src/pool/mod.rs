//! Connections to one endpoint: a pool of keep-alive HTTP/1.1 connections,
//! or one shared, multiplexed HTTP/2 connection (h2c, for gRPC).

mod h2;
mod http1;

use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::RequestBody;
use crate::config::UpstreamProtocol;

/// A TCP connection to `authority` within `timeout`, with Nagle off (requests are small and latency-bound).
async fn dial(authority: &Authority, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let connecting = tokio::net::TcpStream::connect(authority.as_str());
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Why a request got no response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (refused, unreachable, connect timeout).
    /// Nothing was sent; the request comes back.
    Connect(Box<Request<RequestBody>>),
    /// The connection failed after the request was handed to it.
    Failed(hyper::Error),
}

/// The connection a response came on, to give back when its body ends.
#[derive(Debug)]
pub(crate) enum Conn {
    /// An HTTP/1.1 connection: free again once its response was read.
    Http1(http1::Conn),
    /// A stream of the shared HTTP/2 connection: nothing to give back.
    Multiplexed,
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
    /// Connections of `protocol`; the idle limits apply to HTTP/1.1.
    pub(crate) fn new(
        protocol: UpstreamProtocol,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        match protocol {
            UpstreamProtocol::Http1 => {
                Connections::Http1(http1::EndpointPool::new(max_idle, idle_timeout, connect_timeout))
            }
            UpstreamProtocol::H2c => Connections::H2c(h2::SharedConnection::new(connect_timeout)),
        }
    }

    /// Whether requests go out as HTTP/2, so they need an absolute URI.
    pub(crate) fn is_http2(&self) -> bool {
        matches!(self, Connections::H2c(_))
    }

    /// Sends `request` to `authority`.
    pub(crate) async fn send(
        &self,
        authority: &Authority,
        request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        match self {
            Connections::Http1(pool) => pool.send(authority, request).await.map(|(r, c)| (r, Conn::Http1(c))),
            Connections::H2c(shared) => shared.send(authority, request).await.map(|r| (r, Conn::Multiplexed)),
        }
    }

    /// Gives back the connection of a response read to its end.
    pub(crate) fn put(&self, conn: Conn) {
        if let (Connections::Http1(pool), Conn::Http1(conn)) = (self, conn) {
            pool.put(conn);
        }
    }

    /// Closes HTTP/1.1 connections idle longer than the idle timeout.
    pub(crate) fn evict_expired(&self) {
        if let Connections::Http1(pool) = self {
            pool.evict_expired();
        }
    }
}
