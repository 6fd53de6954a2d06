//! kubectl with single sign-on, end to end: the real `kubegate login` opens the browser
//! step (a real headless Chromium, driven over WebDriver, through the local OIDC provider
//! or a real slapd's LDAP form), writes a kubeconfig whose credential is the exec plugin
//! `kubegate credential`, and the real kubectl then reads pods through kubegate with no
//! token in the file; the short-lived token is refreshed silently, without the browser;
//! after the session is revoked kubectl fails with a message that says to log in again.
//! The device flow (`--no-browser`) is driven the same way.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::browser::Browser;
use common::gateway::{block_on, TestGateway};
use common::kubectl::kubectl_bin;
use common::ldap::Slapd;
use common::oidc::OidcProvider;
use kubegate::config::login::ProviderConfig;

const KUBEGATE: &str = env!("CARGO_BIN_EXE_kubegate");
/// kubectl_token_ttl in these tests: every later kubectl run needs a refresh.
const TOKEN_TTL: Duration = Duration::from_secs(3);

/// A person's machine: a HOME with its kubeconfig and cache, and a `$BROWSER` that
/// writes the URL it is asked to open to a file, for the test to open in Chromium.
struct Machine {
    home: tempfile::TempDir,
    server: String,
    ca: PathBuf,
}

