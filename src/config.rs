//! kubegate's configuration: plain serde data with named defaults.
//!
//! `config/default.toml` documents every key. When the file given with `--config` is the
//! default one and does not exist, the same defaults are used (they are embedded), so
//! `kubegate serve` runs from anywhere. Relative paths resolve against the working
//! directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubegate_actors::network::Network;
use serde::{Deserialize, Deserializer};

/// The documented defaults, embedded.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

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
    /// The token signing key is missing or unusable.
    #[error("signing key: {0}")]
    SigningKey(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to serve plain HTTP on; absent: no plain HTTP.
    pub listen: Option<SocketAddr>,
    /// Address to serve HTTPS on; absent: no HTTPS.
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert_file: PathBuf,
    /// PEM private key for HTTPS.
    pub tls_key_file: PathBuf,
    /// Create a self-signed CA and certificate at those paths when they are missing.
    pub tls_self_signed: bool,
    /// The URL clients reach kubegate at (for generated kubeconfigs); absent: taken
    /// from each request's scheme and Host.
    #[serde(default)]
    pub public_url: Option<String>,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// How long in-flight requests may take to finish at shutdown.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Offer HTTP/2 over TLS (ALPN `h2`); HTTP/1.1 is always offered.
    #[serde(default)]
    pub http2: bool,
    /// How often the certificate files are checked for changes (0s: only on SIGHUP).
    #[serde(default = "default_tls_reload_interval", deserialize_with = "duration")]
    pub tls_reload_interval: Duration,
    /// Requests whose headers (names and values) are larger are refused with 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// How long an idle connection is kept open between requests (0s: not kept).
    #[serde(default = "default_keep_alive", deserialize_with = "duration")]
    pub keep_alive: Duration,
    /// Time a client has to send a request's headers once connected (0s: no limit).
    /// Bodies and responses (watches) have no such limit.
    #[serde(
        default = "default_client_request_timeout",
        deserialize_with = "duration"
    )]
    pub client_request_timeout: Duration,
    /// Path prefixes with a per-client rate limit (login and token endpoints).
    #[serde(default = "default_rate_limited_paths")]
    pub rate_limited_paths: Vec<String>,
    /// Requests per minute each client may send to each limited prefix (0: no limit)...
    #[serde(default = "default_rate_limit_per_minute")]
    pub rate_limit_per_minute: u32,
    /// ...after a first burst of this many.
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// Peers (load balancers, ingresses) whose `X-Forwarded-For` names the client for
    /// the rate limit.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<Network>,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_header_bytes() -> usize {
    16 << 10
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(75)
}
fn default_client_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_rate_limited_paths() -> Vec<String> {
    vec!["/auth/".into(), "/pipeline/api/v1/token".into()]
}
fn default_rate_limit_per_minute() -> u32 {
    30
}
fn default_rate_limit_burst() -> u32 {
    10
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Where clusters are kept: `file` (the local directory `path`) or `vault`.
    pub kind: String,
    /// The local directory: clusters (kind `file`), memberships, the signing key.
    pub path: PathBuf,
    /// `[store.vault]`, for kind `vault`.
    #[serde(default)]
    pub vault: Option<VaultConfig>,
}

/// `[store.vault]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `https://vault.example:8200`
    pub address: String,
    /// KV version 2 mount.
    #[serde(default = "default_vault_mount")]
    pub mount: String,
    /// Path under the mount: records live at `{prefix}/orgs/{org}/clusters/{id}`.
    #[serde(default = "default_vault_prefix")]
    pub prefix: String,
    /// `token`, `approle` or `kubernetes`.
    #[serde(default = "default_vault_auth")]
    pub auth: String,
    /// File holding the token (auth `token`); else `VAULT_TOKEN` from the environment.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// AppRole auth mount.
    #[serde(default = "default_approle_mount")]
    pub approle_mount: String,
    /// AppRole role id.
    #[serde(default)]
    pub role_id: Option<String>,
    /// File holding the AppRole secret id; else `KUBEGATE_VAULT_SECRET_ID`.
    #[serde(default)]
    pub secret_id_file: Option<PathBuf>,
    /// Kubernetes auth mount.
    #[serde(default = "default_kubernetes_mount")]
    pub kubernetes_mount: String,
    /// Kubernetes auth role.
    #[serde(default)]
    pub kubernetes_role: Option<String>,
    /// The service account token kubegate logs in with.
    #[serde(default = "default_jwt_file")]
    pub jwt_file: PathBuf,
    /// Timeout of each call to Vault.
    #[serde(default = "default_vault_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_vault_mount() -> String {
    "secret".into()
}
fn default_vault_prefix() -> String {
    "kubegate".into()
}
fn default_vault_auth() -> String {
    "token".into()
}
fn default_approle_mount() -> String {
    "approle".into()
}
fn default_kubernetes_mount() -> String {
    "kubernetes".into()
}
fn default_jwt_file() -> PathBuf {
    "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
}
fn default_vault_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

