//! Documents: version, root paths, discovery, OpenAPI. `/version`, the root paths
//! document (`GET /`), legacy discovery (`/api`, `/apis`, `/apis/{group}`, and the group
//! version documents) and aggregated discovery (`application/json;g=apidiscovery.k8s.io;
//! v=v2;as=APIGroupDiscoveryList`, or `v2beta1`), OpenAPI v3 (the root and one document per
//! group version) and OpenAPI v2.
//!
//! Faithful to kube-apiserver v1.32: aggregated discovery is derived from the legacy
//! documents as kube-apiserver derives it, and is answered only when the client asks for it
//! (and [`super::ApiServerBuilder::legacy_discovery`] was not set); OpenAPI v3 has the paths
//! and operations with `x-kubernetes-group-version-kind` and the query parameters (notably
//! `fieldValidation`). Not faithful: OpenAPI has no schemas, and OpenAPI v2 is answered in
//! JSON only (a client that accepts only protobuf, as kubectl does, gets `406` and does
//! without).

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

use super::catalog::{catalog, GroupVersion};
use super::media_types::media_ranges;
use super::object_helpers::str_at;
use super::responses::{aggregated_response, json_response, status_response};
use super::router::Call;
use super::KUBERNETES_VERSION;

impl Call<'_> {
    pub(super) fn discovery_core(&self) -> HttpResponse {
        if let Some(version) = self.aggregated_discovery_version() {
            let core = &catalog().group_versions[0];
            let item = json!({
                "metadata": {"creationTimestamp": null},
                "versions": [aggregated_version(core)],
            });
            return aggregated_response(version, vec![item]);
        }
        let address = self
            .shared
            .address
            .get()
            .map(ToString::to_string)
            .unwrap_or_default();
        json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }),
        )
    }

    pub(super) fn discovery_groups(&self) -> HttpResponse {
        if let Some(version) = self.aggregated_discovery_version() {
            let items = catalog()
                .groups()
                .into_iter()
                .map(|group| {
                    let versions: Vec<Value> = catalog()
                        .group_versions
                        .iter()
                        .filter(|gv| gv.group == group)
                        .map(aggregated_version)
                        .collect();
                    json!({
                        "metadata": {"name": group, "creationTimestamp": null},
                        "versions": versions,
                    })
                })
                .collect();
            return aggregated_response(version, items);
        }
        let groups: Vec<Value> = catalog()
            .groups()
            .into_iter()
            .filter_map(api_group)
            .map(|mut group| {
                if let Some(object) = group.as_object_mut() {
                    object.remove("kind");
                    object.remove("apiVersion");
                }
                group
            })
            .collect();
        json_response(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        )
    }

    /// `v2` or `v2beta1` when the client asks for aggregated discovery and it is enabled.
    fn aggregated_discovery_version(&self) -> Option<&'static str> {
        if !self.shared.aggregated_discovery {
            return None;
        }
        for range in media_ranges(self.accept()) {
            if range.param("g") == Some("apidiscovery.k8s.io")
                && range.param("as") == Some("APIGroupDiscoveryList")
            {
                match range.param("v") {
                    Some("v2") => return Some("v2"),
                    Some("v2beta1") => return Some("v2beta1"),
                    _ => {}
                }
            } else if range.is_json() && range.param("as").is_none() {
                return None;
            }
        }
        None
    }

    pub(super) fn openapi_v2(&self) -> HttpResponse {
        // kube-apiserver answers protobuf or JSON; the stand-in only has JSON, so a client
        // that accepts only protobuf (kubectl does) gets 406 and does without.
        if media_ranges(self.accept())
            .iter()
            .any(|range| range.is_json() && range.param("as").is_none())
            || self.accept().is_empty()
        {
            json_response(200, &openapi_v2_document())
        } else {
            status_response(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json",
                None,
            )
        }
    }
}

