//! The stores named in the configuration and the actors, started once for the server
//! (and the stores alone for the CLI).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use kubegate_actors::auditor::PostgresAuditSink;
use kubegate_actors::auditor::{
    AuditCounters, AuditSink, Auditor, Journal, JsonLinesFile, Retention, StdoutSink,
};
use kubegate_actors::kubeconfig::KubeconfigRules;
use kubegate_actors::policy::{PolicyEnforcer, PolicyShape, PolicySources};
use kubegate_actors::postgres_tls::SslMode;
use kubegate_actors::registry::ClusterRegistry;
use kubegate_actors::store::{check_connection, PostgresPolicyStore, StoreError};
use kubegate_actors::store::{
    ClusterStore, FileClusterStore, FileMemberStore, FilePolicyStore, FixedPolicyStore,
    MemberStore, PolicyStore,
};
use kubegate_actors::store::{FileTokenStore, TokenStore};
use kubegate_actors::store::{VaultAuth, VaultClusterStore, VaultSettings};

use super::StartError;
use crate::config::{
    read_secret, AuditSinkKind, Config, ConfigError, PolicyStorage, StoreKind, TokenStoreKind,
    VaultAuthKind, VaultConfig,
};
use crate::gate::audit::AuditTrail;
use crate::gate::revocations::Revocations;
use crate::gate::tokens::{load_signing_key, TokenAuthority};

/// With the `postgres` audit sink, connects to `audit.postgres_url` once. A connection
/// string that cannot work (its `sslmode` or `sslrootcert`, or a server certificate
/// they refuse) is an error: waiting would not cure it. A server that does not answer
/// is not: the sink queues and spills its events until it does (logged here). Returns
/// what was found, for `check-config`.
pub async fn check_audit_database(config: &Config) -> Result<Option<String>, ConfigError> {
    let url = match &config.audit.postgres_url {
        Some(url) if config.audit.sinks.contains(&AuditSinkKind::Postgres) => url,
        _ => return Ok(None),
    };
    match check_connection(url).await {
        Ok(mode) => Ok(Some(format!("audit: PostgreSQL reached (sslmode={mode})"))),
        Err(StoreError::Misconfigured(e)) => {
            Err(ConfigError::Invalid(format!("audit.postgres_url: {e}")))
        }
        Err(e) => {
            log::warn!("audit.postgres_url: {e}; the sink keeps events until it answers");
            Ok(Some(format!("audit: PostgreSQL not reached yet: {e}")))
        }
    }
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
    /// With `policy.storage = "postgres"`: the `sslmode` it was reached with.
    pub policy_ssl_mode: Option<SslMode>,
}

