//! The ClusterRegistry actor: one proxy instance per cluster, built on first use from the
//! kubeconfig in the store, dropped when the cluster goes or its credentials change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::kubeconfig::{self, KubeconfigRules, UpstreamAuth};
use crate::store::{ClusterStore, StoreError};
use crate::ClusterKey;

mod cluster;
mod credential_plugin;

pub use cluster::ClusterProxy;

/// How long an exec credential plugin may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

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
    #[error("the credentials of {key} could not be had: {reason}")]
    Credentials {
        /// The cluster.
        key: ClusterKey,
        /// What the plugin did wrong.
        reason: String,
    },
    /// The stored kubeconfig is not usable.
    #[error("the kubeconfig of {key} is not usable: {reason}")]
    Kubeconfig {
        /// The cluster.
        key: ClusterKey,
        /// What is wrong.
        reason: String,
    },
}

/// Sent by HTTP workers: the live proxy instance of a cluster, if one is built.
#[derive(Message)]
#[rtype(result = "Option<Arc<ClusterProxy>>")]
pub struct Get(pub ClusterKey);

/// Sent by HTTP workers when [`Get`] found nothing: build the instance from the store.
/// Idempotent: concurrent requests for one cluster cause one store read.
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
        }
    }

    /// Evicts instances unused for `timeout`; they are rebuilt on demand.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = (!timeout.is_zero()).then_some(timeout);
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
        if let Ok(proxy) = &result {
            if self.stale_builds.remove(&key) {
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
                let invalid = |reason: String| RegistryError::Kubeconfig { key, reason };
                let mut spec =
                    kubeconfig::parse(&record.kubeconfig, record.context.as_deref(), &rules)
                        .map_err(|e| invalid(e.to_string()))?;
                let mut expires_at = None;
                if let UpstreamAuth::Exec(plugin) = &spec.auth {
                    let credential = credential_plugin::run(plugin, EXEC_TIMEOUT)
                        .await
                        .map_err(|reason| RegistryError::Credentials { key, reason })?;
                    expires_at = credential.expires_at;
                    spec.auth = credential
                        .token
                        .map_or(UpstreamAuth::None, UpstreamAuth::Bearer);
                    if credential.client_cert.is_some() {
                        spec.client_cert = credential.client_cert;
                    }
                }
                let proxy = ClusterProxy::build(key, record.name, &spec, generation)
                    .map_err(|e| invalid(e.to_string()))?
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClusterRecord;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store that counts reads and serves one cluster.
    struct CountingStore {
        reads: AtomicUsize,
    }

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: t}\n";

    #[async_trait]
    impl ClusterStore for CountingStore {
        async fn get(&self, org: u64, id: u64) -> Result<Option<ClusterRecord>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok((id == 1).then(|| ClusterRecord {
                org,
                id,
                name: "dev".into(),
                kubeconfig: KUBECONFIG.into(),
                context: None,
                created_at: String::new(),
                updated_at: None,
            }))
        }
        async fn list(&self, _: u64) -> Result<Vec<ClusterRecord>, StoreError> {
            Ok(vec![])
        }
        async fn create(
            &self,
            _: u64,
            _: &str,
            _: &str,
            _: Option<&str>,
        ) -> Result<ClusterRecord, StoreError> {
            Err(StoreError::Unavailable("read only".into()))
        }
        async fn update(
            &self,
            _: u64,
            _: u64,
            _: &str,
            _: Option<&str>,
        ) -> Result<Option<ClusterRecord>, StoreError> {
            Ok(None)
        }
        async fn delete(&self, _: u64, _: u64) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn check(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[actix_rt::test]
    async fn concurrent_creates_read_once_and_evict_marks() {
        let store = Arc::new(CountingStore {
            reads: AtomicUsize::new(0),
        });
        let registry = ClusterRegistry::new(store.clone(), KubeconfigRules::default()).start();
        let key = ClusterKey { org: 1, cluster: 1 };
        let results =
            futures_util::future::join_all((0..50).map(|_| registry.send(Create(key)))).await;
        let proxies: Vec<_> = results.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
        assert!(proxies.iter().all(|p| Arc::ptr_eq(p, &proxies[0])));
        assert_eq!(registry.send(LiveCount).await.unwrap(), 1);
        assert!(registry.send(Evict(key)).await.unwrap());
        assert!(proxies[0].is_evicted());
        assert!(registry.send(Get(key)).await.unwrap().is_none());
        let rebuilt = registry.send(Create(key)).await.unwrap().unwrap();
        assert!(rebuilt.generation > proxies[0].generation);
    }

    #[actix_rt::test]
    async fn idle_instances_are_evicted_and_rebuilt() {
        let store = Arc::new(CountingStore {
            reads: AtomicUsize::new(0),
        });
        let registry = ClusterRegistry::new(store.clone(), KubeconfigRules::default())
            .with_idle_timeout(Duration::from_millis(100))
            .start();
        let key = ClusterKey { org: 1, cluster: 1 };
        let first = registry.send(Create(key)).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(first.is_evicted());
        assert_eq!(registry.send(LiveCount).await.unwrap(), 0);
        let second = registry.send(Create(key)).await.unwrap().unwrap();
        assert!(!second.is_evicted());
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    }

    #[actix_rt::test]
    async fn an_eviction_during_a_build_is_not_lost() {
        let store = Arc::new(CountingStore {
            reads: AtomicUsize::new(0),
        });
        let registry = ClusterRegistry::new(store.clone(), KubeconfigRules::default()).start();
        let key = ClusterKey { org: 1, cluster: 1 };
        let building = registry.send(Create(key));
        // the store answers after 20 ms: evict while the build is under way
        tokio::time::sleep(Duration::from_millis(5)).await;
        registry.send(Evict(key)).await.unwrap();
        let stale = building.await.unwrap().unwrap();
        assert!(
            stale.is_evicted(),
            "what was read before the eviction is not kept"
        );
        assert_eq!(registry.send(LiveCount).await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn unknown_cluster_is_not_found() {
        let store = Arc::new(CountingStore {
            reads: AtomicUsize::new(0),
        });
        let registry = ClusterRegistry::new(store, KubeconfigRules::default()).start();
        let err = registry
            .send(Create(ClusterKey { org: 1, cluster: 9 }))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, RegistryError::NotFound(_)));
        assert_eq!(registry.send(LiveCount).await.unwrap(), 0);
    }
}
