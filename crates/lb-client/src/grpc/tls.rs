//! TLS under the balanced channel's per-endpoint tonic channels: a connector
//! that dials the endpoint and runs the rustls handshake lb-tls configured,
//! so gRPC uses the same verification, server name and client certificate
//! rules as the pool and the proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use lb_core::Address;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Dials one endpoint over TLS; tonic calls it for each new connection.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    address: Address,
    /// The SNI and verified name: the configured server name, else the endpoint's host.
    name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    /// None when no server name is set and the endpoint's host cannot be one.
    pub(crate) fn new(
        address: &Address,
        server_name: Option<&ServerName<'static>>,
        config: Arc<rustls::ClientConfig>,
    ) -> Option<Self> {
        let name = match (server_name, address) {
            (Some(name), _) => name.clone(),
            (None, Address::Socket(socket)) => ServerName::IpAddress(socket.ip().into()),
            (None, Address::Host { host, .. }) => ServerName::try_from(host.clone()).ok()?,
        };
        Some(TlsConnector { address: address.clone(), name, tls: tokio_rustls::TlsConnector::from(config) })
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
            let stream = match &this.address {
                Address::Socket(socket) => TcpStream::connect(socket).await?,
                Address::Host { host, port } => TcpStream::connect((host.as_str(), *port)).await?,
            };
            stream.set_nodelay(true)?;
            let tls = this.tls.connect(this.name, stream).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
