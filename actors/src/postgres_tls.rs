//! PostgreSQL connections as libpq makes them: the connection string's `sslmode` and
//! `sslrootcert`, over rustls. The policy store and the audit sink both connect here.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` and refuses `sslrootcert`,
//! so [`PostgresTarget::parse`] reads both options itself, hands tokio-postgres the rest
//! of the string (with the `sslmode` it knows), and gives the TLS connector a verifier:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (the default, as in libpq) | when the server offers it, else plain | not checked |
//! | `require` | always | not checked; with `sslrootcert`, the chain is checked (as libpq does) |
//! | `verify-ca` | always | signed by a CA of `sslrootcert`; any host name |
//! | `verify-full` | always | signed by a CA of `sslrootcert`, and valid for the host connected to |
//!
//! Without `sslrootcert` (or with `sslrootcert=system`, as libpq 16 spells it), the
//! verify modes trust the system's CAs (rustls-native-certs: `SSL_CERT_FILE`,
//! `SSL_CERT_DIR`, or the OS store), not libpq's `~/.postgresql/root.crt`: kubegate runs
//! as a service, where a home directory is an accident. A handshake refused for a
//! certificate says what to change in the connection string.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Connection, Socket};

/// libpq's `sslmode`, all five that matter (`allow` is refused: it would try plain first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, without checking its certificate; else plain.
    Prefer,
    /// TLS always; the certificate is checked only when `sslrootcert` is given.
    Require,
    /// TLS, the certificate signed by a trusted CA, whatever its host names.
    VerifyCa,
    /// TLS, the certificate signed by a trusted CA and valid for the host name.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode, PostgresTlsError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(PostgresTlsError::SslMode(other.to_string())),
        })
    }

    /// What tokio-postgres is told: whether TLS may be skipped.
    fn for_tokio_postgres(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// A connection string kubegate cannot use.
#[derive(Debug, thiserror::Error)]
pub enum PostgresTlsError {
    /// `sslmode` is none of the five.
    #[error("sslmode \"{0}\" is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    /// The `sslrootcert` file cannot be read.
    #[error("sslrootcert: cannot read {}: {source}", path.display())]
    ReadRootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The `sslrootcert` file holds no usable certificate.
    #[error("sslrootcert: {} holds no PEM certificate that can be used as a CA{}", path.display(), reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    NoRootCert {
        /// The file.
        path: PathBuf,
        /// What was wrong with what it held, if anything was there.
        reason: Option<String>,
    },
    /// The system has no CA certificates, and `sslrootcert` was not given.
    #[error("sslmode={0} checks the server's certificate, but the system has no CA certificates; set sslrootcert to the CA that signed it")]
    NoSystemRoots(SslMode),
    /// The rest of the string does not parse.
    #[error("{0}")]
    Parse(#[source] tokio_postgres::Error),
}

/// Where a PostgreSQL server is and how to talk to it: tokio-postgres's configuration and
/// a TLS connector for the `sslmode` asked.
#[derive(Clone)]
pub struct PostgresTarget {
    config: tokio_postgres::Config,
    tls: RustlsConnect,
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // the configuration holds the password: only what identifies the server
        f.debug_struct("PostgresTarget")
            .field("hosts", &self.config.get_hosts())
            .field("sslmode", &self.tls.mode)
            .finish()
    }
}

impl PostgresTarget {
    /// Reads a connection string, URL (`postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=/ca.pem`)
    /// or key=value (`host=h dbname=db sslmode=verify-full sslrootcert=/ca.pem`), and
    /// loads the CA certificates its `sslmode` needs.
    pub fn parse(url: &str) -> Result<PostgresTarget, PostgresTlsError> {
        let (rest, options) = split_tls_options(url);
        let mode = match &options.ssl_mode {
            Some(mode) => SslMode::parse(mode)?,
            None => SslMode::Prefer,
        };
        let root_cert = options
            .root_cert
            .filter(|r| !r.is_empty() && r != "system")
            .map(PathBuf::from);
        let config = with_ssl_mode(&rest, mode.for_tokio_postgres())
            .parse::<tokio_postgres::Config>()
            .map_err(PostgresTlsError::Parse)?;
        let tls = RustlsConnect::new(mode, root_cert)?;
        Ok(PostgresTarget { config, tls })
    }

