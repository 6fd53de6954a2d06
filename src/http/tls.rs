//! Serving HTTPS: the certificate kubegate presents, and a self-signed one made on first
//! start so that kubectl, which never sends credentials over plain HTTP, works at once,
//! and its reload (SIGHUP, or a change of the files) without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::tls::load_certified_key;
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

/// What identifies a version of a file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The serving certificate, swapped in place when its files change: every new TLS
/// handshake gets the certificate in force; connections already open keep theirs.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Stamp, Stamp)>,
}

impl ReloadingCert {
    /// Loads `cert` and `key`; an error when they do not make a certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, ConfigError> {
        let stamps = (stamp(cert), stamp(key));
        let certified = load_certified_key(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// Reads the files again and puts the certificate in force; when they do not make a
    /// certificate, the one in force stays and the error says why.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        let result = load_certified_key(&self.cert, &self.key);
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        match result {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
                crate::metrics::tls_reload(true);
                log::info!("serving certificate reloaded from {}", self.cert.display());
                Ok(())
            }
            Err(e) => {
                crate::metrics::tls_reload(false);
                log::error!("serving certificate not reloaded, the previous one stays in use: {e}");
                Err(e)
            }
        }
    }

    /// Reloads when either file changed (time or length) since it was last read.
    pub fn reload_if_changed(&self) -> Option<Result<(), ConfigError>> {
        let now = (stamp(&self.cert), stamp(&self.key));
        let changed = *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != now;
        changed.then(|| self.reload())
    }

    /// The certificate in force.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads on SIGHUP, and when the files change (checked every `interval`; zero: only
    /// on SIGHUP). Runs until the actix system stops.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        use actix_rt::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                log::warn!("cannot listen for SIGHUP ({e}); the certificate reloads only when its files change");
                None
            }
        };
        let mut tick = (!interval.is_zero()).then(|| actix_rt::time::interval(interval));
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let poll = async {
                match tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = hup => {
                    if got.is_none() {
                        hangup = None;
                        continue;
                    }
                    log::info!("SIGHUP: reloading the serving certificate");
                    let _ = self.reload();
                }
                _ = poll => {
                    let _ = self.reload_if_changed();
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls configuration for serving with `cert`; `http2` offers HTTP/2 by ALPN
/// (HTTP/1.1 stays offered, for clients that upgrade connections).
///
/// HTTP/2 relies on the patched actix-http of `vendor/actix-http`: upstream, a response
/// body is dropped only when its next chunk fails to be written, so a watch an HTTP/2
/// client cancelled (a stream reset, the connection staying open) held its API server
/// connection until its next event. Upstream also put `h2` first in every ALPN list,
/// whatever was configured here.
pub fn server_config(cert: Arc<ReloadingCert>, http2: bool) -> Result<ServerConfig, ConfigError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
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
        ReloadingCert::load(&cert, &key).unwrap();
        assert!(ReloadingCert::load(&key, &cert).is_err());
    }
}
