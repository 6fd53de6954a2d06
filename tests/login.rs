//! Browser login without a browser: the OAuth2/OIDC and GitHub flows driven request by
//! request against a real local provider (tests/peers, npm `oauth2-mock-server`), the
//! session cookie on the proxy route and the REST API, CSRF, logout, the tokens API and
//! revocation, and sessions in Redis shared by two gateways.
//! The same flow in a real Chromium is in tests/browser_login.rs.

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::gateway::{GatewayBuilder, TestGateway};
use common::oidc::{OidcProvider, ProviderUser};
use common::openapi::assert_documented;
use common::session::{log_in_at, Answer, Jar};
use kubegate::config::login::SessionStoreKind;
use serde_json::json;

/// A gateway with providers `dex` (OIDC) and `github`, the rule "dex group acme/admins
/// is admin of org 1, github org acme is member of org 1", and `api` as cluster 1.
fn gateway(
    provider: &OidcProvider,
    api: &ApiServer,
    change: impl FnOnce(&mut kubegate::config::Config),
) -> TestGateway {
    builder(provider, api).configure(change).start()
}

fn builder(provider: &OidcProvider, api: &ApiServer) -> GatewayBuilder {
    TestGateway::builder()
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .configure(with_providers(provider))
}

/// The providers and rules of [`gateway`].
fn with_providers(provider: &OidcProvider) -> impl FnOnce(&mut kubegate::config::Config) {
    let dex = provider.oidc_settings();
    let github = provider.github_settings();
    move |c: &mut kubegate::config::Config| {
        c.login.providers.insert("dex".into(), dex);
        c.login.providers.insert("github".into(), github);
        c.login.role_rules = toml::from_str::<toml::Table>(
            r#"
rules = [
  { provider = "dex", group = "acme/admins", org = 1, role = "admin" },
  { provider = "github", group = "acme", org = 1, role = "member" },
]"#,
        )
        .unwrap()["rules"]
            .clone()
            .try_into()
            .unwrap();
        c.server.rate_limit_per_minute = 0;
        c.auth.revocation_poll = Duration::from_millis(200);
    }
}

/// [`log_in_at`] this gateway.
async fn log_in(gw: &TestGateway, provider: &str, redirect: &str) -> (Jar, Answer) {
    log_in_at(&gw.url, provider, redirect).await
}

#[actix_rt::test]
async fn oidc_login_gives_a_session_that_works_like_a_token() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});
    let target = "/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces";

    let (mut jar, end) = log_in(&gw, "dex", target).await;
    assert_eq!(end.status, 303, "{}", end.text);
    assert_eq!(
        end.location.as_deref(),
        Some(target),
        "lands on the requested page"
    );
    let cookie_line = end
        .set_cookie
        .iter()
        .find(|c| c.starts_with("kubegate_session="))
        .expect("the session cookie");
    assert!(cookie_line.contains("HttpOnly"), "{cookie_line}");
    assert!(cookie_line.contains("SameSite=Lax"), "{cookie_line}");
    assert!(
        !cookie_line.contains("Secure"),
        "plain HTTP: not Secure: {cookie_line}"
    );

    // PKCE, nonce and the client secret were used
    let seen = provider.requests();
    let authorize = seen.iter().find(|r| r["endpoint"] == "authorize").unwrap();
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert!(authorize["nonce"].as_str().is_some_and(|n| n.len() > 20));
    let token = seen.iter().find(|r| r["endpoint"] == "token").unwrap();
    assert_eq!(token["has_code_verifier"], true);

    // the cookie alone opens the proxy: the role rule made dex:alice admin of org 1
    let page = jar.get(&format!("{}{target}", gw.url)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.body["kind"], "NamespaceList");
    let who = jar.get(&format!("{}/auth/session", gw.url)).await;
    assert_eq!(who.body["user"], "dex:alice");
    assert_eq!(who.body["groups"], json!(["acme", "acme/admins"]));
    let csrf = who.body["csrfToken"].as_str().unwrap().to_string();

    // the login is audited
    let event = gw.wait_audit(|e| e["verb"] == "login" && e["user"] == "dex:alice");
    assert_eq!(event["decision"], "allow");
    assert!(
        event["reason"].as_str().unwrap().contains("admin of org 1"),
        "{event}"
    );
    assert!(
        event["query"]
            .as_str()
            .unwrap()
            .starts_with("code=REDACTED&"),
        "no code in the audit: {event}"
    );

    // a write with the cookie needs the CSRF proof
    let body = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"made-by-cookie"}}"#;
    let url = format!(
        "{}/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces",
        gw.url
    );
    let json_type = ("Content-Type", "application/json");
    let refused = jar.send("POST", &url, &[json_type], Some(body)).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("X-CSRF-Token"), "{}", refused.text);
    let cross = jar
        .send(
            "POST",
            &url,
            &[json_type, ("Sec-Fetch-Site", "cross-site")],
            Some(body),
        )
        .await;
    assert_eq!(cross.status, 403);
    let made = jar
        .send(
            "POST",
            &url,
            &[json_type, ("X-CSRF-Token", &csrf)],
            Some(body),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text);
    let same_origin = jar
        .send(
            "DELETE",
            &format!("{url}/made-by-cookie"),
            &[("Sec-Fetch-Site", "same-origin")],
            None,
        )
        .await;
    assert_eq!(same_origin.status, 200, "{}", same_origin.text);

    // logout ends the session: the browser's cookie is cleared, and a copy is refused
    let copy = jar.clone();
    let out = jar
        .send(
            "POST",
            &format!("{}/auth/logout", gw.url),
            &[("X-CSRF-Token", &csrf)],
            None,
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.text);
    assert!(
        jar.cookie.is_none(),
        "the cookie is removed: {:?}",
        out.set_cookie
    );
    assert_eq!(jar.get(&format!("{}{target}", gw.url)).await.status, 401);
    let mut copy = copy;
    let replay = copy.get(&format!("{}{target}", gw.url)).await;
    assert_eq!(replay.status, 401, "a copied cookie dies with the session");
    assert!(replay.text.contains("logged out"), "{}", replay.text);
}

