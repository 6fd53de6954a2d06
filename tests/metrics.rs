//! What `/metrics` shows after real traffic, the limits (rate, header size, idle
//! connections that must not cut a watch), and the access log line.
//!
//! The metrics registry is global to a process and the tests of this file run in one
//! process: each test uses orgs of its own.

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::Kubegate;
use common::gateway::TestGateway;
use common::http::{call, client};
use futures_util::StreamExt;
use serde_json::json;

/// `/metrics`, as text.
async fn scrape(gw: &TestGateway) -> String {
    let mut res = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert_openmetrics(&text);
    text
}

/// Checks what Prometheus' OpenMetrics parser relies on: one `# HELP` and `# TYPE` per
/// family, before its samples; each sample named after the family that comes before it
/// (a counter's with `_total`, a histogram's with `_bucket`, `_sum` or `_count`); no
/// family declared twice; `# EOF` last.
fn assert_openmetrics(text: &str) {
    assert!(text.ends_with("\n# EOF\n"), "# EOF last:\n{text}");
    let mut families = std::collections::HashSet::new();
    let mut current: Option<(&str, &str)> = None;
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                !name.ends_with("_total"),
                "a family takes no _total: {line}"
            );
            assert!(families.insert(name), "{name} declared twice");
            current = Some((name, kind));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(!families.contains(name), "HELP of {name} after its TYPE");
            continue;
        }
        let (family, kind) = current.unwrap_or_else(|| panic!("a sample before any TYPE: {line}"));
        let name = line.split(['{', ' ']).next().unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "gauge" => &[""],
            _ => &["_bucket", "_sum", "_count"],
        };
        assert!(
            suffixes
                .iter()
                .any(|s| name.strip_suffix(s) == Some(family)),
            "{line} is not of the {kind} {family}"
        );
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

/// The value of the sample `name` (with its labels, exactly as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}})
}

