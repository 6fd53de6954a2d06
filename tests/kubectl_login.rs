//! kubectl single sign-on, the server's side, request by request: the authorization-code
//! flow with PKCE and a loopback redirect, the device flow, refresh with rotation and
//! reuse detection, revocation (by the person, by logout, by an administrator), the rule
//! that a token cannot mint a longer-lived one, the multi-cluster kubeconfig, and the
//! hostile cases: a non-loopback redirect, PKCE or redirect mismatch, a replayed code,
//! polling too fast, a reused or revoked refresh credential.
//! The same flows with the real `kubegate login`, kubectl and Chromium are in
//! tests/kubectl_sso.rs.

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::gateway::TestGateway;
use common::oidc::OidcProvider;
use common::session::{log_in_at, Jar};
use serde_json::{json, Value};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFREjXk";
const CHALLENGE: &str = "ncc7ZhWd5eYNpE_-AnpLd0HFdrU0cZJIiofyYzwdAZk";
const LOOPBACK: &str = "http://127.0.0.1:43111/callback";

/// A gateway with the OIDC provider `dex` (its user is admin of org 1 by a role rule), a
/// second cluster, and `kubectl_token_ttl` of a minute.
fn gateway(provider: &OidcProvider, api: &ApiServer) -> TestGateway {
    let dex = provider.oidc_settings();
    TestGateway::builder()
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .cluster(1, "prod", &api.kubeconfig_with_client_cert())
        .configure(move |c| {
            c.login.providers.insert("dex".into(), dex);
            c.login.role_rules = toml::from_str::<toml::Table>(
                r#"rules = [{ provider = "dex", group = "acme/admins", org = 1, role = "admin" }]"#,
            )
            .unwrap()["rules"]
                .clone()
                .try_into()
                .unwrap();
            c.auth.kubectl_token_ttl = Duration::from_secs(60);
            c.policy.global_admins = vec!["root-admin".into()];
            c.server.rate_limit_per_minute = 0;
            c.auth.revocation_poll = Duration::from_millis(200);
        })
        .start()
}

fn enc(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn authorize_url(gw: &TestGateway, redirect_uri: &str, challenge: &str) -> String {
    format!(
        "{}/auth/cli/authorize?redirect_uri={}&state=s1&code_challenge={challenge}&code_challenge_method=S256&client={}",
        gw.url,
        enc(redirect_uri),
        enc("kubegate on test")
    )
}

/// The loopback URL the authorize page sends the browser to.
fn loopback_target(html: &str) -> String {
    let start = html.find("url=").expect("a refresh to the loopback") + 4;
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].replace("&amp;", "&")
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .unwrap()
                .into_owned()
        })
        .unwrap_or_default()
}

/// `POST /auth/cli/token` with a form.
async fn token(gw: &TestGateway, form: &[(&str, &str)]) -> (u16, Value) {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut res = awc::Client::new()
        .post(format!("{}/auth/cli/token", gw.url))
        .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
        .send_body(body)
        .await
        .unwrap();
    let bytes = res.body().await.unwrap();
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn code_for(gw: &TestGateway, jar: &mut Jar) -> String {
    let page = jar.get(&authorize_url(gw, LOOPBACK, CHALLENGE)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let target = loopback_target(&page.text);
    assert!(target.starts_with(&format!("{LOOPBACK}?code=")), "{target}");
    assert_eq!(query_param(&target, "state"), "s1");
    query_param(&target, "code")
}

async fn exchange(gw: &TestGateway, code: &str) -> (u16, Value) {
    token(
        gw,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", LOOPBACK),
            ("client", "kubegate on test"),
        ],
    )
    .await
}

async fn refresh(gw: &TestGateway, refresh_token: &str) -> (u16, Value) {
    token(
        gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client", "kubegate on test"),
        ],
    )
    .await
}

async fn poll(gw: &TestGateway, device_code: &str) -> (u16, Value) {
    token(
        gw,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ],
    )
    .await
}

