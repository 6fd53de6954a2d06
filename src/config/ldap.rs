//! `[login.providers.NAME]` with `kind = "ldap"`: an LDAP or Active Directory provider's
//! settings and their defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The environment variable that may hold the service account's password.
pub const BIND_PASSWORD_ENV: &str = "KUBEGATE_LDAP_BIND_PASSWORD";

/// The default `user_filter`: `{username}` is replaced by the escaped user name.
pub const DEFAULT_USER_FILTER: &str = "(uid={username})";
/// The default `username_attribute`.
pub const DEFAULT_USERNAME_ATTRIBUTE: &str = "uid";
/// The default `group_attribute` (on the user's entry; values are group DNs).
pub const DEFAULT_GROUP_ATTRIBUTE: &str = "memberOf";
/// The default `group_filter`: `{dn}` is the user's escaped DN, `{username}` the escaped
/// user name.
pub const DEFAULT_GROUP_FILTER: &str = "(member={dn})";
/// The default `group_name_attribute`.
pub const DEFAULT_GROUP_NAME_ATTRIBUTE: &str = "cn";
/// The default `timeout` for a whole login.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// An LDAP provider's settings (`[login.providers.NAME]` with `kind = "ldap"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before anything is sent.
    #[serde(default)]
    pub start_tls: bool,
    /// A PEM file of CA certificates trusted for the server's certificate, besides the
    /// system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for users; absent: search anonymously.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file holding the service account's password; absent: the environment variable
    /// `KUBEGATE_LDAP_BIND_PASSWORD`. Never in the configuration file itself.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched (subtree), e.g. `ou=people,dc=example,dc=org`.
    pub user_search_base: String,
    /// The filter that finds exactly one user; `{username}` is replaced by the typed
    /// user name, escaped (RFC 4515). Active Directory: `(sAMAccountName={username})`.
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// The attribute of the user's entry that is their kubegate user name.
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    /// The attribute of the user's entry listing their groups (`memberOf`); a value that
    /// is a DN names the group by its first RDN's value (`cn=kube-admins,...` ->
    /// `kube-admins`).
    #[serde(default = "default_group_attribute")]
    pub group_attribute: String,
    /// Search groups here instead of reading `group_attribute` (for servers without
    /// `memberOf`).
    #[serde(default)]
    pub group_search_base: Option<String>,
    /// The filter for the group search; `{dn}` is the user's DN, `{username}` the user
    /// name, both escaped.
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// The attribute holding a group's name in the group search.
    #[serde(default = "default_group_name_attribute")]
    pub group_name_attribute: String,
    /// The longest a whole login (connect, TLS, binds, searches) may take.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_user_filter() -> String {
    DEFAULT_USER_FILTER.into()
}
fn default_username_attribute() -> String {
    DEFAULT_USERNAME_ATTRIBUTE.into()
}
fn default_group_attribute() -> String {
    DEFAULT_GROUP_ATTRIBUTE.into()
}
fn default_group_filter() -> String {
    DEFAULT_GROUP_FILTER.into()
}
fn default_group_name_attribute() -> String {
    DEFAULT_GROUP_NAME_ATTRIBUTE.into()
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("\"{text}\" is not a duration (e.g. 5s): {e}"))
    })
}

impl LdapSettings {
    /// Settings for `url` searching users under `user_search_base`, anonymously, with
    /// every other field at its default.
    pub fn new(url: impl Into<String>, user_search_base: impl Into<String>) -> LdapSettings {
        LdapSettings {
            url: url.into(),
            start_tls: false,
            ca_file: None,
            bind_dn: None,
            bind_password_file: None,
            user_search_base: user_search_base.into(),
            user_filter: default_user_filter(),
            username_attribute: default_username_attribute(),
            group_attribute: default_group_attribute(),
            group_search_base: None,
            group_filter: default_group_filter(),
            group_name_attribute: default_group_name_attribute(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}
