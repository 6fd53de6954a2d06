//! The end-to-end harness itself: a real headless Chromium (tests/common/browser.rs) fills
//! a form and keeps a cookie, and logs in through the local OAuth2/OIDC provider
//! (tests/common/oidc.rs), whose tokens, PKCE check, consent denial and GitHub API are
//! what kubegate's login tests rely on.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::mpsc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use common::browser::Browser;
use common::gateway::block_on;
use common::oidc::{OidcProvider, ProviderUser, CLIENT_ID, CLIENT_SECRET};
use serde_json::{json, Value};

/// A small web site in its own thread: a login form that sets a cookie, a page and a JSON
/// endpoint that read it, and an OAuth2 redirect target.
struct Site {
    url: String,
    handle: ServerHandle,
}

fn session_of(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get("cookie")?.to_str().ok()?;
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == "session")
        .map(|(_, value)| value.to_string())
}

async fn form() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(
            r#"<!doctype html><title>Sign in</title>
<form method="post" action="/login">
  <input name="username" id="username"> <input name="password" id="password" type="password">
  <button type="submit" id="submit">Sign in</button>
</form>"#,
        )
}

async fn login(form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let ok = form.get("password").map(String::as_str) == Some("open sesame");
    match (ok, form.get("username")) {
        (true, Some(user)) => HttpResponse::SeeOther()
            .insert_header(("Location", "/welcome"))
            .insert_header((
                "Set-Cookie",
                format!("session={user}; Path=/; HttpOnly; SameSite=Lax"),
            ))
            .finish(),
        _ => HttpResponse::Unauthorized()
            .content_type("text/plain")
            .body("wrong password"),
    }
}

async fn welcome(req: HttpRequest) -> HttpResponse {
    match session_of(&req) {
        Some(user) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(format!("<!doctype html><p>Welcome, {user}!</p>")),
        None => HttpResponse::Unauthorized().body("no session"),
    }
}

async fn whoami(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "user": session_of(&req),
        "method": req.method().as_str(),
        "csrf": req.headers().get("x-csrf").and_then(|v| v.to_str().ok()),
    }))
}

async fn callback() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("callback reached")
}

impl Site {
    fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(|| {
                    App::new()
                        .route("/form", web::get().to(form))
                        .route("/login", web::post().to(login))
                        .route("/welcome", web::get().to(welcome))
                        .route("/whoami", web::to(whoami))
                        .route("/callback", web::get().to(callback))
                })
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
                tx.send(server.handle()).unwrap();
                server.await.unwrap();
            })
        });
        Site {
            url,
            handle: rx.recv().unwrap(),
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        block_on(move || async move { handle.stop(false).await });
    }
}

#[test]
fn browser_fills_a_form_keeps_the_cookie_and_fetches_with_it() {
    let site = Site::start();
    let browser = Browser::start();

    browser.goto(&format!("{}/form", site.url));
    browser.find_css("#username").send_keys("alice");
    browser.find_css("#password").send_keys("open sesame");
    browser.find_css("#submit").click();
    browser.wait_until("the welcome page", |b| {
        b.current_url().ends_with("/welcome").then_some(())
    });
    assert_eq!(browser.page_text(), "Welcome, alice!");

    let cookie = browser.cookie("session").expect("the session cookie");
    assert_eq!(cookie.value, "alice");
    assert!(cookie.http_only);
    assert!(!cookie.secure);
    assert_eq!(cookie.same_site.as_deref(), Some("Lax"));
    // HttpOnly: the page's scripts do not see it, the browser still sends it
    assert_eq!(browser.execute("return document.cookie;", vec![]), "");
    let res = browser.fetch(
        "DELETE",
        &format!("{}/whoami", site.url),
        &[("X-CSRF", "1")],
        None,
    );
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        json!({"user": "alice", "method": "DELETE", "csrf": "1"})
    );
    assert_eq!(res.content_type.as_deref(), Some("application/json"));

    let sum = browser.execute_async(
        "const [a, b, done] = arguments; setTimeout(() => done(a + b), 10);",
        vec![json!(2), json!(40)],
    );
    assert_eq!(sum, 42);

    browser.delete_all_cookies();
    assert!(browser.cookies().is_empty());
    browser.goto(&format!("{}/welcome", site.url));
    assert_eq!(browser.page_text(), "no session");

    // a wrong password stays on a 401 page
    browser.goto(&format!("{}/form", site.url));
    browser.find_css("#username").send_keys("alice");
    browser.find_css("#password").send_keys("guess");
    browser.find_css("#submit").click();
    browser.wait_until("the refusal", |b| {
        b.current_url().ends_with("/login").then_some(())
    });
    assert_eq!(browser.page_text(), "wrong password");
    assert!(browser.cookie("session").is_none());
}