async fn get(url: &str, token: &str) -> (u16, String) {
    let mut res = awc::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let bytes = res.body().limit(1 << 20).await.unwrap();
    (
        res.status().as_u16(),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[actix_rt::test]
async fn authorization_code_refresh_and_revocation() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api);
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");

    // hostile or broken starts: refused with a page, never a redirect
    let mut stranger = Jar::default();
    for (url, what) in [
        (
            authorize_url(&gw, "http://evil.example:80/callback", CHALLENGE),
            "loopback",
        ),
        (
            authorize_url(&gw, "https://127.0.0.1:43111/callback", CHALLENGE),
            "loopback",
        ),
        (authorize_url(&gw, LOOPBACK, "short"), "PKCE"),
        (
            authorize_url(&gw, LOOPBACK, CHALLENGE).replace("S256", "plain"),
            "PKCE",
        ),
    ] {
        let refused = stranger.get(&url).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.text);
        assert!(refused.location.is_none());
        assert!(refused.text.contains(what), "{}", refused.text);
    }
    // no session: to the (only) provider's login, and back here after it
    let to_login = stranger.get(&authorize_url(&gw, LOOPBACK, CHALLENGE)).await;
    assert_eq!(to_login.status, 302, "{}", to_login.text);
    let location = to_login.location.unwrap();
    assert!(
        location.starts_with("/auth/dex/login?redirect=%2Fauth%2Fcli%2Fauthorize"),
        "{location}"
    );

    // a browser session, then the code for the loopback
    let (mut jar, end) = log_in_at(&gw.url, "dex", "/").await;
    assert_eq!(end.status, 303, "{}", end.text);
    let code = code_for(&gw, &mut jar).await;

    // the code needs the verifier and the same redirect_uri
    let (status, wrong) = token(
        &gw,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &"x".repeat(43)),
            ("redirect_uri", LOOPBACK),
        ],
    )
    .await;
    assert_eq!(
        (status, wrong["error"].as_str()),
        (400, Some("invalid_grant")),
        "{wrong}"
    );
    assert!(wrong["error_description"]
        .as_str()
        .unwrap()
        .contains("PKCE"));
    let (status, wrong) = token(
        &gw,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", VERIFIER),
            ("redirect_uri", "http://127.0.0.1:1/other"),
        ],
    )
    .await;
    assert_eq!(
        (status, wrong["error"].as_str()),
        (400, Some("invalid_grant")),
        "{wrong}"
    );

    let (status, tokens) = exchange(&gw, &code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["user"], "dex:alice");
    let expires_in = tokens["expires_in"].as_u64().unwrap();
    assert!(
        (55..=60).contains(&expires_in),
        "auth.kubectl_token_ttl: {expires_in}"
    );
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();
    let session = tokens["session"].as_str().unwrap().to_string();

    // a code is good once
    let (status, replayed) = exchange(&gw, &code).await;
    assert_eq!(
        (status, replayed["error"].as_str()),
        (400, Some("invalid_grant")),
        "{replayed}"
    );
    assert!(replayed["error_description"]
        .as_str()
        .unwrap()
        .contains("used already"));

    // the access token works through kubegate, and the plugin's check says so
    assert_eq!(get(&pods, &access).await.0, 200);
    let (status, whoami) = get(&format!("{}/auth/session", gw.url), &access).await;
    assert_eq!(status, 200, "{whoami}");
    // refresh credentials and codes are never bearer tokens
    assert_eq!(get(&pods, &refresh1).await.0, 401);
    assert_eq!(get(&pods, &code).await.0, 401);

    // the session is in the person's token list
    let (status, listed) = get(&format!("{}/pipeline/api/v1/tokens", gw.url), &access).await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == session.as_str())
        .unwrap_or_else(|| panic!("the session in {listed}"));
    assert_eq!(entry["kind"], "session");
    assert_eq!(entry["name"], "kubectl login: kubegate on test");

    // a token cannot mint a token that outlives it
    let (status, refused) = common::http::call(
        "POST",
        &format!("{}/pipeline/api/v1/tokens", gw.url),
        Some(&access),
        Some(json!({"name": "ci", "ttl": "2h"})),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("outlives"),
        "{refused}"
    );
    let (status, made) = common::http::call(
        "POST",
        &format!("{}/pipeline/api/v1/tokens", gw.url),
        Some(&access),
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let made_exp = humantime::parse_rfc3339(made["expiresAt"].as_str().unwrap()).unwrap();
    let access_exp = humantime::parse_rfc3339(tokens["expires_at"].as_str().unwrap()).unwrap();
    assert!(made_exp <= access_exp, "capped at the access token's end");

    // the multi-cluster kubeconfig: a context per cluster, the exec plugin, no secret
    let (status, yaml) = get(&format!("{}/pipeline/api/v1/kubeconfig", gw.url), &access).await;
    assert_eq!(status, 200, "{yaml}");
    for want in [
        "kubegate-1-dev",
        "kubegate-1-prod",
        "client.authentication.k8s.io/v1",
        "IfAvailable",
    ] {
        assert!(yaml.contains(want), "{want} in {yaml}");
    }
    assert!(
        !yaml.contains(&access) && !yaml.contains("token:"),
        "{yaml}"
    );
    let (status, _) = get(
        &format!("{}/pipeline/api/v1/kubeconfig?org=2", gw.url),
        &access,
    )
    .await;
    assert_eq!(status, 404, "no cluster in org 2");
    let (status, with_token) = get(
        &format!("{}/pipeline/api/v1/kubeconfig?credential=token", gw.url),
        &access,
    )
    .await;
    assert_eq!(status, 200, "{with_token}");
    assert!(with_token.contains("token:"), "{with_token}");

    // refresh rotates: a new pair, and the old credential is dead
    let (status, second) = refresh(&gw, &refresh1).await;
    assert_eq!(status, 200, "{second}");
    let access2 = second["access_token"].as_str().unwrap().to_string();
    let refresh2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh1);
    assert_eq!(second["session"], session.as_str());
    assert_eq!(get(&pods, &access2).await.0, 200);
    // the old one again: reuse, and the whole session goes, its access tokens with it
    let (status, reused) = refresh(&gw, &refresh1).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reused}"
    );
    assert!(reused["error_description"]
        .as_str()
        .unwrap()
        .contains("used before"));
    let (status, _) = refresh(&gw, &refresh2).await;
    assert_eq!(status, 400, "the newer credential died with the session");
    let (status, text) = get(&pods, &access2).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("kubegate login"), "{text}");
    let (status, _) = get(&format!("{}/auth/session", gw.url), &access).await;
    assert_eq!(status, 401, "the plugin's check fails at once");

    // a second login session, revoked by its person with DELETE /tokens/{id}
    let code = code_for(&gw, &mut jar).await;
    let (_, tokens) = exchange(&gw, &code).await;
    let (access, refresh1) = (
        tokens["access_token"].as_str().unwrap().to_string(),
        tokens["refresh_token"].as_str().unwrap().to_string(),
    );
    let session = tokens["session"].as_str().unwrap();
    let (status, _) = common::http::call(
        "DELETE",
        &format!("{}/pipeline/api/v1/tokens/{session}", gw.url),
        Some(&access),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(get(&pods, &access).await.0, 401);
    let (status, ended) = refresh(&gw, &refresh1).await;
    assert_eq!(
        (status, ended["error"].as_str()),
        (400, Some("invalid_grant")),
        "{ended}"
    );

    // a third, ended by a logout of the browser session it came from
    let code = code_for(&gw, &mut jar).await;
    let (_, tokens) = exchange(&gw, &code).await;
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_string();
    let csrf = jar.get(&format!("{}/auth/session", gw.url)).await.body["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let out = jar
        .send(
            "POST",
            &format!("{}/auth/logout", gw.url),
            &[("X-CSRF-Token", &csrf)],
            None,
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.text);
    let (status, ended) = refresh(&gw, &refresh1).await;
    assert_eq!(status, 400, "{ended}");
    assert!(
        ended["error_description"]
            .as_str()
            .unwrap()
            .contains("logged out"),
        "{ended}"
    );

    // bad requests say what to fix
    let (status, bad) = token(&gw, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{bad}"
    );
    let (status, bad) = token(&gw, &[("grant_type", "refresh_token")]).await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_request")),
        "{bad}"
    );

    // the audit trail names the person and the client of each step
    let login = gw.wait_audit(|e| {
        e["verb"] == "login" && e["resource"] == "kubectl-sessions" && e["decision"] == "allow"
    });
    assert_eq!(login["user"], "dex:alice");
    assert_eq!(login["name"], "kubegate on test");
    let reuse = gw.wait_audit(|e| {
        e["verb"] == "refresh"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("used before"))
    });
    assert_eq!(reuse["decision"], "deny");
    assert_eq!(reuse["user"], "dex:alice");
    let events = serde_json::to_string(&gw.audit_events()).unwrap();
    for secret in [&refresh1, &code] {
        assert!(
            !events.contains(secret.as_str()),
            "no credential in the audit trail"
        );
    }
}

