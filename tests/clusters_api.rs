//! The cluster REST API and the registry's lifecycle behind it.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::apiserver::ApiServer;
use common::gateway::TestGateway;
use common::http::{call, client};
use common::openapi::assert_documented;
use futures_util::StreamExt;
use kubegate_actors::kubeconfig::{self, KubeconfigRules};
use serde_json::json;

fn setup() -> (ApiServer, TestGateway) {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .start();
    (api, gw)
}

fn clusters_url(gw: &TestGateway, org: u64) -> String {
    format!("{}/pipeline/api/v1/orgs/{org}/clusters", gw.url)
}

#[actix_rt::test]
async fn create_list_get_update_delete_with_every_error() {
    let (api, gw) = setup();
    let (alice, bob, mallory) = (gw.token("alice"), gw.token("bob"), gw.token("mallory"));
    let url = clusters_url(&gw, 1);
    let kubeconfig = api.kubeconfig_with_client_cert();

    // create, with YAML and with base64
    let (code, dev) = call(
        "POST",
        &url,
        Some(&alice),
        Some(json!({"name": "dev", "kubeconfig": kubeconfig})),
    )
    .await;
    assert_eq!(code, 201, "{dev}");
    assert_documented("POST", "/pipeline/api/v1/orgs/{org}/clusters", 201, &dev);
    assert_eq!(
        (dev["id"].as_u64(), dev["name"].as_str()),
        (Some(1), Some("dev"))
    );
    assert_eq!(dev["server"], api.url());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&kubeconfig);
    let (code, prod) = call(
        "POST",
        &url,
        Some(&alice),
        Some(json!({"name": "prod", "kubeconfig": b64})),
    )
    .await;
    assert_eq!((code, prod["id"].as_u64()), (201, Some(2)));

    // errors that say what to fix
    let exec = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: 'https://10.0.0.1'}\nusers:\n- name: u\n  user:\n    exec: {command: aws, apiVersion: client.authentication.k8s.io/v1}\n";
    let cases = [
        (
            json!({"name": "eks", "kubeconfig": exec}),
            400,
            "users[u].user.exec",
        ),
        (
            json!({"name": "Bad Name", "kubeconfig": kubeconfig}),
            400,
            "cluster name",
        ),
        (
            json!({"name": "x", "kubeconfig": "::: not yaml"}),
            400,
            "invalid kubeconfig",
        ),
        (json!({"name": "x"}), 400, "missing field `kubeconfig`"),
        (
            json!({"name": "dev", "kubeconfig": kubeconfig}),
            409,
            "exists already",
        ),
    ];
    for (body, want, says) in cases {
        let (code, error) = call("POST", &url, Some(&alice), Some(body.clone())).await;
        assert_eq!(code, want, "{body}: {error}");
        assert_eq!(error["code"], want);
        assert_documented("POST", "/pipeline/api/v1/orgs/{org}/clusters", want, &error);
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }

    // list and get show no credentials, to members too
    let (code, list) = call("GET", &url, Some(&bob), None).await;
    assert_eq!(code, 200);
    assert_documented("GET", "/pipeline/api/v1/orgs/{org}/clusters", 200, &list);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let text = list.to_string();
    for secret in [&api.pki().client_key_pem, &b64] {
        assert!(
            !text.contains(secret.lines().nth(1).unwrap_or(secret)),
            "credentials leaked: {text}"
        );
    }
    assert!(!text.contains("client-key-data") && !text.contains("kubeconfig"));
    let (code, one) = call("GET", &format!("{url}/2"), Some(&bob), None).await;
    assert_eq!((code, one["name"].as_str()), (200, Some("prod")));
    assert_documented(
        "GET",
        "/pipeline/api/v1/orgs/{org}/clusters/{id}",
        200,
        &one,
    );
    let (code, missing) = call("GET", &format!("{url}/9"), Some(&bob), None).await;
    assert_eq!(code, 404);
    assert_documented(
        "GET",
        "/pipeline/api/v1/orgs/{org}/clusters/{id}",
        404,
        &missing,
    );
    assert_eq!(
        call("GET", &format!("{url}/9"), Some(&bob), None).await.0,
        404
    );
    assert_eq!(
        call("GET", &format!("{url}/x"), Some(&bob), None).await.0,
        400
    );

    // members may not change anything; strangers see nothing; no token is a 401
    assert_eq!(
        call(
            "POST",
            &url,
            Some(&bob),
            Some(json!({"name": "b", "kubeconfig": kubeconfig}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call("DELETE", &format!("{url}/1"), Some(&bob), None)
            .await
            .0,
        403
    );
    assert_eq!(call("GET", &url, Some(&mallory), None).await.0, 403);
    assert_eq!(call("GET", &url, None, None).await.0, 401);

    // update and delete
    let (code, updated) = call(
        "PUT",
        &format!("{url}/2"),
        Some(&alice),
        Some(json!({"kubeconfig": kubeconfig})),
    )
    .await;
    assert_eq!(code, 200, "{updated}");
    assert_documented(
        "PUT",
        "/pipeline/api/v1/orgs/{org}/clusters/{id}",
        200,
        &updated,
    );
    assert!(updated["updatedAt"].is_string());
    assert_eq!(
        call(
            "PUT",
            &format!("{url}/9"),
            Some(&alice),
            Some(json!({"kubeconfig": kubeconfig}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            "PUT",
            &format!("{url}/2"),
            Some(&alice),
            Some(json!({"kubeconfig": exec}))
        )
        .await
        .0,
        400
    );
    let (code, deleted) = call("DELETE", &format!("{url}/2"), Some(&alice), None).await;
    assert_eq!(code, 200);
    assert_documented(
        "DELETE",
        "/pipeline/api/v1/orgs/{org}/clusters/{id}",
        200,
        &deleted,
    );
    assert_eq!(
        call("DELETE", &format!("{url}/2"), Some(&alice), None)
            .await
            .0,
        404
    );

    // the REST calls are audited too
    let denied = gw.wait_audit(|e| e["user"] == "bob" && e["verb"] == "delete");
    assert_eq!(
        (denied["status"].as_u64(), denied["decision"].as_str()),
        (Some(403), Some("deny"))
    );
}

#[actix_rt::test]
async fn delete_and_update_evict_the_proxy() {
    let (api, gw) = setup();
    let alice = gw.token("alice");
    let url = clusters_url(&gw, 1);
    let (code, _) = call(
        "POST",
        &url,
        Some(&alice),
        Some(json!({"name": "dev", "kubeconfig": api.kubeconfig_with_client_cert()})),
    )
    .await;
    assert_eq!(code, 201);
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    assert_eq!(call("GET", &pods, Some(&alice), None).await.0, 200);
    assert_eq!(
        api.requests().last().unwrap().identity.user(),
        Some("kubegate")
    );

    // a watch opened with the old credentials
    let mut watch = client()
        .get(format!("{pods}?watch=true"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status().as_u16(), 200);

    // new credentials: the next request uses them
    let (cert, key) = api.pki().issue_client_cert("second-identity", None);
    let (code, _) = call(
        "PUT",
        &format!("{url}/1"),
        Some(&alice),
        Some(json!({"kubeconfig": api.kubeconfig_with_cert(&cert, &key)})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(call("GET", &pods, Some(&alice), None).await.0, 200);
    assert_eq!(
        api.requests().last().unwrap().identity.user(),
        Some("second-identity")
    );

    // impersonation on, alone: the next request reaches the cluster as the person
    api.grant(
        "second-identity",
        &["impersonate"],
        &["users", "groups", "userextras/kubegate.io/request-id"],
    );
    api.grant("alice", &["list"], &["pods"]);
    let (code, view) = call(
        "PUT",
        &format!("{url}/1"),
        Some(&alice),
        Some(json!({"impersonate": true})),
    )
    .await;
    assert_eq!((code, &view["impersonate"]), (200, &json!(true)), "{view}");
    assert_eq!(call("GET", &pods, Some(&alice), None).await.0, 200);
    let seen = api.requests().last().unwrap().clone();
    assert_eq!(seen.identity.user(), Some("alice"));
    assert_eq!(
        seen.header("impersonate-group"),
        Some("system:authenticated")
    );
    for (body, says) in [
        (json!({}), "nothing to change"),
        (
            json!({"context": "other"}),
            "context: give it with the kubeconfig",
        ),
        (json!({"impersonate": "yes"}), "expected a boolean"),
    ] {
        let (code, error) =
            call("PUT", &format!("{url}/1"), Some(&alice), Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {error}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    let (code, view) = call(
        "PUT",
        &format!("{url}/1"),
        Some(&alice),
        Some(json!({"impersonate": false})),
    )
    .await;
    assert_eq!((code, &view["impersonate"]), (200, &json!(false)));
    assert_eq!(call("GET", &pods, Some(&alice), None).await.0, 200);
    assert_eq!(
        api.requests().last().unwrap().identity.user(),
        Some("second-identity")
    );

    // the stream opened before the update may finish
    api.put_object("default", "pods", json!({"metadata": {"name": "after-update"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}));
    let chunk = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("after-update"));

    // deleted: the next request is a 404
    assert_eq!(
        call("DELETE", &format!("{url}/1"), Some(&alice), None)
            .await
            .0,
        200
    );
    let (code, status) = call("GET", &pods, Some(&alice), None).await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["reason"], "NotFound");
}

#[actix_rt::test]
async fn the_callers_kubeconfig_points_at_kubegate_with_their_token() {
    let (api, gw) = setup();
    let alice = gw.token("alice");
    let url = clusters_url(&gw, 1);
    call(
        "POST",
        &url,
        Some(&alice),
        Some(json!({"name": "dev", "kubeconfig": api.kubeconfig_with_client_cert()})),
    )
    .await;
    let bob = gw.token("bob");
    // by default, kubectl's exec plugin and nothing secret
    let mut res = client()
        .get(format!("{url}/1/config"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let yaml = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(yaml.contains("client.authentication.k8s.io/v1"), "{yaml}");
    assert!(
        yaml.contains("credential") && !yaml.contains("token:"),
        "{yaml}"
    );
    assert!(yaml.contains("kubegate-1-dev"), "{yaml}");
    let mut res = client()
        .get(format!("{url}/1/config?credential=nonsense"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let error = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(error.contains("exec") && error.contains("token"), "{error}");
    // with ?credential=token, a new token of theirs
    let mut res = client()
        .get(format!("{url}/1/config?credential=token"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let yaml = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(
        !yaml.contains(
            &base64::engine::general_purpose::STANDARD.encode(&api.pki().client_cert_pem)
        ),
        "no cluster credentials"
    );
    let rules = KubeconfigRules {
        allow_insecure_http: true,
        ..Default::default()
    };
    let spec = kubeconfig::parse(&yaml, None, &rules).expect("a valid kubeconfig");
    assert_eq!(spec.server, gw.proxy_url(1, 1, ""));
    let header = spec.auth.header_value().expect("a token");
    let token = header.trim_start_matches("Bearer ");
    assert_ne!(token, bob, "a new token");
    let (code, _) = call(
        "GET",
        &format!("{}/api/v1/namespaces/default/pods", spec.server),
        Some(token),
        None,
    )
    .await;
    assert_eq!(code, 200, "bob's new token reads through kubegate");
}

#[actix_rt::test]
async fn health_readiness_and_live_proxies() {
    let (api, gw) = setup();
    let alice = gw.token("alice");
    let body = |url: String| async move {
        let mut res = client().get(url).send().await.unwrap();
        (
            res.status().as_u16(),
            String::from_utf8(res.body().await.unwrap().to_vec()).unwrap(),
        )
    };
    assert_eq!(
        body(format!("{}/healthz", gw.url)).await,
        (200, "ok".to_string())
    );
    assert_eq!(
        body(format!("{}/readyz", gw.url)).await,
        (200, "ok".to_string())
    );
    let (_, metrics) = body(format!("{}/metrics", gw.url)).await;
    assert!(
        metrics.contains("kubegate_cluster_proxies_live 0"),
        "{metrics}"
    );
    call(
        "POST",
        &clusters_url(&gw, 1),
        Some(&alice),
        Some(json!({"name": "dev", "kubeconfig": api.kubeconfig_with_client_cert()})),
    )
    .await;
    assert_eq!(
        call("GET", &gw.proxy_url(1, 1, "/version"), Some(&alice), None)
            .await
            .0,
        200
    );
    let (_, metrics) = body(format!("{}/metrics", gw.url)).await;
    assert!(
        metrics.contains("kubegate_cluster_proxies_live 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kubegate_policy_rules 12"), "{metrics}");
}

#[actix_rt::test]
async fn idle_proxies_are_dropped_and_rebuilt_on_demand() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .configure(|c| c.clusters.idle_timeout = Duration::from_millis(200))
        .member(1, "alice", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let alice = gw.token("alice");
    let live = || async {
        let mut res = client()
            .get(format!("{}/metrics", gw.url))
            .send()
            .await
            .unwrap();
        let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("kubegate_cluster_proxies_live "))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        call("GET", &gw.proxy_url(1, 1, "/version"), Some(&alice), None)
            .await
            .0,
        200
    );
    assert_eq!(live().await, "1");
    actix_rt::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(live().await, "0", "dropped after the idle timeout");
    assert_eq!(
        call("GET", &gw.proxy_url(1, 1, "/version"), Some(&alice), None)
            .await
            .0,
        200
    );
    assert_eq!(live().await, "1", "rebuilt on demand");
}

#[actix_rt::test]
async fn the_ssrf_guard_refuses_denied_addresses_when_added_and_when_connecting() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .configure(|c| {
            c.clusters.denied_networks = vec![
                "169.254.0.0/16".parse().unwrap(),
                "127.0.0.0/8".parse().unwrap(),
            ]
        })
        .member(1, "alice", "admin")
        .start();
    let alice = gw.token("alice");
    let url = clusters_url(&gw, 1);
    // an address in a denied range is refused when the cluster is added
    let metadata = api
        .kubeconfig_with_client_cert()
        .replace(api.url(), "https://169.254.169.254");
    let (code, error) = call(
        "POST",
        &url,
        Some(&alice),
        Some(json!({"name": "meta", "kubeconfig": metadata})),
    )
    .await;
    assert_eq!(code, 400);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("cluster.server") && message.contains("169.254.0.0/16"),
        "{message}"
    );
    // a host name is checked each time it is resolved
    let by_name = api
        .kubeconfig_with_client_cert()
        .replace("https://127.0.0.1:", "https://localhost:");
    let (code, created) = call(
        "POST",
        &url,
        Some(&alice),
        Some(json!({"name": "local", "kubeconfig": by_name})),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let (code, status) = call("GET", &gw.proxy_url(1, 1, "/version"), Some(&alice), None).await;
    assert_eq!(code, 502, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("denied network"),
        "{status}"
    );
    assert!(api.requests().is_empty(), "nothing reached the API server");
}

#[actix_rt::test]
async fn allowed_exec_plugins_give_credentials_and_run_again_when_they_expire() {
    let api = ApiServer::builder().token("from-the-plugin").start();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("credential-plugin");
    let runs = dir.path().join("runs");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho run >> \"$RUNS\"\nexpires=$(date -u -d '+3 seconds' +%Y-%m-%dT%H:%M:%SZ)\nprintf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"from-the-plugin\",\"expirationTimestamp\":\"%s\"}}' \"$expires\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&plugin)
        .status()
        .unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      env:\n      - name: RUNS\n        value: {}\n",
        api.url(),
        base64::engine::general_purpose::STANDARD.encode(&api.pki().ca_pem),
        plugin.display(),
        runs.display()
    );
    let allowed = plugin.display().to_string();
    let gw = TestGateway::builder()
        .configure(move |c| c.clusters.allowed_exec_plugins = vec![allowed])
        .member(1, "alice", "admin")
        .cluster(1, "eks-like", &kubeconfig)
        .start();
    let alice = gw.token("alice");
    let runs_so_far = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let version = gw.proxy_url(1, 1, "/version");
    assert_eq!(call("GET", &version, Some(&alice), None).await.0, 200);
    assert_eq!(call("GET", &version, Some(&alice), None).await.0, 200);
    assert_eq!(runs_so_far(), 1, "the credential is reused while valid");
    let seen = api.requests().pop().unwrap();
    assert_eq!(seen.header("authorization"), Some("Bearer from-the-plugin"));
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(call("GET", &version, Some(&alice), None).await.0, 200);
    assert_eq!(runs_so_far(), 2, "an expired credential is fetched again");

    // a plugin that is not allowed is refused when the cluster is added, naming it
    let gw2 = TestGateway::builder().member(1, "alice", "admin").start();
    let (code, error) = call(
        "POST",
        &clusters_url(&gw2, 1),
        Some(&gw2.token("alice")),
        Some(json!({"name": "x", "kubeconfig": kubeconfig})),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("users[u].user.exec"),
        "{error}"
    );
}

/// By default, the SSRF guard keeps link-local addresses and the cloud metadata services
/// out, naming the field, and lets loopback and private ranges in.
#[actix_rt::test]
async fn the_default_ssrf_guard_refuses_metadata_services() {
    let api = ApiServer::start();
    let gw = TestGateway::builder().member(1, "alice", "admin").start();
    let alice = gw.token("alice");
    let url = clusters_url(&gw, 1);
    for (i, server) in [
        "https://169.254.169.254",
        "https://[fe80::1]:6443",
        "https://[fd00:ec2::254]",
        "https://100.100.100.200",
    ]
    .into_iter()
    .enumerate()
    {
        let kubeconfig = api.kubeconfig_with_client_cert().replace(api.url(), server);
        let (code, error) = call(
            "POST",
            &url,
            Some(&alice),
            Some(json!({"name": format!("meta-{i}"), "kubeconfig": kubeconfig})),
        )
        .await;
        assert_eq!(code, 400, "{server}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("cluster.server") && message.contains("denied"),
            "{server}: {message}"
        );
    }
    for (i, server) in ["https://10.1.2.3:6443", "https://192.168.5.6"]
        .into_iter()
        .enumerate()
    {
        let kubeconfig = api.kubeconfig_with_client_cert().replace(api.url(), server);
        let (code, created) = call(
            "POST",
            &url,
            Some(&alice),
            Some(json!({"name": format!("private-{i}"), "kubeconfig": kubeconfig})),
        )
        .await;
        assert_eq!(code, 201, "{server}: {created}");
    }
    // (private addresses are only stored, never connected to: no traffic leaves the
    // machine) and loopback is allowed: the stand-in is on 127.0.0.1
    let local = api.kubeconfig_with_client_cert();
    let (code, created) = call(
        "POST",
        &url,
        Some(&alice),
        Some(json!({"name": "local", "kubeconfig": local})),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_u64().unwrap();
    let (code, version) = call("GET", &gw.proxy_url(1, id, "/version"), Some(&alice), None).await;
    assert_eq!(code, 200, "{version}");
}