/// A PKCE pair (RFC 7636): the verifier and its S256 challenge.
fn pkce_pair(verifier: &str) -> (String, String) {
    // SHA-256 from rustls' ring provider, already a dependency
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let rustls::SupportedCipherSuite::Tls13(suite) = suite else {
        unreachable!("a TLS 1.3 suite")
    };
    let digest = suite.common.hash_provider.hash(verifier.as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    (verifier.to_string(), challenge)
}

fn authorize_url(
    provider: &OidcProvider,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    challenge: Option<&str>,
) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", redirect_uri),
        ("scope", "openid email profile groups"),
        ("state", state),
        ("nonce", nonce),
    ];
    if let Some(challenge) = challenge {
        params.push(("code_challenge", challenge));
        params.push(("code_challenge_method", "S256"));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect();
    format!("{}?{}", provider.authorize_url(), query.join("&"))
}

fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .to_string(),
            )
        })
        .collect()
}

/// POSTs a form to the token endpoint with the client's Basic credentials.
fn exchange(provider: &OidcProvider, form: Vec<(&'static str, String)>) -> (u16, Value) {
    let url = provider.token_url();
    block_on(move || async move {
        let mut res = awc::Client::default()
            .post(url)
            .basic_auth(CLIENT_ID, CLIENT_SECRET)
            .insert_header(("Accept", "application/json"))
            .send_form(&form)
            .await
            .expect("the token endpoint answers");
        let body = res.body().await.unwrap();
        (
            res.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    })
}

fn get_json(url: String, authorization: Option<String>) -> (u16, Value) {
    block_on(move || async move {
        let mut req = awc::Client::default().get(url);
        if let Some(authorization) = authorization {
            req = req.insert_header(("Authorization", authorization));
        }
        match req.send().await {
            Ok(mut res) => {
                let body = res.body().await.unwrap_or_default();
                (
                    res.status().as_u16(),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                )
            }
            Err(_) => (0, Value::Null),
        }
    })
}

/// Logs in through the browser and returns the callback's query.
fn browser_login(browser: &Browser, url: &str) -> HashMap<String, String> {
    browser.goto(url);
    let landed = browser.wait_until("the redirect back", |b| {
        let url = b.current_url();
        url.contains("/callback?").then_some(url)
    });
    assert_eq!(browser.page_text(), "callback reached");
    query_of(&landed)
}

#[test]
fn oidc_provider_logs_the_set_user_in_with_pkce_and_nonce() {
    let site = Site::start();
    let mut provider = OidcProvider::start();
    let browser = Browser::start();
    let redirect_uri = format!("{}/callback", site.url);

    let discovery = get_json(
        format!("{}/.well-known/openid-configuration", provider.issuer()),
        None,
    );
    assert_eq!(discovery.0, 200);
    assert_eq!(discovery.1["issuer"], provider.issuer());
    assert_eq!(discovery.1["token_endpoint"], provider.token_url());
    assert_eq!(
        discovery.1["authorization_endpoint"],
        provider.authorize_url()
    );
    assert_eq!(discovery.1["jwks_uri"], provider.jwks_url());

    provider.set_user(&ProviderUser::named("bob").groups(&["acme", "acme/viewers"]));
    let (verifier, challenge) = pkce_pair("a-verifier-of-at-least-43-characters-0123456789");

    // without the verifier, the code is refused (and spent)
    let back = browser_login(
        &browser,
        &authorize_url(&provider, &redirect_uri, "s1", "n1", Some(&challenge)),
    );
    assert_eq!(back["state"], "s1");
    let (status, body) = exchange(
        &provider,
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", back["code"].clone()),
            ("redirect_uri", redirect_uri.clone()),
        ],
    );
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_grant")),
        "{body}"
    );

    // a wrong verifier is refused too
    let back = browser_login(
        &browser,
        &authorize_url(&provider, &redirect_uri, "s2", "n2", Some(&challenge)),
    );
    let (status, body) = exchange(
        &provider,
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", back["code"].clone()),
            ("redirect_uri", redirect_uri.clone()),
            ("code_verifier", "x".repeat(43)),
        ],
    );
    assert_eq!(status, 400, "{body}");

    // the right one gets tokens; the ID token has the nonce and the user's claims
    let back = browser_login(
        &browser,
        &authorize_url(&provider, &redirect_uri, "s3", "n3", Some(&challenge)),
    );
    let token_form = vec![
        ("grant_type", "authorization_code".into()),
        ("code", back["code"].clone()),
        ("redirect_uri", redirect_uri.clone()),
        ("code_verifier", verifier.clone()),
    ];
    let (status, tokens) = exchange(&provider, token_form.clone());
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().expect("an ID token");
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    let (_, jwks) = get_json(provider.jwks_url(), None);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let key = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the key in the JWKS");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&[provider.issuer()]);
    let claims = jsonwebtoken::decode::<Value>(
        id_token,
        &jsonwebtoken::DecodingKey::from_jwk(key).unwrap(),
        &validation,
    )
    .expect("the ID token verifies against the JWKS")
    .claims;
    assert_eq!(claims["nonce"], "n3");
    assert_eq!(claims["sub"], "bob-sub");
    assert_eq!(claims["email"], "bob@example.org");
    assert_eq!(claims["preferred_username"], "bob");
    assert_eq!(claims["groups"], json!(["acme", "acme/viewers"]));

    // a code works once
    let (status, _) = exchange(&provider, token_form);
    assert_eq!(status, 400);

    // the GitHub API answers for the access token's user
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let (status, user) = get_json(
        format!("{}/user", provider.api_url()),
        Some(format!("token {access}")),
    );
    assert_eq!(status, 200);
    assert_eq!(user["login"], "bob");
    assert!(user["id"].is_u64());
    let (_, orgs) = get_json(
        format!("{}/user/orgs", provider.api_url()),
        Some(format!("Bearer {access}")),
    );
    assert_eq!(orgs, json!([{"login": "acme", "id": orgs[0]["id"]}]));
    let (_, teams) = get_json(
        format!("{}/user/teams", provider.api_url()),
        Some(format!("Bearer {access}")),
    );
    assert_eq!(teams[0]["slug"], "viewers");
    assert_eq!(teams[0]["organization"]["login"], "acme");
    let (status, _) = get_json(format!("{}/user", provider.api_url()), None);
    assert_eq!(status, 401);
    let (status, _) = get_json(
        format!("{}/user", provider.api_url()),
        Some("Bearer not-a-token".into()),
    );
    assert_eq!(status, 401);

    // what the provider saw: PKCE S256 and the nonce on every authorize request
    let authorizes: Vec<Value> = provider
        .requests()
        .into_iter()
        .filter(|r| r["endpoint"] == "authorize")
        .collect();
    assert_eq!(authorizes.len(), 3);
    assert!(authorizes
        .iter()
        .all(|r| r["code_challenge_method"] == "S256" && r["nonce"].is_string()));

    // no PKCE: refused back to the client
    let back = browser_login(
        &browser,
        &authorize_url(&provider, &redirect_uri, "s4", "n4", None),
    );
    assert_eq!(back["error"], "invalid_request");
    assert_eq!(back["state"], "s4");

    // consent refused
    provider.set_user(&ProviderUser::named("carol").denied());
    let back = browser_login(
        &browser,
        &authorize_url(&provider, &redirect_uri, "s5", "n5", Some(&challenge)),
    );
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], "s5");
    assert!(!back.contains_key("code"));

    // down: the browser cannot reach it
    provider.stop();
    let err = browser
        .try_goto(&authorize_url(
            &provider,
            &redirect_uri,
            "s6",
            "n6",
            Some(&challenge),
        ))
        .expect_err("the provider is down");
    assert!(err.message.contains("ERR_CONNECTION_REFUSED"), "{err}");
}
