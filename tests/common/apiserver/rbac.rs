//! Impersonation and authorization: who a request acts as, and whether it may.
//!
//! Faithful to kube-apiserver's impersonation filter: `Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-{key}` are honoured only
//! when the caller may `impersonate` each of them (resources `users`, `groups`, `uids`,
//! `userextras/{key}`); otherwise the answer is `403` with kube-apiserver's message, e.g.
//! `users "alice" is forbidden: User "x" cannot impersonate resource "users" in API group
//! "" at the cluster scope`. `Impersonate-Group` without `Impersonate-User` is refused.
//! The impersonated identity gets `system:authenticated` added, and the request is then
//! authorized as that identity. Members of `system:masters` may do anything, as with
//! kube-apiserver's RBAC.
//!
//! Not faithful: RBAC is applied only to impersonated identities and to the impersonation
//! itself. A caller authenticated directly (kubegate's own certificate, the static token) may
//! do anything else, as the stand-in always allowed. Rules are [`Grant`]s (a subject, verbs,
//! resources, `*` for any) given by the test with [`super::ApiServer::grant`]; API groups,
//! namespaces and resource names are not part of them. As kube-apiserver's
//! `system:basic-user` and `system:discovery` roles do, every authenticated identity may
//! create `selfsubjectreviews`, `selfsubjectaccessreviews` and `selfsubjectrulesreviews`
//! and read the discovery paths. The request's verb and resource are derived as
//! kube-apiserver's RequestInfo does (the gateway's own derivation is used for that).

use actix_web::http::header::HeaderMap;
use actix_web::HttpRequest;
use kubegate_actors::attributes::RequestAttributes;

use super::responses::ApiError;
use super::{lock, Identity, Shared};

/// One rule: `subject` (a user or a group) may do `verbs` on `resources`
/// (`pods`, `pods/exec`, `users`, `userextras/kubegate.io/request-id`, or `*`).
#[derive(Clone, Debug)]
pub struct Grant {
    /// A user or group name.
    pub subject: String,
    /// Verbs, or `*`.
    pub verbs: Vec<String>,
    /// Resources (with `/subresource`), or `*`.
    pub resources: Vec<String>,
}

impl Grant {
    fn allows(&self, user: &str, groups: &[String], verb: &str, resource: &str) -> bool {
        let subject = self.subject == user || groups.contains(&self.subject);
        let verb = self.verbs.iter().any(|v| v == "*" || v == verb);
        let resource = self.resources.iter().any(|r| r == "*" || r == resource);
        subject && verb && resource
    }
}

/// Paths every authenticated identity may read (`system:discovery`).
fn is_discovery(path: &str) -> bool {
    [
        "/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz",
    ]
    .iter()
    .any(|p| path == *p || path.starts_with(&format!("{p}/")))
        && !path.contains("/namespaces/")
        && path.split('/').filter(|s| !s.is_empty()).count() <= 3
}

/// Whether `identity` may do `verb` on `resource`: system:masters may do anything.
fn may(shared: &Shared, user: &str, groups: &[String], verb: &str, resource: &str) -> bool {
    groups.iter().any(|g| g == "system:masters")
        || lock(&shared.grants)
            .iter()
            .any(|g| g.allows(user, groups, verb, resource))
}

fn forbidden(user: &str, verb: &str, resource: &str, name: &str, scope: &str) -> ApiError {
    let (plural, _) = resource.split_once('/').unwrap_or((resource, ""));
    let subject = if name.is_empty() {
        resource.to_string()
    } else {
        format!("{plural} \"{name}\"")
    };
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"\" {scope}"
        ),
        Some(serde_json::json!({"name": name, "kind": plural})),
    )
}

/// The identity `req` acts as: `identity` itself, or the one its `Impersonate-*`
/// headers name when `identity` may impersonate it; `Err` is the 403 (or 400) to answer.
pub(super) fn effective_identity(
    req: &HttpRequest,
    identity: Identity,
    shared: &Shared,
) -> Result<Identity, ApiError> {
    let headers = req.headers();
    let user = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let uid = header_values(headers, "impersonate-uid");
    let extra: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("impersonate-extra-")?;
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .to_string();
            Some((key, String::from_utf8_lossy(value.as_bytes()).into_owned()))
        })
        .collect();
    if user.is_empty() {
        if groups.is_empty() && uid.is_empty() && extra.is_empty() {
            return Ok(identity);
        }
        return Err(ApiError::new(
            500,
            "InternalError",
            "Internal error occurred: requested [groups, uid or extra] without impersonating a user",
            None,
        ));
    }
    let caller = identity.user().unwrap_or_default().to_string();
    let caller_groups = identity.groups();
    let check = |resource: &str, name: &str| {
        if may(shared, &caller, &caller_groups, "impersonate", resource) {
            Ok(())
        } else {
            Err(forbidden(
                &caller,
                "impersonate",
                resource,
                name,
                "at the cluster scope",
            ))
        }
    };
    check("users", &user[0])?;
    for group in &groups {
        check("groups", group)?;
    }
    for u in &uid {
        check("uids", u)?;
    }
    for (key, value) in &extra {
        check(&format!("userextras/{key}"), value)?;
    }
    let mut groups = groups;
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(Identity::Impersonated {
        user: user[0].clone(),
        groups,
        extra,
        by: caller,
    })
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// Whether `identity` may make `req` (see the module documentation): `Err` is the 403.
pub(super) fn authorize(
    req: &HttpRequest,
    identity: &Identity,
    shared: &Shared,
) -> Result<(), ApiError> {
    let Identity::Impersonated { user, groups, .. } = identity else {
        return Ok(());
    };
    let upgrade = req.headers().contains_key("upgrade");
    let a = RequestAttributes::derive(
        req.method().as_str(),
        req.path(),
        req.query_string(),
        upgrade,
    );
    if !a.is_resource {
        if is_discovery(req.path()) {
            return Ok(());
        }
        if may(shared, user, groups, &a.verb, req.path()) {
            return Ok(());
        }
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User \"{user}\" cannot {} path \"{}\"",
                a.verb,
                req.path()
            ),
            None,
        ));
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    // exec, attach and port-forward are authorized as `create` (kube-apiserver 1.30+)
    let verb = if upgrade {
        "create".to_string()
    } else {
        a.verb.to_string()
    };
    let self_review = verb == "create"
        && matches!(
            resource.as_str(),
            "selfsubjectreviews" | "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        );
    if self_review || may(shared, user, groups, &verb, &resource) {
        return Ok(());
    }
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    Err(forbidden(user, &verb, &resource, &a.name, &scope))
}
