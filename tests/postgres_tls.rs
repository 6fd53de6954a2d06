//! PostgreSQL over TLS: the policy store and the audit sink honour `sslmode` and
//! `sslrootcert` in both forms of connection string, against a throw-away server with
//! `ssl = on` that each test starts (the machine's shared server is left alone).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::Kubegate;
use common::gateway::TestGateway;
use common::postgres_tls::TlsPostgres;
use kubegate::config::{AuditSinkKind, PolicyStorage};
use kubegate_actors::postgres_tls::{PostgresTarget, SslMode};
use kubegate_actors::store::{check_connection, StoreError};

/// verify-full with the CA that signed the server's certificate: kubegate starts with
/// its policy in PostgreSQL (a key=value string) and its audit trail there too (a URL),
/// serves a request, audits it into PostgreSQL, reads it back through the query API, and
/// every connection it holds is encrypted.
#[actix_rt::test]
async fn verify_full_with_the_right_ca_serves_policy_and_audit() {
    let db = TlsPostgres::start();
    let api = ApiServer::start();
    let policy_url = db.key_value_url(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={}", db.ca_file.display()),
    );
    let audit_url = db.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        db.ca_file.display()
    ));
    let gw = TestGateway::builder()
        .configure(move |c| {
            c.policy.storage = PolicyStorage::Postgres;
            c.policy.postgres_url = Some(policy_url);
            c.audit.sinks = vec![AuditSinkKind::Postgres];
            c.audit.postgres_url = Some(audit_url);
        })
        .member(1, "alice", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let alice = gw.token("alice");
    let client = awc::Client::default();
    let res = client
        .get(gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        200,
        "the policy, read over TLS, allows"
    );
    let audit = format!("{}/pipeline/api/v1/orgs/1/audit?resource=pods", gw.url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut res = client.get(&audit).bearer_auth(&alice).send().await.unwrap();
        let page: serde_json::Value = res.json().await.unwrap_or_default();
        if page["events"].as_array().is_some_and(|e| e.len() == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event reaches PostgreSQL and is read back: {page}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        db.query("SELECT count(*)::text FROM kubegate_audit WHERE resource = 'pods'"),
        vec!["1".to_string()]
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM casbin_rule WHERE ptype = 'p'")
            .first()
            .map(|n| n != "0"),
        Some(true),
        "the policy was imported over TLS"
    );
    let connections = db.tcp_connections_over_tls();
    assert!(
        connections.len() >= 2 && connections.iter().all(|tls| tls == "true"),
        "the store's and the sink's connections are encrypted: {connections:?}"
    );
}

/// Each mode against the server, straight through the connector the store and the sink
/// share: what connects, whether it is encrypted, and what is refused with what advice.
#[actix_rt::test]
async fn each_sslmode_connects_or_refuses_as_libpq_does() {
    let db = TlsPostgres::start();
    let ca = db.ca_file.display().to_string();
    let wrong_ca = db.wrong_ca_file.display().to_string();

    // whether a connection made with `url` is encrypted, as the server sees it
    let encrypted = |url: String| async move {
        let target = PostgresTarget::parse(&url).unwrap();
        let (client, connection) = target.connect().await.unwrap_or_else(|e| {
            panic!(
                "{url} connects: {}",
                kubegate_actors::postgres_tls::describe(&e)
            )
        });
        actix_rt::spawn(connection);
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, bool>(0)
    };
    // verify-full: the right CA and a name in the certificate (URL and key=value)
    assert!(encrypted(db.url(&format!("sslmode=verify-full&sslrootcert={ca}"))).await);
    assert!(
        encrypted(db.key_value_url(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}")
        ))
        .await
    );
    // verify-ca: the right CA, a name the certificate does not hold
    assert!(
        encrypted(db.key_value_url(
            "db.example.com",
            &format!("sslmode=verify-ca sslrootcert={ca}")
        ))
        .await
    );
    // require: encrypted, no CA asked
    assert!(encrypted(db.key_value_url("db.example.com", "sslmode=require")).await);
    assert!(encrypted(db.url("sslmode=require")).await);
    // prefer (also the default): encrypted when the server offers it
    assert!(encrypted(db.key_value_url("127.0.0.1", "sslmode=prefer")).await);
    assert!(encrypted(db.key_value_url("127.0.0.1", "")).await);
    // disable: plain
    assert!(!encrypted(db.key_value_url("127.0.0.1", "sslmode=disable")).await);

    let refused = |url: String| async move {
        match check_connection(&url).await {
            Err(StoreError::Misconfigured(message)) => message,
            other => panic!("{url} is refused as misconfigured: {other:?}"),
        }
    };
    // verify-full, a name the certificate does not hold
    let message = refused(db.key_value_url(
        "db.example.com",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ))
    .await;
    assert!(
        message.contains(
            "not valid for the host name \"db.example.com\" (it names 127.0.0.1, localhost, kubernetes.default.svc)"
        ) && message.contains("use sslmode=verify-ca"),
        "{message}"
    );
    // another CA, with either verify mode and with require + sslrootcert (libpq: as
    // verify-ca)
    for query in [
        format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
        format!("sslmode=verify-ca&sslrootcert={wrong_ca}"),
        format!("sslmode=require&sslrootcert={wrong_ca}"),
    ] {
        let message = refused(db.url(&query)).await;
        assert!(
            message.contains(&format!(
                "is not signed by a CA of sslrootcert ({wrong_ca})"
            )) && message.contains("set sslrootcert to the CA that signed"),
            "{query}: {message}"
        );
    }
    // the system's CAs do not know this test's CA
    let message = refused(db.url("sslmode=verify-full")).await;
    assert!(
        message.contains("the system's CA certificates (no sslrootcert given)"),
        "{message}"
    );
    // a server that is only down is not a configuration mistake
    let port = db.port;
    let down = format!("host=127.0.0.1 port=1 user=postgres sslmode=verify-full sslrootcert={ca}");
    assert!(
        matches!(
            check_connection(&down).await,
            Err(StoreError::Unavailable(_))
        ),
        "port {port} is the test's; port 1 answers nothing"
    );
    assert_eq!(
        check_connection(&db.url(&format!("sslmode=verify-full&sslrootcert={ca}")))
            .await
            .unwrap(),
        SslMode::VerifyFull
    );
}