#[actix_rt::test]
async fn requests_are_counted_by_org_cluster_verb_and_status_with_latency() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(41, "alice", "admin")
        .member(41, "bob", "member")
        .cluster(41, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let (alice, bob) = (gw.token("alice"), gw.token("bob"));
    let cluster = gw.cluster_ids[0];
    let pods = gw.proxy_url(41, cluster, "/api/v1/namespaces/default/pods");
    for _ in 0..3 {
        assert_eq!(call("GET", &pods, Some(&alice), None).await.0, 200);
    }
    assert_eq!(
        call("POST", &pods, Some(&alice), Some(pod("a"))).await.0,
        201
    );
    let secrets = gw.proxy_url(41, cluster, "/api/v1/namespaces/default/secrets");
    assert_eq!(call("GET", &secrets, Some(&bob), None).await.0, 403);
    let unknown = gw.proxy_url(41, 999, "/api/v1/namespaces/default/pods");
    assert_eq!(call("GET", &unknown, Some(&alice), None).await.0, 404);
    assert_eq!(call("GET", &pods, None, None).await.0, 401);

    // audit events (and so the figures) are recorded when a response ends
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let text = scrape(&gw).await;
    let c = cluster.to_string();
    let req = |cluster: &str, verb: &str, code: u16| {
        sample(
            &text,
            &format!(
                "kubegate_requests_total{{org=\"41\",cluster=\"{cluster}\",verb=\"{verb}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(req(&c, "list", 200), Some(3.0), "{text}");
    assert_eq!(req(&c, "create", 201), Some(1.0));
    assert_eq!(req(&c, "list", 403), Some(1.0), "a denied request counts");
    assert_eq!(
        req("999", "list", 404),
        Some(1.0),
        "an unknown cluster counts"
    );
    assert_eq!(
        req(&c, "list", 401),
        Some(1.0),
        "an unauthenticated request counts under its org and cluster"
    );

    // the latency histogram of the three lists: cumulative buckets, +Inf = count
    // (prometheus-client writes `le` before the other labels)
    let labels = format!("org=\"41\",cluster=\"{c}\",verb=\"list\"");
    let inf = sample(
        &text,
        &format!("kubegate_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}}"),
    );
    assert_eq!(inf, Some(5.0), "200s, 403 and 401 of list: {text}");
    assert_eq!(
        sample(
            &text,
            &format!("kubegate_request_duration_seconds_count{{{labels}}}")
        ),
        Some(5.0)
    );
    let sum = sample(
        &text,
        &format!("kubegate_request_duration_seconds_sum{{{labels}}}"),
    )
    .unwrap();
    assert!(sum > 0.0 && sum < 50.0, "{sum}");
    let mut last = 0.0;
    // OpenMetrics writes each bound as a float: `1.0`, not `1`
    for le in ["0.001", "0.005", "0.01", "0.1", "1.0", "60.0", "+Inf"] {
        let v = sample(
            &text,
            &format!("kubegate_request_duration_seconds_bucket{{le=\"{le}\",{labels}}}"),
        )
        .unwrap_or_else(|| panic!("bucket {le} in\n{text}"));
        assert!(v >= last, "buckets are cumulative");
        last = v;
    }
    for (name, at_least) in [
        ("kubegate_cluster_proxies_live", 1.0),
        ("kubegate_audit_written_events_total", 7.0),
        ("kubegate_policy_rules", 1.0),
        ("kubegate_policy_role_bindings", 2.0),
        ("kubegate_http_responses_total{class=\"2xx\"}", 4.0),
        ("kubegate_http_responses_total{class=\"4xx\"}", 3.0),
    ] {
        let v = sample(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
        assert!(v >= at_least, "{name} = {v}");
    }
    for name in [
        "kubegate_audit_queued_events",
        "kubegate_audit_failing_sinks",
        "kubegate_policy_reloads_total",
        "kubegate_open_watches",
        "kubegate_upgraded_sessions_open",
        "kubegate_upgraded_sessions_total",
        "kubegate_requests_in_flight",
    ] {
        assert!(sample(&text, name).is_some(), "{name} in\n{text}");
        // OpenMetrics: a counter's family is its name without `_total`
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{name} has its TYPE"
        );
    }
    for kind in [
        "# TYPE kubegate_requests counter",
        "# TYPE kubegate_request_duration_seconds histogram",
        "# TYPE kubegate_logins counter",
        "# TYPE kubegate_rate_limited counter",
        "# TYPE kubegate_tls_reloads counter",
        "# TYPE kubegate_upgraded_sessions counter",
        "# TYPE kubegate_upgraded_sessions_open gauge",
    ] {
        assert!(text.contains(kind), "{kind}");
    }
    assert!(!text.contains(&alice), "no token in the metrics");
}

#[actix_rt::test]
async fn open_watches_and_policy_reloads_are_gauged() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(42, "alice", "admin")
        .configure(|c| c.policy.global_admins = vec!["root".into()])
        .cluster(42, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let token = gw.token("alice");
    let cluster = gw.cluster_ids[0];
    let url = gw.proxy_url(42, cluster, "/api/v1/namespaces/default/pods?watch=true");
    let before = sample(&scrape(&gw).await, "kubegate_open_watches").unwrap();
    let mut watch = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    api.put_object("default", "pods", pod("w"));
    let _ = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
    let during = sample(&scrape(&gw).await, "kubegate_open_watches").unwrap();
    assert_eq!(during, before + 1.0);
    drop(watch);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = sample(&scrape(&gw).await, "kubegate_open_watches").unwrap();
        if now == before {
            break;
        }
        assert!(Instant::now() < deadline, "the watch is still counted");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let text = scrape(&gw).await;
    let watches = format!(
        "kubegate_requests_total{{org=\"42\",cluster=\"{cluster}\",verb=\"watch\",code=\"200\"}}"
    );
    assert_eq!(sample(&text, &watches), Some(1.0));
    let watch = format!("org=\"42\",cluster=\"{cluster}\",verb=\"watch\"");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("kubegate_request_duration_seconds") && l.contains(&watch)),
        "watches stay out of the latency histogram"
    );

    let reloads = sample(&text, "kubegate_policy_reloads_total").unwrap();
    let root = gw.token("root");
    let reload = format!("{}/pipeline/api/v1/admin/policy/reload", gw.url);
    assert_eq!(call("POST", &reload, Some(&root), None).await.0, 200);
    let after = sample(&scrape(&gw).await, "kubegate_policy_reloads_total").unwrap();
    assert_eq!(after, reloads + 1.0);
}

/// A configured prefix under the proxy route is limited too: the proxy route is served
/// before the router that the rate limit wraps, and asks the limit itself.
#[actix_rt::test]
async fn a_prefix_under_the_proxy_route_is_rate_limited() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(47, "alice", "admin")
        .cluster(47, "dev", &api.kubeconfig_with_client_cert())
        .configure(|c| {
            c.server.rate_limit_per_minute = 60;
            c.server.rate_limit_burst = 2;
            c.server.rate_limited_paths = vec!["/pipeline/api/v1/orgs/47/clusters/".into()];
        })
        .start();
    let token = gw.token("alice");
    let pods = gw.proxy_url(47, gw.cluster_ids[0], "/api/v1/namespaces/default/pods");
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(call("GET", &pods, Some(&token), None).await.0);
    }
    assert_eq!(codes, [200, 200, 429, 429], "the burst, then the limit");
    let mut res = client()
        .get(&pods)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.headers().contains_key("x-request-id"));
    let body: serde_json::Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["reason"], "TooManyRequests");
    // the org's REST API under the same prefix shares its budget
    let clusters = format!(
        "{}/pipeline/api/v1/orgs/47/clusters/{}",
        gw.url, gw.cluster_ids[0]
    );
    assert_eq!(call("GET", &clusters, Some(&token), None).await.0, 429);
    // another org's path is not limited
    let other = gw.proxy_url(48, 1, "/api/v1/namespaces");
    assert_ne!(call("GET", &other, Some(&token), None).await.0, 429);
}

