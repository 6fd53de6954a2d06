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
//! whoami`, impersonation (only for callers allowed to impersonate), and protobuf request bodies of the few types
//! kubectl's typed clients send. It does not validate objects against schemas, keeps no
//! managedFields, deletes pods at once (no grace period), treats strategic merge patch
//! and server-side apply as JSON merge patch with merge keys for the usual lists, answers
//! JSON only (never protobuf), applies RBAC only to impersonated identities (every
//! caller authenticated directly may do anything),
//! exec, attach and port-forward over WebSocket and SPDY/3.1 with commands of its own and
//! port-forwarding to 127.0.0.1 (`streams.rs`, `exec.rs`, `port_forward.rs`), and a
//! Kubernetes dashboard behind the service proxy of `kube-system/kubernetes-dashboard`
//! (`dashboard.rs`).
//!
//! The discovery documents in `../discovery/` are trimmed copies of those recorded from a
//! real API server in kubernetes/kubernetes `api/discovery/`; the resources they list
//! (with `list` among their verbs) are the resources this store serves.
//!
//! This file holds the [`ApiServer`], its builder, start and stop, and what the tests call;
//! the rest is one module per capability, each opening with what lives there and what is
//! faithful to kube-apiserver and what is not:
//!
//! - `router`: the request entry point (record, authenticate, route), health checks, and the
//!   `Call` being answered.
//! - `requests`: the requests log behind [`ApiServer::requests`].
//! - `auth`: client certificates, the bearer token, and who a request is (SelfSubjectReview,
//!   TokenReview).
//! - `rbac`: impersonation (`Impersonate-*` from callers allowed to impersonate) and RBAC
//!   for impersonated identities.
//! - `catalog`: the resource types, read from the discovery documents.
//! - `discovery`: discovery, `/version`, the root paths, OpenAPI.
//! - `store`: the in-memory objects and their change history.
//! - `objects`: list, get, create, update, delete, deletecollection and the subresources.
//! - `object_helpers`: the fields of objects, what the server fills in, `continue` tokens.
//! - `patches`: JSON merge, strategic merge and JSON patches, server-side apply.
//! - `selectors`: label and field selectors.
//! - `watches`: watch streams, bookmarks, timeouts.
//! - `table`: server-side printing.
//! - `media_types`: what the Accept header asks for.
//! - `responses`: JSON, Table and streamed list bodies, `Status` errors.
//! - `protobuf`: protobuf request bodies.
//! - `streams`: exec, attach and port-forward upgrades, over WebSocket or SPDY/3.1.
//! - `websocket`: WebSocket framing, the server's side.
//! - `exec`: exec and attach: the commands, their channels or SPDY streams.
//! - `spdy`: SPDY/3.1 framing.
//! - `port_forward`: port-forwarding to 127.0.0.1.
//! - `dashboard`: the Kubernetes dashboard behind the service proxy.

#![allow(dead_code)] // Each test crate that includes this module uses a different part of it.

mod auth;
mod catalog;
pub mod dashboard;
mod discovery;
mod exec;
mod media_types;
mod object_helpers;
mod objects;
mod patches;
mod port_forward;
mod protobuf;
mod rbac;
mod requests;
mod responses;
mod router;
mod selectors;
mod spdy;
mod store;
mod streams;
mod table;
mod watches;
mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use super::certs::TestPki;

use auth::remember_client_certificate;
use catalog::known_resource;
use media_types::query_pairs;
use object_helpers::{fill_in_metadata, filler, name_of};
pub use rbac::Grant;
use requests::Recorder;
use router::serve;
use store::Store;

/// The Kubernetes version the stand-in claims to be.
pub const KUBERNETES_VERSION: &str = "v1.32.4";
/// The user name recorded for requests authenticated by the static bearer token.
pub const TOKEN_USER: &str = "token";
/// Bodies larger than this are refused, as kube-apiserver refuses them (3 MiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

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
    upgrade_delay: Duration,
    http1_only: bool,
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
    /// Whom a caller allowed to impersonate named in `Impersonate-*` headers.
    Impersonated {
        /// `Impersonate-User`.
        user: String,
        /// `Impersonate-Group` values, with `system:authenticated` added.
        groups: Vec<String>,
        /// `Impersonate-Extra-{key}` (key percent-decoded) and value.
        extra: Vec<(String, String)>,
        /// The caller who impersonated.
        by: String,
    },
    /// Neither: the request was answered `401 Unauthorized`.
    Anonymous,
}

impl Identity {
    /// The user name: the certificate CN, [`TOKEN_USER`] for the token, none when anonymous.
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::ClientCert { user, .. } | Identity::Impersonated { user, .. } => Some(user),
            Identity::Token => Some(TOKEN_USER),
            Identity::Anonymous => None,
        }
    }

    /// The groups, with `system:authenticated` added as kube-apiserver adds it.
    pub fn groups(&self) -> Vec<String> {
        let mut groups = match self {
            Identity::Impersonated { groups, .. } => return groups.clone(),
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
            upgrade_delay: Duration::ZERO,
            http1_only: false,
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

    /// Lets `subject` (a user or a group) do `verbs` on `resources` (RBAC, as the module
    /// `rbac` applies it: to impersonated identities and to impersonation itself).
    pub fn grant(&self, subject: &str, verbs: &[&str], resources: &[&str]) {
        lock(&self.shared.grants).push(Grant {
            subject: subject.into(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
        });
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

    /// How many connections clients have opened to the stand-in so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
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

    /// Wait this long before answering an upgrade (exec, attach, port-forward), as an API
    /// server does that cannot reach the kubelet.
    pub fn upgrade_delay(mut self, delay: Duration) -> Self {
        self.upgrade_delay = delay;
        self
    }

    /// Offer HTTP/1.1 alone by ALPN, as an API server behind a proxy without HTTP/2 does.
    /// By default the stand-in offers `h2` and `http/1.1`, as kube-apiserver does, and
    /// allows 1,000 concurrent streams per HTTP/2 connection, as kube-apiserver does
    /// (kubegate's patched actix-http, `vendor/actix-http/KUBEGATE-PATCH.md`).
    pub fn http1_only(mut self) -> Self {
        self.http1_only = true;
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
            upgrade_delay: self.upgrade_delay,
            address: OnceLock::new(),
            grants: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let mut tls = pki.server_config();
        if self.http1_only {
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("apiserver-standin".to_string())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let data = web::Data::from(thread_shared);
                    let counted = data.clone();
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(data.clone())
                            .default_service(web::to(serve))
                    })
                    .workers(1)
                    // as kube-apiserver (Go) does on every connection
                    .tcp_nodelay(true)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .on_connect(move |connection, extensions| {
                        counted.connections.fetch_add(1, Ordering::Relaxed);
                        remember_client_certificate(connection, extensions);
                    })
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
    upgrade_delay: Duration,
    address: OnceLock<SocketAddr>,
    grants: Mutex<Vec<Grant>>,
    connections: AtomicUsize,
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
