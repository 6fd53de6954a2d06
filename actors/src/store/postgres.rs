//! Policies and memberships in PostgreSQL, in Casbin's usual `casbin_rule` table
//! (`ptype, v0..v5`), so that other Casbin tools can manage them too.
//!
//! `p` rows and role-inheritance `g` rows are the policy; `g, user, role, org` rows whose
//! domain is an org id are the memberships. Every change to the table bumps a revision
//! (a statement trigger), which each replica polls: a membership change or a policy edit
//! on one replica, or straight in the database, reaches every replica within the poll
//! interval.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{MemberStore, Membership, PolicyStore, StoreError};
use crate::postgres_tls::{self, PostgresTarget, PostgresTlsError};

const SCHEMA: &str = r#"
SELECT pg_advisory_xact_lock(7361544);
CREATE TABLE IF NOT EXISTS casbin_rule (
    id BIGSERIAL PRIMARY KEY,
    ptype VARCHAR NOT NULL,
    v0 VARCHAR NOT NULL DEFAULT '',
    v1 VARCHAR NOT NULL DEFAULT '',
    v2 VARCHAR NOT NULL DEFAULT '',
    v3 VARCHAR NOT NULL DEFAULT '',
    v4 VARCHAR NOT NULL DEFAULT '',
    v5 VARCHAR NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS kubegate_policy_revision (
    id INT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO kubegate_policy_revision VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION kubegate_policy_bump() RETURNS trigger AS $$
BEGIN
    UPDATE kubegate_policy_revision SET revision = revision + 1;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER kubegate_policy_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON casbin_rule
    FOR EACH STATEMENT EXECUTE FUNCTION kubegate_policy_bump();
"#;

/// A PostgreSQL connection, made again when it was lost. The policy store and the audit
/// sink (the Auditor's `PostgresAuditSink`) each keep one.
/// Its TLS follows the connection string's `sslmode` and `sslrootcert` (see
/// [`postgres_tls`]).
pub(crate) struct PostgresConnection {
    target: Result<PostgresTarget, String>,
    client: Mutex<Option<Arc<Client>>>,
}

impl PostgresConnection {
    /// A connection to `url`, made on first use. A connection string that cannot work
    /// (an unknown `sslmode`, an unreadable `sslrootcert`) is an error at every use.
    pub(crate) fn new(url: &str) -> Self {
        PostgresConnection {
            target: PostgresTarget::parse(url).map_err(|e| e.to_string()),
            client: Mutex::new(None),
        }
    }

    /// The connection, made again when it was lost.
    pub(crate) async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let target = self
            .target
            .as_ref()
            .map_err(|e| StoreError::Misconfigured(format!("PostgreSQL: {e}")))?;
        let client = connect(target).await?;
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// Connects to `target` and spawns the connection's task. A certificate the `sslmode`
/// refuses is [`StoreError::Misconfigured`]; anything else is
/// [`StoreError::Unavailable`] (retrying may work).
pub(crate) async fn connect(target: &PostgresTarget) -> Result<Arc<Client>, StoreError> {
    let (client, connection) = target.connect().await.map_err(|e| {
        let text = format!("PostgreSQL: {}", postgres_tls::describe(&e));
        if postgres_tls::is_tls_refusal(&e) {
            StoreError::Misconfigured(text)
        } else {
            StoreError::Unavailable(text)
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::warn!(
                "PostgreSQL connection closed: {}",
                postgres_tls::describe(&e)
            );
        }
    });
    Ok(Arc::new(client))
}

/// Checks that `url` can be used: its TLS options are read and a connection made.
/// Returns the `sslmode` it was made with (for `check-config` and start-up).
pub async fn check_connection(url: &str) -> Result<postgres_tls::SslMode, StoreError> {
    let target = PostgresTarget::parse(url)
        .map_err(|e: PostgresTlsError| StoreError::Misconfigured(format!("PostgreSQL: {e}")))?;
    connect(&target).await?;
    Ok(target.ssl_mode())
}

/// Policies and memberships in PostgreSQL.
pub struct PostgresPolicyStore {
    connection: PostgresConnection,
}

pub(crate) fn unavailable(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("PostgreSQL: {}", postgres_tls::describe(&e)))
}

fn is_membership_domain(domain: &str) -> bool {
    !domain.is_empty() && domain.bytes().all(|b| b.is_ascii_digit())
}

impl PostgresPolicyStore {
    /// Connects, creates the tables when missing, and, when the table holds no `p` row,
    /// imports the `p` lines of `seed` (the policy file) once.
    pub async fn connect(url: &str, seed: &str) -> Result<Arc<PostgresPolicyStore>, StoreError> {
        let store = Arc::new(PostgresPolicyStore {
            connection: PostgresConnection::new(url),
        });
        let client = store.connection.client().await?;
        client
            .batch_execute(&format!("BEGIN;{SCHEMA}COMMIT;"))
            .await
            .map_err(unavailable)?;
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM casbin_rule WHERE ptype LIKE 'p%'",
                &[],
            )
            .await
            .map_err(unavailable)?
            .get(0);
        if rows == 0 {
            for line in seed
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let mut fields: Vec<String> =
                    line.split(',').map(|f| f.trim().to_string()).collect();
                fields.resize(7, String::new());
                client
                    .execute(
                        "INSERT INTO casbin_rule (ptype, v0, v1, v2, v3, v4, v5) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[&fields[0], &fields[1], &fields[2], &fields[3], &fields[4], &fields[5], &fields[6]],
                    )
                    .await
                    .map_err(unavailable)?;
            }
            log::info!("imported the default policy into PostgreSQL");
        }
        Ok(store)
    }

    /// The `sslmode` of its connection string (`prefer` when it names none).
    pub fn ssl_mode(&self) -> postgres_tls::SslMode {
        match &self.connection.target {
            Ok(target) => target.ssl_mode(),
            Err(_) => postgres_tls::SslMode::Prefer,
        }
    }

    async fn rows(&self) -> Result<Vec<Vec<String>>, StoreError> {
        let client = self.connection.client().await?;
        let rows = client
            .query(
                "SELECT ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rule ORDER BY id",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut fields: Vec<String> = (0..7).map(|i| row.get::<_, String>(i)).collect();
                while fields.last().is_some_and(|f| f.is_empty()) {
                    fields.pop();
                }
                fields
            })
            .collect())
    }
}

