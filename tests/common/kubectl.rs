//! The real `kubectl`, pointed at kubegate over HTTPS with a token and isolated from the
//! user's own kubeconfig.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::binary::Kubegate;

/// The kubectl binary (`$KUBECTL` or `kubectl` on the `PATH`); panics with a hint when
/// there is none.
pub fn kubectl_bin() -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let works = Command::new(&bin)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "kubectl is needed for this test: put it on the PATH or set KUBECTL (CI installs it)"
    );
    bin
}

/// kubectl with `--server`, `--token` and `--certificate-authority` set.
pub struct Kubectl {
    bin: String,
    server: String,
    token: String,
    ca: PathBuf,
    /// Its HOME (and cache directory).
    pub home: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl never sends credentials over plain HTTP: it talks HTTPS to kubegate,
    /// trusting `ca`.
    pub fn new(server: &str, token: &str, ca: &Path) -> Kubectl {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("empty-kubeconfig"), "").unwrap();
        Kubectl {
            bin: kubectl_bin(),
            server: server.to_string(),
            token: token.trim().to_string(),
            ca: ca.to_path_buf(),
            home,
        }
    }

    /// kubectl at cluster 1 of org 1 through `gate`, serving HTTPS at `https_url`, with
    /// `token`, trusting the CA kubegate made on first start.
    pub fn through(gate: &Kubegate, https_url: &str, token: &str) -> Kubectl {
        Kubectl::new(
            &format!("{https_url}/pipeline/api/v1/orgs/1/clusters/1/proxy"),
            token,
            &gate.dir().join("data/tls/ca.crt"),
        )
    }

    /// The command, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("KUBECONFIG", self.home.path().join("empty-kubeconfig"))
            .env("HOME", self.home.path())
            .arg("--server")
            .arg(&self.server)
            .arg("--token")
            .arg(&self.token)
            .arg("--certificate-authority")
            .arg(&self.ca)
            .arg("--cache-dir")
            .arg(self.home.path().join("cache"))
            .arg("--request-timeout=20s")
            .args(args);
        cmd
    }

    /// Runs it to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs it and returns its standard output; panics with both outputs if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
