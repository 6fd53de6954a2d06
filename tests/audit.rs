//! The audit trail: every request one event, the sinks, the query API, nothing lost,
//! nothing leaked.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::gateway::TestGateway;
use common::postgres::TestDatabase;
use kubegate::config::AuditSinkKind;
use kubegate_actors::auditor::rotation::{read_rotated, rotated_files};
use serde_json::{json, Value};

fn client() -> awc::Client {
    awc::Client::builder().disable_timeout().finish()
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let mut res = client().get(url).bearer_auth(token).send().await.unwrap();
    let bytes = res.body().limit(8 << 20).await.unwrap();
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn gateway(api: &ApiServer, change: impl FnOnce(&mut kubegate::config::Config)) -> TestGateway {
    TestGateway::builder()
        .configure(|c| {
            c.policy.global_admins = vec!["root".into()];
            change(c)
        })
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .member(2, "dave", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start()
}

/// Polls `count` until it reaches `want` (5 s at most).
fn wait_for(want: usize, count: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = count();
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[actix_rt::test]
async fn n_concurrent_requests_give_exactly_n_events() {
    let api = ApiServer::start();
    let gw = gateway(&api, |_| {});
    let (alice, bob) = (gw.token("alice"), gw.token("bob"));
    let requests = (0..300).map(|i| {
        let url = gw.proxy_url(1, 1, &format!("/api/v1/namespaces/default/pods?i={i}"));
        let token = if i % 3 == 0 {
            bob.clone()
        } else {
            alice.clone()
        };
        let method = if i % 2 == 0 { "GET" } else { "DELETE" };
        async move {
            let res = client()
                .request(method.parse().unwrap(), url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            res.headers()
                .get("x-request-id")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        }
    });
    let ids: HashSet<String> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 300, "every response has its own request id");
    let seen = wait_for(300, || gw.audit_events().len());
    assert_eq!(seen, 300, "exactly one event per request");
    let audited: HashSet<String> = gw
        .audit_events()
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(audited, ids);
}

/// Many requests at once while the file rotates again and again (4 KiB files, default
/// retention): every rotated file is compressed and kept, and every event is read back
/// through the query API, from the gzipped files too; then filters and pages over them.
#[actix_rt::test]
async fn the_query_api_filters_and_pages_over_rotated_files() {
    let api = ApiServer::start();
    // tiny files: the trail spans many rotated files
    let gw = gateway(&api, |c| {
        c.audit.max_file_bytes = 4096;
    });
    let (alice, bob, root) = (gw.token("alice"), gw.token("bob"), gw.token("root"));

    // load: 600 requests, 50 at a time
    let mut sent = HashSet::new();
    for round in 0..12 {
        let requests = (0..50).map(|i| {
            let url = gw.proxy_url(
                1,
                1,
                &format!(
                    "/api/v1/namespaces/default/configmaps?load={}",
                    round * 50 + i
                ),
            );
            let token = alice.clone();
            async move {
                let res = client().get(url).bearer_auth(token).send().await.unwrap();
                res.headers()
                    .get("x-request-id")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            }
        });
        sent.extend(futures_util::future::join_all(requests).await);
    }
    assert_eq!(sent.len(), 600);
    let written = wait_for(600, || gw.audit_events().len() + rotated(&gw).1);
    assert_eq!(written, 600, "every event is written");
    // compressed in the background: wait until no rotated file is plain
    let deadline = Instant::now() + Duration::from_secs(10);
    let files = loop {
        let files = rotated_files(&gw.config.audit.file).unwrap();
        if files.iter().all(|f| f.compressed) {
            break files;
        }
        assert!(
            Instant::now() < deadline,
            "rotated files are compressed: {files:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(files.len() >= 10, "many rotations: {}", files.len());
    let audit = format!("{}/pipeline/api/v1/orgs/1/audit", gw.url);
    let mut read = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{audit}?resource=configmaps&limit=250&cursor={c}"),
            None => format!("{audit}?resource=configmaps&limit=250"),
        };
        let (code, page) = get(&url, &alice).await;
        assert_eq!(code, 200, "{page}");
        for e in page["events"].as_array().unwrap() {
            read.push(e["request_id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(read.len(), 600, "no event lost or read twice");
    assert_eq!(read.into_iter().collect::<HashSet<_>>(), sent);

    for i in 0..20 {
        get(
            &gw.proxy_url(1, 1, &format!("/api/v1/namespaces/default/pods?n={i}")),
            &alice,
        )
        .await;
    }
    for _ in 0..5 {
        let res = client()
            .delete(gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods/web"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 403);
    }
    wait_for(625, || gw.audit_events().len() + rotated(&gw).1);

    let audit = format!("{}/pipeline/api/v1/orgs/1/audit", gw.url);
    let (code, page) = get(&format!("{audit}?decision=deny"), &alice).await;
    assert_eq!(code, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 5);
    assert!(events
        .iter()
        .all(|e| e["user"] == "bob" && e["status"] == 403 && e["verb"] == "delete"));

    // pages of 7 through the 20 lists, newest first, no event twice
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{audit}?user=alice&resource=pods&limit=7&cursor={c}"),
            None => format!("{audit}?user=alice&resource=pods&limit=7"),
        };
        let (code, page) = get(&url, &alice).await;
        assert_eq!(code, 200, "{page}");
        for e in page["events"].as_array().unwrap() {
            seen.push(e["query"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..20).rev().map(|i| format!("n={i}")).collect();
    assert_eq!(seen, expected);

    // status and time filters
    let (_, page) = get(&format!("{audit}?status=403&cluster=1"), &alice).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 5);
    let (_, page) = get(
        &format!("{audit}?since=2000-01-01T00:00:00Z&until=2001-01-01T00:00:00Z"),
        &alice,
    )
    .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 0);

    // members and other orgs' admins see nothing; global admins see it; bad filters say why
    assert_eq!(get(&audit, &bob).await.0, 403);
    assert_eq!(get(&audit, &gw.token("dave")).await.0, 403);
    assert_eq!(get(&audit, &root).await.0, 200);
    let (code, error) = get(&format!("{audit}?color=red"), &alice).await;
    assert_eq!(code, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown filter \"color\""),
        "{error}"
    );
    assert_eq!(
        get(&format!("{audit}?since=yesterday"), &alice).await.0,
        400
    );
}

/// Deleting is asked for (`keep_files = 1`): the older rotated files go, and `serve` says
/// so in its log, one info line per file, with the setting that removed it.
#[actix_rt::test]
async fn a_rotated_file_removed_by_the_retention_is_logged() {
    let api = ApiServer::start();
    let gate = common::binary::Kubegate::new().edit_config(|text| {
        text.replace("max_file_bytes = 104857600", "max_file_bytes = 2048")
            .replace("# keep_files = 100", "keep_files = 1")
    });
    let id = gate.add_cluster(&api.kubeconfig_with_client_cert());
    let token = gate.member_with_token("alice", "admin");
    let (_server, _) = gate.serve();
    let url = format!(
        "{}/pipeline/api/v1/orgs/1/clusters/{id}/proxy/api/v1/namespaces/default/pods",
        gate.http_url().unwrap()
    );
    for _ in 0..30 {
        assert_eq!(get(&url, &token).await.0, 200);
        // a batch each: every few requests, a rotation
        actix_rt::time::sleep(Duration::from_millis(30)).await;
    }
    let line = gate.wait_log("a removal is logged", |l| l.contains("audit: removed"));
    assert!(
        line.contains("INFO") && line.contains("(audit.keep_files = 1)"),
        "{line}"
    );
    let active = gate.dir().join("data/audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rotated_files(&active).unwrap().len() > 1 {
        assert!(Instant::now() < deadline, "one rotated file is kept");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The rotated files (plain or gzip), and the events they hold.
fn rotated(gw: &TestGateway) -> (usize, usize) {
    let files = rotated_files(&gw.config.audit.file).unwrap();
    let events = files
        .iter()
        .map(|f| read_rotated(f).map_or(0, |t| t.lines().count()))
        .sum();
    (files.len(), events)
}

#[actix_rt::test]
async fn postgres_sink_serves_queries_and_loses_nothing_while_down() {
    let api = ApiServer::start();
    let db = TestDatabase::create();
    let url = db.url.clone();
    let gw = gateway(&api, move |c| {
        c.audit.sinks = vec![AuditSinkKind::File, AuditSinkKind::Postgres];
        c.audit.postgres_url = Some(url);
        c.audit.max_queue = 10;
    });
    let alice = gw.token("alice");
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    for _ in 0..5 {
        assert_eq!(get(&pods, &alice).await.0, 200);
    }
    let audit = format!("{}/pipeline/api/v1/orgs/1/audit", gw.url);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, page) = get(&format!("{audit}?resource=pods"), &alice).await;
        assert_eq!(code, 200, "{page}");
        if page["events"].as_array().unwrap().len() == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the events reach the audit trail: {page}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    // PostgreSQL goes away: requests go on, events queue, then spill to disk
    let name = db.url.rsplit('=').next().unwrap().to_string();
    db.admin(&format!("DROP DATABASE {name} WITH (FORCE)"));
    for _ in 0..30 {
        assert_eq!(get(&pods, &alice).await.0, 200);
    }
    let metrics = |gw: &TestGateway| {
        let url = format!("{}/metrics", gw.url);
        async move {
            let mut res = client().get(url).send().await.unwrap();
            String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&gw).await;
        if text.contains("kubegate_audit_failing_sinks 1")
            && !text.contains("kubegate_audit_spilled_events_total 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a failing sink and spills show in /metrics: {text}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client()
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        503
    );

    // back: every event written, none twice
    db.admin(&format!("CREATE DATABASE {name}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, page) = get(&format!("{audit}?resource=pods&limit=1000"), &alice).await;
        if code == 200 && page["events"].as_array().unwrap().len() >= 30 {
            let ids: HashSet<&str> = page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["request_id"].as_str().unwrap())
                .collect();
            assert_eq!(
                page["events"].as_array().unwrap().len(),
                30,
                "no event twice"
            );
            assert_eq!(
                ids.len(),
                30,
                "the 30 events made while it was down, once each"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queued and spilled events reach PostgreSQL again: {code} {page}"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metrics(&gw)
        .await
        .contains("kubegate_audit_lost_events_total 0"));
    assert_eq!(
        client()
            .get(format!("{}/readyz", gw.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

/// Paging the PostgreSQL trail newest first while requests keep coming: the cursor is the
/// last event returned, not a count of events, so new events shift no page. Every event
/// that was there at the first page comes exactly once; newer ones may be absent, never
/// repeated.
#[actix_rt::test]
async fn postgres_pages_hold_every_event_once_while_events_arrive() {
    let api = ApiServer::start();
    let db = TestDatabase::create();
    let url = db.url.clone();
    let gw = gateway(&api, move |c| {
        c.audit.sinks = vec![AuditSinkKind::Postgres];
        c.audit.postgres_url = Some(url);
    });
    pages_hold_every_event_once_while_events_arrive(&gw).await;
}

/// The file source pages the same way: its cursor is the last event's key, not a count
/// that events arriving in front of the pages would shift.
#[actix_rt::test]
async fn file_pages_hold_every_event_once_while_events_arrive() {
    let api = ApiServer::start();
    let gw = gateway(&api, |c| c.audit.sinks = vec![AuditSinkKind::File]);
    pages_hold_every_event_once_while_events_arrive(&gw).await;
    // a cursor this API did not give is refused
    let audit = format!("{}/pipeline/api/v1/orgs/1/audit?cursor=zz", gw.url);
    let (code, body) = get(&audit, &gw.token("alice")).await;
    assert_eq!(code, 400, "{body}");
}

/// 40 events, then pages of 3 read while another task keeps sending requests: every
/// event there before the first page is on exactly one page, and none repeats.
async fn pages_hold_every_event_once_while_events_arrive(gw: &TestGateway) {
    let alice = gw.token("alice");
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    let mut before = HashSet::new();
    for i in 0..40 {
        let res = client()
            .get(format!("{pods}?before={i}"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let id = res.headers().get("x-request-id").unwrap().to_str().unwrap();
        before.insert(id.to_string());
    }
    let audit = format!("{}/pipeline/api/v1/orgs/1/audit?resource=pods", gw.url);
    let count = |page: &Value| page["events"].as_array().map_or(0, Vec::len);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, page) = get(&format!("{audit}&limit=1000"), &alice).await;
        assert_eq!(code, 200, "{page}");
        if count(&page) == 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the events reach the audit trail: {page}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    // another task keeps sending requests through kubegate while the pages are read
    let sending = std::rc::Rc::new(std::cell::Cell::new(true));
    let sender = actix_rt::spawn({
        let (sending, pods, alice) = (sending.clone(), pods.clone(), alice.clone());
        async move {
            let mut sent = 0;
            while sending.get() {
                let res = client()
                    .get(format!("{pods}?during={sent}"))
                    .bearer_auth(&alice)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
                sent += 1;
            }
            sent
        }
    });

    let mut seen: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{audit}&limit=3&cursor={c}"),
            None => format!("{audit}&limit=3"),
        };
        let (code, page) = get(&url, &alice).await;
        assert_eq!(code, 200, "{page}");
        pages += 1;
        for event in page["events"].as_array().unwrap() {
            let id = event["request_id"].as_str().unwrap();
            assert!(
                seen.insert(id.to_string()),
                "page {pages} repeats an event of an earlier page: {event}"
            );
        }
        assert!(pages < 200, "the pages end");
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        // time for new events to reach the sink (it flushes every 20 ms)
        actix_rt::time::sleep(Duration::from_millis(60)).await;
    }
    sending.set(false);
    let sent = sender.await.unwrap();
    let (_, all) = get(&format!("{audit}&limit=1000"), &alice).await;
    assert!(
        sent >= 10 && count(&all) > 40,
        "events arrived while the pages were read: {sent} requests, {} events",
        count(&all)
    );

    let missing: Vec<&String> = before.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "events there before the first page, on none: {missing:?}"
    );
}

#[actix_rt::test]
async fn planted_secrets_never_reach_any_sink() {
    let api = ApiServer::start();
    let db = TestDatabase::create();
    let url = db.url.clone();
    let gw = gateway(&api, move |c| {
        c.audit.sinks = vec![AuditSinkKind::File, AuditSinkKind::Postgres];
        c.audit.postgres_url = Some(url);
        c.audit.request_bodies = true;
    });
    let alice = gw.token("alice");
    let secret_body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                             "stringData": {"password": "body-secret-3"}});
    let res = client()
        .post(gw.proxy_url(
            1,
            1,
            "/api/v1/namespaces/default/secrets?access_token=query-secret-2",
        ))
        .bearer_auth(&alice)
        .insert_header(("Cookie", "session=cookie-secret-1"))
        .send_json(&secret_body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    gw.wait_audit(|e| e["verb"] == "create");
    let audit = format!("{}/pipeline/api/v1/orgs/1/audit", gw.url);
    let deadline = Instant::now() + Duration::from_secs(5);
    let rows = loop {
        let (_, page) = get(&format!("{audit}?verb=create&resource=secrets"), &alice).await;
        if page["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break page.to_string();
        }
        assert!(Instant::now() < deadline);
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    let file = std::fs::read_to_string(&gw.config.audit.file).unwrap();
    for secret in [
        alice.as_str(),
        "cookie-secret-1",
        "query-secret-2",
        "body-secret-3",
    ] {
        assert!(!file.contains(secret), "the file sink holds a secret");
        assert!(!rows.contains(secret), "the PostgreSQL sink holds a secret");
    }
    assert!(db
        .dump("SELECT string_agg(event, '') FROM kubegate_audit")
        .contains("access_token=REDACTED"));
    for secret in [
        alice.as_str(),
        "cookie-secret-1",
        "query-secret-2",
        "body-secret-3",
    ] {
        assert!(!db
            .dump("SELECT string_agg(event, '') FROM kubegate_audit")
            .contains(secret));
    }
}

#[actix_rt::test]
async fn bodies_of_writes_are_recorded_redacted_when_asked() {
    let api = ApiServer::start();
    let gw = gateway(&api, |c| {
        c.audit.request_bodies = true;
        c.audit.max_body_bytes = 2048;
    });
    let alice = gw.token("alice");
    let post = |resource: &str, body: Value| {
        let url = gw.proxy_url(1, 1, &format!("/api/v1/namespaces/default/{resource}"));
        let token = alice.clone();
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .send_json(&body)
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                        "stringData": {"password": "hunter2"}, "data": {"tls.key": "c2VjcmV0"}});
    assert_eq!(post("secrets", secret).await, 201);
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
                        "data": {"color": "blue", "api_token": "t0k3n"}});
    assert_eq!(post("configmaps", config).await, 201);
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"blob": "x".repeat(4096)}});
    assert_eq!(post("configmaps", big).await, 201);

    let recorded = gw.wait_audit(|e| e["resource"] == "secrets" && e["verb"] == "create");
    let body = &recorded["request_body"];
    assert_eq!(body["metadata"]["name"], "db");
    assert_eq!(body["stringData"]["password"], "REDACTED");
    assert_eq!(body["data"]["tls.key"], "REDACTED");
    let recorded =
        gw.wait_audit(|e| e["name"].is_null() && e["request_body"]["metadata"]["name"] == "app");
    assert_eq!(recorded["request_body"]["data"]["color"], "blue");
    assert_eq!(recorded["request_body"]["data"]["api_token"], "REDACTED");
    let recorded = gw.wait_audit(|e| e["request_body"]["unrecorded"].is_string());
    assert_eq!(
        recorded["request_body"]["unrecorded"],
        "longer than audit.max_body_bytes"
    );
    let file = std::fs::read_to_string(&gw.config.audit.file).unwrap();
    for secret in ["hunter2", "c2VjcmV0", "t0k3n", "xxxxxxxx"] {
        assert!(!file.contains(secret), "{secret} is in the audit file");
    }
}

#[actix_rt::test]
async fn a_flood_of_401s_is_counted_not_written_one_by_one() {
    let api = ApiServer::start();
    let gw = gateway(&api, |c| {
        c.audit.denials_per_client = 5;
        c.audit.denial_window = Duration::from_millis(500);
    });
    let url = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    for i in 0..100 {
        let res = client()
            .get(&url)
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }
    let summary = gw.wait_audit(|e| e["aggregated"].is_u64());
    assert_eq!(summary["aggregated"], 95);
    assert_eq!(summary["status"], 401);
    assert_eq!(summary["client"], "127.0.0.1");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .contains("95 more 401 responses"),
        "{summary}"
    );
    let one_by_one = gw
        .audit_events()
        .iter()
        .filter(|e| e["status"] == 401 && e["aggregated"].is_null())
        .count();
    assert_eq!(one_by_one, 5);
    // other requests are not held back
    assert_eq!(get(&url, &gw.token("alice")).await.0, 200);
}

/// The only sink down and its spill directory impossible to create: events are being
/// lost, so proxied requests are refused with a 503 `Status` until the sink takes events
/// again, and then served as before.
#[actix_rt::test]
async fn requests_get_503_while_events_are_lost_and_succeed_once_they_are_recorded() {
    let api = ApiServer::start();
    let db = TestDatabase::create();
    let name = db.url.rsplit('=').next().unwrap().to_string();
    // the sink is down from the start: its database does not exist
    db.admin(&format!("DROP DATABASE {name} WITH (FORCE)"));
    // a spill directory under a regular file cannot be created
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let spill_dir = not_a_dir.path().join("spill");
    let url = db.url.clone();
    let gw = gateway(&api, move |c| {
        c.audit.sinks = vec![AuditSinkKind::Postgres];
        c.audit.postgres_url = Some(url);
        c.audit.max_queue = 5;
        c.audit.spill_dir = spill_dir;
    });
    let alice = gw.token("alice");
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");

    // the first events wait in the queue; past it, the spill fails and events are lost
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let (code, body) = get(&pods, &alice).await;
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200, "{body}");
        assert!(
            Instant::now() < deadline,
            "requests are refused once events are lost"
        );
        actix_rt::time::sleep(Duration::from_millis(30)).await;
    };
    assert_eq!(refused["kind"], "Status", "{refused}");
    assert_eq!(refused["apiVersion"], "v1", "{refused}");
    assert_eq!(refused["status"], "Failure", "{refused}");
    assert_eq!(refused["code"], 503, "{refused}");
    assert_eq!(refused["reason"], "ServiceUnavailable", "{refused}");
    assert_eq!(
        refused["message"],
        "the audit trail cannot record requests right now; kubegate refuses them until it can",
        "{refused}"
    );
    // it goes on refusing, and /metrics says why
    for _ in 0..3 {
        assert_eq!(get(&pods, &alice).await.0, 503);
    }
    let mut res = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("kubegate_audit_failing_sinks 1"), "{text}");
    assert!(
        !text.contains("kubegate_audit_lost_events_total 0"),
        "events lost show in /metrics: {text}"
    );
    // nothing reached the cluster while refused
    let seen = api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/default/pods")
        .count();

    // the sink is back: the next event is written, and requests are served again
    db.admin(&format!("CREATE DATABASE {name}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(&pods, &alice).await;
        if code == 200 {
            assert_eq!(body["kind"], "PodList", "{body}");
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "requests succeed again once events can be recorded"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // (spaced, so that no more than `max_queue` events wait between two writes)
    for _ in 0..3 {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(get(&pods, &alice).await.0, 200);
    }
    assert_eq!(
        api.requests()
            .iter()
            .filter(|r| r.path == "/api/v1/namespaces/default/pods")
            .count(),
        seen + 4,
        "the refused requests never reached the cluster"
    );
    // and their events reach PostgreSQL
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: u64 = db
            .dump("SELECT count(*)::text FROM kubegate_audit WHERE status = 200")
            .parse()
            .unwrap_or(0);
        if n >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the events of the requests served again reach PostgreSQL: {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit file refuses writes (here: it is /dev/full, "no space left on device"): a
/// proxied answer is cut before its last bytes, the next requests get a 503, and once the
/// file takes events again, the events of those requests are in it and requests are
/// served as before.
#[actix_rt::test]
async fn an_audit_file_that_cannot_be_written_gives_no_unrecorded_answer() {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink("/dev/full", &file).unwrap();
    let (audit_file, spill) = (file.clone(), dir.path().join("spill"));
    let gw = gateway(&api, move |c| {
        c.audit.file = audit_file;
        c.audit.spill_dir = spill;
    });
    let alice = gw.token("alice");
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");

    // admitted, but its event cannot be written: the answer does not arrive whole (here,
    // a small body sent with its head, nothing arrives)
    match client().get(&pods).bearer_auth(&alice).send().await {
        Err(_) => {}
        Ok(mut res) => {
            let body = res.body().limit(8 << 20).await;
            assert!(
                res.status() != 200 || body.is_err(),
                "an answer whose event was not recorded must not arrive whole: {} {body:?}",
                res.status()
            );
        }
    }
    // then every request is refused with a 503 Status, proxied or not
    let (code, refused) = get(&pods, &alice).await;
    assert_eq!(code, 503, "{refused}");
    assert_eq!(
        refused["message"],
        "the audit trail cannot record requests right now; kubegate refuses them until it can"
    );
    let clusters = format!("{}/pipeline/api/v1/orgs/1/clusters", gw.url);
    assert_eq!(get(&clusters, &alice).await.0, 503);

    // the file is back (a regular file in its place): requests are served again, and
    // the events of the refused ones are there
    std::fs::remove_file(&file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(&pods, &alice).await;
        if code == 200 {
            assert_eq!(body["kind"], "PodList", "{body}");
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "served again once the file works"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // in order: the cut answer's event (it was allowed and answered 200 by the API
    // server), the refusals, the answer once the file works
    let events = gw.audit_events();
    let statuses: Vec<u64> = events
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses[0], 200, "{events:#?}");
    assert_eq!(events[0]["verb"], "list", "{events:#?}");
    assert!(statuses[1..3].iter().all(|s| *s == 503), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&200), "{statuses:?}");
}
