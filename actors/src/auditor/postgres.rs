//! The audit trail in PostgreSQL: [`PostgresAuditSink`] writes it, [`query_audit`] reads
//! it back for the audit query API.

use tokio_postgres::Client;

use super::{AuditEvent, AuditSink};
use crate::postgres_tls::{describe, PostgresTarget};
use crate::store::postgres::{connect, unavailable, PostgresConnection};
use crate::store::StoreError;

const AUDIT_SCHEMA: &str = r#"
SELECT pg_advisory_xact_lock(7361545);
CREATE TABLE IF NOT EXISTS kubegate_audit (
    id BIGSERIAL PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL,
    request_id TEXT NOT NULL,
    "user" TEXT NOT NULL,
    org BIGINT,
    cluster BIGINT,
    verb TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INT NOT NULL,
    decision TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kubegate_audit_time ON kubegate_audit (time);
CREATE INDEX IF NOT EXISTS kubegate_audit_org ON kubegate_audit (org, id);
CREATE INDEX IF NOT EXISTS kubegate_audit_user ON kubegate_audit ("user", id);
CREATE INDEX IF NOT EXISTS kubegate_audit_cluster ON kubegate_audit (org, cluster, id);
"#;

/// Why a batch did not reach PostgreSQL.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] StoreError),
    /// A statement failed.
    #[error("{}", describe(.0))]
    Statement(#[from] tokio_postgres::Error),
}

type AuditJob = (
    Vec<AuditEvent>,
    std::sync::mpsc::Sender<Result<(), WriteError>>,
);

/// The audit trail in PostgreSQL: one row per event (the whole event as JSON, and the
/// columns the query API filters on, indexed), inserted in batches. The Auditor's
/// sinks are synchronous; this one hands each batch to a thread of its own that talks to
/// PostgreSQL, and waits for it at most `timeout`.
pub struct PostgresAuditSink {
    jobs: std::sync::mpsc::Sender<AuditJob>,
    timeout: std::time::Duration,
}

impl PostgresAuditSink {
    /// Starts the sink's thread. The table is created on the first batch.
    pub fn start(url: &str, timeout: std::time::Duration) -> PostgresAuditSink {
        let (jobs, receive) = std::sync::mpsc::channel::<AuditJob>();
        let url = url.to_string();
        std::thread::Builder::new()
            .name("audit-postgres".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        log::error!("the PostgreSQL audit sink cannot start: {e}");
                        return;
                    }
                };
                let connection = PostgresConnection::new(&url);
                let mut ready = false;
                while let Ok((events, reply)) = receive.recv() {
                    let result = runtime.block_on(async {
                        let client = connection.client().await?;
                        if !ready {
                            client
                                .batch_execute(&format!("BEGIN;{AUDIT_SCHEMA}COMMIT;"))
                                .await?;
                            ready = true;
                        }
                        let inserted = insert(&client, &events).await;
                        if inserted.is_err() {
                            // the table may be gone with the database: make it again next time
                            ready = false;
                        }
                        Ok(inserted?)
                    });
                    let _ = reply.send(result);
                }
            })
            .expect("a thread for the audit sink");
        PostgresAuditSink { jobs, timeout }
    }
}

/// Inserts a batch in one transaction, up to 256 rows per statement.
async fn insert(client: &Client, events: &[AuditEvent]) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::types::ToSql;
    const COLUMNS: usize = 13;
    client.batch_execute("BEGIN").await?;
    for chunk in events.chunks(256) {
        let rows: Vec<[Box<dyn ToSql + Sync + Send>; COLUMNS]> = chunk
            .iter()
            .map(|e| {
                let time = humantime::parse_rfc3339_weak(&e.time)
                    .unwrap_or_else(|_| std::time::SystemTime::now());
                let decision = serde_json::to_value(e.decision)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                [
                    Box::new(time) as Box<dyn ToSql + Sync + Send>,
                    Box::new(e.request_id.clone()),
                    Box::new(e.user.clone()),
                    Box::new(e.org.map(|o| o as i64)),
                    Box::new(e.cluster.map(|c| c as i64)),
                    Box::new(e.attributes.verb.clone()),
                    Box::new(e.attributes.resource.clone()),
                    Box::new(e.attributes.namespace.clone()),
                    Box::new(e.method.clone()),
                    Box::new(e.path.clone()),
                    Box::new(i32::from(e.status)),
                    Box::new(decision),
                    Box::new(serde_json::to_string(e).unwrap_or_default()),
                ]
            })
            .collect();
        let values: Vec<String> = (0..rows.len())
            .map(|r| {
                let cells: Vec<String> = (1..=COLUMNS)
                    .map(|c| format!("${}", r * COLUMNS + c))
                    .collect();
                format!("({})", cells.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO kubegate_audit (time, request_id, \"user\", org, cluster, verb, resource, namespace, method, path, status, decision, event) VALUES {}",
            values.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = rows
            .iter()
            .flat_map(|row| row.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)))
            .collect();
        if let Err(err) = client.execute(sql.as_str(), &params).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(err);
        }
    }
    client.batch_execute("COMMIT").await
}

impl AuditSink for PostgresAuditSink {
    fn name(&self) -> &str {
        "postgres"
    }

