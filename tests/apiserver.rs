//! Tests of the Kubernetes API server stand-in (`tests/common/apiserver/`) with real
//! clients: the real `kubectl` (`/usr/bin/kubectl`, or `$KUBECTL`) pointed straight at it,
//! and a plain HTTPS client (awc over rustls). They prove the stand-in is faithful enough
//! for kubegate's integration tests to trust it.

mod common {
    pub mod apiserver;
    pub mod certs;
}

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use common::apiserver::{ApiServer, Identity, KUBERNETES_VERSION, TOKEN_USER};

/// No kubectl command or wait in these tests may take longer than this.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// kubectl, driven directly against the stand-in
// ---------------------------------------------------------------------------------------

/// A kubectl with its own kubeconfig, cache and home in a temporary directory.
struct Kubectl {
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    /// Fails (never skips) when kubectl is missing: these tests exist to run it.
    fn new(kubeconfig: &str) -> Kubectl {
        let binary = std::env::var_os("KUBECTL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
        assert!(
            binary.is_file(),
            "kubectl not found at {}: install kubectl or set KUBECTL to its path",
            binary.display()
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("write kubeconfig");
        Kubectl { binary, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs kubectl to completion, killing it after [`WAIT`].
    fn run(&self, args: &[&str]) -> Output {
        let mut child = self.command(args).spawn().expect("start kubectl");
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for kubectl") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kubectl {args:?} did not finish within {WAIT:?}; stderr: {}",
                    String::from_utf8_lossy(&stderr.recv().unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: stdout.recv_timeout(WAIT).unwrap_or_default(),
            stderr: stderr.recv_timeout(WAIT).unwrap_or_default(),
        }
    }

    /// Runs kubectl and expects success; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
    }

    /// Runs kubectl and expects it to fail; returns its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "kubectl {args:?} succeeded: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file for kubectl");
        path
    }
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

/// A long-running kubectl (a watch) whose output lines arrive on a channel.
struct RunningKubectl {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl RunningKubectl {
    fn start(kubectl: &Kubectl, args: &[&str]) -> RunningKubectl {
        let mut child = kubectl.command(args).spawn().expect("start kubectl");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("kubectl stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RunningKubectl {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most [`WAIT`]) for an output line that satisfies `wanted`.
    fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = self.child.wait();
            let _ = pipe.read_to_string(&mut stderr);
        }
        panic!(
            "kubectl never printed the expected line; it printed {:?}; stderr: {stderr}",
            self.seen
        );
    }
}

impl Drop for RunningKubectl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(name: &str, phase: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
        "status": {
            "phase": phase,
            "podIP": "10.244.0.7",
            "containerStatuses": [{"name": "main", "ready": phase == "Running", "restartCount": 0}],
        },
    })
}

/// The whitespace-separated columns of the first line that starts with `name`.
fn row<'a>(output: &'a str, first_column: &str) -> Vec<&'a str> {
    output
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&first_column))
        .unwrap_or_else(|| panic!("no row {first_column:?} in:\n{output}"))
}

#[test]
fn kubectl_get_pods_in_all_namespaces_prints_the_server_side_table() {
    let apiserver = ApiServer::start();
    apiserver.put_object("default", "pods", pod("web", "Running"));
    apiserver.put_object("kube-system", "pods", pod("coredns", "Pending"));
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());

    let output = kubectl.ok(&["get", "pods", "-A"]);

    let header: Vec<&str> = output
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let web = row(&output, "default");
    assert_eq!(
        web[..5],
        ["default", "web", "1/1", "Running", "0"],
        "{output}"
    );
    let coredns = row(&output, "kube-system");
    assert_eq!(
        coredns[..5],
        ["kube-system", "coredns", "0/1", "Pending", "0"],
        "{output}"
    );

    let list = apiserver
        .requests()
        .into_iter()
        .find(|request| request.path == "/api/v1/pods")
        .expect("kubectl listed pods across namespaces");
    assert_eq!(list.method, "GET");
    assert_eq!(list.query_param("limit").as_deref(), Some("500"));
    assert!(
        list.header("accept").unwrap_or("").contains("as=Table"),
        "kubectl asks for server-side printing: {list:?}"
    );
    assert_eq!(list.identity.user(), Some("kubegate"));
    assert_eq!(
        list.identity,
        Identity::ClientCert {
            user: "kubegate".into(),
            groups: vec!["system:masters".into()]
        }
    );
}

