//! Several replicas: kubegate processes (the real binary) sharing Vault (clusters and
//! tokens), PostgreSQL (policy, memberships, audit) and a signing key, in front of one
//! API server stand-in. What one replica changes, the others see; one dying does not
//! disturb the others.
//!
//! Each test starts its own [`Replicas`]; a new case is a new `#[test]` that starts them
//! and drives them through [`Replica::call`].

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::binary::{wait_exit, Kubegate, Server};
use common::gateway::block_on;
use common::postgres::TestDatabase;
use common::vault::Bao;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The token signing key every replica shares (as a Kubernetes Secret would give it).
const SIGNING_KEY: &str = "replicas-share-this-signing-key-of-more-than-32-bytes";

/// What the replicas share, and the replicas.
struct Replicas {
    api: ApiServer,
    bao: Bao,
    db: TestDatabase,
    replicas: Vec<Replica>,
    /// Configuration added to every replica's (TOML appended at the end).
    extra_config: String,
    /// Environment variables given to every replica.
    extra_env: Vec<(String, String)>,
}

/// One `kubegate serve` process.
struct Replica {
    gate: Kubegate,
    server: Option<Server>,
    /// `http://127.0.0.1:PORT`
    url: String,
}

impl Replicas {
    /// Vault, a database, the API server stand-in and `n` replicas, with `root` a global
    /// administrator and `alice` admin of org 1.
    fn start(n: usize) -> Replicas {
        Replicas::start_with(n, String::new(), Vec::new())
    }

    /// [`start`](Self::start), every replica with `extra_config` appended to its
    /// configuration and `extra_env` in its environment.
    fn start_with(n: usize, extra_config: String, extra_env: Vec<(String, String)>) -> Replicas {
        let api = ApiServer::start();
        let bao = Bao::start();
        let db = TestDatabase::create();
        let mut replicas = Replicas {
            api,
            bao,
            db,
            replicas: Vec::new(),
            extra_config,
            extra_env,
        };
        for i in 0..n {
            let replica = replicas.replica();
            if i == 0 {
                replica.gate.run(&[
                    "member", "add", "--org", "1", "--user", "alice", "--role", "admin",
                ]);
            }
            replicas.replicas.push(replica.serve());
        }
        replicas
    }

    /// A replica's configuration: the defaults, with the shared stores.
    fn replica(&self) -> Replica {
        let (vault, db) = (self.bao.address.clone(), self.db.url.clone());
        let extra = self.extra_config.clone();
        let mut gate = Kubegate::new();
        for (name, value) in &self.extra_env {
            gate = gate.env(name, value);
        }
        let gate = gate
            .env("VAULT_TOKEN", &self.bao.root_token)
            .env("KUBEGATE_SIGNING_KEY", SIGNING_KEY)
            .edit_config(|text| {
                text.replace("kind = \"file\"", "kind = \"vault\"")
                    .replace(
                        "\n[auth]\n",
                        &format!("\n[store.vault]\naddress = \"{vault}\"\n\n[auth]\n"),
                    )
                    .replace("token_store = \"file\"", "token_store = \"vault\"")
                    .replace("revocation_poll = \"2s\"", "revocation_poll = \"200ms\"")
                    .replace(
                        "storage = \"file\"",
                        &format!("storage = \"postgres\"\npostgres_url = \"{db}\""),
                    )
                    .replace("global_admins = []", "global_admins = [\"root\"]")
                    .replace(
                        "sinks = [\"file\"]",
                        &format!("sinks = [\"file\", \"postgres\"]\npostgres_url = \"{db}\""),
                    )
                    + extra.as_str()
            });
        Replica {
            gate,
            server: None,
            url: String::new(),
        }
    }

    /// Registers the API server stand-in as cluster `dev` of org 1 through replica `i`,
    /// as `token`'s owner; returns its id.
    fn add_cluster(&self, i: usize, token: &str) -> u64 {
        let (code, created) = self.replicas[i].call(
            "POST",
            "/pipeline/api/v1/orgs/1/clusters",
            token,
            Some(json!({"name": "dev", "kubeconfig": self.api.kubeconfig_with_client_cert()})),
        );
        assert_eq!(code, 201, "{created}");
        created["id"].as_u64().unwrap()
    }

    fn token(&self, user: &str) -> String {
        self.replicas[0]
            .gate
            .run(&["token", "create", "--user", user])
            .trim()
            .to_string()
    }
}

