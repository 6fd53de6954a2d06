//! `GET /pipeline/api/v1/orgs/{org}/audit/sessions/{id}`: the recording of an exec or
//! attach session (an asciicast v2 file), to those who may read the org's audit trail
//! (admins; the default policy denies `kubegate:audit` to members). With the PostgreSQL
//! audit sink it comes from the database (any replica's sessions), else from this
//! replica's `audit.recordings_dir`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{guarded, Access, ApiError, ApiErrorBody};
use crate::gate::Gate;
use crate::proxy::tunnel::record;
use crate::proxy::Upstreams;

/// The recording of an exec or attach session (an asciicast v2 file), to those who may
/// read the org's audit trail.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/orgs/{org}/audit/sessions/{id}",
    tag = "audit",
    operation_id = "getSessionRecording",
    params(
        ("org" = u64, Path, description = "The org's id"),
        ("id" = String, Path, description = "The session's id: the request id of the exec or attach"),
    ),
    responses(
        (status = 200, description = "The recording", content_type = "application/x-asciicast", body = String),
        (status = 400, description = "The id is not a session id", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "The policy does not allow reading the org's audit trail", body = ApiErrorBody),
        (status = 404, description = "The org has no recording of this session", body = ApiErrorBody),
        (status = 503, description = "The recording cannot be read", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn get(
    req: HttpRequest,
    gate: web::Data<Gate>,
    upstreams: web::Data<Upstreams>,
) -> HttpResponse {
    let (rq, up) = (req.clone(), upstreams.clone());
    guarded(
        &req,
        &gate,
        Access::Org {
            verb: "get",
            object: "kubegate:audit",
        },
        |org, _| async move {
            let id = rq.match_info().get("id").unwrap_or_default().to_string();
            let path = record::path_of(&up.recordings.dir, org, &id).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("\"{id}\" is not a session id (the request id of an exec or attach)"),
                )
            })?;
            if let Some(postgres) = &up.recordings.postgres {
                match postgres.load(org, &id).await {
                    Ok(Some(cast)) => return Ok(cast_response(cast)),
                    // not there (yet): this replica's own file, if it has one
                    Ok(None) => {}
                    Err(e) => log::warn!("{e}"),
                }
            }
            let read = web::block(move || std::fs::read(path))
                .await
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            match read {
                Ok(cast) => Ok(cast_response(cast)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("org {org} has no recording of session {id}"),
                )),
                Err(e) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the recording cannot be read: {e}"),
                )),
            }
        },
    )
    .await
}

fn cast_response(cast: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-asciicast")
        .insert_header(("Cache-Control", "no-store"))
        .body(cast)
}