impl Machine {
    fn new(gw: &TestGateway) -> Machine {
        let home = tempfile::tempdir().unwrap();
        let opener = home.path().join("open-url");
        std::fs::write(
            &opener,
            format!(
                "#!/bin/sh\necho \"$1\" >> '{}'\n",
                home.path().join("opened").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
        Machine {
            server: gw.https_url.clone().expect("HTTPS"),
            ca: gw.data_dir().join("tls/ca.crt"),
            home,
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.home.path().join(".kube/config")
    }

    /// The URLs `$BROWSER` was asked to open so far.
    fn opened(&self) -> Vec<String> {
        std::fs::read_to_string(self.home.path().join("opened"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("BROWSER", self.home.path().join("open-url"))
            .env("KUBECONFIG", self.kubeconfig());
    }

    /// `kubegate login`, running.
    fn login(&self, extra: &[&str]) -> Child {
        let mut cmd = Command::new(KUBEGATE);
        cmd.args(["login", "--server", &self.server, "--certificate-authority"])
            .arg(&self.ca)
            .args(extra);
        self.env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubegate login starts")
    }

    /// kubectl with this machine's kubeconfig; no terminal, so the plugin is told the
    /// session is not interactive.
    fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(kubectl_bin());
        cmd.args(["--context", "kubegate-1-dev", "--request-timeout", "30s"])
            .args(args);
        self.env(&mut cmd);
        cmd.stdin(Stdio::null()).output().expect("kubectl runs")
    }
}

/// Waits for `child` to end (at most a minute), with what it wrote.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "no {what} within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// After a login: kubectl works with no token in the file, again after the token's
/// lifetime (a silent refresh, no browser), and not after the session is revoked.
fn kubectl_works_until_revoked(gw: &TestGateway, machine: &Machine, user: &str) {
    let config = std::fs::read_to_string(machine.kubeconfig()).unwrap();
    assert!(config.contains("kubegate-1-dev"), "{config}");
    assert!(config.contains("credential"), "the exec plugin: {config}");
    assert!(!config.contains("token:"), "no token in the file: {config}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(machine.kubeconfig())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the kubeconfig is private");

    let pods = machine.kubectl(&["get", "pods", "-o", "name"]);
    assert!(pods.status.success(), "{}", text(&pods.stderr));
    let opened = machine.opened().len();

    std::thread::sleep(TOKEN_TTL + Duration::from_secs(1));
    let pods = machine.kubectl(&["get", "pods", "-o", "name"]);
    assert!(
        pods.status.success(),
        "after a refresh: {}",
        text(&pods.stderr)
    );
    assert_eq!(machine.opened().len(), opened, "no browser for a refresh");
    let refreshed = gw.wait_audit(|e| e["verb"] == "refresh" && e["decision"] == "allow");
    assert_eq!(refreshed["user"], user);

    // an administrator ends the person's sessions: kubectl fails at once, and says why
    let admin = gw.token("root-admin");
    let url = format!("{}/pipeline/api/v1/users/{user}/tokens", gw.url);
    let (status, body) =
        block_on(
            move || async move { common::http::call("DELETE", &url, Some(&admin), None).await },
        );
    assert_eq!(status, 200, "{body}");
    let refused = machine.kubectl(&["get", "pods"]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("kubegate login"), "{stderr}");
    assert_eq!(
        machine.opened().len(),
        opened,
        "not interactive: no browser"
    );
}

fn with_admin(c: &mut kubegate::config::Config) {
    c.auth.kubectl_token_ttl = TOKEN_TTL;
    c.policy.global_admins = vec!["root-admin".into()];
    c.server.rate_limit_per_minute = 0;
}

#[test]
fn kubegate_login_through_oidc_in_a_browser() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let dex = provider.oidc_settings();
    let gw = TestGateway::builder()
        .https()
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .cluster(1, "prod", &api.kubeconfig_with_client_cert())
        .configure(move |c| {
            c.login.providers.insert("dex".into(), dex);
            c.login.role_rules = vec![toml::from_str(
                "provider = \"dex\"\ngroup = \"acme/admins\"\norg = 1\nrole = \"admin\"",
            )
            .unwrap()];
            with_admin(c);
        })
        .start();
    let machine = Machine::new(&gw);
    // a kubeconfig of the person's own, which login must keep
    std::fs::create_dir_all(machine.kubeconfig().parent().unwrap()).unwrap();
    std::fs::write(
        machine.kubeconfig(),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mine\n  cluster:\n    server: https://example.invalid\ncontexts:\n- name: mine\n  context:\n    cluster: mine\n    user: me\nusers:\n- name: me\n  user: {}\ncurrent-context: mine\n",
    )
    .unwrap();
    std::fs::set_permissions(
        machine.kubeconfig(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    let login = machine.login(&[]);
    let url = wait_for("URL for the browser", || {
        machine.opened().into_iter().next()
    });
    assert!(
        url.starts_with(&format!("{}/auth/cli/authorize?", machine.server)),
        "{url}"
    );
    let browser = Browser::start();
    // the provider logs alice in without a page; kubegate hands the code to the loopback
    browser.goto(&url);
    let out = finish(login);
    assert!(
        out.status.success(),
        "kubegate login: {}",
        text(&out.stderr)
    );
    assert!(
        out.stdout.is_empty() || !text(&out.stdout).contains("ey"),
        "no token printed"
    );
    let page = browser.page_text();
    assert!(page.to_lowercase().contains("logged in"), "{page}");

    let config = std::fs::read_to_string(machine.kubeconfig()).unwrap();
    assert!(
        config.contains("kubegate-1-prod") && config.contains("mine"),
        "{config}"
    );
    kubectl_works_until_revoked(&gw, &machine, "dex:alice");
}

#[test]
fn kubegate_login_through_ldap_in_a_browser() {
    let slapd = Slapd::start();
    let api = ApiServer::start();
    let settings = slapd.settings();
    let gw = TestGateway::builder()
        .https()
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .configure(move |c| {
            c.login
                .providers
                .insert("corp".into(), ProviderConfig::Ldap(settings));
            c.login.role_rules = vec![toml::from_str(
                "provider = \"corp\"\ngroup = \"kube-admins\"\norg = 1\nrole = \"admin\"",
            )
            .unwrap()];
            with_admin(c);
        })
        .start();
    let machine = Machine::new(&gw);
    let login = machine.login(&[]);
    let url = wait_for("URL for the browser", || {
        machine.opened().into_iter().next()
    });
    let browser = Browser::start();
    browser.goto(&url);
    browser.find_css("#username").send_keys("alice");
    browser.find_css("#password").send_keys("alice-secret");
    browser.find_css("#login").click();
    let out = finish(login);
    assert!(
        out.status.success(),
        "kubegate login: {}",
        text(&out.stderr)
    );
    let events = serde_json::to_string(&gw.audit_events()).unwrap();
    assert!(!events.contains("alice-secret"));
    kubectl_works_until_revoked(&gw, &machine, "corp:alice");
}

#[test]
fn kubegate_login_without_a_browser_confirms_a_code() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = {
        let dex = provider.oidc_settings();
        TestGateway::builder()
            .https()
            .cluster(1, "dev", &api.kubeconfig_with_client_cert())
            .configure(move |c| {
                c.login.providers.insert("dex".into(), dex);
                c.login.role_rules = vec![toml::from_str(
                    "provider = \"dex\"\ngroup = \"acme/admins\"\norg = 1\nrole = \"admin\"",
                )
                .unwrap()];
                with_admin(c);
            })
            .start()
    };
    let machine = Machine::new(&gw);
    let mut login = machine.login(&["--no-browser"]);
    // what it tells the person, on stderr: where to go, and the code
    let stderr = login.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut told = String::new();
    let verify = wait_for("the verification URL", || {
        while let Ok(line) = seen.try_recv() {
            told.push_str(&line);
            told.push('\n');
        }
        told.split_whitespace()
            .find(|w| w.contains("/auth/cli/device/verify?user_code="))
            .map(str::to_string)
    });
    assert!(machine.opened().is_empty(), "--no-browser opens nothing");
    let browser = Browser::start();
    browser.goto(&verify);
    browser.find_css("#approve").click();
    let out = finish(login);
    assert!(out.status.success(), "kubegate login --no-browser: {told}");
    let config = std::fs::read_to_string(machine.kubeconfig()).unwrap();
    assert!(
        config.contains("--no-browser"),
        "the plugin keeps the choice: {config}"
    );
    kubectl_works_until_revoked(&gw, &machine, "dex:alice");
}
