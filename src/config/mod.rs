//! kubegate's configuration: plain serde data with named defaults.
//!
//! `config/default.toml` documents every key. When the file given with `--config` is the
//! default one and does not exist, the same defaults are used (they are embedded), so
//! `kubegate serve` runs from anywhere. Relative paths resolve against the working
//! directory.

pub mod ldap;
pub mod login;
pub mod tls;

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
    /// Browser login: providers and group rules.
    #[serde(default)]
    pub login: crate::config::login::LoginConfig,
    /// Browser sessions.
    #[serde(default)]
    pub sessions: crate::config::login::SessionConfig,
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
    #[serde(default = "default_http2")]
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

fn default_http2() -> bool {
    true
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
    /// Where token records and revocations are kept: `file` (the data directory) or
    /// `vault` (`[store.vault]`; shared by replicas).
    #[serde(default = "default_token_store")]
    pub token_store: String,
    /// How often the revocations are read from the token store, so that a token revoked
    /// on another replica is refused here within this time.
    #[serde(default = "default_revocation_poll", deserialize_with = "duration")]
    pub revocation_poll: Duration,
}

fn default_token_store() -> String {
    "file".into()
}
fn default_revocation_poll() -> Duration {
    Duration::from_secs(2)
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

/// A duration in humantime form (`10s`, `24h`), with a message that says so.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("\"{text}\" is not a duration (e.g. 10s, 24h): {e}"))
    })
}

/// Connection strings of the file itself that carry a password: each should come from
/// the environment (a secret) instead.
pub fn secrets_in_file(text: &str) -> Vec<String> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (section, key) in [
        ("policy", "postgres_url"),
        ("audit", "postgres_url"),
        ("sessions", "redis_url"),
    ] {
        let Some(value) = get_at(&table, &[section, key]).and_then(toml::Value::as_str) else {
            continue;
        };
        let lower = value.to_ascii_lowercase();
        let in_url = lower
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|authority| authority.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'));
        if lower.contains("password=") || in_url {
            found.push(format!(
                "{section}.{key} holds a password; set it from a secret in the environment \
                 (KUBEGATE_{}__{}) instead of the file",
                section.to_ascii_uppercase(),
                key.to_ascii_uppercase()
            ));
        }
    }
    found
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host.
fn http_url(url: &str) -> Result<(), String> {
    let uri: actix_web::http::Uri = url.parse().map_err(|e| format!("is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        (Some("http" | "https"), _) => Err("has no host".to_string()),
        _ => Err("must start with https:// or http://".to_string()),
    }
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

/// Why a file could not be created at `path`, if it could not: its nearest existing
/// ancestor must be a directory.
fn not_creatable(path: &Path) -> Option<String> {
    let mut at = path.parent();
    while let Some(dir) = at {
        if dir.as_os_str().is_empty() {
            return None; // the working directory
        }
        if dir.exists() {
            return (!dir.is_dir()).then(|| {
                format!(
                    "cannot create {}: {} is not a directory",
                    path.display(),
                    dir.display()
                )
            });
        }
        at = dir.parent();
    }
    None
}

/// Reads a secret from `file` when one is configured, else from the environment variable
/// `env`: secrets never need to be written in the configuration file itself.
pub fn read_secret(
    file: Option<&Path>,
    env: &str,
    what: &str,
) -> Result<secrecy::SecretString, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!(
                "cannot read the {what} file {}: {e}",
                path.display()
            ))
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "the {what} file {} is empty",
                path.display()
            )));
        }
        return Ok(secrecy::SecretString::from(text.to_string()));
    }
    match std::env::var(env) {
        Ok(value) if !value.trim().is_empty() => {
            Ok(secrecy::SecretString::from(value.trim().to_string()))
        }
        _ => Err(ConfigError::Invalid(format!(
            "the {what} is missing: set {env} or the file in the configuration"
        ))),
    }
}

