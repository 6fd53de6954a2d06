//! The proxy route: `ANY /pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy/{path}`.
//!
//! The order of the pipeline is written once, in [`handle`]:
//!
//! 1. check the path (400): what is authorized must be what is forwarded;
//! 2. authenticate (401): nobody learns anything about an org without an identity;
//! 3. authorize (403) before looking the cluster up, so outsiders cannot probe which
//!    cluster ids exist, and, when the client sent `Impersonate-*` headers
//!    (`kubectl --as`), whether the policy lets the person act as whom they named;
//! 4. find the cluster's proxy instance (404, 503), and on a cluster that impersonates,
//!    the `Impersonate-*` headers that tell it who is asking
//!    ([`crate::gate::impersonation`]);
//! 5. forward, streaming both ways (502, 504); an upgrade request (exec, attach,
//!    port-forward) instead becomes a tunnel to the API server ([`tunnel`]);
//!
//! and every request, whatever its end, becomes one audit event.

mod dial;
pub mod headers;
mod multiplex;
pub mod path;
mod read_ahead;
pub mod rewrite;
pub mod tunnel;
pub mod upstream;

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{ConnectError, SendRequestError};
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::auditor::AuditDecision;
use kubegate_actors::kubeconfig::KubeconfigRules;
use kubegate_actors::registry::ClusterProxy;
use kubegate_actors::registry::{ClusterRegistry, Create, RegistryError};
use kubegate_actors::store::StoreError;
use kubegate_actors::ClusterKey;
use serde_json::json;

use crate::gate::audit::{AuditContext, AuditedBody, Counted};
use crate::gate::impersonation::{self, AsAsked, Impersonation};
use crate::gate::{Gate, Question};
use crate::status::StatusError;
use path::ProxyPath;

fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers().contains_key(header::UPGRADE)
        || headers::connection_listed(req.headers())
            .iter()
            .any(|t| t == "upgrade")
}

/// Whether an upgrade request becomes a tunnel ([`tunnel`]): for any protocol but
/// `h2c` alone, which a server may ignore (curl `--http2` asks for it on plain HTTP):
/// such a request is forwarded as the HTTP/1.1 request it also is.
fn tunnels(req: &HttpRequest) -> bool {
    is_upgrade(req)
        && !req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').all(|p| p.trim().eq_ignore_ascii_case("h2c")))
}

/// What the proxy route needs beside the gate: how to reach the clusters' API servers.
pub struct Upstreams {
    /// The cluster registry, which builds each cluster's proxy instance.
    pub registry: Addr<ClusterRegistry>,
    /// How clients towards the API servers are built (connect timeout, SSRF guard,
    /// watches per HTTP/2 connection).
    pub clients: upstream::ClientSettings,
    /// How long the API server may take to answer an upgrade once connected.
    pub upgrade_timeout: Duration,
    /// Rules every kubeconfig must follow (the networks never connected to).
    pub rules: KubeconfigRules,
    /// Record the bodies of writes up to this many bytes (`None`: never).
    pub audit_bodies: Option<usize>,
    /// What comes before a login group in `Impersonate-Group` (`{provider}`: its name).
    pub impersonation_group_prefix: String,
    /// Where session recordings go, and their limits.
    pub recordings: tunnel::record::RecordingSettings,
}

/// Where a request stands once it may be forwarded.
struct Authorized {
    path: ProxyPath,
    proxy: Arc<ClusterProxy>,
    upstream: upstream::Upstream,
    impersonation: Impersonation,
}

/// The proxy handler.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    gate: web::Data<Gate>,
    upstreams: web::Data<Upstreams>,
) -> HttpResponse {
    let mut audit = gate.record(&req);
    match admit(&req, &gate, &upstreams, &mut audit).await {
        // 5'. an upgrade (exec, attach, port-forward...): a tunnel, not a request
        Ok(authorized) if tunnels(&req) => {
            // boxed: a tunnel's future is large, and every request's would be as large
            Box::pin(tunnel::handle(
                req, payload, gate, upstreams, audit, authorized,
            ))
            .await
        }
        Ok(authorized) => forward(req, payload, gate, upstreams, audit, authorized).await,
        Err(error) => {
            if let Some(login) = gate.browser_redirect(&req, error.code) {
                // a person opening a page (the dashboard) without a session: log in first
                gate.refused(&req, audit, login.status(), &error.message, 0);
                return login;
            }
            let bytes_out = error.body().len() as u64;
            gate.refused(&req, audit, error.code, &error.message, bytes_out);
            let response = error.response();
            if tunnels(&req) {
                // nothing may follow a refused upgrade on its connection
                return tunnel::refused(&req, response);
            }
            response
        }
    }
}

