//! The proxy path, checked once: what is authorized is what is audited and forwarded.
//!
//! `/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy{kubernetes path}` is read from the
//! raw request URI, before any decoding. Dot segments, empty segments and encoded
//! slashes, dots, backslashes or percent signs are refused: they are how a path that
//! looks allowed is made to reach something else.

use crate::status::StatusError;

/// The route prefix, up to the org.
pub const PREFIX: &str = "/pipeline/api/v1/orgs/";

/// A checked proxy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    /// The org id.
    pub org: u64,
    /// The cluster id.
    pub cluster: u64,
    /// The Kubernetes path, starting with `/` (`/` for the API root), as received.
    pub k8s_path: String,
}

fn bad(message: impl Into<String>) -> StatusError {
    StatusError::bad_request(message)
}

fn parse_id(segment: &str, what: &str) -> Result<u64, StatusError> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) || segment.len() > 19 {
        return Err(bad(format!("the {what} id \"{segment}\" must be a number")));
    }
    segment
        .parse()
        .map_err(|_| bad(format!("the {what} id \"{segment}\" must be a number")))
}

impl ProxyPath {
    /// Parses and checks a raw request path.
    pub fn parse(raw: &str) -> Result<ProxyPath, StatusError> {
        let rest = raw
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("the path must start with /pipeline/api/v1/orgs/"))?;
        let (org, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad("the path must name a cluster"))?;
        let rest = rest
            .strip_prefix("clusters/")
            .ok_or_else(|| bad("the path must continue with /clusters/{cluster}/proxy"))?;
        let (cluster, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad("the path must end the cluster part with /proxy"))?;
        let tail = rest
            .strip_prefix("proxy")
            .ok_or_else(|| bad("the path must continue with /proxy"))?;
        let org = parse_id(org, "org")?;
        let cluster = parse_id(cluster, "cluster")?;
        let k8s_path = if tail.is_empty() {
            "/".to_string()
        } else {
            tail.to_string()
        };
        if !k8s_path.starts_with('/') {
            return Err(StatusError::not_found(format!(
                "the path must continue with /proxy/, not /{rest}"
            )));
        }
        check_k8s_path(&k8s_path)?;
        Ok(ProxyPath {
            org,
            cluster,
            k8s_path,
        })
    }
}

/// Refuses what could make one path reach another.
fn check_k8s_path(path: &str) -> Result<(), StatusError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = path
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    None => return Err(bad("the path has a malformed percent-encoding")),
                    Some(b'/' | b'\\' | b'.' | b'%') => {
                        return Err(bad(
                            "encoded slashes, dots, backslashes or percent signs (%2F, %2E, %5C, %25) are not allowed in the path",
                        ))
                    }
                    Some(c) if c < 0x20 || c == 0x7f => {
                        return Err(bad("encoded control characters are not allowed in the path"))
                    }
                    Some(_) => i += 3,
                }
            }
            b'\\' => return Err(bad("backslashes are not allowed in the path")),
            c if c < 0x20 || c == 0x7f => {
                return Err(bad("control characters are not allowed in the path"))
            }
            _ => i += 1,
        }
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment == "." || segment == ".." {
            return Err(bad(
                "dot segments (\".\" and \"..\") are not allowed in the path",
            ));
        }
        // the last may be empty (a trailing slash)
        if segment.is_empty() && segments.peek().is_some() {
            return Err(bad("empty segments (\"//\") are not allowed in the path"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tail: &str) -> Result<String, String> {
        ProxyPath::parse(&format!("/pipeline/api/v1/orgs/1/clusters/2/proxy{tail}"))
            .map(|p| p.k8s_path)
            .map_err(|e| e.message)
    }

    #[test]
    fn good_paths() {
        assert_eq!(p(""), Ok("/".into()));
        assert_eq!(p("/"), Ok("/".into()));
        assert_eq!(p("/api/v1/pods"), Ok("/api/v1/pods".into()));
        assert_eq!(
            p("/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/"),
            Ok("/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/".into())
        );
        assert_eq!(
            p("/api/v1/namespaces/a/pods/my.pod.name"),
            Ok("/api/v1/namespaces/a/pods/my.pod.name".into())
        );
        assert_eq!(
            p("/api/v1/namespaces/a/services/x%3A80/proxy/"),
            Ok("/api/v1/namespaces/a/services/x%3A80/proxy/".into())
        );
        let full = ProxyPath::parse("/pipeline/api/v1/orgs/12/clusters/34/proxy/version").unwrap();
        assert_eq!((full.org, full.cluster), (12, 34));
    }

    #[test]
    fn attacks_are_refused() {
        let attacks = [
            "/api/v1/../../secrets",
            "/api/v1/namespaces/a/./pods",
            "/..",
            "/api/%2e%2e/v1",
            "/api/%2E%2E/v1",
            "/api/v1/namespaces%2fkube-system%2fsecrets",
            "/api/v1/namespaces%2Fx",
            "/api/v1/%5c..%5csecrets",
            "/api/v1/%252e%252e/secrets",
            "/api//v1",
            "/api/v1/%00",
            "/api/v1/%0d%0aX-Injected:%20yes",
            "/api/v1/%zz",
            "/api/v1/%2",
            "/api\\v1",
        ];
        for attack in attacks {
            let e = p(attack);
            assert!(e.is_err(), "{attack} must be refused");
        }
    }

    #[test]
    fn bad_ids_and_prefixes() {
        assert!(ProxyPath::parse("/pipeline/api/v1/orgs/x/clusters/1/proxy/").is_err());
        assert!(ProxyPath::parse("/pipeline/api/v1/orgs/1/clusters/-1/proxy/").is_err());
        assert!(ProxyPath::parse("/pipeline/api/v1/orgs/%31/clusters/1/proxy/").is_err());
        assert!(ProxyPath::parse("/pipeline/api/v1/orgs/1/clusters/1/proxyfoo").is_err());
        assert!(
            ProxyPath::parse("/pipeline/api/v1/orgs/99999999999999999999/clusters/1/proxy/")
                .is_err()
        );
    }
}
