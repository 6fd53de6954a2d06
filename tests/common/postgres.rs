//! A private PostgreSQL database per test, on the machine's server (127.0.0.1:5432,
//! trust auth), dropped at the end.

use super::gateway::block_on;

/// A database that exists for one test.
pub struct TestDatabase {
    /// `host=127.0.0.1 user=postgres dbname=...`
    pub url: String,
    name: String,
}

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

async fn admin(sql: String) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(ADMIN, tokio_postgres::NoTls).await?;
    actix_rt::spawn(connection);
    client.batch_execute(&sql).await
}

impl TestDatabase {
    /// Creates a fresh database; fails with a clear message when PostgreSQL is not there.
    pub fn create() -> TestDatabase {
        let name = format!("kubegate_test_{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE {name}");
        block_on(move || admin(sql)).unwrap_or_else(|e| {
            panic!("this test needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres): {e}")
        });
        TestDatabase {
            url: format!("host=127.0.0.1 port=5432 user=postgres dbname={name}"),
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
