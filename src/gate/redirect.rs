//! Where a login may send the browser afterwards: local paths only.
//!
//! An open redirect on a login page is a phishing tool ("log in at the real kubegate,
//! land on the attacker's look-alike"). Browsers read a `Location` more loosely than a
//! URL parser does: they strip tabs and newlines, treat `\` as `/`, and take `//host` as
//! another host. So the rule is strict and checked on the decoded text as well: a path
//! that starts with one `/` followed by something else than `/` or `\`, with no control
//! character, whitespace or backslash anywhere, no scheme, and that is still such a path
//! once percent-decoded.

/// kubegate's URL as clients reach it: `server.public_url` when set, else the scheme
/// and host of `req` (for login callbacks, generated kubeconfigs, device-login links).
pub fn base_url(public_url: Option<&str>, req: &actix_web::HttpRequest) -> String {
    match public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// Returns `target` when it is a safe local path, else `None`.
pub fn local_path(target: &str) -> Option<&str> {
    if !is_local(target) {
        return None;
    }
    // one decoding: what a server or browser down the line might see
    let decoded = percent_encoding::percent_decode_str(target)
        .decode_utf8()
        .ok()?;
    if !is_local(&decoded) {
        return None;
    }
    Some(target)
}

fn is_local(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || path.len() > 2048 {
        return false;
    }
    if matches!(bytes.get(1), Some(b'/' | b'\\')) {
        return false;
    }
    if path
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return false;
    }
    // a scheme cannot start a path that starts with '/', but a colon before the first
    // slash of a segment would be one to some parsers: refuse `/javascript:...` too
    !path
        .split('/')
        .nth(1)
        .is_some_and(|first| first.to_ascii_lowercase().contains("script:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_pass() {
        for good in [
            "/",
            "/pipeline/api/v1/orgs/1/clusters/2/proxy/api/v1/namespaces",
            "/pipeline/api/v1/orgs/1/clusters/2/proxy/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/",
            "/dashboard?tab=pods&ns=default",
            "/a/b#fragment",
            "/caf%C3%A9",
        ] {
            assert_eq!(local_path(good), Some(good), "{good:?}");
        }
    }

    #[test]
    fn hostile_targets_are_refused() {
        for bad in [
            "",
            "//evil.example",
            "//evil.example/path",
            "/\\evil.example",
            "\\\\evil.example",
            "/\\/evil.example",
            "https://evil.example",
            "http://evil.example/",
            "HTTPS://evil.example",
            "javascript:alert(1)",
            "/javascript:alert(1)",
            "/%2f%2fevil.example",
            "/%2F/evil.example",
            "/%5cevil.example",
            "/%5Cevil.example",
            "/%09/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/%20/evil.example",
            "/%0d%0aSet-Cookie:x=y",
            "/\u{0}",
            "/\u{a0}/evil.example",
            "/%E2%80%A8/evil.example",
            "evil.example",
            "./relative",
            "../up",
            "/%ff",
            "data:text/html,<script>alert(1)</script>",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?} must be refused");
        }
        let long = format!("/{}", "a".repeat(3000));
        assert_eq!(local_path(&long), None);
    }
}
