//! The REST API the Pipeline frontend calls for clusters:
//! `/pipeline/api/v1/orgs/{org}/clusters[/{id}[/config]]`.
//!
//! JSON in and out. Errors are `{"code", "message", "error"}` with a message that says
//! what to fix. Org admins may create, update and delete clusters; members may list and
//! get them (never the credentials). Each call is authorized by the PolicyEnforcer on the
//! object `kubegate:clusters` and audited like a proxied request.

pub mod audit;
pub mod members;
pub mod tokens;

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::Engine as _;
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::auditor::AuditDecision;
use kubegate_actors::kubeconfig;
use kubegate_actors::policy::Authorize;
use kubegate_actors::registry::Evict;
use kubegate_actors::store::{ClusterRecord, StoreError};
use kubegate_actors::ClusterKey;
use serde::Deserialize;
use serde_json::json;

use crate::clusters::{self, ClusterError};
use crate::gate::audit::AuditContext;
use crate::http::{AppState, RequestId};
use crate::status::StatusError;

/// A REST API error: `{"code": 404, "message": "...", "error": "NotFound"}`.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.code).json(json!({
            "code": self.code.as_u16(),
            "message": self.message,
            "error": self.code.canonical_reason().unwrap_or("Error"),
        }))
    }
}

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        ApiError::new(e.code, e.message)
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let code = match &e {
            ClusterError::BadName(_) | ClusterError::BadKubeconfig(_) => StatusCode::BAD_REQUEST,
            ClusterError::Store(StoreError::DuplicateName(_)) => StatusCode::CONFLICT,
            ClusterError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Store(StoreError::Corrupt { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ClusterError::Store(e).into()
    }
}

/// The routes of this API. Registered after the proxy route, whose paths start alike.
pub fn routes(cfg: &mut web::ServiceConfig) {
    const CLUSTERS: &str = "/pipeline/api/v1/orgs/{org}/clusters";
    const CLUSTER: &str = "/pipeline/api/v1/orgs/{org}/clusters/{id}";
    cfg.app_data(web::PayloadConfig::new(1 << 20))
        .route(CLUSTERS, web::post().to(create))
        .route(CLUSTERS, web::get().to(list))
        .route(CLUSTER, web::get().to(get))
        .route(CLUSTER, web::put().to(update))
        .route(CLUSTER, web::delete().to(delete))
        .route(
            "/pipeline/api/v1/orgs/{org}/clusters/{id}/config",
            web::get().to(kubeconfig_for_caller),
        );
}

/// What a caller may see of a cluster: never its kubeconfig.
fn view(record: &ClusterRecord, state: &AppState) -> serde_json::Value {
    let server = kubeconfig::parse(&record.kubeconfig, record.context.as_deref(), &state.rules)
        .map(|spec| spec.server)
        .ok();
    json!({
        "id": record.id,
        "name": record.name,
        "org": record.org,
        "context": record.context,
        "server": server,
        "createdAt": record.created_at,
        "updatedAt": record.updated_at,
    })
}

pub fn id_param(req: &HttpRequest, name: &str) -> Result<u64, ApiError> {
    let raw = req.match_info().get(name).unwrap_or_default();
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the {name} id \"{raw}\" must be a number"),
        )
    })
}

/// Who may make a call.
#[derive(Clone, Copy)]
pub enum Access<'a> {
    /// Whoever the policy lets do `verb` on `object` in the URL's org.
    Org {
        /// The verb.
        verb: &'a str,
        /// The object (`kubegate:clusters`, `kubegate:members`).
        object: &'a str,
    },
    /// Any authenticated user (answers about themselves).
    Authenticated,
    /// Global administrators only.
    GlobalAdmin,
}

/// Authenticates, checks `access`, runs `work` with the org (for [`Access::Org`]) and the
/// user, and audits the call whatever its end.
pub async fn guarded<F, Fut>(
    req: &HttpRequest,
    state: &AppState,
    access: Access<'_>,
    work: F,
) -> HttpResponse
where
    F: FnOnce(u64, String) -> Fut,
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let mut audit = AuditContext::new(req, &request_id);
    audit.event.path = req.path().to_string();
    let (verb, object) = match access {
        Access::Org { verb, object } => (verb, object),
        Access::Authenticated => ("get", "kubegate:self"),
        Access::GlobalAdmin => (
            if req.method() == actix_web::http::Method::GET {
                "get"
            } else {
                "update"
            },
            "kubegate:admin",
        ),
    };
    audit.event.attributes = RequestAttributes {
        verb: verb.to_string(),
        is_resource: true,
        api_group: "kubegate".into(),
        resource: object.trim_start_matches("kubegate:").to_string(),
        ..Default::default()
    };
    let result = async {
        let org = match access {
            Access::Org { .. } => {
                let org = id_param(req, "org")?;
                audit.event.org = Some(org);
                audit.event.cluster = req.match_info().get("id").and_then(|id| id.parse().ok());
                org
            }
            _ => 0,
        };
        let identity = crate::gate::authenticate(req, state)?;
        audit.event.user = identity.user.clone();
        match access {
            Access::Org { verb, object } => {
                let ask = Authorize {
                    subject: identity.user.clone(),
                    org,
                    object: object.to_string(),
                    action: verb.to_string(),
                    path: req.path().to_string(),
                    ..Default::default()
                };
                let decision = crate::gate::decide(state, ask).await?;
                audit.event.reason = decision.reason.clone();
                if !decision.allowed {
                    let what = object.trim_start_matches("kubegate:").replace('/', " ");
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "user \"{}\" may not {verb} {what} in org {org}",
                            identity.user
                        ),
                    ));
                }
            }
            Access::GlobalAdmin => {
                if !state.global_admins.contains(&identity.user) {
                    audit.event.reason = "not a global administrator".into();
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "user \"{}\" is not a global administrator (policy.global_admins)",
                            identity.user
                        ),
                    ));
                }
                audit.event.reason = "allowed: global administrator".into();
            }
            Access::Authenticated => audit.event.reason = "allowed: authenticated".into(),
        }
        audit.event.decision = AuditDecision::Allow;
        work(org, identity.user).await
    }
    .await;
    let response = result.unwrap_or_else(|e| {
        if audit.event.user.is_empty() {
            // a cookie refused for want of its CSRF proof still names whose it was
            if let Some(user) = req.extensions().get::<crate::http::AuthenticatedUser>() {
                audit.event.user = user.0.clone();
            }
        }
        if e.code.is_server_error() && audit.event.decision == AuditDecision::Allow {
            audit.event.decision = AuditDecision::Error;
        }
        audit.event.error = Some(e.message.clone());
        if audit.event.reason.is_empty() {
            audit.event.reason = e.message.clone();
        }
        e.response()
    });
    let bytes_out = match actix_web::body::MessageBody::size(response.body()) {
        actix_web::body::BodySize::Sized(n) => n,
        _ => 0,
    };
    audit.finish(&state.auditor, response.status().as_u16(), 0, bytes_out);
    response
}