pub(super) fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "4cb5f0764b8d5f425645c6f433394fede34a8a26",
        "gitTreeState": "clean",
        "buildDate": "2025-04-22T16:03:07Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(super) fn root_paths() -> Value {
    let mut paths = vec![
        "/.well-known/openid-configuration".to_string(),
        "/api".to_string(),
        "/api/v1".to_string(),
        "/apis".to_string(),
        "/apis/".to_string(),
        "/healthz".to_string(),
        "/healthz/etcd".to_string(),
        "/healthz/log".to_string(),
        "/healthz/ping".to_string(),
        "/livez".to_string(),
        "/livez/etcd".to_string(),
        "/livez/log".to_string(),
        "/livez/ping".to_string(),
        "/metrics".to_string(),
        "/openapi/v2".to_string(),
        "/openapi/v3".to_string(),
        "/openapi/v3/".to_string(),
        "/openid/v1/jwks".to_string(),
        "/readyz".to_string(),
        "/readyz/etcd".to_string(),
        "/readyz/log".to_string(),
        "/readyz/ping".to_string(),
        "/version".to_string(),
    ];
    for gv in catalog()
        .group_versions
        .iter()
        .filter(|gv| !gv.group.is_empty())
    {
        paths.push(format!("/apis/{}", gv.group));
        paths.push(format!("/apis/{}", gv.group_version()));
    }
    paths.sort();
    paths.dedup();
    json!({ "paths": paths })
}

pub(super) fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = catalog()
        .group_versions
        .iter()
        .filter(|gv| gv.group == group && !group.is_empty())
        .map(|gv| json!({"groupVersion": gv.group_version(), "version": gv.version}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": preferred,
    }))
}

