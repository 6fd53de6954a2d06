//! Serving HTTPS: the certificate kubegate presents, and a self-signed one made on first
//! start so that kubectl, which never sends credentials over plain HTTP, works at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

fn tls_error(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

/// Where the self-signed CA of `cert` is written: `ca.crt` beside it.
pub fn ca_path(cert: &Path) -> PathBuf {
    cert.with_file_name("ca.crt")
}

/// Creates a CA (`ca.crt` beside `cert`) and a server certificate for `localhost`,
/// `127.0.0.1` and `::1` signed by it, unless `cert` and `key` exist. The key is mode 0600.
pub fn ensure_self_signed(cert: &Path, key: &Path) -> Result<(), ConfigError> {
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let fail = |what: &str, e: rcgen::Error| {
        tls_error(format!(
            "cannot create a self-signed certificate ({what}): {e}"
        ))
    };
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
    ca.distinguished_name
        .push(DnType::CommonName, "kubegate self-signed CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail("CA", e))?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().map_err(|e| fail("server key", e))?;
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let mut server = CertificateParams::new(names).map_err(|e| fail("server", e))?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kubegate");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(|e| fail("server", e))?;

    let write = |path: &Path, text: String| {
        kubegate_actors::fsutil::write_atomic(path, text.as_bytes())
            .map_err(|e| tls_error(format!("cannot write {}: {e}", path.display())))
    };
    write(&ca_path(cert), ca_cert.pem())?;
    write(key, server_key.serialize_pem())?;
    write(cert, format!("{}{}", server_cert.pem(), ca_cert.pem()))?;
    log::info!(
        "created a self-signed certificate in {}; clients trust it with {}",
        cert.display(),
        ca_path(cert).display()
    );
    Ok(())
}

/// The rustls configuration for serving with the PEM files `cert` (chain) and `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, ConfigError> {
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
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                tls_error(format!(
                    "{} does not fit {}: {e}",
                    key.display(),
                    cert.display()
                ))
            })?;
    // HTTP/1.1 only: actix-web's HTTP/2 streams notice a client's reset only when they
    // next write, so a watch left by an HTTP/2 client would hold its upstream
    // connection until its next event; over HTTP/1.1 kubegate notices at once.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("tls/server.crt"),
            dir.path().join("tls/server.key"),
        );
        ensure_self_signed(&cert, &key).unwrap();
        let first = std::fs::read(&cert).unwrap();
        ensure_self_signed(&cert, &key).unwrap();
        assert_eq!(
            std::fs::read(&cert).unwrap(),
            first,
            "an existing certificate is kept"
        );
        assert!(ca_path(&cert).exists());
        server_config(&cert, &key).unwrap();
        assert!(server_config(&key, &cert).is_err());
    }
}
