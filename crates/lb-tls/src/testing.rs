//! Certificates for tests, generated at test time with rcgen (feature
//! `testing`): nothing secret is ever committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

use crate::{pem, provider};

static NEXT_CA: AtomicU64 = AtomicU64::new(0);

/// A fresh CA with a server certificate for some names and a client
/// certificate, written as PEM files in a temporary directory that lives as
/// long as this value.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate (leaf), signed by the CA.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// A CA, a server certificate for `names` (DNS names or IP addresses)
    /// and a client certificate.
    ///
    /// # Panics
    /// When generation or writing fails: this is for tests.
    pub fn new(names: &[&str]) -> TestPki {
        TestPki::generate(names, false)
    }

    /// As [`new`](Self::new), with a server certificate that expired in 2001.
    pub fn expired(names: &[&str]) -> TestPki {
        TestPki::generate(names, true)
    }

    fn generate(names: &[&str], expired: bool) -> TestPki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca_key = KeyPair::generate().expect("a key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own, so another TestPki's certificates are from an unknown issuer.
        let serial = NEXT_CA.fetch_add(1, Ordering::Relaxed);
        let ca_name = format!("lb test CA {} {serial}", std::process::id());
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server = CertificateParams::new(names).expect("server params");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            server.not_before = rcgen::date_time_ymd(2000, 1, 1);
            server.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let (server_cert, server_key) = leaf(server, &ca, &ca_key);

        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client.distinguished_name.push(DnType::CommonName, "lb test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (client_cert, client_key) = leaf(client, &ca, &ca_key);

        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A rustls server configuration showing the server certificate, with
    /// `alpn` offered; with `require_client_cert`, only clients showing a
    /// certificate from this CA are let in.
    ///
    /// # Panics
    /// When the files cannot be read back: this is for tests.
    pub fn server_config(&self, require_client_cert: bool, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .expect("TLS versions");
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem::certificates(&self.ca).expect("the CA") {
                roots.add(cert).expect("a CA certificate");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = pem::certificates(&self.server_cert).expect("the server certificate");
        let key = pem::private_key(&self.server_key).expect("the server key");
        let mut config = builder.with_single_cert(chain, key).expect("a server configuration");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A leaf certificate for `params`, signed by the CA, with its new key.
fn leaf(params: CertificateParams, ca: &Certificate, ca_key: &KeyPair) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, ca, ca_key).expect("a signed certificate");
    (cert, key)
}
