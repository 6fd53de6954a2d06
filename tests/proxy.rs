//! The proxy route end to end: kubegate in front of the API server stand-in.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::apiserver::ApiServer;
use common::certs::TestPki;
use common::gateway::TestGateway;
use common::http::{call, client};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A kubeconfig for `server` with the given cluster and user fields (YAML lines).
fn kubeconfig(server: &str, cluster_fields: &[String], user_fields: &[String]) -> String {
    let indent = |fields: &[String]| {
        fields
            .iter()
            .map(|f| format!("    {f}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\nclusters:\n- name: test\n  cluster:\n    server: {server}\n{}users:\n- name: test\n  user:\n{}",
        indent(cluster_fields),
        if user_fields.is_empty() { "    {}\n".to_string() } else { indent(user_fields) }
    )
}

fn client_cert_fields(pki: &TestPki) -> Vec<String> {
    vec![
        format!("client-certificate-data: {}", b64(&pki.client_cert_pem)),
        format!("client-key-data: {}", b64(&pki.client_key_pem)),
    ]
}

fn ca_field(pki: &TestPki) -> String {
    format!("certificate-authority-data: {}", b64(&pki.ca_pem))
}

struct Setup {
    api: ApiServer,
    gw: TestGateway,
}

/// An API server stand-in registered as cluster 1 of org 1, with alice admin, bob member,
/// and carol admin of org 2 only.
fn setup() -> Setup {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .member(1, "bob", "member")
        .member(2, "carol", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    Setup { api, gw }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

#[actix_rt::test]
async fn admin_reads_and_writes_through_every_method() {
    let s = setup();
    let token = s.gw.token("alice");
    let pods = s.gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");

    let (code, created) = call("POST", &pods, Some(&token), Some(pod("web"))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["name"], "web");

    let (code, list) = call("GET", &pods, Some(&token), None).await;
    assert_eq!(code, 200);
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["metadata"]["name"] == "web"));

    let web = format!("{pods}/web");
    let (code, got) = call("GET", &web, Some(&token), None).await;
    assert_eq!((code, got["kind"].as_str()), (200, Some("Pod")));

    let mut updated = got.clone();
    updated["metadata"]["labels"] = json!({"tier": "front"});
    let (code, put) = call("PUT", &web, Some(&token), Some(updated)).await;
    assert_eq!(code, 200, "{put}");
    assert_eq!(put["metadata"]["labels"]["tier"], "front");

    let mut res = client()
        .patch(&web)
        .bearer_auth(&token)
        .content_type("application/merge-patch+json")
        .send_body(r#"{"metadata":{"labels":{"tier":"back"}}}"#)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["metadata"]["labels"]["tier"], "back");

    // the query string is kept
    let (code, list) = call(
        "GET",
        &format!("{pods}?labelSelector=tier%3Dback"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(s
        .api
        .requests()
        .iter()
        .any(|r| r.path_and_query().ends_with("?labelSelector=tier%3Dback")));

    let (code, _) = call("DELETE", &web, Some(&token), None).await;
    assert_eq!(code, 200);
    // upstream errors pass through as they are
    let (code, status) = call("GET", &web, Some(&token), None).await;
    assert_eq!(code, 404);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");

    // the API root, with and without the slash
    for root in ["", "/"] {
        let (code, paths) = call("GET", &s.gw.proxy_url(1, 1, root), Some(&token), None).await;
        assert_eq!(code, 200, "root {root:?}");
        assert!(paths["paths"].as_array().is_some(), "{paths}");
    }
}

#[actix_rt::test]
async fn credentials_and_identity_headers_never_reach_the_cluster() {
    let s = setup();
    let token = s.gw.token("alice");
    s.api.clear_requests();
    // written by hand: HTTP clients rewrite Connection headers
    let request = format!(
        "GET /pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods HTTP/1.1\r\n\
         Host: kubegate\r\n\
         Authorization: Bearer {token}\r\n\
         Cookie: session=s3cr3t\r\n\
         X-Remote-User: system:admin\r\n\
         X-Remote-Group: system:masters\r\n\
         Proxy-Authorization: Basic eDp5\r\n\
         Connection: close, X-Hop\r\n\
         X-Hop: 1\r\n\
         X-Custom: kept\r\n\
         Accept: application/json\r\n\r\n"
    );
    let addr = s.gw.url.trim_start_matches("http://").to_string();
    let send = move |request: String| {
        let addr = addr.clone();
        common::gateway::block_on(move || async move {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
    };
    // Impersonate-* headers of the client's own ask to act as someone else: refused
    // unless the policy grants it (never silently dropped), and nothing reaches the
    // cluster
    let acting = request.replace(
        "Accept: application/json\r\n",
        "Impersonate-User: bob\r\nImpersonate-Group: dev\r\nAccept: application/json\r\n",
    );
    let answer = send(acting);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("may not impersonate user \\\"bob\\\" in org 1"),
        "{answer}"
    );
    assert!(
        s.api.requests().is_empty(),
        "the cluster saw a refused request"
    );
    let system = request.replace(
        "Accept: application/json\r\n",
        "Impersonate-User: system:admin\r\nAccept: application/json\r\n",
    );
    let answer = send(system);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("never impersonates"), "{answer}");

    let answer = send(request);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("x-request-id:"));
    let requests = s.api.requests();
    let seen = requests.last().expect("the API server saw the request");
    let names: Vec<String> = seen.headers.iter().map(|(n, _)| n.clone()).collect();
    for banned in [
        "authorization",
        "cookie",
        "impersonate-user",
        "impersonate-group",
        "x-remote-user",
        "x-remote-group",
        "proxy-authorization",
        "x-hop",
    ] {
        assert!(
            !names.contains(&banned.to_string()),
            "{banned} reached the API server: {names:?}"
        );
    }
    let header = |n: &str| seen.header(n).map(str::to_string);
    assert_eq!(header("x-custom").as_deref(), Some("kept"));
    assert_eq!(header("accept").as_deref(), Some("application/json"));
    assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    // kubegate's own credentials: the client certificate of the kubeconfig
    assert_eq!(seen.identity.user(), Some("kubegate"));
}

#[actix_rt::test]
async fn token_kubeconfigs_send_the_cluster_token_not_the_users() {
    let api = ApiServer::builder().token("cluster-secret-token").start();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_token())
        .start();
    let user_token = gw.token("alice");
    let (code, _) = call(
        "GET",
        &gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods"),
        Some(&user_token),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let seen = api.requests().pop().unwrap();
    let auth: Vec<&String> = seen
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(auth, vec!["Bearer cluster-secret-token"]);
}

#[actix_rt::test]
async fn tls_server_name_and_insecure_skip_verify_are_honoured() {
    let api = ApiServer::start();
    let pki = api.pki();
    let server = api.url().to_string();
    let good = kubeconfig(
        &server,
        &[
            ca_field(pki),
            "tls-server-name: kubernetes.default.svc".into(),
        ],
        &client_cert_fields(pki),
    );
    let wrong = kubeconfig(
        &server,
        &[ca_field(pki), "tls-server-name: wrong.example".into()],
        &client_cert_fields(pki),
    );
    let insecure = kubeconfig(
        &server,
        &["insecure-skip-tls-verify: true".into()],
        &client_cert_fields(pki),
    );
    let untrusted = kubeconfig(&server, &[], &client_cert_fields(pki));
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(1, "good", &good)
        .cluster(1, "wrong", &wrong)
        .cluster(1, "insecure", &insecure)
        .cluster(1, "public-roots", &untrusted)
        .start();
    let token = gw.token("alice");
    let version = |id: u64| gw.proxy_url(1, id, "/version");
    assert_eq!(call("GET", &version(1), Some(&token), None).await.0, 200);
    let (code, status) = call("GET", &version(2), Some(&token), None).await;
    assert_eq!(
        code, 502,
        "a certificate not valid for tls-server-name is refused: {status}"
    );
    assert_eq!(status["kind"], "Status");
    assert_eq!(call("GET", &version(3), Some(&token), None).await.0, 200);
    assert_eq!(
        call("GET", &version(4), Some(&token), None).await.0,
        502,
        "the test CA is not a public root"
    );
}

#[actix_rt::test]
async fn watch_events_arrive_one_by_one_while_the_stream_stays_open() {
    let s = setup();
    let token = s.gw.token("bob");
    let url =
        s.gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods?watch=true");
    let mut res = client().get(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut buffered = Vec::new();
    for name in ["first", "second", "third"] {
        let sent = Instant::now();
        s.api.put_object("default", "pods", pod(name));
        let event = loop {
            if let Some(pos) = buffered.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffered.drain(..=pos).collect();
                break serde_json::from_slice::<Value>(&line).unwrap();
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), res.next())
                .await
                .expect("the event arrives while the stream is open")
                .expect("the stream is still open")
                .unwrap();
            buffered.extend_from_slice(&chunk);
        };
        assert_eq!(event["type"], "ADDED");
        assert_eq!(event["object"]["metadata"]["name"], name);
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "event {name} took {:?}",
            sent.elapsed()
        );
    }
    assert_eq!(s.api.open_watches(), 1);
    drop(res);
    // let the client runtime close the connection: kubegate notices at once, though the
    // stream is idle, and lets go of the API server's watch
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.api.open_watches() > 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream watch is still open"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    // the watch is audited when it ends, with the bytes it carried
    let event = s.gw.wait_audit(|e| e["verb"] == "watch");
    assert_eq!(event["user"], "bob");
    assert!(event["bytes_out"].as_u64().unwrap() > 100, "{event}");
}

#[actix_rt::test]
async fn a_large_list_streams_through_whole() {
    let s = setup();
    let token = s.gw.token("alice");
    let size = 48 << 20;
    s.api.put_configmaps_of_size("big", "cm", 48, 1 << 20);
    let path = "/api/v1/namespaces/big/configmaps";
    let mut direct = 0usize;
    {
        let pki = s.api.pki();
        let tls = pki.client_config();
        let direct_client = awc::Client::builder()
            .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(tls)))
            .disable_timeout()
            .finish();
        let mut res = direct_client
            .get(format!("{}{path}", s.api.url()))
            .send()
            .await
            .unwrap();
        while let Some(chunk) = res.next().await {
            direct += chunk.unwrap().len();
        }
    }
    assert!(
        direct >= size - (64 << 10),
        "the stand-in serves {direct} bytes"
    );
    let mut res = client()
        .get(s.gw.proxy_url(1, 1, path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut through = 0usize;
    let mut chunks = 0;
    let mut tail = Vec::new();
    while let Some(chunk) = res.next().await {
        let chunk = chunk.unwrap();
        through += chunk.len();
        chunks += 1;
        tail = chunk.to_vec();
    }
    assert_eq!(through, direct);
    assert!(
        chunks > 10,
        "the body came in {chunks} chunks, not as one buffer"
    );
    assert!(String::from_utf8_lossy(&tail).trim_end().ends_with('}'));
    let event = s.gw.wait_audit(|e| e["path"] == path && e["status"] == 200);
    assert_eq!(event["bytes_out"].as_u64().unwrap() as usize, direct);
}

/// The body of an HTTP/1.1 answer whose head is `head`: `rest` and what follows on `s`,
/// read 16 KiB at a time with a pause every 64 reads (a slow reader, so that kubegate's
/// writes are cut short), by its `Content-Length` or its chunks. What follows the body on
/// the connection is returned too.
fn read_body_slowly(
    s: &mut std::net::TcpStream,
    head: &str,
    mut rest: Vec<u8>,
) -> (Vec<u8>, Vec<u8>) {
    use std::io::Read;
    let mut reads = 0;
    let mut more = |rest: &mut Vec<u8>| {
        let mut buf = [0u8; 16 << 10];
        let n = s.read(&mut buf).expect("more of the answer");
        assert!(n > 0, "closed in the middle of the answer");
        rest.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads % 64 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    if let Some(length) = header("content-length") {
        let length: usize = length.parse().unwrap();
        while rest.len() < length {
            more(&mut rest);
        }
        let after = rest.split_off(length);
        return (rest, after);
    }
    assert_eq!(
        header("transfer-encoding").as_deref(),
        Some("chunked"),
        "{head}"
    );
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            match rest.windows(2).position(|w| w == b"\r\n") {
                Some(at) => break at,
                None => more(&mut rest),
            }
        };
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16)
            .expect("a chunk size line");
        while rest.len() < line_end + 2 + size + 2 {
            more(&mut rest);
        }
        body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        assert_eq!(&rest[line_end + 2 + size..line_end + 4 + size], b"\r\n");
        rest.drain(..line_end + 4 + size);
        if size == 0 {
            return (body, rest);
        }
    }
}

