//! Adding and changing clusters: one code path for the CLI and the REST API.
//!
//! A kubeconfig is checked with kube's types and by building its TLS settings before
//! anything is stored, so that a cluster in the store can always be proxied to.

use base64::Engine as _;
use kubegate_actors::kubeconfig::{self, ClusterSpec, KubeconfigRules};
use kubegate_actors::registry::ClusterProxy;
use kubegate_actors::store::{
    ClusterChange, ClusterRecord, ClusterStore, RecordSessions, StoreError,
};
use kubegate_actors::ClusterKey;

/// Why a cluster could not be added or changed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The name is not acceptable.
    #[error("the cluster name \"{0}\" must be 1 to 63 characters of a-z, 0-9, '-', '_' and '.'")]
    BadName(String),
    /// The kubeconfig is refused; the message names the field.
    #[error("invalid kubeconfig: {0}")]
    BadKubeconfig(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Accepts a kubeconfig as YAML, or as base64 of YAML (as the Pipeline API sends it).
pub fn decode_kubeconfig(text: &str) -> String {
    let trimmed = text.trim();
    if !trimmed.contains(['\n', ':', ' ']) {
        let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(compact) {
            if let Ok(yaml) = String::from_utf8(bytes) {
                return yaml;
            }
        }
    }
    text.to_string()
}

fn check_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        });
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadName(name.to_string()))
    }
}

/// Checks a kubeconfig completely: fields, PEM data, TLS settings.
pub fn check_kubeconfig(
    rules: &KubeconfigRules,
    text: &str,
    context: Option<&str>,
) -> Result<ClusterSpec, ClusterError> {
    let spec = kubeconfig::parse(text, context, rules)
        .map_err(|e| ClusterError::BadKubeconfig(e.to_string()))?;
    ClusterProxy::build(ClusterKey { org: 0, cluster: 0 }, String::new(), &spec, 0)
        .map_err(|e| ClusterError::BadKubeconfig(e.to_string()))?;
    Ok(spec)
}

/// A new cluster, as the CLI and the REST API give it.
pub struct NewCluster<'a> {
    /// Its name in the org.
    pub name: &'a str,
    /// The kubeconfig, YAML or base64 of YAML.
    pub kubeconfig: &'a str,
    /// The context to use; `None`: `current-context`.
    pub context: Option<&'a str>,
    /// Whether requests impersonate the person.
    pub impersonate: bool,
    /// Which exec and attach sessions are recorded.
    pub record_sessions: RecordSessions,
}

/// Checks and stores a new cluster.
pub async fn create(
    store: &dyn ClusterStore,
    rules: &KubeconfigRules,
    org: u64,
    new: NewCluster<'_>,
) -> Result<ClusterRecord, ClusterError> {
    check_name(new.name)?;
    let text = decode_kubeconfig(new.kubeconfig);
    check_kubeconfig(rules, &text, new.context)?;
    let mut record =
        ClusterRecord::new(org, 0, new.name, &text, new.context).impersonating(new.impersonate);
    record.record_sessions = new.record_sessions;
    Ok(store.create(&record).await?)
}

/// Checks and stores a change to a cluster (its kubeconfig, its impersonation and
/// recording settings); `None` when there is no such cluster.
pub async fn update(
    store: &dyn ClusterStore,
    rules: &KubeconfigRules,
    key: ClusterKey,
    change: ClusterChange<'_>,
) -> Result<Option<ClusterRecord>, ClusterError> {
    let text = change
        .kubeconfig
        .map(|(text, context)| (decode_kubeconfig(text), context));
    if let Some((text, context)) = &text {
        check_kubeconfig(rules, text, *context)?;
    }
    let change = ClusterChange {
        kubeconfig: text.as_ref().map(|(t, c)| (t.as_str(), *c)),
        impersonate: change.impersonate,
        record_sessions: change.record_sessions,
    };
    Ok(store.update(key.org, key.cluster, change).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_or_yaml() {
        let yaml = "apiVersion: v1\nkind: Config\n";
        assert_eq!(decode_kubeconfig(yaml), yaml);
        let b64 = base64::engine::general_purpose::STANDARD.encode(yaml);
        assert_eq!(decode_kubeconfig(&b64), yaml);
        assert_eq!(decode_kubeconfig("not base64!"), "not base64!");
    }

    #[test]
    fn names() {
        assert!(check_name("dev-1.eu_west").is_ok());
        for bad in ["", "Dev", "a b", "x/y", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
