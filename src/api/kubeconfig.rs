//! Kubeconfigs that point at kubegate, never at a cluster with its own credentials:
//!
//! - `GET /pipeline/api/v1/kubeconfig[?org=O][&credential=exec|token]`: one kubeconfig
//!   for every cluster the caller may reach (each org they belong to, or that a global
//!   administrator sees, whose policy lets them `get` `kubegate:clusters/config`), with a
//!   context `kubegate-{org}-{cluster name}` each. `kubegate login` merges it into the
//!   person's kubeconfig.
//! - `GET .../orgs/{org}/clusters/{id}/config` ([`super::clusters`]): the same for one
//!   cluster.
//!
//! The credential is kubectl's exec plugin `kubegate credential --server URL` by default
//! (short-lived tokens of a kubectl login session, nothing secret in the file). A
//! long-lived token goes into the file only when asked for with `credential=token` (for
//! CI systems): it is recorded like any token, and a bearer token cannot mint one that
//! outlives it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::clusters::ClusterApi;
use super::members::Members;
use super::tokens::Tokens;
use super::{guarded, guarded_change, Access, ApiError, ApiErrorBody};
use crate::gate::Gate;

/// Which credential a kubeconfig holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// kubectl's exec plugin, `kubegate credential`.
    Exec,
    /// A long-lived token, recorded like any token.
    Token,
}

impl Credential {
    /// `credential=` of a query: `exec` (the default) or `token`.
    pub fn parse(asked: Option<&str>) -> Result<Credential, ApiError> {
        match asked {
            None | Some("" | "exec") => Ok(Credential::Exec),
            Some("token") => Ok(Credential::Token),
            Some(other) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "credential: \"{}\" is not one of exec (kubectl's exec plugin `kubegate credential`, \
                     the default) or token (a long-lived token in the file, for CI systems)",
                    other.chars().take(50).collect::<String>()
                ),
            )),
        }
    }
}

/// One cluster of a kubeconfig.
pub struct Entry {
    /// The org.
    pub org: u64,
    /// The cluster's id.
    pub id: u64,
    /// The cluster's name.
    pub name: String,
}

/// kubegate's URL for clients: `server.public_url`, else the scheme and host the client
/// used.
pub fn base_url(state: &ClusterApi, req: &HttpRequest) -> String {
    crate::gate::redirect::base_url(state.public_url.as_deref(), req)
}

/// The kubeconfig (YAML) for `entries`, whose one user entry holds `user` (an `exec`
/// plugin or a `token`).
pub fn kubeconfig(state: &ClusterApi, base: &str, entries: &[Entry], user: Value) -> String {
    let ca = match (&state.served_ca, base.starts_with("https://")) {
        (Some(path), true) => std::fs::read(path)
            .ok()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem)),
        _ => None,
    };
    let host = base.split_once("://").map_or(base, |(_, host)| host);
    let user_name = format!("kubegate@{host}");
    let clusters: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut cluster = json!({
                "server": format!("{base}/pipeline/api/v1/orgs/{}/clusters/{}/proxy", e.org, e.id),
            });
            if let Some(ca) = &ca {
                cluster["certificate-authority-data"] = json!(ca);
            }
            json!({"name": context_name(e), "cluster": cluster})
        })
        .collect();
    let contexts: Vec<Value> = entries
        .iter()
        .map(|e| json!({"name": context_name(e), "context": {"cluster": context_name(e), "user": user_name}}))
        .collect();
    let mut config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "contexts": contexts,
        "users": [{"name": user_name, "user": user}],
        "preferences": {},
    });
    if let Some(first) = entries.first() {
        config["current-context"] = json!(context_name(first));
    }
    serde_saphyr::to_string(&config).unwrap_or_else(|_| config.to_string())
}

fn context_name(e: &Entry) -> String {
    format!("kubegate-{}-{}", e.org, e.name)
}

/// The `exec` user entry: `kubegate credential --server URL`.
pub fn exec_user(base: &str) -> Value {
    json!({
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "kubegate",
            "args": ["credential", "--server", base],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": true,
        }
    })
}

