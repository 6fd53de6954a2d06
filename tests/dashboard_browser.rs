//! The Kubernetes dashboard through kubegate in a real headless Chromium (Debian
//! `chromium` + `chromium-driver`), logged in through a local OIDC provider (npm
//! `oauth2-mock-server`): the page, its stylesheet and script, the script's API call and
//! the API server's absolute links all stay under kubegate's prefix.

mod common;

use common::apiserver::ApiServer;
use common::browser::Browser;
use common::oidc::OidcProvider;
use serde_json::Value;

#[test]
fn the_dashboard_in_a_browser() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    let gw = provider.gateway(&api);
    let browser = Browser::start();
    let prefix = "/pipeline/api/v1/orgs/1/clusters/1/proxy";
    let service = "/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy";

    // the address without the trailing slash, as people type it: login, then the API
    // server's redirect to `.../proxy/`, kept under kubegate's prefix
    browser.goto(&format!("{}{prefix}{service}", gw.url));
    let page = format!("{}{prefix}{service}/", gw.url);
    browser.wait_until("the dashboard page", |b| {
        (b.current_url() == page).then_some(())
    });
    // the script ran (relative URL) and its API call came back (relative URL, the cookie)
    let status = browser.wait_until("the dashboard's API answer", |b| {
        let text = b.find_css("#status").text();
        (text != "loading").then_some(text)
    });
    assert_eq!(status, "dashboard v2.7.0");
    // the stylesheet applied (relative URL)
    let font = browser.execute("return getComputedStyle(document.body).fontFamily;", vec![]);
    assert!(font.as_str().unwrap_or("").contains("Roboto"), "{font}");
    // the link the API server made absolute now points under kubegate's prefix
    let workloads = browser.execute("return document.querySelector('nav a').href;", vec![]);
    assert_eq!(
        workloads,
        Value::from(format!("{}{prefix}{service}/#/workloads", gw.url))
    );
    // and every request the browser made went to the API server as its own paths
    let seen: Vec<String> = api.requests().into_iter().map(|r| r.path).collect();
    for path in ["/", "/styles.css", "/main.js", "/api/v1/login/status"] {
        assert!(
            seen.contains(&format!("{service}{path}")),
            "{path} not among {seen:?}"
        );
    }
}