impl Stores {
    /// Opens the stores of `config`. With Vault, logs in (a Vault that is down is not an
    /// error here: requests that need it get a 503 until it is back).
    pub async fn open(config: &Config) -> Result<Stores, ConfigError> {
        let vault = match &config.store.vault {
            Some(vault)
                if config.store.kind == StoreKind::Vault
                    || config.auth.token_store == TokenStoreKind::Vault =>
            {
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
        // a Vault kind without [store.vault] is refused by the configuration's check
        let clusters: Arc<dyn ClusterStore> = match (config.store.kind, &vault) {
            (StoreKind::Vault, Some(store)) => store.clone(),
            (StoreKind::Vault, None) | (StoreKind::File, _) => {
                Arc::new(FileClusterStore::new(&config.store.path))
            }
        };
        let tokens: Arc<dyn TokenStore> = match (config.auth.token_store, &vault) {
            (TokenStoreKind::Vault, Some(store)) => store.clone(),
            (TokenStoreKind::Vault, None) | (TokenStoreKind::File, _) => {
                Arc::new(FileTokenStore::new(&config.store.path))
            }
        };
        let mut policy_ssl_mode = None;
        let (members, policy): (Arc<dyn MemberStore>, Arc<dyn PolicyStore>) =
            match config.policy.storage {
                PolicyStorage::Postgres => {
                    let seed = config.policy.policy_text()?;
                    let url = config.policy.postgres_url.as_deref().unwrap_or_default();
                    let store = PostgresPolicyStore::connect(url, &seed)
                        .await
                        .map_err(|e| ConfigError::Invalid(format!("policy.postgres_url: {e}")))?;
                    policy_ssl_mode = Some(store.ssl_mode());
                    (store.clone(), store)
                }
                PolicyStorage::File => (
                    Arc::new(FileMemberStore::new(&config.store.path)),
                    match &config.policy.policy {
                        Some(file) => Arc::new(FilePolicyStore::new(file)),
                        None => Arc::new(FixedPolicyStore::new(
                            config.policy.describe_policy(),
                            crate::config::DEFAULT_POLICY,
                        )),
                    },
                ),
            };
        Ok(Stores {
            clusters,
            members,
            policy,
            tokens,
            policy_ssl_mode,
        })
    }
}

/// The token store alone (for the CLI), as [`Stores::open`] would open it.
pub async fn open_token_store(config: &Config) -> Result<Arc<dyn TokenStore>, ConfigError> {
    match (config.auth.token_store, &config.store.vault) {
        (TokenStoreKind::Vault, Some(vault)) => {
            let store = VaultClusterStore::connect(vault_settings(vault)?)
                .await
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            Ok(store)
        }
        (TokenStoreKind::Vault, None) | (TokenStoreKind::File, _) => {
            Ok(Arc::new(FileTokenStore::new(&config.store.path)))
        }
    }
}

fn vault_settings(vault: &VaultConfig) -> Result<VaultSettings, ConfigError> {
    let auth = match vault.auth {
        VaultAuthKind::AppRole => VaultAuth::AppRole {
            mount: vault.approle_mount.clone(),
            role_id: vault.role_id.clone().unwrap_or_default(),
            secret_id: read_secret(
                vault.secret_id_file.as_deref(),
                "KUBEGATE_VAULT_SECRET_ID",
                "Vault AppRole secret id",
            )?,
        },
        VaultAuthKind::Kubernetes => VaultAuth::Kubernetes {
            mount: vault.kubernetes_mount.clone(),
            role: vault.kubernetes_role.clone().unwrap_or_default(),
            jwt_file: vault.jwt_file.clone(),
        },
        VaultAuthKind::Token => VaultAuth::Token(read_secret(
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
    /// Where the workers' audit events go: the file first (when it is a sink), then the
    /// auditor.
    pub audit_trail: AuditTrail,
    /// The auditor's figures.
    pub audit_counters: Arc<AuditCounters>,
    /// Tokens.
    pub tokens: Arc<TokenAuthority>,
    /// The stores.
    pub stores: Stores,
    /// Revoked token and session ids, kept up to date from the token store.
    pub revocations: Arc<Revocations>,
    /// Browser login.
    pub login: Arc<crate::login::Login>,
    /// Browser sessions.
    pub sessions: crate::gate::session::Sessions,
    _arbiters: Vec<Arbiter>,
}

impl Services {
    /// Starts every actor on its own arbiter (thread), so that store reads, policy
    /// decisions and audit writes never run on an HTTP worker.
    pub async fn start(config: &Config) -> Result<Services, StartError> {
        let key = load_signing_key(&config.auth)?;
        let tokens = Arc::new(TokenAuthority::new(&config.auth, &key));
        let stores = Stores::open(config).await?;
        check_audit_database(config).await?;
        let login = crate::login::build(config).map_err(|e| match e {
            crate::login::SetupError::Secret(e) => e,
            other => ConfigError::Invalid(other.to_string()),
        })?;
        let sessions = crate::gate::session::Sessions::open(&config.sessions, &key)
            .await
            .map_err(ConfigError::Invalid)?;
        let revocations = Arc::new(Revocations::default());
        match stores.tokens.revoked().await {
            Ok(revoked) => revocations.replace(revoked.into_keys()),
            Err(e) => log::error!("revocations not read at start (will retry): {e}"),
        }
        if let Some(arbiter) = actix_rt::Arbiter::try_current() {
            arbiter.spawn(crate::gate::revocations::poll(
                stores.tokens.clone(),
                Arc::downgrade(&revocations),
                config.auth.revocation_poll,
            ));
        }
        let enforcer = PolicyEnforcer::load(
            PolicySources {
                model: config.policy.model_source(),
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
            let mut file = None;
            for sink in &audit.sinks {
                match sink {
                    AuditSinkKind::Stdout => sinks.push(Box::new(StdoutSink)),
                    AuditSinkKind::Postgres => sinks.push(Box::new(PostgresAuditSink::start(
                        audit.postgres_url.as_deref().unwrap_or_default(),
                        Duration::from_secs(5),
                    ))),
                    AuditSinkKind::File => {
                        file = Some(JsonLinesFile::new(&audit.file).with_rotation(
                            audit.max_file_bytes,
                            Retention {
                                keep_files: audit.keep_files,
                                max_age: audit.max_age,
                            },
                        ))
                    }
                }
            }
            let others = !sinks.is_empty();
            let mut auditor = Auditor::with_sinks(sinks, audit.batch, audit.flush_interval)
                .with_denial_limit(audit.denials_per_client, audit.denial_window);
            // the file is written by the workers themselves, before they answer
            let journal = file.map(|file| {
                Arc::new(
                    Journal::new(file, auditor.counters())
                        .with_denial_limit(audit.denials_per_client, audit.denial_window),
                )
            });
            if let Some(journal) = &journal {
                auditor = auditor.with_journal(journal.clone());
            }
            let auditor = auditor.with_spill(audit.spill_dir.clone(), audit.max_queue);
            let _ = auditor_built.0.send((auditor.counters(), journal, others));
            auditor
        });
        let (audit_counters, journal, others) = auditor_built
            .1
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| StartError::Io(std::io::Error::other("the auditor did not start")))?;
        let mut audit_trail = AuditTrail::new(auditor.clone().recipient());
        if let Some(journal) = journal {
            audit_trail = audit_trail.with_journal(journal, others);
        }
        Ok(Services {
            registry,
            policy,
            policy_shape,
            auditor,
            audit_trail,
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
