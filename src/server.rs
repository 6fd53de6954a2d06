//! Starting kubegate: the actors, then the HTTP server, in one place.
//!
//! Middleware order (outermost first, as wrapped in [`Gateway::bind`]): the session
//! cookie's Secure flag and the session itself (so that the proxy route sees it);
//! `front`, which gives every request its id (so that every response, errors included,
//! carries `X-Request-Id`), refuses oversized headers, counts and logs every response,
//! and serves the proxy route; the per-client rate limit of login and token paths
//! ([`crate::limits`]); then the router for everything else. Authentication,
//! authorization and audit of the proxy route happen inside its handler, in the order
//! written in [`crate::proxy`].

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, Recipient};
use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer};
use kubegate_actors::auditor::PostgresAuditSink;
use kubegate_actors::auditor::{
    AuditCounters, AuditSink, Auditor, Flush, JsonLinesFile, RecordBatch, StdoutSink,
};
use kubegate_actors::kubeconfig::KubeconfigRules;
use kubegate_actors::policy::{
    Authorize, PolicyEnforcer, PolicyError, PolicyShape, PolicySources, Reload, Stats,
};
use kubegate_actors::registry::{ClusterRegistry, LiveCount};
use kubegate_actors::store::PostgresPolicyStore;
use kubegate_actors::store::{
    ClusterStore, FileClusterStore, FileMemberStore, FilePolicyStore, MemberStore, PolicyStore,
};
use kubegate_actors::store::{FileTokenStore, TokenStore};
use kubegate_actors::store::{VaultAuth, VaultClusterStore, VaultSettings};

use crate::auth::{load_signing_key, TokenAuthority};
use crate::config::{read_secret, Config, ConfigError, VaultConfig};
use crate::status::StatusError;

/// Why kubegate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The policy does not load.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The listener could not be used.
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
}

/// The request id of a request, set by the outermost middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// What every handler shares.
pub struct AppState {
    /// The cluster registry.
    pub registry: Addr<ClusterRegistry>,
    /// The policy enforcer.
    pub policy: Recipient<Authorize>,
    /// The policy enforcer, for its figures.
    pub policy_stats: Recipient<Stats>,
    /// What workers keeping the enforcer's answers must know of the policy in force.
    pub policy_shape: Arc<PolicyShape>,
    /// The policy enforcer, to reload.
    pub policy_reload: Recipient<Reload>,
    /// Memberships.
    pub members: Arc<dyn MemberStore>,
    /// Subjects allowed everything.
    pub global_admins: Vec<String>,
    /// The auditor's figures (queue depth, spills, failing sinks).
    pub audit_counters: Arc<AuditCounters>,
    /// Where the audit query API reads from.
    pub audit_source: crate::audit_api::AuditSource,
    /// Record the bodies of writes up to this many bytes (`None`: never).
    pub audit_bodies: Option<usize>,
    /// The auditor.
    pub auditor: Recipient<RecordBatch>,
    /// Verifies bearer tokens.
    pub tokens: Arc<TokenAuthority>,
    /// Token records and revocations.
    pub token_store: Arc<dyn TokenStore>,
    /// Revoked token and session ids.
    pub revocations: Arc<crate::tokens::Revocations>,
    /// Browser login.
    pub login: Arc<crate::login::Login>,
    /// How long to wait for a policy decision.
    pub decision_timeout: Duration,
    /// How long to wait for a connection to an API server.
    pub connect_timeout: Duration,
    /// The cluster store.
    pub clusters: Arc<dyn ClusterStore>,
    /// Rules every kubeconfig must follow.
    pub rules: KubeconfigRules,
    /// The URL clients reach kubegate at, for generated kubeconfigs.
    pub public_url: Option<String>,
    /// The CA of the self-signed serving certificate, for generated kubeconfigs.
    pub served_ca: Option<std::path::PathBuf>,
    /// Requests with larger headers are refused (431).
    pub max_header_bytes: usize,
    /// Requests whose audit event is not submitted yet (shutdown waits for them).
    pub pending_audits: crate::metrics::PendingAudits,
}

/// The stores named in the configuration.
pub struct Stores {
    /// Clusters.
    pub clusters: Arc<dyn ClusterStore>,
    /// Memberships.
    pub members: Arc<dyn MemberStore>,
    /// Policy lines.
    pub policy: Arc<dyn PolicyStore>,
    /// Token records and revocations.
    pub tokens: Arc<dyn TokenStore>,
}

