//! The resources: a request under `/api/v1` or `/apis/{group}/{version}` is routed to a
//! resource type of the catalogue, then to list (or watch), get, create, update, patch,
//! delete or deletecollection, or to a subresource: status, scale, log, eviction, and exec,
//! attach, portforward and proxy without an upgrade.
//!
//! Faithful to kube-apiserver v1.32 for every resource listed in the discovery documents:
//! paths (namespaced and cluster-scoped), `generateName`, the namespace of a create must
//! exist, `AlreadyExists`, `Conflict` on a stale resourceVersion or a failed delete
//! precondition, `metadata.name` and the other fields the server owns cannot change, a
//! status subresource's status is ignored by the main resource (and the rest by status),
//! `generation` moves with the spec, no-op updates keep the resourceVersion, `dryRun=All`,
//! paging with `limit`/`continue` and `remainingItemCount`, Table and
//! PartialObjectMetadata output, a namespace's deletion removes what is in it, pods/log,
//! pods/eviction, the scale subresource, and `400 Upgrade request required` for exec,
//! attach and portforward without an upgrade. Not faithful: objects are not validated
//! against schemas, there are no managedFields, deletion is at once (no grace period, no
//! finalizers; an eviction heeds no PodDisruptionBudget), a list from a given
//! resourceVersion is the current one, and a proxy subresource (but the dashboard's
//! service proxy) answers as for an object without endpoints.

use std::sync::Arc;

use actix_web::http::Method;
use actix_web::HttpResponse;
use bytes::Bytes;
use serde_json::{json, Value};

use super::catalog::{catalog, known_resource, ResourceType};
use super::media_types::Representation;
use super::object_helpers::{
    check_type, decode_continue, encode_continue, fill_in_metadata, name_of, namespace_of,
    object_position, parse_body, partial_metadata, prepare_new, random_suffix, resource_version_of,
    scale_of, str_at, without_type_meta,
};
use super::patches::merge_patch;
use super::responses::{
    conflict, invalid, json_details, json_response, method_not_allowed, not_found, path_not_found,
    status_response, streamed_list, table_response,
};
use super::router::Call;
use super::selectors::Selection;
use super::store::Store;
use super::table::table;