impl Replica {
    fn serve(mut self) -> Replica {
        let (server, _) = self.gate.serve();
        self.url = self.gate.http_url().expect("serve prints its HTTP address");
        self.server = Some(server);
        self
    }

    /// `method path` on this replica with `token` and `body`: status and JSON.
    fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let (method, url, token) = (
            method.to_string(),
            format!("{}{path}", self.url),
            token.to_string(),
        );
        block_on(move || async move { common::http::call(&method, &url, Some(&token), body).await })
    }

    fn pid(&self) -> u32 {
        self.server.as_ref().unwrap().0.id()
    }
}

/// Calls `probe` every 50 ms until it returns true, for at most `limit`; returns how long
/// it took.
fn within(limit: Duration, what: &str, probe: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !probe() {
        assert!(start.elapsed() < limit, "{what} (after {limit:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

const PODS: &str = "/api/v1/namespaces/default/pods";

fn proxy(cluster: u64, path: &str) -> String {
    format!("/pipeline/api/v1/orgs/1/clusters/{cluster}/proxy{path}")
}

#[test]
fn a_cluster_registered_through_one_replica_is_served_by_the_other() {
    let r = Replicas::start(2);
    let (a, b) = (&r.replicas[0], &r.replicas[1]);
    let alice = r.token("alice");
    let id = r.add_cluster(0, &alice);
    let (code, list) = b.call("GET", &proxy(id, PODS), &alice, None);
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "PodList");
    let (code, clusters) = b.call("GET", "/pipeline/api/v1/orgs/1/clusters", &alice, None);
    assert_eq!(code, 200);
    assert_eq!(clusters.as_array().map(Vec::len), Some(1), "{clusters}");

    // the audit trail is one: what went through A is found through B (once written, in
    // batches)
    within(
        Duration::from_secs(5),
        "the creation on A is in the trail B reads",
        || {
            let (code, page) = b.call(
                "GET",
                "/pipeline/api/v1/orgs/1/audit?limit=100",
                &alice,
                None,
            );
            code == 200
                && page["events"].as_array().is_some_and(|events| {
                    events
                        .iter()
                        .any(|e| e["method"] == "POST" && e["status"] == 201)
                })
        },
    );
    // a cluster deleted through B is gone on A at once (no proxy kept by A may serve it
    // past its next lookup of the store: A answers 404)
    let (code, _) = b.call(
        "DELETE",
        &format!("/pipeline/api/v1/orgs/1/clusters/{id}"),
        &alice,
        None,
    );
    assert_eq!(code, 200);
    let (code, _) = a.call(
        "GET",
        &format!("/pipeline/api/v1/orgs/1/clusters/{id}"),
        &alice,
        None,
    );
    assert_eq!(code, 404);
}

#[test]
fn membership_changes_and_policy_reloads_reach_every_replica() {
    let r = Replicas::start(2);
    let (a, b) = (&r.replicas[0], &r.replicas[1]);
    let (alice, bob, root) = (r.token("alice"), r.token("bob"), r.token("root"));
    let id = r.add_cluster(0, &alice);
    let configmaps = proxy(id, "/api/v1/namespaces/default/configmaps");
    assert_eq!(b.call("GET", &configmaps, &bob, None).0, 403);

    // bob becomes a member through A; B lets him read
    let (code, body) = a.call(
        "PUT",
        "/pipeline/api/v1/orgs/1/members/bob",
        &alice,
        Some(json!({"role": "member"})),
    );
    assert!(code == 200 || code == 204, "{code} {body}");
    let took = within(Duration::from_secs(5), "B sees bob's membership", || {
        b.call("GET", &configmaps, &bob, None).0 == 200
    });
    println!("membership made on A in force on B after {took:?}");

    // a policy line added to the shared table and reloaded through A: B applies it
    r.db.execute(
        "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4) \
         VALUES ('p', 'member', '*', 'core:configmaps', '*', 'deny')",
    );
    let (code, stats) = a.call("POST", "/pipeline/api/v1/admin/policy/reload", &root, None);
    assert_eq!(code, 200, "{stats}");
    assert_eq!(
        a.call("GET", &configmaps, &bob, None).0,
        403,
        "at once on A"
    );
    let took = within(
        Duration::from_secs(5),
        "B applies the reloaded policy",
        || b.call("GET", &configmaps, &bob, None).0 == 403,
    );
    println!("policy reloaded on A in force on B after {took:?}");

    // bob removed through B: A refuses him
    assert_eq!(
        b.call(
            "DELETE",
            "/pipeline/api/v1/orgs/1/members/bob",
            &alice,
            None
        )
        .0 / 100,
        2
    );
    let pods = proxy(id, PODS);
    within(Duration::from_secs(5), "A sees bob removed", || {
        a.call("GET", &pods, &bob, None).0 == 403
    });
}

#[test]
fn a_replica_killed_mid_request_does_not_disturb_the_other() {
    let mut r = Replicas::start(2);
    let alice = r.token("alice");
    let id = r.add_cluster(0, &alice);
    let watch_path = proxy(id, "/api/v1/namespaces/default/pods?watch=true");
    let (a_url, b_url) = (
        format!("{}{watch_path}", r.replicas[0].url),
        format!("{}{watch_path}", r.replicas[1].url),
    );

    // a watch through each replica, then A is killed while both stream
    let (tx, rx) = std::sync::mpsc::channel::<(&'static str, Result<String, String>)>();
    let token = alice.clone();
    let watcher = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let client = common::http::client();
            let open = |url: String| {
                let client = client.clone();
                let token = token.clone();
                async move { client.get(url).bearer_auth(token).send().await.unwrap() }
            };
            let (mut wa, mut wb) = (open(a_url).await, open(b_url).await);
            assert_eq!((wa.status().as_u16(), wb.status().as_u16()), (200, 200));
            tx.send(("open", Ok(String::new()))).unwrap();
            let a = async {
                let mut result = Ok("ended".to_string());
                while let Some(item) = wa.next().await {
                    if let Err(e) = item {
                        result = Err(e.to_string());
                        break;
                    }
                }
                tx.send(("a", result)).unwrap();
            };
            let b = async {
                let mut seen = String::new();
                let mut result = Err("B's watch ended".to_string());
                while let Some(item) = wb.next().await {
                    match item {
                        Ok(bytes) => {
                            seen.push_str(&String::from_utf8_lossy(&bytes));
                            if seen.contains("after-the-kill") {
                                result = Ok(seen);
                                break;
                            }
                        }
                        Err(e) => {
                            result = Err(e.to_string());
                            break;
                        }
                    }
                }
                tx.send(("b", result)).unwrap();
            };
            futures_util::join!(a, b);
        })
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap().0, "open");
    within(
        Duration::from_secs(5),
        "both watches reach the API server",
        || r.api.open_watches() == 2,
    );
    let killed = r.replicas[0].pid();
    assert!(Command::new("kill")
        .args(["-KILL", &killed.to_string()])
        .status()
        .unwrap()
        .success());
    let mut dead = r.replicas[0].server.take().unwrap();
    let status = wait_exit(&mut dead.0, Duration::from_secs(10));
    assert!(!status.success(), "A was killed");
    let (who, a_watch) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(who, "a");
    println!("A's client saw: {a_watch:?}");
    within(
        Duration::from_secs(5),
        "A's upstream watch is let go",
        || r.api.open_watches() == 1,
    );

    // B goes on: its open watch gets new events, new requests are served, it is ready
    r.api.put_object(
        "default",
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "after-the-kill", "namespace": "default"}}),
    );
    let (who, b_watch) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(who, "b");
    assert!(b_watch.is_ok(), "B's watch goes on: {b_watch:?}");
    watcher.join().unwrap();
    let b = &r.replicas[1];
    for _ in 0..20 {
        assert_eq!(b.call("GET", &proxy(id, PODS), &alice, None).0, 200);
    }
    let ready = block_on({
        let url = format!("{}/readyz", b.url);
        move || async move { common::http::call("GET", &url, None, None).await.0 }
    });
    assert_eq!(ready, 200, "B is ready");

    // and a replacement for A serves at once from the shared state
    let replacement = r.replica().serve();
    assert_eq!(
        replacement.call("GET", &proxy(id, PODS), &alice, None).0,
        200
    );
}

