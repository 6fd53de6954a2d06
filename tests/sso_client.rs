//! `kubegate login` and `kubegate credential` (the kubectl SSO client) run as the built
//! binary against a stand-in of the server's SSO endpoints (tests/common/sso_server.rs):
//! the browser login (its "browser" is a script that writes down the URL; the test
//! follows it), the device login, the exec plugin's cache, check, refresh and refusal,
//! the proxy from the environment (HTTP_PROXY, and HTTPS_PROXY with CONNECT), and the
//! trust flags against an HTTPS stand-in.

#[path = "common/certs.rs"]
mod certs;
#[path = "common/sso_server.rs"]
mod sso_server;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sso_server::{header, http_get, CountingProxy, SsoServer, USER};

/// A home directory for the client: its kubeconfig, its cache, its "browser".
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let home = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        let script = home.path().join("browser.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s' \"$1\" > {}.tmp && mv {0}.tmp {0}\n",
                home.url_file().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        home
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url_file(&self) -> PathBuf {
        self.path().join("opened-url")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.path().join(".kube").join("config")
    }

    /// `kubegate ARGS` with this home, this browser, and no proxy or kubectl variables
    /// from the test's own environment.
    fn kubegate(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kubegate"));
        command
            .args(args)
            .env("HOME", self.path())
            .env("BROWSER", self.path().join("browser.sh"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in [
            "KUBECONFIG",
            "XDG_CACHE_HOME",
            "KUBERNETES_EXEC_INFO",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
        ] {
            command.env_remove(name);
        }
        command
    }

    /// The cached tokens (the one file of the cache directory).
    fn cache(&self) -> Value {
        let dir = self.path().join(".cache").join("kubegate");
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files[0]), 0o600);
        assert_eq!(mode(&dir), 0o700);
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap()
    }
}

