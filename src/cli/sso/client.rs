//! The HTTP client towards a kubegate server: its trust (like kubectl's: the system's
//! CAs, a CA file, the cluster's CA data, or no verification at all), its proxies (from
//! `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`, which reqwest reads), and the server's
//! SSO endpoints.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

use super::SsoError;

/// The characters kept as they are in a query or form value: the unreserved ones of
/// RFC 3986; everything else is percent-encoded.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes one query or form value as `application/x-www-form-urlencoded` does: a
/// space becomes `+`, everything but the unreserved characters is percent-encoded.
///
/// `+` rather than `%20` matters for the authorize URL: the server passes it through its
/// login page as a `redirect` parameter and refuses a target that holds whitespace once
/// percent-decoded (`client=kubegate on HOST` would).
pub fn encode(value: &str) -> String {
    value
        .split(' ')
        .map(|part| utf8_percent_encode(part, VALUE).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// `name=value&...`, every value percent-encoded (a form body or a query string).
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The trust flags of the command line, as kubectl has them.
#[derive(Debug, Clone, Default)]
pub struct TrustFlags {
    /// `--certificate-authority FILE`: trust these PEM certificates instead of the
    /// system's.
    pub certificate_authority: Option<PathBuf>,
    /// `--insecure-skip-tls-verify`: do not verify the server's certificate.
    pub insecure_skip_tls_verify: bool,
}

/// Whom the client trusts for HTTPS.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The operating system's CAs.
    System,
    /// The PEM certificates of this file.
    CaFile(PathBuf),
    /// These PEM certificates (a kubeconfig's `certificate-authority-data`).
    CaPem(Vec<u8>),
    /// Anything: the certificate is not verified.
    Insecure,
}

impl TrustFlags {
    /// The trust the flags ask for, else `fallback`.
    pub fn trust_or(&self, fallback: Trust) -> Trust {
        if self.insecure_skip_tls_verify {
            Trust::Insecure
        } else if let Some(file) = &self.certificate_authority {
            Trust::CaFile(file.clone())
        } else {
            fallback
        }
    }

    /// Warns on standard error when `--insecure-skip-tls-verify` was given. (Not when
    /// the plugin takes it from the cluster entry: kubectl runs the plugin often, and
    /// says nothing itself about insecure clusters.)
    pub fn warn_if_insecure(&self, server: &str) {
        if self.insecure_skip_tls_verify {
            eprintln!(
                "kubegate: warning: the certificate of {server} is not verified (--insecure-skip-tls-verify); anyone on the way can read your tokens"
            );
        }
    }

    /// The flags again, as `kubegate login` or `kubegate credential` takes them.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(file) = &self.certificate_authority {
            args.push("--certificate-authority".to_string());
            args.push(file.display().to_string());
        }
        if self.insecure_skip_tls_verify {
            args.push("--insecure-skip-tls-verify".to_string());
        }
        args
    }
}

/// The rustls configuration for `trust`, on ring.
pub fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, SsoError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SsoError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(kubegate_actors::tls::AnyCertificate(
                provider,
            )))
            .with_no_client_auth(),
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(SsoError::Tls(format!(
                    "no system CA certificates found ({} errors); pass the server's CA with --certificate-authority FILE",
                    found.errors.len()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|source| SsoError::File {
                action: "read the certificate authority file",
                path: path.clone(),
                source,
            })?;
            add_pem(&mut roots, &pem, &path.display().to_string())?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaPem(pem) => {
            add_pem(&mut roots, pem, "the cluster's certificate-authority-data")?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// Adds the PEM certificates of `pem` (from `what`) to `roots`; at least one is needed.
fn add_pem(roots: &mut rustls::RootCertStore, pem: &[u8], what: &str) -> Result<(), SsoError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| SsoError::Tls(format!("{what} is not PEM: {e}")))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(SsoError::Tls(format!(
            "{what} holds no usable PEM certificate (\"-----BEGIN CERTIFICATE-----\")"
        )));
    }
    Ok(())
}