#[actix_rt::test]
async fn large_answers_arrive_byte_for_byte_to_a_slow_reader() {
    // large chunks of an answer are written as they came (writev), not copied: with a
    // length and chunked, to a reader slow enough that writes are cut short, the bytes
    // arrive whole and in order, and the connection goes on with the next answer
    let s = setup();
    let token = s.gw.token("alice");
    s.api.put_configmaps_of_size("big", "cm", 6, 1 << 20);
    let list = "/api/v1/namespaces/big/configmaps";
    let one = "/api/v1/namespaces/big/configmaps/cm-3";
    let pki = s.api.pki();
    let direct_client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(std::sync::Arc::new(pki.client_config())))
        .disable_timeout()
        .finish();
    let mut direct = Vec::new();
    for path in [list, one] {
        let mut res = direct_client
            .get(format!("{}{path}", s.api.url()))
            .send()
            .await
            .unwrap();
        direct.push(res.body().limit(64 << 20).await.unwrap().to_vec());
    }
    assert!(
        direct[0].len() > (6 << 20) - (64 << 10),
        "{}",
        direct[0].len()
    );
    assert!(
        direct[1].len() > (1 << 20) - (16 << 10),
        "{}",
        direct[1].len()
    );

    let gw = s.gw.url.clone();
    let token2 = token.clone();
    let got = actix_rt::task::spawn_blocking(move || {
        let mut conn = common::raw::connect(&gw);
        let mut answers = Vec::new();
        for path in [list, one, list] {
            let url = format!("/pipeline/api/v1/orgs/1/clusters/1/proxy{path}");
            common::raw::write(
                &mut conn,
                format!("GET {url} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {token2}\r\n\r\n")
                    .as_bytes(),
            );
            let (head, after_head) = common::raw::read_head(&mut conn);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let (body, after) = read_body_slowly(&mut conn, &head, after_head);
            // nothing past the answer's end: its bytes were written in order, once
            assert!(after.is_empty(), "{} bytes past the end of the answer to {path}", after.len());
            answers.push((head, body));
        }
        answers
    })
    .await
    .unwrap();
    assert!(
        got[0]
            .0
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        got[0].0
    );
    assert!(
        got[1].0.to_ascii_lowercase().contains("content-length"),
        "{}",
        got[1].0
    );
    // the API server's type, once: not beside actix-web's default for a stream
    // (application/octet-stream), which kubectl would read the watch events by
    for (head, _) in &got {
        let lower = head.to_ascii_lowercase();
        let types: Vec<&str> = lower
            .lines()
            .filter(|l| l.starts_with("content-type:"))
            .collect();
        assert_eq!(types, ["content-type: application/json"], "{head}");
    }
    assert!(
        got[0].1 == direct[0],
        "the chunked list differs from the API server's"
    );
    assert!(
        got[1].1 == direct[1],
        "the object with a length differs from the API server's"
    );
    assert!(
        got[2].1 == direct[0],
        "the list sent again on the same connection differs"
    );
    // and what both say is whole (the stand-in is served by the same HTTP/1.1 writer)
    let list: Value = serde_json::from_slice(&got[0].1).expect("the list is JSON");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(6));
    let one: Value = serde_json::from_slice(&got[1].1).expect("the object is JSON");
    assert_eq!(one["metadata"]["name"], "cm-3");
    assert!(one["data"]["payload"].as_str().unwrap().len() > (1 << 20) - (16 << 10));
}