/// Steps 1 to 4 of the pipeline: everything before forwarding.
async fn admit(
    req: &HttpRequest,
    gate: &Gate,
    upstreams: &Upstreams,
    audit: &mut AuditContext,
) -> Result<Authorized, StatusError> {
    // 1. the path, checked once
    let path = ProxyPath::parse(req.uri().path()).inspect_err(|_| {
        audit.event.path = req.uri().path().to_string();
    })?;
    audit.event.path = path.k8s_path.clone();
    audit.event.org = Some(path.org);
    audit.event.cluster = Some(path.cluster);
    let query = req.uri().query().unwrap_or("");
    let attributes = RequestAttributes::derive(
        req.method().as_str(),
        &path.k8s_path,
        query,
        is_upgrade(req),
    );

    // 2. and 3. who is asking, and may they (the gate)
    let question = Question::Cluster {
        org: path.org,
        cluster: path.cluster,
        path: &path.k8s_path,
        attributes: &attributes,
    };
    let admitted = gate.admit(req, question, audit).await;
    // the event has them whatever the answer (moved, not copied: the gate does not read
    // them from the event)
    audit.event.attributes = attributes;
    let identity = admitted?;
    // 3'. acting as someone else (kubectl --as): only when the policy grants it
    let asked = AsAsked::of(req)?;
    if let Some(asked) = &asked {
        gate.admit_acting_as(&identity, path.org, asked, audit)
            .await?;
    }

    // 4. the cluster
    let key = ClusterKey {
        org: path.org,
        cluster: path.cluster,
    };
    let upstream = cluster_client(key, upstreams).await?;
    let proxy = upstream.proxy.clone();
    proxy.touch();
    // 4'. who the API server is told the request comes from
    let impersonation = Impersonation::for_cluster(impersonation::Request {
        cluster_impersonates: proxy.impersonate,
        org: path.org,
        cluster: path.cluster,
        identity: &identity,
        asked: asked.as_ref(),
        request_id: &audit.event.request_id,
        group_prefix: &upstreams.impersonation_group_prefix,
        global_admin: gate.is_global_admin(&identity.user),
    })?;
    Ok(Authorized {
        path,
        proxy,
        upstream,
        impersonation,
    })
}

/// Why [`api_server_version`] has no version.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The cluster is not in the org (or its proxy instance cannot be built).
    #[error("{}", .0.message)]
    Cluster(StatusError),
    /// The API server did not answer, or not with a version.
    #[error("{0}")]
    Unreachable(String),
}

/// The API server's `GET /version` (its `gitVersion`, `platform`...), asked with
/// kubegate's credentials through this worker's client for the cluster, waiting at most
/// `timeout` for the whole answer.
pub async fn api_server_version(
    key: ClusterKey,
    upstreams: &Upstreams,
    timeout: Duration,
) -> Result<serde_json::Value, VersionError> {
    let (status, body) = api_server_get(key, upstreams, "/version", timeout).await?;
    if !status.is_success() {
        return Err(VersionError::Unreachable(format!(
            "the API server answered {status} to /version with kubegate's credentials"
        )));
    }
    serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| {
        VersionError::Unreachable(format!("the API server's /version is not JSON: {e}"))
    })
}

/// Whether the API server answers `GET path` (an object's path) with a success, asked
/// with kubegate's own credentials within `timeout`: whether a cluster has that object.
pub async fn api_server_has(
    key: ClusterKey,
    upstreams: &Upstreams,
    path: &str,
    timeout: Duration,
) -> bool {
    api_server_get(key, upstreams, path, timeout)
        .await
        .is_ok_and(|(status, _)| status.is_success())
}