#[test]
fn a_token_revoked_on_one_replica_is_refused_by_the_other_within_seconds() {
    let r = Replicas::start(2);
    let (a, b) = (&r.replicas[0], &r.replicas[1]);
    let alice = r.token("alice");
    let pods = proxy(r.add_cluster(0, &alice), PODS);
    let (code, made) = a.call(
        "POST",
        "/pipeline/api/v1/tokens",
        &alice,
        Some(json!({"name": "laptop"})),
    );
    assert_eq!(code, 201, "{made}");
    let (laptop, id) = (
        made["token"].as_str().unwrap().to_string(),
        made["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(b.call("GET", &pods, &laptop, None).0, 200);
    let (code, _) = a.call(
        "DELETE",
        &format!("/pipeline/api/v1/tokens/{id}"),
        &alice,
        None,
    );
    assert_eq!(code, 204);
    assert_eq!(a.call("GET", &pods, &laptop, None).0, 401, "at once on A");
    let took = within(
        Duration::from_secs(5),
        "B refuses the revoked token",
        || b.call("GET", &pods, &laptop, None).0 == 401,
    );
    println!("a token revoked on A was refused by B after {took:?} (poll 200 ms)");
    // B lists it as revoked: the record is in Vault
    let (code, listed) = b.call("GET", "/pipeline/api/v1/tokens", &alice, None);
    assert_eq!(code, 200);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["revoked"], true, "{listed}");
}

/// Two replicas whose login provider is the local OIDC provider `dex` (its group
/// `acme/admins` admin of org 1), with their sessions in Redis.
fn two_replicas_with_oidc_and_redis() -> (common::oidc::OidcProvider, Replicas) {
    use common::oidc::{OidcProvider, CLIENT_ID, CLIENT_SECRET};
    let provider = OidcProvider::start();
    let login = format!(
        "\n[login.providers.dex]\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
         user_claim = \"preferred_username\"\n\n[[login.role_rules]]\nprovider = \"dex\"\n\
         group = \"acme/admins\"\norg = 1\nrole = \"admin\"\n",
        provider.issuer()
    );
    let redis = common::addresses::redis_url();
    let env = [
        ("KUBEGATE_SESSIONS__STORE", "redis"),
        ("KUBEGATE_SESSIONS__REDIS_URL", redis.as_str()),
        ("KUBEGATE_LOGIN_DEX_CLIENT_SECRET", CLIENT_SECRET),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    (provider, Replicas::start_with(2, login, env))
}

#[test]
fn a_session_made_on_one_replica_works_on_the_other() {
    use common::session::log_in_at;
    let (_provider, r) = two_replicas_with_oidc_and_redis();
    let (a, b) = (&r.replicas[0], &r.replicas[1]);
    let alice = r.token("alice");
    let pods = proxy(r.add_cluster(0, &alice), PODS);
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    let (on_b, took, after_logout) = block_on(move || async move {
        let (mut jar, end) = log_in_at(&a_url, "dex", "/").await;
        assert_eq!(end.status, 303, "{}", end.text);
        let who = jar.get(&format!("{b_url}/auth/session")).await;
        assert_eq!(
            who.status, 200,
            "the session made on A works on B: {}",
            who.text
        );
        // the role the login gave on A (from the group) is in force on B once B has
        // read the memberships
        let start = Instant::now();
        let on_b = loop {
            let page = jar.get(&format!("{b_url}{pods}")).await;
            if page.status == 200 || start.elapsed() > Duration::from_secs(5) {
                break page.status;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        };
        let took = start.elapsed();
        // logout on B ends the session on A too, even for a copy of the cookie
        let copy = jar.clone();
        let csrf = who.body["csrfToken"].as_str().unwrap().to_string();
        let out = jar
            .send(
                "POST",
                &format!("{b_url}/auth/logout"),
                &[("X-CSRF-Token", &csrf)],
                None,
            )
            .await;
        assert_eq!(out.status, 200, "{}", out.text);
        let mut copy = copy;
        let after_logout = copy.get(&format!("{a_url}/auth/session")).await.status;
        (on_b, took, after_logout)
    });
    assert_eq!(on_b, 200, "the cookie alone opens the proxy on B");
    println!("the login's role reached B after {took:?}");
    assert_eq!(after_logout, 401, "logged out everywhere");
}

/// `POST {base}/auth/cli/token` with a form: status and JSON.
async fn cli_token(base: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let body: String = form
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut res = awc::Client::new()
        .post(format!("{base}/auth/cli/token"))
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

#[test]
fn a_kubectl_login_spans_replicas_and_its_revocation_reaches_them_all() {
    use common::session::log_in_at;
    let (_provider, r) = two_replicas_with_oidc_and_redis();
    let (a, b) = (&r.replicas[0], &r.replicas[1]);
    let alice = r.token("alice");
    let pods = proxy(r.add_cluster(0, &alice), PODS);
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    // the browser step on A, the code exchanged on B, a refresh on A; a device login
    // started on B, confirmed on A, polled on B (the grants are in Vault)
    let (access, refresh, session, device_user) = block_on(move || async move {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFREjXk";
        let challenge = "ncc7ZhWd5eYNpE_-AnpLd0HFdrU0cZJIiofyYzwdAZk";
        let loopback = "http://127.0.0.1:43111/callback";
        let (mut jar, end) = log_in_at(&a_url, "dex", "/").await;
        assert_eq!(end.status, 303, "{}", end.text);
        let page = jar
            .get(&format!(
                "{a_url}/auth/cli/authorize?redirect_uri={}&state=s&code_challenge={challenge}&code_challenge_method=S256&client=laptop",
                percent_encoding::utf8_percent_encode(loopback, percent_encoding::NON_ALPHANUMERIC)
            ))
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let at = page.text.find("code=").unwrap() + 5;
        let code = &page.text[at..at + page.text[at..].find('&').unwrap()];
        let code = percent_encoding::percent_decode_str(code)
            .decode_utf8()
            .unwrap()
            .into_owned();
        let exchange = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier),
            ("redirect_uri", loopback),
        ];
        let (status, tokens) = cli_token(&b_url, &exchange).await;
        assert_eq!(status, 200, "{tokens}");
        let (status, replayed) = cli_token(&a_url, &exchange).await;
        assert_eq!(
            status, 400,
            "a code is good once on every replica: {replayed}"
        );
        let (status, second) = cli_token(
            &a_url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
        assert_eq!(status, 200, "{second}");

        let mut res = awc::Client::new()
            .post(format!("{b_url}/auth/cli/device"))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .send_body("client=server")
            .await
            .unwrap();
        let device: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
        let user_code = device["user_code"].as_str().unwrap();
        let confirm = jar
            .get(&format!(
                "{a_url}/auth/cli/device/verify?user_code={user_code}"
            ))
            .await;
        assert_eq!(
            confirm.status, 200,
            "the code started on B is known on A: {}",
            confirm.text
        );
        let at = confirm.text.find("name=\"csrf\" value=\"").unwrap() + 19;
        let csrf = &confirm.text[at..at + confirm.text[at..].find('"').unwrap()];
        let done = jar
            .send(
                "POST",
                &format!("{a_url}/auth/cli/device/verify"),
                &[("Content-Type", "application/x-www-form-urlencoded")],
                Some(&format!(
                    "user_code={user_code}&csrf={}&decision=approve",
                    percent_encoding::utf8_percent_encode(csrf, percent_encoding::NON_ALPHANUMERIC)
                )),
            )
            .await;
        assert_eq!(done.status, 200, "{}", done.text);
        let (status, polled) = cli_token(
            &b_url,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device["device_code"].as_str().unwrap()),
            ],
        )
        .await;
        assert_eq!(status, 200, "{polled}");
        (
            second["access_token"].as_str().unwrap().to_string(),
            second["refresh_token"].as_str().unwrap().to_string(),
            second["session"].as_str().unwrap().to_string(),
            polled["user"].as_str().unwrap().to_string(),
        )
    });
    assert_eq!(device_user, "dex:alice");
    // the role the login gave on A is in force on B once B has read the memberships
    // (policy.member_poll), as in a_session_made_on_one_replica_works_on_the_other
    within(
        Duration::from_secs(5),
        "B serves the session's token",
        || b.call("GET", &pods, &access, None).0 == 200,
    );
    // the person revokes the session on A: B refuses its token and its refresh soon after
    let (code, _) = a.call(
        "DELETE",
        &format!("/pipeline/api/v1/tokens/{session}"),
        &access,
        None,
    );
    assert_eq!(code, 204);
    let took = within(
        Duration::from_secs(5),
        "B refuses the session's token",
        || b.call("GET", &pods, &access, None).0 == 401,
    );
    println!("a kubectl login session revoked on A was refused by B after {took:?}");
    let b_url = b.url.clone();
    let (status, refused) = block_on(move || async move {
        cli_token(
            &b_url,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await
    });
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_grant");
}
