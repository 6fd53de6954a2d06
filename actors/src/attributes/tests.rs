//! The attributes of requests, checked against the API server's own cases.

use super::*;

fn d(method: &str, path: &str, query: &str) -> (String, String) {
    let a = RequestAttributes::derive(method, path, query, false);
    let object = a.object(path);
    (a.verb.into_owned(), object)
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
        // more segments than derive reads (it keeps the first 12): the rest is the
        // proxied path, whatever it holds
        (
            "GET",
            "/apis/apps/v1/watch/namespaces/other/deployments/foo/status/a/b/c/d/namespaces/x/pods",
            "",
            "watch",
            "other",
            "deployments",
            "status",
            "foo",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/services/web/proxy/a/b/c/d/e/f/g/h/i/j/k",
            "",
            "connect",
            "other",
            "services",
            "proxy",
            "web",
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
                &*a.verb,
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
