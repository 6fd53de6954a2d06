//! `/pipeline/api/v1/orgs/{org}/clusters[/{id}[/config]]`: the clusters of an org.
//!
//! Org admins may create, update and delete clusters; members may list and get them
//! (never the credentials). Each call is authorized on the object `kubegate:clusters`
//! (`kubegate:clusters/config` for a kubeconfig) and audited like a proxied request.

use std::sync::Arc;

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::kubeconfig::KubeconfigRules;
use kubegate_actors::registry::{ClusterRegistry, Evict};
use kubegate_actors::store::{ClusterChange, ClusterRecord, ClusterStore, RecordSessions};
use kubegate_actors::ClusterKey;
use serde::Deserialize;
use serde_json::json;

use super::kubeconfig::{self, Credential};
use super::tokens::Tokens;
use super::{guarded, guarded_change, id_param, parse_json, Access, ApiError, ApiErrorBody};
use crate::clusters;
use crate::gate::Gate;

/// What the clusters API works with.
pub struct ClusterApi {
    /// The cluster store.
    pub store: Arc<dyn ClusterStore>,
    /// Rules every kubeconfig must follow.
    pub rules: KubeconfigRules,
    /// The cluster registry, told when a cluster changes or goes.
    pub registry: Addr<ClusterRegistry>,
    /// The URL clients reach kubegate at, for generated kubeconfigs.
    pub public_url: Option<String>,
    /// The CA of the self-signed serving certificate, for generated kubeconfigs.
    pub served_ca: Option<std::path::PathBuf>,
    /// The clusters' reachability and versions, as last found out.
    pub statuses: super::cluster_status::ClusterStatuses,
}

/// What a caller may see of a cluster: never its kubeconfig.
fn view(record: &ClusterRecord, state: &ClusterApi) -> serde_json::Value {
    let server = kubegate_actors::kubeconfig::parse(
        &record.kubeconfig,
        record.context.as_deref(),
        &state.rules,
    )
    .map(|spec| spec.server)
    .ok();
    json!({
        "id": record.id,
        "name": record.name,
        "org": record.org,
        "context": record.context,
        "server": server,
        "impersonate": record.impersonate,
        "recordSessions": record.record_sessions,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
    })
}

/// Which exec and attach sessions of a cluster are recorded (asciicast files).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = RecordSessions)]
#[allow(dead_code)] // the schema of kubegate_actors::store::RecordSessions
#[serde(rename_all = "lowercase")]
enum RecordSessionsSchema {
    /// None.
    Off,
    /// Those with a terminal (`kubectl exec -t`).
    Tty,
    /// Every exec and attach.
    All,
}

/// A cluster as callers see it: never its kubeconfig.
#[derive(utoipa::ToSchema)]
#[schema(as = Cluster)]
#[allow(dead_code, non_snake_case)] // what `view` writes
struct ClusterView {
    /// Its id in the org.
    id: u64,
    /// Its name.
    name: String,
    /// The org.
    org: u64,
    /// The kubeconfig's context used (none: its current context).
    context: Option<String>,
    /// The API server's URL (none when the stored kubeconfig no longer parses).
    server: Option<String>,
    /// Whether requests reach the API server as the person (`Impersonate-User`).
    impersonate: bool,
    /// Which exec and attach sessions are recorded.
    recordSessions: RecordSessionsSchema,
    /// When it was registered (RFC 3339).
    createdAt: String,
    /// When it last changed (RFC 3339).
    updatedAt: Option<String>,
}

/// What `DELETE .../clusters/{id}` answers.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `delete` writes
struct ClusterDeleted {
    /// The cluster's id.
    id: u64,
    /// `true`.
    deleted: bool,
}

/// A cluster to register: a kubeconfig with the credentials kubegate uses to reach it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateCluster {
    /// Its name in the org.
    name: String,
    /// A kubeconfig (YAML or JSON) with the API server and kubegate's credentials.
    kubeconfig: String,
    /// The kubeconfig's context to use (default: its current context).
    #[serde(default)]
    context: Option<String>,
    /// Requests reach the API server as the person (`Impersonate-User`).
    #[serde(default)]
    impersonate: bool,
    /// Which exec and attach sessions are recorded: `off`, `tty`, `all`.
    #[serde(default, alias = "record_sessions")]
    #[schema(value_type = RecordSessionsSchema)]
    record_sessions: RecordSessions,
}

