//! The `kubegate` binary, set up with a private configuration in a temporary directory
//! and driven through its own command line.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The kubegate binary with a private configuration in a temporary directory.
pub struct Kubegate {
    dir: tempfile::TempDir,
    config: PathBuf,
    http: std::sync::Mutex<Option<String>>,
    /// What `serve` logged, each line with when the test read it.
    logs: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    env: Vec<(String, String)>,
}

impl Kubegate {
    /// The plain HTTP address `serve` printed, once it has.
    pub fn http_url(&self) -> Option<String> {
        self.http.lock().unwrap().clone()
    }

    /// The temporary directory: the configuration, `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn new() -> Kubegate {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = kubegate::config::DEFAULT_TOML
            .replace(
                "path = \"data\"",
                &format!("path = \"{}\"", dir.path().join("data").display()),
            )
            .replace("\"data/", &format!("\"{}/data/", dir.path().display()))
            .replace("\"config/", &format!("\"{}/config/", repo.display()))
            .replace("member_poll = \"2s\"", "member_poll = \"100ms\"")
            .replace("flush_interval = \"200ms\"", "flush_interval = \"20ms\"");
        let config = dir.path().join("kubegate.toml");
        std::fs::write(&config, text).unwrap();
        Kubegate {
            dir,
            config,
            http: std::sync::Mutex::new(None),
            logs: Default::default(),
            env: Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubegate"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Sets an environment variable for every command (and `serve`) run from now on.
    pub fn env(mut self, name: &str, value: &str) -> Kubegate {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The configuration file (to edit before `serve`).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Edits the configuration file.
    pub fn edit_config(self, edit: impl FnOnce(String) -> String) -> Kubegate {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, edit(text)).unwrap();
        self
    }

    /// What `serve` wrote on its standard error so far, line by line.
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// [`Kubegate::logs`], each line with when it came out of `serve`'s standard error.
    pub fn timed_logs(&self) -> Vec<(Instant, String)> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (5 s at the most) for a line of what `serve` logged that `matches`, and
    /// returns it; panics with `what` and the log so far.
    pub fn wait_log(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| matches(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "{what}: {:#?}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a CLI command and returns its standard output; panics with its stderr.
    pub fn run(&self, args: &[&str]) -> String {
        stdout_of(self.command(args), args)
    }

    /// The cluster `dev` of org 1, reached with `kubeconfig` (its text, written next to
    /// the configuration): see [`add_cluster`].
    pub fn add_cluster(&self, kubeconfig: &str) -> String {
        let path = self.dir.path().join("cluster.yaml");
        std::fs::write(&path, kubeconfig).unwrap();
        add_cluster(|args| self.run(args), "dev", &path)
    }

    /// `user` a member of org 1 with `role`: see [`member_with_token`].
    pub fn member_with_token(&self, user: &str, role: &str) -> String {
        member_with_token(|args| self.run(args), user, role)
    }

    /// Starts `serve` on port 0 (HTTP and HTTPS) and returns the child and the HTTPS URL.
    pub fn serve(&self) -> (Server, String) {
        let mut child = self
            .command(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--listen-tls",
                "127.0.0.1:0",
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("kubegate listening on ") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.to_string());
                }
                logs.lock().unwrap().push((Instant::now(), line));
            }
        });
        let url = loop {
            let url = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("kubegate serve starts");
            if url.starts_with("https://") {
                break url;
            }
            *self.http.lock().unwrap() = Some(url);
        };
        (Server(child), url)
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("data/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Runs `kubegate --config CONFIG ARGS` and returns its standard output; panics with its
/// stderr. The benchmarks' command line.
pub fn run_cli(config: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubegate"));
    cmd.arg("--config").arg(config).args(args);
    stdout_of(cmd, args)
}

/// The standard output of `cmd` (kubegate with `args`), run to the end; panics with its
/// stderr if it fails.
fn stdout_of(mut cmd: Command, args: &[&str]) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "kubegate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `cluster add` of the cluster `name` to org 1, reached with the kubeconfig file
/// `kubeconfig`, through `cli` (kubegate's command line with a configuration: it runs
/// `kubegate --config FILE ARGS` and returns the standard output); returns the cluster's
/// id. The benchmarks share it.
pub fn add_cluster(cli: impl Fn(&[&str]) -> String, name: &str, kubeconfig: &Path) -> String {
    cli(&[
        "cluster",
        "add",
        "--org",
        "1",
        "--name",
        name,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ])
    .trim()
    .to_string()
}

/// `member add` of `user` to org 1 with `role`, then `token create` for them, through
/// `cli` (as for [`add_cluster`]); returns the token.
pub fn member_with_token(cli: impl Fn(&[&str]) -> String, user: &str, role: &str) -> String {
    cli(&[
        "member", "add", "--org", "1", "--user", user, "--role", role,
    ]);
    cli(&["token", "create", "--user", user]).trim().to_string()
}

/// A `kubegate serve` process, killed if the test ends before it exits.
pub struct Server(pub Child);

impl Server {
    /// Sends it `signal` (`TERM`, `HUP`) with `kill`; panics if that fails.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}: {status:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit, at most `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("kubegate did not exit in time: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
