//! The OAuth2 authorization-code flow with PKCE (the `oauth2` crate, its requests sent
//! with awc), for GitHub and for any OpenID Connect provider.
//!
//! GitHub: the user is read from the GitHub API with the access token (`/user`), and the
//! groups are the user's orgs (`org`) and teams (`org/team`).
//!
//! OIDC, with the `openidconnect` crate (its requests sent with awc too): the endpoints
//! and the JWKS come from discovery, kept for an hour; the ID token is verified by
//! openidconnect (a public-key algorithm only, the key by `kid`, the signature, issuer,
//! audience = the client id, expiry with 60 s of leeway, the nonce sent with this login),
//! against a JWKS fetched again once when no key matches (the provider rotated), and its
//! `at_hash`, when there is one, against the access token. The user and groups are read
//! from the verified token's claims, any claim the settings name.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{TimeDelta, Utc};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AccessToken, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, ClaimsVerificationError, DiscoveryError, IssuerUrl, JwsSigningAlgorithm as _,
    Nonce, SignatureVerificationError,
};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{LoginError, SetupError};
use crate::config::login::{GithubSettings, OidcSettings};

/// The ID token, beside the access token, in an OIDC token response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdTokenField {
    /// The ID token (a JWT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl oauth2::ExtraTokenFields for IdTokenField {}

type TokenAnswer = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Who the provider says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderUser {
    /// The name, not yet namespaced by provider.
    pub name: String,
    /// The provider's groups of the user.
    pub groups: Vec<String>,
}

/// How a login starts: where to send the browser, and what to remember.
pub struct Authorization {
    /// The provider's authorization URL, with state, PKCE challenge and nonce.
    pub url: String,
    /// The state sent.
    pub state: String,
    /// The PKCE verifier to send with the code.
    pub pkce_verifier: String,
    /// The nonce sent (OIDC).
    pub nonce: String,
}

/// An HTTP failure talking to a provider.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The TLS settings for talking to providers: the web PKI's roots, plus `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, SetupError> {
    let ca = |reason: String| SetupError::CaFile {
        path: ca_file.map(Path::to_path_buf).unwrap_or_default(),
        reason,
    };
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| ca(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca("holds no certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca(e.to_string()))?;
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client for one provider call (awc clients are per thread; logins are rare).
fn http_client(tls: &Arc<ClientConfig>) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .rustls_0_23(tls.clone())
                .timeout(Duration::from_secs(10)),
        )
        .timeout(Duration::from_secs(15))
        .disable_redirects()
        .add_default_header(("User-Agent", "kubegate"))
        .finish()
}

/// Sends an `oauth2` request with awc.
async fn send(
    client: &awc::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let method = awc::http::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| HttpError(e.to_string()))?;
    let mut outgoing = client.request(method, parts.uri.to_string());
    for (name, value) in &parts.headers {
        outgoing = outgoing.append_header((name.as_str(), value.as_bytes()));
    }
    let mut response = outgoing
        .send_body(body)
        .await
        .map_err(|e| HttpError(format!("{}: {e}", parts.uri)))?;
    let bytes = response
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| HttpError(format!("{}: {e}", parts.uri)))?;
    let mut answer = http::Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        answer = answer.header(name.as_str(), value.as_bytes());
    }
    answer
        .body(bytes.to_vec())
        .map_err(|e| HttpError(e.to_string()))
}

