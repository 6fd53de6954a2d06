//! Who is asking, and may they: shared by the proxy route and the REST API.

pub mod audit;
pub mod revocations;
pub mod session;
pub mod tokens;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

use actix::MailboxError;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest};
use kubegate_actors::policy::{Authorize, Decision};

use crate::gate::session::SessionUser;
use crate::gate::tokens::AuthError;
use crate::http::AppState;
use crate::status::StatusError;

/// Who is asking, and how they proved it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The policy subject.
    pub user: String,
    /// The token's id, when a bearer token was the credential.
    pub token_id: Option<String>,
    /// The browser session, when the session cookie was the credential.
    pub session: Option<SessionUser>,
}

/// Authenticates the request (401 on failure): a bearer token when the request has an
/// `Authorization` header, else the session cookie. A revoked token or an ended session
/// is refused. A cookie-authenticated request with an unsafe method must also pass the
/// CSRF check (403), so that another site cannot act through a logged-in browser.
pub fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Identity, StatusError> {
    let header = req.headers().get(header::AUTHORIZATION);
    let identity = match header {
        Some(value) => {
            let claims = state
                .tokens
                .authenticate(Some(value.as_bytes()))
                .map_err(|e| StatusError::unauthorized(e.to_string()))?;
            if state.revocations.contains(&claims.jti) {
                return Err(StatusError::unauthorized(
                    "the token has been revoked; create a new one",
                ));
            }
            Identity {
                user: claims.sub,
                token_id: Some(claims.jti),
                session: None,
            }
        }
        None => {
            let Some(user) = crate::gate::session::user(req) else {
                return Err(StatusError::unauthorized(AuthError::Missing.to_string()));
            };
            if state.revocations.contains(&user.sid) {
                return Err(StatusError::unauthorized(
                    "this session has ended (logged out); log in again",
                ));
            }
            if crate::gate::session::is_unsafe(req.method())
                && !crate::gate::session::csrf_ok(req, &user)
            {
                // whose cookie it was, for the audit record of the refusal
                req.extensions_mut()
                    .insert(crate::http::AuthenticatedUser(user.user.clone()));
                return Err(StatusError::forbidden(
                    "a request with the session cookie that changes something must carry the \
                     X-CSRF-Token header (from GET /auth/session) or come from a kubegate page",
                ));
            }
            Identity {
                user: user.user.clone(),
                token_id: None,
                session: Some(user),
            }
        }
    };
    // for the access log line
    req.extensions_mut()
        .insert(crate::http::AuthenticatedUser(identity.user.clone()));
    Ok(identity)
}

/// Subject, org, object, verb, and namespace, name and path when the model uses them.
type Question = (String, u64, String, String, String, String, String);

thread_local! {
    /// This worker's copy of the PolicyEnforcer's recent answers, each with the policy
    /// generation it was given under: an answer is used only while no new policy has
    /// been put in force since. It saves a round trip to the actor's thread per request.
    static ANSWERS: RefCell<HashMap<Question, (u64, Decision)>> = RefCell::new(HashMap::new());
}

/// Most answers a worker keeps; past it, it starts over.
const MAX_ANSWERS: usize = 65_536;

/// Asks the PolicyEnforcer, with the configured timeout, unless this worker has its
/// answer to the same question under the policy in force. No answer in time, or no
/// enforcer, is a deny: the error is a 503 that says so.
pub async fn decide(state: &AppState, ask: Authorize) -> Result<Decision, StatusError> {
    // read before asking: an answer given while a reload happens is filed under the old
    // generation, and so never used
    let generation = state.policy_shape.generation.load(Ordering::Acquire);
    let detailed = state.policy_shape.detailed.load(Ordering::Acquire);
    let detail = |s: &String| if detailed { s.clone() } else { String::new() };
    let question = (
        ask.subject.clone(),
        ask.org,
        ask.object.clone(),
        ask.action.clone(),
        detail(&ask.namespace),
        detail(&ask.name),
        detail(&ask.path),
    );
    let known = ANSWERS.with(|answers| {
        answers
            .borrow()
            .get(&question)
            .filter(|(given, _)| *given == generation)
            .map(|(_, decision)| decision.clone())
    });
    if let Some(decision) = known {
        return Ok(decision);
    }
    let decision = ask_enforcer(state, ask).await?;
    ANSWERS.with(|answers| {
        let mut answers = answers.borrow_mut();
        if answers.len() >= MAX_ANSWERS {
            answers.clear();
        }
        answers.insert(question, (generation, decision.clone()));
    });
    Ok(decision)
}

async fn ask_enforcer(state: &AppState, ask: Authorize) -> Result<Decision, StatusError> {
    state
        .policy
        .send(ask)
        .timeout(state.decision_timeout)
        .await
        .map_err(|e| {
            let why = match e {
                MailboxError::Timeout => "did not answer in time",
                MailboxError::Closed => "is not running",
            };
            log::error!("policy enforcer {why}: request denied");
            StatusError::unavailable(format!(
                "authorization is unavailable (the policy enforcer {why}); the request was denied"
            ))
        })
}
