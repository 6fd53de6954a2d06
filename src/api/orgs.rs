//! `GET /pipeline/api/v1/orgs`: the orgs the caller belongs to, with the role; a global
//! administrator sees every org that has members.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::members::{unavailable, Members};
use super::{guarded, Access};
use crate::gate::Gate;

/// The routes of this API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/pipeline/api/v1/orgs", web::get().to(my_orgs));
}

async fn my_orgs(
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
