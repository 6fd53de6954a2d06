//! What comes from outside the configuration file: overrides of its keys from the
//! environment (`KUBEGATE_<SECTION>__<KEY>`), and secrets, read from a file or the
//! environment, never written in the configuration file itself.

use std::path::Path;

use super::check::get_at;
use super::ConfigError;

/// The keys the environment set, each with the variable that set it.
pub(super) struct Overrides(Vec<(String, String)>);

impl Overrides {
    /// Where the value of `key` came from, for messages: ` (set by the environment
    /// variable ...)` when it (or a section holding it) was set by the environment, else
    /// nothing.
    pub(super) fn origin(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == key || key.starts_with(&format!("{k}.")))
            .map(|(_, var)| format!(" (set by the environment variable {var})"))
            .unwrap_or_default()
    }
}

/// Applies the overrides among `env` to `table`: a variable `KUBEGATE_<SECTION>__<KEY>`
/// sets `section.key`, its value read as a TOML value when it is one, else as a string.
/// Returns the keys set, and the variables that could not be applied.
pub(super) fn overlay(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> (Overrides, Vec<String>) {
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
        match insert_override(table, &parts, value) {
            Ok(()) => from_env.push((parts.join("."), name)),
            Err(part) => problems.push(format!("{name}: {part} is not a section")),
        }
    }
    (Overrides(from_env), problems)
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::{AuditSinkKind, Config, DEFAULT_TOML};

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
        assert_eq!(
            c.audit.sinks,
            vec![AuditSinkKind::File, AuditSinkKind::Stdout]
        );
        assert_eq!(c.policy.global_admins, vec!["root"]);
        assert_eq!(c.clusters.connect_timeout, Duration::from_secs(3));
        let bad = [("KUBEGATE_SERVER__LISTN".to_string(), "x".to_string())];
        let e = Config::parse_with(DEFAULT_TOML, Path::new("x.toml"), bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn") && e.contains("environment"), "{e}");
    }
}