/// GETs JSON from a provider.
async fn get_json(
    client: &awc::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<Value, LoginError> {
    let mut request = client
        .get(url)
        .insert_header(("Accept", "application/json"));
    if let Some(token) = bearer {
        request = request.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| LoginError::Provider(format!("{url}: {e}")))?;
    let body = response
        .body()
        .limit(4 << 20)
        .await
        .map_err(|e| LoginError::Provider(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        return Err(LoginError::Provider(format!(
            "{url} answered {}",
            response.status()
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| LoginError::Provider(format!("{url} did not answer JSON: {e}")))
}

fn oauth_client(
    client_id: &str,
    secret: Option<&SecretString>,
    auth_url: &str,
    token_url: &str,
    callback: &str,
) -> Result<OAuthClient, LoginError> {
    let bad = |what: &str, e: oauth2::url::ParseError| {
        LoginError::Provider(format!("the {what} is not a URL: {e}"))
    };
    let mut client = oauth2::Client::new(ClientId::new(client_id.to_string()))
        .set_auth_uri(AuthUrl::new(auth_url.to_string()).map_err(|e| bad("authorization URL", e))?)
        .set_token_uri(TokenUrl::new(token_url.to_string()).map_err(|e| bad("token URL", e))?)
        .set_redirect_uri(
            RedirectUrl::new(callback.to_string()).map_err(|e| bad("callback URL", e))?,
        );
    if let Some(secret) = secret {
        client = client.set_client_secret(ClientSecret::new(secret.expose_secret().to_string()));
    }
    Ok(client)
}

/// GitHub takes the client's credentials in the token request's body, as it documents
/// (OIDC providers get HTTP Basic, `client_secret_basic`, the OIDC default).
fn in_body(client: OAuthClient) -> OAuthClient {
    client.set_auth_type(AuthType::RequestBody)
}

fn start(client: &OAuthClient, scopes: &[String], nonce: Option<String>) -> Authorization {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())))
        .set_pkce_challenge(challenge);
    if let Some(nonce) = &nonce {
        request = request.add_extra_param("nonce", nonce.clone());
    }
    let (url, state) = request.url();
    Authorization {
        url: url.to_string(),
        state: state.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        nonce: nonce.unwrap_or_default(),
    }
}

async fn exchange(
    client: &OAuthClient,
    tls: &Arc<ClientConfig>,
    code: &str,
    verifier: &str,
) -> Result<TokenAnswer, LoginError> {
    let http = http_client(tls);
    let send_one = |request: oauth2::HttpRequest| send(&http, request);
    client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
        .request_async(&send_one)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => LoginError::Denied(format!(
                "the provider refused the code: {}{}",
                answer.error(),
                answer
                    .error_description()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )),
            RequestTokenError::Request(e) => {
                LoginError::Provider(format!("the token endpoint cannot be reached: {e}"))
            }
            RequestTokenError::Parse(e, _) => LoginError::Provider(format!(
                "the token endpoint's answer is not a token response: {e}"
            )),
            RequestTokenError::Other(e) => LoginError::Provider(e),
        })
}

/// A GitHub (or GitHub Enterprise) provider.
pub struct Github {
    settings: GithubSettings,
    secret: Option<SecretString>,
    tls: Arc<ClientConfig>,
}

impl Github {
    /// The provider of `settings`, with its client secret.
    pub fn new(
        settings: GithubSettings,
        secret: Option<SecretString>,
    ) -> Result<Github, SetupError> {
        let tls = tls_config(settings.ca_file.as_deref())?;
        Ok(Github {
            settings,
            secret,
            tls,
        })
    }

    fn client(&self, callback: &str) -> Result<OAuthClient, LoginError> {
        oauth_client(
            &self.settings.client_id,
            self.secret.as_ref(),
            &self.settings.auth_url,
            &self.settings.token_url,
            callback,
        )
        .map(in_body)
    }

    /// Where to send the browser.
    pub fn authorize(&self, callback: &str) -> Result<Authorization, LoginError> {
        Ok(start(&self.client(callback)?, &self.settings.scopes, None))
    }

    /// Exchanges the code and reads the user and their orgs and teams.
    pub async fn finish(
        &self,
        callback: &str,
        code: &str,
        verifier: &str,
    ) -> Result<ProviderUser, LoginError> {
        let answer = exchange(&self.client(callback)?, &self.tls, code, verifier).await?;
        let token = answer.access_token().secret();
        let api = self.settings.api_url.trim_end_matches('/');
        // one client, so that the three calls share a connection
        let client = http_client(&self.tls);
        let user = get_json(&client, &format!("{api}/user"), Some(token)).await?;
        let login = user
            .get("login")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| LoginError::Provider("the GitHub user has no login".into()))?;
        let mut groups = Vec::new();
        // orgs and teams need the read:org scope; without it the user simply has no groups
        match get_json(&client, &format!("{api}/user/orgs"), Some(token)).await {
            Ok(Value::Array(orgs)) => groups.extend(
                orgs.iter()
                    .filter_map(|o| o.get("login").and_then(Value::as_str))
                    .map(str::to_string),
            ),
            Ok(_) => {}
            Err(e) => log::warn!("GitHub orgs of {login} not read: {e}"),
        }
        match get_json(&client, &format!("{api}/user/teams"), Some(token)).await {
            Ok(Value::Array(teams)) => groups.extend(teams.iter().filter_map(|t| {
                let slug = t.get("slug").and_then(Value::as_str)?;
                let org = t.pointer("/organization/login").and_then(Value::as_str)?;
                Some(format!("{org}/{slug}"))
            })),
            Ok(_) => {}
            Err(e) => log::warn!("GitHub teams of {login} not read: {e}"),
        }
        Ok(ProviderUser {
            name: login.to_string(),
            groups,
        })
    }
}

