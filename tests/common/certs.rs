//! A throw-away PKI for tests: a cluster CA, the API server's certificate, a client
//! certificate the CA vouches for (`CN=kubegate, O=system:masters`) and a client
//! certificate from a second CA that nobody trusts, all generated with rcgen at start-up.
//!
//! The TLS configurations built here use rustls with the ring provider explicitly, so they
//! work whatever process-wide default provider is (or is not) installed.

#![allow(dead_code)] // Each test crate that includes this file uses a different part of it.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The user name (certificate CN) of [`TestPki::client_cert_pem`].
pub const CLIENT_USER: &str = "kubegate";
/// The group (certificate O) of [`TestPki::client_cert_pem`].
pub const CLIENT_GROUP: &str = "system:masters";
/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "kubernetes.default.svc"];

/// Everything a test needs to speak TLS with the API server stand-in, as PEM strings.
pub struct TestPki {
    /// The cluster CA certificate: it signs the server certificate and the trusted client
    /// certificates, and it is the only CA the server accepts client certificates from.
    pub ca_pem: String,
    /// The server certificate, for `127.0.0.1`, `localhost` and `kubernetes.default.svc`.
    pub server_cert_pem: String,
    /// The server certificate's private key (PKCS#8).
    pub server_key_pem: String,
    /// A client certificate signed by the cluster CA: `CN=kubegate, O=system:masters`.
    pub client_cert_pem: String,
    /// The private key of [`TestPki::client_cert_pem`] (PKCS#8).
    pub client_key_pem: String,
    /// A client certificate signed by a different CA that the server does not trust.
    pub untrusted_client_cert_pem: String,
    /// The private key of [`TestPki::untrusted_client_cert_pem`] (PKCS#8).
    pub untrusted_client_key_pem: String,
    ca: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// Generates a fresh CA, server certificate and client certificates.
    pub fn new() -> Self {
        let (ca, ca_pem) = new_ca("apiserver-standin-ca");
        let (untrusted_ca, _) = new_ca("untrusted-ca");

        let server_key = KeyPair::generate().expect("generate the server key");
        let server_names: Vec<String> = SERVER_NAMES.iter().map(|name| name.to_string()).collect();
        let mut server = CertificateParams::new(server_names).expect("server certificate names");
        server.distinguished_name = distinguished_name("kube-apiserver", None);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = server
            .signed_by(&server_key, &ca)
            .expect("sign the server certificate");

        let (client_cert_pem, client_key_pem) = issue_client(&ca, CLIENT_USER, Some(CLIENT_GROUP));
        let (untrusted_client_cert_pem, untrusted_client_key_pem) =
            issue_client(&untrusted_ca, CLIENT_USER, Some(CLIENT_GROUP));

        TestPki {
            ca_pem,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem,
            client_key_pem,
            untrusted_client_cert_pem,
            untrusted_client_key_pem,
            ca,
        }
    }

    /// Issues another client certificate from the cluster CA, for the user `common_name`
    /// in the group `organization` (rcgen writes at most one O); returns
    /// `(certificate PEM, private key PEM)`.
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        organization: Option<&str>,
    ) -> (String, String) {
        issue_client(&self.ca, common_name, organization)
    }

    /// The server side, as a real API server configures it: its certificate, and client
    /// certificates verified against the cluster CA but optional at the TLS level (a
    /// client without one must then authenticate with a bearer token). A client
    /// certificate from any other CA fails the handshake.
    pub fn server_config(&self) -> ServerConfig {
        let provider = ring_provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&self.ca_pem)),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .expect("build the client certificate verifier");
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions supported by ring")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certificate_chain(&self.server_cert_pem),
                private_key(&self.server_key_pem),
            )
            .expect("server certificate and key match")
    }

    /// A client that trusts the cluster CA and presents the trusted client certificate.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_with(Some((&self.client_cert_pem, &self.client_key_pem)))
    }

    /// A client that trusts the cluster CA and presents no certificate.
    pub fn client_config_without_cert(&self) -> ClientConfig {
        self.client_config_with(None)
    }

    /// A client that trusts the cluster CA and presents the certificate of the untrusted CA.
    pub fn untrusted_client_config(&self) -> ClientConfig {
        self.client_config_with(Some((
            &self.untrusted_client_cert_pem,
            &self.untrusted_client_key_pem,
        )))
    }

    /// A client that trusts the cluster CA and presents `identity`, a
    /// `(certificate PEM, key PEM)` pair, if any. ALPN is left empty (HTTP/1.1).
    pub fn client_config_with(&self, identity: Option<(&str, &str)>) -> ClientConfig {
        let provider = ring_provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(&self.ca_pem)),
            provider.clone(),
        )
        .build()
        .expect("build the server certificate verifier");
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions supported by ring")
            .with_webpki_verifier(verifier);
        match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certificate_chain(cert), private_key(key))
                .expect("client certificate and key match"),
            None => builder.with_no_client_auth(),
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// The one crypto provider of this workspace.
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn new_ca(common_name: &str) -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().expect("generate a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name = distinguished_name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (Issuer::new(params, key), cert.pem())
}

fn issue_client(
    ca: &Issuer<'static, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
) -> (String, String) {
    let key = KeyPair::generate().expect("generate a client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
    params.distinguished_name = distinguished_name(common_name, organization);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params
        .signed_by(&key, ca)
        .expect("sign the client certificate");
    (cert.pem(), key.serialize_pem())
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

fn roots(ca_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in certificate_chain(ca_pem) {
        roots.add(cert).expect("add the CA to the root store");
    }
    roots
}

fn certificate_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn private_key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("PEM private key")
}
