//! A private PostgreSQL database per test, on the shared server (`KUBEGATE_TEST_POSTGRES`,
//! default 127.0.0.1:5432, trust auth; see [`super::addresses`]), dropped at the end.

use super::addresses::{postgres_admin, postgres_database};
use super::gateway::block_on;

/// A database that exists for one test.
pub struct TestDatabase {
    /// The admin connection string with `dbname=...` (last) naming this database
    pub url: String,
    name: String,
}

async fn admin(sql: String) -> Result<(), tokio_postgres::Error> {
    let (client, connection) =
        tokio_postgres::connect(&postgres_admin(), tokio_postgres::NoTls).await?;
    actix_rt::spawn(connection);
    client.batch_execute(&sql).await
}

impl TestDatabase {
    /// Creates a fresh database; fails with a clear message when PostgreSQL is not there.
    pub fn create() -> TestDatabase {
        let name = format!("kubegate_test_{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE {name}");
        block_on(move || admin(sql)).unwrap_or_else(|e| {
            panic!(
                "this test needs PostgreSQL at `{}` (KUBEGATE_TEST_POSTGRES; trust auth, user \
                 postgres; scripts/test starts one): {e}",
                postgres_admin()
            )
        });
        TestDatabase {
            url: postgres_database(&name),
            name,
        }
    }

    /// Runs SQL in the database.
    pub fn execute(&self, sql: &str) {
        let (url, sql) = (self.url.clone(), sql.to_string());
        block_on(move || async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            actix_rt::spawn(connection);
            client.batch_execute(&sql).await.unwrap();
        });
    }
}

impl TestDatabase {
    /// Runs SQL in the `test` database (to drop or create this one).
    pub fn admin(&self, sql: &str) {
        let sql = sql.to_string();
        block_on(move || admin(sql)).unwrap();
    }

    /// The first column of the first row of a query, as text ("" for NULL).
    pub fn dump(&self, sql: &str) -> String {
        let (url, sql) = (self.url.clone(), sql.to_string());
        block_on(move || async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            actix_rt::spawn(connection);
            let row = client.query_one(&sql, &[]).await.unwrap();
            row.get::<_, Option<String>>(0).unwrap_or_default()
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = block_on(move || admin(sql));
    }
}
