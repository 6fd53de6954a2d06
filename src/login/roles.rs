//! Role rules: at login, the provider's groups give org roles, written as memberships.

use std::collections::BTreeMap;

use kubegate_actors::policy::Reload;

use super::LoginState;
use crate::config::login::RoleRule;
use crate::gate::session::SessionUser;

/// Gives the roles the rules grant to `user`'s groups, where the user has no role yet
/// in that org (or only `member` and the rule says `admin`). Returns what was granted.
pub(super) async fn apply_role_rules(state: &LoginState, user: &SessionUser) -> Vec<String> {
    let wanted: Vec<&RoleRule> = state
        .login
        .rules
        .iter()
        .filter(|r| r.provider.as_deref().is_none_or(|p| p == user.provider))
        .filter(|r| user.groups.iter().any(|g| g == &r.group))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let current = match state.members.all().await {
        Ok(all) => all,
        Err(e) => {
            log::error!("role rules not applied to {}: {e}", user.user);
            return Vec::new();
        }
    };
    let mut granted = Vec::new();
    let mut best: BTreeMap<u64, &str> = BTreeMap::new();
    for rule in wanted {
        let role = best.entry(rule.org).or_insert(rule.role.as_str());
        if rule.role == "admin" {
            *role = "admin";
        }
    }
    for (org, role) in best {
        let has = current
            .iter()
            .find(|m| m.org == org && m.user == user.user)
            .map(|m| m.role.as_str());
        let give = match has {
            None => true,
            Some("member") => role == "admin",
            Some(_) => false,
        };
        if give {
            match state.members.set(org, &user.user, role).await {
                Ok(()) => granted.push(format!("{role} of org {org}")),
                Err(e) => log::error!("role rule for {} in org {org}: {e}", user.user),
            }
        }
    }
    if !granted.is_empty() {
        // in force before the browser's next request, on this replica at once
        if let Err(e) = state.policy_reload.send(Reload).await {
            log::error!("policy reload after role rules failed: {e}");
        }
    }
    granted
}