pub fn parse_json<T: serde::de::DeserializeOwned>(body: &web::Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCluster {
    name: String,
    kubeconfig: String,
    #[serde(default)]
    context: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateCluster {
    kubeconfig: String,
    #[serde(default)]
    context: Option<String>,
}

async fn create(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    guarded(
        &req,
        &state,
        Access::Org {
            verb: "create",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let state = st;
            let new: CreateCluster = parse_json(&body)?;
            let record = clusters::create(
                state.clusters.as_ref(),
                &state.rules,
                org,
                &new.name,
                &new.kubeconfig,
                new.context.as_deref(),
            )
            .await?;
            Ok(HttpResponse::Created().json(view(&record, &state)))
        },
    )
    .await
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let st = state.clone();
    guarded(
        &req,
        &state,
        Access::Org {
            verb: "list",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let state = st;
            let records = state.clusters.list(org).await?;
            let views: Vec<_> = records.iter().map(|r| view(r, &state)).collect();
            Ok(HttpResponse::Ok().json(views))
        },
    )
    .await
}

async fn find(state: &AppState, req: &HttpRequest, org: u64) -> Result<ClusterRecord, ApiError> {
    let id = id_param(req, "id")?;
    state.clusters.get(org, id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("cluster {id} not found in org {org}"),
        )
    })
}

async fn get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &state,
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

async fn update(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &state,
        Access::Org {
            verb: "update",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let (state, req) = (st, rq);
            let id = id_param(&req, "id")?;
            let change: UpdateCluster = parse_json(&body)?;
            let key = ClusterKey { org, cluster: id };
            let record = clusters::update(
                state.clusters.as_ref(),
                &state.rules,
                key,
                &change.kubeconfig,
                change.context.as_deref(),
            )
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("cluster {id} not found in org {org}"),
                )
            })?;
            // the next request builds a new proxy instance with the new credentials
            evict(&state, key).await;
            Ok(HttpResponse::Ok().json(view(&record, &state)))
        },
    )
    .await
}

async fn delete(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(
        &req,
        &state,
        Access::Org {
            verb: "delete",
            object: "kubegate:clusters",
        },
        |org, _| async move {
            let (state, req) = (st, rq);
            let id = id_param(&req, "id")?;
            if !state.clusters.delete(org, id).await? {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("cluster {id} not found in org {org}"),
                ));
            }
            evict(&state, ClusterKey { org, cluster: id }).await;
            Ok(HttpResponse::Ok().json(json!({"id": id, "deleted": true})))
        },
    )
    .await
}

async fn evict(state: &AppState, key: ClusterKey) {
    if let Err(e) = state.registry.send(Evict(key)).await {
        log::error!("could not evict the proxy of {key}: {e}");
    }
}

/// A kubeconfig for the caller that points at kubegate's proxy URL for this cluster, with
/// a new token of theirs: never the cluster's own credentials.
async fn kubeconfig_for_caller(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(&req, &state, Access::Org { verb: "get", object: "kubegate:clusters/config" }, |org, user| async move {
        let (state, req) = (st, rq);
        let record = find(&state, &req, org).await?;
        let base = match &state.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let info = req.connection_info();
                format!("{}://{}", info.scheme(), info.host())
            }
        };
        let token = crate::api::tokens::issue_recorded(
            &state,
            &user,
            &format!("kubeconfig for cluster {}", record.id),
            None,
        )
        .await?;
        let ca = match (&state.served_ca, base.starts_with("https://")) {
            (Some(path), true) => std::fs::read(path)
                .ok()
                .map(|pem| format!("    certificate-authority-data: {}\n", base64::engine::general_purpose::STANDARD.encode(pem))),
            _ => None,
        }
        .unwrap_or_default();
        let name = format!("kubegate-{org}-{}", record.name);
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {base}/pipeline/api/v1/orgs/{org}/clusters/{id}/proxy\n{ca}users:\n- name: {user_q}\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {user_q}\ncurrent-context: {name}\n",
            id = record.id,
            user_q = serde_json::to_string(&user).unwrap_or_default(),
            token = token.token,
        );
        Ok(HttpResponse::Ok().content_type("application/yaml").body(yaml))
    })
    .await
}
