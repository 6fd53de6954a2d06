//! The ClusterRegistry's tests: one build for concurrent requests, eviction (asked, idle,
//! during a build), unknown clusters, builds that never finish.

use super::*;
use crate::store::{ClusterChange, ClusterRecord};
use async_trait::async_trait;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A store that counts reads and serves one cluster, after 20 ms; the first `hanging`
/// reads never finish.
struct CountingStore {
    reads: AtomicUsize,
    hanging: usize,
}

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {token: t}\n";

#[async_trait]
impl ClusterStore for CountingStore {
    async fn get(&self, org: u64, id: u64) -> Result<Option<ClusterRecord>, StoreError> {
        if self.reads.fetch_add(1, Ordering::SeqCst) < self.hanging {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok((id == 1).then(|| ClusterRecord {
            org,
            id,
            name: "dev".into(),
            kubeconfig: KUBECONFIG.into(),
            context: None,
            created_at: String::new(),
            updated_at: None,
            impersonate: false,
            record_sessions: Default::default(),
        }))
    }
    async fn list(&self, _: u64) -> Result<Vec<ClusterRecord>, StoreError> {
        Ok(vec![])
    }
    async fn create(&self, _: &ClusterRecord) -> Result<ClusterRecord, StoreError> {
        Err(StoreError::Unavailable("read only".into()))
    }
    async fn update(
        &self,
        _: u64,
        _: u64,
        _: ClusterChange<'_>,
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
        hanging: 0,
    });
    let registry = ClusterRegistry::new(store.clone(), KubeconfigRules::default()).start();
    let key = ClusterKey { org: 1, cluster: 1 };
    let results = futures_util::future::join_all((0..50).map(|_| registry.send(Create(key)))).await;
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
        hanging: 0,
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
        hanging: 0,
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
        hanging: 0,
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

#[actix_rt::test]
async fn a_stuck_build_fails_every_waiter_and_the_next_create_builds_anew() {
    let store = Arc::new(CountingStore {
        reads: AtomicUsize::new(0),
        hanging: 1,
    });
    let timeout = Duration::from_millis(200);
    let registry = ClusterRegistry::new(store.clone(), KubeconfigRules::default())
        .with_build_timeout(timeout)
        .start();
    let key = ClusterKey { org: 1, cluster: 1 };
    let started = std::time::Instant::now();
    let results = futures_util::future::join_all((0..5).map(|_| registry.send(Create(key)))).await;
    assert!(started.elapsed() >= timeout);
    for result in results {
        let err = result.unwrap().unwrap_err();
        assert!(
            matches!(err, RegistryError::Timeout { key: k, after } if k == key && after == timeout),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "building the proxy for cluster 1 of org 1 did not finish within 200ms"
        );
    }
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        1,
        "the waiters shared one build"
    );
    // a lookup does not build
    assert!(registry.send(Get(key)).await.unwrap().is_none());
    assert_eq!(registry.send(LiveCount).await.unwrap(), 0);
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    // the stuck build is gone: the next Create reads the store again, and is answered
    let proxy = registry.send(Create(key)).await.unwrap().unwrap();
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    let kept = registry.send(Get(key)).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&kept, &proxy));
}

#[actix_rt::test]
async fn an_eviction_during_a_failed_build_does_not_spoil_the_next_one() {
    let store = Arc::new(CountingStore {
        reads: AtomicUsize::new(0),
        hanging: 1,
    });
    let registry = ClusterRegistry::new(store.clone(), KubeconfigRules::default())
        .with_build_timeout(Duration::from_millis(100))
        .start();
    let key = ClusterKey { org: 1, cluster: 1 };
    let building = registry.send(Create(key));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!registry.send(Evict(key)).await.unwrap());
    assert!(matches!(
        building.await.unwrap(),
        Err(RegistryError::Timeout { .. })
    ));
    let proxy = registry.send(Create(key)).await.unwrap().unwrap();
    assert!(
        !proxy.is_evicted(),
        "the eviction concerned the failed build"
    );
    assert!(registry.send(Get(key)).await.unwrap().is_some());
}

#[test]
fn the_default_build_timeout_outlasts_the_credential_plugin() {
    assert!(DEFAULT_BUILD_TIMEOUT > EXEC_TIMEOUT);
    let registry = ClusterRegistry::new(
        Arc::new(CountingStore {
            reads: AtomicUsize::new(0),
            hanging: 0,
        }),
        KubeconfigRules::default(),
    );
    assert_eq!(registry.build_timeout, Some(DEFAULT_BUILD_TIMEOUT));
    assert_eq!(
        registry.with_build_timeout(Duration::ZERO).build_timeout,
        None
    );
}
