//! exec, attach, port-forward and the dashboard through kubegate: the real kubectl over
//! HTTPS against the `kubegate` binary, and raw sockets against kubegate in-process.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate};
use common::gateway::TestGateway;
use common::kubectl::{echo_server, port_forward_round_trips, Kubectl};
use common::raw;
use common::websocket::client_frame;
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
    gate.add_cluster(&api.kubeconfig_with_client_cert());
    let alice_token = gate.member_with_token("alice", "admin");
    let bob_token = gate.member_with_token("bob", "member");
    let (server, url) = gate.serve();
    Gate {
        alice: Kubectl::through(&gate, &url, &alice_token),
        bob: Kubectl::through(&gate, &url, &bob_token),
        gate,
        server,
    }
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
    let mut forward = port_forward_round_trips(g.alice.command(&[
        "port-forward",
        "pod/web",
        &format!(":{pod_port}"),
    ]));
    // the open session shows in /metrics
    let metrics = http_get(&g.gate.http_url().unwrap(), "/metrics");
    let open = metric(&metrics, "kubegate_upgraded_sessions_open");
    assert!(open >= 1.0, "{metrics}");
    let _ = forward.kill();
    let _ = forward.wait();

    // the same over plain SPDY/3.1, as kubectl before 1.30/1.31 speaks
    let mut spdy = g
        .alice
        .command(&["port-forward", "pod/web", &format!(":{pod_port}")]);
    spdy.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    let mut forward = port_forward_round_trips(spdy);
    let _ = forward.kill();
    let _ = forward.wait();
    let spdy_exec = |args: &[&str]| {
        let mut cmd = g.alice.command(args);
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
        cmd
    };
    let out = spdy_exec(&["exec", "web", "--", "echo", "over", "spdy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "over spdy\n");
    let out = with_stdin(spdy_exec(&["exec", "-i", "web", "--", "cat"]), b"a\nb\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a\nb\n");
    let out = spdy_exec(&["exec", "web", "--", "sh", "-c", "exit 4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));

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
    server.signal("TERM");
    assert!(wait_exit(&mut server.0, Duration::from_secs(20)).success());
    let audit = g.gate.audit();
    let sessions: Vec<&Value> = audit
        .iter()
        .filter(|e| e["user"] == "alice" && e["verb"] == "connect" && e["status"] == 101)
        .collect();
    // exec x3, attach x2, port-forward x1, then over SPDY: port-forward x1, exec x3
    assert_eq!(sessions.len(), 10, "{sessions:#?}");
    for e in &sessions {
        assert!(e["bytes_out"].as_u64().unwrap() > 0, "{e}");
        assert!(e["duration_ms"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["ended"].is_string(), "{e}");
    }
    let forwarded: Vec<&&Value> = sessions
        .iter()
        .filter(|e| e["subresource"] == "portforward")
        .collect();
    assert_eq!(forwarded.len(), 2, "the port-forward sessions are audited");
    for e in forwarded {
        assert!(e["bytes_in"].as_u64().unwrap() > 2 * 256 * 1024, "{e}");
        assert!(e["bytes_out"].as_u64().unwrap() > 2 * 256 * 1024, "{e}");
    }
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
    let (all, _) = raw::exchange(
        base,
        format!("GET {path} HTTP/1.1\r\nHost: kubegate\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    text(&all)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// kubegate in-process (plain HTTP) in front of a stand-in with the pod `web`.
struct Local {
    api: ApiServer,
    gw: TestGateway,
}

fn local() -> Local {
    let api = ApiServer::start();
    api.put_object("default", "pods", running_pod("web"));
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    Local { api, gw }
}

impl Local {
    /// The request path of `k8s_path` on cluster 1 of org 1.
    fn path(&self, k8s_path: &str) -> String {
        self.gw
            .proxy_url(1, 1, k8s_path)
            .trim_start_matches(&self.gw.url)
            .to_string()
    }

    /// A WebSocket upgrade request head for `k8s_path`, as `user`.
    fn websocket(&self, user: &str, k8s_path: &str, protocol: &str) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
            self.path(k8s_path),
            self.gw.token(user)
        )
    }

    /// An SPDY/3.1 upgrade request head for `k8s_path`, as `user` (kubectl before 1.30).
    fn spdy(&self, user: &str, k8s_path: &str) -> String {
        format!(
            "POST {} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
            self.path(k8s_path),
            self.gw.token(user)
        )
    }

    /// alice's `exec ls` in the pod `web` over a new WebSocket connection, read until
    /// kubegate closes it (or 10 s pass): what came and whether it closed.
    fn exec_ls(&self) -> (Vec<u8>, bool) {
        let upgrade = self.websocket(
            "alice",
            "/api/v1/namespaces/default/pods/web/exec?command=ls",
            "v5.channel.k8s.io",
        );
        raw::exchange(&self.gw.url, upgrade.as_bytes())
    }

    /// alice's `exec cat` in the pod `web` (stdin and stdout) over a new WebSocket
    /// connection: the connection, the answer's head and what came after it.
    fn exec_cat(&self) -> (TcpStream, String, Vec<u8>) {
        let mut s = raw::connect(&self.gw.url);
        raw::write(
            &mut s,
            self.websocket(
                "alice",
                "/api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true",
                "v5.channel.k8s.io",
            )
            .as_bytes(),
        );
        let (head, rest) = raw::read_head(&mut s);
        (s, head, rest)
    }

    /// A plain GET of the pod list, as `user`.
    fn list_pods(&self, user: &str) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {}\r\n\r\n",
            self.path("/api/v1/namespaces/default/pods"),
            self.gw.token(user)
        )
    }

    fn pod_lists_seen(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v1/namespaces/default/pods" && r.method == "GET")
            .count()
    }
}

/// How many HTTP responses `bytes` holds (status lines).
fn responses(bytes: &[u8]) -> usize {
    text(bytes).matches("HTTP/1.1 ").count()
}

#[test]
fn a_refused_upgrade_is_relayed_and_the_connection_closed() {
    let l = local();
    // a pipelined request rides behind an upgrade the API server refuses (no such pod),
    // over WebSocket and over SPDY
    let missing = "/api/v1/namespaces/default/pods/missing/exec?command=ls&stdout=true";
    for upgrade in [
        l.websocket("alice", missing, "v5.channel.k8s.io"),
        l.websocket("alice", missing, "v4.channel.k8s.io"),
        l.spdy("alice", missing),
    ] {
        let both = upgrade + l.list_pods("alice").as_str();
        let (got, closed) = raw::exchange(&l.gw.url, both.as_bytes());
        let got_text = text(&got);
        assert!(
            got_text.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{got_text}"
        );
        assert!(got_text.contains(r#""reason":"NotFound""#), "{got_text}");
        assert!(closed, "the connection is closed after a refused upgrade");
        assert_eq!(responses(&got), 1, "no second answer: {got_text}");
    }
    // kubegate's own refusal of an upgrade it does not carry, and a member's 403 (over
    // WebSocket and SPDY), close it too
    for (user, head, status) in [
        (
            "alice",
            l.spdy(
                "alice",
                "/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true",
            )
            .replace("Upgrade: SPDY/3.1", "Upgrade: TLS/1.0"),
            "400 Bad Request",
        ),
        (
            "bob",
            l.websocket(
                "bob",
                "/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true",
                "v5.channel.k8s.io",
            ),
            "403 Forbidden",
        ),
        (
            "bob",
            l.spdy(
                "bob",
                "/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true",
            ),
            "403 Forbidden",
        ),
    ] {
        let (got, closed) =
            raw::exchange(&l.gw.url, (head + l.list_pods(user).as_str()).as_bytes());
        let got_text = text(&got);
        assert!(
            got_text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{got_text}"
        );
        assert!(closed, "closed after {status}: {got_text}");
        assert_eq!(responses(&got), 1, "no second answer: {got_text}");
    }
    assert_eq!(
        l.pod_lists_seen(),
        0,
        "no pipelined request reached the API server"
    );
    assert!(
        !l.api
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/web/exec")),
        "refused before the API server"
    );
    // and a plain request on a fresh connection is served as usual
    let mut s = raw::connect(&l.gw.url);
    raw::write(&mut s, l.list_pods("bob").as_bytes());
    let (head, _) = raw::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
}

#[test]
fn members_get_403_for_exec_whichever_protocol() {
    let l = local();
    for (head, protocol) in [
        (
            l.websocket(
                "bob",
                "/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true",
                "v5.channel.k8s.io",
            ),
            "WebSocket",
        ),
        (
            l.websocket(
                "bob",
                "/api/v1/namespaces/default/pods/web/portforward?ports=80",
                "SPDY/3.1+portforward.k8s.io",
            ),
            "WebSocket port-forward",
        ),
        (
            l.spdy(
                "bob",
                "/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true",
            ),
            "SPDY",
        ),
        (
            l.spdy(
                "bob",
                "/api/v1/namespaces/default/pods/web/attach?stdout=true",
            ),
            "SPDY attach",
        ),
    ] {
        let (got, _) = raw::exchange(&l.gw.url, head.as_bytes());
        let got_text = text(&got);
        assert!(
            got_text.starts_with("HTTP/1.1 403 Forbidden"),
            "{protocol}: {got_text}"
        );
        let body = &got_text[got_text.find("\r\n\r\n").unwrap() + 4..];
        let status: Value = serde_json::from_str(body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Forbidden");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("User \"bob\" cannot connect resource \"pods/"),
            "{protocol}: {status}"
        );
    }
    assert!(
        l.api.requests().is_empty(),
        "nothing reached the API server"
    );
    let denied =
        l.gw.wait_audit(|e| e["user"] == "bob" && e["subresource"] == "attach");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["verb"], "connect");
}

/// Server frames in `bytes`: (opcode, payload).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, at) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        frames.push((opcode, bytes[at..at + len].to_vec()));
        bytes = &bytes[at + len..];
    }
    frames
}

#[test]
fn a_session_is_one_audit_event_with_its_bytes_and_duration() {
    let l = local();
    let (mut s, head, mut stream) = l.exec_cat();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    // the API server's handshake, unchanged: accept key and chosen subprotocol
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    assert!(
        lower.contains("sec-websocket-protocol: v5.channel.k8s.io\r\n"),
        "{head}"
    );
    assert!(
        lower.contains("connection: upgrade\r\n") && lower.contains("upgrade: websocket\r\n"),
        "{head}"
    );
    let mut sent = 0u64;
    for chunk in [&b"hello "[..], &[b'x'; 70_000][..], b"bye\n"] {
        let mut message = vec![0u8]; // stdin
        message.extend_from_slice(chunk);
        let frame = client_frame(2, &message);
        sent += frame.len() as u64;
        raw::write(&mut s, &frame);
        std::thread::sleep(Duration::from_millis(50));
    }
    let close_stdin = client_frame(2, &[255, 0]);
    sent += close_stdin.len() as u64;
    raw::write(&mut s, &close_stdin);
    let (rest, closed) = raw::read_to_close(&mut s);
    assert!(closed, "the API server ends the session after the status");
    stream.extend_from_slice(&rest);
    let frames = server_frames(&stream);
    let stdout: Vec<u8> = frames
        .iter()
        .filter(|(op, p)| *op == 2 && p.first() == Some(&1))
        .flat_map(|(_, p)| p[1..].to_vec())
        .collect();
    assert_eq!(stdout.len(), 6 + 70_000 + 4);
    assert!(stdout.starts_with(b"hello xxx") && stdout.ends_with(b"xxbye\n"));
    let status = frames
        .iter()
        .find(|(op, p)| *op == 2 && p.first() == Some(&3))
        .expect("a status on channel 3");
    assert_eq!(
        serde_json::from_slice::<Value>(&status.1[1..]).unwrap()["status"],
        "Success"
    );
    assert_eq!(frames.last().unwrap().0, 8, "a close frame last");

    let event = l.gw.wait_audit(|e| e["status"] == 101);
    assert_eq!(event["user"], "alice");
    assert_eq!(event["verb"], "connect");
    assert_eq!(event["subresource"], "exec");
    assert_eq!(event["decision"], "allow");
    assert_eq!(event["bytes_in"], sent, "{event}");
    assert_eq!(event["bytes_out"], stream.len() as u64, "{event}");
    assert_eq!(event["ended"], "server closed", "{event}");
    assert!(event["duration_ms"].as_f64().unwrap() >= 150.0, "{event}");
    assert_eq!(
        l.gw.audit_events()
            .iter()
            .filter(|e| e["subresource"] == "exec")
            .count(),
        1,
        "one event per session"
    );
    // the API server saw kubegate's identity, not the user's token
    let seen = l
        .api
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/web/exec"))
        .unwrap();
    assert_eq!(seen.identity.user(), Some("kubegate"));
    assert!(!seen.headers.iter().any(|(n, _)| n == "authorization"));
}

#[test]
fn an_unreachable_api_server_is_a_502_and_the_connection_closes() {
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = ApiServer::start();
    let kubeconfig = api
        .kubeconfig_with_client_cert()
        .replace(api.url(), &format!("https://127.0.0.1:{closed_port}"));
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(1, "gone", &kubeconfig)
        .start();
    let l = Local { api, gw };
    let (got, closed) = l.exec_ls();
    let got_text = text(&got);
    assert!(
        got_text.starts_with("HTTP/1.1 502 Bad Gateway"),
        "{got_text}"
    );
    assert!(got_text.contains("is unreachable"), "{got_text}");
    assert!(closed);
    let event = l.gw.wait_audit(|e| e["status"] == 502);
    assert_eq!(event["decision"], "error");
    assert_eq!(event["ended"], "not upgraded");
}

impl Local {
    /// GET `path` (kubegate's, with its prefix) as `user`: the head and the body.
    fn get(&self, user: &str, path: &str) -> (String, String) {
        let (all, _) = raw::exchange(
            &self.gw.url,
            format!(
                "GET {path} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {}\r\nAccept: text/html,*/*\r\nConnection: close\r\n\r\n",
                self.gw.token(user)
            )
            .as_bytes(),
        );
        let all = text(&all);
        let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
        (head.to_string(), body.to_string())
    }
}

fn header_of<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_dashboard_through_the_service_proxy() {
    let l = local();
    let service = "/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy";
    let prefix = l.path("");
    // the API server's redirect to the trailing slash stays under kubegate's prefix
    let (head, _) = l.get("alice", &l.path(service));
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    let page_path = format!("{prefix}{service}/");
    assert_eq!(
        header_of(&head, "location"),
        Some(page_path.as_str()),
        "{head}"
    );
    // the page: relative links as they were, the absolute one moved under the prefix
    let (head, page) = l.get("alice", &page_path);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header_of(&head, "content-length"),
        Some(page.len().to_string().as_str())
    );
    assert!(
        page.contains(r#"<link rel="stylesheet" href="styles.css">"#),
        "{page}"
    );
    assert!(page.contains(r#"<script src="main.js" defer>"#), "{page}");
    assert!(
        page.contains(&format!(r#"href="{prefix}{service}/#/workloads""#)),
        "{page}"
    );
    assert!(
        page.contains(r#"href='#/login'"#)
            && page.contains(r#"href="https://kubernetes.io/docs/""#),
        "{page}"
    );
    // what the browser then fetches, resolved against the page's URL
    let (head, css) = l.get("alice", &format!("{page_path}styles.css"));
    assert!(
        head.starts_with("HTTP/1.1 200") && header_of(&head, "content-type") == Some("text/css"),
        "{head}"
    );
    assert!(css.contains("font-family"));
    let (head, script) = l.get("alice", &format!("{page_path}main.js"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(script.contains("fetch('api/v1/login/status')"), "{script}");
    let (head, status) = l.get("alice", &format!("{page_path}api/v1/login/status"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&status).unwrap()["version"],
        "v2.7.0"
    );
    // a redirect the API server rewrote for the dashboard's own absolute path
    let (head, _) = l.get("alice", &format!("{page_path}logout"));
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    assert_eq!(
        header_of(&head, "location"),
        Some(format!("{prefix}{service}/#/login").as_str())
    );
    // the API server saw its own paths, and the service proxy is `connect`: not for members
    assert!(l
        .api
        .requests()
        .iter()
        .any(|r| r.path == format!("{service}/api/v1/login/status")));
    let (head, body) = l.get("bob", &page_path);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        body.contains("cannot connect resource \\\"services/proxy\\\""),
        "{body}"
    );
}

/// GET `url` as `user` with awc (no decompression): status, `Content-Encoding`, body.
fn fetch(gw: &TestGateway, user: &str, url: String) -> (u16, Option<String>, Vec<u8>) {
    let token = gw.token(user);
    common::gateway::block_on(move || async move {
        let mut res = common::http::client()
            .get(url)
            .bearer_auth(token)
            .insert_header(("Accept", "text/html,*/*"))
            .insert_header(("Accept-Encoding", "gzip"))
            .send()
            .await
            .unwrap();
        let encoding = res
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        let body = res.body().limit(16 << 20).await.unwrap().to_vec();
        (res.status().as_u16(), encoding, body)
    })
}

/// An HTML page is held whole to move its links up to 2 MiB: a larger page, and a
/// compressed one, pass through the service proxy unchanged.
#[test]
fn large_and_compressed_pages_pass_through_the_service_proxy_unchanged() {
    use common::apiserver::dashboard::{gzipped_page, padded_page};
    const MIB: usize = 1024 * 1024;
    let l = local();
    let base = "/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy";
    let prefix = l.path("");
    let link = format!(r#"href="{base}/#/workloads""#);
    let moved = format!(r#"href="{prefix}{base}/#/workloads""#);

    // 2 MiB exactly: still held, its link moved
    let (status, _, body) = fetch(
        &l.gw,
        "alice",
        l.gw.proxy_url(1, 1, &format!("{base}/padded/{}", 2 * MIB)),
    );
    assert_eq!(status, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(&moved), "{}", &page[..600]);
    assert_eq!(page.len(), 2 * MIB + prefix.len());

    // one byte more: passed as the API server sent it, every byte
    let (status, _, body) = fetch(
        &l.gw,
        "alice",
        l.gw.proxy_url(1, 1, &format!("{base}/padded/{}", 2 * MIB + 1)),
    );
    assert_eq!(status, 200);
    assert_eq!(body.len(), 2 * MIB + 1);
    let page = String::from_utf8(body).unwrap();
    assert!(
        page.contains(&link) && !page.contains(&moved),
        "{}",
        &page[..600]
    );
    assert!(
        page == padded_page(base, 2 * MIB + 1),
        "the page is unchanged"
    );

    // far larger: the same
    let (status, _, body) = fetch(
        &l.gw,
        "alice",
        l.gw.proxy_url(1, 1, &format!("{base}/padded/{}", 5 * MIB)),
    );
    assert_eq!(status, 200);
    assert!(
        body == padded_page(base, 5 * MIB).into_bytes(),
        "the page is unchanged"
    );

    // gzip-encoded: unchanged, still encoded, its link as the API server wrote it
    let (status, encoding, body) = fetch(
        &l.gw,
        "alice",
        l.gw.proxy_url(1, 1, &format!("{base}/gzip/")),
    );
    assert_eq!(status, 200);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(body, gzipped_page(base), "the compressed page is unchanged");
    let mut page = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut page).unwrap();
    assert!(page.contains(&link) && !page.contains(&moved), "{page}");

    // the audit trail has each page with the bytes sent
    let event =
        l.gw.wait_audit(|e| e["path"] == format!("{base}/padded/{}", 5 * MIB));
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["bytes_out"], 5 * MIB as u64, "{event}");
}

/// An interactive session may sit idle longer than the keep-alive and request timeouts;
/// a client that drops the connection ends it, and the audit event says so.
#[test]
fn an_idle_session_lives_on_and_a_dropped_client_ends_it() {
    let api = ApiServer::start();
    api.put_object("default", "pods", running_pod("web"));
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .configure(|c| {
            c.server.keep_alive = Duration::from_secs(1);
            c.server.client_request_timeout = Duration::from_secs(1);
        })
        .start();
    let l = Local { api, gw };
    let (mut s, head, _) = l.exec_cat();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    std::thread::sleep(Duration::from_millis(2500));
    raw::write(&mut s, &client_frame(2, b"\0still here"));
    let mut echo = vec![0u8; 2 + 1 + 10];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo[2..], b"\x01still here");
    drop(s);
    let event = l.gw.wait_audit(|e| e["status"] == 101);
    assert_eq!(event["ended"], "client went away", "{event}");
    assert!(event["duration_ms"].as_f64().unwrap() >= 2500.0, "{event}");
    assert_eq!(event["bytes_out"], echo.len() as u64, "{event}");
}

/// curl `--http2` on plain HTTP asks for `Upgrade: h2c`: kubegate ignores it, as a server
/// may, and answers over HTTP/1.1 (it is still the verb `connect`, so for admins only).
#[test]
fn an_h2c_upgrade_is_served_as_http_1_1() {
    let l = local();
    let mut s = raw::connect(&l.gw.url);
    raw::write(
        &mut s,
        format!(
            "GET {} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            l.path("/api/v1/namespaces/default/pods"),
            l.gw.token("alice")
        )
        .as_bytes(),
    );
    let (head, _) = raw::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let seen = l.api.requests().pop().unwrap();
    assert!(
        !seen
            .headers
            .iter()
            .any(|(n, _)| n == "upgrade" || n == "http2-settings"),
        "{:?}",
        seen.headers
    );
}

/// The tunnel keeps the SSRF guard of every request: an API server host name that
/// resolves into `clusters.denied_networks` is refused at connection time.
#[test]
fn a_tunnel_to_a_denied_network_is_refused() {
    let api = ApiServer::start();
    let kubeconfig = api.kubeconfig_with_client_cert().replace(
        api.url(),
        &format!("https://localhost:{}", api.addr().port()),
    );
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(1, "dev", &kubeconfig)
        .configure(|c| {
            c.clusters.denied_networks =
                vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        })
        .start();
    let l = Local { api, gw };
    let (got, closed) = l.exec_ls();
    let got_text = text(&got);
    assert!(got_text.starts_with("HTTP/1.1 502"), "{got_text}");
    assert!(got_text.contains("in the denied network"), "{got_text}");
    assert!(closed);
    assert!(
        l.api.requests().is_empty(),
        "nothing reached the API server"
    );
}

/// The API server has `clusters.upgrade_timeout` to answer an upgrade once connected:
/// past it the client gets a 504 and the connection closes; within it (the default is
/// 60 s) a slow answer is still carried.
#[test]
fn an_upgrade_the_api_server_does_not_answer_in_time_is_a_504() {
    let api = ApiServer::builder()
        .upgrade_delay(Duration::from_secs(2))
        .start();
    api.put_object("default", "pods", running_pod("web"));
    let kubeconfig = api.kubeconfig_with_client_cert();
    let gateway = |timeout: Option<Duration>| {
        TestGateway::builder()
            .member(1, "alice", "admin")
            .cluster(1, "dev", &kubeconfig)
            .configure(move |c| {
                assert_eq!(c.clusters.upgrade_timeout, Duration::from_secs(60));
                if let Some(timeout) = timeout {
                    c.clusters.upgrade_timeout = timeout;
                }
            })
            .start()
    };
    let impatient = Local {
        gw: gateway(Some(Duration::from_millis(500))),
        api,
    };
    let started = std::time::Instant::now();
    let (got, closed) = impatient.exec_ls();
    let got_text = text(&got);
    assert!(got_text.starts_with("HTTP/1.1 504"), "{got_text}");
    assert!(
        got_text.contains("did not answer the upgrade in time"),
        "{got_text}"
    );
    assert!(closed);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let event = impatient.gw.wait_audit(|e| e["status"] == 504);
    assert_eq!(event["subresource"], "exec", "{event}");

    let Local { api, .. } = impatient;
    let patient = Local {
        gw: gateway(None),
        api,
    };
    let (got, closed) = patient.exec_ls();
    let got_text = text(&got);
    assert!(got_text.starts_with("HTTP/1.1 101"), "{got_text}");
    assert!(closed);
}

/// Writing and reading at full speed at once, several times: every byte arrives, and the
/// session ends with the API server's status (this caught stdin left in the TLS buffer
/// towards the API server).
#[test]
fn a_busy_session_carries_every_byte_both_ways() {
    let l = local();
    let frames = 256; // 8 MiB of stdin per session
    for round in 0..4 {
        let (mut s, head, mut got) = l.exec_cat();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut writer = s.try_clone().unwrap();
        let writing = std::thread::spawn(move || {
            let mut message = vec![b'x'; 32 * 1024 + 1];
            message[0] = 0;
            let frame = client_frame(2, &message);
            for _ in 0..frames {
                writer.write_all(&frame).unwrap();
            }
            writer.write_all(&client_frame(2, &[255, 0])).unwrap();
        });
        let (rest, closed) = raw::read_to_close(&mut s);
        writing.join().unwrap();
        got.extend_from_slice(&rest);
        assert!(closed, "round {round}: the session ended");
        let frames_got = server_frames(&got);
        let stdout: usize = frames_got
            .iter()
            .filter(|(op, p)| *op == 2 && p.first() == Some(&1))
            .map(|(_, p)| p.len() - 1)
            .sum();
        assert_eq!(stdout, frames * 32 * 1024, "round {round}");
        assert!(
            frames_got
                .iter()
                .any(|(op, p)| *op == 2 && p.first() == Some(&3)),
            "round {round}: the status arrived"
        );
    }
}
