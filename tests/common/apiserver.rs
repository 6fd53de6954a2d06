//! A Kubernetes API server stand-in for integration tests: real HTTPS, real
//! authentication (client certificates from the cluster CA, or a static bearer token),
//! discovery, server-side printing, watches, and a generic in-memory object store.
//!
//! ```ignore
//! let apiserver = ApiServer::builder().token("secret-token").start();
//! apiserver.put_object("default", "pods", json!({"metadata": {"name": "web"}}));
//! std::fs::write(&path, apiserver.kubeconfig_with_client_cert())?;
//! // ... run kubectl or kubegate against apiserver.url() ...
//! assert_eq!(apiserver.requests()[0].identity.user(), Some("kubegate"));
//! ```
//!
//! The server runs on 127.0.0.1, port 0, in its own thread with its own
//! `actix_rt::System` and one worker, so it serves plain `#[test]`s and `#[actix_rt::test]`s
//! alike; dropping the [`ApiServer`] stops it.
//!
//! What is faithful, and what is not, is written next to each part. In short, it behaves
//! like kube-apiserver v1.32 with `--anonymous-auth=false` for: discovery (legacy and
//! aggregated), `/version`, health checks, the root paths document, OpenAPI v3 (paths and
//! the `fieldValidation` parameter, no schemas), list/get/create/update/patch/delete/
//! deletecollection of every resource listed in `discovery/*.json`, label and field
//! selectors, paging with `limit`/`continue`, Table and PartialObjectMetadata output,
//! watches (replay from a resourceVersion, selectors, bookmarks, timeouts, Table events),
//! `Status` error bodies, pods/log, pods/eviction, the scale subresource, `kubectl auth
//! whoami` (with impersonation headers), and protobuf request bodies of the few types
//! kubectl's typed clients send. It does not validate objects against schemas, keeps no
//! managedFields, deletes pods at once (no grace period), treats strategic merge patch
//! and server-side apply as JSON merge patch with merge keys for the usual lists, answers
//! JSON only (never protobuf), has no RBAC (every authenticated user may do anything),
//! exec, attach and port-forward over WebSocket and SPDY/3.1 with commands of its own and
//! port-forwarding to 127.0.0.1 (`apiserver/streams.rs`), and a Kubernetes dashboard
//! behind the service proxy of `kube-system/kubernetes-dashboard` (`apiserver/dashboard.rs`).
//!
//! The discovery documents in `discovery/` are trimmed copies of those recorded from a
//! real API server in kubernetes/kubernetes `api/discovery/`; the resources they list
//! (with `list` among their verbs) are the resources this store serves.

#![allow(dead_code)] // Each test crate that includes this file uses a different part of it.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use actix_web::dev::{Extensions, ServerHandle};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::stream;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use super::certs::TestPki;

#[path = "apiserver/dashboard.rs"]
mod dashboard;
#[path = "apiserver/streams.rs"]
mod streams;

/// The Kubernetes version the stand-in claims to be.
pub const KUBERNETES_VERSION: &str = "v1.32.4";
/// The user name recorded for requests authenticated by the static bearer token.
pub const TOKEN_USER: &str = "token";
/// Bodies larger than this are refused, as kube-apiserver refuses them (3 MiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// How many changes are kept to replay to watches that start from an old resourceVersion;
/// older ones are "compacted" (a watch from before them gets `410 Expired`).
const HISTORY_LIMIT: usize = 10_000;
/// The first resourceVersion; real ones are large numbers too.
const FIRST_REVISION: u64 = 1000;
/// A watch without `timeoutSeconds` ends after this long (kube-apiserver picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// List bodies are streamed in chunks of about this size.
const LIST_CHUNK_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// A running API server stand-in; dropping it stops the server.
pub struct ApiServer {
    url: String,
    addr: SocketAddr,
    pki: TestPki,
    shared: Arc<Shared>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Options of an [`ApiServer`] before it starts; made by [`ApiServer::builder`].
pub struct ApiServerBuilder {
    token: Option<String>,
    pki: Option<TestPki>,
    aggregated_discovery: bool,
    bookmark_interval: Duration,
}

/// One request as the stand-in received it, recorded before it was authenticated.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path as received, not decoded.
    pub path: String,
    /// The query string as received (without `?`, not decoded); empty if none.
    pub query: String,
    /// Every header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// Who the request authenticated as.
    pub identity: Identity,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub http_version: String,
    /// The body as received (empty until read; never read for unauthenticated or upgrade
    /// requests).
    pub body: Bytes,
    /// The status code of the answer, once it is known (for a watch: when it starts).
    pub status: Option<u16>,
    sequence: u64,
}

/// Who a request authenticated as, by kube-apiserver's rules: a client certificate from
/// the cluster CA first, then the bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A client certificate signed by the cluster CA: user is its CN, groups its O values.
    ClientCert {
        /// The certificate's common name.
        user: String,
        /// The certificate's organizations.
        groups: Vec<String>,
    },
    /// The static bearer token configured with [`ApiServerBuilder::token`].
    Token,
    /// Neither: the request was answered `401 Unauthorized`.
    Anonymous,
}

impl Identity {
    /// The user name: the certificate CN, [`TOKEN_USER`] for the token, none when anonymous.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::ClientCert { user, .. } => Some(user),
            Identity::Token => Some(TOKEN_USER),
            Identity::Anonymous => None,
        }
    }

    /// The groups, with `system:authenticated` added as kube-apiserver adds it.
    pub fn groups(&self) -> Vec<String> {
        let mut groups = match self {
            Identity::ClientCert { groups, .. } => groups.clone(),
            Identity::Token => Vec::new(),
            Identity::Anonymous => return vec!["system:unauthenticated".to_string()],
        };
        groups.push("system:authenticated".to_string());
        groups
    }
}

impl RecordedRequest {
    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The decoded value of the query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query)
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// `path?query`, or just the path when there is no query.
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

impl ApiServer {
    /// Starts a stand-in with a fresh PKI that accepts only client certificates.
    pub fn start() -> ApiServer {
        ApiServer::builder().start()
    }

    /// Options: a bearer token, a given PKI, legacy-only discovery, bookmark interval.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder {
            token: None,
            pki: None,
            aggregated_discovery: true,
            bookmark_interval: Duration::from_secs(60),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificates the server uses and trusts.
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The static bearer token the server accepts, if one was configured.
    pub fn token(&self) -> Option<&str> {
        self.shared.token.as_deref()
    }

    /// A kubeconfig that authenticates with the trusted client certificate
    /// (`CN=kubegate, O=system:masters`).
    pub fn kubeconfig_with_client_cert(&self) -> String {
        self.kubeconfig_with_cert(&self.pki.client_cert_pem, &self.pki.client_key_pem)
    }

    /// A kubeconfig that authenticates with the client certificate of the untrusted CA:
    /// every request fails the TLS handshake.
    pub fn kubeconfig_with_untrusted_client_cert(&self) -> String {
        self.kubeconfig_with_cert(
            &self.pki.untrusted_client_cert_pem,
            &self.pki.untrusted_client_key_pem,
        )
    }

    /// A kubeconfig that authenticates with the given client certificate and key (PEM).
    pub fn kubeconfig_with_cert(&self, cert_pem: &str, key_pem: &str) -> String {
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        self.kubeconfig(&format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ))
    }

    /// A kubeconfig that authenticates with the bearer token.
    ///
    /// # Panics
    /// When the server was started without [`ApiServerBuilder::token`].
    pub fn kubeconfig_with_token(&self) -> String {
        let token = self
            .token()
            .expect("kubeconfig_with_token needs ApiServer::builder().token(..)");
        self.kubeconfig(&format!("    token: {token}\n"))
    }

    fn kubeconfig(&self, user: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.pki.ca_pem);
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: apiserver-standin\n  \
               cluster:\n    \
                 server: {url}\n    \
                 certificate-authority-data: {ca}\n\
             contexts:\n\
             - name: apiserver-standin\n  \
               context:\n    \
                 cluster: apiserver-standin\n    \
                 user: standin-user\n    \
                 namespace: default\n\
             current-context: apiserver-standin\n\
             users:\n\
             - name: standin-user\n  \
               user:\n{user}\
             preferences: {{}}\n",
            url = self.url,
        )
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).requests.clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).requests.clear();
    }

    /// Creates or replaces an object directly in the store, as a controller would, and tells
    /// open watches (`ADDED` or `MODIFIED`). `resource` is the plural name (`pods`,
    /// `deployments` or `deployments.apps`); `namespace` is ignored for cluster-scoped
    /// resources. Missing `kind`, `apiVersion`, `metadata.namespace`, `uid` and
    /// `creationTimestamp` are filled in; the stored object is returned.
    ///
    /// # Panics
    /// On an unknown resource or an object without `metadata.name`.
    pub fn put_object(&self, namespace: &str, resource: &str, object: Value) -> Value {
        let rt = known_resource(resource);
        let mut object = object;
        fill_in_metadata(&rt, &mut object, namespace);
        assert!(
            !name_of(&object).is_empty(),
            "put_object needs metadata.name: {object}"
        );
        let stored = lock(&self.shared.store).write(&rt, object);
        (*stored).clone()
    }

    /// The stored object, if any.
    pub fn get_object(&self, namespace: &str, resource: &str, name: &str) -> Option<Value> {
        let rt = known_resource(resource);
        let namespace = if rt.namespaced { namespace } else { "" };
        lock(&self.shared.store)
            .get(&rt.key(), namespace, name)
            .map(|object| (*object).clone())
    }

    /// Removes an object from the store and tells open watches (`DELETED`); returns it.
    pub fn delete_object(&self, namespace: &str, resource: &str, name: &str) -> Option<Value> {
        let rt = known_resource(resource);
        let namespace = if rt.namespaced { namespace } else { "" };
        lock(&self.shared.store)
            .remove(&rt.key(), namespace, name)
            .map(|object| (*object).clone())
    }

    /// Stores a ConfigMap whose JSON, as `GET` returns it, is about `size` bytes (within a
    /// few bytes): one data key, `payload`, filled with printable text.
    pub fn put_configmap_of_size(&self, namespace: &str, name: &str, size: usize) -> Value {
        let rt = known_resource("configmaps");
        let mut object = json!({"metadata": {"name": name}, "data": {"payload": ""}});
        fill_in_metadata(&rt, &mut object, namespace);
        // The resourceVersion is not set yet: count the digits it will take.
        let overhead = serde_json::to_vec(&object).map_or(0, |bytes| bytes.len())
            + r#","resourceVersion":"""#.len()
            + 12;
        object["data"]["payload"] = Value::String(filler(size.saturating_sub(overhead)));
        let stored = lock(&self.shared.store).write(&rt, object);
        (*stored).clone()
    }

    /// Stores `count` ConfigMaps `{prefix}-{i}` of about `size_each` bytes each, e.g. 64
    /// of 1 MiB for a 64 MiB list. The store holds them (one `Arc` each); a list response
    /// is then written item by item, never assembled whole.
    pub fn put_configmaps_of_size(
        &self,
        namespace: &str,
        prefix: &str,
        count: usize,
        size_each: usize,
    ) {
        for i in 0..count {
            self.put_configmap_of_size(namespace, &format!("{prefix}-{i}"), size_each);
        }
    }

    /// Sets what `GET .../pods/{name}/log` answers for a pod.
    pub fn put_pod_log(&self, namespace: &str, pod: &str, log: &str) {
        lock(&self.shared.store)
            .pod_logs
            .insert((namespace.to_string(), pod.to_string()), log.to_string());
    }

    /// How many watches are open now: a proxy that forgets to close the upstream watch of
    /// a client that went away shows here. Over HTTP/1.1 a closed connection ends its
    /// watch at once; over HTTP/2 a reset stream is noticed only at the watch's next event
    /// (actix-http's HTTP/2 writer learns of resets when it writes), so put an object first.
    pub fn open_watches(&self) -> usize {
        lock(&self.shared.store).changes.receiver_count()
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> String {
        lock(&self.shared.store).revision.to_string()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // The stop command is sent at once; the returned future only reports completion.
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

impl ApiServerBuilder {
    /// Also accept `Authorization: Bearer {token}` (as kube-apiserver's `--token-auth-file`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Use these certificates instead of a fresh [`TestPki`].
    pub fn pki(mut self, pki: TestPki) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Answer only legacy discovery (like a server before v1.26): clients then fetch
    /// `/api/v1` and `/apis/{group}/{version}` one by one.
    pub fn legacy_discovery(mut self) -> Self {
        self.aggregated_discovery = false;
        self
    }

    /// How often a watch with `allowWatchBookmarks=true` gets a `BOOKMARK` (default 60 s).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Binds 127.0.0.1:0 and starts serving; returns once the port is known.
    ///
    /// # Panics
    /// When the server cannot bind or start (within 30 s).
    pub fn start(self) -> ApiServer {
        let pki = self.pki.unwrap_or_default();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            requests: Mutex::new(Recorder::default()),
            token: self.token,
            aggregated_discovery: self.aggregated_discovery,
            bookmark_interval: self.bookmark_interval,
            address: OnceLock::new(),
        });
        let tls = pki.server_config();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("apiserver-standin".to_string())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let data = web::Data::from(thread_shared);
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .default_service(web::to(serve))
                    })
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .on_connect(remember_client_certificate)
                    .bind_rustls_0_23(("127.0.0.1", 0), tls);
                    match server {
                        Ok(server) => {
                            let addr = server.addrs()[0];
                            let server = server.run();
                            let _ = started_tx.send(Ok((addr, server.handle())));
                            let _ = server.await;
                        }
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                        }
                    }
                });
            })
            .expect("spawn the API server stand-in thread");
        let (addr, handle) = started_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the API server stand-in did not start within 30 s")
            .expect("the API server stand-in could not bind 127.0.0.1:0");
        let _ = shared.address.set(addr);
        ApiServer {
            url: format!("https://{addr}"),
            addr,
            pki,
            shared,
            handle,
            thread: Some(thread),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------

/// What the test thread and the server's worker share.
struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Recorder>,
    token: Option<String>,
    aggregated_discovery: bool,
    bookmark_interval: Duration,
    address: OnceLock<SocketAddr>,
}

