//! The cluster store in Vault (KV version 2), as Pipeline keeps it: each cluster's record,
//! kubeconfig included, at `{mount}/{prefix}/orgs/{org}/clusters/{id}`. Nothing secret is
//! written to local disk.
//!
//! Authentication by token, AppRole, or a Kubernetes service account (when kubegate runs
//! in a cluster). A renewable token is renewed before it expires; a login that expires is
//! done again. When Vault cannot be reached or is sealed, every operation fails with
//! [`StoreError::Unavailable`] and the next one tries again: nothing needs restarting.
//! While there is no valid login (the first one failed because Vault was down, or a
//! renewal failed until the lease ran out), [`VaultClusterStore::keep_alive`] logs in
//! again (token auth: looks the token up and renews it) with a backoff from 200 ms to 5 s.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::kv2;

use super::{
    epoch_now, ClusterChange, ClusterRecord, ClusterStore, StoreError, TokenRecord, TokenStore,
};

/// How kubegate logs in to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    /// A token given in configuration (file or environment).
    Token(SecretString),
    /// AppRole: role id and secret id, at the auth mount `mount`.
    AppRole {
        /// Auth mount, usually `approle`.
        mount: String,
        /// The role id.
        role_id: String,
        /// The secret id.
        secret_id: SecretString,
    },
    /// A Kubernetes service account token, at the auth mount `mount`.
    Kubernetes {
        /// Auth mount, usually `kubernetes`.
        mount: String,
        /// The Vault role.
        role: String,
        /// The service account token file.
        jwt_file: std::path::PathBuf,
    },
}

/// Where Vault is and how to use it.
#[derive(Clone)]
pub struct VaultSettings {
    /// `https://vault:8200`
    pub address: String,
    /// KV v2 mount, e.g. `secret`.
    pub mount: String,
    /// Path prefix under the mount, e.g. `kubegate`.
    pub prefix: String,
    /// How to log in.
    pub auth: VaultAuth,
    /// Timeout of each call to Vault.
    pub timeout: Duration,
}

/// The Vault cluster store.
///
/// Its locks only ever hold a value replaced whole, in one assignment, so a lock
/// poisoned by a panic elsewhere still holds a usable value: every access takes it
/// (`PoisonError::into_inner`) rather than failing every later request.
pub struct VaultClusterStore {
    settings: VaultSettings,
    client: RwLock<Arc<VaultClient>>,
    /// The lease of the current login.
    lease: RwLock<Lease>,
}

/// The first wait before logging in again after a failure, doubled at each failure.
const RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest wait between two logins while there is no valid login.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where kubegate's login to Vault stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lease {
    /// No valid login: the last one failed (the message says why), or its lease ran out
    /// without renewal. Token auth keeps its token (Vault may still accept it).
    Missing(String),
    /// Logged in with a token that does not expire.
    Forever,
    /// Logged in until `until`; `ttl` is the lease's length as Vault gave it.
    Until {
        renewable: bool,
        ttl: Duration,
        until: Instant,
    },
}

impl Lease {
    fn new(renewable: bool, ttl_secs: u64) -> Lease {
        if ttl_secs == 0 {
            return Lease::Forever;
        }
        let ttl = Duration::from_secs(ttl_secs);
        match Instant::now().checked_add(ttl) {
            Some(until) => Lease::Until {
                renewable,
                ttl,
                until,
            },
            // beyond what the clock can say: as good as never
            None => Lease::Forever,
        }
    }
}

fn unavailable(address: &str, e: &ClientError) -> StoreError {
    let why = match e {
        ClientError::APIError { code: 503, .. } => "is sealed or in standby".to_string(),
        ClientError::APIError { code: 403, .. } => {
            "refused kubegate's token (permission denied)".to_string()
        }
        ClientError::APIError { code, errors } => format!("answered {code}: {}", errors.join("; ")),
        ClientError::RestClientError { .. } => "cannot be reached".to_string(),
        other => other.to_string(),
    };
    StoreError::Unavailable(format!("Vault at {address} {why}"))
}

