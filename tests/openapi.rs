//! The OpenAPI document: served, valid OpenAPI 3.1 (openapi-spec-validator), in step
//! with the routes the server answers, and its reference page with a strict CSP.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::gateway::TestGateway;
use common::http::client;
use serde_json::Value;

/// Where `openapi-spec-validator` is: `$OPENAPI_SPEC_VALIDATOR`, the CI's virtualenv, or
/// the `PATH`.
fn validator_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("OPENAPI_SPEC_VALIDATOR") {
        return bin.into();
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/openapi-spec-validator");
    if venv.exists() {
        return venv;
    }
    let found = Command::new("openapi-spec-validator")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "this test needs `openapi-spec-validator`: `pip install openapi-spec-validator` (in \
         .ci/venv, as scripts/test does) or set OPENAPI_SPEC_VALIDATOR"
    );
    "openapi-spec-validator".into()
}

/// A header's value, or "" when it is missing.
fn header(headers: &awc::http::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// `GET url`: status, headers and body.
async fn get(url: &str) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let mut res = client().get(url).send().await.expect("kubegate answers");
    let body = res.body().limit(16 << 20).await.expect("a body");
    (res.status().as_u16(), res.headers().clone(), body.to_vec())
}

#[actix_rt::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let gw = TestGateway::builder().start();
    let (status, headers, body) = get(&format!("{}/pipeline/api/v1/openapi.json", gw.url)).await;
    assert_eq!(status, 200, "no token needed");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert!(header(&headers, "content-type").starts_with("application/json"));
    let document: Value = serde_json::from_slice(&body).expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document, *common::openapi::DOCUMENT);
    for scheme in ["bearer", "cookie"] {
        assert!(
            document["components"]["securitySchemes"][scheme].is_object(),
            "security scheme {scheme}"
        );
    }
    assert_eq!(
        document["components"]["securitySchemes"]["cookie"]["name"],
        "kubegate_session"
    );
    // every error answer has a schema
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, answer) in operation["responses"].as_object().into_iter().flatten() {
                if status.as_str() >= "400" {
                    assert!(
                        answer["content"].is_object(),
                        "{method} {path}: the answer {status} has no schema"
                    );
                }
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new(validator_binary())
        .arg(&file)
        .output()
        .expect("openapi-spec-validator runs");
    assert!(
        out.status.success(),
        "openapi-spec-validator refuses the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every path and method of the document is served: none answers the router's 404 or a
/// 405. (The other way round, every route of the router is in the document, holds by
/// construction and is checked by the unit test `table_and_document_agree`.)
#[actix_rt::test]
async fn every_documented_route_is_served() {
    let gw = TestGateway::builder().member(1, "alice", "admin").start();
    let document = &*common::openapi::DOCUMENT;
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() > 30, "{} paths", paths.len());
    let mut checked = 0;
    for (template, item) in paths {
        let path = template
            .replace("{org}", "1")
            .replace("{id}", "1")
            .replace("{cluster}", "1")
            .replace("{user}", "bob")
            .replace("{provider}", "nowhere")
            .replace("{file}", "index.html");
        assert!(
            !path.contains('{'),
            "a parameter of {template} is not filled in"
        );
        for method in ["get", "put", "post", "delete", "patch"] {
            if item[method].is_null() {
                continue;
            }
            let mut res = client()
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{path}", gw.url),
                )
                .send()
                .await
                .expect("kubegate answers");
            let body = res.body().limit(16 << 20).await.unwrap_or_default();
            let status = res.status().as_u16();
            let text = String::from_utf8_lossy(&body);
            assert!(
                status != 405
                    && !(status == 404
                        && text.contains("the server could not find the requested resource")),
                "{method} {template} is documented but not served: {status} {text}"
            );
            checked += 1;
        }
    }
    assert!(checked > 35, "{checked} routes");
}

