//! The audit sinks written in place: a JSON-lines file rotated by size, and standard
//! output. (The PostgreSQL sink is in [`super::PostgresAuditSink`].)

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::SystemTime;

use super::rotation::{rotated_name, start_compressor, Job, Retention};
use super::AuditEvent;

/// A place events are written to.
pub trait AuditSink: Send {
    /// A short name for logs and spill files (`file`, `stdout`, `postgres`).
    fn name(&self) -> &str;
    /// Writes a batch; on error nothing of the batch counts as written.
    fn write_batch(&mut self, events: &[AuditEvent]) -> io::Result<()>;
    /// Makes everything written durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// The events, one JSON object per line.
pub(super) fn json_lines(events: &[AuditEvent]) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(events.len() * 512);
    for event in events {
        serde_json::to_writer(&mut buf, event)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Appends one JSON object per line to a file (mode 0600), rotated by size: the file is
/// renamed with the time of the rotation and compressed by a thread of its own, and
/// rotated files are kept unless a [`Retention`] says otherwise (see [`super::rotation`]).
pub struct JsonLinesFile {
    path: PathBuf,
    out: Option<File>,
    size: u64,
    max_bytes: u64,
    retention: Retention,
    compressor: Option<mpsc::Sender<Job>>,
}

impl JsonLinesFile {
    /// A sink writing to `path`; the file and its directory are created on first write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesFile {
            path: path.into(),
            out: None,
            size: 0,
            max_bytes: 0,
            retention: Retention::default(),
            compressor: None,
        }
    }

    /// Rotates the file when it would grow past `max_bytes` (0: never); rotated files are
    /// compressed, and removed only as `retention` says. Starts the compression thread,
    /// which first finishes what an earlier run left.
    pub fn with_rotation(mut self, max_bytes: u64, retention: Retention) -> Self {
        self.max_bytes = max_bytes;
        self.retention = retention;
        if max_bytes > 0 && retention.keep_files != Some(0) {
            self.compressor = Some(start_compressor(self.path.clone(), retention));
        }
        self
    }

    /// Waits until every rotated file handed to the compression thread so far is
    /// compressed and the retention applied.
    pub fn wait_for_compression(&self) {
        if let Some(jobs) = &self.compressor {
            let (reply, done) = mpsc::channel();
            if jobs.send(Job::Done(reply)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    fn out(&mut self) -> io::Result<&mut File> {
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
            self.out = Some(file);
        }
        Ok(self.out.as_mut().expect("opened above"))
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.take() {
            out.sync_data()?;
        }
        match &self.compressor {
            Some(jobs) => {
                let rotated = rotated_name(&self.path, SystemTime::now());
                std::fs::rename(&self.path, &rotated)?;
                // compressed off the request path; if the thread is gone, the file stays
                // plain (read as it is) and is compressed at the next start
                let _ = jobs.send(Job::Compress(rotated));
            }
            None => {
                // audit.keep_files = 0: no history
                std::fs::remove_file(&self.path)?;
                log::info!(
                    "audit: removed {} as it rotated (audit.keep_files = 0)",
                    self.path.display()
                );
            }
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
        self.write_bytes(&json_lines(events)?)
    }

    fn sync(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.sync_data(),
            None => Ok(()),
        }
    }
}

impl JsonLinesFile {
    /// The active file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends whole lines in one write (rotating first when they would not fit), so
    /// that they reach the page cache before this returns.
    pub fn write_bytes(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out()?;
        if self.max_bytes > 0 && self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let out = self.out()?;
        // one write of whole lines (O_APPEND): never interleaved with another's
        let written = out.write_all(buf);
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