/// Whether a write with check-and-set lost to another writer.
fn is_cas_conflict(e: &ClientError) -> bool {
    matches!(e, ClientError::APIError { code: 400, errors }
        if errors.iter().any(|e| e.contains("check-and-set")))
}

/// Why there is no login, from the error of the last attempt.
fn no_login(e: &StoreError) -> Lease {
    Lease::Missing(match e {
        StoreError::Unavailable(why) => why.clone(),
        other => other.to_string(),
    })
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::APIError { code: 404, .. })
}

impl VaultClusterStore {
    /// Connects and logs in. Fails when the settings are unusable; a Vault that is down
    /// is not an error here (the first operation will say so, and retry).
    pub async fn connect(settings: VaultSettings) -> Result<Arc<VaultClusterStore>, StoreError> {
        // reqwest's rustls takes the process-wide provider: kubegate's is ring
        let _ = rustls::crypto::ring::default_provider().install_default();
        let initial = match &settings.auth {
            VaultAuth::Token(token) => token.expose_secret().to_string(),
            _ => String::new(),
        };
        let client = Self::client(&settings, &initial)?;
        let store = Arc::new(VaultClusterStore {
            settings,
            client: RwLock::new(Arc::new(client)),
            lease: RwLock::new(Lease::Missing("kubegate has not logged in yet".into())),
        });
        if let Err(e) = store.login().await {
            log::error!("Vault login failed, will retry: {e}");
            store.set_lease(no_login(&e));
        }
        Ok(store)
    }

    fn client(settings: &VaultSettings, token: &str) -> Result<VaultClient, StoreError> {
        let built = VaultClientSettingsBuilder::default()
            .address(&settings.address)
            .token(token)
            .timeout(Some(settings.timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("Vault settings: {e}")))?;
        VaultClient::new(built).map_err(|e| StoreError::Unavailable(format!("Vault client: {e}")))
    }