/// How long discovery documents and keys are kept.
const CACHE_FOR: Duration = Duration::from_secs(3600);

/// How long past its `exp` an ID token is still taken (clocks differ).
const LEEWAY_SECS: i64 = 60;

/// The ID token algorithms accepted: public-key ones only. `HS*` would be verified with
/// the client secret, a key kubegate shares (and could leak), and `none` is no signature.
const PUBLIC_KEY_ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// A value kept for [`CACHE_FOR`].
type Kept<T> = Mutex<Option<(Instant, T)>>;

fn kept<T: Clone>(slot: &Kept<T>) -> Option<T> {
    match &*slot.lock().unwrap_or_else(|p| p.into_inner()) {
        Some((at, value)) if at.elapsed() < CACHE_FOR => Some(value.clone()),
        _ => None,
    }
}

fn keep<T>(slot: &Kept<T>, value: T) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), value));
}

/// A discovery or JWKS fetch that failed, said for the login page.
fn fetch_failed(url: &str, what: &str, e: DiscoveryError<HttpError>) -> LoginError {
    LoginError::Provider(match e {
        // the error names the URL already
        DiscoveryError::Request(e) => e.to_string(),
        DiscoveryError::Response(status, _, _) if status != http::StatusCode::OK => {
            format!("{url} answered {status}")
        }
        DiscoveryError::Response(_, _, why) => format!("{url}: {why}"),
        DiscoveryError::Parse(e) => format!("{url}: not {what}: {e}"),
        DiscoveryError::Validation(why) => format!("{url}: {why}"),
        other => format!("{url}: {other}"),
    })
}

/// Why an ID token is refused.
#[derive(Debug, thiserror::Error)]
enum IdTokenError {
    /// One of openidconnect's checks failed.
    #[error(transparent)]
    Claims(#[from] ClaimsVerificationError),
    /// `at_hash` is not the hash of the access token it came with.
    #[error("at_hash mismatch")]
    AccessTokenHash,
}

impl IdTokenError {
    /// No key of the JWKS matches the token's `kid` and algorithm: the provider may have
    /// rotated its keys since they were fetched.
    fn unknown_key(&self) -> bool {
        matches!(
            self,
            IdTokenError::Claims(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
            ))
        )
    }

    /// The refusal, in kubegate's words.
    fn refusal(self, token: &CoreIdToken) -> LoginError {
        use ClaimsVerificationError as Claims;
        use SignatureVerificationError as Signature;
        LoginError::Invalid(match self {
            IdTokenError::Claims(Claims::SignatureVerification(
                Signature::DisallowedAlg(_) | Signature::NoSignature,
            )) => {
                let (alg, public_key) = match token.signing_alg() {
                    Ok(alg) => (
                        serde_json::to_value(alg)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_else(|| format!("{alg:?}")),
                        !alg.uses_shared_secret(),
                    ),
                    Err(_) => ("none".into(), false),
                };
                if public_key {
                    format!(
                        "the ID token is signed with {alg}, an algorithm kubegate does not check"
                    )
                } else {
                    format!(
                        "the ID token is signed with {alg}; only public-key algorithms are accepted"
                    )
                }
            }
            IdTokenError::Claims(Claims::SignatureVerification(Signature::NoMatchingKey)) => {
                "the ID token's key is not in the provider's JWKS".into()
            }
            IdTokenError::Claims(Claims::SignatureVerification(Signature::CryptoError(_))) => {
                "the ID token's signature is wrong".into()
            }
            IdTokenError::Claims(Claims::SignatureVerification(e)) => {
                format!("the ID token's signature cannot be checked: {e}")
            }
            IdTokenError::Claims(Claims::Expired(_)) => "the ID token has expired".into(),
            IdTokenError::Claims(Claims::InvalidIssuer(_)) => {
                "the ID token's issuer is wrong".into()
            }
            IdTokenError::Claims(Claims::InvalidAudience(_)) => {
                "the ID token is for another client (audience)".into()
            }
            IdTokenError::Claims(Claims::InvalidNonce(_)) => {
                "the ID token's nonce is not this login's (a replayed token?)".into()
            }
            IdTokenError::Claims(e) => format!("the ID token is not valid: {e}"),
            IdTokenError::AccessTokenHash => {
                "the ID token's at_hash is not the hash of the access token it came with".into()
            }
        })
    }
}

