//! What can go wrong building a TLS configuration, naming the file at fault.

use std::path::PathBuf;

/// A TLS configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind wanted, or a malformed one.
    #[error("{}: {why}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("client_cert and client_key go together: {0} is set alone")]
    HalfIdentity(&'static str),
    /// A TLS listener with no certificate.
    #[error("a TLS listener needs at least one certificate")]
    NoCertificate,
    /// The server name to verify is not a DNS name or an IP address.
    #[error("server_name `{0}` is not a DNS name or an IP address")]
    BadServerName(String),
    /// rustls refused the pieces (a key that does not match its certificate, say).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}
