//! A cluster's proxy instance: where its API server is and how to reach it safely.
//!
//! A [`ClusterProxy`] holds only thread-safe data, so the registry can hand it to every
//! HTTP worker; each worker builds its own HTTP client from it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use secrecy::{ExposeSecret, SecretString};

use crate::kubeconfig::{ClusterSpec, KubeconfigError};
use crate::ClusterKey;

/// One cluster's proxy instance, shared by every worker.
pub struct ClusterProxy {
    /// Which cluster this is.
    pub key: ClusterKey,
    /// The cluster's name in its org.
    pub name: String,
    /// API server URL without a trailing slash.
    pub server: String,
    /// TLS settings for the API server (CA, client certificate, server name).
    pub tls: Arc<ClientConfig>,
    /// The `Authorization` header kubegate sends, if the kubeconfig has a token or password.
    pub authorization: Option<SecretString>,
    /// Changes every time the instance is rebuilt; workers rebuild their clients on change.
    pub generation: u64,
    /// Whether requests carry the person's identity as `Impersonate-*` headers.
    pub impersonate: bool,
    /// Which exec and attach sessions are recorded.
    pub record_sessions: crate::store::RecordSessions,
    evicted: AtomicBool,
    last_used_ms: AtomicU64,
    /// When the credentials expire (an exec plugin's), in ms since the epoch; 0: never.
    expires_at_ms: u64,
}

impl std::fmt::Debug for ClusterProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterProxy")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("server", &self.server)
            .field("generation", &self.generation)
            .field("evicted", &self.is_evicted())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClusterProxy {
    /// Builds the instance, including its TLS configuration; fails on unusable PEM data.
    pub fn build(
        key: ClusterKey,
        name: String,
        spec: &ClusterSpec,
        generation: u64,
    ) -> Result<ClusterProxy, KubeconfigError> {
        Ok(ClusterProxy {
            key,
            name,
            server: spec.server.clone(),
            tls: Arc::new(tls_config(spec)?),
            authorization: spec.auth.header_value().map(SecretString::from),
            generation,
            impersonate: false,
            record_sessions: Default::default(),
            evicted: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(now_ms()),
            expires_at_ms: 0,
        })
    }

    /// Sets whether requests impersonate the person.
    pub fn impersonating(mut self, impersonate: bool) -> Self {
        self.impersonate = impersonate;
        self
    }

    /// Sets which sessions are recorded.
    pub fn recording(mut self, record_sessions: crate::store::RecordSessions) -> Self {
        self.record_sessions = record_sessions;
        self
    }

    /// Sets when the credentials expire.
    pub fn with_expiry(mut self, expires_at: Option<SystemTime>) -> Self {
        self.expires_at_ms = expires_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        self
    }

    /// True when the credentials expire within a second: time to build a new instance.
    pub fn is_expired(&self) -> bool {
        self.expires_at_ms != 0 && now_ms() + 1000 >= self.expires_at_ms
    }

    /// Whether requests may use this instance: not evicted, credentials not expired.
    pub fn is_usable(&self) -> bool {
        !self.is_evicted() && !self.is_expired()
    }

    /// True once the registry has dropped this instance: callers must ask for a new one.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Marks the instance as dropped by the registry.
    pub fn mark_evicted(&self) {
        self.evicted.store(true, Ordering::Release);
    }

    /// Records a use, for idle eviction.
    pub fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last [`touch`](Self::touch).
    pub fn idle_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_used_ms.load(Ordering::Relaxed))
    }

    /// The authorization header value, for the HTTP layer.
    pub fn authorization_header(&self) -> Option<&str> {
        self.authorization.as_ref().map(|s| s.expose_secret())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(field: &str, reason: impl std::fmt::Display) -> KubeconfigError {
    KubeconfigError::Field {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// Builds the rustls client configuration the kubeconfig asks for.
pub fn tls_config(spec: &ClusterSpec) -> Result<ClientConfig, KubeconfigError> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if spec.insecure_skip_tls_verify {
        Arc::new(crate::tls::AnyCertificate(provider.clone()))
    } else {
        let mut roots = RootCertStore::empty();
        match &spec.ca_pem {
            Some(pem) => {
                let mut added = 0;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| {
                        bad("certificate-authority-data", format!("is not PEM: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        bad(
                            "certificate-authority-data",
                            format!("holds an unusable certificate: {e}"),
                        )
                    })?;
                    added += 1;
                }
                if added == 0 {
                    return Err(bad(
                        "certificate-authority-data",
                        "holds no PEM certificate",
                    ));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| bad("certificate-authority-data", e))?;
        match &spec.tls_server_name {
            Some(name) => {
                let name =
                    ServerName::try_from(name.clone()).map_err(|e| bad("tls-server-name", e))?;
                Arc::new(FixedServerName { inner, name })
            }
            None => inner,
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &spec.client_cert {
        Some((cert_pem, key_pem)) => {
            let certs = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("client-certificate-data", format!("is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(bad("client-certificate-data", "holds no PEM certificate"));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.expose_secret().as_bytes())
                .map_err(|_| bad("client-key-data", "holds no usable PEM private key"))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                bad(
                    "client-key-data",
                    format!("does not fit the certificate: {e}"),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    // HTTP/1.1 only: upgrades (exec, port-forward) need it, and it is what the API
    // server sees from kubectl proxy too.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Verifies the server certificate against `tls-server-name` instead of the URL's host.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
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
