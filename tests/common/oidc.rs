//! A real local OAuth2/OpenID Connect provider for login tests: npm `oauth2-mock-server`
//! wrapped by `tests/peers/oidc-provider.mjs`, which also answers GitHub's user API.
//!
//! The provider logs in, without a page, whoever the test last set with
//! [`OidcProvider::set_user`]; it requires PKCE (S256) and the client secret, binds the
//! user and the nonce to the code, refuses a code twice, and puts in each ID token the
//! `at_hash` of the access token it comes with. See the script's header for everything
//! it checks.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::gateway::block_on;

/// The client id the provider knows.
pub const CLIENT_ID: &str = "kubegate";
/// That client's secret.
pub const CLIENT_SECRET: &str = "kubegate-secret";

/// Who logs in next, and how the provider answers.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderUser {
    /// The OIDC subject (`sub`).
    pub sub: String,
    pub email: String,
    pub preferred_username: String,
    pub name: String,
    /// OIDC `groups`; for GitHub, `"org"` is an org and `"org/team"` a team of it.
    pub groups: Vec<String>,
    /// The GitHub login.
    pub login: String,
    /// The GitHub numeric user id.
    pub id: u64,
    /// Refuse consent: /authorize redirects back with `error=access_denied`.
    pub deny: bool,
    /// Claims merged last into the ID token (`{"nonce": "forged"}`, `{"aud": "other"}`...).
    pub id_token_claims: serde_json::Map<String, Value>,
    /// `Some("HS256")`: the ID token signed with HMAC-SHA256 keyed by the client secret,
    /// instead of the provider's (RS256) signing key; `Some("none")`: not signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token_alg: Option<String>,
}

impl ProviderUser {
    /// `name` with `sub = "{name}-sub"`, `{name}@example.org`, GitHub login `name`, no groups.
    pub fn named(name: &str) -> ProviderUser {
        ProviderUser {
            sub: format!("{name}-sub"),
            email: format!("{name}@example.org"),
            preferred_username: name.to_string(),
            name: format!("{name} Example"),
            groups: Vec::new(),
            login: name.to_string(),
            id: 1000 + name.bytes().map(u64::from).sum::<u64>(),
            deny: false,
            id_token_claims: Default::default(),
            id_token_alg: None,
        }
    }

    /// With these groups (GitHub: orgs and `org/team` teams).
    pub fn groups(mut self, groups: &[&str]) -> ProviderUser {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }

    /// Refusing consent.
    pub fn denied(mut self) -> ProviderUser {
        self.deny = true;
        self
    }

    /// With `claim` set to `value` in the ID token, whatever the provider would put there.
    pub fn id_token_claim(mut self, claim: &str, value: Value) -> ProviderUser {
        self.id_token_claims.insert(claim.to_string(), value);
        self
    }

    /// With the ID token signed HS256 with the client secret (a symmetric key kubegate
    /// knows too), `kid` and claims unchanged.
    pub fn id_token_signed_hs256_with_client_secret(mut self) -> ProviderUser {
        self.id_token_alg = Some("HS256".into());
        self
    }

    /// With the ID token unsigned: `alg` "none" and an empty signature.
    pub fn id_token_unsigned(mut self) -> ProviderUser {
        self.id_token_alg = Some("none".into());
        self
    }
}

/// A running provider. Stopped (killed) on drop.
pub struct OidcProvider {
    issuer: String,
    child: Option<Child>,
    _stdin: Option<ChildStdin>,
    /// Holds the client secret file kubegate's settings name.
    secrets: tempfile::TempDir,
}

/// `tests/peers`, where the provider's script and its `node_modules` are.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// `node`: `$NODE` or the `PATH`.
fn node() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".into())
}