#[test]
fn kubectl_get_pods_as_json_returns_the_stored_objects() {
    let apiserver = ApiServer::start();
    apiserver.put_object("default", "pods", pod("a", "Running"));
    apiserver.put_object("default", "pods", pod("b", "Running"));
    apiserver.put_object("other", "pods", pod("elsewhere", "Running"));
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());

    let output = kubectl.ok(&["get", "pods", "-n", "default", "-o", "json"]);

    let list: Value = serde_json::from_str(&output).expect("kubectl printed JSON");
    assert_eq!(list["kind"], "List");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(list["items"][0]["kind"], "Pod");
    assert_eq!(
        list["items"][0]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    let uid = list["items"][0]["metadata"]["uid"].as_str().unwrap_or("");
    assert_eq!(uid.len(), 36, "a uid was set: {uid:?}");
}

const POD_MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: x
  labels:
    app: x
spec:
  containers:
  - name: main
    image: busybox:1.36
    ports:
    - containerPort: 80
";

#[test]
fn kubectl_apply_creates_then_configures_a_pod_that_get_then_shows() {
    let apiserver = ApiServer::start();
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());
    let manifest = kubectl.write("pod.yaml", POD_MANIFEST);
    let manifest = manifest.to_str().expect("UTF-8 path");

    assert_eq!(
        kubectl.ok(&["apply", "-f", manifest]).trim(),
        "pod/x created"
    );

    let stored = apiserver
        .get_object("default", "pods", "x")
        .expect("the pod is stored");
    assert_eq!(stored["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(stored["status"]["phase"], "Pending", "a new pod is Pending");
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let create = apiserver
        .requests()
        .into_iter()
        .find(|request| request.method == "POST")
        .expect("kubectl created the pod");
    assert_eq!(create.path, "/api/v1/namespaces/default/pods");
    assert_eq!(
        create.query_param("fieldValidation").as_deref(),
        Some("Strict"),
        "kubectl found fieldValidation in the OpenAPI document and asked the server to validate"
    );
    assert_eq!(create.status, Some(201));
    let sent: Value = serde_json::from_slice(&create.body).expect("kubectl sent JSON");
    assert_eq!(sent["metadata"]["name"], "x");

    let output = kubectl.ok(&["get", "pod", "x"]);
    assert_eq!(
        row(&output, "x")[..4],
        ["x", "0/1", "Pending", "0"],
        "{output}"
    );

    let changed = kubectl.write(
        "pod.yaml",
        &POD_MANIFEST.replace("busybox:1.36", "busybox:1.37"),
    );
    let changed = changed.to_str().expect("UTF-8 path");
    assert_eq!(
        kubectl.ok(&["apply", "-f", changed]).trim(),
        "pod/x configured"
    );
    let stored = apiserver
        .get_object("default", "pods", "x")
        .expect("stored");
    assert_eq!(
        stored["spec"]["containers"],
        json!([{"name": "main", "image": "busybox:1.37", "ports": [{"containerPort": 80}]}]),
        "the strategic merge patch merged the container by name"
    );
    assert_eq!(
        kubectl.ok(&["apply", "-f", changed]).trim(),
        "pod/x unchanged"
    );
}

#[test]
fn kubectl_get_watch_prints_a_pod_created_while_it_watches() {
    let apiserver = ApiServer::start();
    apiserver.put_object("default", "pods", pod("before", "Running"));
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());
    let mut watch = RunningKubectl::start(&kubectl, &["get", "pods", "--watch"]);
    watch.wait_for_line(|line| line.starts_with("NAME"));
    watch.wait_for_line(|line| line.starts_with("before "));
    // The list is printed before the watch starts: wait for the watch request itself.
    wait_until(|| {
        apiserver
            .requests()
            .iter()
            .any(|request| request.query_param("watch").as_deref() == Some("true"))
    });

    apiserver.put_object("default", "pods", pod("later", "Pending"));

    let line = watch.wait_for_line(|line| line.starts_with("later "));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[..4], ["later", "0/1", "Pending", "0"], "{line}");
    let watch_request = apiserver
        .requests()
        .into_iter()
        .find(|request| request.query_param("watch").as_deref() == Some("true"))
        .expect("watch request");
    assert!(watch_request.query_param("resourceVersion").is_some());
}

#[test]
fn kubectl_delete_removes_the_pod_and_returns_once_it_is_gone() {
    let apiserver = ApiServer::start();
    apiserver.put_object("default", "pods", pod("x", "Running"));
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());

    assert_eq!(
        kubectl.ok(&["delete", "pod", "x"]).trim(),
        "pod \"x\" deleted"
    );

    assert!(apiserver.get_object("default", "pods", "x").is_none());
    let requests = apiserver.requests();
    let delete = requests
        .iter()
        .position(|request| request.method == "DELETE")
        .expect("kubectl sent DELETE");
    assert_eq!(requests[delete].path, "/api/v1/namespaces/default/pods/x");
    assert!(
        requests[delete + 1..]
            .iter()
            .any(
                |request| request.method == "GET" && request.path.ends_with("/pods/x")
                    || request.query_param("fieldSelector").as_deref() == Some("metadata.name=x")
            ),
        "kubectl waited for the deletion: {:?}",
        requests[delete + 1..]
            .iter()
            .map(|r| r.path_and_query())
            .collect::<Vec<_>>()
    );
}

