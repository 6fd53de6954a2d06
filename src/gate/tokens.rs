//! Bearer tokens: HS256 JWTs that kubegate issues, with Pipeline's claims.
//!
//! Verification pins the algorithm and checks signature, expiry, issuer and audience.
//! A token is never logged; errors say what is wrong without echoing it.

use std::io;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, ConfigError};

/// The claims of a kubegate token (as Pipeline's: iss, aud, iat, exp, sub, jti, scope,
/// type, text).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Expires at (seconds since the epoch).
    pub exp: u64,
    /// The user: the policy subject.
    pub sub: String,
    /// The token's id.
    pub jti: String,
    /// What the token may be used for.
    #[serde(default)]
    pub scope: String,
    /// `user` for tokens of people.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The token's name, given by its owner.
    #[serde(default)]
    pub text: String,
    /// The kubectl login session (`kubegate login`) the token was issued under: when
    /// that session is revoked, so is the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The browser session that session came from: a logout there ends it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psid: Option<String>,
    /// The login provider, for a token issued under a login session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The groups the login brought (the provider's, `system:` ones never).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Who a kubectl login session speaks for: carried by its access tokens, refresh
/// credentials and authorization codes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SessionGrant {
    /// The user.
    pub sub: String,
    /// The kubectl login session's id (a token record's id).
    #[serde(default)]
    pub sid: String,
    /// The browser session the login went through.
    #[serde(default)]
    pub psid: String,
    /// The login provider.
    pub provider: String,
    /// The login's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The client's name (`kubegate on laptop`).
    #[serde(default)]
    pub client: String,
    /// When the session ends, seconds since the epoch.
    pub session_exp: u64,
}

/// Why a bearer token was refused. Messages never contain the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no credentials: send Authorization: Bearer <token> (create one with `kubegate token create` or GET /pipeline/api/v1/token after a browser login), or log in at /")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("the Authorization header must be \"Bearer <token>\"")]
    NotBearer,
    /// The token has expired.
    #[error("the token has expired; create a new one")]
    Expired,
    /// Anything else: bad signature, wrong issuer or audience, not a JWT, wrong algorithm.
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

/// Tokens a worker has verified and how many it keeps: a token seen again is not
/// decoded, its HMAC not computed again, while its expiry is still checked on every use.
/// Revocation is checked by the caller on every request, outside this cache
/// ([`crate::gate::Gate`]), so a revoked token is refused at once.
const VERIFIED_PER_WORKER: usize = 1024;

/// Verified tokens: the token → the id of the authority that verified it, and its claims.
type Verified = std::collections::HashMap<Box<str>, (u64, Rc<Claims>)>;

thread_local! {
    /// This worker's verified tokens.
    static VERIFIED: std::cell::RefCell<Verified> = std::cell::RefCell::new(Verified::new());
}

/// Gives each authority its own id, so that a worker never takes a token verified with
/// another key (a key rotation builds a new authority).
static AUTHORITIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Issues and verifies tokens with one key.
pub struct TokenAuthority {
    /// Keys this authority's entries in the workers' verified-token caches.
    id: u64,
    issuer: String,
    audience: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// A freshly issued token.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    /// The token's id (its `jti`).
    pub id: String,
    /// The token itself (a secret; shown once).
    pub token: String,
    /// When it expires, RFC 3339.
    pub expires_at: String,
    /// When it was issued, seconds since the epoch.
    #[serde(skip)]
    pub issued_at: u64,
    /// When it expires, seconds since the epoch.
    #[serde(skip)]
    pub expires_epoch: u64,
}

impl IssuedToken {
    /// What the token store keeps of this token (never the token itself).
    pub fn record(&self, user: &str, name: &str) -> kubegate_actors::store::TokenRecord {
        kubegate_actors::store::TokenRecord {
            id: self.id.clone(),
            user: user.to_string(),
            name: name.to_string(),
            created_at: self.issued_at,
            expires_at: self.expires_epoch,
            revoked_at: None,
            session: false,
        }
    }
}

/// Whether `user` can be a token's subject (and so a policy subject): non-empty, without
/// spaces, commas (the policy's separator) or control characters, and not beginning with
/// `system:`, which Kubernetes keeps for its own users (kubegate never impersonates them).
pub fn is_valid_user(user: &str) -> bool {
    !user.is_empty()
        && !is_system_name(user)
        && !user
            .chars()
            .any(|c| c.is_control() || c == ',' || c.is_whitespace())
}

