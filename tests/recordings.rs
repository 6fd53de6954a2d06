//! Recorded exec and attach sessions: the real kubectl through the `kubegate` binary, over
//! WebSocket and SPDY/3.1, with and without a terminal. Each cast is read by the strict
//! reader in `tests/common/asciicast.rs` and by `asciinema cat`, and its output equals
//! what kubectl printed.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::apiserver::ApiServer;
use common::asciicast::{asciinema_cat, Cast};
use common::binary::{wait_exit, Kubegate};
use common::kubectl::Kubectl;
use common::raw;
use serde_json::{json, Value};

/// Small enough that a 100 kB output passes it.
const CAP: u64 = 16 * 1024;

fn running_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
           "status": {"phase": "Running"}})
}

/// kubectl, its arguments, and the environment for one protocol.
fn kubectl(k: &Kubectl, args: &[&str], spdy: bool) -> Command {
    let mut cmd = k.command(args);
    if spdy {
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");
    }
    cmd
}

/// Runs `cmd` under a pseudo-terminal of 100x30 (util-linux `script`), as a person at a
/// terminal would: returns what it printed, with the terminal's `\r\n` made `\n`.
fn in_terminal(cmd: &Command) -> String {
    let mut line = String::from("stty cols 100 rows 30; ");
    for (k, v) in cmd.get_envs() {
        if let (k, Some(v)) = (k.to_string_lossy(), v) {
            line.push_str(&format!("{k}='{}' ", v.to_string_lossy()));
        }
    }
    line.push_str(&format!("'{}'", cmd.get_program().to_string_lossy()));
    for arg in cmd.get_args() {
        line.push_str(&format!(" '{}'", arg.to_string_lossy()));
    }
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .output()
        .expect("util-linux script runs");
    assert!(
        out.status.success(),
        "{line}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl's own log lines (klog: `E1205 21:42:03.660569 ...`) are not the session's
    let klog = |line: &str| {
        let b = line.as_bytes();
        b.len() > 5 && b"EWIF".contains(&b[0]) && b[1..5].iter().all(u8::is_ascii_digit)
    };
    String::from_utf8_lossy(&out.stdout)
        .replace("\r\n", "\n")
        .split_inclusive('\n')
        .filter(|line| !klog(line))
        .collect()
}

struct Session {
    printed: String,
    cast: Cast,
    file: PathBuf,
    event: Value,
}

#[test]
fn exec_sessions_are_recorded_as_casts_over_both_protocols() {
    let api = ApiServer::start();
    api.put_object("default", "pods", running_pod("web"));
    let gate = Kubegate::new().edit_config(|text| {
        text.replace(
            "recording_max_bytes = 67108864",
            &format!("recording_max_bytes = {CAP}"),
        )
    });
    let kubeconfig = gate.dir().join("cluster.yaml");
    std::fs::write(&kubeconfig, api.kubeconfig_with_client_cert()).unwrap();
    gate.run(&[
        "cluster",
        "add",
        "--org",
        "1",
        "--name",
        "dev",
        "--record-sessions",
        "all",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let alice_token = gate.member_with_token("alice", "admin");
    let bob_token = gate.member_with_token("bob", "member");
    let (server, url) = gate.serve();
    let alice = Kubectl::through(&gate, &url, &alice_token);
    let http = gate.http_url().unwrap();

    // each session, by protocol: what kubectl printed (stdout, then stderr)
    let mut printed = Vec::new();
    for spdy in [false, true] {
        let out = kubectl(
            &alice,
            &["exec", "web", "--", "echo", "héllo", "wörld"],
            spdy,
        )
        .output()
        .unwrap();
        assert!(out.status.success());
        printed.push(String::from_utf8_lossy(&out.stdout).into_owned());
        let out = kubectl(
            &alice,
            &["exec", "web", "--", "sh", "-c", "echo oops >&2; exit 3"],
            spdy,
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // kubectl adds its own line about the exit code; the command printed the first
        printed.push(stderr.lines().next().unwrap().to_string() + "\n");
        // with a terminal (kubectl exec -it), as a person types it
        let cmd = kubectl(
            &alice,
            &[
                "exec",
                "-it",
                "web",
                "--",
                "sh",
                "-c",
                "sleep 0.5; echo in a tty",
            ],
            spdy,
        );
        printed.push(in_terminal(&cmd));
    }
    // past the cap: the session goes on, the recording stops
    let out = kubectl(
        &alice,
        &["exec", "web", "--", "head", "-c", "100000", "/dev/zero"],
        false,
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout.len(),
        100_000,
        "the session went on past the cap"
    );
    // a long line: its plain runs are written to the cast from the tunnel's chunks
    let long = format!(
        "{} \"quoted\" back\\slash {}",
        (0..4000)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect::<String>(),
        "é".repeat(700)
    );
    let out = kubectl(&alice, &["exec", "web", "--", "echo", &long], false)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{long}\n"));

    let mut server = server;
    server.signal("TERM");
    assert!(wait_exit(&mut server.0, Duration::from_secs(20)).success());
    let audit = gate.audit();
    let execs: Vec<&Value> = audit
        .iter()
        .filter(|e| e["subresource"] == "exec" && e["status"] == 101)
        .collect();
    assert_eq!(execs.len(), 8, "{execs:#?}");
    let sessions: Vec<Session> = execs
        .iter()
        .map(|event| {
            let id = event["recording"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("the event names its recording: {event}"));
            assert_eq!(id, event["request_id"].as_str().unwrap());
            let file = gate.dir().join(format!("data/recordings/1/{id}.cast"));
            let text = std::fs::read_to_string(&file).unwrap();
            assert_eq!(
                event["recording"]["bytes"].as_u64(),
                Some(text.len() as u64)
            );
            Session {
                printed: String::new(),
                cast: Cast::parse(&text),
                file,
                event: (*event).clone(),
            }
        })
        .collect();
    let mut sessions = sessions;
    for (session, printed) in sessions.iter_mut().zip(&printed) {
        session.printed = printed.clone();
    }

    for (i, s) in sessions.iter().take(6).enumerate() {
        let output = s.cast.output();
        // a terminal shows \n as \r\n; the command wrote \n
        assert_eq!(
            output.replace("\r\n", "\n"),
            s.printed,
            "session {i}: {:?}",
            s.cast
        );
        assert!(s.event["recording"]["stopped"].is_null(), "{}", s.event);
        // asciinema reads it too, and prints the same output
        assert_eq!(
            asciinema_cat(&s.file).replace("\r\n", "\n"),
            s.printed,
            "session {i}"
        );
        // stdin is not recorded by default
        assert!(s.cast.of("i").is_empty());
    }
    // the terminal's size: a resize event from kubectl -t
    for tty in [&sessions[2], &sessions[5]] {
        assert!(tty.cast.of("r").contains(&"100x30"), "{:?}", tty.cast);
    }
    let line = &sessions[7];
    assert_eq!(line.cast.output(), format!("{long}\n"));
    assert_eq!(asciinema_cat(&line.file), format!("{long}\n"));
    let capped = &sessions[6];
    assert!(capped.event["recording"]["stopped"]
        .as_str()
        .unwrap()
        .contains("recording_max_bytes"));
    assert_eq!(capped.cast.events.last().unwrap().1, "m");
    let size = std::fs::metadata(&capped.file).unwrap().len();
    assert!(size <= CAP + 200, "{size} bytes past a cap of {CAP}");
    asciinema_cat(&capped.file);

    // the org's admins may fetch a recording; members may not
    let (server, _) = gate.serve();
    let id = sessions[0].event["request_id"].as_str().unwrap();
    let get = |token: &str, id: &str| {
        let (answer, _) = raw::exchange(
            &gate.http_url().unwrap(),
            format!(
                "GET /pipeline/api/v1/orgs/1/audit/sessions/{id} HTTP/1.1\r\nHost: kubegate\r\n\
                 Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
                token.trim()
            )
            .as_bytes(),
        );
        String::from_utf8_lossy(&answer).into_owned()
    };
    let _ = http;
    let answer = get(&alice_token, id);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("application/x-asciicast"));
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, std::fs::read_to_string(&sessions[0].file).unwrap());
    assert!(get(&bob_token, id).starts_with("HTTP/1.1 403"));
    assert!(get(&alice_token, "no-such-session").starts_with("HTTP/1.1 404"));
    assert!(get(&alice_token, "..%2F..%2Fsigning-key").starts_with("HTTP/1.1 400"));
    drop(server);
}

/// With the PostgreSQL audit sink, a recording is kept in the database once its session
/// ends, and served from there (by any replica), even when this replica's file is gone.
#[test]
fn with_the_postgres_audit_sink_recordings_are_served_from_the_database() {
    let db = common::postgres::TestDatabase::create();
    let api = ApiServer::start();
    api.put_object("default", "pods", running_pod("web"));
    let gate = Kubegate::new().edit_config(|text| {
        text.replace(
            "sinks = [\"file\"]",
            &format!(
                "sinks = [\"file\", \"postgres\"]\npostgres_url = \"{}\"",
                db.url
            ),
        )
    });
    let kubeconfig = gate.dir().join("cluster.yaml");
    std::fs::write(&kubeconfig, api.kubeconfig_with_client_cert()).unwrap();
    gate.run(&[
        "cluster",
        "add",
        "--org",
        "1",
        "--name",
        "dev",
        "--record-sessions",
        "all",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let alice_token = gate.member_with_token("alice", "admin");
    let (server, url) = gate.serve();
    let alice = Kubectl::through(&gate, &url, &alice_token);
    let out = alice.ok(&["exec", "web", "--", "echo", "kept", "in", "postgres"]);
    assert_eq!(out, "kept in postgres\n");

    // the session's recording reaches the database
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let table = db.dump(
            "SELECT count(*)::text FROM information_schema.tables WHERE table_name = 'kubegate_recordings'",
        );
        if table == "1" {
            let id = db.dump("SELECT coalesce(max(id), '') FROM kubegate_recordings");
            if !id.is_empty() {
                break id;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recording in the database"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let file = gate.dir().join(format!("data/recordings/1/{id}.cast"));
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let (answer, _) = raw::exchange(
        &gate.http_url().unwrap(),
        format!(
            "GET /pipeline/api/v1/orgs/1/audit/sessions/{id} HTTP/1.1\r\nHost: kubegate\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            alice_token.trim()
        )
        .as_bytes(),
    );
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{:#?}",
        gate.logs()
    );
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, text);
    assert_eq!(Cast::parse(body).output(), "kept in postgres\n");
    drop(server);
}