impl Call<'_> {
    pub(super) fn resource_request(
        &self,
        group: &str,
        version: &str,
        rest: &[&str],
        body: Bytes,
    ) -> HttpResponse {
        let Some(gv) = catalog().group_version(group, version) else {
            return path_not_found();
        };
        let namespaced_target = match rest {
            ["namespaces", namespace, plural, tail @ ..] if tail.len() <= 2 => gv
                .resources
                .iter()
                .find(|rt| rt.plural == *plural && rt.namespaced)
                .map(|rt| (rt.clone(), Some(*namespace), tail)),
            _ => None,
        };
        let (rt, namespace, tail) = match namespaced_target {
            Some(target) => target,
            None => match rest {
                [plural, tail @ ..] if tail.len() <= 2 => {
                    match catalog().resource(group, version, plural) {
                        Some(rt) => (rt, None, tail),
                        None => return path_not_found(),
                    }
                }
                _ => return path_not_found(),
            },
        };
        let method = self.req.method().clone();
        if !rt.stored() {
            return match (rt.plural.as_str(), &method, tail) {
                ("selfsubjectreviews", &Method::POST, []) => self.self_subject_review(),
                ("tokenreviews", &Method::POST, []) => self.token_review(&body),
                (_, &Method::POST, []) => method_not_allowed(),
                _ => path_not_found(),
            };
        }
        match tail {
            [] => match method {
                Method::GET if self.flag("watch") => self.watch(&rt, namespace),
                Method::GET => self.list(&rt, namespace),
                Method::POST if namespace.is_some() || !rt.namespaced => {
                    self.create(&rt, namespace.unwrap_or(""), &body)
                }
                Method::DELETE if namespace.is_some() || !rt.namespaced => {
                    self.delete_collection(&rt, namespace.unwrap_or(""))
                }
                _ => method_not_allowed(),
            },
            // A namespaced resource has no objects outside a namespace.
            [_, ..] if rt.namespaced && namespace.is_none() => path_not_found(),
            [name] => {
                let namespace = namespace.unwrap_or("");
                match method {
                    Method::GET => self.get(&rt, namespace, name),
                    Method::PUT => self.update(&rt, namespace, name, &body, None),
                    Method::PATCH => self.patch(&rt, namespace, name, &body, None),
                    Method::DELETE => self.delete(&rt, namespace, name, &body),
                    _ => method_not_allowed(),
                }
            }
            [name, subresource] if rt.has_subresource(subresource) => {
                self.subresource(&rt, namespace.unwrap_or(""), name, subresource, &body)
            }
            _ => path_not_found(),
        }
    }

    fn subresource(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        subresource: &str,
        body: &Bytes,
    ) -> HttpResponse {
        let method = self.req.method().clone();
        match (subresource, method) {
            ("status", Method::GET) => self.get(rt, namespace, name),
            ("status", Method::PUT) => self.update(rt, namespace, name, body, Some("status")),
            ("status", Method::PATCH) => self.patch(rt, namespace, name, body, Some("status")),
            ("scale", Method::GET) => match self.store().get(&rt.key(), namespace, name) {
                Some(object) => json_response(200, &scale_of(&object)),
                None => not_found(rt, name),
            },
            ("scale", Method::PUT | Method::PATCH) => self.scale(rt, namespace, name, body),
            ("log", Method::GET) => {
                if self.store().get(&rt.key(), namespace, name).is_none() {
                    return not_found(rt, name);
                }
                let log = self
                    .store()
                    .pod_logs
                    .get(&(namespace.to_string(), name.to_string()))
                    .cloned()
                    .unwrap_or_default();
                HttpResponse::Ok().content_type("text/plain").body(log)
            }
            ("eviction", Method::POST) => {
                if self.store().remove(&rt.key(), namespace, name).is_none() {
                    return not_found(rt, name);
                }
                json_response(
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                )
            }
            ("exec" | "attach" | "portforward", Method::GET | Method::POST) => {
                if self.store().get(&rt.key(), namespace, name).is_none() {
                    return not_found(rt, name);
                }
                // kube-apiserver answers this without an upgrade; with one it would proxy
                // to the kubelet, which the stand-in does not have.
                status_response(400, "BadRequest", "Upgrade request required", None)
            }
            ("proxy", _) => status_response(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for {} \"{name}\"", rt.singular),
                None,
            ),
            _ => method_not_allowed(),
        }
    }

    fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> HttpResponse {
        let Some(object) = self.store().get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        match self.representation() {
            Ok(Representation::Table { version, include }) => {
                let rv = resource_version_of(&object).to_string();
                table_response(
                    version,
                    &table(
                        rt,
                        &[object],
                        include,
                        true,
                        json!({"resourceVersion": rv}),
                        version,
                    ),
                )
            }
            Ok(Representation::PartialMetadata { version }) => {
                json_response(200, &partial_metadata(&object, version))
            }
            Ok(Representation::Object) => json_response(200, &object),
            Err(error) => error.response(),
        }
    }

    fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> HttpResponse {
        let selection = match Selection::from_query(rt, &self.query) {
            Ok(selection) => selection,
            Err(error) => return error.response(),
        };
        let representation = match self.representation() {
            Ok(representation) => representation,
            Err(error) => return error.response(),
        };
        let (objects, revision) = {
            let store = self.store();
            (store.list(&rt.key(), namespace), store.revision)
        };
        let mut objects: Vec<Arc<Value>> = objects
            .into_iter()
            .filter(|object| selection.matches(object))
            .collect();
        if let Some(token) = self.param("continue").filter(|token| !token.is_empty()) {
            let Some(start) = decode_continue(token) else {
                return status_response(
                    400,
                    "BadRequest",
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                    None,
                );
            };
            objects.retain(|object| object_position(object) > start);
        }
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        let limit = self
            .param("limit")
            .and_then(|limit| limit.parse::<usize>().ok())
            .unwrap_or(0);
        if limit > 0 && objects.len() > limit {
            let remaining = objects.len() - limit;
            objects.truncate(limit);
            if let Some(last) = objects.last() {
                metadata["continue"] = encode_continue(revision, &object_position(last)).into();
                metadata["remainingItemCount"] = remaining.into();
            }
        }
        match representation {
            Representation::Table { version, include } => table_response(
                version,
                &table(rt, &objects, include, true, metadata, version),
            ),
            Representation::PartialMetadata { version } => {
                let items: Vec<Value> = objects
                    .iter()
                    .map(|object| {
                        let mut item = partial_metadata(object, version);
                        if let Some(item) = item.as_object_mut() {
                            item.remove("kind");
                            item.remove("apiVersion");
                        }
                        item
                    })
                    .collect();
                json_response(
                    200,
                    &json!({
                        "kind": "PartialObjectMetadataList",
                        "apiVersion": format!("meta.k8s.io/{version}"),
                        "metadata": metadata,
                        "items": items,
                    }),
                )
            }
            Representation::Object => streamed_list(rt, metadata, objects),
        }
    }

    pub(super) fn create(&self, rt: &ResourceType, namespace: &str, body: &Bytes) -> HttpResponse {
        let mut object = match parse_body(body) {
            Ok(object) => object,
            Err(error) => return error.response(),
        };
        if let Err(error) = check_type(rt, &object) {
            return error.response();
        }
        if rt.namespaced {
            let given = namespace_of(&object);
            if !given.is_empty() && given != namespace {
                return status_response(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                    None,
                );
            }
        }
        if name_of(&object).is_empty() {
            let generate = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if generate.is_empty() {
                return invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                );
            }
            object["metadata"]["name"] = Value::String(format!("{generate}{}", random_suffix()));
        }
        let name = name_of(&object).to_string();
        prepare_new(rt, &mut object);
        fill_in_metadata(rt, &mut object, namespace);
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        let mut store = self.store();
        if rt.namespaced
            && store
                .get(&known_resource("namespaces").key(), "", namespace)
                .is_none()
        {
            return status_response(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
                Some(json_details(namespace, "", "namespaces")),
            );
        }
        if store.get(&rt.key(), namespace_of(&object), &name).is_some() {
            return status_response(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.key()),
                Some(rt.details(&name)),
            );
        }
        if self.dry_run() {
            return json_response(201, &object);
        }
        let stored = store.write(rt, object);
        json_response(201, &stored)
    }

    /// PUT: replace the object (or only its status, for `subresource == Some("status")`).
    fn update(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: &Bytes,
        subresource: Option<&str>,
    ) -> HttpResponse {
        let object = match parse_body(body) {
            Ok(object) => object,
            Err(error) => return error.response(),
        };
        if let Err(error) = check_type(rt, &object) {
            return error.response();
        }
        let given = name_of(&object);
        if given != name {
            return status_response(
                400,
                "BadRequest",
                format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                ),
                None,
            );
        }
        if rt.namespaced {
            let given = namespace_of(&object);
            if !given.is_empty() && given != namespace {
                return status_response(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                    None,
                );
            }
        }
        let mut store = self.store();
        let Some(current) = store.get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        self.replace(&mut store, rt, &current, object, subresource)
    }

    /// The common end of update and patch: preconditions, immutable fields, no-op detection.
    pub(super) fn replace(
        &self,
        store: &mut Store,
        rt: &ResourceType,
        current: &Arc<Value>,
        mut object: Value,
        subresource: Option<&str>,
    ) -> HttpResponse {
        let name = name_of(current).to_string();
        let given_rv = resource_version_of(&object);
        if !given_rv.is_empty() && given_rv != resource_version_of(current) {
            return conflict(rt, &name);
        }
        if name_of(&object) != name {
            return invalid(
                rt,
                &name,
                "metadata.name: Invalid value: field is immutable",
            );
        }
        let mut next = (**current).clone();
        if subresource == Some("status") {
            next["status"] = object["status"].take();
        } else {
            // The main resource ignores status when a status subresource exists.
            if rt.has_subresource("status") {
                object["status"] = current["status"].clone();
                if object["status"].is_null() {
                    if let Some(fields) = object.as_object_mut() {
                        fields.remove("status");
                    }
                }
            }
            let generation = current["metadata"]["generation"].clone();
            let spec_changed = object["spec"] != current["spec"];
            for field in ["uid", "creationTimestamp", "namespace", "generation"] {
                object["metadata"][field] = current["metadata"][field].clone();
            }
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.retain(|_, value| !value.is_null());
            }
            if let Some(generation) = generation.as_u64() {
                let generation = if spec_changed {
                    generation + 1
                } else {
                    generation
                };
                object["metadata"]["generation"] = generation.into();
            }
            object["kind"] = current["kind"].clone();
            object["apiVersion"] = current["apiVersion"].clone();
            next = object;
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if next == **current || self.dry_run() {
            return json_response(200, &next);
        }
        let stored = store.write(rt, next);
        json_response(200, &stored)
    }

    fn scale(&self, rt: &ResourceType, namespace: &str, name: &str, body: &Bytes) -> HttpResponse {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return status_response(
                400,
                "BadRequest",
                "the body of the request was in an unknown format",
                None,
            );
        };
        let mut store = self.store();
        let Some(current) = store.get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        let mut scale = scale_of(&current);
        merge_patch(&mut scale, &patch);
        let mut next = (*current).clone();
        next["spec"]["replicas"] = scale["spec"]["replicas"].clone();
        if let Some(generation) = next["metadata"]["generation"].as_u64() {
            next["metadata"]["generation"] = (generation + 1).into();
        }
        let stored = if self.dry_run() {
            Arc::new(next)
        } else {
            store.write(rt, next)
        };
        json_response(200, &scale_of(&stored))
    }

    fn delete(&self, rt: &ResourceType, namespace: &str, name: &str, body: &Bytes) -> HttpResponse {
        let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut store = self.store();
        let Some(current) = store.get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        let preconditions = &options["preconditions"];
        if let Some(uid) = preconditions["uid"].as_str() {
            if current["metadata"]["uid"].as_str() != Some(uid) {
                return status_response(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        rt.key(),
                        str_at(&current["metadata"], "uid")
                    ),
                    Some(rt.details(name)),
                );
            }
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str() {
            if resource_version_of(&current) != rv {
                return conflict(rt, name);
            }
        }
        if self.dry_run() {
            return json_response(200, &current);
        }
        if rt.key() == "namespaces" {
            // Namespace deletion removes what is in it (at once, not via a controller).
            let keys: Vec<String> = store.objects.keys().cloned().collect();
            for key in keys {
                let names: Vec<String> = store
                    .list(&key, Some(name))
                    .iter()
                    .map(|object| name_of(object).to_string())
                    .collect();
                for object_name in names {
                    store.remove(&key, name, &object_name);
                }
            }
        }
        match store.remove(&rt.key(), namespace, name) {
            Some(deleted) => json_response(200, &deleted),
            None => not_found(rt, name),
        }
    }

    fn delete_collection(&self, rt: &ResourceType, namespace: &str) -> HttpResponse {
        let selection = match Selection::from_query(rt, &self.query) {
            Ok(selection) => selection,
            Err(error) => return error.response(),
        };
        let mut store = self.store();
        let namespace = rt.namespaced.then_some(namespace);
        let doomed: Vec<Arc<Value>> = store
            .list(&rt.key(), namespace)
            .into_iter()
            .filter(|object| selection.matches(object))
            .collect();
        let mut items = Vec::new();
        for object in doomed {
            if self.dry_run() {
                items.push((*object).clone());
            } else if let Some(deleted) =
                store.remove(&rt.key(), namespace_of(&object), name_of(&object))
            {
                items.push(without_type_meta(&deleted));
            }
        }
        json_response(
            200,
            &json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": store.revision.to_string()},
                "items": items,
            }),
        )
    }
}
