//! Audit throughput: events per second each sink takes, and through the Auditor actor.
//!
//! Run with `cargo bench --bench audit`. The PostgreSQL row needs `psql` and the tests'
//! server (`KUBEGATE_TEST_POSTGRES`, default 127.0.0.1:5432, trust auth); it is skipped,
//! saying so, when there is none.

use std::time::{Duration, Instant};

/// The tests' PostgreSQL address, read where the tests read it.
#[allow(dead_code)]
#[path = "../tests/common/addresses.rs"]
mod addresses;

use actix::Actor;
use kubegate_actors::attributes::RequestAttributes;
use kubegate_actors::auditor::PostgresAuditSink;
use kubegate_actors::auditor::{
    AuditDecision, AuditEvent, AuditSink, Auditor, Flush, JsonLinesFile, RecordBatch, Retention,
};

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        time: "2026-11-28T12:00:00.000Z".into(),
        request_id: format!("{i:032x}"),
        user: "alice".into(),
        org: Some(1),
        cluster: Some(1),
        attributes: RequestAttributes::derive("GET", "/api/v1/namespaces/default/pods", "", false),
        method: "GET".into(),
        path: "/api/v1/namespaces/default/pods".into(),
        query: "limit=500".into(),
        client: "127.0.0.1".into(),
        user_agent: "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07".into(),
        status: 200,
        duration_ms: 1.25,
        bytes_in: 0,
        bytes_out: 1024,
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

fn sink_rate(sink: &mut dyn AuditSink, total: usize, batch: usize) -> f64 {
    let events: Vec<AuditEvent> = (0..batch).map(event).collect();
    let started = Instant::now();
    for _ in 0..total / batch {
        sink.write_batch(&events).expect("the sink writes");
    }
    sink.sync().unwrap();
    total as f64 / started.elapsed().as_secs_f64()
}

fn postgres_url() -> Option<String> {
    let name = format!("kubegate_bench_{}", std::process::id());
    let created = std::process::Command::new("psql")
        .args([
            "-d",
            &addresses::postgres_admin(),
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    created.then(|| addresses::postgres_database(&name))
}

fn drop_database(url: &str) {
    let name = url.rsplit('=').next().unwrap_or_default();
    let _ = std::process::Command::new("psql")
        .args([
            "-d",
            &addresses::postgres_admin(),
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{:<44} {:>14} {:>12}",
        "audit sink (batches of 512)", "events/s", "us/event"
    );
    let mut file = JsonLinesFile::new(dir.path().join("audit.jsonl")).with_rotation(
        64 << 20,
        Retention {
            keep_files: Some(2),
            max_age: None,
        },
    );
    let rate = sink_rate(&mut file, 200_000, 512);
    println!(
        "{:<44} {:>14.0} {:>12.2}",
        "file (JSON lines, rotated at 64 MiB)",
        rate,
        1e6 / rate
    );
    match postgres_url() {
        Some(url) => {
            let mut pg = PostgresAuditSink::start(&url, Duration::from_secs(30));
            let rate = sink_rate(&mut pg, 20_480, 512);
            println!(
                "{:<44} {:>14.0} {:>12.2}",
                "postgres (one transaction per batch)",
                rate,
                1e6 / rate
            );
            drop(pg);
            drop_database(&url);
        }
        None => println!(
            "{:<44} {:>14}",
            "postgres",
            format!("skipped: no server at `{}`", addresses::postgres_admin())
        ),
    }

    // through the actor: events handed over in batches of 32, as workers do
    let path = dir.path().join("actor.jsonl");
    let rate = actix_rt::System::new().block_on(async move {
        let auditor = Auditor::with_sinks(
            vec![Box::new(JsonLinesFile::new(&path))],
            512,
            Duration::from_millis(200),
        )
        .start();
        let total = 200_000;
        let started = Instant::now();
        for chunk in 0..total / 32 {
            let events = (chunk * 32..chunk * 32 + 32).map(event).collect();
            auditor.send(RecordBatch(events)).await.unwrap();
        }
        auditor.send(Flush).await.unwrap().unwrap();
        total as f64 / started.elapsed().as_secs_f64()
    });
    println!(
        "{:<44} {:>14.0} {:>12.2}",
        "Auditor actor -> file (batches of 32 in)",
        rate,
        1e6 / rate
    );
}
