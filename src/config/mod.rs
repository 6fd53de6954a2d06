//! kubegate's configuration: plain serde data with named defaults.
//!
//! `config/default.toml` documents every key. Any key may be left out of a file, and then
//! has the value written there, so a file holds only what differs (`"off"` turns a
//! listener off; the Casbin model and policy left out are the embedded ones); a key that
//! is not one is still an unknown key. When the file given with `--config` is the default one
//! and does not exist, the defaults are used (they are embedded), so `kubegate serve`
//! runs from anywhere. Relative paths resolve against the working directory.
//!
//! The rooms: this file holds the data (`Config` and its sections) and loading;
//! `defaults` the default of each key; `env` the overrides from
//! the environment and the secrets; `check` the diagnosis of a file and the validation
//! of a whole configuration; `login`, `ldap` and `tls` the login providers' settings and
//! the serving certificate.

mod check;
mod defaults;
mod env;
pub mod ldap;
pub mod login;
pub mod tls;

pub use env::{read_secret, secrets_in_file};

/// The Casbin model kubegate uses when `policy.model` is left out (the same as
/// `config/rbac_model.conf`).
pub const DEFAULT_MODEL: &str = include_str!("../../config/rbac_model.conf");
/// The policy kubegate uses when `policy.policy` is left out (the same as
/// `config/policy.csv`: admins read and write, members read).
pub const DEFAULT_POLICY: &str = include_str!("../../config/policy.csv");

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubegate_actors::network::Network;
use serde::{Deserialize, Deserializer};

/// The documented defaults, embedded.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The path `--config` defaults to.
pub const DEFAULT_PATH: &str = "config/default.toml";

/// Why the configuration could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the line.
        message: String,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
    /// Everything wrong with the configuration, each a line `section.key: what`.
    #[error("config file {}: {}", path.display(), list_problems(problems))]
    Problems {
        /// The file.
        path: PathBuf,
        /// What is wrong, one problem a line.
        problems: Vec<String>,
    },
    /// The token signing key is missing or unusable.
    #[error("signing key: {0}")]
    SigningKey(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP serving.
    pub server: ServerConfig,
    /// Where clusters and memberships are kept.
    pub store: StoreConfig,
    /// Tokens.
    pub auth: AuthConfig,
    /// Authorization.
    pub policy: PolicyConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Rules for clusters and their kubeconfigs.
    pub clusters: ClustersConfig,
    /// Browser login: providers and group rules.
    pub login: crate::config::login::LoginConfig,
    /// Browser sessions.
    pub sessions: crate::config::login::SessionConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to serve plain HTTP on; `None` (written `"off"`): no plain HTTP.
    #[serde(deserialize_with = "listener")]
    pub listen: Option<SocketAddr>,
    /// Address to serve HTTPS on; `None` (written `"off"`): no HTTPS.
    #[serde(deserialize_with = "listener")]
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert_file: PathBuf,
    /// PEM private key for HTTPS.
    pub tls_key_file: PathBuf,
    /// Create a self-signed CA and certificate at those paths when they are missing.
    pub tls_self_signed: bool,
    /// The URL clients reach kubegate at (for generated kubeconfigs); absent: taken
    /// from each request's scheme and Host.
    pub public_url: Option<String>,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// How long in-flight requests may take to finish at shutdown.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Offer HTTP/2 over TLS (ALPN `h2`); HTTP/1.1 is always offered.
    pub http2: bool,
    /// How often the certificate files are checked for changes (0s: only on SIGHUP).
    #[serde(deserialize_with = "duration")]
    pub tls_reload_interval: Duration,
    /// Requests whose headers (names and values) are larger are refused with 431.
    pub max_header_bytes: usize,
    /// How long an idle connection is kept open between requests (0s: not kept).
    #[serde(deserialize_with = "duration")]
    pub keep_alive: Duration,
    /// Time a client has to send a request's headers once connected (0s: no limit).
    /// Bodies and responses (watches) have no such limit.
    #[serde(deserialize_with = "duration")]
    pub client_request_timeout: Duration,
    /// Path prefixes with a per-client rate limit (login and token endpoints).
    pub rate_limited_paths: Vec<String>,
    /// Requests per minute each client may send to each limited prefix (0: no limit)...
    pub rate_limit_per_minute: u32,
    /// ...after a first burst of this many.
    pub rate_limit_burst: u32,
    /// Peers (load balancers, ingresses) whose `X-Forwarded-For` names the client for
    /// the rate limit.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<Network>,
    /// The Linux scheduling policy of kubegate's threads (the README's "Scheduling").
    pub scheduling: Scheduling,
}

