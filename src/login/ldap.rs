//! LDAP and Active Directory login: find the user with a service account (or
//! anonymously), bind as the user's entry with the typed password, and read the user's
//! groups, with `ldap3` over rustls (ring) for LDAPS and StartTLS.
//!
//! The password is never logged, never part of an error, and never empty: an LDAP simple
//! bind with an empty password is an "unauthenticated bind" (RFC 4513 5.1.2) that many
//! servers answer with success.

use std::sync::{Arc, OnceLock};

use crate::config::ldap::{LdapSettings, BIND_PASSWORD_ENV};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// User names longer than this are refused without asking the server.
const MAX_USERNAME_LEN: usize = 256;

/// LDAP result codes (RFC 4511 appendix A.1) that mean "not this user or password".
const RC_INVALID_CREDENTIALS: u32 = 49;
const RC_UNWILLING_TO_PERFORM: u32 = 53;
const RC_NO_SUCH_OBJECT: u32 = 32;
const RC_SIZE_LIMIT_EXCEEDED: u32 = 4;

/// A user the directory vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapUser {
    /// The value of `username_attribute` on the entry (the typed name if it has none).
    pub username: String,
    /// The user's entry.
    pub dn: String,
    /// The names of the user's groups.
    pub groups: Vec<String>,
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// Unknown user, wrong or empty password, or a user name that matches no single
    /// entry: the user may try again.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// The server is down, slow, or TLS with it failed.
    #[error("the LDAP server is unavailable: {0}")]
    Unavailable(String),
    /// The settings do not work with this server (service account refused, bad filter,
    /// unreadable CA or password file...).
    #[error("LDAP configuration: {0}")]
    Config(String),
}

