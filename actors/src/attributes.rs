//! Kubernetes request attributes, derived once from method, path and query, the way the
//! API server's RequestInfo does, so that policies can speak of verbs and resources.

use serde::{Deserialize, Serialize};

/// What a request does, in Kubernetes terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `connect`; for non-resource paths, the lower-case method mapped
    /// the same way (`get`, `create`, ...).
    pub verb: String,
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
            verb: method_verb(method, true).to_string(),
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

fn is_watch(query: &str) -> bool {
    query.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k == "watch" && matches!(v, "true" | "1" | "")
    })
}

fn derive_resource(method: &str, path: &str, query: &str) -> Option<RequestAttributes> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_group, rest) = match parts.as_slice() {
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
    let mut rest = rest.to_vec();
    let mut legacy_watch = false;
    match rest.first() {
        // deprecated `/api/v1/watch/...` paths
        Some(&"watch") if rest.len() > 1 => {
            legacy_watch = true;
            rest.remove(0);
        }
        // deprecated `/api/v1/proxy/...` paths
        Some(&"proxy") if rest.len() > 1 => {
            rest.remove(0);
            attrs.subresource = "proxy".into();
        }
        _ => {}
    }
    // `namespaces/{ns}/{resource}...`; `namespaces/{ns}` alone is the namespace object
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        attrs.namespace = rest[1].to_string();
        rest.drain(..2);
    }
    attrs.resource = rest.first().copied().unwrap_or_default().to_string();
    attrs.name = rest.get(1).copied().unwrap_or_default().to_string();
    if attrs.resource == "namespaces" && rest.len() == 2 {
        attrs.namespace = attrs.name.clone();
    }
    if let Some(sub) = rest.get(2) {
        if attrs.subresource.is_empty() {
            attrs.subresource = (*sub).to_string();
        }
    }
    attrs.verb = method_verb(method, !attrs.name.is_empty()).to_string();
    if (legacy_watch || is_watch(query)) && matches!(method, "GET" | "HEAD") {
        attrs.verb = "watch".into();
    }
    Some(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(method: &str, path: &str, query: &str) -> (String, String) {
        let a = RequestAttributes::derive(method, path, query, false);
        let object = a.object(path);
        (a.verb, object)
    }

    #[test]
    fn verbs_and_objects() {
        let cases = [
            ("GET", "/api/v1/pods", "", "list", "core:pods"),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "watch=true&resourceVersion=5",
                "watch",
                "core:pods",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web",
                "",
                "get",
                "core:pods",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web/log",
                "",
                "get",
                "core:pods/log",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods",
                "",
                "create",
                "core:pods",
            ),
            (
                "PUT",
                "/api/v1/namespaces/default/pods/web",
                "",
                "update",
                "core:pods",
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/x/deployments/d/scale",
                "",
                "patch",
                "apps:deployments/scale",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods/web",
                "",
                "delete",
                "core:pods",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/default/pods",
                "",
                "deletecollection",
                "core:pods",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods/web/exec",
                "command=ls",
                "connect",
                "core:pods/exec",
            ),
            (
                "POST",
                "/api/v1/namespaces/default/pods/web/portforward",
                "",
                "connect",
                "core:pods/portforward",
            ),
            (
                "GET",
                "/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/",
                "",
                "connect",
                "core:services/proxy",
            ),
            (
                "GET",
                "/api/v1/proxy/namespaces/default/pods/web",
                "",
                "connect",
                "core:pods/proxy",
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/default/pods",
                "",
                "watch",
                "core:pods",
            ),
            (
                "GET",
                "/api/v1/namespaces/default",
                "",
                "get",
                "core:namespaces",
            ),
            ("GET", "/api/v1/namespaces", "", "list", "core:namespaces"),
            ("GET", "/api/v1/secrets", "", "list", "core:secrets"),
            ("GET", "/api/v1", "", "get", "/api/v1"),
            ("GET", "/version", "", "get", "/version"),
            ("GET", "/", "", "get", "/"),
            (
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                "",
                "create",
                "authorization.k8s.io:selfsubjectaccessreviews",
            ),
        ];
        for (method, path, query, verb, object) in cases {
            assert_eq!(
                d(method, path, query),
                (verb.to_string(), object.to_string()),
                "{method} {path}?{query}"
            );
        }
    }

    #[test]
    fn upgrade_is_connect_whatever_the_path() {
        let a = RequestAttributes::derive("GET", "/api/v1/namespaces/default/pods", "", true);
        assert_eq!(a.verb, "connect");
    }

    #[test]
    fn namespace_and_name() {
        let a = RequestAttributes::derive("GET", "/api/v1/namespaces/ns1/configmaps/cm", "", false);
        assert_eq!(
            (a.namespace.as_str(), a.name.as_str(), a.resource.as_str()),
            ("ns1", "cm", "configmaps")
        );
    }
}
