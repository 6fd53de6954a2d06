//! The header rules of the proxy route, in one table shared by forwarding
//! ([`crate::proxy`]) and the upgrade tunnel ([`crate::proxy::tunnel`]).
//!
//! What is never forwarded to an API server: hop-by-hop headers, and whatever would let
//! a client speak for kubegate (its credentials: `Authorization`, `Cookie`) or for
//! someone else (`Impersonate-*`, the front proxy's `X-Remote-*`). What never comes back:
//! the connection's own headers and the body framing actix-web sets itself.

use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::HttpRequest;

/// Where a header is dropped.
#[derive(Debug, Clone, Copy)]
struct Rule {
    /// From a request forwarded to the API server (and from an upgrade request's head).
    request: bool,
    /// From an API server's answer to a forwarded request.
    answer: bool,
    /// From an API server's answer to an upgrade (`101`, or the refusal relayed).
    upgrade_answer: bool,
}

const ALL: Rule = Rule {
    request: true,
    answer: true,
    upgrade_answer: true,
};
const REQUEST: Rule = Rule {
    request: true,
    answer: false,
    upgrade_answer: false,
};

/// One row per header that kubegate does not pass through as it came.
const RULES: &[(&str, Rule)] = &[
    ("connection", ALL),
    ("keep-alive", ALL),
    ("proxy-connection", ALL),
    ("te", ALL),
    ("trailer", ALL),
    ("transfer-encoding", ALL),
    ("content-length", ALL),
    (
        "proxy-authenticate",
        Rule {
            request: true,
            answer: true,
            upgrade_answer: false,
        },
    ),
    // an upgrade's own `Upgrade` goes back with its 101; the tunnel drops it from a
    // relayed refusal itself
    (
        "upgrade",
        Rule {
            request: true,
            answer: true,
            upgrade_answer: false,
        },
    ),
    ("proxy-authorization", REQUEST),
    ("host", REQUEST),
    ("authorization", REQUEST),
    ("cookie", REQUEST),
    ("expect", REQUEST),
    // replaced by kubegate's own, with the client's address appended
    ("x-forwarded-for", REQUEST),
];

/// Request header prefixes never forwarded: impersonation and front-proxy identities.
const REQUEST_PREFIXES: &[&str] = &["impersonate-", "x-remote-"];

fn rule(name: &HeaderName) -> Option<Rule> {
    let name = name.as_str();
    // asked for every header of every request and answer: many (`content-type`,
    // `audit-id`, `x-kubernetes-pf-*`...) are let through by their length alone
    if name.len() >= 32 || RULE_LENGTHS & (1 << name.len()) == 0 {
        return None;
    }
    RULES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// The lengths of the names in [`RULES`], one bit each (every one is under 32 bytes).
const RULE_LENGTHS: u32 = {
    let mut lengths = 0u32;
    let mut i = 0;
    while i < RULES.len() {
        assert!(RULES[i].0.len() < 32);
        lengths |= 1 << RULES[i].0.len();
        i += 1;
    }
    lengths
};

/// Whether a request header is never forwarded to the API server.
pub fn dropped_from_request(name: &HeaderName) -> bool {
    rule(name).is_some_and(|r| r.request)
        || REQUEST_PREFIXES
            .iter()
            .any(|p| name.as_str().starts_with(p))
}

/// Whether a header of the API server's answer to a forwarded request is not passed back.
pub fn dropped_from_answer(name: &HeaderName) -> bool {
    rule(name).is_some_and(|r| r.answer)
}

/// Whether a header of the API server's answer to an upgrade is not passed back.
pub fn dropped_from_upgrade_answer(name: &HeaderName) -> bool {
    rule(name).is_some_and(|r| r.upgrade_answer)
}

/// Header names listed in `Connection`: hop-by-hop too.
pub fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The `X-Forwarded-For` value to send: the client's own list, then its address.
pub fn forwarded_for(req: &HttpRequest) -> String {
    let peer = req
        .peer_addr()
        .map(|a| crate::gate::audit::ip_text(a.ip()))
        .unwrap_or_default();
    match req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) if !peer.is_empty() => format!("{earlier}, {peer}"),
        Some(earlier) => earlier.to_string(),
        None => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &'static str) -> HeaderName {
        HeaderName::from_static(name)
    }

    #[test]
    fn credentials_and_identities_never_go_up() {
        for name in [
            "authorization",
            "cookie",
            "proxy-authorization",
            "impersonate-user",
            "impersonate-group",
            "impersonate-extra-scopes",
            "x-remote-user",
            "x-remote-group",
            "host",
            "connection",
            "upgrade",
        ] {
            assert!(dropped_from_request(&n(name)), "{name}");
        }
        for name in [
            "accept",
            "content-type",
            "user-agent",
            "sec-websocket-protocol",
        ] {
            assert!(!dropped_from_request(&n(name)), "{name}");
        }
    }

    #[test]
    fn every_rule_is_found() {
        for (name, _) in RULES {
            assert!(rule(&HeaderName::from_static(name)).is_some(), "{name}");
        }
        assert!(rule(&n("x-kubernetes-pf-flowschema-uid")).is_none());
        assert!(rule(&n("content-type")).is_none());
    }

    #[test]
    fn an_upgrade_answer_keeps_its_upgrade_header() {
        assert!(dropped_from_answer(&n("upgrade")));
        assert!(!dropped_from_upgrade_answer(&n("upgrade")));
        assert!(dropped_from_upgrade_answer(&n("transfer-encoding")));
        assert!(!dropped_from_answer(&n("content-type")));
        assert!(!dropped_from_request(&n("x-forwarded-host")));
    }

    /// The API server's answer headers, moved into actix's map (vendored actix-http's
    /// `From<http::HeaderMap>`, patched to move each name rather than clone it): every
    /// value is kept, in order, under its name.
    #[test]
    fn answer_headers_keep_every_value_in_order() {
        let mut answer = http02::HeaderMap::new();
        let value = |v: &'static str| http02::HeaderValue::from_static(v);
        answer.append("audit-id", value("a1"));
        answer.append("set-cookie", value("one=1"));
        answer.append("x-kubernetes-pf-flowschema-uid", value("f1"));
        answer.append("set-cookie", value("two=2"));
        answer.append("x-kubernetes-pf-flowschema-uid", value("f2"));
        answer.append("set-cookie", value("three=3"));
        answer.insert("content-type", value("application/json"));
        let moved = actix_web::http::header::HeaderMap::from(answer);
        assert_eq!(moved.len(), 7);
        assert_eq!(moved.len_keys(), 4);
        let all = |name: &'static str| {
            moved
                .get_all(name)
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("set-cookie"), ["one=1", "two=2", "three=3"]);
        assert_eq!(all("x-kubernetes-pf-flowschema-uid"), ["f1", "f2"]);
        assert_eq!(all("audit-id"), ["a1"]);
        assert_eq!(all("content-type"), ["application/json"]);
        assert!(actix_web::http::header::HeaderMap::from(http02::HeaderMap::new()).is_empty());
    }
}
