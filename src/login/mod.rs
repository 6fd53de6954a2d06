//! Browser login: `GET /auth/{provider}/login?redirect=/local/path` starts it,
//! `GET /auth/{provider}/callback` (OAuth2) or `POST /auth/{provider}/login` (the LDAP
//! form) finishes it with a session cookie and a redirect to the requested local path;
//! `POST /auth/logout` ends it; `GET /auth/session` says who is logged in.
//!
//! - GitHub and OIDC: the authorization-code flow with PKCE; the `state` is kept in the
//!   browser's session and must come back unchanged, once (a used state joins the
//!   revocations, so a copy of the session cookie cannot bring it back); OIDC adds a nonce
//!   that must be in the ID token (see [`oauth`]).
//! - LDAP: a form that posts the user name and password with a per-login token kept in
//!   the session (so that another site cannot log a browser in as someone else); kubegate
//!   binds as the user (see [`ldap`]).
//!
//! The user is `{provider}:{name}` (`github:alice`): names from two providers never meet.
//! At login, [`crate::config::login::RoleRule`]s give org roles from the provider's groups.
//! Every login, whatever its end, is audited; failures end on a page (or JSON, for
//! clients that ask for it) that says what went wrong, never a panic.

pub mod kubectl;
pub mod ldap;
pub mod oauth;
pub(crate) mod pages;
mod roles;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Recipient;
use actix_session::{Session, SessionExt};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::auditor::AuditDecision;
use kubegate_actors::policy::Reload;
use kubegate_actors::store::{epoch_now, MemberStore, TokenStore};
use serde::Deserialize;
use serde_json::json;

use crate::config::login::{LoginConfig, ProviderConfig, RoleRule, SessionConfig};
use crate::gate::audit::AuditContext;
use crate::gate::session::{self, PendingLogin, SessionUser};
use crate::gate::{wants_html, Gate};

/// Why the login providers could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A provider's settings do not work.
    #[error("login.providers.{provider}: {source}")]
    Provider {
        /// The provider's name.
        provider: String,
        /// What does not work.
        #[source]
        source: Box<SetupError>,
    },
    /// The CA file trusted for a provider's certificate is unusable.
    #[error("ca_file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The TLS settings could not be made.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A client secret could not be read (the message names the key and the file).
    #[error("{0}")]
    Secret(#[from] crate::config::ConfigError),
}