/// The requests received, in order of arrival.
#[derive(Default)]
struct Recorder {
    next_sequence: u64,
    requests: Vec<RecordedRequest>,
}

impl Recorder {
    fn record(&mut self, mut request: RecordedRequest) -> u64 {
        self.next_sequence += 1;
        request.sequence = self.next_sequence;
        self.requests.push(request);
        self.next_sequence
    }

    /// Completes a recorded request, unless it has been cleared away since.
    fn complete(&mut self, sequence: u64, complete: impl FnOnce(&mut RecordedRequest)) {
        if let Some(request) = self
            .requests
            .iter_mut()
            .rev()
            .find(|r| r.sequence == sequence)
        {
            complete(request);
        }
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The subject of a verified client certificate, kept with the connection.
#[derive(Clone, Debug)]
struct ClientCertSubject {
    user: String,
    groups: Vec<String>,
}

/// Runs once per TLS connection: rustls has already verified the certificate chain
/// against the cluster CA (an untrusted one never gets here), so only the subject is read.
fn remember_client_certificate(connection: &dyn Any, extensions: &mut Extensions) {
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

// ---------------------------------------------------------------------------------------
// Resource catalogue, read from the discovery documents
// ---------------------------------------------------------------------------------------

/// One resource type as discovery lists it.
#[derive(Debug)]
struct ResourceType {
    group: String,
    version: String,
    plural: String,
    singular: String,
    kind: String,
    namespaced: bool,
    verbs: Vec<String>,
    subresources: Vec<String>,
}

impl ResourceType {
    /// `v1` or `apps/v1`.
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key and the name in messages: `pods`, `deployments.apps`.
    fn key(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn stored(&self) -> bool {
        self.verbs.iter().any(|verb| verb == "list")
    }

    fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|sub| sub == name)
    }

    /// `details` of a Status about one object of this type.
    fn details(&self, name: &str) -> Value {
        let mut details = Map::new();
        details.insert("name".into(), name.into());
        if !self.group.is_empty() {
            details.insert("group".into(), self.group.clone().into());
        }
        details.insert("kind".into(), self.plural.clone().into());
        Value::Object(details)
    }
}

/// One group version and its discovery document.
struct GroupVersion {
    group: String,
    version: String,
    document: Value,
    resources: Vec<Arc<ResourceType>>,
}

impl GroupVersion {
    fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `api/v1` or `apis/apps/v1`, as in the OpenAPI v3 root.
    fn path(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }
}

struct Catalog {
    group_versions: Vec<GroupVersion>,
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let documents = [
            include_str!("discovery/api__v1.json"),
            include_str!("discovery/apis__apps__v1.json"),
            include_str!("discovery/apis__authentication.k8s.io__v1.json"),
        ];
        let group_versions = documents
            .iter()
            .map(|text| {
                let document: Value =
                    serde_json::from_str(text).expect("discovery documents are JSON");
                let group_version = document["groupVersion"].as_str().unwrap_or_default();
                let (group, version) = match group_version.split_once('/') {
                    Some((group, version)) => (group.to_string(), version.to_string()),
                    None => (String::new(), group_version.to_string()),
                };
                let entries = document["resources"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let resources = entries
                    .iter()
                    .filter(|entry| !str_at(entry, "name").contains('/'))
                    .map(|entry| {
                        let plural = str_at(entry, "name").to_string();
                        let prefix = format!("{plural}/");
                        Arc::new(ResourceType {
                            group: group.clone(),
                            version: version.clone(),
                            singular: str_at(entry, "singularName").to_string(),
                            kind: str_at(entry, "kind").to_string(),
                            namespaced: entry["namespaced"].as_bool().unwrap_or(false),
                            verbs: strings_at(entry, "verbs"),
                            subresources: entries
                                .iter()
                                .filter_map(|e| str_at(e, "name").strip_prefix(&prefix))
                                .map(str::to_string)
                                .collect(),
                            plural,
                        })
                    })
                    .collect();
                GroupVersion {
                    group,
                    version,
                    document,
                    resources,
                }
            })
            .collect();
        Catalog { group_versions }
    })
}

impl Catalog {
    fn group_version(&self, group: &str, version: &str) -> Option<&GroupVersion> {
        self.group_versions
            .iter()
            .find(|gv| gv.group == group && gv.version == version)
    }

    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.group_version(group, version)?
            .resources
            .iter()
            .find(|rt| rt.plural == plural)
            .cloned()
    }

    /// `pods`, `deployments` or `deployments.apps`.
    fn resource_named(&self, name: &str) -> Option<Arc<ResourceType>> {
        self.group_versions
            .iter()
            .flat_map(|gv| gv.resources.iter())
            .find(|rt| rt.plural == name || rt.key() == name)
            .cloned()
    }

    /// API groups other than the core group, in order.
    fn groups(&self) -> Vec<&str> {
        let mut groups: Vec<&str> = Vec::new();
        for gv in &self.group_versions {
            if !gv.group.is_empty() && !groups.contains(&gv.group.as_str()) {
                groups.push(&gv.group);
            }
        }
        groups
    }
}

fn known_resource(name: &str) -> Arc<ResourceType> {
    match catalog().resource_named(name) {
        Some(rt) if rt.stored() => rt,
        _ => panic!("the API server stand-in does not store {name:?}; see tests/common/discovery"),
    }
}

// ---------------------------------------------------------------------------------------
// The object store and its change history
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One change to the store, kept for replay and sent to open watches.
#[derive(Debug)]
struct Change {
    revision: u64,
    resource: String,
    namespace: String,
    name: String,
    change: ChangeType,
    /// The object after the change; for a deletion, its last state with the deletion's
    /// resourceVersion.
    object: Arc<Value>,
    /// The object before the change, if it existed.
    previous: Option<Arc<Value>>,
}

/// Objects by resource key, then by (namespace, name): iteration is in that order, which is
/// also the order of lists and of `continue` tokens.
struct Store {
    revision: u64,
    objects: HashMap<String, BTreeMap<(String, String), Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    changes: broadcast::Sender<Arc<Change>>,
    pod_logs: HashMap<(String, String), String>,
}

impl Store {
    fn new() -> Store {
        let mut store = Store {
            revision: FIRST_REVISION,
            objects: HashMap::new(),
            history: VecDeque::new(),
            changes: broadcast::channel(HISTORY_LIMIT).0,
            pod_logs: HashMap::new(),
        };
        for name in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            let rt = known_resource("namespaces");
            let mut namespace = json!({"metadata": {"name": name}});
            prepare_new(&rt, &mut namespace);
            fill_in_metadata(&rt, &mut namespace, "");
            store.write(&rt, namespace);
        }
        let rt = known_resource("services");
        let mut kubernetes = json!({
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "clusterIP": "10.96.0.1",
                "clusterIPs": ["10.96.0.1"],
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                "sessionAffinity": "None",
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        });
        fill_in_metadata(&rt, &mut kubernetes, "default");
        store.write(&rt, kubernetes);
        store
    }

    fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(resource)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of one resource, in one namespace or all.
    fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objects) = self.objects.get(resource) else {
            return Vec::new();
        };
        objects
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| ns == wanted))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Stores `object` (whose metadata is complete) with a new resourceVersion.
    fn write(&mut self, rt: &ResourceType, mut object: Value) -> Arc<Value> {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.revision.to_string());
        let namespace = namespace_of(&object).to_string();
        let name = name_of(&object).to_string();
        let object = Arc::new(object);
        let previous = self
            .objects
            .entry(rt.key())
            .or_default()
            .insert((namespace.clone(), name.clone()), object.clone());
        let change = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            revision: self.revision,
            resource: rt.key(),
            namespace,
            name,
            change,
            object: object.clone(),
            previous,
        });
        object
    }

    fn remove(&mut self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let previous = self
            .objects
            .get_mut(resource)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        self.revision += 1;
        let mut last = (*previous).clone();
        last["metadata"]["resourceVersion"] = Value::String(self.revision.to_string());
        let last = Arc::new(last);
        self.record(Change {
            revision: self.revision,
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            change: ChangeType::Deleted,
            object: last.clone(),
            previous: Some(previous),
        });
        Some(last)
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// The oldest resourceVersion a watch can start from and still see every change.
    fn oldest_replayable(&self) -> u64 {
        self.history
            .front()
            .map_or(self.revision, |change| change.revision - 1)
    }
}

// ---------------------------------------------------------------------------------------
// Request entry point: record, authenticate, route
// ---------------------------------------------------------------------------------------

async fn serve(req: HttpRequest, payload: web::Payload, shared: web::Data<Shared>) -> HttpResponse {
    let identity = authenticate(&req, &shared);
    let sequence = lock(&shared.requests).record(RecordedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        identity: identity.clone(),
        http_version: format!("{:?}", req.version()),
        body: Bytes::new(),
        status: None,
        sequence: 0,
    });
    let mut response = if identity == Identity::Anonymous {
        status_response(401, "Unauthorized", "Unauthorized", None)
    } else if let Some((namespace, pod, kind)) = stream_request(&req) {
        // exec, attach, port-forward with an upgrade: the bytes after the head are the
        // session's, not a body
        let rt = known_resource("pods");
        match lock(&shared.store).get(&rt.key(), &namespace, &pod) {
            None => not_found(&rt, &pod),
            Some(object) => {
                let container = query_pairs(req.query_string())
                    .into_iter()
                    .find(|(k, _)| k == "container")
                    .map(|(_, v)| v)
                    .unwrap_or_else(|| {
                        object["spec"]["containers"][0]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    });
                streams::handle(&req, payload, kind, &namespace, &pod, &container)
            }
        }
    } else {
        let body = read_body(&req, payload).await.and_then(|raw| {
            lock(&shared.requests).complete(sequence, |request| request.body = raw.clone());
            json_body(&req, raw)
        });
        match body {
            Ok(body) => Call {
                req: &req,
                shared: shared.clone().into_inner(),
                query: query_pairs(req.query_string()).into_iter().collect(),
                identity,
            }
            .route(body),
            Err(error) => error.response(),
        }
    };
    let status = response.status().as_u16();
    lock(&shared.requests).complete(sequence, |request| request.status = Some(status));
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    if let Ok(audit_id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert(header::HeaderName::from_static("audit-id"), audit_id);
    }
    response
}