/// Behind a trusted proxy (`server.trusted_proxies`), the client is the nearest address
/// of `X-Forwarded-For` that is not a trusted proxy: each gets its own budget. From an
/// untrusted peer, `X-Forwarded-For` is ignored: changing it buys no new budget.
#[actix_rt::test]
async fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let start = |trusted: bool| {
        TestGateway::builder()
            .configure(move |c| {
                c.server.rate_limit_per_minute = 60;
                c.server.rate_limit_burst = 2;
                c.server.rate_limited_paths = vec!["/auth/".into()];
                if trusted {
                    c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
                }
            })
            .start()
    };
    let status = |gw: &TestGateway, forwarded: &'static str| {
        let url = format!("{}/auth/providers", gw.url);
        async move {
            let res = client()
                .get(url)
                .insert_header(("X-Forwarded-For", forwarded))
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }
    };
    // trusted: 192.0.2.1 and 192.0.2.2 are two clients with two budgets
    let gw = start(true);
    let mut codes = Vec::new();
    for forwarded in [
        "192.0.2.1",
        "192.0.2.1",
        "192.0.2.1",
        "192.0.2.2",
        "10.9.9.9, 192.0.2.2",
    ] {
        codes.push(status(&gw, forwarded).await);
    }
    assert_eq!(
        codes,
        [200, 200, 429, 200, 200],
        "one budget per forwarded client"
    );
    drop(gw);
    // untrusted: every request is the peer's, whatever it forwards
    let gw = start(false);
    let mut codes = Vec::new();
    for forwarded in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        codes.push(status(&gw, forwarded).await);
    }
    assert_eq!(
        codes,
        [200, 200, 429],
        "X-Forwarded-For ignored from an untrusted peer"
    );
}