    /// The `sslmode` asked (`prefer` when none was).
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// Connects. The connection must be polled (spawned) for the client to work.
    pub async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, PostgresTlsStream>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// Whether `error` is one that waiting will not cure: the server's certificate refused
/// by the `sslmode` asked (wrong CA, wrong host name), or the server not offering TLS
/// where it is required. Such a connection string is refused at start-up.
pub fn is_tls_refusal(error: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<HandshakeRefused>() {
            return refused.certificate().is_some();
        }
        if e.to_string() == NO_TLS {
            return true;
        }
        source = e.source();
    }
    false
}

/// A tokio-postgres error with its causes (its own text is only the kind: "db error",
/// "error performing TLS handshake"), so that a log line or a start-up error says what
/// happened.
pub fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        if e.is::<HandshakeRefused>() {
            break; // it names its own cause
        }
        if e.to_string() == NO_TLS {
            text.push_str(
                " (the sslmode asks for TLS: turn ssl on in the server, or use sslmode=prefer or disable)",
            );
        }
        source = e.source();
    }
    text
}

/// What tokio-postgres says when `sslmode=require` meets a server without TLS.
const NO_TLS: &str = "server does not support TLS";

/// `sslmode` and `sslrootcert` as found in a connection string (values decoded).
#[derive(Debug, Default, PartialEq)]
struct TlsOptions {
    ssl_mode: Option<String>,
    root_cert: Option<String>,
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The connection string without `sslmode` and `sslrootcert`, and their values.
fn split_tls_options(s: &str) -> (String, TlsOptions) {
    let mut options = TlsOptions::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            options.ssl_mode = Some(value);
            true
        }
        "sslrootcert" => {
            options.root_cert = Some(value);
            true
        }
        _ => false,
    };
    if is_url(s) {
        let Some((base, query)) = s.split_once('?') else {
            return (s.to_string(), options);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                !take(&percent_decode(key), percent_decode(value))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, options)
    } else {
        let mut rest = String::with_capacity(s.len());
        for (raw, key, value) in key_value_pairs(s) {
            if !take(key, value) {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(raw);
            }
        }
        (rest, options)
    }
}

/// The connection string with `sslmode=mode` added (the caller removed any other).
fn with_ssl_mode(s: &str, mode: &str) -> String {
    if is_url(s) {
        let sep = if s.contains('?') { '&' } else { '?' };
        format!("{s}{sep}sslmode={mode}")
    } else if s.trim().is_empty() {
        format!("sslmode={mode}")
    } else {
        format!("{s} sslmode={mode}")
    }
}

/// The `key=value` pairs of a libpq key=value string: each pair's text as written, its
/// key and its value unquoted (`'...'` with `\'` and `\\`, or a bare word with `\`
/// escapes). A pair that does not parse is passed on as written for tokio-postgres to
/// name.
fn key_value_pairs(s: &str) -> Vec<(&str, &str, String)> {
    let bytes = s.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            pairs.push((&s[start..i], key, String::new()));
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        pairs.push((
            &s[start..i],
            key,
            String::from_utf8_lossy(&value).into_owned(),
        ));
    }
    pairs
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CAs the verify modes trust: the `sslrootcert` file, else the system's.
fn load_roots(mode: SslMode, file: Option<&PathBuf>) -> Result<RootCertStore, PostgresTlsError> {
    let mut roots = RootCertStore::empty();
    match file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| PostgresTlsError::ReadRootCert {
                path: path.clone(),
                source,
            })?;
            let mut reason = None;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                match cert.map(|c| roots.add(c)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => reason = Some(e.to_string()),
                    Err(e) => reason = Some(e.to_string()),
                }
            }
            if roots.is_empty() {
                return Err(PostgresTlsError::NoRootCert {
                    path: path.clone(),
                    reason,
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                log::warn!("reading the system's CA certificates: {error}");
            }
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(PostgresTlsError::NoSystemRoots(mode));
            }
        }
    }
    Ok(roots)
}

