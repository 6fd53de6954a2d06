//! The gate: who is asking, may they, and how is it recorded. Written once, used by the
//! proxy route, every REST handler and the browser login.
//!
//! Every gated request goes through [`Gate::admit`], in this order:
//!
//! 1. refuse while the audit trail is losing events (503): nothing may happen unseen;
//! 2. authenticate (401): a bearer token when the request has an `Authorization` header,
//!    else the session cookie, with the CSRF check for unsafe methods (403); revoked
//!    tokens and ended sessions are refused;
//! 3. authorize (403) the [`Question`]: the PolicyEnforcer for org questions (no answer
//!    in time is a deny, 503), the global administrators list for admin ones;
//!
//! and each step fills in the request's [`AuditContext`], so that the event records the
//! request whatever its end. [`Gate::refused`] ends the event of a refused or failed
//! request in one way for every caller.
//!
//! The modules below hold the parts: bearer tokens ([`tokens`]), browser sessions and
//! CSRF ([`session`]), revocations ([`revocations`]), the policy question and this
//! worker's cache of its answers ([`policy`]), the audit context ([`audit`]), and where a
//! browser may be sent ([`redirect`]).

pub mod audit;
pub mod impersonation;
pub mod policy;
pub mod redirect;
pub mod revocations;
pub mod session;
pub mod tokens;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::auditor::{AuditCounters, AuditDecision};
use kubegate_actors::policy::{Authorize, PolicyShape};
use serde_json::json;

use crate::metrics::PendingAudits;
use crate::status::StatusError;
use audit::{AuditContext, AuditTrail};
use policy::Ask;
use revocations::Revocations;
use session::SessionUser;
use tokens::{AuthError, TokenAuthority};

/// The request id of a request, set by the outermost middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Who a request was authenticated as, put in its extensions by authentication, for
/// the access log (and for the audit record of a refused cookie).
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    /// The user.
    pub user: String,
    /// The expiry of the bearer token the request was authenticated with (none for a
    /// session cookie), for the rule that a token cannot mint a token that outlives it.
    pub bearer_expires: Option<u64>,
}

/// Who is asking, and how they proved it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The policy subject.
    pub user: String,
    /// The browser session, when the session cookie was the credential.
    pub session: Option<SessionUser>,
    /// The user's roles in the org the request is about (filled in by authorization).
    pub roles: Arc<[String]>,
    /// The login provider and groups a bearer token of a kubectl login session carries.
    pub login: Option<(String, Vec<String>)>,
    /// When the bearer token expires, seconds since the epoch: a token may only mint
    /// tokens that end before it does.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// The provider and groups of the login behind the credential: the browser session's,
    /// or those a kubectl login session's token carries. None for other tokens.
    pub fn login_groups(&self) -> Option<(&str, &[String])> {
        match (&self.session, &self.login) {
            (Some(session), _) => Some((session.provider.as_str(), session.groups.as_slice())),
            (None, Some((provider, groups))) => Some((provider.as_str(), groups.as_slice())),
            (None, None) => None,
        }
    }
}

/// What a request asks to do.
#[derive(Clone, Copy)]
pub enum Question<'a> {
    /// A Kubernetes request to a cluster of `org`, with the attributes the API server
    /// would derive, on `path` (the Kubernetes path).
    Cluster {
        /// The org.
        org: u64,
        /// The cluster (for the refusal's message).
        cluster: u64,
        /// The Kubernetes path.
        path: &'a str,
        /// What the request is, as the API server sees it.
        attributes: &'a RequestAttributes,
    },
    /// `verb` on a kubegate object (`kubegate:clusters`, `kubegate:members`) of `org`.
    Org {
        /// The org.
        org: u64,
        /// The verb.
        verb: &'a str,
        /// The object.
        object: &'a str,
    },
    /// Anything any authenticated user may do (answers about themselves).
    Authenticated,
    /// What only global administrators may do.
    GlobalAdmin,
}

/// The gate's state: what it needs to authenticate, authorize and record.
pub struct Gate {
    tokens: Arc<TokenAuthority>,
    revocations: Arc<Revocations>,
    policy: Recipient<Authorize>,
    policy_shape: Arc<PolicyShape>,
    decision_timeout: Duration,
    global_admins: Vec<String>,
    auditor: AuditTrail,
    audit_counters: Arc<AuditCounters>,
    pending_audits: PendingAudits,
    login_provider: Option<String>,
}