/// The normalized base URL of a kubegate server: `http(s)://host[:port][/prefix]`
/// without a trailing slash, query or fragment. The cache and the endpoints use it.
pub fn normalize_server(server: &str) -> Result<String, SsoError> {
    let url = reqwest::Url::parse(server.trim()).map_err(|e| {
        SsoError::Input(format!(
            "--server {server:?} is not a URL ({e}); give the kubegate server's address, e.g. https://kubegate.example.com"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(SsoError::Input(format!(
            "--server {server:?} must be an http:// or https:// URL with a host"
        )));
    }
    let mut text = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        text.push_str(&format!(":{port}"));
    }
    text.push_str(url.path().trim_end_matches('/'));
    Ok(text)
}

/// The successful answer of the token endpoint (every grant). (Its `Debug` leaves the
/// tokens out.)
#[derive(Clone, Deserialize)]
pub struct TokenAnswer {
    /// The access token (a bearer token for the API server proxy).
    pub access_token: String,
    /// Seconds the access token lives.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// When the access token expires: RFC 3339 (seconds since the epoch are taken too).
    #[serde(default)]
    pub expires_at: Option<serde_json::Value>,
    /// The refresh token (rotated at every refresh).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Who logged in (`ldap:alice`).
    #[serde(default)]
    pub user: Option<String>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("expires_in", &self.expires_in)
            .field("expires_at", &self.expires_at)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl TokenAnswer {
    /// When the access token expires, in seconds since the epoch.
    pub fn expires_at_epoch(&self) -> Result<u64, SsoError> {
        if let Some(seconds) = self.expires_in {
            return Ok(now_epoch() + seconds);
        }
        let at = match &self.expires_at {
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {
                return Ok(n.as_u64().unwrap_or_default())
            }
            Some(serde_json::Value::String(at)) => at,
            _ => {
                return Err(SsoError::Login(
                    "the token answer has neither expires_in nor expires_at".into(),
                ))
            }
        };
        humantime::parse_rfc3339(at)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| {
                SsoError::Login(format!(
                    "the token answer's expires_at {at:?} is not an RFC 3339 time"
                ))
            })
    }
}

/// The error answer of the token endpoint (OAuth style).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OAuthError {
    /// The code: `authorization_pending`, `slow_down`, `invalid_grant`, ...
    #[serde(default)]
    pub error: String,
    /// The server's description.
    #[serde(default)]
    pub error_description: String,
}

/// What a token request came to.
#[derive(Debug)]
pub enum TokenResult {
    /// Tokens.
    Issued(TokenAnswer),
    /// An OAuth error (HTTP 400 or 401).
    Refused {
        /// HTTP status.
        status: u16,
        /// The error.
        error: OAuthError,
    },
    /// HTTP 429: ask again after this long.
    RateLimited(Duration),
}

/// The result of `GET /auth/session`.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// 200: the token is good.
    Good,
    /// 401: revoked or expired.
    Rejected,
    /// The server could not be asked, or answered something else.
    Unknown(String),
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Cuts a server's answer to something that fits an error message.
fn shorten(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &body[..i]),
        None => body.to_string(),
    }
}

/// A client of one kubegate server.
#[derive(Clone)]
pub struct SsoClient {
    http: reqwest::Client,
    /// The normalized base URL.
    pub server: String,
}

