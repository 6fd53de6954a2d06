//! End to end with real clients: the `kubegate` binary set up through its own CLI, and the
//! real `kubectl` talking to it, as the README's quick start does.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate};

fn kubectl_bin() -> String {
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

/// kubectl pointed at kubegate with a token, isolated from the user's own kubeconfig.
struct Kubectl {
    bin: String,
    server: String,
    token: String,
    ca: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl never sends credentials over plain HTTP: it talks HTTPS to kubegate,
    /// trusting the CA kubegate made on first start.
    fn new(server: &str, token: &str, ca: &Path) -> Kubectl {
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

    fn command(&self, args: &[&str]) -> Command {
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

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
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

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels:
    app: web
spec:
  containers:
  - name: web
    image: nginx:1.27
"#;

#[test]
fn kubectl_through_kubegate_as_admin_and_member() {
    let api = ApiServer::start();
    let gate = Kubegate::new();
    let kubeconfig = gate.dir().join("cluster.yaml");
    std::fs::write(&kubeconfig, api.kubeconfig_with_client_cert()).unwrap();

    // the quick start, through the CLI
    let id = gate.run(&[
        "cluster",
        "add",
        "--org",
        "1",
        "--name",
        "dev",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(id.trim(), "1");
    gate.run(&[
        "member", "add", "--org", "1", "--user", "alice", "--role", "admin",
    ]);
    gate.run(&[
        "member", "add", "--org", "1", "--user", "bob", "--role", "member",
    ]);
    let alice_token = gate.run(&["token", "create", "--user", "alice"]);
    let bob_token = gate.run(&["token", "create", "--user", "bob"]);
    assert_eq!(
        alice_token.trim().split('.').count(),
        3,
        "the token alone is printed"
    );
    let (mut server, url) = gate.serve();
    let server_url = format!("{url}/pipeline/api/v1/orgs/1/clusters/1/proxy");
    let ca = gate.dir().join("data/tls/ca.crt");
    let alice = Kubectl::new(&server_url, &alice_token, &ca);
    let bob = Kubectl::new(&server_url, &bob_token, &ca);

    // apply, get
    let manifest = alice.home.path().join("pod.yaml");
    std::fs::write(&manifest, POD).unwrap();
    let applied = alice.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(applied.contains("pod/web created"), "{applied}");
    let all = alice.ok(&["get", "pods", "-A"]);
    assert!(all.contains("NAMESPACE") && all.contains("web"), "{all}");
    let json = alice.ok(&["get", "pod", "web", "-n", "default", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(pod["metadata"]["labels"]["app"], "web");

    // a watch as a member: an event made in the cluster arrives while kubectl watches
    let mut watch = bob
        .command(&[
            "get",
            "pods",
            "-n",
            "default",
            "--watch",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                if line.contains(want) {
                    return;
                }
                seen.push(line);
            }
        }
        panic!("kubectl get --watch never printed {want}; it printed {seen:?}");
    };
    wait_for("web");
    api.put_object(
        "default",
        "pods",
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late-arrival", "namespace": "default"},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    );
    wait_for("late-arrival");
    let _ = watch.kill();
    let _ = watch.wait();

    // a member may read but not delete: kubectl prints the Kubernetes-style 403
    let denied = bob.run(&["delete", "pod", "web", "-n", "default"]);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("Error from server (Forbidden): pods \"web\" is forbidden: User \"bob\" cannot delete resource \"pods\""),
        "{stderr}"
    );
    assert!(bob.ok(&["get", "pods", "-n", "default"]).contains("web"));

    // the admin deletes (kubectl waits for the deletion by default)
    let deleted = alice.ok(&["delete", "pod", "web", "-n", "default"]);
    assert!(deleted.contains("pod \"web\" deleted"), "{deleted}");
    let gone = alice.run(&["get", "pod", "web", "-n", "default"]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{gone:?}"
    );

    // every request is in the audit trail, kubectl's user agent and all, and SIGTERM
    // flushes it
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = wait_exit(&mut server.0, Duration::from_secs(20));
    assert!(exited.success(), "kubegate exits 0 on SIGTERM");
    let audit = gate.audit();
    let by = |user: &str, verb: &str| {
        audit
            .iter()
            .filter(|e| e["user"] == user && e["verb"] == verb)
            .count()
    };
    assert!(by("alice", "create") >= 1, "apply is audited");
    assert!(by("bob", "watch") >= 1, "the watch is audited when it ends");
    assert!(by("alice", "delete") >= 1);
    let forbidden = audit
        .iter()
        .find(|e| e["user"] == "bob" && e["verb"] == "delete")
        .expect("the forbidden delete is audited");
    assert_eq!(forbidden["decision"], "deny");
    assert_eq!(forbidden["status"], 403);
    assert!(audit
        .iter()
        .all(|e| e["user_agent"].as_str().unwrap().starts_with("kubectl")));
    let bytes = std::fs::read_to_string(gate.dir().join("data/audit.jsonl")).unwrap();
    assert!(!bytes.contains(alice_token.trim()) && !bytes.contains(bob_token.trim()));
}

#[test]
fn cli_refuses_unsafe_kubeconfigs_and_unknown_roles() {
    let gate = Kubegate::new();
    let bad = gate.dir().join("exec.yaml");
    let mut f = std::fs::File::create(&bad).unwrap();
    write!(
        f,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\nclusters:\n- name: c\n  cluster: {{server: 'https://10.0.0.1:6443'}}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
    )
    .unwrap();
    let out = gate
        .command(&[
            "cluster",
            "add",
            "--org",
            "1",
            "--name",
            "eks",
            "--kubeconfig",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("users[u].user.exec: exec credential plugins are not accepted"),
        "{err}"
    );
    assert_eq!(
        gate.run(&["cluster", "list", "--org", "1"]),
        "",
        "nothing was stored"
    );

    let out = gate
        .command(&[
            "member", "add", "--org", "1", "--user", "alice", "--role", "owner",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the role \"owner\" is not in the policy") && err.contains("admin, member"),
        "{err}"
    );
}