#[actix_rt::test]
async fn login_failures_end_clearly_and_are_audited() {
    let mut provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});

    // a hostile redirect target is refused before anything starts
    let mut jar = Jar::default();
    let bad = jar
        .send(
            "GET",
            &format!("{}/auth/dex/login?redirect=//evil.example", gw.url),
            &[("Accept", "text/html")],
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text.contains("local path"), "{}", bad.text);
    assert!(bad.text.contains("<!doctype html>"), "browsers get a page");

    // an unknown provider
    let unknown = jar.get(&format!("{}/auth/nobody/login", gw.url)).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body["message"].as_str().unwrap().contains("nobody"));

    // consent denied
    provider.set_user(&ProviderUser::named("mallory").denied());
    let (_, denied) = log_in(&gw, "dex", "/").await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert!(denied.text.contains("access_denied"), "{}", denied.text);

    // a forged nonce in the ID token
    provider.set_user(&ProviderUser::named("mallory").id_token_claim("nonce", json!("forged")));
    let (_, forged) = log_in(&gw, "dex", "/").await;
    assert_eq!(forged.status, 401, "{}", forged.text);
    assert!(forged.text.contains("nonce"), "{}", forged.text);

    // an ID token for another client
    provider.set_user(&ProviderUser::named("mallory").id_token_claim("aud", json!("someone-else")));
    let (_, other) = log_in(&gw, "dex", "/").await;
    assert_eq!(other.status, 401, "{}", other.text);
    assert!(other.text.contains("audience"), "{}", other.text);

    // a callback this browser did not start, and a state used twice
    provider.set_user(&ProviderUser::named("alice"));
    let mut victim = Jar::default();
    let start = victim.get(&format!("{}/auth/dex/login", gw.url)).await;
    let back = Jar::default().get(&start.location.unwrap()).await;
    let callback = back.location.unwrap();
    let mut attacker = Jar::default();
    let stolen = attacker.get(&callback).await;
    assert_eq!(stolen.status, 400, "no session, no login: {}", stolen.text);
    let ok = victim.get(&callback).await;
    assert_eq!(ok.status, 303, "{}", ok.text);
    let again = victim.get(&callback).await;
    assert_eq!(again.status, 400, "a state is good once");

    // the provider down between the consent and the code exchange
    let mut late = Jar::default();
    let start = late.get(&format!("{}/auth/dex/login", gw.url)).await;
    let back = Jar::default().get(&start.location.unwrap()).await;
    provider.stop();
    let down = late.get(&back.location.unwrap()).await;
    assert_eq!(down.status, 502, "{}", down.text);
    assert!(down.body["message"]
        .as_str()
        .unwrap()
        .contains("unavailable"));

    // every failure is in the audit trail
    for (status, reason) in [
        (403, "access_denied"),
        (401, "nonce"),
        (401, "audience"),
        (400, "not the one"),
        (502, "unavailable"),
    ] {
        gw.wait_audit(|e| {
            e["verb"] == "login"
                && e["status"] == status
                && e["reason"].as_str().is_some_and(|r| r.contains(reason))
        });
    }
}

