//! The real `kubectl`, pointed at kubegate over HTTPS with a token and isolated from the
//! user's own kubeconfig.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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

/// A TCP server on 127.0.0.1 that sends back what it gets: the "pod's port".
pub fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let mut writer = conn;
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// Starts `kubectl port-forward`, and sends 256 KiB through it twice, reading the echo
/// back as it comes; returns kubectl, still forwarding.
pub fn port_forward_round_trips(mut cmd: Command) -> std::process::Child {
    let mut forward = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(forward.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .expect("kubectl port-forward prints its port")
        .unwrap();
    // "Forwarding from 127.0.0.1:41234 -> 8080"
    let local: u16 = first
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {first:?}"));
    for round in 0..2 {
        let mut conn = TcpStream::connect(("127.0.0.1", local)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let sent: Vec<u8> = (0..(256 * 1024 + round)).map(|i| (i % 251) as u8).collect();
        let mut writer = conn.try_clone().unwrap();
        let to_send = sent.clone();
        let writing = std::thread::spawn(move || writer.write_all(&to_send).unwrap());
        let mut got = vec![0u8; sent.len()];
        conn.read_exact(&mut got).unwrap();
        writing.join().unwrap();
        assert!(got == sent, "the bytes came back changed in round {round}");
    }
    forward
}