/// Waits for `child` to exit (at most `limit`), then its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "kubegate did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Plays the user in the browser: reads the URL the "browser" got, follows the server's
/// redirect to the loopback server, and returns the loopback's answer.
fn browse(home: &Home) -> String {
    let start = Instant::now();
    let url = loop {
        if let Ok(url) = std::fs::read_to_string(home.url_file()) {
            break url;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the browser was not opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(home.url_file());
    let (status, answer) = http_get(&url);
    assert_eq!(status, 302, "{answer}");
    let location = header(&answer, "location").unwrap();
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    let (status, page) = http_get(&location);
    assert_eq!(status, 200, "{page}");
    page
}

/// `kubegate login` with the browser; the output.
fn browser_login(server: &SsoServer, home: &Home) -> Output {
    let child = home
        .kubegate(&["login", "--server", &server.url])
        .spawn()
        .unwrap();
    let page = browse(home);
    assert!(
        page.contains("Logged in to kubegate; you can close this tab."),
        "{page}"
    );
    finish(child, Duration::from_secs(30))
}

/// A stand-in server and a home that has logged in to it.
fn logged_in() -> (SsoServer, Home) {
    let server = SsoServer::start();
    let home = Home::new();
    let output = browser_login(&server, &home);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (server, home)
}

/// `kubegate credential` as kubectl runs it (not interactive).
fn credential(server: &SsoServer, home: &Home) -> Output {
    let info = format!(
        r#"{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{{"interactive":false,"cluster":{{"server":"{}/pipeline/api/v1/orgs/1/clusters/3/proxy"}}}}}}"#,
        server.url
    );
    let child = home
        .kubegate(&["credential", "--server", &server.url])
        .env("KUBERNETES_EXEC_INFO", info)
        .spawn()
        .unwrap();
    finish(child, Duration::from_secs(30))
}

/// The token of an ExecCredential on standard output (which holds nothing else).
fn printed_token(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value =
        serde_json::from_slice(&output.stdout).expect("stdout is only the ExecCredential JSON");
    assert_eq!(out["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(out["kind"], "ExecCredential");
    assert!(out["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    out["status"]["token"].as_str().unwrap().to_string()
}

#[test]
fn login_writes_the_kubeconfig_and_the_cache() {
    let server = SsoServer::start();
    let home = Home::new();
    let output = browser_login(&server, &home);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains(&format!("Opening the browser to log in; if it does not open, visit: {}/auth/cli/authorize?redirect_uri=http%3A%2F%2F127.0.0.1%3A", server.url)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "logged in as {USER}; wrote 2 contexts to {}: kubegate-1-dev, kubegate-1-prod",
            home.kubeconfig().display()
        )),
        "{stderr}"
    );

    {
        let state = server.state.lock().unwrap();
        let query = &state.authorize_queries[0];
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["state"].len(), 43);
        assert!(query["client"].starts_with("kubegate on "), "{query:?}");
        let form = &state.token_forms[0];
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code_verifier"].len(), 43);
        assert_eq!(form["redirect_uri"], query["redirect_uri"]);
        assert_eq!(form["client"], query["client"]);
        assert_eq!(
            state.kubeconfig_queries,
            vec!["credential=exec".to_string()]
        );
    }

    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(home.kubeconfig()).unwrap()).unwrap();
    assert_eq!(config["current-context"], "kubegate-1-dev");
    assert_eq!(config["contexts"].as_array().unwrap().len(), 2);
    let exec = &config["users"][0]["user"]["exec"];
    let command = PathBuf::from(exec["command"].as_str().unwrap());
    assert_eq!(
        command.canonicalize().unwrap(),
        Path::new(env!("CARGO_BIN_EXE_kubegate"))
            .canonicalize()
            .unwrap()
    );
    assert_eq!(
        exec["args"],
        serde_json::json!(["credential", "--server", server.url])
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home.kubeconfig()), 0o600);

    let cache = home.cache();
    assert_eq!(cache["server"], server.url);
    assert_eq!(cache["user"], USER);
    assert_eq!(cache["access_token"], "access-1");
    assert_eq!(cache["refresh_token"], "refresh-1");
    assert!(cache["expires_at"].as_u64().unwrap() > 1_700_000_000);
}

#[test]
fn credential_prints_the_cached_token_after_a_good_check() {
    let (server, home) = logged_in();
    let output = credential(&server, &home);
    assert_eq!(printed_token(&output), "access-1");
    let state = server.state.lock().unwrap();
    assert_eq!(state.session_checks, 1);
    assert_eq!(
        state.token_forms.len(),
        1,
        "no refresh: only the login's exchange"
    );
}

#[test]
fn credential_refreshes_on_401_and_saves_the_rotated_refresh_token() {
    let (server, home) = logged_in();
    server.expire_access();
    let output = credential(&server, &home);
    assert_eq!(printed_token(&output), "access-2");
    {
        let state = server.state.lock().unwrap();
        let refresh = state.token_forms.last().unwrap();
        assert_eq!(refresh["grant_type"], "refresh_token");
        assert_eq!(refresh["refresh_token"], "refresh-1");
        assert!(!state.refresh.contains("refresh-1"));
    }
    let cache = home.cache();
    assert_eq!(cache["access_token"], "access-2");
    assert_eq!(cache["refresh_token"], "refresh-2");
    // the new token is good: the next run uses it without a refresh
    assert_eq!(printed_token(&credential(&server, &home)), "access-2");
    assert_eq!(server.state.lock().unwrap().token_forms.len(), 2);
}

#[test]
fn credential_non_interactive_fails_when_the_refresh_is_refused() {
    let (server, home) = logged_in();
    server.revoke_all();
    let start = Instant::now();
    let output = credential(&server, &home);
    assert!(start.elapsed() < Duration::from_secs(10), "it waited");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "kubegate: your kubegate session has ended or was revoked; run: kubegate login --server {}\n",
            server.url
        )
    );
    assert!(!home.url_file().exists(), "no browser was opened");
}

#[test]
fn device_login_polls_through_pending_and_slow_down() {
    let server = SsoServer::start();
    let home = Home::new();
    server
        .state
        .lock()
        .unwrap()
        .device_script
        .extend(["authorization_pending".to_string(), "slow_down".to_string()]);
    let kubeconfig = home.path().join("elsewhere.yaml");
    let child = home
        .kubegate(&[
            "login",
            "--server",
            &server.url,
            "--no-browser",
            "--org",
            "1",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let output = finish(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "To log in, open {}/auth/cli/device/verify on any device and confirm the code BCDF-GHJK",
            server.url
        )),
        "{stderr}"
    );
    // the complete URL alone on its line, for scripts that pick it out
    let complete = format!("{}/auth/cli/device/verify?user_code=BCDF-GHJK", server.url);
    assert!(stderr.lines().any(|l| l == complete), "{stderr}");
    assert!(!home.url_file().exists(), "no browser was opened");
    {
        let state = server.state.lock().unwrap();
        assert_eq!(state.device_polls.len(), 3);
        let after_slow_down = state.device_polls[2] - state.device_polls[1];
        assert!(
            after_slow_down >= Duration::from_millis(5_500),
            "{after_slow_down:?}"
        );
        assert_eq!(
            state.kubeconfig_queries,
            vec!["credential=exec&org=1".to_string()]
        );
        assert!(state.token_forms[0]["client"].starts_with("kubegate on "));
    }
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    assert_eq!(
        config["users"][0]["user"]["exec"]["args"],
        serde_json::json!(["credential", "--server", server.url, "--no-browser"])
    );
    assert_eq!(home.cache()["access_token"], "access-1");
}

