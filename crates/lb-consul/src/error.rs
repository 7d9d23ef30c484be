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
    #[error("Consul request to {url} failed: {}", with_causes(source))]
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
    /// The TLS settings for an `https://` agent cannot be used.
    #[error("Consul at {address}: {source}")]
    Tls {
        /// The agent's address.
        address: String,
        /// Which file or setting, and why.
        source: lb_tls::TlsError,
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

/// An error and every cause under it, so a certificate problem reads as
/// one rather than as "error sending request".
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