#[actix_rt::test]
async fn refreshes_are_limited_per_session_and_an_administrator_revokes_everything() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api);
    let (mut jar, _) = log_in_at(&gw.url, "dex", "/").await;
    let code = code_for(&gw, &mut jar).await;
    let (_, tokens) = exchange(&gw, &code).await;
    let mut current = tokens["refresh_token"].as_str().unwrap().to_string();
    let mut limited = None;
    for i in 0..12 {
        let (status, answer) = refresh(&gw, &current).await;
        if status == 429 {
            limited = Some((i, answer));
            break;
        }
        assert_eq!(status, 200, "{answer}");
        current = answer["refresh_token"].as_str().unwrap().to_string();
    }
    let (at, answer) = limited.expect("refreshes are limited");
    assert_eq!(at, 10, "ten a minute: {answer}");
    assert_eq!(answer["error"], "slow_down");
    // another session of the same person (and address) is not limited with it
    let code = code_for(&gw, &mut jar).await;
    let (_, other) = exchange(&gw, &code).await;
    let (status, other) = refresh(&gw, other["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{other}");
    let access = other["access_token"].as_str().unwrap().to_string();

    // an administrator revokes every token and session of the person
    let admin = gw.token("root-admin");
    let (status, refused) = common::http::call(
        "DELETE",
        &format!("{}/pipeline/api/v1/users/dex:alice/tokens", gw.url),
        Some(&access),
        None,
    )
    .await;
    assert_eq!(status, 403, "only global administrators: {refused}");
    let (status, revoked) = common::http::call(
        "DELETE",
        &format!("{}/pipeline/api/v1/users/dex:alice/tokens", gw.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 2, "{revoked}");
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces");
    assert_eq!(get(&pods, &access).await.0, 401);
    let (status, _) = refresh(&gw, other["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
}

#[actix_rt::test]
async fn device_flow() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = gateway(&provider, &api);
    let start = |client: &'static str| {
        let url = format!("{}/auth/cli/device", gw.url);
        async move {
            let mut res = awc::Client::new()
                .post(url)
                .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
                .send_body(format!("client={}", enc(client)))
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 200);
            serde_json::from_slice::<Value>(&res.body().await.unwrap()).unwrap()
        }
    };
    let device = start("kubegate on a server").await;
    let device_code = device["device_code"].as_str().unwrap().to_string();
    let user_code = device["user_code"].as_str().unwrap().to_string();
    assert_eq!(device["interval"], 5);
    assert_eq!(
        device["verification_uri"],
        format!("{}/auth/cli/device/verify", gw.url)
    );
    let poll = || poll(&gw, &device_code);
    let (status, pending) = poll().await;
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending")),
        "{pending}"
    );
    let (status, fast) = poll().await;
    assert_eq!(
        (status, fast["error"].as_str()),
        (400, Some("slow_down")),
        "{fast}"
    );

    // the person confirms in a browser
    let (mut jar, _) = log_in_at(&gw.url, "dex", "/").await;
    let unknown = jar
        .get(&format!(
            "{}/auth/cli/device/verify?user_code=BBBB-BBBB",
            gw.url
        ))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let typed = user_code.to_lowercase().replace('-', " ");
    let page = jar
        .get(&format!(
            "{}/auth/cli/device/verify?user_code={}",
            gw.url,
            enc(&typed)
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("kubegate on a server") && page.text.contains(&user_code),
        "{}",
        page.text
    );
    let csrf = {
        let at = page.text.find("name=\"csrf\" value=\"").unwrap() + 19;
        page.text[at..at + page.text[at..].find('"').unwrap()].to_string()
    };
    // a form without the session's proof is refused
    let forged = jar
        .send(
            "POST",
            &format!("{}/auth/cli/device/verify", gw.url),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&format!(
                "user_code={user_code}&csrf=forged&decision=approve"
            )),
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text);
    let confirmed = jar
        .send(
            "POST",
            &format!("{}/auth/cli/device/verify", gw.url),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&format!(
                "user_code={user_code}&csrf={}&decision=approve",
                enc(&csrf)
            )),
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    assert!(confirmed.text.contains("confirmed"));

    actix_rt::time::sleep(Duration::from_secs(5)).await;
    let (status, tokens) = poll().await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["user"], "dex:alice");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        get(&gw.proxy_url(1, 1, "/api/v1/namespaces"), access)
            .await
            .0,
        200
    );
    // a device code is good once
    actix_rt::time::sleep(Duration::from_secs(5)).await;
    let (status, again) = poll().await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant")),
        "{again}"
    );

    // refused in the browser: access_denied
    let device = start("kubegate elsewhere").await;
    let device_code = device["device_code"].as_str().unwrap().to_string();
    let user_code = device["user_code"].as_str().unwrap();
    let refused = jar
        .send(
            "POST",
            &format!("{}/auth/cli/device/verify", gw.url),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(&format!(
                "user_code={user_code}&csrf={}&decision=deny",
                enc(&csrf)
            )),
        )
        .await;
    assert_eq!(refused.status, 200, "{}", refused.text);
    let (status, denied) = token(
        &gw,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", &device_code),
        ],
    )
    .await;
    assert_eq!(
        (status, denied["error"].as_str()),
        (400, Some("access_denied")),
        "{denied}"
    );

    // a device code past its end: expired_token
    let key = kubegate::gate::tokens::load_signing_key(&gw.config.auth).unwrap();
    let authority = kubegate::gate::tokens::TokenAuthority::new(&gw.config.auth, &key);
    let stale = authority
        .seal(
            "device",
            &json!({"exp": 1_000_000_000u64, "jti": "old", "user_code": "BCDF-GHJK", "client": "x"}),
        )
        .unwrap();
    let (status, expired) = crate::poll(&gw, &stale).await;
    assert_eq!(
        (status, expired["error"].as_str()),
        (400, Some("expired_token")),
        "{expired}"
    );
    // one that is not one is told apart
    let (status, bad) = token(
        &gw,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", "nonsense"),
        ],
    )
    .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (400, Some("invalid_grant")),
        "{bad}"
    );
}