#[test]
fn kubectl_get_of_a_missing_pod_reports_not_found() {
    let apiserver = ApiServer::start();
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());

    let output = kubectl.run(&["get", "pod", "missing"]);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "Error from server (NotFound): pods \"missing\" not found"
    );
    let get = apiserver
        .requests()
        .into_iter()
        .find(|request| request.path == "/api/v1/namespaces/default/pods/missing")
        .expect("kubectl asked for the pod");
    assert_eq!(get.status, Some(404));
}

#[test]
fn kubectl_with_a_client_cert_from_an_untrusted_ca_cannot_connect() {
    let apiserver = ApiServer::start();
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_untrusted_client_cert());

    let output = kubectl.run(&["get", "pods"]);

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tls: unknown certificate authority"),
        "the handshake was refused: {stderr}"
    );
    assert!(
        apiserver.requests().is_empty(),
        "no request got past the handshake"
    );
}

#[test]
fn kubectl_with_the_bearer_token_is_the_token_user() {
    let apiserver = ApiServer::builder().token("secret-token").start();
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_token());

    let output = kubectl.ok(&["auth", "whoami", "-o", "json"]);

    let review: Value = serde_json::from_str(&output).expect("JSON");
    assert_eq!(review["status"]["userInfo"]["username"], TOKEN_USER);
    assert!(apiserver
        .requests()
        .iter()
        .all(|request| request.identity == Identity::Token));
    assert_eq!(
        apiserver.requests()[0].header("authorization"),
        Some("Bearer secret-token")
    );
}

#[test]
fn kubectl_auth_whoami_shows_the_certificate_subject_and_impersonation() {
    let apiserver = ApiServer::start();
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());

    let me: Value = serde_json::from_str(&kubectl.ok(&["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(me["status"]["userInfo"]["username"], "kubegate");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );

    let alice: Value = serde_json::from_str(&kubectl.ok(&[
        "auth",
        "whoami",
        "-o",
        "json",
        "--as",
        "alice",
        "--as-group",
        "devs",
    ]))
    .unwrap();
    assert_eq!(alice["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        alice["status"]["userInfo"]["groups"],
        json!(["devs", "system:authenticated"])
    );
}

/// Only a caller allowed to impersonate may, as with kube-apiserver: a certificate
/// outside `system:masters` gets 403 until granted `impersonate` on users and groups, and
/// the identity it then acts as is held to its own RBAC rules.
#[test]
fn impersonation_needs_the_right_and_the_impersonated_user_gets_only_its_rules() {
    let apiserver = ApiServer::start();
    let (cert, key) = apiserver.pki().issue_client_cert("gatekeeper", None);
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_cert(&cert, &key));
    let as_alice = ["--as", "alice", "--as-group", "devs"];

    // (kubectl auth whoami hides the server's message; kubectl get --raw shows it)
    let pods = ["get", "--raw", "/api/v1/namespaces/default/pods"];
    let refused = kubectl.fails(&[&pods[..], &as_alice[..]].concat());
    assert!(
        refused.contains(
            "users \"alice\" is forbidden: User \"gatekeeper\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        ),
        "{refused}"
    );
    apiserver.grant("gatekeeper", &["impersonate"], &["users"]);
    let refused = kubectl.fails(&[&pods[..], &as_alice[..]].concat());
    assert!(
        refused.contains("cannot impersonate resource \"groups\""),
        "{refused}"
    );
    apiserver.grant("gatekeeper", &["impersonate"], &["groups"]);
    let alice: Value = serde_json::from_str(
        &kubectl.ok(&[&["auth", "whoami", "-o", "json"][..], &as_alice[..]].concat()),
    )
    .unwrap();
    assert_eq!(alice["status"]["userInfo"]["username"], "alice");

    // alice's own rules: none yet, then reading pods through her group
    let refused = kubectl.fails(&[&["get", "pods"][..], &as_alice[..]].concat());
    assert!(
        refused.contains("pods is forbidden: User \"alice\" cannot list resource \"pods\""),
        "{refused}"
    );
    apiserver.grant("devs", &["get", "list"], &["pods"]);
    kubectl.ok(&[&["get", "pods"][..], &as_alice[..]].concat());
    let seen = apiserver.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.identity.user(), Some("alice"));
}

#[test]
fn kubectl_works_with_legacy_discovery_and_apps_deployments() {
    let apiserver = ApiServer::builder().legacy_discovery().start();
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());
    let manifest = kubectl.write(
        "deploy.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: main, image: nginx}]}
",
    );

    let applied = kubectl.ok(&["apply", "-f", manifest.to_str().expect("UTF-8")]);
    assert_eq!(applied.trim(), "deployment.apps/web created");
    assert_eq!(
        kubectl
            .ok(&["scale", "deployment", "web", "--replicas=3"])
            .trim(),
        "deployment.apps/web scaled"
    );
    let output = kubectl.ok(&["get", "deployments"]);
    assert_eq!(row(&output, "web")[..2], ["web", "0/3"], "{output}");

    let paths: Vec<String> = apiserver
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.iter().any(|path| path == "/apis/apps/v1"),
        "kubectl fell back to per-group discovery: {paths:?}"
    );
}