/// The answer: a kubeconfig file.
pub fn answer(yaml: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .insert_header(("Content-Disposition", "attachment; filename=\"kubeconfig\""))
        .insert_header(("Cache-Control", "no-store"))
        .body(yaml)
}

/// The query of `GET /pipeline/api/v1/kubeconfig`.
#[derive(Deserialize)]
pub(crate) struct Query {
    org: Option<u64>,
    credential: Option<String>,
}

/// One kubeconfig for every cluster the caller may reach through kubegate, with a
/// context `kubegate-{org}-{cluster name}` each; never a cluster's own credentials.
#[utoipa::path(
    get,
    path = "/pipeline/api/v1/kubeconfig",
    tag = "clusters",
    operation_id = "getKubeconfig",
    params(
        ("org" = Option<u64>, Query, description = "Only the clusters of this org"),
        ("credential" = Option<String>, Query, description = "`exec` (the default: kubectl's exec plugin `kubegate credential`) or `token` (a long-lived token in the file, for CI systems; with the session cookie it needs `X-CSRF-Token`)"),
    ),
    responses(
        (status = 200, description = "The kubeconfig", content_type = "application/yaml", body = String),
        (status = 400, description = "The query is not valid", body = ApiErrorBody),
        (status = 401, description = "No valid credential", body = ApiErrorBody),
        (status = 403, description = "A session cookie without its X-CSRF-Token (credential=token)", body = ApiErrorBody),
        (status = 404, description = "The caller reaches no cluster", body = ApiErrorBody),
        (status = 503, description = "A store is unavailable", body = ApiErrorBody),
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
pub(crate) async fn for_caller(
    req: HttpRequest,
    query: Result<web::Query<Query>, actix_web::Error>,
    gate: web::Data<Gate>,
    clusters: web::Data<ClusterApi>,
    members: web::Data<Members>,
    tokens: web::Data<Tokens>,
) -> HttpResponse {
    let (query, credential) = match query
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the query: {e}; use ?org=ID&credential=exec|token"),
            )
        })
        .and_then(|q| Credential::parse(q.credential.as_deref()).map(|c| (q.into_inner(), c)))
    {
        Ok(parsed) => parsed,
        Err(e) => return e.response(),
    };
    let (gt, rq) = (gate.clone(), req.clone());
    let work = |_, user: String| async move {
        let (gate, req) = (gt, rq);
        let all = members.members.all().await?;
        let mut orgs: Vec<u64> = all
            .iter()
            .filter(|m| m.user == user || gate.is_global_admin(&user))
            .map(|m| m.org)
            .filter(|org| query.org.is_none_or(|asked| asked == *org))
            .collect();
        orgs.sort_unstable();
        orgs.dedup();
        let mut entries = Vec::new();
        for org in orgs {
            if !gate
                .allows(&user, org, "get", "kubegate:clusters/config")
                .await
            {
                continue;
            }
            let mut listed = clusters.store.list(org).await?;
            listed.sort_by_key(|c| c.id);
            entries.extend(listed.into_iter().map(|c| Entry {
                org,
                id: c.id,
                name: c.name,
            }));
        }
        if entries.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                match query.org {
                    Some(org) => format!("user \"{user}\" reaches no cluster in org {org}"),
                    None => format!("user \"{user}\" reaches no cluster through kubegate yet"),
                },
            ));
        }
        let base = base_url(&clusters, &req);
        let user_entry = match credential {
            Credential::Exec => exec_user(&base),
            Credential::Token => {
                let token = super::tokens::issue_recorded(
                    &tokens,
                    &req,
                    &user,
                    "kubeconfig for all clusters",
                    None,
                )
                .await?;
                json!({"token": token.token})
            }
        };
        Ok(answer(kubeconfig(&clusters, &base, &entries, user_entry)))
    };
    match credential {
        // a token is minted and stored: with the cookie, that needs the CSRF proof
        Credential::Token => guarded_change(&req, &gate, Access::Authenticated, work).await,
        Credential::Exec => guarded(&req, &gate, Access::Authenticated, work).await,
    }
}