impl Stores {
    /// Opens the stores of `config`. With Vault, logs in (a Vault that is down is not an
    /// error here: requests that need it get a 503 until it is back).
    pub async fn open(config: &Config) -> Result<Stores, ConfigError> {
        let vault = match &config.store.vault {
            Some(vault) if config.store.kind == "vault" || config.auth.token_store == "vault" => {
                let store = VaultClusterStore::connect(vault_settings(vault)?)
                    .await
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                if let Some(arbiter) = actix_rt::Arbiter::try_current() {
                    arbiter.spawn(store.clone().keep_alive());
                }
                Some(store)
            }
            _ => None,
        };
        let clusters: Arc<dyn ClusterStore> = match &vault {
            Some(store) if config.store.kind == "vault" => store.clone(),
            _ => Arc::new(FileClusterStore::new(&config.store.path)),
        };
        let tokens: Arc<dyn TokenStore> = match &vault {
            Some(store) if config.auth.token_store == "vault" => store.clone(),
            _ => Arc::new(FileTokenStore::new(&config.store.path)),
        };
        let (members, policy): (Arc<dyn MemberStore>, Arc<dyn PolicyStore>) =
            match config.policy.storage.as_str() {
                "postgres" => {
                    let seed = std::fs::read_to_string(&config.policy.policy).map_err(|e| {
                        ConfigError::Invalid(format!(
                            "cannot read the policy {}: {e}",
                            config.policy.policy.display()
                        ))
                    })?;
                    let url = config.policy.postgres_url.as_deref().unwrap_or_default();
                    let store = PostgresPolicyStore::connect(url, &seed)
                        .await
                        .map_err(|e| ConfigError::Invalid(format!("policy.postgres_url: {e}")))?;
                    (store.clone(), store)
                }
                _ => (
                    Arc::new(FileMemberStore::new(&config.store.path)),
                    Arc::new(FilePolicyStore::new(&config.policy.policy)),
                ),
            };
        Ok(Stores {
            clusters,
            members,
            policy,
            tokens,
        })
    }
}

/// The token store alone (for the CLI), as [`Stores::open`] would open it.
pub async fn open_token_store(config: &Config) -> Result<Arc<dyn TokenStore>, ConfigError> {
    match &config.store.vault {
        Some(vault) if config.auth.token_store == "vault" => {
            let store = VaultClusterStore::connect(vault_settings(vault)?)
                .await
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            Ok(store)
        }
        _ => Ok(Arc::new(FileTokenStore::new(&config.store.path))),
    }
}

fn vault_settings(vault: &VaultConfig) -> Result<VaultSettings, ConfigError> {
    let auth = match vault.auth.as_str() {
        "approle" => VaultAuth::AppRole {
            mount: vault.approle_mount.clone(),
            role_id: vault.role_id.clone().unwrap_or_default(),
            secret_id: read_secret(
                vault.secret_id_file.as_deref(),
                "KUBEGATE_VAULT_SECRET_ID",
                "Vault AppRole secret id",
            )?,
        },
        "kubernetes" => VaultAuth::Kubernetes {
            mount: vault.kubernetes_mount.clone(),
            role: vault.kubernetes_role.clone().unwrap_or_default(),
            jwt_file: vault.jwt_file.clone(),
        },
        _ => VaultAuth::Token(read_secret(
            vault.token_file.as_deref(),
            "VAULT_TOKEN",
            "Vault token",
        )?),
    };
    Ok(VaultSettings {
        address: vault.address.clone(),
        mount: vault.mount.clone(),
        prefix: vault.prefix.clone(),
        auth,
        timeout: vault.timeout,
    })
}

/// The kubeconfig rules of `config`.
pub fn kubeconfig_rules(config: &Config) -> KubeconfigRules {
    KubeconfigRules {
        allow_insecure_http: config.clusters.allow_insecure_http,
        denied_networks: Arc::new(config.clusters.denied_networks.clone()),
        allowed_exec: Arc::new(config.clusters.allowed_exec_plugins.clone()),
    }
}

