//! `GET /pipeline/api/v1/orgs`: the orgs the caller belongs to, with the role; a global
//! administrator sees every org that has members.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::members::{unavailable, Members};
use super::{guarded, Access, ApiErrorBody};
use crate::gate::Gate;

/// An org of the caller.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `my_orgs` writes
struct Org {
    /// The org's id.
    id: u64,
    /// The caller's role in it (`global-admin` for a global administrator who is not a member).
    role: String,
}

/// The orgs the caller belongs to, with their role; a global administrator sees every
/// org that has members.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs",
    tag = "members",
    operation_id = "listOrgs",
    responses(
        (status = 200, description = "The caller's orgs", body = Vec<Org>),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 503, description = "The member store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn my_orgs(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<Members>,
) -> HttpResponse {
    let (st, gt) = (state.clone(), gate.clone());
    guarded(&req, &gate, Access::Authenticated, |_, user| async move {
        let all = st.members.all().await.map_err(unavailable)?;
        let global = gt.is_global_admin(&user);
        let mut orgs: Vec<serde_json::Value> = all
            .iter()
            .filter(|m| m.user == user)
            .map(|m| json!({"id": m.org, "role": m.role}))
            .collect();
        if global {
            let mut known: Vec<u64> = all.iter().map(|m| m.org).collect();
            known.sort_unstable();
            known.dedup();
            for org in known {
                if !orgs.iter().any(|o| o["id"] == org) {
                    orgs.push(json!({"id": org, "role": "global-admin"}));
                }
            }
        }
        orgs.sort_by_key(|o| o["id"].as_u64());
        Ok(HttpResponse::Ok().json(orgs))
    })
    .await
}
