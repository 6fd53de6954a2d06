//! The Auditor actor: receives one [`AuditEvent`] per request and writes them in batches,
//! off the request path, to its sinks: a JSON-lines file, standard output, PostgreSQL.
//!
//! Here: the event, the messages, the actor. Beside it: `sinks.rs` (the file and standard
//! output sinks), `rotation.rs` (the file's rotated files: gzip, retention, reading them
//! back), `postgres.rs` (the PostgreSQL sink and the audit query), `queue.rs` (each
//! sink's own queue and spill file), `flood.rs` (a flood of 401s summed up).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attributes::RequestAttributes;

mod flood;
mod journal;
mod postgres;
mod queue;
pub mod rotation;
mod sinks;
#[cfg(test)]
mod tests;

use flood::DenialFlood;
use journal::JournalSink;
pub use journal::{Journal, Recorded};
pub use postgres::{audit_histogram, query_audit, AuditQuery, PostgresAuditSink};
use queue::SinkQueue;
pub use rotation::Retention;
pub use sinks::{AuditSink, JsonLinesFile, StdoutSink};

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
    /// HTTP method; borrowed for the standard ones, so that starting an event does not
    /// allocate it.
    pub method: std::borrow::Cow<'static, str>,
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
    /// Who the request acted as, when the person impersonated someone (`kubectl --as`,
    /// granted by the policy); `user` stays the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_as: Option<ActingAs>,
    /// The recording of an exec or attach session, when its cluster records them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<SessionRecording>,
}

/// The recording of a session, as its audit event names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecording {
    /// Its id (the request id): `GET /pipeline/api/v1/orgs/{org}/audit/sessions/{id}`.
    pub id: String,
    /// Size of the cast file.
    pub bytes: u64,
    /// Why recording stopped before the session ended (the size cap), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// The identity a request acted as (`Impersonate-User`, `Impersonate-Group`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActingAs {
    /// The user acted as.
    pub user: String,
    /// The groups asked for (beside `system:authenticated`, always added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Sent by HTTP workers: the events they gathered over a few milliseconds, in one
/// message, so that a busy worker does not wake the auditor for every request. With a
/// [`Journal`], the workers have written them to the file already (or left them in its
/// backlog): they are for the other sinks only.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordBatch(pub Vec<AuditEvent>);

