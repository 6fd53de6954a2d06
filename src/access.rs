//! Who is asking, and may they: shared by the proxy route and the REST API.

use actix::MailboxError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::HttpRequest;
use kubegate_actors::policy::{Authorize, Decision};

use crate::auth::Claims;
use crate::server::AppState;
use crate::status::StatusError;

/// Authenticates the request's bearer token (401 on failure).
pub fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Claims, StatusError> {
    state
        .tokens
        .authenticate(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .map_err(|e| StatusError::unauthorized(e.to_string()))
}

/// Asks the PolicyEnforcer, with the configured timeout. No answer in time, or no
/// enforcer, is a deny: the error is a 503 that says so.
pub async fn decide(state: &AppState, ask: Authorize) -> Result<Decision, StatusError> {
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
