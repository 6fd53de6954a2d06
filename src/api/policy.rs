//! `POST /pipeline/api/v1/admin/policy/reload`: global administrators reload the model
//! and policy; a policy that does not load is refused with its line, and the old one
//! stays in force. With the embedded policy (no `policy.policy` file, policy storage
//! `file`) there is nothing to read again: 400, saying so.

use actix::Recipient;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::policy::Reload;

use super::members::unavailable;
use super::{guarded, Access, ApiError};
use crate::gate::Gate;

/// What the policy API works with.
pub struct PolicyApi {
    /// The policy enforcer, to reload.
    pub policy_reload: Recipient<Reload>,
    /// Why a reload cannot change anything, when it cannot (the embedded policy).
    pub fixed: Option<String>,
}

/// The routes of this API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/pipeline/api/v1/admin/policy/reload",
        web::post().to(reload),
    );
}

async fn reload(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<PolicyApi>,
) -> HttpResponse {
    let st = state.clone();
    guarded(&req, &gate, Access::GlobalAdmin, |_, user| async move {
        if let Some(why) = &st.fixed {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, why.clone()));
        }
        let stats = st
            .policy_reload
            .send(Reload)
            .await
            .map_err(unavailable)?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{e}; the policy in force is unchanged"),
                )
            })?;
        log::info!(
            "policy reloaded by {user}: {} rules, {} role bindings",
            stats.policies,
            stats.groupings
        );
        Ok(HttpResponse::Ok().json(stats))
    })
    .await
}
