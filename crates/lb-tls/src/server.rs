//! The server side: the certificates a TLS listener shows, chosen by SNI.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::{DnsName, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::{TlsError, pem, provider};

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The chain, leaf first.
    pub cert_file: PathBuf,
    /// The leaf's private key.
    pub key_file: PathBuf,
}

/// What a TLS listener shows: the first certificate is the default, for
/// clients that send no server name or one no certificate is valid for;
/// the others are chosen when the client's SNI matches a name they hold
/// (wildcards as RFC 6125 has them, checked by webpki).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// At least one.
    pub certificates: Vec<CertificateFiles>,
}

impl ServerTls {
    /// A rustls server configuration: TLS 1.2 and 1.3 only, stateless
    /// session tickets (resumption) on, offering `alpn` in order.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file at fault: unreadable, not PEM, a key
    /// that does not match its certificate; or no certificate at all.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        Ok(self.reloadable_server_config(alpn)?.0)
    }

    /// As [`server_config`](Self::server_config), with the handle that
    /// swaps in certificates read again later (renewed files).
    ///
    /// # Errors
    /// As [`server_config`](Self::server_config).
    pub fn reloadable_server_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<(Arc<ServerConfig>, ServedCertificates), TlsError> {
        let provider = provider();
        let served = ServedCertificates(Arc::new(ArcSwap::from_pointee(self.read(&provider)?)));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|source| TlsError::Rustls { context: "TLS versions".into(), source })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { keys: served.clone() }));
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|source| TlsError::Rustls { context: "session tickets".into(), source })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok((Arc::new(config), served))
    }

    /// Every certificate read and checked against its key; at least one.
    fn read(&self, provider: &rustls::crypto::CryptoProvider) -> Result<Vec<Arc<CertifiedKey>>, TlsError> {
        let mut keys = Vec::with_capacity(self.certificates.len());
        for files in &self.certificates {
            keys.push(Arc::new(certified_key(files, provider)?));
        }
        if keys.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        Ok(keys)
    }
}

/// The certificates a running listener shows; new handshakes see a swap at once.
#[derive(Debug, Clone)]
pub struct ServedCertificates(Arc<ArcSwap<Vec<Arc<CertifiedKey>>>>);

impl ServedCertificates {
    /// Reads `tls`'s files again, without showing them yet.
    ///
    /// # Errors
    /// As [`ServerTls::server_config`]; the certificates served stay as they are.
    pub fn prepare(&self, tls: &ServerTls) -> Result<PreparedCertificates, TlsError> {
        Ok(PreparedCertificates { served: self.clone(), keys: tls.read(&provider())? })
    }
}

/// Certificates read and checked, to be shown by [`apply`](Self::apply).
#[derive(Debug)]
pub struct PreparedCertificates {
    served: ServedCertificates,
    keys: Vec<Arc<CertifiedKey>>,
}

impl PreparedCertificates {
    /// Shows them from the next handshake on; connections already open keep theirs.
    pub fn apply(self) {
        self.served.0.store(Arc::new(self.keys));
    }
}

fn certified_key(
    files: &CertificateFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = pem::certificates(&files.cert_file)?;
    in_validity_period(&chain[0], &files.cert_file)?;
    let key = pem::private_key(&files.key_file)?;
    let context =
        || format!("cert_file {} with key_file {}", files.cert_file.display(), files.key_file.display());
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Rustls { context: context(), source })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => TlsError::Pem {
            path: files.key_file.clone(),
            why: format!("not the key of the certificate in {}", files.cert_file.display()),
        },
        source => TlsError::Rustls { context: context(), source },
    })?;
    Ok(certified)
}

/// Refuses a leaf certificate that expired or is not valid yet: every client
/// would refuse it, so serving it only moves the failure to them.
fn in_validity_period(
    leaf: &rustls::pki_types::CertificateDer<'_>,
    path: &std::path::Path,
) -> Result<(), TlsError> {
    let bad = |why: String| TlsError::Pem { path: path.to_path_buf(), why };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| bad(format!("the first certificate cannot be read: {e}")))?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(bad(format!("the certificate expired on {}", validity.not_after)));
    }
    if now < validity.not_before {
        return Err(bad(format!("the certificate is not valid before {}", validity.not_before)));
    }
    Ok(())
}

/// Picks the first certificate valid for the client's SNI, else the default.
#[derive(Debug)]
struct BySni {
    keys: ServedCertificates,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = self.keys.0.load();
        let wanted = hello.server_name().and_then(|name| DnsName::try_from(name).ok());
        let chosen = wanted.and_then(|name| {
            let name = ServerName::DnsName(name.to_owned());
            keys.iter().find(|key| {
                let leaf = key.end_entity_cert().ok();
                leaf.and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            })
        });
        chosen.or_else(|| keys.first()).cloned()
    }
}