#[test]
fn kubectl_create_subcommands_send_protobuf_that_the_stand_in_reads() {
    let apiserver = ApiServer::start();
    let kubectl = Kubectl::new(&apiserver.kubeconfig_with_client_cert());

    assert_eq!(
        kubectl.ok(&["create", "namespace", "team"]).trim(),
        "namespace/team created"
    );
    let created = kubectl.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team",
        "--from-literal=mode=fast",
    ]);
    assert_eq!(created.trim(), "configmap/settings created");
    let created = kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "password",
        "--from-literal=pw=hunter2",
    ]);
    assert_eq!(created.trim(), "secret/password created");
    let created = kubectl.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=8080",
    ]);
    assert_eq!(created.trim(), "deployment.apps/web created");

    let requests = apiserver.requests();
    let create = requests
        .iter()
        .find(|request| request.method == "POST")
        .expect("kubectl created something");
    assert_eq!(
        create.header("content-type"),
        Some("application/vnd.kubernetes.protobuf")
    );
    assert!(create.body.starts_with(b"k8s\0"), "recorded as received");
    let namespace = apiserver
        .get_object("", "namespaces", "team")
        .expect("namespace");
    assert_eq!(namespace["status"]["phase"], "Active");
    let configmap = apiserver
        .get_object("team", "configmaps", "settings")
        .expect("configmap");
    assert_eq!(configmap["data"], json!({"mode": "fast"}));
    let secret = apiserver
        .get_object("default", "secrets", "password")
        .expect("secret");
    assert_eq!(secret["data"], json!({"pw": "aHVudGVyMg=="}));
    assert_eq!(secret["type"], "Opaque");
    let deployment = apiserver
        .get_object("default", "deployments", "web")
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"],
        json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 8080}], "resources": {}}])
    );
}

fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// A plain HTTPS client
// ---------------------------------------------------------------------------------------

fn client(config: rustls::ClientConfig) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
        .timeout(Duration::from_secs(20))
        .finish()
}

async fn get_json(client: &awc::Client, url: &str, accept: &str) -> (u16, Value) {
    let mut response = client
        .get(url)
        .insert_header(("Accept", accept))
        .send()
        .await
        .expect("request");
    let body = response.body().limit(64 << 20).await.expect("body");
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{url}: not JSON: {}", String::from_utf8_lossy(&body)));
    (response.status().as_u16(), value)
}

async fn send_json(
    client: &awc::Client,
    method: &str,
    url: &str,
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut response = client
        .request(method, url)
        .insert_header(("Content-Type", content_type))
        .send_body(body.to_string())
        .await
        .expect("request");
    let body = response.body().limit(64 << 20).await.expect("body");
    (
        response.status().as_u16(),
        serde_json::from_slice(&body).expect("JSON body"),
    )
}

/// Reads a streamed body line by line, each read bounded by a timeout.
struct Lines<S> {
    body: S,
    buffer: Vec<u8>,
}

impl<S, E> Lines<S>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    /// The next line, `None` at the end of the body; panics after `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("one JSON event per line"));
            }
            let chunk = tokio::time::timeout(wait, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {wait:?}"));
            match chunk {
                Some(chunk) => self.buffer.extend_from_slice(&chunk.expect("body chunk")),
                None => {
                    assert!(self.buffer.is_empty(), "the body ended mid-line");
                    return None;
                }
            }
        }
    }

    /// True when nothing arrives within `wait` and the body is still open.
    async fn quiet_for(&mut self, wait: Duration) -> bool {
        self.buffer.is_empty() && tokio::time::timeout(wait, self.body.next()).await.is_err()
    }
}