/// openidconnect's ID token checks as kubegate wants them: issued by `issuer` for
/// `client_id`, signed with a public-key algorithm by a key of `keys`, and not expired
/// more than [`LEEWAY_SECS`] ago. A public client's verifier, so that no `HS*` token is
/// ever checked with the client secret.
fn id_token_verifier(
    client_id: &str,
    issuer: &IssuerUrl,
    keys: CoreJsonWebKeySet,
) -> CoreIdTokenVerifier<'static> {
    CoreIdTokenVerifier::new_public_client(
        ClientId::new(client_id.to_string()),
        issuer.clone(),
        keys,
    )
    .set_allowed_algs(PUBLIC_KEY_ALGORITHMS)
    .set_time_fn(|| Utc::now() - TimeDelta::seconds(LEEWAY_SECS))
}

/// Verifies an ID token with `verifier` (openidconnect: the algorithm, the key by `kid`,
/// the signature, issuer, audience, expiry, the nonce), then its `at_hash`, when there
/// is one, against the access token of the same token response.
fn check_id_token(
    token: &CoreIdToken,
    verifier: &CoreIdTokenVerifier<'_>,
    nonce: &Nonce,
    access_token: &AccessToken,
) -> Result<(), IdTokenError> {
    let claims = token.claims(verifier, nonce)?;
    if let Some(expected) = claims.access_token_hash() {
        let alg = token
            .signing_alg()
            .map_err(ClaimsVerificationError::SignatureVerification)?;
        let key = token
            .signing_key(verifier)
            .map_err(ClaimsVerificationError::SignatureVerification)?;
        let actual = AccessTokenHash::from_token(access_token, alg, key)
            .map_err(|e| ClaimsVerificationError::Unsupported(e.to_string()))?;
        if actual != *expected {
            return Err(IdTokenError::AccessTokenHash);
        }
    }
    Ok(())
}

/// The claims of an ID token that [`check_id_token`] verified, as the provider wrote
/// them: every claim, of whatever JSON type. (openidconnect's own types hold the
/// standard claims typed and apart: an `AdditionalClaims` map never sees `email` or
/// `preferred_username`, and a `user_claim` may name any claim.)
fn verified_payload(token: &str) -> Result<Map<String, Value>, LoginError> {
    let unreadable = |e: String| LoginError::Invalid(format!("the ID token is not a JWT: {e}"));
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| unreadable("no payload".into()))?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| unreadable(e.to_string()))
}

/// An OpenID Connect provider.
pub struct Oidc {
    settings: OidcSettings,
    secret: Option<SecretString>,
    tls: Arc<ClientConfig>,
    /// The discovery document (with the JWKS fetched at discovery); a large value,
    /// shared rather than copied.
    discovery: Kept<Arc<CoreProviderMetadata>>,
    /// The JWKS, fetched again on an unknown `kid`.
    keys: Kept<CoreJsonWebKeySet>,
}

impl Oidc {
    /// The provider of `settings`, with its client secret.
    pub fn new(settings: OidcSettings, secret: Option<SecretString>) -> Result<Oidc, SetupError> {
        let tls = tls_config(settings.ca_file.as_deref())?;
        Ok(Oidc {
            settings,
            secret,
            tls,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
        })
    }

