//! Serving HTTPS: the certificate is reloaded on SIGHUP and when its files change, a bad
//! new certificate keeps the old one in use, ALPN offers HTTP/2 only when configured,
//! and what HTTP/2 does to a watch its client cancels.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::Kubegate;
use common::gateway::TestGateway;
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// What one TLS connection to kubegate showed.
struct Handshake {
    /// The leaf certificate presented.
    leaf: Vec<u8>,
    /// The protocol ALPN chose.
    alpn: Option<Vec<u8>>,
    /// The answer to `GET /healthz` over it (HTTP/1.1 only).
    answer: String,
}

fn client_config(cas: &[&Path], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Connects to `https_url` trusting `cas`, offering `alpn`; over HTTP/1.1, asks for
/// `/healthz`.
fn handshake(https_url: &str, cas: &[&Path], alpn: &[&[u8]]) -> Handshake {
    let addr = https_url.trim_start_matches("https://");
    let config = Arc::new(client_config(cas, alpn));
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("the TLS handshake");
    }
    let leaf = tls.conn.peer_certificates().unwrap()[0].to_vec();
    let alpn = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
    let mut answer = String::new();
    if alpn.as_deref() != Some(b"h2") {
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let _ = tls.read_to_string(&mut answer);
    }
    Handshake { leaf, alpn, answer }
}

/// The first certificate of the PEM file `path`, DER.
fn leaf_of(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// A new CA and certificate in a directory of their own: `(dir, cert, key, ca)`.
fn new_certificate() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    kubegate::http::tls::ensure_self_signed(&cert, &key).unwrap();
    let ca = dir.path().join("ca.crt");
    (dir, cert, key, ca)
}

