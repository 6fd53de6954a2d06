//! Responses: JSON bodies, Table bodies, aggregated discovery bodies, `Status` error bodies,
//! list bodies streamed item by item, and watch streams.
//!
//! Faithful: a `Status` has kube-apiserver's fields in kube-apiserver's order (`details`
//! too: name, group, kind), with its reasons and messages for not found, method not allowed,
//! conflict and invalid; list items lose `kind` and `apiVersion`, as in a real list of
//! built-in types; a large list is written in chunks, never assembled whole. Not faithful:
//! everything is JSON, never protobuf.

use std::convert::Infallible;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures_util::stream;
use serde_json::{json, Map, Value};

use super::catalog::ResourceType;

/// List bodies are streamed in chunks of about this size.
const LIST_CHUNK_BYTES: usize = 64 * 1024;

pub(super) fn json_response(code: u16, body: &Value) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
}

pub(super) fn table_response(version: &str, body: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(format!(
            "application/json;as=Table;v={version};g=meta.k8s.io"
        ))
        .body(serde_json::to_vec(body).unwrap_or_default())
}

pub(super) fn aggregated_response(version: &str, items: Vec<Value>) -> HttpResponse {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    HttpResponse::Ok()
        .content_type(format!(
            "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
        ))
        .insert_header((header::VARY, "Accept"))
        .body(serde_json::to_vec(&body).unwrap_or_default())
}

/// A `Status` body with its fields in kube-apiserver's order.
fn status_body(code: u16, reason: &str, message: &str, details: Option<&Value>) -> String {
    let mut body = format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":{},"reason":{}"#,
        Value::String(message.to_string()),
        Value::String(reason.to_string()),
    );
    if let Some(details) = details {
        body.push_str(r#","details":"#);
        body.push_str(&details_json(details));
    }
    body.push_str(&format!(r#","code":{code}}}"#));
    body
}

/// `details` in kube-apiserver's order: name, group, kind.
fn details_json(details: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["name", "group", "kind"] {
        if let Some(value) = details.get(key) {
            parts.push(format!("{}:{}", Value::String(key.to_string()), value));
        }
    }
    format!("{{{}}}", parts.join(","))
}

pub(super) fn status_value(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<&Value>,
) -> Value {
    serde_json::from_str(&status_body(code, reason, message, details)).unwrap_or(Value::Null)
}

pub(super) fn status_response(
    code: u16,
    reason: &str,
    message: impl Into<String>,
    details: Option<Value>,
) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(status_body(code, reason, &message.into(), details.as_ref()))
}

/// A refusal that becomes a `Status` response.
#[derive(Debug)]
pub(super) struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(
        code: u16,
        reason: &'static str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details,
        }
    }

    pub(super) fn response(self) -> HttpResponse {
        status_response(self.code, self.reason, self.message, self.details)
    }
}

pub(super) fn json_details(name: &str, group: &str, kind: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), name.into());
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    details.insert("kind".into(), kind.into());
    Value::Object(details)
}

pub(super) fn path_not_found() -> HttpResponse {
    status_response(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

pub(super) fn method_not_allowed() -> HttpResponse {
    status_response(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

pub(super) fn not_found(rt: &ResourceType, name: &str) -> HttpResponse {
    status_response(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", rt.key()),
        Some(rt.details(name)),
    )
}

pub(super) fn conflict(rt: &ResourceType, name: &str) -> HttpResponse {
    status_response(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            rt.key()
        ),
        Some(rt.details(name)),
    )
}

pub(super) fn invalid(rt: &ResourceType, name: &str, cause: &str) -> HttpResponse {
    status_response(
        422,
        "Invalid",
        format!("{} \"{name}\" is invalid: {cause}", rt.kind),
        Some(json_details(name, &rt.group, &rt.kind)),
    )
}

/// A list body written item by item: items lose `kind` and `apiVersion`, as in a real
/// list of built-in types.
pub(super) fn streamed_list(
    rt: &ResourceType,
    metadata: Value,
    objects: Vec<Arc<Value>>,
) -> HttpResponse {
    let head = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{},"items":["#,
        rt.kind,
        rt.api_version(),
        metadata
    );
    let mut objects = objects.into_iter().peekable();
    let mut head = Some(head.into_bytes());
    let mut first = true;
    let mut done = false;
    let chunks = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut chunk = head.take().unwrap_or_default();
        while chunk.len() < LIST_CHUNK_BYTES {
            let Some(object) = objects.next() else {
                chunk.extend_from_slice(b"]}");
                done = true;
                break;
            };
            if !first {
                chunk.push(b',');
            }
            first = false;
            write_without_type_meta(&mut chunk, &object);
        }
        Some(Ok::<Bytes, Infallible>(Bytes::from(chunk)))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream::iter(chunks))
}

fn write_without_type_meta(out: &mut Vec<u8>, object: &Value) {
    let Some(fields) = object.as_object() else {
        let _ = serde_json::to_writer(&mut *out, object);
        return;
    };
    out.push(b'{');
    let mut first = true;
    for (key, value) in fields {
        if key == "kind" || key == "apiVersion" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    out.push(b'}');
}

pub(super) fn watch_response(
    events: impl futures_util::Stream<Item = Result<Bytes, Infallible>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(events)
}
