//! The client side: how lb verifies the servers it connects to (endpoints,
//! Consul) and which certificate it shows them.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{TlsError, pem, provider};

/// TLS settings for connections lb opens: the same for the proxy's
/// endpoints, the client pool and Consul.
///
/// The default verifies servers against the system's roots under the name
/// the connection was made to, and shows no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Trust only the CA certificates in this PEM file instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Verify the server's certificate for this name rather than the host
    /// connected to (needed when that host is an IP address).
    pub server_name: Option<String>,
    /// Show this certificate chain (PEM, leaf first) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// Accept any certificate. For tests only: it gives up on knowing who answers.
    pub insecure_skip_verify: bool,
}

impl ClientTls {
    /// A rustls client configuration for these settings, TLS 1.2 and 1.3 only,
    /// offering `alpn` (for example `[b"h2", b"http/1.1"]`; empty: no ALPN).
    ///
    /// # Errors
    /// A [`TlsError`] naming the file or setting at fault: an unreadable or
    /// empty CA file, a certificate without its key, a key that does not
    /// match its certificate, a server name that is not one.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let verifier = self.verifier(&provider)?;
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|source| TlsError::Rustls { context: "TLS versions".into(), source })?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match (&self.client_cert, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = pem::certificates(cert)?;
                let key_der = pem::private_key(key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|source| TlsError::Rustls {
                    context: format!("client_cert {} with client_key {}", cert.display(), key.display()),
                    source,
                })?
            }
            (Some(_), None) => return Err(TlsError::HalfIdentity("client_cert")),
            (None, Some(_)) => return Err(TlsError::HalfIdentity("client_key")),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A connector that runs the handshake over sockets lb dialed, with
    /// these settings and `alpn` offered.
    ///
    /// # Errors
    /// As [`client_config`](Self::client_config).
    pub fn connector(&self, alpn: &[&[u8]]) -> Result<TlsConnector, TlsError> {
        let server_name = match &self.server_name {
            Some(name) => {
                Some(ServerName::try_from(name.clone()).map_err(|_| TlsError::BadServerName(name.clone()))?)
            }
            None => None,
        };
        let config = self.client_config(alpn)?;
        let settings = Settings { inner: tokio_rustls::TlsConnector::from(config), server_name };
        Ok(TlsConnector { current: Arc::new(ArcSwap::from_pointee(settings)) })
    }

    fn verifier(&self, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
        if self.insecure_skip_verify {
            return Ok(Arc::new(AcceptAnything(Arc::clone(provider))));
        }
        let verifier: Arc<dyn ServerCertVerifier> =
            match &self.ca_file {
                Some(path) => {
                    let mut roots = RootCertStore::empty();
                    for cert in pem::certificates(path)? {
                        roots.add(cert).map_err(|source| TlsError::Rustls {
                            context: format!("ca_file {}", path.display()),
                            source,
                        })?;
                    }
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                        .build()
                        .map_err(|e| TlsError::Pem {
                            path: path.clone(),
                            why: format!("no usable CA certificate: {e}"),
                        })?
                }
                None => Arc::new(rustls_platform_verifier::Verifier::new(Arc::clone(provider)).map_err(
                    |source| TlsError::Rustls { context: "the system's root certificates".into(), source },
                )?),
            };
        Ok(match &self.server_name {
            Some(name) => {
                let name =
                    ServerName::try_from(name.clone()).map_err(|_| TlsError::BadServerName(name.clone()))?;
                Arc::new(NameOverride { name, inner: verifier })
            }
            None => verifier,
        })
    }
}

/// Runs the client side of a TLS handshake over a connected socket (see
/// [`ClientTls::connector`]). Cheap to clone, and clones share their
/// settings: [`renew`](Self::renew) on one applies to every clone, so the
/// traffic and the health checks of an upstream always use the same files.
#[derive(Clone)]
pub struct TlsConnector {
    current: Arc<ArcSwap<Settings>>,
}

struct Settings {
    inner: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let server_name = self.current.load().server_name.clone();
        f.debug_struct("TlsConnector").field("server_name", &server_name).finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// The negotiated TLS stream over `stream`, a socket connected to `host`
    /// (a DNS name or an IP address). The SNI sent and the name verified are
    /// the configured `server_name`, else `host`; an IP address sends no SNI.
    ///
    /// # Errors
    /// `InvalidInput` when `host` is no server name; the handshake's error
    /// (an unknown issuer, an expired certificate, a refused client
    /// certificate) as `InvalidData`.
    pub async fn connect(&self, host: &str, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let settings = self.current.load_full();
        let name = match &settings.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("`{host}` is not a server name"),
                    )
                })?,
        };
        settings.inner.connect(name, stream).await
    }

    /// The rustls configuration it connects with now.
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(self.current.load().inner.config())
    }

    /// Connects with `newer`'s settings from now on, in this connector and
    /// every clone of it (files read again on a reload); connections
    /// already made keep theirs.
    pub fn renew(&self, newer: &TlsConnector) {
        self.current.store(newer.current.load_full());
    }
}

/// Verifies the certificate for a configured name instead of the host connected to.
#[derive(Debug)]
struct NameOverride {
    name: ServerName<'static>,
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate, but handshake signatures are
/// still checked, so the peer holds the key of the certificate it showed.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
