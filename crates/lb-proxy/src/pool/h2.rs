//! One shared HTTP/2 connection to one endpoint: in cleartext (h2c, prior
//! knowledge), as gRPC servers expect, or over TLS (ALPN `h2`). Requests are streams on it; a closed
//! connection is replaced by the next request, and one that hands a request
//! back unsent gets it resent on the replacement.

use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Mutex;

use crate::body::RequestBody;

/// Why a request got no response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (refused, unreachable, connect timeout); nothing was sent.
    Connect,
    /// The connection failed after the request was handed to it.
    Failed(hyper::Error),
}

type Sender = SendRequest<RequestBody>;

/// The endpoint's connection, made on first use.
pub(crate) struct SharedConnection {
    /// Held across a connect, so concurrent first requests make one connection, not many.
    current: Mutex<Option<Sender>>,
    connect_timeout: Duration,
    tls: Option<super::UpstreamTls>,
}

impl std::fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection").finish_non_exhaustive()
    }
}

impl SharedConnection {
    pub(crate) fn new(connect_timeout: Duration, tls: Option<super::UpstreamTls>) -> Self {
        SharedConnection { current: Mutex::new(None), connect_timeout, tls }
    }

    /// Sends `request` as a new stream; at most one fresh connection is made
    /// for it when the current one turns out closed.
    pub(crate) async fn send(
        &self,
        authority: &Authority,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        for fresh in [false, true] {
            let mut sender = match self.sender(authority, fresh).await {
                Ok(sender) => sender,
                Err(_) => return Err(SendError::Connect),
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Failed(error.into_error())),
                },
            }
        }
        Err(SendError::Connect)
    }

    /// A handle on the open connection, or on a new one when there is none,
    /// it is closed, or `fresh` asks to replace it.
    async fn sender(&self, authority: &Authority, fresh: bool) -> std::io::Result<Sender> {
        let mut current = self.current.lock().await;
        if let Some(sender) = current.as_ref().filter(|s| !fresh && !s.is_closed()) {
            return Ok(sender.clone());
        }
        let sender = self.connect(authority).await?;
        *current = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self, authority: &Authority) -> std::io::Result<Sender> {
        let stream = super::dial(authority, self.connect_timeout, self.tls.as_ref()).await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }
}
