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

/// Namespace subresources: `namespaces/{n}/status` is the subresource `status` of the
/// namespace `n`, not the resource `status` in the namespace `n`.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// The values of `key` in `query`, decoded as Go's `url.ParseQuery` does for the API
/// server: pairs split on `&`, a pair that holds `;` or a bad percent-escape skipped,
/// `+` a space, escapes decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((unescape_query(k)?, unescape_query(v)?))
        })
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` on a bad escape or a
/// result that is not UTF-8.
fn unescape_query(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A boolean query parameter as the API server reads it
/// (`Convert_Slice_string_To_bool`): absent is false; its first value is false when it
/// is `0` or `false` in any case; anything else, the empty string included, is true.
fn query_bool(query: &str, key: &str) -> bool {
    match query_values(query, key).first() {
        None => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

/// The list options the API server decodes before it reads `watch` and `fieldSelector`;
/// `None` when decoding fails (an integer that is not one, a field selector that does
/// not parse), in which case it reads `watch` alone.
fn list_options(query: &str) -> Option<(bool, Option<String>)> {
    for key in ["limit", "timeoutSeconds"] {
        if let Some(v) = query_values(query, key).first() {
            v.parse::<i64>().ok()?;
        }
    }
    let name = match query_values(query, "fieldSelector").first() {
        Some(selector) => exact_name(selector)?,
        None => None,
    };
    Some((query_bool(query, "watch"), name))
}

/// The name a field selector requires exactly (`metadata.name=web`, `==`), as
/// `fields.ParseSelector` and `RequiresExactMatch` read it: `None` inside when it
/// requires none; `None` outside when the selector does not parse.
fn exact_name(selector: &str) -> Option<Option<String>> {
    let mut found = None;
    for term in split_unescaped(selector, ',') {
        if term.is_empty() {
            continue;
        }
        let (field, op, value) = split_term(&term)?;
        let value = unescape_selector(value)?;
        if field.trim() == "metadata.name" && op != "!=" {
            found.get_or_insert(value);
        }
    }
    Some(found)
}

/// `text` split on `sep` where it is not escaped with `\`.
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let (mut parts, mut part, mut escaped) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        if escaped {
            part.push(c);
            escaped = false;
        } else if c == '\\' {
            part.push(c);
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut part));
        } else {
            part.push(c);
        }
    }
    parts.push(part);
    parts
}

/// A selector term at its first unescaped operator (`!=`, `==`, `=`).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        for op in ["!=", "==", "="] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// A selector value with its escapes (`\\`, `\,`, `\=`) undone; `None` on another escape.
fn unescape_selector(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                e @ ('\\' | ',' | '=') => out.push(e),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Whether `name` may be a path segment (`path.IsValidPathSegmentName`).
fn is_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// The resource attributes, in the steps of the API server's `RequestInfoFactory`
/// (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`); `None` for a non-resource
/// request.
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
    // the deprecated `/{watch|proxy}/...` forms say the verb in the path
    let mut proxy_path = false;
    match rest.first() {
        Some(&"watch") if rest.len() > 1 => {
            attrs.verb = "watch".into();
            rest.remove(0);
        }
        Some(&"proxy") if rest.len() > 1 => {
            proxy_path = true;
            rest.remove(0);
        }
        _ => attrs.verb = method_verb(method, true).to_string(),
    }
    // `namespaces/{n}/{resource}...`; `namespaces/{n}` and its subresources `status` and
    // `finalize` are the namespace object itself
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        attrs.namespace = rest[1].to_string();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest.drain(..2);
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

    /// Method, path, query: verb, namespace, resource, subresource, name; the cases of
    /// kube-apiserver's `requestinfo_test.go` (`TestGetAPIRequestInfo`,
    /// `TestFieldSelectorParsing`) on kubegate's attributes, where the legacy `/proxy/`
    /// form is `connect` (kubegate's rule for every proxy) instead of `proxy`.
    #[test]
    fn as_the_api_servers_request_info() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces",
                "",
                "list",
                "",
                "namespaces",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/other",
                "",
                "get",
                "other",
                "namespaces",
                "",
                "other",
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods",
                "",
                "list",
                "other",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods/foo",
                "",
                "get",
                "other",
                "pods",
                "",
                "foo",
            ),
            (
                "HEAD",
                "/api/v1/namespaces/other/pods/foo",
                "",
                "get",
                "other",
                "pods",
                "",
                "foo",
            ),
            ("GET", "/api/v1/pods", "", "list", "", "pods", "", ""),
            ("HEAD", "/api/v1/pods", "", "list", "", "pods", "", ""),
            (
                "GET",
                "/api/v1/proxy/namespaces/other/pods/foo",
                "",
                "connect",
                "other",
                "pods",
                "proxy",
                "foo",
            ),
            (
                "GET",
                "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource",
                "",
                "connect",
                "other",
                "pods",
                "proxy",
                "foo",
            ),
            ("GET", "/api/v1/watch/pods", "", "watch", "", "pods", "", ""),
            (
                "GET",
                "/api/v1/watch/namespaces/other/pods",
                "",
                "watch",
                "other",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/pods",
                "watch=true",
                "watch",
                "",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/pods",
                "watch=false",
                "list",
                "",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods",
                "watch=1",
                "watch",
                "other",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods",
                "watch=0",
                "list",
                "other",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods/foo/status",
                "",
                "get",
                "other",
                "pods",
                "status",
                "foo",
            ),
            (
                "GET",
                "/api/v1/namespaces/other/pods/foo/proxy/subpath",
                "",
                "connect",
                "other",
                "pods",
                "proxy",
                "foo",
            ),
            (
                "PUT",
                "/api/v1/namespaces/other/finalize",
                "",
                "update",
                "other",
                "namespaces",
                "finalize",
                "other",
            ),
            (
                "PUT",
                "/api/v1/namespaces/other/status",
                "",
                "update",
                "other",
                "namespaces",
                "status",
                "other",
            ),
            (
                "GET",
                "/api/v1/namespaces/other/status",
                "",
                "get",
                "other",
                "namespaces",
                "status",
                "other",
            ),
            (
                "PATCH",
                "/api/v1/namespaces/other/pods/foo",
                "",
                "patch",
                "other",
                "pods",
                "",
                "foo",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods/foo",
                "",
                "delete",
                "other",
                "pods",
                "",
                "foo",
            ),
            (
                "POST",
                "/api/v1/namespaces/other/pods",
                "",
                "create",
                "other",
                "pods",
                "",
                "",
            ),
            (
                "DELETE",
                "/api/v1/nodes",
                "",
                "deletecollection",
                "",
                "nodes",
                "",
                "",
            ),
            (
                "DELETE",
                "/api/v1/namespaces",
                "",
                "deletecollection",
                "",
                "namespaces",
                "",
                "",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/other/pods",
                "",
                "deletecollection",
                "other",
                "pods",
                "",
                "",
            ),
            (
                "DELETE",
                "/apis/extensions/v1/namespaces/other/pods",
                "",
                "deletecollection",
                "other",
                "pods",
                "",
                "",
            ),
            (
                "POST",
                "/apis/extensions/v1/namespaces/other/pods",
                "",
                "create",
                "other",
                "pods",
                "",
                "",
            ),
            // a named get is a get whatever `watch` says
            (
                "GET",
                "/api/v1/namespaces/other/pods/foo",
                "watch=true",
                "get",
                "other",
                "pods",
                "",
                "foo",
            ),
            // field selectors (TestFieldSelectorParsing)
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=metadata.name=name1",
                "list",
                "default",
                "pods",
                "",
                "name1",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "watch=true&fieldSelector=metadata.name=name1",
                "watch",
                "default",
                "pods",
                "",
                "name1",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=metadata.name%3D%3Dname1",
                "list",
                "default",
                "pods",
                "",
                "name1",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=foo=bar",
                "list",
                "default",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=metadata.name!=name1",
                "list",
                "default",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=metadata.name=name1,foo",
                "list",
                "default",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=metadata.name=name1,foo&watch=true",
                "watch",
                "default",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=metadata.name=name1,foo&watch=false",
                "list",
                "default",
                "pods",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "fieldSelector=metadata.name=a%2Fb",
                "list",
                "default",
                "pods",
                "",
                "",
            ),
            // a list option that does not decode: `watch` is read alone, the name is not
            (
                "GET",
                "/api/v1/namespaces/default/pods",
                "limit=abc&watch=TRUE&fieldSelector=metadata.name=n",
                "watch",
                "default",
                "pods",
                "",
                "",
            ),
        ];
        for (method, path, query, verb, namespace, resource, subresource, name) in cases {
            let a = RequestAttributes::derive(method, path, query, false);
            assert_eq!(
                (
                    a.verb.as_str(),
                    a.namespace.as_str(),
                    a.resource.as_str(),
                    a.subresource.as_str(),
                    a.name.as_str()
                ),
                (verb, namespace, resource, subresource, name),
                "{method} {path}?{query}"
            );
        }
    }

    /// `watch` is read as the API server reads a boolean parameter: only `0` and `false`
    /// (in any case) are false, and only the first value counts. Each of these was a
    /// `list` to kubegate and a watch to the API server: a policy granting `list` but not
    /// `watch` let them through.
    #[test]
    fn watch_is_a_boolean_as_the_api_server_reads_it() {
        for query in [
            "watch=true",
            "watch=TRUE",
            "watch=True",
            "watch=t",
            "watch=T",
            "watch=1",
            "watch=yes",
            "watch=",
            "watch",
            "watch=%74rue",
            "watch=tru%65",
            "limit=5&watch=y",
            "watch=true&watch=false",
            "watch=+",
        ] {
            let a = RequestAttributes::derive("GET", "/api/v1/namespaces/d/pods", query, false);
            assert_eq!(a.verb, "watch", "?{query}");
        }
        for query in [
            "",
            "watch=false",
            "watch=FALSE",
            "watch=False",
            "watch=0",
            "watch=false&watch=true",
            "watchx=true",
            "watch=true;x=1",
            "watch=%zz",
            "xwatch=true",
        ] {
            let a = RequestAttributes::derive("GET", "/api/v1/namespaces/d/pods", query, false);
            assert_eq!(a.verb, "list", "?{query}");
        }
    }
}
