//! Authentication and identity: the HTTPS client certificate of each connection, the
//! static bearer token, and the reviews that say who a request is (`SelfSubjectReview`, for
//! `kubectl auth whoami`, and `TokenReview`).
//!
//! Faithful to kube-apiserver with `--anonymous-auth=false`: a client certificate signed by
//! the cluster CA is tried first (user from its CN, groups from its O values), then
//! `Authorization: Bearer` against the one static token (as `--token-auth-file`); neither
//! is `401 Unauthorized`, and `system:authenticated` is added to the groups. A certificate
//! from another CA never gets past the TLS handshake. `SelfSubjectReview` answers with
//! the identity the request acts as (impersonation is resolved by `rbac`);
//! `TokenReview` says whether a token is the static one. Not faithful: there are no
//! service account tokens, no OIDC and no webhook authentication.

use std::any::Any;

use actix_web::dev::Extensions;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};

use super::responses::json_response;
use super::router::Call;
use super::{Identity, Shared, TOKEN_USER};

/// The subject of a verified client certificate, kept with the connection.
#[derive(Clone, Debug)]
struct ClientCertSubject {
    user: String,
    groups: Vec<String>,
}

/// Runs once per TLS connection: rustls has already verified the certificate chain
/// against the cluster CA (an untrusted one never gets here), so only the subject is read.
pub(super) fn remember_client_certificate(connection: &dyn Any, extensions: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(tls) = connection.downcast_ref::<Tls>() else {
        return;
    };
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return;
    };
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    extensions.insert(ClientCertSubject { user, groups });
}

pub(super) fn authenticate(req: &HttpRequest, shared: &Shared) -> Identity {
    if let Some(subject) = req.conn_data::<ClientCertSubject>() {
        return Identity::ClientCert {
            user: subject.user.clone(),
            groups: subject.groups.clone(),
        };
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match (bearer, shared.token.as_deref()) {
        (Some(given), Some(expected)) if given == expected => Identity::Token,
        _ => Identity::Anonymous,
    }
}

impl Call<'_> {
    pub(super) fn self_subject_review(&self) -> HttpResponse {
        // the identity the request acts as: impersonation was resolved (and checked) by
        // the router
        let mut user_info = json!({
            "username": self.identity.user().unwrap_or_default(),
            "groups": self.identity.groups(),
        });
        if let Identity::Impersonated { extra, .. } = &self.identity {
            let mut map = serde_json::Map::new();
            for (key, value) in extra {
                if let Some(values) = map
                    .entry(key.clone())
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    values.push(json!(value));
                }
            }
            user_info["extra"] = Value::Object(map);
        }
        json_response(
            201,
            &json!({
                "kind": "SelfSubjectReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "status": {"userInfo": user_info},
            }),
        )
    }

    pub(super) fn token_review(&self, body: &Bytes) -> HttpResponse {
        let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let status = if Some(token) == self.shared.token.as_deref() {
            json!({"authenticated": true, "user": {"username": TOKEN_USER, "groups": ["system:authenticated"]}})
        } else {
            json!({"user": {}, "error": "invalid bearer token"})
        };
        json_response(
            201,
            &json!({
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": null},
                "spec": review["spec"],
                "status": status,
            }),
        )
    }
}
