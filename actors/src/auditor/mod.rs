//! The Auditor actor: receives one [`AuditEvent`] per request and writes them in batches,
//! off the request path, to a JSON-lines file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attributes::RequestAttributes;

mod postgres;

pub use postgres::{query_audit, AuditQuery, PostgresAuditSink};

/// What was decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDecision {
    /// Authorized and forwarded.
    Allow,
    /// Refused by kubegate (400, 401, 403).
    Deny,
    /// Authorized, but kubegate could not complete it (unknown cluster, upstream down).
    Error,
}

/// One request, as the audit trail records it. Never holds credentials or bodies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When the request arrived, RFC 3339 with milliseconds.
    pub time: String,
    /// The request id (also sent back as `X-Request-Id`).
    pub request_id: String,
    /// The authenticated user; empty when authentication failed.
    pub user: String,
    /// The org from the URL.
    pub org: Option<u64>,
    /// The cluster from the URL.
    pub cluster: Option<u64>,
    /// Kubernetes attributes (verb, resource, namespace, name).
    #[serde(flatten)]
    pub attributes: RequestAttributes,
    /// HTTP method.
    pub method: String,
    /// The Kubernetes path, as authorized and forwarded.
    pub path: String,
    /// The query string, token-like values masked.
    pub query: String,
    /// The client's address.
    pub client: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// The status sent to the client.
    pub status: u16,
    /// Milliseconds from arrival to the end of the response.
    pub duration_ms: f64,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Allow, deny or error.
    pub decision: AuditDecision,
    /// Why.
    pub reason: String,
    /// What went wrong, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request body of a write, when configured: redacted, or a note that it was
    /// too large or not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<serde_json::Value>,
    /// On a summary of repeated 401s from one client: how many were not recorded one by
    /// one in the window that ends here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<u64>,
    /// On an upgrade (exec, attach, port-forward): how the session ended (`client
    /// closed`, `server closed`, `client went away`, `broken`, `upgrade refused by the
    /// API server`, `not upgraded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

/// Keeps a flood of 401s (someone trying tokens) from filling the disk: past `limit`
/// in a window, a client's 401s are counted, then recorded as one summary event.
struct DenialFlood {
    limit: u64,
    window: Duration,
    clients: HashMap<String, (Instant, u64, Option<AuditEvent>)>,
}

impl DenialFlood {
    /// Whether to record `event` now (else it is counted into its client's summary).
    fn admit(&mut self, event: &AuditEvent) -> bool {
        if self.limit == 0 || event.status != 401 {
            return true;
        }
        let now = Instant::now();
        let entry = self
            .clients
            .entry(event.client.clone())
            .or_insert((now, 0, None));
        if entry.1 < self.limit {
            entry.1 += 1;
            return true;
        }
        let summary = entry.2.get_or_insert_with(|| {
            let mut summary = event.clone();
            summary.request_id = format!("{}-aggregated", event.request_id);
            summary.aggregated = Some(0);
            summary
        });
        summary.aggregated = Some(summary.aggregated.unwrap_or(0) + 1);
        summary.time = event.time.clone();
        false
    }

    /// Summaries of the windows that have ended (of every window when `all`).
    fn ended(&mut self, all: bool) -> Vec<AuditEvent> {
        let now = Instant::now();
        let window = if all { Duration::ZERO } else { self.window };
        let mut summaries = Vec::new();
        let full_window = self.window;
        self.clients.retain(|client, (started, _, summary)| {
            if now.duration_since(*started) < window {
                return true;
            }
            if let Some(mut summary) = summary.take() {
                let n = summary.aggregated.unwrap_or(0);
                summary.reason = format!(
                    "{n} more 401 responses to {client} within {}s, not recorded one by one",
                    full_window.as_secs_f64()
                );
                summaries.push(summary);
            }
            false
        });
        summaries
    }
}

/// Sent once per request, with `send(..)`: the event joins the next batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record(pub AuditEvent);

/// Sent by HTTP workers: the events they gathered over a few milliseconds, in one
/// message, so that a busy worker does not wake the auditor for every request.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordBatch(pub Vec<AuditEvent>);

/// Sent at shutdown (and by tests): write every queued event now. Answers how many
/// events were written by this flush.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush;

