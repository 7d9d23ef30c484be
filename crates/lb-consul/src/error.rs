//! What can go wrong talking to Consul.

/// Why a Consul request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The configured agent address is not usable.
    #[error("bad Consul address `{address}`: {why}")]
    BadAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        why: String,
    },
    /// The request did not complete: connection refused, timeout, reset.
    #[error("Consul request to {url} failed: {source}")]
    Transport {
        /// The request URL (without the token, which travels in a header).
        url: String,
        /// What the HTTP client said.
        source: reqwest::Error,
    },
    /// Consul refused the ACL token (403), or none was sent and one is needed.
    #[error("Consul refused the request to {url} (403): check CONSUL_HTTP_TOKEN: {body}")]
    Forbidden {
        /// The request URL.
        url: String,
        /// Consul's explanation.
        body: String,
    },
    /// Consul answered with another non-success status.
    #[error("Consul answered {status} to {url}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The request URL.
        url: String,
        /// Consul's explanation.
        body: String,
    },
    /// A blocking endpoint answered without `X-Consul-Index`, so it is not Consul.
    #[error("Consul's answer from {url} has no valid X-Consul-Index header")]
    MissingIndex {
        /// The request URL.
        url: String,
    },
    /// The body is not the documented JSON.
    #[error("Consul's answer from {url} is not the expected JSON: {source}")]
    Decode {
        /// The request URL.
        url: String,
        /// What the decoder said.
        source: serde_json::Error,
    },
}