#[test]
fn the_proxy_of_the_environment_is_used_unless_no_proxy_says_otherwise() {
    let server = SsoServer::start();
    let home = Home::new();
    let proxy = CountingProxy::start();
    let child = home
        .kubegate(&["login", "--server", &server.url, "--no-browser"])
        .env("HTTP_PROXY", &proxy.url)
        .spawn()
        .unwrap();
    let output = finish(child, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = proxy.requests.lock().unwrap().clone();
    // (the proxy sees the first request of each connection it carries)
    assert_eq!(
        first.first().map(String::as_str),
        Some(format!("GET {}/auth/providers HTTP/1.1", server.url).as_str()),
        "{first:?}"
    );

    let bypassed = credential_with(
        &server,
        &home,
        &[("HTTP_PROXY", &proxy.url), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(printed_token(&bypassed), "access-1");
    assert_eq!(
        proxy.requests.lock().unwrap().len(),
        first.len(),
        "NO_PROXY was not honoured"
    );

    let proxied = credential_with(&server, &home, &[("HTTP_PROXY", &proxy.url)]);
    assert_eq!(printed_token(&proxied), "access-1");
    assert_eq!(
        proxy.requests.lock().unwrap().last().cloned(),
        Some(format!("GET {}/auth/session HTTP/1.1", server.url))
    );
}

/// `kubegate credential` with extra environment variables.
fn credential_with(server: &SsoServer, home: &Home, env: &[(&str, &str)]) -> Output {
    let mut command = home.kubegate(&["credential", "--server", &server.url]);
    command.env(
        "KUBERNETES_EXEC_INFO",
        r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#,
    );
    for (k, v) in env {
        command.env(k, v);
    }
    finish(command.spawn().unwrap(), Duration::from_secs(30))
}

#[test]
fn credential_refreshes_a_token_near_its_expiry_without_checking_it() {
    let server = SsoServer::start();
    server.state.lock().unwrap().expires_in = 30;
    let home = Home::new();
    assert!(browser_login(&server, &home).status.success());
    assert_eq!(printed_token(&credential(&server, &home)), "access-2");
    let state = server.state.lock().unwrap();
    assert_eq!(state.session_checks, 0);
    assert_eq!(
        state.token_forms.last().unwrap()["refresh_token"],
        "refresh-1"
    );
}

#[test]
fn https_with_a_ca_file_through_an_https_proxy_and_insecure() {
    use base64::Engine as _;
    let pki = certs::TestPki::new();
    let server = SsoServer::start_tls(pki.server_config());
    let home = Home::new();
    let ca = home.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let proxy = CountingProxy::start();
    let login = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["login", "--server", &server.url, "--no-browser"];
        args.extend_from_slice(extra);
        let mut command = home.kubegate(&args);
        for (k, v) in env {
            command.env(k, v);
        }
        finish(command.spawn().unwrap(), Duration::from_secs(30))
    };

    // the system's CAs do not know the stand-in's
    let untrusted = login(&[], &[]);
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1));
    // (on a machine without system CAs the message says that instead)
    assert!(
        stderr.contains(&format!(
            "kubegate: cannot reach the kubegate server at {}/auth/providers",
            server.url
        )) || stderr.contains("no system CA certificates"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let trusted = login(
        &["--certificate-authority", ca.to_str().unwrap()],
        &[("HTTPS_PROXY", &proxy.url)],
    );
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let authority = server.url.strip_prefix("https://").unwrap();
    assert_eq!(
        proxy.requests.lock().unwrap().first().cloned(),
        Some(format!("CONNECT {authority} HTTP/1.1"))
    );
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(home.kubeconfig()).unwrap()).unwrap();
    let ca_data = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);
    for cluster in config["clusters"].as_array().unwrap() {
        assert_eq!(
            cluster["cluster"]["certificate-authority-data"],
            ca_data.as_str()
        );
    }

    // the plugin trusts the cluster's CA data that kubectl hands it
    let info = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "spec": {"interactive": false, "cluster": config["clusters"][0]["cluster"].clone()},
    });
    let output = finish(
        home.kubegate(&["credential", "--server", &server.url])
            .env("KUBERNETES_EXEC_INFO", info.to_string())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    assert_eq!(printed_token(&output), "access-1");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let insecure = login(&["--insecure-skip-tls-verify"], &[]);
    let stderr = String::from_utf8_lossy(&insecure.stderr);
    assert!(insecure.status.success(), "{stderr}");
    assert!(
        stderr.contains("kubegate: warning: the certificate of https://127.0.0.1:"),
        "{stderr}"
    );
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(home.kubeconfig()).unwrap()).unwrap();
    for cluster in config["clusters"].as_array().unwrap() {
        assert_eq!(cluster["cluster"]["insecure-skip-tls-verify"], true);
        assert!(cluster["cluster"]
            .get("certificate-authority-data")
            .is_none());
    }
}

