//! End to end with real clients: the `kubegate` binary set up through its own CLI, and the
//! real `kubectl` talking to it, as the README's quick start does.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate};
use common::kubectl::Kubectl;

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

    // the quick start, through the CLI
    let id = gate.add_cluster(&api.kubeconfig_with_client_cert());
    assert_eq!(id.trim(), "1");
    let alice_token = gate.member_with_token("alice", "admin");
    let bob_token = gate.member_with_token("bob", "member");
    assert_eq!(
        alice_token.trim().split('.').count(),
        3,
        "the token alone is printed"
    );
    let (mut server, url) = gate.serve();
    let alice = Kubectl::through(&gate, &url, &alice_token);
    let bob = Kubectl::through(&gate, &url, &bob_token);

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
    server.signal("TERM");
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