/// The running actors.
pub struct Services {
    /// The cluster registry.
    pub registry: Addr<ClusterRegistry>,
    /// The policy enforcer.
    pub policy: Addr<PolicyEnforcer>,
    /// The policy enforcer's generation and shape.
    pub policy_shape: Arc<PolicyShape>,
    /// The auditor.
    pub auditor: Addr<Auditor>,
    /// The auditor's figures.
    pub audit_counters: Arc<AuditCounters>,
    /// Tokens.
    pub tokens: Arc<TokenAuthority>,
    /// The stores.
    pub stores: Stores,
    /// Revoked token and session ids, kept up to date from the token store.
    pub revocations: Arc<crate::tokens::Revocations>,
    /// Browser login.
    pub login: Arc<crate::login::Login>,
    /// Browser sessions.
    pub sessions: crate::session::Sessions,
    _arbiters: Vec<Arbiter>,
}

impl Services {
    /// Starts every actor on its own arbiter (thread), so that store reads, policy
    /// decisions and audit writes never run on an HTTP worker.
    pub async fn start(config: &Config) -> Result<Services, StartError> {
        let key = load_signing_key(&config.auth)?;
        let tokens = Arc::new(TokenAuthority::new(&config.auth, &key));
        let stores = Stores::open(config).await?;
        let login = crate::login::build(config).map_err(ConfigError::Invalid)?;
        let sessions = crate::session::Sessions::open(&config.sessions, &key)
            .await
            .map_err(ConfigError::Invalid)?;
        let revocations = Arc::new(crate::tokens::Revocations::default());
        match stores.tokens.revoked().await {
            Ok(revoked) => revocations.replace(revoked.into_keys()),
            Err(e) => log::error!("revocations not read at start (will retry): {e}"),
        }
        if let Some(arbiter) = actix_rt::Arbiter::try_current() {
            arbiter.spawn(crate::tokens::poll(
                stores.tokens.clone(),
                Arc::downgrade(&revocations),
                config.auth.revocation_poll,
            ));
        }
        let enforcer = PolicyEnforcer::load(
            PolicySources {
                model: config.policy.model.clone(),
                policy: stores.policy.clone(),
                members: stores.members.clone(),
                global_admins: config.policy.global_admins.clone(),
            },
            config.policy.member_poll,
        )
        .await?;
        let (registry_arbiter, policy_arbiter, audit_arbiter) =
            (Arbiter::new(), Arbiter::new(), Arbiter::new());
        let rules = kubeconfig_rules(config);
        let clusters = stores.clusters.clone();
        let idle = config.clusters.idle_timeout;
        let registry = ClusterRegistry::start_in_arbiter(&registry_arbiter.handle(), move |_| {
            ClusterRegistry::new(clusters, rules).with_idle_timeout(idle)
        });
        let policy_shape = enforcer.shape();
        let policy = PolicyEnforcer::start_in_arbiter(&policy_arbiter.handle(), move |_| enforcer);
        let audit = config.audit.clone();
        let auditor_built = std::sync::mpsc::channel();
        let auditor = Auditor::start_in_arbiter(&audit_arbiter.handle(), move |_| {
            let mut sinks: Vec<Box<dyn AuditSink>> = Vec::new();
            for name in &audit.sinks {
                match name.as_str() {
                    "stdout" => sinks.push(Box::new(StdoutSink)),
                    "postgres" => sinks.push(Box::new(PostgresAuditSink::start(
                        audit.postgres_url.as_deref().unwrap_or_default(),
                        Duration::from_secs(5),
                    ))),
                    _ => sinks.push(Box::new(
                        JsonLinesFile::new(&audit.file)
                            .with_rotation(audit.max_file_bytes, audit.keep_files),
                    )),
                }
            }
            let auditor = Auditor::with_sinks(sinks, audit.batch, audit.flush_interval)
                .with_spill(audit.spill_dir.clone(), audit.max_queue)
                .with_denial_limit(audit.denials_per_client, audit.denial_window);
            let _ = auditor_built.0.send(auditor.counters());
            auditor
        });
        let audit_counters = auditor_built
            .1
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| StartError::Io(std::io::Error::other("the auditor did not start")))?;
        Ok(Services {
            registry,
            policy,
            policy_shape,
            auditor,
            audit_counters,
            tokens,
            stores,
            revocations,
            login,
            sessions,
            _arbiters: vec![registry_arbiter, policy_arbiter, audit_arbiter],
        })
    }
}