    /// The discovery document (openidconnect checks that it names the issuer) and the
    /// JWKS it points to.
    async fn discovery(&self) -> Result<Arc<CoreProviderMetadata>, LoginError> {
        if let Some(found) = kept(&self.discovery) {
            return Ok(found);
        }
        let http = http_client(&self.tls);
        let client = |request| send(&http, request);
        let configured = self.settings.issuer.as_str();
        let issuer = |spelling: &str| {
            IssuerUrl::new(spelling.to_string())
                .map_err(|e| LoginError::Provider(format!("the issuer is not a URL: {e}")))
        };
        let found = match CoreProviderMetadata::discover_async(issuer(configured)?, &client).await {
            // OIDC compares issuers as strings; kubegate has always taken the configured
            // issuer with or without its trailing slash, so the other spelling is tried once
            Err(DiscoveryError::Validation(_)) => {
                let other = match configured.strip_suffix('/') {
                    Some(bare) => bare.to_string(),
                    None => format!("{configured}/"),
                };
                CoreProviderMetadata::discover_async(issuer(&other)?, &client).await
            }
            found => found,
        };
        let url = format!(
            "{}/.well-known/openid-configuration",
            configured.trim_end_matches('/')
        );
        let found =
            Arc::new(found.map_err(|e| fetch_failed(&url, "a discovery document with a JWKS", e))?);
        keep(&self.discovery, found.clone());
        keep(&self.keys, found.jwks().clone());
        Ok(found)
    }

    /// The provider's JWKS: the one kept, or with `refresh` (or once it is old) fetched.
    async fn keys(
        &self,
        found: &CoreProviderMetadata,
        refresh: bool,
    ) -> Result<CoreJsonWebKeySet, LoginError> {
        if !refresh {
            if let Some(keys) = kept(&self.keys) {
                return Ok(keys);
            }
        }
        let http = http_client(&self.tls);
        let client = |request| send(&http, request);
        let url = found.jwks_uri();
        let keys = CoreJsonWebKeySet::fetch_async(url, &client)
            .await
            .map_err(|e| fetch_failed(url.as_str(), "a JWK set", e))?;
        keep(&self.keys, keys.clone());
        Ok(keys)
    }

    async fn client(&self, callback: &str) -> Result<OAuthClient, LoginError> {
        let found = self.discovery().await?;
        oauth_client(
            &self.settings.client_id,
            self.secret.as_ref(),
            found.authorization_endpoint().as_str(),
            found.token_endpoint().map(|t| t.as_str()).ok_or_else(|| {
                LoginError::Provider("the discovery document names no token endpoint".into())
            })?,
            callback,
        )
    }

    /// Where to send the browser.
    pub async fn authorize(&self, callback: &str) -> Result<Authorization, LoginError> {
        let client = self.client(callback).await?;
        let nonce = crate::gate::session::random_token();
        Ok(start(&client, &self.settings.scopes, Some(nonce)))
    }

    /// Exchanges the code, verifies the ID token, and reads the user and groups from it.
    pub async fn finish(
        &self,
        callback: &str,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<ProviderUser, LoginError> {
        let client = self.client(callback).await?;
        let answer = exchange(&client, &self.tls, code, verifier).await?;
        let id_token = answer.extra_fields().id_token.clone().ok_or_else(|| {
            LoginError::Provider("the token response has no id_token (is `openid` a scope?)".into())
        })?;
        let claims = self.verify(&id_token, answer.access_token(), nonce).await?;
        let name = match claims.get(&self.settings.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(LoginError::Invalid(format!(
                    "the ID token has no \"{}\" claim to name the user",
                    self.settings.user_claim
                )))
            }
        };
        let groups = match claims.get(&self.settings.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(ProviderUser { name, groups })
    }

    /// Verifies an ID token with openidconnect against the JWKS kept, and once more
    /// against a JWKS fetched again when no key matches its `kid` (the provider may have
    /// rotated); returns its claims.
    async fn verify(
        &self,
        token: &str,
        access_token: &AccessToken,
        nonce: &str,
    ) -> Result<Map<String, Value>, LoginError> {
        let parsed: CoreIdToken = token
            .parse()
            .map_err(|e| LoginError::Invalid(format!("the ID token is not a JWT: {e}")))?;
        let found = self.discovery().await?;
        let nonce = Nonce::new(nonce.to_string());
        let verifier = |keys| id_token_verifier(&self.settings.client_id, found.issuer(), keys);
        let keys = self.keys(&found, false).await?;
        let mut checked = check_id_token(&parsed, &verifier(keys), &nonce, access_token);
        if checked.as_ref().is_err_and(IdTokenError::unknown_key) {
            let keys = self.keys(&found, true).await?;
            checked = check_id_token(&parsed, &verifier(keys), &nonce, access_token);
        }
        checked.map_err(|e| e.refusal(&parsed))?;
        verified_payload(token)
    }
}

#[cfg(test)]
mod tests {
    use openidconnect::core::{
        CoreEdDsaPrivateSigningKey, CoreGenderClaim, CoreHmacKey, CoreJweContentEncryptionAlgorithm,
    };
    use openidconnect::{
        Audience, EndUserEmail, EndUserUsername, IdToken, IdTokenClaims, JsonWebKeyId,
        PrivateSigningKey, StandardClaims, SubjectIdentifier,
    };
    use ring::signature::Ed25519KeyPair;