/// `(namespace, pod, kind)` of an upgrade request to a pod's exec, attach or portforward.
fn stream_request(req: &HttpRequest) -> Option<(String, String, streams::StreamKind)> {
    if !req.headers().contains_key(header::UPGRADE) {
        return None;
    }
    let segments: Vec<&str> = req.path().split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", pod, subresource] => {
            streams::StreamKind::of(subresource)
                .map(|kind| (namespace.to_string(), pod.to_string(), kind))
        }
        _ => None,
    }
}

/// The request body, up to [`MAX_REQUEST_BODY_BYTES`]. An upgrade request (exec, attach,
/// port-forward) has no body to wait for: what follows its headers belongs to the upgraded
/// connection.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt as _;
    if req.headers().contains_key(header::UPGRADE) {
        return Ok(Bytes::new());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "error reading the request body",
                None,
            ));
        };
        if body.len() + chunk.len() > MAX_REQUEST_BODY_BYTES {
            return Err(ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("the request entity is too large (limit {MAX_REQUEST_BODY_BYTES} bytes)"),
                None,
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The body as JSON: protobuf bodies are converted.
fn json_body(req: &HttpRequest, body: Bytes) -> Result<Bytes, ApiError> {
    let protobuf = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/vnd.kubernetes.protobuf"));
    if protobuf && !body.is_empty() {
        // kubectl's typed clients (`kubectl create configmap|secret|namespace|deployment`,
        // `kubectl auth whoami`) send protobuf and never fall back to JSON.
        return match protobuf::decode(&body) {
            Some(object) => Ok(Bytes::from(object.to_string())),
            None => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - the API server stand-in reads application/vnd.kubernetes.protobuf only for ConfigMap, Secret, Namespace, Pod, Deployment, SelfSubjectReview and TokenReview; send application/json",
                None,
            )),
        };
    }
    Ok(body)
}

fn authenticate(req: &HttpRequest, shared: &Shared) -> Identity {
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

/// One authenticated request being answered.
struct Call<'a> {
    req: &'a HttpRequest,
    shared: Arc<Shared>,
    query: HashMap<String, String>,
    identity: Identity,
}