/// `[policy]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The Casbin model.
    pub model: PathBuf,
    /// The policy lines.
    pub policy: PathBuf,
    /// How long a request waits for a decision before it is denied.
    #[serde(deserialize_with = "duration")]
    pub decision_timeout: Duration,
    /// How often the member store is checked for changes made by other processes.
    #[serde(deserialize_with = "duration")]
    pub member_poll: Duration,
    /// Subjects that may do anything in every org, manage every org's members and
    /// reload the policy.
    #[serde(default)]
    pub global_admins: Vec<String>,
    /// Where policy lines and memberships live: `file` (`policy` and the member store
    /// in `store.path`) or `postgres` (Casbin's `casbin_rule` table).
    #[serde(default = "default_policy_storage")]
    pub storage: String,
    /// With `storage = "postgres"`: `host=... user=... dbname=...` or `postgres://...`.
    #[serde(default)]
    pub postgres_url: Option<String>,
}

fn default_audit_sinks() -> Vec<String> {
    vec!["file".into()]
}
fn default_max_file_bytes() -> u64 {
    100 << 20
}
fn default_keep_files() -> usize {
    5
}
fn default_max_queue() -> usize {
    100_000
}
fn default_spill_dir() -> PathBuf {
    "data/audit-spill".into()
}

fn default_denials_per_client() -> u64 {
    20
}
fn default_denial_window() -> Duration {
    Duration::from_secs(10)
}
fn default_max_body_bytes() -> usize {
    64 << 10
}

fn default_policy_storage() -> String {
    "file".into()
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where events go, one or several of `file`, `stdout`, `postgres`.
    #[serde(default = "default_audit_sinks")]
    pub sinks: Vec<String>,
    /// The JSON-lines file.
    pub file: PathBuf,
    /// The file is rotated when it would grow past this many bytes; 0: never.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` ... `.N`).
    #[serde(default = "default_keep_files")]
    pub keep_files: usize,
    /// With the `postgres` sink: `host=... user=... dbname=...`.
    #[serde(default)]
    pub postgres_url: Option<String>,
    /// Events waiting for one sink, past which they go to a spill file.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Where spill files go.
    #[serde(default = "default_spill_dir")]
    pub spill_dir: PathBuf,
    /// 401s recorded one by one per client in each `denial_window`; the rest are
    /// counted into one summary event (0: record every one).
    #[serde(default = "default_denials_per_client")]
    pub denials_per_client: u64,
    /// The window of `denials_per_client`.
    #[serde(default = "default_denial_window", deserialize_with = "duration")]
    pub denial_window: Duration,
    /// Record the bodies of writes (POST, PUT, PATCH), redacted, up to `max_body_bytes`.
    #[serde(default)]
    pub request_bodies: bool,
    /// Bodies longer than this are recorded as truncated.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Events written together.
    pub batch: usize,
    /// Longest time an event waits before it is written.
    #[serde(deserialize_with = "duration")]
    pub flush_interval: Duration,
}

/// `[clusters]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClustersConfig {
    /// Accept `http://` API servers.
    pub allow_insecure_http: bool,
    /// Time allowed to connect (TCP and TLS) to an API server.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Proxy instances unused this long are dropped (and rebuilt on demand); 0: never.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// API servers may not be in these address ranges (the SSRF guard).
    #[serde(default, deserialize_with = "networks")]
    pub denied_networks: Vec<Network>,
    /// Exec credential plugins kubeconfigs may use, by their exact `command`.
    #[serde(default)]
    pub allowed_exec_plugins: Vec<String>,
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Network>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|n| n.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("\"{text}\" is not a duration (e.g. 10s, 24h): {e}"))
    })
}

