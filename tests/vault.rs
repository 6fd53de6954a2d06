//! Clusters in Vault: the store against a real OpenBao server, and kubegate using it.

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::gateway::{block_on, TestGateway};
use common::vault::{free_port, Bao};
use kubegate::config::{StoreKind, VaultConfig};
use kubegate_actors::store::{ClusterChange, ClusterRecord, ClusterStore, StoreError};
use kubegate_actors::store::{VaultAuth, VaultClusterStore, VaultSettings};
use secrecy::SecretString;
use serde_json::{json, Value};

fn settings(bao: &Bao, auth: VaultAuth) -> VaultSettings {
    VaultSettings {
        address: bao.address.clone(),
        mount: "secret".into(),
        prefix: "kubegate".into(),
        auth,
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn the_store_keeps_clusters_in_vault_kv2() {
    let bao = Bao::start();
    let settings = settings(
        &bao,
        VaultAuth::Token(SecretString::from("root".to_string())),
    );
    let (records, listed, updated, deleted, again, duplicate) = block_on(move || async move {
        let store = VaultClusterStore::connect(settings).await.unwrap();
        // ten writers at once: ten different ids
        let creates = (0..10).map(|i| {
            let store = store.clone();
            async move {
                store
                    .create(&ClusterRecord::new(
                        1,
                        0,
                        &format!("c{i}"),
                        "kubeconfig-yaml",
                        None,
                    ))
                    .await
                    .unwrap()
            }
        });
        let records = futures_util::future::join_all(creates).await;
        let listed = store.list(1).await.unwrap();
        let updated = store
            .update(
                1,
                3,
                ClusterChange {
                    kubeconfig: Some(("new-kubeconfig", Some("ctx"))),
                    impersonate: None,
                    record_sessions: None,
                },
            )
            .await
            .unwrap()
            .unwrap();
        let deleted = store.delete(1, 3).await.unwrap();
        let again = (
            store.delete(1, 3).await.unwrap(),
            store.get(1, 3).await.unwrap().is_none(),
        );
        // the concurrent creates took ids in any order: use the name that got id 2 (kept)
        let kept = listed.iter().find(|r| r.id == 2).unwrap().name.clone();
        let duplicate = matches!(
            store
                .create(&ClusterRecord::new(1, 0, &kept, "x", None))
                .await,
            Err(StoreError::DuplicateName(_))
        );
        (records, listed, updated, deleted, again, duplicate)
    });
    let mut ids: Vec<u64> = records.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=10).collect::<Vec<_>>(),
        "concurrent creates never share an id"
    );
    assert_eq!(listed.len(), 10);
    assert_eq!(
        (updated.kubeconfig.as_str(), updated.context.as_deref()),
        ("new-kubeconfig", Some("ctx"))
    );
    assert!(deleted);
    assert_eq!(again, (false, true));
    assert!(duplicate);
    // the record is where the documentation says, and deleted means every version
    let (code, body) = bao.api("GET", "secret/data/kubegate/orgs/1/clusters/2", None);
    assert_eq!(code, 200);
    assert_eq!(body["data"]["data"]["kubeconfig"], "kubeconfig-yaml");
    assert_eq!(
        bao.api("GET", "secret/metadata/kubegate/orgs/1/clusters/3", None)
            .0,
        404
    );
}

#[test]
fn approle_login_and_token_renewal() {
    let bao = Bao::start();
    // tokens that live 3 s unless renewed, at most a minute
    let settings = settings(&bao, approle(&bao, "3s"));
    let (early, late) = block_on(move || async move {
        let store = VaultClusterStore::connect(settings).await.unwrap();
        actix_rt::spawn(store.clone().keep_alive());
        let early = store
            .create(&ClusterRecord::new(7, 0, "dev", "kc", None))
            .await
            .map(|r| r.id);
        // well past the 3 s lifetime: only renewal keeps the token valid
        actix_rt::time::sleep(Duration::from_secs(7)).await;
        let late = store.get(7, 1).await.map(|r| r.map(|r| r.name));
        (early, late)
    });
    assert_eq!(early.unwrap(), 1);
    assert_eq!(late.unwrap().as_deref(), Some("dev"));
}

