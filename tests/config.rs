//! Configuration mistakes, each kind of them: `kubegate check-config` lists every
//! problem at once, and `serve` refuses to start with the same messages.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::binary::Kubegate;
use kubegate::config::login::SessionStoreKind;
use kubegate::config::{
    AuditSinkKind, Config, ConfigError, PolicyStorage, StoreKind, DEFAULT_TOML,
};

/// Runs `kubegate ARGS` with `env` set (and the secrets of the test's own environment
/// removed), returning its output.
fn run(gate: &Kubegate, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = gate.command(args);
    cmd.env_remove("VAULT_TOKEN")
        .env_remove("KUBEGATE_SIGNING_KEY")
        .env_remove("KUBEGATE_VAULT_SECRET_ID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The problems `check-config` printed: the lines starting with `  - `, or, when there
/// is one problem, what follows the file's name on the `error: ` line.
fn problems(out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let listed: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .map(str::to_string)
        .collect();
    if listed.is_empty() {
        stderr
            .lines()
            .filter_map(|l| l.strip_prefix("error: "))
            .map(|l| match l.split_once(".toml: ") {
                Some((_, problem)) => problem.to_string(),
                None => l.to_string(),
            })
            .collect()
    } else {
        listed
    }
}

fn check(gate: &Kubegate, env: &[(&str, &str)]) -> (bool, Vec<String>, String) {
    let out = run(gate, &["check-config"], env);
    (
        out.status.success(),
        problems(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_default_configuration_checks_out() {
    let gate = Kubegate::new();
    let out = run(&gate, &["check-config"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("policy: "), "{stdout}");
}

#[test]
fn every_mistake_of_a_file_is_listed_at_once() {
    let gate = Kubegate::new().edit_config(|text| {
        text.replace("[server]\n", "[server]\nlisten_port = 8080\n")
            .replace("workers = 0", "workers = \"many\"")
            .replace("connect_timeout = \"10s\"", "connect_timeout = \"soon\"")
            .replace(
                "denied_networks = [\"169.254.0.0/16\"",
                "denied_networks = [\"10.0.0.0/33\", \"169.254.0.0/16\"",
            )
            .replace("listen = \"127.0.0.1:9090\"", "listen = \"localhost\"")
            .replace(
                "shutdown_grace = \"10s\"",
                "shutdown_grace = \"10s\"\npublic_url = \"ftp://kubegate.example\"",
            )
            .replace("batch = 512\n", "batch = 0\n")
            + "\n[servr]\nlisten = \"0.0.0.0:1\"\n"
    });
    let (ok, problems, stderr) = check(&gate, &[]);
    assert!(!ok, "check-config fails");
    let expect = [
        ("server.listen_port: unknown key", "an unknown key"),
        ("servr: unknown key", "an unknown section"),
        (
            "server.workers: invalid type: string \"many\"",
            "a mistyped value",
        ),
        (
            "clusters.connect_timeout: \"soon\" is not a duration",
            "a bad duration",
        ),
        ("clusters.denied_networks:", "a bad CIDR"),
        ("server.listen:", "a bad address"),
        (
            "server.public_url: \"ftp://kubegate.example\" must start with https:// or http://",
            "a bad URL",
        ),
        ("audit.batch: must be at least 1", "a value out of range"),
    ];
    for (needle, what) in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(needle)),
            "{what} is reported ({needle}); got:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("{} problems:", problems.len())),
        "{stderr}"
    );
    assert!(
        problems.iter().any(|p| p.contains("33")),
        "the bad network is named: {problems:?}"
    );
}

#[test]
fn serve_refuses_to_start_with_the_same_messages() {
    let gate = Kubegate::new().edit_config(|text| {
        text.replace("max_ttl = \"720h\"", "max_ttl = \"1h\"")
            .replace(
                "[policy]\n",
                "[policy]\nmodel = \"/nonexistent/rbac_model.conf\"\n",
            )
    });
    let (ok, checked, _) = check(&gate, &[]);
    assert!(!ok);
    let out = run(
        &gate,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "serve exits 1");
    let served = problems(&out);
    assert_eq!(served, checked, "serve and check-config say the same");
    assert!(
        served
            .iter()
            .any(|p| p.starts_with("auth.default_ttl: is longer than auth.max_ttl")),
        "{served:?}"
    );
    assert!(
        served
            .iter()
            .any(|p| p.starts_with("policy.model: cannot read /nonexistent")),
        "an unreadable model is named: {served:?}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("listening"),
        "serve did not start"
    );
}

#[test]
fn a_syntax_error_is_named_with_its_line() {
    let gate = Kubegate::new().edit_config(|text| text.replace("workers = 0", "workers = = 0"));
    let (ok, _, stderr) = check(&gate, &[]);
    assert!(!ok);
    assert!(stderr.contains("line "), "{stderr}");
    assert!(
        stderr.contains("workers = = 0"),
        "the line is shown: {stderr}"
    );
}

#[test]
fn keys_and_sections_left_out_take_their_defaults() {
    // (until every key had its default, these were reported: "audit.batch: is missing",
    // "[clusters]: the section is missing")
    let gate = Kubegate::new().edit_config(|text| {
        let text = text.replace("batch = 512\n", "");
        let start = text.find("[clusters]").unwrap();
        text[..start].to_string()
    });
    let (ok, problems, stderr) = check(&gate, &[]);
    assert!(ok, "{stderr}");
    assert!(problems.is_empty(), "{stderr}");
    // a file holding one key
    let text = "[server]\nlisten = \"127.0.0.1:9999\"\n";
    let config =
        Config::parse_with(text, Path::new("x.toml"), Vec::new()).unwrap_or_else(|e| panic!("{e}"));
    let defaults = Config::defaults();
    assert_eq!(config.server.listen.unwrap().to_string(), "127.0.0.1:9999");
    assert_eq!(
        config.server.listen_tls, defaults.server.listen_tls,
        "HTTPS on its default address"
    );
    assert_eq!(config.policy.model, None, "the embedded model");
    assert_eq!(config.policy.policy, None, "the embedded policy");
    assert_eq!(config.audit.batch, defaults.audit.batch);
    assert_eq!(config.audit.sinks, defaults.audit.sinks);
    assert_eq!(
        config.clusters.connect_timeout,
        defaults.clusters.connect_timeout
    );
    assert_eq!(config.store.kind, StoreKind::File);
    assert_eq!(config.auth.signing_key_file, defaults.auth.signing_key_file);
    // typos are still unknown keys, in a section present or not
    let typos = "[server]\nlisten = \"127.0.0.1:9999\"\nworkrs = 2\n\n[audt]\nbatch = 1\n";
    match Config::parse_with(typos, Path::new("x.toml"), Vec::new()) {
        Err(ConfigError::Problems { problems, .. }) => {
            assert_eq!(problems.len(), 2, "{problems:#?}");
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("server.workrs: unknown key")),
                "{problems:#?}"
            );
            assert!(
                problems.iter().any(|p| p.starts_with("audt: unknown key")),
                "{problems:#?}"
            );
        }
        other => panic!("expected the problems, got {other:?}"),
    }
    // an empty file is the defaults; "off" turns a listener off
    let empty = Config::parse_with("", Path::new("x.toml"), Vec::new()).unwrap();
    assert_eq!(empty.server.listen, defaults.server.listen);
    let text = "[server]\nlisten_tls = \"off\"\n";
    let config = Config::parse_with(text, Path::new("x.toml"), Vec::new()).unwrap();
    assert_eq!(config.server.listen_tls, None, "no HTTPS");
    assert_eq!(config.server.listen, defaults.server.listen);
    match Config::parse_with(
        "[server]\nlisten = \"of\"\n",
        Path::new("x.toml"),
        Vec::new(),
    ) {
        Err(ConfigError::Problems { problems, .. }) => assert!(
            problems.iter().any(|p| p.contains("server.listen")
                && p.contains("is not an address")
                && p.contains("\"off\"")),
            "{problems:#?}"
        ),
        other => panic!("expected the problems, got {other:?}"),
    }
    // a file that serves nowhere is still wrong
    let nowhere = "[server]\nlisten = \"off\"\nlisten_tls = \"off\"\n";
    match Config::parse_with(nowhere, Path::new("x.toml"), Vec::new()) {
        Err(ConfigError::Problems { problems, .. }) => {
            assert_eq!(problems, ["server: set listen, listen_tls or both"])
        }
        other => panic!("expected the problems, got {other:?}"),
    }
}

#[test]
fn secrets_must_come_from_a_file_or_the_environment() {
    let vault = |extra: &str| {
        let extra = extra.to_string();
        Kubegate::new().edit_config(move |text| {
            text.replace(
                "kind = \"file\"",
                &format!(
                    "kind = \"vault\"\n\n[store.vault]\naddress = \"https://vault.example:8200\"\n{extra}"
                ),
            )
        })
    };
    // a Vault token from nowhere
    let gate = vault("");
    let (ok, problems, stderr) = check(&gate, &[]);
    assert!(!ok);
    assert!(
        problems.iter().any(|p| p
            == "store.vault: the Vault token is missing: set VAULT_TOKEN or the file in the configuration"),
        "{stderr}"
    );
    // from a file that is not there
    let gate = vault("token_file = \"/nonexistent/vault-token\"\n");
    let (_, problems, stderr) = check(&gate, &[]);
    assert!(
        problems.iter().any(|p| p
            .starts_with("store.vault: cannot read the Vault token file /nonexistent/vault-token")),
        "{stderr}"
    );
    // an AppRole secret id from nowhere, and no role id
    let gate = vault("auth = \"approle\"\n");
    let (_, problems, stderr) = check(&gate, &[]);
    assert!(
        problems
            .iter()
            .any(|p| p == "store.vault.role_id: is required with auth = \"approle\""),
        "{stderr}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("KUBEGATE_VAULT_SECRET_ID")),
        "{stderr}"
    );
    // a signing key too short in the environment
    let gate = Kubegate::new();
    let (ok, problems, stderr) = check(&gate, &[("KUBEGATE_SIGNING_KEY", "short")]);
    assert!(!ok);
    assert!(
        problems
            .iter()
            .any(|p| p == "KUBEGATE_SIGNING_KEY: holds 5 bytes; use at least 32"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("short"),
        "the secret is not printed: {stderr}"
    );
    // the token from the environment is enough (Vault itself is not asked by the check
    // of the file; check-config then fails to reach it, naming Vault)
    let gate = vault("");
    let out = run(
        &gate,
        &["check-config"],
        &[("VAULT_TOKEN", "s.not-a-real-token")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("the Vault token is missing"),
        "VAULT_TOKEN is used: {stderr}"
    );
    assert!(!stderr.contains("s.not-a-real-token"), "{stderr}");
}

#[test]
fn certificate_files_that_do_not_load_are_named() {
    let gate = Kubegate::new()
        .edit_config(|text| text.replace("tls_self_signed = true", "tls_self_signed = false"));
    let (ok, problems, stderr) = check(&gate, &[]);
    assert!(!ok);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("server.tls_cert_file, server.tls_key_file: cannot read")),
        "{stderr}"
    );
    // a key that is not the certificate's
    let gate = Kubegate::new();
    gate.run(&["check-config"]);
    let tls = gate.dir().join("data/tls");
    let other = tempfile::tempdir().unwrap();
    kubegate::http::tls::ensure_self_signed(
        &other.path().join("server.crt"),
        &other.path().join("server.key"),
    )
    .unwrap();
    kubegate::http::tls::ensure_self_signed(&tls.join("server.crt"), &tls.join("server.key"))
        .unwrap();
    std::fs::copy(other.path().join("server.key"), tls.join("server.key")).unwrap();
    let (ok, problems, stderr) = check(&gate, &[]);
    assert!(!ok);
    assert!(
        problems.iter().any(|p| p.contains("does not fit")),
        "{stderr}"
    );
}

#[test]
fn environment_overrides_are_checked_and_named() {
    let gate = Kubegate::new();
    let (ok, problems, stderr) = check(
        &gate,
        &[
            ("KUBEGATE_SERVER__WORKERS", "lots"),
            ("KUBEGATE_AUDIT__FLUSH_INTERVAL", "often"),
        ],
    );
    assert!(!ok);
    assert!(
        problems.iter().any(|p| p.starts_with("server.workers: ")
            && p.ends_with("(set by the environment variable KUBEGATE_SERVER__WORKERS)")),
        "{stderr}"
    );
    assert!(
        problems.iter().any(
            |p| p.starts_with("audit.flush_interval: \"often\" is not a duration")
                && p.contains("KUBEGATE_AUDIT__FLUSH_INTERVAL")
        ),
        "{stderr}"
    );
    // and a good override is used
    let out = run(
        &gate,
        &["check-config"],
        &[("KUBEGATE_POLICY__GLOBAL_ADMINS", "[\"root\"]")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_library_reports_the_same_list() {
    let text = DEFAULT_TOML
        .replace("# keep_files = 100", "keep_files = -1")
        .replace(
            "[auth]\n",
            "[auth]\nsigning_key = \"inline secrets are not keys\"\n",
        );
    match Config::parse_with(&text, Path::new("x.toml"), Vec::new()) {
        Err(ConfigError::Problems { problems, .. }) => {
            assert_eq!(problems.len(), 2, "{problems:?}");
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("audit.keep_files: invalid value: integer `-1`")),
                "{problems:?}"
            );
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("auth.signing_key: unknown key")),
                "{problems:?}"
            );
        }
        other => panic!("expected the problems, got {other:?}"),
    }
}

/// The `kubegate.toml: |` block of the Kubernetes ConfigMap.
fn configmap_toml() -> String {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/configmap.yaml"
    ))
    .unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "kubegate.toml: |");
    lines.next().expect("the ConfigMap has kubegate.toml");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_configurations_are_valid() {
    for (name, text) in [
        (
            "config/compose.toml",
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/compose.toml"))
                .unwrap(),
        ),
        ("deploy/kubernetes/configmap.yaml", configmap_toml()),
    ] {
        let config = Config::parse_with(&text, Path::new(name), Vec::new())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.store.kind, StoreKind::Vault, "{name}");
        assert_eq!(config.policy.storage, PolicyStorage::Postgres, "{name}");
        assert_eq!(config.sessions.store, SessionStoreKind::Redis, "{name}");
        assert!(
            config.audit.sinks.contains(&AuditSinkKind::Postgres),
            "{name}"
        );
    }
}