    fn write_batch(&mut self, events: &[AuditEvent]) -> std::io::Result<()> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.jobs
            .send((events.to_vec(), reply))
            .map_err(|_| std::io::Error::other("the PostgreSQL audit sink has stopped"))?;
        match answer.recv_timeout(self.timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(format!("PostgreSQL: {e}"))),
            Err(_) => Err(std::io::Error::other("PostgreSQL did not answer in time")),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        // every batch is committed before write_batch returns
        Ok(())
    }
}

/// Filters of the audit query API.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    /// The org (always set).
    pub org: u64,
    /// Events at or after (RFC 3339).
    pub since: Option<std::time::SystemTime>,
    /// Events before.
    pub until: Option<std::time::SystemTime>,
    /// The user.
    pub user: Option<String>,
    /// The cluster.
    pub cluster: Option<u64>,
    /// The verb.
    pub verb: Option<String>,
    /// The resource.
    pub resource: Option<String>,
    /// The HTTP status.
    pub status: Option<u16>,
    /// allow, deny or error.
    pub decision: Option<String>,
    /// The cursor: the id of the last event the previous page returned. The next page
    /// holds the events after it in the order of the answer (older, or as old with a
    /// lower id), so events written meanwhile shift nothing: none comes twice.
    pub before: Option<i64>,
    /// Page size.
    pub limit: usize,
}

/// A parameter of a query.
type Param = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// `select` with the `WHERE` clause of the query's filters (but the cursor), and its
/// parameters.
fn filtered(select: &str, q: &AuditQuery) -> (String, Vec<Param>) {
    let mut sql = format!("{select} WHERE org = $1");
    let mut params: Vec<Param> = vec![Box::new(q.org as i64)];
    let mut add = |clause: &str, value: Param| {
        params.push(value);
        sql.push_str(&format!(" AND {clause} ${}", params.len()));
    };
    if let Some(t) = q.since {
        add("time >=", Box::new(t));
    }
    if let Some(t) = q.until {
        add("time <", Box::new(t));
    }
    if let Some(user) = &q.user {
        add("\"user\" =", Box::new(user.clone()));
    }
    if let Some(cluster) = q.cluster {
        add("cluster =", Box::new(cluster as i64));
    }
    if let Some(verb) = &q.verb {
        add("verb =", Box::new(verb.clone()));
    }
    if let Some(resource) = &q.resource {
        add("resource =", Box::new(resource.clone()));
    }
    if let Some(status) = q.status {
        add("status =", Box::new(i32::from(status)));
    }
    if let Some(decision) = &q.decision {
        add("decision =", Box::new(decision.clone()));
    }
    (sql, params)
}

/// Runs `sql` with `params` on the audit table's database; no rows when no event was
/// ever written (the table does not exist yet).
async fn audit_rows(
    url: &str,
    sql: &str,
    params: &[Param],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let target = PostgresTarget::parse(url)
        .map_err(|e| StoreError::Misconfigured(format!("PostgreSQL: {e}")))?;
    let client = connect(&target).await?;
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    match client.query(sql, &refs).await {
        Ok(rows) => Ok(rows),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            Ok(Vec::new())
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// The matching events per minute and decision (the query's filters; its cursor and
/// limit are not used): `(minute, decision, count)`, a summary of repeated 401s counting
/// as the requests it stands for. Grouped by PostgreSQL (`date_trunc('minute', time)`),
/// so no event leaves the database.
pub async fn audit_histogram(
    url: &str,
    q: &AuditQuery,
) -> Result<Vec<(std::time::SystemTime, String, u64)>, StoreError> {
    let (mut sql, params) = filtered(
        "SELECT date_trunc('minute', time) AS minute, decision, \
         sum(COALESCE((event::jsonb->>'aggregated')::bigint, 1))::bigint FROM kubegate_audit",
        q,
    );
    sql.push_str(" GROUP BY 1, 2 ORDER BY 1");
    Ok(audit_rows(url, &sql, &params)
        .await?
        .iter()
        .map(|row| {
            let minute: std::time::SystemTime = row.get(0);
            let count: i64 = row.get(2);
            (minute, row.get::<_, String>(1), count.max(0) as u64)
        })
        .collect())
}

/// Reads events from the PostgreSQL audit table, newest first (by time, then id). Returns
/// the events (as stored JSON) and the cursor of the next page, if any: the id of the
/// page's last event (keyset pagination, not an offset).
pub async fn query_audit(
    url: &str,
    q: &AuditQuery,
) -> Result<(Vec<serde_json::Value>, Option<i64>), StoreError> {
    let (mut sql, mut params) = filtered("SELECT id, event FROM kubegate_audit", q);
    // newest first; the cursor is the last event of the previous page: this page starts
    // after it in the same order, whatever was written since (an offset would shift by
    // the events written meanwhile, and show some twice)
    if let Some(last) = q.before {
        params.push(Box::new(last));
        sql.push_str(&format!(
            " AND (time, id) < (SELECT time, id FROM kubegate_audit WHERE id = ${})",
            params.len()
        ));
    }
    sql.push_str(&format!(
        " ORDER BY time DESC, id DESC LIMIT {}",
        q.limit + 1
    ));
    let rows = audit_rows(url, &sql, &params).await?;
    let more = rows.len() > q.limit;
    let page = &rows[..rows.len().min(q.limit)];
    let events = page
        .iter()
        .map(|row| {
            serde_json::from_str(&row.get::<_, String>(1)).unwrap_or(serde_json::Value::Null)
        })
        .collect();
    let next = if more {
        page.last().map(|row| row.get::<_, i64>(0))
    } else {
        None
    };
    Ok((events, next))
}
