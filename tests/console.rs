//! The console at `/` and the two routes it needs beside the rest of the API: a cluster's
//! reachability and Kubernetes version (`.../clusters/{id}/status`), and the audit trail
//! counted per minute (`.../audit/histogram`). The console itself is driven in a real
//! headless Chromium after an OIDC login; its screenshots go to `target/console/` (and
//! to `docs/console/` with `KUBEGATE_CONSOLE_SCREENSHOTS=docs`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::browser::Browser;
use common::gateway::{block_on, TestGateway};
use common::http::call;
use common::oidc::{OidcProvider, ProviderUser};
use common::openapi::assert_documented;
use serde_json::{json, Value};

const STATUS: &str = "/pipeline/api/v1/orgs/{org}/clusters/{id}/status";
const HISTOGRAM: &str = "/pipeline/api/v1/orgs/{org}/audit/histogram";

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[actix_rt::test]
async fn cluster_status_says_reachable_with_the_version_or_why_not() {
    let api = ApiServer::start();
    let closed = api
        .kubeconfig_with_client_cert()
        .replace(api.url(), &format!("https://127.0.0.1:{}", closed_port()));
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .member(2, "carol", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .cluster(1, "gone", &closed)
        .cluster(1, "untrusted", &api.kubeconfig_with_untrusted_client_cert())
        .start();
    let [dev, gone, untrusted] = gw.cluster_ids[..] else {
        panic!("three clusters")
    };
    let bob = gw.token("bob");
    let url = |id: u64| format!("{}/pipeline/api/v1/orgs/1/clusters/{id}/status", gw.url);
    // the cluster runs the dashboard: its Service is there
    api.put_object(
        "kube-system",
        "services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes-dashboard"}}),
    );

    // a member may see it
    let (status, up) = call("GET", &url(dev), Some(&bob), None).await;
    assert_eq!(status, 200, "{up}");
    assert_documented("GET", STATUS, 200, &up);
    assert_eq!(up["reachable"], true, "{up}");
    assert!(up["version"].as_str().unwrap().starts_with("v1."), "{up}");
    assert!(up["reason"].is_null());
    assert_eq!(up["dashboard"], true, "{up}");

    // kept: the API server is not asked again within 30 s
    api.clear_requests();
    let (_, again) = call("GET", &url(dev), Some(&bob), None).await;
    assert_eq!(again, up);
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.path_and_query() == "/version"),
        "answered from the cache"
    );

    // nothing listens: an answer, not an error, and soon
    let started = Instant::now();
    let (status, down) = call("GET", &url(gone), Some(&bob), None).await;
    assert_eq!(status, 200, "{down}");
    assert_documented("GET", STATUS, 200, &down);
    assert_eq!(down["reachable"], false, "{down}");
    assert!(down["version"].is_null());
    assert_eq!(down["dashboard"], false, "{down}");
    assert!(!down["reason"].as_str().unwrap().is_empty(), "{down}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // the TLS handshake fails
    let (status, refused) = call("GET", &url(untrusted), Some(&bob), None).await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["reachable"], false, "{refused}");

    // no such cluster; not an org of carol's
    let (status, missing) = call("GET", &url(99), Some(&bob), None).await;
    assert_eq!(status, 404, "{missing}");
    assert_documented("GET", STATUS, 404, &missing);
    let (status, foreign) = call("GET", &url(dev), Some(&gw.token("carol")), None).await;
    assert_eq!(status, 403, "{foreign}");
    assert_documented("GET", STATUS, 403, &foreign);
}