#[actix_rt::test]
async fn the_reference_page_has_a_strict_csp_and_its_files() {
    let gw = TestGateway::builder().start();
    let mut res = awc::Client::builder()
        .disable_redirects()
        .finish()
        .get(format!("{}/pipeline/api/v1/docs", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(header(res.headers(), "location"), "/pipeline/api/v1/docs/");
    let _ = res.body().await;

    let (status, headers, body) = get(&format!("{}/pipeline/api/v1/docs/", gw.url)).await;
    assert_eq!(status, 200);
    let csp = header(&headers, "content-security-policy");
    assert_eq!(csp, kubegate::http::openapi::DOCS_CSP);
    assert!(csp.starts_with("default-src 'self';"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    let html = String::from_utf8(body).unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("<style>"),
        "nothing inline: {html}"
    );
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("./") && (s.ends_with(".js") || s.ends_with(".css")))
        .collect();
    assert!(
        assets.len() >= 4,
        "the page's scripts and styles: {assets:?}"
    );
    for asset in assets {
        let (status, headers, _) =
            get(&format!("{}/pipeline/api/v1/docs/{}", gw.url, &asset[2..])).await;
        assert_eq!(status, 200, "{asset}");
        assert_eq!(header(&headers, "content-security-policy"), csp);
    }
    let (_, _, init) = get(&format!(
        "{}/pipeline/api/v1/docs/swagger-initializer.js",
        gw.url
    ))
    .await;
    assert!(
        String::from_utf8_lossy(&init).contains("/pipeline/api/v1/openapi.json"),
        "the page reads kubegate's document"
    );
    let (status, _, body) = get(&format!("{}/pipeline/api/v1/docs/nothing.js", gw.url)).await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_slice(&body).unwrap();
    common::openapi::assert_documented("GET", "/pipeline/api/v1/docs/{file}", 404, &error);
}

/// Answers of the tokens API, the orgs list and login's JSON routes, with a bearer token,
/// are what the document says (the browser session's are checked in tests/login.rs).
#[actix_rt::test]
async fn bearer_answers_are_as_documented() {
    use common::http::call;
    use common::openapi::assert_documented;
    use serde_json::json;
    let gw = TestGateway::builder().member(1, "alice", "admin").start();
    let alice = gw.token("alice");
    let tokens = format!("{}/pipeline/api/v1/tokens", gw.url);

    let (status, made) = call(
        "POST",
        &tokens,
        Some(&alice),
        Some(json!({"name": "ci", "ttl": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_documented("POST", "/pipeline/api/v1/tokens", 201, &made);
    let (status, error) = call("POST", &tokens, Some(&alice), Some(json!({"ttl": "2h"}))).await;
    assert_eq!(status, 400, "{error}");
    assert_documented("POST", "/pipeline/api/v1/tokens", 400, &error);
    let (status, listed) = call("GET", &tokens, Some(&alice), None).await;
    assert_eq!(status, 200, "{listed}");
    assert_documented("GET", "/pipeline/api/v1/tokens", 200, &listed);
    let (status, missing) = call("DELETE", &format!("{tokens}/nope"), Some(&alice), None).await;
    assert_eq!(status, 404, "{missing}");
    assert_documented("DELETE", "/pipeline/api/v1/tokens/{id}", 404, &missing);
    let (status, refused) = call("GET", &tokens, None, None).await;
    assert_eq!(status, 401, "{refused}");
    assert_documented("GET", "/pipeline/api/v1/tokens", 401, &refused);

    let (status, orgs) = call(
        "GET",
        &format!("{}/pipeline/api/v1/orgs", gw.url),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{orgs}");
    assert_documented("GET", "/pipeline/api/v1/orgs", 200, &orgs);
    let (status, me) = call(
        "GET",
        &format!("{}/auth/session", gw.url),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_documented("GET", "/auth/session", 200, &me);
    let (status, providers) = call("GET", &format!("{}/auth/providers", gw.url), None, None).await;
    assert_eq!(status, 200, "{providers}");
    assert_documented("GET", "/auth/providers", 200, &providers);

    let (status, unknown) = call("GET", &gw.proxy_url(1, 9, "/api/v1/pods"), None, None).await;
    assert_eq!(status, 401, "{unknown}");
    assert_documented(
        "GET",
        "/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy/",
        401,
        &unknown,
    );
}

/// The reference page renders in a real headless Chromium under its CSP: Swagger UI's
/// script ran (nothing inline was needed), read kubegate's document and shows its routes,
/// and its stylesheet applied.
#[test]
fn the_reference_page_renders_in_a_browser() {
    let gw = TestGateway::builder().start();
    let browser = common::browser::Browser::start();
    browser.goto(&format!("{}/pipeline/api/v1/docs", gw.url));
    let title = browser.wait_until("Swagger UI's title", |b| {
        b.try_find_css(".swagger-ui .info .title").map(|e| e.text())
    });
    assert!(title.starts_with("kubegate"), "{title}");
    assert_eq!(
        browser.current_url(),
        format!("{}/pipeline/api/v1/docs/", gw.url)
    );
    let operations = browser.wait_until("the operations", |b| {
        let n = b
            .execute(
                "return document.querySelectorAll('.opblock').length;",
                vec![],
            )
            .as_u64()
            .unwrap_or(0);
        (n > 35).then_some(n)
    });
    assert!(operations > 35, "{operations}");
    let font = browser.execute(
        "return getComputedStyle(document.querySelector('.swagger-ui .info .title')).fontFamily;",
        vec![],
    );
    assert!(font.as_str().unwrap_or("").contains("sans-serif"), "{font}");
}