impl SsoClient {
    /// A client of `server` (normalized already) with `trust`; proxies come from the
    /// environment.
    pub fn new(server: &str, trust: &Trust) -> Result<Self, SsoError> {
        let mut tls = tls_config(trust)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("kubegate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SsoError::Tls(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            server: server.to_string(),
        })
    }

    /// `{server}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// The error for a request to `url` that got no answer, with reqwest's causes
    /// (its own message alone says little: "error sending request").
    fn unreachable(url: &str, e: &reqwest::Error) -> SsoError {
        let mut detail = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            detail.push_str(&format!(": {c}"));
            cause = c.source();
        }
        SsoError::Unreachable {
            url: url.to_string(),
            detail,
        }
    }

    /// POSTs a form; the status and the body.
    async fn post_form(
        &self,
        path: &str,
        body: String,
    ) -> Result<(u16, String, Option<u64>), SsoError> {
        let url = self.url(path);
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Self::unreachable(&url, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response
            .text()
            .await
            .map_err(|e| Self::unreachable(&url, &e))?;
        Ok((status, text, retry_after))
    }

    /// A token request (`POST /auth/cli/token`) with these form fields.
    pub async fn token(&self, fields: &[(&str, &str)]) -> Result<TokenResult, SsoError> {
        let path = "/auth/cli/token";
        let (status, body, retry_after) = self.post_form(path, form(fields)).await?;
        match status {
            200 => serde_json::from_str(&body)
                .map(TokenResult::Issued)
                .map_err(|e| {
                    SsoError::Login(format!(
                        "the token answer of {} is not what kubegate expects ({e}): {}",
                        self.url(path),
                        shorten(&body)
                    ))
                }),
            429 => Ok(TokenResult::RateLimited(Duration::from_secs(
                retry_after.unwrap_or(5).clamp(1, 300),
            ))),
            400 | 401 => Ok(TokenResult::Refused {
                status,
                error: serde_json::from_str(&body).unwrap_or_else(|_| OAuthError {
                    error: format!("HTTP {status}"),
                    error_description: shorten(&body),
                }),
            }),
            _ => Err(SsoError::Server {
                url: self.url(path),
                status,
                body: shorten(&body),
            }),
        }
    }

    /// A token request that must give tokens: a refusal or a rate limit is an error.
    pub async fn token_issued(&self, fields: &[(&str, &str)]) -> Result<TokenAnswer, SsoError> {
        match self.token(fields).await? {
            TokenResult::Issued(answer) => Ok(answer),
            TokenResult::Refused { error, .. } => Err(SsoError::Refused {
                error: error.error,
                description: error.error_description,
            }),
            TokenResult::RateLimited(wait) => Err(SsoError::Login(format!(
                "the kubegate server is rate-limiting logins; try again in {} s",
                wait.as_secs()
            ))),
        }
    }

    /// Starts a device login (`POST /auth/cli/device`).
    pub async fn device(
        &self,
        client: &str,
        provider: Option<&str>,
    ) -> Result<DeviceAnswer, SsoError> {
        let path = "/auth/cli/device";
        let mut fields = vec![("client", client)];
        if let Some(p) = provider {
            fields.push(("provider", p));
        }
        let (status, body, retry_after) = self.post_form(path, form(&fields)).await?;
        match status {
            200 => serde_json::from_str(&body).map_err(|e| {
                SsoError::Login(format!(
                    "the device login answer of {} is not what kubegate expects ({e}): {}",
                    self.url(path),
                    shorten(&body)
                ))
            }),
            429 => Err(SsoError::Login(format!(
                "the kubegate server is rate-limiting logins; try again in {} s",
                retry_after.unwrap_or(5)
            ))),
            _ => {
                let error: OAuthError = serde_json::from_str(&body).unwrap_or_default();
                if error.error.is_empty() {
                    Err(SsoError::Server {
                        url: self.url(path),
                        status,
                        body: shorten(&body),
                    })
                } else {
                    Err(SsoError::Refused {
                        error: error.error,
                        description: error.error_description,
                    })
                }
            }
        }
    }

    /// `GET url` (with `access_token` when given): the body of a 200, else an error
    /// that says what the server answered.
    async fn get_ok(
        &self,
        url: &str,
        access_token: Option<&str>,
        accept: &str,
    ) -> Result<String, SsoError> {
        let mut request = self.http.get(url).header("accept", accept);
        if let Some(token) = access_token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Self::unreachable(url, &e))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| Self::unreachable(url, &e))?;
        if status != 200 {
            return Err(SsoError::Server {
                url: url.to_string(),
                status,
                body: shorten(&body),
            });
        }
        Ok(body)
    }

    /// The names of the server's login providers (`GET /auth/providers`): asked before a
    /// login, so that an unreachable server, one without a provider, or an unknown
    /// `--provider` fails at once rather than after a browser was opened.
    pub async fn providers(&self) -> Result<Vec<String>, SsoError> {
        let url = self.url("/auth/providers");
        let body = self.get_ok(&url, None, "application/json").await?;
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(|_| SsoError::Server {
                url: url.clone(),
                status: 200,
                body: format!("not a list of login providers: {}", shorten(&body)),
            })?;
        Ok(listed
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Checks an access token with `GET /auth/session`.
    pub async fn check_session(&self, access_token: &str) -> SessionCheck {
        let url = self.url("/auth/session");
        let answer = self
            .http
            .get(&url)
            .bearer_auth(access_token)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().as_u16() == 200 => SessionCheck::Good,
            Ok(r) if r.status().as_u16() == 401 => SessionCheck::Rejected,
            Ok(r) => SessionCheck::Unknown(format!("HTTP {}", r.status().as_u16())),
            Err(e) => SessionCheck::Unknown(Self::unreachable(&url, &e).to_string()),
        }
    }

    /// The kubeconfig of the clusters the user may reach
    /// (`GET /pipeline/api/v1/kubeconfig?credential=exec[&org=O]`), as YAML text.
    pub async fn kubeconfig(
        &self,
        access_token: &str,
        org: Option<u64>,
    ) -> Result<String, SsoError> {
        let mut url = self.url("/pipeline/api/v1/kubeconfig?credential=exec");
        if let Some(org) = org {
            url.push_str(&format!("&org={org}"));
        }
        self.get_ok(&url, Some(access_token), "application/yaml")
            .await
    }
}