/// Why a login failed; each becomes a status and a message for the person.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No provider of that name.
    #[error("there is no login provider named \"{0}\"")]
    UnknownProvider(String),
    /// The redirect target is not a local path.
    #[error("the redirect target must be a local path such as /pipeline/... (got \"{0}\")")]
    BadRedirect(String),
    /// The callback's state is missing, wrong or used.
    #[error("this login is not the one this browser started, or it expired; start again")]
    BadState,
    /// The user or provider refused.
    #[error("the login was refused: {0}")]
    Denied(String),
    /// Wrong user name or password.
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// The provider's answer does not check out.
    #[error("the provider's answer is not valid: {0}")]
    Invalid(String),
    /// The provider cannot be reached or answers badly.
    #[error("the login provider is unavailable: {0}")]
    Provider(String),
    /// kubegate could not keep the session.
    #[error("the session could not be saved: {0}")]
    Session(#[from] session::SessionError),
    /// The token store could not record the used state, so the login cannot be made
    /// single-use on every replica.
    #[error("the login could not be recorded: {0}")]
    Store(#[source] kubegate_actors::store::StoreError),
}

impl LoginError {
    fn status(&self) -> StatusCode {
        match self {
            LoginError::UnknownProvider(_) => StatusCode::NOT_FOUND,
            LoginError::BadRedirect(_) | LoginError::BadState => StatusCode::BAD_REQUEST,
            LoginError::Denied(_) => StatusCode::FORBIDDEN,
            LoginError::InvalidCredentials | LoginError::Invalid(_) => StatusCode::UNAUTHORIZED,
            LoginError::Provider(_) => StatusCode::BAD_GATEWAY,
            LoginError::Session(_) => StatusCode::INTERNAL_SERVER_ERROR,
            LoginError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

enum Provider {
    Github(oauth::Github),
    Oidc(oauth::Oidc),
    Ldap(crate::config::ldap::LdapSettings),
}

/// What browser login works with: the providers, and the stores a login changes.
pub struct LoginState {
    /// The providers and rules.
    pub login: Arc<Login>,
    /// Memberships, which role rules write.
    pub members: Arc<dyn MemberStore>,
    /// The policy enforcer, reloaded after role rules granted a role.
    pub policy_reload: Recipient<Reload>,
    /// Token records and revocations: a logout ends the session on every replica.
    pub token_store: Arc<dyn TokenStore>,
    /// kubectl single sign-on's settings and limits.
    pub kubectl: kubectl::KubectlLogins,
}

/// The configured providers and rules.
pub struct Login {
    providers: BTreeMap<String, Provider>,
    /// Where browsers without a session are sent to log in.
    pub default_provider: Option<String>,
    rules: Vec<RoleRule>,
    lifetime: std::time::Duration,
    public_url: Option<String>,
}

/// How long a started login may take before its state is no longer accepted.
const LOGIN_WINDOW_SECS: u64 = 600;

impl Login {
    /// The providers of `config`, with their secrets read (from files or the
    /// environment).
    pub fn new(
        config: &LoginConfig,
        sessions: &SessionConfig,
        public_url: Option<&str>,
    ) -> Result<Login, SetupError> {
        let mut providers = BTreeMap::new();
        for (name, provider) in &config.providers {
            let of_provider = |source: SetupError| SetupError::Provider {
                provider: name.clone(),
                source: Box::new(source),
            };
            let secret = |file| crate::config::login::client_secret(name, file);
            let built = match provider {
                ProviderConfig::Github(g) => Provider::Github(
                    oauth::Github::new(g.clone(), secret(g.client_secret_file.as_ref())?)
                        .map_err(of_provider)?,
                ),
                ProviderConfig::Oidc(o) => Provider::Oidc(
                    oauth::Oidc::new(o.clone(), secret(o.client_secret_file.as_ref())?)
                        .map_err(of_provider)?,
                ),
                ProviderConfig::Ldap(l) => Provider::Ldap(l.clone()),
            };
            providers.insert(name.clone(), built);
        }
        let default_provider = match &config.default_provider {
            Some(name) => Some(name.clone()),
            None if providers.len() == 1 => providers.keys().next().cloned(),
            None => None,
        };
        Ok(Login {
            providers,
            default_provider,
            rules: config.role_rules.clone(),
            lifetime: sessions.lifetime,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
        })
    }

    /// The providers' names and kinds, for the landing page and `GET /auth/providers`.
    pub fn names(&self) -> Vec<(String, &'static str)> {
        self.providers
            .iter()
            .map(|(name, p)| {
                let kind = match p {
                    Provider::Github(_) => "github",
                    Provider::Oidc(_) => "oidc",
                    Provider::Ldap(_) => "ldap",
                };
                (name.clone(), kind)
            })
            .collect()
    }

    fn provider(&self, name: &str) -> Result<&Provider, LoginError> {
        self.providers
            .get(name)
            .ok_or_else(|| LoginError::UnknownProvider(name.to_string()))
    }

    /// The callback URL of provider `name`: under `server.public_url` when set, else
    /// under the scheme and host the browser used.
    fn callback(&self, req: &HttpRequest, name: &str) -> String {
        format!("{}/auth/{name}/callback", self.base_url(req))
    }

    /// kubegate's URL: `server.public_url` when set, else the scheme and host the client
    /// used.
    pub fn base_url(&self, req: &HttpRequest) -> String {
        crate::gate::redirect::base_url(self.public_url.as_deref(), req)
    }
}

/// An audit event for a login step.
fn audit(gate: &Gate, req: &HttpRequest, provider: &str) -> AuditContext {
    let mut audit = gate.record(req);
    audit.event.path = req.path().to_string();
    audit.event.attributes = RequestAttributes {
        verb: "login".into(),
        is_resource: true,
        api_group: "kubegate".into(),
        resource: "sessions".into(),
        name: provider.to_string(),
        ..Default::default()
    };
    audit
}

/// A failed login: audited, counted, and told to the person.
fn failed(
    req: &HttpRequest,
    gate: &Gate,
    provider: &str,
    mut audit: AuditContext,
    error: LoginError,
) -> HttpResponse {
    let status = error.status();
    let message = error.to_string();
    audit.event.decision = if status.is_server_error() {
        AuditDecision::Error
    } else {
        AuditDecision::Deny
    };
    audit.event.reason = message.clone();
    audit.event.error = Some(message.clone());
    crate::metrics::login(provider, outcome(&error));
    log::info!("login with {provider} failed: {message}");
    let response = if wants_html(req) {
        pages::page(
            status,
            "Login failed",
            &format!(
                "<p>{}</p><p><a href=\"/\">Back to the start</a></p>",
                pages::escape(&message)
            ),
        )
    } else {
        HttpResponse::build(status).json(json!({
            "code": status.as_u16(),
            "message": message,
            "error": status.canonical_reason().unwrap_or("Error"),
        }))
    };
    audit.finish(gate.auditor(), status.as_u16(), 0, 0);
    response
}

fn outcome(error: &LoginError) -> &'static str {
    match error {
        LoginError::UnknownProvider(_) | LoginError::BadRedirect(_) => "bad_request",
        LoginError::BadState => "bad_state",
        LoginError::Denied(_) => "denied",
        LoginError::InvalidCredentials => "invalid_credentials",
        LoginError::Invalid(_) => "invalid_answer",
        LoginError::Provider(_) => "provider_unavailable",
        LoginError::Session(_) | LoginError::Store(_) => "error",
    }
}

/// The query of `GET /auth/{provider}/login`.
#[derive(Deserialize)]
pub(crate) struct StartQuery {
    #[serde(default)]
    redirect: Option<String>,
}

/// The checked redirect target of a login (default: the landing page).
fn redirect_target(asked: Option<&str>) -> Result<String, LoginError> {
    match asked {
        None | Some("") => Ok("/".into()),
        Some(target) => crate::gate::redirect::local_path(target)
            .map(str::to_string)
            .ok_or_else(|| LoginError::BadRedirect(target.chars().take(200).collect())),
    }
}

fn provider_name(req: &HttpRequest) -> String {
    req.match_info()
        .get("provider")
        .unwrap_or_default()
        .to_string()
}

/// `GET /auth/{provider}/login?redirect=...`: to the provider, or the LDAP form
/// (a browser page).
#[utoipa::path(
    get,
    path = "/auth/{provider}/login",
    tag = "login",
    operation_id = "login",
    params(("provider" = String, Path, description = "A provider's name (GET /auth/providers)"),
        ("redirect" = Option<String>, Query, description = "Where to go after the login: a path of kubegate")),
    responses(
        (status = 302, description = "To the provider (OAuth2, OIDC)"),
        (status = 200, description = "The login form (LDAP)", content_type = "text/html", body = String),
        (status = 400, description = "No such provider, or a redirect that is not kubegate's", content_type = "text/html", body = String),
    ),
    security(()),
)]
pub(crate) async fn start(
    req: HttpRequest,
    query: web::Query<StartQuery>,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let name = provider_name(&req);
    let audit = audit(&gate, &req, &name);
    match begin(&req, &state, &name, query.redirect.as_deref()).await {
        // not audited: nothing has happened yet (the end of the login is)
        Ok(response) => response,
        Err(e) => failed(&req, &gate, &name, audit, e),
    }
}

async fn begin(
    req: &HttpRequest,
    state: &LoginState,
    name: &str,
    redirect: Option<&str>,
) -> Result<HttpResponse, LoginError> {
    let provider = state.login.provider(name)?;
    let redirect = redirect_target(redirect)?;
    let session = req.get_session();
    let callback = state.login.callback(req, name);
    let (location, pending) = match provider {
        Provider::Github(github) => {
            let auth = github.authorize(&callback)?;
            (auth.url, (auth.state, auth.pkce_verifier, auth.nonce))
        }
        Provider::Oidc(oidc) => {
            let auth = oidc.authorize(&callback).await?;
            (auth.url, (auth.state, auth.pkce_verifier, auth.nonce))
        }
        Provider::Ldap(_) => {
            let token = session::random_token();
            remember(&session, name, &token, "", "", &redirect)?;
            return Ok(pages::ldap_page(name, &token, &redirect, None));
        }
    };
    remember(
        &session, name, &pending.0, &pending.1, &pending.2, &redirect,
    )?;
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header(("Cache-Control", "no-store"))
        .finish())
}

