//! The embedded stores: files in the data directory, each written atomically with mode
//! 0600 (a cluster file holds its kubeconfig, a token file the revocations), for one
//! replica.
//!
//! - clusters: `{dir}/orgs/{org}/clusters/{id}.json`;
//! - memberships: `{dir}/members.json`;
//! - policy lines: a CSV file (`config/policy.csv`);
//! - token records and revocations: `{dir}/tokens.json`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    epoch_now, ClusterChange, ClusterRecord, ClusterStore, MemberStore, Membership, PolicyStore,
    StoreError, TokenRecord, TokenStore,
};
use crate::fsutil::{create_atomic, create_private_dir, write_atomic};

/// The embedded cluster store: `{dir}/orgs/{org}/clusters/{id}.json`.
#[derive(Debug, Clone)]
pub struct FileClusterStore {
    dir: PathBuf,
}

impl FileClusterStore {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileClusterStore { dir: dir.into() }
    }

    fn org_dir(&self, org: u64) -> PathBuf {
        self.dir.join("orgs").join(org.to_string()).join("clusters")
    }

    fn read(path: &Path) -> Result<Option<ClusterRecord>, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    fn list_sync(&self, org: u64) -> Result<Vec<ClusterRecord>, StoreError> {
        let dir = self.org_dir(org);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| StoreError::io(&dir, e))?.path();
            let is_record = path.extension().is_some_and(|e| e == "json")
                && path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.parse::<u64>().is_ok());
            if is_record {
                if let Some(record) = Self::read(&path)? {
                    records.push(record);
                }
            }
        }
        records.sort_by_key(|r| r.id);
        Ok(records)
    }
}

#[async_trait]
impl ClusterStore for FileClusterStore {
    async fn get(&self, org: u64, id: u64) -> Result<Option<ClusterRecord>, StoreError> {
        Self::read(&self.org_dir(org).join(format!("{id}.json")))
    }

    async fn list(&self, org: u64) -> Result<Vec<ClusterRecord>, StoreError> {
        self.list_sync(org)
    }

    async fn create(&self, new: &ClusterRecord) -> Result<ClusterRecord, StoreError> {
        let (org, name) = (new.org, new.name.as_str());
        let existing = self.list_sync(org)?;
        if existing.iter().any(|r| r.name == name) {
            return Err(StoreError::DuplicateName(name.to_string()));
        }
        let dir = self.org_dir(org);
        create_private_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut id = existing.last().map_or(1, |r| r.id + 1);
        loop {
            let record = ClusterRecord { id, ..new.clone() };
            let bytes = serde_json::to_vec_pretty(&record).expect("a record serializes");
            let path = dir.join(format!("{id}.json"));
            match create_atomic(&path, &bytes) {
                Ok(()) => return Ok(record),
                // Another writer claimed this id first: take the next one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => id += 1,
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
    }

    async fn update(
        &self,
        org: u64,
        id: u64,
        change: ClusterChange<'_>,
    ) -> Result<Option<ClusterRecord>, StoreError> {
        let path = self.org_dir(org).join(format!("{id}.json"));
        let Some(mut record) = Self::read(&path)? else {
            return Ok(None);
        };
        record.apply(change);
        let bytes = serde_json::to_vec_pretty(&record).expect("a record serializes");
        write_atomic(&path, &bytes).map_err(|e| StoreError::io(&path, e))?;
        Ok(Some(record))
    }

    async fn delete(&self, org: u64, id: u64) -> Result<bool, StoreError> {
        let path = self.org_dir(org).join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        match std::fs::metadata(&self.dir) {
            Ok(_) => Ok(()),
            // not created yet: it will be on the first write
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&self.dir, e)),
        }
    }
}

/// The policy lines in a CSV file (`config/policy.csv`).
#[derive(Debug, Clone)]
pub struct FilePolicyStore {
    path: PathBuf,
}

impl FilePolicyStore {
    /// Lines from `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FilePolicyStore { path: path.into() }
    }
}

#[async_trait]
impl PolicyStore for FilePolicyStore {
    async fn policy_text(&self) -> Result<String, StoreError> {
        std::fs::read_to_string(&self.path).map_err(|e| StoreError::io(&self.path, e))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// Policy lines given at start (kubegate's embedded default policy, when no policy file
/// is configured): the same at every reload.
#[derive(Debug, Clone)]
pub struct FixedPolicyStore {
    name: String,
    text: String,
}

impl FixedPolicyStore {
    /// The lines `text`, which errors call `name`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        FixedPolicyStore {
            name: name.into(),
            text: text.into(),
        }
    }
}

#[async_trait]
impl PolicyStore for FixedPolicyStore {
    async fn policy_text(&self) -> Result<String, StoreError> {
        Ok(self.text.clone())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The embedded member store: one JSON file `{dir}/members.json`, `{org: {user: role}}`.
#[derive(Debug, Clone)]
pub struct FileMemberStore {
    path: PathBuf,
}

type MemberMap = BTreeMap<u64, BTreeMap<String, String>>;

impl FileMemberStore {
    /// A store in `dir`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        FileMemberStore {
            path: dir.as_ref().join("members.json"),
        }
    }

    fn load(&self) -> Result<MemberMap, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(MemberMap::new()),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }

    fn save(&self, map: &MemberMap) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(map).expect("memberships serialize");
        write_atomic(&self.path, &bytes).map_err(|e| StoreError::io(&self.path, e))
    }
}

#[async_trait]
impl MemberStore for FileMemberStore {
    async fn all(&self) -> Result<Vec<Membership>, StoreError> {
        Ok(self
            .load()?
            .into_iter()
            .flat_map(|(org, users)| {
                users
                    .into_iter()
                    .map(move |(user, role)| Membership { org, user, role })
            })
            .collect())
    }

