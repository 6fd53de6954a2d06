//! The tokens API, as Pipeline has it.
//!
//! - `POST /pipeline/api/v1/tokens` `{"name": "...", "ttl": "24h"}` creates a token for
//!   the caller and returns `{id, token, name, expiresAt}`: the token is shown this once.
//! - `GET /pipeline/api/v1/tokens` lists the caller's tokens, never their secrets.
//! - `DELETE /pipeline/api/v1/tokens/{id}` revokes one of the caller's tokens.
//! - `GET /pipeline/api/v1/token` creates a token for the logged-in user, as the Pipeline
//!   UI asks for one after a browser login.
//! - `DELETE /pipeline/api/v1/users/{user}/tokens` (global administrators): revokes every
//!   token and kubectl login session of a user.
//!
//! The list holds the caller's kubectl login sessions too (`"kind": "session"`, from
//! `kubegate login`): revoking one ends its refresh credential and its access tokens.
//! A token cannot mint a token that outlives it: a request authenticated with a bearer
//! token gets tokens that expire before it does (a browser session may ask for up to
//! `auth.max_ttl`).
//!
//! A revocation is in force at once on this replica and within `auth.revocation_poll` on
//! the others ([`crate::gate::revocations`]).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use kubegate_actors::store::StoreError;
use kubegate_actors::store::{TokenRecord, TokenStore};
use serde::Deserialize;
use serde_json::json;

use crate::api::{guarded, guarded_change, parse_json, Access, ApiError, ApiErrorBody};
use crate::gate::revocations::Revocations;
use crate::gate::tokens::{IssuedToken, TokenAuthority};
use crate::gate::{AuthenticatedUser, Gate};

/// What the tokens API works with.
pub struct Tokens {
    /// Issues tokens.
    pub tokens: Arc<TokenAuthority>,
    /// Token records and revocations.
    pub token_store: Arc<dyn TokenStore>,
    /// Revoked token ids, told at once of a revocation here.
    pub revocations: Arc<Revocations>,
}

/// A new token: its name and, if not the default, how long it lives.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// What the token is for: at most 200 characters, no control characters.
    name: String,
    /// How long the token lives: a duration (`"24h"`, `"90m"`) or a number of seconds;
    /// the default is `auth.default_ttl`, at most `auth.max_ttl`.
    #[serde(default)]
    #[schema(schema_with = ttl_schema)]
    ttl: Option<serde_json::Value>,
}

/// `ttl`'s schema: a duration as text or a number of seconds.
fn ttl_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some(
                "How long the token lives: a duration (\"24h\", \"90m\") or a number of \
                 seconds; the default is auth.default_ttl, at most auth.max_ttl.",
            ))
            .build(),
    )
}

/// A new token, shown this once.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // what `issue` writes
pub(crate) struct TokenCreated {
    /// The token's id (to revoke it).
    id: String,
    /// The bearer token itself: it is not shown again.
    token: String,
    /// Its name.
    name: String,
    /// When it expires (RFC 3339).
    expiresAt: String,
}

/// A token or kubectl login session of the caller, without its secret.
#[derive(utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // what `view` writes
pub(crate) struct TokenView {
    /// The token's id.
    id: String,
    /// Its name.
    name: String,
    /// When it was made (RFC 3339).
    createdAt: String,
    /// When it expires (RFC 3339).
    expiresAt: String,
    /// Whether it was revoked.
    revoked: bool,
    /// When it was revoked (RFC 3339).
    revokedAt: Option<String>,
    /// `token`, or `session` for a kubectl login session.
    #[schema(pattern = "^(token|session)$")]
    kind: String,
}

/// What `DELETE /pipeline/api/v1/users/{user}/tokens` revoked.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // what `revoke_all` writes
pub(crate) struct RevokedAll {
    /// The user.
    user: String,
    /// The ids of the tokens and sessions revoked now.
    revoked: Vec<String>,
}

