//! The proxy benchmark: kubegate next to `kubectl proxy` and to the API server stand-in
//! reached directly, in one run. `bench/README.md` says what is measured and how to read
//! it; `bench/run.sh` runs it.
//!
//! Core 0 runs the proxy under test (kubegate with one HTTP worker, or kubectl proxy);
//! core 1 runs this process: the load generator (awc on one current-thread runtime) and
//! the stand-in (its own thread, one worker). Every loop is bounded in count and time, and
//! all traffic stays on 127.0.0.1.

// The stand-in of the integration tests. Top-level modules rather than `mod common { .. }`:
// inside an inline module the path would be resolved from bench/common/, which does not
// exist. `apiserver`'s `super::certs` is `crate::certs` either way.
#[path = "../tests/common/apiserver/mod.rs"]
mod apiserver;
#[path = "../tests/common/binary.rs"]
#[allow(dead_code)]
mod binary;
#[path = "../tests/common/certs.rs"]
mod certs;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_rt::time::{sleep, timeout};
use actix_web::http::StatusCode;
use awc::error::PayloadError;
use awc::{Client, ClientRequest, Connector};
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::{Stream, StreamExt as _};
use serde_json::json;

use apiserver::ApiServer;

/// Concurrent keep-alive connections of a request-rate run.
const CONNECTIONS: usize = 32;
/// A measured request-rate run lasts this long...
const RUN: Duration = Duration::from_secs(3);
/// ...after a warm-up this long on the same connections.
const WARM_UP: Duration = Duration::from_millis(500);
/// At most this many requests per connection in one run, whatever the time.
const MAX_REQUESTS_PER_CONNECTION: usize = 200_000;
/// Time allowed to one request, its body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Watches held open through a proxy for the memory figure.
const WATCHES: usize = 1000;
/// Watches being opened at the same time while building up to [`WATCHES`].
const WATCHES_AT_ONCE: usize = 50;
/// Time allowed to a watch to get its response headers.
const WATCH_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Watch events timed per peer.
const WATCH_EVENTS: usize = 100;
/// Time allowed to one watch event to arrive.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to a proxy process to start or to stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The ConfigMaps fetched by the request-rate runs: (name, about this many bytes, label).
const CONFIGMAPS: [(&str, usize, &str); 2] = [
    ("bench-1k", 1024, "1 KiB"),
    ("bench-1m", 1024 * 1024, "1 MiB"),
];
const WATCH_PATH: &str = "/api/v1/namespaces/default/pods?watch=true";
/// The large list: this many ConfigMaps of [`BIG_ITEM`] bytes each in the namespace
/// `big`, about 1 GiB listed at once.
const BIG_ITEMS: usize = 1024;
const BIG_ITEM: usize = 1024 * 1024;
const BIG_LIST_PATH: &str = "/api/v1/namespaces/big/configmaps";
/// kubegate's RSS grows by at most this much while the large list streams through (MiB).
const TARGET_BIG_LIST_MIB: f64 = 32.0;

/// kubegate serves at least this many times the requests per second of kubectl proxy
/// (1 KiB, [`CONNECTIONS`] connections).
const TARGET_SPEEDUP: f64 = 2.0;
/// kubegate spends at most this much CPU on a 1 KiB request (microseconds).
const TARGET_CPU_US: f64 = 100.0;
/// A watch event crosses kubegate within this long (p99, milliseconds).
const TARGET_EVENT_MS: f64 = 5.0;
/// An open watch costs kubegate less than this much memory (KiB).
const TARGET_WATCH_KIB: f64 = 50.0;

/// The core of the proxy under test, and the core of this process.
const PROXY_CORE: &str = "0";
const BENCH_CORE: &str = "1";

