//! Starting kubegate: the actors, then the HTTP server, in one place.
//!
//! Middleware order (outermost first, as wrapped in [`Gateway::bind`]): `front`, which
//! gives every request its id (so that every response, errors included, carries
//! `X-Request-Id`), refuses oversized headers, counts and logs every response, and
//! serves proxy requests that carry a bearer token (they need no session); the session
//! cookie's Secure flag and the session itself; `session_proxy`, which serves the proxy
//! requests of browsers (the session cookie); the per-client rate limit of login and
//! token paths ([`limits`], which the proxy route asks itself); then the router for
//! everything else. Authentication, authorization
//! and audit happen in the gate ([`crate::gate::Gate::admit`]), which the proxy route,
//! every REST handler and login call.
//!
//! This is the top of the house: it builds each capability's state (the gate's, the
//! proxy's, each API resource's, login's, health's) and hands each to the App, so that
//! no module reaches into another's. Nothing but the commands imports it.

pub mod console;
pub mod front;
pub mod health;
pub mod limits;
pub mod openapi;
pub mod scheduling;
pub mod services;
pub mod tls;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{ServerHandle, Service as _};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use kubegate_actors::auditor::Flush;
use kubegate_actors::policy::PolicyError;
use tokio::sync::Notify;

use crate::api::clusters::ClusterApi;
use crate::api::members::Members;
use crate::api::tokens::Tokens;
use crate::config::{Config, ConfigError};
use crate::gate::{Gate, GateParts};
use crate::login::LoginState;
use crate::proxy::upstream::ClientSettings;
use crate::proxy::Upstreams;
use front::HeaderLimit;
use health::Health;
use services::{kubeconfig_rules, Services};

/// How much of a streamed answer an HTTP/1.1 connection gathers before writing it to the
/// client (actix-http's default is 32 KiB): a large list leaves in a quarter of the
/// writes, each waking the client once. Against bench-peers' fake API server, kubegate
/// alone, a 1 MiB list at 32 connections: 1,081-1,094 req/s at 831-835 us of CPU each
/// with 32 KiB, 1,206-1,224 at 750-771 with 128 KiB (256 KiB gave no more). The buffer
/// is given back while a body waits (`vendor/actix-http`).
const H1_WRITE_BUFFER: usize = 128 * 1024;

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

/// The routes: those of the table in [`openapi`] (each one registered from the
/// description the OpenAPI document is built from), then the Kubernetes-style 404 for
/// any other path.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // request bodies up to 1 MiB (a cluster's kubeconfig)
    cfg.app_data(web::PayloadConfig::new(1 << 20))
        .configure(openapi::routes)
        // The proxy route, ANY /pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy/...,
        // is served by the `front` middleware, before this router.
        .default_service(web::to(front::not_found));
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
    shutdown: Shutdown,
}

/// Stops a [`Gateway`]: gracefully, with `server.shutdown_grace` as written (actix-web's
/// own timeout counts whole seconds only), or at once.
#[derive(Clone)]
pub struct Shutdown {
    handle: ServerHandle,
    grace: Duration,
    begun: Arc<Notify>,
    cut: Arc<Notify>,
}

impl Shutdown {
    /// Stops accepting connections; requests in flight get up to the grace, then are cut.
    /// Returns when the server has stopped.
    pub async fn graceful(&self) {
        self.begun.notify_one();
        self.handle.stop(true).await;
    }

    /// Cuts every request in flight now (a second signal).
    pub fn now(&self) {
        self.cut.notify_one();
    }