#[actix_rt::test]
async fn token_and_login_paths_are_rate_limited_per_client() {
    let gw = TestGateway::builder()
        .configure(|c| {
            c.server.rate_limit_per_minute = 60;
            c.server.rate_limit_burst = 3;
            c.server.rate_limited_paths = vec!["/pipeline/api/v1/token".into(), "/auth/".into()];
        })
        .start();
    let token = gw.token("alice");
    let tokens = format!("{}/pipeline/api/v1/tokens", gw.url);
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(call("GET", &tokens, Some(&token), None).await.0);
    }
    assert!(
        codes[..3].iter().all(|c| *c != 429),
        "the burst passes: {codes:?}"
    );
    assert_eq!(&codes[3..], &[429, 429], "then the limit: {codes:?}");
    let mut res = client()
        .get(format!("{}/auth/github/login", gw.url))
        .send()
        .await
        .unwrap();
    assert_ne!(
        res.status().as_u16(),
        429,
        "another prefix has its own budget"
    );
    let _ = res.body().await;
    let mut res = client()
        .get(format!("{}/pipeline/api/v1/token", gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        429,
        "/token shares the prefix of /tokens"
    );
    assert!(res.headers().contains_key("retry-after"));
    assert!(
        res.headers().contains_key("x-request-id"),
        "a refused request has its id"
    );
    let body: serde_json::Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["code"], 429);
    assert_eq!(body["reason"], "TooManyRequests");
    // other paths are not limited
    for _ in 0..20 {
        assert_eq!(
            call("GET", &format!("{}/healthz", gw.url), None, None)
                .await
                .0,
            200
        );
    }
    let text = scrape(&gw).await;
    assert!(
        sample(
            &text,
            "kubegate_rate_limited_total{prefix=\"/pipeline/api/v1/token\"}"
        )
        .unwrap()
            >= 3.0,
        "{text}"
    );
}

#[actix_rt::test]
async fn oversized_headers_are_refused_with_431() {
    let gw = TestGateway::builder()
        .configure(|c| c.server.max_header_bytes = 4096)
        .start();
    let mut res = client()
        .get(format!("{}/healthz", gw.url))
        .insert_header(("x-padding", "a".repeat(5000)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 431);
    let body: serde_json::Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    assert_eq!(body["reason"], "RequestHeaderFieldsTooLarge");
    assert!(body["message"].as_str().unwrap().contains("4096"));
    let res = client()
        .get(format!("{}/healthz", gw.url))
        .insert_header(("x-padding", "a".repeat(3000)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

#[actix_rt::test]
async fn idle_timeouts_do_not_cut_a_quiet_watch() {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(43, "alice", "admin")
        .cluster(43, "dev", &api.kubeconfig_with_client_cert())
        .configure(|c| {
            c.server.keep_alive = Duration::from_secs(1);
            c.server.client_request_timeout = Duration::from_secs(1);
        })
        .start();
    let token = gw.token("alice");
    let url = gw.proxy_url(
        43,
        gw.cluster_ids[0],
        "/api/v1/namespaces/default/pods?watch=true",
    );
    let mut watch = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    // three times the keep-alive and request timeouts without a byte
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    api.put_object("default", "pods", pod("late"));
    let chunk = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the event arrives")
        .expect("the stream is still open")
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("late"));

    // while an idle keep-alive connection is closed after keep_alive
    let addr = gw.url.trim_start_matches("http://").to_string();
    let closed = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break Some(start.elapsed()),
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(_) => break None,
            }
        }
    })
    .join()
    .unwrap();
    assert!(
        closed.is_some(),
        "the idle connection is closed by kubegate"
    );
}

