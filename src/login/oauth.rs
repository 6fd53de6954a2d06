//! The OAuth2 authorization-code flow with PKCE (the `oauth2` crate, its requests sent
//! with awc), for GitHub and for any OpenID Connect provider.
//!
//! GitHub: the user is read from the GitHub API with the access token (`/user`), and the
//! groups are the user's orgs (`org`) and teams (`org/team`).
//!
//! OIDC: the endpoints come from the discovery document; the ID token is verified against
//! the provider's JWKS: an asymmetric algorithm only, the signature, issuer, audience
//! (the client id), expiry, and the nonce sent with this login.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// What kubegate uses of an OIDC discovery document.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// How long discovery documents and keys are kept.
const CACHE_FOR: Duration = Duration::from_secs(3600);

/// An OpenID Connect provider.
pub struct Oidc {
    settings: OidcSettings,
    secret: Option<SecretString>,
    tls: Arc<ClientConfig>,
    discovery: Mutex<Option<(Instant, Discovery)>>,
    keys: Mutex<Option<(Instant, JwkSet)>>,
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

    async fn discovery(&self) -> Result<Discovery, LoginError> {
        if let Some((at, found)) = &*self.discovery.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < CACHE_FOR {
                return Ok(found.clone());
            }
        }
        let issuer = self.settings.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let document = get_json(&http_client(&self.tls), &url, None).await?;
        let found: Discovery = serde_json::from_value(document)
            .map_err(|e| LoginError::Provider(format!("{url}: not a discovery document: {e}")))?;
        if found.issuer.trim_end_matches('/') != issuer {
            return Err(LoginError::Provider(format!(
                "{url} names the issuer \"{}\", not \"{}\"",
                found.issuer, self.settings.issuer
            )));
        }
        *self.discovery.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), found.clone()));
        Ok(found)
    }

    async fn keys(&self, jwks_uri: &str, refresh: bool) -> Result<JwkSet, LoginError> {
        if !refresh {
            if let Some((at, keys)) = &*self.keys.lock().unwrap_or_else(|p| p.into_inner()) {
                if at.elapsed() < CACHE_FOR {
                    return Ok(keys.clone());
                }
            }
        }
        let document = get_json(&http_client(&self.tls), jwks_uri, None).await?;
        let keys: JwkSet = serde_json::from_value(document)
            .map_err(|e| LoginError::Provider(format!("{jwks_uri}: not a JWK set: {e}")))?;
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    async fn client(&self, callback: &str) -> Result<OAuthClient, LoginError> {
        let found = self.discovery().await?;
        oauth_client(
            &self.settings.client_id,
            self.secret.as_ref(),
            &found.authorization_endpoint,
            &found.token_endpoint,
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
        let claims = self.verify(&id_token, nonce).await?;
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

    /// Verifies an ID token: key from the JWKS (by `kid`, fetched again once when the
    /// key is unknown: the provider may have rotated), asymmetric algorithm, signature,
    /// issuer, audience, expiry, nonce.
    async fn verify(
        &self,
        token: &str,
        nonce: &str,
    ) -> Result<serde_json::Map<String, Value>, LoginError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| LoginError::Invalid(format!("the ID token is not a JWT: {e}")))?;
        let asymmetric = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(LoginError::Invalid(format!(
                "the ID token is signed with {:?}; only public-key algorithms are accepted",
                header.alg
            )));
        }
        let found = self.discovery().await?;
        let pick = |keys: &JwkSet| match &header.kid {
            Some(kid) => keys.find(kid).cloned(),
            None if keys.keys.len() == 1 => keys.keys.first().cloned(),
            None => None,
        };
        let mut key = pick(&self.keys(&found.jwks_uri, false).await?);
        if key.is_none() {
            key = pick(&self.keys(&found.jwks_uri, true).await?);
        }
        let key = key.ok_or_else(|| {
            LoginError::Invalid("the ID token's key is not in the provider's JWKS".into())
        })?;
        let key = DecodingKey::from_jwk(&key)
            .map_err(|e| LoginError::Invalid(format!("the provider's key is unusable: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.settings.issuer.as_str(), found.issuer.as_str()]);
        validation.set_audience(&[self.settings.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                LoginError::Invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "the ID token has expired".into(),
                    ErrorKind::InvalidSignature => "the ID token's signature is wrong".into(),
                    ErrorKind::InvalidIssuer => "the ID token's issuer is wrong".into(),
                    ErrorKind::InvalidAudience => {
                        "the ID token is for another client (audience)".into()
                    }
                    other => format!("the ID token is not valid: {other:?}"),
                })
            })?;
        let claims = data.claims;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(LoginError::Invalid(
                "the ID token's nonce is not this login's (a replayed token?)".into(),
            ));
        }
        Ok(claims)
    }
}