/// A new request id: 32 hex digits, a random prefix drawn once per process (so that
/// replicas do not collide) and a counter (no random draw per request).
fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{n:016x}")
}

/// Whether `path` is a proxy path: `/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy...`.
fn is_proxy_path(path: &str) -> bool {
    path.starts_with(crate::path::PREFIX)
        && path
            .split('/')
            .nth(8)
            .is_some_and(|segment| segment.starts_with("proxy"))
}

/// The size of a request's headers, names and values.
fn header_bytes(req: &ServiceRequest) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The front of every request: gives it its request id (echoed as `X-Request-Id`),
/// refuses oversized headers (431), hands proxy requests to the proxy handler before the
/// router, whose patterns would only cost regex matching (the proxy handler parses and
/// checks its path itself), counts the response and writes its access log line.
async fn front(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let _in_flight = crate::metrics::InFlight::start();
    let id = next_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    // taken before the request is handed on (it is moved), and only when it is logged
    let log = log::log_enabled!(target: "kubegate::access", log::Level::Info)
        .then(|| AccessLog::of(&req));
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let limit = state
        .as_ref()
        .map_or(usize::MAX, |state| state.max_header_bytes);
    let mut response = if header_bytes(&req) > limit {
        let error = StatusError::headers_too_large(format!(
            "the request headers are larger than {limit} bytes"
        ));
        req.into_response(error.response()).map_into_right_body()
    } else {
        match state {
            Some(state) if is_proxy_path(req.path()) => {
                let (http, mut payload) = req.into_parts();
                let payload =
                    <web::Payload as actix_web::FromRequest>::from_request(&http, &mut payload)
                        .await?;
                let answer = crate::proxy::handle(http.clone(), payload, state).await;
                ServiceResponse::new(http, answer).map_into_right_body()
            }
            _ => next.call(req).await?.map_into_left_body(),
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-request-id"), value);
    }
    let status = response.status().as_u16();
    crate::metrics::http_request(status);
    if let Some(log) = log {
        log.write(&id, status, started.elapsed(), response.request());
    }
    Ok(response)
}

/// What the access log says of a request, taken before it is handled.
struct AccessLog {
    method: actix_web::http::Method,
    path: String,
    query: String,
    peer: Option<std::net::IpAddr>,
}

impl AccessLog {
    fn of(req: &ServiceRequest) -> AccessLog {
        AccessLog {
            method: req.method().clone(),
            path: req.path().to_string(),
            query: crate::audit::mask_query(req.query_string()),
            peer: req.peer_addr().map(|a| a.ip()),
        }
    }

    /// One line at level info, target `kubegate::access`: request id, client, method,
    /// path with its query (token-like values masked), status, time to the response's
    /// head, and the authenticated user (`-` when none). Never a header value.
    fn write(&self, id: &str, status: u16, elapsed: Duration, req: &actix_web::HttpRequest) {
        let user = req
            .extensions()
            .get::<crate::server::AuthenticatedUser>()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| "-".to_string());
        let query = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        log::info!(
            target: "kubegate::access",
            "{id} {} {} {}{query} {status} {:.1}ms user={user}",
            self.peer.map(|p| p.to_string()).unwrap_or_else(|| "-".to_string()),
            self.method,
            self.path,
            elapsed.as_secs_f64() * 1000.0,
        );
    }
}

/// Who a request was authenticated as, put in its extensions by authentication, for
/// the access log.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser(pub String);

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    StatusError::not_found(format!(
        "the server could not find the requested resource {}",
        req.path()
    ))
    .response()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Ready when the cluster store answers and the policy enforcer and auditor run.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut problems = Vec::new();
    if let Err(e) = state.clusters.check().await {
        problems.push(format!("store: {e}"));
    }
    if state
        .policy_stats
        .send(Stats)
        .timeout(state.decision_timeout)
        .await
        .is_err()
    {
        problems.push("policy: the policy enforcer does not answer".to_string());
    }
    if !state.auditor.connected() {
        problems.push("audit: the auditor is not running".to_string());
    }
    let failing = state.audit_counters.failing_sinks.load(Ordering::Relaxed);
    if failing > 0 {
        problems.push(format!(
            "audit: {failing} sink(s) failing; {} events queued, {} spilled to disk",
            state.audit_counters.queued.load(Ordering::Relaxed),
            state.audit_counters.spilled.load(Ordering::Relaxed)
        ));
    }
    if problems.is_empty() {
        HttpResponse::Ok().content_type("text/plain").body("ok")
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "problems": problems}))
    }
}

