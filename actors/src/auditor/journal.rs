//! The audit file written on the request path: a request's event reaches the file (the
//! page cache: one `write`, no fsync) before the last byte of its response leaves
//! kubegate, so that a crash loses nothing that was answered. kube-apiserver's
//! "blocking" log backend works the same way.
//!
//! The HTTP workers write through [`Journal::record`], each line whole in one append,
//! under one lock that also guards rotation and the 401-flood summary, so lines are
//! never interleaved whoever writes. The [`super::Auditor`] actor owns the rest: the
//! other sinks (which still batch behind the file), the summaries of 401 floods, and the
//! events the file did not take, which wait in the journal's backlog and then in the
//! Auditor's queue and spill file until the file takes them again. While the file is
//! failing, [`Journal::record`] refuses at once (the event joins the backlog) and the
//! audit counters say events are being lost, so that requests get a 503 instead of an
//! unrecorded answer.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::flood::DenialFlood;
use super::sinks::{AuditSink, JsonLinesFile};
use super::{AuditCounters, AuditEvent};

/// The audit file, shared by the HTTP workers and the Auditor.
pub struct Journal {
    state: Mutex<JournalState>,
    counters: Arc<AuditCounters>,
}

struct JournalState {
    file: JsonLinesFile,
    flood: DenialFlood,
    /// Events the file did not take, oldest first, until the Auditor takes them.
    backlog: Vec<AuditEvent>,
    /// Direct writes are refused until the backlog has been written.
    failing: bool,
}

/// What became of an event handed to [`Journal::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// In the file.
    Written,
    /// One 401 too many from its client: counted into the client's summary, which the
    /// Auditor writes when the window ends.
    Aggregated,
}

thread_local! {
    /// Each worker's line buffer, reused from request to request.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
}

impl Journal {
    /// A journal writing to `file`; `counters` are the Auditor's (see
    /// [`super::Auditor::with_journal`]).
    pub fn new(file: JsonLinesFile, counters: Arc<AuditCounters>) -> Journal {
        Journal {
            state: Mutex::new(JournalState {
                file,
                flood: DenialFlood::new(0, Duration::from_secs(10)),
                backlog: Vec::new(),
                failing: false,
            }),
            counters,
        }
    }

    /// Records at most `limit` 401s per client in each `window`, and one summary of the
    /// rest (0: every one).
    pub fn with_denial_limit(self, limit: u64, window: Duration) -> Journal {
        self.lock().flood = DenialFlood::new(limit, window);
        self
    }

    fn lock(&self) -> MutexGuard<'_, JournalState> {
        // a worker that panicked while writing left whole lines or none: go on
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `event` to the file now, in one write. On an error the event is kept (the
    /// Auditor writes it when the file is back), the counters say events are being lost,
    /// and the caller must not give the request an answer as if it were recorded.
    pub fn record(&self, event: &AuditEvent) -> io::Result<Recorded> {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            serde_json::to_writer(&mut *line, event)?;
            line.push(b'\n');
            let mut state = self.lock();
            if !state.flood.admit(event) {
                drop(state);
                self.counters.aggregated.fetch_add(1, Ordering::Relaxed);
                return Ok(Recorded::Aggregated);
            }
            let written = if state.failing {
                Err(io::Error::other(
                    "the audit file is failing; earlier events wait to be written",
                ))
            } else {
                state.file.write_bytes(&line)
            };
            match written {
                Ok(()) => {
                    drop(state);
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                    Ok(Recorded::Written)
                }
                Err(e) => {
                    if !state.failing {
                        log::error!(
                            "audit file {}: {e}; requests are refused until it takes events again",
                            state.file.path().display()
                        );
                    }
                    state.failing = true;
                    state.backlog.push(event.clone());
                    drop(state);
                    self.counters.queued.fetch_add(1, Ordering::Relaxed);
                    self.counters.losing.store(true, Ordering::Relaxed);
                    Err(e)
                }
            }
        })
    }

    /// Whether the file is failing (its backlog not yet written).
    pub fn failing(&self) -> bool {
        self.lock().failing
    }

    /// The events the file did not take, for the Auditor's queue.
    pub(super) fn take_backlog(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut self.lock().backlog)
    }

    /// Summaries of the 401-flood windows that have ended (of every window when `all`).
    pub(super) fn ended_floods(&self, all: bool) -> Vec<AuditEvent> {
        self.lock().flood.ended(all)
    }

    /// Waits until the file's rotated files handed to compression so far are compressed.
    pub fn wait_for_compression(&self) {
        self.lock().file.wait_for_compression();
    }
}

/// The journal's file as one of the Auditor's sinks: what the Auditor writes to it (the
/// backlog, 401 summaries, events spilled before a restart) goes in under the journal's
/// lock, and once the backlog is written the workers write directly again.
pub(super) struct JournalSink(pub(super) Arc<Journal>);

impl AuditSink for JournalSink {
    fn name(&self) -> &str {
        "file"
    }

    fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()> {
        let buf = super::sinks::json_lines(events)?;
        let mut state = self.0.lock();
        state.file.write_bytes(&buf)?;
        if state.failing && state.backlog.is_empty() {
            state.failing = false;
            log::info!(
                "audit file {} takes events again",
                state.file.path().display()
            );
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.lock().file.sync()
    }
}