#[test]
fn one_access_log_line_per_request_without_secrets() {
    let api = ApiServer::start();
    let gate = Kubegate::new().env("RUST_LOG", "info");
    gate.add_cluster(&api.kubeconfig_with_client_cert());
    let token = gate.member_with_token("alice", "admin");
    let (_server, _) = gate.serve();
    let http = gate.http_url().unwrap();
    let url = format!(
        "{http}/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods?access_token=hunter2&limit=5"
    );
    let (token2, url2) = (token.clone(), url.clone());
    let (id, code) = common::gateway::block_on(move || async move {
        let res = client()
            .get(url2)
            .bearer_auth(&token2)
            .insert_header(("Cookie", "kubegate_session=cookie-secret"))
            .send()
            .await
            .unwrap();
        (
            res.headers()
                .get("x-request-id")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string(),
            res.status().as_u16(),
        )
    });
    let line = gate.wait_log(&format!("no access line for {id}"), |l| l.contains(&id));
    assert!(line.contains("kubegate::access"), "{line}");
    assert!(
        line.contains(" GET /pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods?access_token=REDACTED&limit=5 "),
        "{line}"
    );
    assert!(line.contains(&format!(" {code} ")), "{line}");
    assert!(line.contains("user=alice"), "{line}");
    assert!(line.contains("ms "), "the duration: {line}");
    // the time to the head in milliseconds with one decimal, then the user
    let ms = line
        .split("ms user=")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .unwrap();
    let (whole, tenth) = ms.split_once('.').expect("milliseconds with one decimal");
    assert!(
        whole.parse::<u64>().is_ok() && tenth.len() == 1 && tenth.parse::<u8>().is_ok(),
        "{line}"
    );
    let all = gate.logs().join("\n");
    for secret in [token.as_str(), "hunter2", "cookie-secret"] {
        assert!(!all.contains(secret), "{secret} leaked into the log");
    }
    assert_eq!(
        gate.logs().iter().filter(|l| l.contains(&id)).count(),
        1,
        "one line per request"
    );
}

