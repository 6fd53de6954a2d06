//! Where clusters and org memberships are kept.
//!
//! The stores are traits so that other back ends (Vault, PostgreSQL) can take the place
//! of the embedded default: files in a local directory, each written atomically with
//! mode 0600 (a cluster file holds its kubeconfig, a secret).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::fsutil::{create_atomic, create_private_dir, write_atomic};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or read right now; retrying later may work.
    #[error("cluster store unavailable: {0}")]
    Unavailable(String),
    /// A cluster of that name exists already in the org.
    #[error("a cluster named \"{0}\" exists already in this org")]
    DuplicateName(String),
    /// A record in the store does not parse.
    #[error("store record {path} is corrupt: {reason}")]
    Corrupt {
        /// Where the record is.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    fn io(context: &Path, err: io::Error) -> StoreError {
        StoreError::Unavailable(format!("{}: {err}", context.display()))
    }
}

/// A cluster as stored: which org, its id and name, and its kubeconfig.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The organization.
    pub org: u64,
    /// The id, unique in the org.
    pub id: u64,
    /// The name, unique in the org.
    pub name: String,
    /// The kubeconfig, YAML (a secret: never logged).
    pub kubeconfig: String,
    /// The context to use; `None` means `current-context`.
    #[serde(default)]
    pub context: Option<String>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Time of the last kubeconfig update, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl std::fmt::Debug for ClusterRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRecord")
            .field("org", &self.org)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl ClusterRecord {
    /// A new record, created now.
    pub fn new(org: u64, id: u64, name: &str, kubeconfig: &str, context: Option<&str>) -> Self {
        ClusterRecord {
            org,
            id,
            name: name.to_string(),
            kubeconfig: kubeconfig.to_string(),
            context: context.map(str::to_string),
            created_at: now_rfc3339(),
            updated_at: None,
        }
    }

    /// Replaces the kubeconfig and context, noting the time.
    pub fn replace_kubeconfig(&mut self, kubeconfig: &str, context: Option<&str>) {
        self.kubeconfig = kubeconfig.to_string();
        self.context = context.map(str::to_string);
        self.updated_at = Some(now_rfc3339());
    }
}

/// Keeps the clusters of every org.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// One cluster, or `None` when the org has no cluster with that id.
    async fn get(&self, org: u64, id: u64) -> Result<Option<ClusterRecord>, StoreError>;
    /// The org's clusters, by id.
    async fn list(&self, org: u64) -> Result<Vec<ClusterRecord>, StoreError>;
    /// Stores a new cluster under the next free id of the org and returns it.
    async fn create(
        &self,
        org: u64,
        name: &str,
        kubeconfig: &str,
        context: Option<&str>,
    ) -> Result<ClusterRecord, StoreError>;
    /// Replaces a cluster's kubeconfig and context; `None` when there is no such cluster.
    async fn update(
        &self,
        org: u64,
        id: u64,
        kubeconfig: &str,
        context: Option<&str>,
    ) -> Result<Option<ClusterRecord>, StoreError>;
    /// Removes a cluster; `false` when there was none.
    async fn delete(&self, org: u64, id: u64) -> Result<bool, StoreError>;
    /// Checks that the store can be reached and read (for `/readyz`).
    async fn check(&self) -> Result<(), StoreError>;
}

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

/// Current time as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[async_trait]
impl ClusterStore for FileClusterStore {
    async fn get(&self, org: u64, id: u64) -> Result<Option<ClusterRecord>, StoreError> {
        Self::read(&self.org_dir(org).join(format!("{id}.json")))
    }

    async fn list(&self, org: u64) -> Result<Vec<ClusterRecord>, StoreError> {
        self.list_sync(org)
    }

    async fn create(
        &self,
        org: u64,
        name: &str,
        kubeconfig: &str,
        context: Option<&str>,
    ) -> Result<ClusterRecord, StoreError> {
        let existing = self.list_sync(org)?;
        if existing.iter().any(|r| r.name == name) {
            return Err(StoreError::DuplicateName(name.to_string()));
        }
        let dir = self.org_dir(org);
        create_private_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut id = existing.last().map_or(1, |r| r.id + 1);
        loop {
            let record = ClusterRecord::new(org, id, name, kubeconfig, context);
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
        kubeconfig: &str,
        context: Option<&str>,
    ) -> Result<Option<ClusterRecord>, StoreError> {
        let path = self.org_dir(org).join(format!("{id}.json"));
        let Some(mut record) = Self::read(&path)? else {
            return Ok(None);
        };
        record.replace_kubeconfig(kubeconfig, context);
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

/// Where the policy lines (`p` lines, role inheritance) come from.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// The lines, as CSV text.
    async fn policy_text(&self) -> Result<String, StoreError>;
    /// Where they are, for messages (`config/policy.csv`, `postgres casbin_rule`).
    fn describe(&self) -> String;
    /// Tells other replicas that the policy was reloaded here, so they reload too.
    async fn announce_reload(&self) -> Result<(), StoreError> {
        Ok(())
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

/// One membership: a user's role in an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The org.
    pub org: u64,
    /// The user (a token's `sub`).
    pub user: String,
    /// The role, as named in the policy (`admin`, `member`).
    pub role: String,
}

/// Keeps who has which role in which org.
#[async_trait]
pub trait MemberStore: Send + Sync {
    /// Every membership of every org.
    async fn all(&self) -> Result<Vec<Membership>, StoreError>;
    /// Sets a user's role in an org (replacing any earlier role).
    async fn set(&self, org: u64, user: &str, role: &str) -> Result<(), StoreError>;
    /// Removes a user from an org; `false` when they were not in it.
    async fn remove(&self, org: u64, user: &str) -> Result<bool, StoreError>;
    /// Something that changes whenever the memberships change, to notice edits made by
    /// another process (the CLI) without reading everything.
    async fn revision(&self) -> Result<String, StoreError>;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn clusters_get_ids_per_org_and_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileClusterStore::new(dir.path());
        let a = store.create(1, "dev", "kc", None).await.unwrap();
        let b = store.create(1, "prod", "kc", Some("ctx")).await.unwrap();
        let c = store.create(2, "dev", "kc", None).await.unwrap();
        assert_eq!((a.id, b.id, c.id), (1, 2, 1));
        assert!(matches!(
            store.create(1, "dev", "kc", None).await,
            Err(StoreError::DuplicateName(_))
        ));
        assert_eq!(
            store.get(1, 2).await.unwrap().unwrap().context.as_deref(),
            Some("ctx")
        );
        assert_eq!(store.list(1).await.unwrap().len(), 2);
        let updated = store.update(1, 2, "kc2", None).await.unwrap().unwrap();
        assert_eq!(
            (updated.kubeconfig.as_str(), updated.context),
            ("kc2", None)
        );
        assert!(updated.updated_at.is_some());
        assert!(store.update(1, 42, "kc", None).await.unwrap().is_none());
        assert!(store.delete(1, 1).await.unwrap());
        assert!(!store.delete(1, 1).await.unwrap());
        assert!(store.get(1, 1).await.unwrap().is_none());
        // ids are not reused while a higher one exists
        assert_eq!(store.create(1, "dev", "kc", None).await.unwrap().id, 3);
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
}