/// What [`Gate::new`] is made of.
pub struct GateParts {
    /// Verifies bearer tokens.
    pub tokens: Arc<TokenAuthority>,
    /// Revoked token and session ids.
    pub revocations: Arc<Revocations>,
    /// The policy enforcer.
    pub policy: Recipient<Authorize>,
    /// What workers keeping the enforcer's answers must know of the policy in force.
    pub policy_shape: Arc<PolicyShape>,
    /// How long to wait for a policy decision.
    pub decision_timeout: Duration,
    /// Subjects allowed everything.
    pub global_admins: Vec<String>,
    /// Where audit events go.
    pub auditor: AuditTrail,
    /// The auditor's figures (whether it is losing events).
    pub audit_counters: Arc<AuditCounters>,
    /// Requests whose audit event is not submitted yet (shutdown waits for them).
    pub pending_audits: PendingAudits,
    /// Where a browser without a session is sent to log in (the default provider).
    pub login_provider: Option<String>,
}

impl Gate {
    /// The gate of these parts.
    pub fn new(parts: GateParts) -> Gate {
        Gate {
            tokens: parts.tokens,
            revocations: parts.revocations,
            policy: parts.policy,
            policy_shape: parts.policy_shape,
            decision_timeout: parts.decision_timeout,
            global_admins: parts.global_admins,
            auditor: parts.auditor,
            audit_counters: parts.audit_counters,
            pending_audits: parts.pending_audits,
            login_provider: parts.login_provider,
        }
    }

    /// The auditor, for the events of streams that end later.
    pub fn auditor(&self) -> &AuditTrail {
        &self.auditor
    }

    /// Revoked token and session ids.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Issues and verifies bearer tokens.
    pub fn tokens(&self) -> &Arc<TokenAuthority> {
        &self.tokens
    }

    /// Whether `user` is a global administrator.
    pub fn is_global_admin(&self, user: &str) -> bool {
        self.global_admins.iter().any(|a| a == user)
    }

    /// Starts the audit record of `req` (shutdown waits for it to be submitted).
    pub fn record(&self, req: &HttpRequest) -> AuditContext {
        // empty when the outermost middleware did not run (unit tests)
        let extensions = req.extensions();
        let id = extensions.get::<RequestId>().map_or("", |id| id.0.as_str());
        AuditContext::new(req, id, Some(self.pending_audits.start()))
    }

    /// Steps 1 to 3: may `req` do what `question` asks? Fills in `audit` as it goes (user,
    /// decision, reason); on `Err`, the caller answers with the error and ends the event
    /// with [`Gate::refused`].
    pub async fn admit(
        &self,
        req: &HttpRequest,
        question: Question<'_>,
        audit: &mut AuditContext,
    ) -> Result<Identity, StatusError> {
        let changes = session::is_unsafe(req.method());
        self.admit_call(req, question, changes, audit).await
    }

    /// [`Gate::admit`] for a call that changes something whatever its method: a `GET`
    /// that mints and stores a token. With the session cookie, it needs the same CSRF
    /// proof as a write, since a cross-site top-level navigation carries the
    /// `SameSite=Lax` cookie.
    pub async fn admit_change(
        &self,
        req: &HttpRequest,
        question: Question<'_>,
        audit: &mut AuditContext,
    ) -> Result<Identity, StatusError> {
        self.admit_call(req, question, true, audit).await
    }

