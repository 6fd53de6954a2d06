//! What kubegate keeps of the tokens it issues: a record per token (never the token
//! itself), and the list of revoked ids that every replica polls.
//!
//! A token is a signed JWT, so it is checked without the store; the store is what lets
//! its owner list and revoke it. A revocation is an id with the time the token would
//! have expired anyway: past it, the entry is dropped, so the list stays as short as the
//! number of revoked tokens still alive. Sessions ended by logout go in the same list, so
//! that a copied session cookie dies with the session on every replica.
//!
//! Two back ends: a JSON file in the data directory (one replica), and Vault (KV v2,
//! shared by replicas; see [`crate::vault`]).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::store::StoreError;

/// A token as its owner sees it in a list: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's id (its `jti`).
    pub id: String,
    /// Whose it is (the token's `sub`).
    pub user: String,
    /// The name its owner gave it.
    pub name: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Seconds since the epoch.
    pub expires_at: u64,
    /// When it was revoked, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// Where token records and revocations are kept.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Keeps the record of a new token.
    async fn add(&self, record: &TokenRecord) -> Result<(), StoreError>;
    /// The tokens of `user` that have not expired, revoked ones included.
    async fn list(&self, user: &str) -> Result<Vec<TokenRecord>, StoreError>;
    /// Marks `user`'s token `id` revoked and adds it to the revocations. `None` when
    /// `user` has no such token.
    async fn revoke(&self, user: &str, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Adds an id (a session's) to the revocations until `expires_at`.
    async fn revoke_id(&self, id: &str, expires_at: u64) -> Result<(), StoreError>;
    /// Every revoked id whose token or session has not expired yet, with its expiry.
    async fn revoked(&self) -> Result<BTreeMap<String, u64>, StoreError>;
}

/// Seconds since the epoch.
pub fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The whole of a file store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TokenFile {
    /// Records by owner, then by id.
    #[serde(default)]
    pub tokens: BTreeMap<String, BTreeMap<String, TokenRecord>>,
    /// Revoked ids and when they expire.
    #[serde(default)]
    pub revoked: BTreeMap<String, u64>,
}

impl TokenFile {
    /// Drops what has expired.
    pub fn prune(&mut self, now: u64) {
        self.revoked.retain(|_, expires| *expires > now);
        for tokens in self.tokens.values_mut() {
            tokens.retain(|_, t| t.expires_at > now);
        }
        self.tokens.retain(|_, tokens| !tokens.is_empty());
    }

    /// Revokes `user`'s token `id`.
    pub fn revoke(&mut self, user: &str, id: &str, now: u64) -> Option<TokenRecord> {
        let record = self.tokens.get_mut(user)?.get_mut(id)?;
        record.revoked_at.get_or_insert(now);
        self.revoked.insert(id.to_string(), record.expires_at);
        Some(record.clone())
    }
}

/// Token records in `tokens.json` in the data directory, mode 0600, written atomically.
pub struct FileTokenStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileTokenStore {
    /// A store in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        FileTokenStore {
            path: dir.as_ref().join("tokens.json"),
            lock: Mutex::new(()),
        }
    }

    fn load(&self) -> Result<TokenFile, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(e) => Err(StoreError::Unavailable(format!(
                "{}: {e}",
                self.path.display()
            ))),
        }
    }

    fn change<T>(&self, f: impl FnOnce(&mut TokenFile) -> T) -> Result<T, StoreError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.load()?;
        file.prune(epoch_now());
        let out = f(&mut file);
        let bytes = serde_json::to_vec_pretty(&file).expect("token records serialize");
        write_atomic(&self.path, &bytes)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", self.path.display())))?;
        Ok(out)
    }
}

#[async_trait]
impl TokenStore for FileTokenStore {
    async fn add(&self, record: &TokenRecord) -> Result<(), StoreError> {
        self.change(|file| {
            file.tokens
                .entry(record.user.clone())
                .or_default()
                .insert(record.id.clone(), record.clone());
        })
    }

    async fn list(&self, user: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let now = epoch_now();
        let mut file = self.load()?;
        file.prune(now);
        Ok(file
            .tokens
            .remove(user)
            .map(|tokens| tokens.into_values().collect())
            .unwrap_or_default())
    }

    async fn revoke(&self, user: &str, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.change(|file| file.revoke(user, id, epoch_now()))
    }

    async fn revoke_id(&self, id: &str, expires_at: u64) -> Result<(), StoreError> {
        self.change(|file| {
            file.revoked.insert(id.to_string(), expires_at);
        })
    }

    async fn revoked(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut file = self.load()?;
        file.prune(epoch_now());
        Ok(file.revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str, id: &str, expires_at: u64) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            user: user.into(),
            name: "laptop".into(),
            created_at: epoch_now(),
            expires_at,
            revoked_at: None,
        }
    }

    #[actix_rt::test]
    async fn add_list_revoke_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::new(dir.path());
        let later = epoch_now() + 3600;
        store.add(&record("alice", "a1", later)).await.unwrap();
        store.add(&record("alice", "a2", later)).await.unwrap();
        store.add(&record("bob", "b1", later)).await.unwrap();
        store.add(&record("alice", "old", 5)).await.unwrap();
        let listed = store.list("alice").await.unwrap();
        assert_eq!(
            listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a1", "a2"],
            "expired records are not listed"
        );
        // bob cannot revoke alice's token
        assert_eq!(store.revoke("bob", "a1").await.unwrap(), None);
        let revoked = store.revoke("alice", "a1").await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some());
        store.revoke_id("session:s1", later).await.unwrap();
        store.revoke_id("session:gone", 5).await.unwrap();
        let ids = store.revoked().await.unwrap();
        assert_eq!(ids.keys().collect::<Vec<_>>(), ["a1", "session:s1"]);
        // the file is private
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