/// Waits until the audit histogram of org 1 (with `query`) counts at least `want`
/// requests in all, and returns it.
async fn histogram_with(gw: &TestGateway, token: &str, query: &str, want: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = call(
            "GET",
            &format!("{}/pipeline/api/v1/orgs/1/audit/histogram?{query}", gw.url),
            Some(token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let total: u64 = answer["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b["allow"].as_u64().unwrap()
                    + b["deny"].as_u64().unwrap()
                    + b["error"].as_u64().unwrap()
            })
            .sum();
        if total >= want || Instant::now() > deadline {
            return answer;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sum(histogram: &Value, decision: &str) -> u64 {
    histogram["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[decision].as_u64().unwrap())
        .sum()
}

#[actix_rt::test]
async fn the_audit_histogram_counts_per_minute_by_decision() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let (alice, bob) = (gw.token("alice"), gw.token("bob"));
    for _ in 0..3 {
        let (status, _) = call(
            "GET",
            &gw.proxy_url(1, 1, "/api/v1/namespaces"),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    // a member may not read the audit trail: two denials
    for _ in 0..2 {
        let (status, refused) = call(
            "GET",
            &format!("{}/pipeline/api/v1/orgs/1/audit/histogram", gw.url),
            Some(&bob),
            None,
        )
        .await;
        assert_eq!(status, 403, "{refused}");
        assert_documented("GET", HISTOGRAM, 403, &refused);
    }

    let all = histogram_with(&gw, &alice, "", 5).await;
    assert_documented("GET", HISTOGRAM, 200, &all);
    assert_eq!(all["bucketSeconds"], 60);
    let buckets = all["buckets"].as_array().unwrap();
    assert!(
        (60..=61).contains(&buckets.len()),
        "an hour of minutes: {}",
        buckets.len()
    );
    assert!(sum(&all, "allow") >= 3, "{all}");
    assert_eq!(sum(&all, "deny"), 2, "{all}");
    // minutes in order, a minute apart
    let times: Vec<std::time::SystemTime> = buckets
        .iter()
        .map(|b| humantime::parse_rfc3339(b["time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times
        .windows(2)
        .all(|w| w[1].duration_since(w[0]).unwrap() == Duration::from_secs(60)));

    // the audit query's filters
    let bobs = histogram_with(&gw, &alice, "user=bob", 2).await;
    assert_eq!((sum(&bobs, "allow"), sum(&bobs, "deny")), (0, 2), "{bobs}");
    let denied = histogram_with(&gw, &alice, "decision=deny", 2).await;
    assert_eq!(sum(&denied, "allow"), 0, "{denied}");
    let listed = histogram_with(&gw, &alice, "verb=list&cluster=1", 3).await;
    assert_eq!(sum(&listed, "allow"), 3, "{listed}");

    // a range in the past holds nothing; one longer than a day is refused, plainly
    let old = histogram_with(
        &gw,
        &alice,
        "since=2020-01-01T00:00:00Z&until=2020-01-01T01:00:00Z",
        0,
    )
    .await;
    assert_eq!(old["since"], "2020-01-01T00:00:00Z");
    assert_eq!(old["buckets"].as_array().unwrap().len(), 60);
    assert_eq!(sum(&old, "allow"), 0);
    for (query, says) in [
        (
            "since=2020-01-01T00:00:00Z&until=2020-01-03T00:00:00Z",
            "at most 1440",
        ),
        (
            "since=2020-01-02T00:00:00Z&until=2020-01-01T00:00:00Z",
            "since must be before until",
        ),
        ("limit=10", "not paged"),
        ("decision=maybe", "decision"),
    ] {
        let (status, error) = call(
            "GET",
            &format!("{}/pipeline/api/v1/orgs/1/audit/histogram?{query}", gw.url),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {error}");
        assert_documented("GET", HISTOGRAM, 400, &error);
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{query}: {error}"
        );
    }
}

/// Where screenshots go: `target/console/`, or `docs/console/` when
/// `KUBEGATE_CONSOLE_SCREENSHOTS=docs` (the set committed for the README).
fn screenshot_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var("KUBEGATE_CONSOLE_SCREENSHOTS").as_deref() {
        Ok("docs") => root.join("docs/console"),
        _ => root.join("target/console"),
    }
}

/// Waits for the console to have loaded its page (`body[data-ready]`) after a navigation.
fn open(browser: &Browser, url: &str, ready: &str) {
    browser.goto(url);
    browser.wait_until(ready, |b| b.try_find_css(ready).map(|_| ()));
}

fn csp_violations(browser: &Browser) -> String {
    browser
        .execute(
            "const b = document.getElementById('csp-violations'); return b ? b.dataset.count + ' ' + b.textContent : 'none';",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Writes an exec session's recording and its audit event as kubegate would (the trail is
/// the JSON-lines file; the recording a file of `audit.recordings_dir`).
fn recorded_session(gw: &TestGateway) -> String {
    let id = "0000feed0000beef0000cafe00000001".to_string();
    let dir = gw.config.audit.recordings_dir.join("1");
    std::fs::create_dir_all(&dir).unwrap();
    let cast = [
        json!({"version": 2, "width": 80, "height": 24, "timestamp": 1_767_225_600}).to_string(),
        json!([0.1, "o", "\u{1b}[1;32mroot@web-0\u{1b}[0m:/# "]).to_string(),
        json!([0.5, "i", "ls\r"]).to_string(),
        json!([0.6, "o", "ls\r\nbin  etc  usr\r\n"]).to_string(),
        json!([0.9, "o", "root@web-0:/# exit\r\n"]).to_string(),
    ]
    .join("\n");
    std::fs::write(dir.join(format!("{id}.cast")), cast + "\n").unwrap();
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let event = json!({
        "time": now, "request_id": id, "user": "dex:alice", "org": 1, "cluster": 1,
        "verb": "connect", "resource": "pods", "subresource": "exec", "namespace": "default",
        "name": "web-0", "method": "GET", "path": "/api/v1/namespaces/default/pods/web-0/exec",
        "query": "command=sh&stdin=true&stdout=true&tty=true", "client": "127.0.0.1",
        "user_agent": "kubectl", "status": 101, "duration_ms": 900.0, "bytes_in": 3,
        "bytes_out": 60, "decision": "allow", "reason": "", "ended": "client closed",
        "recording": {"id": id, "bytes": 200},
    });
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&gw.config.audit.file)
        .unwrap();
    writeln!(file, "{event}").unwrap();
    id
}

/// An admin logs in, sees the cluster reachable with its version, adds a cluster from a
/// bad kubeconfig (the field to fix is shown) and from a good file, makes a token (shown
/// once) and revokes it, adds a member, filters the audit trail and sees its chart, opens
/// an event and plays its recording; then the member logs in and has no admin controls,
/// and the API refuses them. No page breaks its Content-Security-Policy.
#[test]
fn the_console_in_a_browser() {
    let provider = OidcProvider::start();
    let api = ApiServer::start();
    // the provider's gateway (org 1's admins are acme/admins at dex, alice among them),
    // over HTTPS (kubectl sends no token over plain HTTP), alice a global administrator
    let dex = provider.oidc_settings();
    let offline = api
        .kubeconfig_with_client_cert()
        .replace(api.url(), &format!("https://127.0.0.1:{}", closed_port()));
    let gw = TestGateway::builder()
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .cluster(1, "offline", &offline)
        .https()
        .configure(move |c| {
            c.login.providers.insert("dex".into(), dex);
            c.login.role_rules = vec![toml::from_str(
                "provider = \"dex\"\ngroup = \"acme/admins\"\norg = 1\nrole = \"admin\"",
            )
            .unwrap()];
            c.server.rate_limit_per_minute = 0;
            c.policy.global_admins = vec!["dex:alice".into()];
        })
        .start();
    let base = gw.https_url.clone().expect("HTTPS");
    let browser = Browser::start();
    let shots = screenshot_dir();

    // not logged in: the login links; the console after the login
    browser.goto(&format!("{}/", base));
    assert!(browser.page_text().contains("Log in with dex"));
    open(
        &browser,
        &format!("{}/auth/dex/login?redirect=/", base),
        "body[data-ready]",
    );
    assert_eq!(browser.find_css("#user").text(), "dex:alice");
    let version = browser.wait_until("the cluster's version", |b| {
        b.try_find_css("tr[data-name=dev] .version")
            .map(|e| e.text())
    });
    assert!(version.starts_with("Kubernetes v1."), "{version}");
    assert_eq!(
        browser.find_css("tr[data-name=dev] .reachable").text(),
        "reachable"
    );
    // the dashboard link only where the cluster runs one (none does here)
    assert!(
        browser
            .find_css("tr[data-name=dev] a.dashboard")
            .attribute("hidden")
            .is_some(),
        "no dashboard link for a cluster without the dashboard"
    );
    assert!(
        browser.page_text().contains(api.url()),
        "the server is shown"
    );
    // an API server that cannot be reached says so, with the reason
    let reason = browser.wait_until("the offline cluster's reason", |b| {
        b.try_find_css("tr[data-name=offline] .reason")
            .map(|e| e.text())
    });
    assert_eq!(
        browser
            .find_css("tr[data-name=offline] .unreachable")
            .text(),
        "unreachable"
    );
    assert!(reason.contains("cannot be reached"), "{reason}");
    let config = browser
        .find_css("tr[data-name=dev] a.kubeconfig")
        .attribute("href")
        .unwrap();
    let downloaded = browser.fetch("GET", &config, &[], None);
    assert_eq!(downloaded.status, 200);
    assert!(
        downloaded.body.contains(&base),
        "a kubeconfig pointing at kubegate"
    );

    // a kubeconfig without a server: the API's error, and the field to fix
    browser.find_css("#cluster-name").send_keys("broken");
    browser.find_css("#cluster-kubeconfig").send_keys(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nclusters:\n- name: k\n  cluster: {}\nusers:\n- name: u\n  user: {token: abc}\n",
    );
    browser.find_css("#add-cluster-submit").click();
    let error = browser.wait_until("the kubeconfig's error", |b| {
        let text = b.find_css("#add-cluster-error").text();
        (!text.is_empty()).then_some(text)
    });
    assert!(error.contains("invalid kubeconfig"), "{error}");
    assert_eq!(
        browser
            .find_css("#cluster-kubeconfig")
            .attribute("aria-invalid")
            .as_deref(),
        Some("true")
    );
    let hint = browser.find_css("#add-cluster .field-hint").text();
    assert!(
        hint.starts_with("Field to fix in the kubeconfig:"),
        "{hint}"
    );
    browser.screenshot(&shots.join("add-cluster-error.png"));

    // from a file: listed and reachable
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("second.yaml");
    std::fs::write(&file, api.kubeconfig_with_client_cert()).unwrap();
    browser
        .find_css("#cluster-name")
        .clear()
        .send_keys("second");
    browser
        .find_css("#cluster-file")
        .send_keys(file.to_str().unwrap());
    browser.wait_until("the file read into the text area", |b| {
        let value = b.execute(
            "return document.getElementById('cluster-kubeconfig').value;",
            vec![],
        );
        value
            .as_str()
            .unwrap_or("")
            .contains("certificate-authority-data")
            .then_some(())
    });
    browser.find_css("#add-cluster-submit").click();
    browser.wait_until("the new cluster, reachable", |b| {
        b.try_find_css("tr[data-name=second] .reachable")
            .map(|_| ())
    });
    browser.screenshot(&shots.join("clusters.png"));

    // a kubeconfig with a token, downloaded, used by the real kubectl
    browser
        .find_css("tr[data-name=dev] button.token-kubeconfig")
        .click();
    let saved = browser.downloads().join("kubeconfig-dev-token.yaml");
    browser.wait_until("the kubeconfig downloaded", |_| {
        saved.exists().then_some(())
    });
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::kubectl::kubectl_bin())
        .env("HOME", home.path())
        .args([
            "--kubeconfig",
            saved.to_str().unwrap(),
            "get",
            "namespaces",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("namespace/default"),
        "kubectl with the console's kubeconfig: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // new credentials for the offline cluster: reachable at once (its status is not kept
    // past a change); a cluster deleted
    browser
        .find_css("tr[data-name=offline] button.replace")
        .click();
    browser.execute(
        "document.querySelector('form[id^=replace-] textarea').value = arguments[0]; return null;",
        vec![Value::from(api.kubeconfig_with_client_cert())],
    );
    browser
        .find_css("form[id^=replace-] button[type=submit]")
        .click();
    browser.wait_until("the offline cluster reachable", |b| {
        b.try_find_css("tr[data-name=offline] .reachable")
            .map(|_| ())
    });
    let delete = "tr[data-name=second] button.danger";
    browser.find_css(delete).click();
    browser.find_css(delete).click();
    browser.wait_until("the cluster gone", |b| {
        b.try_find_css("tr[data-name=second]")
            .is_none()
            .then_some(())
    });

    // a token, shown once, that works; revoked, refused
    open(&browser, &format!("{}/#tokens", base), "#create-token");
    browser
        .find_css("#token-name")
        .send_keys("from the console");
    browser
        .find_css("#create-token button[type=submit]")
        .click();
    let token = browser.wait_until("the new token", |b| {
        b.try_find_css("#token-value").map(|e| e.text())
    });
    assert!(
        browser.try_find_css("#copy-token").is_some(),
        "a copy button"
    );
    let orgs = format!("{}/pipeline/api/v1/orgs", gw.url);
    let (o, t) = (orgs.clone(), token.clone());
    assert_eq!(
        block_on(move || async move { call("GET", &o, Some(&t), None).await.0 }),
        200
    );
    browser.screenshot(&shots.join("tokens.png"));
    open(
        &browser,
        &format!("{}/?again#tokens", base),
        "#tokens tr[data-id]",
    );
    assert!(token.len() > 20, "{token:?}");
    assert!(
        !browser.page_text().contains(&token),
        "shown once: {token:?} in {}",
        browser.page_text()
    );
    let revoke = browser.wait_until("the token's row", |b| {
        b.execute(
            "const r = [...document.querySelectorAll('#tokens tr')].find(r => r.textContent.includes('from the console')); return r ? r.dataset.id : null;",
            vec![],
        )
        .as_str()
        .map(str::to_string)
    });
    let button = format!("#tokens tr[data-id='{revoke}'] button.danger");
    browser.find_css(&button).click();
    browser.find_css(&button).click();
    browser.wait_until("the token revoked", |b| {
        let row = b.execute(
            "const r = document.querySelector(`#tokens tr[data-id='${arguments[0]}']`); return r ? r.textContent : '';",
            vec![Value::from(revoke.clone())],
        );
        row.as_str().unwrap_or("").contains("revoked").then_some(())
    });
    let (o, t) = (orgs.clone(), token.clone());
    assert_eq!(
        block_on(move || async move { call("GET", &o, Some(&t), None).await.0 }),
        401
    );

    // a member
    open(&browser, &format!("{}/#members", base), "#add-member");
    browser.find_css("#member-user").send_keys("dex:bob");
    browser.find_css("#add-member button[type=submit]").click();
    browser.wait_until("bob listed", |b| {
        b.try_find_css("tr[data-user='dex:bob']").map(|_| ())
    });
    browser.screenshot(&shots.join("members.png"));
    // a role changed, and back
    let role = |b: &Browser| {
        b.execute(
            "const s = document.querySelector(`tr[data-user='dex:bob'] select`); return s ? s.value : null;",
            vec![],
        )
    };
    for (to, back) in [("admin", "member"), ("member", "admin")] {
        assert_eq!(role(&browser), back);
        browser.execute(
            "const r = document.querySelector(`tr[data-user='dex:bob']`); r.dataset.before = 'yes'; r.querySelector('select').value = arguments[0]; return null;",
            vec![Value::from(to)],
        );
        browser
            .find_css("tr[data-user='dex:bob'] button.save-role")
            .click();
        browser.wait_until("the role changed", |b| {
            let fresh = b
                .try_find_css("tr[data-user='dex:bob']:not([data-before])")
                .is_some();
            (fresh && role(b) == to).then_some(())
        });
    }
    // a member added and removed
    browser.find_css("#member-user").send_keys("dex:carol");
    browser.find_css("#add-member button[type=submit]").click();
    let remove = "tr[data-user='dex:carol'] button.danger";
    browser.wait_until("carol listed", |b| b.try_find_css(remove).map(|_| ()));
    browser.find_css(remove).click();
    browser.find_css(remove).click();
    browser.wait_until("carol removed", |b| {
        b.try_find_css("tr[data-user='dex:carol']")
            .is_none()
            .then_some(())
    });

    // the audit trail: filtered, charted, one event whole, a recording played
    // more than a page of alice's events (pages are 50)
    let (alice, namespaces) = (
        gw.token("dex:alice"),
        gw.proxy_url(1, 1, "/api/v1/namespaces"),
    );
    block_on(move || async move {
        for _ in 0..60 {
            assert_eq!(call("GET", &namespaces, Some(&alice), None).await.0, 200);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .audit_events()
        .iter()
        .filter(|e| e["resource"] == "namespaces" && e["user"] == "dex:alice")
        .count()
        < 60
    {
        assert!(Instant::now() < deadline, "the events reach the audit file");
        std::thread::sleep(Duration::from_millis(50));
    }
    // then the recorded session: the newest event
    let session = recorded_session(&gw);
    open(&browser, &format!("{}/#audit", base), "#audit-filters");
    browser.find_css("#audit-user").send_keys("dex:alice");
    browser.find_css("#audit-apply").click();
    let total = browser.wait_until("the chart", |b| {
        b.try_find_css("#audit-chart")
            .and_then(|c| c.attribute("data-total"))
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
    });
    assert!(total >= 3, "{total}");
    let bars = browser.execute(
        "return document.querySelectorAll('#audit-chart-svg rect').length;",
        vec![],
    );
    assert!(bars.as_u64().unwrap() > 0, "bars drawn");
    let users = browser.execute(
        "return [...document.querySelectorAll('#audit-events tr.event td:nth-child(2)')].map(t => t.textContent);",
        vec![],
    );
    let users = users.as_array().unwrap();
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "dex:alice"),
        "{users:?}"
    );
    browser.execute("window.scrollTo(0, 0); return null;", vec![]);
    browser.screenshot(&shots.join("audit.png"));
    // the next page, and back
    let first_ids = |b: &Browser| {
        b.execute(
            "return [...document.querySelectorAll('#audit-events tr.event')].map(r => r.dataset.request).join(' ');",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    };
    let page_one = first_ids(&browser);
    assert_eq!(page_one.split(' ').count(), 50, "a full page");
    browser.find_css("#audit-older").click();
    let page_two = browser.wait_until("the second page", |b| {
        let ids = first_ids(b);
        (b.page_text().contains("page 2") && ids != page_one).then_some(ids)
    });
    assert!(
        page_two.split(' ').all(|id| !page_one.contains(id)),
        "no event on both pages"
    );
    browser.find_css("#audit-newer").click();
    // (newest first: page 1 again, with the audit reads made since on top)
    browser.wait_until("the first page again", |b| {
        let newer = b.find_css("#audit-newer").attribute("disabled");
        (b.page_text().contains("page 1") && newer.is_some()).then_some(())
    });
    browser
        .find_css(&format!("tr[data-request='{session}']"))
        .click();
    let record = browser.wait_until("the event's record", |b| {
        b.try_find_css("#audit-record").map(|e| e.text())
    });
    assert!(record.contains("\"recording\""), "{record}");
    browser.find_css("#audit-play").click();
    browser.wait_until("the player", |b| {
        b.try_find_css("#player-toggle").map(|_| ())
    });
    browser.find_css("#player-toggle").click();
    let played = browser.wait_until("the session played", |b| {
        let text = b.find_css("#player-screen").text();
        text.contains("exit").then_some(text)
    });
    assert!(
        played.contains("root@web-0:/# ls\nbin  etc  usr"),
        "{played:?}"
    );
    assert!(
        !played.contains('\u{1b}'),
        "no escape sequences: {played:?}"
    );
    browser.screenshot(&shots.join("audit-event.png"));

    // the policy, for a global administrator: its lines, and a reload
    browser.wait_until("the policy page offered", |b| {
        let hidden = b.execute(
            "return document.querySelector('nav a[data-page=policy]').hidden;",
            vec![],
        );
        (hidden == Value::Bool(false)).then_some(())
    });
    open(&browser, &format!("{base}/#policy"), "#policy-text");
    assert!(
        browser.find_css("#policy-text").text().contains("p, "),
        "the policy lines"
    );
    assert!(
        !browser.find_css("#policy-page").text().contains("null"),
        "nothing unset is shown"
    );
    let before = browser.find_css("#policy-stats").text();
    browser.find_css("#policy-reload").click();
    let after = browser.wait_until("the reload's answer", |b| {
        let stats = b.find_css("#policy-stats").text();
        let error = b.find_css("#policy-error").text();
        assert!(error.is_empty(), "{error}");
        (stats != before).then_some(stats)
    });
    let reloads = |stats: &str| -> u64 {
        let words: Vec<&str> = stats.split_whitespace().collect();
        words[words.len() - 2].parse().unwrap()
    };
    assert!(reloads(&after) > reloads(&before), "{before} -> {after}");
    browser.screenshot(&shots.join("policy.png"));

    // the console broke no rule of its CSP; the listener does see a violation
    assert!(
        csp_violations(&browser).starts_with("0 "),
        "{}",
        csp_violations(&browser)
    );
    browser.execute(
        "const s = document.createElement('script'); s.textContent = 'window.injected = 1'; document.body.append(s); return null;",
        vec![],
    );
    browser.wait_until("the injected script refused", |b| {
        csp_violations(b).starts_with("1 ").then_some(())
    });
    assert!(browser.execute("return window.injected === undefined;", vec![]) == Value::Bool(true));

    // the session ends: the next call goes through the login and back to the same page
    open(&browser, &format!("{base}/#tokens"), "#create-token");
    browser.delete_all_cookies();
    // (marks this page, to tell it from the one after the login)
    browser.execute("document.body.dataset.before = 'yes'; return null;", vec![]);
    browser
        .find_css("#token-name")
        .send_keys("after the session");
    browser
        .find_css("#create-token button[type=submit]")
        .click();
    browser.wait_until("back on the tokens page after a new login", |b| {
        (b.current_url() == format!("{base}/#tokens")
            && b.try_find_css("body[data-ready]:not([data-before]) #create-token")
                .is_some())
        .then_some(())
    });
    assert!(
        browser.cookie("kubegate_session").is_some(),
        "a new session"
    );

    // the member: no admin controls, and the API refuses them anyway
    browser.find_css("#logout").click();
    browser.wait_until("logged out", |b| {
        b.page_text().contains("Log in with dex").then_some(())
    });
    provider.set_user(&ProviderUser::named("bob"));
    open(
        &browser,
        &format!("{}/auth/dex/login?redirect=/", base),
        "body[data-ready]",
    );
    assert_eq!(browser.find_css("#user").text(), "dex:bob");
    browser.wait_until("the clusters", |b| {
        b.try_find_css("tr[data-name=dev] .version").map(|_| ())
    });
    assert!(
        browser.try_find_css("#add-cluster").is_none(),
        "no add form"
    );
    assert!(
        browser.try_find_css("button.replace").is_none(),
        "no replace button"
    );
    assert!(browser.page_text().contains("Only the org's admins"));
    let hidden = browser.execute(
        "return document.querySelector('nav a[data-page=members]').hidden;",
        vec![],
    );
    assert_eq!(hidden, Value::Bool(true));
    let csrf = browser.fetch("GET", "/auth/session", &[], None).json()["csrfToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = browser.fetch(
        "DELETE",
        "/pipeline/api/v1/orgs/1/clusters/1",
        &[("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    browser.screenshot(&shots.join("member.png"));
    assert!(
        csp_violations(&browser).starts_with("0 "),
        "{}",
        csp_violations(&browser)
    );
}

/// With the PostgreSQL sink, PostgreSQL counts (`date_trunc('minute', time)`, grouped):
/// the same answer as the file's.
#[actix_rt::test]
async fn the_audit_histogram_from_postgresql() {
    use kubegate::config::AuditSinkKind;
    let api = ApiServer::start();
    let db = common::postgres::TestDatabase::create();
    let url = db.url.clone();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .configure(move |c| {
            c.audit.sinks = vec![AuditSinkKind::File, AuditSinkKind::Postgres];
            c.audit.postgres_url = Some(url);
        })
        .start();
    let (alice, bob) = (gw.token("alice"), gw.token("bob"));
    for _ in 0..4 {
        let (status, _) = call(
            "GET",
            &gw.proxy_url(1, 1, "/api/v1/namespaces"),
            Some(&alice),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = call(
        "GET",
        &format!("{}/pipeline/api/v1/orgs/1/audit", gw.url),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let listed = histogram_with(&gw, &alice, "verb=list&cluster=1", 4).await;
    assert_documented("GET", HISTOGRAM, 200, &listed);
    assert_eq!(
        (sum(&listed, "allow"), sum(&listed, "deny")),
        (4, 0),
        "{listed}"
    );
    let bobs = histogram_with(&gw, &alice, "user=bob", 1).await;
    assert_eq!((sum(&bobs, "allow"), sum(&bobs, "deny")), (0, 1), "{bobs}");
    let old = histogram_with(
        &gw,
        &alice,
        "since=2020-01-01T00:00:00Z&until=2020-01-01T00:10:00Z",
        0,
    )
    .await;
    assert_eq!(old["buckets"].as_array().unwrap().len(), 10);
    assert_eq!(sum(&old, "allow") + sum(&old, "deny"), 0);
}