    use super::*;

    const ISSUER: &str = "https://login.example";
    const CLIENT: &str = "kubegate";
    const NONCE: &str = "this-login";

    /// Claims that are not openidconnect's standard ones (`groups`), as a provider adds them.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    struct Extra {
        #[serde(flatten)]
        claims: Map<String, Value>,
    }
    impl openidconnect::AdditionalClaims for Extra {}

    type ExtraIdToken =
        IdToken<Extra, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

    /// A fresh Ed25519 key named `kid` (ring makes it; openidconnect reads its PEM).
    fn ed25519(kid: &str) -> CoreEdDsaPrivateSigningKey {
        let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        CoreEdDsaPrivateSigningKey::from_ed25519_pem(&pem, Some(JsonWebKeyId::new(kid.into())))
            .unwrap()
    }

    /// Alice's claims for this client and nonce, expiring `expires_in` seconds from now.
    fn claims(expires_in: i64) -> IdTokenClaims<Extra, CoreGenderClaim> {
        let mut extra = Map::new();
        extra.insert("groups".into(), serde_json::json!(["acme", "acme/admins"]));
        IdTokenClaims::new(
            IssuerUrl::new(ISSUER.into()).unwrap(),
            vec![Audience::new(CLIENT.into())],
            Utc::now() + TimeDelta::seconds(expires_in),
            Utc::now() - TimeDelta::seconds(5),
            StandardClaims::new(SubjectIdentifier::new("alice-sub".into()))
                .set_email(Some(EndUserEmail::new("alice@example.org".into())))
                .set_preferred_username(Some(EndUserUsername::new("alice".into()))),
            Extra { claims: extra },
        )
        .set_nonce(Some(Nonce::new(NONCE.into())))
    }

    /// `claims` signed with `key` and `alg`, with the `at_hash` of `access_token`.
    fn signed<K>(
        claims: IdTokenClaims<Extra, CoreGenderClaim>,
        key: &K,
        alg: CoreJwsSigningAlgorithm,
        access_token: Option<&AccessToken>,
    ) -> String
    where
        K: PrivateSigningKey<VerificationKey = openidconnect::core::CoreJsonWebKey>,
    {
        ExtraIdToken::new(claims, key, alg, access_token, None)
            .unwrap()
            .to_string()
    }

    /// Checks `token` as [`Oidc::verify`] does, against `keys`.
    fn check(
        token: &str,
        keys: Vec<openidconnect::core::CoreJsonWebKey>,
        access_token: &AccessToken,
    ) -> Result<(), LoginError> {
        let parsed: CoreIdToken = token.parse().unwrap();
        let verifier = id_token_verifier(
            CLIENT,
            &IssuerUrl::new(ISSUER.into()).unwrap(),
            CoreJsonWebKeySet::new(keys),
        );
        check_id_token(&parsed, &verifier, &Nonce::new(NONCE.into()), access_token)
            .map_err(|e| e.refusal(&parsed))
    }