/// Puts `cert` and `key` in place of the served files, each replaced at once (rename).
fn install(tls_dir: &Path, cert: &Path, key: &Path) {
    for (from, name) in [(key, "server.key"), (cert, "server.crt")] {
        let tmp = tls_dir.join(format!(".{name}.new"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, tls_dir.join(name)).unwrap();
    }
}

/// `kubegate_tls_reloads_total{outcome}` from `/metrics`.
fn reloads(http_url: &str, outcome: &str) -> u64 {
    let url = format!("{http_url}/metrics");
    let text = common::gateway::block_on(move || async move {
        let mut res = common::http::client().get(url).send().await.unwrap();
        String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
    });
    let prefix = format!("kubegate_tls_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

/// Polls `until` every 5 ms for at most 10 s; returns how long it took.
fn wait_for(what: &str, until: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !until() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let gate = Kubegate::new().edit_config(|t| {
        t.replace(
            "tls_reload_interval = \"10s\"",
            "tls_reload_interval = \"0s\"",
        )
    });
    let (server, https) = gate.serve();
    let http = gate.http_url().unwrap();
    let tls_dir = gate.dir().join("data/tls");
    let first_ca = tls_dir.join("ca.crt");
    let (_new, cert, key, new_ca) = new_certificate();
    let cas = [first_ca.as_path(), new_ca.as_path()];

    let before = handshake(&https, &cas, &[b"http/1.1"]);
    assert_eq!(before.leaf, leaf_of(&tls_dir.join("server.crt")));
    assert!(
        before.answer.starts_with("HTTP/1.1 200"),
        "{}",
        before.answer
    );

    // new files, no signal, no polling: the old certificate stays
    install(&tls_dir, &cert, &key);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(handshake(&https, &cas, &[]).leaf, before.leaf);

    // SIGHUP: the next handshake gets the new one
    let sent = Instant::now();
    server.signal("HUP");
    let new_leaf = leaf_of(&cert);
    wait_for("the new certificate is served after SIGHUP", || {
        handshake(&https, &cas, &[]).leaf == new_leaf
    });
    println!(
        "SIGHUP to the new certificate in the next handshake: {:?}",
        sent.elapsed()
    );
    assert_eq!(reloads(&http, "ok"), 1);
    let after = handshake(&https, &[new_ca.as_path()], &[]);
    assert!(after.answer.starts_with("HTTP/1.1 200"), "{}", after.answer);

    // a broken certificate file: refused, logged, the one in force stays
    std::fs::write(
        tls_dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    server.signal("HUP");
    wait_for("the failed reload is counted", || {
        reloads(&http, "failed") == 1
    });
    assert_eq!(handshake(&https, &cas, &[]).leaf, new_leaf);
    // a key that is not the certificate's: refused too
    let (_other, _, other_key, _) = new_certificate();
    install(&tls_dir, &cert, &other_key);
    server.signal("HUP");
    wait_for("the mismatched key is refused", || {
        reloads(&http, "failed") == 2
    });
    let still = handshake(&https, &cas, &[]);
    assert_eq!(still.leaf, new_leaf);
    assert!(still.answer.starts_with("HTTP/1.1 200"));
    assert_eq!(reloads(&http, "ok"), 1);
}

#[test]
fn changed_files_are_picked_up_without_a_signal() {
    let gate = Kubegate::new().edit_config(|t| {
        t.replace(
            "tls_reload_interval = \"10s\"",
            "tls_reload_interval = \"200ms\"",
        )
    });
    let (_server, https) = gate.serve();
    let tls_dir = gate.dir().join("data/tls");
    let first_ca = tls_dir.join("ca.crt");
    let (_new, cert, key, new_ca) = new_certificate();
    let cas = [first_ca.as_path(), new_ca.as_path()];
    // a connection opened before the change keeps working after it
    let addr = https.trim_start_matches("https://").to_string();
    let config = Arc::new(client_config(&cas, &[b"http/1.1"]));
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut open = rustls::StreamOwned::new(conn, TcpStream::connect(&addr).unwrap());
    open.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = open.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let changed = Instant::now();
    install(&tls_dir, &cert, &key);
    let new_leaf = leaf_of(&cert);
    wait_for("the changed files are served", || {
        handshake(&https, &cas, &[]).leaf == new_leaf
    });
    println!(
        "file change to the new certificate (polling every 200 ms): {:?}",
        changed.elapsed()
    );
    open.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    let _ = open.read_to_string(&mut rest);
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "the connection opened before the reload still serves: {rest}"
    );
}

#[test]
fn alpn_offers_http2_only_when_configured() {
    let off = TestGateway::builder()
        .https()
        .configure(|c| c.server.http2 = false)
        .start();
    let ca = off.data_dir().join("tls/ca.crt");
    let url = off.https_url.clone().unwrap();
    let h = handshake(&url, &[ca.as_path()], &[b"h2", b"http/1.1"]);
    assert_eq!(h.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(h.answer.starts_with("HTTP/1.1 200"), "{}", h.answer);

    let on = TestGateway::builder().https().start();
    let ca = on.data_dir().join("tls/ca.crt");
    let url = on.https_url.clone().unwrap();
    let h = handshake(&url, &[ca.as_path()], &[b"h2", b"http/1.1"]);
    assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]));
    let h = handshake(&url, &[ca.as_path()], &[b"http/1.1"]);
    assert_eq!(
        h.alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "HTTP/1.1 stays offered (upgrades need it)"
    );
    assert!(h.answer.starts_with("HTTP/1.1 200"), "{}", h.answer);
}

/// A client over TLS trusting `ca` that prefers HTTP/2, as kubectl does.
fn h2_client(ca: &Path) -> awc::Client {
    let config = client_config(&[ca], &[b"h2", b"http/1.1"]);
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
        .disable_timeout()
        .finish()
}

/// How long the API server's watch stays open after an HTTP/2 client cancels its watch
/// through kubegate: the stream is reset (RST_STREAM) while the connection stays open.
/// `None` when it was still open after `limit`.
async fn h2_watch_cancel(http2: bool, limit: Duration) -> Option<Duration> {
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .https()
        .configure(|c| c.server.http2 = http2)
        .member(1, "alice", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let token = gw.token("alice");
    let https = gw.https_url.clone().unwrap();
    let client = h2_client(&gw.data_dir().join("tls/ca.crt"));
    let url = format!(
        "{https}/pipeline/api/v1/orgs/1/clusters/1/proxy/api/v1/namespaces/default/pods?watch=true"
    );
    let mut watch = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    assert_eq!(
        watch.version(),
        if http2 {
            awc::http::Version::HTTP_2
        } else {
            awc::http::Version::HTTP_11
        }
    );
    api.put_object(
        "default",
        "pods",
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}}),
    );
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event");
    assert!(first.is_some());
    assert_eq!(api.open_watches(), 1);
    // keep the connection busy with another request, so that only the stream ends
    let version = format!("{https}/pipeline/api/v1/orgs/1/clusters/1/proxy/version");
    drop(watch);
    let cancelled = Instant::now();
    let mut res = client
        .get(&version)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let _ = res.body().await;
    while api.open_watches() > 0 {
        if cancelled.elapsed() > limit {
            return None;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    Some(cancelled.elapsed())
}

#[actix_rt::test]
async fn a_watch_cancelled_over_http2_lets_go_of_the_api_server() {
    let over_h1 = h2_watch_cancel(false, Duration::from_secs(5)).await;
    println!("HTTP/1.1: the upstream watch closed {over_h1:?} after the client left");
    assert!(
        over_h1.is_some(),
        "over HTTP/1.1 the upstream watch is let go"
    );
    let over_h2 = h2_watch_cancel(true, Duration::from_secs(5)).await;
    println!("HTTP/2: the upstream watch closed {over_h2:?} after the client reset its stream");
    assert!(
        over_h2.is_some(),
        "over HTTP/2 the upstream watch is let go when the client resets the stream"
    );
}

#[test]
fn a_renewed_kubernetes_secret_volume_is_picked_up() {
    use std::os::unix::fs::symlink;
    // a Secret volume as the kubelet lays it out: the files are links through "..data",
    // a link to a timestamped directory that is swapped (renamed over) on renewal
    let (first_dir, first_cert, first_key, first_ca) = new_certificate();
    let volume = tempfile::tempdir().unwrap();
    let version = |name: &str, cert: &Path, key: &Path| {
        let dir = volume.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(cert, dir.join("tls.crt")).unwrap();
        std::fs::copy(key, dir.join("tls.key")).unwrap();
        let link = volume.path().join("..data_tmp");
        symlink(name, &link).unwrap();
        std::fs::rename(&link, volume.path().join("..data")).unwrap();
    };
    version("..2026_11_28_1", &first_cert, &first_key);
    for name in ["tls.crt", "tls.key"] {
        symlink(format!("..data/{name}"), volume.path().join(name)).unwrap();
    }
    let (cert_path, key_path) = (volume.path().join("tls.crt"), volume.path().join("tls.key"));
    let gate = Kubegate::new().edit_config(|t| {
        t.replace(
            &t.lines()
                .find(|l| l.starts_with("tls_cert_file"))
                .unwrap()
                .to_string(),
            &format!("tls_cert_file = \"{}\"", cert_path.display()),
        )
        .replace(
            &t.lines()
                .find(|l| l.starts_with("tls_key_file"))
                .unwrap()
                .to_string(),
            &format!("tls_key_file = \"{}\"", key_path.display()),
        )
        .replace("tls_self_signed = true", "tls_self_signed = false")
        .replace(
            "tls_reload_interval = \"10s\"",
            "tls_reload_interval = \"200ms\"",
        )
    });
    let (_server, https) = gate.serve();
    let (_second_dir, cert, key, second_ca) = new_certificate();
    let cas = [first_ca.as_path(), second_ca.as_path()];
    assert_eq!(handshake(&https, &cas, &[]).leaf, leaf_of(&first_cert));
    version("..2026_11_28_2", &cert, &key);
    let took = wait_for("the renewed Secret is served", || {
        handshake(&https, &cas, &[]).leaf == leaf_of(&cert)
    });
    println!("renewed Secret volume served after {took:?}");
    drop(first_dir);
}

#[actix_rt::test]
async fn http2_requests_have_the_same_header_limits() {
    let gw = TestGateway::builder().https().start();
    let client = h2_client(&gw.data_dir().join("tls/ca.crt"));
    let url = format!("{}/healthz", gw.https_url.clone().unwrap());
    let send = |padding: usize| {
        client
            .get(&url)
            .insert_header(("x-padding", "a".repeat(padding)))
            .send()
    };
    let res = send(1000).await.unwrap();
    assert_eq!(res.version(), awc::http::Version::HTTP_2);
    assert_eq!(res.status().as_u16(), 200);
    // past server.max_header_bytes (16 KiB): kubegate's 431 Status
    let res = send(20_000).await.unwrap();
    assert_eq!(res.status().as_u16(), 431);
    // past the HTTP/2 header list limit (64 KiB): h2's own 431, never decoded whole
    match send(100_000).await {
        Ok(res) => assert_eq!(res.status().as_u16(), 431),
        Err(e) => println!("100 KB of headers refused by HTTP/2: {e}"),
    }
    let res = send(10).await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "the connection still serves");
}