/// tokio-postgres's TLS connector, over tokio-rustls with the tree's ring provider.
#[derive(Clone)]
pub struct RustlsConnect {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    config: Arc<ClientConfig>,
}

impl RustlsConnect {
    fn new(mode: SslMode, root_cert: Option<PathBuf>) -> Result<RustlsConnect, PostgresTlsError> {
        let provider = provider();
        // libpq: "if a root CA file exists, sslmode=require behaves as verify-ca"
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, &root_cert) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
                Arc::new(crate::tls::AnyCertificate(provider.clone()))
            }
            (SslMode::Require | SslMode::VerifyCa, _) => Arc::new(ChainOnly(webpki(
                load_roots(mode, root_cert.as_ref())?,
                &provider,
            ))),
            (SslMode::VerifyFull, _) => webpki(load_roots(mode, root_cert.as_ref())?, &provider),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(RustlsConnect {
            mode,
            root_cert,
            config: Arc::new(config),
        })
    }
}

fn webpki(roots: RootCertStore, provider: &Arc<CryptoProvider>) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("a root store that is not empty")
}

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = PostgresTlsStream;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsHandshake, io::Error> {
        // a host name that is not a DNS name or an IP address (a Unix socket path): TLS
        // is not used there, but the connector is made for every host
        let name = ServerName::try_from(domain.to_string()).unwrap_or_else(|_| {
            ServerName::try_from("invalid.invalid".to_string()).expect("a DNS name")
        });
        Ok(RustlsHandshake {
            connect: self.clone(),
            host: domain.to_string(),
            name,
        })
    }
}

/// One TLS handshake with one host.
pub struct RustlsHandshake {
    connect: RustlsConnect,
    host: String,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PostgresTlsStream<S>;
    type Error = HandshakeRefused;
    type Future =
        Pin<Box<dyn Future<Output = Result<PostgresTlsStream<S>, HandshakeRefused>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.connect.config.clone());
            match connector.connect(self.name, stream).await {
                Ok(stream) => Ok(PostgresTlsStream(Box::new(stream))),
                Err(error) => Err(HandshakeRefused {
                    host: self.host,
                    mode: self.connect.mode,
                    root_cert: self.connect.root_cert,
                    error,
                }),
            }
        })
    }
}

/// A TLS handshake that failed, with what to change.
#[derive(Debug)]
pub struct HandshakeRefused {
    host: String,
    mode: SslMode,
    root_cert: Option<PathBuf>,
    error: io::Error,
}

impl HandshakeRefused {
    /// What was wrong with the server's certificate, if that is why.
    fn certificate(&self) -> Option<&CertificateError> {
        self.error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .and_then(|e| match e {
                rustls::Error::InvalidCertificate(c) => Some(c),
                _ => None,
            })
    }
}

impl fmt::Display for HandshakeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, mode) = (&self.host, self.mode);
        let cas = match &self.root_cert {
            Some(path) => format!("sslrootcert ({})", path.display()),
            None => "the system's CA certificates (no sslrootcert given)".to_string(),
        };
        let certificate = self.certificate();
        match certificate {
            Some(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => {
                let presented = match certificate {
                    Some(CertificateError::NotValidForNameContext { presented, .. }) => {
                        let names: Vec<&str> = presented.iter().map(|n| bare_name(n)).collect();
                        format!(" (it names {})", names.join(", "))
                    }
                    _ => String::new(),
                };
                write!(
                    f,
                    "sslmode={mode}: the server's certificate is not valid for the host name \"{host}\"{presented}; \
                     connect to a name the certificate holds, or use sslmode=verify-ca to check the CA only"
                )
            }
            Some(CertificateError::UnknownIssuer | CertificateError::BadSignature) => write!(
                f,
                "sslmode={mode}: the certificate of {host} is not signed by a CA of {cas}; \
                 set sslrootcert to the CA that signed the server's certificate"
            ),
            Some(other) => write!(
                f,
                "sslmode={mode}: the certificate of {host} was refused ({other:?}); \
                 check the server's certificate and sslrootcert ({cas})"
            ),
            None => write!(f, "TLS with {host} failed (sslmode={mode}): {}", self.error),
        }
    }
}

