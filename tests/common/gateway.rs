//! Starts kubegate in-process on port 0, with its stores, key and audit file in a
//! temporary directory, against whatever API servers a test registers.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use kubegate::config::Config;
use kubegate::http::{Gateway, Listeners};

/// A kubegate being set up.
pub struct GatewayBuilder {
    config: Config,
    dir: tempfile::TempDir,
    members: Vec<(u64, String, String)>,
    clusters: Vec<(u64, String, String, bool)>,
    https: bool,
}

/// A running kubegate.
pub struct TestGateway {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `https://127.0.0.1:PORT`, when the builder asked for HTTPS (self-signed, the CA
    /// is `data/tls/ca.crt`).
    pub https_url: Option<String>,
    /// Its configuration (paths inside `dir`).
    pub config: Config,
    /// The ids of the clusters registered by the builder, in order.
    pub cluster_ids: Vec<u64>,
    dir: tempfile::TempDir,
    handle: Option<ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Runs a future to completion on a fresh actix system in another thread (tests may
/// already be inside a runtime).
pub fn block_on<F, T>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || actix_rt::System::new().block_on(make()))
        .join()
        .expect("the helper thread panicked")
}

impl TestGateway {
    /// A kubegate with the repository's model and policy and a private data directory.
    pub fn builder() -> GatewayBuilder {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::defaults();
        config.server.listen = Some("127.0.0.1:0".parse().unwrap());
        config.server.listen_tls = None;
        config.server.tls_cert_file = dir.path().join("data/tls/server.crt");
        config.server.tls_key_file = dir.path().join("data/tls/server.key");
        config.server.workers = 2;
        config.server.shutdown_grace = Duration::from_secs(2);
        config.store.path = dir.path().join("data");
        config.auth.signing_key_file = dir.path().join("data/signing-key");
        config.policy.model = Some(repo_file("config/rbac_model.conf"));
        config.policy.policy = Some(repo_file("config/policy.csv"));
        config.policy.member_poll = Duration::from_millis(100);
        config.audit.file = dir.path().join("data/audit.jsonl");
        config.audit.spill_dir = dir.path().join("data/audit-spill");
        config.audit.flush_interval = Duration::from_millis(20);
        config.clusters.connect_timeout = Duration::from_secs(2);
        config.clusters.idle_timeout = Duration::ZERO;
        GatewayBuilder {
            config,
            dir,
            members: Vec::new(),
            clusters: Vec::new(),
            https: false,
        }
    }

    /// `{url}/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy{path}`
    pub fn proxy_url(&self, org: u64, cluster: u64, path: &str) -> String {
        format!(
            "{}/pipeline/api/v1/orgs/{org}/clusters/{cluster}/proxy{path}",
            self.url
        )
    }

    /// A token for `user`, signed with this gateway's key.
    pub fn token(&self, user: &str) -> String {
        let (config, user) = (self.config.clone(), user.to_string());
        block_on(
            move || async move { kubegate::cli::create_token(&config, &user, None, "test").await },
        )
        .expect("a token")
        .token
    }

    /// Gives `user` a role while the gateway runs, and waits until the policy has it.
    pub fn set_member(&self, org: u64, user: &str, role: &str) {
        let (config, user2, role2) = (self.config.clone(), user.to_string(), role.to_string());
        block_on(
            move || async move { kubegate::cli::set_member(&config, org, &user2, &role2).await },
        )
        .expect("member set");
        // the policy enforcer polls the member store every 100 ms in tests
        std::thread::sleep(Duration::from_millis(400));
    }

    /// Every audit event written so far.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.config.audit.file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect()
    }

    /// Waits (up to 5 s) until an audit event satisfies `want`, and returns it.
    pub fn wait_audit(&self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(e) = self.audit_events().into_iter().find(|e| want(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no such audit event; have: {:#?}",
                self.audit_events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The raw bytes of the data directory's files (for secret scans).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the server gracefully and waits for it (audit flushed).
    pub fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            block_on(move || async move { handle.stop(true).await });
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the gateway thread panicked");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop();
    }
}

impl GatewayBuilder {
    /// Changes the configuration.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Serves HTTPS too, with a self-signed certificate made at start.
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// Gives `user` the role `role` in `org` before start.
    pub fn member(mut self, org: u64, user: &str, role: &str) -> Self {
        self.members.push((org, user.into(), role.into()));
        self
    }

    /// Registers a cluster named `name` in `org` before start.
    pub fn cluster(mut self, org: u64, name: &str, kubeconfig: &str) -> Self {
        self.clusters
            .push((org, name.into(), kubeconfig.into(), false));
        self
    }

    /// [`Self::cluster`], with impersonation on: requests reach it as the person.
    pub fn impersonating_cluster(mut self, org: u64, name: &str, kubeconfig: &str) -> Self {
        self.clusters
            .push((org, name.into(), kubeconfig.into(), true));
        self
    }

    /// Starts kubegate in its own thread and actix system.
    pub fn start(self) -> TestGateway {
        let GatewayBuilder {
            config,
            dir,
            members,
            clusters,
            https,
        } = self;
        let setup = config.clone();
        let cluster_ids = block_on(move || async move {
            for (org, user, role) in members {
                kubegate::cli::set_member(&setup, org, &user, &role)
                    .await
                    .expect("member set");
            }
            let mut ids = Vec::new();
            for (org, name, kubeconfig, impersonate) in clusters {
                let new = kubegate::clusters::NewCluster {
                    name: &name,
                    kubeconfig: &kubeconfig,
                    context: None,
                    impersonate,
                    record_sessions: Default::default(),
                };
                let record = kubegate::cli::add_cluster(&setup, org, new)
                    .await
                    .expect("cluster added");
                ids.push(record.id);
            }
            ids
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tls_listener = https.then(|| TcpListener::bind("127.0.0.1:0").expect("bind port 0"));
        let https_url = tls_listener
            .as_ref()
            .map(|l| format!("https://{}", l.local_addr().unwrap()));
        let (tx, rx) = mpsc::channel();
        let run_config = config.clone();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let listeners = Listeners {
                    http: Some(listener),
                    https: tls_listener,
                };
                let gateway = Gateway::bind(&run_config, listeners)
                    .await
                    .expect("kubegate starts");
                tx.send(gateway.handle()).unwrap();
                gateway.run().await.expect("kubegate serves");
            })
        });
        let handle = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("kubegate started in time");
        TestGateway {
            url,
            https_url,
            config,
            cluster_ids,
            dir,
            handle: Some(handle),
            thread: Some(thread),
        }
    }
}
