//! One sink's queue: the events it has yet to take and, when the queue is full, the spill
//! file they go to. Spilled events are written first when the sink is back, after a
//! restart too, so that each sink gets every event once and in order.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::sinks::json_lines;
use super::{AuditCounters, AuditError, AuditEvent, AuditSink};

/// A sink and the events it has yet to take.
pub(super) struct SinkQueue {
    pub(super) sink: Box<dyn AuditSink>,
    pub(super) queue: Vec<AuditEvent>,
    /// Where events go when the queue is full, to be written when the sink is back.
    spill: Option<PathBuf>,
    pub(super) failing: bool,
}

impl SinkQueue {
    /// An empty queue for `sink`.
    pub(super) fn new(sink: Box<dyn AuditSink>) -> Self {
        SinkQueue {
            sink,
            queue: Vec::new(),
            spill: None,
            failing: false,
        }
    }

    fn error(&self, source: std::io::Error) -> AuditError {
        AuditError::Sink {
            sink: self.sink.name().to_string(),
            source,
        }
    }

    fn spill_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("audit-spill-{}.jsonl", self.sink.name()))
    }

    /// Takes up the spill file left in `dir` before the last stop, if any: its events
    /// are written first, like any spilled events.
    pub(super) fn find_spill(&mut self, dir: &Path) {
        let path = self.spill_path(dir);
        if path.exists() {
            log::warn!(
                "audit events spilled before the last stop wait in {}",
                path.display()
            );
            self.spill = Some(path);
        }
    }

    /// The queue holds more than `max_queue` events: moves them all to the spill file in
    /// `dir`, or, without a spill directory, drops the oldest past `max_queue`.
    pub(super) fn spill(&mut self, dir: Option<&Path>, max_queue: usize, counters: &AuditCounters) {
        let Some(dir) = dir else {
            let excess = self.queue.len() - max_queue;
            self.queue.drain(..excess);
            counters.queued.fetch_sub(excess as u64, Ordering::Relaxed);
            counters.lost.fetch_add(excess as u64, Ordering::Relaxed);
            counters.losing.store(true, Ordering::Relaxed);
            log::error!(
                "audit queue of {} full and no spill directory: {excess} events lost",
                self.sink.name()
            );
            return;
        };
        let path = self.spill_path(dir);
        let events: Vec<AuditEvent> = std::mem::take(&mut self.queue);
        let n = events.len() as u64;
        let written = json_lines(&events).and_then(|buf| {
            crate::fsutil::create_private_dir(dir)?;
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(&buf)?;
            file.sync_data()
        });
        counters.queued.fetch_sub(n, Ordering::Relaxed);
        match written {
            Ok(()) => {
                counters.spilled.fetch_add(n, Ordering::Relaxed);
                self.spill = Some(path);
                log::warn!(
                    "audit sink {} is behind: {n} events spilled to disk",
                    self.sink.name()
                );
            }
            Err(e) => {
                counters.lost.fetch_add(n, Ordering::Relaxed);
                counters.losing.store(true, Ordering::Relaxed);
                log::error!(
                    "audit sink {} is behind and the spill file failed: {n} events lost: {e}",
                    self.sink.name()
                );
            }
        }
    }

    /// Writes what the sink has waiting, spilled events first, adding to `written` how
    /// many events it took. On an error, what is not written waits for the next time.
    pub(super) fn write(
        &mut self,
        counters: &AuditCounters,
        written: &mut usize,
    ) -> Result<(), AuditError> {
        // events spilled earlier go first, in order
        if let Some(path) = self.spill.clone() {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let spilled: Vec<AuditEvent> = text
                        .lines()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect();
                    match self.sink.write_batch(&spilled) {
                        Ok(()) => {
                            let _ = std::fs::remove_file(&path);
                            self.spill = None;
                            if self.failing && self.queue.is_empty() {
                                self.failing = false;
                                log::info!("audit sink {} is back", self.sink.name());
                            }
                            *written += spilled.len();
                            log::info!(
                                "audit sink {} took {} spilled events",
                                self.sink.name(),
                                spilled.len()
                            );
                        }
                        Err(e) => {
                            if !self.failing {
                                log::error!(
                                    "audit sink {} failed, its spilled events wait: {e}",
                                    self.sink.name()
                                );
                            }
                            self.failing = true;
                            return Err(self.error(e));
                        }
                    }
                }
                Err(e) => {
                    log::error!("cannot read the audit spill file {}: {e}", path.display())
                }
            }
        }
        if self.queue.is_empty() {
            return Ok(());
        }
        match self.sink.write_batch(&self.queue) {
            Ok(()) => {
                let n = self.queue.len();
                self.queue.clear();
                *written += n;
                counters.queued.fetch_sub(n as u64, Ordering::Relaxed);
                if self.failing {
                    self.failing = false;
                    log::info!("audit sink {} is back", self.sink.name());
                }
                Ok(())
            }
            Err(e) => {
                if !self.failing {
                    log::error!(
                        "audit sink {} failed, {} events kept queued: {e}",
                        self.sink.name(),
                        self.queue.len()
                    );
                }
                self.failing = true;
                Err(self.error(e))
            }
        }
    }
}