#[test]
fn credential_logs_in_again_when_interactive() {
    let (server, home) = logged_in();
    server.revoke_all();
    let child = home
        .kubegate(&["credential", "--server", &server.url])
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":true}}"#,
        )
        .spawn()
        .unwrap();
    let page = browse(&home);
    assert!(page.contains("Logged in to kubegate"), "{page}");
    let output = finish(child, Duration::from_secs(30));
    assert_eq!(printed_token(&output), "access-2");
    assert!(String::from_utf8_lossy(&output.stderr).contains("Opening the browser to log in"));
    assert_eq!(home.cache()["refresh_token"], "refresh-2");
}

#[test]
fn login_refuses_a_kubeconfig_that_is_not_one_before_logging_in() {
    let server = SsoServer::start();
    let home = Home::new();
    std::fs::create_dir_all(home.kubeconfig().parent().unwrap()).unwrap();
    std::fs::write(home.kubeconfig(), "clusters: [unclosed\n").unwrap();
    let output = finish(
        home.kubegate(&["login", "--server", &server.url, "--no-browser"])
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "the kubeconfig {} is not a valid kubeconfig",
            home.kubeconfig().display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(home.kubeconfig()).unwrap(),
        "clusters: [unclosed\n"
    );
    assert!(
        server.state.lock().unwrap().token_forms.is_empty(),
        "it logged in first"
    );
}

/// The real kubectl reads the kubeconfig `kubegate login` wrote, runs `kubegate
/// credential` as its exec plugin (with KUBERNETES_EXEC_INFO and the cluster's CA data),
/// and sends the token it printed to the cluster's proxy URL (`kubectl version`: `GET
/// .../proxy/version`; `get --raw` would drop the proxy path).
#[test]
fn kubectl_runs_the_plugin_that_login_wrote() {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let works = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "kubectl is needed for this test: put it on the PATH or set KUBECTL"
    );
    let pki = certs::TestPki::new();
    let server = SsoServer::start_tls(pki.server_config());
    let home = Home::new();
    let ca = home.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let login = finish(
        home.kubegate(&[
            "login",
            "--server",
            &server.url,
            "--no-browser",
            "--certificate-authority",
            ca.to_str().unwrap(),
        ])
        .spawn()
        .unwrap(),
        Duration::from_secs(30),
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let mut command = Command::new(&kubectl);
    command
        .args([
            "--kubeconfig",
            home.kubeconfig().to_str().unwrap(),
            "version",
            "-o",
            "json",
        ])
        .env("HOME", home.path())
        .stdin(Stdio::null());
    for name in [
        "KUBECONFIG",
        "XDG_CACHE_HOME",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ] {
        command.env_remove(name);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("v1.32.0-kubegate-stand-in"), "{stdout}");
    let state = server.state.lock().unwrap();
    assert!(!state.proxied_tokens.is_empty());
    assert!(
        state.proxied_tokens.iter().all(|t| t == "access-1"),
        "{:?}",
        state.proxied_tokens
    );
    assert_eq!(
        state.session_checks, 1,
        "the plugin checked its cached token once"
    );
}

#[test]
fn login_caches_the_tokens_under_the_url_the_plugin_is_given() {
    let server = SsoServer::start();
    let public = server.url.replace("127.0.0.1", "localhost");
    server.state.lock().unwrap().public_url = Some(public.clone());
    let home = Home::new();
    let output = browser_login(&server, &home);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(home.kubeconfig()).unwrap()).unwrap();
    assert_eq!(
        config["users"][0]["user"]["exec"]["args"],
        serde_json::json!(["credential", "--server", public])
    );
    let output = finish(
        home.kubegate(&["credential", "--server", &public])
            .env("KUBERNETES_EXEC_INFO", r#"{"spec":{"interactive":false}}"#)
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    assert_eq!(printed_token(&output), "access-1");
}

#[test]
fn login_fails_at_once_without_a_server_or_with_an_unknown_provider() {
    let home = Home::new();
    // nothing listens there: a clear error, and no browser opened
    let output = finish(
        home.kubegate(&["login", "--server", "http://127.0.0.1:9"])
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the kubegate server at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(
        !home.url_file().exists(),
        "no browser for a server that is not there"
    );

    let server = SsoServer::start();
    let output = finish(
        home.kubegate(&["login", "--server", &server.url, "--provider", "nope"])
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no login provider named \"nope\"") && stderr.contains("dex"),
        "{stderr}"
    );
    assert!(!home.url_file().exists());
}