/// The embedded defaults as a table, with a placeholder `[store.vault]` so that the keys
/// of a user's `[store.vault]` can be checked one by one against it.
fn base_table() -> toml::Table {
    let mut base: toml::Table = toml::from_str(DEFAULT_TOML).unwrap_or_default();
    if let Some(store) = base.get_mut("store").and_then(toml::Value::as_table_mut) {
        let mut vault = toml::Table::new();
        vault.insert(
            "address".into(),
            toml::Value::String("https://vault.invalid:8200".into()),
        );
        store.entry("vault").or_insert(toml::Value::Table(vault));
    }
    base
}

/// Sets `parts` (a path of keys) to `value`, creating sections on the way; the error
/// names a key on the way that is not a section.
fn insert_override(
    table: &mut toml::Table,
    parts: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let Some((last, parents)) = parts.split_last() else {
        return Ok(());
    };
    let mut at = table;
    for part in parents {
        at = at
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| part.clone())?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

fn set_at(table: &mut toml::Table, parts: &[&str], value: toml::Value) {
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut at = table;
    for part in parents {
        let entry = at
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry.as_table_mut() {
            Some(next) => at = next,
            None => return,
        }
    }
    at.insert(last.to_string(), value);
}

fn get_at<'a>(table: &'a toml::Table, parts: &[&str]) -> Option<&'a toml::Value> {
    let (last, parents) = parts.split_last()?;
    let mut at = table;
    for part in parents {
        at = at.get(*part)?.as_table()?;
    }
    at.get(*last)
}

/// Puts the default of `parts` in `fixed`, or removes the key when it has no default.
fn replace_with_default(fixed: &mut toml::Table, base: &toml::Table, parts: &[&str]) {
    match get_at(base, parts) {
        Some(default) => set_at(fixed, parts, default.clone()),
        None => {
            let Some((last, parents)) = parts.split_last() else {
                return;
            };
            let mut at = &mut *fixed;
            for part in parents {
                match at.get_mut(*part).and_then(toml::Value::as_table_mut) {
                    Some(next) => at = next,
                    None => return,
                }
            }
            at.remove(*last);
        }
    }
}

/// Tries each key of `user` (at `path`) alone in the defaults `root`; collects the keys
/// that do not deserialize, with the reason. Tables the defaults also have are checked
/// key by key.
fn check_keys(
    root: &toml::Table,
    base: &toml::Table,
    user: &toml::Table,
    path: &mut Vec<String>,
    bad: &mut Vec<(String, String)>,
) {
    for (key, value) in user {
        path.push(key.clone());
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut candidate = root.clone();
        set_at(&mut candidate, &parts, value.clone());
        if let Err(e) = toml::Value::Table(candidate).try_into::<Config>() {
            match (
                value.as_table(),
                base.get(key).and_then(toml::Value::as_table),
            ) {
                (Some(user_table), Some(base_table)) => {
                    check_keys(root, base_table, user_table, path, bad)
                }
                _ => bad.push((path.join("."), explain(e.message()))),
            }
        }
        path.pop();
    }
}

/// serde's wording, in the words of a configuration file.
fn explain(message: &str) -> String {
    match message.strip_prefix("unknown field `") {
        Some(rest) => match rest.split_once("`, expected ") {
            Some((_, expected)) => format!("unknown key (expected {expected})"),
            None => "unknown key".to_string(),
        },
        None => message.to_string(),
    }
}

