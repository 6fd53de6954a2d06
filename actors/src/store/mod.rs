//! Where clusters, org memberships, policies and tokens are kept.
//!
//! The stores are traits so that other back ends can take the place of the embedded
//! default, files in a local directory, each written atomically with mode 0600 (a
//! cluster file holds its kubeconfig, a secret):
//!
//! - [`file`](FileClusterStore): clusters, members, policy lines and tokens in the data
//!   directory (one replica);
//! - [`vault`](VaultClusterStore): clusters and tokens in Vault KV v2 (replicas share it);
//! - [`postgres`](PostgresPolicyStore): policy lines and memberships in PostgreSQL's
//!   `casbin_rule` table (replicas share it).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod file;
pub(crate) mod postgres;
mod recordings;
mod vault;

pub use file::{
    FileClusterStore, FileMemberStore, FilePolicyStore, FileTokenStore, FixedPolicyStore,
};
pub use postgres::{check_connection, PostgresPolicyStore};
pub use recordings::PostgresRecordings;
pub use vault::{VaultAuth, VaultClusterStore, VaultSettings};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or read right now; retrying later may work.
    #[error("cluster store unavailable: {0}")]
    Unavailable(String),
    /// The store's configuration cannot work (a connection string, a CA certificate
    /// refused by the server's certificate): waiting will not help, the message says what
    /// to change.
    #[error("{0}")]
    Misconfigured(String),
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
    /// Time of the last update, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Whether requests reach the API server as the person (`Impersonate-User` and
    /// `Impersonate-Group`) instead of as kubegate. Off unless set.
    #[serde(default)]
    pub impersonate: bool,
    /// Which exec and attach sessions are recorded.
    #[serde(default)]
    pub record_sessions: RecordSessions,
}

/// Which exec and attach sessions of a cluster are recorded (asciicast files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordSessions {
    /// None.
    #[default]
    Off,
    /// Those with a terminal (`kubectl exec -t`).
    Tty,
    /// Every exec and attach.
    All,
}

impl std::str::FromStr for RecordSessions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(RecordSessions::Off),
            "tty" => Ok(RecordSessions::Tty),
            "all" => Ok(RecordSessions::All),
            other => Err(format!(
                "\"{other}\" is not a recording setting: off, tty or all"
            )),
        }
    }
}

/// What changes in a stored cluster: its credentials, its impersonation setting, or both.
#[derive(Clone, Copy, Default)]
pub struct ClusterChange<'a> {
    /// A new kubeconfig and the context to use (`None`: its `current-context`).
    pub kubeconfig: Option<(&'a str, Option<&'a str>)>,
    /// Impersonate the person, or stop.
    pub impersonate: Option<bool>,
    /// Which sessions to record from now on.
    pub record_sessions: Option<RecordSessions>,
}

impl std::fmt::Debug for ClusterRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRecord")
            .field("org", &self.org)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("context", &self.context)
            .field("impersonate", &self.impersonate)
            .field("record_sessions", &self.record_sessions)
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
            impersonate: false,
            record_sessions: RecordSessions::Off,
        }
    }

    /// Sets whether requests impersonate the person.
    pub fn impersonating(mut self, impersonate: bool) -> Self {
        self.impersonate = impersonate;
        self
    }

    /// Applies `change`, noting the time.
    pub fn apply(&mut self, change: ClusterChange<'_>) {
        if let Some((kubeconfig, context)) = change.kubeconfig {
            self.kubeconfig = kubeconfig.to_string();
            self.context = context.map(str::to_string);
        }
        if let Some(impersonate) = change.impersonate {
            self.impersonate = impersonate;
        }
        if let Some(record) = change.record_sessions {
            self.record_sessions = record;
        }
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
    /// Stores a new cluster under the next free id of the org and returns it:
    /// `new`'s org, name, kubeconfig, context and settings, with the id the store picks.
    async fn create(&self, new: &ClusterRecord) -> Result<ClusterRecord, StoreError>;
    /// Changes a cluster; `None` when there is no such cluster.
    async fn update(
        &self,
        org: u64,
        id: u64,
        change: ClusterChange<'_>,
    ) -> Result<Option<ClusterRecord>, StoreError>;
    /// Removes a cluster; `false` when there was none.
    async fn delete(&self, org: u64, id: u64) -> Result<bool, StoreError>;
    /// Checks that the store can be reached and read (for `/readyz`).
    async fn check(&self) -> Result<(), StoreError>;
}

/// Current time as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
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
    /// A kubectl login session (`kubegate login`): its id is the session's, its refresh
    /// credentials and access tokens die with it. `false` for a token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session: bool,
}

/// Where the records of issued tokens (never the tokens themselves) and the revoked ids
/// are kept.
///
/// A token is a signed JWT, so it is checked without the store; the store is what lets
/// its owner list and revoke it. A revocation is an id with the time the token would
/// have expired anyway: past it, the entry is dropped, so the list stays as short as the
/// number of revoked tokens still alive. Sessions ended by logout go in the same list, so
/// that a copied session cookie dies with the session on every replica, which polls it;
/// so do the hashes of used login states, until the login window ends.
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
    /// Adds `id` to the revocations until `expires_at` unless it is there already:
    /// `false` then. The check and the write are one step (two replicas cannot both get
    /// `true`), which makes a login's `state` good once on every replica.
    async fn claim_id(&self, id: &str, expires_at: u64) -> Result<bool, StoreError>;
    /// Every revoked id whose token or session has not expired yet, with its expiry.
    async fn revoked(&self) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Keeps `value` under `id` until `expires_at`, replacing what was there: a kubectl
    /// device login waiting for its person, then approved. Shared by replicas like the
    /// rest of the store, so the approval and the polling may reach different ones.
    async fn put_grant(&self, id: &str, value: &str, expires_at: u64) -> Result<(), StoreError>;
    /// What is kept under `id`, unless it has expired.
    async fn get_grant(&self, id: &str) -> Result<Option<String>, StoreError>;
}

/// Seconds since the epoch.
pub fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