/// `GET path` on the cluster's API server with kubegate's credentials, within `timeout`:
/// the status and the body (at most 64 KiB).
async fn api_server_get(
    key: ClusterKey,
    upstreams: &Upstreams,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, web::Bytes), VersionError> {
    let upstream::Upstream {
        proxy,
        plain: client,
        ..
    } = cluster_client(key, upstreams)
        .await
        .map_err(|e| match e.code.as_u16() {
            // the registry could not build it from the kubeconfig's credentials
            502 => VersionError::Unreachable(e.message),
            _ => VersionError::Cluster(e),
        })?;
    let mut request = client
        .get(format!("{}{path}", proxy.server))
        .timeout(timeout)
        .insert_header((header::ACCEPT, "application/json"));
    if let Some(authorization) = proxy.authorization_header() {
        request = request.insert_header((header::AUTHORIZATION, authorization));
    }
    let answer = async {
        let mut response = request.send().await.map_err(|e| match e {
            SendRequestError::Timeout => {
                format!("no answer from {} within {timeout:?}", proxy.server)
            }
            SendRequestError::Connect(ConnectError::Timeout) => {
                format!(
                    "no connection to {} within the connect timeout",
                    proxy.server
                )
            }
            other => format!("{} cannot be reached: {other}", proxy.server),
        })?;
        let status = response.status();
        let body = response
            .body()
            .limit(64 * 1024)
            .await
            .map_err(|e| format!("the API server's answer to {path} was cut: {e}"))?;
        Ok::<_, String>((status, body))
    };
    actix_rt::time::timeout(timeout, answer)
        .await
        .map_err(|_| {
            VersionError::Unreachable(format!(
                "no answer from {} within {timeout:?}",
                proxy.server
            ))
        })?
        .map_err(VersionError::Unreachable)
}

/// This worker's clients for the cluster, asking the registry when the worker has none.
async fn cluster_client(
    key: ClusterKey,
    upstreams: &Upstreams,
) -> Result<upstream::Upstream, StatusError> {
    if let Some(found) = upstream::cached(key) {
        return Ok(found);
    }
    let proxy = upstreams
        .registry
        .send(Create(key))
        .await
        .map_err(|_| StatusError::unavailable("the cluster registry is not running"))?
        .map_err(|e| match e {
            RegistryError::NotFound(_) => StatusError::not_found(format!(
                "cluster {} not found in org {}",
                key.cluster, key.org
            ))
            .with_details(json!({"name": key.cluster.to_string(), "kind": "clusters"})),
            RegistryError::Store(StoreError::Unavailable(reason)) => {
                StatusError::unavailable(format!("the cluster store is unavailable: {reason}"))
            }
            RegistryError::Credentials { .. } => StatusError::bad_gateway(e.to_string()),
            // a stuck build (a store or credential plugin that does not answer) fails
            // everyone waiting on it; the next request starts afresh
            RegistryError::Timeout { .. } => StatusError::unavailable(e.to_string()),
            other => StatusError::internal(other.to_string()),
        })?;
    Ok(upstream::client_for(&proxy, &upstreams.clients))
}