#[actix_rt::test]
async fn github_login_reads_the_user_and_org_groups() {
    let provider = OidcProvider::start();
    provider.set_user(&ProviderUser::named("octocat").groups(&["acme", "acme/platform"]));
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});
    let (mut jar, end) = log_in(&gw, "github", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    let who = jar.get(&format!("{}/auth/session", gw.url)).await;
    assert_eq!(who.body["user"], "github:octocat");
    let token_request = provider
        .requests()
        .into_iter()
        .find(|r| r["endpoint"] == "token")
        .unwrap();
    assert_eq!(
        token_request["client_auth"], "post",
        "GitHub gets the client's credentials in the body"
    );
    assert_eq!(who.body["groups"], json!(["acme", "acme/platform"]));
    // the rule made github:octocat a member of org 1: reads yes, writes no
    let url = format!(
        "{}/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces",
        gw.url
    );
    assert_eq!(jar.get(&url).await.status, 200);
    let csrf = who.body["csrfToken"].as_str().unwrap().to_string();
    let write = jar
        .send(
            "POST",
            &url,
            &[
                ("X-CSRF-Token", &csrf),
                ("Content-Type", "application/json"),
            ],
            Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}"#),
        )
        .await;
    assert_eq!(write.status, 403, "{}", write.text);
    // the landing page names the user
    let landing = jar.get(&format!("{}/", gw.url)).await;
    assert!(landing.text.contains("github:octocat"), "{}", landing.text);
}

