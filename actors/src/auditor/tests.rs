//! The Auditor's tests: batching, rotation, a sink that is down (spill, restart, loss).

use super::*;
use std::io;

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
        acting_as: None,
        recording: None,
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
        auditor.send(RecordBatch(vec![event(i)])).await.unwrap();
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

/// Every request id in the file and its rotated files (plain or gzip), in no order.
fn every_id(path: &std::path::Path) -> Vec<String> {
    let mut texts = vec![std::fs::read_to_string(path).unwrap_or_default()];
    for file in rotation::rotated_files(path).unwrap() {
        texts.push(rotation::read_rotated(&file).unwrap());
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Rotations under load: 3,000 events in batches, a rotation every ~2 KB, written from
/// the Auditor's thread while the compression thread works behind it; by default every
/// rotated file is kept and compressed, and every event is there exactly once.
#[actix_rt::test]
async fn the_file_rotates_by_size_and_keeps_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut sink = JsonLinesFile::new(&path).with_rotation(20_000, Retention::default());
    for batch in 0..100 {
        let events: Vec<AuditEvent> = (0..30).map(|i| event(batch * 30 + i)).collect();
        sink.write_batch(&events).unwrap();
    }
    sink.wait_for_compression();
    let rotated = rotation::rotated_files(&path).unwrap();
    assert!(rotated.len() >= 20, "{} rotations", rotated.len());
    assert!(
        rotated.iter().all(|f| f.compressed),
        "every rotated file is compressed: {rotated:?}"
    );
    for file in &rotated {
        let name = file
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("audit.jsonl.20") && name.ends_with("Z.gz"),
            "{name}"
        );
    }
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || (n != "audit.jsonl" && !n.ends_with(".gz")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let active = std::fs::metadata(&path).unwrap().len();
    assert!(active > 0 && active <= 20_000, "{active}");
    let mut ids = every_id(&path);
    ids.sort();
    let mut want: Vec<String> = (0..3000).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "every event once, across all the rotations");
}

/// `keep_files` keeps the newest N rotated files and `max_age` removes the old ones;
/// `keep_files = 0` keeps no history at all.
#[actix_rt::test]
async fn rotated_files_are_removed_only_as_the_retention_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let keep = Retention {
        keep_files: Some(2),
        max_age: None,
    };
    let mut sink = JsonLinesFile::new(&path).with_rotation(2_000, keep);
    for i in 0..60 {
        sink.write_batch(&[event(i)]).unwrap();
    }
    sink.wait_for_compression();
    let rotated = rotation::rotated_files(&path).unwrap();
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    let ids = every_id(&path);
    assert!(
        ids.contains(&"r59".to_string()),
        "the newest are kept: {ids:?}"
    );
    assert!(!ids.contains(&"r0".to_string()), "the oldest are gone");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut sink = JsonLinesFile::new(&path).with_rotation(2_000, Retention::default());
    for i in 0..20 {
        sink.write_batch(&[event(i)]).unwrap();
    }
    sink.wait_for_compression();
    let before = rotation::rotated_files(&path).unwrap();
    assert!(before.len() >= 3);
    // the oldest file's last event was written an hour ago
    let old = std::fs::File::options()
        .write(true)
        .open(&before.last().unwrap().path)
        .unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(sink);
    let age = Retention {
        keep_files: None,
        max_age: Some(Duration::from_secs(600)),
    };
    let sink = JsonLinesFile::new(&path).with_rotation(2_000, age);
    sink.wait_for_compression();
    let after = rotation::rotated_files(&path).unwrap();
    assert_eq!(
        after.len(),
        before.len() - 1,
        "only the old file is removed"
    );
    assert!(!before.last().unwrap().path.exists());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let none = Retention {
        keep_files: Some(0),
        max_age: None,
    };
    let mut sink = JsonLinesFile::new(&path).with_rotation(2_000, none);
    for i in 0..20 {
        sink.write_batch(&[event(i)]).unwrap();
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A crash in the middle of a compression loses nothing: a plain rotated file is
/// compressed at the next start, a half-written `.gz.tmp` removed, and a plain file left
/// beside its finished `.gz` removed (the `.gz` holds it all).
#[actix_rt::test]
async fn a_compression_cut_short_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let lines = |ids: std::ops::Range<usize>| {
        let events: Vec<AuditEvent> = ids.map(event).collect();
        sinks::json_lines(&events).unwrap()
    };
    // a rotated file whose compression never started, with a half-written .gz.tmp
    let plain = dir.path().join("audit.jsonl.2026-01-01T00-00-00.000000Z");
    std::fs::write(&plain, lines(0..10)).unwrap();
    std::fs::write(
        dir.path()
            .join("audit.jsonl.2026-01-01T00-00-00.000000Z.gz.tmp"),
        b"\x1f\x8b",
    )
    .unwrap();
    // one compressed and renamed, whose plain file was not yet removed
    let done = dir.path().join("audit.jsonl.2026-01-02T00-00-00.000000Z");
    std::fs::write(&done, lines(10..20)).unwrap();
    rotation::compress(&done).unwrap();
    std::fs::write(&done, lines(10..20)).unwrap();
    // legacy names are read too
    std::fs::write(dir.path().join("audit.jsonl.1"), lines(20..25)).unwrap();

    let sink = JsonLinesFile::new(&path).with_rotation(2_000, Retention::default());
    sink.wait_for_compression();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "audit.jsonl.1.gz",
            "audit.jsonl.2026-01-01T00-00-00.000000Z.gz",
            "audit.jsonl.2026-01-02T00-00-00.000000Z.gz"
        ]
    );
    let mut ids = every_id(&path);
    ids.sort();
    let mut want: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
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
        addr.send(RecordBatch(vec![event(i)])).await.unwrap();
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
        addr.send(RecordBatch(vec![event(i)])).await.unwrap();
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