/// Step 5: stream the request to the API server and its answer back.
async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    gate: web::Data<Gate>,
    upstreams: web::Data<Upstreams>,
    mut audit: AuditContext,
    authorized: Authorized,
) -> HttpResponse {
    let Authorized {
        path,
        proxy,
        upstream: clients,
        impersonation,
    } = authorized;
    // a watch goes over HTTP/2 when the API server speaks it, on a stream of a pooled
    // connection that the lease counts until the watch ends ([`upstream`]); so does a
    // GET whose path answered small the last time, and the first get of an object
    let attributes = &audit.event.attributes;
    let verb = &*attributes.verb;
    let object = verb == "get" && attributes.is_resource && attributes.subresource.is_empty();
    let small_key = (req.method() == Method::GET && matches!(verb, "get" | "list")).then(|| {
        clients
            .small
            .key(req.uri().path_and_query().map_or("", |p| p.as_str()))
    });
    let lease = if verb == "watch" {
        clients.for_watch()
    } else if let Some(key) = small_key {
        clients.for_get(key, object)
    } else {
        None
    };

    let received = Rc::new(Cell::new(0u64));
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let captured = (upstreams.audit_bodies.is_some() && writes)
        .then(|| crate::gate::audit::CapturedBody::new(upstreams.audit_bodies.unwrap_or(0)));
    let mut body = Counted::new(payload, received.clone());
    if let Some(captured) = &captured {
        body = body.capturing(captured.clone());
    }
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
    let chunked = req
        .headers()
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    // a stream of the pool carries bodiless requests only (a GET with a body goes on
    // HTTP/1.1)
    let no_body = matches!(content_length, None | Some(Some(0))) && !chunked;
    let lease = lease.filter(|_| no_body);
    // the URL and the credential, made once (a request sent again reuses them); one
    // that does not parse goes to awc, which refuses it (502) as it always did
    let made = lease.as_ref().and_then(|_| {
        let uri = upstream_url(&req, &path, &proxy)
            .parse::<http02::Uri>()
            .ok()?;
        let authorization = match proxy.authorization_header() {
            Some(a) => Some(header::HeaderValue::from_str(a).ok()?),
            None => None,
        };
        Some((uri, authorization))
    });
    let (multiplexed, lease) = match (lease, made) {
        (Some(mut lease), Some((uri, authorization))) => match lease
            .send(|| multiplexed_request(&req, uri.clone(), authorization.clone(), &impersonation))
            .await
        {
            // the API server speaks HTTP/1.1 only
            Ok(None) => (Ok(None), None),
            sent => (sent.map_err(UpstreamError::Multiplexed), Some(lease)),
        },
        _ => (Ok(None), None),
    };
    let sent = match (multiplexed, content_length) {
        (Ok(Some(answer)), _) => Ok(Ok(Answer::Multiplexed(answer))),
        (Err(e), _) => Ok(Err(e)),
        (Ok(None), Some(None)) => Err(StatusError::bad_request(
            "the Content-Length header is not a number",
        )),
        (Ok(None), content_length) => {
            let upstream = upstream_request(&clients.plain, &req, &path, &proxy, &impersonation);
            let sent = match content_length {
                Some(Some(0)) | None if !chunked => upstream.send().await,
                Some(Some(len)) => {
                    upstream
                        .send_body(actix_web::body::SizedStream::new(len, body))
                        .await
                }
                _ => upstream.send_stream(body).await,
            };
            Ok(sent.map(Answer::Plain).map_err(UpstreamError::Plain))
        }
    };
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            let error = e.status(&proxy);
            log::warn!("request {} to {}: {e}", audit.event.request_id, proxy.key);
            audit.event.decision = AuditDecision::Error;
            audit.event.error = Some(error.message.clone());
            let body = error.body();
            let response = error.response();
            audit.finish(
                gate.auditor(),
                error.code.as_u16(),
                received.get(),
                body.len() as u64,
            );
            return response;
        }
        Err(error) => {
            audit.event.decision = AuditDecision::Deny;
            audit.event.error = Some(error.message.clone());
            let response = error.response();
            audit.finish(gate.auditor(), error.code.as_u16(), 0, 0);
            return response;
        }
    };

    // the answer's headers are moved out of the API server's answer, not copied
    let (status, mut answer_headers, response) = response.into_parts();
    let length = answer_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    let json_watch = audit.event.attributes.verb == "watch"
        && answer_headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let html = audit.event.attributes.subresource == "proxy" && is_plain_html(&answer_headers);
    // written only for the answers that need it (a redirect, a dashboard page)
    let prefix = || rewrite::prefix(path.org, path.cluster);
    passed_back(&mut answer_headers, prefix, &proxy.server);
    if html {
        let prefix = prefix();
        // boxed: a rare path, whose future would otherwise make every request's larger
        return Box::pin(html_with_links_moved(
            response,
            (status, answer_headers),
            audit,
            &gate,
            received,
            &prefix,
        ))
        .await;
    }
    let mut builder = HttpResponse::build(status);
    let body = AuditedBody::new(
        Leased {
            inner: response,
            _lease: lease,
            events: json_watch.then(bytes::Bytes::new),
            size: small_key.map(|key| AnswerSize {
                small: clients.small.clone(),
                key,
                bytes: 0,
                length,
            }),
        },
        audit,
        gate.auditor().clone(),
        status.as_u16(),
        received,
        length,
    )
    .with_request_body(captured);
    let bodiless = req.method() == Method::HEAD
        || status.as_u16() == 204
        || status.as_u16() == 304
        || status.is_informational()
        || length == Some(0);
    let answer = if bodiless {
        // recorded here, before the answer leaves (actix-web polls no empty body)
        body.finish_now();
        if let Some(len) = length {
            builder.no_chunking(len);
        }
        builder.finish()
    } else {
        match length {
            Some(len) => builder.body(actix_web::body::SizedStream::new(len, body)),
            None => builder.streaming(body),
        }
    };
    with_headers(answer, answer_headers)
}

