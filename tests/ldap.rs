//! LDAP login against a real OpenLDAP (tests/common/ldap.rs): the right password gives
//! the user and their groups; anything else is InvalidCredentials, a server that is gone
//! or silent is Unavailable; StartTLS and LDAPS verify the server's certificate.

mod common;

use std::time::{Duration, Instant};

use common::gateway::block_on;
use common::ldap::{Slapd, GROUPS_DN};
use kubegate::config::ldap::LdapSettings;
use kubegate::login::ldap::{authenticate, LdapError, LdapUser};

fn login(settings: &LdapSettings, user: &str, password: &str) -> Result<LdapUser, LdapError> {
    let (settings, user, password) = (settings.clone(), user.to_string(), password.to_string());
    block_on(move || async move { authenticate(&settings, &user, &password).await })
}

fn assert_invalid(result: Result<LdapUser, LdapError>, what: &str) {
    match result {
        Err(LdapError::InvalidCredentials) => {}
        other => panic!("{what}: expected InvalidCredentials, got {other:?}"),
    }
}

fn sorted(mut groups: Vec<String>) -> Vec<String> {
    groups.sort();
    groups
}

#[test]
fn the_right_password_gives_the_user_and_groups_from_member_of() {
    let slapd = Slapd::start();
    for settings in [slapd.settings(), slapd.settings_with_service_account()] {
        let alice = login(&settings, "alice", "alice-secret").expect("alice logs in");
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.dn, "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(sorted(alice.groups), ["developers", "kube-admins"]);

        let bob = login(&settings, "bob", "bob-secret").expect("bob logs in");
        assert_eq!(bob.groups, ["kube-viewers"]);
    }

    // the name is the directory's, whatever the case typed (uid matches without case)
    let settings = slapd.settings();
    let alice = login(&settings, "ALICE", "alice-secret").expect("ALICE logs in");
    assert_eq!(alice.username, "alice");

    // another filter: log in with the mail address, be known by the uid
    let mut by_mail = settings.clone();
    by_mail.user_filter = "(&(objectClass=inetOrgPerson)(mail={username}))".into();
    let alice = login(&by_mail, "alice@example.org", "alice-secret").expect("login by mail");
    assert_eq!(alice.username, "alice");
    assert_invalid(
        login(&by_mail, "alice", "alice-secret"),
        "uid where mail is asked",
    );
}

#[test]
fn groups_by_search_for_servers_without_member_of() {
    let slapd = Slapd::start();
    let mut settings = slapd.settings_with_service_account();
    settings.group_attribute = "description".into(); // would give nothing
    settings.group_search_base = Some(GROUPS_DN.into());
    let alice = login(&settings, "alice", "alice-secret").expect("alice logs in");
    assert_eq!(sorted(alice.groups), ["developers", "kube-admins"]);
    // the group filter may use the user name too
    settings.group_filter =
        "(&(objectClass=groupOfNames)(member=uid={username},ou=people,dc=example,dc=org))".into();
    let bob = login(&settings, "bob", "bob-secret").expect("bob logs in");
    assert_eq!(bob.groups, ["kube-viewers"]);
}

#[test]
fn wrong_empty_unknown_and_injected_credentials_are_refused() {
    let slapd = Slapd::start();
    let settings = slapd.settings();
    assert_invalid(login(&settings, "alice", "bob-secret"), "wrong password");
    assert_invalid(
        login(&settings, "alice", "alice-secret "),
        "password with a space",
    );
    assert_invalid(login(&settings, "alice", ""), "empty password");
    assert_invalid(login(&settings, "carol", "alice-secret"), "unknown user");
    // filter injection: these would match alice (or everyone) if not escaped
    for user in [
        "*",
        "al*",
        ")(uid=*",
        "alice)(uid=*",
        "*)(|(uid=*",
        "alice\0",
        "\\2a",
    ] {
        assert_invalid(login(&settings, user, "alice-secret"), user);
    }
    // a user filter matching several entries never binds as one of them
    let mut loose = settings.clone();
    loose.user_filter = "(|(uid={username})(objectClass=inetOrgPerson))".into();
    assert_invalid(login(&loose, "alice", "alice-secret"), "two entries");
    // the service account's password is no user's
    assert_invalid(
        login(
            &slapd.settings_with_service_account(),
            "reader",
            "reader-secret",
        ),
        "reader",
    );
}

#[test]
fn a_wrong_service_account_or_filter_is_a_configuration_error() {
    let slapd = Slapd::start();
    let settings = slapd.settings_with_service_account();
    std::fs::write(settings.bind_password_file.as_ref().unwrap(), "nope").unwrap();
    let err = login(&settings, "alice", "alice-secret").unwrap_err();
    assert!(matches!(err, LdapError::Config(_)), "{err:?}");
    // the error names the account, never a password
    assert!(!err.to_string().contains("nope"), "{err}");

    let mut settings = slapd.settings();
    settings.user_filter = "(uid={username}".into();
    assert!(matches!(
        login(&settings, "alice", "alice-secret"),
        Err(LdapError::Config(_))
    ));
    let mut settings = slapd.settings();
    settings.user_search_base = "ou=nobody,dc=example,dc=org".into();
    assert!(matches!(
        login(&settings, "alice", "alice-secret"),
        Err(LdapError::Config(_))
    ));
}

#[test]
fn a_stopped_or_silent_server_is_unavailable() {
    let mut slapd = Slapd::start();
    let settings = slapd.settings();
    assert!(login(&settings, "alice", "alice-secret").is_ok());
    slapd.stop();
    let err = login(&settings, "alice", "alice-secret").unwrap_err();
    assert!(matches!(err, LdapError::Unavailable(_)), "{err:?}");

    // a server that accepts the connection and never answers: the timeout ends it
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = LdapSettings::new(
        format!("ldap://{}", silent.local_addr().unwrap()),
        "ou=people,dc=example,dc=org",
    );
    settings.timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = login(&settings, "alice", "alice-secret").unwrap_err();
    assert!(matches!(err, LdapError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn start_tls_and_ldaps_check_the_server_certificate() {
    let slapd = Slapd::start_tls();

    let mut settings = slapd.settings();
    settings.start_tls = true;
    let alice = login(&settings, "alice", "alice-secret").expect("login over StartTLS");
    assert_eq!(sorted(alice.groups), ["developers", "kube-admins"]);
    assert_invalid(
        login(&settings, "alice", "wrong"),
        "wrong password over StartTLS",
    );

    let mut ldaps = slapd.settings();
    ldaps.url = slapd.ldaps_url().to_string();
    let bob = login(&ldaps, "bob", "bob-secret").expect("login over LDAPS");
    assert_eq!(bob.groups, ["kube-viewers"]);

    // without the test CA, the certificate is not trusted: the server is unusable
    for mut untrusting in [settings, ldaps] {
        untrusting.ca_file = None;
        let err = login(&untrusting, "alice", "alice-secret").unwrap_err();
        assert!(matches!(err, LdapError::Unavailable(_)), "{err:?}");
    }

    // StartTLS against a server without TLS fails rather than going on in the clear
    let plain = Slapd::start();
    let mut settings = plain.settings();
    settings.start_tls = true;
    let err = login(&settings, "alice", "alice-secret").unwrap_err();
    assert!(matches!(err, LdapError::Unavailable(_)), "{err:?}");
}
