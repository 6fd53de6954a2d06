//! `[login]` and `[sessions]`: the login providers, the rules that turn provider groups
//! into org roles, and the session cookie.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::duration;

use super::ldap::LdapSettings;

/// `[login]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The providers, by the name used in `/auth/{name}/login`.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Provider groups that give org roles at login.
    #[serde(default)]
    pub role_rules: Vec<RoleRule>,
    /// Where a browser opening a page without a session is sent to log in (default: the
    /// only provider, when there is one).
    #[serde(default)]
    pub default_provider: Option<String>,
}

/// One login provider; `kind` says which.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// GitHub or GitHub Enterprise (OAuth2; the user from the GitHub API).
    Github(GithubSettings),
    /// Any OpenID Connect provider (Google, Dex, Keycloak...).
    Oidc(OidcSettings),
    /// An LDAP or Active Directory server (a login form; kubegate binds as the user).
    Ldap(LdapSettings),
}

fn github_auth_url() -> String {
    "https://github.com/login/oauth/authorize".into()
}
fn github_token_url() -> String {
    "https://github.com/login/oauth/access_token".into()
}
fn github_api_url() -> String {
    "https://api.github.com".into()
}
fn github_scopes() -> Vec<String> {
    vec!["read:user".into(), "user:email".into(), "read:org".into()]
}
fn oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}
fn sub() -> String {
    "sub".into()
}
fn groups() -> String {
    "groups".into()
}

/// `kind = "github"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSettings {
    /// The OAuth app's client id.
    pub client_id: String,
    /// A file holding the client secret; else `KUBEGATE_LOGIN_<NAME>_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The authorization endpoint (GitHub Enterprise: `https://HOST/login/oauth/authorize`).
    #[serde(default = "github_auth_url")]
    pub auth_url: String,
    /// The token endpoint.
    #[serde(default = "github_token_url")]
    pub token_url: String,
    /// The REST API (GitHub Enterprise: `https://HOST/api/v3`).
    #[serde(default = "github_api_url")]
    pub api_url: String,
    /// Scopes asked for.
    #[serde(default = "github_scopes")]
    pub scopes: Vec<String>,
    /// Extra CA certificates (PEM) for the endpoints, for GitHub Enterprise.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `kind = "oidc"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer; its discovery document is `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id (the ID token's audience).
    pub client_id: String,
    /// A file holding the client secret; else `KUBEGATE_LOGIN_<NAME>_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for.
    #[serde(default = "oidc_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim that names the user (`sub` is the stable one;
    /// `preferred_username` or `email` read better in policies).
    #[serde(default = "sub")]
    pub user_claim: String,
    /// The ID token claim listing the user's groups.
    #[serde(default = "groups")]
    pub groups_claim: String,
    /// Extra CA certificates (PEM) for the provider.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// A group that gives an org role: at login, a user in `group` (of `provider`, or of any
/// provider) becomes `role` in `org` unless they have a role there already (an admin is
/// never demoted by a rule).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    /// The provider's name; any provider when absent.
    #[serde(default)]
    pub provider: Option<String>,
    /// The group's name as the provider gives it (GitHub: `org` or `org/team`).
    pub group: String,
    /// The org.
    pub org: u64,
    /// `admin` or `member`.
    pub role: String,
}

fn store() -> SessionStoreKind {
    SessionStoreKind::Cookie
}
fn lifetime() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn cookie_name() -> String {
    "kubegate_session".into()
}

/// `sessions.store`: where browser sessions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", expecting = "one of cookie, redis")]
pub enum SessionStoreKind {
    /// In the cookie itself, encrypted.
    Cookie,
    /// In Redis (`sessions.redis_url`), shared by replicas; the cookie holds the key.
    Redis,
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// `cookie` (the state in the encrypted cookie) or `redis` (shared by replicas).
    #[serde(default = "store")]
    pub store: SessionStoreKind,
    /// `redis://HOST:PORT[/DB]` with `store = "redis"`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// How long a session lasts after login.
    #[serde(default = "lifetime", deserialize_with = "duration")]
    pub lifetime: Duration,
    /// The cookie's name.
    #[serde(default = "cookie_name")]
    pub cookie_name: String,
    /// Mark the cookie Secure always (it is marked Secure on TLS connections anyway).
    #[serde(default)]
    pub secure: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            store: store(),
            redis_url: None,
            lifetime: lifetime(),
            cookie_name: cookie_name(),
            secure: false,
        }
    }
}

