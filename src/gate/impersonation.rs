//! Impersonation: who the API server is told a request comes from.
//!
//! On a cluster with `impersonate` on, every forwarded request and upgrade carries the
//! person: `Impersonate-User` (the name kubegate's audit trail uses), `Impersonate-Group`
//! for `system:authenticated`, for each of their org roles (`kubegate:org:{org}:{role}`)
//! and for each group their login brought (behind `clusters.impersonation_group_prefix`),
//! and `Impersonate-Extra-kubegate.io%2Frequest-id` with the request id, so that the
//! cluster's audit log and kubegate's join. kubegate's own credentials then only
//! authenticate kubegate.
//!
//! A request that carries `Impersonate-*` headers of its own (`kubectl --as`,
//! `--as-group`, `--as-uid`) asks to act as someone else. It is refused (403) unless the
//! policy grants the verb `impersonate` on each thing asked for: `kubegate:users/{name}`,
//! `kubegate:groups/{name}`, `kubegate:uids/{uid}`, `kubegate:userextras/{key}`; and
//! refused on a cluster with impersonation off, which could not carry it. Names that begin
//! with `system:` are never impersonated, whoever asks. Such headers are never forwarded
//! as they came.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpRequest;
use kubegate_actors::auditor::ActingAs;

use super::audit::AuditContext;
use super::tokens::is_system_name;
use super::{Gate, Identity};
use crate::status::StatusError;

/// The group every authenticated request has, as kube-apiserver adds it.
const AUTHENTICATED: &str = "system:authenticated";
/// The `Impersonate-Extra-` key that carries the request id (percent-encoded).
const REQUEST_ID_EXTRA: &str = "impersonate-extra-kubegate.io%2frequest-id";

/// What a client asked to act as with its own `Impersonate-*` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsAsked {
    /// `Impersonate-User`.
    pub user: String,
    /// Each `Impersonate-Group`.
    pub groups: Vec<String>,
    /// `Impersonate-Uid`.
    pub uid: Option<String>,
    /// Each `Impersonate-Extra-{key}`: the key as sent (percent-encoded), and a value.
    pub extra: Vec<(String, HeaderValue)>,
}

impl AsAsked {
    /// What `req` asks to act as; `None` when it carries no `Impersonate-*` header. 400
    /// when the headers do not make sense (groups without a user, two users).
    pub fn of(req: &HttpRequest) -> Result<Option<AsAsked>, StatusError> {
        let mut asked = AsAsked::default();
        let mut users = Vec::new();
        let mut any = false;
        for (name, value) in req.headers() {
            let name = name.as_str();
            let Some(what) = name.strip_prefix("impersonate-") else {
                continue;
            };
            any = true;
            let text = || {
                value.to_str().map(str::to_string).map_err(|_| {
                    StatusError::bad_request(format!("the {name} header is not visible ASCII text"))
                })
            };
            match what {
                "user" => users.push(text()?),
                "group" => asked.groups.push(text()?),
                "uid" => asked.uid = Some(text()?),
                _ => match what.strip_prefix("extra-") {
                    Some(key) if !key.is_empty() => {
                        if name == REQUEST_ID_EXTRA {
                            return Err(StatusError::bad_request(
                                "the extra kubegate.io/request-id is kubegate's own; a request may not set it",
                            ));
                        }
                        asked.extra.push((key.to_string(), value.clone()));
                    }
                    _ => {
                        return Err(StatusError::bad_request(format!(
                            "{name} is not an impersonation header (Impersonate-User, -Group, -Uid, -Extra-<key>)"
                        )))
                    }
                },
            }
        }
        if !any {
            return Ok(None);
        }
        match users.len() {
            1 => asked.user = users.remove(0),
            0 => return Err(StatusError::bad_request(
                "impersonating groups, a uid or extras needs Impersonate-User too (kubectl --as)",
            )),
            _ => {
                return Err(StatusError::bad_request(
                    "only one Impersonate-User header may be sent",
                ))
            }
        }
        if asked.user.is_empty() {
            return Err(StatusError::bad_request("Impersonate-User is empty"));
        }
        Ok(Some(asked))
    }

    /// The policy objects the person needs `impersonate` on.
    fn objects(&self) -> Vec<String> {
        let mut objects = vec![format!("kubegate:users/{}", self.user)];
        objects.extend(
            self.groups
                .iter()
                .filter(|g| *g != AUTHENTICATED)
                .map(|g| format!("kubegate:groups/{g}")),
        );
        objects.extend(self.uid.iter().map(|u| format!("kubegate:uids/{u}")));
        objects.extend(self.extra.iter().map(|(key, _)| {
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            format!("kubegate:userextras/{key}")
        }));
        objects
    }

    /// What the audit event records of it.
    pub fn acting_as(&self) -> ActingAs {
        ActingAs {
            user: self.user.clone(),
            groups: self.groups.clone(),
        }
    }
}