#[test]
fn mistakes_inside_nested_sections_are_named_by_their_full_key() {
    let text = DEFAULT_TOML.replace(
        "kind = \"file\"",
        "kind = \"vault\"\n\n[store.vault]\naddres = \"https://vault:8200\"\ntimeout = \"fast\"\nauth = \"magic\"",
    );
    // the [store.vault] table above swallowed `path`, which belongs to [store]
    match Config::parse_with(&text, Path::new("x.toml"), Vec::new()) {
        Err(ConfigError::Problems { problems, .. }) => {
            for expected in [
                "store.vault.addres: unknown key",
                "store.vault.path: unknown key",
                "store.vault.timeout: \"fast\" is not a duration",
                "store.vault.address: is missing",
                "store.vault.auth: \"magic\" is not one of token, approle, kubernetes",
            ] {
                assert!(
                    problems.iter().any(|p| p.starts_with(expected)),
                    "{expected}: {problems:#?}"
                );
            }
            // (until every key had its default: "store.path: is missing")
            assert!(
                !problems.iter().any(|p| p.starts_with("store.path")),
                "store.path has a default: {problems:#?}"
            );
        }
        other => panic!("expected the problems, got {other:?}"),
    }
}

#[test]
fn passwords_written_in_the_file_are_pointed_out() {
    let text = DEFAULT_TOML.replace(
        "# postgres_url = \"host=127.0.0.1 user=postgres dbname=kubegate\"\n\n[audit]",
        "postgres_url = \"host=db user=kubegate password=hunter2 dbname=kubegate\"\n\n[audit]",
    );
    assert_ne!(text, DEFAULT_TOML, "the test edits [policy]");
    let warnings = kubegate::config::secrets_in_file(&text);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("policy.postgres_url holds a password"));
    assert!(warnings[0].contains("KUBEGATE_POLICY__POSTGRES_URL"));
    assert!(
        !warnings[0].contains("hunter2"),
        "the password is not repeated"
    );
    let url = "[sessions]\nredis_url = \"redis://:s3cret@redis:6379\"\n";
    assert_eq!(kubegate::config::secrets_in_file(url).len(), 1);
    for no_password in [
        "[sessions]\nredis_url = \"redis://redis:6379\"\n",
        "[audit]\npostgres_url = \"postgres://kubegate@db:5432/kubegate\"\n",
    ] {
        assert!(
            kubegate::config::secrets_in_file(no_password).is_empty(),
            "{no_password}"
        );
    }
    assert!(kubegate::config::secrets_in_file(DEFAULT_TOML).is_empty());
}

