//! The policy, for global administrators:
//!
//! - `GET /pipeline/api/v1/admin/policy`: where the policy lines are kept, their text as
//!   the store holds them now (what a reload would load), and what is in force.
//! - `POST /pipeline/api/v1/admin/policy/reload`: reloads the model and policy; a policy
//!   that does not load is refused with its line, and the old one stays in force. With
//!   the embedded policy (no `policy.policy` file, policy storage `file`) there is
//!   nothing to read again: 400, saying so.

use actix::Recipient;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::policy::{Reload, Stats};
use kubegate_actors::store::PolicyStore;

use super::members::unavailable;
use super::{guarded, Access, ApiError, ApiErrorBody};
use crate::gate::Gate;

/// What the policy API works with.
pub struct PolicyApi {
    /// The policy enforcer, to reload.
    pub policy_reload: Recipient<Reload>,
    /// Why a reload cannot change anything, when it cannot (the embedded policy).
    pub fixed: Option<String>,
    /// Where the policy lines are kept.
    pub store: std::sync::Arc<dyn PolicyStore>,
    /// The policy enforcer, for what is in force.
    pub policy_stats: Recipient<Stats>,
}

/// The policy as `GET /pipeline/api/v1/admin/policy` shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // as the handler's JSON has it
struct PolicyView {
    /// Where the lines are kept (`config/policy.csv`, `postgres casbin_rule`, the
    /// embedded default).
    source: String,
    /// The lines as the store holds them now: what a reload would put in force.
    policy: String,
    /// What is in force.
    inForce: PolicyStats,
    /// Why a reload cannot change anything, when it cannot (the embedded policy).
    fixed: Option<String>,
}

/// The policy lines and what is in force (global administrators).
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/admin/policy",
    tag = "admin",
    operation_id = "getPolicy",
    responses(
        (status = 200, description = "The policy lines and what is in force", body = PolicyView),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "Not a global administrator", body = ApiErrorBody),
        (status = 503, description = "The policy store or the policy enforcer did not answer", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn current(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<PolicyApi>,
) -> HttpResponse {
    let st = state.clone();
    guarded(&req, &gate, Access::GlobalAdmin, |_, _| async move {
        let text = st.store.policy_text().await.map_err(unavailable)?;
        let stats = st.policy_stats.send(Stats).await.map_err(unavailable)?;
        Ok(HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(serde_json::json!({
                "source": st.store.describe(),
                "policy": text,
                "inForce": stats,
                "fixed": st.fixed,
            })))
    })
    .await
}

/// What a reload put in force.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // kubegate_actors::policy::PolicyStats as serialized
struct PolicyStats {
    /// `p` lines.
    policies: u64,
    /// `g` lines (memberships and role inheritance).
    groupings: u64,
    /// Roles named in `p` lines.
    roles: Vec<String>,
    /// How long the load took, in milliseconds.
    load_ms: f64,
    /// Reloads that put a new policy in force since start.
    reloads: u64,
}

/// Reloads the model and policy (global administrators). A policy that does not load is
/// refused with its line, and the old one stays in force.
#[utoipa::path(
    post,
    path = "/pipeline/api/v1/admin/policy/reload",
    tag = "admin",
    operation_id = "reloadPolicy",
    responses(
        (status = 200, description = "The policy in force now", body = PolicyStats),
        (status = 400, description = "The policy does not load (the old one stays), or there is no policy file to read", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "Not a global administrator, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The policy enforcer did not answer", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn reload(
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
