//! The resource catalogue, read from the discovery documents (`../discovery/*.json`): the
//! group versions the stand-in serves and, in each, the resource types with their kind,
//! scope, verbs and subresources.
//!
//! The documents are trimmed copies of those recorded from a real API server in
//! kubernetes/kubernetes `api/discovery/`, so what is listed is what kube-apiserver v1.32
//! lists for those resources. Only the resources with `list` among their verbs are stored
//! (`selfsubjectreviews` and `tokenreviews` are answered, not stored); group versions
//! not in the documents do not exist here.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use super::object_helpers::{str_at, strings_at};

/// One resource type as discovery lists it.
#[derive(Debug)]
pub(super) struct ResourceType {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
    pub(super) singular: String,
    pub(super) kind: String,
    pub(super) namespaced: bool,
    verbs: Vec<String>,
    subresources: Vec<String>,
}

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key and the name in messages: `pods`, `deployments.apps`.
    pub(super) fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(super) fn stored(&self) -> bool {
        self.verbs.iter().any(|verb| verb == "list")
    }

    pub(super) fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|sub| sub == name)
    }

    /// `details` of a Status about one object of this type.
    pub(super) fn details(&self, name: &str) -> Value {
        let mut details = Map::new();
        details.insert("name".into(), name.into());
        if !self.group.is_empty() {
            details.insert("group".into(), self.group.clone().into());
        }
        details.insert("kind".into(), self.plural.clone().into());
        Value::Object(details)
    }
}

/// One group version and its discovery document.
pub(super) struct GroupVersion {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) document: Value,
    pub(super) resources: Vec<Arc<ResourceType>>,
}

impl GroupVersion {
    pub(super) fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `api/v1` or `apis/apps/v1`, as in the OpenAPI v3 root.
    pub(super) fn path(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }
}

pub(super) struct Catalog {
    pub(super) group_versions: Vec<GroupVersion>,
}

pub(super) fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let documents = [
            include_str!("../discovery/api__v1.json"),
            include_str!("../discovery/apis__apps__v1.json"),
            include_str!("../discovery/apis__authentication.k8s.io__v1.json"),
        ];
        let group_versions = documents
            .iter()
            .map(|text| {
                let document: Value =
                    serde_json::from_str(text).expect("discovery documents are JSON");
                let group_version = document["groupVersion"].as_str().unwrap_or_default();
                let (group, version) = match group_version.split_once('/') {
                    Some((group, version)) => (group.to_string(), version.to_string()),
                    None => (String::new(), group_version.to_string()),
                };
                let entries = document["resources"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let resources = entries
                    .iter()
                    .filter(|entry| !str_at(entry, "name").contains('/'))
                    .map(|entry| {
                        let plural = str_at(entry, "name").to_string();
                        let prefix = format!("{plural}/");
                        Arc::new(ResourceType {
                            group: group.clone(),
                            version: version.clone(),
                            singular: str_at(entry, "singularName").to_string(),
                            kind: str_at(entry, "kind").to_string(),
                            namespaced: entry["namespaced"].as_bool().unwrap_or(false),
                            verbs: strings_at(entry, "verbs"),
                            subresources: entries
                                .iter()
                                .filter_map(|e| str_at(e, "name").strip_prefix(&prefix))
                                .map(str::to_string)
                                .collect(),
                            plural,
                        })
                    })
                    .collect();
                GroupVersion {
                    group,
                    version,
                    document,
                    resources,
                }
            })
            .collect();
        Catalog { group_versions }
    })
}

impl Catalog {
    pub(super) fn group_version(&self, group: &str, version: &str) -> Option<&GroupVersion> {
        self.group_versions
            .iter()
            .find(|gv| gv.group == group && gv.version == version)
    }

    pub(super) fn resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceType>> {
        self.group_version(group, version)?
            .resources
            .iter()
            .find(|rt| rt.plural == plural)
            .cloned()
    }

    /// `pods`, `deployments` or `deployments.apps`.
    fn resource_named(&self, name: &str) -> Option<Arc<ResourceType>> {
        self.group_versions
            .iter()
            .flat_map(|gv| gv.resources.iter())
            .find(|rt| rt.plural == name || rt.key() == name)
            .cloned()
    }

    /// API groups other than the core group, in order.
    pub(super) fn groups(&self) -> Vec<&str> {
        let mut groups: Vec<&str> = Vec::new();
        for gv in &self.group_versions {
            if !gv.group.is_empty() && !groups.contains(&gv.group.as_str()) {
                groups.push(&gv.group);
            }
        }
        groups
    }
}

pub(super) fn known_resource(name: &str) -> Arc<ResourceType> {
    match catalog().resource_named(name) {
        Some(rt) if rt.stored() => rt,
        _ => panic!("the API server stand-in does not store {name:?}; see tests/common/discovery"),
    }
}
