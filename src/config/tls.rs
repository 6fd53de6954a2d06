//! The serving certificate and key as files: read and checked once, by `check-config`
//! and by the server when it starts or reloads them.

use std::path::Path;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ConfigError;

fn tls_error(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

/// Reads the PEM chain `cert` and key `key` into a [`CertifiedKey`], checking that the
/// key is the certificate's.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, ConfigError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())))
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            tls_error(format!(
                "{} is not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(tls_error(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| tls_error(format!("{} is not a PEM private key: {e}", key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| {
        tls_error(format!(
            "{} is not a usable private key: {e}",
            key.display()
        ))
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        tls_error(format!(
            "{} does not fit {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(certified)
}