#[test]
fn a_choice_that_is_not_offered_is_named_with_the_choices() {
    let text = DEFAULT_TOML
        .replace(
            "kind = \"file\"\npath = \"data\"\n",
            "kind = \"vaul\"\npath = \"data\"\n\n[store.vault]\naddress = \"https://vault:8200\"\nauth = \"password\"\n",
        )
        .replace("token_store = \"file\"", "token_store = \"consul\"")
        .replace("storage = \"file\"", "storage = \"mysql\"")
        .replace("sinks = [\"file\"]", "sinks = [\"file\", \"stdot\"]")
        .replace("store = \"cookie\"", "store = \"memcached\"")
        .replace("scheduling = \"batch\"", "scheduling = \"fifo\"");
    match Config::parse_with(&text, Path::new("x.toml"), Vec::new()) {
        Err(ConfigError::Problems { problems, .. }) => {
            for expected in [
                "store.kind: \"vaul\" is not one of file, vault",
                "store.vault.auth: \"password\" is not one of token, approle, kubernetes",
                "auth.token_store: \"consul\" is not one of file, vault",
                "policy.storage: \"mysql\" is not one of file, postgres",
                "audit.sinks: \"stdot\" is not one of file, stdout, postgres",
                "sessions.store: \"memcached\" is not one of cookie, redis",
                "server.scheduling: \"fifo\" is not one of batch, normal",
            ] {
                assert!(
                    problems.iter().any(|p| p == expected),
                    "{expected}: {problems:#?}"
                );
            }
            assert_eq!(problems.len(), 7, "{problems:#?}");
        }
        other => panic!("expected the problems, got {other:?}"),
    }
    // a value that is not a string names the choices too, and the environment is named
    let env = [("KUBEGATE_STORE__KIND", "1")].map(|(k, v)| (k.to_string(), v.to_string()));
    match Config::parse_with(DEFAULT_TOML, Path::new("x.toml"), env) {
        Err(ConfigError::Problems { problems, .. }) => assert_eq!(
            problems,
            ["store.kind: 1 is not one of file, vault \
              (set by the environment variable KUBEGATE_STORE__KIND)"],
        ),
        other => panic!("expected the problems, got {other:?}"),
    }
}