#[actix_rt::test]
async fn the_tokens_api_creates_lists_and_revokes() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});
    let (mut jar, _) = log_in(&gw, "dex", "/").await;
    let csrf = jar.get(&format!("{}/auth/session", gw.url)).await.body["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();

    // GET /token mints and stores a token: a cross-site navigation (a hostile page's
    // link, which carries the SameSite=Lax cookie) is refused like a cross-site write,
    // and so is a kubeconfig for a cluster
    let url = format!("{}/pipeline/api/v1/token", gw.url);
    for (what, headers) in [
        ("cross-site", vec![("Sec-Fetch-Site", "cross-site")]),
        ("no proof", vec![]),
        ("a wrong CSRF token", vec![("X-CSRF-Token", "forged")]),
    ] {
        let refused = jar.send("GET", &url, &headers, None).await;
        assert_eq!(refused.status, 403, "{what}: {}", refused.text);
        assert!(refused.text.contains("X-CSRF-Token"), "{}", refused.text);
    }
    // a kubeconfig with a token in it mints one: the same proof (the default, with
    // kubectl's exec plugin, mints nothing)
    let config = format!(
        "{}/pipeline/api/v1/orgs/1/clusters/1/config?credential=token",
        gw.url
    );
    let refused = jar
        .send("GET", &config, &[("Sec-Fetch-Site", "cross-site")], None)
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let listed = jar.get(&format!("{}/pipeline/api/v1/tokens", gw.url)).await;
    assert_eq!(listed.body, serde_json::json!([]), "nothing was minted");

    // GET /token after a browser login, as the Pipeline UI does (its page's request is
    // same-origin)
    let ui = jar
        .send("GET", &url, &[("Sec-Fetch-Site", "same-origin")], None)
        .await;
    assert_eq!(ui.status, 201, "{}", ui.text);
    assert_documented("GET", "/pipeline/api/v1/token", 201, &ui.body);
    let token = ui.body["token"].as_str().unwrap().to_string();
    let target = gw.proxy_url(1, 1, "/api/v1/namespaces");
    let (status, _) = common::http::call("GET", &target, Some(&token), None).await;
    assert_eq!(status, 200, "the token speaks for dex:alice");

    // POST /tokens with a name and a lifetime, with the token as the credential
    let (status, made) = common::http::call(
        "POST",
        &format!("{}/pipeline/api/v1/tokens", gw.url),
        Some(&token),
        Some(json!({"name": "ci", "ttl": "2h"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_documented("POST", "/pipeline/api/v1/tokens", 201, &made);
    let ci = made["token"].as_str().unwrap().to_string();
    let ci_id = made["id"].as_str().unwrap().to_string();
    for (body, what) in [
        (json!({"name": "x", "ttl": "forever"}), "ttl"),
        (json!({"name": "x", "ttl": "9000h"}), "outlives it"),
        (json!({"nam": "x"}), "unknown field"),
    ] {
        let (status, error) = common::http::call(
            "POST",
            &format!("{}/pipeline/api/v1/tokens", gw.url),
            Some(&token),
            Some(body),
        )
        .await;
        assert_eq!(status, 400, "{error}");
        assert_documented("POST", "/pipeline/api/v1/tokens", 400, &error);
        assert!(error["message"].as_str().unwrap().contains(what), "{error}");
    }

    // the list has both, without secrets
    let (status, listed) = common::http::call(
        "GET",
        &format!("{}/pipeline/api/v1/tokens", gw.url),
        Some(&ci),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_documented("GET", "/pipeline/api/v1/tokens", 200, &listed);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"ci"));
    assert!(!listed.to_string().contains(&ci), "no secret in a list");

    // someone else cannot revoke it
    let other = gw.token("dex:bob");
    let (status, missing) = common::http::call(
        "DELETE",
        &format!("{}/pipeline/api/v1/tokens/{ci_id}", gw.url),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_documented("DELETE", "/pipeline/api/v1/tokens/{id}", 404, &missing);

    // revoking with the cookie needs the CSRF proof, then the token is refused at once
    let url = format!("{}/pipeline/api/v1/tokens/{ci_id}", gw.url);
    assert_eq!(jar.send("DELETE", &url, &[], None).await.status, 403);
    let revoked = jar
        .send("DELETE", &url, &[("X-CSRF-Token", &csrf)], None)
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let (status, refused) = common::http::call("GET", &target, Some(&ci), None).await;
    assert_eq!(status, 401);
    assert!(
        refused["message"].as_str().unwrap().contains("revoked"),
        "{refused}"
    );
    let (_, listed) = common::http::call(
        "GET",
        &format!("{}/pipeline/api/v1/tokens", gw.url),
        Some(&token),
        None,
    )
    .await;
    assert_documented("GET", "/pipeline/api/v1/tokens", 200, &listed);
    let ci_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == ci_id.as_str())
        .unwrap();
    assert_eq!(ci_row["revoked"], true);
    let (status, _) = common::http::call("GET", &target, Some(&token), None).await;
    assert_eq!(status, 200, "the other token still works");
}

/// Two gateways sharing a data directory (tokens and revocations) and Redis (sessions):
/// a session made on one works on the other, a token revoked on one is refused by the
/// other within the poll period.
#[actix_rt::test]
async fn replicas_share_sessions_in_redis_and_revocations() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("signing-key");
    std::fs::write(&key, "a shared signing key of at least thirty-two bytes\n").unwrap();
    let replica = |dir: std::path::PathBuf, key: std::path::PathBuf| {
        move |c: &mut kubegate::config::Config| {
            c.sessions.store = SessionStoreKind::Redis;
            c.sessions.redis_url = Some(common::addresses::redis_url());
            c.auth.signing_key_file = key;
            c.store.path = dir;
        }
    };
    let one = builder(&provider, &api)
        .configure(replica(shared.path().to_path_buf(), key.clone()))
        .start();
    // the same stores: the cluster is there already
    let two = TestGateway::builder()
        .configure(with_providers(&provider))
        .configure(replica(shared.path().to_path_buf(), key.clone()))
        .start();

    let (mut jar, end) = log_in(&one, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    let cookie = jar.cookie.clone().unwrap();
    let value = cookie.split_once('=').unwrap().1;
    assert!(
        value.len() < 200,
        "with Redis the cookie holds only the session key: {value}"
    );
    let who = jar.get(&format!("{}/auth/session", two.url)).await;
    assert_eq!(
        who.status, 200,
        "the session made on one works on two: {}",
        who.text
    );
    assert_eq!(who.body["user"], "dex:alice");
    // the role the rule gave on one reaches two when two polls the member store
    let granted = Instant::now();
    loop {
        let page = jar.get(&two.proxy_url(1, 1, "/api/v1/namespaces")).await;
        if page.status == 200 {
            break;
        }
        assert_eq!(page.status, 403, "{}", page.text);
        assert!(granted.elapsed() < Duration::from_secs(5), "{}", page.text);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    // a token made on one, revoked on one, refused by two within the poll period
    let made = jar
        .send(
            "GET",
            &format!("{}/pipeline/api/v1/token", one.url),
            &[("Sec-Fetch-Site", "same-origin")],
            None,
        )
        .await;
    let token = made.body["token"].as_str().unwrap().to_string();
    let id = made.body["id"].as_str().unwrap().to_string();
    let target = two.proxy_url(1, 1, "/api/v1/namespaces");
    assert_eq!(
        common::http::call("GET", &target, Some(&token), None)
            .await
            .0,
        200
    );
    let (status, _) = common::http::call(
        "DELETE",
        &format!("{}/pipeline/api/v1/tokens/{id}", one.url),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let revoked_at = Instant::now();
    loop {
        let (status, _) = common::http::call("GET", &target, Some(&token), None).await;
        if status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "two still accepts the revoked token"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "revocation reached the other replica in {:?}",
        revoked_at.elapsed()
    );

    // logout on two ends the session on one too
    let csrf = who.body["csrfToken"].as_str().unwrap().to_string();
    let copy = jar.clone();
    let out = jar
        .send(
            "POST",
            &format!("{}/auth/logout", two.url),
            &[("X-CSRF-Token", &csrf)],
            None,
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.text);
    let mut copy = copy;
    assert_eq!(
        copy.get(&format!("{}/auth/session", one.url)).await.status,
        401
    );
}

/// The `state` is good once on the server's side too. With sessions in the cookie (the
/// default), the pending login is in the browser's cookie: a copy of the cookie from
/// before the callback carries it again. Replaying the callback with that copy is refused
/// as a bad state, on the replica that took the login and on another one sharing its
/// token store and signing key, at once (before any revocation poll), and audited.
#[actix_rt::test]
async fn a_callback_replayed_with_the_cookie_from_before_it_is_refused() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let shared = tempfile::tempdir().unwrap();
    let key = shared.path().join("signing-key");
    std::fs::write(&key, "a shared signing key of at least thirty-two bytes\n").unwrap();
    let replica = |dir: std::path::PathBuf, key: std::path::PathBuf| {
        move |c: &mut kubegate::config::Config| {
            assert_eq!(c.sessions.store, SessionStoreKind::Cookie, "the default");
            c.auth.signing_key_file = key;
            c.store.path = dir;
            // no poll during the test: the token store's own check refuses the replay
            c.auth.revocation_poll = Duration::from_secs(3600);
        }
    };
    let one = builder(&provider, &api)
        .configure(replica(shared.path().to_path_buf(), key.clone()))
        .start();
    let two = TestGateway::builder()
        .configure(with_providers(&provider))
        .configure(replica(shared.path().to_path_buf(), key.clone()))
        .start();

    // the message of a bad state today: a callback without the browser's session
    let mut victim = Jar::default();
    let start = victim.get(&format!("{}/auth/dex/login", one.url)).await;
    let back = Jar::default().get(&start.location.unwrap()).await;
    let stray = Jar::default().get(&back.location.unwrap()).await;
    assert_eq!(stray.status, 400, "{}", stray.text);
    let bad_state = stray.body["message"].as_str().unwrap().to_string();

    // a login, with a copy of the cookie taken just before the callback
    let mut jar = Jar::default();
    let start = jar.get(&format!("{}/auth/dex/login", one.url)).await;
    assert_eq!(start.status, 302, "{}", start.text);
    let authorize = start.location.unwrap();
    let back = Jar::default().get(&authorize).await;
    let callback = back.location.unwrap();
    let before = jar.clone();
    let end = jar.get(&callback).await;
    assert_eq!(end.status, 303, "{}", end.text);
    assert_eq!(
        jar.get(&format!("{}/auth/session", one.url)).await.body["user"],
        "dex:alice"
    );

    // the callback URL again, and a fresh code for the same state (the provider's
    // authorization URL opened again): each with the copy, on each replica
    let fresh = Jar::default().get(&authorize).await.location.unwrap();
    assert_ne!(fresh, callback, "another code");
    for (gw, which) in [
        (&two, "another replica, the same callback"),
        (&two, "another replica, a fresh code"),
        (&one, "the same replica, the same callback"),
        (&one, "the same replica, a fresh code"),
    ] {
        let replayed = if which.ends_with("fresh code") {
            &fresh
        } else {
            &callback
        };
        let url = replayed.replacen(&one.url, &gw.url, 1);
        let mut copy = before.clone();
        let replay = copy.get(&url).await;
        assert_eq!(
            replay.status, 400,
            "{which}: a used state is refused: {}",
            replay.text
        );
        assert_eq!(replay.body["message"], bad_state.as_str(), "{which}");
        assert_eq!(
            copy.get(&format!("{}/auth/session", gw.url)).await.status,
            401,
            "{which}: the replay logged nobody in"
        );
        let event = gw.wait_audit(|e| {
            e["verb"] == "login"
                && e["status"] == 400
                && e["reason"].as_str() == Some(bad_state.as_str())
        });
        assert_eq!(event["decision"], "deny", "{which}: {event}");
    }
    // the state itself is nowhere in the token store, only its hash
    let state = callback
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_string();
    let tokens = std::fs::read_to_string(shared.path().join("tokens.json")).unwrap();
    assert!(tokens.contains("login-state:"), "{tokens}");
    assert!(!tokens.contains(&state), "{tokens}");

    // and a new login still works
    let (_, again) = log_in(&one, "dex", "/").await;
    assert_eq!(again.status, 303, "{}", again.text);
}

/// The user of `jar`'s session (asserting there is one).
async fn session_user(gw: &TestGateway, jar: &mut Jar) -> String {
    let who = jar.get(&format!("{}/auth/session", gw.url)).await;
    assert_eq!(who.status, 200, "a session: {}", who.text);
    who.body["user"].as_str().unwrap().to_string()
}

/// Logs in as the provider's `user`, whose ID token kubegate must refuse: 401, no session,
/// and (with `audited`) the login audited as denied, its reason holding `audited`. Returns
/// the browser's cookies and the refusal's message.
async fn oidc_login_refused(
    gw: &TestGateway,
    provider: &OidcProvider,
    user: &ProviderUser,
    audited: Option<&str>,
) -> (Jar, String) {
    provider.set_user(user);
    let (mut jar, refused) = log_in(gw, "dex", "/").await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let who = jar.get(&format!("{}/auth/session", gw.url)).await;
    assert_eq!(who.status, 401, "nobody is logged in: {}", who.text);
    if let Some(reason) = audited {
        let event = gw.wait_audit(|e| {
            e["verb"] == "login"
                && e["status"] == 401
                && e["reason"].as_str().is_some_and(|r| r.contains(reason))
        });
        assert_eq!(event["decision"], "deny", "{event}");
    }
    let message = refused.body["message"].as_str().unwrap().to_string();
    (jar, message)
}

/// OIDC ID tokens are accepted with public-key algorithms only: an ID token signed HS256
/// with the client secret (a key kubegate knows, so a library that took the token's
/// `alg` at its word would verify it) is refused, the login audited as denied, and no
/// session made. The same user's RS256 token is then taken.
#[actix_rt::test]
async fn an_oidc_id_token_signed_hs256_with_the_client_secret_is_refused() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});

    let user = ProviderUser::named("mallory")
        .groups(&["acme", "acme/admins"])
        .id_token_signed_hs256_with_client_secret();
    let (mut jar, message) = oidc_login_refused(&gw, &provider, &user, Some("HS256")).await;
    assert!(message.contains("HS256"), "{message}");
    assert!(message.contains("public-key algorithms"), "{message}");
    assert!(
        provider.requests().iter().any(|r| r["endpoint"] == "token"),
        "the code was exchanged: the ID token itself was refused"
    );
    let page = jar.get(&gw.proxy_url(1, 1, "/api/v1/namespaces")).await;
    assert_eq!(page.status, 401, "{}", page.text);

    // the provider's own signature, for the same user: logged in
    provider.set_user(&ProviderUser::named("mallory").groups(&["acme", "acme/admins"]));
    let (mut jar, end) = log_in(&gw, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    let who = jar.get(&format!("{}/auth/session", gw.url)).await;
    assert_eq!(who.body["user"], "dex:mallory");
}

/// An ID token without a signature (`alg` "none") is refused like an HMAC one, before any
/// key is looked for: no second JWKS fetch.
#[actix_rt::test]
async fn an_unsigned_oidc_id_token_is_refused() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});

    let user = ProviderUser::named("mallory")
        .groups(&["acme", "acme/admins"])
        .id_token_unsigned();
    let (_, message) = oidc_login_refused(&gw, &provider, &user, None).await;
    assert!(message.contains("signed with none"), "{message}");
    assert!(message.contains("public-key algorithms"), "{message}");
    assert_eq!(provider.jwks_fetches(), 1, "the keys of discovery, no more");
}