#[actix_rt::test]
async fn path_attacks_are_refused_before_authorization() {
    let s = setup();
    let token = s.gw.token("bob");
    s.api.clear_requests();
    let attacks = [
        "/api/v1/namespaces/default/pods/../../secrets",
        "/api/v1/namespaces/default/./secrets",
        "/api/v1/namespaces/default/pods/%2e%2e/%2e%2e/secrets",
        "/api/v1/namespaces/default%2fsecrets",
        "/api/v1/namespaces/default/pods%2F..%2Fsecrets",
        "/api/v1/%5c..%5csecrets",
        "/api/v1/namespaces/default/%252e%252e/secrets",
        "/api//v1/secrets",
    ];
    for attack in attacks {
        let (code, status) = call("GET", &s.gw.proxy_url(1, 1, attack), Some(&token), None).await;
        assert_eq!(code, 400, "{attack}");
        assert_eq!(status["kind"], "Status", "{attack}");
        assert_eq!(status["reason"], "BadRequest", "{attack}");
        assert!(
            status["message"].as_str().unwrap().contains("not allowed"),
            "{status}"
        );
    }
    assert!(
        s.api.requests().is_empty(),
        "nothing reached the API server"
    );
    let event = s.gw.wait_audit(|e| e["status"] == 400);
    assert_eq!(event["decision"], "deny");
}