/// One version of aggregated discovery, derived from the legacy document as
/// kube-apiserver derives it.
fn aggregated_version(gv: &GroupVersion) -> Value {
    let entries = gv.document["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut resources: Vec<Value> = Vec::new();
    for entry in entries.iter().filter(|e| !str_at(e, "name").contains('/')) {
        let name = str_at(entry, "name");
        let mut resource = json!({
            "resource": name,
            "responseKind": {"group": "", "version": "", "kind": entry["kind"]},
            "scope": if entry["namespaced"].as_bool() == Some(true) { "Namespaced" } else { "Cluster" },
            "singularResource": entry["singularName"],
            "verbs": entry["verbs"],
        });
        for optional in ["shortNames", "categories"] {
            if !entry[optional].is_null() {
                resource[optional] = entry[optional].clone();
            }
        }
        let prefix = format!("{name}/");
        let subresources: Vec<Value> = entries
            .iter()
            .filter_map(|e| {
                let sub = str_at(e, "name").strip_prefix(&prefix)?;
                Some(json!({
                    "subresource": sub,
                    "responseKind": {
                        "group": str_at(e, "group"),
                        "version": str_at(e, "version"),
                        "kind": e["kind"],
                    },
                    "verbs": e["verbs"],
                }))
            })
            .collect();
        if !subresources.is_empty() {
            resource["subresources"] = Value::Array(subresources);
        }
        resources.push(resource);
    }
    json!({"version": gv.version, "resources": resources, "freshness": "Current"})
}

/// A stable short hash of a document, for the `?hash=` of OpenAPI v3 URLs.
fn document_hash(document: &Value) -> String {
    // FNV-1a: enough to change when the document changes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in document.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016X}")
}

pub(super) fn openapi_v3_root() -> Value {
    let mut paths = Map::new();
    for gv in &catalog().group_versions {
        if let Some(document) = openapi_v3_document(&gv.path()) {
            paths.insert(
                gv.path(),
                json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", gv.path(), document_hash(&document))}),
            );
        }
    }
    json!({ "paths": paths })
}

/// The OpenAPI v3 document of one group version: its paths and operations, with the
/// `x-kubernetes-group-version-kind` extension and the query parameters (notably
/// `fieldValidation`, which kubectl looks for before it asks the server to validate),
/// without schemas (`components.schemas` is empty, so kubectl builds strategic merge
/// patches from its compiled-in types).
pub(super) fn openapi_v3_document(path: &str) -> Option<Value> {
    let gv = catalog()
        .group_versions
        .iter()
        .find(|gv| gv.path() == path)?;
    let query = |name: &str, description: &str| json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}});
    let dry_run = query(
        "dryRun",
        "When present, indicates that modifications should not be persisted.",
    );
    let field_manager = query(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    );
    let field_validation = query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict");
    let mut paths = Map::new();
    for rt in gv.resources.iter().filter(|rt| rt.stored()) {
        let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
        let base = if gv.group.is_empty() {
            format!("/api/{}", gv.version)
        } else {
            format!("/apis/{}/{}", gv.group, gv.version)
        };
        let collection = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{base}/{}", rt.plural)
        };
        let operation = |action: &str, verb: &str, parameters: Vec<Value>| {
            json!({
                "description": format!("{verb} {}", rt.kind),
                "operationId": format!("{action}{}", rt.kind),
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let mut path_parameters = Vec::new();
        if rt.namespaced {
            path_parameters.push(json!({"name": "namespace", "in": "path", "description": "object name and auth scope, such as for teams and projects", "required": true, "schema": {"type": "string", "uniqueItems": true}}));
        }
        let mut create = operation(
            "post",
            "create",
            vec![
                dry_run.clone(),
                field_manager.clone(),
                field_validation.clone(),
            ],
        );
        create["requestBody"] = json!({"content": {"*/*": {}}, "required": true});
        paths.insert(
            collection.clone(),
            json!({
                "get": operation("list", "list or watch objects of kind", vec![]),
                "post": create,
                "delete": operation("deletecollection", "delete collection of", vec![dry_run.clone()]),
                "parameters": path_parameters.clone(),
            }),
        );
        let mut patch = operation(
            "patch",
            "partially update the specified",
            vec![
                dry_run.clone(),
                field_manager.clone(),
                field_validation.clone(),
                query("force", "Force is going to \"force\" Apply requests."),
            ],
        );
        patch["requestBody"] = json!({"content": {
            "application/apply-patch+yaml": {},
            "application/json-patch+json": {},
            "application/merge-patch+json": {},
            "application/strategic-merge-patch+json": {},
        }, "required": true});
        let mut update = operation(
            "put",
            "replace the specified",
            vec![
                dry_run.clone(),
                field_manager.clone(),
                field_validation.clone(),
            ],
        );
        update["requestBody"] = json!({"content": {"*/*": {}}, "required": true});
        let mut object_parameters = vec![
            json!({"name": "name", "in": "path", "description": format!("name of the {}", rt.kind), "required": true, "schema": {"type": "string", "uniqueItems": true}}),
        ];
        object_parameters.extend(path_parameters);
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation("get", "read the specified", vec![]),
                "put": update,
                "patch": patch,
                "delete": operation("delete", "delete", vec![dry_run.clone()]),
                "parameters": object_parameters,
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// A small Swagger 2.0 document with the same paths, for clients that accept JSON.
fn openapi_v2_document() -> Value {
    let mut paths = Map::new();
    for gv in &catalog().group_versions {
        if let Some(document) = openapi_v3_document(&gv.path()) {
            if let Some(gv_paths) = document["paths"].as_object() {
                for (path, item) in gv_paths {
                    let mut item = item.clone();
                    if let Some(operations) = item.as_object_mut() {
                        for (key, operation) in operations.iter_mut() {
                            if key == "parameters" {
                                swagger_parameters(operation);
                            } else if let Some(operation) = operation.as_object_mut() {
                                operation.remove("requestBody");
                                if let Some(parameters) = operation.get_mut("parameters") {
                                    swagger_parameters(parameters);
                                }
                            }
                        }
                    }
                    paths.insert(path.clone(), item);
                }
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": {},
    })
}

/// OpenAPI v3 parameters (`schema: {type}`) as Swagger 2.0 writes them (`type` inline).
fn swagger_parameters(parameters: &mut Value) {
    for parameter in parameters.as_array_mut().into_iter().flatten() {
        if let Some(fields) = parameter.as_object_mut() {
            if let Some(Value::Object(schema)) = fields.remove("schema") {
                fields.extend(schema);
            }
        }
    }
}