/// Keeps, of an API server's answer's headers, those that go back to the client: not the
/// hop-by-hop ones (also those its `Connection` lists) nor the body's framing, which
/// actix-web writes itself; and a redirect to a path of the API server stays under the
/// cluster's prefix (`prefix`, asked only then).
fn passed_back(answer: &mut HeaderMap, prefix: impl Fn() -> String, server: &str) {
    let listed = headers::connection_listed(answer);
    answer.retain(|name, _| {
        !headers::dropped_from_answer(name) && !listed.iter().any(|l| l == name.as_str())
    });
    if !answer.contains_key(header::LOCATION) {
        return;
    }
    let moved: Vec<header::HeaderValue> = answer
        .get_all(header::LOCATION)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| rewrite::location(v, &prefix(), server))
                .and_then(|v| header::HeaderValue::from_str(&v).ok())
                .unwrap_or_else(|| value.clone())
        })
        .collect();
    answer.remove(header::LOCATION);
    for value in moved {
        answer.append(header::LOCATION, value);
    }
}

/// `answer` with the API server's `headers`: the whole map moved in, and of kubegate's
/// own (what actix-web set: a body's `Content-Length`, `application/octet-stream` for a
/// stream without a type) those the API server's answer does not have.
fn with_headers(mut answer: HttpResponse, headers: HeaderMap) -> HttpResponse {
    let own = std::mem::replace(answer.headers_mut(), headers);
    for name in own.keys() {
        if !answer.headers().contains_key(name) {
            for value in own.get_all(name) {
                answer.headers_mut().append(name.clone(), value.clone());
            }
        }
    }
    answer
}

/// The request to the API server over HTTP/1.1 (awc): its URL, and the headers of
/// [`forwarded_headers`].
fn upstream_request(
    client: &awc::Client,
    req: &HttpRequest,
    path: &ProxyPath,
    proxy: &ClusterProxy,
    impersonation: &Impersonation,
) -> awc::ClientRequest {
    let mut upstream = client.request(req.method().clone(), upstream_url(req, path, proxy));
    // set in place: awc's builder methods move the whole request in and out per header
    let headers = upstream.headers_mut();
    forwarded_headers(req, impersonation, |name, value| {
        headers.append(name, value);
    });
    // a credential that is not a valid header value fails the request (502)
    match proxy.authorization_header() {
        Some(authorization) => upstream.insert_header((header::AUTHORIZATION, authorization)),
        None => upstream,
    }
}

/// The bodiless request to `uri` ([`upstream_url`]) on a stream of a pooled HTTP/2
/// connection ([`multiplex`]), with the headers of [`forwarded_headers`] and kubegate's
/// credential for the cluster (`authorization`).
fn multiplexed_request(
    req: &HttpRequest,
    uri: http02::Uri,
    authorization: Option<header::HeaderValue>,
    impersonation: &Impersonation,
) -> http02::Request<()> {
    let mut out = http02::Request::new(());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = uri;
    *out.version_mut() = http02::Version::HTTP_2;
    let headers = out.headers_mut();
    forwarded_headers(req, impersonation, |name, value| {
        headers.append(name, value);
    });
    if let Some(authorization) = authorization {
        headers.insert(header::AUTHORIZATION, authorization);
    }
    out
}