    fn current(&self) -> Arc<VaultClient> {
        self.client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lease(&self) -> Lease {
        self.lease
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_lease(&self, lease: Lease) {
        *self.lease.write().unwrap_or_else(PoisonError::into_inner) = lease;
    }

    /// The client for an operation. With AppRole or Kubernetes auth and no valid login,
    /// fails at once with why (the client has no token Vault would accept); with token
    /// auth, the token is tried (Vault may accept it although its lookup failed).
    fn session(&self) -> Result<Arc<VaultClient>, StoreError> {
        if !matches!(self.settings.auth, VaultAuth::Token(_)) {
            if let Lease::Missing(why) = self.lease() {
                return Err(StoreError::Unavailable(format!(
                    "{why}; kubegate is not logged in to Vault and keeps trying"
                )));
            }
        }
        Ok(self.current())
    }

    fn path(&self, org: u64, id: Option<u64>) -> String {
        let base = format!(
            "{}/orgs/{org}/clusters",
            self.settings.prefix.trim_matches('/')
        );
        match id {
            Some(id) => format!("{base}/{id}"),
            None => base,
        }
    }

    /// Logs in (AppRole, Kubernetes) or looks the token up (token auth), and records
    /// whether and when the token must be renewed.
    pub async fn login(&self) -> Result<(), StoreError> {
        let address = &self.settings.address;
        let anonymous = Self::client(&self.settings, "")?;
        let info = match &self.settings.auth {
            VaultAuth::Token(_) => {
                let client = self.current();
                let found = vaultrs::token::lookup_self(client.as_ref())
                    .await
                    .map_err(|e| unavailable(address, &e))?;
                let renewable = found.renewable.unwrap_or(false);
                let was_missing = matches!(self.lease(), Lease::Missing(_));
                if found.ttl > 0 && renewable {
                    // how long the token has had is unknown: renew it now
                    self.renew().await?;
                } else {
                    self.set_lease(Lease::new(renewable, found.ttl));
                }
                if was_missing {
                    log::info!("Vault at {address} accepts kubegate's token");
                }
                return Ok(());
            }
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                vaultrs::auth::approle::login(&anonymous, mount, role_id, secret_id.expose_secret())
                    .await
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = std::fs::read_to_string(jwt_file).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "cannot read the service account token {}: {e}",
                        jwt_file.display()
                    ))
                })?;
                vaultrs::auth::kubernetes::login(&anonymous, mount, role, jwt.trim()).await
            }
        }
        .map_err(|e| unavailable(address, &e))?;
        let client = Self::client(&self.settings, &info.client_token)?;
        *self.client.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(client);
        self.set_lease(Lease::new(info.renewable, info.lease_duration));
        log::info!("logged in to Vault at {address}");
        Ok(())
    }

    /// Renews the current token and records its new lease.
    async fn renew(&self) -> Result<(), StoreError> {
        let client = self.current();
        let info = vaultrs::token::renew_self(client.as_ref(), None)
            .await
            .map_err(|e| unavailable(&self.settings.address, &e))?;
        self.set_lease(Lease::new(info.renewable, info.lease_duration));
        log::debug!("Vault token renewed for {}s", info.lease_duration);
        Ok(())
    }

    /// One step of [`keep_alive`](Self::keep_alive), when its wait is over: renews or
    /// logs in again as the lease requires.
    async fn refresh(&self) -> Result<(), StoreError> {
        match self.lease() {
            Lease::Forever => Ok(()),
            Lease::Until { until, .. } if Instant::now() >= until => {
                self.set_lease(Lease::Missing(format!(
                    "Vault at {}: kubegate's login expired before it could be renewed",
                    self.settings.address
                )));
                self.login().await
            }
            Lease::Until {
                renewable: true, ..
            } => match self.renew().await {
                Ok(()) => Ok(()),
                // a token given in configuration cannot be had again: try renewing it
                // until its lease runs out
                Err(e) if matches!(self.settings.auth, VaultAuth::Token(_)) => Err(e),
                Err(e) => {
                    log::warn!("Vault token renewal failed, logging in again: {e}");
                    self.login().await
                }
            },
            Lease::Until {
                renewable: false, ..
            }
            | Lease::Missing(_) => self.login().await,
        }
    }

    /// Keeps the login alive: renews a renewable token at two thirds of its lease, logs
    /// in again when renewal is not possible. While there is no valid login, or a renewal
    /// fails, tries again after 200 ms, doubling up to 5 s. Runs until the store is
    /// dropped.
    pub async fn keep_alive(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        // the login of connect failed: it was the first failure (and is logged)
        let (mut failing, mut last_error) = match self.lease() {
            Lease::Missing(why) => (true, StoreError::Unavailable(why).to_string()),
            _ => (false, String::new()),
        };
        drop(self);
        let mut retry = RETRY_MIN;
        loop {
            let Some(store) = weak.upgrade() else { return };
            let wait = match store.lease() {
                _ if failing => retry,
                Lease::Missing(_) => RETRY_MIN,
                Lease::Forever => Duration::from_secs(60),
                Lease::Until { ttl, until, .. } => until
                    .checked_sub(ttl / 3)
                    .map(|at| at.saturating_duration_since(Instant::now()))
                    .unwrap_or_default()
                    .max(Duration::from_secs(1)),
            };
            drop(store);
            tokio::time::sleep(wait).await;
            let Some(store) = weak.upgrade() else { return };
            match store.refresh().await {
                Ok(()) => {
                    if failing {
                        log::info!("Vault at {} answers again", store.settings.address);
                    }
                    failing = false;
                    retry = RETRY_MIN;
                    last_error.clear();
                }
                Err(e) => {
                    let message = e.to_string();
                    if message != last_error {
                        log::error!("Vault login or renewal failed, will retry: {message}");
                    } else {
                        log::debug!("Vault login or renewal failed again, will retry: {message}");
                    }
                    if failing {
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                    failing = true;
                    last_error = message;
                    if let Lease::Missing(_) = store.lease() {
                        store.set_lease(no_login(&e));
                    }
                }
            }
        }
    }

    async fn read(&self, org: u64, id: u64) -> Result<Option<ClusterRecord>, StoreError> {
        let client = self.session()?;
        match kv2::read::<ClusterRecord>(
            client.as_ref(),
            &self.settings.mount,
            &self.path(org, Some(id)),
        )
        .await
        {
            Ok(record) => Ok(Some(record)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(ClientError::JsonParseError { source }) => Err(StoreError::Corrupt {
                path: self.path(org, Some(id)),
                reason: source.to_string(),
            }),
            Err(e) => Err(unavailable(&self.settings.address, &e)),
        }
    }

    async fn ids(&self, org: u64) -> Result<Vec<u64>, StoreError> {
        let client = self.session()?;
        match kv2::list(client.as_ref(), &self.settings.mount, &self.path(org, None)).await {
            Ok(keys) => {
                let mut ids: Vec<u64> = keys.iter().filter_map(|k| k.parse().ok()).collect();
                ids.sort_unstable();
                Ok(ids)
            }
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(unavailable(&self.settings.address, &e)),
        }
    }
}

#[async_trait]
impl ClusterStore for VaultClusterStore {
    async fn get(&self, org: u64, id: u64) -> Result<Option<ClusterRecord>, StoreError> {
        self.read(org, id).await
    }

    async fn list(&self, org: u64) -> Result<Vec<ClusterRecord>, StoreError> {
        let mut records = Vec::new();
        for id in self.ids(org).await? {
            if let Some(record) = self.read(org, id).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn create(&self, new: &ClusterRecord) -> Result<ClusterRecord, StoreError> {
        let (org, name) = (new.org, new.name.as_str());
        let existing = ClusterStore::list(self, org).await?;
        if existing.iter().any(|r| r.name == name) {
            return Err(StoreError::DuplicateName(name.to_string()));
        }
        let mut id = existing.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        loop {
            let record = ClusterRecord { id, ..new.clone() };
            let client = self.session()?;
            // cas = 0: write only if the path holds nothing, so two writers cannot take
            // one id
            let options = vaultrs::api::kv2::requests::SetSecretRequestOptions { cas: 0 };
            match kv2::set_with_options(
                client.as_ref(),
                &self.settings.mount,
                &self.path(org, Some(id)),
                &record,
                options,
            )
            .await
            {
                Ok(_) => return Ok(record),
                Err(e) if is_cas_conflict(&e) => id += 1,
                Err(e) => return Err(unavailable(&self.settings.address, &e)),
            }
        }
    }

    async fn update(
        &self,
        org: u64,
        id: u64,
        change: ClusterChange<'_>,
    ) -> Result<Option<ClusterRecord>, StoreError> {
        let Some(mut record) = self.read(org, id).await? else {
            return Ok(None);
        };
        record.apply(change);
        let client = self.session()?;
        kv2::set(
            client.as_ref(),
            &self.settings.mount,
            &self.path(org, Some(id)),
            &record,
        )
        .await
        .map_err(|e| unavailable(&self.settings.address, &e))?;
        Ok(Some(record))
    }

    async fn delete(&self, org: u64, id: u64) -> Result<bool, StoreError> {
        if self.read(org, id).await?.is_none() {
            return Ok(false);
        }
        let client = self.session()?;
        // every version and the metadata: the kubeconfig is gone, not soft-deleted
        kv2::delete_metadata(
            client.as_ref(),
            &self.settings.mount,
            &self.path(org, Some(id)),
        )
        .await
        .map_err(|e| unavailable(&self.settings.address, &e))?;
        Ok(true)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let client = self.session()?;
        match kv2::list(
            client.as_ref(),
            &self.settings.mount,
            self.settings.prefix.trim_matches('/'),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(unavailable(&self.settings.address, &e)),
        }
    }
}

/// Token records at `{prefix}/tokens/{user, hex}/{id}`, and the revoked ids in one secret
/// at `{prefix}/revoked`, changed with check-and-set so that replicas revoking at once
/// do not lose each other's entries. Replicas poll that one secret.
impl VaultClusterStore {
    fn tokens_path(&self, user: &str) -> String {
        let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{}/tokens/{hex}", self.settings.prefix.trim_matches('/'))
    }

    fn grant_path(&self, id: &str) -> String {
        let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{}/grants/{hex}", self.settings.prefix.trim_matches('/'))
    }

    fn revoked_path(&self) -> String {
        format!("{}/revoked", self.settings.prefix.trim_matches('/'))
    }

    async fn read_token(&self, user: &str, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let client = self.session()?;
        let path = format!("{}/{id}", self.tokens_path(user));
        match kv2::read::<TokenRecord>(client.as_ref(), &self.settings.mount, &path).await {
            Ok(record) => Ok(Some(record)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(ClientError::JsonParseError { source }) => Err(StoreError::Corrupt {
                path,
                reason: source.to_string(),
            }),
            Err(e) => Err(unavailable(&self.settings.address, &e)),
        }
    }

    /// The revocations and the version they were read at (0: none yet).
    async fn read_revoked(&self) -> Result<(u64, BTreeMap<String, u64>), StoreError> {
        let client = self.session()?;
        let path = self.revoked_path();
        let version = match kv2::read_metadata(client.as_ref(), &self.settings.mount, &path).await {
            Ok(meta) => meta.current_version,
            Err(e) if is_not_found(&e) => return Ok((0, BTreeMap::new())),
            Err(e) => return Err(unavailable(&self.settings.address, &e)),
        };
        match kv2::read_version::<BTreeMap<String, u64>>(
            client.as_ref(),
            &self.settings.mount,
            &path,
            version,
        )
        .await
        {
            Ok(map) => Ok((version, map)),
            Err(e) if is_not_found(&e) => Ok((version, BTreeMap::new())),
            Err(ClientError::JsonParseError { source }) => Err(StoreError::Corrupt {
                path,
                reason: source.to_string(),
            }),
            Err(e) => Err(unavailable(&self.settings.address, &e)),
        }
    }

    /// Adds `id` to the revocations (a check-and-set write: concurrent writers retry).
    /// With `only_new`, an `id` there already is left alone and the answer is `false`.
    async fn add_revoked(
        &self,
        id: &str,
        expires_at: u64,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        for _ in 0..20 {
            let (version, mut map) = self.read_revoked().await?;
            let now = epoch_now();
            map.retain(|_, expires| *expires > now);
            if only_new && map.contains_key(id) {
                return Ok(false);
            }
            map.insert(id.to_string(), expires_at);
            let client = self.session()?;
            let options = vaultrs::api::kv2::requests::SetSecretRequestOptions {
                cas: u32::try_from(version).unwrap_or(u32::MAX),
            };
            match kv2::set_with_options(
                client.as_ref(),
                &self.settings.mount,
                &self.revoked_path(),
                &map,
                options,
            )
            .await
            {
                Ok(_) => return Ok(true),
                Err(e) if is_cas_conflict(&e) => {}
                Err(e) => return Err(unavailable(&self.settings.address, &e)),
            }
        }
        Err(StoreError::Unavailable(
            "Vault: the revocation list kept changing under this write (20 tries)".into(),
        ))
    }
}

#[async_trait]
impl TokenStore for VaultClusterStore {
    async fn add(&self, record: &TokenRecord) -> Result<(), StoreError> {
        let client = self.session()?;
        let path = format!("{}/{}", self.tokens_path(&record.user), record.id);
        kv2::set(client.as_ref(), &self.settings.mount, &path, record)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&self.settings.address, &e))
    }

    async fn list(&self, user: &str) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.session()?;
        let ids = match kv2::list(
            client.as_ref(),
            &self.settings.mount,
            &self.tokens_path(user),
        )
        .await
        {
            Ok(ids) => ids,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(&self.settings.address, &e)),
        };
        let now = epoch_now();
        let mut records = Vec::new();
        for id in ids {
            match self.read_token(user, &id).await? {
                Some(record) if record.expires_at > now => records.push(record),
                Some(_) => {
                    // expired: nobody needs it any more
                    let path = format!("{}/{id}", self.tokens_path(user));
                    let _ =
                        kv2::delete_metadata(client.as_ref(), &self.settings.mount, &path).await;
                }
                None => {}
            }
        }
        records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(records)
    }

    async fn revoke(&self, user: &str, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let Some(mut record) = self.read_token(user, id).await? else {
            return Ok(None);
        };
        // the revocation first: once it is in, the token is refused whatever happens next
        self.add_revoked(id, record.expires_at, false).await?;
        if record.revoked_at.is_none() {
            record.revoked_at = Some(epoch_now());
            TokenStore::add(self, &record).await?;
        }
        Ok(Some(record))
    }

    async fn revoke_id(&self, id: &str, expires_at: u64) -> Result<(), StoreError> {
        self.add_revoked(id, expires_at, false).await.map(|_| ())
    }

    async fn claim_id(&self, id: &str, expires_at: u64) -> Result<bool, StoreError> {
        self.add_revoked(id, expires_at, true).await
    }

    async fn revoked(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let now = epoch_now();
        let (_, mut map) = self.read_revoked().await?;
        map.retain(|_, expires| *expires > now);
        Ok(map)
    }

    async fn put_grant(&self, id: &str, value: &str, expires_at: u64) -> Result<(), StoreError> {
        let client = self.session()?;
        let grant = Grant {
            expires_at,
            value: value.to_string(),
        };
        kv2::set(
            client.as_ref(),
            &self.settings.mount,
            &self.grant_path(id),
            &grant,
        )
        .await
        .map(|_| ())
        .map_err(|e| unavailable(&self.settings.address, &e))
    }

    async fn get_grant(&self, id: &str) -> Result<Option<String>, StoreError> {
        let client = self.session()?;
        let path = self.grant_path(id);
        match kv2::read::<Grant>(client.as_ref(), &self.settings.mount, &path).await {
            Ok(grant) if grant.expires_at > epoch_now() => Ok(Some(grant.value)),
            Ok(_) => {
                // expired: nobody needs it any more
                let _ = kv2::delete_metadata(client.as_ref(), &self.settings.mount, &path).await;
                Ok(None)
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(unavailable(&self.settings.address, &e)),
        }
    }
}

/// A grant as kept in Vault, at `{prefix}/grants/{id, hex}`.
#[derive(Serialize, Deserialize)]
struct Grant {
    expires_at: u64,
    value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_poisoned_lock_does_not_fail_later_requests() {
        // nothing listens there: the login fails, and so does every read, with an error
        let store = VaultClusterStore::connect(VaultSettings {
            address: "http://127.0.0.1:1".into(),
            mount: "secret".into(),
            prefix: "kubegate".into(),
            auth: VaultAuth::Token(SecretString::from("t")),
            timeout: Duration::from_secs(2),
        })
        .await
        .unwrap();
        let poisoner = store.clone();
        let panicked = std::thread::spawn(move || {
            let _client = poisoner.client.write().unwrap();
            let _lease = poisoner.lease.write().unwrap();
            panic!("a panic while the locks are held");
        })
        .join();
        assert!(panicked.is_err());
        assert!(store.client.is_poisoned() && store.lease.is_poisoned());
        let err = store.get(1, 1).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable(why) if why.contains("cannot be reached")),
            "{err}"
        );
        assert!(store.login().await.is_err(), "a login still runs");
    }
}
