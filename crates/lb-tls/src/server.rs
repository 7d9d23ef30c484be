//! The server side: the certificates a TLS listener shows, chosen by SNI.

use std::path::PathBuf;
use std::sync::Arc;

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
        let provider = provider();
        let mut keys = Vec::with_capacity(self.certificates.len());
        for files in &self.certificates {
            keys.push(Arc::new(certified_key(files, &provider)?));
        }
        if keys.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|source| TlsError::Rustls { context: "TLS versions".into(), source })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { keys }));
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|source| TlsError::Rustls { context: "session tickets".into(), source })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn certified_key(
    files: &CertificateFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = pem::certificates(&files.cert_file)?;
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

/// Picks the first certificate valid for the client's SNI, else the default.
#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wanted = hello.server_name().and_then(|name| DnsName::try_from(name).ok());
        let chosen = wanted.and_then(|name| {
            let name = ServerName::DnsName(name.to_owned());
            self.keys.iter().find(|key| {
                let leaf = key.end_entity_cert().ok();
                leaf.and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            })
        });
        chosen.or_else(|| self.keys.first()).cloned()
    }
}
