//! The stream benchmark: bytes per second through an upgraded session (exec over
//! WebSocket, and kubectl port-forward), kubegate next to the API server stand-in reached
//! directly and to `kubectl proxy`, in one run. `cargo bench --bench stream`.
//!
//! The proxy under test (the release kubegate binary with one HTTP worker, or kubectl
//! proxy) runs on core 0; this process (the clients and the stand-in) on core 1, as in
//! `bench/proxy.rs`. Every transfer is bounded in bytes and in time; all traffic stays on
//! 127.0.0.1.
//!
//! - **exec download**: `head -c 256MiB /dev/zero` in the stand-in, over WebSocket
//!   (`v5.channel.k8s.io`), read by a client written here: stdout bytes per second.
//! - **exec echo**: `cat` with stdin: 64 MiB written in 32 KiB stdin messages while the
//!   echo is read back; bytes per second each way.
//! - **port-forward download**: the real `kubectl port-forward` (WebSocket carrying
//!   SPDY/3.1) to a local "pod port" that sends 256 MiB; bytes per second read from
//!   kubectl's local port. kubectl is then part of every row.
//!
//! The exec transfers run in rounds (`STREAM_ROUNDS`, default 9), every peer once per
//! round, and each exec figure is the median of its rounds: one transfer takes a fraction
//! of a second, and on a shared machine single runs vary by a third. Port-forward runs
//! once per peer. kubegate's CPU per GiB is its user+system time over the exec transfers
//! of all rounds (`/proc/PID/stat`).
//!
//! The row **kubegate, recorded** is the same kubegate through a second cluster of the
//! same API server with `record_sessions = "all"`: every exec byte is parsed on the
//! session's recorder thread and written to a cast (up to the default
//! `audit.recording_max_bytes`, 64 MiB of cast: the download's zeros are 6 cast bytes
//! each, so its first ~10 MiB are written and the rest passed over). Target: within 10 %
//! of the plain kubegate row; the row shows the median of each round's ratio to it.
//! Port-forward is never recorded, so that row has no port-forward figure.

#[path = "../tests/common/apiserver/mod.rs"]
mod apiserver;
#[path = "../tests/common/binary.rs"]
#[allow(dead_code)]
mod binary;
#[path = "../tests/common/certs.rs"]
mod certs;
#[path = "../tests/common/websocket.rs"]
mod websocket;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use websocket::client_frame;

