//! Org membership: `GET /pipeline/api/v1/orgs/{org}/members`, `PUT|DELETE
//! .../members/{user}`. Org admins (and global administrators) change memberships;
//! members may list them. A change is in force at once on this replica (the policy is
//! reloaded), on the others within `policy.member_poll`.

use std::sync::Arc;

use actix::Recipient;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::policy::{Reload, Stats};
use kubegate_actors::store::MemberStore;
use serde::Deserialize;
use serde_json::json;

use crate::api::{guarded, parse_json, Access, ApiError, ApiErrorBody};
use crate::gate::Gate;

/// What the members API works with.
pub struct Members {
    /// Memberships.
    pub members: Arc<dyn MemberStore>,
    /// The policy enforcer, to reload after a change.
    pub policy_reload: Recipient<Reload>,
    /// The policy enforcer, for the roles its policy knows.
    pub policy_stats: Recipient<Stats>,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// Loads the policy again so that a membership change takes effect now on this replica
/// (others notice the member store's change within `policy.member_poll`).
async fn apply(state: &Members) -> Result<(), ApiError> {
    match state.policy_reload.send(Reload).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the membership is stored but the policy did not reload: {e}"),
        )),
        Err(e) => Err(unavailable(format!(
            "the membership is stored but the policy enforcer did not answer: {e}"
        ))),
    }
}

/// A member of an org and their role.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `list_members` writes
struct Member {
    /// The user.
    user: String,
    /// Their role in the org (a role of the policy: `admin`, `member`...).
    role: String,
}

/// What `PUT .../members/{user}` answers.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `set_member` writes
struct MemberSet {
    /// The org.
    org: u64,
    /// The user.
    user: String,
    /// Their role now.
    role: String,
}

/// What `DELETE .../members/{user}` answers.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `remove_member` writes
struct MemberRemoved {
    /// The org.
    org: u64,
    /// The user.
    user: String,
    /// `true`.
    removed: bool,
}

/// The members of an org and their roles (members of the org).
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/members",
    tag = "members",
    operation_id = "listMembers",
    params(("org" = u64, Path, description = "The org's id")),
    responses(
        (status = 200, description = "The members", body = Vec<Member>),
        (status = 400, description = "The org id is not a number", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The member store or the policy enforcer is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn list_members(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<Members>,
) -> HttpResponse {
    let st = state.clone();
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "list",
            object: "kubegate:members",
        },
        |org, _| async move {
            let members: Vec<_> = st
                .members
                .all()
                .await
                .map_err(unavailable)?
                .into_iter()
                .filter(|m| m.org == org)
                .map(|m| json!({"user": m.user, "role": m.role}))
                .collect();
            Ok(HttpResponse::Ok().json(members))
        },
    )
    .await
}

/// A member's role.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetRole {
    /// A role the policy knows (`admin`, `member`...).
    role: String,
}

fn user_param(req: &HttpRequest) -> Result<String, ApiError> {
    let user = req.match_info().get("user").unwrap_or_default();
    let user = percent_encoding::percent_decode_str(user)
        .decode_utf8_lossy()
        .to_string();
    if user.is_empty()
        || crate::gate::tokens::is_system_name(&user)
        || user
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '"')
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the user must be non-empty, without spaces, commas, quotes or control characters, and must not begin with \"system:\"",
        ));
    }
    Ok(user)
}

/// Makes a user a member of the org with a role, or changes their role (org admins).
#[utoipa::path(
    put,
    path = "/pipeline/api/v1/orgs/{org}/members/{user}",
    tag = "members",
    operation_id = "setMember",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("user" = String, Path, description = "The user (percent-encoded): no spaces, commas, quotes, control characters, nor a `system:` prefix"),
    ),
    request_body = SetRole,
    responses(
        (status = 200, description = "The membership", body = MemberSet),
        (status = 400, description = "The user, the body or the role is not valid", body = ApiErrorBody),
        (status = 500, description = "Stored, but the policy did not reload", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The member store or the policy enforcer is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn set_member(
    req: HttpRequest,
    body: web::Bytes,
    gate: web::Data<Gate>,
    state: web::Data<Members>,
) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "update",
            object: "kubegate:members",
        },
        |org, _| async move {
            let user = user_param(&rq)?;
            let SetRole { role } = parse_json(&body)?;
            let stats = st.policy_stats.send(Stats).await.map_err(unavailable)?;
            if !stats.roles.contains(&role) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the role \"{role}\" is not in the policy; known roles: {}",
                        stats.roles.join(", ")
                    ),
                ));
            }
            st.members
                .set(org, &user, &role)
                .await
                .map_err(unavailable)?;
            apply(&st).await?;
            Ok(HttpResponse::Ok().json(json!({"org": org, "user": user, "role": role})))
        },
    )
    .await
}

/// Removes a user from the org (org admins).
#[utoipa::path(
    delete,
    path = "/pipeline/api/v1/orgs/{org}/members/{user}",
    tag = "members",
    operation_id = "removeMember",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("user" = String, Path, description = "The user (percent-encoded): no spaces, commas, quotes, control characters, nor a `system:` prefix"),
    ),
    responses(
        (status = 200, description = "Removed", body = MemberRemoved),
        (status = 400, description = "The user is not valid", body = ApiErrorBody),
        (status = 404, description = "The user is not a member of the org", body = ApiErrorBody),
        (status = 500, description = "Removed, but the policy did not reload", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The member store or the policy enforcer is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn remove_member(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<Members>,
) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "delete",
            object: "kubegate:members",
        },
        |org, _| async move {
            let user = user_param(&rq)?;
            if !st.members.remove(org, &user).await.map_err(unavailable)? {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("{user} is not a member of org {org}"),
                ));
            }
            apply(&st).await?;
            Ok(HttpResponse::Ok().json(json!({"org": org, "user": user, "removed": true})))
        },
    )
    .await
}
