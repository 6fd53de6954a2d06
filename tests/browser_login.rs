//! Login in a real headless Chromium (Debian `chromium` + `chromium-driver`): through a
//! local OIDC provider (npm `oauth2-mock-server`) and through the LDAP form against a
//! real `slapd`; land on the requested page, get a token, use the cookie alone on the
//! proxy route, see a cross-site page refused, log out, be refused after.

mod common;

use common::apiserver::ApiServer;
use common::browser::Browser;
use common::gateway::{block_on, TestGateway};
use common::ldap::Slapd;
use common::oidc::OidcProvider;
use kubegate::config::login::ProviderConfig;
use serde_json::Value;

fn get_with_token(url: String, token: String) -> u16 {
    block_on(move || async move { common::http::call("GET", &url, Some(&token), None).await.0 })
}

#[test]
fn oidc_login_in_a_browser() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = provider.gateway(&api);
    let browser = Browser::start();
    let target = "/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces";

    // the whole dance, in the browser: the page -> kubegate's login (dex is the only
    // provider, so the default) -> the provider -> kubegate -> the page
    browser.goto(&format!("{}{target}", gw.url));
    let landed = browser.wait_until("the requested page", |b| {
        let url = b.current_url();
        url.ends_with(target).then_some(url)
    });
    assert_eq!(landed, format!("{}{target}", gw.url));
    let page: Value = serde_json::from_str(&browser.page_text()).expect("the JSON list");
    assert_eq!(page["kind"], "NamespaceList");
    let cookie = browser
        .cookie("kubegate_session")
        .expect("the session cookie");
    assert!(cookie.http_only, "scripts cannot read it");
    assert_eq!(cookie.same_site.as_deref(), Some("Lax"));

    // a token, as the Pipeline UI gets one; it works without the browser
    let made = browser.fetch("GET", "/pipeline/api/v1/token", &[], None);
    assert_eq!(made.status, 201, "{}", made.body);
    let token = made.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        get_with_token(gw.proxy_url(1, 1, "/api/v1/namespaces"), token),
        200
    );

    // a same-origin script may write (the browser says Sec-Fetch-Site: same-origin)
    let created = browser.fetch(
        "POST",
        target,
        &[("Content-Type", "application/json")],
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"from-the-page"}}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);

    // a page of another origin (the provider's, another port: same site, other origin)
    // cannot make this browser write, though the browser sends the cookie along
    browser.goto(&format!(
        "{}/.well-known/openid-configuration",
        provider.issuer()
    ));
    let hostile = format!("{}{target}", gw.url);
    let outcome = browser.execute_async(
        r#"const [url, done] = arguments;
           fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
                       body: '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"hostile"}}'})
             .then(() => done("sent"), e => done(String(e)));"#,
        vec![Value::from(hostile)],
    );
    assert_eq!(outcome, "sent", "the browser sent it (no-cors)");
    let refused = gw.wait_audit(|e| e["method"] == "POST" && e["status"] == 403);
    assert_eq!(
        refused["user"], "dex:alice",
        "the cookie came along: {refused}"
    );
    assert!(
        api.get_object("", "namespaces", "hostile").is_none(),
        "nothing reached the API server"
    );

    // log out from a kubegate page, then the cookie is gone and the page is refused
    browser.goto(&format!("{}/", gw.url));
    assert!(browser.page_text().contains("dex:alice"));
    browser.find_css("#logout").click();
    browser.wait_until("the logged-out landing page", |b| {
        b.page_text().contains("Log in with dex").then_some(())
    });
    assert!(browser.cookie("kubegate_session").is_none());
    // (from a page without the landing page's Content-Security-Policy, which allows no
    // fetch at all)
    browser.goto(&format!("{}/auth/providers", gw.url));
    let after = browser.fetch("GET", target, &[], None);
    assert_eq!(after.status, 401, "{}", after.body);
    assert_eq!(after.json()["kind"], "Status");
    // opening the page itself starts a new login (at this provider, one without a
    // login page, that is a new session at once)
    let logins = || {
        gw.audit_events()
            .iter()
            .filter(|e| e["verb"] == "login")
            .count()
    };
    let before = logins();
    let earlier: Vec<Value> = gw
        .audit_events()
        .into_iter()
        .filter(|e| e["verb"] == "login")
        .map(|e| e["request_id"].clone())
        .collect();
    browser.goto(&format!("{}{target}", gw.url));
    browser.wait_until("the page again", |b| {
        b.page_text().contains("NamespaceList").then_some(())
    });
    // (the login's audit event may reach the trail a little after the page: the workers
    // and the Auditor write in batches)
    gw.wait_audit(|e| e["verb"] == "login" && !earlier.contains(&e["request_id"]));
    assert_eq!(logins(), before + 1, "through a new login");
}

#[test]
fn ldap_login_in_a_browser() {
    let slapd = Slapd::start();
    let api = ApiServer::start();
    let settings = slapd.settings();
    let gw = TestGateway::builder()
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .configure(move |c| {
            c.login
                .providers
                .insert("corp".into(), ProviderConfig::Ldap(settings));
            c.login.role_rules = vec![toml::from_str(
                "provider = \"corp\"\ngroup = \"kube-admins\"\norg = 1\nrole = \"admin\"",
            )
            .unwrap()];
            c.server.rate_limit_per_minute = 0;
        })
        .start();
    let browser = Browser::start();
    let target = "/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces";
    browser.goto(&format!("{}/auth/corp/login?redirect={target}", gw.url));

    // a wrong password: the form again, with the error
    browser.find_css("#username").send_keys("alice");
    browser.find_css("#password").send_keys("not-her-password");
    browser.find_css("#login").click();
    browser.wait_until("the error", |b| {
        b.page_text()
            .contains("wrong user name or password")
            .then_some(())
    });
    assert!(browser
        .cookie("kubegate_session")
        .is_some_and(|c| c.http_only));
    let refused = gw.wait_audit(|e| e["verb"] == "login" && e["status"] == 401);
    assert_eq!(
        refused["user"], "alice",
        "the name tried is recorded: {refused}"
    );
    assert!(!refused.to_string().contains("not-her-password"));

    // the right one: the requested page, as corp:alice, admin by her group
    browser.find_css("#username").send_keys("alice");
    browser.find_css("#password").send_keys("alice-secret");
    browser.find_css("#login").click();
    browser.wait_until("the requested page", |b| {
        b.current_url().ends_with(target).then_some(())
    });
    let page: Value = serde_json::from_str(&browser.page_text()).expect("the JSON list");
    assert_eq!(page["kind"], "NamespaceList");
    let who = browser.fetch("GET", "/auth/session", &[], None).json();
    assert_eq!(who["user"], "corp:alice");
    assert!(who["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "kube-admins"));
}