fn remember(
    session: &Session,
    provider: &str,
    state: &str,
    verifier: &str,
    nonce: &str,
    redirect: &str,
) -> Result<(), LoginError> {
    session::set_pending(
        session,
        &PendingLogin {
            provider: provider.to_string(),
            state: state.to_string(),
            pkce_verifier: verifier.to_string(),
            nonce: nonce.to_string(),
            redirect: redirect.to_string(),
            started_at: epoch_now(),
        },
    )
    .map_err(LoginError::Session)
}

/// The login in progress of this browser, if it is for `provider`, carries `state`, is
/// recent, and its state was never used. Taken out of the session either way.
///
/// A state is good once on the server's side too: with the cookie session store the
/// pending login is in the browser's cookie, and a copy of the cookie from before the
/// callback would carry it again. So a used state's id (a hash, never the state) joins the
/// revocations until the login window ends: refused at once here, and on every replica
/// through the token store, whose check-and-set says which request used it first.
async fn claim_pending(
    session: &Session,
    provider: &str,
    state: &str,
    gate: &Gate,
    token_store: &dyn TokenStore,
) -> Result<PendingLogin, LoginError> {
    let pending = session::take_pending(session).ok_or(LoginError::BadState)?;
    let fresh = epoch_now().saturating_sub(pending.started_at) <= LOGIN_WINDOW_SECS;
    let same = pending.provider == provider
        && session::constant_time_eq(pending.state.as_bytes(), state.as_bytes());
    if !(fresh && same && !state.is_empty()) {
        return Err(LoginError::BadState);
    }
    let id = used_state_id(state);
    if !gate.revocations().insert_new(&id) {
        return Err(LoginError::BadState);
    }
    // past the window the state is refused as stale anyway: the entry can go
    let expires_at = pending.started_at + LOGIN_WINDOW_SECS + 1;
    match token_store.claim_id(&id, expires_at).await {
        Ok(true) => Ok(pending),
        Ok(false) => Err(LoginError::BadState),
        // without the record another replica would take the state again: no login
        Err(e) => Err(LoginError::Store(e)),
    }
}