/// Runs `npm ci` in `tests/peers` once when its `node_modules` is missing; `flock` keeps
/// test processes that start at the same time from running it twice.
pub fn ensure_node_modules(dir: &Path) {
    let marker = dir.join("node_modules/oauth2-mock-server/package.json");
    if marker.exists() {
        return;
    }
    let lock = std::env::temp_dir().join("kubegate-test-peers-npm.lock");
    let status = Command::new("flock")
        .arg(&lock)
        .args([
            "sh",
            "-c",
            "test -e node_modules/oauth2-mock-server/package.json || npm ci --no-audit --no-fund --loglevel=error",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .expect("flock and npm run (the tests need node and npm)");
    assert!(status.success(), "`npm ci` in {} failed", dir.display());
}

impl OidcProvider {
    /// Starts the provider on a free port of 127.0.0.1 (running `npm ci` first if needed)
    /// and waits until it listens. The first user is `alice` in groups `acme` and
    /// `acme/admins`.
    pub fn start() -> OidcProvider {
        let dir = peers_dir();
        ensure_node_modules(&dir);
        let mut child = Command::new(node())
            .arg("oidc-provider.mjs")
            .args(["--port", "0", "--client-id", CLIENT_ID])
            .args(["--client-secret", CLIENT_SECRET])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node starts (the tests need node >= 20.19)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // keep reading so that the provider never blocks on a full pipe
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("the OIDC provider did not start within 30 s");
            }
        };
        let ready: Value = serde_json::from_str(&line).expect("the provider prints JSON");
        let issuer = ready["issuer"].as_str().expect("an issuer").to_string();
        let stdin = child.stdin.take();
        let provider = OidcProvider {
            issuer,
            child: Some(child),
            _stdin: stdin,
            secrets: tempfile::tempdir().expect("a directory for the client secret"),
        };
        provider.set_user(&ProviderUser::named("alice").groups(&["acme", "acme/admins"]));
        provider
    }

    /// `http://127.0.0.1:PORT`: the issuer (`iss`), and the base of the discovery
    /// document `/.well-known/openid-configuration`. Also the GitHub Enterprise base URL:
    /// `/login/oauth/authorize`, `/login/oauth/access_token`, `/api/v3`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The authorization endpoint (GitHub's `/login/oauth/authorize` is the same).
    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.issuer)
    }

    /// The token endpoint (GitHub's `/login/oauth/access_token` is the same).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The JWKS the ID tokens are signed with.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// The OIDC userinfo endpoint (bearer access token).
    pub fn userinfo_url(&self) -> String {
        format!("{}/userinfo", self.issuer)
    }

    /// The GitHub API base: `{api_url}/user`, `/user/emails`, `/user/orgs`, `/user/teams`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v3", self.issuer)
    }

    /// The client secret in a file, for kubegate's `client_secret_file`.
    fn secret_file(&self) -> PathBuf {
        let file = self.secrets.path().join("client-secret");
        std::fs::write(&file, CLIENT_SECRET).unwrap();
        file
    }

    /// kubegate's settings for this provider as an OIDC provider, the user named by the
    /// `preferred_username` claim.
    pub fn oidc_settings(&self) -> kubegate::config::login::ProviderConfig {
        toml::from_str(&format!(
            "kind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret_file = \"{}\"\nuser_claim = \"preferred_username\"\n",
            self.issuer,
            self.secret_file().display()
        ))
        .expect("OIDC provider settings")
    }

    /// kubegate's settings for this provider as a GitHub Enterprise.
    pub fn github_settings(&self) -> kubegate::config::login::ProviderConfig {
        toml::from_str(&format!(
            "kind = \"github\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\n\
             auth_url = \"{}\"\ntoken_url = \"{}\"\napi_url = \"{}\"\n",
            self.secret_file().display(),
            self.authorize_url(),
            self.token_url(),
            self.api_url()
        ))
        .expect("GitHub provider settings")
    }

    /// A kubegate in front of `api` (cluster 1 of org 1) whose only login provider is
    /// this one, named `dex`, its group `acme/admins` admin of org 1, no rate limit.
    pub fn gateway(&self, api: &super::apiserver::ApiServer) -> super::gateway::TestGateway {
        let dex = self.oidc_settings();
        super::gateway::TestGateway::builder()
            .cluster(1, "dev", &api.kubeconfig_with_client_cert())
            .configure(move |c| {
                c.login.providers.insert("dex".into(), dex);
                c.login.role_rules = vec![toml::from_str(
                    "provider = \"dex\"\ngroup = \"acme/admins\"\norg = 1\nrole = \"admin\"",
                )
                .unwrap()];
                c.server.rate_limit_per_minute = 0;
            })
            .start()
    }

    /// Sets who logs in from the next authorize request on (it stays until set again).
    pub fn set_user(&self, user: &ProviderUser) {
        let (status, body) =
            self.control("POST", "user", Some(serde_json::to_value(user).unwrap()));
        assert_eq!(status, 200, "the provider took the user: {body}");
    }

    /// The authorize, token and JWKS requests the provider received, oldest first: for
    /// authorize `{endpoint, client_id, redirect_uri, response_type, scope, state, nonce,
    /// code_challenge_method, has_code_challenge}`, for token `{endpoint, grant_type,
    /// client_auth ("basic" or "post"), has_code_verifier, redirect_uri}`, for the JWKS
    /// `{endpoint: "jwks"}`.
    pub fn requests(&self) -> Vec<Value> {
        let (status, body) = self.control("GET", "requests", None);
        assert_eq!(status, 200);
        body.as_array().cloned().unwrap_or_default()
    }

    /// Rotates the provider's signing key: tokens are signed from now on with a new RS256
    /// key, with a new `kid`. With `publish`, the JWKS lists that key only (the old one
    /// is gone, as after a real rotation); without, the JWKS keeps listing the old key
    /// only. Returns the new `kid`.
    pub fn rotate_keys(&self, publish: bool) -> String {
        let (status, body) = self.control(
            "POST",
            "rotate-keys",
            Some(serde_json::json!({"alg": "RS256", "publish": publish})),
        );
        assert_eq!(status, 200, "the provider rotated its key: {body}");
        let kid = body["kid"].as_str().expect("the new kid").to_string();
        let listed = body["kids"].as_array().expect("the JWKS's kids");
        assert_eq!(listed.iter().any(|k| k == kid.as_str()), publish, "{body}");
        kid
    }

    /// How many times the JWKS has been fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["endpoint"] == "jwks")
            .count()
    }

    /// Stops the provider: from now on its port refuses connections ("provider down").
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self._stdin = None;
    }

    fn control(&self, method: &str, what: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/__control/{what}", self.issuer);
        let method = method.to_string();
        block_on(move || async move {
            let request = awc::Client::default().request(method.parse().unwrap(), url);
            let sent = match body {
                Some(body) => request.send_json(&body).await,
                None => request.send().await,
            };
            let mut res = sent.expect("the OIDC provider answers");
            let bytes = res.body().await.unwrap_or_default();
            (
                res.status().as_u16(),
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