#[async_trait]
impl PolicyStore for PostgresPolicyStore {
    async fn policy_text(&self) -> Result<String, StoreError> {
        Ok(self
            .rows()
            .await?
            .into_iter()
            // memberships are read through the MemberStore side
            .filter(|f| !(f[0] == "g" && f.get(3).is_some_and(|d| is_membership_domain(d))))
            .map(|f| f.join(", ") + "\n")
            .collect())
    }

    fn describe(&self) -> String {
        "PostgreSQL table casbin_rule".into()
    }

    async fn announce_reload(&self) -> Result<(), StoreError> {
        let client = self.connection.client().await?;
        client
            .execute(
                "UPDATE kubegate_policy_revision SET revision = revision + 1",
                &[],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl MemberStore for PostgresPolicyStore {
    async fn all(&self) -> Result<Vec<Membership>, StoreError> {
        Ok(self
            .rows()
            .await?
            .into_iter()
            .filter(|f| f[0] == "g" && f.len() == 4 && is_membership_domain(&f[3]))
            .filter_map(|f| {
                Some(Membership {
                    org: f[3].parse().ok()?,
                    user: f[1].clone(),
                    role: f[2].clone(),
                })
            })
            .collect())
    }

    async fn set(&self, org: u64, user: &str, role: &str) -> Result<(), StoreError> {
        let client = self.connection.client().await?;
        let org = org.to_string();
        // one statement: replicas never see the user without a role in between
        client
            .execute(
                "WITH gone AS (DELETE FROM casbin_rule WHERE ptype = 'g' AND v0 = $1 AND v2 = $3) \
                 INSERT INTO casbin_rule (ptype, v0, v1, v2) VALUES ('g', $1, $2, $3)",
                &[&user, &role, &org],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remove(&self, org: u64, user: &str) -> Result<bool, StoreError> {
        let client = self.connection.client().await?;
        let org = org.to_string();
        let removed = client
            .execute(
                "DELETE FROM casbin_rule WHERE ptype = 'g' AND v0 = $1 AND v2 = $2",
                &[&user, &org],
            )
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn revision(&self) -> Result<String, StoreError> {
        let client = self.connection.client().await?;
        let revision: i64 = client
            .query_one("SELECT revision FROM kubegate_policy_revision", &[])
            .await
            .map_err(unavailable)?
            .get(0);
        Ok(revision.to_string())
    }
}