#[actix_rt::test]
async fn a_request_without_credentials_gets_401_with_a_status_body() {
    let apiserver = ApiServer::builder().token("secret-token").start();
    let anonymous = client(apiserver.pki().client_config_without_cert());

    for token in [None, Some("wrong-token")] {
        let mut request = anonymous.get(format!("{}/api/v1/pods", apiserver.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await.expect("request");
        assert_eq!(response.status().as_u16(), 401);
        let body = response.body().await.expect("body");
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
    }
    let (code, body) = get_json(&anonymous, &format!("{}/healthz", apiserver.url()), "*/*").await;
    assert_eq!(
        code, 401,
        "health checks need credentials too (anonymous auth is off)"
    );
    assert_eq!(body["reason"], "Unauthorized");

    let requests = apiserver.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|request| request.identity == Identity::Anonymous));
    assert_eq!(
        requests[1].header("authorization"),
        Some("Bearer wrong-token")
    );
}

#[actix_rt::test]
async fn a_client_cert_from_another_ca_fails_the_tls_handshake() {
    let apiserver = ApiServer::start();
    let untrusted = client(apiserver.pki().untrusted_client_config());

    // With TLS 1.3 the server checks the client certificate after the client has sent
    // its Finished message, so the refusal surfaces on the first exchange.
    let result = untrusted
        .get(format!("{}/version", apiserver.url()))
        .send()
        .await;

    assert!(
        result.is_err(),
        "the request must fail: {:?}",
        result.map(|r| r.status())
    );
    assert!(apiserver.requests().is_empty());
}

#[actix_rt::test]
async fn discovery_version_health_and_root_paths_answer_like_kube_apiserver() {
    let apiserver = ApiServer::start();
    let https = client(apiserver.pki().client_config());
    let url = apiserver.url();

    let (code, version) = get_json(&https, &format!("{url}/version"), "application/json").await;
    assert_eq!(code, 200);
    assert_eq!(version["gitVersion"], KUBERNETES_VERSION);

    let (_, api) = get_json(&https, &format!("{url}/api"), "application/json").await;
    assert_eq!(api["kind"], "APIVersions");
    assert_eq!(api["versions"], json!(["v1"]));

    let (_, resources) = get_json(&https, &format!("{url}/api/v1"), "application/json").await;
    let names: Vec<&str> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for name in [
        "pods",
        "pods/log",
        "pods/exec",
        "configmaps",
        "secrets",
        "namespaces",
        "services",
        "services/proxy",
        "events",
    ] {
        assert!(names.contains(&name), "/api/v1 lists {name}: {names:?}");
    }

    let (_, groups) = get_json(&https, &format!("{url}/apis"), "application/json").await;
    assert_eq!(groups["kind"], "APIGroupList");
    assert_eq!(groups["groups"][0]["name"], "apps");
    let (_, apps) = get_json(&https, &format!("{url}/apis/apps/v1"), "application/json").await;
    assert_eq!(apps["groupVersion"], "apps/v1");

    let aggregated =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let mut response = https
        .get(format!("{url}/apis"))
        .insert_header(("Accept", aggregated))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let list: Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
    assert_eq!(list["kind"], "APIGroupDiscoveryList");
    let deployments = &list["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "deployments")
        .cloned()
        .expect("deployments in aggregated discovery");
    assert_eq!(deployments["scope"], "Namespaced");
    assert_eq!(deployments["subresources"][0]["subresource"], "scale");

    for health in ["healthz", "livez", "readyz"] {
        let mut response = https.get(format!("{url}/{health}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.body().await.unwrap(), "ok");
    }

    let (_, root) = get_json(&https, &format!("{url}/"), "application/json").await;
    let paths = root["paths"].as_array().unwrap();
    for path in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps/v1",
        "/healthz",
        "/openapi/v3",
        "/version",
    ] {
        assert!(paths.contains(&json!(path)), "/ lists {path}");
    }

    let (code, missing) =
        get_json(&https, &format!("{url}/no/such/path"), "application/json").await;
    assert_eq!(code, 404);
    assert_eq!(
        missing,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "the server could not find the requested resource",
               "reason": "NotFound", "details": {}, "code": 404})
    );
}

