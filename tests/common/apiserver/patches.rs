//! Patches: `PATCH` of an object or its status with a JSON merge patch (RFC 7386), a
//! strategic merge patch, a JSON patch (RFC 6902) or a server-side apply patch.
//!
//! Faithful: the content types and the `415` for any other, JSON patch's operations and
//! errors, a patch without a resourceVersion applies to the current object, server-side
//! apply creates what does not exist. Not faithful: strategic merge patch and server-side
//! apply are treated as JSON merge patch with merge keys for the usual lists of the built-in
//! types (no `$setElementOrder`, `$retainKeys`, `$deleteFromPrimitiveList`; no field
//! managers, no conflicts), and an apply patch must be written as JSON (not YAML).

use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::{json, Value};

use super::catalog::ResourceType;
use super::object_helpers::str_at;
use super::responses::{not_found, status_response};
use super::router::Call;

impl Call<'_> {
    pub(super) fn patch(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: &Bytes,
        subresource: Option<&str>,
    ) -> HttpResponse {
        let content_type = self
            .req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let kind = match content_type.as_str() {
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/json-patch+json" => PatchKind::Json,
            "application/apply-patch+yaml" => PatchKind::Apply,
            _ => {
                return status_response(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
                    None,
                )
            }
        };
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            let message = if kind == PatchKind::Apply {
                "error decoding YAML: the API server stand-in only reads apply patches written as JSON"
            } else {
                "the body of the request was in an unknown format"
            };
            return status_response(400, "BadRequest", message, None);
        };
        let mut store = self.store();
        let current = match store.get(&rt.key(), namespace, name) {
            Some(current) => current,
            None if kind == PatchKind::Apply && subresource.is_none() => {
                // Server-side apply creates what does not exist.
                drop(store);
                return self.create(rt, namespace, body);
            }
            None => return not_found(rt, name),
        };
        let mut patched = (*current).clone();
        match kind {
            PatchKind::Merge | PatchKind::Apply => merge_patch(&mut patched, &patch),
            PatchKind::Strategic => strategic_merge_patch(&mut patched, &patch, ""),
            PatchKind::Json => {
                if let Err(message) = json_patch(&mut patched, &patch) {
                    return status_response(422, "Invalid", message, Some(rt.details(name)));
                }
            }
        }
        // A patch that does not name a resourceVersion applies to whatever is current.
        if patch["metadata"]["resourceVersion"].is_null() || kind == PatchKind::Json {
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        self.replace(&mut store, rt, &current, patched, subresource)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(fields) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merge key of the lists strategic merge patch merges by key in the built-in types.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "hostAliases"
        | "resourceClaims" => Some("name"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "ports" if items.iter().all(|item| item.get("containerPort").is_some()) => {
            Some("containerPort")
        }
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Strategic merge patch, approximated: a merge patch whose lists of the built-in types
/// merge by their merge key, honouring `$patch: delete|replace` and ignoring the other
/// directives (`$setElementOrder`, `$retainKeys`, `$deleteFromPrimitiveList`).
fn strategic_merge_patch(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(patch_fields) => {
            if patch_fields.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replacement = patch.clone();
                if let Some(fields) = replacement.as_object_mut() {
                    fields.remove("$patch");
                }
                *target = replacement;
                return;
            }
            if !target.is_object() {
                *target = json!({});
            }
            let Some(fields) = target.as_object_mut() else {
                return;
            };
            for (key, value) in patch_fields {
                if key.starts_with('$') {
                    continue;
                }
                if value.is_null() {
                    fields.remove(key);
                } else {
                    strategic_merge_patch(
                        fields.entry(key.clone()).or_insert(Value::Null),
                        value,
                        key,
                    );
                }
            }
        }
        Value::Array(patch_items) => {
            let key = merge_key(field, patch_items);
            let (Some(key), Value::Array(items)) = (key, &mut *target) else {
                *target = patch.clone();
                return;
            };
            for patch_item in patch_items {
                let Some(id) = patch_item.get(key) else {
                    continue;
                };
                let position = items.iter().position(|item| item.get(key) == Some(id));
                let delete = patch_item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        items.remove(i);
                    }
                    (Some(i), false) => strategic_merge_patch(&mut items[i], patch_item, ""),
                    (None, false) => {
                        let mut item = Value::Null;
                        strategic_merge_patch(&mut item, patch_item, "");
                        items.push(item);
                    }
                    (None, true) => {}
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations = patch
        .as_array()
        .ok_or_else(|| "a JSON patch must be a list of operations".to_string())?;
    for operation in operations {
        let op = str_at(operation, "op");
        let path = str_at(operation, "path");
        match op {
            "add" => pointer_add(target, path, operation["value"].clone())?,
            "remove" => {
                pointer_remove(target, path)?;
            }
            "replace" => {
                pointer_remove(target, path)?;
                pointer_add(target, path, operation["value"].clone())?;
            }
            "move" => {
                let value = pointer_remove(target, str_at(operation, "from"))?;
                pointer_add(target, path, value)?;
            }
            "copy" => {
                let value = target
                    .pointer(str_at(operation, "from"))
                    .cloned()
                    .ok_or_else(|| format!("doc is missing path: {}", str_at(operation, "from")))?;
                pointer_add(target, path, value)?;
            }
            "test" => {
                if target.pointer(path) != Some(&operation["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer: {path}"))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn pointer_add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(fields)) => {
            fields.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| format!("add operation index out of bounds: {path}"))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path}")),
    }
}

fn pointer_remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("doc is missing path: \"{path}\": missing value");
    match target.pointer_mut(&parent) {
        Some(Value::Object(fields)) => fields.remove(&last).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(missing)?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}
