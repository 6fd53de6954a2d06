//! What the command-line tool does, beside `serve`: clusters, members, tokens, checks.
//! The CLI and the server share the stores named in the configuration; the kubectl
//! single sign-on client ([`sso`]) needs none of it.

pub mod sso;

use std::time::Duration;

use kubegate_actors::policy::{PolicyEnforcer, PolicySources};
use kubegate_actors::store::{ClusterRecord, StoreError};

use crate::config::Config;
use crate::gate::tokens::{load_signing_key, IssuedToken, TokenAuthority};
use crate::http::services::{check_audit_database, kubeconfig_rules, open_token_store, Stores};

/// A CLI failure, with a message that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Something about the input.
    #[error("{0}")]
    Input(String),
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks `kubeconfig` and stores it as a new cluster of `org` (the REST API's code path).
pub async fn add_cluster(
    config: &Config,
    org: u64,
    new: crate::clusters::NewCluster<'_>,
) -> Result<ClusterRecord, CliError> {
    let stores = Stores::open(config)
        .await
        .map_err(|e| CliError::Input(e.to_string()))?;
    crate::clusters::create(
        stores.clusters.as_ref(),
        &kubeconfig_rules(config),
        org,
        new,
    )
    .await
    .map_err(|e| CliError::Input(e.to_string()))
}

/// The roles the policy (the file `policy.policy`, or the embedded one) grants anything
/// to.
pub fn policy_roles(policy: &crate::config::PolicyConfig) -> Result<Vec<String>, CliError> {
    let text = policy
        .policy_text()
        .map_err(|e| CliError::Input(e.to_string()))?;
    let mut roles: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(',').map(str::trim);
            (fields.next() == Some("p")).then(|| fields.next().unwrap_or("").to_string())
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// Gives `user` the role `role` in `org`, after checking the role exists in the policy.
pub async fn set_member(config: &Config, org: u64, user: &str, role: &str) -> Result<(), CliError> {
    if user.is_empty()
        || crate::gate::tokens::is_system_name(user)
        || user
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',' || c == '"')
    {
        return Err(CliError::Input(
            "the user must be non-empty, without spaces, commas, quotes or control characters, and must not begin with \"system:\""
                .into(),
        ));
    }
    let roles = policy_roles(&config.policy)?;
    if !roles.iter().any(|r| r == role) {
        return Err(CliError::Input(format!(
            "the role \"{role}\" is not in the policy {}; known roles: {}",
            config.policy.describe_policy(),
            roles.join(", ")
        )));
    }
    Stores::open(config)
        .await
        .map_err(|e| CliError::Input(e.to_string()))?
        .members
        .set(org, user, role)
        .await?;
    Ok(())
}

/// Issues a token for `user`.
pub async fn create_token(
    config: &Config,
    user: &str,
    ttl: Option<Duration>,
    name: &str,
) -> Result<IssuedToken, CliError> {
    let key = load_signing_key(&config.auth).map_err(|e| CliError::Input(e.to_string()))?;
    let issued = TokenAuthority::new(&config.auth, &key)
        .issue(user, ttl, name)
        .map_err(CliError::Input)?;
    // kept like the API's tokens, so that its owner can list and revoke it
    let store = open_token_store(config)
        .await
        .map_err(|e| CliError::Input(e.to_string()))?;
    store.add(&issued.record(user, name)).await?;
    Ok(issued)
}

/// Checks that the policy loads with the configured member store, and that the
/// PostgreSQL audit sink (if any) can be reached as its connection string asks. Returns
/// a summary.
pub async fn check_policy(config: &Config) -> Result<String, CliError> {
    let stores = Stores::open(config)
        .await
        .map_err(|e| CliError::Input(e.to_string()))?;
    let enforcer = PolicyEnforcer::load(
        PolicySources {
            model: config.policy.model_source(),
            policy: stores.policy,
            members: stores.members,
            global_admins: config.policy.global_admins.clone(),
        },
        Duration::ZERO,
    )
    .await
    .map_err(|e| CliError::Input(e.to_string()))?;
    let stats = enforcer.stats();
    let mut summary = format!(
        "policy: {} rules, {} role bindings, roles: {}",
        stats.policies,
        stats.groupings,
        stats.roles.join(", ")
    );
    if let Some(mode) = stores.policy_ssl_mode {
        summary.push_str(&format!("\npolicy: PostgreSQL reached (sslmode={mode})"));
    }
    let audit = check_audit_database(config)
        .await
        .map_err(|e| CliError::Input(e.to_string()))?;
    if let Some(audit) = audit {
        summary.push('\n');
        summary.push_str(&audit);
    }
    Ok(summary)
}