#[actix_rt::test]
async fn objects_are_created_read_updated_patched_and_deleted_with_real_status_errors() {
    let apiserver = ApiServer::start();
    let https = client(apiserver.pki().client_config());
    let pods = format!("{}/api/v1/namespaces/default/pods", apiserver.url());
    let json_type = "application/json";

    let (code, created) = send_json(&https, "POST", &pods, json_type, &pod("p", "Running")).await;
    assert_eq!(code, 201);
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(
        created["status"]["phase"], "Pending",
        "create resets the status"
    );
    for field in ["uid", "resourceVersion", "creationTimestamp"] {
        assert!(created["metadata"][field].is_string(), "{field} is set");
    }

    let (code, exists) = send_json(&https, "POST", &pods, json_type, &pod("p", "Running")).await;
    assert_eq!(code, 409);
    assert_eq!(exists["reason"], "AlreadyExists");
    assert_eq!(exists["message"], "pods \"p\" already exists");
    assert_eq!(exists["details"], json!({"name": "p", "kind": "pods"}));

    let (code, missing_ns) = send_json(
        &https,
        "POST",
        &format!("{}/api/v1/namespaces/nowhere/configmaps", apiserver.url()),
        json_type,
        &json!({"metadata": {"name": "c"}}),
    )
    .await;
    assert_eq!(
        (code, missing_ns["message"].as_str()),
        (404, Some("namespaces \"nowhere\" not found"))
    );

    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let (code, conflict) = send_json(&https, "PUT", &format!("{pods}/p"), json_type, &stale).await;
    assert_eq!(code, 409);
    assert_eq!(conflict["reason"], "Conflict");

    let mut updated = created.clone();
    updated["metadata"]["labels"]["tier"] = json!("web");
    let (code, updated) = send_json(&https, "PUT", &format!("{pods}/p"), json_type, &updated).await;
    assert_eq!(code, 200);
    assert_eq!(updated["metadata"]["labels"]["tier"], "web");
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    let (code, patched) = send_json(
        &https,
        "PATCH",
        &format!("{pods}/p"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"tier": null, "patched": "yes"}}}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"app": "p", "patched": "yes"})
    );

    let (code, json_patched) = send_json(
        &https,
        "PATCH",
        &format!("{pods}/p"),
        "application/json-patch+json",
        &json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.28"}]),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(json_patched["spec"]["containers"][0]["image"], "nginx:1.28");

    let (code, deleted) = send_json(
        &https,
        "DELETE",
        &format!("{pods}/p"),
        json_type,
        &json!({}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(deleted["metadata"]["name"], "p");

    let (code, gone) = get_json(&https, &format!("{pods}/p"), json_type).await;
    assert_eq!(code, 404);
    assert_eq!(
        gone,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"p\" not found", "reason": "NotFound",
               "details": {"name": "p", "kind": "pods"}, "code": 404})
    );
    let (code, _) = send_json(
        &https,
        "DELETE",
        &format!("{pods}/p"),
        json_type,
        &json!({}),
    )
    .await;
    assert_eq!(code, 404);
}

#[actix_rt::test]
async fn lists_filter_by_label_and_field_page_with_limit_and_print_tables() {
    let apiserver = ApiServer::start();
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let mut object = pod(name, "Running");
        object["metadata"]["labels"]["tier"] = json!(tier);
        apiserver.put_object("default", "pods", object);
    }
    let https = client(apiserver.pki().client_config());
    let pods = format!("{}/api/v1/namespaces/default/pods", apiserver.url());
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };

    let (_, all) = get_json(&https, &pods, "application/json").await;
    assert_eq!(all["kind"], "PodList");
    assert_eq!(
        all["metadata"]["resourceVersion"],
        apiserver.resource_version()
    );
    assert!(
        all["items"][0].get("kind").is_none(),
        "list items carry no kind, as in a real list"
    );
    assert_eq!(names(&all), ["a", "b", "c"]);

    let (_, web) = get_json(
        &https,
        &format!("{pods}?labelSelector=tier%3Dweb"),
        "application/json",
    )
    .await;
    assert_eq!(names(&web), ["a", "c"]);
    let (_, not_web) = get_json(
        &https,
        &format!("{pods}?labelSelector=tier!%3Dweb"),
        "application/json",
    )
    .await;
    assert_eq!(names(&not_web), ["b"]);
    let (_, set) = get_json(
        &https,
        &format!("{pods}?labelSelector=tier%20in%20(db,cache)"),
        "application/json",
    )
    .await;
    assert_eq!(names(&set), ["b"]);
    let (_, by_name) = get_json(
        &https,
        &format!("{pods}?fieldSelector=metadata.name%3Dc"),
        "application/json",
    )
    .await;
    assert_eq!(names(&by_name), ["c"]);
    let (code, bad_field) = get_json(
        &https,
        &format!("{pods}?fieldSelector=spec.foo%3Dx"),
        "application/json",
    )
    .await;
    assert_eq!(
        (code, bad_field["message"].as_str()),
        (400, Some("field label not supported: spec.foo"))
    );

    let (_, first_page) = get_json(&https, &format!("{pods}?limit=2"), "application/json").await;
    assert_eq!(names(&first_page), ["a", "b"]);
    assert_eq!(first_page["metadata"]["remainingItemCount"], 1);
    let token = first_page["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let (_, second_page) = get_json(
        &https,
        &format!("{pods}?limit=2&continue={token}"),
        "application/json",
    )
    .await;
    assert_eq!(names(&second_page), ["c"]);
    assert!(second_page["metadata"].get("continue").is_none());

    let table_type = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (_, table) = get_json(&https, &pods, table_type).await;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"] == 0)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(
        table["rows"][0]["cells"].as_array().unwrap()[..4],
        [json!("a"), json!("1/1"), json!("Running"), json!("0")]
    );
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let (_, with_objects) =
        get_json(&https, &format!("{pods}?includeObject=Object"), table_type).await;
    assert_eq!(with_objects["rows"][0]["object"]["kind"], "Pod");

    let (_, configmaps) = get_json(
        &https,
        &format!("{}/api/v1/namespaces/default/services", apiserver.url()),
        table_type,
    )
    .await;
    assert_eq!(configmaps["rows"][0]["cells"][0], "kubernetes");
}