#[actix_rt::test]
async fn every_authentication_failure_is_a_401_status() {
    let s = setup();
    let url = s.gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    let cfg = &s.gw.config.auth;
    let key = std::fs::read_to_string(&cfg.signing_key_file).unwrap();
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.trim().as_bytes()),
        )
        .unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |aud: &str, iss: &str, exp: u64| json!({"sub": "alice", "aud": aud, "iss": iss, "iat": now, "exp": exp, "jti": "j"});
    let unsigned = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(claims(&cfg.audience, &cfg.issuer, now + 600).to_string())
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("basic", Some("Basic YWxpY2U6cGFzcw==".into())),
        ("garbage", Some("Bearer not-a-jwt".into())),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(claims(&cfg.audience, &cfg.issuer, now - 120))
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                sign(claims("https://other", &cfg.issuer, now + 600))
            )),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                sign(claims(&cfg.audience, "https://other/", now + 600))
            )),
        ),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        (
            "other key",
            Some(format!("Bearer {}", {
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &claims(&cfg.audience, &cfg.issuer, now + 600),
                    &jsonwebtoken::EncodingKey::from_secret(b"another key that is long enough!!"),
                )
                .unwrap()
            })),
        ),
    ];
    for (name, header) in cases {
        let mut req = client().get(&url);
        if let Some(h) = &header {
            req = req.insert_header(("Authorization", h.as_str()));
        }
        let mut res = req.send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401, "{name}");
        let status: Value = res.json().await.unwrap();
        assert_eq!(status["kind"], "Status", "{name}");
        assert_eq!(status["reason"], "Unauthorized", "{name}");
        if name == "expired" {
            assert!(
                status["message"].as_str().unwrap().contains("expired"),
                "{status}"
            );
        }
    }
    let denied: Vec<Value> =
        s.gw.audit_events()
            .into_iter()
            .filter(|e| e["status"] == 401)
            .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut count = denied.len();
    while count < 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        count =
            s.gw.audit_events()
                .iter()
                .filter(|e| e["status"] == 401)
                .count();
    }
    assert_eq!(count, 8, "every 401 is audited");
}

#[actix_rt::test]
async fn roles_decide_who_may_do_what() {
    let s = setup();
    let (alice, bob, carol, mallory) = (
        s.gw.token("alice"),
        s.gw.token("bob"),
        s.gw.token("carol"),
        s.gw.token("mallory"),
    );
    let pods = s.gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    assert_eq!(
        call("POST", &pods, Some(&alice), Some(pod("victim")))
            .await
            .0,
        201
    );

    // bob, a member, reads but does not write, read secrets, or exec
    assert_eq!(call("GET", &pods, Some(&bob), None).await.0, 200);
    assert_eq!(
        call("GET", &s.gw.proxy_url(1, 1, "/version"), Some(&bob), None)
            .await
            .0,
        200
    );
    let (code, status) = call("DELETE", &format!("{pods}/victim"), Some(&bob), None).await;
    assert_eq!(code, 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods \"victim\" is forbidden: User \"bob\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\" of cluster 1 of org 1"
    );
    assert_eq!(call("POST", &pods, Some(&bob), Some(pod("x"))).await.0, 403);
    let forbidden_reads = [
        "/api/v1/namespaces/default/secrets",
        "/api/v1/namespaces/default/pods/victim/exec?command=sh",
        "/api/v1/namespaces/kube-system/services/https:kubernetes-dashboard:/proxy/",
    ];
    for path in forbidden_reads {
        let (code, _) = call("GET", &s.gw.proxy_url(1, 1, path), Some(&bob), None).await;
        assert_eq!(code, 403, "{path}");
    }
    let upgrade = client()
        .get(&pods)
        .bearer_auth(&bob)
        .insert_header(("Connection", "Upgrade"))
        .insert_header(("Upgrade", "websocket"))
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status().as_u16(), 403, "any upgrade is connect");

    // carol is admin of org 2 only; mallory of nothing: 403 for every cluster of org 1,
    // existing or not
    for token in [&carol, &mallory] {
        assert_eq!(call("GET", &pods, Some(token), None).await.0, 403);
        assert_eq!(
            call(
                "GET",
                &s.gw.proxy_url(1, 99, "/api/v1/pods"),
                Some(token),
                None
            )
            .await
            .0,
            403
        );
    }
    // alice deletes
    assert_eq!(
        call("DELETE", &format!("{pods}/victim"), Some(&alice), None)
            .await
            .0,
        200
    );

    // a membership added while running takes effect
    s.gw.set_member(1, "mallory", "member");
    assert_eq!(call("GET", &pods, Some(&mallory), None).await.0, 200);

    let denied =
        s.gw.wait_audit(|e| e["user"] == "bob" && e["verb"] == "delete");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["resource"], "pods");
    assert_eq!(denied["name"], "victim");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("may not delete"),
        "{denied}"
    );
    let allowed =
        s.gw.wait_audit(|e| e["user"] == "alice" && e["verb"] == "delete");
    assert_eq!(
        (allowed["decision"].as_str(), allowed["status"].as_u64()),
        (Some("allow"), Some(200))
    );
    assert_eq!(allowed["org"], 1);
    assert_eq!(allowed["cluster"], 1);
    assert_eq!(allowed["namespace"], "default");
}

