//! PEM files into rustls' types, each error naming its file.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Every certificate in `path`, in order (a chain: leaf first); at least one.
///
/// # Errors
/// [`TlsError::Read`] or [`TlsError::Pem`], naming `path`.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| bad(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), why: "no CERTIFICATE in the file".into() });
    }
    Ok(certs)
}

/// The first private key in `path` (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsError::Read`] or [`TlsError::Pem`], naming `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            TlsError::Pem { path: path.to_path_buf(), why: "no PRIVATE KEY in the file".into() }
        }
        other => bad(path, &other),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn bad(path: &Path, error: &pem::Error) -> TlsError {
    TlsError::Pem { path: path.to_path_buf(), why: format!("not valid PEM: {error}") }
}
