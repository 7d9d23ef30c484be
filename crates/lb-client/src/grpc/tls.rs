//! TLS under the balanced channel's per-endpoint tonic channels: a connector
//! that dials the endpoint and runs the rustls handshake lb-tls configured,
//! so gRPC uses the same verification, server name and client certificate
//! rules as the pool and the proxy.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use lb_core::Address;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Dials one endpoint over TLS; tonic calls it for each new connection.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    address: Address,
    tls: lb_tls::TlsConnector,
}

impl TlsConnector {
    pub(crate) fn new(address: &Address, tls: &lb_tls::TlsConnector) -> Self {
        TlsConnector { address: address.clone(), tls: tls.clone() }
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The URI is the channel's own (`http://address/`): the address was fixed at build.
    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = this.address.host();
            let stream = TcpStream::connect((&*host, this.address.port())).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(this.tls.connect(&host, stream).await?))
        })
    }
}