/// The API server's URL for the request: its server, the Kubernetes path, the query.
fn upstream_url(req: &HttpRequest, path: &ProxyPath, proxy: &ClusterProxy) -> String {
    let query = req.uri().query();
    let mut url = String::with_capacity(
        proxy.server.len() + path.k8s_path.len() + query.map_or(0, |q| q.len() + 1),
    );
    url.push_str(&proxy.server);
    url.push_str(&path.k8s_path);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The headers forwarded to the API server, given to `put` one by one: the client's less
/// the hop-by-hop ones and those that carry identities, kubegate's `X-Forwarded-For` and
/// the impersonation (the credentials are the caller's).
fn forwarded_headers(
    req: &HttpRequest,
    impersonation: &Impersonation,
    mut put: impl FnMut(header::HeaderName, header::HeaderValue),
) {
    let listed = headers::connection_listed(req.headers());
    for (name, value) in req.headers() {
        if !headers::dropped_from_request(name) && !listed.iter().any(|l| l == name.as_str()) {
            put(name.clone(), value.clone());
        }
    }
    // visible ASCII only (the client's header as text, and an address)
    let forwarded_for = headers::forwarded_for(req);
    if let Ok(value) = header::HeaderValue::try_from(forwarded_for) {
        if !value.is_empty() {
            put(header::HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    for (name, value) in impersonation.headers() {
        put(name.clone(), value.clone());
    }
}

/// The API server's answer, over either transport.
enum Answer {
    Plain(awc::ClientResponse),
    Multiplexed(http02::Response<multiplex::Body>),
}

impl Answer {
    /// Its status, its headers (moved out, not copied) and its body.
    fn into_parts(self) -> (StatusCode, HeaderMap, UpstreamBody) {
        match self {
            Answer::Plain(response) => {
                let status = response.status();
                let mut headers = HeaderMap::new();
                let response = response.map_body(|head, payload| {
                    headers = std::mem::take(&mut head.headers);
                    payload
                });
                (status, headers, UpstreamBody::Plain(response))
            }
            Answer::Multiplexed(response) => {
                let (parts, body) = response.into_parts();
                (
                    parts.status,
                    HeaderMap::from(parts.headers),
                    UpstreamBody::Multiplexed(body),
                )
            }
        }
    }
}

/// Why the API server's answer did not come, over either transport.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("{0}")]
    Plain(SendRequestError),
    #[error("{0}")]
    Multiplexed(multiplex::Error),
}

impl UpstreamError {
    /// The `Status` the client gets (502, 504).
    fn status(&self, proxy: &ClusterProxy) -> StatusError {
        let name = dial::server_name(proxy);
        let timeout =
            || StatusError::gateway_timeout(format!("{name} did not accept a connection in time"));
        match self {
            UpstreamError::Plain(
                SendRequestError::Connect(ConnectError::Timeout) | SendRequestError::Timeout,
            ) => timeout(),
            UpstreamError::Plain(SendRequestError::Connect(ConnectError::Io(io)))
                if io.kind() == std::io::ErrorKind::TimedOut =>
            {
                timeout()
            }
            UpstreamError::Plain(SendRequestError::Connect(c)) => {
                StatusError::bad_gateway(format!("{name} is unreachable: {c}"))
            }
            UpstreamError::Plain(other) => {
                StatusError::bad_gateway(format!("{name} failed: {other}"))
            }
            UpstreamError::Multiplexed(multiplex::Error::ConnectTimeout) => timeout(),
            UpstreamError::Multiplexed(e) => StatusError::bad_gateway(format!("{name} {e}")),
        }
    }
}

/// The body of the API server's answer, over either transport.
enum UpstreamBody {
    Plain(awc::ClientResponse),
    Multiplexed(multiplex::Body),
}

/// Why the body of the API server's answer broke off.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("{0}")]
    Plain(awc::error::PayloadError),
    #[error("{0}")]
    Multiplexed(h2::Error),
}

impl futures_util::Stream for UpstreamBody {
    type Item = Result<bytes::Bytes, BodyError>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.get_mut() {
            UpstreamBody::Plain(body) => Pin::new(body)
                .poll_next(cx)
                .map(|c| c.map(|c| c.map_err(BodyError::Plain))),
            UpstreamBody::Multiplexed(body) => Pin::new(body)
                .poll_next(cx)
                .map(|c| c.map(|c| c.map_err(BodyError::Multiplexed))),
        }
    }
}

/// A response body that holds its watch's lease on a pooled HTTP/2 stream until it is
/// dropped (the watch ended, or its client left).
///
/// A JSON watch also leaves in one chunk per event, as kube-apiserver writes it over
/// HTTP/1.1 (`events`: what is left of the last piece read): over HTTP/2 a DATA frame
/// may carry several events when the API server (or a proxy before it) wrote them
/// together, and clients that read an event per chunk would see two at once. A piece
/// without a line end is passed on at once, never held back.
///
/// For a GET that may go over HTTP/2 next time, it also counts the answer's bytes
/// (`size`), and notes them in [`upstream::SmallAnswers`] once the answer is whole.
struct Leased<S> {
    inner: S,
    _lease: Option<upstream::WatchLease>,
    events: Option<bytes::Bytes>,
    size: Option<AnswerSize>,
}

/// The bytes of an answer so far, for [`upstream::SmallAnswers`].
struct AnswerSize {
    small: Rc<upstream::SmallAnswers>,
    key: u64,
    bytes: u64,
    /// The answer's `Content-Length`, when it has one: its last byte ends it (the body is
    /// not polled further).
    length: Option<u64>,
}

impl<S, E> futures_util::Stream for Leased<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    type Item = Result<bytes::Bytes, E>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(left) = this.events.as_mut() else {
            let next = Pin::new(&mut this.inner).poll_next(cx);
            if let Some(size) = &mut this.size {
                match &next {
                    std::task::Poll::Ready(Some(Ok(chunk))) => {
                        size.bytes += chunk.len() as u64;
                        let whole = size.length.is_some_and(|l| size.bytes >= l);
                        // large: noted at once, and counted no further
                        if whole || size.bytes > upstream::SMALL_ANSWER {
                            size.small.answered(size.key, size.bytes);
                            this.size = None;
                        }
                    }
                    std::task::Poll::Ready(None) => {
                        size.small.answered(size.key, size.bytes);
                        this.size = None;
                    }
                    _ => {}
                }
            }
            return next;
        };
        if left.is_empty() {
            match std::task::ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(piece)) => *left = piece,
                other => return std::task::Poll::Ready(other),
            }
        }
        let event = match left.iter().position(|&b| b == b'\n') {
            Some(end) if end + 1 < left.len() => left.split_to(end + 1),
            _ => std::mem::take(left),
        };
        std::task::Poll::Ready(Some(Ok(event)))
    }
}

