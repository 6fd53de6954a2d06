//! The audit sinks written in place: a JSON-lines file rotated by size, and standard
//! output. (The PostgreSQL sink is in [`super::PostgresAuditSink`].)

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

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
