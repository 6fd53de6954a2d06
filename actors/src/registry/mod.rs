//! The ClusterRegistry actor: one proxy instance per cluster, built on first use from the
//! kubeconfig in the store, dropped when the cluster goes or its credentials change.
//!
//! Here: the messages and the actor. Beside it: `cluster.rs` (the [`ClusterProxy`] it
//! hands out) and `credential_plugin.rs` (running a kubeconfig's exec credential plugin).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::kubeconfig::{self, KubeconfigError, KubeconfigRules, UpstreamAuth};
use crate::store::{ClusterStore, StoreError};
use crate::ClusterKey;

mod cluster;
mod credential_plugin;
#[cfg(test)]
mod tests;

pub use cluster::ClusterProxy;
pub use credential_plugin::CredentialPluginError;

/// How long an exec credential plugin may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long building a cluster's proxy instance may take unless
/// [`ClusterRegistry::with_build_timeout`] says otherwise: the store read, the
/// kubeconfig's credential plugin and the TLS set-up together. Longer than the plugin's
/// own limit (30 s), so that a slow plugin is still reported as such.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(EXEC_TIMEOUT.as_secs() + 15);

/// Why a proxy instance could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The org has no such cluster.
    #[error("{0} not found")]
    NotFound(ClusterKey),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The exec credential plugin failed.
    #[error("the credentials of {key} could not be had: {source}")]
    Credentials {
        /// The cluster.
        key: ClusterKey,
        /// What the plugin did wrong.
        #[source]
        source: CredentialPluginError,
    },
    /// The stored kubeconfig is not usable.
    #[error("the kubeconfig of {key} is not usable: {source}")]
    Kubeconfig {
        /// The cluster.
        key: ClusterKey,
        /// What is wrong.
        #[source]
        source: KubeconfigError,
    },
    /// Building the instance took longer than the registry's build timeout (a store
    /// read or a credential plugin that hangs). Every request waiting on that build
    /// gets this error; the next one starts a new build.
    #[error(
        "building the proxy for {key} did not finish within {}",
        humantime::format_duration(*.after)
    )]
    Timeout {
        /// The cluster.
        key: ClusterKey,
        /// The build timeout.
        after: Duration,
    },
}

/// Sent by HTTP workers: the live proxy instance of a cluster, if one is built.
#[derive(Message)]
#[rtype(result = "Option<Arc<ClusterProxy>>")]
pub struct Get(pub ClusterKey);

/// Sent by HTTP workers when [`Get`] found nothing: build the instance from the store.
/// Idempotent: concurrent requests for one cluster cause one store read. A build that
/// takes longer than the registry's build timeout fails with [`RegistryError::Timeout`].
#[derive(Message)]
#[rtype(result = "Result<Arc<ClusterProxy>, RegistryError>")]
pub struct Create(pub ClusterKey);

/// Sent when a cluster is deleted or its kubeconfig changes: drop the instance.
/// Answers whether there was one.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Evict(pub ClusterKey);

/// Sent by the metrics and debug endpoints: how many instances are live.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveCount;

type Waiter = oneshot::Sender<Result<Arc<ClusterProxy>, RegistryError>>;

/// Owns the proxy instances. Runs on its own arbiter; store reads never block workers.
pub struct ClusterRegistry {
    store: Arc<dyn ClusterStore>,
    rules: KubeconfigRules,
    proxies: HashMap<ClusterKey, Arc<ClusterProxy>>,
    building: HashMap<ClusterKey, Vec<Waiter>>,
    /// Clusters evicted while their instance was being built: the build read what is
    /// now stale, so it is handed to its waiters once but not kept.
    stale_builds: HashSet<ClusterKey>,
    next_generation: u64,
    idle_timeout: Option<Duration>,
    build_timeout: Option<Duration>,
}

impl ClusterRegistry {
    /// A registry reading kubeconfigs from `store` and checking them with `rules`.
    pub fn new(store: Arc<dyn ClusterStore>, rules: KubeconfigRules) -> Self {
        ClusterRegistry {
            store,
            rules,
            proxies: HashMap::new(),
            building: HashMap::new(),
            stale_builds: HashSet::new(),
            next_generation: 1,
            idle_timeout: None,
            build_timeout: Some(DEFAULT_BUILD_TIMEOUT),
        }
    }

    /// Evicts instances unused for `timeout`; they are rebuilt on demand.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Gives up a build that takes longer than `timeout` ([`DEFAULT_BUILD_TIMEOUT`]
    /// unless set; zero: never): its waiters get [`RegistryError::Timeout`] and the next
    /// [`Create`] starts a new build.
    pub fn with_build_timeout(mut self, timeout: Duration) -> Self {
        self.build_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    fn evict_idle(&mut self, timeout: Duration) {
        let limit = timeout.as_millis() as u64;
        let idle: Vec<ClusterKey> = self
            .proxies
            .iter()
            .filter(|(_, p)| p.idle_ms() >= limit)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            if let Some(proxy) = self.proxies.remove(&key) {
                proxy.mark_evicted();
                log::info!("evicted idle proxy for {key}");
            }
        }
    }