/// A change: new credentials (`kubeconfig`, with `context`), impersonation on or off,
/// which sessions are recorded, or several of these.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateCluster {
    /// New credentials: a kubeconfig (YAML or JSON).
    #[serde(default)]
    kubeconfig: Option<String>,
    /// The new kubeconfig's context (only with `kubeconfig`).
    #[serde(default)]
    context: Option<String>,
    /// Impersonation on or off.
    #[serde(default)]
    impersonate: Option<bool>,
    /// Which exec and attach sessions are recorded.
    #[serde(default, alias = "record_sessions")]
    #[schema(value_type = Option<RecordSessionsSchema>)]
    record_sessions: Option<RecordSessions>,
}

/// Registers a cluster of the org from a kubeconfig (org admins).
#[utoipa::path(
    post,
    path = "/pipeline/api/v1/orgs/{org}/clusters",
    tag = "clusters",
    operation_id = "createCluster",
    params(
        ("org" = u64, Path, description = "The org's id"),
    ),
    request_body = CreateCluster,
    responses(
        (status = 201, description = "The cluster", body = ClusterView),
        (status = 400, description = "The body, the name or the kubeconfig is not valid", body = ApiErrorBody),
        (status = 409, description = "The org has a cluster of this name", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The cluster store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn create(
    req: HttpRequest,
    body: web::Bytes,
    gate: web::Data<Gate>,
    state: web::Data<ClusterApi>,
) -> HttpResponse {
    let st = state.clone();
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "create",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let state = st;
            let new: CreateCluster = parse_json(&body)?;
            let record = clusters::create(
                state.store.as_ref(),
                &state.rules,
                org,
                clusters::NewCluster {
                    name: &new.name,
                    kubeconfig: &new.kubeconfig,
                    context: new.context.as_deref(),
                    impersonate: new.impersonate,
                    record_sessions: new.record_sessions,
                },
            )
            .await?;
            Ok(HttpResponse::Created().json(view(&record, &state)))
        },
    )
    .await
}

/// The clusters of the org (members), never their credentials.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/clusters",
    tag = "clusters",
    operation_id = "listClusters",
    params(
        ("org" = u64, Path, description = "The org's id"),
    ),
    responses(
        (status = 200, description = "The clusters", body = Vec<ClusterView>),
        (status = 400, description = "The org id is not a number", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The cluster store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn list(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<ClusterApi>,
) -> HttpResponse {
    let st = state.clone();
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "list",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let state = st;
            let records = state.store.list(org).await?;
            let views: Vec<_> = records.iter().map(|r| view(r, &state)).collect();
            Ok(HttpResponse::Ok().json(views))
        },
    )
    .await
}

async fn find(state: &ClusterApi, req: &HttpRequest, org: u64) -> Result<ClusterRecord, ApiError> {
    let id = id_param(req, "id")?;
    state
        .store
        .get(org, id)
        .await?
        .ok_or_else(|| not_found(id, org))
}

/// The 404 of a cluster id that org `org` does not have.
fn not_found(id: u64, org: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("cluster {id} not found in org {org}"),
    )
}

/// One cluster of the org, never its credentials.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/clusters/{id}",
    tag = "clusters",
    operation_id = "getCluster",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("id" = u64, Path, description = "The cluster's id in the org"),
    ),
    responses(
        (status = 200, description = "The cluster", body = ClusterView),
        (status = 400, description = "An id is not a number", body = ApiErrorBody),
        (status = 404, description = "The org has no such cluster", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The cluster store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn get(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<ClusterApi>,
) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "get",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let (state, req) = (st, rq);
            let record = find(&state, &req, org).await?;
            Ok(HttpResponse::Ok().json(view(&record, &state)))
        },
    )
    .await
}

/// Changes a cluster: new credentials, impersonation, session recording (org admins).
#[utoipa::path(
    put,
    path = "/pipeline/api/v1/orgs/{org}/clusters/{id}",
    tag = "clusters",
    operation_id = "updateCluster",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("id" = u64, Path, description = "The cluster's id in the org"),
    ),
    request_body = UpdateCluster,
    responses(
        (status = 200, description = "The cluster as changed", body = ClusterView),
        (status = 400, description = "The body or the kubeconfig is not valid, or changes nothing", body = ApiErrorBody),
        (status = 404, description = "The org has no such cluster", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The cluster store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn update(
    req: HttpRequest,
    body: web::Bytes,
    gate: web::Data<Gate>,
    state: web::Data<ClusterApi>,
) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "update",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let (state, req) = (st, rq);
            let id = id_param(&req, "id")?;
            let change: UpdateCluster = parse_json(&body)?;
            if change.kubeconfig.is_none() && change.context.is_some() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "context: give it with the kubeconfig it names",
                ));
            }
            if change.kubeconfig.is_none()
                && change.impersonate.is_none()
                && change.record_sessions.is_none()
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "nothing to change: give a kubeconfig (with an optional context), \"impersonate\", \"recordSessions\", or several",
                ));
            }
            let key = ClusterKey { org, cluster: id };
            let record = clusters::update(
                state.store.as_ref(),
                &state.rules,
                key,
                ClusterChange {
                    kubeconfig: change
                        .kubeconfig
                        .as_deref()
                        .map(|k| (k, change.context.as_deref())),
                    impersonate: change.impersonate,
                    record_sessions: change.record_sessions,
                },
            )
            .await?
            .ok_or_else(|| not_found(id, org))?;
            // the next request builds a new proxy instance with the new settings
            evict(&state, key).await;
            state.statuses.forget(key);
            Ok(HttpResponse::Ok().json(view(&record, &state)))
        },
    )
    .await
}