    async fn set(&self, org: u64, user: &str, role: &str) -> Result<(), StoreError> {
        let mut map = self.load()?;
        map.entry(org)
            .or_default()
            .insert(user.to_string(), role.to_string());
        self.save(&map)
    }

    async fn remove(&self, org: u64, user: &str) -> Result<bool, StoreError> {
        let mut map = self.load()?;
        let removed = map.get_mut(&org).and_then(|m| m.remove(user)).is_some();
        if removed {
            map.retain(|_, users| !users.is_empty());
            self.save(&map)?;
        }
        Ok(removed)
    }

    async fn revision(&self) -> Result<String, StoreError> {
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                Ok(format!("{modified}-{}", meta.len()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok("absent".into()),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }
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
    /// Grants (kubectl device logins): id → (expiry, value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, (u64, String)>,
}

impl TokenFile {
    /// Drops what has expired.
    pub fn prune(&mut self, now: u64) {
        self.revoked.retain(|_, expires| *expires > now);
        self.grants.retain(|_, (expires, _)| *expires > now);
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

    async fn claim_id(&self, id: &str, expires_at: u64) -> Result<bool, StoreError> {
        // `change` holds the lock and drops expired entries first
        self.change(|file| {
            if file.revoked.contains_key(id) {
                return false;
            }
            file.revoked.insert(id.to_string(), expires_at);
            true
        })
    }

    async fn revoked(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut file = self.load()?;
        file.prune(epoch_now());
        Ok(file.revoked)
    }

    async fn put_grant(&self, id: &str, value: &str, expires_at: u64) -> Result<(), StoreError> {
        self.change(|file| {
            file.grants
                .insert(id.to_string(), (expires_at, value.to_string()));
        })
    }

    async fn get_grant(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut file = self.load()?;
        file.prune(epoch_now());
        Ok(file.grants.remove(id).map(|(_, value)| value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn clusters_get_ids_per_org_and_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileClusterStore::new(dir.path());
        let a = store
            .create(&ClusterRecord::new(1, 0, "dev", "kc", None))
            .await
            .unwrap();
        let b = store
            .create(&ClusterRecord::new(1, 0, "prod", "kc", Some("ctx")))
            .await
            .unwrap();
        let c = store
            .create(&ClusterRecord::new(2, 0, "dev", "kc", None))
            .await
            .unwrap();
        assert_eq!((a.id, b.id, c.id), (1, 2, 1));
        assert!(matches!(
            store
                .create(&ClusterRecord::new(1, 0, "dev", "kc", None))
                .await,
            Err(StoreError::DuplicateName(_))
        ));
        assert_eq!(
            store.get(1, 2).await.unwrap().unwrap().context.as_deref(),
            Some("ctx")
        );
        assert_eq!(store.list(1).await.unwrap().len(), 2);
        let updated = store
            .update(
                1,
                2,
                ClusterChange {
                    kubeconfig: Some(("kc2", None)),
                    impersonate: None,
                    record_sessions: None,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (updated.kubeconfig.as_str(), updated.context),
            ("kc2", None)
        );
        assert!(updated.updated_at.is_some());
        assert!(store
            .update(
                1,
                42,
                ClusterChange {
                    kubeconfig: Some(("kc", None)),
                    impersonate: None,
                    record_sessions: None
                }
            )
            .await
            .unwrap()
            .is_none());
        assert!(store.delete(1, 1).await.unwrap());
        assert!(!store.delete(1, 1).await.unwrap());
        assert!(store.get(1, 1).await.unwrap().is_none());
        // ids are not reused while a higher one exists
        assert_eq!(
            store
                .create(&ClusterRecord::new(1, 0, "dev", "kc", None))
                .await
                .unwrap()
                .id,
            3
        );
    }

    #[actix_rt::test]
    async fn members_set_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileMemberStore::new(dir.path());
        let before = store.revision().await.unwrap();
        store.set(1, "alice", "admin").await.unwrap();
        store.set(1, "alice", "member").await.unwrap();
        store.set(2, "bob", "admin").await.unwrap();
        assert_ne!(store.revision().await.unwrap(), before);
        let all = store.all().await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.contains(&Membership {
            org: 1,
            user: "alice".into(),
            role: "member".into()
        }));
        assert!(store.remove(1, "alice").await.unwrap());
        assert!(!store.remove(1, "alice").await.unwrap());
        assert_eq!(store.all().await.unwrap().len(), 1);
    }

    fn record(user: &str, id: &str, expires_at: u64) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            user: user.into(),
            name: "laptop".into(),
            created_at: epoch_now(),
            expires_at,
            revoked_at: None,
            session: false,
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
        // a claim is good once, until it expires
        assert!(store.claim_id("state:x", later).await.unwrap());
        assert!(!store.claim_id("state:x", later).await.unwrap());
        assert!(store.claim_id("state:old", 5).await.unwrap());
        assert!(
            store.claim_id("state:old", later).await.unwrap(),
            "an expired claim is gone"
        );
        // grants: replaced in place, gone once expired
        store
            .put_grant("device:AB", "pending", later)
            .await
            .unwrap();
        store
            .put_grant("device:AB", "approved", later)
            .await
            .unwrap();
        store.put_grant("device:old", "pending", 5).await.unwrap();
        assert_eq!(
            store.get_grant("device:AB").await.unwrap().as_deref(),
            Some("approved")
        );
        assert_eq!(store.get_grant("device:old").await.unwrap(), None);
        // the file is private
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
