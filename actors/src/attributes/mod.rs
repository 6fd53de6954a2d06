//! Kubernetes request attributes, derived once from method, path and query, the way the
//! API server's RequestInfo does, so that policies can speak of verbs and resources.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

mod query;

use query::{is_path_segment_name, list_options, query_bool};

/// What a request does, in Kubernetes terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `connect`; for non-resource paths, the lower-case method mapped
    /// the same way (`get`, `create`, ...). Borrowed when it is one of these (nearly
    /// always), so that deriving the attributes does not allocate it.
    pub verb: Cow<'static, str>,
    /// True for `/api/...` and `/apis/...` resource requests.
    pub is_resource: bool,
    /// API group; empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// Resource, e.g. `pods`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Subresource, e.g. `exec`, `log`, `proxy`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// Namespace, when the request is namespaced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Object name, when the request names one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Subresources that open a stream into the cluster: always the verb `connect`.
const CONNECT_SUBRESOURCES: [&str; 4] = ["exec", "attach", "portforward", "proxy"];

impl RequestAttributes {
    /// Derives the attributes. `path` is the Kubernetes path (starting with `/`), already
    /// checked for dot segments; `query` the raw query string; `upgrade` whether the
    /// request asks for a protocol upgrade.
    pub fn derive(method: &str, path: &str, query: &str, upgrade: bool) -> RequestAttributes {
        let mut attrs = derive_resource(method, path, query).unwrap_or_else(|| RequestAttributes {
            verb: method_verb(method, true).into(),
            ..Default::default()
        });
        if upgrade || CONNECT_SUBRESOURCES.contains(&attrs.subresource.as_str()) {
            attrs.verb = "connect".into();
        }
        attrs
    }

    /// The object a policy matches on: `core:pods`, `apps:deployments/scale`, or the path
    /// itself for non-resource requests (`/version`).
    pub fn object(&self, path: &str) -> String {
        if !self.is_resource {
            return if path.is_empty() {
                "/".into()
            } else {
                path.into()
            };
        }
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        if self.subresource.is_empty() {
            format!("{group}:{}", self.resource)
        } else {
            format!("{group}:{}/{}", self.resource, self.subresource)
        }
    }
}

fn method_verb(method: &str, named: bool) -> &'static str {
    match method {
        "GET" | "HEAD" => {
            if named {
                "get"
            } else {
                "list"
            }
        }
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => {
            if named {
                "delete"
            } else {
                "deletecollection"
            }
        }
        "OPTIONS" => "options",
        _ => "unknown",
    }
}

/// Namespace subresources: `namespaces/{n}/status` is the subresource `status` of the
/// namespace `n`, not the resource `status` in the namespace `n`.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// The resource attributes, in the steps of the API server's `RequestInfoFactory`
/// (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`); `None` for a non-resource
/// request.
fn derive_resource(method: &str, path: &str, query: &str) -> Option<RequestAttributes> {
    // the first segments, which are all that the steps below read (at most 9: `apis`,
    // group, version, `watch`, `namespaces`, namespace, resource, name, subresource),
    // without a vector
    let mut segments = [""; 12];
    let mut count = 0;
    for (slot, segment) in segments.iter_mut().zip(path.trim_matches('/').split('/')) {
        *slot = segment;
        count += 1;
    }
    let (api_group, mut rest) = match &segments[..count] {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_string(), rest),
        _ => return None,
    };
    if rest.is_empty() {
        // discovery of a group version: not a resource request
        return None;
    }
    let mut attrs = RequestAttributes {
        is_resource: true,
        api_group,
        ..Default::default()
    };
    // the deprecated `/{watch|proxy}/...` forms say the verb in the path
    let mut proxy_path = false;
    match rest {
        ["watch", after @ ..] if !after.is_empty() => {
            attrs.verb = "watch".into();
            rest = after;
        }
        ["proxy", after @ ..] if !after.is_empty() => {
            proxy_path = true;
            rest = after;
        }
        _ => attrs.verb = method_verb(method, true).into(),
    }
    // `namespaces/{n}/{resource}...`; `namespaces/{n}` and its subresources `status` and
    // `finalize` are the namespace object itself
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        attrs.namespace = rest[1].to_string();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    attrs.resource = rest.first().copied().unwrap_or_default().to_string();
    attrs.name = rest.get(1).copied().unwrap_or_default().to_string();
    match rest.get(2) {
        // `/proxy/{resource}/{name}/{path...}`: the rest is the proxied path
        _ if proxy_path => attrs.subresource = "proxy".into(),
        Some(sub) => attrs.subresource = (*sub).to_string(),
        None => {}
    }
    // no name on a get: a list, or a watch; a field selector may name the object
    if attrs.name.is_empty() && attrs.verb == "get" {
        let (watch, name) = list_options(query).unwrap_or((query_bool(query, "watch"), None));
        attrs.verb = if watch { "watch" } else { "list" }.into();
        if let Some(name) = name.filter(|n| is_path_segment_name(n)) {
            attrs.name = name;
        }
    }
    if attrs.name.is_empty() && attrs.verb == "delete" {
        attrs.verb = "deletecollection".into();
    }
    Some(attrs)
}

#[cfg(test)]
mod tests;