/// A name as rustls presents it (`DnsName("db.example.com")`, `IpAddress(10.0.0.5)`),
/// without the wrapping.
fn bare_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

impl std::error::Error for HandshakeRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A TLS stream to PostgreSQL (boxed: a TLS client connection is large, and the plain
/// sockets beside it are not).
pub struct PostgresTlsStream<S = Socket>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PostgresTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PostgresTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PostgresTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM channel binding (tls-server-end-point) needs the certificate's hash
        // algorithm; without it the server falls back to plain SCRAM, as with libpq's
        // channel_binding=prefer
        ChannelBinding::none()
    }
}

/// `sslmode=verify-ca`: webpki checks the chain up to a trusted CA (and validity dates);
/// only its last step, the host name, is not held against the server. (webpki checks the
/// name after the chain, so a name error means the chain was good.)
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, Option<String>, Option<String>) {
        let (rest, o) = split_tls_options(s);
        (rest, o.ssl_mode, o.root_cert)
    }

    #[test]
    fn url_options_are_taken_out_and_decoded() {
        let (rest, mode, root) = split(
            "postgres://u:p@db.example.com:5433/kg?sslmode=verify-full&application_name=kg&sslrootcert=%2Fetc%2Fca%20x.pem",
        );
        assert_eq!(
            rest,
            "postgres://u:p@db.example.com:5433/kg?application_name=kg"
        );
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca x.pem"));
        let (rest, mode, _) = split("postgresql://u@h/db?sslmode=require");
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(
            with_ssl_mode(&rest, "require"),
            "postgresql://u@h/db?sslmode=require"
        );
        assert_eq!(split("postgres://u@h/db").0, "postgres://u@h/db");
    }

    #[test]
    fn key_value_options_are_taken_out_and_unquoted() {
        let (rest, mode, root) = split(
            "host=db.example.com  user=postgres sslmode = verify-ca sslrootcert='/etc/my ca\\'s.pem' password='a b' dbname=kg",
        );
        assert_eq!(
            rest,
            "host=db.example.com user=postgres password='a b' dbname=kg"
        );
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/etc/my ca's.pem"));
        assert_eq!(
            with_ssl_mode(&rest, "require"),
            "host=db.example.com user=postgres password='a b' dbname=kg sslmode=require"
        );
        let (rest, mode, root) = split("host=h sslrootcert=/ca\\ 1.pem");
        assert_eq!(
            (rest.as_str(), mode, root.as_deref()),
            ("host=h", None, Some("/ca 1.pem"))
        );
    }

    #[test]
    fn every_mode_parses_and_mistakes_say_what_is_wrong() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(SslMode::parse(text).unwrap(), mode);
            assert_eq!(mode.to_string(), text);
        }
        let target = PostgresTarget::parse("host=127.0.0.1 user=postgres").unwrap();
        assert_eq!(target.ssl_mode(), SslMode::Prefer);
        let target = PostgresTarget::parse("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(target.ssl_mode(), SslMode::Disable);

        let e = PostgresTarget::parse("host=h sslmode=allow").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sslmode \"allow\" is not one of disable, prefer, require, verify-ca, verify-full"
        );
        let e = PostgresTarget::parse("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sslrootcert: cannot read /nonexistent/ca.pem:"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = PostgresTarget::parse(&format!(
            "postgres://u@h/db?sslmode=verify-ca&sslrootcert={}",
            junk.display()
        ))
        .unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        assert!(PostgresTarget::parse("host=h port=notaport").is_err());
    }
}