/// Escapes a value for an LDAP search filter (RFC 4515 section 3): `*`, `(`, `)`, `\`
/// and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The name a group DN stands for: the value of its first RDN (`cn=kube-admins,ou=groups`
/// -> `kube-admins`), with DN escapes (RFC 4514) undone. A value that is not a DN is
/// returned as it is.
pub fn group_name_from_dn(dn: &str) -> String {
    let Some(eq) = dn.find('=') else {
        return dn.to_string();
    };
    let mut out = Vec::new();
    let mut bytes = dn[eq + 1..].bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b',' | b'+' => break,
            b'\\' => {
                let Some(next) = bytes.next() else { break };
                let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                match (hex(next), bytes.peek().copied().and_then(hex)) {
                    (Some(hi), Some(lo)) => {
                        bytes.next();
                        out.push(hi << 4 | lo);
                    }
                    _ => out.push(next),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Authenticates `username` with `password` against the directory and returns who they
/// are and their groups.
pub async fn authenticate(
    settings: &LdapSettings,
    username: &str,
    password: &str,
) -> Result<LdapUser, LdapError> {
    // an empty password would be an unauthenticated bind, which servers accept
    if password.is_empty() || username.trim().is_empty() || username.len() > MAX_USERNAME_LEN {
        return Err(LdapError::InvalidCredentials);
    }
    match tokio::time::timeout(settings.timeout, login(settings, username, password)).await {
        Ok(result) => result,
        Err(_) => Err(LdapError::Unavailable(format!(
            "no answer from {} within {:?}",
            settings.url, settings.timeout
        ))),
    }
}

async fn login(
    settings: &LdapSettings,
    username: &str,
    password: &str,
) -> Result<LdapUser, LdapError> {
    let service_password = service_password(settings)?;
    let ldaps = settings.url.starts_with("ldaps://");
    if !ldaps && !settings.url.starts_with("ldap://") {
        return Err(LdapError::Config(format!(
            "url \"{}\" must start with ldap:// or ldaps://",
            settings.url
        )));
    }
    let mut conn_settings = LdapConnSettings::new().set_conn_timeout(settings.timeout);
    if ldaps || settings.start_tls {
        conn_settings = conn_settings
            .set_config(tls_config(settings)?)
            .set_starttls(settings.start_tls && !ldaps);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &settings.url)
        .await
        .map_err(|e| unavailable(settings, "connect", e))?;
    ldap3::drive!(conn);

    let outcome = async {
        if let (Some(dn), Some(pw)) = (&settings.bind_dn, &service_password) {
            let result = ldap
                .simple_bind(dn, pw)
                .await
                .map_err(|e| unavailable(settings, "bind as the service account", e))?;
            if result.rc != 0 {
                return Err(LdapError::Config(format!(
                    "the server refused the service account {dn}: result code {} {}",
                    result.rc, result.text
                )));
            }
        }

        let user_filter = settings
            .user_filter
            .replace("{username}", &escape_filter_value(username));
        let mut attrs = vec![settings.username_attribute.as_str()];
        if settings.group_search_base.is_none() {
            attrs.push(settings.group_attribute.as_str());
        }
        let entry = find_user(&mut ldap, settings, &user_filter, &attrs).await?;
        if entry.dn.is_empty() {
            return Err(LdapError::InvalidCredentials);
        }

        let result = ldap
            .simple_bind(&entry.dn, password)
            .await
            .map_err(|e| unavailable(settings, "bind as the user", e))?;
        match result.rc {
            0 => {}
            RC_INVALID_CREDENTIALS | RC_UNWILLING_TO_PERFORM => {
                log::debug!("ldap: bind as {} refused (code {})", entry.dn, result.rc);
                return Err(LdapError::InvalidCredentials);
            }
            rc => {
                return Err(LdapError::Unavailable(format!(
                    "bind as the user: result code {rc} {}",
                    result.text
                )))
            }
        }

        let groups = match &settings.group_search_base {
            None => {
                let mut groups = Vec::new();
                for value in attribute(&entry, &settings.group_attribute) {
                    let name = group_name_from_dn(value);
                    if !name.is_empty() && !groups.contains(&name) {
                        groups.push(name);
                    }
                }
                groups
            }
            Some(base) => {
                // groups are read with the service account's rights, not the user's
                if let (Some(dn), Some(pw)) = (&settings.bind_dn, &service_password) {
                    ldap.simple_bind(dn, pw)
                        .await
                        .and_then(|r| r.success())
                        .map_err(|e| unavailable(settings, "bind as the service account", e))?;
                }
                search_groups(&mut ldap, settings, base, &entry.dn, username).await?
            }
        };
        let canonical = attribute(&entry, &settings.username_attribute)
            .next()
            .map(str::to_string)
            .unwrap_or_else(|| username.to_string());
        Ok(LdapUser {
            username: canonical,
            dn: entry.dn,
            groups,
        })
    }
    .await;
    let _ = ldap.unbind().await;
    outcome
}

/// The service account's password: from `bind_password_file`, else from the
/// environment; `None` when there is no service account.
fn service_password(settings: &LdapSettings) -> Result<Option<String>, LdapError> {
    if settings.bind_dn.is_none() {
        return Ok(None);
    }
    let password = match &settings.bind_password_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| LdapError::Config(format!("bind_password_file {}: {e}", path.display())))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => std::env::var(BIND_PASSWORD_ENV).map_err(|_| {
            LdapError::Config(format!(
                "bind_dn is set but neither bind_password_file nor {BIND_PASSWORD_ENV} is"
            ))
        })?,
    };
    if password.is_empty() {
        // an empty password would make the service account's bind anonymous
        return Err(LdapError::Config(
            "the service account's password is empty".into(),
        ));
    }
    Ok(Some(password))
}

fn unavailable(settings: &LdapSettings, step: &str, e: ldap3::LdapError) -> LdapError {
    LdapError::Unavailable(format!("{step} ({}): {e}", settings.url))
}

/// The system's CA certificates, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::warn!("ldap: reading the system's CA certificates: {e}");
        }
        found.certs
    })
}

