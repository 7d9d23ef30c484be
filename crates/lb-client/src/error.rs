//! Why a balanced request could not be sent or answered.

/// An error from the client pool, the tower balancer or the gRPC channel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No endpoint may be picked: discovery has none, or all are ejected,
    /// failing their health checks or behind an open breaker.
    #[error("no eligible endpoint for `{0}`")]
    NoEndpoint(String),
    /// The request's URL could not be read or rewritten for an endpoint.
    #[error("bad request URL `{url}`: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The builder was given inconsistent settings.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The request failed on its last attempt.
    #[error("request to `{endpoint}` failed")]
    Request {
        /// The endpoint of the last attempt.
        endpoint: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// The request could not be built (a bad header value, say).
    #[error("cannot build the request")]
    Build(#[source] reqwest::Error),
    /// The reqwest client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The TLS settings cannot be used (a file named in the message).
    #[error("TLS settings: {0}")]
    Tls(#[from] lb_tls::TlsError),
}
