//! exec, attach, port-forward and the dashboard through kubegate: the real kubectl over
//! HTTPS against the `kubegate` binary, and raw sockets against kubegate in-process.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate};
use common::kubectl::Kubectl;
use serde_json::{json, Value};

fn running_pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
           "status": {"phase": "Running",
                      "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                                             "image": "busybox:1.36", "imageID": "", "started": true,
                                             "state": {"running": {"startedAt": "2026-11-28T10:00:00Z"}}}]}})
}

/// The binary with alice (admin) and bob (member) in org 1, whose cluster 1 is `api`.
struct Gate {
    gate: Kubegate,
    server: common::binary::Server,
    alice: Kubectl,
    bob: Kubectl,
}

fn gate(api: &ApiServer) -> Gate {
    let gate = Kubegate::new();
    let kubeconfig = gate.dir().join("cluster.yaml");
    std::fs::write(&kubeconfig, api.kubeconfig_with_client_cert()).unwrap();
    gate.run(&[
        "cluster",
        "add",
        "--org",
        "1",
        "--name",
        "dev",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    gate.run(&[
        "member", "add", "--org", "1", "--user", "alice", "--role", "admin",
    ]);
    gate.run(&[
        "member", "add", "--org", "1", "--user", "bob", "--role", "member",
    ]);
    let alice_token = gate.run(&["token", "create", "--user", "alice"]);
    let bob_token = gate.run(&["token", "create", "--user", "bob"]);
    let (server, url) = gate.serve();
    let server_url = format!("{url}/pipeline/api/v1/orgs/1/clusters/1/proxy");
    let ca = gate.dir().join("data/tls/ca.crt");
    Gate {
        alice: Kubectl::new(&server_url, &alice_token, &ca),
        bob: Kubectl::new(&server_url, &bob_token, &ca),
        gate,
        server,
    }
}

/// A TCP server on 127.0.0.1 that sends back what it gets: the "pod's port".
fn echo_server() -> u16 {
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

fn with_stdin(mut cmd: Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn kubectl_exec_attach_and_port_forward_through_kubegate() {
    let api = ApiServer::start();
    api.put_object("default", "pods", running_pod("web"));
    let g = gate(&api);

    // a command whose output comes back
    assert_eq!(
        g.alice
            .ok(&["exec", "web", "--", "echo", "hello", "kubegate"]),
        "hello kubegate\n"
    );
    // stdin goes in, and its end reaches the command (v5: the close channel)
    let out = with_stdin(
        g.alice.command(&["exec", "-i", "web", "--", "cat"]),
        b"line one\nline two\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "line one\nline two\n");
    // stderr and the exit code
    let out = g
        .alice
        .run(&["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("command terminated with exit code 3"),
        "{}",
        text(&out.stderr)
    );
    // attach, without and with stdin
    assert_eq!(g.alice.ok(&["attach", "web"]), "attached to web/app\n");
    let out = with_stdin(g.alice.command(&["attach", "-i", "web"]), b"ping\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "attached to web/app\nping\n");

    // port-forward carries bytes both ways
    let pod_port = echo_server();
    let mut forward = g
        .alice
        .command(&["port-forward", "pod/web", &format!(":{pod_port}")])
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
    // the open session shows in /metrics
    let metrics = http_get(&g.gate.http_url().unwrap(), "/metrics");
    let open = metric(&metrics, "kubegate_upgraded_sessions");
    assert!(open >= 1.0, "{metrics}");
    let _ = forward.kill();
    let _ = forward.wait();

    // a member may not exec, attach or port-forward, over WebSocket or SPDY
    let out = g.bob.run(&["exec", "web", "--", "echo", "x"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Forbidden")
            && text(&out.stderr).contains("User \"bob\" cannot connect resource \"pods/exec\""),
        "{}",
        text(&out.stderr)
    );
    let mut spdy = g.bob.command(&["exec", "web", "--", "echo", "x"]);
    spdy.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    let out = spdy.output().unwrap();
    assert!(
        !out.status.success()
            && text(&out.stderr).contains("cannot connect resource \"pods/exec\""),
        "{}",
        text(&out.stderr)
    );
    let out = g
        .bob
        .run(&["port-forward", "pod/web", &format!(":{pod_port}")]);
    assert!(
        text(&out.stderr).contains("cannot connect resource \"pods/portforward\""),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !api.requests().iter().any(|r| r.path.ends_with("/exec")
            && r.headers
                .iter()
                .any(|(n, v)| n == "user-agent" && v.contains("kubectl"))
            && r.status == Some(403)),
        "the API server never sees a member's exec"
    );

    // each session is one audit event when it ends
    let mut server = g.server;
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut server.0, Duration::from_secs(20)).success());
    let audit = g.gate.audit();
    let sessions: Vec<&Value> = audit
        .iter()
        .filter(|e| e["user"] == "alice" && e["verb"] == "connect" && e["status"] == 101)
        .collect();
    // exec x3, attach x2, port-forward x1
    assert_eq!(sessions.len(), 6, "{sessions:#?}");
    for e in &sessions {
        assert!(e["bytes_out"].as_u64().unwrap() > 0, "{e}");
        assert!(e["duration_ms"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["ended"].is_string(), "{e}");
    }
    let forwarded = sessions
        .iter()
        .find(|e| e["subresource"] == "portforward")
        .expect("the port-forward session is audited");
    assert!(
        forwarded["bytes_in"].as_u64().unwrap() > 2 * 256 * 1024,
        "{forwarded}"
    );
    assert!(
        forwarded["bytes_out"].as_u64().unwrap() > 2 * 256 * 1024,
        "{forwarded}"
    );
    let denied: Vec<&Value> = audit
        .iter()
        .filter(|e| e["user"] == "bob" && e["subresource"] == "exec")
        .collect();
    // WebSocket, then kubectl's fallback to SPDY; then SPDY alone
    assert_eq!(denied.len(), 3, "{denied:#?}");
    assert!(denied
        .iter()
        .all(|e| e["status"] == 403 && e["decision"] == "deny" && e["verb"] == "connect"));
}

/// GET `path` from `base` (plain HTTP), the body as text.
fn http_get(base: &str, path: &str) -> String {
    let mut s = raw::connect(base);
    raw::write(
        &mut s,
        format!("GET {path} HTTP/1.1\r\nHost: kubegate\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (all, _) = raw::read_to_close(&mut s);
    text(&all)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

mod raw {
    //! HTTP/1.1 and WebSocket by hand, over a plain socket to kubegate.
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    pub fn connect(url: &str) -> TcpStream {
        let addr = url.trim_start_matches("http://");
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Reads until the peer closes (or 10 s pass); returns what came and whether it closed.
    pub fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => return (out, true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return (out, false)
                }
                Err(_) => return (out, true),
            }
        }
        (out, false)
    }

    #[allow(dead_code)] // used by the raw-socket tests below
    /// Reads one response head (up to the blank line); returns it and what followed.
    pub fn read_head(s: &mut TcpStream) -> (String, Vec<u8>) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = out.split_off(at + 4);
                return (String::from_utf8_lossy(&out).into_owned(), rest);
            }
            let n = s.read(&mut buf).expect("a response head");
            assert!(
                n > 0,
                "closed before a head: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
    }

    pub fn write(s: &mut TcpStream, bytes: &[u8]) {
        s.write_all(bytes).unwrap();
    }
}