    /// The grace in force.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

impl Gateway {
    /// Starts the actors and serves on `listeners`.
    pub async fn bind(config: &Config, listeners: Listeners) -> Result<Gateway, StartError> {
        let certificate = match &listeners.https {
            Some(_) => {
                let server = &config.server;
                if server.tls_self_signed {
                    tls::ensure_self_signed(&server.tls_cert_file, &server.tls_key_file)?;
                }
                Some(tls::ReloadingCert::load(
                    &server.tls_cert_file,
                    &server.tls_key_file,
                )?)
            }
            None => None,
        };
        let tls = certificate
            .clone()
            .map(|cert| tls::server_config(cert, config.server.http2))
            .transpose()?;
        let services = Services::start(config).await?;
        let pending_audits = crate::metrics::PendingAudits::default();
        let gate = web::Data::new(Gate::new(GateParts {
            tokens: services.tokens.clone(),
            revocations: services.revocations.clone(),
            policy: services.policy.clone().recipient(),
            policy_shape: services.policy_shape.clone(),
            decision_timeout: config.policy.decision_timeout,
            global_admins: config.policy.global_admins.clone(),
            auditor: services.audit_trail.clone(),
            audit_counters: services.audit_counters.clone(),
            pending_audits: pending_audits.clone(),
            login_provider: services.login.default_provider.clone(),
        }));
        let upstreams = web::Data::new(Upstreams {
            registry: services.registry.clone(),
            clients: ClientSettings {
                connect_timeout: config.clusters.connect_timeout,
                denied: kubeconfig_rules(config).denied_networks,
                watch_streams_per_connection: config.clusters.watch_streams_per_connection,
            },
            upgrade_timeout: config.clusters.upgrade_timeout,
            rules: kubeconfig_rules(config),
            audit_bodies: config
                .audit
                .request_bodies
                .then_some(config.audit.max_body_bytes),
            impersonation_group_prefix: config.clusters.impersonation_group_prefix.clone(),
            recordings: recording_settings(config),
        });
        if !config.audit.recording_retention.is_zero() {
            let (dir, retention) = (
                config.audit.recordings_dir.clone(),
                config.audit.recording_retention,
            );
            let postgres = upstreams.recordings.postgres.clone();
            // the recordings past their retention go, at start and every hour
            actix_rt::spawn(async move {
                loop {
                    let (d, r) = (dir.clone(), retention);
                    let _ = web::block(move || crate::proxy::tunnel::record::sweep(&d, r)).await;
                    if let Some(postgres) = &postgres {
                        match postgres.sweep(retention).await {
                            Ok(0) => {}
                            Ok(n) => log::info!(
                                "{n} recordings removed from PostgreSQL: older than audit.recording_retention"
                            ),
                            Err(e) => log::warn!("{e}"),
                        }
                    }
                    actix_rt::time::sleep(std::time::Duration::from_secs(3600)).await;
                }
            });
        }
        let clusters = web::Data::new(ClusterApi {
            store: services.stores.clusters.clone(),
            rules: kubeconfig_rules(config),
            registry: services.registry.clone(),
            public_url: config.server.public_url.clone(),
            served_ca: config
                .server
                .tls_self_signed
                .then(|| tls::ca_path(&config.server.tls_cert_file)),
            statuses: Default::default(),
        });
        let members = web::Data::new(Members {
            members: services.stores.members.clone(),
            policy_reload: services.policy.clone().recipient(),
            policy_stats: services.policy.clone().recipient(),
        });
        let policy = web::Data::new(crate::api::policy::PolicyApi {
            policy_reload: services.policy.clone().recipient(),
            fixed: match (config.policy.storage, &config.policy.policy) {
                (crate::config::PolicyStorage::File, None) => Some(
                    "no policy file is configured (policy.policy): the embedded default policy \
                     is in force and a reload has nothing to read; set policy.policy to a file \
                     of yours and restart to change the rules"
                        .into(),
                ),
                _ => None,
            },
            store: services.stores.policy.clone(),
            policy_stats: services.policy.clone().recipient(),
        });
        let tokens = web::Data::new(Tokens {
            tokens: services.tokens.clone(),
            token_store: services.stores.tokens.clone(),
            revocations: services.revocations.clone(),
        });
        let audit_source = web::Data::new(crate::api::audit::AuditSource::of(config));
        let login = web::Data::new(LoginState {
            login: services.login.clone(),
            members: services.stores.members.clone(),
            policy_reload: services.policy.clone().recipient(),
            token_store: services.stores.tokens.clone(),
            kubectl: crate::login::kubectl::KubectlLogins::new(config.auth.kubectl_token_ttl),
        });
        let health = web::Data::new(Health {
            clusters: services.stores.clusters.clone(),
            registry: services.registry.clone(),
            policy_stats: services.policy.clone().recipient(),
            decision_timeout: config.policy.decision_timeout,
            auditor: services.auditor.clone().recipient(),
            audit_counters: services.audit_counters.clone(),
        });
        let header_limit = web::Data::new(HeaderLimit(config.server.max_header_bytes));
        let limit = limits::RateLimit::new(
            config.server.rate_limited_paths.clone(),
            config.server.rate_limit_per_minute,
            config.server.rate_limit_burst,
        )
        .with_trusted_proxies(config.server.trusted_proxies.clone());
        {
            // clients back at a full budget are forgotten every minute
            let limit = limit.clone();
            actix_rt::spawn(async move {
                loop {
                    actix_rt::time::sleep(std::time::Duration::from_secs(60)).await;
                    limit.sweep();
                }
            });
        }
        let sessions = services.sessions.clone();
        let mut server = HttpServer::new(move || {
            // the last wrapped is the outermost: `front` (every answer, a 429 or a 431
            // included, has its request id and is logged; bearer proxy requests are
            // served there, without the session), the session cookie's Secure flag on
            // TLS, the session, the proxy route for session cookies, the rate limit, the
            // router
            App::new()
                .app_data(gate.clone())
                .app_data(upstreams.clone())
                .app_data(clusters.clone())
                .app_data(members.clone())
                .app_data(policy.clone())
                .app_data(tokens.clone())
                .app_data(audit_source.clone())
                .app_data(login.clone())
                .app_data(health.clone())
                .app_data(header_limit.clone())
                .app_data(limit.clone())
                .wrap(limit.clone())
                .wrap(from_fn(front::session_proxy))
                .wrap(sessions.middleware())
                .wrap(from_fn(crate::gate::session::secure_over_tls))
                .wrap(from_fn(front::front))
                // outermost: the whole pipeline's future on the heap while a request is
                // handled, so that a connection's task (alive as long as the connection)
                // holds a pointer to it, not the future itself: inline, the state machine
                // of `front` and the proxy handler was ~13 KiB on every connection, 8,000
                // idle watches or not (heaptrack, issue 13)
                .wrap_fn(|req, service| Box::pin(service.call(req)))
                .configure(routes)
        })
        // a backstop: the grace as written is kept by Gateway::run (see Shutdown); this
        // one counts whole seconds only
        .shutdown_timeout(grace_backstop(config.server.shutdown_grace))
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
        .h1_allow_half_closed(false)
        .h1_write_buffer_size(H1_WRITE_BUFFER);
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
        let server = server.run();
        let shutdown = Shutdown {
            handle: server.handle(),
            grace: config.server.shutdown_grace,
            begun: Arc::new(Notify::new()),
            cut: Arc::new(Notify::new()),
        };
        Ok(Gateway {
            server,
            services,
            pending_audits,
            shutdown,
        })
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// What stops the server with the grace as written (the binary uses it on SIGTERM
    /// and SIGINT).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until stopped through [`Gateway::shutdown`] or [`Gateway::handle`], then
    /// writes every queued audit event.
    pub async fn run(self) -> std::io::Result<()> {
        let Gateway {
            mut server,
            services,
            pending_audits,
            shutdown,
        } = self;
        let cut = async {
            tokio::select! {
                _ = async {
                    shutdown.begun.notified().await;
                    actix_rt::time::sleep(shutdown.grace).await;
                } => log::warn!(
                    "the grace of {} is over: requests still open are cut",
                    humantime::format_duration(shutdown.grace)
                ),
                _ = shutdown.cut.notified() => log::warn!("requests still open are cut"),
            }
        };
        let served = tokio::select! {
            served = &mut server => served,
            _ = cut => {
                // dropping a stopping server stops its workers at once, dropping their
                // connections (actix-server's documented drop behaviour)
                drop(server);
                Ok(())
            }
        };
        // streams cut at the end of the grace are dropped as their workers stop, and only
        // then submit their audit events: wait for them (their submission is counted
        // before their context goes, so no event falls between this and the drain)
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pending_audits.count() > 0 && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let unfinished = pending_audits.count();
        if unfinished > 0 {
            log::error!("{unfinished} requests had not ended 5 s after the server stopped; their audit events are lost");
        }
        let left = crate::gate::audit::drain_workers(Duration::from_secs(5)).await;
        if left > 0 {
            log::error!("{left} audit events were not handed over by the workers at shutdown");
        }
        match services.auditor.send(Flush).await {
            Ok(Ok(n)) => log::info!("audit flushed ({n} events) at shutdown"),
            Ok(Err(e)) => log::error!("audit flush at shutdown failed: {e}"),
            Err(e) => log::error!("audit flush at shutdown failed: {e}"),
        }
        served
    }
}

/// actix-web's own shutdown timeout, in whole seconds: past the grace as written, which
/// [`Gateway::run`] keeps, so that it never cuts first.
fn grace_backstop(grace: Duration) -> u64 {
    grace.as_secs() + 1
}

/// Where session recordings go (`[audit]`).
pub fn recording_settings(config: &Config) -> crate::proxy::tunnel::record::RecordingSettings {
    crate::proxy::tunnel::record::RecordingSettings {
        dir: config.audit.recordings_dir.clone(),
        max_bytes: config.audit.recording_max_bytes,
        stdin: config.audit.record_stdin,
        postgres: config
            .audit
            .postgres_url
            .as_deref()
            .filter(|_| {
                config
                    .audit
                    .sinks
                    .contains(&crate::config::AuditSinkKind::Postgres)
            })
            .map(|url| std::sync::Arc::new(kubegate_actors::store::PostgresRecordings::new(url))),
    }
}