const KUBEGATE: &str = env!("CARGO_BIN_EXE_kubegate");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn main() {
    let started = Instant::now();
    pin_this_process();
    let apiserver = ApiServer::start();
    let bodies: Vec<Body> = CONFIGMAPS
        .iter()
        .map(|&(name, size, label)| {
            let stored = apiserver.put_configmap_of_size("default", name, size);
            Body {
                path: format!("/api/v1/namespaces/default/configmaps/{name}"),
                length: serde_json::to_vec(&stored).map_or(size, |json| json.len()),
                label,
            }
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, apiserver.kubeconfig_with_client_cert())
        .expect("write the kubeconfig");

    let mut kubegate = Kubegate::start(dir.path(), &kubeconfig);
    let mut kubectl = KubectlProxy::start(&kubeconfig);
    let peers = [
        Peer {
            name: "direct",
            base: apiserver.url().to_string(),
            authorization: None,
            pid: None,
            tls: Some(Arc::new(apiserver.pki().client_config())),
        },
        Peer {
            name: "kubegate",
            base: kubegate.base.clone(),
            authorization: Some(format!("Bearer {}", kubegate.token)),
            pid: Some(kubegate.process.pid()),
            tls: None,
        },
        Peer {
            name: "kubectl proxy",
            base: kubectl.base.clone(),
            authorization: None,
            pid: Some(kubectl.process.pid()),
            tls: None,
        },
    ];

    let figures = actix_rt::System::new().block_on(measure(&apiserver, &peers, &bodies));
    let kubegate_requests = figures.requests_through("kubegate");
    drop(peers);

    let kubegate_logs = kubegate.process.stop();
    let audit_events = std::fs::read_to_string(&kubegate.audit_file)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    let kubectl_logs = kubectl.process.stop();

    let mut report = figures.report();
    let _ = writeln!(report, "\nObservations");
    let _ = writeln!(
        report,
        "  audit: {audit_events} events written for {kubegate_requests} requests sent through kubegate"
    );
    kubegate_logs.describe("kubegate warnings and errors", &mut report);
    kubectl_logs.describe("kubectl proxy stderr", &mut report);
    for (peer, protocols) in &figures.upstream {
        let _ = writeln!(report, "  {peer} -> stand-in: {protocols}");
    }
    for note in &figures.notes {
        let _ = writeln!(report, "  {note}");
    }
    let _ = writeln!(
        report,
        "\nbenchmark finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{report}");
}

/// Moves this process to [`BENCH_CORE`]; the proxies go to [`PROXY_CORE`] as they start.
fn pin_this_process() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cores >= 2,
        "the benchmark needs two cores (one for the proxy, one for the load), this machine has {cores}"
    );
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            BENCH_CORE,
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run taskset (util-linux)");
    assert!(status.success(), "taskset could not pin the benchmark");
}

// ---------------------------------------------------------------------------------------
// The peers
// ---------------------------------------------------------------------------------------

/// One way to reach the stand-in's API.
struct Peer {
    name: &'static str,
    /// What Kubernetes paths are appended to.
    base: String,
    /// The `Authorization` header to send, if any.
    authorization: Option<String>,
    /// The proxy process, none for the stand-in itself.
    pid: Option<u32>,
    /// TLS with the client certificate (the stand-in), or plain HTTP (the proxies).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Peer {
    /// A client of at most `connections` connections (0: no limit), with or without the
    /// per-request timeout (watches have none).
    fn client(&self, connections: usize, request_timeout: Option<Duration>) -> Client {
        let mut connector = Connector::new().limit(connections);
        if let Some(tls) = &self.tls {
            connector = connector.rustls_0_23(tls.clone());
        }
        let builder = Client::builder().connector(connector);
        match request_timeout {
            Some(limit) => builder.timeout(limit),
            None => builder.disable_timeout(),
        }
        .finish()
    }
}

/// A GET of the request-rate runs.
struct Body {
    path: String,
    /// The exact length of the body, as the stand-in writes it.
    length: usize,
    label: &'static str,
}

/// What a request needs, cheap to clone into a task.
#[derive(Clone)]
struct Target {
    url: String,
    authorization: Option<String>,
}

impl Target {
    fn new(peer: &Peer, path: &str) -> Target {
        Target {
            url: format!("{}{path}", peer.base),
            authorization: peer.authorization.clone(),
        }
    }

    fn get(&self, client: &Client) -> ClientRequest {
        let request = client.get(&self.url);
        match &self.authorization {
            Some(value) => request.insert_header(("authorization", value.as_str())),
            None => request,
        }
    }
}

/// A child process whose output is read to its end by threads, so it never blocks on a
/// full pipe; killed when dropped.
struct Process {
    name: &'static str,
    child: Option<Child>,
    readers: Vec<JoinHandle<Logs>>,
}

/// The lines of a process's output worth showing.
#[derive(Default)]
struct Logs {
    kept: Vec<String>,
    total: usize,
}

impl Logs {
    fn describe(&self, what: &str, out: &mut String) {
        let _ = writeln!(out, "  {what}: {} lines", self.total);
        for line in &self.kept {
            let _ = writeln!(out, "    {line}");
        }
        if self.total > self.kept.len() {
            let _ = writeln!(out, "    ...");
        }
    }
}

