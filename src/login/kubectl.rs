//! kubectl single sign-on, the server's side of `kubegate login` and `kubegate credential`
//! (kubectl's exec plugin): the person logs in through the browser login of
//! [`super`] (GitHub, OIDC, LDAP: the provider's secret never leaves kubegate), and the
//! plugin gets a kubectl login session, with short-lived access tokens and a refresh
//! credential.
//!
//! - `GET /auth/cli/authorize`: the authorization-code flow with PKCE (S256) and a
//!   loopback redirect (RFC 8252: `http://127.0.0.1:PORT/...`, `[::1]` or `localhost`,
//!   nothing else). Without a browser session the person logs in first and comes back.
//!   The code is a signed, single-use credential good for a minute.
//! - `POST /auth/cli/device`, then `GET|POST /auth/cli/device/verify`: the device flow for
//!   machines without a browser (RFC 8628's shape): the person confirms a short code in
//!   a browser anywhere; the plugin polls.
//! - `POST /auth/cli/token`: `authorization_code`, `refresh_token` and
//!   `urn:ietf:params:oauth:grant-type:device_code`. Errors are OAuth's
//!   (`{"error", "error_description"}`, with kubegate's `code` and `message`).
//!
//! A kubectl login session is a token record (`session: true`) of its person, so it is
//! listed with their tokens and revoked like one; it ends with the browser session it
//! came from (at its end, or at a logout there). Its access tokens carry its id and the
//! browser session's, and are refused once either is revoked. Refresh credentials rotate
//! on every use; using one again revokes the session (reuse detection). Refreshes and
//! device polls are limited per credential, not only per client address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::auditor::AuditDecision;
use kubegate_actors::store::{epoch_now, TokenRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pages::{escape, page};
use super::LoginState;
use crate::gate::audit::AuditContext;
use crate::gate::session::{self, constant_time_eq, SessionUser};
use crate::gate::tokens::{AuthError, SessionGrant};
use crate::gate::Gate;

/// How long an authorization code is good for.
const CODE_SECS: u64 = 60;
/// How long a device login waits for its person.
const DEVICE_SECS: u64 = 600;
/// The device flow's polling interval, in seconds.
const DEVICE_INTERVAL: u64 = 5;
/// Refreshes one kubectl login session may make per minute.
const REFRESHES_PER_MINUTE: u32 = 10;
/// The letters of user codes: no vowels (no words), none that look alike.
const USER_CODE_LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// What the kubectl logins keep: their settings and the per-credential limits.
pub struct KubectlLogins {
    /// Lifetime of an access token.
    token_ttl: Duration,
    limits: CredentialLimits,
}

impl KubectlLogins {
    /// kubectl logins whose access tokens live `token_ttl`.
    pub fn new(token_ttl: Duration) -> Self {
        KubectlLogins {
            token_ttl,
            limits: CredentialLimits::default(),
        }
    }
}

/// An OAuth error as answered (RFC 6749 5.2), with kubegate's `code` and `message`.
#[derive(utoipa::ToSchema)]
#[schema(as = OAuthError)]
#[allow(dead_code)] // what `OAuthError::response` writes
struct OAuthErrorBody {
    /// OAuth's error code: `invalid_request`, `invalid_grant`, `authorization_pending`,
    /// `slow_down`, `expired_token`, `access_denied`, `unsupported_grant_type`,
    /// `temporarily_unavailable`, `server_error`.
    error: String,
    /// What went wrong, and what to do about it.
    error_description: String,
    /// The HTTP status code.
    code: u16,
    /// The same as `error_description`.
    message: String,
}

/// An OAuth error answer.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn response(&self) -> HttpResponse {
        let mut answer = HttpResponse::build(self.status);
        answer.insert_header(("Cache-Control", "no-store"));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            answer.insert_header((header::RETRY_AFTER, "60"));
        }
        answer.json(json!({
            "error": self.error,
            "error_description": self.description,
            "code": self.status.as_u16(),
            "message": self.description,
        }))
    }
}

fn unavailable(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::new(
        "temporarily_unavailable",
        format!("the token store is unavailable: {e}"),
    )
    .with_status(StatusCode::SERVICE_UNAVAILABLE)
}

/// An audit event for a step of a kubectl login (`verb`: login, refresh, approve).
fn audit(gate: &Gate, req: &HttpRequest, verb: &'static str, client: &str) -> AuditContext {
    let mut audit = gate.record(req);
    audit.event.path = req.path().to_string();
    audit.event.attributes = RequestAttributes {
        verb: verb.into(),
        is_resource: true,
        api_group: "kubegate".into(),
        resource: "kubectl-sessions".into(),
        name: client.chars().take(100).collect(),
        ..Default::default()
    };
    audit
}

fn finish(gate: &Gate, mut audit: AuditContext, result: &Result<String, OAuthError>) {
    let status = match result {
        Ok(reason) => {
            audit.event.decision = AuditDecision::Allow;
            audit.event.reason = reason.clone();
            200
        }
        Err(e) => {
            audit.event.decision = if e.status.is_server_error() {
                AuditDecision::Error
            } else {
                AuditDecision::Deny
            };
            audit.event.reason = e.description.clone();
            audit.event.error = Some(format!("{}: {}", e.error, e.description));
            e.status.as_u16()
        }
    };
    audit.finish(gate.auditor(), status, 0, 0);
}