impl LoginConfig {
    /// Every problem of `[login]` and `[sessions]`, each naming its key.
    pub fn problems(&self, sessions: &SessionConfig) -> Vec<String> {
        let mut problems = Vec::new();
        let url = |key: String, value: &str, problems: &mut Vec<String>| {
            if !(value.starts_with("https://") || value.starts_with("http://")) {
                problems.push(format!("{key}: \"{value}\" must be an http(s) URL"));
            }
        };
        for (name, provider) in &self.providers {
            let at = format!("login.providers.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.push(format!(
                    "{at}: a provider name may hold letters, digits, - and _ only"
                ));
            }
            match provider {
                ProviderConfig::Github(g) => {
                    url(format!("{at}.auth_url"), &g.auth_url, &mut problems);
                    url(format!("{at}.token_url"), &g.token_url, &mut problems);
                    url(format!("{at}.api_url"), &g.api_url, &mut problems);
                    if g.client_id.is_empty() {
                        problems.push(format!("{at}.client_id: is empty"));
                    }
                }
                ProviderConfig::Oidc(o) => {
                    url(format!("{at}.issuer"), &o.issuer, &mut problems);
                    if o.client_id.is_empty() {
                        problems.push(format!("{at}.client_id: is empty"));
                    }
                }
                ProviderConfig::Ldap(l) => {
                    if !(l.url.starts_with("ldap://") || l.url.starts_with("ldaps://")) {
                        problems.push(format!(
                            "{at}.url: \"{}\" must start with ldap:// or ldaps://",
                            l.url
                        ));
                    }
                }
            }
        }
        for (i, rule) in self.role_rules.iter().enumerate() {
            if !matches!(rule.role.as_str(), "admin" | "member") {
                problems.push(format!(
                    "login.role_rules[{i}].role: \"{}\" is not admin or member",
                    rule.role
                ));
            }
            if let Some(p) = &rule.provider {
                if !self.providers.contains_key(p) {
                    problems.push(format!(
                        "login.role_rules[{i}].provider: no provider is named \"{p}\""
                    ));
                }
            }
        }
        if let Some(name) = &self.default_provider {
            if !self.providers.contains_key(name) {
                problems.push(format!(
                    "login.default_provider: no provider is named \"{name}\""
                ));
            }
        }
        match (sessions.store, &sessions.redis_url) {
            (SessionStoreKind::Cookie, _) => {}
            (SessionStoreKind::Redis, Some(u))
                if u.starts_with("redis://") || u.starts_with("rediss://") => {}
            (SessionStoreKind::Redis, Some(u)) => problems.push(format!(
                "sessions.redis_url: \"{u}\" must start with redis:// or rediss://"
            )),
            (SessionStoreKind::Redis, None) => problems
                .push("sessions.redis_url: is required with sessions.store = \"redis\"".into()),
        }
        if sessions.lifetime.is_zero() {
            problems.push("sessions.lifetime: must be more than 0".into());
        }
        problems
    }
}

/// The client secret of provider `name`: from its file, else from
/// `KUBEGATE_LOGIN_<NAME>_CLIENT_SECRET` (name upper-cased, `-` as `_`).
pub fn client_secret(
    name: &str,
    file: Option<&PathBuf>,
) -> Result<Option<SecretString>, super::ConfigError> {
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| Some(SecretString::from(s.trim().to_string())))
            .map_err(|e| {
                super::ConfigError::Invalid(format!(
                    "login.providers.{name}.client_secret_file: cannot read {}: {e}",
                    path.display()
                ))
            });
    }
    Ok(std::env::var(secret_variable(name))
        .ok()
        .map(SecretString::from))
}

/// The environment variable of provider `name`'s client secret.
pub fn secret_variable(name: &str) -> String {
    format!(
        "KUBEGATE_LOGIN_{}_CLIENT_SECRET",
        name.to_ascii_uppercase().replace('-', "_")
    )
}