fn vault_config(bao: &Bao, dir: &std::path::Path) -> VaultConfig {
    let token_file = dir.join("vault-token");
    std::fs::write(&token_file, &bao.root_token).unwrap();
    toml::from_str(&format!(
        "address = \"{}\"\ntoken_file = \"{}\"\n",
        bao.address,
        token_file.display()
    ))
    .unwrap()
}

fn client() -> awc::Client {
    awc::Client::builder().disable_timeout().finish()
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let mut res = client().get(url).bearer_auth(token).send().await.unwrap();
    let bytes = res.body().await.unwrap();
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// kubegate with its clusters in `bao`, alice admin of org 1, clusters registered.
fn gateway(bao: &Bao, api: &ApiServer, clusters: usize) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let vault = vault_config(bao, dir.path());
    let mut builder = TestGateway::builder()
        .configure(move |c| {
            c.store.kind = StoreKind::Vault;
            c.store.vault = Some(vault);
        })
        .member(1, "alice", "admin");
    for i in 0..clusters {
        builder = builder.cluster(1, &format!("c{i}"), &api.kubeconfig_with_client_cert());
    }
    (builder.start(), dir)
}

#[actix_rt::test]
async fn kubegate_serves_clusters_kept_in_vault_and_nothing_secret_touches_the_disk() {
    let bao = Bao::start();
    let api = ApiServer::start();
    let (gw, _dir) = gateway(&bao, &api, 0);
    let alice = gw.token("alice");
    let url = format!("{}/pipeline/api/v1/orgs/1/clusters", gw.url);
    let mut res = client()
        .post(&url)
        .bearer_auth(&alice)
        .send_json(&json!({"name": "dev", "kubeconfig": api.kubeconfig_with_client_cert()}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{:?}", res.body().await);
    assert_eq!(
        get(
            &gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods"),
            &alice
        )
        .await
        .0,
        200
    );
    let (code, body) = bao.api("GET", "secret/data/kubegate/orgs/1/clusters/1", None);
    assert_eq!(code, 200);
    assert_eq!(body["data"]["data"]["name"], "dev");
    // the kubeconfig is nowhere under the data directory
    let key_line = api.pki().client_key_pem.lines().nth(1).unwrap().to_string();
    for entry in walk(&gw.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("client-key-data") && !text.contains(&key_line),
            "{} holds a secret",
            entry.display()
        );
    }
    assert!(!gw.data_dir().join("orgs").exists());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[actix_rt::test]
async fn a_hundred_concurrent_first_requests_read_vault_once() {
    let bao = Bao::start();
    let api = ApiServer::start();
    let (gw, _dir) = gateway(&bao, &api, 1);
    let alice = gw.token("alice");
    let path = "secret/data/kubegate/orgs/1/clusters/1";
    let reads = || {
        bao.audited_requests()
            .iter()
            .filter(|e| e["request"]["path"] == path)
            .count()
    };
    let before = reads();
    let url = gw.proxy_url(1, 1, "/version");
    let requests = (0..100).map(|_| {
        let (url, alice) = (url.clone(), alice.clone());
        async move { get(&url, &alice).await.0 }
    });
    let codes = futures_util::future::join_all(requests).await;
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
    assert_eq!(
        reads() - before,
        1,
        "one Vault read for 100 concurrent first requests"
    );
}

#[actix_rt::test]
async fn while_vault_is_sealed_built_proxies_serve_and_new_ones_get_503() {
    let bao = Bao::start();
    let api = ApiServer::start();
    let (gw, _dir) = gateway(&bao, &api, 2);
    let alice = gw.token("alice");
    let (first, second) = (
        gw.proxy_url(1, 1, "/version"),
        gw.proxy_url(1, 2, "/version"),
    );
    assert_eq!(get(&first, &alice).await.0, 200);

    bao.seal();
    assert_eq!(
        get(&first, &alice).await.0,
        200,
        "a built proxy keeps serving"
    );
    let (code, status) = get(&second, &alice).await;
    assert_eq!(code, 503, "{status}");
    assert_eq!(status["kind"], "Status");
    assert!(
        status["message"].as_str().unwrap().contains("Vault"),
        "{status}"
    );
    let mut ready = client()
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let report: Value = ready.json().await.unwrap();
    assert!(
        report["problems"][0].as_str().unwrap().contains("sealed"),
        "{report}"
    );

    bao.unseal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = get(&second, &alice).await;
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubegate recovers when Vault is back"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = client()
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

#[test]
fn tokens_and_revocations_in_vault() {
    use kubegate_actors::store::{epoch_now, TokenRecord, TokenStore};
    let bao = Bao::start();
    let settings = settings(
        &bao,
        VaultAuth::Token(SecretString::from("root".to_string())),
    );
    let (listed, stranger, revoked, after, claims) = block_on(move || async move {
        let store = VaultClusterStore::connect(settings).await.unwrap();
        let later = epoch_now() + 3600;
        for i in 0..20 {
            let record = TokenRecord {
                id: format!("t{i}"),
                user: if i % 2 == 0 {
                    "dex:alice"
                } else {
                    "github:bob"
                }
                .into(),
                name: format!("token {i}"),
                created_at: epoch_now(),
                expires_at: later,
                revoked_at: None,
                session: false,
            };
            TokenStore::add(store.as_ref(), &record).await.unwrap();
        }
        let listed = TokenStore::list(store.as_ref(), "dex:alice").await.unwrap();
        let stranger = store.revoke("github:bob", "t0").await.unwrap();
        // twenty revocations at once, from "replicas" racing on one list: none is lost
        let revokes = (0..20).map(|i| {
            let store = store.clone();
            async move {
                let user = if i % 2 == 0 {
                    "dex:alice"
                } else {
                    "github:bob"
                };
                store.revoke(user, &format!("t{i}")).await.unwrap().unwrap()
            }
        });
        futures_util::future::join_all(revokes).await;
        store.revoke_id("session-1", later).await.unwrap();
        store.revoke_id("ended-long-ago", 5).await.unwrap();
        // a used login state claimed by ten "replicas" at once: one of them gets it
        let claims = (0..10).map(|_| {
            let store = store.clone();
            async move { store.claim_id("login-state:x", later).await.unwrap() }
        });
        let claims = futures_util::future::join_all(claims).await;
        let revoked = store.revoked().await.unwrap();
        let after = TokenStore::list(store.as_ref(), "dex:alice").await.unwrap();
        // a kubectl device login: waiting, then approved (replaced); an expired one is gone
        store
            .put_grant("device:AB", "pending", later)
            .await
            .unwrap();
        store
            .put_grant("device:AB", "approved", later)
            .await
            .unwrap();
        store.put_grant("device:old", "pending", 5).await.unwrap();
        assert_eq!(
            store.get_grant("device:AB").await.unwrap().as_deref(),
            Some("approved")
        );
        assert_eq!(store.get_grant("device:old").await.unwrap(), None);
        assert_eq!(store.get_grant("device:none").await.unwrap(), None);
        (listed, stranger, revoked, after, claims)
    });
    assert_eq!(
        claims.iter().filter(|won| **won).count(),
        1,
        "a state is claimed once: {claims:?}"
    );
    assert_eq!(listed.len(), 10, "alice's tokens only");
    assert!(listed.iter().all(|t| t.user == "dex:alice"));
    assert_eq!(stranger, None, "bob cannot revoke alice's token");
    assert_eq!(revoked.len(), 22, "every revocation kept: {revoked:?}");
    assert!(revoked.contains_key("login-state:x"));
    assert!(revoked.contains_key("session-1") && !revoked.contains_key("ended-long-ago"));
    assert!(after.iter().all(|t| t.revoked_at.is_some()));
    // one secret that replicas poll
    let (code, body) = bao.api("GET", "secret/data/kubegate/revoked", None);
    assert_eq!(code, 200);
    assert!(body["data"]["data"]["t7"].is_u64(), "{body}");
}

/// kubegate with its clusters in a Vault configured by `vault_toml` (which need not run
/// yet), alice admin of org 1.
fn gateway_with_vault(vault_toml: &str) -> TestGateway {
    let vault: VaultConfig = toml::from_str(vault_toml).unwrap();
    TestGateway::builder()
        .configure(move |c| {
            c.store.kind = StoreKind::Vault;
            c.store.vault = Some(vault);
        })
        .member(1, "alice", "admin")
        .start()
}

/// The policy kubegate's logins get, and cluster 1 of org 1 ("dev", on `api`) in KV.
fn kubegate_policy_and_cluster(bao: &Bao, api: &ApiServer) {
    let policy =
        r#"path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }"#;
    assert_eq!(
        bao.api(
            "PUT",
            "sys/policies/acl/kubegate",
            Some(json!({"policy": policy}))
        )
        .0,
        204
    );
    let record = kubegate_actors::store::ClusterRecord::new(
        1,
        1,
        "dev",
        &api.kubeconfig_with_client_cert(),
        None,
    );
    let (code, body) = bao.api(
        "POST",
        "secret/data/kubegate/orgs/1/clusters/1",
        Some(json!({ "data": record })),
    );
    assert_eq!(code, 200, "{body}");
}

/// Waits until `url` answers 200 (at most `within`), and returns its body.
async fn until_200(url: &str, token: &str, within: Duration, what: &str) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = get(url, token).await;
        if code == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: still {code} {body}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 503 saying Vault is unavailable.
fn assert_vault_unavailable(code: u16, status: &Value) {
    assert_eq!(code, 503, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Vault"),
        "{status}"
    );
}

#[actix_rt::test]
async fn kubegate_started_while_vault_is_down_logs_in_with_approle_once_it_is_up() {
    const ROLE_ID: &str = "kubegate-role-id";
    const SECRET_ID: &str = "kubegate-secret-id";
    let port = free_port();
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let secret_id_file = dir.path().join("secret-id");
    std::fs::write(&secret_id_file, SECRET_ID).unwrap();
    let gw = gateway_with_vault(&format!(
        "address = \"http://127.0.0.1:{port}\"\nauth = \"approle\"\nrole_id = \"{ROLE_ID}\"\n\
         secret_id_file = \"{}\"\n",
        secret_id_file.display()
    ));
    let alice = gw.token("alice");
    let clusters = format!("{}/pipeline/api/v1/orgs/1/clusters", gw.url);
    let (code, status) = get(&clusters, &alice).await;
    assert_vault_unavailable(code, &status);
    let (code, status) = get(&gw.proxy_url(1, 1, "/version"), &alice).await;
    assert_vault_unavailable(code, &status);

    // now Vault starts, with the role and secret id kubegate was given, and the data
    let bao = Bao::start_on(port);
    assert_eq!(
        bao.api("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .0,
        204
    );
    kubegate_policy_and_cluster(&bao, &api);
    let role = "auth/approle/role/kubegate";
    let (code, body) = bao.api(
        "POST",
        role,
        Some(json!({"token_policies": ["kubegate"], "token_ttl": "60s"})),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = bao.api(
        "POST",
        &format!("{role}/role-id"),
        Some(json!({"role_id": ROLE_ID})),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = bao.api(
        "POST",
        &format!("{role}/custom-secret-id"),
        Some(json!({"secret_id": SECRET_ID})),
    );
    assert_eq!(code, 200, "{body}");

    // no restart: kubegate logs in by itself within its longest retry wait (5 s)
    let listed = until_200(
        &clusters,
        &alice,
        Duration::from_secs(10),
        "kubegate logs in once Vault is up",
    )
    .await;
    assert_eq!(listed[0]["name"], "dev", "{listed}");
    until_200(
        &gw.proxy_url(1, 1, "/version"),
        &alice,
        Duration::from_secs(2),
        "the cluster in Vault is served",
    )
    .await;
    assert!(
        bao.audited_requests()
            .iter()
            .any(|e| e["request"]["path"] == "auth/approle/login"),
        "kubegate logged in with AppRole"
    );
}

#[actix_rt::test]
async fn kubegate_started_while_vault_is_down_renews_its_token_once_vault_is_up() {
    const TOKEN: &str = "kubegate-renewable-token";
    // longer than kubegate's longest retry wait (5 s), so that it finds the token alive
    const TTL: Duration = Duration::from_secs(10);
    let port = free_port();
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let gw = gateway_with_vault(&format!(
        "address = \"http://127.0.0.1:{port}\"\nauth = \"token\"\ntoken_file = \"{}\"\n",
        token_file.display()
    ));
    let alice = gw.token("alice");
    let clusters = format!("{}/pipeline/api/v1/orgs/1/clusters", gw.url);
    let (code, status) = get(&clusters, &alice).await;
    assert_vault_unavailable(code, &status);

    // now Vault starts, with kubegate's token: renewable, valid for TTL unless renewed
    let bao = Bao::start_on(port);
    let (code, body) = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({
            "id": TOKEN,
            "policies": ["kubegate"],
            "ttl": format!("{}s", TTL.as_secs()),
            "explicit_max_ttl": "5m",
            "renewable": true,
        })),
    );
    let created = Instant::now();
    assert_eq!(code, 200, "{body}");
    kubegate_policy_and_cluster(&bao, &api);

    until_200(
        &clusters,
        &alice,
        Duration::from_secs(10),
        "kubegate uses its token once Vault is up",
    )
    .await;
    // well past the token's first lifetime, every request reads Vault and succeeds:
    // kubegate looked the token up and renews it
    while created.elapsed() < TTL + Duration::from_secs(4) {
        let (code, body) = get(&clusters, &alice).await;
        assert_eq!(
            code,
            200,
            "{:?} after the token was created: {body}",
            created.elapsed()
        );
        actix_rt::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        bao.audited_requests()
            .iter()
            .any(|e| e["request"]["path"] == "auth/token/renew-self"),
        "kubegate renewed its token"
    );
    assert_eq!(
        get(&gw.proxy_url(1, 1, "/version"), &alice).await.0,
        200,
        "the cluster in Vault is served"
    );
}

#[test]
fn an_approle_login_that_runs_out_while_vault_is_sealed_is_done_again_once_it_is_unsealed() {
    let bao = std::sync::Arc::new(Bao::start());
    // tokens that live 2 s unless renewed
    let settings = settings(&bao, approle(&bao, "2s"));
    let server = bao.clone();
    let (created, sealed, recovered) = block_on(move || async move {
        let store = VaultClusterStore::connect(settings).await.unwrap();
        actix_rt::spawn(store.clone().keep_alive());
        let created = store
            .create(&ClusterRecord::new(7, 0, "dev", "kc", None))
            .await
            .map(|r| r.id);
        server.seal();
        // past the lease's end: renewals and logins failed, there is no valid login
        actix_rt::time::sleep(Duration::from_secs(4)).await;
        let sealed = store.get(7, 1).await;
        server.unseal();
        let unsealed = Instant::now();
        let recovered = loop {
            match store.get(7, 1).await {
                Ok(record) => break Ok(record.map(|r| r.name)),
                Err(e) if unsealed.elapsed() > Duration::from_secs(8) => break Err(e),
                Err(_) => actix_rt::time::sleep(Duration::from_millis(100)).await,
            }
        };
        (created, sealed, recovered)
    });
    assert_eq!(created.unwrap(), 1);
    let sealed = sealed.unwrap_err();
    assert!(
        matches!(&sealed, StoreError::Unavailable(why)
            if why.contains("sealed") && why.contains("not logged in")),
        "{sealed}"
    );
    assert_eq!(
        recovered.expect("a new login within the longest retry wait (5 s)"),
        Some("dev".to_string())
    );
}

/// Turns on AppRole auth in `bao` with a role `kubegate` whose tokens live `token_ttl`
/// unless renewed (at most a minute) and may use the KV store: the credentials of it.
fn approle(bao: &Bao, token_ttl: &str) -> VaultAuth {
    assert_eq!(
        bao.api("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .0,
        204
    );
    let policy =
        r#"path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }"#;
    assert_eq!(
        bao.api(
            "PUT",
            "sys/policies/acl/kubegate",
            Some(json!({"policy": policy}))
        )
        .0,
        204
    );
    let (code, _) = bao.api(
        "POST",
        "auth/approle/role/kubegate",
        Some(
            json!({"token_policies": ["kubegate"], "token_ttl": token_ttl, "token_max_ttl": "60s"}),
        ),
    );
    assert_eq!(code, 204);
    let role_id = bao.api("GET", "auth/approle/role/kubegate/role-id", None).1["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = bao
        .api("POST", "auth/approle/role/kubegate/secret-id", None)
        .1["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    VaultAuth::AppRole {
        mount: "approle".into(),
        role_id,
        secret_id: SecretString::from(secret_id),
    }
}
