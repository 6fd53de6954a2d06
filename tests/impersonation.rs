//! Impersonation through kubegate, with the real kubectl over HTTPS against the `kubegate`
//! binary: the cluster sees the person (`kubectl auth whoami`), its own RBAC decides,
//! `kubectl --as` is refused until the policy grants it, exec and port-forward carry the
//! person too, and a cluster with impersonation off behaves as before.

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate};
use common::kubectl::{echo_server, port_forward_round_trips, Kubectl};
use common::raw;
use serde_json::{json, Value};

/// The rules of deploy/kubernetes/impersonator-rbac.yaml, as the stand-in takes them.
fn grant_impersonator_role(api: &ApiServer, user: &str) {
    api.grant(user, &["impersonate"], &["users", "groups"]);
    api.grant(
        user,
        &["impersonate"],
        &["userextras/kubegate.io/request-id"],
    );
}

fn running_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
           "status": {"phase": "Running"}})
}

fn whoami(kubectl: &Kubectl, extra: &[&str]) -> Value {
    let out = kubectl.ok(&[&["auth", "whoami", "-o", "json"][..], extra].concat());
    serde_json::from_str(&out).unwrap()
}

#[test]
fn the_cluster_sees_the_person_and_as_needs_the_policy() {
    // cluster 1 impersonates, with a credential that may do nothing but impersonate;
    // cluster 2 does not, with kubegate's system:masters certificate
    let api = ApiServer::start();
    api.put_object("default", "pods", running_pod("web"));
    let (cert, key) = api.pki().issue_client_cert("kubegate-impersonator", None);
    grant_impersonator_role(&api, "kubegate-impersonator");
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        policy.path(),
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.csv")).unwrap(),
    )
    .unwrap();
    let gate = Kubegate::new().edit_config(|text| {
        text.replace(
            "global_admins = []",
            &format!(
                "global_admins = [\"root\"]\npolicy = \"{}\"",
                policy.path().display()
            ),
        )
    });
    let kubeconfig = gate.dir().join("impersonator.yaml");
    std::fs::write(&kubeconfig, api.kubeconfig_with_cert(&cert, &key)).unwrap();
    let id = gate.run(&[
        "cluster",
        "add",
        "--org",
        "1",
        "--name",
        "dev",
        "--impersonate",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    assert_eq!(id.trim(), "1");
    let plain = gate.dir().join("plain.yaml");
    std::fs::write(&plain, api.kubeconfig_with_client_cert()).unwrap();
    let id = gate.run(&[
        "cluster",
        "add",
        "--org",
        "1",
        "--name",
        "plain",
        "--kubeconfig",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(id.trim(), "2");
    assert!(gate
        .run(&["cluster", "list", "--org", "1"])
        .lines()
        .next()
        .unwrap()
        .ends_with("\timpersonate"));
    let alice_token = gate.member_with_token("alice", "admin");
    let bob_token = gate.member_with_token("bob", "member");
    let root_token = gate.run(&["token", "create", "--user", "root"]);
    let (server, url) = gate.serve();
    let ca = gate.dir().join("data/tls/ca.crt");
    let at = |cluster: u64, token: &str| {
        Kubectl::new(
            &format!("{url}/pipeline/api/v1/orgs/1/clusters/{cluster}/proxy"),
            token,
            &ca,
        )
    };
    let (alice, bob, alice_plain) = (at(1, &alice_token), at(1, &bob_token), at(2, &alice_token));

    // kubectl auth whoami: the person, their org role as a group, the request id
    let me = whoami(&alice, &[]);
    let info = &me["status"]["userInfo"];
    assert_eq!(info["username"], "alice", "{me}");
    assert_eq!(
        info["groups"],
        json!(["system:authenticated", "kubegate:org:1:admin"]),
        "{me}"
    );
    let request_id = info["extra"]["kubegate.io/request-id"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!request_id.is_empty());
    let bob_me = whoami(&bob, &[]);
    assert_eq!(bob_me["status"]["userInfo"]["username"], "bob");
    assert_eq!(
        bob_me["status"]["userInfo"]["groups"][1],
        "kubegate:org:1:member"
    );

    // the cluster's RBAC decides: kubegate's policy lets bob read pods, the cluster does
    // not until its rules say so
    let out = bob.run(&["get", "pods"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("pods is forbidden: User \"bob\" cannot list resource \"pods\""),
        "{err}"
    );
    api.grant(
        "kubegate:org:1:member",
        &["get", "list", "watch"],
        &["pods"],
    );
    assert!(bob.ok(&["get", "pods"]).contains("web"));

    // kubectl --as: refused by the default policy, even for an admin (kubectl's discovery
    // hides the message of a 403; --raw shows it)
    // (--raw paths start at the host, before the cluster's prefix)
    let raw_pods = |cluster: u64| {
        format!("/pipeline/api/v1/orgs/1/clusters/{cluster}/proxy/api/v1/namespaces/default/pods")
    };
    let (pods1, pods2) = (raw_pods(1), raw_pods(2));
    let pods = ["get", "--raw", pods1.as_str()];
    let out = alice.run(&[&pods[..], &["--as", "carol"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("user \"alice\" may not impersonate user \"carol\" in org 1"),
        "{err}"
    );
    // a system: name is refused whatever the policy
    let out = alice.run(&[&pods[..], &["--as", "system:admin"]].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never impersonates"));

    // granted: the deny lines go, and admins may then impersonate
    let granted: String = std::fs::read_to_string(policy.path())
        .unwrap()
        .lines()
        .filter(|l| !l.contains("impersonate, deny"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(policy.path(), granted).unwrap();
    let (answer, _) = raw::exchange(
        &gate.http_url().unwrap(),
        format!(
            "POST /pipeline/api/v1/admin/policy/reload HTTP/1.1\r\nHost: kubegate\r\n\
             Authorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            root_token.trim()
        )
        .as_bytes(),
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let carol = whoami(&alice, &["--as", "carol", "--as-group", "auditors"]);
    assert_eq!(carol["status"]["userInfo"]["username"], "carol", "{carol}");
    assert_eq!(
        carol["status"]["userInfo"]["groups"],
        json!(["auditors", "system:authenticated"])
    );
    // ... but not on a cluster that does not impersonate
    let out = alice_plain.run(&["get", "--raw", pods2.as_str(), "--as", "carol"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cluster 2 of org 1 does not impersonate"),
        "{err}"
    );

    // exec and port-forward carry the person (the cluster's rules allow the admins)
    api.grant("kubegate:org:1:admin", &["*"], &["*"]);
    api.clear_requests();
    assert_eq!(alice.ok(&["exec", "web", "--", "echo", "hi"]), "hi\n");
    let pod_port = echo_server();
    let mut forward = port_forward_round_trips(alice.command(&[
        "port-forward",
        "pod/web",
        &format!(":{pod_port}"),
    ]));
    let _ = forward.kill();
    let _ = forward.wait();
    let upgrades: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/exec") || r.path.ends_with("/portforward"))
        .collect();
    assert!(upgrades.iter().any(|r| r.path.ends_with("/exec")));
    assert!(upgrades.iter().any(|r| r.path.ends_with("/portforward")));
    for upgrade in &upgrades {
        assert_eq!(
            upgrade.header("impersonate-user"),
            Some("alice"),
            "{upgrade:?}"
        );
        assert_eq!(upgrade.identity.user(), Some("alice"));
        assert_eq!(upgrade.status, Some(101), "{upgrade:?}");
    }

    // a cluster with impersonation off: kubegate's own identity, as before
    let plain_me = whoami(&alice_plain, &[]);
    assert_eq!(plain_me["status"]["userInfo"]["username"], "kubegate");

    // the audit trail names the person and whom they acted as
    let mut server = server;
    server.signal("TERM");
    assert!(wait_exit(&mut server.0, Duration::from_secs(20)).success());
    let audit = gate.audit();
    let acted = audit
        .iter()
        .find(|e| e["acting_as"]["user"] == "carol" && e["status"] == 201)
        .expect("an event of alice acting as carol");
    assert_eq!(acted["user"], "alice");
    assert_eq!(acted["acting_as"]["groups"], json!(["auditors"]));
    let refused = audit
        .iter()
        .find(|e| e["acting_as"]["user"] == "carol" && e["status"] == 403)
        .expect("the refused --as is recorded");
    assert!(refused["reason"]
        .as_str()
        .unwrap()
        .contains("may not impersonate"));
    assert!(audit.iter().any(|e| e["request_id"] == request_id.as_str()));
}