impl Call<'_> {
    fn route(&self, body: Bytes) -> HttpResponse {
        let path = self.req.uri().path().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let method = self.req.method().clone();
        let read_only = method == Method::GET || method == Method::HEAD;
        if let Some(answer) = dashboard::serve(self.req, &path) {
            return answer;
        }
        match segments.as_slice() {
            ["api", "v1", rest @ ..] if !rest.is_empty() => {
                return self.resource_request("", "v1", rest, body)
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                return self.resource_request(group, version, rest, body)
            }
            _ => {}
        }
        if !read_only {
            return if self.known_read_only_path(&segments) {
                method_not_allowed()
            } else {
                path_not_found()
            };
        }
        match segments.as_slice() {
            [] => json_response(200, &root_paths()),
            ["version"] => json_response(200, &version_info()),
            ["healthz" | "livez" | "readyz", ..] => HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .insert_header(("X-Content-Type-Options", "nosniff"))
                .body("ok"),
            ["api"] => self.discovery_core(),
            ["apis"] => self.discovery_groups(),
            ["apis", group] => match api_group(group) {
                Some(document) => json_response(200, &document),
                None => path_not_found(),
            },
            ["api", "v1"] => json_response(200, &catalog().group_versions[0].document),
            ["apis", group, version] => match catalog().group_version(group, version) {
                Some(gv) => json_response(200, &gv.document),
                None => path_not_found(),
            },
            ["openapi", "v2"] => self.openapi_v2(),
            ["openapi", "v3"] => json_response(200, &openapi_v3_root()),
            ["openapi", "v3", rest @ ..] => match openapi_v3_document(&rest.join("/")) {
                Some(document) => json_response(200, &document),
                None => path_not_found(),
            },
            _ => path_not_found(),
        }
    }

    fn known_read_only_path(&self, segments: &[&str]) -> bool {
        matches!(
            segments,
            [] | ["version"]
                | ["healthz" | "livez" | "readyz", ..]
                | ["api"]
                | ["apis", ..]
                | ["openapi", ..]
        )
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        matches!(
            self.param(name),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    fn dry_run(&self) -> bool {
        query_pairs(self.req.query_string())
            .iter()
            .any(|(key, value)| key == "dryRun" && value == "All")
    }

    fn accept(&self) -> &str {
        self.req
            .headers()
            .get(header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.shared.store)
    }

    // ----- discovery -----

    fn discovery_core(&self) -> HttpResponse {
        if let Some(version) = self.aggregated_discovery_version() {
            let core = &catalog().group_versions[0];
            let item = json!({
                "metadata": {"creationTimestamp": null},
                "versions": [aggregated_version(core)],
            });
            return aggregated_response(version, vec![item]);
        }
        let address = self
            .shared
            .address
            .get()
            .map(ToString::to_string)
            .unwrap_or_default();
        json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }),
        )
    }

    fn discovery_groups(&self) -> HttpResponse {
        if let Some(version) = self.aggregated_discovery_version() {
            let items = catalog()
                .groups()
                .into_iter()
                .map(|group| {
                    let versions: Vec<Value> = catalog()
                        .group_versions
                        .iter()
                        .filter(|gv| gv.group == group)
                        .map(aggregated_version)
                        .collect();
                    json!({
                        "metadata": {"name": group, "creationTimestamp": null},
                        "versions": versions,
                    })
                })
                .collect();
            return aggregated_response(version, items);
        }
        let groups: Vec<Value> = catalog()
            .groups()
            .into_iter()
            .filter_map(api_group)
            .map(|mut group| {
                if let Some(object) = group.as_object_mut() {
                    object.remove("kind");
                    object.remove("apiVersion");
                }
                group
            })
            .collect();
        json_response(
            200,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        )
    }

    /// `v2` or `v2beta1` when the client asks for aggregated discovery and it is enabled.
    fn aggregated_discovery_version(&self) -> Option<&'static str> {
        if !self.shared.aggregated_discovery {
            return None;
        }
        for range in media_ranges(self.accept()) {
            if range.param("g") == Some("apidiscovery.k8s.io")
                && range.param("as") == Some("APIGroupDiscoveryList")
            {
                match range.param("v") {
                    Some("v2") => return Some("v2"),
                    Some("v2beta1") => return Some("v2beta1"),
                    _ => {}
                }
            } else if range.is_json() && range.param("as").is_none() {
                return None;
            }
        }
        None
    }

    fn openapi_v2(&self) -> HttpResponse {
        // kube-apiserver answers protobuf or JSON; the stand-in only has JSON, so a client
        // that accepts only protobuf (kubectl does) gets 406 and does without.
        if media_ranges(self.accept())
            .iter()
            .any(|range| range.is_json() && range.param("as").is_none())
            || self.accept().is_empty()
        {
            json_response(200, &openapi_v2_document())
        } else {
            status_response(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json",
                None,
            )
        }
    }

    // ----- resources -----

    fn resource_request(
        &self,
        group: &str,
        version: &str,
        rest: &[&str],
        body: Bytes,
    ) -> HttpResponse {
        let Some(gv) = catalog().group_version(group, version) else {
            return path_not_found();
        };
        let namespaced_target = match rest {
            ["namespaces", namespace, plural, tail @ ..] if tail.len() <= 2 => gv
                .resources
                .iter()
                .find(|rt| rt.plural == *plural && rt.namespaced)
                .map(|rt| (rt.clone(), Some(*namespace), tail)),
            _ => None,
        };
        let (rt, namespace, tail) = match namespaced_target {
            Some(target) => target,
            None => match rest {
                [plural, tail @ ..] if tail.len() <= 2 => {
                    match catalog().resource(group, version, plural) {
                        Some(rt) => (rt, None, tail),
                        None => return path_not_found(),
                    }
                }
                _ => return path_not_found(),
            },
        };
        let method = self.req.method().clone();
        if !rt.stored() {
            return match (rt.plural.as_str(), &method, tail) {
                ("selfsubjectreviews", &Method::POST, []) => self.self_subject_review(),
                ("tokenreviews", &Method::POST, []) => self.token_review(&body),
                (_, &Method::POST, []) => method_not_allowed(),
                _ => path_not_found(),
            };
        }
        match tail {
            [] => match method {
                Method::GET if self.flag("watch") => self.watch(&rt, namespace),
                Method::GET => self.list(&rt, namespace),
                Method::POST if namespace.is_some() || !rt.namespaced => {
                    self.create(&rt, namespace.unwrap_or(""), &body)
                }
                Method::DELETE if namespace.is_some() || !rt.namespaced => {
                    self.delete_collection(&rt, namespace.unwrap_or(""))
                }
                _ => method_not_allowed(),
            },
            // A namespaced resource has no objects outside a namespace.
            [_, ..] if rt.namespaced && namespace.is_none() => path_not_found(),
            [name] => {
                let namespace = namespace.unwrap_or("");
                match method {
                    Method::GET => self.get(&rt, namespace, name),
                    Method::PUT => self.update(&rt, namespace, name, &body, None),
                    Method::PATCH => self.patch(&rt, namespace, name, &body, None),
                    Method::DELETE => self.delete(&rt, namespace, name, &body),
                    _ => method_not_allowed(),
                }
            }
            [name, subresource] if rt.has_subresource(subresource) => {
                self.subresource(&rt, namespace.unwrap_or(""), name, subresource, &body)
            }
            _ => path_not_found(),
        }
    }

    fn subresource(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        subresource: &str,
        body: &Bytes,
    ) -> HttpResponse {
        let method = self.req.method().clone();
        match (subresource, method) {
            ("status", Method::GET) => self.get(rt, namespace, name),
            ("status", Method::PUT) => self.update(rt, namespace, name, body, Some("status")),
            ("status", Method::PATCH) => self.patch(rt, namespace, name, body, Some("status")),
            ("scale", Method::GET) => match self.store().get(&rt.key(), namespace, name) {
                Some(object) => json_response(200, &scale_of(&object)),
                None => not_found(rt, name),
            },
            ("scale", Method::PUT | Method::PATCH) => self.scale(rt, namespace, name, body),
            ("log", Method::GET) => {
                if self.store().get(&rt.key(), namespace, name).is_none() {
                    return not_found(rt, name);
                }
                let log = self
                    .store()
                    .pod_logs
                    .get(&(namespace.to_string(), name.to_string()))
                    .cloned()
                    .unwrap_or_default();
                HttpResponse::Ok().content_type("text/plain").body(log)
            }
            ("eviction", Method::POST) => {
                if self.store().remove(&rt.key(), namespace, name).is_none() {
                    return not_found(rt, name);
                }
                json_response(
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                )
            }
            ("exec" | "attach" | "portforward", Method::GET | Method::POST) => {
                if self.store().get(&rt.key(), namespace, name).is_none() {
                    return not_found(rt, name);
                }
                // kube-apiserver answers this without an upgrade; with one it would proxy
                // to the kubelet, which the stand-in does not have.
                status_response(400, "BadRequest", "Upgrade request required", None)
            }
            ("proxy", _) => status_response(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for {} \"{name}\"", rt.singular),
                None,
            ),
            _ => method_not_allowed(),
        }
    }

    fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> HttpResponse {
        let Some(object) = self.store().get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        match self.representation() {
            Ok(Representation::Table { version, include }) => {
                let rv = resource_version_of(&object).to_string();
                table_response(
                    version,
                    &table(
                        rt,
                        &[object],
                        include,
                        true,
                        json!({"resourceVersion": rv}),
                        version,
                    ),
                )
            }
            Ok(Representation::PartialMetadata { version }) => {
                json_response(200, &partial_metadata(&object, version))
            }
            Ok(Representation::Object) => json_response(200, &object),
            Err(error) => error.response(),
        }
    }

    fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> HttpResponse {
        let selection = match Selection::from_query(rt, &self.query) {
            Ok(selection) => selection,
            Err(error) => return error.response(),
        };
        let representation = match self.representation() {
            Ok(representation) => representation,
            Err(error) => return error.response(),
        };
        let (objects, revision) = {
            let store = self.store();
            (store.list(&rt.key(), namespace), store.revision)
        };
        let mut objects: Vec<Arc<Value>> = objects
            .into_iter()
            .filter(|object| selection.matches(object))
            .collect();
        if let Some(token) = self.param("continue").filter(|token| !token.is_empty()) {
            let Some(start) = decode_continue(token) else {
                return status_response(
                    400,
                    "BadRequest",
                    "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                    None,
                );
            };
            objects.retain(|object| object_position(object) > start);
        }
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        let limit = self
            .param("limit")
            .and_then(|limit| limit.parse::<usize>().ok())
            .unwrap_or(0);
        if limit > 0 && objects.len() > limit {
            let remaining = objects.len() - limit;
            objects.truncate(limit);
            if let Some(last) = objects.last() {
                metadata["continue"] = encode_continue(revision, &object_position(last)).into();
                metadata["remainingItemCount"] = remaining.into();
            }
        }
        match representation {
            Representation::Table { version, include } => table_response(
                version,
                &table(rt, &objects, include, true, metadata, version),
            ),
            Representation::PartialMetadata { version } => {
                let items: Vec<Value> = objects
                    .iter()
                    .map(|object| {
                        let mut item = partial_metadata(object, version);
                        if let Some(item) = item.as_object_mut() {
                            item.remove("kind");
                            item.remove("apiVersion");
                        }
                        item
                    })
                    .collect();
                json_response(
                    200,
                    &json!({
                        "kind": "PartialObjectMetadataList",
                        "apiVersion": format!("meta.k8s.io/{version}"),
                        "metadata": metadata,
                        "items": items,
                    }),
                )
            }
            Representation::Object => streamed_list(rt, metadata, objects),
        }
    }

    fn watch(&self, rt: &Arc<ResourceType>, namespace: Option<&str>) -> HttpResponse {
        let selection = match Selection::from_query(rt, &self.query) {
            Ok(selection) => selection,
            Err(error) => return error.response(),
        };
        let representation = match self.representation() {
            Ok(representation) => representation,
            Err(error) => return error.response(),
        };
        let timeout = self
            .param("timeoutSeconds")
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        let bookmarks = self.flag("allowWatchBookmarks");
        let send_initial_events = self.flag("sendInitialEvents");
        let filter = WatchFilter {
            resource: rt.key(),
            namespace: namespace.map(str::to_string),
            selection,
        };
        let mut encoder = EventEncoder {
            rt: rt.clone(),
            representation,
            first: true,
        };
        let requested = self.param("resourceVersion").unwrap_or("");
        let mut pending = VecDeque::new();
        let store = self.store();
        let receiver = store.changes.subscribe();
        let after = store.revision;
        match requested {
            // "Most recent" or "any": the current state as ADDED events, then changes.
            "" | "0" => {
                for object in store.list(&rt.key(), namespace) {
                    if filter.selection.matches(&object) {
                        pending.push_back(encoder.encode("ADDED", &object));
                    }
                }
            }
            _ if send_initial_events => {
                for object in store.list(&rt.key(), namespace) {
                    if filter.selection.matches(&object) {
                        pending.push_back(encoder.encode("ADDED", &object));
                    }
                }
            }
            requested => {
                let Ok(from) = requested.parse::<u64>() else {
                    return status_response(
                        400,
                        "BadRequest",
                        format!(
                            "resourceVersion: Invalid value: \"{requested}\": must be a number"
                        ),
                        None,
                    );
                };
                if from < store.oldest_replayable() {
                    let status = status_value(
                        410,
                        "Expired",
                        &format!(
                            "too old resource version: {from} ({})",
                            store.oldest_replayable() + 1
                        ),
                        None,
                    );
                    pending.push_back(encode_event("ERROR", &status));
                    drop(store);
                    return watch_response(stream::iter(
                        pending.into_iter().map(Ok::<Bytes, Infallible>),
                    ));
                }
                for change in store.history.iter().filter(|change| change.revision > from) {
                    if let Some((event, object)) = filter.translate(change) {
                        pending.push_back(encoder.encode(event, &object));
                    }
                }
            }
        }
        if send_initial_events && bookmarks {
            let bookmark = json!({
                "kind": rt.kind,
                "apiVersion": rt.api_version(),
                "metadata": {
                    "resourceVersion": after.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            });
            pending.push_back(encode_event("BOOKMARK", &bookmark));
        }
        drop(store);
        let now = tokio::time::Instant::now();
        let state = WatchState {
            pending,
            receiver,
            after,
            last_seen: after,
            filter,
            encoder,
            deadline: now + timeout,
            bookmark_interval: bookmarks.then_some(self.shared.bookmark_interval),
            next_bookmark: now + self.shared.bookmark_interval,
        };
        watch_response(stream::unfold(state, |mut state| async move {
            let chunk = state.next_chunk().await?;
            Some((Ok::<Bytes, Infallible>(chunk), state))
        }))
    }

    fn create(&self, rt: &ResourceType, namespace: &str, body: &Bytes) -> HttpResponse {
        let mut object = match parse_body(body) {
            Ok(object) => object,
            Err(error) => return error.response(),
        };
        if let Err(error) = check_type(rt, &object) {
            return error.response();
        }
        if rt.namespaced {
            let given = namespace_of(&object);
            if !given.is_empty() && given != namespace {
                return status_response(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                    None,
                );
            }
        }
        if name_of(&object).is_empty() {
            let generate = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if generate.is_empty() {
                return invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                );
            }
            object["metadata"]["name"] = Value::String(format!("{generate}{}", random_suffix()));
        }
        let name = name_of(&object).to_string();
        prepare_new(rt, &mut object);
        fill_in_metadata(rt, &mut object, namespace);
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        let mut store = self.store();
        if rt.namespaced
            && store
                .get(&known_resource("namespaces").key(), "", namespace)
                .is_none()
        {
            return status_response(
                404,
                "NotFound",
                format!("namespaces \"{namespace}\" not found"),
                Some(json_details(namespace, "", "namespaces")),
            );
        }
        if store.get(&rt.key(), namespace_of(&object), &name).is_some() {
            return status_response(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.key()),
                Some(rt.details(&name)),
            );
        }
        if self.dry_run() {
            return json_response(201, &object);
        }
        let stored = store.write(rt, object);
        json_response(201, &stored)
    }

    /// PUT: replace the object (or only its status, for `subresource == Some("status")`).
    fn update(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: &Bytes,
        subresource: Option<&str>,
    ) -> HttpResponse {
        let object = match parse_body(body) {
            Ok(object) => object,
            Err(error) => return error.response(),
        };
        if let Err(error) = check_type(rt, &object) {
            return error.response();
        }
        let given = name_of(&object);
        if given != name {
            return status_response(
                400,
                "BadRequest",
                format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                ),
                None,
            );
        }
        if rt.namespaced {
            let given = namespace_of(&object);
            if !given.is_empty() && given != namespace {
                return status_response(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                    None,
                );
            }
        }
        let mut store = self.store();
        let Some(current) = store.get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        self.replace(&mut store, rt, &current, object, subresource)
    }

    fn patch(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        body: &Bytes,
        subresource: Option<&str>,
    ) -> HttpResponse {
        let content_type = self
            .req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let kind = match content_type.as_str() {
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/json-patch+json" => PatchKind::Json,
            "application/apply-patch+yaml" => PatchKind::Apply,
            _ => {
                return status_response(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
                    None,
                )
            }
        };
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            let message = if kind == PatchKind::Apply {
                "error decoding YAML: the API server stand-in only reads apply patches written as JSON"
            } else {
                "the body of the request was in an unknown format"
            };
            return status_response(400, "BadRequest", message, None);
        };
        let mut store = self.store();
        let current = match store.get(&rt.key(), namespace, name) {
            Some(current) => current,
            None if kind == PatchKind::Apply && subresource.is_none() => {
                // Server-side apply creates what does not exist.
                drop(store);
                return self.create(rt, namespace, body);
            }
            None => return not_found(rt, name),
        };
        let mut patched = (*current).clone();
        match kind {
            PatchKind::Merge | PatchKind::Apply => merge_patch(&mut patched, &patch),
            PatchKind::Strategic => strategic_merge_patch(&mut patched, &patch, ""),
            PatchKind::Json => {
                if let Err(message) = json_patch(&mut patched, &patch) {
                    return status_response(422, "Invalid", message, Some(rt.details(name)));
                }
            }
        }
        // A patch that does not name a resourceVersion applies to whatever is current.
        if patch["metadata"]["resourceVersion"].is_null() || kind == PatchKind::Json {
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        self.replace(&mut store, rt, &current, patched, subresource)
    }

    /// The common end of update and patch: preconditions, immutable fields, no-op detection.
    fn replace(
        &self,
        store: &mut Store,
        rt: &ResourceType,
        current: &Arc<Value>,
        mut object: Value,
        subresource: Option<&str>,
    ) -> HttpResponse {
        let name = name_of(current).to_string();
        let given_rv = resource_version_of(&object);
        if !given_rv.is_empty() && given_rv != resource_version_of(current) {
            return conflict(rt, &name);
        }
        if name_of(&object) != name {
            return invalid(
                rt,
                &name,
                "metadata.name: Invalid value: field is immutable",
            );
        }
        let mut next = (**current).clone();
        if subresource == Some("status") {
            next["status"] = object["status"].take();
        } else {
            // The main resource ignores status when a status subresource exists.
            if rt.has_subresource("status") {
                object["status"] = current["status"].clone();
                if object["status"].is_null() {
                    if let Some(fields) = object.as_object_mut() {
                        fields.remove("status");
                    }
                }
            }
            let generation = current["metadata"]["generation"].clone();
            let spec_changed = object["spec"] != current["spec"];
            for field in ["uid", "creationTimestamp", "namespace", "generation"] {
                object["metadata"][field] = current["metadata"][field].clone();
            }
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.retain(|_, value| !value.is_null());
            }
            if let Some(generation) = generation.as_u64() {
                let generation = if spec_changed {
                    generation + 1
                } else {
                    generation
                };
                object["metadata"]["generation"] = generation.into();
            }
            object["kind"] = current["kind"].clone();
            object["apiVersion"] = current["apiVersion"].clone();
            next = object;
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if next == **current || self.dry_run() {
            return json_response(200, &next);
        }
        let stored = store.write(rt, next);
        json_response(200, &stored)
    }

    fn scale(&self, rt: &ResourceType, namespace: &str, name: &str, body: &Bytes) -> HttpResponse {
        let Ok(patch) = serde_json::from_slice::<Value>(body) else {
            return status_response(
                400,
                "BadRequest",
                "the body of the request was in an unknown format",
                None,
            );
        };
        let mut store = self.store();
        let Some(current) = store.get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        let mut scale = scale_of(&current);
        merge_patch(&mut scale, &patch);
        let mut next = (*current).clone();
        next["spec"]["replicas"] = scale["spec"]["replicas"].clone();
        if let Some(generation) = next["metadata"]["generation"].as_u64() {
            next["metadata"]["generation"] = (generation + 1).into();
        }
        let stored = if self.dry_run() {
            Arc::new(next)
        } else {
            store.write(rt, next)
        };
        json_response(200, &scale_of(&stored))
    }

    fn delete(&self, rt: &ResourceType, namespace: &str, name: &str, body: &Bytes) -> HttpResponse {
        let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut store = self.store();
        let Some(current) = store.get(&rt.key(), namespace, name) else {
            return not_found(rt, name);
        };
        let preconditions = &options["preconditions"];
        if let Some(uid) = preconditions["uid"].as_str() {
            if current["metadata"]["uid"].as_str() != Some(uid) {
                return status_response(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        rt.key(),
                        str_at(&current["metadata"], "uid")
                    ),
                    Some(rt.details(name)),
                );
            }
        }
        if let Some(rv) = preconditions["resourceVersion"].as_str() {
            if resource_version_of(&current) != rv {
                return conflict(rt, name);
            }
        }
        if self.dry_run() {
            return json_response(200, &current);
        }
        if rt.key() == "namespaces" {
            // Namespace deletion removes what is in it (at once, not via a controller).
            let keys: Vec<String> = store.objects.keys().cloned().collect();
            for key in keys {
                let names: Vec<String> = store
                    .list(&key, Some(name))
                    .iter()
                    .map(|object| name_of(object).to_string())
                    .collect();
                for object_name in names {
                    store.remove(&key, name, &object_name);
                }
            }
        }
        match store.remove(&rt.key(), namespace, name) {
            Some(deleted) => json_response(200, &deleted),
            None => not_found(rt, name),
        }
    }

    fn delete_collection(&self, rt: &ResourceType, namespace: &str) -> HttpResponse {
        let selection = match Selection::from_query(rt, &self.query) {
            Ok(selection) => selection,
            Err(error) => return error.response(),
        };
        let mut store = self.store();
        let namespace = rt.namespaced.then_some(namespace);
        let doomed: Vec<Arc<Value>> = store
            .list(&rt.key(), namespace)
            .into_iter()
            .filter(|object| selection.matches(object))
            .collect();
        let mut items = Vec::new();
        for object in doomed {
            if self.dry_run() {
                items.push((*object).clone());
            } else if let Some(deleted) =
                store.remove(&rt.key(), namespace_of(&object), name_of(&object))
            {
                items.push(without_type_meta(&deleted));
            }
        }
        json_response(
            200,
            &json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": store.revision.to_string()},
                "items": items,
            }),
        )
    }

    fn self_subject_review(&self) -> HttpResponse {
        // Impersonation is honoured as kube-apiserver does for a caller allowed to
        // impersonate (the stand-in has no RBAC: every caller is).
        let impersonated = self
            .req
            .headers()
            .get("Impersonate-User")
            .and_then(|value| value.to_str().ok());
        let user_info = match impersonated {
            Some(user) => {
                let mut groups: Vec<String> = self
                    .req
                    .headers()
                    .get_all("Impersonate-Group")
                    .filter_map(|value| value.to_str().ok())
                    .map(str::to_string)
                    .collect();
                groups.push("system:authenticated".to_string());
                json!({"username": user, "groups": groups})
            }
            None => json!({
                "username": self.identity.user().unwrap_or_default(),
                "groups": self.identity.groups(),
            }),
        };
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

    fn token_review(&self, body: &Bytes) -> HttpResponse {
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

    /// What the Accept header asks for.
    fn representation(&self) -> Result<Representation, ApiError> {
        let accept = self.accept();
        if accept.is_empty() {
            return Ok(Representation::Object);
        }
        let include = match self.param("includeObject") {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        };
        for range in media_ranges(accept) {
            if !range.is_json() {
                continue;
            }
            let version = match range.param("v") {
                Some("v1") => "v1",
                Some("v1beta1") => "v1beta1",
                _ => "v1",
            };
            match (range.param("as"), range.param("g")) {
                (None, _) => return Ok(Representation::Object),
                (Some("Table"), Some("meta.k8s.io")) => {
                    return Ok(Representation::Table { version, include })
                }
                (
                    Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                    Some("meta.k8s.io"),
                ) => return Ok(Representation::PartialMetadata { version }),
                _ => {}
            }
        }
        Err(ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io",
            None,
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Object helpers
// ---------------------------------------------------------------------------------------

fn str_at<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

fn strings_at(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn name_of(object: &Value) -> &str {
    str_at(&object["metadata"], "name")
}

fn namespace_of(object: &Value) -> &str {
    str_at(&object["metadata"], "namespace")
}

fn resource_version_of(object: &Value) -> &str {
    str_at(&object["metadata"], "resourceVersion")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Sets what the API server sets on every object: type, namespace, uid, creation time.
fn fill_in_metadata(rt: &ResourceType, object: &mut Value, namespace: &str) {
    if !object.is_object() {
        *object = json!({});
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["kind"] = Value::String(rt.kind.clone());
    object["apiVersion"] = Value::String(rt.api_version());
    let metadata = &mut object["metadata"];
    if rt.namespaced {
        metadata["namespace"] = Value::String(namespace.to_string());
    } else if let Some(metadata) = metadata.as_object_mut() {
        metadata.remove("namespace");
    }
    if metadata["uid"].as_str().unwrap_or_default().is_empty() {
        metadata["uid"] = Value::String(uuid::Uuid::new_v4().to_string());
    }
    if metadata["creationTimestamp"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        metadata["creationTimestamp"] = Value::String(now_rfc3339());
    }
}

/// What a resource's create strategy does to a new object.
fn prepare_new(rt: &ResourceType, object: &mut Value) {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            metadata.remove(field);
        }
    }
    match rt.key().as_str() {
        "pods" => {
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        "secrets" if str_at(object, "type").is_empty() => {
            object["type"] = "Opaque".into();
        }
        "namespaces" => {
            let name = name_of(object).to_string();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = Value::String(name);
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        _ if rt.group == "apps" => {
            object["metadata"]["generation"] = 1.into();
            if !object["spec"].is_object() {
                object["spec"] = json!({});
            }
            if object["spec"]["replicas"].is_null() && rt.plural != "daemonsets" {
                object["spec"]["replicas"] = 1.into();
            }
            object["status"] = json!({});
        }
        _ => {}
    }
}

fn random_suffix() -> String {
    // The alphabet of k8s.io/apimachinery/pkg/util/rand: no vowels, no confusable digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|byte| ALPHABET[usize::from(*byte) % ALPHABET.len()] as char)
        .collect()
}

fn filler(len: usize) -> String {
    const PATTERN: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut text = PATTERN.repeat(len / PATTERN.len() + 1);
    text.truncate(len);
    text
}

fn without_type_meta(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(fields) = object.as_object_mut() {
        fields.remove("kind");
        fields.remove("apiVersion");
    }
    object
}

fn partial_metadata(object: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object["metadata"],
    })
}

fn scale_of(object: &Value) -> Value {
    let selector = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let metadata = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"].as_u64().unwrap_or(0)},
        "status": {
            "replicas": object["status"]["replicas"].as_u64().unwrap_or(0),
            "selector": selector,
        },
    })
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(object) if object.is_object() => Ok(object),
        Ok(_) | Err(_) => Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the object provided is unrecognized ({})",
                if body.is_empty() {
                    "empty body"
                } else {
                    "not a JSON object"
                }
            ),
            None,
        )),
    }
}