/// Why events did not reach a sink (they wait in its queue or spill file).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A sink refused a batch or could not make it durable.
    #[error("{sink}: {source}")]
    Sink {
        /// The sink's name (`file`, `stdout`, `postgres`).
        sink: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Sent at shutdown (and by tests): write every queued event now. Answers how many
/// events were written by this flush, or the first sink's error.
#[derive(Message)]
#[rtype(result = "Result<usize, AuditError>")]
pub struct Flush;

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
    /// The file the workers write to themselves; its sink is `sinks[0]`.
    journal: Option<Arc<Journal>>,
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
            sinks: sinks.into_iter().map(SinkQueue::new).collect(),
            batch: batch.max(1),
            interval,
            max_queue: 100_000,
            spill_dir: None,
            counters: Arc::new(AuditCounters::default()),
            flood: DenialFlood::new(0, Duration::from_secs(10)),
            journal: None,
        }
    }

    /// Adds the file that HTTP workers write to on the request path (made with this
    /// auditor's [`Auditor::counters`]). The auditor then writes to it only what the
    /// workers could not, 401 summaries (the journal keeps the flood count), and spilled
    /// events; the events of [`RecordBatch`] go to the other sinks.
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Self {
        self.sinks
            .insert(0, SinkQueue::new(Box::new(JournalSink(journal.clone()))));
        self.journal = Some(journal);
        self
    }

    /// Records at most `limit` 401s per client in each `window`, and one summary of the
    /// rest (0: every one).
    pub fn with_denial_limit(mut self, limit: u64, window: Duration) -> Self {
        self.flood = DenialFlood::new(limit, window);
        self
    }

    /// Past `max_queue` events waiting for one sink, events go to a spill file in `dir`.
    pub fn with_spill(mut self, dir: PathBuf, max_queue: usize) -> Self {
        // events spilled before a restart are written first, like any spilled events
        for sq in &mut self.sinks {
            sq.find_spill(&dir);
        }
        self.spill_dir = Some(dir);
        self.max_queue = max_queue.max(1);
        self
    }

    /// The auditor's figures.
    pub fn counters(&self) -> Arc<AuditCounters> {
        self.counters.clone()
    }

    /// Events from the workers: with a journal, already in the file (or its backlog) and
    /// past the flood count, so for the other sinks only.
    fn accept_batch(&mut self, events: Vec<AuditEvent>) {
        if self.journal.is_some() {
            self.enqueue(events, 1);
        } else {
            self.accept(events);
        }
    }

    /// Moves the events the journal's file did not take to its queue (counted as queued
    /// by the journal already), and queues the summaries of ended 401 floods for every
    /// sink.
    fn take_from_journal(&mut self, all: bool) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let backlog = journal.take_backlog();
        if !backlog.is_empty() {
            self.sinks[0].queue.extend(backlog);
            if self.sinks[0].queue.len() > self.max_queue {
                self.sinks[0].spill(self.spill_dir.as_deref(), self.max_queue, &self.counters);
            }
        }
        let summaries = journal.ended_floods(all);
        if !summaries.is_empty() {
            self.enqueue(summaries, 0);
        }
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
        self.enqueue(events, 0);
    }

    /// Queues `events` for the sinks from `first` on.
    fn enqueue(&mut self, events: Vec<AuditEvent>, first: usize) {
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        let last = self.sinks.len().saturating_sub(1);
        let mut events = Some(events);
        for i in first..self.sinks.len() {
            let batch = if i == last {
                events.take().unwrap_or_default()
            } else {
                events.clone().unwrap_or_default()
            };
            self.sinks[i].queue.extend(batch);
            self.counters.queued.fetch_add(n, Ordering::Relaxed);
            if self.sinks[i].queue.len() > self.max_queue {
                self.sinks[i].spill(self.spill_dir.as_deref(), self.max_queue, &self.counters);
            }
        }
        if self.sinks.iter().any(|s| s.queue.len() >= self.batch) {
            let _ = self.write_queues();
        }
    }

    /// Writes what each sink has waiting, spilled events first. Answers how many events
    /// were written, over all sinks, or the first error.
    fn write_queues(&mut self) -> Result<usize, AuditError> {
        let mut written = 0;
        let mut first_error = None;
        for sq in &mut self.sinks {
            if let Err(e) = sq.write(&self.counters, &mut written) {
                first_error.get_or_insert(e);
            }
        }
        let failing = self.sinks.iter().filter(|s| s.failing).count() as u64;
        self.counters
            .failing_sinks
            .store(failing, Ordering::Relaxed);
        if failing == 0 && !self.journal.as_ref().is_some_and(|j| j.failing()) {
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
            act.take_from_journal(false);
            let summaries = act.flood.ended(false);
            if !summaries.is_empty() {
                act.accept(summaries);
            }
            let _ = act.write_queues();
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.take_from_journal(true);
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

impl Handler<RecordBatch> for Auditor {
    type Result = ();

    fn handle(&mut self, RecordBatch(events): RecordBatch, _: &mut Self::Context) {
        self.accept_batch(events);
    }
}

impl Handler<Flush> for Auditor {
    type Result = Result<usize, AuditError>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        self.take_from_journal(true);
        let summaries = self.flood.ended(true);
        if !summaries.is_empty() {
            self.accept(summaries);
        }
        let n = self.write_queues()?;
        for sq in &mut self.sinks {
            sq.sink.sync().map_err(|source| AuditError::Sink {
                sink: sq.sink.name().to_string(),
                source,
            })?;
        }
        Ok(n)
    }
}