/// The answer of `POST /auth/cli/device`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAnswer {
    /// The code the client polls with.
    pub device_code: String,
    /// The code the user confirms.
    pub user_code: String,
    /// Where the user confirms it.
    pub verification_uri: String,
    /// The same, with the code filled in.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Seconds the codes live.
    #[serde(default = "default_device_expiry")]
    pub expires_in: u64,
    /// Seconds between polls.
    #[serde(default = "default_interval")]
    pub interval: u64,
}

/// RFC 8628's device code lifetime when the answer has none: ten minutes.
fn default_device_expiry() -> u64 {
    600
}

/// RFC 8628's polling interval when the answer has none: five seconds.
fn default_interval() -> u64 {
    5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_normalized() {
        assert_eq!(
            normalize_server("https://KG.example:8443/").unwrap(),
            "https://kg.example:8443"
        );
        assert_eq!(
            normalize_server("https://kg.example/prefix/").unwrap(),
            "https://kg.example/prefix"
        );
        assert_eq!(
            normalize_server("https://kg.example:443").unwrap(),
            "https://kg.example"
        );
        assert!(normalize_server("kg.example").is_err());
        assert!(normalize_server("ftp://kg.example").is_err());
    }

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(
            form(&[
                ("redirect_uri", "http://127.0.0.1:5/callback"),
                ("client", "kubegate on a b")
            ]),
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A5%2Fcallback&client=kubegate+on+a+b"
        );
    }

    #[test]
    fn token_expiry_comes_from_expires_in_or_expires_at() {
        let answer: TokenAnswer = serde_json::from_str(
            r#"{"access_token":"a","expires_at":"2026-12-05T23:15:00Z","refresh_token":"r"}"#,
        )
        .unwrap();
        assert_eq!(answer.expires_at_epoch().unwrap(), 1_796_512_500);
        let answer: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"a","expires_at":1796512500}"#).unwrap();
        assert_eq!(answer.expires_at_epoch().unwrap(), 1_796_512_500);
        let answer: TokenAnswer = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert!(answer.expires_at_epoch().is_err());
        let answer: TokenAnswer =
            serde_json::from_str(r#"{"access_token":"a","expires_in":900}"#).unwrap();
        let at = answer.expires_at_epoch().unwrap();
        assert!(at >= now_epoch() + 899 && at <= now_epoch() + 900);
    }

    #[test]
    fn trust_flags_win_over_the_fallback() {
        let flags = TrustFlags {
            certificate_authority: Some("/ca.pem".into()),
            insecure_skip_tls_verify: false,
        };
        assert!(matches!(flags.trust_or(Trust::System), Trust::CaFile(_)));
        assert!(matches!(
            TrustFlags::default().trust_or(Trust::Insecure),
            Trust::Insecure
        ));
        assert!(tls_config(&Trust::CaPem(b"not pem".to_vec())).is_err());
        assert!(tls_config(&Trust::Insecure).is_ok());
    }
}