/// `server.scheduling`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "one of batch, normal")]
pub enum Scheduling {
    /// `SCHED_BATCH`: a thread woken by its socket does not preempt the running one.
    Batch,
    /// The policy kubegate was started with (`SCHED_OTHER`, unless started otherwise),
    /// left as it is.
    Normal,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where clusters are kept: `file` (the local directory `path`) or `vault`.
    pub kind: StoreKind,
    /// The local directory: clusters (kind `file`), memberships, the signing key.
    pub path: PathBuf,
    /// `[store.vault]`, for kind `vault`.
    pub vault: Option<VaultConfig>,
}

/// `store.kind`: where clusters are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "one of file, vault")]
pub enum StoreKind {
    /// Files in the local directory `store.path`, mode 0600.
    File,
    /// The `[store.vault]` server (KV version 2).
    Vault,
}

/// `[store.vault]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `https://vault.example:8200`
    pub address: String,
    /// KV version 2 mount.
    #[serde(default = "defaults::vault_mount")]
    pub mount: String,
    /// Path under the mount: records live at `{prefix}/orgs/{org}/clusters/{id}`.
    #[serde(default = "defaults::vault_prefix")]
    pub prefix: String,
    /// How kubegate logs in to Vault: `token`, `approle` or `kubernetes`.
    #[serde(default = "defaults::vault_auth")]
    pub auth: VaultAuthKind,
    /// File holding the token (auth `token`); else `VAULT_TOKEN` from the environment.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// AppRole auth mount.
    #[serde(default = "defaults::approle_mount")]
    pub approle_mount: String,
    /// AppRole role id.
    #[serde(default)]
    pub role_id: Option<String>,
    /// File holding the AppRole secret id; else `KUBEGATE_VAULT_SECRET_ID`.
    #[serde(default)]
    pub secret_id_file: Option<PathBuf>,
    /// Kubernetes auth mount.
    #[serde(default = "defaults::kubernetes_mount")]
    pub kubernetes_mount: String,
    /// Kubernetes auth role.
    #[serde(default)]
    pub kubernetes_role: Option<String>,
    /// The service account token kubegate logs in with.
    #[serde(default = "defaults::jwt_file")]
    pub jwt_file: PathBuf,
    /// Timeout of each call to Vault.
    #[serde(default = "defaults::vault_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// `store.vault.auth`: how kubegate logs in to Vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "lowercase",
    expecting = "one of token, approle, kubernetes"
)]
pub enum VaultAuthKind {
    /// A token from `token_file`, else from `VAULT_TOKEN`.
    Token,
    /// AppRole: `role_id`, and the secret id from `secret_id_file`, else from
    /// `KUBEGATE_VAULT_SECRET_ID`.
    AppRole,
    /// Kubernetes auth: `kubernetes_role`, with the service account token `jwt_file`.
    Kubernetes,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `iss` of issued tokens, and the only issuer accepted.
    pub issuer: String,
    /// `aud` of issued tokens, and the only audience accepted.
    pub audience: String,
    /// File holding the HS256 signing key; created with a random key when missing.
    /// The environment variable `KUBEGATE_SIGNING_KEY` takes precedence.
    pub signing_key_file: PathBuf,
    /// Lifetime of a token when none is asked for.
    #[serde(deserialize_with = "duration")]
    pub default_ttl: Duration,
    /// Longest lifetime a token may be given.
    #[serde(deserialize_with = "duration")]
    pub max_ttl: Duration,
    /// Where token records and revocations are kept: `file` (the data directory) or
    /// `vault` (`[store.vault]`; shared by replicas).
    pub token_store: TokenStoreKind,
    /// How often the revocations are read from the token store, so that a token revoked
    /// on another replica is refused here within this time.
    #[serde(deserialize_with = "duration")]
    pub revocation_poll: Duration,
    /// Lifetime of the access tokens of a kubectl login session (`kubegate login`).
    #[serde(deserialize_with = "duration")]
    pub kubectl_token_ttl: Duration,
}

/// `auth.token_store`: where token records and revocations are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "one of file, vault")]
pub enum TokenStoreKind {
    /// `tokens.json` in `store.path`.
    File,
    /// The `[store.vault]` server, shared by replicas.
    Vault,
}

/// `[policy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The Casbin model; absent: the embedded one ([`DEFAULT_MODEL`]).
    pub model: Option<PathBuf>,
    /// The policy lines; absent: the embedded ones ([`DEFAULT_POLICY`]), which a reload
    /// cannot change.
    pub policy: Option<PathBuf>,
    /// How long a request waits for a decision before it is denied.
    #[serde(deserialize_with = "duration")]
    pub decision_timeout: Duration,
    /// How often the member store is checked for changes made by other processes.
    #[serde(deserialize_with = "duration")]
    pub member_poll: Duration,
    /// Subjects that may do anything in every org, manage every org's members and
    /// reload the policy.
    pub global_admins: Vec<String>,
    /// Where policy lines and memberships live: `file` (`policy` and the member store
    /// in `store.path`) or `postgres` (Casbin's `casbin_rule` table).
    pub storage: PolicyStorage,
    /// With `storage = "postgres"`: `host=... user=... dbname=...` or `postgres://...`.
    pub postgres_url: Option<String>,
}