fn parse_ttl(ttl: Option<&serde_json::Value>) -> Result<Option<Duration>, ApiError> {
    let bad = |what: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("ttl: {what}; give a duration such as \"24h\" or a number of seconds"),
        )
    };
    match ttl {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(|| bad(format!("{n} is not a whole number of seconds"))),
        Some(serde_json::Value::String(s)) => humantime::parse_duration(s)
            .map(Some)
            .map_err(|e| bad(format!("\"{s}\" is not a duration ({e})"))),
        Some(other) => Err(bad(format!("{other} is not a duration"))),
    }
}

fn unavailable(e: StoreError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the token store is unavailable: {e}"),
    )
}

/// Issues a token for `user` and keeps its record (without its record the token could
/// not be listed or revoked: no record, no token).
///
/// When `req` was authenticated with a bearer token, the new token ends before it: no
/// lifetime asked gives the default or what is left of the bearer token, whichever is
/// shorter, and a longer one asked for is refused.
pub async fn issue_recorded(
    state: &Tokens,
    req: &HttpRequest,
    user: &str,
    name: &str,
    ttl: Option<Duration>,
) -> Result<IssuedToken, ApiError> {
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "name: at most 200 characters, no control characters",
        ));
    }
    let bearer = req
        .extensions()
        .get::<AuthenticatedUser>()
        .and_then(|user| user.bearer_expires);
    let ttl = match bearer {
        None => ttl,
        Some(expires) => {
            let left =
                Duration::from_secs(expires.saturating_sub(kubegate_actors::store::epoch_now()));
            match ttl {
                Some(asked) if asked > left => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                        "ttl: a token cannot create a token that outlives it; the token of this \
                             request expires in {}s, so ask for at most that, or create the token \
                             from a browser session (up to auth.max_ttl)",
                        left.as_secs()
                    ),
                    ))
                }
                Some(asked) => Some(asked),
                None => Some(state.tokens.default_ttl().min(left)),
            }
        }
    };
    if ttl.is_some_and(|t| t.is_zero()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ttl: the token of this request has expired; nothing can be created with it",
        ));
    }
    let issued = state
        .tokens
        .issue(user, ttl, name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    state
        .token_store
        .add(&issued.record(user, name))
        .await
        .map_err(unavailable)?;
    Ok(issued)
}

/// A new token as the API answers it: the token is shown this once.
async fn issue(
    state: &Tokens,
    req: &HttpRequest,
    user: &str,
    name: &str,
    ttl: Option<Duration>,
) -> Result<HttpResponse, ApiError> {
    let issued = issue_recorded(state, req, user, name, ttl).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({
            "id": issued.id,
            "token": issued.token,
            "name": name,
            "expiresAt": issued.expires_at,
        })))
}

fn view(record: &TokenRecord) -> serde_json::Value {
    let time = |secs: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .to_string()
    };
    json!({
        "id": record.id,
        "name": record.name,
        "createdAt": time(record.created_at),
        "expiresAt": time(record.expires_at),
        "revoked": record.revoked_at.is_some(),
        "revokedAt": record.revoked_at.map(time),
        "kind": if record.session { "session" } else { "token" },
    })
}

/// Creates a token for the caller; the token is shown this once.
///
/// A request authenticated with a bearer token gets a token that expires before it.
#[utoipa::path(
    post,
    path = "/pipeline/api/v1/tokens",
    tag = "tokens",
    operation_id = "createToken",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The new token", body = TokenCreated),
        (status = 400, description = "The body or its ttl is not valid", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "A session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The token store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn create(
    req: HttpRequest,
    body: web::Bytes,
    gate: web::Data<Gate>,
    state: web::Data<Tokens>,
) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded(&req, &gate, Access::Authenticated, |_, user| async move {
        let CreateToken { name, ttl } = parse_json(&body)?;
        let ttl = parse_ttl(ttl.as_ref())?;
        issue(&st, &rq, &user, &name, ttl).await
    })
    .await
}