    fn finish(&mut self, key: ClusterKey, result: Result<Arc<ClusterProxy>, RegistryError>) {
        // whatever the outcome, an eviction during this build concerns this build only
        let stale = self.stale_builds.remove(&key);
        if let Ok(proxy) = &result {
            if stale {
                proxy.mark_evicted();
            } else {
                self.proxies.insert(key, proxy.clone());
            }
        }
        for waiter in self.building.remove(&key).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }
}

impl Actor for ClusterRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        if let Some(timeout) = self.idle_timeout {
            let every = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
            ctx.run_interval(every, move |act, _| act.evict_idle(timeout));
        }
    }
}

impl Handler<Get> for ClusterRegistry {
    type Result = Option<Arc<ClusterProxy>>;

    fn handle(&mut self, msg: Get, _: &mut Self::Context) -> Self::Result {
        self.proxies.get(&msg.0).cloned()
    }
}

impl Handler<Create> for ClusterRegistry {
    type Result = ResponseFuture<Result<Arc<ClusterProxy>, RegistryError>>;

    fn handle(&mut self, Create(key): Create, ctx: &mut Self::Context) -> Self::Result {
        if let Some(proxy) = self.proxies.get(&key) {
            if proxy.is_usable() {
                let proxy = proxy.clone();
                return Box::pin(async move { Ok(proxy) });
            }
            // its exec credential expired: build a new instance
            proxy.mark_evicted();
            self.proxies.remove(&key);
        }
        let (tx, rx) = oneshot::channel();
        let first = !self.building.contains_key(&key);
        self.building.entry(key).or_default().push(tx);
        if first {
            let store = self.store.clone();
            let rules = self.rules.clone();
            let generation = self.next_generation;
            self.next_generation += 1;
            let build = async move {
                let record = store
                    .get(key.org, key.cluster)
                    .await?
                    .ok_or(RegistryError::NotFound(key))?;
                let invalid = |source| RegistryError::Kubeconfig { key, source };
                let mut spec =
                    kubeconfig::parse(&record.kubeconfig, record.context.as_deref(), &rules)
                        .map_err(invalid)?;
                let mut expires_at = None;
                if let UpstreamAuth::Exec(plugin) = &spec.auth {
                    let credential = credential_plugin::run(plugin, EXEC_TIMEOUT)
                        .await
                        .map_err(|source| RegistryError::Credentials { key, source })?;
                    expires_at = credential.expires_at;
                    spec.auth = credential
                        .token
                        .map_or(UpstreamAuth::None, UpstreamAuth::Bearer);
                    if credential.client_cert.is_some() {
                        spec.client_cert = credential.client_cert;
                    }
                }
                let proxy = ClusterProxy::build(key, record.name, &spec, generation)
                    .map_err(invalid)?
                    .impersonating(record.impersonate)
                    .recording(record.record_sessions)
                    .with_expiry(expires_at);
                if spec.insecure_skip_tls_verify {
                    log::warn!(
                        "{key} ({}): insecure-skip-tls-verify is set; the API server's certificate is not checked",
                        proxy.name
                    );
                }
                log::info!(
                    "built proxy for {key} ({}), generation {generation}",
                    proxy.name
                );
                Ok(Arc::new(proxy))
            };
            // The deadline is on the build, not on the callers' wait: when it passes, the
            // build is dropped (a plugin it runs is killed), every waiter gets the error
            // and the entry goes, so the next Create starts afresh.
            let deadline = self.build_timeout;
            let build = async move {
                let Some(after) = deadline else {
                    return build.await;
                };
                tokio::time::timeout(after, build)
                    .await
                    .unwrap_or_else(|_| {
                        let err = RegistryError::Timeout { key, after };
                        log::error!("{err}: given up, the next request starts a new build");
                        Err(err)
                    })
            };
            ctx.spawn(
                build
                    .into_actor(self)
                    .map(move |result, act, _| act.finish(key, result)),
            );
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable("the registry stopped while building".into()).into())
            })
        })
    }
}

impl Handler<Evict> for ClusterRegistry {
    type Result = bool;

    fn handle(&mut self, Evict(key): Evict, _: &mut Self::Context) -> bool {
        if self.building.contains_key(&key) {
            self.stale_builds.insert(key);
        }
        match self.proxies.remove(&key) {
            Some(proxy) => {
                proxy.mark_evicted();
                log::info!("evicted proxy for {key}");
                true
            }
            None => false,
        }
    }
}

impl Handler<LiveCount> for ClusterRegistry {
    type Result = usize;

    fn handle(&mut self, _: LiveCount, _: &mut Self::Context) -> usize {
        self.proxies.len()
    }
}