/// The revocation id of a used login state: `login-state:` and the state's SHA-256, so
/// that the state itself is never written or logged.
fn used_state_id(state: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, state.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("login-state:{hex}")
}

/// The query of a provider's callback.
#[derive(Deserialize)]
pub(crate) struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /auth/{provider}/callback`: the provider's answer (a browser page).
#[utoipa::path(
    get,
    path = "/auth/{provider}/callback",
    tag = "login",
    operation_id = "loginCallback",
    params(("provider" = String, Path, description = "A provider's name (GET /auth/providers)"),
        ("code" = Option<String>, Query, description = "The provider's code"),
        ("state" = Option<String>, Query, description = "The login's state")),
    responses(
        (status = 302, description = "Logged in: to where the login was asked from; the session cookie is set"),
        (status = 403, description = "The login is refused", content_type = "text/html", body = String),
    ),
    security(()),
)]
pub(crate) async fn callback(
    req: HttpRequest,
    query: web::Query<Callback>,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let name = provider_name(&req);
    let audit = audit(&gate, &req, &name);
    let result = async {
        let provider = state.login.provider(&name)?;
        let session = req.get_session();
        let pending = claim_pending(
            &session,
            &name,
            query.state.as_deref().unwrap_or(""),
            &gate,
            state.token_store.as_ref(),
        )
        .await?;
        if let Some(error) = &query.error {
            let detail = query
                .error_description
                .as_deref()
                .map(|d| format!(" ({})", d.chars().take(300).collect::<String>()))
                .unwrap_or_default();
            return Err(LoginError::Denied(format!(
                "the provider answered \"{}\"{detail}",
                error.chars().take(100).collect::<String>()
            )));
        }
        let code = query
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| LoginError::Invalid("the callback has no code".into()))?;
        let callback = state.login.callback(&req, &name);
        let user = match provider {
            Provider::Github(github) => {
                github
                    .finish(&callback, code, &pending.pkce_verifier)
                    .await?
            }
            Provider::Oidc(oidc) => {
                oidc.finish(&callback, code, &pending.pkce_verifier, &pending.nonce)
                    .await?
            }
            Provider::Ldap(_) => {
                return Err(LoginError::Invalid(
                    "an LDAP login ends with its form, not a callback".into(),
                ))
            }
        };
        Ok((user, pending.redirect))
    }
    .await;
    match result {
        Ok((user, redirect)) => logged_in(&req, &gate, &state, &name, user, &redirect, audit).await,
        Err(e) => failed(&req, &gate, &name, audit, e),
    }
}

/// The LDAP login form.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct LdapForm {
    /// The LDAP user name.
    #[serde(default)]
    username: String,
    /// Their password.
    #[serde(default)]
    password: String,
    /// The login's state, from the form.
    #[serde(default)]
    state: String,
}

/// `POST /auth/{provider}/login`: the LDAP form's answer (a browser page).
#[utoipa::path(
    post,
    path = "/auth/{provider}/login",
    tag = "login",
    operation_id = "ldapLogin",
    params(("provider" = String, Path, description = "A provider's name (GET /auth/providers)")),
    request_body(content = LdapForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 302, description = "Logged in: to where the login was asked from; the session cookie is set"),
        (status = 401, description = "Wrong user or password", content_type = "text/html", body = String),
    ),
    security(()),
)]
pub(crate) async fn ldap_form(
    req: HttpRequest,
    form: web::Form<LdapForm>,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let name = provider_name(&req);
    let mut audit = audit(&gate, &req, &name);
    let form = form.into_inner();
    audit.event.user = form.username.chars().take(100).collect();
    let settings = match state.login.provider(&name) {
        Ok(Provider::Ldap(settings)) => settings,
        Ok(_) => {
            let e = LoginError::Invalid(format!("\"{name}\" is not an LDAP provider"));
            return failed(&req, &gate, &name, audit, e);
        }
        Err(e) => return failed(&req, &gate, &name, audit, e),
    };
    let session = req.get_session();
    let pending = match claim_pending(
        &session,
        &name,
        &form.state,
        &gate,
        state.token_store.as_ref(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return failed(&req, &gate, &name, audit, e),
    };
    match ldap::authenticate(settings, form.username.trim(), &form.password).await {
        Ok(user) => {
            let user = oauth::ProviderUser {
                name: user.username,
                groups: user.groups,
            };
            logged_in(&req, &gate, &state, &name, user, &pending.redirect, audit).await
        }
        Err(ldap::LdapError::InvalidCredentials) => {
            // the form again, with a new token, for another try
            let token = session::random_token();
            if let Err(e) = remember(&session, &name, &token, "", "", &pending.redirect) {
                return failed(&req, &gate, &name, audit, e);
            }
            let error = LoginError::InvalidCredentials;
            audit.event.reason = error.to_string();
            audit.event.error = Some(error.to_string());
            crate::metrics::login(&name, outcome(&error));
            audit.finish(gate.auditor(), 401, 0, 0);
            pages::ldap_page(&name, &token, &pending.redirect, Some(&error.to_string()))
        }
        Err(e) => {
            let error = match e {
                ldap::LdapError::Unavailable(why) => LoginError::Provider(why),
                other => LoginError::Provider(other.to_string()),
            };
            failed(&req, &gate, &name, audit, error)
        }
    }
}

/// The end of a successful login: a new session, the role rules, the audit event, and
/// the redirect.
async fn logged_in(
    req: &HttpRequest,
    gate: &Gate,
    state: &LoginState,
    provider: &str,
    found: oauth::ProviderUser,
    redirect: &str,
    mut audit: AuditContext,
) -> HttpResponse {
    let user = format!("{provider}:{}", found.name);
    audit.event.user = user.clone();
    if !crate::gate::tokens::is_valid_user(&user) {
        let e = LoginError::Invalid(format!(
            "the user name \"{user}\" holds spaces, commas or control characters, or begins with \"system:\""
        ));
        return failed(req, gate, provider, audit, e);
    }
    let session_user = SessionUser {
        user: user.clone(),
        provider: provider.to_string(),
        // Kubernetes' own groups are never taken from a provider
        groups: found
            .groups
            .into_iter()
            .filter(|g| !crate::gate::tokens::is_system_name(g))
            .collect(),
        sid: uuid::Uuid::new_v4().to_string(),
        csrf: session::random_token(),
        expires_at: epoch_now() + state.login.lifetime.as_secs(),
    };
    if let Err(e) = session::log_in(&req.get_session(), &session_user) {
        return failed(req, gate, provider, audit, LoginError::Session(e));
    }
    let granted = roles::apply_role_rules(state, &session_user).await;
    audit.event.decision = AuditDecision::Allow;
    audit.event.reason = if granted.is_empty() {
        "logged in".to_string()
    } else {
        format!("logged in; roles from groups: {}", granted.join(", "))
    };
    crate::metrics::login(provider, "success");
    log::info!("{user} logged in with {provider}");
    audit.finish(gate.auditor(), 303, 0, 0);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, redirect.to_string()))
        .insert_header(("Cache-Control", "no-store"))
        .finish()
}

/// `POST /auth/logout`: ends the session here and, through the revocations, on every
/// replica. A browser's form (`Accept: text/html`) is sent back to `/` (303).
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "login",
    operation_id = "logout",
    responses(
        (status = 200, description = "Logged out", body = LoggedOut),
        (status = 303, description = "Logged out (a browser form): to `/`"),
        (status = 400, description = "Not a browser session (revoke a token with DELETE /pipeline/api/v1/tokens/{id})", body = crate::status::KubernetesStatus),
        (status = 401, description = "No valid credential", body = crate::status::KubernetesStatus),
        (status = 403, description = "Without its X-CSRF-Token", body = crate::status::KubernetesStatus),
    ),
    security(("cookie" = [])),
)]
pub(crate) async fn logout(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<LoginState>,
) -> HttpResponse {
    let mut audit = audit(&gate, &req, "");
    audit.event.attributes.verb = "logout".into();
    let identity = match gate.authenticate(&req) {
        Ok(identity) => identity,
        Err(e) => {
            audit.event.reason = e.message.clone();
            let response = e.response();
            audit.finish(gate.auditor(), e.code.as_u16(), 0, 0);
            return response;
        }
    };
    audit.event.user = identity.user.clone();
    let Some(user) = identity.session else {
        let e = crate::status::StatusError::bad_request(
            "logout ends a browser session; revoke a token with DELETE /pipeline/api/v1/tokens/{id}",
        );
        audit.event.reason = e.message.clone();
        let response = e.response();
        audit.finish(gate.auditor(), 400, 0, 0);
        return response;
    };
    if let Err(e) = state
        .token_store
        .revoke_id(&user.sid, user.expires_at)
        .await
    {
        // the session still ends in this browser; a copy of the cookie would live on
        log::error!(
            "the session of {} could not be revoked everywhere: {e}",
            user.user
        );
    }
    gate.revocations().insert(&user.sid);
    session::log_out(&req.get_session());
    audit.event.decision = AuditDecision::Allow;
    audit.event.reason = "logged out".into();
    audit.finish(gate.auditor(), 200, 0, 0);
    if wants_html(&req) {
        // the landing page's form
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .finish();
    }
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"loggedOut": true, "user": user.user}))
}

/// A login provider.
#[derive(utoipa::ToSchema)]
#[schema(as = Provider)]
#[allow(dead_code)] // what `providers` writes
struct ProviderView {
    /// Its name.
    name: String,
    /// `oidc`, `github` or `ldap`.
    kind: String,
    /// Where a browser logs in: `/auth/{name}/login`.
    login: String,
}

/// Who is logged in.
#[derive(utoipa::ToSchema)]
#[schema(as = Session)]
#[allow(dead_code, non_snake_case)] // what `whoami` writes
struct SessionView {
    /// The user.
    user: String,
    /// The provider they logged in with (null with a bearer token).
    provider: Option<String>,
    /// Their groups (a session only).
    groups: Option<Vec<String>>,
    /// The `X-CSRF-Token` header's value for unsafe requests (a session only).
    csrfToken: Option<String>,
    /// When the session ends, seconds since the epoch (a session only).
    expiresAt: Option<u64>,
}

/// What `POST /auth/logout` answers.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // what `logout` writes
struct LoggedOut {
    /// `true`.
    loggedOut: bool,
    /// Who was logged out.
    user: String,
}

/// `GET /auth/session`: who is logged in, and the CSRF token for unsafe requests.
///
/// With a bearer token, only `user` (and `provider`: null).
#[utoipa::path(
    get,
    path = "/auth/session",
    tag = "login",
    operation_id = "getSession",
    responses(
        (status = 200, description = "Who is logged in", body = SessionView),
        (status = 401, description = "No valid credential", body = crate::status::KubernetesStatus),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn whoami(req: HttpRequest, gate: web::Data<Gate>) -> HttpResponse {
    match gate.authenticate(&req) {
        Ok(crate::gate::Identity {
            session: Some(user),
            ..
        }) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(json!({
                "user": user.user,
                "provider": user.provider,
                "groups": user.groups,
                "csrfToken": user.csrf,
                "expiresAt": user.expires_at,
            })),
        Ok(identity) => HttpResponse::Ok().json(json!({"user": identity.user, "provider": null})),
        Err(e) => e.response(),
    }
}

/// `GET /auth/providers`: the login providers, for a login page or `kubegate login`.
#[utoipa::path(
    get,
    path = "/auth/providers",
    tag = "login",
    operation_id = "listProviders",
    responses(
        (status = 200, description = "The providers", body = Vec<ProviderView>),
    ),
    security(()),
)]
pub(crate) async fn providers(state: web::Data<LoginState>) -> HttpResponse {
    let list: Vec<_> = state
        .login
        .names()
        .into_iter()
        .map(|(name, kind)| json!({"name": name, "kind": kind, "login": format!("/auth/{name}/login")}))
        .collect();
    HttpResponse::Ok().json(list)
}

/// What the login layer needs at start: the providers, checked.
pub fn build(config: &crate::config::Config) -> Result<Arc<Login>, SetupError> {
    Login::new(
        &config.login,
        &config.sessions,
        config.server.public_url.as_deref(),
    )
    .map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_defaults_and_checks() {
        assert_eq!(redirect_target(None).unwrap(), "/");
        assert_eq!(redirect_target(Some("")).unwrap(), "/");
        assert_eq!(redirect_target(Some("/x?y=1")).unwrap(), "/x?y=1");
        assert!(matches!(
            redirect_target(Some("//evil.example")),
            Err(LoginError::BadRedirect(_))
        ));
    }
}
