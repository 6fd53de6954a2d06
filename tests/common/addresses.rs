//! Where the tests find the PostgreSQL and Redis servers they share, read from the
//! environment in this one place (`scripts/test` sets both when it starts its own).
//!
//! - `KUBEGATE_TEST_POSTGRES`: a libpq `key=value` connection string for the admin
//!   connection, as the user `postgres` with trust authentication, to a database that
//!   exists (each test creates and drops a database of its own from it). Default:
//!   [`DEFAULT_POSTGRES`].
//! - `KUBEGATE_TEST_REDIS`: a Redis URL. Default: [`DEFAULT_REDIS`].
//!
//! `bench/audit.rs` includes this file too.

/// The admin connection when `KUBEGATE_TEST_POSTGRES` is not set.
pub const DEFAULT_POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// The Redis URL when `KUBEGATE_TEST_REDIS` is not set.
pub const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

/// The admin connection string (`KUBEGATE_TEST_POSTGRES`).
pub fn postgres_admin() -> String {
    std::env::var("KUBEGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into())
}

/// The connection string of the database `name` on the same server as the admin
/// connection: its `dbname` replaced, and put last.
pub fn postgres_database(name: &str) -> String {
    let admin = postgres_admin();
    let mut keys: Vec<String> = admin
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .map(String::from)
        .collect();
    keys.push(format!("dbname={name}"));
    keys.join(" ")
}

/// The Redis URL (`KUBEGATE_TEST_REDIS`).
pub fn redis_url() -> String {
    std::env::var("KUBEGATE_TEST_REDIS").unwrap_or_else(|_| DEFAULT_REDIS.into())
}
