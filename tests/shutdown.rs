//! SIGTERM: kubegate stops accepting at once, lets in-flight requests finish (up to
//! `server.shutdown_grace`, then cuts them), writes every audit event, and exits 0.
//! Nothing answered goes unrecorded, under load or not.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate};
use common::raw;

#[test]
fn sigterm_during_load_loses_no_audit_event() {
    let api = ApiServer::start();
    let gate = Kubegate::new();
    gate.add_cluster(&api.kubeconfig_with_client_cert());
    let token = gate.member_with_token("alice", "admin");
    let (mut server, _) = gate.serve();
    let http = gate.http_url().expect("serve prints its HTTP address");
    let url =
        format!("{http}/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods");

    // 16 clients send requests as fast as they can, keeping every request id answered
    let (answered, stop, load) = load(vec![(url, token)], 16);
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal("TERM");
    let exited = wait_exit(&mut server.0, Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(exited.success(), "kubegate exits 0 on SIGTERM: {exited:?}");

    let answered: HashSet<String> = answered
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.split(' ').next().unwrap().to_string())
        .collect();
    let recorded: HashSet<String> = gate
        .audit()
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = answered.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests are not in the audit trail",
        missing.len(),
        answered.len()
    );
    assert!(answered.len() >= 300);
    println!(
        "{} requests answered, {} audit events, none missing",
        answered.len(),
        recorded.len()
    );
}

/// `clients` clients send `GET url` with their token, each cycling through `requests`
/// from its own place, as fast as they can for at most 20 s or until the flag is set;
/// the ids of the answers received whole are kept (an answer's `X-Request-Id`).
#[allow(clippy::type_complexity)]
fn load(
    requests: Vec<(String, String)>,
    clients: usize,
) -> (
    Arc<Mutex<Vec<String>>>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (answered, stop) = (answered.clone(), stop.clone());
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let clients = (0..clients).map(|n| {
                    let (answered, stop, requests) =
                        (answered.clone(), stop.clone(), requests.clone());
                    async move {
                        let client = awc::Client::default();
                        let deadline = Instant::now() + Duration::from_secs(20);
                        let mut i = n;
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            let (url, token) = &requests[i % requests.len()];
                            i += 1;
                            match client.get(url).bearer_auth(token).send().await {
                                Ok(mut res) => {
                                    let whole = res.body().limit(64 << 20).await.is_ok();
                                    if let Some(id) = res.headers().get("x-request-id") {
                                        if whole {
                                            answered
                                                .lock()
                                                .unwrap()
                                                .push(format!("{} {url}", id.to_str().unwrap()));
                                        }
                                    }
                                }
                                // refused once kubegate stops accepting
                                Err(_) => actix_rt::time::sleep(Duration::from_millis(5)).await,
                            }
                        }
                    }
                });
                futures_util::future::join_all(clients).await;
            })
        })
    };
    (answered, stop, thread)
}

/// SIGKILL under load: every request whose answer a client received whole is in the
/// audit file (each event is written before the last byte of its answer leaves), and the
/// file holds whole lines only. Proxied lists, refusals and REST answers alike.
#[test]
fn sigkill_during_load_loses_no_answered_request() {
    let api = ApiServer::start();
    let gate = Kubegate::new();
    gate.add_cluster(&api.kubeconfig_with_client_cert());
    let admin = gate.member_with_token("alice", "admin");
    let member = gate.member_with_token("bob", "member");
    let (mut server, _) = gate.serve();
    let http = gate.http_url().expect("serve prints its HTTP address");
    let proxy = format!("{http}/pipeline/api/v1/orgs/1/clusters/1/proxy");
    let requests = vec![
        // proxied, with a body of known length and chunked
        (
            format!("{proxy}/api/v1/namespaces/default/pods"),
            admin.clone(),
        ),
        (
            format!("{proxy}/api/v1/namespaces/default/pods?limit=500"),
            member.clone(),
        ),
        // refused by the policy (403), answered by the gate
        (
            format!("{proxy}/api/v1/namespaces/default/secrets"),
            member.clone(),
        ),
        // REST answers (off the rate-limited paths, whose 429s past a limit are counted
        // into a summary, not recorded one by one)
        (
            format!("{http}/pipeline/api/v1/orgs/1/clusters"),
            admin.clone(),
        ),
        (format!("{http}/pipeline/api/v1/admin/policy"), admin),
    ];
    let (answered, stop, load) = load(requests, 16);
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.lock().unwrap().len() < 2000 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.signal("KILL");
    let _ = wait_exit(&mut server.0, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let urls = answered.lock().unwrap().clone();
    let answered: HashSet<String> = urls
        .iter()
        .map(|a| a.split(' ').next().unwrap().to_string())
        .collect();
    // every line whole (`audit` parses each one)
    let trail = gate.audit();
    let statuses: HashSet<u64> = trail.iter().filter_map(|e| e["status"].as_u64()).collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&403),
        "answers and refusals were both recorded: {statuses:?}"
    );
    let recorded: HashSet<String> = trail
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = answered.difference(&recorded).collect();
    let mut missing_by_url = std::collections::BTreeMap::<&str, usize>::new();
    for line in &urls {
        let (id, url) = line.split_once(' ').unwrap();
        if missing.iter().any(|m| m.as_str() == id) {
            *missing_by_url.entry(url).or_default() += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} requests answered whole before the SIGKILL are not in the audit trail: {missing_by_url:?}",
        missing.len(),
        answered.len()
    );
    println!(
        "SIGKILL after {} answered requests: {} audit events, none missing",
        answered.len(),
        recorded.len()
    );
}