/// An uncompressed `text/html` answer.
fn is_plain_html(headers: &HeaderMap) -> bool {
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
    html && !encoded
}

/// A page from a service, pod or node proxy, its absolute links moved under the cluster's
/// prefix ([`rewrite`]). Held whole up to [`rewrite::MAX_HTML_BYTES`]; a
/// larger page streams on unchanged.
async fn html_with_links_moved(
    mut response: UpstreamBody,
    (status, headers): (StatusCode, HeaderMap),
    audit: AuditContext,
    gate: &Gate,
    received: Rc<Cell<u64>>,
    prefix: &str,
) -> HttpResponse {
    use futures_util::StreamExt;
    let mut builder = HttpResponse::build(status);
    let mut page = bytes::BytesMut::new();
    let mut whole = true;
    while let Some(chunk) = response.next().await {
        match chunk {
            Ok(chunk) => page.extend_from_slice(&chunk),
            Err(e) => {
                let error = StatusError::bad_gateway(format!("the page broke off: {e}"));
                let mut audit = audit;
                audit.event.decision = AuditDecision::Error;
                audit.event.error = Some(error.message.clone());
                audit.finish(gate.auditor(), error.code.as_u16(), received.get(), 0);
                return error.response();
            }
        }
        if page.len() > rewrite::MAX_HTML_BYTES {
            whole = false;
            break;
        }
    }
    let body: Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, BodyError>>>> =
        match (whole, std::str::from_utf8(&page)) {
            (true, Ok(text)) => {
                let moved = bytes::Bytes::from(rewrite::html(text, prefix));
                builder.no_chunking(moved.len() as u64);
                Box::pin(futures_util::stream::once(async move { Ok(moved) }))
            }
            (true, Err(_)) => {
                builder.no_chunking(page.len() as u64);
                Box::pin(futures_util::stream::once(async move { Ok(page.freeze()) }))
            }
            (false, _) => Box::pin(
                futures_util::stream::once(async move { Ok(page.freeze()) }).chain(response),
            ),
        };
    let body = AuditedBody::new(
        body,
        audit,
        gate.auditor().clone(),
        status.as_u16(),
        received,
        None,
    );
    with_headers(builder.streaming(body), headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;

    #[actix_rt::test]
    async fn a_json_watch_leaves_in_one_chunk_per_event() {
        let pieces = ["{\"a\":1}\n{\"b\":2}\n", "{\"c\":", "3}\n{\"d\":4}\n"];
        let upstream = futures_util::stream::iter(
            pieces
                .iter()
                .map(|p| Ok::<_, std::convert::Infallible>(Bytes::from_static(p.as_bytes()))),
        );
        let body = Leased {
            inner: upstream,
            _lease: None,
            events: Some(Bytes::new()),
            size: None,
        };
        let chunks: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
        assert_eq!(
            chunks,
            [
                "{\"a\":1}\n",
                "{\"b\":2}\n",
                "{\"c\":",
                "3}\n",
                "{\"d\":4}\n"
            ]
        );
    }
}
