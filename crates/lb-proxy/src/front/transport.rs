//! What a client connection runs over: plain TCP, or TLS terminated here.

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::duplex::Duplex;

/// A client connection's byte stream.
pub(crate) trait ClientStream: Duplex {
    /// `X-Forwarded-Proto` for requests that came over it.
    const SCHEME: &'static str;
}

impl ClientStream for TcpStream {
    const SCHEME: &'static str = "http";
}

impl ClientStream for TlsStream<TcpStream> {
    const SCHEME: &'static str = "https";
}
