//! PEM files for TLS: certificate chains, private keys and CA roots, with errors that name the
//! file and what was wrong with it. Used by the cluster's mutual TLS and by plugin routes to
//! engines over TLS.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A PEM file that could not be read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PemError {
    pub path: PathBuf,
    pub reason: String,
}

/// The bytes of `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| PemError {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Every certificate in `path` (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError {
            path: path.into(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PemError {
            path: path.into(),
            reason: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

/// The private key in `path`.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| PemError {
        path: path.into(),
        reason: format!("not a PEM private key: {e}"),
    })
}

/// The CA certificates in `path` as trust roots.
pub fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|e| PemError {
            path: path.into(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The crypto provider every TLS configuration of the host uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        assert!(certs(&missing).unwrap_err().path == missing);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(certs(&empty).unwrap_err().reason, "holds no certificate");
        let junk = dir.path().join("key.pem");
        std::fs::write(&junk, "not a key").unwrap();
        assert!(key(&junk)
            .unwrap_err()
            .reason
            .starts_with("not a PEM private key"));
    }
}