/// The body's `kind` and `apiVersion`, when given, must be this resource's.
fn check_type(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let api_version = str_at(object, "apiVersion");
    if !api_version.is_empty() && api_version != rt.api_version() {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                rt.api_version()
            ),
            None,
        ));
    }
    let kind = str_at(object, "kind");
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            ),
            None,
        ));
    }
    Ok(())
}

/// Where an object sorts in a list: `namespace/name`.
fn object_position(object: &Value) -> String {
    format!("{}/{}", namespace_of(object), name_of(object))
}

fn encode_continue(revision: u64, position: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": format!("{position}\u{0}")});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .ok()?;
    let token: Value = serde_json::from_slice(&bytes).ok()?;
    let start = token["start"].as_str()?;
    Some(start.strip_suffix('\u{0}').unwrap_or(start).to_string())
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

fn json_response(code: u16, body: &Value) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
}

fn table_response(version: &str, body: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(format!(
            "application/json;as=Table;v={version};g=meta.k8s.io"
        ))
        .body(serde_json::to_vec(body).unwrap_or_default())
}

fn aggregated_response(version: &str, items: Vec<Value>) -> HttpResponse {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    HttpResponse::Ok()
        .content_type(format!(
            "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
        ))
        .insert_header((header::VARY, "Accept"))
        .body(serde_json::to_vec(&body).unwrap_or_default())
}

/// A `Status` body with its fields in kube-apiserver's order.
fn status_body(code: u16, reason: &str, message: &str, details: Option<&Value>) -> String {
    let mut body = format!(
        r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":{},"reason":{}"#,
        Value::String(message.to_string()),
        Value::String(reason.to_string()),
    );
    if let Some(details) = details {
        body.push_str(r#","details":"#);
        body.push_str(&details_json(details));
    }
    body.push_str(&format!(r#","code":{code}}}"#));
    body
}

/// `details` in kube-apiserver's order: name, group, kind.
fn details_json(details: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["name", "group", "kind"] {
        if let Some(value) = details.get(key) {
            parts.push(format!("{}:{}", Value::String(key.to_string()), value));
        }
    }
    format!("{{{}}}", parts.join(","))
}

fn status_value(code: u16, reason: &str, message: &str, details: Option<&Value>) -> Value {
    serde_json::from_str(&status_body(code, reason, message, details)).unwrap_or(Value::Null)
}

fn status_response(
    code: u16,
    reason: &str,
    message: impl Into<String>,
    details: Option<Value>,
) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(status_body(code, reason, &message.into(), details.as_ref()))
}

/// A refusal that becomes a `Status` response.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(
        code: u16,
        reason: &'static str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details,
        }
    }

    fn response(self) -> HttpResponse {
        status_response(self.code, self.reason, self.message, self.details)
    }
}

fn json_details(name: &str, group: &str, kind: &str) -> Value {
    let mut details = Map::new();
    details.insert("name".into(), name.into());
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    details.insert("kind".into(), kind.into());
    Value::Object(details)
}