/// rustls with the ring provider, the system's roots and `ca_file`.
fn tls_config(settings: &LdapSettings) -> Result<Arc<ClientConfig>, LdapError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = &settings.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| LdapError::Config(format!("ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(LdapError::Config(format!(
                "ca_file {}: no certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| LdapError::Config(format!("ca_file {}: {e}", path.display())))?;
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| LdapError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The one entry `filter` finds under `user_search_base`.
async fn find_user(
    ldap: &mut ldap3::Ldap,
    settings: &LdapSettings,
    filter: &str,
    attrs: &[&str],
) -> Result<SearchEntry, LdapError> {
    let result = ldap
        .with_search_options(SearchOptions::new().sizelimit(2))
        .search(&settings.user_search_base, Scope::Subtree, filter, attrs)
        .await
        .map_err(|e| match e {
            ldap3::LdapError::FilterParsing => LdapError::Config(format!(
                "user_filter \"{}\" is not a valid LDAP filter",
                settings.user_filter
            )),
            e => unavailable(settings, "search the user", e),
        })?;
    let ldap3::SearchResult(entries, status) = result;
    match status.rc {
        0 => {}
        RC_SIZE_LIMIT_EXCEEDED => {
            log::debug!("ldap: the user filter matches several entries");
            return Err(LdapError::InvalidCredentials);
        }
        RC_NO_SUCH_OBJECT => {
            return Err(LdapError::Config(format!(
                "user_search_base \"{}\" does not exist",
                settings.user_search_base
            )))
        }
        rc => {
            return Err(LdapError::Unavailable(format!(
                "search the user: result code {rc} {}",
                status.text
            )))
        }
    }
    let mut entries: Vec<SearchEntry> = entries
        .into_iter()
        .filter(|e| !e.is_ref() && !e.is_intermediate())
        .map(SearchEntry::construct)
        .collect();
    if entries.len() != 1 {
        log::debug!("ldap: the user filter matches {} entries", entries.len());
        return Err(LdapError::InvalidCredentials);
    }
    Ok(entries.remove(0))
}

/// The names of the groups `group_filter` finds under `base`.
async fn search_groups(
    ldap: &mut ldap3::Ldap,
    settings: &LdapSettings,
    base: &str,
    user_dn: &str,
    username: &str,
) -> Result<Vec<String>, LdapError> {
    let filter = settings
        .group_filter
        .replace("{dn}", &escape_filter_value(user_dn))
        .replace("{username}", &escape_filter_value(username));
    let result = ldap
        .search(
            base,
            Scope::Subtree,
            &filter,
            vec![settings.group_name_attribute.as_str()],
        )
        .await
        .map_err(|e| match e {
            ldap3::LdapError::FilterParsing => LdapError::Config(format!(
                "group_filter \"{}\" is not a valid LDAP filter",
                settings.group_filter
            )),
            e => unavailable(settings, "search the groups", e),
        })?;
    let ldap3::SearchResult(entries, status) = result;
    match status.rc {
        0 => {}
        RC_NO_SUCH_OBJECT => {
            return Err(LdapError::Config(format!(
                "group_search_base \"{base}\" does not exist"
            )))
        }
        rc => {
            return Err(LdapError::Unavailable(format!(
                "search the groups: result code {rc} {}",
                status.text
            )))
        }
    }
    let mut groups = Vec::new();
    for entry in entries
        .into_iter()
        .filter(|e| !e.is_ref() && !e.is_intermediate())
        .map(SearchEntry::construct)
    {
        if let Some(name) = attribute(&entry, &settings.group_name_attribute).next() {
            if !groups.iter().any(|g| g == name) {
                groups.push(name.to_string());
            }
        }
    }
    Ok(groups)
}

/// The values of attribute `name` of `entry` (attribute names are case-insensitive).
fn attribute<'a>(entry: &'a SearchEntry, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let name = name.to_string();
    entry
        .attrs
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(&name))
        .flat_map(|(_, values)| values.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ldap::DEFAULT_USER_FILTER;

    #[test]
    fn filter_values_are_escaped_per_rfc_4515() {
        let cases = [
            ("alice", "alice"),
            ("*", "\\2a"),
            (")(uid=*", "\\29\\28uid=\\2a"),
            ("a*b(c)d\\e\0f", "a\\2ab\\28c\\29d\\5ce\\00f"),
            (
                "*)(|(objectClass=*)",
                "\\2a\\29\\28|\\28objectClass=\\2a\\29",
            ),
            ("jörg.müller", "jörg.müller"),
            ("o'brien, jr.", "o'brien, jr."),
            ("\\2a", "\\5c2a"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(escape_filter_value(input), want, "escaping {input:?}");
        }
    }

    #[test]
    fn an_escaped_name_leaves_the_filter_one_equality_test() {
        let filter = DEFAULT_USER_FILTER.replace("{username}", &escape_filter_value("x)(uid=*"));
        assert_eq!(filter, "(uid=x\\29\\28uid=\\2a)");
        // balanced: the only parentheses are the filter's own
        assert_eq!(filter.matches('(').count(), 1);
        assert_eq!(filter.matches(')').count(), 1);
        assert!(!filter.contains('*'));
    }

    #[test]
    fn group_names_come_from_the_first_rdn() {
        let cases = [
            ("cn=kube-admins,ou=groups,dc=example,dc=org", "kube-admins"),
            (
                "CN=Domain Admins,CN=Users,DC=corp,DC=example",
                "Domain Admins",
            ),
            ("cn=a\\,b,ou=groups", "a,b"),
            ("cn=sales\\2Beu,ou=groups", "sales+eu"),
            ("cn=r\\C3\\A9seau,ou=g", "réseau"),
            ("cn=x+uid=y,ou=g", "x"),
            ("developers", "developers"),
        ];
        for (dn, want) in cases {
            assert_eq!(group_name_from_dn(dn), want, "{dn}");
        }
    }

    #[test]
    fn settings_have_defaults_and_refuse_unknown_keys() {
        let s: LdapSettings = toml::from_str(
            r#"
            url = "ldaps://ldap.example.org"
            user_search_base = "ou=people,dc=example,dc=org"
            timeout = "3s"
            "#,
        )
        .unwrap();
        assert_eq!(s.user_filter, "(uid={username})");
        assert_eq!(s.username_attribute, "uid");
        assert_eq!(s.group_attribute, "memberOf");
        assert_eq!(s.group_filter, "(member={dn})");
        assert_eq!(s.group_name_attribute, "cn");
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert!(!s.start_tls && s.bind_dn.is_none() && s.group_search_base.is_none());

        let bad = toml::from_str::<LdapSettings>(
            r#"
            url = "ldap://x"
            user_search_base = "dc=x"
            bind_password = "s3cret"
            "#,
        );
        assert!(bad.unwrap_err().to_string().contains("bind_password"));
    }

    #[actix_rt::test]
    async fn empty_passwords_and_names_are_refused_before_any_connection() {
        // nothing listens on port 9 of 127.0.0.1: a connection attempt would be Unavailable
        let settings = LdapSettings::new("ldap://127.0.0.1:9", "dc=example,dc=org");
        for (user, password) in [("alice", ""), ("", "pw"), ("   ", "pw")] {
            let err = authenticate(&settings, user, password).await.unwrap_err();
            assert!(
                matches!(err, LdapError::InvalidCredentials),
                "{user:?}: {err}"
            );
        }
        let long = "a".repeat(MAX_USERNAME_LEN + 1);
        assert!(matches!(
            authenticate(&settings, &long, "pw").await,
            Err(LdapError::InvalidCredentials)
        ));
        assert!(matches!(
            authenticate(&settings, "alice", "pw").await,
            Err(LdapError::Unavailable(_))
        ));
    }

    #[actix_rt::test]
    async fn a_service_account_needs_a_nonempty_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "\n").unwrap();
        let mut settings = LdapSettings::new("ldap://127.0.0.1:9", "dc=example,dc=org");
        settings.bind_dn = Some("cn=reader,dc=example,dc=org".into());
        settings.bind_password_file = Some(file);
        let err = authenticate(&settings, "alice", "pw").await.unwrap_err();
        assert!(matches!(err, LdapError::Config(_)), "{err}");
    }
}
