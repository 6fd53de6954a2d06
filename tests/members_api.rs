//! Org members, the caller's orgs, global administrators and the policy reload.

mod common;

use common::apiserver::ApiServer;
use common::gateway::TestGateway;
use common::openapi::assert_documented;
use serde_json::{json, Value};

async fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    common::http::call(method, url, Some(token), body).await
}

/// alice admin and bob member of org 1, dave admin of org 2, root a global administrator;
/// the policy file is a private copy the test may break.
fn setup() -> (ApiServer, TestGateway, tempfile::TempDir) {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.csv");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.csv"),
        &policy,
    )
    .unwrap();
    let gw = TestGateway::builder()
        .configure(move |c| {
            c.policy.policy = Some(policy);
            c.policy.global_admins = vec!["root".into()];
        })
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .member(2, "dave", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    (api, gw, dir)
}

#[actix_rt::test]
async fn admins_manage_members_and_changes_take_effect_at_once() {
    let (_api, gw, _dir) = setup();
    let (alice, bob, carol) = (gw.token("alice"), gw.token("bob"), gw.token("carol"));
    let members = format!("{}/pipeline/api/v1/orgs/1/members", gw.url);
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");

    let (code, list) = call("GET", &members, &bob, None).await;
    assert_eq!(code, 200);
    assert_documented("GET", "/pipeline/api/v1/orgs/{org}/members", 200, &list);
    assert_eq!(
        list,
        json!([{"user": "alice", "role": "admin"}, {"user": "bob", "role": "member"}])
    );

    assert_eq!(call("GET", &pods, &carol, None).await.0, 403);
    let (code, set) = call(
        "PUT",
        &format!("{members}/carol"),
        &alice,
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!(code, 200, "{set}");
    assert_documented(
        "PUT",
        "/pipeline/api/v1/orgs/{org}/members/{user}",
        200,
        &set,
    );
    assert_eq!(
        call("GET", &pods, &carol, None).await.0,
        200,
        "the new member reads at once"
    );
    assert_eq!(
        call("DELETE", &format!("{pods}/x"), &carol, None).await.0,
        403
    );

    // only admins change memberships; errors say what to fix
    assert_eq!(
        call(
            "PUT",
            &format!("{members}/mallory"),
            &bob,
            Some(json!({"role": "admin"}))
        )
        .await
        .0,
        403
    );
    let (code, error) = call(
        "PUT",
        &format!("{members}/carol"),
        &alice,
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_eq!(code, 400);
    assert_documented(
        "PUT",
        "/pipeline/api/v1/orgs/{org}/members/{user}",
        400,
        &error,
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("known roles: admin, member"),
        "{error}"
    );
    assert_eq!(
        call(
            "PUT",
            &format!("{members}/carol"),
            &alice,
            Some(json!({"rank": "x"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            "PUT",
            &format!("{members}/bad%2Cname"),
            &alice,
            Some(json!({"role": "member"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call("DELETE", &format!("{members}/nobody"), &alice, None)
            .await
            .0,
        404
    );
    // an admin of another org has no say here
    assert_eq!(
        call(
            "PUT",
            &format!("{members}/dave"),
            &gw.token("dave"),
            Some(json!({"role": "admin"}))
        )
        .await
        .0,
        403
    );

    let (code, removed) = call("DELETE", &format!("{members}/carol"), &alice, None).await;
    assert_eq!(code, 200, "{removed}");
    assert_documented(
        "DELETE",
        "/pipeline/api/v1/orgs/{org}/members/{user}",
        200,
        &removed,
    );
    assert_eq!(
        call("GET", &pods, &carol, None).await.0,
        403,
        "removed: refused at once"
    );
    let event = gw.wait_audit(|e| {
        e["user"] == "alice"
            && e["resource"] == "members"
            && e["verb"] == "delete"
            && e["status"] == 200
    });
    assert_eq!(event["decision"], "allow");
    assert!(event["path"].as_str().unwrap().ends_with("/members/carol"));
}

#[actix_rt::test]
async fn the_callers_orgs_and_global_administrators() {
    let (_api, gw, _dir) = setup();
    let (code, orgs) = call(
        "GET",
        &format!("{}/pipeline/api/v1/orgs", gw.url),
        &gw.token("alice"),
        None,
    )
    .await;
    assert_eq!((code, orgs), (200, json!([{"id": 1, "role": "admin"}])));
    let (_, orgs) = call(
        "GET",
        &format!("{}/pipeline/api/v1/orgs", gw.url),
        &gw.token("nobody"),
        None,
    )
    .await;
    assert_eq!(orgs, json!([]));
    let root = gw.token("root");
    let (_, orgs) = call(
        "GET",
        &format!("{}/pipeline/api/v1/orgs", gw.url),
        &root,
        None,
    )
    .await;
    assert_eq!(
        orgs,
        json!([{"id": 1, "role": "global-admin"}, {"id": 2, "role": "global-admin"}])
    );
    // root manages any org and passes everywhere
    let (code, _) = call(
        "PUT",
        &format!("{}/pipeline/api/v1/orgs/2/members/erin", gw.url),
        &root,
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        call(
            "GET",
            &gw.proxy_url(1, 1, "/api/v1/namespaces/default/secrets"),
            &root,
            None
        )
        .await
        .0,
        200
    );
}

#[actix_rt::test]
async fn reload_takes_a_good_policy_and_refuses_a_broken_one() {
    let (_api, gw, dir) = setup();
    let (root, alice, bob) = (gw.token("root"), gw.token("alice"), gw.token("bob"));
    let reload = format!("{}/pipeline/api/v1/admin/policy/reload", gw.url);
    let policy = dir.path().join("policy.csv");
    let secrets = gw.proxy_url(1, 1, "/api/v1/namespaces/default/secrets");

    assert_eq!(
        call("POST", &reload, &alice, None).await.0,
        403,
        "org admins may not reload"
    );
    assert_eq!(call("GET", &secrets, &bob, None).await.0, 403);

    // members may now read secrets: the deny lines go
    let original = std::fs::read_to_string(&policy).unwrap();
    let relaxed: String = original
        .lines()
        .filter(|l| !l.contains("secrets"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&policy, &relaxed).unwrap();
    let (code, stats) = call("POST", &reload, &root, None).await;
    assert_eq!(code, 200, "{stats}");
    assert_eq!(stats["policies"], 10);
    assert_eq!(stats["groupings"], 3);
    assert!(stats["load_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(call("GET", &secrets, &bob, None).await.0, 200);

    // a broken policy is refused with its line; the one in force stays
    std::fs::write(&policy, format!("{relaxed}p, member, *, *, get|list\n")).unwrap();
    let (code, error) = call("POST", &reload, &root, None).await;
    assert_eq!(code, 400);
    let message = error["message"].as_str().unwrap();
    let line = relaxed.lines().count() + 1;
    assert!(
        message.contains(&format!("line {line}: 4 fields where the model defines 5")),
        "{message}"
    );
    assert!(message.contains("unchanged"), "{message}");
    assert_eq!(
        call("GET", &secrets, &bob, None).await.0,
        200,
        "the last good policy stays in force"
    );
    // the current policy, for global administrators: the lines a reload would load (the
    // broken one included) and what is in force (the relaxed one)
    let current = format!("{}/pipeline/api/v1/admin/policy", gw.url);
    let (code, refused) = call("GET", &current, &alice, None).await;
    assert_eq!(code, 403, "{refused}");
    let (code, shown) = call("GET", &current, &root, None).await;
    assert_eq!(code, 200, "{shown}");
    assert_documented("GET", "/pipeline/api/v1/admin/policy", 200, &shown);
    assert!(
        shown["source"].as_str().unwrap().contains("policy.csv"),
        "{shown}"
    );
    assert!(shown["policy"]
        .as_str()
        .unwrap()
        .ends_with("p, member, *, *, get|list\n"));
    assert_eq!(shown["inForce"]["policies"], 10);
    assert_eq!(shown["fixed"], serde_json::Value::Null);
    assert_eq!(
        call(
            "DELETE",
            &format!(
                "{}/x",
                gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods")
            ),
            &alice,
            None
        )
        .await
        .0,
        404
    );
}

#[actix_rt::test]
async fn requests_in_flight_never_see_a_half_loaded_policy() {
    let (_api, gw, _dir) = setup();
    let (root, alice, bob) = (gw.token("root"), gw.token("alice"), gw.token("bob"));
    let reload = format!("{}/pipeline/api/v1/admin/policy/reload", gw.url);
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    let reads = (0..300).map(|i| {
        let (pods, token) = (
            pods.clone(),
            if i % 2 == 0 {
                alice.clone()
            } else {
                bob.clone()
            },
        );
        async move { call("GET", &pods, &token, None).await.0 }
    });
    let reloads = (0..10).map(|_| {
        let (reload, root) = (reload.clone(), root.clone());
        async move { call("POST", &reload, &root, None).await.0 }
    });
    let (codes, reloaded) = futures_util::future::join(
        futures_util::future::join_all(reads),
        futures_util::future::join_all(reloads),
    )
    .await;
    assert!(reloaded.iter().all(|&c| c == 200), "{reloaded:?}");
    assert!(
        codes.iter().all(|&c| c == 200),
        "every read allowed throughout: {codes:?}"
    );
}

#[actix_rt::test]
async fn a_model_that_matches_namespaces_restricts_members_to_theirs() {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = std::fs::read_to_string(repo.join("config/rbac_model.conf"))
        .unwrap()
        .replace("r = sub, dom, obj, act", "r = sub, dom, obj, act, ns")
        .replace(
            "p = sub, dom, obj, act, eft",
            "p = sub, dom, obj, act, ns, eft",
        )
        .replace(
            "verbMatch(r.act, p.act)",
            "verbMatch(r.act, p.act) && objectMatch(r.ns, p.ns)",
        );
    std::fs::write(dir.path().join("model.conf"), model).unwrap();
    std::fs::write(
        dir.path().join("policy.csv"),
        "p, admin, *, *, *, *, allow\np, member, *, *, get|list|watch, team-a, allow\n",
    )
    .unwrap();
    let (model, policy) = (dir.path().join("model.conf"), dir.path().join("policy.csv"));
    let gw = TestGateway::builder()
        .configure(move |c| {
            c.policy.model = Some(model);
            c.policy.policy = Some(policy);
        })
        .member(1, "bob", "member")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let bob = gw.token("bob");
    let pods = |ns: &str| gw.proxy_url(1, 1, &format!("/api/v1/namespaces/{ns}/pods"));
    // asked twice each: a worker's kept answer must not leak from one namespace to another
    for _ in 0..2 {
        assert_eq!(call("GET", &pods("team-a"), &bob, None).await.0, 200);
        assert_eq!(call("GET", &pods("team-b"), &bob, None).await.0, 403);
    }
}

/// With `policy.model` and `policy.policy` left out, the embedded model and policy are in
/// force (admins read and write, members read), memberships still change at once, and a
/// reload, with nothing to read, is a 400 that says so.
#[actix_rt::test]
async fn the_embedded_policy_serves_and_a_reload_says_there_is_nothing_to_read() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .configure(|c| {
            c.policy.model = None;
            c.policy.policy = None;
            c.policy.global_admins = vec!["root".into()];
        })
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let (alice, bob, carol, root) = (
        gw.token("alice"),
        gw.token("bob"),
        gw.token("carol"),
        gw.token("root"),
    );
    let pods = gw.proxy_url(1, gw.cluster_ids[0], "/api/v1/namespaces/default/pods");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    assert_eq!(call("GET", &pods, &bob, None).await.0, 200, "members read");
    assert_eq!(
        call("POST", &pods, &bob, Some(pod.clone())).await.0,
        403,
        "members do not write"
    );
    assert_eq!(
        call("POST", &pods, &alice, Some(pod)).await.0,
        201,
        "admins write"
    );
    assert_eq!(
        call("GET", &pods, &carol, None).await.0,
        403,
        "outsiders nothing"
    );

    let reload = format!("{}/pipeline/api/v1/admin/policy/reload", gw.url);
    let (code, body) = call("POST", &reload, &root, None).await;
    assert_eq!(code, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no policy file is configured (policy.policy)"),
        "{body}"
    );

    // memberships still reload the policy in force
    let members = format!("{}/pipeline/api/v1/orgs/1/members/carol", gw.url);
    let (code, set) = call("PUT", &members, &alice, Some(json!({"role": "member"}))).await;
    assert_eq!(code, 200, "{set}");
    assert_eq!(
        call("GET", &pods, &carol, None).await.0,
        200,
        "carol reads now"
    );
}