    async fn admit_call(
        &self,
        req: &HttpRequest,
        question: Question<'_>,
        changes: bool,
        audit: &mut AuditContext,
    ) -> Result<Identity, StatusError> {
        // 1. the audit trail must be able to record the request: refuse while events are
        // being lost (a sink down and its spill file failing too)
        if self.audit_counters.losing.load(Ordering::Relaxed) {
            return Err(StatusError::unavailable(
                "the audit trail cannot record requests right now; kubegate refuses them until it can",
            ));
        }

        // 2. who is asking
        let mut identity = self.identify(req, changes)?;
        audit.event.user = identity.user.clone();

        // 3. may they
        match question {
            Question::Cluster {
                org,
                cluster,
                path,
                attributes,
            } => {
                let object = attributes.object(path);
                let ask = Ask {
                    subject: &identity.user,
                    org,
                    object: &object,
                    action: &attributes.verb,
                    namespace: &attributes.namespace,
                    name: &attributes.name,
                    path,
                };
                let decision = self.decide(ask).await?;
                audit.event.reason = decision.reason;
                identity.roles = decision.roles;
                if !decision.allowed {
                    return Err(forbidden_in_cluster(
                        &identity.user,
                        org,
                        cluster,
                        path,
                        attributes,
                    ));
                }
            }
            Question::Org { org, verb, object } => {
                let ask = Ask {
                    subject: &identity.user,
                    org,
                    object,
                    action: verb,
                    path: req.path(),
                    ..Default::default()
                };
                let decision = self.decide(ask).await?;
                audit.event.reason = decision.reason;
                identity.roles = decision.roles;
                if !decision.allowed {
                    let what = object.trim_start_matches("kubegate:").replace('/', " ");
                    return Err(StatusError::forbidden(format!(
                        "user \"{}\" may not {verb} {what} in org {org}",
                        identity.user
                    )));
                }
            }
            Question::GlobalAdmin => {
                if !self.is_global_admin(&identity.user) {
                    audit.event.reason = "not a global administrator".into();
                    return Err(StatusError::forbidden(format!(
                        "user \"{}\" is not a global administrator (policy.global_admins)",
                        identity.user
                    )));
                }
                audit.event.reason = "allowed: global administrator".into();
            }
            Question::Authenticated => audit.event.reason = "allowed: authenticated".into(),
        }
        audit.event.decision = AuditDecision::Allow;
        Ok(identity)
    }

    /// Whether the policy lets `user` do `verb` on the kubegate object `object` of `org`
    /// (no answer in time: no).
    pub async fn allows(&self, user: &str, org: u64, verb: &str, object: &str) -> bool {
        let ask = Ask {
            subject: user,
            org,
            object,
            action: verb,
            ..Default::default()
        };
        self.decide(ask).await.is_ok_and(|d| d.allowed)
    }

    /// Ends the event of a request refused or failed with `status` and `message`, whose
    /// answer carries `bytes_out` bytes: an error after an allowed decision is recorded
    /// as an error, a refused cookie still names whose it was, and the message is the
    /// reason when nothing else gave one.
    pub fn refused(
        &self,
        req: &HttpRequest,
        mut audit: AuditContext,
        status: StatusCode,
        message: &str,
        bytes_out: u64,
    ) {
        if status.is_server_error() && audit.event.decision == AuditDecision::Allow {
            audit.event.decision = AuditDecision::Error;
        }
        if audit.event.user.is_empty() {
            // a credential that was valid but not enough (a cookie without its CSRF
            // proof) still names whose it was
            if let Some(user) = req.extensions().get::<AuthenticatedUser>() {
                audit.event.user = user.user.clone();
            }
        }
        audit.event.error = Some(message.to_string());
        if audit.event.reason.is_empty() {
            audit.event.reason = message.to_string();
        }
        audit.finish(&self.auditor, status.as_u16(), 0, bytes_out);
    }

    /// Authenticates `req` (401 on failure): a bearer token when the request has an
    /// `Authorization` header, else the session cookie. A revoked token or an ended
    /// session is refused. A cookie-authenticated request with an unsafe method must also
    /// pass the CSRF check (403), so that another site cannot act through a logged-in
    /// browser. For pages that show who is logged in; what is gated uses [`Gate::admit`].
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Identity, StatusError> {
        self.identify(req, session::is_unsafe(req.method()))
    }