#[actix_rt::test]
async fn unknown_unreachable_and_silent_clusters() {
    let api = ApiServer::start();
    let pki = api.pki();
    // a port nobody listens on
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // a listener that never answers the TLS handshake
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(
            1,
            "closed",
            &kubeconfig(
                &format!("https://{closed}"),
                &[ca_field(pki)],
                &client_cert_fields(pki),
            ),
        )
        .cluster(
            1,
            "silent",
            &kubeconfig(
                &format!("https://{silent_addr}"),
                &[ca_field(pki)],
                &client_cert_fields(pki),
            ),
        )
        .start();
    let token = gw.token("alice");
    let (code, status) = call(
        "GET",
        &gw.proxy_url(1, 7, "/api/v1/pods"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "cluster 7 not found in org 1");

    let (code, status) = call(
        "GET",
        &gw.proxy_url(1, 1, "/api/v1/pods"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(code, 502, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("unreachable"),
        "{status}"
    );

    let started = Instant::now();
    let (code, status) = call(
        "GET",
        &gw.proxy_url(1, 2, "/api/v1/pods"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(code, 504, "{status}");
    assert_eq!(status["reason"], "Timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    let failed = gw.wait_audit(|e| e["status"] == 504);
    assert_eq!(failed["decision"], "error");
    drop(silent);
}

#[actix_rt::test]
async fn upstream_redirects_are_passed_back_not_followed() {
    // a tiny HTTPS server that only redirects, with the stand-in's PKI
    let pki = TestPki::new();
    let tls = pki.server_config();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(|| {
                actix_web::App::new().default_service(actix_web::web::to(|| async {
                    actix_web::HttpResponse::Found()
                        .insert_header(("Location", "https://evil.example/"))
                        .finish()
                }))
            })
            .workers(1)
            .listen_rustls_0_23(listener, tls)
            .unwrap()
            .run();
            tx.send(server.handle()).unwrap();
            server.await.unwrap();
        })
    });
    let handle = rx.recv().unwrap();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(
            1,
            "redirecting",
            &kubeconfig(
                &format!("https://{addr}"),
                &[ca_field(&pki)],
                &client_cert_fields(&pki),
            ),
        )
        .start();
    let no_redirects = awc::Client::builder().disable_redirects().finish();
    let res = no_redirects
        .get(gw.proxy_url(1, 1, "/api"))
        .bearer_auth(gw.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 302);
    assert_eq!(
        res.headers().get("location").unwrap(),
        "https://evil.example/"
    );
    handle.stop(false).await;
}

#[actix_rt::test]
async fn the_audit_trail_holds_no_secrets() {
    let s = setup();
    let token = s.gw.token("alice");
    let url = s.gw.proxy_url(
        1,
        1,
        "/api/v1/namespaces/default/pods?access_token=query-secret-1&labelSelector=a%3Db",
    );
    let res = client()
        .get(url)
        .bearer_auth(&token)
        .insert_header(("Cookie", "session=cookie-secret-2"))
        .insert_header(("User-Agent", "kubectl/v1.32 (linux/amd64)"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let event =
        s.gw.wait_audit(|e| e["path"] == "/api/v1/namespaces/default/pods");
    assert_eq!(event["query"], "access_token=REDACTED&labelSelector=a%3Db");
    assert_eq!(event["user_agent"], "kubectl/v1.32 (linux/amd64)");
    assert_eq!(event["client"], "127.0.0.1");
    assert_eq!(event["method"], "GET");
    assert_eq!(event["verb"], "list");
    assert!(event["request_id"].as_str().unwrap().len() >= 16);
    assert!(event["duration_ms"].as_f64().unwrap() > 0.0);
    let audit = std::fs::read_to_string(&s.gw.config.audit.file).unwrap();
    for secret in [token.as_str(), "query-secret-1", "cookie-secret-2"] {
        assert!(!audit.contains(secret), "the audit file holds a secret");
    }
    let key = std::fs::read_to_string(&s.gw.config.auth.signing_key_file).unwrap();
    assert!(!audit.contains(key.trim()));
}

/// A policy that grants `list` but not `watch` keeps watches out however the query says
/// `watch`: the API server serves `?watch=TRUE`, `?watch=t` or `?watch=` as a watch, so
/// kubegate must authorize them as one (they were authorized as `list`).
#[actix_rt::test]
async fn a_list_grant_does_not_let_watches_through() {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.csv");
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/policy.csv")).unwrap();
    std::fs::write(
        &policy,
        format!("{shipped}p, lister, *, core:pods, list, allow\n"),
    )
    .unwrap();
    let gw = TestGateway::builder()
        .configure(move |c| c.policy.policy = Some(policy))
        .member(1, "lin", "lister")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let lin = gw.token("lin");
    let pods = gw.proxy_url(1, gw.cluster_ids[0], "/api/v1/namespaces/default/pods");
    assert_eq!(call("GET", &pods, Some(&lin), None).await.0, 200, "a list");
    for query in ["watch=false", "watch=0", "watch=FALSE"] {
        let (code, body) = call("GET", &format!("{pods}?{query}"), Some(&lin), None).await;
        assert_eq!(code, 200, "?{query} is a list: {body}");
    }
    for query in [
        "watch=true",
        "watch=TRUE",
        "watch=True",
        "watch=t",
        "watch=1",
        "watch=",
        "watch",
    ] {
        let (code, body) = call("GET", &format!("{pods}?{query}"), Some(&lin), None).await;
        assert_eq!(code, 403, "?{query} is a watch: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("cannot watch"),
            "{body}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Watches over HTTP/2 towards the API server
// ---------------------------------------------------------------------------------------

/// The next event (one JSON line) of a watch, within 10 s; `buffered` keeps what came
/// after it.
async fn next_event<S>(watch: &mut S, buffered: &mut Vec<u8>) -> Value
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    loop {
        if let Some(pos) = buffered.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffered.drain(..=pos).collect();
            return serde_json::from_slice(&line).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the event arrives within 10 s")
            .expect("the watch is still open")
            .unwrap();
        buffered.extend_from_slice(&chunk);
    }
}

/// kubegate with one worker (so every watch shares this worker's connections), alice
/// admin of org 1, `api` its cluster 1.
fn one_worker_gateway(api: &ApiServer, streams_per_connection: usize) -> TestGateway {
    TestGateway::builder()
        .configure(|c| {
            c.server.workers = 1;
            c.clusters.watch_streams_per_connection = streams_per_connection;
        })
        .member(1, "alice", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start()
}

/// kubegate with one worker, alice admin of org 1, whose cluster 1 is `api` reached at
/// `url` instead (a server in front of it, with `api`'s certificate).
fn one_worker_gateway_at(api: &ApiServer, url: &str) -> TestGateway {
    TestGateway::builder()
        .configure(|c| c.server.workers = 1)
        .member(1, "alice", "admin")
        .cluster(
            1,
            "dev",
            &api.kubeconfig_with_client_cert().replace(api.url(), url),
        )
        .start()
}

/// Watches go over HTTP/2 when the API server offers it, as streams of a few shared
/// connections: more watches than a connection may carry open another connection, and all
/// are served. Hop-by-hop headers never reach an HTTP/2 stream. A list asked for the first
/// time goes on HTTP/1.1.
#[actix_rt::test]
async fn watches_share_http2_connections_and_more_than_one_connection_carries_are_served() {
    let api = ApiServer::start();
    let gw = one_worker_gateway(&api, 4);
    let token = gw.token("alice");
    let url = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods?watch=true");
    let before = api.connections();
    // one with the hop-by-hop headers a client may send, which h2 would refuse to send
    let path = url.strip_prefix(&gw.url).unwrap();
    let mut raw = common::raw::connect(&gw.url);
    common::raw::write(
        &mut raw,
        format!(
            "GET {path} HTTP/1.1\r\nHost: kubegate\r\nAuthorization: Bearer {token}\r\n\
             Connection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\
             TE: trailers\r\n\r\n"
        )
        .as_bytes(),
    );
    let (head, _) = common::raw::read_head(&mut raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut watches = Vec::new();
    for _ in 0..9 {
        let res = client().get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        watches.push((res, Vec::new()));
    }
    assert_eq!(api.open_watches(), 10);
    api.put_object("default", "pods", pod("web"));
    for (res, buffered) in &mut watches {
        let event = next_event(res, buffered).await;
        assert_eq!(event["type"], "ADDED");
        assert_eq!(event["object"]["metadata"]["name"], "web");
    }
    assert_eq!(
        api.connections() - before,
        3,
        "10 watches, at most 4 on a connection: 3 connections"
    );
    let upstream: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("watch"))
        .collect();
    assert_eq!(upstream.len(), 10);
    for request in &upstream {
        assert_eq!(request.http_version, "HTTP/2.0");
        for hop in [
            "connection",
            "keep-alive",
            "x-hop",
            "te",
            "transfer-encoding",
        ] {
            assert!(
                request.header(hop).is_none(),
                "{hop} reached the API server"
            );
        }
    }

    // a watch that ends gives its stream back: the next one fits on a connection open
    drop(watches.pop());
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let mut again = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    api.put_object("default", "pods", pod("db"));
    let mut buffered = Vec::new();
    // (a watch from no resourceVersion starts with the pods there are: web)
    while next_event(&mut again, &mut buffered).await["object"]["metadata"]["name"] != "db" {}
    assert_eq!(api.connections() - before, 3);

    // a list asked for the first time goes on HTTP/1.1
    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods");
    let (code, _) = call("GET", &pods, Some(&token), None).await;
    assert_eq!(code, 200);
    let list = api.requests().into_iter().last().unwrap();
    assert_eq!(list.query, "");
    assert_eq!(list.http_version, "HTTP/1.1");
}

/// A GET whose path answered small (at most 64 KiB) the last time goes over HTTP/2, on
/// the watches' pooled connections, and so does the first get of an object; one that
/// answered large, a first list, and every write stay on HTTP/1.1. A path whose answer
/// grew goes back to HTTP/1.1, and one whose answer shrank to HTTP/2. The answers are the
/// same either way, and each request is one audit event.
#[actix_rt::test]
async fn gets_that_answered_small_go_over_http2_the_next_time() {
    let api = ApiServer::start();
    let gw = one_worker_gateway(&api, 900);
    let token = gw.token("alice");
    let version_of_last = |path: &str| {
        let last = api
            .requests()
            .into_iter()
            .rfind(|r| r.path == path)
            .expect("the request reached the API server");
        (last.method, last.http_version)
    };
    let get = |url: String| {
        let token = token.clone();
        async move {
            let (code, body) = call("GET", &url, Some(&token), None).await;
            assert_eq!(code, 200, "{body}");
            body
        }
    };

    // a small list: HTTP/1.1 the first time, then HTTP/2
    api.put_object("default", "pods", pod("web"));
    let pods_path = "/api/v1/namespaces/default/pods";
    let pods = gw.proxy_url(1, 1, pods_path);
    let first = get(pods.clone()).await;
    assert_eq!(version_of_last(pods_path).1, "HTTP/1.1");
    let second = get(pods.clone()).await;
    assert_eq!(version_of_last(pods_path).1, "HTTP/2.0");
    assert_eq!(first["items"], second["items"]);
    // the same path with another query is another path
    let (code, _) = call("GET", &format!("{pods}?limit=1"), Some(&token), None).await;
    assert_eq!(code, 200);
    assert_eq!(version_of_last(pods_path).1, "HTTP/1.1");

    // an object asked for the first time: HTTP/2 at once
    let web_path = "/api/v1/namespaces/default/pods/web";
    let web = get(gw.proxy_url(1, 1, web_path)).await;
    assert_eq!(web["metadata"]["name"], "web");
    assert_eq!(version_of_last(web_path).1, "HTTP/2.0");
    // a large object: HTTP/2 the first time (it comes whole), then HTTP/1.1
    let cm_path = "/api/v1/namespaces/default/configmaps/big";
    let cm = gw.proxy_url(1, 1, cm_path);
    api.put_configmap_of_size("default", "big", 200 * 1024);
    for version in ["HTTP/2.0", "HTTP/1.1", "HTTP/1.1"] {
        let body = get(cm.clone()).await;
        assert!(body["data"]["payload"].as_str().unwrap().len() > 190 * 1024);
        assert_eq!(version_of_last(cm_path).1, version);
    }
    // shrunk: HTTP/1.1 once more (it answered large last), then HTTP/2
    api.put_configmap_of_size("default", "big", 1024);
    get(cm.clone()).await;
    assert_eq!(version_of_last(cm_path).1, "HTTP/1.1");
    get(cm.clone()).await;
    assert_eq!(version_of_last(cm_path).1, "HTTP/2.0");
    // grown: the next answer comes whole over HTTP/2, and the one after on HTTP/1.1
    api.put_configmap_of_size("default", "big", 300 * 1024);
    let grown = get(cm.clone()).await;
    assert!(grown["data"]["payload"].as_str().unwrap().len() > 290 * 1024);
    assert_eq!(version_of_last(cm_path).1, "HTTP/2.0");
    let again = get(cm.clone()).await;
    assert_eq!(version_of_last(cm_path).1, "HTTP/1.1");
    assert_eq!(grown["data"], again["data"]);

    // writes stay on HTTP/1.1, even to a path that answered small
    let created = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, _) = call("POST", &pods, Some(&token), Some(created)).await;
    assert_eq!(code, 201);
    assert_eq!(
        version_of_last(pods_path),
        ("POST".to_string(), "HTTP/1.1".to_string())
    );
    let listed = get(pods.clone()).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert_eq!(version_of_last(pods_path).1, "HTTP/2.0");

    let events = gw.audit_events();
    let proxied = events
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/v1/namespaces/default/"))
        })
        .count();
    assert_eq!(proxied, 13, "one event per request");
}

/// HTTP/2 flow control: watches whose readers stopped, each behind more data than every
/// buffer on the way holds, leave the other watches on their HTTP/2 connection flowing.
/// (With awc's default windows, 1 MiB a stream and 2 MiB for the connection, the third
/// stalled watch stops the connection.)
#[actix_rt::test]
async fn a_watch_whose_reader_stops_does_not_stall_the_others_on_its_connection() {
    let api = ApiServer::start();
    api.put_configmaps_of_size("default", "big", 24, 1 << 20);
    let gw = one_worker_gateway(&api, 900);
    let token = gw.token("alice");
    let before = api.connections();
    let configmaps = gw.proxy_url(1, 1, "/api/v1/namespaces/default/configmaps?watch=true");
    let mut stalled = Vec::new();
    for _ in 0..3 {
        // 24 MiB of ADDED events each, never read
        let res = client()
            .get(&configmaps)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        stalled.push(res);
    }
    // let them fill the sockets' buffers, then their streams' windows
    actix_rt::time::sleep(Duration::from_secs(2)).await;

    let pods = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods?watch=true");
    let mut live = client()
        .get(&pods)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let mut buffered = Vec::new();
    for name in ["first", "second", "third"] {
        let sent = Instant::now();
        api.put_object("default", "pods", pod(name));
        let event = next_event(&mut live, &mut buffered).await;
        assert_eq!(event["object"]["metadata"]["name"], name);
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{:?}",
            sent.elapsed()
        );
    }
    assert_eq!(
        api.connections() - before,
        1,
        "the four watches share one HTTP/2 connection"
    );
    let upstream: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.query.contains("watch"))
        .collect();
    assert_eq!(upstream.len(), 4);
    assert!(upstream.iter().all(|r| r.http_version == "HTTP/2.0"));
    drop(stalled);
}

/// An API server that speaks HTTP/1.1 only gets watches as before: a connection each.
#[actix_rt::test]
async fn watches_go_over_http1_to_an_api_server_without_http2() {
    let api = ApiServer::builder().http1_only().start();
    let gw = one_worker_gateway(&api, 900);
    let token = gw.token("alice");
    let before = api.connections();
    let url = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods?watch=true");
    let mut watches = Vec::new();
    for _ in 0..3 {
        let res = client().get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        watches.push((res, Vec::new()));
    }
    api.put_object("default", "pods", pod("web"));
    for (res, buffered) in &mut watches {
        let event = next_event(res, buffered).await;
        assert_eq!(event["object"]["metadata"]["name"], "web");
    }
    // the first connection asked for `h2` by ALPN, was offered `http/1.1` alone, and was
    // closed unused: the watches went on the plain client
    assert_eq!(
        api.connections() - before,
        4,
        "a connection per watch, and the one that found out"
    );
    assert!(api.requests().iter().all(|r| r.http_version == "HTTP/1.1"));
    // found out once: the next watch opens its own connection only
    let res = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(api.connections() - before, 5);
}

/// Watch number `n` at `url` through the limited HTTP/2 server: answered within 10 s with
/// a 200 and the server's one event; the response, still open.
async fn limited_watch(
    url: &str,
    token: &str,
    n: usize,
) -> awc::ClientResponse<
    impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
> {
    let mut res = tokio::time::timeout(
        Duration::from_secs(10),
        client().get(url).bearer_auth(token).send(),
    )
    .await
    .unwrap_or_else(|_| panic!("watch {n} got no answer within 10 s"))
    .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut buffered = Vec::new();
    let event = next_event(&mut res, &mut buffered).await;
    assert_eq!(event["object"]["metadata"]["name"], "web");
    res
}

/// A server before the API server allows fewer HTTP/2 streams per connection than
/// `clusters.watch_streams_per_connection` (900): watches past its limit go on another
/// connection instead of waiting for a stream to end.
#[actix_rt::test]
async fn watches_past_the_servers_stream_limit_open_another_connection() {
    let api = ApiServer::start();
    let server = common::limited_h2::LimitedH2::start(api.pki().server_config(), 2);
    let gw = one_worker_gateway_at(&api, &server.url());
    let token = gw.token("alice");
    let url = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods?watch=true");
    let mut watches = Vec::new();
    for n in 0..5 {
        watches.push(limited_watch(&url, &token, n).await);
    }
    assert_eq!(server.open_streams(), 5);
    assert_eq!(
        server.connections(),
        3,
        "5 watches, at most 2 on a connection: 3 connections"
    );
}

/// Watches that come at once, while the first HTTP/2 connection is still opening, are
/// all counted on it; once the server says it allows two streams, those past that move
/// to other connections, and every watch gets its events.
#[actix_rt::test]
async fn watches_that_came_before_the_servers_stream_limit_was_known_are_all_served() {
    let api = ApiServer::start();
    // each connection's handshake waits, so that all six watches come before it is open
    let server = common::limited_h2::LimitedH2::start_slow(
        api.pki().server_config(),
        2,
        Duration::from_millis(500),
    );
    let gw = one_worker_gateway_at(&api, &server.url());
    let token = gw.token("alice");
    let url = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods?watch=true");
    let watches = (0..6).map(|n| limited_watch(&url, &token, n));
    let _open = futures_util::future::join_all(watches).await;
    assert_eq!(server.open_streams(), 6);
    assert_eq!(
        server.connections(),
        3,
        "6 watches, at most 2 on a connection: 3 connections"
    );
}

/// The API server (or a load balancer before it) closes a pooled HTTP/2 connection while
/// it is idle: the next small GET and the next watch open a new one, and get their
/// answers.
#[actix_rt::test]
async fn a_pooled_http2_connection_the_server_closed_is_opened_again() {
    let api = ApiServer::start();
    let relay = common::relay::Relay::start(api.addr());
    let gw = one_worker_gateway_at(&api, &relay.url());
    let token = gw.token("alice");
    api.put_object("default", "pods", pod("web"));
    let pods_path = "/api/v1/namespaces/default/pods";
    let pods = gw.proxy_url(1, 1, pods_path);
    let last_version = || {
        api.requests()
            .into_iter()
            .rfind(|r| r.path == pods_path)
            .expect("the request reached the API server")
            .http_version
    };
    for _ in 0..2 {
        let (code, body) = call("GET", &pods, Some(&token), None).await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(last_version(), "HTTP/2.0");
    let before = relay.connections();

    relay.cut();
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    for round in 0..3 {
        let (code, body) = call("GET", &pods, Some(&token), None).await;
        assert_eq!(code, 200, "round {round}: {body}");
        assert_eq!(body["items"][0]["metadata"]["name"], "web");
        assert_eq!(last_version(), "HTTP/2.0");
    }
    assert_eq!(relay.connections() - before, 1, "one new HTTP/2 connection");

    // cut at once before the next request: sent again on a new connection if the first
    // one failed (or opened anew if kubegate saw the close first)
    relay.cut();
    let url = gw.proxy_url(1, 1, "/api/v1/namespaces/default/pods?watch=true");
    let mut watch = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    let mut buffered = Vec::new();
    assert_eq!(
        next_event(&mut watch, &mut buffered).await["object"]["metadata"]["name"],
        "web"
    );
    let (code, _) = call("GET", &pods, Some(&token), None).await;
    assert_eq!(code, 200);
    assert_eq!(relay.connections() - before, 2);
}
