//! Object helpers: reading the fields of an object (JSON), what the API server fills in on
//! every object and what a create strategy does to a new one, the Scale of an object, the
//! checks on a request body, and the `continue` tokens of paged lists.
//!
//! Faithful: `kind`, `apiVersion`, `metadata.namespace`, `uid` and `creationTimestamp` are
//! set as kube-apiserver sets them; a new pod is `Pending`, a new secret `Opaque`, a new
//! namespace `Active` with its `kubernetes.io/metadata.name` label, a new apps object has
//! `generation: 1` and one replica; generated names use kube-apiserver's alphabet; a body
//! of another kind or apiVersion is refused with kube-apiserver's message; `continue`
//! tokens have kube-apiserver's form (base64 JSON with `v`, `rv`, `start`). Not faithful:
//! the create strategies of other types do nothing, and a token's `rv` is not checked (a
//! continued list reads the current state).

use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::catalog::ResourceType;
use super::responses::ApiError;

pub(super) fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

pub(super) fn strings_at(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn name_of(object: &Value) -> &str {
    str_at(&object["metadata"], "name")
}

pub(super) fn namespace_of(object: &Value) -> &str {
    str_at(&object["metadata"], "namespace")
}

pub(super) fn resource_version_of(object: &Value) -> &str {
    str_at(&object["metadata"], "resourceVersion")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Sets what the API server sets on every object: type, namespace, uid, creation time.
pub(super) fn fill_in_metadata(rt: &ResourceType, object: &mut Value, namespace: &str) {
    if !object.is_object() {
        *object = json!({});
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["kind"] = Value::String(rt.kind.clone());
    object["apiVersion"] = Value::String(rt.api_version());
    let metadata = &mut object["metadata"];
    if rt.namespaced {
        metadata["namespace"] = Value::String(namespace.to_string());
    } else if let Some(metadata) = metadata.as_object_mut() {
        metadata.remove("namespace");
    }
    if metadata["uid"].as_str().unwrap_or_default().is_empty() {
        metadata["uid"] = Value::String(uuid::Uuid::new_v4().to_string());
    }
    if metadata["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        metadata["creationTimestamp"] = Value::String(now_rfc3339());
    }
}

/// What a resource's create strategy does to a new object.
pub(super) fn prepare_new(rt: &ResourceType, object: &mut Value) {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            metadata.remove(field);
        }
    }
    match rt.key().as_str() {
        "pods" => {
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "secrets" if str_at(object, "type").is_empty() => {
            object["type"] = "Opaque".into();
        }
        "namespaces" => {
            let name = name_of(object).to_string();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = Value::String(name);
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        _ if rt.group == "apps" => {
            object["metadata"]["generation"] = 1.into();
            if !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            if object["spec"]["replicas"].is_null() && rt.plural != "daemonsets" {
                object["spec"]["replicas"] = 1.into();
            }
            object["status"] = json!({});
        }
        _ => {}
    }
}

pub(super) fn random_suffix() -> String {
    // The alphabet of k8s.io/apimachinery/pkg/util/rand: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect()
}

pub(super) fn filler(len: usize) -> String {
    const PATTERN: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut text = PATTERN.repeat(len / PATTERN.len() + 1);
    text.truncate(len);
    text
}

pub(super) fn without_type_meta(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(fields) = object.as_object_mut() {
        fields.remove("kind");
        fields.remove("apiVersion");
    }
    object
}

pub(super) fn partial_metadata(object: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object["metadata"],
    })
}

pub(super) fn scale_of(object: &Value) -> Value {
    let selector = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let metadata = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_u64().unwrap_or(0)},
        "status": {
            "replicas": object["status"]["replicas"].as_u64().unwrap_or(0),
            "selector": selector,
        },
    })
}

pub(super) fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(object) if object.is_object() => Ok(object),
        Ok(_) | Err(_) => Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the object provided is unrecognized ({})",
                if body.is_empty() {
                    "empty body"
                } else {
                    "not a JSON object"
                }
            ),
            None,
        )),
    }
}

/// The body's `kind` and `apiVersion`, when given, must be this resource's.
pub(super) fn check_type(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let api_version = str_at(object, "apiVersion");
    if !api_version.is_empty() && api_version != rt.api_version() {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.api_version()
            ),
            None,
        ));
    }
    let kind = str_at(object, "kind");
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            ),
            None,
        ));
    }
    Ok(())
}

/// Where an object sorts in a list: `namespace/name`.
pub(super) fn object_position(object: &Value) -> String {
    format!("{}/{}", namespace_of(object), name_of(object))
}

pub(super) fn encode_continue(revision: u64, position: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": format!("{position}\u{0}")});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

pub(super) fn decode_continue(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .ok()?;
    let token: Value = serde_json::from_slice(&bytes).ok()?;
    let start = token["start"].as_str()?;
    Some(start.strip_suffix('\u{0}').unwrap_or(start).to_string())
}