    fn refusal(checked: Result<(), LoginError>) -> String {
        match checked {
            Err(LoginError::Invalid(why)) => why,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn an_eddsa_token_with_its_at_hash_is_taken_and_every_claim_read() {
        let key = ed25519("k1");
        let access = AccessToken::new("the access token".into());
        let token = signed(
            claims(300),
            &key,
            CoreJwsSigningAlgorithm::EdDsa,
            Some(&access),
        );
        check(&token, vec![key.as_verification_key()], &access).unwrap();

        let payload = verified_payload(&token).unwrap();
        assert_eq!(payload["preferred_username"], "alice");
        assert_eq!(payload["email"], "alice@example.org");
        assert_eq!(
            payload["groups"],
            serde_json::json!(["acme", "acme/admins"])
        );
        assert!(payload["at_hash"].is_string(), "{payload:?}");

        // why the payload is read: openidconnect keeps the standard claims apart, so an
        // AdditionalClaims map has `groups` but not `email` nor `preferred_username`
        let typed: ExtraIdToken = token.parse().unwrap();
        let verifier = id_token_verifier(
            CLIENT,
            &IssuerUrl::new(ISSUER.into()).unwrap(),
            CoreJsonWebKeySet::new(vec![key.as_verification_key()]),
        );
        let extra = &typed
            .claims(&verifier, &Nonce::new(NONCE.into()))
            .unwrap()
            .additional_claims()
            .claims;
        assert!(extra.contains_key("groups"), "{extra:?}");
        assert!(!extra.contains_key("email"), "{extra:?}");
        assert!(!extra.contains_key("preferred_username"), "{extra:?}");
    }

    #[test]
    fn an_at_hash_of_another_access_token_is_refused() {
        let key = ed25519("k1");
        let other = AccessToken::new("another access token".into());
        let token = signed(
            claims(300),
            &key,
            CoreJwsSigningAlgorithm::EdDsa,
            Some(&other),
        );
        let access = AccessToken::new("the access token".into());
        let why = refusal(check(&token, vec![key.as_verification_key()], &access));
        assert!(why.contains("at_hash"), "{why}");

        // without at_hash there is nothing to compare (it is optional in the code flow)
        let token = signed(claims(300), &key, CoreJwsSigningAlgorithm::EdDsa, None);
        check(&token, vec![key.as_verification_key()], &access).unwrap();
    }

    #[test]
    fn an_hs256_token_keyed_by_the_client_secret_is_refused() {
        let secret = CoreHmacKey::new("kubegate-secret");
        let access = AccessToken::new("the access token".into());
        let token = signed(
            claims(300),
            &secret,
            CoreJwsSigningAlgorithm::HmacSha256,
            None,
        );
        // even with the HMAC key in the key set
        let why = refusal(check(&token, vec![secret.as_verification_key()], &access));
        assert!(why.contains("signed with HS256"), "{why}");
        assert!(why.contains("public-key algorithms"), "{why}");
    }

    #[test]
    fn an_unknown_kid_asks_for_the_keys_again_and_a_known_one_is_taken() {
        let old = ed25519("old");
        let new = ed25519("new");
        let access = AccessToken::new("the access token".into());
        let token: CoreIdToken = signed(claims(300), &new, CoreJwsSigningAlgorithm::EdDsa, None)
            .parse()
            .unwrap();
        let issuer = IssuerUrl::new(ISSUER.into()).unwrap();
        let nonce = Nonce::new(NONCE.into());
        let kept = id_token_verifier(
            CLIENT,
            &issuer,
            CoreJsonWebKeySet::new(vec![old.as_verification_key()]),
        );
        let refused = check_id_token(&token, &kept, &nonce, &access).unwrap_err();
        assert!(refused.unknown_key(), "{refused:?}");
        let fetched = id_token_verifier(
            CLIENT,
            &issuer,
            CoreJsonWebKeySet::new(vec![new.as_verification_key()]),
        );
        check_id_token(&token, &fetched, &nonce, &access).unwrap();
    }

    #[test]
    fn expiry_has_sixty_seconds_of_leeway_and_the_nonce_must_be_this_logins() {
        let key = ed25519("k1");
        let keys = || vec![key.as_verification_key()];
        let access = AccessToken::new("the access token".into());
        let eddsa = CoreJwsSigningAlgorithm::EdDsa;
        check(
            &signed(claims(-30), &key, eddsa.clone(), None),
            keys(),
            &access,
        )
        .unwrap();
        let why = refusal(check(
            &signed(claims(-120), &key, eddsa.clone(), None),
            keys(),
            &access,
        ));
        assert!(why.contains("expired"), "{why}");

        let replayed = claims(300).set_nonce(Some(Nonce::new("another login".into())));
        let why = refusal(check(
            &signed(replayed, &key, eddsa.clone(), None),
            keys(),
            &access,
        ));
        assert!(why.contains("nonce"), "{why}");
        let other_client = claims(300).set_audiences(vec![Audience::new("someone-else".into())]);
        let why = refusal(check(
            &signed(other_client, &key, eddsa, None),
            keys(),
            &access,
        ));
        assert!(why.contains("audience"), "{why}");
    }
}