fn path_not_found() -> HttpResponse {
    status_response(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn method_not_allowed() -> HttpResponse {
    status_response(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

fn not_found(rt: &ResourceType, name: &str) -> HttpResponse {
    status_response(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", rt.key()),
        Some(rt.details(name)),
    )
}

fn conflict(rt: &ResourceType, name: &str) -> HttpResponse {
    status_response(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            rt.key()
        ),
        Some(rt.details(name)),
    )
}

fn invalid(rt: &ResourceType, name: &str, cause: &str) -> HttpResponse {
    status_response(
        422,
        "Invalid",
        format!("{} \"{name}\" is invalid: {cause}", rt.kind),
        Some(json_details(name, &rt.group, &rt.kind)),
    )
}

/// A list body written item by item: items lose `kind` and `apiVersion`, as in a real
/// list of built-in types.
fn streamed_list(rt: &ResourceType, metadata: Value, objects: Vec<Arc<Value>>) -> HttpResponse {
    let head = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{},"items":["#,
        rt.kind,
        rt.api_version(),
        metadata
    );
    let mut objects = objects.into_iter().peekable();
    let mut head = Some(head.into_bytes());
    let mut first = true;
    let mut done = false;
    let chunks = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut chunk = head.take().unwrap_or_default();
        while chunk.len() < LIST_CHUNK_BYTES {
            let Some(object) = objects.next() else {
                chunk.extend_from_slice(b"]}");
                done = true;
                break;
            };
            if !first {
                chunk.push(b',');
            }
            first = false;
            write_without_type_meta(&mut chunk, &object);
        }
        Some(Ok::<Bytes, Infallible>(Bytes::from(chunk)))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream::iter(chunks))
}

fn write_without_type_meta(out: &mut Vec<u8>, object: &Value) {
    let Some(fields) = object.as_object() else {
        let _ = serde_json::to_writer(&mut *out, object);
        return;
    };
    out.push(b'{');
    let mut first = true;
    for (key, value) in fields {
        if key == "kind" || key == "apiVersion" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    out.push(b'}');
}

fn watch_response(
    events: impl futures_util::Stream<Item = Result<Bytes, Infallible>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(events)
}

// ---------------------------------------------------------------------------------------
// Media types
// ---------------------------------------------------------------------------------------

/// One entry of an Accept header: `application/json;as=Table;v=v1;g=meta.k8s.io`.
struct MediaRange {
    essence: String,
    params: Vec<(String, String)>,
}

impl MediaRange {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn is_json(&self) -> bool {
        matches!(
            self.essence.as_str(),
            "application/json" | "*/*" | "application/*"
        )
    }
}

fn media_ranges(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .filter(|range| !range.trim().is_empty())
        .map(|range| {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let params = parts
                .filter_map(|param| param.split_once('='))
                .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
                .collect();
            MediaRange { essence, params }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IncludeObject {
    None,
    Metadata,
    Object,
}

#[derive(Clone, Copy, Debug)]
enum Representation {
    Object,
    Table {
        version: &'static str,
        include: IncludeObject,
    },
    PartialMetadata {
        version: &'static str,
    },
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(query)
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let mut requirements = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = if let Some(key) = term.strip_prefix('!') {
            LabelRequirement::DoesNotExist(key.trim().to_string())
        } else if let Some(open) = term.find('(') {
            let close = term
                .rfind(')')
                .ok_or_else(|| format!("unable to parse requirement: {term}"))?;
            let values: Vec<String> = term[open + 1..close]
                .split(',')
                .map(|value| value.trim().to_string())
                .collect();
            let mut words = term[..open].split_whitespace();
            let key = words.next().unwrap_or("").to_string();
            match words.next() {
                Some("in") => LabelRequirement::In(key, values),
                Some("notin") => LabelRequirement::NotIn(key, values),
                _ => return Err(format!("unable to parse requirement: {term}")),
            }
        } else if let Some((key, value)) = term.split_once("!=") {
            LabelRequirement::NotEquals(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = term.split_once("==") {
            LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = term.split_once('=') {
            LabelRequirement::Equals(key.trim().to_string(), value.trim().to_string())
        } else {
            LabelRequirement::Exists(term.to_string())
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

impl LabelRequirement {
    fn matches(&self, labels: &Value) -> bool {
        let label = |key: &str| labels[key].as_str();
        match self {
            LabelRequirement::Equals(key, value) => label(key) == Some(value),
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value),
            LabelRequirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|value| value == v))
            }
            LabelRequirement::NotIn(key, values) => {
                label(key).is_none_or(|v| !values.iter().any(|value| value == v))
            }
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::DoesNotExist(key) => label(key).is_none(),
        }
    }
}

#[derive(Debug)]
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

/// The fields kube-apiserver lets a field selector use, beyond `metadata.name` and
/// `metadata.namespace`.
fn selectable_fields(resource: &str) -> &'static [&'static str] {
    match resource {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "secrets" => &["type"],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "namespaces" => &["status.phase"],
        "nodes" => &["spec.unschedulable"],
        "replicasets.apps" => &["status.replicas"],
        _ => &[],
    }
}

fn parse_field_selector(resource: &str, selector: &str) -> Result<Vec<FieldRequirement>, String> {
    let mut requirements = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, equal) = if let Some((path, value)) = term.split_once("!=") {
            (path, value, false)
        } else if let Some((path, value)) = term.split_once("==") {
            (path, value, true)
        } else if let Some((path, value)) = term.split_once('=') {
            (path, value, true)
        } else {
            return Err(format!(
                "invalid selector: '{selector}'; can't understand '{term}'"
            ));
        };
        let path = path.trim();
        if !matches!(path, "metadata.name" | "metadata.namespace")
            && !selectable_fields(resource).contains(&path)
        {
            return Err(format!("field label not supported: {path}"));
        }
        requirements.push(FieldRequirement {
            path: path.to_string(),
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(requirements)
}

impl FieldRequirement {
    fn matches(&self, object: &Value) -> bool {
        let mut current = object;
        for part in self.path.split('.') {
            current = &current[part];
        }
        let actual = match current {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (actual == self.value) == self.equal
    }
}

/// The `labelSelector` and `fieldSelector` of a list, watch or deletecollection.
struct Selection {
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Selection {
    fn from_query(
        rt: &ResourceType,
        query: &HashMap<String, String>,
    ) -> Result<Selection, ApiError> {
        let bad_request = |message: String| ApiError::new(400, "BadRequest", message, None);
        let labels = parse_label_selector(query.get("labelSelector").map_or("", String::as_str))
            .map_err(bad_request)?;
        let fields = parse_field_selector(
            &rt.key(),
            query.get("fieldSelector").map_or("", String::as_str),
        )
        .map_err(bad_request)?;
        Ok(Selection { labels, fields })
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels
            .iter()
            .all(|requirement| requirement.matches(labels))
            && self
                .fields
                .iter()
                .all(|requirement| requirement.matches(object))
    }
}

// ---------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------

struct WatchFilter {
    resource: String,
    namespace: Option<String>,
    selection: Selection,
}

impl WatchFilter {
    /// The event a watcher sees for a change, as kube-apiserver's watch cache decides: an
    /// object that starts or stops matching the selectors is `ADDED` or `DELETED`.
    fn translate(&self, change: &Change) -> Option<(&'static str, Arc<Value>)> {
        if change.resource != self.resource
            || self
                .namespace
                .as_deref()
                .is_some_and(|namespace| namespace != change.namespace)
        {
            return None;
        }
        let now = self.selection.matches(&change.object);
        let before = change
            .previous
            .as_deref()
            .is_some_and(|previous| self.selection.matches(previous));
        let event = match (change.change, before, now) {
            (ChangeType::Added, _, true) => "ADDED",
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, false) => "DELETED",
            (ChangeType::Deleted, true, _) => "DELETED",
            _ => return None,
        };
        Some((event, change.object.clone()))
    }
}

/// Turns objects into watch events of the representation the client asked for.
struct EventEncoder {
    rt: Arc<ResourceType>,
    representation: Representation,
    /// Only the first Table event carries column definitions.
    first: bool,
}

impl EventEncoder {
    fn encode(&mut self, event: &str, object: &Value) -> Bytes {
        match self.representation {
            Representation::Object => encode_event(event, object),
            Representation::PartialMetadata { version } => {
                encode_event(event, &partial_metadata(object, version))
            }
            Representation::Table { version, include } => {
                let rv = resource_version_of(object).to_string();
                let table = table(
                    &self.rt,
                    &[Arc::new(object.clone())],
                    include,
                    self.first,
                    json!({"resourceVersion": rv}),
                    version,
                );
                self.first = false;
                encode_event(event, &table)
            }
        }
    }
}

fn encode_event(event: &str, object: &Value) -> Bytes {
    let mut line = format!(r#"{{"type":"{event}","object":"#).into_bytes();
    let _ = serde_json::to_writer(&mut line, object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

struct WatchState {
    pending: VecDeque<Bytes>,
    receiver: broadcast::Receiver<Arc<Change>>,
    /// Changes up to this revision were replayed (or are in `pending`) already.
    after: u64,
    last_seen: u64,
    filter: WatchFilter,
    encoder: EventEncoder,
    deadline: tokio::time::Instant,
    bookmark_interval: Option<Duration>,
    next_bookmark: tokio::time::Instant,
}

impl WatchState {
    /// The next event line; `None` ends the response (timeout, or the watch fell behind).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            let bookmarks = self.bookmark_interval.is_some();
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(change) => {
                        self.last_seen = self.last_seen.max(change.revision);
                        if change.revision <= self.after {
                            continue;
                        }
                        if let Some((event, object)) = self.filter.translate(&change) {
                            return Some(self.encoder.encode(event, &object));
                        }
                    }
                    // Too slow a watcher is closed, as kube-apiserver closes it; the client
                    // re-lists.
                    Err(_) => return None,
                },
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = tokio::time::sleep_until(self.next_bookmark), if bookmarks => {
                    self.next_bookmark += self.bookmark_interval.unwrap_or_default();
                    let rt = &self.encoder.rt;
                    let bookmark = json!({
                        "kind": rt.kind,
                        "apiVersion": rt.api_version(),
                        "metadata": {"resourceVersion": self.last_seen.to_string()},
                    });
                    return Some(encode_event("BOOKMARK", &bookmark));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server-side printing (Table)
// ---------------------------------------------------------------------------------------

struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const fn column(
    name: &'static str,
    kind: &'static str,
    description: &'static str,
    priority: u8,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: NAME_DESCRIPTION,
    priority: 0,
};
const AGE: Column = column("Age", "string", AGE_DESCRIPTION, 0);

/// The columns kube-apiserver's printers use for the resources they know, and the default
/// `Name`, `Created At` for the rest.
fn columns(rt: &ResourceType) -> Vec<Column> {
    match rt.key().as_str() {
        "pods" => vec![
            NAME,
            column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", 0),
            column("Status", "string", "The aggregate status of the containers in this pod.", 0),
            column("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
            AGE,
            column("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
            column("Node", "string", "NodeName is a request to schedule this pod onto a specific node. If it is non-empty, the scheduler simply schedules this pod onto that node, assuming that it fits resource requirements.", 1),
            column("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.", 1),
            column("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates", 1),
        ],
        "configmaps" => vec![
            NAME,
            column("Data", "integer", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.", 0),
            AGE,
        ],
        "secrets" => vec![
            NAME,
            column("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types", 0),
            column("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4", 0),
            AGE,
        ],
        "services" => vec![
            NAME,
            column("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP.", 0),
            column("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly.", 0),
            column("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", 0),
            column("Port(s)", "string", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies", 0),
            AGE,
            column("Selector", "string", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/", 1),
        ],
        "namespaces" => vec![
            NAME,
            column("Status", "string", "The status of the namespace", 0),
            AGE,
        ],
        "deployments.apps" => vec![
            NAME,
            column("Ready", "string", "Number of the pod with ready state", 0),
            column("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
            column("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
            AGE,
            column("Containers", "string", "Names of each container in the template.", 1),
            column("Images", "string", "Images referenced by each container in the template.", 1),
            column("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1),
        ],
        _ => vec![
            NAME,
            Column {
                name: "Created At",
                kind: "date",
                format: "",
                description: AGE_DESCRIPTION,
                priority: 0,
            },
        ],
    }
}

fn cells(rt: &ResourceType, object: &Value) -> Vec<Value> {
    let name = Value::String(name_of(object).to_string());
    let created = str_at(&object["metadata"], "creationTimestamp");
    let age = Value::String(age(created));
    let or_none = |value: &Value| match value.as_str() {
        Some(text) if !text.is_empty() => text.to_string(),
        _ => "<none>".to_string(),
    };
    let spec = &object["spec"];
    let status = &object["status"];
    match rt.key().as_str() {
        "pods" => {
            let containers = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|s| s["ready"].as_bool() == Some(true))
                .count();
            let restarts: u64 = statuses
                .iter()
                .filter_map(|s| s["restartCount"].as_u64())
                .sum();
            let mut reason = status["phase"].as_str().unwrap_or_default().to_string();
            if let Some(pod_reason) = status["reason"].as_str().filter(|r| !r.is_empty()) {
                reason = pod_reason.to_string();
            }
            for container in &statuses {
                let state = &container["state"];
                if let Some(waiting) = state["waiting"]["reason"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                {
                    reason = waiting.to_string();
                } else if let Some(terminated) = state["terminated"]["reason"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                {
                    reason = terminated.to_string();
                }
            }
            if !object["metadata"]["deletionTimestamp"].is_null() {
                reason = "Terminating".to_string();
            }
            let gates = spec["readinessGates"].as_array().map_or(0, Vec::len);
            vec![
                name,
                format!("{ready}/{containers}").into(),
                reason.into(),
                restarts.to_string().into(),
                age,
                or_none(&status["podIP"]).into(),
                or_none(&spec["nodeName"]).into(),
                or_none(&status["nominatedNodeName"]).into(),
                if gates == 0 {
                    "<none>".into()
                } else {
                    format!("0/{gates}").into()
                },
            ]
        }
        "configmaps" => {
            let count = object["data"].as_object().map_or(0, Map::len)
                + object["binaryData"].as_object().map_or(0, Map::len);
            vec![name, count.into(), age]
        }
        "secrets" => {
            let count = object["data"].as_object().map_or(0, Map::len);
            vec![
                name,
                str_at(object, "type").to_string().into(),
                count.into(),
                age,
            ]
        }
        "services" => {
            let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
            let ports = spec["ports"]
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|port| {
                            let protocol = port["protocol"].as_str().unwrap_or("TCP");
                            match port["nodePort"].as_u64() {
                                Some(node) => format!("{}:{node}/{protocol}", port["port"]),
                                None => format!("{}/{protocol}", port["port"]),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|ports| !ports.is_empty())
                .unwrap_or_else(|| "<none>".to_string());
            let external = strings_at(spec, "externalIPs").join(",");
            let selector = spec["selector"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|selector| !selector.is_empty())
                .unwrap_or_else(|| "<none>".to_string());
            vec![
                name,
                kind.into(),
                or_none(&spec["clusterIP"]).into(),
                if external.is_empty() {
                    "<none>".into()
                } else {
                    external.into()
                },
                ports.into(),
                age,
                selector.into(),
            ]
        }
        "namespaces" => vec![name, str_at(status, "phase").to_string().into(), age],
        "deployments.apps" => {
            let replicas = spec["replicas"].as_u64().unwrap_or(0);
            let count = |field: &str| status[field].as_u64().unwrap_or(0);
            let template = spec["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let join = |field: &str| {
                template
                    .iter()
                    .map(|c| str_at(c, field).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let selector = spec["selector"]["matchLabels"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                format!("{}/{replicas}", count("readyReplicas")).into(),
                count("updatedReplicas").into(),
                count("availableReplicas").into(),
                age,
                join("name").into(),
                join("image").into(),
                selector.into(),
            ]
        }
        _ => vec![name, created.to_string().into()],
    }
}

fn table(
    rt: &ResourceType,
    objects: &[Arc<Value>],
    include: IncludeObject,
    with_columns: bool,
    metadata: Value,
    version: &str,
) -> Value {
    let column_definitions = if with_columns {
        Value::Array(
            columns(rt)
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "type": c.kind,
                        "format": c.format,
                        "description": c.description,
                        "priority": c.priority,
                    })
                })
                .collect(),
        )
    } else {
        Value::Null
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let embedded = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => partial_metadata(object, version),
                IncludeObject::Object => (**object).clone(),
            };
            json!({"cells": cells(rt, object), "object": embedded})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

/// How old something created at `created` (RFC 3339) is, as `kubectl get` prints it
/// (k8s.io/apimachinery/pkg/util/duration.HumanDuration).
fn age(created: &str) -> String {
    let Ok(created) = humantime::parse_rfc3339_weak(created) else {
        return "<unknown>".to_string();
    };
    let seconds = match SystemTime::now().duration_since(created) {
        Ok(elapsed) => elapsed.as_secs(),
        Err(ahead) if ahead.duration().as_secs() < 2 => 0,
        Err(_) => return "<invalid>".to_string(),
    };
    human_duration(seconds)
}

fn human_duration(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = seconds / 3600;
    let days = hours / 24;
    if seconds < 60 * 2 {
        format!("{seconds}s")
    } else if minutes < 10 {
        match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        }
    } else {
        format!("{}y", days / 365)
    }
}

// ---------------------------------------------------------------------------------------
// Patches
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(fields) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merge key of the lists strategic merge patch merges by key in the built-in types.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "hostAliases"
        | "resourceClaims" => Some("name"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "ports" if items.iter().all(|item| item.get("containerPort").is_some()) => {
            Some("containerPort")
        }
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Strategic merge patch, approximated: a merge patch whose lists of the built-in types
/// merge by their merge key, honouring `$patch: delete|replace` and ignoring the other
/// directives (`$setElementOrder`, `$retainKeys`, `$deleteFromPrimitiveList`).
fn strategic_merge_patch(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(patch_fields) => {
            if patch_fields.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replacement = patch.clone();
                if let Some(fields) = replacement.as_object_mut() {
                    fields.remove("$patch");
                }
                *target = replacement;
                return;
            }
            if !target.is_object() {
                *target = json!({});
            }
            let Some(fields) = target.as_object_mut() else {
                return;
            };
            for (key, value) in patch_fields {
                if key.starts_with('$') {
                    continue;
                }
                if value.is_null() {
                    fields.remove(key);
                } else {
                    strategic_merge_patch(
                        fields.entry(key.clone()).or_insert(Value::Null),
                        value,
                        key,
                    );
                }
            }
        }
        Value::Array(patch_items) => {
            let key = merge_key(field, patch_items);
            let (Some(key), Value::Array(items)) = (key, &mut *target) else {
                *target = patch.clone();
                return;
            };
            for patch_item in patch_items {
                let Some(id) = patch_item.get(key) else {
                    continue;
                };
                let position = items.iter().position(|item| item.get(key) == Some(id));
                let delete = patch_item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        items.remove(i);
                    }
                    (Some(i), false) => strategic_merge_patch(&mut items[i], patch_item, ""),
                    (None, false) => {
                        let mut item = Value::Null;
                        strategic_merge_patch(&mut item, patch_item, "");
                        items.push(item);
                    }
                    (None, true) => {}
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let operations = patch
        .as_array()
        .ok_or_else(|| "a JSON patch must be a list of operations".to_string())?;
    for operation in operations {
        let op = str_at(operation, "op");
        let path = str_at(operation, "path");
        match op {
            "add" => pointer_add(target, path, operation["value"].clone())?,
            "remove" => {
                pointer_remove(target, path)?;
            }
            "replace" => {
                pointer_remove(target, path)?;
                pointer_add(target, path, operation["value"].clone())?;
            }
            "move" => {
                let value = pointer_remove(target, str_at(operation, "from"))?;
                pointer_add(target, path, value)?;
            }
            "copy" => {
                let value = target
                    .pointer(str_at(operation, "from"))
                    .cloned()
                    .ok_or_else(|| format!("doc is missing path: {}", str_at(operation, "from")))?;
                pointer_add(target, path, value)?;
            }
            "test" => {
                if target.pointer(path) != Some(&operation["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer: {path}"))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn pointer_add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(fields)) => {
            fields.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| format!("add operation index out of bounds: {path}"))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path}")),
    }
}

fn pointer_remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("doc is missing path: \"{path}\": missing value");
    match target.pointer_mut(&parent) {
        Some(Value::Object(fields)) => fields.remove(&last).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let index = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(missing)?;
            Ok(items.remove(index))
        }
        _ => Err(missing()),
    }
}

// ---------------------------------------------------------------------------------------
// Documents: version, root paths, discovery, OpenAPI
// ---------------------------------------------------------------------------------------

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "4cb5f0764b8d5f425645c6f433394fede34a8a26",
        "gitTreeState": "clean",
        "buildDate": "2025-04-22T16:03:07Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn root_paths() -> Value {
    let mut paths = vec![
        "/.well-known/openid-configuration".to_string(),
        "/api".to_string(),
        "/api/v1".to_string(),
        "/apis".to_string(),
        "/apis/".to_string(),
        "/healthz".to_string(),
        "/healthz/etcd".to_string(),
        "/healthz/log".to_string(),
        "/healthz/ping".to_string(),
        "/livez".to_string(),
        "/livez/etcd".to_string(),
        "/livez/log".to_string(),
        "/livez/ping".to_string(),
        "/metrics".to_string(),
        "/openapi/v2".to_string(),
        "/openapi/v3".to_string(),
        "/openapi/v3/".to_string(),
        "/openid/v1/jwks".to_string(),
        "/readyz".to_string(),
        "/readyz/etcd".to_string(),
        "/readyz/log".to_string(),
        "/readyz/ping".to_string(),
        "/version".to_string(),
    ];
    for gv in catalog()
        .group_versions
        .iter()
        .filter(|gv| !gv.group.is_empty())
    {
        paths.push(format!("/apis/{}", gv.group));
        paths.push(format!("/apis/{}", gv.group_version()));
    }
    paths.sort();
    paths.dedup();
    json!({ "paths": paths })
}

fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = catalog()
        .group_versions
        .iter()
        .filter(|gv| gv.group == group && !group.is_empty())
        .map(|gv| json!({"groupVersion": gv.group_version(), "version": gv.version}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": preferred,
    }))
}

/// One version of aggregated discovery, derived from the legacy document as
/// kube-apiserver derives it.
fn aggregated_version(gv: &GroupVersion) -> Value {
    let entries = gv.document["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut resources: Vec<Value> = Vec::new();
    for entry in entries.iter().filter(|e| !str_at(e, "name").contains('/')) {
        let name = str_at(entry, "name");
        let mut resource = json!({
            "resource": name,
            "responseKind": {"group": "", "version": "", "kind": entry["kind"]},
            "scope": if entry["namespaced"].as_bool() == Some(true) { "Namespaced" } else { "Cluster" },
            "singularResource": entry["singularName"],
            "verbs": entry["verbs"],
        });
        for optional in ["shortNames", "categories"] {
            if !entry[optional].is_null() {
                resource[optional] = entry[optional].clone();
            }
        }
        let prefix = format!("{name}/");
        let subresources: Vec<Value> = entries
            .iter()
            .filter_map(|e| {
                let sub = str_at(e, "name").strip_prefix(&prefix)?;
                Some(json!({
                    "subresource": sub,
                    "responseKind": {
                        "group": str_at(e, "group"),
                        "version": str_at(e, "version"),
                        "kind": e["kind"],
                    },
                    "verbs": e["verbs"],
                }))
            })
            .collect();
        if !subresources.is_empty() {
            resource["subresources"] = Value::Array(subresources);
        }
        resources.push(resource);
    }
    json!({"version": gv.version, "resources": resources, "freshness": "Current"})
}

/// A stable short hash of a document, for the `?hash=` of OpenAPI v3 URLs.
fn document_hash(document: &Value) -> String {
    // FNV-1a: enough to change when the document changes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in document.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016X}")
}

fn openapi_v3_root() -> Value {
    let mut paths = Map::new();
    for gv in &catalog().group_versions {
        if let Some(document) = openapi_v3_document(&gv.path()) {
            paths.insert(
                gv.path(),
                json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", gv.path(), document_hash(&document))}),
            );
        }
    }
    json!({ "paths": paths })
}

/// The OpenAPI v3 document of one group version: its paths and operations, with the
/// `x-kubernetes-group-version-kind` extension and the query parameters (notably
/// `fieldValidation`, which kubectl looks for before it asks the server to validate),
/// without schemas (`components.schemas` is empty, so kubectl builds strategic merge
/// patches from its compiled-in types).
fn openapi_v3_document(path: &str) -> Option<Value> {
    let gv = catalog()
        .group_versions
        .iter()
        .find(|gv| gv.path() == path)?;
    let query = |name: &str, description: &str| json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}});
    let dry_run = query(
        "dryRun",
        "When present, indicates that modifications should not be persisted.",
    );
    let field_manager = query(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    );
    let field_validation = query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict");
    let mut paths = Map::new();
    for rt in gv.resources.iter().filter(|rt| rt.stored()) {
        let gvk = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
        let base = if gv.group.is_empty() {
            format!("/api/{}", gv.version)
        } else {
            format!("/apis/{}/{}", gv.group, gv.version)
        };
        let collection = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{base}/{}", rt.plural)
        };
        let operation = |action: &str, verb: &str, parameters: Vec<Value>| {
            json!({
                "description": format!("{verb} {}", rt.kind),
                "operationId": format!("{action}{}", rt.kind),
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let mut path_parameters = Vec::new();
        if rt.namespaced {
            path_parameters.push(json!({"name": "namespace", "in": "path", "description": "object name and auth scope, such as for teams and projects", "required": true, "schema": {"type": "string", "uniqueItems": true}}));
        }
        let mut create = operation(
            "post",
            "create",
            vec![
                dry_run.clone(),
                field_manager.clone(),
                field_validation.clone(),
            ],
        );
        create["requestBody"] = json!({"content": {"*/*": {}}, "required": true});
        paths.insert(
            collection.clone(),
            json!({
                "get": operation("list", "list or watch objects of kind", vec![]),
                "post": create,
                "delete": operation("deletecollection", "delete collection of", vec![dry_run.clone()]),
                "parameters": path_parameters.clone(),
            }),
        );
        let mut patch = operation(
            "patch",
            "partially update the specified",
            vec![
                dry_run.clone(),
                field_manager.clone(),
                field_validation.clone(),
                query("force", "Force is going to \"force\" Apply requests."),
            ],
        );
        patch["requestBody"] = json!({"content": {
            "application/apply-patch+yaml": {},
            "application/json-patch+json": {},
            "application/merge-patch+json": {},
            "application/strategic-merge-patch+json": {},
        }, "required": true});
        let mut update = operation(
            "put",
            "replace the specified",
            vec![
                dry_run.clone(),
                field_manager.clone(),
                field_validation.clone(),
            ],
        );
        update["requestBody"] = json!({"content": {"*/*": {}}, "required": true});
        let mut object_parameters = vec![
            json!({"name": "name", "in": "path", "description": format!("name of the {}", rt.kind), "required": true, "schema": {"type": "string", "uniqueItems": true}}),
        ];
        object_parameters.extend(path_parameters);
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation("get", "read the specified", vec![]),
                "put": update,
                "patch": patch,
                "delete": operation("delete", "delete", vec![dry_run.clone()]),
                "parameters": object_parameters,
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// A small Swagger 2.0 document with the same paths, for clients that accept JSON.
fn openapi_v2_document() -> Value {
    let mut paths = Map::new();
    for gv in &catalog().group_versions {
        if let Some(document) = openapi_v3_document(&gv.path()) {
            if let Some(gv_paths) = document["paths"].as_object() {
                for (path, item) in gv_paths {
                    let mut item = item.clone();
                    if let Some(operations) = item.as_object_mut() {
                        for (key, operation) in operations.iter_mut() {
                            if key == "parameters" {
                                swagger_parameters(operation);
                            } else if let Some(operation) = operation.as_object_mut() {
                                operation.remove("requestBody");
                                if let Some(parameters) = operation.get_mut("parameters") {
                                    swagger_parameters(parameters);
                                }
                            }
                        }
                    }
                    paths.insert(path.clone(), item);
                }
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": {},
    })
}

/// OpenAPI v3 parameters (`schema: {type}`) as Swagger 2.0 writes them (`type` inline).
fn swagger_parameters(parameters: &mut Value) {
    for parameter in parameters.as_array_mut().into_iter().flatten() {
        if let Some(fields) = parameter.as_object_mut() {
            if let Some(Value::Object(schema)) = fields.remove("schema") {
                fields.extend(schema);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Protobuf request bodies
// ---------------------------------------------------------------------------------------

/// Decodes Kubernetes protobuf bodies (`k8s\0` + `runtime.Unknown`) of the few types
/// kubectl's typed clients send, field numbers as in k8s.io/api `generated.proto`. Fields
/// not listed here are dropped.
mod protobuf {
    use base64::Engine as _;
    use serde_json::{Map, Value};

    /// How one field is written.
    enum Kind {
        Text,
        Bytes,
        Int,
        Bool,
        Time,
        Quantity,
        Message(&'static [Field]),
        TextMap,
        BytesMap,
        QuantityMap,
    }

    struct Field(u64, &'static str, Kind, bool);

    const fn one(number: u64, name: &'static str, kind: Kind) -> Field {
        Field(number, name, kind, false)
    }

    const fn many(number: u64, name: &'static str, kind: Kind) -> Field {
        Field(number, name, kind, true)
    }

    const OBJECT_META: &[Field] = &[
        one(1, "name", Kind::Text),
        one(2, "generateName", Kind::Text),
        one(3, "namespace", Kind::Text),
        one(5, "uid", Kind::Text),
        one(6, "resourceVersion", Kind::Text),
        one(7, "generation", Kind::Int),
        one(8, "creationTimestamp", Kind::Time),
        one(11, "labels", Kind::TextMap),
        one(12, "annotations", Kind::TextMap),
        many(14, "finalizers", Kind::Text),
    ];
    const CONFIG_MAP: &[Field] = &[
        one(1, "metadata", Kind::Message(OBJECT_META)),
        one(2, "data", Kind::TextMap),
        one(3, "binaryData", Kind::BytesMap),
        one(4, "immutable", Kind::Bool),
    ];
    const SECRET: &[Field] = &[
        one(1, "metadata", Kind::Message(OBJECT_META)),
        one(2, "data", Kind::BytesMap),
        one(3, "type", Kind::Text),
        one(4, "stringData", Kind::TextMap),
        one(5, "immutable", Kind::Bool),
    ];
    const NAMESPACE: &[Field] = &[
        one(1, "metadata", Kind::Message(OBJECT_META)),
        one(
            2,
            "spec",
            Kind::Message(&[many(1, "finalizers", Kind::Text)]),
        ),
    ];
    const CONTAINER_PORT: &[Field] = &[
        one(1, "name", Kind::Text),
        one(2, "hostPort", Kind::Int),
        one(3, "containerPort", Kind::Int),
        one(4, "protocol", Kind::Text),
        one(5, "hostIP", Kind::Text),
    ];
    const ENV_VAR: &[Field] = &[one(1, "name", Kind::Text), one(2, "value", Kind::Text)];
    const RESOURCES: &[Field] = &[
        one(1, "limits", Kind::QuantityMap),
        one(2, "requests", Kind::QuantityMap),
    ];
    const CONTAINER: &[Field] = &[
        one(1, "name", Kind::Text),
        one(2, "image", Kind::Text),
        many(3, "command", Kind::Text),
        many(4, "args", Kind::Text),
        one(5, "workingDir", Kind::Text),
        many(6, "ports", Kind::Message(CONTAINER_PORT)),
        many(7, "env", Kind::Message(ENV_VAR)),
        one(8, "resources", Kind::Message(RESOURCES)),
        one(13, "terminationMessagePath", Kind::Text),
        one(14, "imagePullPolicy", Kind::Text),
        one(16, "stdin", Kind::Bool),
        one(17, "stdinOnce", Kind::Bool),
        one(18, "tty", Kind::Bool),
        one(20, "terminationMessagePolicy", Kind::Text),
    ];
    const POD_SPEC: &[Field] = &[
        many(2, "containers", Kind::Message(CONTAINER)),
        one(3, "restartPolicy", Kind::Text),
        one(4, "terminationGracePeriodSeconds", Kind::Int),
        one(6, "dnsPolicy", Kind::Text),
        one(7, "nodeSelector", Kind::TextMap),
        one(8, "serviceAccountName", Kind::Text),
        one(10, "nodeName", Kind::Text),
        one(19, "schedulerName", Kind::Text),
        many(20, "initContainers", Kind::Message(CONTAINER)),
    ];
    const POD: &[Field] = &[
        one(1, "metadata", Kind::Message(OBJECT_META)),
        one(2, "spec", Kind::Message(POD_SPEC)),
    ];
    const LABEL_SELECTOR: &[Field] = &[one(1, "matchLabels", Kind::TextMap)];
    const DEPLOYMENT_SPEC: &[Field] = &[
        one(1, "replicas", Kind::Int),
        one(2, "selector", Kind::Message(LABEL_SELECTOR)),
        one(3, "template", Kind::Message(POD)),
        one(4, "strategy", Kind::Message(&[one(1, "type", Kind::Text)])),
        one(5, "minReadySeconds", Kind::Int),
        one(6, "revisionHistoryLimit", Kind::Int),
        one(7, "paused", Kind::Bool),
        one(9, "progressDeadlineSeconds", Kind::Int),
    ];
    const DEPLOYMENT: &[Field] = &[
        one(1, "metadata", Kind::Message(OBJECT_META)),
        one(2, "spec", Kind::Message(DEPLOYMENT_SPEC)),
    ];
    const METADATA_ONLY: &[Field] = &[one(1, "metadata", Kind::Message(OBJECT_META))];
    const TOKEN_REVIEW: &[Field] = &[
        one(1, "metadata", Kind::Message(OBJECT_META)),
        one(
            2,
            "spec",
            Kind::Message(&[
                one(1, "token", Kind::Text),
                many(2, "audiences", Kind::Text),
            ]),
        ),
    ];
    const TYPE_META: &[Field] = &[one(1, "apiVersion", Kind::Text), one(2, "kind", Kind::Text)];

    /// The JSON form of a protobuf body, or `None` for a type the stand-in cannot read.
    pub(super) fn decode(body: &[u8]) -> Option<Value> {
        let unknown = body.strip_prefix(b"k8s\0")?;
        let fields = parse(unknown)?;
        let type_meta = message(&fields, 1, TYPE_META)?;
        let raw = fields
            .iter()
            .find(|(n, _)| *n == 2)
            .and_then(|(_, v)| v.bytes())?;
        let schema = match type_meta["kind"].as_str()? {
            "ConfigMap" => CONFIG_MAP,
            "Secret" => SECRET,
            "Namespace" => NAMESPACE,
            "Pod" => POD,
            "Deployment" => DEPLOYMENT,
            "SelfSubjectReview" => METADATA_ONLY,
            "TokenReview" => TOKEN_REVIEW,
            _ => return None,
        };
        let mut object = to_json(&parse(raw)?, schema)?;
        object["kind"] = type_meta["kind"].clone();
        object["apiVersion"] = type_meta["apiVersion"].clone();
        Some(object)
    }

    enum Wire<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Fixed,
    }

    impl<'a> Wire<'a> {
        fn bytes(&self) -> Option<&'a [u8]> {
            match self {
                Wire::Bytes(bytes) => Some(bytes),
                _ => None,
            }
        }
    }

    fn varint(input: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = input.split_first()?;
            *input = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn parse(mut input: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
        let mut fields = Vec::new();
        while !input.is_empty() {
            let key = varint(&mut input)?;
            let value = match key & 7 {
                0 => Wire::Varint(varint(&mut input)?),
                1 => {
                    input = input.get(8..)?;
                    Wire::Fixed
                }
                2 => {
                    let len = usize::try_from(varint(&mut input)?).ok()?;
                    let (bytes, rest) = (input.get(..len)?, input.get(len..)?);
                    input = rest;
                    Wire::Bytes(bytes)
                }
                5 => {
                    input = input.get(4..)?;
                    Wire::Fixed
                }
                _ => return None,
            };
            fields.push((key >> 3, value));
        }
        Some(fields)
    }

    fn message(fields: &[(u64, Wire<'_>)], number: u64, schema: &[Field]) -> Option<Value> {
        let bytes = fields.iter().find(|(n, _)| *n == number)?.1.bytes()?;
        to_json(&parse(bytes)?, schema)
    }

    fn text(bytes: &[u8]) -> Option<Value> {
        Some(Value::String(String::from_utf8(bytes.to_vec()).ok()?))
    }

    fn to_json(fields: &[(u64, Wire<'_>)], schema: &[Field]) -> Option<Value> {
        let mut object = Map::new();
        for Field(number, name, kind, repeated) in schema {
            let mut values = Vec::new();
            let mut map = Map::new();
            for (_, wire) in fields.iter().filter(|(n, _)| n == number) {
                let value = match (kind, wire) {
                    (Kind::Int, Wire::Varint(v)) => Value::from(*v as i64),
                    (Kind::Bool, Wire::Varint(v)) => Value::Bool(*v != 0),
                    (Kind::Text, Wire::Bytes(b)) => text(b)?,
                    (Kind::Bytes, Wire::Bytes(b)) => {
                        base64::engine::general_purpose::STANDARD.encode(b).into()
                    }
                    (Kind::Message(inner), Wire::Bytes(b)) => to_json(&parse(b)?, inner)?,
                    (Kind::Quantity, Wire::Bytes(b)) => quantity(b)?,
                    (Kind::Time, Wire::Bytes(b)) => {
                        let time = parse(b)?;
                        let seconds = time.iter().find_map(|(n, w)| match (n, w) {
                            (1, Wire::Varint(v)) => Some(*v),
                            _ => None,
                        });
                        match seconds {
                            Some(seconds) => {
                                let at =
                                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
                                humantime::format_rfc3339_seconds(at).to_string().into()
                            }
                            None => continue,
                        }
                    }
                    (Kind::TextMap | Kind::BytesMap | Kind::QuantityMap, Wire::Bytes(b)) => {
                        let entry = parse(b)?;
                        let key = entry
                            .iter()
                            .find(|(n, _)| *n == 1)
                            .and_then(|(_, w)| w.bytes());
                        let value = entry
                            .iter()
                            .find(|(n, _)| *n == 2)
                            .and_then(|(_, w)| w.bytes());
                        let key = String::from_utf8(key.unwrap_or_default().to_vec()).ok()?;
                        let value = value.unwrap_or_default();
                        let value = match kind {
                            Kind::TextMap => text(value)?,
                            Kind::BytesMap => base64::engine::general_purpose::STANDARD
                                .encode(value)
                                .into(),
                            _ => quantity(value)?,
                        };
                        map.insert(key, value);
                        continue;
                    }
                    _ => return None,
                };
                values.push(value);
            }
            if !map.is_empty() {
                object.insert(name.to_string(), Value::Object(map));
            } else if *repeated && !values.is_empty() {
                object.insert(name.to_string(), Value::Array(values));
            } else if let Some(value) = values.pop() {
                if !is_omitted_zero(name, &value) {
                    object.insert(name.to_string(), value);
                }
            }
        }
        Some(Value::Object(object))
    }

    /// Go writes every non-pointer field to protobuf, zero or not, but leaves zero
    /// `omitempty` fields out of JSON: so do the same, except for the pointer or required
    /// fields whose zero means something.
    fn is_omitted_zero(name: &str, value: &Value) -> bool {
        const MEANINGFUL_ZEROS: &[&str] = &[
            "replicas",
            "containerPort",
            "terminationGracePeriodSeconds",
            "revisionHistoryLimit",
            "progressDeadlineSeconds",
            "immutable",
        ];
        let zero = match value {
            Value::String(text) => text.is_empty(),
            Value::Bool(flag) => !flag,
            Value::Number(number) => number.as_i64() == Some(0),
            _ => false,
        };
        zero && !MEANINGFUL_ZEROS.contains(&name)
    }

    /// `resource.Quantity` is a message with one string field.
    fn quantity(bytes: &[u8]) -> Option<Value> {
        let fields = parse(bytes)?;
        let text_bytes = fields
            .iter()
            .find(|(n, _)| *n == 1)
            .and_then(|(_, w)| w.bytes());
        text(text_bytes.unwrap_or_default())
    }
}
