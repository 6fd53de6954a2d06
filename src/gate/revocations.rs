//! Revoked token and session ids, and used login states: every request is checked
//! against this replica's set.
//!
//! A revocation is refused on the next request on this replica (the set is changed at
//! once), and on the others within `auth.revocation_poll`: each replica reads the
//! revocations from the token store on that period, never per request. A login's OAuth2
//! `state` (or LDAP form token) joins the set, as a hash, when login uses it, so that
//! it is good once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kubegate_actors::store::TokenStore;
/// Revoked token and session ids, as this replica knows them.
#[derive(Default)]
pub struct Revocations {
    ids: RwLock<HashSet<String>>,
    /// Revoked here lately: kept over a poll that read the store just before the write.
    recent: Mutex<HashMap<String, Instant>>,
}

/// How long an id revoked here is kept whatever the store says.
const RECENT: Duration = Duration::from_secs(60);

impl Revocations {
    /// Whether `id` is revoked.
    pub fn contains(&self, id: &str) -> bool {
        self.ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Revokes `id` here, now.
    pub fn insert(&self, id: &str) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), Instant::now());
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }

    /// Revokes `id` here, now, unless it is revoked already: `false` then. The check and
    /// the insertion are one step, so two requests cannot both get `true`.
    pub fn insert_new(&self, id: &str) -> bool {
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        if !ids.insert(id.to_string()) {
            return false;
        }
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), Instant::now());
        true
    }

    /// Puts the store's revocations in force (with those made here lately).
    pub fn replace(&self, from_store: impl IntoIterator<Item = String>) {
        let mut ids: HashSet<String> = from_store.into_iter().collect();
        // the set is held while the recent ids are read: an id that `insert_new` adds in
        // between is in the new set too (both take `ids`, then `recent`)
        let mut current = self.ids.write().unwrap_or_else(|p| p.into_inner());
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.retain(|_, at| at.elapsed() < RECENT);
            ids.extend(recent.keys().cloned());
        }
        *current = ids;
    }

    /// How many ids are revoked.
    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the revocations from `store` every `period`, for as long as `revocations` is
/// in use. A store that fails keeps the last set in force.
pub async fn poll(
    store: Arc<dyn TokenStore>,
    revocations: std::sync::Weak<Revocations>,
    period: Duration,
) {
    let mut failing = false;
    loop {
        let Some(target) = revocations.upgrade() else {
            return;
        };
        match store.revoked().await {
            Ok(map) => {
                if failing {
                    log::info!("the token store answers again");
                    failing = false;
                }
                target.replace(map.into_keys());
            }
            Err(e) => {
                if !failing {
                    log::error!("revocations not read (the last ones stay in force): {e}");
                    failing = true;
                }
            }
        }
        drop(target);
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_survive_a_stale_poll() {
        let r = Revocations::default();
        assert!(!r.contains("a"));
        r.insert("a");
        assert!(r.contains("a"));
        // a poll that read the store before the revocation was written
        r.replace(vec!["b".to_string()]);
        assert!(r.contains("a") && r.contains("b"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn insert_new_says_whether_the_id_was_new() {
        let r = Revocations::default();
        assert!(r.insert_new("state"));
        assert!(!r.insert_new("state"), "a second use is refused");
        // kept over a stale poll, like any revocation made here
        r.replace(Vec::new());
        assert!(r.contains("state"));
        assert!(!r.insert_new("state"));
    }
}