impl Process {
    /// Starts `program` with `args` pinned to [`PROXY_CORE`] and waits for the line of its
    /// output that contains `ready`; returns the process and the rest of that line.
    /// `worth_keeping` picks the lines reported at the end.
    fn start(
        name: &'static str,
        program: &str,
        args: &[String],
        ready: &'static str,
        worth_keeping: fn(&str) -> bool,
    ) -> (Process, String) {
        let mut child = Command::new("taskset")
            .args(["-c", PROXY_CORE, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (found, address) = mpsc::channel();
        let readers = vec![
            read_lines(child.stdout.take(), ready, found.clone(), worth_keeping),
            read_lines(child.stderr.take(), ready, found, worth_keeping),
        ];
        let mut process = Process {
            name,
            child: Some(child),
            readers,
        };
        match address.recv_timeout(PROCESS_TIMEOUT) {
            Ok(rest) => (process, rest),
            Err(_) => {
                let logs = process.stop();
                let mut out = String::new();
                logs.describe("output", &mut out);
                panic!("{name} did not print \"{ready}\" in time\n{out}");
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Stops the process (SIGTERM, then SIGKILL after [`PROCESS_TIMEOUT`]) and returns
    /// what its output held.
    fn stop(&mut self) -> Logs {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + PROCESS_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("{} did not stop on SIGTERM; killed", self.name);
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let mut logs = Logs::default();
        for reader in self.readers.drain(..) {
            let part = reader.join().unwrap_or_default();
            logs.total += part.total;
            logs.kept.extend(part.kept);
        }
        logs
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads `output` to its end: sends the rest of the first line containing `ready`, keeps
/// the first few lines that are `worth_keeping` and counts those.
fn read_lines(
    output: Option<impl Read + Send + 'static>,
    ready: &'static str,
    found: mpsc::Sender<String>,
    worth_keeping: fn(&str) -> bool,
) -> JoinHandle<Logs> {
    std::thread::spawn(move || {
        let mut logs = Logs::default();
        let Some(output) = output else {
            return logs;
        };
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once(ready) {
                let _ = found.send(rest.trim().to_string());
            } else if worth_keeping(&line) {
                logs.total += 1;
                if logs.kept.len() < 5 {
                    logs.kept.push(line);
                }
            }
        }
        logs
    })
}

/// kubegate, started from its release binary with auth, policy and audit on.
struct Kubegate {
    process: Process,
    /// `http://ADDR/pipeline/api/v1/orgs/1/clusters/ID/proxy`
    base: String,
    token: String,
    audit_file: PathBuf,
}

impl Kubegate {
    /// Writes a configuration in `dir`, registers the stand-in as a cluster of org 1,
    /// makes alice its admin, issues her a token and serves with one worker.
    fn start(dir: &Path, kubeconfig: &Path) -> Kubegate {
        let data = dir.join("data");
        let audit_file = data.join("audit.jsonl");
        let mut config: toml::Table =
            toml::from_str(kubegate::config::DEFAULT_TOML).expect("the default configuration");
        let mut set = |section: &str, key: &str, value: toml::Value| {
            config
                .get_mut(section)
                .and_then(toml::Value::as_table_mut)
                .unwrap_or_else(|| panic!("the default configuration has no [{section}]"))
                .insert(key.to_string(), value);
        };
        let path = |p: &Path| toml::Value::String(p.display().to_string());
        set("server", "listen", "127.0.0.1:0".into());
        set("server", "workers", 1.into());
        set("server", "shutdown_grace", "2s".into());
        set("store", "path", path(&data));
        set("auth", "signing_key_file", path(&data.join("signing-key")));
        set("audit", "file", path(&audit_file));
        let repo = Path::new(REPO);
        set(
            "policy",
            "model",
            path(&repo.join("config/rbac_model.conf")),
        );
        set("policy", "policy", path(&repo.join("config/policy.csv")));
        set(
            "server",
            "tls_cert_file",
            path(&data.join("tls/server.crt")),
        );
        set("server", "tls_key_file", path(&data.join("tls/server.key")));
        // Plain HTTP only (`listen_tls = "off"`): the load generator speaks it to all proxies.
        if let Some(server) = config.get_mut("server").and_then(toml::Value::as_table_mut) {
            server.insert("listen_tls".into(), toml::Value::String("off".into()));
        }
        let config_file = dir.join("kubegate.toml");
        std::fs::write(&config_file, config.to_string()).expect("write the kubegate config");

        let cli = |args: &[&str]| binary::run_cli(&config_file, args);
        let cluster = binary::add_cluster(cli, "dev", kubeconfig);
        let token = binary::member_with_token(cli, "alice", "admin");

        let args = [
            "--config",
            &config_file.display().to_string(),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ];
        let (process, address) = Process::start(
            "kubegate",
            KUBEGATE,
            &args.map(String::from),
            "kubegate listening on http://",
            |line| line.contains(" WARN") || line.contains(" ERROR"),
        );
        Kubegate {
            process,
            base: format!("http://{address}/pipeline/api/v1/orgs/1/clusters/{cluster}/proxy"),
            token,
            audit_file,
        }
    }
}

/// `kubectl proxy` on port 0 with the stand-in's kubeconfig.
struct KubectlProxy {
    process: Process,
    /// `http://127.0.0.1:PORT`
    base: String,
}

impl KubectlProxy {
    fn start(kubeconfig: &Path) -> KubectlProxy {
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
        let args = [
            "proxy".to_string(),
            "--port=0".to_string(),
            format!("--kubeconfig={}", kubeconfig.display()),
        ];
        let (process, address) = Process::start(
            "kubectl proxy",
            &kubectl,
            &args,
            "Starting to serve on ",
            |_| true,
        );
        KubectlProxy {
            process,
            base: format!("http://{address}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------

/// User plus system CPU time of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let Some(end) = stat.rfind(')') else {
        return 0;
    };
    let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    field(11).unwrap_or(0) + field(12).unwrap_or(0)
}

/// `getconf CLK_TCK`: clock ticks per second (100 nearly everywhere).
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process (its sockets, mostly).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// CPU time of processes across a run.
struct CpuMeter {
    proxy: Option<u32>,
    proxy_start: u64,
    bench_start: u64,
    started: Instant,
}

/// CPU used in a run: microseconds of the proxy, and the busy share of each core.
struct CpuUse {
    proxy_us: Option<f64>,
    proxy_busy: Option<f64>,
    bench_busy: f64,
}

impl CpuMeter {
    fn start(proxy: Option<u32>) -> CpuMeter {
        CpuMeter {
            proxy,
            proxy_start: proxy.map_or(0, cpu_ticks),
            bench_start: cpu_ticks(std::process::id()),
            started: Instant::now(),
        }
    }

    fn stop(self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64();
        let us_per_tick = 1e6 / ticks_per_second();
        let bench_us = (cpu_ticks(std::process::id()) - self.bench_start) as f64 * us_per_tick;
        let proxy_us = self
            .proxy
            .map(|pid| (cpu_ticks(pid) - self.proxy_start) as f64 * us_per_tick);
        CpuUse {
            proxy_us,
            proxy_busy: proxy_us.map(|us| us / (wall * 1e4)),
            bench_busy: bench_us / (wall * 1e4),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------

/// Everything one run of the benchmark measured.
#[derive(Default)]
struct Figures {
    /// Per body size (label), per peer.
    rates: Vec<(&'static str, Vec<RateRow>)>,
    latencies: Vec<(&'static str, EventLatency)>,
    memory: Vec<(&'static str, WatchMemory)>,
    big_lists: Vec<(&'static str, BigList)>,
    /// How each proxy spoke to the stand-in: HTTP versions and connections.
    upstream: Vec<(&'static str, String)>,
    /// Requests sent to each peer, all phases together.
    sent: Vec<(&'static str, usize)>,
    notes: Vec<String>,
}

struct RateRow {
    peer: &'static str,
    load: Load,
    cpu: CpuUse,
}

/// What one request-rate run saw.
#[derive(Default)]
struct Load {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    /// Sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Default)]
struct EventLatency {
    /// Sorted.
    samples: Vec<Duration>,
    missed: usize,
    error: Option<String>,
}

#[derive(Default)]
struct WatchMemory {
    opened: usize,
    failed: usize,
    first_error: Option<String>,
    rss_before: u64,
    rss_open: u64,
    rss_after: u64,
    fds_before: usize,
    fds_open: usize,
    fds_after: usize,
    /// How long after the clients closed the proxy had let go of the connections.
    released_in: Option<Duration>,
    /// If it had not within 5 s: how long after two events were written to each, if at all.
    released_after_events: Option<Duration>,
}

impl WatchMemory {
    fn kib_per_watch(&self) -> f64 {
        self.rss_open.saturating_sub(self.rss_before) as f64 / self.opened.max(1) as f64
    }
}

impl Figures {
    fn add_sent(&mut self, peer: &'static str, requests: usize) {
        match self.sent.iter_mut().find(|(name, _)| *name == peer) {
            Some((_, count)) => *count += requests,
            None => self.sent.push((peer, requests)),
        }
    }

    fn requests_through(&self, peer: &str) -> usize {
        self.sent
            .iter()
            .find(|(name, _)| *name == peer)
            .map_or(0, |(_, count)| *count)
    }

    fn rate(&self, body: &str, peer: &str) -> Option<&RateRow> {
        let (_, rows) = self.rates.iter().find(|(label, _)| *label == body)?;
        rows.iter().find(|row| row.peer == peer)
    }
}

/// Every phase, one after the other, on this thread's runtime.
async fn measure(apiserver: &ApiServer, peers: &[Peer], bodies: &[Body]) -> Figures {
    let mut figures = Figures::default();
    for body in bodies {
        let label = body.label;
        let mut rows = Vec::new();
        for peer in peers {
            eprintln!("bench: GET {label} through {} ...", peer.name);
            let target = Target::new(peer, &body.path);
            let client = peer.client(CONNECTIONS, Some(REQUEST_TIMEOUT));
            let warm = load(&client, &target, body.length, WARM_UP).await;
            if warm.errors > 0 {
                figures.notes.push(format!(
                    "{} {label} warm-up: {} errors, first: {}",
                    peer.name,
                    warm.errors,
                    warm.first_error.as_deref().unwrap_or("")
                ));
            }
            let meter = CpuMeter::start(peer.pid);
            let run = load(&client, &target, body.length, RUN).await;
            let cpu = meter.stop();
            if let Some(error) = &run.first_error {
                figures.notes.push(format!(
                    "{} {label}: {} errors, first: {error}",
                    peer.name, run.errors
                ));
            }
            figures.add_sent(peer.name, warm.ok + warm.errors + run.ok + run.errors);
            if peer.pid.is_some() && figures.upstream.iter().all(|(name, _)| *name != peer.name) {
                figures
                    .upstream
                    .push((peer.name, upstream_protocols(apiserver)));
            }
            apiserver.clear_requests();
            rows.push(RateRow {
                peer: peer.name,
                load: run,
                cpu,
            });
        }
        figures.rates.push((label, rows));
    }
    for peer in peers {
        eprintln!("bench: watch events through {} ...", peer.name);
        let latency = event_latency(apiserver, peer).await;
        figures.add_sent(peer.name, 1);
        figures.latencies.push((peer.name, latency));
    }
    // before the watches, whose buffers the allocator may keep after they close
    eprintln!("bench: storing {BIG_ITEMS} ConfigMaps of {BIG_ITEM} bytes ...");
    apiserver.put_configmaps_of_size("big", "big", BIG_ITEMS, BIG_ITEM);
    for peer in peers {
        let Some(pid) = peer.pid else { continue };
        eprintln!("bench: the 1 GiB list through {} ...", peer.name);
        let big = big_list(peer, pid).await;
        figures.add_sent(peer.name, 1);
        figures.big_lists.push((peer.name, big));
    }
    for peer in peers {
        let Some(pid) = peer.pid else { continue };
        eprintln!("bench: {WATCHES} watches through {} ...", peer.name);
        let memory = watch_memory(apiserver, peer, pid).await;
        figures.add_sent(peer.name, memory.opened + memory.failed);
        figures.memory.push((peer.name, memory));
    }
    figures
}

/// What streaming the large list through a proxy cost it.
#[derive(Default)]
struct BigList {
    bytes: u64,
    took: Duration,
    rss_before: u64,
    /// The highest RSS seen while the list streamed (sampled every 10 ms or so).
    rss_peak: u64,
    error: Option<String>,
}

/// Lists [`BIG_LIST_PATH`] through `peer`, reading the body as it comes and dropping
/// it, while watching the proxy's RSS.
async fn big_list(peer: &Peer, pid: u32) -> BigList {
    let mut big = BigList {
        rss_before: rss_kib(pid),
        ..BigList::default()
    };
    big.rss_peak = big.rss_before;
    let client = peer.client(1, None);
    let target = Target::new(peer, BIG_LIST_PATH);
    let started = Instant::now();
    let mut response = match target.get(&client).send().await {
        Ok(response) if response.status() == StatusCode::OK => response,
        Ok(response) => {
            big.error = Some(format!("HTTP {}", response.status()));
            return big;
        }
        Err(e) => {
            big.error = Some(e.to_string());
            return big;
        }
    };
    let mut sampled = Instant::now();
    while let Some(chunk) = response.next().await {
        match chunk {
            Ok(chunk) => big.bytes += chunk.len() as u64,
            Err(e) => {
                big.error = Some(e.to_string());
                break;
            }
        }
        if sampled.elapsed() >= Duration::from_millis(10) {
            big.rss_peak = big.rss_peak.max(rss_kib(pid));
            sampled = Instant::now();
        }
    }
    big.took = started.elapsed();
    big.rss_peak = big.rss_peak.max(rss_kib(pid));
    big
}

/// The HTTP versions of the requests the stand-in has recorded, with their counts.
fn upstream_protocols(apiserver: &ApiServer) -> String {
    let mut versions: Vec<(String, usize)> = Vec::new();
    for request in apiserver.requests() {
        match versions
            .iter_mut()
            .find(|(v, _)| *v == request.http_version)
        {
            Some((_, count)) => *count += 1,
            None => versions.push((request.http_version, 1)),
        }
    }
    let counts: Vec<String> = versions
        .iter()
        .map(|(version, count)| format!("{version} ({count} requests)"))
        .collect();
    counts.join(", ")
}

/// GETs `target` on [`CONNECTIONS`] connections for `duration`; a response counts when
/// its status is 200 and its body is `length` bytes long.
async fn load(client: &Client, target: &Target, length: usize, duration: Duration) -> Load {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, target) = (client.clone(), target.clone());
            actix_rt::spawn(async move {
                let mut load = Load::default();
                while Instant::now() < deadline
                    && load.latencies.len() < MAX_REQUESTS_PER_CONNECTION
                {
                    let sent = Instant::now();
                    match fetch(target.get(&client)).await {
                        Ok(got) if got == length => load.latencies.push(sent.elapsed()),
                        Ok(got) => load.fail(format!("a body of {got} bytes, not {length}")),
                        Err(error) => load.fail(error),
                    }
                }
                load.ok = load.latencies.len();
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for task in join_all(tasks).await {
        let part = task.unwrap_or_else(|e| Load {
            errors: 1,
            first_error: Some(format!("the connection's task failed: {e}")),
            ..Load::default()
        });
        total.ok += part.ok;
        total.errors += part.errors;
        total.first_error = total.first_error.or(part.first_error);
        total.latencies.extend(part.latencies);
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}

impl Load {
    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// One GET, to the end of its body; the body's length, or what went wrong.
async fn fetch(request: ClientRequest) -> Result<usize, String> {
    let mut response = request.send().await.map_err(|e| format!("send: {e}"))?;
    if response.status() != StatusCode::OK {
        let body = response.body().limit(4096).await.unwrap_or_default();
        return Err(format!(
            "HTTP {}: {}",
            response.status(),
            String::from_utf8_lossy(&body)
        ));
    }
    let mut length = 0;
    while let Some(chunk) = response.next().await {
        length += chunk.map_err(|e| format!("body: {e}"))?.len();
    }
    Ok(length)
}

/// Opens one watch through `peer`, then [`WATCH_EVENTS`] times: stores a pod in the
/// stand-in and times until its event line has arrived.
async fn event_latency(apiserver: &ApiServer, peer: &Peer) -> EventLatency {
    let mut latency = EventLatency::default();
    let client = peer.client(1, None);
    // From the current resourceVersion: no replay of earlier pods.
    let path = format!(
        "{WATCH_PATH}&resourceVersion={}",
        apiserver.resource_version()
    );
    let request = Target::new(peer, &path).get(&client);
    let mut watch = match timeout(WATCH_OPEN_TIMEOUT, request.send()).await {
        Ok(Ok(response)) if response.status() == StatusCode::OK => response,
        Ok(Ok(response)) => {
            latency.error = Some(format!("watch: HTTP {}", response.status()));
            return latency;
        }
        Ok(Err(e)) => {
            latency.error = Some(format!("watch: {e}"));
            return latency;
        }
        Err(_) => {
            latency.error = Some("watch: no response headers in time".into());
            return latency;
        }
    };
    let mut buffer = Vec::new();
    let mut names = Vec::new();
    for i in 0..WATCH_EVENTS {
        let name = format!("latency-{}-{i}", peer.name.replace(' ', "-"));
        let needle = format!("\"name\":\"{name}\"");
        let pod = json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
        });
        let sent = Instant::now();
        apiserver.put_object("default", "pods", pod);
        names.push(name);
        let arrived = timeout(
            EVENT_TIMEOUT,
            next_line_with(&mut watch, &mut buffer, needle.as_bytes()),
        )
        .await;
        match arrived {
            Ok(Ok(())) => latency.samples.push(sent.elapsed()),
            Ok(Err(error)) => {
                latency.error = Some(error);
                break;
            }
            Err(_) => latency.missed += 1,
        }
        if latency.missed == 5 {
            latency.error = Some("5 events missed: gave up".into());
            break;
        }
        // Events one by one, not in a burst.
        sleep(Duration::from_millis(5)).await;
    }
    drop(watch);
    for name in names {
        apiserver.delete_object("default", "pods", &name);
    }
    latency.samples.sort_unstable();
    latency
}

/// Reads a watch until a line holding `needle` has arrived; `buffer` keeps what follows.
async fn next_line_with<S>(watch: &mut S, buffer: &mut Vec<u8>, needle: &[u8]) -> Result<(), String>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    loop {
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if line.windows(needle.len()).any(|w| w == needle) {
                return Ok(());
            }
        }
        match watch.next().await {
            Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(format!("watch body: {e}")),
            None => return Err("the watch ended".into()),
        }
    }
}

/// Opens [`WATCHES`] watches through `peer` and reads the proxy's memory and descriptors
/// before, while all of them are open (each has had its 200 headers), and after they are
/// closed. A proxy that still holds them 5 s later gets two events to write to each.
async fn watch_memory(apiserver: &ApiServer, peer: &Peer, pid: u32) -> WatchMemory {
    let mut memory = WatchMemory {
        rss_before: rss_kib(pid),
        fds_before: open_fds(pid),
        ..WatchMemory::default()
    };
    let client = peer.client(0, None);
    let target = Target::new(peer, WATCH_PATH);
    let mut open = Vec::with_capacity(WATCHES);
    for _ in 0..WATCHES / WATCHES_AT_ONCE {
        let batch =
            (0..WATCHES_AT_ONCE).map(|_| timeout(WATCH_OPEN_TIMEOUT, target.get(&client).send()));
        for result in join_all(batch).await {
            let error = match result {
                Ok(Ok(response)) if response.status() == StatusCode::OK => {
                    open.push(response);
                    continue;
                }
                Ok(Ok(response)) => format!("HTTP {}", response.status()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no response headers in time".to_string(),
            };
            memory.failed += 1;
            memory.first_error.get_or_insert(error);
        }
    }
    memory.opened = open.len();
    // Let whatever the proxy does after answering settle.
    sleep(Duration::from_millis(500)).await;
    memory.rss_open = rss_kib(pid);
    memory.fds_open = open_fds(pid);
    drop(open);
    // The proxy should let go of the connections, both sides, soon after its clients left.
    memory.released_in = released(pid, memory.fds_before).await;
    memory.fds_after = open_fds(pid);
    memory.rss_after = rss_kib(pid);
    if memory.released_in.is_none() {
        // Does writing to the dead connections free them? The first write to a socket the
        // peer has closed still succeeds (the answer is a reset); the second fails. The
        // events are apart so that they are not written at once.
        let name = format!("wake-{}", peer.name.replace(' ', "-"));
        apiserver.put_object("default", "pods", json!({"metadata": {"name": name}}));
        sleep(Duration::from_millis(500)).await;
        apiserver.delete_object("default", "pods", &name);
        memory.released_after_events = released(pid, memory.fds_before).await;
    }
    memory
}

/// Waits (up to 5 s) until the process has no more descriptors than `fds_before` (and a
/// few); how long that took.
async fn released(pid: u32, fds_before: usize) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if open_fds(pid) <= fds_before + 4 {
            return Some(started.elapsed());
        }
        sleep(Duration::from_millis(50)).await;
    }
    None
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// The sample at percentile `p` (nearest rank) of sorted `samples`, in milliseconds.
fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1e3
}

fn or_dash(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.decimals$}"))
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

impl Figures {
    fn report(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "\nkubegate proxy benchmark: proxies pinned to core {PROXY_CORE}, load generator and \
             API server stand-in on core {BENCH_CORE}"
        );
        for (label, rows) in &self.rates {
            let _ = writeln!(
                w,
                "\nGET of a {label} ConfigMap, {CONNECTIONS} keep-alive connections, {} s per peer",
                RUN.as_secs()
            );
            let _ = writeln!(
                w,
                "{:<14} {:>9} {:>8} {:>8} {:>7} {:>14} {:>10} {:>10}",
                "peer",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "proxy CPU/req",
                "core 0 %",
                "core 1 %"
            );
            for row in rows {
                let cpu_per_request = row.cpu.proxy_us.map(|us| us / row.load.ok.max(1) as f64);
                let _ = writeln!(
                    w,
                    "{:<14} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>11} us {:>10} {:>10.0}",
                    row.peer,
                    row.load.per_second(),
                    percentile_ms(&row.load.latencies, 50.0),
                    percentile_ms(&row.load.latencies, 99.0),
                    row.load.errors,
                    or_dash(cpu_per_request, 1),
                    or_dash(row.cpu.proxy_busy, 0),
                    row.cpu.bench_busy,
                );
            }
        }

        let _ = writeln!(
            w,
            "\nWatch event latency: stand-in stores a pod -> the client has its event line, {WATCH_EVENTS} events"
        );
        let _ = writeln!(
            w,
            "{:<14} {:>8} {:>8} {:>8} {:>7}",
            "peer", "p50 ms", "p99 ms", "max ms", "missed"
        );
        for (peer, latency) in &self.latencies {
            let _ = writeln!(
                w,
                "{:<14} {:>8.2} {:>8.2} {:>8.2} {:>7}{}",
                peer,
                percentile_ms(&latency.samples, 50.0),
                percentile_ms(&latency.samples, 99.0),
                percentile_ms(&latency.samples, 100.0),
                latency.missed,
                latency
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  error: {e}")),
            );
        }

        let _ = writeln!(w, "\nMemory with {WATCHES} watches open ({WATCH_PATH})");
        let _ = writeln!(
            w,
            "{:<14} {:>5} {:>11} {:>11} {:>10} {:>11} {:>15}  connections released",
            "peer", "open", "RSS before", "RSS open", "per watch", "RSS closed", "fds b/o/c"
        );
        for (peer, memory) in &self.memory {
            let fds = format!(
                "{}/{}/{}",
                memory.fds_before, memory.fds_open, memory.fds_after
            );
            let released = match (memory.released_in, memory.released_after_events) {
                (Some(after), _) => {
                    format!("{:.1} s after the clients closed", after.as_secs_f64())
                }
                (None, Some(after)) => format!(
                    "not within 5 s; {:.1} s after the second of two events written to them",
                    after.as_secs_f64()
                ),
                (None, None) => "not within 5 s, nor within 5 s of two events".to_string(),
            };
            let _ = writeln!(
                w,
                "{:<14} {:>5} {:>7} KiB {:>7} KiB {:>6.1} KiB {:>7} KiB {:>15}  {released}",
                peer,
                memory.opened,
                memory.rss_before,
                memory.rss_open,
                memory.kib_per_watch(),
                memory.rss_after,
                fds,
            );
            if let Some(error) = &memory.first_error {
                let _ = writeln!(
                    w,
                    "  {peer}: {} watches failed, first: {error}",
                    memory.failed
                );
            }
        }

        let _ = writeln!(
            w,
            "\nA list of about 1 GiB ({BIG_LIST_PATH}: {BIG_ITEMS} ConfigMaps of {BIG_ITEM} bytes)"
        );
        let _ = writeln!(
            w,
            "{:<14} {:>10} {:>8} {:>8} {:>11} {:>11} {:>10}",
            "peer", "MiB", "s", "MiB/s", "RSS before", "RSS peak", "growth"
        );
        for (peer, big) in &self.big_lists {
            let mib = big.bytes as f64 / (1 << 20) as f64;
            let _ = writeln!(
                w,
                "{:<14} {:>10.1} {:>8.2} {:>8.1} {:>7} KiB {:>7} KiB {:>6.1} MiB{}",
                peer,
                mib,
                big.took.as_secs_f64(),
                mib / big.took.as_secs_f64().max(1e-9),
                big.rss_before,
                big.rss_peak,
                big.growth_mib(),
                big.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("  error: {e}")),
            );
        }

        self.targets(w);
        out
    }

    fn targets(&self, w: &mut String) {
        let small = CONFIGMAPS[0].2;
        let _ = writeln!(w, "\nTargets");
        let _ = writeln!(w, "{:<58} {:>12}  result", "target", "figure");
        let mut line = |what: String, figure: String, ok: bool| {
            let _ = writeln!(w, "{what:<58} {figure:>12}  {}", pass(ok));
        };
        let kubegate = self.rate(small, "kubegate");
        let kubectl = self.rate(small, "kubectl proxy");
        let speedup = match (kubegate, kubectl) {
            (Some(a), Some(b)) => a.load.per_second() / b.load.per_second().max(1e-9),
            _ => 0.0,
        };
        line(
            format!(
                "kubegate req/s >= {TARGET_SPEEDUP}x kubectl proxy ({small}, {CONNECTIONS} conns)"
            ),
            format!("{speedup:.2}x"),
            speedup >= TARGET_SPEEDUP,
        );
        let cpu = kubegate
            .and_then(|row| row.cpu.proxy_us.map(|us| us / row.load.ok.max(1) as f64))
            .unwrap_or(f64::NAN);
        line(
            format!("kubegate CPU <= {TARGET_CPU_US} us per {small} request"),
            format!("{cpu:.1} us"),
            cpu <= TARGET_CPU_US,
        );
        let event = self
            .latencies
            .iter()
            .find(|(peer, _)| *peer == "kubegate")
            .map(|(_, l)| (percentile_ms(&l.samples, 99.0), l.samples.len()))
            .unwrap_or((f64::NAN, 0));
        line(
            format!("kubegate watch event p99 <= {TARGET_EVENT_MS} ms ({WATCH_EVENTS} events)"),
            format!("{:.2} ms", event.0),
            event.0 <= TARGET_EVENT_MS && event.1 == WATCH_EVENTS,
        );
        let watch = self.memory.iter().find(|(peer, _)| *peer == "kubegate");
        let (kib, opened) = watch.map_or((f64::NAN, 0), |(_, m)| (m.kib_per_watch(), m.opened));
        line(
            format!(
                "kubegate memory < {TARGET_WATCH_KIB} KiB per open watch ({opened}/{WATCHES} open)"
            ),
            format!("{kib:.1} KiB"),
            kib < TARGET_WATCH_KIB && opened == WATCHES,
        );
        let big = self.big_lists.iter().find(|(peer, _)| *peer == "kubegate");
        let (growth, whole) = big.map_or((f64::NAN, false), |(_, b)| {
            (
                b.growth_mib(),
                b.error.is_none() && b.bytes as f64 >= 0.99 * (BIG_ITEMS * BIG_ITEM) as f64,
            )
        });
        line(
            format!("kubegate RSS growth <= {TARGET_BIG_LIST_MIB} MiB for a 1 GiB list"),
            format!("{growth:.1} MiB"),
            growth <= TARGET_BIG_LIST_MIB && whole,
        );
    }
}

impl BigList {
    fn growth_mib(&self) -> f64 {
        self.rss_peak.saturating_sub(self.rss_before) as f64 / 1024.0
    }
}
