//! The Auditor actor: receives one [`AuditEvent`] per request and writes them in batches,
//! off the request path, to a JSON-lines file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::attributes::RequestAttributes;

/// What was decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Writes a batch; on error nothing of the batch counts as written.
    fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()>;
    /// Makes everything written durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// Appends one JSON object per line to a file (mode 0600).
pub struct JsonLinesFile {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl JsonLinesFile {
    /// A sink writing to `path`; the file and its directory are created on first write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesFile {
            path: path.into(),
            out: None,
        }
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
            self.out = Some(BufWriter::with_capacity(256 * 1024, file));
        }
        Ok(self.out.as_mut().expect("opened above"))
    }
}

impl AuditSink for JsonLinesFile {
    fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(events.len() * 512);
        for event in events {
            serde_json::to_writer(&mut buf, event)?;
            buf.push(b'\n');
        }
        let out = self.out()?;
        let written = out.write_all(&buf).and_then(|()| out.flush());
        if written.is_err() {
            // reopen next time: the file may have been moved or the disk freed
            self.out = None;
        }
        written
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

/// Owns the sinks. Runs on its own arbiter so that disk writes never stall a worker.
pub struct Auditor {
    sink: Box<dyn AuditSink>,
    queue: Vec<AuditEvent>,
    batch: usize,
    interval: Duration,
    max_queue: usize,
    dropped: u64,
}

impl Auditor {
    /// An auditor writing to `sink` every `interval`, or sooner when `batch` events wait.
    pub fn new(sink: Box<dyn AuditSink>, batch: usize, interval: Duration) -> Self {
        Auditor {
            sink,
            queue: Vec::with_capacity(batch),
            batch: batch.max(1),
            interval,
            max_queue: 1_000_000,
            dropped: 0,
        }
    }

    fn write_queue(&mut self) -> Result<usize, String> {
        if self.queue.is_empty() {
            return Ok(0);
        }
        match self.sink.write_batch(&self.queue) {
            Ok(()) => {
                let n = self.queue.len();
                self.queue.clear();
                Ok(n)
            }
            Err(e) => {
                log::error!(
                    "audit sink failed, {} events kept queued: {e}",
                    self.queue.len()
                );
                if self.queue.len() > self.max_queue {
                    let excess = self.queue.len() - self.max_queue;
                    self.queue.drain(..excess);
                    self.dropped += excess as u64;
                    log::error!(
                        "audit queue full: dropped {excess} oldest events ({} in all)",
                        self.dropped
                    );
                }
                Err(e.to_string())
            }
        }
    }
}

impl Actor for Auditor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        ctx.run_interval(self.interval, |act, _| {
            let _ = act.write_queue();
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _ = self.write_queue();
        let _ = self.sink.sync();
    }
}

impl Handler<Record> for Auditor {
    type Result = ();

    fn handle(&mut self, Record(event): Record, _: &mut Self::Context) {
        self.queue.push(event);
        if self.queue.len() >= self.batch {
            let _ = self.write_queue();
        }
    }
}

impl Handler<RecordBatch> for Auditor {
    type Result = ();

    fn handle(&mut self, RecordBatch(events): RecordBatch, _: &mut Self::Context) {
        self.queue.extend(events);
        if self.queue.len() >= self.batch {
            let _ = self.write_queue();
        }
    }
}

impl Handler<Flush> for Auditor {
    type Result = Result<usize, String>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let n = self.write_queue()?;
        self.sink.sync().map_err(|e| e.to_string())?;
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
}