    /// [`Gate::authenticate`], with the CSRF check when the call `changes` something.
    fn identify(&self, req: &HttpRequest, changes: bool) -> Result<Identity, StatusError> {
        let identity = match req.headers().get(header::AUTHORIZATION) {
            Some(value) => {
                let claims = self
                    .tokens
                    .authenticate(Some(value.as_bytes()))
                    .map_err(|e| StatusError::unauthorized(e.to_string()))?;
                if self.revocations.contains(&claims.jti) {
                    return Err(StatusError::unauthorized(
                        "the token has been revoked; create a new one",
                    ));
                }
                let ended = |id: &Option<String>| {
                    id.as_deref()
                        .is_some_and(|id| self.revocations.contains(id))
                };
                if ended(&claims.sid) || ended(&claims.psid) {
                    return Err(StatusError::unauthorized(
                        "the login session of this token has ended or was revoked; run `kubegate login` again",
                    ));
                }
                if tokens::is_system_name(&claims.sub) {
                    // never issued by kubegate; refused should a signing key ever have
                    // signed one
                    return Err(StatusError::unauthorized(
                        "user names that begin with \"system:\" are not accepted",
                    ));
                }
                Identity {
                    user: claims.sub.clone(),
                    session: None,
                    roles: Arc::default(),
                    login: claims.provider.clone().map(|p| (p, claims.groups.clone())),
                    expires_at: Some(claims.exp),
                }
            }
            None => {
                let Some(user) = session::user(req) else {
                    return Err(StatusError::unauthorized(AuthError::Missing.to_string()));
                };
                if self.revocations.contains(&user.sid) {
                    return Err(StatusError::unauthorized(
                        "this session has ended (logged out); log in again",
                    ));
                }
                if changes && !session::csrf_ok(req, &user) {
                    // whose cookie it was, for the audit record of the refusal
                    req.extensions_mut().insert(AuthenticatedUser {
                        user: user.user.clone(),
                        bearer_expires: None,
                    });
                    return Err(StatusError::forbidden(
                        "a request with the session cookie that changes something must carry the \
                         X-CSRF-Token header (from GET /auth/session) or come from a kubegate page",
                    ));
                }
                Identity {
                    user: user.user.clone(),
                    session: Some(user),
                    roles: Arc::default(),
                    login: None,
                    expires_at: None,
                }
            }
        };
        // for the access log line, and the expiry for the token API
        req.extensions_mut().insert(AuthenticatedUser {
            user: identity.user.clone(),
            bearer_expires: identity.expires_at,
        });
        Ok(identity)
    }

    /// Where a browser that opens a page without credentials is sent: the login of the
    /// default provider, coming back to the page after. Only for a GET of an HTML page
    /// with no `Authorization` header (API clients keep their 401), and only when there
    /// is a default provider (`login.default_provider`, or the only one configured).
    pub fn browser_redirect(&self, req: &HttpRequest, status: StatusCode) -> Option<HttpResponse> {
        if status != StatusCode::UNAUTHORIZED
            || req.method() != Method::GET
            || req.headers().contains_key(header::AUTHORIZATION)
            || !wants_html(req)
        {
            return None;
        }
        let provider = self.login_provider.as_deref()?;
        let here = match req.uri().query() {
            Some(query) => format!("{}?{query}", req.uri().path()),
            None => req.uri().path().to_string(),
        };
        let here = redirect::local_path(&here)?;
        let encoded =
            percent_encoding::utf8_percent_encode(here, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        Some(
            HttpResponse::Found()
                .insert_header((
                    header::LOCATION,
                    format!("/auth/{provider}/login?redirect={encoded}"),
                ))
                .insert_header(("Cache-Control", "no-store"))
                .finish(),
        )
    }
}

/// Whether the client asks for an HTML page (a person's browser).
pub fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The 403 of a Kubernetes request, worded as the API server words its own.
fn forbidden_in_cluster(
    user: &str,
    org: u64,
    cluster: u64,
    path: &str,
    a: &RequestAttributes,
) -> StatusError {
    let place = format!("cluster {cluster} of org {org}");
    if a.is_resource {
        let what = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let subject = if a.name.is_empty() {
            what.clone()
        } else {
            format!("{} \"{}\"", a.resource, a.name)
        };
        let scope = if a.namespace.is_empty() {
            format!("at the cluster scope of {place}")
        } else {
            format!("in the namespace \"{}\" of {place}", a.namespace)
        };
        StatusError::forbidden(format!(
            "{subject} is forbidden: User \"{user}\" cannot {} resource \"{what}\" in API group \"{}\" {scope}",
            a.verb, a.api_group
        ))
        .with_details(json!({"name": a.name, "group": a.api_group, "kind": a.resource}))
    } else {
        StatusError::forbidden(format!(
            "forbidden: User \"{user}\" cannot {} path \"{path}\" in {place}",
            a.verb
        ))
    }
}