#[actix_rt::test]
async fn watch_events_arrive_one_by_one_while_the_stream_stays_open() {
    let apiserver = ApiServer::start();
    apiserver.put_object("default", "pods", pod("before", "Running"));
    let since = apiserver.resource_version();
    let https = client(apiserver.pki().client_config());

    let response = https
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion={since}",
            apiserver.url()
        ))
        .send()
        .await
        .expect("watch request");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.version(), awc::http::Version::HTTP_11);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(
        response
            .headers()
            .get("transfer-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("chunked")
    );
    let mut events = Lines {
        body: response,
        buffer: Vec::new(),
    };
    let short = Duration::from_secs(10);
    assert!(
        events.quiet_for(Duration::from_millis(300)).await,
        "nothing before a change"
    );

    apiserver.put_object("default", "pods", pod("x", "Pending"));
    let added = events.next(short).await.expect("ADDED");
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["metadata"]["name"], "x");
    assert_eq!(added["object"]["kind"], "Pod");
    assert!(
        events.quiet_for(Duration::from_millis(300)).await,
        "one change, one event"
    );

    apiserver.put_object("default", "pods", pod("x", "Running"));
    let modified = events.next(short).await.expect("MODIFIED");
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["status"]["phase"], "Running");

    apiserver.put_object("other", "pods", pod("elsewhere", "Running"));
    apiserver.delete_object("default", "pods", "x");
    let deleted = events.next(short).await.expect("DELETED");
    assert_eq!(
        deleted["type"], "DELETED",
        "the other namespace's pod is not in this watch"
    );
    assert_eq!(deleted["object"]["metadata"]["name"], "x");
    assert!(
        events.quiet_for(Duration::from_millis(300)).await,
        "the stream stays open"
    );
}