/// A place events are written to.
pub trait AuditSink: Send {
    /// A short name for logs and spill files (`file`, `stdout`, `postgres`).
    fn name(&self) -> &str;
    /// Writes a batch; on error nothing of the batch counts as written.
    fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()>;
    /// Makes everything written durable.
    fn sync(&mut self) -> io::Result<()>;
}

fn json_lines(events: &[AuditEvent]) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(events.len() * 512);
    for event in events {
        serde_json::to_writer(&mut buf, event)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Appends one JSON object per line to a file (mode 0600), rotated by size:
/// `audit.jsonl` becomes `audit.jsonl.1`, `.1` becomes `.2`, and so on up to `keep`.
pub struct JsonLinesFile {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl JsonLinesFile {
    /// A sink writing to `path`; the file and its directory are created on first write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesFile {
            path: path.into(),
            out: None,
            size: 0,
            max_bytes: 0,
            keep: 0,
        }
    }

    /// Rotates the file when it would grow past `max_bytes` (0: never), keeping `keep`
    /// rotated files.
    pub fn with_rotation(mut self, max_bytes: u64, keep: usize) -> Self {
        self.max_bytes = max_bytes;
        self.keep = keep;
        self
    }

    fn out(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent() {
                crate::fsutil::create_private_dir(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?;
            self.size = file.metadata()?.len();
            self.out = Some(BufWriter::with_capacity(256 * 1024, file));
        }
        Ok(self.out.as_mut().expect("opened above"))
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
            out.get_ref().sync_data()?;
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.size = 0;
        Ok(())
    }
}

impl AuditSink for JsonLinesFile {
    fn name(&self) -> &str {
        "file"
    }

    fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()> {
        let buf = json_lines(events)?;
        self.out()?;
        if self.max_bytes > 0 && self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let out = self.out()?;
        let written = out.write_all(&buf).and_then(|()| out.flush());
        match written {
            Ok(()) => {
                self.size += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // reopen next time: the file may have been moved or the disk freed
                self.out = None;
                Err(e)
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => {
                out.flush()?;
                out.get_ref().sync_data()
            }
            None => Ok(()),
        }
    }
}

/// One JSON object per line on standard output, for container log pipelines.
#[derive(Default)]
pub struct StdoutSink;

impl AuditSink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()> {
        let buf = json_lines(events)?;
        let mut out = io::stdout().lock();
        out.write_all(&buf)?;
        out.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

/// A sink and the events it has yet to take.
struct SinkQueue {
    sink: Box<dyn AuditSink>,
    queue: Vec<AuditEvent>,
    /// Where events go when the queue is full, to be written when the sink is back.
    spill: Option<PathBuf>,
    failing: bool,
}

/// Owns the sinks. Runs on its own arbiter so that disk writes never stall a worker.
/// Each sink has its own queue: a sink that is down keeps its events (up to
/// `max_queue`, then in a spill file) and gets them when it is back, while the others
/// go on.
pub struct Auditor {
    sinks: Vec<SinkQueue>,
    batch: usize,
    interval: Duration,
    max_queue: usize,
    spill_dir: Option<PathBuf>,
    counters: Arc<AuditCounters>,
    flood: DenialFlood,
}

/// Figures of the auditor, readable from any thread (for `/metrics` and `/readyz`).
#[derive(Debug, Default)]
pub struct AuditCounters {
    /// Events waiting in memory, over all sinks.
    pub queued: AtomicU64,
    /// Events written to spill files because a sink's queue was full.
    pub spilled: AtomicU64,
    /// Events written, over all sinks.
    pub written: AtomicU64,
    /// Events lost (a spill file could not be written either).
    pub lost: AtomicU64,
    /// Sinks failing right now.
    pub failing_sinks: AtomicU64,
    /// 401s counted into summaries instead of recorded one by one.
    pub aggregated: AtomicU64,
    /// Events are being lost now (a sink down and no spill possible); cleared when every
    /// sink takes its events again.
    pub losing: std::sync::atomic::AtomicBool,
}

impl Auditor {
    /// An auditor writing to `sink` every `interval`, or sooner when `batch` events wait.
    pub fn new(sink: Box<dyn AuditSink>, batch: usize, interval: Duration) -> Self {
        Self::with_sinks(vec![sink], batch, interval)
    }

    /// An auditor writing to every sink of `sinks`.
    pub fn with_sinks(sinks: Vec<Box<dyn AuditSink>>, batch: usize, interval: Duration) -> Self {
        Auditor {
            sinks: sinks
                .into_iter()
                .map(|sink| SinkQueue {
                    sink,
                    queue: Vec::new(),
                    spill: None,
                    failing: false,
                })
                .collect(),
            batch: batch.max(1),
            interval,
            max_queue: 100_000,
            spill_dir: None,
            counters: Arc::new(AuditCounters::default()),
            flood: DenialFlood {
                limit: 0,
                window: Duration::from_secs(10),
                clients: HashMap::new(),
            },
        }
    }

    /// Records at most `limit` 401s per client in each `window`, and one summary of the
    /// rest (0: every one).
    pub fn with_denial_limit(mut self, limit: u64, window: Duration) -> Self {
        self.flood.limit = limit;
        self.flood.window = window;
        self
    }

    /// Past `max_queue` events waiting for one sink, events go to a spill file in `dir`.
    pub fn with_spill(mut self, dir: PathBuf, max_queue: usize) -> Self {
        // events spilled before a restart are written first, like any spilled events
        for sq in &mut self.sinks {
            let path = dir.join(format!("audit-spill-{}.jsonl", sq.sink.name()));
            if path.exists() {
                log::warn!(
                    "audit events spilled before the last stop wait in {}",
                    path.display()
                );
                sq.spill = Some(path);
            }
        }
        self.spill_dir = Some(dir);
        self.max_queue = max_queue.max(1);
        self
    }

    /// The auditor's figures.
    pub fn counters(&self) -> Arc<AuditCounters> {
        self.counters.clone()
    }

    fn accept(&mut self, mut events: Vec<AuditEvent>) {
        let before = events.len();
        events.retain(|e| self.flood.admit(e));
        let counted = (before - events.len()) as u64;
        if counted > 0 {
            self.counters
                .aggregated
                .fetch_add(counted, Ordering::Relaxed);
        }
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        let last = self.sinks.len().saturating_sub(1);
        let mut events = Some(events);
        for i in 0..self.sinks.len() {
            let batch = if i == last {
                events.take().unwrap_or_default()
            } else {
                events.clone().unwrap_or_default()
            };
            self.sinks[i].queue.extend(batch);
            self.counters.queued.fetch_add(n, Ordering::Relaxed);
            if self.sinks[i].queue.len() > self.max_queue {
                self.spill(i);
            }
        }
        if self.sinks.iter().any(|s| s.queue.len() >= self.batch) {
            let _ = self.write_queues();
        }
    }

    fn spill(&mut self, i: usize) {
        let dir = match &self.spill_dir {
            Some(dir) => dir.clone(),
            None => {
                let sq = &mut self.sinks[i];
                let excess = sq.queue.len() - self.max_queue;
                sq.queue.drain(..excess);
                self.counters
                    .queued
                    .fetch_sub(excess as u64, Ordering::Relaxed);
                self.counters
                    .lost
                    .fetch_add(excess as u64, Ordering::Relaxed);
                self.counters.losing.store(true, Ordering::Relaxed);
                log::error!(
                    "audit queue of {} full and no spill directory: {excess} events lost",
                    sq.sink.name()
                );
                return;
            }
        };
        let sq = &mut self.sinks[i];
        let path = dir.join(format!("audit-spill-{}.jsonl", sq.sink.name()));
        let events: Vec<AuditEvent> = std::mem::take(&mut sq.queue);
        let n = events.len() as u64;
        let written = json_lines(&events).and_then(|buf| {
            crate::fsutil::create_private_dir(&dir)?;
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(&buf)?;
            file.sync_data()
        });
        self.counters.queued.fetch_sub(n, Ordering::Relaxed);
        match written {
            Ok(()) => {
                self.counters.spilled.fetch_add(n, Ordering::Relaxed);
                sq.spill = Some(path);
                log::warn!(
                    "audit sink {} is behind: {n} events spilled to disk",
                    sq.sink.name()
                );
            }
            Err(e) => {
                self.counters.lost.fetch_add(n, Ordering::Relaxed);
                self.counters.losing.store(true, Ordering::Relaxed);
                log::error!(
                    "audit sink {} is behind and the spill file failed: {n} events lost: {e}",
                    sq.sink.name()
                );
            }
        }
    }

    /// Writes what each sink has waiting, spilled events first. Answers how many events
    /// were written, over all sinks, or the first error.
    fn write_queues(&mut self) -> Result<usize, String> {
        let mut written = 0;
        let mut first_error = None;
        for sq in &mut self.sinks {
            // events spilled earlier go first, in order
            if let Some(path) = sq.spill.clone() {
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let spilled: Vec<AuditEvent> = text
                            .lines()
                            .filter_map(|l| serde_json::from_str(l).ok())
                            .collect();
                        match sq.sink.write_batch(&spilled) {
                            Ok(()) => {
                                let _ = std::fs::remove_file(&path);
                                sq.spill = None;
                                if sq.failing && sq.queue.is_empty() {
                                    sq.failing = false;
                                    log::info!("audit sink {} is back", sq.sink.name());
                                }
                                written += spilled.len();
                                log::info!(
                                    "audit sink {} took {} spilled events",
                                    sq.sink.name(),
                                    spilled.len()
                                );
                            }
                            Err(e) => {
                                if !sq.failing {
                                    log::error!(
                                        "audit sink {} failed, its spilled events wait: {e}",
                                        sq.sink.name()
                                    );
                                }
                                sq.failing = true;
                                first_error.get_or_insert(format!("{}: {e}", sq.sink.name()));
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        log::error!("cannot read the audit spill file {}: {e}", path.display())
                    }
                }
            }
            if sq.queue.is_empty() {
                continue;
            }
            match sq.sink.write_batch(&sq.queue) {
                Ok(()) => {
                    let n = sq.queue.len();
                    sq.queue.clear();
                    written += n;
                    self.counters.queued.fetch_sub(n as u64, Ordering::Relaxed);
                    if sq.failing {
                        sq.failing = false;
                        log::info!("audit sink {} is back", sq.sink.name());
                    }
                }
                Err(e) => {
                    if !sq.failing {
                        log::error!(
                            "audit sink {} failed, {} events kept queued: {e}",
                            sq.sink.name(),
                            sq.queue.len()
                        );
                    }
                    sq.failing = true;
                    first_error.get_or_insert(format!("{}: {e}", sq.sink.name()));
                }
            }
        }
        let failing = self.sinks.iter().filter(|s| s.failing).count() as u64;
        self.counters
            .failing_sinks
            .store(failing, Ordering::Relaxed);
        if failing == 0 {
            self.counters.losing.store(false, Ordering::Relaxed);
        }
        self.counters
            .written
            .fetch_add(written as u64, Ordering::Relaxed);
        match first_error {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

impl Actor for Auditor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(self.interval, |act, _| {
            let summaries = act.flood.ended(false);
            if !summaries.is_empty() {
                act.accept(summaries);
            }
            let _ = act.write_queues();
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let summaries = self.flood.ended(true);
        if !summaries.is_empty() {
            self.accept(summaries);
        }
        let _ = self.write_queues();
        for sq in &mut self.sinks {
            let _ = sq.sink.sync();
        }
    }
}

impl Handler<Record> for Auditor {
    type Result = ();

    fn handle(&mut self, Record(event): Record, _: &mut Self::Context) {
        self.accept(vec![event]);
    }
}

impl Handler<RecordBatch> for Auditor {
    type Result = ();

    fn handle(&mut self, RecordBatch(events): RecordBatch, _: &mut Self::Context) {
        self.accept(events);
    }
}

impl Handler<Flush> for Auditor {
    type Result = Result<usize, String>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let summaries = self.flood.ended(true);
        if !summaries.is_empty() {
            self.accept(summaries);
        }
        let n = self.write_queues()?;
        for sq in &mut self.sinks {
            sq.sink
                .sync()
                .map_err(|e| format!("{}: {e}", sq.sink.name()))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            time: "2026-01-01T00:00:00.000Z".into(),
            request_id: format!("r{i}"),
            user: "alice".into(),
            org: Some(1),
            cluster: Some(1),
            attributes: RequestAttributes::derive("GET", "/api/v1/pods", "", false),
            method: "GET".into(),
            path: "/api/v1/pods".into(),
            query: String::new(),
            client: "127.0.0.1".into(),
            user_agent: "test".into(),
            status: 200,
            duration_ms: 1.0,
            bytes_in: 0,
            bytes_out: 10,
            decision: AuditDecision::Allow,
            reason: "allowed by policy".into(),
            error: None,
            request_body: None,
            aggregated: None,
            ended: None,
        }
    }

    #[actix_rt::test]
    async fn batches_reach_the_file_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let auditor = Auditor::new(
            Box::new(JsonLinesFile::new(&path)),
            1000,
            Duration::from_secs(3600),
        )
        .start();
        for i in 0..10 {
            auditor.send(Record(event(i))).await.unwrap();
        }
        assert!(
            !path.exists() || std::fs::read_to_string(&path).unwrap().is_empty(),
            "batched, not yet written"
        );
        assert_eq!(auditor.send(Flush).await.unwrap().unwrap(), 10);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[3]["request_id"], "r3");
        assert_eq!(lines[3]["verb"], "list");
        assert_eq!(lines[3]["resource"], "pods");
        assert_eq!(lines[3]["decision"], "allow");
    }

    #[actix_rt::test]
    async fn the_file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut sink = JsonLinesFile::new(&path).with_rotation(2_000, 2);
        for i in 0..30 {
            sink.write_batch(&[event(i)]).unwrap();
        }
        let sizes: Vec<u64> = ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
            .collect();
        assert!(sizes.iter().all(|&s| s > 0 && s <= 2_000), "{sizes:?}");
        assert!(
            !dir.path().join("audit.jsonl.3").exists(),
            "only two rotated files are kept"
        );
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(
            newest
                .trim_end()
                .ends_with(&format!("\"request_id\":\"r29\"{}", ""))
                || newest.contains("\"r29\"")
        );
    }

    /// A sink that fails until told otherwise.
    struct Flaky(
        Arc<std::sync::atomic::AtomicBool>,
        Arc<std::sync::Mutex<Vec<String>>>,
    );

    impl AuditSink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()> {
            if self.0.load(Ordering::SeqCst) {
                return Err(io::Error::other("down"));
            }
            self.1
                .lock()
                .unwrap()
                .extend(events.iter().map(|e| e.request_id.clone()));
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[actix_rt::test]
    async fn a_sink_that_is_down_gets_every_event_in_order_when_back_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let auditor = Auditor::with_sinks(
            vec![Box::new(Flaky(down.clone(), got.clone()))],
            1000,
            Duration::from_secs(3600),
        )
        .with_spill(dir.path().to_path_buf(), 5);
        let counters = auditor.counters();
        let addr = auditor.start();
        for i in 0..12 {
            addr.send(Record(event(i))).await.unwrap();
        }
        assert!(addr.send(Flush).await.unwrap().is_err());
        assert_eq!(counters.failing_sinks.load(Ordering::SeqCst), 1);
        assert!(counters.spilled.load(Ordering::SeqCst) >= 6);
        // a restart while down: a new auditor finds the spill file
        drop(addr);
        let auditor = Auditor::with_sinks(
            vec![Box::new(Flaky(down.clone(), got.clone()))],
            1000,
            Duration::from_secs(3600),
        )
        .with_spill(dir.path().to_path_buf(), 5);
        let addr = auditor.start();
        down.store(false, Ordering::SeqCst);
        addr.send(Flush).await.unwrap().unwrap();
        let got = got.lock().unwrap().clone();
        let spilled = counters.spilled.load(Ordering::SeqCst) as usize;
        let expected: Vec<String> = (0..spilled).map(|i| format!("r{i}")).collect();
        assert_eq!(
            got, expected,
            "spilled events arrive once, in order, after the restart"
        );
    }

    #[actix_rt::test]
    async fn losing_events_is_reported_until_the_sink_is_back() {
        let dir = tempfile::tempdir().unwrap();
        // a spill "directory" under a file: spilling fails
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let auditor = Auditor::with_sinks(
            vec![Box::new(Flaky(down.clone(), got.clone()))],
            1000,
            Duration::from_secs(3600),
        )
        .with_spill(file.join("spill"), 2);
        let counters = auditor.counters();
        let addr = auditor.start();
        for i in 0..5 {
            addr.send(Record(event(i))).await.unwrap();
        }
        let _ = addr.send(Flush).await.unwrap();
        assert!(counters.losing.load(Ordering::SeqCst));
        assert!(counters.lost.load(Ordering::SeqCst) >= 3);
        down.store(false, Ordering::SeqCst);
        addr.send(Flush).await.unwrap().unwrap();
        assert!(
            !got.lock().unwrap().is_empty(),
            "what was still queued is written"
        );
        assert!(
            !counters.losing.load(Ordering::SeqCst),
            "back: no longer losing"
        );
    }
}