/// Prometheus metrics: the per-request figures of [`crate::metrics`], and those the
/// actors keep (live proxies, audit queues, policy reloads).
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    use crate::metrics::Figure;
    let live = state.registry.send(LiveCount).await.unwrap_or(0);
    let stats = state
        .policy_stats
        .send(Stats)
        .timeout(state.decision_timeout)
        .await
        .ok();
    let audit = &state.audit_counters;
    let mut figures = vec![
        Figure {
            name: "kubegate_cluster_proxies_live",
            help: "Cluster proxy instances the registry holds.",
            kind: "gauge",
            value: live as u64,
        },
        Figure {
            name: "kubegate_audit_queued_events",
            help: "Audit events waiting in memory, over all sinks.",
            kind: "gauge",
            value: audit.queued.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_written_events_total",
            help: "Audit events written, over all sinks.",
            kind: "counter",
            value: audit.written.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_spilled_events_total",
            help: "Audit events spilled to disk because a sink was behind.",
            kind: "counter",
            value: audit.spilled.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_lost_events_total",
            help: "Audit events lost (spill failed too).",
            kind: "counter",
            value: audit.lost.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_failing_sinks",
            help: "Audit sinks failing now.",
            kind: "gauge",
            value: audit.failing_sinks.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_aggregated_denials_total",
            help: "401s counted into summary events instead of recorded one by one.",
            kind: "counter",
            value: audit.aggregated.load(Ordering::Relaxed),
        },
    ];
    if let Some(stats) = stats {
        figures.extend([
            Figure {
                name: "kubegate_policy_rules",
                help: "Policy lines in force.",
                kind: "gauge",
                value: stats.policies as u64,
            },
            Figure {
                name: "kubegate_policy_role_bindings",
                help: "Role bindings (memberships) in force.",
                kind: "gauge",
                value: stats.groupings as u64,
            },
            Figure {
                name: "kubegate_policy_reloads_total",
                help: "Reloads that put a new policy in force (API, or a change seen by polling).",
                kind: "counter",
                value: stats.reloads,
            },
        ]);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render(&figures))
}

/// The routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .configure(crate::api::routes)
        .configure(crate::admin::routes)
        .configure(crate::audit_api::routes)
        .configure(crate::login::routes)
        .configure(crate::tokens::routes)
        // The proxy route, ANY /pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy/...,
        // is served by the `front` middleware, before this router.
        .default_service(web::to(not_found));
}