impl PolicyConfig {
    /// The model: the file `policy.model`, or the embedded one.
    pub fn model_source(&self) -> kubegate_actors::policy::ModelSource {
        match &self.model {
            Some(path) => kubegate_actors::policy::ModelSource::File(path.clone()),
            None => kubegate_actors::policy::ModelSource::Text {
                name: "the embedded model".into(),
                text: DEFAULT_MODEL.into(),
            },
        }
    }

    /// The policy lines: the file `policy.policy`, or the embedded ones.
    pub fn policy_text(&self) -> Result<String, ConfigError> {
        match &self.policy {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!("cannot read the policy {}: {e}", path.display()))
            }),
            None => Ok(DEFAULT_POLICY.to_string()),
        }
    }

    /// What the policy lines are called: the file, or the embedded policy.
    pub fn describe_policy(&self) -> String {
        match &self.policy {
            Some(path) => path.display().to_string(),
            None => "the embedded default policy".into(),
        }
    }
}

/// `policy.storage`: where policy lines and memberships live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "one of file, postgres")]
pub enum PolicyStorage {
    /// The file `policy.policy`, and the member store in `store.path`.
    File,
    /// Casbin's `casbin_rule` table at `policy.postgres_url`.
    Postgres,
}

/// An entry of `audit.sinks`: where audit events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "one of file, stdout, postgres")]
pub enum AuditSinkKind {
    /// The JSON-lines file `audit.file`, rotated.
    File,
    /// Standard output, for container log pipelines.
    Stdout,
    /// The table `kubegate_audit` at `audit.postgres_url` (which also serves the query
    /// API).
    Postgres,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where events go, one or several of `file`, `stdout`, `postgres`.
    pub sinks: Vec<AuditSinkKind>,
    /// The JSON-lines file.
    pub file: PathBuf,
    /// The file is rotated when it would grow past this many bytes; 0: never. Rotated
    /// files are gzip-compressed in the background and kept.
    pub max_file_bytes: u64,
    /// Keep only the newest this many rotated files (0: none); unset: every one.
    pub keep_files: Option<usize>,
    /// Remove rotated files whose last event is older than this (`"90d"`); unset: never.
    #[serde(deserialize_with = "optional_duration")]
    pub max_age: Option<Duration>,
    /// With the `postgres` sink: `host=... user=... dbname=...`.
    pub postgres_url: Option<String>,
    /// Events waiting for one sink, past which they go to a spill file.
    pub max_queue: usize,
    /// Where spill files go.
    pub spill_dir: PathBuf,
    /// 401s recorded one by one per client in each `denial_window`; the rest are
    /// counted into one summary event (0: record every one).
    pub denials_per_client: u64,
    /// The window of `denials_per_client`.
    #[serde(deserialize_with = "duration")]
    pub denial_window: Duration,
    /// Record the bodies of writes (POST, PUT, PATCH), redacted, up to `max_body_bytes`.
    pub request_bodies: bool,
    /// Bodies longer than this are recorded as truncated.
    pub max_body_bytes: usize,
    /// Events written together.
    pub batch: usize,
    /// Longest time an event waits before it is written.
    #[serde(deserialize_with = "duration")]
    pub flush_interval: Duration,
    /// Where exec and attach recordings go (`{dir}/{org}/{request id}.cast`).
    pub recordings_dir: PathBuf,
    /// A recording stops (the session goes on) past this many bytes.
    pub recording_max_bytes: u64,
    /// Record what people type (off: typed secrets would be recorded).
    pub record_stdin: bool,
    /// Recordings older than this are removed (checked hourly); 0: kept.
    #[serde(deserialize_with = "duration")]
    pub recording_retention: Duration,
}

/// `[clusters]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClustersConfig {
    /// Accept `http://` API servers.
    pub allow_insecure_http: bool,
    /// Time allowed to connect (TCP and TLS) to an API server.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Time the API server has to answer an upgrade (exec, attach, port-forward) once
    /// connected: it may have to reach the kubelet first. 504 after it.
    #[serde(deserialize_with = "duration")]
    pub upgrade_timeout: Duration,
    /// Watches carried on one HTTP/2 connection to an API server that offers HTTP/2
    /// (more open another connection); 0: watches over HTTP/1.1, a connection each.
    pub watch_streams_per_connection: usize,
    /// Proxy instances unused this long are dropped (and rebuilt on demand); 0: never.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// API servers may not be in these address ranges (the SSRF guard).
    #[serde(deserialize_with = "networks")]
    pub denied_networks: Vec<Network>,
    /// Exec credential plugins kubeconfigs may use, by their exact `command`.
    pub allowed_exec_plugins: Vec<String>,
    /// On clusters that impersonate: what comes before each login group in
    /// `Impersonate-Group` (`{provider}` stands for the login provider's name).
    pub impersonation_group_prefix: String,
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Network>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|n| n.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// A listening address (`127.0.0.1:9090`, `[::]:9443`), or `"off"`: nothing served there.
fn listener<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "\"{text}\" is not an address (an IP and a port, e.g. 127.0.0.1:9090) or \"off\""
        ))
    })
}