/// Sends `GET path` with `token` over a new connection and reads the answer's headers;
/// returns the connection (to read the rest of the body from), the headers and what of
/// the body came with them.
fn raw_get(http: &str, path: &str, token: &str) -> (TcpStream, String, Vec<u8>) {
    let mut s = raw::connect(http);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let addr = http.trim_start_matches("http://");
    raw::write(
        &mut s,
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let (head, body) = raw::read_head(&mut s);
    (s, head, body)
}

#[test]
fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_flushes_the_audit() {
    use std::io::Read;
    let api = ApiServer::start();
    let gate = Kubegate::new();
    gate.add_cluster(&api.kubeconfig_with_client_cert());
    let token = gate.member_with_token("alice", "admin");
    let (mut server, _) = gate.serve();
    let http = gate.http_url().unwrap();
    let watch = "/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=2";

    // a request in flight: a watch the API server ends after 2 s
    let (mut in_flight, head, mut body) = raw_get(&http, watch, &token);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("the request id")
        .trim()
        .to_string();
    let reader = std::thread::spawn(move || {
        let _ = in_flight.read_to_end(&mut body);
        body
    });

    let sent = Instant::now();
    server.signal("TERM");
    // new connections are refused at once, while the watch goes on
    let addr = http.trim_start_matches("http://").to_string();
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "kubegate still accepts connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("no new connection {:?} after SIGTERM", sent.elapsed());
    api.put_object(
        "default",
        "pods",
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "during-shutdown", "namespace": "default"}}),
    );

    // the watch ends as the API server ends it: its last chunk, the event sent during
    // the shutdown included
    let body = reader.join().unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("during-shutdown"),
        "the in-flight request still gets its data: {text}"
    );
    assert!(
        body.ends_with(b"0\r\n\r\n"),
        "the in-flight request completes (its final chunk): {text}"
    );
    let status = wait_exit(&mut server.0, Duration::from_secs(30));
    assert!(status.success(), "exit 0: {status:?}");
    gate.wait_log("the audit flush is logged", |l| {
        l.contains("audit flushed (")
    });
    let logs = gate.logs().join("\n");
    assert!(logs.contains("SIGTERM: no new connections"), "{logs}");
    assert!(!logs.contains("ERROR"), "no error at shutdown: {logs}");
    let event = gate
        .audit()
        .into_iter()
        .find(|e| e["request_id"] == id.as_str())
        .expect("the in-flight request is in the audit trail, written before exit");
    assert_eq!(event["verb"], "watch");
    assert_eq!(event["status"], 200);
    assert!(event["bytes_out"].as_u64().unwrap() > 0);
}

#[test]
fn a_stream_longer_than_the_grace_is_cut_and_still_audited() {
    let api = ApiServer::start();
    let gate = Kubegate::new()
        .edit_config(|t| t.replace("shutdown_grace = \"10s\"", "shutdown_grace = \"1s\""));
    gate.add_cluster(&api.kubeconfig_with_client_cert());
    let token = gate.member_with_token("alice", "admin");
    let (mut server, _) = gate.serve();
    let http = gate.http_url().unwrap();
    let (_watch, head, _) = raw_get(
        &http,
        "/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods?watch=true",
        &token,
    );
    assert!(head.starts_with("HTTP/1.1 200"));
    let sent = Instant::now();
    server.signal("TERM");
    let status = wait_exit(&mut server.0, Duration::from_secs(30));
    println!(
        "exited {:?} after SIGTERM with a watch open (grace 1 s)",
        sent.elapsed()
    );
    assert!(status.success(), "exit 0: {status:?}");
    assert!(
        gate.audit().iter().any(|e| e["verb"] == "watch"),
        "the cut watch is audited: {:#?}",
        gate.audit()
    );
}

/// The grace is honoured as written, not rounded down to whole seconds (actix-web's own
/// shutdown timeout counts seconds only): with `1500ms`, a watch is cut after 1.5 s, not
/// 1 s. A second signal cuts at once, whatever the grace.
#[test]
fn the_grace_is_kept_as_written_and_a_second_signal_cuts_at_once() {
    let api = ApiServer::start();
    let watch =
        "/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods?watch=true";
    for (grace, second_signal) in [("1500ms", false), ("60s", true)] {
        let gate = Kubegate::new().edit_config(|t| {
            t.replace(
                "shutdown_grace = \"10s\"",
                &format!("shutdown_grace = \"{grace}\""),
            )
        });
        gate.add_cluster(&api.kubeconfig_with_client_cert());
        let token = gate.member_with_token("alice", "admin");
        let (mut server, _) = gate.serve();
        let http = gate.http_url().unwrap();
        let (_watch, head, _) = raw_get(&http, watch, &token);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let sent = Instant::now();
        server.signal("TERM");
        if second_signal {
            std::thread::sleep(Duration::from_millis(200));
            server.signal("INT");
        }
        let status = wait_exit(&mut server.0, Duration::from_secs(30));
        let took = sent.elapsed();
        println!("grace {grace}, second signal {second_signal}: exited after {took:?}");
        assert!(status.success(), "exit 0: {status:?}");
        if second_signal {
            assert!(
                took < Duration::from_secs(10),
                "the second signal cut at once, not after the grace: {took:?}"
            );
        } else {
            assert!(
                took >= Duration::from_millis(1500),
                "the whole grace was given, not 1 s: {took:?}"
            );
            assert!(took < Duration::from_secs(10), "then it was cut: {took:?}");
        }
        assert!(
            gate.audit().iter().any(|e| e["verb"] == "watch"),
            "the cut watch is audited: {:#?}",
            gate.audit()
        );
    }
}
