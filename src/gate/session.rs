//! Browser sessions: the cookie kubegate sets at the end of a login, and what it holds.
//!
//! Sessions are `actix-session`'s. The state lives in the cookie itself (encrypted and
//! signed with a key derived from the token signing key, so replicas sharing that key
//! share sessions) or, when `sessions.store = "redis"`, in Redis, the cookie holding only
//! the session key. The cookie is HttpOnly and SameSite=Lax, and Secure when the request
//! came over TLS or when `sessions.secure = true`.
//!
//! A session authenticates the proxy route and the REST API as a token does (see
//! [`crate::gate::Gate::authenticate`]), with two more rules: it ends at its expiry whatever
//! the cookie says (a cookie-store cookie is data the browser keeps), and a session ended
//! by logout is refused on every replica (its id joins the token revocations).

use std::collections::HashMap;

use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::storage::{
    CookieSessionStore, LoadError, RedisSessionStore, SaveError, SessionKey, SessionStore,
    UpdateError,
};
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::body::MessageBody;
use actix_web::cookie::{time, Key, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::HttpRequest;
use serde::{Deserialize, Serialize};

use crate::config::login::{SessionConfig, SessionStoreKind};

/// The session key under which the logged-in user is kept.
const USER: &str = "user";
/// The session key under which a login in progress is kept.
const PENDING: &str = "login";

/// Who a session belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionUser {
    /// The policy subject, namespaced by provider (`github:alice`).
    pub user: String,
    /// The provider's name in the configuration.
    pub provider: String,
    /// The provider's groups of the user at login.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The session's id: what logout revokes.
    pub sid: String,
    /// The token a page sends back in `X-CSRF-Token` for unsafe methods.
    pub csrf: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// A login between its start and the provider's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingLogin {
    /// The provider's name.
    pub provider: String,
    /// The OAuth2 `state` sent (or the LDAP form's token).
    pub state: String,
    /// The PKCE verifier.
    #[serde(default)]
    pub pkce_verifier: String,
    /// The OIDC nonce.
    #[serde(default)]
    pub nonce: String,
    /// Where to go after the login: a checked local path.
    pub redirect: String,
    /// Seconds since the epoch.
    pub started_at: u64,
}

/// Where session state is kept: in the cookie, or in Redis.
#[derive(Clone)]
pub enum SessionBackend {
    /// The state is the cookie (encrypted).
    Cookie,
    /// The state is in Redis; the cookie holds its key.
    Redis(RedisSessionStore),
}

impl SessionStore for SessionBackend {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        match self {
            SessionBackend::Cookie => CookieSessionStore::default().load(session_key).await,
            SessionBackend::Redis(s) => s.load(session_key).await,
        }
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl: &time::Duration,
    ) -> Result<SessionKey, SaveError> {
        match self {
            SessionBackend::Cookie => CookieSessionStore::default().save(session_state, ttl).await,
            SessionBackend::Redis(s) => s.save(session_state, ttl).await,
        }
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        ttl: &time::Duration,
    ) -> Result<SessionKey, UpdateError> {
        match self {
            SessionBackend::Cookie => {
                CookieSessionStore::default()
                    .update(session_key, session_state, ttl)
                    .await
            }
            SessionBackend::Redis(s) => s.update(session_key, session_state, ttl).await,
        }
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl: &time::Duration,
    ) -> Result<(), anyhow::Error> {
        match self {
            SessionBackend::Cookie => {
                CookieSessionStore::default()
                    .update_ttl(session_key, ttl)
                    .await
            }
            SessionBackend::Redis(s) => s.update_ttl(session_key, ttl).await,
        }
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        match self {
            SessionBackend::Cookie => CookieSessionStore::default().delete(session_key).await,
            SessionBackend::Redis(s) => s.delete(session_key).await,
        }
    }
}

/// What the session middleware of every worker is made of.
#[derive(Clone)]
pub struct Sessions {
    backend: SessionBackend,
    key: Key,
    config: SessionConfig,
}

impl Sessions {
    /// The session setup of `config`; the cookie key is derived from the token signing
    /// key. Connects to Redis when configured (an unreachable Redis is an error here, so
    /// that a misconfiguration shows at start).
    pub async fn open(config: &SessionConfig, signing_key: &[u8]) -> Result<Sessions, String> {
        let backend = match config.store {
            SessionStoreKind::Redis => {
                let url = config.redis_url.as_deref().unwrap_or_default();
                let store = RedisSessionStore::new(url)
                    .await
                    .map_err(|e| format!("sessions.redis_url: cannot connect to Redis: {e}"))?;
                SessionBackend::Redis(store)
            }
            SessionStoreKind::Cookie => SessionBackend::Cookie,
        };
        // a key of its own for cookies, derived so that it is never the token key itself
        let mut material = b"kubegate session cookie key\0".to_vec();
        material.extend_from_slice(signing_key);
        Ok(Sessions {
            backend,
            key: Key::derive_from(&material),
            config: config.clone(),
        })
    }

    /// The middleware, for one worker's App.
    pub fn middleware(&self) -> SessionMiddleware<SessionBackend> {
        let ttl =
            time::Duration::seconds(self.config.lifetime.as_secs().min(i64::MAX as u64) as i64);
        SessionMiddleware::builder(self.backend.clone(), self.key.clone())
            .cookie_name(self.config.cookie_name.clone())
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .cookie_secure(self.config.secure)
            .cookie_content_security(CookieContentSecurity::Private)
            .session_lifecycle(PersistentSession::default().session_ttl(ttl))
            .build()
    }

