//! The request entry point: record, authenticate, route. [`serve`] answers every request:
//! it records it, authenticates it, hands an upgrade to a pod's exec, attach or portforward
//! to `streams`, reads the body (protobuf converted to JSON), and routes the rest by path
//! through a [`Call`], whose methods live in the module of each capability (discovery,
//! objects, watches, patches, auth).
//!
//! Faithful: unauthenticated requests get `401` with a `Status` body before anything else;
//! bodies over 3 MiB are refused with `413`; every answer carries `Cache-Control:
//! no-cache, private` and an `Audit-Id`; paths the server does not serve are `404` and
//! read-only paths written to are `405`, with kube-apiserver's messages; `/healthz`,
//! `/livez` and `/readyz` answer `ok`. Not faithful: no admission control (beyond refusing a
//! create in a namespace that does not exist), no priority and fairness, no request
//! timeout.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::auth::authenticate;
use super::catalog::{catalog, known_resource};
use super::discovery::{api_group, openapi_v3_document, openapi_v3_root, root_paths, version_info};
use super::media_types::query_pairs;
use super::responses::{
    json_response, method_not_allowed, not_found, path_not_found, status_response, ApiError,
};
use super::store::Store;
use super::{dashboard, protobuf, rbac, streams};
use super::{lock, Identity, RecordedRequest, Shared, MAX_REQUEST_BODY_BYTES};

pub(super) async fn serve(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let identity = authenticate(&req, &shared);
    let sequence = lock(&shared.requests).record(RecordedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        identity: identity.clone(),
        http_version: format!("{:?}", req.version()),
        body: Bytes::new(),
        status: None,
        sequence: 0,
    });
    if identity != Identity::Anonymous
        && !shared.upgrade_delay.is_zero()
        && stream_request(&req).is_some()
    {
        tokio::time::sleep(shared.upgrade_delay).await;
    }
    // who the request acts as (impersonation), and whether it may
    let acting = if identity == Identity::Anonymous {
        Ok(identity)
    } else {
        rbac::effective_identity(&req, identity, &shared).and_then(|acting| {
            rbac::authorize(&req, &acting, &shared)?;
            Ok(acting)
        })
    };
    let identity = match acting {
        Ok(acting) => acting,
        Err(refusal) => {
            let refusal = refusal.response();
            let status = refusal.status().as_u16();
            lock(&shared.requests).complete(sequence, |request| request.status = Some(status));
            return refusal;
        }
    };
    if matches!(identity, Identity::Impersonated { .. }) {
        let acting = identity.clone();
        lock(&shared.requests).complete(sequence, |request| request.identity = acting.clone());
    }
    let mut response = if identity == Identity::Anonymous {
        status_response(401, "Unauthorized", "Unauthorized", None)
    } else if let Some((namespace, pod, kind)) = stream_request(&req) {
        // exec, attach, port-forward with an upgrade: the bytes after the head are the
        // session's, not a body
        let rt = known_resource("pods");
        match lock(&shared.store).get(&rt.key(), &namespace, &pod) {
            None => not_found(&rt, &pod),
            Some(object) => {
                let container = query_pairs(req.query_string())
                    .into_iter()
                    .find(|(k, _)| k == "container")
                    .map(|(_, v)| v)
                    .unwrap_or_else(|| {
                        object["spec"]["containers"][0]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    });
                streams::handle(&req, payload, kind, &namespace, &pod, &container)
            }
        }
    } else {
        let body = read_body(&req, payload).await.and_then(|raw| {
            lock(&shared.requests).complete(sequence, |request| request.body = raw.clone());
            json_body(&req, raw)
        });
        match body {
            Ok(body) => Call {
                req: &req,
                shared: shared.clone().into_inner(),
                query: query_pairs(req.query_string()).into_iter().collect(),
                identity,
            }
            .route(body),
            Err(error) => error.response(),
        }
    };
    let status = response.status().as_u16();
    lock(&shared.requests).complete(sequence, |request| request.status = Some(status));
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    if let Ok(audit_id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert(header::HeaderName::from_static("audit-id"), audit_id);
    }
    response
}