/// The caller's tokens and kubectl login sessions, never their secrets.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/tokens",
    tag = "tokens",
    operation_id = "listTokens",
    responses(
        (status = 200, description = "The caller's tokens", body = Vec<TokenView>),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "A session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The token store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn list(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<Tokens>,
) -> HttpResponse {
    let st = state.clone();
    guarded(&req, &gate, Access::Authenticated, |_, user| async move {
        let records = st.token_store.list(&user).await.map_err(unavailable)?;
        let listed: Vec<_> = records.iter().map(view).collect();
        Ok(HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(listed))
    })
    .await
}

/// Revokes one of the caller's tokens or kubectl login sessions.
#[utoipa::path(
    delete,
    path = "/pipeline/api/v1/tokens/{id}",
    tag = "tokens",
    operation_id = "deleteToken",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "The caller has no token with this id", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "A session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The token store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn revoke(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<Tokens>,
) -> HttpResponse {
    let st = state.clone();
    let id = req.match_info().get("id").unwrap_or_default().to_string();
    guarded(&req, &gate, Access::Authenticated, |_, user| async move {
        match st
            .token_store
            .revoke(&user, &id)
            .await
            .map_err(unavailable)?
        {
            Some(_) => {
                st.revocations.insert(&id);
                log::info!("{user} revoked token {id}");
                Ok(HttpResponse::NoContent().finish())
            }
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("you have no token with id \"{id}\""),
            )),
        }
    })
    .await
}

/// A token for the logged-in user, named after the time (as the Pipeline UI asks for one
/// after a browser login). It mints a token: with the session cookie it needs the
/// `X-CSRF-Token` header like a write.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/token",
    tag = "tokens",
    operation_id = "createTokenForSession",
    responses(
        (status = 201, description = "The new token", body = TokenCreated),
        (status = 400, description = "The bearer token of the request has expired", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "A session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The token store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn create_for_session(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<Tokens>,
) -> HttpResponse {
    let (st, rq) = (state.clone(), req.clone());
    guarded_change(&req, &gate, Access::Authenticated, |_, user| async move {
        let name = format!(
            "browser login {}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        issue(&st, &rq, &user, &name, None).await
    })
    .await
}

/// `DELETE /pipeline/api/v1/users/{user}/tokens`: a global administrator revokes every
/// token and kubectl login session of `user` (someone who left, a stolen laptop).
#[utoipa::path(
    delete,
    path = "/pipeline/api/v1/users/{user}/tokens",
    tag = "admin",
    operation_id = "revokeUserTokens",
    params(("user" = String, Path, description = "The user whose tokens go")),
    responses(
        (status = 200, description = "What was revoked", body = RevokedAll),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "Not a global administrator, or a session cookie without its X-CSRF-Token", body = ApiErrorBody),
        (status = 503, description = "The token store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn revoke_all(
    req: HttpRequest,
    gate: web::Data<Gate>,
    state: web::Data<Tokens>,
) -> HttpResponse {
    let st = state.clone();
    let whose = req.match_info().get("user").unwrap_or_default().to_string();
    guarded(&req, &gate, Access::GlobalAdmin, |_, admin| async move {
        let records = st.token_store.list(&whose).await.map_err(unavailable)?;
        let mut revoked = Vec::new();
        for record in records.iter().filter(|r| r.revoked_at.is_none()) {
            if st
                .token_store
                .revoke(&whose, &record.id)
                .await
                .map_err(unavailable)?
                .is_some()
            {
                st.revocations.insert(&record.id);
                revoked.push(record.id.clone());
            }
        }
        log::info!(
            "{admin} revoked {} tokens and kubectl login sessions of {whose}",
            revoked.len()
        );
        Ok(HttpResponse::Ok().json(json!({"user": whose, "revoked": revoked})))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl(None).unwrap(), None);
        assert_eq!(
            parse_ttl(Some(&json!("2h"))).unwrap(),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            parse_ttl(Some(&json!(60))).unwrap(),
            Some(Duration::from_secs(60))
        );
        assert!(parse_ttl(Some(&json!("soon"))).is_err());
        assert!(parse_ttl(Some(&json!(-5))).is_err());
        assert!(parse_ttl(Some(&json!([1]))).is_err());
    }
}