const KUBEGATE: &str = env!("CARGO_BIN_EXE_kubegate");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PROXY_CORE: &str = "0";
const BENCH_CORE: &str = "1";
/// Bytes of a download.
const DOWNLOAD: u64 = 256 * 1024 * 1024;
/// Bytes written (and echoed) in the echo run.
const ECHO: u64 = 64 * 1024 * 1024;
/// Rounds of exec transfers (`STREAM_ROUNDS`): each figure is their median.
const ROUNDS: usize = 9;
/// Longest a transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cores >= 2, "the benchmark needs two cores");
    taskset_self();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let api = ApiServer::start();
    api.put_object(
        "default",
        "pods",
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"containers": [{"name": "app", "image": "busybox"}]},
               "status": {"phase": "Running"}}),
    );
    let kubeconfig = dir.path().join("standin.yaml");
    std::fs::write(&kubeconfig, api.kubeconfig_with_client_cert()).unwrap();
    let gate = Kubegate::start(dir.path(), &kubeconfig);
    let proxy = KubectlProxy::start(&kubeconfig);
    let pod_port = source_server(DOWNLOAD);
    let empty = dir.path().join("empty-kubeconfig");
    std::fs::write(&empty, "").unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = Arc::new({
        let mut config = api.pki().client_config();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    });
    let peers: Vec<(&str, Peer)> = vec![
        (
            "direct",
            Peer {
                addr: api.addr().to_string(),
                tls: Some(tls),
                prefix: String::new(),
                token: None,
                pid: None,
            },
        ),
        (
            "kubegate",
            Peer {
                addr: gate.http.clone(),
                tls: None,
                prefix: gate.prefix.clone(),
                token: Some(gate.token.clone()),
                pid: Some(gate.child.id()),
            },
        ),
        (
            "kubegate, recorded",
            Peer {
                addr: gate.http.clone(),
                tls: None,
                prefix: gate.recorded_prefix.clone(),
                token: Some(gate.token.clone()),
                pid: Some(gate.child.id()),
            },
        ),
        (
            "kubectl proxy",
            Peer {
                addr: proxy.addr.clone(),
                tls: None,
                prefix: String::new(),
                token: None,
                pid: Some(proxy.child.id()),
            },
        ),
    ];

    let rounds: usize = std::env::var("STREAM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    println!(
        "stream benchmark: exec over WebSocket (v5.channel.k8s.io) and kubectl port-forward; exec: median of {rounds} rounds"
    );
    // the exec transfers in rounds, every peer once per round, so that a slow moment of
    // the machine falls on all of them alike
    let mut exec: Vec<Exec> = peers.iter().map(|_| Exec::default()).collect();
    for _ in 0..rounds {
        for ((_, peer), exec) in peers.iter().zip(&mut exec) {
            let cpu = CpuMeter::start(peer.pid);
            exec.download.push(runtime.block_on(exec_download(peer)));
            exec.echo.push(runtime.block_on(exec_echo(peer)));
            if let Some(seconds) = cpu.seconds() {
                *exec.cpu.get_or_insert(0.0) += seconds;
            }
        }
    }
    println!(
        "{:<19} {:>24} {:>24} {:>24} {:>16}",
        "peer", "exec download", "exec echo (each way)", "port-forward download", "proxy CPU/GiB"
    );
    let moved = rounds as f64 * (DOWNLOAD + 2 * ECHO) as f64 / (1u64 << 30) as f64;
    for ((name, _), this) in peers.iter().zip(&exec) {
        // port-forward is never recorded: no figure for that row
        let forward = (*name != "kubegate, recorded")
            .then(|| port_forward_download(name, &gate, &proxy, &kubeconfig, &empty, pod_port));
        let (download, echo) = this.medians();
        // the recorded row against the plain one: the median of the rounds' ratios (both
        // ran in the same round, a moment apart)
        let against_plain = |of: fn(&Exec) -> &Vec<Result<f64, String>>| {
            if *name != "kubegate, recorded" {
                return String::new();
            }
            let ratios: Vec<Result<f64, String>> = of(this)
                .iter()
                .zip(of(&exec[1]))
                .map(|(recorded, plain)| Ok(recorded.clone()? / plain.clone()?))
                .collect();
            median(&ratios).map_or(String::new(), |r| format!(" ({:+.0} %)", (r - 1.0) * 100.0))
        };
        println!(
            "{:<19} {:>24} {:>24} {:>24} {:>16}",
            name,
            format!("{}{}", rate(&download), against_plain(|e| &e.download)),
            format!("{}{}", rate(&echo), against_plain(|e| &e.echo)),
            forward.as_ref().map_or("-".into(), rate),
            this.cpu
                .map_or("-".into(), |s| format!("{:.2} s", s / moved)),
        );
    }
    println!("(MiB/s; recorded: the median of each round's ratio to plain kubegate; CPU/GiB: the proxy's user+system seconds per GiB carried in the exec runs)");
    drop(proxy);
    drop(gate);
}

/// One peer's exec transfers, one of each per round.
#[derive(Default)]
struct Exec {
    download: Vec<Result<f64, String>>,
    echo: Vec<Result<f64, String>>,
    cpu: Option<f64>,
}

impl Exec {
    /// The median rate of the downloads and of the echoes; the first error, if any.
    fn medians(&self) -> (Result<f64, String>, Result<f64, String>) {
        (median(&self.download), median(&self.echo))
    }
}

fn median(runs: &[Result<f64, String>]) -> Result<f64, String> {
    let mut rates = runs.iter().cloned().collect::<Result<Vec<f64>, String>>()?;
    rates.sort_by(f64::total_cmp);
    rates
        .get(rates.len() / 2)
        .copied()
        .ok_or_else(|| "no run".to_string())
}

fn rate(result: &Result<f64, String>) -> String {
    match result {
        Ok(bytes_per_second) => format!("{:.0} MiB/s", bytes_per_second / (1024.0 * 1024.0)),
        Err(e) => {
            eprintln!("  error: {e}");
            "error".into()
        }
    }
}

fn taskset_self() {
    let _ = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            BENCH_CORE,
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status();
}

/// A "pod port": every connection gets `bytes` zero bytes, then the end.
fn source_server(bytes: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let block = vec![0u8; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    if conn.write_all(&block[..n]).is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
        }
    });
    port
}

/// Where a client reaches the API server: directly (TLS, client certificate) or
/// through a proxy (plain HTTP).
struct Peer {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    prefix: String,
    token: Option<String>,
    pid: Option<u32>,
}

trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// Opens an exec WebSocket session; returns the connection and the bytes read past the
/// 101 head.
async fn exec_session(peer: &Peer, query: &str) -> Result<(Box<dyn Io>, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(&peer.addr)
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).ok();
    let mut io: Box<dyn Io> = match &peer.tls {
        Some(config) => Box::new(
            tokio_rustls::TlsConnector::from(config.clone())
                .connect(
                    rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                    tcp,
                )
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => Box::new(tcp),
    };
    let auth = peer
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "GET {}/api/v1/namespaces/default/pods/web/exec?{query} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
        peer.prefix, peer.addr
    );
    io.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(at + 4);
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(format!("no upgrade: {}", String::from_utf8_lossy(&buf)));
            }
            return Ok((io, rest));
        }
        let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the answer".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads server frames from `io`, counting the payload bytes of stdout messages, until
/// the error channel (the status) arrives or `want` stdout bytes were seen.
async fn read_stdout<R: AsyncRead + Unpin>(
    io: &mut R,
    mut buf: Vec<u8>,
    want: u64,
) -> Result<u64, String> {
    let mut stdout = 0u64;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut at = 0usize;
    loop {
        // whole frames in buf[at..]
        loop {
            let b = &buf[at..];
            if b.len() < 2 {
                break;
            }
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if b.len() < head + len {
                break;
            }
            let opcode = b[0] & 0x0f;
            let payload = &b[head..head + len];
            if opcode == 8 {
                return Ok(stdout);
            }
            if opcode == 2 && !payload.is_empty() {
                match payload[0] {
                    1 => stdout += (len - 1) as u64,
                    3 => return Ok(stdout),
                    _ => {}
                }
            }
            at += head + len;
        }
        if stdout >= want {
            return Ok(stdout);
        }
        buf.drain(..at);
        at = 0;
        let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(stdout);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn exec_download(peer: &Peer) -> Result<f64, String> {
    let started = Instant::now();
    let (mut io, rest) = exec_session(
        peer,
        &format!("command=head&command=-c&command={DOWNLOAD}&command=/dev/zero&stdout=true"),
    )
    .await?;
    let got = tokio::time::timeout(TRANSFER_TIMEOUT, read_stdout(&mut io, rest, DOWNLOAD))
        .await
        .map_err(|_| "timed out".to_string())??;
    if got != DOWNLOAD {
        return Err(format!("{got} of {DOWNLOAD} bytes"));
    }
    Ok(got as f64 / started.elapsed().as_secs_f64())
}

async fn exec_echo(peer: &Peer) -> Result<f64, String> {
    let started = Instant::now();
    let (io, rest) = exec_session(peer, "command=cat&stdin=true&stdout=true").await?;
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut message = vec![b'x'; 32 * 1024 + 1];
    message[0] = 0; // stdin
    let frame = client_frame(2, &message);
    let write = async {
        let mut sent = 0u64;
        while sent < ECHO {
            writer.write_all(&frame).await.map_err(|e| e.to_string())?;
            sent += (message.len() - 1) as u64;
        }
        writer
            .write_all(&client_frame(2, &[255, 0]))
            .await
            .map_err(|e| e.to_string())?;
        // over TLS, the last frames may still be in rustls's buffer
        writer.flush().await.map_err(|e| e.to_string())?;
        Ok::<u64, String>(sent)
    };
    let (sent, got) = tokio::time::timeout(TRANSFER_TIMEOUT, async {
        tokio::join!(write, read_stdout(&mut reader, rest, u64::MAX))
    })
    .await
    .map_err(|_| "timed out".to_string())?;
    let (sent, got) = (sent?, got?);
    if got != sent {
        return Err(format!("{got} of {sent} bytes came back"));
    }
    Ok(got as f64 / started.elapsed().as_secs_f64())
}

/// kubectl port-forward through `peer`, then one download from the pod port.
fn port_forward_download(
    peer: &str,
    gate: &Kubegate,
    proxy: &KubectlProxy,
    kubeconfig: &Path,
    empty: &Path,
    pod_port: u16,
) -> Result<f64, String> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    let mut cmd = Command::new(&kubectl);
    match peer {
        "direct" => {
            cmd.arg("--kubeconfig").arg(kubeconfig);
        }
        "kubegate" => {
            cmd.env("KUBECONFIG", empty)
                .arg("--server")
                .arg(format!("{}{}", gate.https, gate.prefix))
                .arg("--token")
                .arg(&gate.token)
                .arg("--certificate-authority")
                .arg(&gate.ca);
        }
        _ => {
            cmd.env("KUBECONFIG", empty)
                .arg("--server")
                .arg(format!("http://{}", proxy.addr));
        }
    }
    let mut child = cmd
        .args(["port-forward", "pod/web", &format!(":{pod_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let result = (|| {
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .ok_or("kubectl port-forward printed nothing")?
            .map_err(|e| e.to_string())?;
        let local: u16 = first
            .split_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split(' ').next())
            .and_then(|p| p.parse().ok())
            .ok_or(format!("no port in {first:?}"))?;
        let started = Instant::now();
        let mut conn =
            std::net::TcpStream::connect(("127.0.0.1", local)).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(TRANSFER_TIMEOUT)).ok();
        let mut block = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < DOWNLOAD {
            match conn.read(&mut block) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) => return Err(e.to_string()),
            }
        }
        if got != DOWNLOAD {
            return Err(format!("{got} of {DOWNLOAD} bytes"));
        }
        Ok(got as f64 / started.elapsed().as_secs_f64())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// A process's user+system time.
struct CpuMeter {
    pid: Option<u32>,
    start: f64,
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

impl CpuMeter {
    fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            start: pid.map_or(0.0, cpu_seconds),
        }
    }
    fn seconds(&self) -> Option<f64> {
        self.pid.map(|pid| cpu_seconds(pid) - self.start)
    }
}

