//! Policies and memberships in PostgreSQL, shared by two kubegate replicas.

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::gateway::TestGateway;
use common::postgres::TestDatabase;
use kubegate::config::PolicyStorage;
use serde_json::{json, Value};

async fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> u16 {
    let req = awc::Client::default()
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    let res = match body {
        Some(body) => req.send_json(&body).await,
        None => req.send().await,
    }
    .expect("kubegate answers");
    res.status().as_u16()
}

/// Polls until `url` answers `want` for `token`, for at most 5 s; returns how long it took.
async fn converges(method: &str, url: &str, token: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        if call(method, url, token, None).await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{method} {url} never answered {want}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn replica(db: &TestDatabase, api: &ApiServer, key_from: Option<&TestGateway>) -> TestGateway {
    let url = db.url.clone();
    let key = key_from.map(|gw| gw.config.auth.signing_key_file.clone());
    let mut builder = TestGateway::builder()
        .configure(move |c| {
            c.policy.storage = PolicyStorage::Postgres;
            c.policy.postgres_url = Some(url);
            c.policy.global_admins = vec!["root".into()];
            if let Some(key) = key {
                c.auth.signing_key_file = key;
            }
        })
        .cluster(1, "dev", &api.kubeconfig_with_client_cert());
    if key_from.is_none() {
        builder = builder
            .member(1, "alice", "admin")
            .member(1, "bob", "member");
    }
    builder.start()
}

#[actix_rt::test]
async fn the_policy_is_imported_once_and_enforced_from_postgres() {
    let db = TestDatabase::create();
    let api = ApiServer::start();
    let gw = replica(&db, &api, None);
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    assert_eq!(call("GET", &pods, &gw.token("bob"), None).await, 200);
    assert_eq!(
        call("DELETE", &format!("{pods}/x"), &gw.token("bob"), None).await,
        403
    );
    assert_eq!(
        call("DELETE", &format!("{pods}/x"), &gw.token("alice"), None).await,
        404
    );
    // the rows are Casbin's usual ones
    let (code, body) = {
        let mut res = awc::Client::default()
            .get(format!("{}/pipeline/api/v1/orgs/1/members", gw.url))
            .bearer_auth(gw.token("alice"))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!([{"user": "alice", "role": "admin"}, {"user": "bob", "role": "member"}])
    );
    drop(gw);
    // a second start does not import again
    let again = replica(&db, &api, None);
    let mut res = awc::Client::default()
        .get(format!("{}/metrics", again.url))
        .send()
        .await
        .unwrap();
    let metrics = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(metrics.contains("kubegate_policy_rules 12"), "{metrics}");
}

#[actix_rt::test]
async fn two_replicas_converge_on_memberships_and_policy_edits() {
    let db = TestDatabase::create();
    let api = ApiServer::start();
    let a = replica(&db, &api, None);
    let b = replica(&db, &api, Some(&a));
    let (alice, bob, carol) = (a.token("alice"), a.token("bob"), a.token("carol"));
    let pods_b = b.proxy_url(1, 1, "/api/v1/namespaces/default/pods");

    // a membership made on one replica reaches the other
    assert_eq!(call("GET", &pods_b, &carol, None).await, 403);
    let member = format!("{}/pipeline/api/v1/orgs/1/members/carol", a.url);
    assert_eq!(
        call("PUT", &member, &alice, Some(json!({"role": "member"}))).await,
        200
    );
    let took = converges("GET", &pods_b, &carol, 200).await;
    println!("membership reached the other replica in {took:?}");
    // and its removal on the other replica reaches the first
    assert_eq!(
        call(
            "DELETE",
            &format!("{}/pipeline/api/v1/orgs/1/members/carol", b.url),
            &alice,
            None
        )
        .await,
        200
    );
    converges(
        "GET",
        &a.proxy_url(1, 1, "/api/v1/namespaces/default/pods"),
        &carol,
        403,
    )
    .await;

    // a policy edit made in the database reaches both without a reload
    let secrets = |gw: &TestGateway| gw.proxy_url(1, 1, "/api/v1/namespaces/default/secrets");
    assert_eq!(call("GET", &secrets(&a), &bob, None).await, 403);
    db.execute("DELETE FROM casbin_rule WHERE ptype = 'p' AND v2 LIKE '%secrets%'");
    converges("GET", &secrets(&a), &bob, 200).await;
    converges("GET", &secrets(&b), &bob, 200).await;

    // a reload on one replica makes the others reload too
    let reloads = |gw: &TestGateway| {
        let url = format!("{}/metrics", gw.url);
        async move {
            let mut res = awc::Client::default().get(url).send().await.unwrap();
            let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("kubegate_policy_reloads_total "))
                .map(|n| n.parse::<u64>().unwrap())
                .unwrap()
        }
    };
    let before = reloads(&b).await;
    let reload = format!("{}/pipeline/api/v1/admin/policy/reload", a.url);
    assert_eq!(call("POST", &reload, &a.token("root"), None).await, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(&b).await == before {
        assert!(
            Instant::now() < deadline,
            "the other replica did not reload"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}