/// The sockets kubegate serves on; bind them first, so port 0 works.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Plain HTTP.
    pub http: Option<TcpListener>,
    /// HTTPS.
    pub https: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config` (`server.listen`, `server.listen_tls`).
    pub fn bind(config: &Config) -> std::io::Result<Listeners> {
        let bind = |addr: Option<std::net::SocketAddr>| {
            addr.map(|a| {
                TcpListener::bind(a).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}"))
                })
            })
            .transpose()
        };
        Ok(Listeners {
            http: bind(config.server.listen)?,
            https: bind(config.server.listen_tls)?,
        })
    }
}

/// A bound, not yet running kubegate.
pub struct Gateway {
    server: actix_web::dev::Server,
    services: Services,
    pending_audits: crate::metrics::PendingAudits,
}

impl Gateway {
    /// Starts the actors and serves on `listeners`.
    pub async fn bind(config: &Config, listeners: Listeners) -> Result<Gateway, StartError> {
        let certificate = match &listeners.https {
            Some(_) => {
                let server = &config.server;
                if server.tls_self_signed {
                    crate::tls::ensure_self_signed(&server.tls_cert_file, &server.tls_key_file)?;
                }
                Some(crate::tls::ReloadingCert::load(
                    &server.tls_cert_file,
                    &server.tls_key_file,
                )?)
            }
            None => None,
        };
        let tls = certificate
            .clone()
            .map(|cert| crate::tls::server_config(cert, config.server.http2))
            .transpose()?;
        let services = Services::start(config).await?;
        let pending_audits = crate::metrics::PendingAudits::default();
        let state = web::Data::new(AppState {
            registry: services.registry.clone(),
            policy: services.policy.clone().recipient(),
            policy_stats: services.policy.clone().recipient(),
            policy_shape: services.policy_shape.clone(),
            policy_reload: services.policy.clone().recipient(),
            members: services.stores.members.clone(),
            global_admins: config.policy.global_admins.clone(),
            audit_counters: services.audit_counters.clone(),
            audit_source: crate::audit_api::AuditSource::of(config),
            audit_bodies: config
                .audit
                .request_bodies
                .then_some(config.audit.max_body_bytes),
            auditor: services.auditor.clone().recipient(),
            tokens: services.tokens.clone(),
            token_store: services.stores.tokens.clone(),
            revocations: services.revocations.clone(),
            login: services.login.clone(),
            decision_timeout: config.policy.decision_timeout,
            connect_timeout: config.clusters.connect_timeout,
            clusters: services.stores.clusters.clone(),
            rules: kubeconfig_rules(config),
            public_url: config.server.public_url.clone(),
            served_ca: config
                .server
                .tls_self_signed
                .then(|| crate::tls::ca_path(&config.server.tls_cert_file)),
            max_header_bytes: config.server.max_header_bytes,
            pending_audits: pending_audits.clone(),
        });
        let limit = crate::limits::RateLimit::new(
            config.server.rate_limited_paths.clone(),
            config.server.rate_limit_per_minute,
            config.server.rate_limit_burst,
        )
        .with_trusted_proxies(config.server.trusted_proxies.clone());
        let sessions = services.sessions.clone();
        let mut server = HttpServer::new(move || {
            // the last wrapped is the outermost: the session cookie's Secure flag on TLS,
            // the session (so that the proxy route served by `front` sees it), `front`
            // (so that a 429 has its request id and is logged), then the rate limit, then
            // the router
            App::new()
                .app_data(state.clone())
                .wrap(limit.clone())
                .wrap(from_fn(front))
                .wrap(sessions.middleware())
                .wrap(from_fn(crate::session::secure_over_tls))
                .configure(routes)
        })
        .shutdown_timeout(config.server.shutdown_grace.as_secs().max(1))
        // SIGTERM and SIGINT are the binary's to handle (see main.rs): actix-server's own
        // handling stops the actix system soon after the server, racing the audit flush
        .disable_signals()
        // keep-alive is the idle time between requests; a response being streamed (a
        // watch) is never idle, so these do not cut long watches
        .keep_alive(match config.server.keep_alive {
            d if d.is_zero() => actix_web::http::KeepAlive::Disabled,
            d => actix_web::http::KeepAlive::Timeout(d),
        })
        .client_request_timeout(config.server.client_request_timeout)
        // a client that closes its side is gone: without this, a watch it left would
        // hold its upstream connection until the next event fails to be written
        .h1_allow_half_closed(false);
        if let Some(listener) = listeners.http {
            server = server.listen(listener)?;
        }
        if let (Some(listener), Some(tls)) = (listeners.https, tls) {
            server = server.listen_rustls_0_23(listener, tls)?;
        }
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        if let Some(certificate) = certificate {
            actix_rt::spawn(certificate.watch(config.server.tls_reload_interval));
        }
        Ok(Gateway {
            server: server.run(),
            services,
            pending_audits,
        })
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through [`Gateway::handle`] (the binary does it on SIGTERM
    /// and SIGINT), then writes every queued audit event.
    pub async fn run(self) -> std::io::Result<()> {
        let served = self.server.await;
        // streams cut at the end of the grace are dropped as their workers stop, and only
        // then submit their audit events: wait for them (their submission is counted
        // before their context goes, so no event falls between this and the drain)
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.pending_audits.count() > 0 && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let unfinished = self.pending_audits.count();
        if unfinished > 0 {
            log::error!("{unfinished} requests had not ended 5 s after the server stopped; their audit events are lost");
        }
        let left = crate::audit::drain_workers(Duration::from_secs(5)).await;
        if left > 0 {
            log::error!("{left} audit events were not handed over by the workers at shutdown");
        }
        match self.services.auditor.send(Flush).await {
            Ok(Ok(n)) => log::info!("audit flushed ({n} events) at shutdown"),
            Ok(Err(e)) => log::error!("audit flush at shutdown failed: {e}"),
            Err(e) => log::error!("audit flush at shutdown failed: {e}"),
        }
        served
    }
}
