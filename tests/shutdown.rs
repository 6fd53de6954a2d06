//! SIGTERM under load: kubegate stops accepting, lets in-flight requests finish, writes
//! every audit event, and exits 0. Nothing answered goes unrecorded.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate};

#[test]
fn sigterm_during_load_loses_no_audit_event() {
    let api = ApiServer::start();
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
    let token = gate
        .run(&["token", "create", "--user", "alice"])
        .trim()
        .to_string();
    let (mut server, _) = gate.serve();
    let http = gate.http_url().expect("serve prints its HTTP address");
    let url =
        format!("{http}/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods");

    // 16 clients send requests as fast as they can, keeping every request id answered
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (answered, stop) = (answered.clone(), stop.clone());
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let clients = (0..16).map(|_| {
                    let (answered, stop, url, token) =
                        (answered.clone(), stop.clone(), url.clone(), token.clone());
                    async move {
                        let client = awc::Client::default();
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            match client.get(&url).bearer_auth(&token).send().await {
                                Ok(mut res) => {
                                    if res.body().await.is_ok() {
                                        if let Some(id) = res.headers().get("x-request-id") {
                                            answered
                                                .lock()
                                                .unwrap()
                                                .push(id.to_str().unwrap().to_string());
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = wait_exit(&mut server.0, Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(exited.success(), "kubegate exits 0 on SIGTERM: {exited:?}");

    let answered: HashSet<String> = answered.lock().unwrap().iter().cloned().collect();
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