/// `(namespace, pod, kind)` of an upgrade request to a pod's exec, attach or portforward.
fn stream_request(req: &HttpRequest) -> Option<(String, String, streams::StreamKind)> {
    if !req.headers().contains_key(header::UPGRADE) {
        return None;
    }
    let segments: Vec<&str> = req.path().split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", pod, subresource] => {
            streams::StreamKind::of(subresource)
                .map(|kind| (namespace.to_string(), pod.to_string(), kind))
        }
        _ => None,
    }
}

/// The request body, up to [`MAX_REQUEST_BODY_BYTES`]. An upgrade request (exec, attach,
/// port-forward) has no body to wait for: what follows its headers belongs to the upgraded
/// connection.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt as _;
    if req.headers().contains_key(header::UPGRADE) {
        return Ok(Bytes::new());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "error reading the request body",
                None,
            ));
        };
        if body.len() + chunk.len() > MAX_REQUEST_BODY_BYTES {
            return Err(ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("the request entity is too large (limit {MAX_REQUEST_BODY_BYTES} bytes)"),
                None,
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The body as JSON: protobuf bodies are converted.
fn json_body(req: &HttpRequest, body: Bytes) -> Result<Bytes, ApiError> {
    let protobuf = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/vnd.kubernetes.protobuf"));
    if protobuf && !body.is_empty() {
        // kubectl's typed clients (`kubectl create configmap|secret|namespace|deployment`,
        // `kubectl auth whoami`) send protobuf and never fall back to JSON.
        return match protobuf::decode(&body) {
            Some(object) => Ok(Bytes::from(object.to_string())),
            None => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - the API server stand-in reads application/vnd.kubernetes.protobuf only for ConfigMap, Secret, Namespace, Pod, Deployment, SelfSubjectReview and TokenReview; send application/json",
                None,
            )),
        };
    }
    Ok(body)
}

/// One authenticated request being answered.
pub(super) struct Call<'a> {
    pub(super) req: &'a HttpRequest,
    pub(super) shared: Arc<Shared>,
    pub(super) query: HashMap<String, String>,
    pub(super) identity: Identity,
}

impl Call<'_> {
    fn route(&self, body: Bytes) -> HttpResponse {
        let path = self.req.uri().path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let method = self.req.method().clone();
        let read_only = method == Method::GET || method == Method::HEAD;
        if let Some(answer) = dashboard::serve(self.req, &path) {
            return answer;
        }
        match segments.as_slice() {
            ["api", "v1", rest @ ..] if !rest.is_empty() => {
                return self.resource_request("", "v1", rest, body)
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                return self.resource_request(group, version, rest, body)
            }
            _ => {}
        }
        if !read_only {
            return if self.known_read_only_path(&segments) {
                method_not_allowed()
            } else {
                path_not_found()
            };
        }
        match segments.as_slice() {
            [] => json_response(200, &root_paths()),
            ["version"] => json_response(200, &version_info()),
            ["healthz" | "livez" | "readyz", ..] => HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .insert_header(("X-Content-Type-Options", "nosniff"))
                .body("ok"),
            ["api"] => self.discovery_core(),
            ["apis"] => self.discovery_groups(),
            ["apis", group] => match api_group(group) {
                Some(document) => json_response(200, &document),
                None => path_not_found(),
            },
            ["api", "v1"] => json_response(200, &catalog().group_versions[0].document),
            ["apis", group, version] => match catalog().group_version(group, version) {
                Some(gv) => json_response(200, &gv.document),
                None => path_not_found(),
            },
            ["openapi", "v2"] => self.openapi_v2(),
            ["openapi", "v3"] => json_response(200, &openapi_v3_root()),
            ["openapi", "v3", rest @ ..] => match openapi_v3_document(&rest.join("/")) {
                Some(document) => json_response(200, &document),
                None => path_not_found(),
            },
            _ => path_not_found(),
        }
    }

    fn known_read_only_path(&self, segments: &[&str]) -> bool {
        matches!(
            segments,
            [] | ["version"]
                | ["healthz" | "livez" | "readyz", ..]
                | ["api"]
                | ["apis", ..]
                | ["openapi", ..]
        )
    }

    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    pub(super) fn flag(&self, name: &str) -> bool {
        matches!(
            self.param(name),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    pub(super) fn dry_run(&self) -> bool {
        query_pairs(self.req.query_string())
            .iter()
            .any(|(key, value)| key == "dryRun" && value == "All")
    }

    pub(super) fn accept(&self) -> &str {
        self.req
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }
}
