//! The audit file's rotated files: their names, their gzip compression off the request
//! path, what is kept, and how the audit query reads them back.
//!
//! `audit.jsonl` rotates to `audit.jsonl.2026-12-05T21-00-00.123456Z` (the time of the
//! rotation, so names never move and sort by age), which a background thread then
//! compresses to `...Z.gz`: it writes `...Z.gz.tmp`, syncs it, renames it, and only
//! then removes the plain file, so a crash at any point leaves the events in one
//! complete file (a start-up sweep finishes what a crash left: a plain rotated file is
//! compressed again, a leftover `.gz.tmp` removed).
//!
//! Rotated files are kept unless [`Retention`] says otherwise: `keep_files` (the newest
//! N) or `max_age` (files whose last event is older). Each removal is logged (info).
//! Files from earlier versions (`audit.jsonl.1`...) are read, compressed and aged like
//! the others.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// What happens to rotated files. The default keeps every one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep only the newest this many rotated files (0: none; the file is removed when it
    /// rotates).
    pub keep_files: Option<usize>,
    /// Remove rotated files whose last event is older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Whether anything is ever removed.
    pub fn removes(&self) -> bool {
        self.keep_files.is_some() || self.max_age.is_some()
    }
}

/// A rotated audit file, plain or gzip-compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Whether it is gzip (`.gz`).
    pub compressed: bool,
    /// Its modification time: no event in it is newer.
    pub modified: SystemTime,
}

/// The name the file `active` gets when it rotates at `now`.
pub(super) fn rotated_name(active: &Path, now: SystemTime) -> PathBuf {
    let stamp = humantime::format_rfc3339_micros(now)
        .to_string()
        .replace(':', "-");
    let mut name = active.as_os_str().to_owned();
    name.push(format!(".{stamp}"));
    let mut path = PathBuf::from(&name);
    // two rotations within a microsecond (a clock set back): never overwrite
    let mut n = 1;
    while path.exists() || gz(&path).exists() {
        let mut again = name.clone();
        again.push(format!("-{n}"));
        path = PathBuf::from(again);
        n += 1;
    }
    path
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn gz(path: &Path) -> PathBuf {
    with_suffix(path, ".gz")
}

/// The rotated files of `active`, newest first (by modification time, then name). A
/// file that is there both plain and compressed (its compression was finishing) is
/// listed once, compressed: the `.gz` is complete once it has its name.
pub fn rotated_files(active: &Path) -> io::Result<Vec<RotatedFile>> {
    let (Some(dir), Some(base)) = (active.parent(), active.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = std::collections::BTreeSet::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && !name.ends_with(".tmp") {
            names.insert(name);
        }
    }
    let mut files = Vec::new();
    for name in &names {
        let compressed = name.ends_with(".gz");
        if !compressed && names.contains(&format!("{name}.gz")) {
            continue;
        }
        let mut path = dir.join(name);
        let mut compressed = compressed;
        let mut meta = std::fs::metadata(&path);
        if !compressed
            && meta
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            // compressed since the listing, whose `.gz` was still a `.gz.tmp` then: the
            // events are in the `.gz` (a query that skipped it missed a file's worth of
            // the newest events, tests/audit.rs)
            path = gz(&path);
            compressed = true;
            meta = std::fs::metadata(&path);
        }
        let modified = match meta {
            Ok(meta) => meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            // removed by the retention since the listing
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        files.push(RotatedFile {
            path,
            compressed,
            modified,
        });
    }
    files.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.path.cmp(&a.path)));
    Ok(files)
}

/// The text of a rotated file, decompressed. A plain file compressed since it was listed
/// is read from its `.gz`.
pub fn read_rotated(file: &RotatedFile) -> io::Result<String> {
    let read_gz = |path: &Path| -> io::Result<String> {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(io::BufReader::new(File::open(path)?))
            .read_to_string(&mut text)?;
        Ok(text)
    };
    if file.compressed {
        return read_gz(&file.path);
    }
    match std::fs::read_to_string(&file.path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => read_gz(&gz(&file.path)),
        other => other,
    }
}

