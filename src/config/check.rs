//! Checking a configuration as a whole: every key that does not deserialize is named
//! (unknown keys, values of the wrong type, missing keys), then values out of range or
//! not fitting together, then what the configuration names outside itself (files,
//! secrets). Every problem is collected, so that one run lists them all.

use std::path::Path;

use super::{
    env, read_secret, tls, AuditSinkKind, Config, ConfigError, PolicyStorage, StoreKind,
    TokenStoreKind, VaultAuthKind, DEFAULT_TOML,
};

impl Config {
    /// What is wrong outside the file: files it names that cannot be read or used, and
    /// secrets that are neither in a file nor in the environment.
    pub fn environment_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let readable = |key: &str, path: &Path, problems: &mut Vec<String>| {
            if let Err(e) = std::fs::read(path) {
                problems.push(format!("{key}: cannot read {}: {e}", path.display()));
            }
        };
        if let Some(model) = &self.policy.model {
            readable("policy.model", model, &mut problems);
        }
        if let Some(policy) = &self.policy.policy {
            readable("policy.policy", policy, &mut problems);
        }
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
        // the TLS options kubegate reads itself (sslmode, sslrootcert); the server is
        // asked by check-config and at start-up
        let postgres = [
            (
                "policy.postgres_url",
                self.policy.postgres_url.as_ref(),
                self.policy.storage == PolicyStorage::Postgres,
            ),
            (
                "audit.postgres_url",
                self.audit.postgres_url.as_ref(),
                self.audit.sinks.contains(&AuditSinkKind::Postgres),
            ),
        ];
        for (key, url, used) in postgres {
            if let (Some(url), true) = (url, used) {
                if let Err(e) = kubegate_actors::postgres_tls::PostgresTarget::parse(url) {
                    problems.push(format!("{key}: {e}"));
                }
            }
        }
        if let (Some(vault), StoreKind::Vault) = (&self.store.vault, self.store.kind) {
            let secret = match vault.auth {
                VaultAuthKind::AppRole => read_secret(
                    vault.secret_id_file.as_deref(),
                    "KUBEGATE_VAULT_SECRET_ID",
                    "Vault AppRole secret id",
                )
                .map(drop),
                VaultAuthKind::Kubernetes => {
                    std::fs::read(&vault.jwt_file).map(drop).map_err(|e| {
                        ConfigError::Invalid(format!(
                            "cannot read the service account token {}: {e}",
                            vault.jwt_file.display()
                        ))
                    })
                }
                VaultAuthKind::Token => {
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
        let (overrides, mut problems) = env::overlay(&mut table, env);

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
            problems.push(format!("{key}: {message}{}", overrides.origin(key)));
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
                            // only keys without a default can be missing (sections
                            // and most keys have one)
                            problems.push(format!("{}: is missing", parts.join(".")));
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

    /// Values out of range or not fitting together, each a line `section.key: what`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (self.store.kind, &self.store.vault) {
            (StoreKind::File, _) => {}
            (StoreKind::Vault, None) => {
                problems.push("store.vault: is required with store.kind = \"vault\"".to_string())
            }
            (StoreKind::Vault, Some(vault)) => {
                if let Err(e) = http_url(&vault.address) {
                    problems.push(format!("store.vault.address: \"{}\" {e}", vault.address));
                }
                match vault.auth {
                    VaultAuthKind::AppRole if vault.role_id.is_none() => problems.push(
                        "store.vault.role_id: is required with auth = \"approle\"".to_string(),
                    ),
                    VaultAuthKind::Kubernetes if vault.kubernetes_role.is_none() => problems.push(
                        "store.vault.kubernetes_role: is required with auth = \"kubernetes\""
                            .to_string(),
                    ),
                    VaultAuthKind::Token | VaultAuthKind::AppRole | VaultAuthKind::Kubernetes => {}
                }
            }
        }
        if self.auth.default_ttl > self.auth.max_ttl {
            problems.push("auth.default_ttl: is longer than auth.max_ttl".to_string());
        }
        match (self.auth.token_store, &self.store.vault) {
            (TokenStoreKind::File, _) | (TokenStoreKind::Vault, Some(_)) => {}
            (TokenStoreKind::Vault, None) => problems
                .push("auth.token_store: \"vault\" needs a [store.vault] section".to_string()),
        }
        if self.auth.revocation_poll.is_zero() {
            problems.push("auth.revocation_poll: must be more than 0".to_string());
        }
        if self.auth.kubectl_token_ttl.is_zero() || self.auth.kubectl_token_ttl > self.auth.max_ttl
        {
            problems.push(
                "auth.kubectl_token_ttl: must be more than 0 and at most auth.max_ttl".to_string(),
            );
        }
        problems.extend(self.login.problems(&self.sessions));
        if self.auth.default_ttl.is_zero() {
            problems.push("auth.default_ttl: must be more than 0".to_string());
        }
        if self.server.listen.is_none() && self.server.listen_tls.is_none() {
            problems.push("server: set listen, listen_tls or both".to_string());
        }
        match (self.policy.storage, &self.policy.postgres_url) {
            (PolicyStorage::File, _) | (PolicyStorage::Postgres, Some(_)) => {}
            (PolicyStorage::Postgres, None) => problems.push(
                "policy.postgres_url: is required with policy.storage = \"postgres\"".to_string(),
            ),
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
        if self.audit.sinks.is_empty() {
            problems.push("audit.sinks: name at least one sink".to_string());
        }
        if self.audit.sinks.contains(&AuditSinkKind::Postgres) && self.audit.postgres_url.is_none()
        {
            problems.push("audit.postgres_url: is required with the postgres sink".to_string());
        }
        if self.audit.max_age.is_some_and(|age| age.is_zero()) {
            problems.push(
                "audit.max_age: must be more than 0 (leave it unset to keep every rotated file)"
                    .to_string(),
            );
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

/// Checks that `url` is an absolute `http://` or `https://` URL with a host.
fn http_url(url: &str) -> Result<(), String> {
    let uri: actix_web::http::Uri = url.parse().map_err(|e| format!("is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        (Some("http" | "https"), _) => Err("has no host".to_string()),
        _ => Err("must start with https:// or http://".to_string()),
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

pub(super) fn get_at<'a>(table: &'a toml::Table, parts: &[&str]) -> Option<&'a toml::Value> {
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
                _ => {
                    let message = match e.message() {
                        m if m.contains(NOT_A_STRING) => {
                            not_a_choice(root, &parts, value).unwrap_or_else(|| explain(m))
                        }
                        m => explain(m),
                    };
                    bad.push((path.join("."), message))
                }
            }
        }
        path.pop();
    }
}

/// serde's wording, in the words of a configuration file: an unknown field is an
/// unknown key; an unknown variant is a value that is not one of those allowed, which are
/// listed.
fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return match rest.split_once("`, expected ") {
            Some((_, expected)) => format!("unknown key (expected {expected})"),
            None => "unknown key".to_string(),
        };
    }
    match unknown_variant(message) {
        Some((value, allowed)) => format!("\"{value}\" is not one of {allowed}"),
        None => message.to_string(),
    }
}

/// The value and the choices of serde's "unknown variant" message, the choices as
/// `a, b, c`.
fn unknown_variant(message: &str) -> Option<(&str, String)> {
    let (value, expected) = message
        .strip_prefix("unknown variant `")?
        .split_once("`, expected ")?;
    // serde lists the variants as "`a`", "`a` or `b`" or "one of `a`, `b`, `c`"
    let allowed = expected
        .strip_prefix("one of ")
        .unwrap_or(expected)
        .replace("` or `", "`, `")
        .replace('`', "");
    Some((value, allowed))
}

/// toml's wording when a choice (an enum) is given a value that is not a string.
const NOT_A_STRING: &str = "invalid type: unit variant, expected string only";

/// What is wrong with `value`, not a string, at `parts` where a choice is wanted: it is
/// tried again as text, for serde to name the choices.
fn not_a_choice(root: &toml::Table, parts: &[&str], value: &toml::Value) -> Option<String> {
    let text = |v: &toml::Value| match v {
        toml::Value::String(_) => v.clone(),
        other => toml::Value::String(other.to_string()),
    };
    let as_text = match value {
        toml::Value::Array(items) => toml::Value::Array(items.iter().map(text).collect()),
        other => text(other),
    };
    let mut candidate = root.clone();
    set_at(&mut candidate, parts, as_text);
    let e = toml::Value::Table(candidate).try_into::<Config>().err()?;
    let (found, allowed) = unknown_variant(e.message())?;
    Some(format!("{found} is not one of {allowed}"))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, DEFAULT_TOML};

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

    #[test]
    fn audit_retention_is_unset_by_default_and_checked_when_set() {
        let config = Config::parse(DEFAULT_TOML, Path::new("x.toml")).unwrap();
        assert_eq!(
            (config.audit.keep_files, config.audit.max_age),
            (None, None),
            "nothing is deleted by default"
        );
        let set = DEFAULT_TOML
            .replace("# keep_files = 100", "keep_files = 20")
            .replace("# max_age = \"90d\"", "max_age = \"30d\"");
        let config = Config::parse(&set, Path::new("x.toml")).unwrap();
        assert_eq!(config.audit.keep_files, Some(20));
        assert_eq!(
            config.audit.max_age,
            Some(std::time::Duration::from_secs(30 * 86400))
        );
        for (bad, problem) in [
            (
                "max_age = \"soon\"",
                "audit.max_age: \"soon\" is not a duration",
            ),
            ("max_age = \"0s\"", "audit.max_age: must be more than 0"),
        ] {
            let text = DEFAULT_TOML.replace("# max_age = \"90d\"", bad);
            let (_, problems) = Config::diagnose(&text, Vec::new());
            assert!(
                problems.iter().any(|p| p.starts_with(problem)),
                "{bad}: {problems:?}"
            );
        }
    }
}
