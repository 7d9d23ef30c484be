//! TLS for lb, on rustls with the ring provider, TLS 1.2 and 1.3 only: the
//! configurations lb's connections are built from, read from PEM files with
//! every error naming its file.
//!
//! [`ClientTls`] is how lb verifies a server it connects to (a Consul agent,
//! the client pool's endpoints) and which certificate it shows for mutual
//! TLS: the system's roots or a CA file, the name to verify, a client
//! certificate and key. [`ServerTls`] is what a TLS listener shows: several
//! certificates chosen by SNI, the first the default. `testing` (feature `testing`) generates a CA and
//! certificates at test time.
//!
//! ```
//! use lb_tls::ClientTls;
//!
//! // The default: the system's roots, no client certificate.
//! let config = ClientTls::default().client_config(&[b"h2", b"http/1.1"]).unwrap();
//! assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
//!
//! // A missing CA file is named in the error.
//! let missing = ClientTls { ca_file: Some("/no/such/ca.pem".into()), ..ClientTls::default() };
//! let err = missing.client_config(&[]).unwrap_err();
//! assert!(err.to_string().starts_with("/no/such/ca.pem: "), "{err}");
//! ```

mod client;
mod error;
pub mod pem;
mod server;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use client::{ClientTls, TlsConnector};
pub use error::TlsError;
use rustls::crypto::CryptoProvider;
pub use server::{CertificateFiles, PreparedCertificates, ServedCertificates, ServerTls};

/// The one crypto provider lb uses: ring (no C toolchain needed, unlike aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