impl Gate {
    /// Step 3b of the proxy route: may the person of `identity` act as `asked` in `org`?
    /// 403 unless the policy grants `impersonate` on each user, group, uid and extra
    /// asked for; `system:` names are refused whatever the policy says.
    pub async fn admit_acting_as(
        &self,
        identity: &Identity,
        org: u64,
        asked: &AsAsked,
        audit: &mut AuditContext,
    ) -> Result<(), StatusError> {
        audit.event.acting_as = Some(asked.acting_as());
        let system = std::iter::once(&asked.user)
            .chain(asked.groups.iter().filter(|g| *g != AUTHENTICATED))
            .find(|name| is_system_name(name));
        if let Some(name) = system {
            let why = format!(
                "kubegate never impersonates Kubernetes' own users and groups (\"{name}\")"
            );
            audit.event.reason = why.clone();
            return Err(StatusError::forbidden(why));
        }
        for object in asked.objects() {
            let ask = super::policy::Ask {
                subject: &identity.user,
                org,
                object: &object,
                action: "impersonate",
                ..Default::default()
            };
            let decision = self.decide(ask).await?;
            if !decision.allowed {
                let what = object.trim_start_matches("kubegate:");
                let (kind, name) = what.split_once('/').unwrap_or((what, ""));
                let why = format!(
                    "user \"{}\" may not impersonate {} \"{name}\" in org {org}: the policy must grant the verb impersonate on kubegate:{kind}/{name}",
                    identity.user,
                    kind.trim_end_matches('s'),
                );
                audit.event.reason = why.clone();
                return Err(StatusError::forbidden(why));
            }
        }
        Ok(())
    }
}

/// The `Impersonate-*` headers a request carries to a cluster.
#[derive(Debug, Clone, Default)]
pub struct Impersonation {
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// What [`Impersonation::for_cluster`] needs to know of a request.
pub struct Request<'a> {
    /// Whether the cluster impersonates.
    pub cluster_impersonates: bool,
    /// The org and the cluster (for messages).
    pub org: u64,
    /// The cluster.
    pub cluster: u64,
    /// Who is asking.
    pub identity: &'a Identity,
    /// What they asked to act as, if anything (already granted).
    pub asked: Option<&'a AsAsked>,
    /// The request id.
    pub request_id: &'a str,
    /// `clusters.impersonation_group_prefix`.
    pub group_prefix: &'a str,
    /// Whether the person is a global administrator.
    pub global_admin: bool,
}

impl Impersonation {
    /// The headers for `request`: none on a cluster that does not impersonate (403 when
    /// the person asked to act as someone, which such a cluster cannot carry).
    pub fn for_cluster(request: Request<'_>) -> Result<Impersonation, StatusError> {
        let Request {
            cluster_impersonates,
            org,
            cluster,
            identity,
            asked,
            request_id,
            group_prefix,
            global_admin,
        } = request;
        if !cluster_impersonates {
            if asked.is_some() {
                return Err(StatusError::forbidden(format!(
                    "cluster {cluster} of org {org} does not impersonate, so it cannot act as another user \
                     (kubectl --as); an org admin can turn it on with \"impersonate\": true"
                )));
            }
            return Ok(Impersonation::default());
        }
        let mut out = Impersonation::default();
        match asked {
            Some(asked) => {
                out.push("impersonate-user", &asked.user)?;
                for group in &asked.groups {
                    if group != AUTHENTICATED {
                        out.push("impersonate-group", group)?;
                    }
                }
                out.push("impersonate-group", AUTHENTICATED)?;
                if let Some(uid) = &asked.uid {
                    out.push("impersonate-uid", uid)?;
                }
                for (key, value) in &asked.extra {
                    let name = HeaderName::try_from(format!("impersonate-extra-{key}"))
                        .map_err(|_| StatusError::bad_request("a bad Impersonate-Extra key"))?;
                    out.headers.push((name, value.clone()));
                }
            }
            None => {
                if is_system_name(&identity.user) {
                    return Err(StatusError::forbidden(format!(
                        "kubegate never impersonates Kubernetes' own users (\"{}\")",
                        identity.user
                    )));
                }
                out.push("impersonate-user", &identity.user)?;
                out.push("impersonate-group", AUTHENTICATED)?;
                for role in identity.roles.iter() {
                    out.push("impersonate-group", &format!("kubegate:org:{org}:{role}"))?;
                }
                if global_admin {
                    out.push("impersonate-group", "kubegate:global-admin")?;
                }
                if let Some((provider, groups)) = identity.login_groups() {
                    let prefix = group_prefix.replace("{provider}", provider);
                    for group in groups {
                        let group = format!("{prefix}{group}");
                        if is_system_name(&group) {
                            continue;
                        }
                        if out.push("impersonate-group", &group).is_err() {
                            log::warn!(
                                "group {group:?} of {} is not sent to the API server: not a valid header value",
                                identity.user
                            );
                        }
                    }
                }
            }
        }
        out.push(REQUEST_ID_EXTRA, request_id)?;
        Ok(out)
    }

    fn push(&mut self, name: &'static str, value: &str) -> Result<(), StatusError> {
        let value = HeaderValue::from_str(value).map_err(|_| {
            StatusError::forbidden(format!(
                "\"{value}\" cannot be sent to the API server in {name}: not visible ASCII text"
            ))
        })?;
        self.headers.push((HeaderName::from_static(name), value));
        Ok(())
    }