    /// The session lifetime.
    pub fn lifetime(&self) -> std::time::Duration {
        self.config.lifetime
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.config.cookie_name
    }
}

/// Marks the session cookie `Secure` on responses to requests that came over TLS (the
/// middleware's own setting is one for all listeners). Runs inside the session
/// middleware, so it sees the cookie it sets.
pub async fn secure_over_tls(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    // most answers set no cookie: only those that set one without Secure look further
    let lacking = response
        .headers()
        .get_all(header::SET_COOKIE)
        .any(|c| !has_secure(c));
    if lacking && response.request().connection_info().scheme() == "https" {
        let cookies: Vec<HeaderValue> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .cloned()
            .collect();
        response.headers_mut().remove(header::SET_COOKIE);
        for cookie in cookies {
            let value = if has_secure(&cookie) {
                cookie
            } else {
                let text = format!("{}; Secure", String::from_utf8_lossy(cookie.as_bytes()));
                HeaderValue::from_str(&text).unwrap_or(cookie)
            };
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

fn has_secure(cookie: &HeaderValue) -> bool {
    String::from_utf8_lossy(cookie.as_bytes())
        .split(';')
        .any(|part| part.trim().eq_ignore_ascii_case("secure"))
}

/// The logged-in user of the request's session, if any (expired sessions are none).
pub fn user(req: &HttpRequest) -> Option<SessionUser> {
    let session = req.get_session();
    let user = session.get::<SessionUser>(USER).ok().flatten()?;
    (user.expires_at > kubegate_actors::store::epoch_now()).then_some(user)
}

/// Starts a new session for `user` (a new session key: no fixation).
pub fn log_in(session: &Session, user: &SessionUser) -> Result<(), SessionError> {
    session.renew();
    session.remove(PENDING);
    Ok(session.insert(USER, user)?)
}

/// Ends the session.
pub fn log_out(session: &Session) {
    session.purge();
}

/// Remembers a login in progress.
pub fn set_pending(session: &Session, pending: &PendingLogin) -> Result<(), SessionError> {
    Ok(session.insert(PENDING, pending)?)
}

/// Why a session could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// What was to be kept could not be put in the session.
    #[error("cannot write the session: {0}")]
    Write(#[from] actix_session::SessionInsertError),
}

/// Takes the login in progress out of the session (a state is good once).
pub fn take_pending(session: &Session) -> Option<PendingLogin> {
    let pending = session.get::<PendingLogin>(PENDING).ok().flatten();
    session.remove(PENDING);
    pending
}

/// Methods a cross-site page can make a browser send with its cookies, and that change
/// things: they need a CSRF proof when the cookie is the credential.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a cookie-authenticated request with an unsafe method may go on: it carries
/// the session's CSRF token in `X-CSRF-Token`, or the browser says it comes from a page of
/// the same origin (`Sec-Fetch-Site: same-origin`, a header pages cannot set).
pub fn csrf_ok(req: &HttpRequest, user: &SessionUser) -> bool {
    let headers = req.headers();
    if let Some(token) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) {
        return constant_time_eq(token.as_bytes(), user.csrf.as_bytes());
    }
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"same-origin")
}

/// Compares secrets without telling, by its time, where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random token of 32 bytes, URL-safe base64.
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut raw = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut raw)
        .expect("the system's random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn user() -> SessionUser {
        SessionUser {
            user: "github:alice".into(),
            provider: "github".into(),
            groups: vec![],
            sid: "s1".into(),
            csrf: "the-token".into(),
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn csrf_needs_the_token_or_a_same_origin_fetch() {
        let u = user();
        let plain = TestRequest::post().to_http_request();
        assert!(!csrf_ok(&plain, &u), "a cross-site form sends neither");
        let cross = TestRequest::post()
            .insert_header(("Sec-Fetch-Site", "cross-site"))
            .to_http_request();
        assert!(!csrf_ok(&cross, &u));
        let same = TestRequest::post()
            .insert_header(("Sec-Fetch-Site", "same-origin"))
            .to_http_request();
        assert!(csrf_ok(&same, &u));
        let token = TestRequest::post()
            .insert_header(("X-CSRF-Token", "the-token"))
            .to_http_request();
        assert!(csrf_ok(&token, &u));
        let wrong = TestRequest::post()
            .insert_header(("X-CSRF-Token", "the-tokeN"))
            .insert_header(("Sec-Fetch-Site", "same-origin"))
            .to_http_request();
        assert!(!csrf_ok(&wrong, &u), "a wrong token is never rescued");
        assert!(!is_unsafe(&Method::GET) && is_unsafe(&Method::DELETE));
    }

    fn cookies<B>(res: &actix_web::dev::ServiceResponse<B>) -> Vec<String> {
        res.headers()
            .get_all("set-cookie")
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[actix_rt::test]
    async fn the_cookie_is_secure_over_tls_only() {
        use actix_web::{test, web, App, HttpResponse};
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(secure_over_tls))
                .route(
                    "/",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .append_header(("Set-Cookie", "kubegate_session=x; HttpOnly"))
                            .append_header(("Set-Cookie", "other=y; Secure"))
                            .finish()
                    }),
                ),
        )
        .await;
        let plain = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(
            cookies(&plain),
            ["kubegate_session=x; HttpOnly", "other=y; Secure"]
        );
        let tls = test::call_service(
            &app,
            test::TestRequest::get()
                .uri("https://kubegate.example/")
                .to_request(),
        )
        .await;
        assert_eq!(
            cookies(&tls),
            ["kubegate_session=x; HttpOnly; Secure", "other=y; Secure"]
        );
    }

    #[test]
    fn random_tokens_differ() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}