/// GET `path` of kubegate at `http` over a connection of its own, as `token`: the
/// request id, and when the answer was read.
fn timed_get(http: &str, path: &str, token: &str) -> (String, Instant) {
    let (answer, closed) = common::raw::exchange(
        http,
        format!("GET {path} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let done = Instant::now();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(closed, "{answer}");
    let id = answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no request id: {answer}"));
    (id, done)
}

/// Waits (5 s at the most) for the first line of `gate`'s log that `matches`: when it
/// came, and the line.
fn wait_timed_log(
    gate: &Kubegate,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> (Instant, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(found) = gate.timed_logs().into_iter().find(|(_, l)| matches(l)) {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: {:#?}", gate.logs());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The log goes to standard error in batches: an access line comes at most 100 ms (plus
/// the machine's slack) after its request, and not always at once; a warning comes at
/// once, with the lines that waited before it.
#[test]
fn the_log_comes_in_batches_at_most_100ms_late_and_warnings_at_once() {
    let api = ApiServer::start();
    let gate = Kubegate::new();
    let dev = gate.add_cluster(&api.kubeconfig_with_client_cert());
    // a cluster whose API server is not there: each request to it logs a warning
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone_config = gate.dir().join("gone.yaml");
    std::fs::write(
        &gone_config,
        api.kubeconfig_with_client_cert()
            .replace(api.url(), &format!("https://127.0.0.1:{closed_port}")),
    )
    .unwrap();
    let gone = common::binary::add_cluster(|args| gate.run(args), "gone", &gone_config);
    let token = gate.member_with_token("alice", "admin");
    let (_server, _) = gate.serve();
    let http = gate.http_url().unwrap();
    let pods = |cluster: &str| {
        format!("/pipeline/api/v1/orgs/1/clusters/{cluster}/proxy/api/v1/namespaces/default/pods")
    };

    // access lines: never more than 100 ms late (250 ms with slack), and some of them
    // late at all, since they wait for the next batch
    let mut delays = Vec::new();
    for _ in 0..10 {
        let (id, done) = timed_get(&http, &pods(&dev), &token);
        let (came, line) = wait_timed_log(&gate, "an access line", |l| {
            l.contains(&id) && l.contains("kubegate::access")
        });
        assert!(line.contains(" 200 "), "{line}");
        delays.push(came.saturating_duration_since(done));
    }
    assert!(
        delays.iter().all(|d| *d < Duration::from_millis(250)),
        "an access line more than 100 ms late: {delays:?}"
    );
    assert!(
        delays.iter().any(|d| *d > Duration::from_millis(5)),
        "access lines wait for their batch: {delays:?}"
    );

    // a warning is written at once, with the access line that waited before it
    let mut checked = 0;
    for _ in 0..5 {
        // a batch just went out: the next one is 100 ms away
        let (id, _) = timed_get(&http, &pods(&dev), &token);
        let (batch, _) = wait_timed_log(&gate, "an access line", |l| l.contains(&id));
        let (waiting, _) = timed_get(&http, &pods(&dev), &token);
        let sent = Instant::now();
        let (failed, done) = timed_get(&http, &pods(&gone), &token);
        let (warned, warning) = wait_timed_log(&gate, "the warning", |l| {
            l.contains(&failed) && l.contains(" WARN ")
        });
        assert!(
            warned.saturating_duration_since(done) < Duration::from_millis(30),
            "the warning came {:?} after its request: {warning}",
            warned.saturating_duration_since(done)
        );
        let lines = gate.timed_logs();
        let at = |id: &str| {
            lines
                .iter()
                .position(|(_, l)| l.contains(id) && l.contains("kubegate::access"))
                .unwrap()
        };
        let warning_at = lines.iter().position(|(_, l)| *l == warning).unwrap();
        assert!(at(&waiting) < warning_at, "what waited comes first");
        if sent.duration_since(batch) < Duration::from_millis(80) {
            // no batch went out between the two requests: the access line waited for
            // the warning, and came with it
            let (came, _) = lines[at(&waiting)];
            assert!(
                came >= sent && came <= warned,
                "the waiting access line came with the warning"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "every round too slow to tell");
}

/// A batch is written as soon as it reaches 32 KiB, without waiting for the 100 ms.
#[test]
fn a_batch_of_32_kib_of_log_is_written_at_once() {
    let api = ApiServer::start();
    let gate = Kubegate::new();
    let dev = gate.add_cluster(&api.kubeconfig_with_client_cert());
    let token = gate.member_with_token("alice", "admin");
    let (_server, _) = gate.serve();
    let http = gate.http_url().unwrap();
    let pods =
        format!("/pipeline/api/v1/orgs/1/clusters/{dev}/proxy/api/v1/namespaces/default/pods");
    // three access lines of 12 KiB each (their query): the third passes 32 KiB. They are
    // refused at the gate (401, a token that is none), which takes a millisecond where a
    // proxied request takes tens in a debug build on a slow machine: the three must fit
    // between two of the flusher's batches
    let long = format!("{pods}?limit=5&pad={}", "x".repeat(12 << 10));
    let access = |id: &str| {
        let id = id.to_string();
        move |l: &str| l.contains(&id) && l.contains("kubegate::access")
    };
    let mut checked = 0;
    for _ in 0..20 {
        // a batch just went out: the next one is 100 ms away
        let (id, _) = timed_get(&http, &pods, &token);
        let (batch, _) = wait_timed_log(&gate, "an access line", access(&id));
        let (first, _) = timed_get(&http, &long, "not-a-token");
        let (_, second_done) = timed_get(&http, &long, "not-a-token");
        let (third, done) = timed_get(&http, &long, "not-a-token");
        let (third_came, line) = wait_timed_log(&gate, "the third line", access(&third));
        assert!(line.contains("pad=xxxx"), "{line}");
        let (first_came, _) = wait_timed_log(&gate, "the first line", access(&first));
        // the third line is written before its answer is whole: until `done`, no batch
        // went out when the flusher's 100 ms since `batch` had not passed (a request may
        // take tens of ms in a debug build)
        if done.duration_since(batch) < Duration::from_millis(80) {
            // no batch went out meanwhile: the first lines waited for the third
            assert!(
                first_came >= second_done,
                "the first 24 KiB waited for the third line"
            );
            assert!(
                third_came.saturating_duration_since(done) < Duration::from_millis(30)
                    && first_came.saturating_duration_since(done) < Duration::from_millis(30),
                "32 KiB are written at once: {:?} after the request",
                third_came.saturating_duration_since(done)
            );
            checked += 1;
            if checked == 3 {
                break;
            }
        }
    }
    assert!(checked > 0, "every round too slow to tell");
}
