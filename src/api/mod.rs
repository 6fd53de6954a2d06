//! The REST API the Pipeline frontend calls, one module per resource: clusters, members
//! and orgs (with the policy reload), tokens, and the audit trail.
//!
//! JSON in and out. Errors are `{"code", "message", "error"}` with a message that says
//! what to fix. Every call goes through the gate ([`guarded`]): authenticated,
//! authorized by the PolicyEnforcer (or the global administrators list), and audited like
//! a proxied request.

pub mod audit;
pub mod cluster_status;
pub mod clusters;
pub mod kubeconfig;
pub mod members;
pub mod orgs;
pub mod policy;
pub mod sessions;
pub mod tokens;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::store::StoreError;
use serde_json::json;

use crate::clusters::ClusterError;
use crate::gate::{Gate, Question};
use crate::status::StatusError;

/// A REST API error: `{"code": 404, "message": "...", "error": "NotFound"}`.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    message: String,
}

/// An error of the REST API.
#[derive(utoipa::ToSchema)]
#[schema(as = ApiError)]
#[allow(dead_code)] // a description of what `ApiError::response` writes
pub struct ApiErrorBody {
    /// The HTTP status code.
    code: u16,
    /// What went wrong, and what to do about it.
    message: String,
    /// The status's reason phrase (`Not Found`, `Bad Request`...).
    error: String,
}

impl ApiError {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// The answer: the error as JSON.
    pub fn response(&self) -> HttpResponse {
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
            ClusterError::Store(StoreError::Corrupt { .. } | StoreError::Misconfigured(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ClusterError::Store(e).into()
    }
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

/// Runs `work` with the org (for [`Access::Org`]) and the user once the gate admits the
/// call, and audits the call whatever its end.
pub async fn guarded<F, Fut>(
    req: &HttpRequest,
    gate: &Gate,
    access: Access<'_>,
    work: F,
) -> HttpResponse
where
    F: FnOnce(u64, String) -> Fut,
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    let changes = crate::gate::session::is_unsafe(req.method());
    gated(req, gate, access, changes, work).await
}

/// [`guarded`] for a `GET` that changes something (it mints and stores a token): with
/// the session cookie, it needs the CSRF proof of a write ([`Gate::admit_change`]).
pub async fn guarded_change<F, Fut>(
    req: &HttpRequest,
    gate: &Gate,
    access: Access<'_>,
    work: F,
) -> HttpResponse
where
    F: FnOnce(u64, String) -> Fut,
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    gated(req, gate, access, true, work).await
}

async fn gated<F, Fut>(
    req: &HttpRequest,
    gate: &Gate,
    access: Access<'_>,
    changes: bool,
    work: F,
) -> HttpResponse
where
    F: FnOnce(u64, String) -> Fut,
    Fut: std::future::Future<Output = Result<HttpResponse, ApiError>>,
{
    let mut audit = gate.record(req);
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
        verb: verb.to_string().into(),
        is_resource: true,
        api_group: "kubegate".into(),
        resource: object.trim_start_matches("kubegate:").to_string(),
        ..Default::default()
    };
    let result = async {
        let question = match access {
            Access::Org { verb, object } => {
                let org = id_param(req, "org")?;
                audit.event.org = Some(org);
                audit.event.cluster = req.match_info().get("id").and_then(|id| id.parse().ok());
                Question::Org { org, verb, object }
            }
            Access::Authenticated => Question::Authenticated,
            Access::GlobalAdmin => Question::GlobalAdmin,
        };
        let identity = if changes {
            gate.admit_change(req, question, &mut audit).await?
        } else {
            gate.admit(req, question, &mut audit).await?
        };
        let org = match question {
            Question::Org { org, .. } => org,
            _ => 0,
        };
        work(org, identity.user).await
    }
    .await;
    let (response, failure) = match result {
        Ok(response) => (response, None),
        Err(e) => (e.response(), Some(e)),
    };
    let bytes_out = match actix_web::body::MessageBody::size(response.body()) {
        actix_web::body::BodySize::Sized(n) => n,
        _ => 0,
    };
    match failure {
        Some(e) => gate.refused(req, audit, response.status(), &e.message, bytes_out),
        None => audit.finish(gate.auditor(), response.status().as_u16(), 0, bytes_out),
    }
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
