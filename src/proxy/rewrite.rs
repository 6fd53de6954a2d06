//! Links in proxied answers, moved under kubegate's prefix: what makes the Kubernetes
//! dashboard (and any other service, pod or node proxy) work through kubegate.
//!
//! kube-apiserver's service proxy (`/api/v1/namespaces/{ns}/services/{name}/proxy/...`)
//! already rewrites a backend's absolute links and redirects to absolute paths under the
//! API server's root: `href="/#/login"` becomes
//! `href="/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/#/login"`.
//! Behind kubegate the API server's root is `/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy`,
//! so those absolute paths would leave it. kubegate therefore does what kubectl proxy's
//! and the API server's own proxy transports do one level up:
//!
//! - `Location` of every proxied answer: an absolute path (`/...`), or a URL on the API
//!   server itself, is put under the cluster's prefix ([`location`]);
//! - the body of `text/html` answers to `.../proxy` subresources (not compressed, at most
//!   [`MAX_HTML_BYTES`]): `href`, `src`, `action`, `formaction`, `poster` and `data`
//!   attributes holding an absolute path get the prefix too ([`html`]).
//!
//! Relative links (`styles.css`, `api/v1/login/status`, `#/workloads`), which the
//! dashboard uses for its scripts and API calls, need nothing: the browser resolves them
//! against kubegate's URL of the page. Links to other hosts (`https://kubernetes.io`) and
//! protocol-relative ones (`//cdn...`) are left alone. Absolute paths built by scripts at
//! run time and `url(/...)` in CSS are not rewritten (neither are they by kubectl proxy).

/// HTML answers larger than this pass through unchanged (and are streamed, not held).
pub const MAX_HTML_BYTES: usize = 2 * 1024 * 1024;

/// kubegate's path prefix for a cluster: the API server's root as clients see it.
pub fn prefix(org: u64, cluster: u64) -> String {
    format!(
        "{}{org}/clusters/{cluster}/proxy",
        crate::proxy::path::PREFIX
    )
}

/// The `Location` the client must see for `value` sent by the API server at `server`
/// (its URL, possibly with a base path), or `None` to pass it unchanged.
pub fn location(value: &str, prefix: &str, server: &str) -> Option<String> {
    let server = server.trim_end_matches('/');
    let base = server
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or("");
    let path = if let Some(rest) = value.strip_prefix(server) {
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            return None; // https://api.example:6443x is another host
        }
        rest
    } else if value.starts_with('/') && !value.starts_with("//") {
        value
            .strip_prefix(base)
            .filter(|_| !base.is_empty())
            .unwrap_or(value)
    } else {
        return None;
    };
    if path.starts_with(prefix) {
        return None;
    }
    if path.is_empty() || !path.starts_with('/') {
        return Some(format!("{prefix}/{path}"));
    }
    Some(format!("{prefix}{path}"))
}

/// Attributes whose values are URLs.
const URL_ATTRIBUTES: [&str; 6] = ["href", "src", "action", "formaction", "poster", "data"];

/// `body` with every URL attribute that holds an absolute path put under `prefix`.
pub fn html(body: &str, prefix: &str) -> String {
    let bytes = body.as_bytes();
    let mut out = String::with_capacity(body.len() + 256);
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // an attribute starts after whitespace inside a tag
        if !bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i + 1;
        let Some(name) = URL_ATTRIBUTES.iter().find(|name| {
            bytes
                .get(start..start + name.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(name.as_bytes()))
        }) else {
            i += 1;
            continue;
        };
        let mut j = start + name.len();
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if bytes.get(j) != Some(&b'=') {
            i += 1;
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let quoted = matches!(bytes.get(j), Some(b'"' | b'\''));
        let value = if quoted { j + 1 } else { j };
        let absolute_path = bytes.get(value) == Some(&b'/')
            && bytes.get(value + 1) != Some(&b'/')
            && !body[value..].starts_with(prefix);
        if absolute_path {
            out.push_str(&body[copied..value]);
            out.push_str(prefix);
            copied = value;
        }
        i = value.max(i + 1);
    }
    out.push_str(&body[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/pipeline/api/v1/orgs/1/clusters/2/proxy";

    #[test]
    fn locations() {
        let server = "https://10.0.0.1:6443";
        let svc = "/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/";
        assert_eq!(location(svc, P, server), Some(format!("{P}{svc}")));
        assert_eq!(
            location(&format!("{server}{svc}#/login"), P, server),
            Some(format!("{P}{svc}#/login"))
        );
        assert_eq!(location(server, P, server), Some(format!("{P}/")));
        // relative, other hosts, protocol-relative, already under the prefix: unchanged
        assert_eq!(location("login", P, server), None);
        assert_eq!(location("https://github.com/login", P, server), None);
        assert_eq!(location("https://10.0.0.1:64430/x", P, server), None);
        assert_eq!(location("//evil.example/", P, server), None);
        assert_eq!(location(&format!("{P}/api"), P, server), None);
        // an API server behind a base path
        let based = "https://rancher.example/k8s/clusters/c-1";
        assert_eq!(
            location("/k8s/clusters/c-1/api/v1/x", P, based),
            Some(format!("{P}/api/v1/x"))
        );
    }

    #[test]
    fn html_links() {
        let page = r##"<html><head><link rel="stylesheet" href="styles.css"><script src='/api/v1/x/proxy/main.js'></script></head>
<body><a HREF = "/api/v1/x/proxy/#/a">a</a> <a href="https://kubernetes.io/">k</a> <a href="//cdn.example/x">c</a>
<form action=/api/v1/x/proxy/login><img src="#/i"></form></body></html>"##;
        let out = html(page, P);
        assert!(out.contains(r#"href="styles.css""#));
        assert!(out.contains(&format!("src='{P}/api/v1/x/proxy/main.js'")));
        assert!(out.contains(&format!(r#"HREF = "{P}/api/v1/x/proxy/#/a""#)));
        assert!(out.contains(r#"href="https://kubernetes.io/""#));
        assert!(out.contains(r#"href="//cdn.example/x""#));
        assert!(out.contains(&format!("action={P}/api/v1/x/proxy/login>")));
        assert!(out.contains(r##"src="#/i""##));
        // idempotent
        assert_eq!(html(&out, P), out);
    }
}