/// A file of one key is a whole configuration, from any working directory: the Casbin
/// model and policy left out are the embedded ones, not files that must exist beside it.
#[test]
fn a_file_of_one_key_checks_out_from_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kubegate.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubegate"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .env(
            "KUBEGATE_SIGNING_KEY",
            "a-signing-key-of-at-least-32-bytes!!",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(problems(&out).is_empty(), "{stderr}");
}

/// The Linux scheduling policy of each of a process's threads: the 41st field of
/// `/proc/PID/task/TID/stat` (0 `SCHED_OTHER`, 3 `SCHED_BATCH`).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // a thread that ended meanwhile
        };
        // the command name is in parentheses and may hold spaces: fields count from
        // the 3rd after it
        let (head, fields) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        let policy = fields
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap();
        policies.push((name, policy));
    }
    policies
}

/// `server.scheduling`: by default every thread of `serve` (the workers, the actors'
/// arbiters, Tokio's blocking threads) runs under SCHED_BATCH, and the log says so;
/// `normal` leaves them all as started.
#[test]
#[cfg(target_os = "linux")]
fn serve_runs_its_threads_under_the_configured_policy() {
    for (value, policy, logged) in [
        (
            None,
            3,
            "threads scheduled as SCHED_BATCH (server.scheduling = \"batch\")",
        ),
        (
            Some("normal"),
            0,
            "threads keep the scheduling policy kubegate was started with",
        ),
    ] {
        let mut gate = Kubegate::new();
        if let Some(value) = value {
            gate = gate.env("KUBEGATE_SERVER__SCHEDULING", value);
        }
        let (server, url) = gate.serve();
        // a request, so that the workers have run, and the threads started for the
        // first request (the blocking pool's, for the store) exist
        let out = Command::new("curl")
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{url}/healthz"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
        let threads = thread_policies(server.0.id());
        // main, the log flusher, one worker per core, the actors' arbiters at least
        assert!(threads.len() >= 4, "{threads:?}");
        // the log flusher is started before the configuration is read; every other
        // thread is started after the policy is set
        let others: Vec<_> = threads
            .iter()
            .filter(|(name, p)| *p != policy && name != "log-flush")
            .collect();
        assert!(others.is_empty(), "policy {policy} expected: {threads:?}");
        assert!(
            threads.iter().any(|(name, _)| name == "log-flush"),
            "{threads:?}"
        );
        assert!(
            gate.logs().iter().any(|line| line.contains(logged)),
            "{:#?}",
            gate.logs()
        );
    }
}