/// A client's name as it asked to be called (`kubegate on laptop`): at most 100
/// characters, no control characters.
fn client_name(asked: Option<&str>) -> Result<String, String> {
    let name = asked.unwrap_or("kubectl").trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(
            "client: give a name of 1 to 100 characters, without control characters".into(),
        );
    }
    Ok(name.to_string())
}

/// Whether `uri` is a loopback redirect of a native app (RFC 8252, section 7.3): plain
/// `http` to 127.0.0.1, `[::1]` or `localhost` with a port, no user info, no fragment.
fn loopback_redirect(uri: &str) -> bool {
    let Ok(parsed) = uri.parse::<http::Uri>() else {
        return false;
    };
    let host = parsed.host().unwrap_or("");
    parsed.scheme_str() == Some("http")
        && matches!(host, "127.0.0.1" | "[::1]" | "localhost")
        && parsed.port_u16().is_some()
        && !parsed.authority().is_some_and(|a| a.as_str().contains('@'))
        && !uri.contains('#')
        && uri.len() <= 512
}

/// Whether `text` can be a PKCE verifier or challenge: 43 to 128 characters of
/// `[A-Za-z0-9-._~]` (RFC 7636).
fn pkce_text(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier`.
fn challenge_of(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// An authorization code: who logged in, for which loopback and challenge.
#[derive(Serialize, Deserialize)]
struct CodeClaims {
    exp: u64,
    jti: String,
    redirect_uri: String,
    challenge: String,
    #[serde(flatten)]
    grant: SessionGrant,
}

/// A refresh credential: one link of a kubectl login session's chain.
#[derive(Serialize, Deserialize)]
struct RefreshClaims {
    exp: u64,
    jti: String,
    #[serde(flatten)]
    grant: SessionGrant,
}

/// A device code: which user code it waits on.
#[derive(Serialize, Deserialize)]
struct DeviceClaims {
    exp: u64,
    jti: String,
    user_code: String,
    client: String,
}

/// A device login as the token store keeps it, under `device:{user code}`.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum DeviceLogin {
    /// Waiting for its person.
    Pending {
        /// The client that started it.
        client: String,
    },
    /// Confirmed by `grant.sub` in a browser.
    Approved {
        /// Who confirmed it.
        grant: SessionGrant,
    },
    /// Refused in the browser.
    Denied {
        /// Who refused it.
        by: String,
    },
}

/// The query of `GET /auth/cli/authorize`.
#[derive(Deserialize)]
pub(crate) struct AuthorizeQuery {
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    client: Option<String>,
    provider: Option<String>,
}

/// `GET /auth/cli/authorize`: the browser's step of `kubegate login` (a browser page:
/// to the login, then back to the loopback `redirect_uri` with a code).
#[utoipa::path(
    get,
    path = "/auth/cli/authorize",
    tag = "kubectl",
    operation_id = "cliAuthorize",
    params(
        ("redirect_uri" = String, Query, description = "`kubegate login`'s loopback address"),
        ("state" = String, Query, description = "The client's state"),
        ("code_challenge" = String, Query, description = "PKCE: the S256 challenge"),
        ("code_challenge_method" = String, Query, description = "`S256`"),
        ("client" = Option<String>, Query, description = "The client's name, shown in the token list"),
        ("provider" = Option<String>, Query, description = "The login provider to use"),
    ),
    responses(
        (status = 302, description = "To the login, or back to redirect_uri with a code"),
        (status = 400, description = "A parameter is not valid", content_type = "text/html", body = String),
    ),
    security(()),
)]
pub(crate) async fn authorize(
    req: HttpRequest,
    query: web::Query<AuthorizeQuery>,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let client = query.client.as_deref().unwrap_or("kubectl");
    let mut audit = audit(&gate, &req, "authorize", client);
    let refuse = |mut audit: AuditContext, status: StatusCode, message: String| {
        audit.event.decision = AuditDecision::Deny;
        audit.event.reason = message.clone();
        audit.finish(gate.auditor(), status.as_u16(), 0, 0);
        page(
            status,
            "kubectl login refused",
            &format!("<p>{}</p>", escape(&message)),
        )
    };
    // never a redirect anywhere but the asking machine's loopback
    let Some(redirect_uri) = query
        .redirect_uri
        .as_deref()
        .filter(|u| loopback_redirect(u))
    else {
        return refuse(
            audit,
            StatusCode::BAD_REQUEST,
            "redirect_uri must be a loopback address such as http://127.0.0.1:PORT/callback \
             (RFC 8252); run `kubegate login` again"
                .into(),
        );
    };
    let login_state = query.state.as_deref().unwrap_or("");
    let challenge = query.code_challenge.as_deref().unwrap_or("");
    let problem = if login_state.is_empty() || login_state.len() > 512 {
        Some("state: give the random value of this login (at most 512 characters)".to_string())
    } else if query.code_challenge_method.as_deref() != Some("S256") || !pkce_text(challenge) {
        Some("PKCE is required: code_challenge (43 to 128 characters) with code_challenge_method=S256".into())
    } else {
        client_name(query.client.as_deref()).err()
    };
    if let Some(problem) = problem {
        return refuse(audit, StatusCode::BAD_REQUEST, problem);
    }
    let user = match session::user(&req) {
        Some(user) if !gate.revocations().contains(&user.sid) => user,
        _ => return to_login(&req, &state, query.provider.as_deref()),
    };
    audit.event.user = user.user.clone();
    let claims = CodeClaims {
        exp: epoch_now() + CODE_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
        redirect_uri: redirect_uri.to_string(),
        challenge: challenge.to_string(),
        grant: grant_of(&user, client),
    };
    let code = match gate.tokens().seal("code", &claims) {
        Ok(code) => code,
        Err(e) => return refuse(audit, StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let enc = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let target = format!(
        "{redirect_uri}{separator}code={}&state={}",
        enc(&code),
        enc(login_state)
    );
    audit.event.decision = AuditDecision::Allow;
    audit.event.reason = "authorization code handed to the loopback of the client".into();
    audit.finish(gate.auditor(), 200, 0, 0);
    // a page that moves on by itself rather than a redirect: after the LDAP form (a POST),
    // the form's `form-action 'self'` would stop a redirect chain that leaves the origin
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .body(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"0;url={t}\">\
             <title>Back to kubectl - kubegate</title></head><body>\
             <h1>Logged in</h1><p>Handing the login to <code>kubegate</code> on this machine. \
             If nothing happens, <a id=\"continue\" href=\"{t}\">continue</a>.</p></body></html>",
            t = escape(&target)
        ))
}

/// The kubectl session grant of a browser session.
fn grant_of(user: &SessionUser, client: &str) -> SessionGrant {
    SessionGrant {
        sub: user.user.clone(),
        sid: String::new(),
        psid: user.sid.clone(),
        provider: user.provider.clone(),
        groups: user.groups.clone(),
        client: client.to_string(),
        session_exp: user.expires_at,
    }
}

/// A browser without a session logs in first and comes back to this page: with the
/// provider asked for, the default one, or a choice among them.
fn to_login(req: &HttpRequest, state: &LoginState, provider: Option<&str>) -> HttpResponse {
    let here = match req.uri().query() {
        Some(query) => format!("{}?{query}", req.uri().path()),
        None => req.uri().path().to_string(),
    };
    let enc = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let names = state.login.names();
    let chosen = provider
        .filter(|p| names.iter().any(|(n, _)| n == p))
        .or(state.login.default_provider.as_deref());
    if let Some(provider) = chosen {
        return HttpResponse::Found()
            .insert_header((
                header::LOCATION,
                format!("/auth/{}/login?redirect={}", enc(provider), enc(&here)),
            ))
            .insert_header(("Cache-Control", "no-store"))
            .finish();
    }
    if names.is_empty() {
        return page(
            StatusCode::NOT_FOUND,
            "No login",
            "<p>This kubegate has no login provider configured (login.providers), so \
             kubectl cannot log in through it; ask for a token instead.</p>",
        );
    }
    let links: String = names
        .iter()
        .map(|(name, kind)| {
            format!(
                "<li><a href=\"/auth/{n}/login?redirect={r}\">{t} ({k})</a></li>",
                n = enc(name),
                r = enc(&here),
                t = escape(name),
                k = kind
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Log in for kubectl",
        &format!("<p>Log in with:</p><ul>{links}</ul>"),
    )
}

/// A token request (form-encoded, as OAuth has it).
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct TokenForm {
    /// `authorization_code`, `refresh_token` or
    /// `urn:ietf:params:oauth:grant-type:device_code`.
    grant_type: Option<String>,
    /// The code (`authorization_code`).
    code: Option<String>,
    /// PKCE's verifier (`authorization_code`).
    code_verifier: Option<String>,
    /// The loopback address the code was sent to (`authorization_code`).
    redirect_uri: Option<String>,
    /// The refresh token (`refresh_token`).
    refresh_token: Option<String>,
    /// The device code (the device grant).
    device_code: Option<String>,
    /// The client's name, shown in the token list.
    client: Option<String>,
}

/// What `POST /auth/cli/token` answers.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `token` writes
struct TokenIssued {
    /// A short-lived bearer token.
    access_token: String,
    /// `Bearer`.
    token_type: String,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// When the access token expires (RFC 3339).
    expires_at: String,
    /// The kubectl login session's refresh token (a new one each refresh).
    refresh_token: String,
    /// When the kubectl login session ends (RFC 3339).
    refresh_expires_at: String,
    /// The user.
    user: String,
    /// The kubectl login session's id (in the token list).
    session: String,
}

/// A form-encoded body (as OAuth sends them), or `None` when it is not one.
fn parse_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    let text = std::str::from_utf8(body).ok()?;
    web::Query::<T>::from_query(text)
        .ok()
        .map(web::Query::into_inner)
}

/// `POST /auth/cli/token` (form-encoded, as OAuth has it): an access token for a code,
/// a refresh token or a device code. While a device login waits, the answer is 400
/// `authorization_pending`.
#[utoipa::path(
    post,
    path = "/auth/cli/token",
    tag = "kubectl",
    operation_id = "cliToken",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The tokens", body = TokenIssued),
        (status = 400, description = "OAuth's refusals (`invalid_grant`, `authorization_pending`...)", body = OAuthErrorBody),
        (status = 429, description = "Too many requests (Retry-After)", body = OAuthErrorBody),
        (status = 503, description = "The token store is unavailable", body = OAuthErrorBody),
    ),
    security(()),
)]
pub(crate) async fn token(
    req: HttpRequest,
    body: web::Bytes,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let form = parse_form::<TokenForm>(&body);
    let client = form
        .as_ref()
        .and_then(|f| f.client.as_deref())
        .unwrap_or("kubectl")
        .to_string();
    let grant_type = form
        .as_ref()
        .and_then(|f| f.grant_type.clone())
        .unwrap_or_default();
    let verb = match grant_type.as_str() {
        "refresh_token" => "refresh",
        _ => "login",
    };
    let mut audit = audit(&gate, &req, verb, &client);
    let result = async {
        let form = form.ok_or_else(|| {
            OAuthError::new(
                "invalid_request",
                "the body must be application/x-www-form-urlencoded with grant_type",
            )
        })?;
        let client = client_name(form.client.as_deref())
            .map_err(|e| OAuthError::new("invalid_request", e))?;
        match grant_type.as_str() {
            "authorization_code" => by_code(&gate, &state, &form, &client, &mut audit).await,
            "refresh_token" => by_refresh(&gate, &state, &form, &mut audit).await,
            "urn:ietf:params:oauth:grant-type:device_code" => {
                by_device(&gate, &state, &form, &mut audit).await
            }
            "" => Err(OAuthError::new("invalid_request", "grant_type is missing")),
            other => Err(OAuthError::new(
                "unsupported_grant_type",
                format!(
                    "grant_type \"{}\" is not one of authorization_code, refresh_token, \
                     urn:ietf:params:oauth:grant-type:device_code",
                    other.chars().take(100).collect::<String>()
                ),
            )),
        }
    }
    .await;
    match result {
        Ok(Issued {
            grant,
            reason,
            refresh_token,
            access,
        }) => {
            let answer = json!({
                "access_token": access.token,
                "token_type": "Bearer",
                "expires_in": access.expires_epoch.saturating_sub(epoch_now()),
                "expires_at": access.expires_at,
                "refresh_token": refresh_token,
                "refresh_expires_at": rfc3339(grant.session_exp),
                "user": grant.sub,
                "session": grant.sid,
            });
            finish(&gate, audit, &Ok(reason));
            HttpResponse::Ok()
                .insert_header(("Cache-Control", "no-store"))
                .json(answer)
        }
        Err(e) => {
            // `authorization_pending` is the expected answer of most polls: not a refusal
            // worth an audit event each time
            if e.error != "authorization_pending" {
                finish(&gate, audit, &Err(clone_error(&e)));
            }
            e.response()
        }
    }
}

fn clone_error(e: &OAuthError) -> OAuthError {
    OAuthError {
        status: e.status,
        error: e.error,
        description: e.description.clone(),
    }
}

fn rfc3339(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(epoch))
        .to_string()
}

/// What a successful grant hands out.
struct Issued {
    grant: SessionGrant,
    reason: String,
    refresh_token: String,
    access: crate::gate::tokens::IssuedToken,
}

/// Opens a sealed credential, with OAuth's errors.
fn open<T: serde::de::DeserializeOwned>(
    gate: &Gate,
    purpose: &'static str,
    token: Option<&str>,
    expired: (&'static str, &'static str),
) -> Result<T, OAuthError> {
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", format!("the {purpose} is missing")))?;
    gate.tokens().open(purpose, token).map_err(|e| match e {
        AuthError::Expired => OAuthError::new(expired.0, expired.1),
        other => OAuthError::new(
            "invalid_grant",
            format!("the {purpose} is not valid ({other})"),
        ),
    })
}

/// The login session's ids still in force?
fn session_live(gate: &Gate, grant: &SessionGrant) -> Result<(), OAuthError> {
    let revoked = |id: &str| !id.is_empty() && gate.revocations().contains(id);
    if revoked(&grant.sid) || revoked(&grant.psid) {
        return Err(OAuthError::new(
            "invalid_grant",
            "the login session has ended (revoked, or logged out in the browser); run `kubegate login` again",
        ));
    }
    Ok(())
}

async fn by_code(
    gate: &Gate,
    state: &LoginState,
    form: &TokenForm,
    client: &str,
    audit: &mut AuditContext,
) -> Result<Issued, OAuthError> {
    let claims: CodeClaims = open(
        gate,
        "code",
        form.code.as_deref(),
        (
            "invalid_grant",
            "the authorization code has expired; run `kubegate login` again",
        ),
    )?;
    audit.event.user = claims.grant.sub.clone();
    let verifier = form.code_verifier.as_deref().unwrap_or("");
    if !pkce_text(verifier)
        || !constant_time_eq(
            challenge_of(verifier).as_bytes(),
            claims.challenge.as_bytes(),
        )
    {
        return Err(OAuthError::new(
            "invalid_grant",
            "code_verifier does not match the code_challenge of this login (PKCE)",
        ));
    }
    if form.redirect_uri.as_deref() != Some(claims.redirect_uri.as_str()) {
        return Err(OAuthError::new(
            "invalid_grant",
            "redirect_uri is not the one the code was issued for",
        ));
    }
    session_live(gate, &claims.grant)?;
    // good once, on every replica
    if !state
        .token_store
        .claim_id(&format!("code:{}", claims.jti), claims.exp + 1)
        .await
        .map_err(unavailable)?
    {
        return Err(OAuthError::new(
            "invalid_grant",
            "this authorization code was used already; run `kubegate login` again",
        ));
    }
    let mut grant = claims.grant;
    grant.client = client.to_string();
    start_session(
        gate,
        state,
        grant,
        "logged in through the browser (authorization code)",
    )
    .await
}

/// A new kubectl login session for `grant`: its record, a refresh credential, and an
/// access token.
async fn start_session(
    gate: &Gate,
    state: &LoginState,
    mut grant: SessionGrant,
    how: &str,
) -> Result<Issued, OAuthError> {
    let now = epoch_now();
    if grant.session_exp <= now {
        return Err(OAuthError::new(
            "invalid_grant",
            "the browser session of this login has ended; log in again",
        ));
    }
    grant.sid = uuid::Uuid::new_v4().to_string();
    state
        .token_store
        .add(&TokenRecord {
            id: grant.sid.clone(),
            user: grant.sub.clone(),
            name: format!("kubectl login: {}", grant.client),
            created_at: now,
            expires_at: grant.session_exp,
            revoked_at: None,
            session: true,
        })
        .await
        .map_err(unavailable)?;
    let reason = format!(
        "{how}; kubectl login session {} for \"{}\"",
        grant.sid, grant.client
    );
    issue(gate, state, grant, reason)
}

/// A refresh credential and an access token for `grant`'s session.
fn issue(
    gate: &Gate,
    state: &LoginState,
    grant: SessionGrant,
    reason: String,
) -> Result<Issued, OAuthError> {
    let failed = |e: String| {
        OAuthError::new("server_error", e).with_status(StatusCode::INTERNAL_SERVER_ERROR)
    };
    let refresh = RefreshClaims {
        exp: grant.session_exp,
        jti: uuid::Uuid::new_v4().to_string(),
        grant: grant.clone(),
    };
    let refresh_token = gate.tokens().seal("refresh", &refresh).map_err(failed)?;
    let access = gate
        .tokens()
        .issue_for_session(&grant, state.kubectl.token_ttl)
        .map_err(failed)?;
    Ok(Issued {
        grant,
        reason,
        refresh_token,
        access,
    })
}

async fn by_refresh(
    gate: &Gate,
    state: &LoginState,
    form: &TokenForm,
    audit: &mut AuditContext,
) -> Result<Issued, OAuthError> {
    let claims: RefreshClaims = open(
        gate,
        "refresh",
        form.refresh_token.as_deref(),
        (
            "invalid_grant",
            "the login session has ended; run `kubegate login` again",
        ),
    )?;
    let grant = claims.grant;
    audit.event.user = grant.sub.clone();
    if !state.kubectl.limits.refresh(&grant.sid) {
        return Err(OAuthError::new(
            "slow_down",
            format!(
                "this login session refreshed more than {REFRESHES_PER_MINUTE} times in a minute; wait a minute"
            ),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS));
    }
    session_live(gate, &grant)?;
    let fresh = state
        .token_store
        .claim_id(&format!("refresh:{}", claims.jti), claims.exp + 1)
        .await
        .map_err(unavailable)?;
    if !fresh {
        // a rotated credential came back: someone holds a copy. The whole session goes.
        if let Err(e) = state.token_store.revoke(&grant.sub, &grant.sid).await {
            log::error!(
                "the kubectl login session {} could not be revoked: {e}",
                grant.sid
            );
            if let Err(e) = state
                .token_store
                .revoke_id(&grant.sid, grant.session_exp)
                .await
            {
                log::error!("nor its id: {e}");
            }
        }
        gate.revocations().insert(&grant.sid);
        log::warn!(
            "a used refresh credential of {}'s kubectl login session {} came back: the session is revoked",
            grant.sub,
            grant.sid
        );
        return Err(OAuthError::new(
            "invalid_grant",
            "this refresh credential was used before (by another client?), so the whole kubectl \
             login session is revoked; run `kubegate login` again",
        ));
    }
    let reason = format!("refreshed kubectl login session {}", grant.sid);
    issue(gate, state, grant, reason)
}

async fn by_device(
    gate: &Gate,
    state: &LoginState,
    form: &TokenForm,
    audit: &mut AuditContext,
) -> Result<Issued, OAuthError> {
    let claims: DeviceClaims = open(
        gate,
        "device",
        form.device_code.as_deref(),
        (
            "expired_token",
            "the device code has expired; run `kubegate login` again",
        ),
    )?;
    if !state.kubectl.limits.poll(&claims.jti) {
        return Err(OAuthError::new(
            "slow_down",
            format!("poll at most every {DEVICE_INTERVAL} seconds"),
        ));
    }
    let login = state
        .token_store
        .get_grant(&device_key(&claims.user_code))
        .await
        .map_err(unavailable)?
        .and_then(|text| serde_json::from_str::<DeviceLogin>(&text).ok());
    match login {
        None => Err(OAuthError::new(
            "expired_token",
            "the device login has expired; run `kubegate login` again",
        )),
        Some(DeviceLogin::Pending { .. }) => Err(OAuthError::new(
            "authorization_pending",
            "waiting for the person to confirm the code in a browser",
        )),
        Some(DeviceLogin::Denied { by }) => {
            audit.event.user = by;
            Err(OAuthError::new(
                "access_denied",
                "the login was refused in the browser",
            ))
        }
        Some(DeviceLogin::Approved { grant }) => {
            audit.event.user = grant.sub.clone();
            session_live(gate, &grant)?;
            if !state
                .token_store
                .claim_id(&format!("device-used:{}", claims.jti), claims.exp + 1)
                .await
                .map_err(unavailable)?
            {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "this device code was used already; run `kubegate login` again",
                ));
            }
            start_session(gate, state, grant, "logged in with a device code").await
        }
    }
}

fn device_key(user_code: &str) -> String {
    format!("device:{user_code}")
}

/// A user code as typed: letters only, upper case, `XXXX-XXXX`.
fn normalize_user_code(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (letters.len() == 8 && letters.bytes().all(|b| USER_CODE_LETTERS.contains(&b)))
        .then(|| format!("{}-{}", &letters[..4], &letters[4..]))
}

fn new_user_code() -> String {
    let mut raw = [0u8; 8];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut raw)
        .expect("the system's random source works");
    let letters: String = raw
        .iter()
        // 256 % 20 = 16: the first 16 letters are a little likelier; fine for a code that
        // is good for ten minutes and needs a logged-in browser to be confirmed
        .map(|b| USER_CODE_LETTERS[*b as usize % USER_CODE_LETTERS.len()] as char)
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A device login's start (form-encoded; both fields optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct DeviceForm {
    /// The client's name, shown in the token list.
    client: Option<String>,
    /// The login provider the verification page should use.
    provider: Option<String>,
}

/// What `POST /auth/cli/device` answers (RFC 8628 3.2).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `device_start` writes
struct DeviceStarted {
    /// What the client polls `POST /auth/cli/token` with.
    device_code: String,
    /// What the person types at the verification page.
    user_code: String,
    /// The verification page.
    verification_uri: String,
    /// The verification page with the code filled in.
    verification_uri_complete: String,
    /// Seconds the codes live.
    expires_in: u64,
    /// Seconds between polls.
    interval: u64,
}

/// `POST /auth/cli/device` (form-encoded, possibly empty): a device login starts.
#[utoipa::path(
    post,
    path = "/auth/cli/device",
    tag = "kubectl",
    operation_id = "cliDevice",
    request_body(content = DeviceForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The codes", body = DeviceStarted),
        (status = 400, description = "The client's name is not valid", body = OAuthErrorBody),
        (status = 429, description = "Too many requests (Retry-After)", body = OAuthErrorBody),
        (status = 503, description = "The token store is unavailable", body = OAuthErrorBody),
    ),
    security(()),
)]
pub(crate) async fn device_start(
    req: HttpRequest,
    body: web::Bytes,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let form = parse_form::<DeviceForm>(&body).unwrap_or_default();
    let client = match client_name(form.client.as_deref()) {
        Ok(client) => client,
        Err(e) => return OAuthError::new("invalid_request", e).response(),
    };
    let user_code = new_user_code();
    let exp = epoch_now() + DEVICE_SECS;
    let claims = DeviceClaims {
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
        user_code: user_code.clone(),
        client: client.clone(),
    };
    let device_code = match gate.tokens().seal("device", &claims) {
        Ok(code) => code,
        Err(e) => {
            return OAuthError::new("server_error", e)
                .with_status(StatusCode::INTERNAL_SERVER_ERROR)
                .response()
        }
    };
    let pending =
        serde_json::to_string(&DeviceLogin::Pending { client }).expect("a device login serializes");
    if let Err(e) = state
        .token_store
        .put_grant(&device_key(&user_code), &pending, exp)
        .await
    {
        return unavailable(e).response();
    }
    let verify = format!("{}/auth/cli/device/verify", state.login.base_url(&req));
    let provider = form
        .provider
        .filter(|p| state.login.names().iter().any(|(n, _)| n == p))
        .map(|p| format!("&provider={p}"))
        .unwrap_or_default();
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verify,
            "verification_uri_complete": format!("{verify}?user_code={user_code}{provider}"),
            "expires_in": DEVICE_SECS,
            "interval": DEVICE_INTERVAL,
        }))
}

/// The query of `GET /auth/cli/device/verify`.
#[derive(Deserialize)]
pub(crate) struct VerifyQuery {
    user_code: Option<String>,
    provider: Option<String>,
}

/// `GET /auth/cli/device/verify`: the person types (or checks) the code and confirms (a
/// browser page).
#[utoipa::path(
    get,
    path = "/auth/cli/device/verify",
    tag = "kubectl",
    operation_id = "cliDeviceVerify",
    params(
        ("user_code" = Option<String>, Query, description = "The code shown by `kubegate login`"),
        ("provider" = Option<String>, Query, description = "The login provider to use"),
    ),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 302, description = "To the login first"),
    ),
    security(()),
)]
pub(crate) async fn device_page(
    req: HttpRequest,
    query: web::Query<VerifyQuery>,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let user = match session::user(&req) {
        Some(user) if !gate.revocations().contains(&user.sid) => user,
        _ => return to_login(&req, &state, query.provider.as_deref()),
    };
    let Some(code) = query.user_code.as_deref().filter(|c| !c.is_empty()) else {
        return page(
            StatusCode::OK,
            "Confirm a kubectl login",
            "<form method=\"get\" action=\"/auth/cli/device/verify\">\
             <p><label>The code your terminal shows <input id=\"user_code\" name=\"user_code\" \
             autocomplete=\"off\" required></label></p>\
             <p><button id=\"next\" type=\"submit\">Next</button></p></form>",
        );
    };
    let pending = match pending_login(&state, code).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    let (user_code, client) = pending;
    page(
        StatusCode::OK,
        "Confirm a kubectl login",
        &format!(
            "<p><strong>{client}</strong> asks to use kubectl as <strong>{u}</strong>. \
             Confirm only if you started <code>kubegate login</code> yourself and your \
             terminal shows the code <strong>{code}</strong>.</p>\
             <form method=\"post\" action=\"/auth/cli/device/verify\">\
             <input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <p><button id=\"approve\" name=\"decision\" value=\"approve\" type=\"submit\">Allow</button> \
             <button id=\"deny\" name=\"decision\" value=\"deny\" type=\"submit\">Refuse</button></p></form>",
            client = escape(&client),
            u = escape(&user.user),
            code = escape(&user_code),
            csrf = escape(&user.csrf),
        ),
    )
}

/// The waiting device login of a typed code, or the page that says why there is none.
async fn pending_login(state: &LoginState, typed: &str) -> Result<(String, String), HttpResponse> {
    let unknown = || {
        page(
            StatusCode::NOT_FOUND,
            "Unknown code",
            "<p>This code is unknown, expired or used. Check the code your terminal shows, \
             or run <code>kubegate login --no-browser</code> again.</p>\
             <p><a href=\"/auth/cli/device/verify\">Type the code again</a></p>",
        )
    };
    let code = normalize_user_code(typed).ok_or_else(unknown)?;
    match state.token_store.get_grant(&device_key(&code)).await {
        Ok(Some(text)) => match serde_json::from_str::<DeviceLogin>(&text) {
            Ok(DeviceLogin::Pending { client }) => Ok((code, client)),
            _ => Err(unknown()),
        },
        Ok(None) => Err(unknown()),
        Err(e) => Err(page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            &format!(
                "<p>The token store is unavailable: {}</p>",
                escape(&e.to_string())
            ),
        )),
    }
}

/// The verification page's form.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ConfirmForm {
    /// The code.
    user_code: String,
    /// The session's CSRF token.
    csrf: String,
    /// `approve` or `deny`.
    decision: String,
}

/// `POST /auth/cli/device/verify`: the person's answer (a browser form, with the
/// session cookie).
#[utoipa::path(
    post,
    path = "/auth/cli/device/verify",
    tag = "kubectl",
    operation_id = "cliDeviceConfirm",
    request_body(content = ConfirmForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The result", content_type = "text/html", body = String),
        (status = 400, description = "Unknown or expired code, or a bad form", content_type = "text/html", body = String),
        (status = 403, description = "Not logged in, or the form's CSRF token is wrong", content_type = "text/html", body = String),
    ),
    security(("cookie" = [])),
)]
pub(crate) async fn device_confirm(
    req: HttpRequest,
    form: web::Form<ConfirmForm>,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let Some(user) = session::user(&req).filter(|u| !gate.revocations().contains(&u.sid)) else {
        return page(
            StatusCode::UNAUTHORIZED,
            "Log in first",
            "<p>Your browser session has ended. <a href=\"/auth/cli/device/verify\">Start again</a>.</p>",
        );
    };
    let (user_code, client) = match pending_login(&state, &form.user_code).await {
        Ok(pending) => pending,
        Err(response) => return response,
    };
    let mut audit = audit(&gate, &req, "approve", &client);
    audit.event.user = user.user.clone();
    // the form's own proof (the session's CSRF token), or the header's
    if !constant_time_eq(form.csrf.as_bytes(), user.csrf.as_bytes())
        && !session::csrf_ok(&req, &user)
    {
        let e = OAuthError::new(
            "access_denied",
            "the form did not come from this session's page",
        )
        .with_status(StatusCode::FORBIDDEN);
        finish(&gate, audit, &Err(clone_error(&e)));
        return page(
            StatusCode::FORBIDDEN,
            "Refused",
            &format!("<p>{}</p>", escape(&e.description)),
        );
    }
    let approve = form.decision == "approve";
    let login = if approve {
        DeviceLogin::Approved {
            grant: grant_of(&user, &client),
        }
    } else {
        DeviceLogin::Denied {
            by: user.user.clone(),
        }
    };
    let text = serde_json::to_string(&login).expect("a device login serializes");
    // the device login keeps its end: ten minutes from its start, at most
    if let Err(e) = state
        .token_store
        .put_grant(&device_key(&user_code), &text, epoch_now() + DEVICE_SECS)
        .await
    {
        let e = unavailable(e);
        finish(&gate, audit, &Err(clone_error(&e)));
        return page(
            e.status,
            "Try again",
            &format!("<p>{}</p>", escape(&e.description)),
        );
    }
    let reason = if approve {
        format!("device login {user_code} of \"{client}\" confirmed")
    } else {
        format!("device login {user_code} of \"{client}\" refused")
    };
    finish(&gate, audit, &Ok(reason));
    page(
        StatusCode::OK,
        if approve {
            "kubectl login confirmed"
        } else {
            "kubectl login refused"
        },
        "<p>You can close this page and return to your terminal.</p>",
    )
}

/// Per-credential limits, on this replica: refreshes per login session, and the device
/// flow's polling interval per device code (`slow_down` when polled faster). So people
/// behind one NAT address are not limited together, and one credential cannot be
/// hammered from many addresses.
#[derive(Default)]
struct CredentialLimits {
    entries: Mutex<HashMap<String, (Instant, u32)>>,
}

impl CredentialLimits {
    /// Entries kept at most; past it, those older than a minute go.
    const MAX: usize = 100_000;

    fn refresh(&self, sid: &str) -> bool {
        self.count(&format!("r:{sid}"), |(since, n), now| {
            if now.duration_since(*since) >= Duration::from_secs(60) {
                (*since, *n) = (now, 0);
            }
            *n += 1;
            *n <= REFRESHES_PER_MINUTE
        })
    }

    fn poll(&self, device: &str) -> bool {
        self.count(&format!("d:{device}"), |(last, n), now| {
            *n += 1;
            // the first poll passes; then one per interval, with a second of slack
            let ok =
                *n == 1 || now.duration_since(*last) >= Duration::from_secs(DEVICE_INTERVAL - 1);
            *last = now;
            ok
        })
    }

    fn count(&self, key: &str, f: impl FnOnce(&mut (Instant, u32), Instant) -> bool) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::MAX {
            entries.retain(|_, (since, _)| now.duration_since(*since) < Duration::from_secs(60));
        }
        let entry = entries.entry(key.to_string()).or_insert((now, 0));
        f(entry, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_redirects() {
        for good in [
            "http://127.0.0.1:8000/callback",
            "http://[::1]:8000/callback",
            "http://localhost:1234/",
        ] {
            assert!(loopback_redirect(good), "{good}");
        }
        for bad in [
            "https://127.0.0.1:8000/callback",
            "http://127.0.0.1/callback",
            "http://evil.example:8000/callback",
            "http://127.0.0.1.evil.example:80/",
            "http://user@127.0.0.1:8000/",
            "http://127.0.0.1:8000/#frag",
            "//127.0.0.1:8000/",
            "javascript:alert(1)",
        ] {
            assert!(!loopback_redirect(bad), "{bad}");
        }
    }

    #[test]
    fn pkce_s256() {
        // the challenge as Python's hashlib and base64.urlsafe_b64encode make it
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFREjXk";
        assert_eq!(
            challenge_of(verifier),
            "ncc7ZhWd5eYNpE_-AnpLd0HFdrU0cZJIiofyYzwdAZk"
        );
        assert!(pkce_text(verifier));
        assert!(!pkce_text("short"));
        assert!(!pkce_text(&format!("{verifier}!")));
    }

    #[test]
    fn user_codes_are_typed_loosely_and_checked_strictly() {
        let code = new_user_code();
        assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalize_user_code(&code.to_lowercase()).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(
            normalize_user_code("bcdf ghjk").as_deref(),
            Some("BCDF-GHJK")
        );
        assert_eq!(
            normalize_user_code("ABCD-EFGH"),
            None,
            "vowels are never in a code"
        );
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
    }

    #[test]
    fn limits_per_credential() {
        let limits = CredentialLimits::default();
        for _ in 0..REFRESHES_PER_MINUTE {
            assert!(limits.refresh("s1"));
        }
        assert!(!limits.refresh("s1"), "the eleventh in a minute");
        assert!(
            limits.refresh("s2"),
            "another session is not limited with it"
        );
        assert!(limits.poll("d1"), "the first poll");
        assert!(!limits.poll("d1"), "at once again: slow down");
        assert!(limits.poll("d2"));
    }
}