    /// The headers, in order (`Impersonate-Group` once per group).
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::session::SessionUser;
    use actix_web::test::TestRequest;

    fn person(session_groups: &[&str]) -> Identity {
        Identity {
            user: "github:alice".into(),
            session: Some(SessionUser {
                user: "github:alice".into(),
                provider: "github".into(),
                groups: session_groups.iter().map(|g| g.to_string()).collect(),
                sid: "s".into(),
                csrf: "c".into(),
                expires_at: 0,
            }),
            roles: vec!["admin".into()].into(),
            login: None,
            expires_at: None,
        }
    }

    fn request<'a>(identity: &'a Identity, asked: Option<&'a AsAsked>, on: bool) -> Request<'a> {
        Request {
            cluster_impersonates: on,
            org: 7,
            cluster: 3,
            identity,
            asked,
            request_id: "rid-1",
            group_prefix: "{provider}:",
            global_admin: false,
        }
    }

    fn pairs(imp: &Impersonation) -> Vec<(String, String)> {
        imp.headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn the_person_goes_up_with_roles_login_groups_and_the_request_id() {
        let alice = person(&["acme/dev", "system:masters"]);
        let imp = Impersonation::for_cluster(request(&alice, None, true)).unwrap();
        assert_eq!(
            pairs(&imp),
            [
                ("impersonate-user", "github:alice"),
                ("impersonate-group", "system:authenticated"),
                ("impersonate-group", "kubegate:org:7:admin"),
                ("impersonate-group", "github:acme/dev"),
                ("impersonate-group", "github:system:masters"),
                ("impersonate-extra-kubegate.io%2frequest-id", "rid-1"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // with no prefix a provider's system: group is dropped
        let mut bare = request(&alice, None, true);
        bare.group_prefix = "";
        let imp = Impersonation::for_cluster(bare).unwrap();
        assert!(pairs(&imp).iter().all(|(_, v)| v != "system:masters"));
        // a cluster that does not impersonate gets nothing
        assert!(Impersonation::for_cluster(request(&alice, None, false))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_kubectl_login_token_brings_its_login_groups() {
        // the bearer token of a kubectl login session (`kubegate login`) carries them
        let mut alice = person(&[]);
        alice.session = None;
        alice.login = Some(("dex".into(), vec!["acme/dev".into()]));
        let imp = Impersonation::for_cluster(request(&alice, None, true)).unwrap();
        assert!(pairs(&imp).contains(&("impersonate-group".into(), "dex:acme/dev".into())));
        // any other token brings none
        alice.login = None;
        let imp = Impersonation::for_cluster(request(&alice, None, true)).unwrap();
        assert!(!pairs(&imp).iter().any(|(_, v)| v.contains("acme/dev")));
    }

    #[test]
    fn a_granted_as_goes_up_as_asked_and_needs_the_cluster_to_impersonate() {
        let alice = person(&[]);
        let asked = AsAsked {
            user: "bob".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        };
        let imp = Impersonation::for_cluster(request(&alice, Some(&asked), true)).unwrap();
        assert_eq!(
            pairs(&imp),
            [
                ("impersonate-user", "bob"),
                ("impersonate-group", "dev"),
                ("impersonate-group", "system:authenticated"),
                ("impersonate-extra-kubegate.io%2frequest-id", "rid-1"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let e = Impersonation::for_cluster(request(&alice, Some(&asked), false)).unwrap_err();
        assert_eq!(e.code.as_u16(), 403);
        assert!(e.message.contains("does not impersonate"), "{}", e.message);
    }

    #[test]
    fn client_headers_are_read_and_checked() {
        let req = TestRequest::default()
            .insert_header(("Impersonate-User", "bob"))
            .append_header(("Impersonate-Group", "dev"))
            .append_header(("Impersonate-Group", "ops"))
            .insert_header(("Impersonate-Extra-Scopes", "view"))
            .to_http_request();
        let asked = AsAsked::of(&req).unwrap().unwrap();
        assert_eq!(asked.user, "bob");
        assert_eq!(asked.groups, ["dev", "ops"]);
        assert_eq!(
            asked.objects(),
            [
                "kubegate:users/bob",
                "kubegate:groups/dev",
                "kubegate:groups/ops",
                "kubegate:userextras/scopes"
            ]
        );
        let none = TestRequest::default().to_http_request();
        assert_eq!(AsAsked::of(&none).unwrap(), None);
        let groups_only = TestRequest::default()
            .insert_header(("Impersonate-Group", "dev"))
            .to_http_request();
        assert_eq!(AsAsked::of(&groups_only).unwrap_err().code.as_u16(), 400);
        let ours = TestRequest::default()
            .insert_header(("Impersonate-User", "bob"))
            .insert_header(("Impersonate-Extra-kubegate.io%2Frequest-id", "x"))
            .to_http_request();
        assert_eq!(AsAsked::of(&ours).unwrap_err().code.as_u16(), 400);
    }
}