/// Removes a cluster from kubegate (org admins); the cluster itself is untouched.
#[utoipa::path(
    delete,
    path = "/pipeline/api/v1/orgs/{org}/clusters/{id}",
    tag = "clusters",
    operation_id = "deleteCluster",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("id" = u64, Path, description = "The cluster's id in the org"),
    ),
    responses(
        (status = 200, description = "Removed", body = ClusterDeleted),
        (status = 400, description = "An id is not a number", body = ApiErrorBody),
        (status = 404, description = "The org has no such cluster", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The cluster store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn delete(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<ClusterApi>,
) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "delete",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let (state, req) = (st, rq);
            let id = id_param(&req, "id")?;
            if !state.store.delete(org, id).await? {
                return Err(not_found(id, org));
            }
            evict(&state, ClusterKey { org, cluster: id }).await;
            state.statuses.forget(ClusterKey { org, cluster: id });
            Ok(HttpResponse::Ok().json(json!({"id": id, "deleted": true})))
        },
    )
    .await
}

async fn evict(state: &ClusterApi, key: ClusterKey) {
    if let Err(e) = state.registry.send(Evict(key)).await {
        log::error!("could not evict the proxy of {key}: {e}");
    }
}

/// A kubeconfig for the caller that points at kubegate's proxy URL for this cluster:
/// never the cluster's own credentials. Its credential is kubectl's exec plugin, or with
/// `?credential=token` a new token of theirs ([`super::kubeconfig`]).
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/clusters/{id}/config",
    tag = "clusters",
    operation_id = "getClusterConfig",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("id" = u64, Path, description = "The cluster's id in the org"),
        ("credential" = Option<String>, Query, description = "`exec` (the default: kubectl's exec plugin `kubegate credential`) or `token` (a long-lived token in the file, for CI systems; with the session cookie it needs `X-CSRF-Token`)"),
    ),
    responses(
        (status = 200, description = "The kubeconfig", content_type = "application/yaml", body = String),
        (status = 400, description = "credential is not exec or token, or an id is not a number", body = ApiErrorBody),
        (status = 404, description = "The org has no such cluster", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow it, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The cluster store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn kubeconfig_for_caller(
    req: HttpRequest,
    query: web::Query<Vec<(String, String)>>,
    gate: web::Data<Gate>,
    state: web::Data<ClusterApi>,
    tokens: web::Data<Tokens>,
) -> HttpResponse {
    let asked = query
        .iter()
        .find(|(k, _)| k == "credential")
        .map(|(_, v)| v.as_str());
    let credential = match Credential::parse(asked) {
        Ok(credential) => credential,
        Err(e) => return e.response(),
    };
    let (st, rq) = (state.clone(), req.clone());
    let work = |org, user: String| async move {
        let (state, req) = (st, rq);
        let record = find(&state, &req, org).await?;
        let base = kubeconfig::base_url(&state, &req);
        let user_entry = match credential {
            Credential::Exec => kubeconfig::exec_user(&base),
            Credential::Token => {
                let token = super::tokens::issue_recorded(
                    &tokens,
                    &req,
                    &user,
                    &format!("kubeconfig for cluster {}", record.id),
                    None,
                )
                .await?;
                json!({"token": token.token})
            }
        };
        let entry = kubeconfig::Entry {
            org,
            id: record.id,
            name: record.name,
        };
        Ok(kubeconfig::answer(kubeconfig::kubeconfig(
            &state,
            &base,
            &[entry],
            user_entry,
        )))
    };
    let access = Access::Org {
        verb: "get",
        object: "kubegate:clusters/config",
    };
    match credential {
        Credential::Token => guarded_change(&req, &gate, access, work).await,
        Credential::Exec => guarded(&req, &gate, access, work).await,
    }
}