/// The release kubegate, one worker, on core 0, HTTP and HTTPS.
struct Kubegate {
    child: Child,
    http: String,
    https: String,
    prefix: String,
    /// The same API server as a second cluster that records its sessions.
    recorded_prefix: String,
    token: String,
    ca: std::path::PathBuf,
}

impl Kubegate {
    fn start(dir: &Path, kubeconfig: &Path) -> Kubegate {
        let data = dir.join("data");
        let text = kubegate::config::DEFAULT_TOML
            .replace("path = \"data\"", &format!("path = \"{}\"", data.display()))
            .replace("\"data/", &format!("\"{}/", data.display()))
            .replace("\"config/", &format!("\"{REPO}/config/"));
        let config = dir.join("kubegate.toml");
        std::fs::write(&config, text).unwrap();
        let cli = |args: &[&str]| binary::run_cli(&config, args);
        let cluster = binary::add_cluster(cli, "bench", kubeconfig);
        let recorded = cli(&[
            "cluster",
            "add",
            "--org",
            "1",
            "--name",
            "recorded",
            "--record-sessions",
            "all",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ])
        .trim()
        .to_string();
        let token = binary::member_with_token(cli, "alice", "admin");
        let mut child = Command::new("taskset")
            .args(["-c", PROXY_CORE, KUBEGATE, "--config"])
            .arg(&config)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--listen-tls",
                "127.0.0.1:0",
            ])
            .env("KUBEGATE_SERVER__WORKERS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut http, mut https) = (String::new(), String::new());
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("kubegate listening on ") {
                let url = rest.split_whitespace().next().unwrap_or_default();
                if let Some(a) = url.strip_prefix("http://") {
                    http = a.to_string();
                } else {
                    https = url.to_string();
                }
            }
            if !http.is_empty() && !https.is_empty() {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        assert!(
            !http.is_empty() && !https.is_empty(),
            "kubegate did not start"
        );
        Kubegate {
            child,
            http,
            https,
            prefix: format!("/pipeline/api/v1/orgs/1/clusters/{cluster}/proxy"),
            recorded_prefix: format!("/pipeline/api/v1/orgs/1/clusters/{recorded}/proxy"),
            token,
            ca: data.join("tls/ca.crt"),
        }
    }
}

impl Drop for Kubegate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl proxy` on core 0, exec allowed (its default refuses exec and attach).
struct KubectlProxy {
    child: Child,
    addr: String,
}

impl KubectlProxy {
    fn start(kubeconfig: &Path) -> KubectlProxy {
        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
        let mut child = Command::new("taskset")
            .args([
                "-c",
                PROXY_CORE,
                &kubectl,
                "proxy",
                "--port=0",
                "--reject-paths=^/nothing$",
                "--kubeconfig",
            ])
            .arg(kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let addr = first
            .rsplit_once(' ')
            .map(|(_, a)| a.trim().to_string())
            .unwrap_or_default();
        assert!(addr.contains(':'), "kubectl proxy said {first:?}");
        std::thread::spawn(move || for _ in lines {});
        KubectlProxy { child, addr }
    }
}

impl Drop for KubectlProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