fn lines_of(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[actix_rt::test]
async fn the_journal_writes_before_it_returns_and_keeps_what_the_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    // the file's directory is a file for now: every write fails
    let blocker = dir.path().join("audit");
    std::fs::write(&blocker, "").unwrap();
    let path = blocker.join("audit.jsonl");
    let auditor = Auditor::with_sinks(Vec::new(), 1000, Duration::from_secs(3600));
    let journal = Arc::new(Journal::new(JsonLinesFile::new(&path), auditor.counters()));
    let auditor = auditor.with_journal(journal.clone());
    let counters = auditor.counters();
    let addr = auditor.start();

    assert!(
        journal.record(&event(0)).is_err(),
        "the file cannot be written"
    );
    assert!(
        counters.losing.load(Ordering::SeqCst),
        "requests are refused"
    );
    std::fs::remove_file(&blocker).unwrap();
    assert!(
        journal.record(&event(1)).is_err(),
        "refused while earlier events wait, so that the file keeps their order"
    );
    addr.send(Flush).await.unwrap().unwrap();
    assert!(!journal.failing(), "the backlog is written");
    assert!(!counters.losing.load(Ordering::SeqCst), "no longer losing");

    assert_eq!(journal.record(&event(2)).unwrap(), Recorded::Written);
    // in the file at once: no flush, no message to the auditor
    let ids: Vec<String> = lines_of(&path)
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["r0", "r1", "r2"]);
    assert_eq!(counters.written.load(Ordering::SeqCst), 3);
}

#[actix_rt::test]
async fn the_journal_counts_a_401_flood_and_the_auditor_writes_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let auditor = Auditor::with_sinks(Vec::new(), 1000, Duration::from_secs(3600));
    let journal = Arc::new(
        Journal::new(JsonLinesFile::new(&path), auditor.counters())
            .with_denial_limit(2, Duration::from_secs(60)),
    );
    let addr = auditor.with_journal(journal.clone()).start();
    let recorded: Vec<Recorded> = (0..5)
        .map(|i| {
            let mut e = event(i);
            e.status = 401;
            journal.record(&e).unwrap()
        })
        .collect();
    assert_eq!(
        recorded,
        [
            Recorded::Written,
            Recorded::Written,
            Recorded::Aggregated,
            Recorded::Aggregated,
            Recorded::Aggregated
        ]
    );
    assert_eq!(lines_of(&path).len(), 2);
    addr.send(Flush).await.unwrap().unwrap();
    let lines = lines_of(&path);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["aggregated"], 3);
}

#[actix_rt::test]
async fn with_a_journal_worker_batches_go_to_the_other_sinks_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let other = dir.path().join("other.jsonl");
    let auditor = Auditor::with_sinks(
        vec![Box::new(JsonLinesFile::new(&other))],
        1000,
        Duration::from_secs(3600),
    );
    let journal = Arc::new(Journal::new(JsonLinesFile::new(&path), auditor.counters()));
    let addr = auditor.with_journal(journal.clone()).start();
    journal.record(&event(0)).unwrap();
    addr.send(RecordBatch(vec![event(0)])).await.unwrap();
    addr.send(Flush).await.unwrap().unwrap();
    assert_eq!(lines_of(&path).len(), 1, "written once, by the worker");
    assert_eq!(lines_of(&other).len(), 1);
}