#[actix_rt::test]
async fn a_watch_is_closed_when_its_client_goes_away() {
    let apiserver = ApiServer::start();
    assert_eq!(apiserver.open_watches(), 0);
    for version in [awc::http::Version::HTTP_11, awc::http::Version::HTTP_2] {
        let mut config = apiserver.pki().client_config();
        if version == awc::http::Version::HTTP_2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        let https = client(config);
        let watch = https
            .get(format!("{}/api/v1/pods?watch=true", apiserver.url()))
            .send()
            .await
            .expect("watch");
        assert_eq!(watch.version(), version);
        assert_eq!(apiserver.open_watches(), 1);

        drop(watch);
        drop(https);
        if version == awc::http::Version::HTTP_2 {
            // actix-http's HTTP/2 writer learns of a reset stream only when it next writes.
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            apiserver.put_object("default", "pods", pod("nudge", "Running"));
        }

        let deadline = Instant::now() + WAIT;
        while apiserver.open_watches() > 0 {
            assert!(
                Instant::now() < deadline,
                "the {version:?} watch stayed open"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[actix_rt::test]
async fn watch_replays_from_a_resource_version_filters_and_ends_at_its_timeout() {
    let apiserver = ApiServer::start();
    let since = apiserver.resource_version();
    apiserver.put_object(
        "default",
        "configmaps",
        json!({"metadata": {"name": "one"}}),
    );
    apiserver.put_object(
        "default",
        "configmaps",
        json!({"metadata": {"name": "two"}}),
    );
    let https = client(apiserver.pki().client_config());
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={since}&fieldSelector=metadata.name%3Dtwo&timeoutSeconds=1",
        apiserver.url()
    );

    let response = https.get(url).send().await.expect("watch");
    let mut events = Lines {
        body: response,
        buffer: Vec::new(),
    };
    let replayed = events
        .next(Duration::from_secs(10))
        .await
        .expect("replayed event");
    assert_eq!(replayed["type"], "ADDED");
    assert_eq!(replayed["object"]["metadata"]["name"], "two");
    let started = Instant::now();
    assert!(
        events.next(Duration::from_secs(10)).await.is_none(),
        "the watch ends"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Without a resourceVersion, a watch starts with the current state.
    let response = https
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
            apiserver.url()
        ))
        .send()
        .await
        .expect("watch");
    let mut events = Lines {
        body: response,
        buffer: Vec::new(),
    };
    let mut names = Vec::new();
    while let Some(event) = events.next(Duration::from_secs(10)).await {
        names.push(
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(names, ["one", "two"]);
}

#[actix_rt::test]
async fn watch_with_a_table_accept_header_sends_table_rows() {
    let apiserver = ApiServer::start();
    let since = apiserver.resource_version();
    let https = client(apiserver.pki().client_config());
    let response = https
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion={since}",
            apiserver.url()
        ))
        .insert_header((
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        ))
        .send()
        .await
        .expect("watch");
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let mut events = Lines {
        body: response,
        buffer: Vec::new(),
    };

    apiserver.put_object("default", "pods", pod("a", "Running"));
    apiserver.put_object("default", "pods", pod("b", "Pending"));
    let first = events.next(Duration::from_secs(10)).await.expect("first");
    let second = events.next(Duration::from_secs(10)).await.expect("second");

    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(first["object"]["rows"][0]["cells"][0], "a");
    assert!(
        first["object"]["columnDefinitions"].is_array(),
        "the first event has columns"
    );
    assert!(
        second["object"]["columnDefinitions"].is_null(),
        "later events do not"
    );
    assert_eq!(
        second["object"]["rows"][0]["cells"].as_array().unwrap()[..3],
        [json!("b"), json!("0/1"), json!("Pending")]
    );
}

#[actix_rt::test]
async fn configmaps_of_a_given_size_and_a_64_mib_list_that_is_streamed() {
    let apiserver = ApiServer::start();
    let https = client(apiserver.pki().client_config());
    let configmaps = format!("{}/api/v1/namespaces/default/configmaps", apiserver.url());
    for size in [1024, 1024 * 1024] {
        apiserver.put_configmap_of_size("default", "sized", size);
        let mut response = https
            .get(format!("{configmaps}/sized"))
            .send()
            .await
            .unwrap();
        let body = response.body().limit(4 << 20).await.unwrap();
        assert!(
            body.len().abs_diff(size) <= 16,
            "a GET of the {size}-byte ConfigMap returns {} bytes",
            body.len()
        );
    }

    apiserver.put_configmaps_of_size("default", "big", 64, 1024 * 1024);
    let mut response = https.get(configmaps).send().await.unwrap();
    assert!(
        response.headers().get("content-length").is_none(),
        "the list is streamed"
    );
    let mut body = Vec::with_capacity(65 << 20);
    let mut chunks = 0;
    while let Some(chunk) = tokio::time::timeout(WAIT, response.next())
        .await
        .expect("chunk in time")
    {
        body.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert!(body.len() >= 64 << 20, "{} bytes", body.len());
    assert!(chunks > 64, "written in many chunks, not at once: {chunks}");
    let list: Value =
        serde_json::from_slice(&body).expect("the streamed list is one JSON document");
    assert_eq!(list["items"].as_array().unwrap().len(), 65);
}

#[actix_rt::test]
async fn dropping_the_server_closes_its_port_even_with_a_watch_open() {
    let apiserver = ApiServer::start();
    let url = apiserver.url().to_string();
    let https = client(apiserver.pki().client_config());
    let watch = https
        .get(format!("{url}/api/v1/pods?watch=true"))
        .send()
        .await
        .expect("watch");

    let started = Instant::now();
    drop(apiserver);

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        started.elapsed()
    );
    let fresh = client(common::certs::TestPki::new().client_config());
    assert!(fresh.get(format!("{url}/version")).send().await.is_err());
    drop(watch);
}

#[test]
fn the_pki_certificates_chain_to_their_cas() {
    let pki = common::certs::TestPki::new();
    for pem in [
        &pki.ca_pem,
        &pki.server_cert_pem,
        &pki.client_cert_pem,
        &pki.untrusted_client_cert_pem,
    ] {
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
    for pem in [
        &pki.server_key_pem,
        &pki.client_key_pem,
        &pki.untrusted_client_key_pem,
    ] {
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }
    let (cert, key) = pki.issue_client_cert("alice", Some("devs"));
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----") && key.contains("PRIVATE KEY"));
    // Building the configurations checks that each key matches its certificate.
    let _ = pki.server_config();
    let _ = pki.client_config_with(Some((&cert, &key)));
}
