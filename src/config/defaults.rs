//! The named defaults of the keys that may be left out of a configuration file; each
//! is the value `config/default.toml` documents.

use std::path::PathBuf;
use std::time::Duration;

use super::{AuditSinkKind, PolicyStorage, TokenStoreKind, VaultAuthKind};

pub(super) fn http2() -> bool {
    true
}
pub(super) fn tls_reload_interval() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn max_header_bytes() -> usize {
    16 << 10
}
pub(super) fn keep_alive() -> Duration {
    Duration::from_secs(75)
}
pub(super) fn client_request_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn rate_limited_paths() -> Vec<String> {
    vec!["/auth/".into(), "/pipeline/api/v1/token".into()]
}
pub(super) fn rate_limit_per_minute() -> u32 {
    30
}
pub(super) fn rate_limit_burst() -> u32 {
    10
}
pub(super) fn vault_mount() -> String {
    "secret".into()
}
pub(super) fn vault_prefix() -> String {
    "kubegate".into()
}
pub(super) fn vault_auth() -> VaultAuthKind {
    VaultAuthKind::Token
}
pub(super) fn approle_mount() -> String {
    "approle".into()
}
pub(super) fn kubernetes_mount() -> String {
    "kubernetes".into()
}
pub(super) fn jwt_file() -> PathBuf {
    "/var/run/secrets/kubernetes.io/serviceaccount/token".into()
}
pub(super) fn vault_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn token_store() -> TokenStoreKind {
    TokenStoreKind::File
}
pub(super) fn revocation_poll() -> Duration {
    Duration::from_secs(2)
}
pub(super) fn audit_sinks() -> Vec<AuditSinkKind> {
    vec![AuditSinkKind::File]
}
pub(super) fn max_file_bytes() -> u64 {
    100 << 20
}
pub(super) fn keep_files() -> usize {
    5
}
pub(super) fn max_queue() -> usize {
    100_000
}
pub(super) fn spill_dir() -> PathBuf {
    "data/audit-spill".into()
}

pub(super) fn denials_per_client() -> u64 {
    20
}
pub(super) fn denial_window() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn max_body_bytes() -> usize {
    64 << 10
}

pub(super) fn policy_storage() -> PolicyStorage {
    PolicyStorage::File
}