/// Whether `name` is one of Kubernetes' own users or groups (`system:masters`,
/// `system:serviceaccount:...`): never a kubegate user, never impersonated.
pub fn is_system_name(name: &str) -> bool {
    name.len() >= 7 && name[..7].eq_ignore_ascii_case("system:")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the signing key: `KUBEGATE_SIGNING_KEY`, or the key file, created with 32
/// random bytes (base64) when missing.
pub fn load_signing_key(config: &AuthConfig) -> Result<Vec<u8>, ConfigError> {
    if let Ok(key) = std::env::var("KUBEGATE_SIGNING_KEY") {
        return check_key(key.trim().as_bytes().to_vec(), "KUBEGATE_SIGNING_KEY");
    }
    let path = &config.signing_key_file;
    match std::fs::read_to_string(path) {
        Ok(text) => check_key(text.trim().as_bytes().to_vec(), &path.display().to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_key(path),
        Err(e) => Err(ConfigError::SigningKey(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn check_key(key: Vec<u8>, from: &str) -> Result<Vec<u8>, ConfigError> {
    if key.len() < 32 {
        return Err(ConfigError::SigningKey(format!(
            "{from} holds {} bytes; use at least 32",
            key.len()
        )));
    }
    Ok(key)
}

fn create_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut raw = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut raw)
        .map_err(|_| ConfigError::SigningKey("no secure random source".into()))?;
    let text = base64::engine::general_purpose::STANDARD.encode(raw);
    match kubegate_actors::fsutil::create_atomic(path, format!("{text}\n").as_bytes()) {
        Ok(()) => {
            log::info!("created a new token signing key in {}", path.display());
            Ok(text.into_bytes())
        }
        // another process created it first: use theirs
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::SigningKey(format!("cannot read {}: {e}", path.display()))
            })?;
            check_key(text.trim().as_bytes().to_vec(), &path.display().to_string())
        }
        Err(e) => Err(ConfigError::SigningKey(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

impl TokenAuthority {
    /// An authority for `config`, signing with `key`.
    pub fn new(config: &AuthConfig, key: &[u8]) -> TokenAuthority {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        TokenAuthority {
            id: AUTHORITIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            default_ttl: config.default_ttl,
            max_ttl: config.max_ttl,
        }
    }

    /// Issues a token for `user`, valid for `ttl` (the default when `None`).
    pub fn issue(
        &self,
        user: &str,
        ttl: Option<Duration>,
        name: &str,
    ) -> Result<IssuedToken, String> {
        self.issue_with(user, ttl, name, None)
    }

    /// A short-lived access token of a kubectl login session: it carries the session's
    /// ids (so that revoking the session revokes it) and the login's groups, and never
    /// outlives the session.
    pub fn issue_for_session(
        &self,
        grant: &SessionGrant,
        ttl: Duration,
    ) -> Result<IssuedToken, String> {
        let left = grant.session_exp.saturating_sub(now());
        let ttl = ttl.min(Duration::from_secs(left)).min(self.max_ttl);
        let name = format!("kubectl login: {}", grant.client);
        self.issue_with(&grant.sub, Some(ttl), &name, Some(grant))
    }

    fn issue_with(
        &self,
        user: &str,
        ttl: Option<Duration>,
        name: &str,
        grant: Option<&SessionGrant>,
    ) -> Result<IssuedToken, String> {
        if !is_valid_user(user) {
            return Err(
                "the user name must be non-empty, without spaces, commas or control characters, \
                 and must not begin with \"system:\" (Kubernetes' own users)"
                    .into(),
            );
        }
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() || ttl > self.max_ttl {
            return Err(format!(
                "the lifetime must be more than 0 and at most {}",
                humantime::format_duration(self.max_ttl)
            ));
        }
        let iat = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + ttl.as_secs(),
            sub: user.to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            scope: "api:invoke".into(),
            kind: "user".into(),
            text: name.to_string(),
            sid: grant.map(|g| g.sid.clone()),
            psid: grant.map(|g| g.psid.clone()).filter(|p| !p.is_empty()),
            provider: grant.map(|g| g.provider.clone()),
            groups: grant.map(|g| g.groups.clone()).unwrap_or_default(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| format!("cannot sign the token: {e}"))?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(claims.exp);
        Ok(IssuedToken {
            id: claims.jti,
            token,
            expires_at: humantime::format_rfc3339_seconds(expires_at).to_string(),
            issued_at: claims.iat,
            expires_epoch: claims.exp,
        })
    }

    /// Verifies a token and returns its claims.
    /// The lifetime of a token when none is asked for.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// The claims of `token` once checked, shared with this worker's cache of verified
    /// tokens (not copied out of it on every request).
    pub fn verify(&self, token: &str) -> Result<Rc<Claims>, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // jsonwebtoken's rule: expired once exp + leeway is past
        let expired = |claims: &Claims| claims.exp.saturating_add(self.validation.leeway) < now;
        let seen = VERIFIED.with(|verified| {
            verified
                .borrow()
                .get(token)
                .filter(|(by, _)| *by == self.id)
                .map(|(_, claims)| claims.clone())
        });
        if let Some(claims) = seen {
            if expired(&claims) {
                VERIFIED.with(|verified| verified.borrow_mut().remove(token));
                return Err(AuthError::Expired);
            }
            return Ok(claims);
        }
        let claims = Rc::new(self.decode(token)?);
        if !expired(&claims) {
            VERIFIED.with(|verified| {
                let mut verified = verified.borrow_mut();
                if verified.len() >= VERIFIED_PER_WORKER {
                    verified.clear();
                }
                verified.insert(token.into(), (self.id, claims.clone()));
            });
        }
        Ok(claims)
    }

    /// Checks the signature, the algorithm, expiry, issuer and audience, and the claims.
    /// Signs `claims` for `purpose` (`code`, `refresh`, `device`): the token's audience is
    /// `{audience}:{purpose}`, so that no such token is ever taken as a bearer token, nor
    /// one purpose's for another's.
    pub fn seal<T: Serialize>(&self, purpose: &str, claims: &T) -> Result<String, String> {
        #[derive(Serialize)]
        struct Sealed<'a, T> {
            iss: &'a str,
            aud: String,
            #[serde(flatten)]
            claims: &'a T,
        }
        let sealed = Sealed {
            iss: &self.issuer,
            aud: format!("{}:{purpose}", self.audience),
            claims,
        };
        encode(&Header::new(Algorithm::HS256), &sealed, &self.encoding)
            .map_err(|e| format!("cannot sign: {e}"))
    }

    /// Checks a token of [`TokenAuthority::seal`] for `purpose`: signature, issuer,
    /// audience and `exp` (which `T` must carry).
    pub fn open<T: serde::de::DeserializeOwned>(
        &self,
        purpose: &str,
        token: &str,
    ) -> Result<T, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[format!("{}:{purpose}", self.audience)]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        decode::<T>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAudience => {
                    AuthError::Invalid(format!("not a {purpose} credential"))
                }
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                _ => AuthError::Invalid("not well-formed".into()),
            })
    }

    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Invalid("algorithm not accepted (HS256 only)".into())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("claim {c} is missing"))
                }
                _ => AuthError::Invalid("not a well-formed token".into()),
            })
            .and_then(|claims| {
                if claims.sub.is_empty() {
                    Err(AuthError::Invalid("claim sub is empty".into()))
                } else {
                    Ok(claims)
                }
            })
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Rc<Claims>, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_own_names_are_never_users() {
        for name in [
            "system:admin",
            "SYSTEM:masters",
            "system:serviceaccount:a:b",
        ] {
            assert!(!is_valid_user(name), "{name}");
        }
        assert!(is_valid_user("github:alice"));
        assert!(is_valid_user("systemd"));
        let authority = TokenAuthority::new(&AuthConfig::default(), &[7; 32]);
        let e = authority.issue("system:admin", None, "x").unwrap_err();
        assert!(e.contains("system:"), "{e}");
    }
    use crate::config::Config;

    fn authority() -> TokenAuthority {
        TokenAuthority::new(
            &Config::defaults().auth,
            b"0123456789abcdef0123456789abcdef",
        )
    }

    #[test]
    fn issue_and_verify() {
        let a = authority();
        let t = a
            .issue("alice", Some(Duration::from_secs(60)), "laptop")
            .unwrap();
        let c = a.verify(&t.token).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.jti.as_str(), c.text.as_str()),
            ("alice", t.id.as_str(), "laptop")
        );
        assert_eq!(c.exp - c.iat, 60);
        let header = format!("Bearer {}", t.token);
        assert_eq!(
            a.authenticate(Some(header.as_bytes())).unwrap().sub,
            "alice"
        );
    }

    #[test]
    fn refusals() {
        let a = authority();
        assert_eq!(a.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            a.authenticate(Some(b"Basic abc")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(a.authenticate(Some(b"Bearer")), Err(AuthError::NotBearer));
        assert!(matches!(a.verify("not.a.jwt"), Err(AuthError::Invalid(_))));
        let other = TokenAuthority::new(
            &Config::defaults().auth,
            b"another key another key another key",
        );
        let t = other.issue("alice", None, "").unwrap();
        assert_eq!(
            a.verify(&t.token),
            Err(AuthError::Invalid("bad signature".into()))
        );
        // alg: none
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"sub":"alice","iss":"https://kubegate.local/","aud":"https://kubegate.local","exp":{}}}"#,
                now() + 60
            ))
        );
        assert!(matches!(a.verify(&none), Err(AuthError::Invalid(_))));
        assert!(a.issue("a,b", None, "").is_err());
        assert!(a
            .issue("alice", Some(Duration::from_secs(10 * 365 * 86400)), "")
            .is_err());
    }

    /// A verified token is kept by the worker, but only for the authority that verified
    /// it, and only until it expires; what fails verification is never kept.
    #[test]
    fn verified_tokens_are_kept_per_authority_until_they_expire() {
        let cfg = Config::defaults().auth;
        let key = b"0123456789abcdef0123456789abcdef";
        let a = TokenAuthority::new(&cfg, key);
        let t = a.issue("alice", Some(Duration::from_secs(60)), "").unwrap();
        assert_eq!(a.verify(&t.token).unwrap().sub, "alice");
        assert!(VERIFIED.with(|v| v.borrow().contains_key(t.token.as_str())));
        assert_eq!(a.verify(&t.token).unwrap().sub, "alice", "from the cache");
        // another key (a rotation) does not take the kept token
        let rotated = TokenAuthority::new(&cfg, b"another key another key another key");
        assert_eq!(
            rotated.verify(&t.token),
            Err(AuthError::Invalid("bad signature".into()))
        );
        // a kept token that has expired since is refused and dropped
        VERIFIED.with(|v| {
            let mut v = v.borrow_mut();
            let (_, claims) = v.get_mut(t.token.as_str()).unwrap();
            Rc::make_mut(claims).exp = now() - 60;
        });
        assert_eq!(a.verify(&t.token), Err(AuthError::Expired));
        assert!(!VERIFIED.with(|v| v.borrow().contains_key(t.token.as_str())));
        // a forged signature is never kept
        let at = t.token.rfind('.').unwrap() + 5;
        let other = if &t.token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{other}{}", &t.token[..at], &t.token[at + 1..]);
        assert!(a.verify(&forged).is_err());
        assert!(!VERIFIED.with(|v| v.borrow().contains_key(forged.as_str())));
    }

    #[test]
    fn expired_and_wrong_audience() {
        let mut cfg = Config::defaults().auth;
        let key = b"0123456789abcdef0123456789abcdef";
        let a = TokenAuthority::new(&cfg, key);
        let claims = Claims {
            iss: cfg.issuer.clone(),
            aud: cfg.audience.clone(),
            iat: now() - 100,
            exp: now() - 50,
            sub: "alice".into(),
            jti: "x".into(),
            scope: String::new(),
            kind: String::new(),
            text: String::new(),
            sid: None,
            psid: None,
            provider: None,
            groups: Vec::new(),
        };
        let t = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key),
        )
        .unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::Expired));
        cfg.audience = "someone else".into();
        let b = TokenAuthority::new(&cfg, key);
        let t = b.issue("alice", None, "").unwrap();
        assert_eq!(
            a.verify(&t.token),
            Err(AuthError::Invalid("wrong audience".into()))
        );
    }

    #[test]
    fn sealed_tokens_are_for_one_purpose_and_never_bearer_tokens() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Code {
            exp: u64,
            sub: String,
        }
        let a = authority();
        let code = Code {
            exp: now() + 60,
            sub: "alice".into(),
        };
        let sealed = a.seal("code", &code).unwrap();
        assert_eq!(a.open::<Code>("code", &sealed).unwrap(), code);
        assert!(matches!(
            a.open::<Code>("refresh", &sealed),
            Err(AuthError::Invalid(why)) if why == "not a refresh credential"
        ));
        assert!(a.verify(&sealed).is_err(), "never a bearer token");
        let stale = a
            .seal(
                "code",
                &Code {
                    exp: now() - 1,
                    sub: "alice".into(),
                },
            )
            .unwrap();
        assert_eq!(a.open::<Code>("code", &stale), Err(AuthError::Expired));
    }

    #[test]
    fn session_tokens_carry_the_session_and_never_outlive_it() {
        let a = authority();
        let grant = SessionGrant {
            sub: "ldap:alice".into(),
            sid: "s1".into(),
            psid: "p1".into(),
            provider: "ldap".into(),
            groups: vec!["devs".into()],
            client: "kubegate on laptop".into(),
            session_exp: now() + 30,
        };
        let t = a
            .issue_for_session(&grant, Duration::from_secs(900))
            .unwrap();
        let c = a.verify(&t.token).unwrap();
        assert_eq!(c.sid.as_deref(), Some("s1"));
        assert_eq!(c.psid.as_deref(), Some("p1"));
        assert_eq!(c.groups, ["devs"]);
        assert!(c.exp <= grant.session_exp, "capped at the session's end");
    }
}
