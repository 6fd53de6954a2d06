//! Session recordings in PostgreSQL, for when the audit trail is there too
//! (`audit.sinks` with `postgres`): every replica then serves every recording, whichever
//! replica carried the session. Table `kubegate_recordings (org, id, cast, created_at)`,
//! created when missing.

use std::time::Duration;

use super::postgres::PostgresConnection;
use super::StoreError;

const SCHEMA: &str = r#"
SELECT pg_advisory_xact_lock(7361545);
CREATE TABLE IF NOT EXISTS kubegate_recordings (
    org BIGINT NOT NULL,
    id TEXT NOT NULL,
    "cast" BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org, id)
);
"#;

/// Recordings kept in PostgreSQL.
pub struct PostgresRecordings {
    connection: PostgresConnection,
    ready: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for PostgresRecordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresRecordings").finish_non_exhaustive()
    }
}

impl PostgresRecordings {
    /// Recordings in the database at `url` (connected on first use).
    pub fn new(url: &str) -> PostgresRecordings {
        PostgresRecordings {
            connection: PostgresConnection::new(url),
            ready: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<std::sync::Arc<tokio_postgres::Client>, StoreError> {
        let client = self.connection.client().await?;
        self.ready
            .get_or_try_init(|| async {
                let c = self.connection.client().await?;
                c.batch_execute(&format!("BEGIN;{SCHEMA}COMMIT;"))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("recordings table: {e}")))
            })
            .await?;
        Ok(client)
    }

    /// Keeps the recording `id` of `org` (a second save of the same id is refused).
    pub async fn save(&self, org: u64, id: &str, cast: &[u8]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                r#"INSERT INTO kubegate_recordings (org, id, "cast") VALUES ($1, $2, $3)"#,
                &[&(org as i64), &id, &cast],
            )
            .await
            .map_err(|e| StoreError::Unavailable(format!("recording {id} not saved: {e}")))?;
        Ok(())
    }

    /// The recording `id` of `org`, if there is one.
    pub async fn load(&self, org: u64, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                r#"SELECT "cast" FROM kubegate_recordings WHERE org = $1 AND id = $2"#,
                &[&(org as i64), &id],
            )
            .await
            .map_err(|e| StoreError::Unavailable(format!("recording {id} not read: {e}")))?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    /// Removes recordings older than `older_than`; returns how many went.
    pub async fn sweep(&self, older_than: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM kubegate_recordings WHERE created_at < now() - make_interval(secs => $1)",
                &[&older_than.as_secs_f64()],
            )
            .await
            .map_err(|e| StoreError::Unavailable(format!("recordings not swept: {e}")))
    }
}