/// A server that does not offer TLS: `prefer` (and the default) fall back to plain text,
/// as libpq does; `require` and the verify modes refuse it at once, as a mistake to fix.
#[actix_rt::test]
async fn prefer_falls_back_to_plain_and_require_refuses_a_server_without_tls() {
    let db = TlsPostgres::start_without_tls();
    for extra in ["sslmode=prefer", ""] {
        let url = db.key_value_url("127.0.0.1", extra);
        let (client, connection) = PostgresTarget::parse(&url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        actix_rt::spawn(connection);
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!ssl, "{url}: plain");
    }
    let ca = db.ca_file.display().to_string();
    for extra in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full sslrootcert={ca}"),
    ] {
        match check_connection(&db.key_value_url("127.0.0.1", &extra)).await {
            Err(StoreError::Misconfigured(message)) => assert!(
                message.contains("server does not support TLS")
                    && message.contains("turn ssl on in the server, or use sslmode=prefer"),
                "{extra}: {message}"
            ),
            other => panic!("{extra} is refused: {other:?}"),
        }
    }
}

fn run(gate: &Kubegate, args: &[&str]) -> Output {
    gate.command(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A kubegate binary whose policy store (`policy`) and audit sink (`audit`) use these
/// connection strings (None: the file).
fn kubegate_with(policy: Option<&str>, audit: Option<&str>) -> Kubegate {
    let (policy, audit) = (policy.map(str::to_string), audit.map(str::to_string));
    Kubegate::new().edit_config(move |mut text| {
        if let Some(url) = policy {
            text = text.replacen(
                "storage = \"file\"",
                &format!("storage = \"postgres\"\npostgres_url = '{url}'"),
                1,
            );
        }
        if let Some(url) = audit {
            text = text.replacen(
                "sinks = [\"file\"]",
                &format!("sinks = [\"file\", \"postgres\"]\npostgres_url = '{url}'"),
                1,
            );
        }
        text
    })
}

/// `check-config` says when PostgreSQL is reached and how, and names a wrong CA or host
/// name, with the key and what to change; `serve` refuses to start with the same words.
#[test]
fn check_config_and_serve_report_a_wrong_ca_or_host_name() {
    let db = TlsPostgres::start();
    let ca = db.ca_file.display().to_string();
    let wrong_ca = db.wrong_ca_file.display().to_string();

    let good = kubegate_with(
        Some(&db.key_value_url(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        )),
        Some(&db.url(&format!("sslmode=verify-full&sslrootcert={ca}"))),
    );
    let out = run(&good, &["check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("policy: PostgreSQL reached (sslmode=verify-full)")
            && stdout.contains("audit: PostgreSQL reached (sslmode=verify-full)"),
        "{stdout}"
    );

    let cases = [
        (
            kubegate_with(
                Some(&db.url(&format!("sslmode=verify-full&sslrootcert={wrong_ca}"))),
                None,
            ),
            "policy.postgres_url: PostgreSQL: ",
            "is not signed by a CA of sslrootcert",
        ),
        (
            kubegate_with(
                None,
                Some(&db.key_value_url(
                    "db.example.com",
                    &format!("sslmode=verify-full sslrootcert={ca}"),
                )),
            ),
            "audit.postgres_url: PostgreSQL: ",
            "not valid for the host name \"db.example.com\"",
        ),
        (
            kubegate_with(
                None,
                Some(&db.url(&format!("sslmode=verify-ca&sslrootcert={wrong_ca}"))),
            ),
            "audit.postgres_url: PostgreSQL: ",
            "set sslrootcert to the CA that signed the server's certificate",
        ),
        (
            kubegate_with(Some(&db.url("sslmode=verify-everything")), None),
            "policy.postgres_url: sslmode \"verify-everything\"",
            "is not one of disable, prefer, require, verify-ca, verify-full",
        ),
        (
            kubegate_with(
                None,
                Some(&db.url("sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")),
            ),
            "audit.postgres_url: sslrootcert: cannot read /nonexistent/ca.pem",
            "No such file",
        ),
    ];
    for (gate, key, problem) in &cases {
        let out = run(gate, &["check-config"]);
        let said = text(&out);
        assert!(!out.status.success(), "check-config fails: {said}");
        assert!(
            said.contains(key) && said.contains(problem),
            "check-config names {key:?} and {problem:?}: {said}"
        );
        let out = run(
            gate,
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--listen-tls",
                "127.0.0.1:0",
            ],
        );
        let said = text(&out);
        assert!(!out.status.success(), "serve refuses to start: {said}");
        assert!(
            said.contains(key) && said.contains(problem),
            "serve names {key:?} and {problem:?}: {said}"
        );
        assert!(!said.contains("kubegate listening"), "{said}");
    }
}