/// The key a "missing field `x`" message is about: the first table of `fixed` that lacks
/// `x` where the defaults have it.
fn missing_key(message: &str, fixed: &toml::Table, base: &toml::Table) -> Option<Vec<String>> {
    let name = message
        .strip_prefix("missing field `")?
        .split('`')
        .next()?
        .to_string();
    fn find(
        name: &str,
        fixed: &toml::Table,
        base: &toml::Table,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if base.contains_key(name) && !fixed.contains_key(name) {
            path.push(name.to_string());
            return Some(path.clone());
        }
        for (key, value) in fixed {
            if let (Some(f), Some(b)) = (
                value.as_table(),
                base.get(key).and_then(toml::Value::as_table),
            ) {
                path.push(key.clone());
                if let Some(found) = find(name, f, b, path) {
                    return Some(found);
                }
                path.pop();
            }
        }
        None
    }
    find(&name, fixed, base, &mut Vec::new())
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

    /// What is wrong outside the file: files it names that cannot be read or used, and
    /// secrets that are neither in a file nor in the environment.
    pub fn environment_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let readable = |key: &str, path: &Path, problems: &mut Vec<String>| {
            if let Err(e) = std::fs::read(path) {
                problems.push(format!("{key}: cannot read {}: {e}", path.display()));
            }
        };
        readable("policy.model", &self.policy.model, &mut problems);
        readable("policy.policy", &self.policy.policy, &mut problems);
        if self.server.listen_tls.is_some() {
            let (cert, key) = (&self.server.tls_cert_file, &self.server.tls_key_file);
            if cert.exists() || key.exists() || !self.server.tls_self_signed {
                if let Err(e) = tls::load_certified_key(cert, key) {
                    let e = e.to_string();
                    problems.push(format!(
                        "server.tls_cert_file, server.tls_key_file: {}",
                        e.strip_prefix("config: ").unwrap_or(&e)
                    ));
                }
            } else if let Some(problem) = not_creatable(cert) {
                problems.push(format!("server.tls_cert_file: {problem}"));
            }
        }
        match std::env::var("KUBEGATE_SIGNING_KEY") {
            Ok(key) if key.trim().len() < 32 => problems.push(format!(
                "KUBEGATE_SIGNING_KEY: holds {} bytes; use at least 32",
                key.trim().len()
            )),
            Ok(_) => {}
            Err(_) => match std::fs::read_to_string(&self.auth.signing_key_file) {
                Ok(text) if text.trim().len() < 32 => problems.push(format!(
                    "auth.signing_key_file: {} holds {} bytes; use at least 32",
                    self.auth.signing_key_file.display(),
                    text.trim().len()
                )),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(problem) = not_creatable(&self.auth.signing_key_file) {
                        problems.push(format!("auth.signing_key_file: {problem}"));
                    }
                }
                Err(e) => problems.push(format!(
                    "auth.signing_key_file: cannot read {}: {e}",
                    self.auth.signing_key_file.display()
                )),
            },
        }
        if let (Some(vault), "vault") = (&self.store.vault, self.store.kind.as_str()) {
            let secret = match vault.auth.as_str() {
                "approle" => read_secret(
                    vault.secret_id_file.as_deref(),
                    "KUBEGATE_VAULT_SECRET_ID",
                    "Vault AppRole secret id",
                )
                .map(drop),
                "kubernetes" => std::fs::read(&vault.jwt_file).map(drop).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read the service account token {}: {e}",
                        vault.jwt_file.display()
                    ))
                }),
                _ => {
                    read_secret(vault.token_file.as_deref(), "VAULT_TOKEN", "Vault token").map(drop)
                }
            };
            if let Err(e) = secret {
                let e = e.to_string();
                problems.push(format!(
                    "store.vault: {}",
                    e.strip_prefix("config: ").unwrap_or(&e)
                ));
            }
        }
        problems
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
    /// values of the wrong type, missing keys, then values out of range.
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

    /// The configuration of `text` and `env`, and every problem with it. When there are
    /// problems, the configuration returned (if any) has the defaults in place of the
    /// wrong values, so that further checks ([`Config::environment_problems`]) can run.
    pub fn diagnose(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> (Option<Config>, Vec<String>) {
        let mut table: toml::Table = match toml::from_str(text) {
            Ok(table) => table,
            // a syntax error: the parser cannot go on past it
            Err(e) => return (None, vec![e.to_string().trim_end().to_string()]),
        };
        let mut problems = Vec::new();
        let mut from_env: Vec<(String, String)> = Vec::new();
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
            match insert_override(&mut table, &parts, value) {
                Ok(()) => from_env.push((parts.join("."), name)),
                Err(part) => problems.push(format!("{name}: {part} is not a section")),
            }
        }
        // where a key's value came from, for messages
        let origin = |key: &str| {
            from_env
                .iter()
                .find(|(k, _)| k == key || key.starts_with(&format!("{k}.")))
                .map(|(_, var)| format!(" (set by the environment variable {var})"))
                .unwrap_or_default()
        };

        if let Ok(config) = toml::Value::Table(table.clone()).try_into::<Config>() {
            problems.extend(config.problems());
            return (Some(config), problems);
        }

        // Something does not deserialize. Each key is tried alone in the embedded
        // defaults, so that every wrong key is named with its own message; wrong keys are
        // then replaced by their defaults (or dropped) to find missing keys, and what
        // results is checked as a whole.
        let base = base_table();
        let mut fixed = table.clone();
        let mut bad = Vec::new();
        check_keys(&base, &base, &table, &mut Vec::new(), &mut bad);
        for (key, message) in &bad {
            problems.push(format!("{key}: {message}{}", origin(key)));
            let parts: Vec<&str> = key.split('.').collect();
            replace_with_default(&mut fixed, &base, &parts);
        }
        let mut config = None;
        for _ in 0..100 {
            match toml::Value::Table(fixed.clone()).try_into::<Config>() {
                Ok(c) => {
                    config = Some(c);
                    break;
                }
                Err(e) => {
                    let message = e.message().to_string();
                    match missing_key(&message, &fixed, &base) {
                        Some(parts) => {
                            let key = parts.join(".");
                            if parts.len() == 1 {
                                problems.push(format!("[{key}]: the section is missing"));
                            } else {
                                problems.push(format!("{key}: is missing"));
                            }
                            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                            replace_with_default(&mut fixed, &base, &parts);
                        }
                        None => {
                            problems.push(message);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(config) = &config {
            problems.extend(config.problems());
        }
        (config, problems)
    }

    /// The embedded defaults.
    pub fn defaults() -> Config {
        Config::parse(DEFAULT_TOML, Path::new("(embedded defaults)"))
            .expect("embedded defaults parse")
    }

    /// Values out of range or not fitting together, each a line `section.key: what`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (self.store.kind.as_str(), &self.store.vault) {
            ("file", _) => {}
            ("vault", None) => {
                problems.push("store.vault: is required with store.kind = \"vault\"".to_string())
            }
            ("vault", Some(vault)) => {
                if let Err(e) = http_url(&vault.address) {
                    problems.push(format!("store.vault.address: \"{}\" {e}", vault.address));
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
        match (self.auth.token_store.as_str(), &self.store.vault) {
            ("file", _) | ("vault", Some(_)) => {}
            ("vault", None) => problems
                .push("auth.token_store: \"vault\" needs a [store.vault] section".to_string()),
            (other, _) => problems.push(format!(
                "auth.token_store: \"{other}\" is not one of file, vault"
            )),
        }
        if self.auth.revocation_poll.is_zero() {
            problems.push("auth.revocation_poll: must be more than 0".to_string());
        }
        problems.extend(self.login.problems(&self.sessions));
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
            if let Err(e) = http_url(url) {
                problems.push(format!("server.public_url: \"{url}\" {e}"));
            }
        }
        for prefix in &self.server.rate_limited_paths {
            if !prefix.starts_with('/') {
                problems.push(format!(
                    "server.rate_limited_paths: \"{prefix}\" must be a path starting with /"
                ));
            }
        }
        if self.server.max_header_bytes < 1024 {
            problems.push(format!(
                "server.max_header_bytes: {} is too small for any client (at least 1024)",
                self.server.max_header_bytes
            ));
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
        problems
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