impl Config {
    /// Reads `path`; the default path falls back to the embedded defaults when absent.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_PATH) =>
            {
                DEFAULT_TOML.to_string()
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Config::parse(&text, path)
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
    pub fn parse_with(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let mut overridden = false;
        for (name, value) in env {
            let Some(key) = name.strip_prefix("KUBEGATE_") else {
                continue;
            };
            if !key.contains("__") {
                // KUBEGATE_SIGNING_KEY and KUBEGATE_VAULT_SECRET_ID are secrets, not keys
                continue;
            }
            let parts: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let mut at = &mut table;
            for part in &parts[..parts.len() - 1] {
                let entry = at
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                at = entry
                    .as_table_mut()
                    .ok_or_else(|| parse_error(format!("{name}: {part} is not a section")))?;
            }
            at.insert(parts[parts.len() - 1].clone(), value);
            overridden = true;
        }
        let config: Config = if overridden {
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    parse_error(format!(
                        "{} (after KUBEGATE_ environment overrides)",
                        e.message()
                    ))
                })?
        } else {
            toml::from_str(text).map_err(|e| parse_error(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    /// The embedded defaults.
    pub fn defaults() -> Config {
        Config::parse(DEFAULT_TOML, Path::new("(embedded defaults)"))
            .expect("embedded defaults parse")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        match (self.store.kind.as_str(), &self.store.vault) {
            ("file", _) => {}
            ("vault", None) => {
                problems.push("store.vault: is required with store.kind = \"vault\"".to_string())
            }
            ("vault", Some(vault)) => {
                if !(vault.address.starts_with("https://") || vault.address.starts_with("http://"))
                {
                    problems.push(format!(
                        "store.vault.address: \"{}\" must be an http(s) URL",
                        vault.address
                    ));
                }
                match vault.auth.as_str() {
                    "token" => {}
                    "approle" if vault.role_id.is_none() => problems.push(
                        "store.vault.role_id: is required with auth = \"approle\"".to_string(),
                    ),
                    "kubernetes" if vault.kubernetes_role.is_none() => problems.push(
                        "store.vault.kubernetes_role: is required with auth = \"kubernetes\""
                            .to_string(),
                    ),
                    "approle" | "kubernetes" => {}
                    other => problems.push(format!(
                        "store.vault.auth: \"{other}\" is not one of token, approle, kubernetes"
                    )),
                }
            }
            (other, _) => problems.push(format!(
                "store.kind: \"{other}\" is not supported (use \"file\" or \"vault\")"
            )),
        }
        if self.auth.default_ttl > self.auth.max_ttl {
            problems.push("auth.default_ttl: is longer than auth.max_ttl".to_string());
        }
        if self.auth.default_ttl.is_zero() {
            problems.push("auth.default_ttl: must be more than 0".to_string());
        }
        if self.server.listen.is_none() && self.server.listen_tls.is_none() {
            problems.push("server: set listen, listen_tls or both".to_string());
        }
        match (self.policy.storage.as_str(), &self.policy.postgres_url) {
            ("file", _) | ("postgres", Some(_)) => {}
            ("postgres", None) => problems.push(
                "policy.postgres_url: is required with policy.storage = \"postgres\"".to_string(),
            ),
            (other, _) => problems.push(format!(
                "policy.storage: \"{other}\" is not one of file, postgres"
            )),
        }
        if let Some(url) = &self.server.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.push(format!(
                    "server.public_url: \"{url}\" must start with https:// or http://"
                ));
            }
        }
        for sink in &self.audit.sinks {
            if !matches!(sink.as_str(), "file" | "stdout" | "postgres") {
                problems.push(format!(
                    "audit.sinks: \"{sink}\" is not one of file, stdout, postgres"
                ));
            }
        }
        if self.audit.sinks.is_empty() {
            problems.push("audit.sinks: name at least one sink".to_string());
        }
        if self.audit.sinks.iter().any(|s| s == "postgres") && self.audit.postgres_url.is_none() {
            problems.push("audit.postgres_url: is required with the postgres sink".to_string());
        }
        if self.audit.batch == 0 {
            problems.push("audit.batch: must be at least 1".to_string());
        }
        if self.policy.decision_timeout.is_zero() {
            problems.push("policy.decision_timeout: must be more than 0".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
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
            (c.store.kind.as_str(), v.mount.as_str(), v.prefix.as_str()),
            ("vault", "secret", "kubegate")
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
        assert!(e.contains("store.kind: \"consul\" is not supported"), "{e}");
    }

    #[test]
    fn environment_overrides() {
        let env = [
            ("KUBEGATE_SERVER__LISTEN", "0.0.0.0:8080"),
            ("KUBEGATE_SERVER__WORKERS", "3"),
            ("KUBEGATE_AUDIT__SINKS", "[\"file\", \"stdout\"]"),
            ("KUBEGATE_POLICY__GLOBAL_ADMINS", "[\"root\"]"),
            ("KUBEGATE_CLUSTERS__CONNECT_TIMEOUT", "3s"),
            ("KUBEGATE_SIGNING_KEY", "not a key path"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::parse_with(DEFAULT_TOML, Path::new("x.toml"), env).unwrap();
        assert_eq!(c.server.listen.unwrap().to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.workers, 3);
        assert_eq!(c.audit.sinks, vec!["file", "stdout"]);
        assert_eq!(c.policy.global_admins, vec!["root"]);
        assert_eq!(c.clusters.connect_timeout, Duration::from_secs(3));
        let bad = [("KUBEGATE_SERVER__LISTN".to_string(), "x".to_string())];
        let e = Config::parse_with(DEFAULT_TOML, Path::new("x.toml"), bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn") && e.contains("environment"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_named() {
        let bad = DEFAULT_TOML.replace("[server]", "[server]\nlisten_port = 1");
        let e = Config::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "{e}");
        let bad = DEFAULT_TOML.replace("connect_timeout = \"10s\"", "connect_timeout = \"soon\"");
        let e = Config::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a duration"), "{e}");
    }
}
