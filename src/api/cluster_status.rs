//! `GET /pipeline/api/v1/orgs/{org}/clusters/{id}/status`: whether kubegate reaches the
//! cluster's API server, and its Kubernetes version.
//!
//! The API server's `/version` is asked with kubegate's credentials through the proxy's
//! own client for the cluster, with a short timeout ([`PROBE_TIMEOUT`]); the answer is
//! kept for [`STATUS_TTL`] (per replica), so that a console listing many clusters, opened
//! by many people, asks each API server at most that often. An API server that cannot be
//! reached is an answer (`reachable: false` with the reason), never an error of this
//! route.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::ClusterKey;
use serde_json::{json, Value};

use super::clusters::ClusterApi;
use super::{guarded, id_param, Access, ApiError, ApiErrorBody};
use crate::gate::Gate;
use crate::proxy::{api_server_has, api_server_version, Upstreams, VersionError};

/// The Service the console's dashboard link goes through (`kube-system`'s
/// `kubernetes-dashboard`, reached with the service proxy, as the dashboard's own
/// manifests install it).
pub const DASHBOARD_SERVICE: &str = "/api/v1/namespaces/kube-system/services/kubernetes-dashboard";

/// How long the API server may take to answer `/version`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an answer is kept before the API server is asked again.
pub const STATUS_TTL: Duration = Duration::from_secs(30);

/// The last status of each cluster, with when it was taken.
#[derive(Default)]
pub struct ClusterStatuses {
    known: Mutex<HashMap<ClusterKey, (Instant, Value)>>,
}

impl ClusterStatuses {
    /// The status of `key` taken less than [`STATUS_TTL`] ago.
    fn fresh(&self, key: ClusterKey) -> Option<Value> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(&key)
            .filter(|(at, _)| at.elapsed() < STATUS_TTL)
            .map(|(_, status)| status.clone())
    }

    fn keep(&self, key: ClusterKey, status: Value) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|_, (at, _)| at.elapsed() < STATUS_TTL);
        known.insert(key, (Instant::now(), status));
    }

    /// Forgets the status of a cluster whose credentials changed or that is gone.
    pub fn forget(&self, key: ClusterKey) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.remove(&key);
    }
}

/// Whether kubegate reaches a cluster's API server, and its version.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // what `status` writes
struct ClusterStatus {
    /// The cluster's id.
    id: u64,
    /// Whether the API server answered `/version` to kubegate's credentials.
    reachable: bool,
    /// The Kubernetes version (`gitVersion`, e.g. `v1.32.0`), when reachable.
    version: Option<String>,
    /// The API server's platform (`linux/amd64`), when it says.
    platform: Option<String>,
    /// Why it is not reachable (a timeout, a refused connection, a TLS error, a 401...).
    reason: Option<String>,
    /// Whether the cluster runs the Kubernetes dashboard (the Service
    /// `kube-system/kubernetes-dashboard` exists to kubegate's credentials): open it at
    /// `.../clusters/{id}/proxy/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/`.
    dashboard: bool,
    /// When this was found out (RFC 3339); answers are kept for 30 seconds.
    checkedAt: String,
}

/// Whether kubegate reaches the cluster's API server, and its Kubernetes version (those
/// who may get the cluster). Asked with a 2 s timeout and kept for 30 s: an unreachable
/// API server is `reachable: false` with the reason.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/clusters/{id}/status",
    tag = "clusters",
    operation_id = "getClusterStatus",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("id" = u64, Path, description = "The cluster's id in the org"),
    ),
    responses(
        (status = 200, description = "Reachable with its version, or not with the reason", body = ClusterStatus),
        (status = 400, description = "An id is not a number", body = ApiErrorBody),
        (status = 404, description = "The org has no such cluster", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it", body = ApiErrorBody),
        (status = 503, description = "The cluster store or registry is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn status(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<ClusterApi>,
    upstreams: web::Data<Upstreams>,
) -> HttpResponse {
    let (st, up, rq) = (state.clone(), upstreams.clone(), req.clone());
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "get",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let id = id_param(&rq, "id")?;
            let key = ClusterKey { org, cluster: id };
            if let Some(known) = st.statuses.fresh(key) {
                return Ok(HttpResponse::Ok().json(known));
            }
            let checked = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
            let status = match api_server_version(key, &up, PROBE_TIMEOUT).await {
                Ok(version) => json!({
                    "id": id,
                    "reachable": true,
                    "version": version["gitVersion"].as_str(),
                    "platform": version["platform"].as_str(),
                    "reason": null,
                    "dashboard": api_server_has(key, &up, DASHBOARD_SERVICE, PROBE_TIMEOUT).await,
                    "checkedAt": checked,
                }),
                Err(VersionError::Unreachable(reason)) => json!({
                    "id": id,
                    "reachable": false,
                    "version": null,
                    "platform": null,
                    "reason": reason,
                    "dashboard": false,
                    "checkedAt": checked,
                }),
                Err(VersionError::Cluster(e)) => return Err(ApiError::from(e)),
            };
            st.statuses.keep(key, status.clone());
            Ok(HttpResponse::Ok().json(status))
        },
    )
    .await
}
