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