/// A duration in humantime form (`10s`, `24h`), with a message that says so.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("\"{text}\" is not a duration (e.g. 10s, 24h): {e}"))
    })
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn list_problems(problems: &[String]) -> String {
    match problems {
        [one] => one.clone(),
        many => {
            let mut text = format!("{} problems:", many.len());
            for problem in many {
                text.push_str("\n  - ");
                text.push_str(&problem.replace('\n', "\n    "));
            }
            text
        }
    }
}

impl Config {
    /// Reads `path`; the default path falls back to the embedded defaults when absent.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&Config::read_text(path)?, path)
    }

    /// Reads `path` like [`Config::load`], and checks what the configuration names
    /// outside itself: files (policy, model, certificates, secrets) and secrets in the
    /// environment. Every problem found is reported at once; `serve` and `check-config`
    /// start with this.
    pub fn load_checked(path: &Path) -> Result<Config, ConfigError> {
        let text = Config::read_text(path)?;
        for warning in secrets_in_file(&text) {
            log::warn!("{}: {warning}", path.display());
        }
        let (config, mut problems) = Config::diagnose(&text, std::env::vars());
        if let Some(config) = &config {
            problems.extend(config.environment_problems());
        }
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError::Problems {
                path: path.to_path_buf(),
                problems,
            }),
        }
    }

    fn read_text(path: &Path) -> Result<String, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                Ok(DEFAULT_TOML.to_string())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses TOML text; `path` is only for messages. Environment overrides are applied
    /// (see [`Config::parse_with`]).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, std::env::vars())
    }

    /// Parses TOML text, then applies the overrides among `env`: a variable
    /// `KUBEGATE_<SECTION>__<KEY>` (e.g. `KUBEGATE_SERVER__LISTEN=0.0.0.0:9090`,
    /// `KUBEGATE_STORE__VAULT__ADDRESS=...`) sets `section.key`; its value is read as a TOML
    /// value when it is one (a number, `true`, `["a","b"]`), else as a string.
    ///
    /// Every problem found is reported at once ([`ConfigError::Problems`]): unknown keys,
    /// values of the wrong type, missing keys (the few without a default, such as
    /// `store.vault.address`), then values out of range.
    pub fn parse_with(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (config, problems) = Config::diagnose(text, env);
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError::Problems {
                path: path.to_path_buf(),
                problems,
            }),
        }
    }

    /// The embedded defaults.
    pub fn defaults() -> Config {
        Config::parse(DEFAULT_TOML, Path::new("(embedded defaults)"))
            .expect("embedded defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::defaults();
        assert_eq!(c.server.listen.unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(c.server.listen_tls.unwrap().to_string(), "127.0.0.1:9443");
        assert_eq!(c.auth.default_ttl, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn the_compose_config_parses() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/compose.toml"))
                .unwrap();
        Config::parse(&text, Path::new("config/compose.toml")).unwrap();
    }

    #[test]
    fn a_vault_store_is_configured_in_toml() {
        let vault = DEFAULT_TOML.replace(
            "kind = \"file\"\npath = \"data\"",
            "kind = \"vault\"\npath = \"data\"\n\n[store.vault]\naddress = \"https://vault:8200\"\nauth = \"approle\"\nrole_id = \"r\"",
        );
        assert_ne!(vault, DEFAULT_TOML, "the test edits the store section");
        let c = Config::parse(&vault, Path::new("x.toml")).unwrap();
        let v = c.store.vault.unwrap();
        assert_eq!(
            (c.store.kind, v.mount.as_str(), v.prefix.as_str()),
            (StoreKind::Vault, "secret", "kubegate")
        );
        let no_role = vault.replace("role_id = \"r\"", "");
        let e = Config::parse(&no_role, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.vault.role_id: is required"), "{e}");
        let bad = vault.replace("kind = \"vault\"", "kind = \"consul\"");
        let e = Config::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        // the choices are named (until the kind was an enum: "is not supported (use
        // \"file\" or \"vault\")")
        assert!(
            e.contains("store.kind: \"consul\" is not one of file, vault"),
            "{e}"
        );
    }
}