/// The provider's ID tokens carry `at_hash`, the hash of the access token they come with
/// (OIDC Core 3.1.3.6): kubegate checks it, so an ID token whose `at_hash` names another
/// access token is refused and audited, while the provider's own go through.
#[actix_rt::test]
async fn an_oidc_id_token_whose_at_hash_is_another_access_tokens_is_refused() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});

    // the left half of SHA-256("another access token"), base64url: well formed, not this one's
    let user = ProviderUser::named("mallory")
        .groups(&["acme", "acme/admins"])
        .id_token_claim("at_hash", json!("wQFkUtMS3mcGZYkrkP8tUw"));
    let (_, message) = oidc_login_refused(&gw, &provider, &user, Some("at_hash")).await;
    assert!(message.contains("at_hash"), "{message}");

    // the provider's own at_hash: logged in
    provider.set_user(&ProviderUser::named("mallory").groups(&["acme", "acme/admins"]));
    let (mut jar, end) = log_in(&gw, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    assert_eq!(session_user(&gw, &mut jar).await, "dex:mallory");
}

/// kubegate keeps the provider's JWKS, and fetches it again once when an ID token names
/// a key it does not know: after the provider rotates its signing key (the old key gone
/// from the JWKS), the next login still works, with one more fetch; later logins use the
/// keys kept. A token whose key the provider does not publish is refused after that one
/// more fetch.
#[actix_rt::test]
async fn oidc_logins_go_on_after_the_provider_rotates_its_key() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api, |_| {});

    let (mut jar, end) = log_in(&gw, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    assert_eq!(session_user(&gw, &mut jar).await, "dex:alice");
    assert_eq!(
        provider.jwks_fetches(),
        1,
        "the keys are fetched at the first login"
    );
    let (_, end) = log_in(&gw, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    assert_eq!(provider.jwks_fetches(), 1, "and kept");

    // the provider rotates: the JWKS kubegate kept has only the old key
    provider.rotate_keys(true);
    provider.set_user(&ProviderUser::named("bob"));
    let (mut jar, end) = log_in(&gw, "dex", "/").await;
    assert_eq!(
        end.status, 303,
        "the login after the rotation: {}",
        end.text
    );
    assert_eq!(session_user(&gw, &mut jar).await, "dex:bob");
    assert_eq!(
        provider.jwks_fetches(),
        2,
        "the unknown kid made kubegate fetch the keys once more"
    );
    let (mut jar, end) = log_in(&gw, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    assert_eq!(session_user(&gw, &mut jar).await, "dex:bob");
    assert_eq!(provider.jwks_fetches(), 2, "the new keys are kept");

    // a token signed with a key the provider does not publish: one fetch, then refused
    provider.rotate_keys(false);
    let (mut jar, refused) = log_in(&gw, "dex", "/").await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert!(refused.text.contains("JWKS"), "{}", refused.text);
    assert_eq!(provider.jwks_fetches(), 3, "fetched again once, not more");
    assert_eq!(
        jar.get(&format!("{}/auth/session", gw.url)).await.status,
        401
    );
}

/// A session lasts `sessions.lifetime` whatever the cookie says: the cookie store's
/// cookie is data the browser keeps, and a browser (or a copy of the cookie) may send it
/// after its Max-Age. After the lifetime, the same cookie is refused with 401 on the
/// proxy route, the REST API and `/auth/session`.
#[actix_rt::test]
async fn a_session_ends_at_its_lifetime_whatever_the_cookie_says() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let lifetime = Duration::from_secs(3);
    let gw = gateway(&provider, &api, |c| c.sessions.lifetime = lifetime);
    let page = gw.proxy_url(1, 1, "/api/v1/namespaces");
    let tokens = format!("{}/pipeline/api/v1/tokens", gw.url);
    let session = format!("{}/auth/session", gw.url);

    let (mut jar, end) = log_in(&gw, "dex", "/").await;
    let logged_in = Instant::now();
    assert_eq!(end.status, 303, "{}", end.text);
    let cookie_line = end
        .set_cookie
        .iter()
        .find(|c| c.starts_with("kubegate_session="))
        .expect("the session cookie");
    assert!(cookie_line.contains("Max-Age=3"), "{cookie_line}");
    let who = jar.get(&session).await;
    assert_eq!(who.status, 200, "{}", who.text);
    let expires_at = who.body["expiresAt"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expires_at > now && expires_at <= now + 3,
        "{expires_at} vs {now}"
    );
    assert_eq!(jar.get(&page).await.status, 200);
    assert_eq!(jar.get(&tokens).await.status, 200);
    assert!(
        logged_in.elapsed() < lifetime,
        "the checks above were in time"
    );

    // past the lifetime: the browser still sends the very same cookie
    let cookie = jar.cookie.clone();
    actix_rt::time::sleep(lifetime + Duration::from_millis(1100)).await;
    for url in [&page, &tokens, &session] {
        assert_eq!(jar.cookie, cookie, "the browser sends the cookie it got");
        let late = jar.get(url).await;
        assert_eq!(late.status, 401, "{url}: {}", late.text);
        assert!(
            late.body["message"]
                .as_str()
                .unwrap()
                .contains("no credentials"),
            "{}",
            late.text
        );
    }
    // and a login gives a new session
    let (mut jar, end) = log_in(&gw, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    assert_eq!(session_user(&gw, &mut jar).await, "dex:alice");
}

/// A login gets a new session (no session fixation): the cookie a browser has before the
/// login (one another site or person may have planted, or copied) is not the one after,
/// and it does not become logged in. With sessions in Redis, where the cookie holds the
/// session's key, a logged-in session's cookie is not carried over to the next login
/// either: the key changes and the old one ends.
#[actix_rt::test]
async fn a_login_gives_a_new_session() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    for store in [SessionStoreKind::Cookie, SessionStoreKind::Redis] {
        let gw = gateway(&provider, &api, |c| {
            c.sessions.store = store;
            c.sessions.redis_url = Some(common::addresses::redis_url());
        });
        let session = format!("{}/auth/session", gw.url);

        let mut jar = Jar::default();
        let start = jar.get(&format!("{}/auth/dex/login", gw.url)).await;
        assert_eq!(start.status, 302, "{store:?}: {}", start.text);
        let before = jar.clone();
        let planted = before.cookie.clone().expect("a session before the login");
        let back = Jar::default().get(&start.location.unwrap()).await;
        let end = jar.get(&back.location.unwrap()).await;
        assert_eq!(end.status, 303, "{store:?}: {}", end.text);
        let after = jar.cookie.clone().expect("a session after the login");
        assert_ne!(after, planted, "{store:?}: a new cookie at login");
        assert_eq!(session_user(&gw, &mut jar).await, "dex:alice");
        let mut before = before;
        let stale = before.get(&session).await;
        assert_eq!(
            stale.status, 401,
            "{store:?}: the cookie from before the login is not logged in: {}",
            stale.text
        );
        assert_eq!(
            before
                .get(&gw.proxy_url(1, 1, "/api/v1/namespaces"))
                .await
                .status,
            401,
            "{store:?}"
        );

        if store == SessionStoreKind::Redis {
            // the same browser logs in again (as bob): a new key; the old one is gone
            provider.set_user(&ProviderUser::named("bob"));
            let first = jar.clone();
            let start = jar.get(&format!("{}/auth/dex/login", gw.url)).await;
            let back = Jar::default().get(&start.location.unwrap()).await;
            let end = jar.get(&back.location.unwrap()).await;
            assert_eq!(end.status, 303, "{}", end.text);
            assert_ne!(jar.cookie, first.cookie, "a new cookie at the second login");
            assert_eq!(session_user(&gw, &mut jar).await, "dex:bob");
            let mut first = first;
            let old = first.get(&session).await;
            assert_eq!(old.status, 401, "the first session ended: {}", old.text);
            provider.set_user(&ProviderUser::named("alice").groups(&["acme", "acme/admins"]));
        }
    }
}