/// Compresses `plain` to `plain.gz`: written to `.gz.tmp`, synced, renamed, then the
/// plain file removed. The `.gz` keeps the plain file's modification time (the time of
/// its last event), which orders the files and ages them.
pub fn compress(plain: &Path) -> io::Result<PathBuf> {
    let target = gz(plain);
    let tmp = with_suffix(&target, ".tmp");
    let input = File::open(plain)?;
    let modified = input.metadata()?.modified()?;
    let result = (|| {
        let out = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        // the fastest level: audit lines are alike, so it still shrinks a file about 50
        // times (level 6: 58), at half the CPU of the default level, which a busy gateway
        // pays every few seconds (a 100 MiB file every 6 s at 38,000 requests per second)
        let mut encoder =
            flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::fast());
        io::copy(&mut io::BufReader::new(input), &mut encoder)?;
        let out = encoder
            .finish()?
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        out.set_modified(modified)?;
        out.sync_all()?;
        Ok::<(), io::Error>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &target)?;
    sync_dir(plain);
    std::fs::remove_file(plain)?;
    Ok(target)
}

fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
}

/// Removes the rotated files that `retention` does not keep; logs each.
pub(super) fn apply_retention(active: &Path, retention: Retention, now: SystemTime) {
    if !retention.removes() {
        return;
    }
    let files = match rotated_files(active) {
        Ok(files) => files,
        Err(e) => {
            log::warn!(
                "audit: cannot list the rotated files of {}: {e}",
                active.display()
            );
            return;
        }
    };
    for (index, file) in files.iter().enumerate() {
        let why = if retention.keep_files.is_some_and(|keep| index >= keep) {
            format!("audit.keep_files = {}", retention.keep_files.unwrap_or(0))
        } else if let Some(age) = retention
            .max_age
            .filter(|max| now.duration_since(file.modified).is_ok_and(|a| a > *max))
        {
            format!("audit.max_age = {}", humantime::format_duration(age))
        } else {
            continue;
        };
        match std::fs::remove_file(&file.path) {
            Ok(()) => log::info!("audit: removed {} ({why})", file.path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("audit: cannot remove {} ({why}): {e}", file.path.display()),
        }
    }
}

/// Work for the compression thread.
pub(super) enum Job {
    /// Compress this freshly rotated file, then apply the retention.
    Compress(PathBuf),
    /// Reply once everything sent before is done (tests, and a clean shutdown).
    Done(mpsc::Sender<()>),
}

/// How often the thread applies `max_age` when no file rotates.
const SWEEP: Duration = Duration::from_secs(600);

/// Starts the thread that compresses rotated files and removes what the retention does
/// not keep. It first finishes what an earlier run left (rotated files not yet
/// compressed, `.gz.tmp` leftovers). It ends when the sender is dropped, after its queue.
pub(super) fn start_compressor(active: PathBuf, retention: Retention) -> mpsc::Sender<Job> {
    let (jobs, receive) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("audit-compress".into())
        .spawn(move || {
            sweep(&active);
            apply_retention(&active, retention, SystemTime::now());
            loop {
                match receive.recv_timeout(SWEEP) {
                    Ok(Job::Compress(plain)) => {
                        if let Err(e) = compress(&plain) {
                            // kept plain: read as it is, compressed at the next start
                            log::warn!("audit: cannot compress {}: {e}", plain.display());
                        }
                        apply_retention(&active, retention, SystemTime::now());
                    }
                    Ok(Job::Done(reply)) => {
                        let _ = reply.send(());
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        apply_retention(&active, retention, SystemTime::now())
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("audit: no thread to compress rotated files: {e}");
    }
    jobs
}

/// Compresses the rotated files left plain, and removes `.gz.tmp` leftovers of a
/// compression that did not finish.
fn sweep(active: &Path) {
    let Some(dir) = active.parent() else { return };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let base = active.file_name().map(|b| b.to_string_lossy().into_owned());
    let Some(prefix) = base.map(|b| format!("{b}.")) else {
        return;
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(&prefix) {
                continue;
            }
            if name.ends_with(".gz.tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if !name.ends_with(".gz") && gz(&entry.path()).exists() {
                // renamed into place, not yet removed: the .gz holds it all
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let Ok(files) = rotated_files(active) else {
        return;
    };
    for file in files.iter().rev().filter(|f| !f.compressed) {
        if let Err(e) = compress(&file.path) {
            log::warn!("audit: cannot compress {}: {e}", file.path.display());
        }
    }
}
