//! The defaults of the keys that may be left out of a configuration file: each is the
//! value `config/default.toml` documents (a test holds them together).

use std::path::PathBuf;
use std::time::Duration;

use super::{
    AuditConfig, AuditSinkKind, AuthConfig, ClustersConfig, PolicyConfig, PolicyStorage,
    Scheduling, ServerConfig, StoreConfig, StoreKind, TokenStoreKind, VaultAuthKind,
};

const SECOND: Duration = Duration::from_secs(1);

/// `clusters.denied_networks` by default: link-local addresses and the cloud metadata
/// services (AWS's IPv6 one, Alibaba's), never an API server, always a prize for a
/// request forged from kubegate's network position. Loopback and private ranges stay
/// allowed: kind, k3d and on-premises clusters live there.
pub const DEFAULT_DENIED_NETWORKS: [&str; 4] = [
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
];

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Some(([127, 0, 0, 1], 9090).into()),
            listen_tls: Some(([127, 0, 0, 1], 9443).into()),
            tls_cert_file: "data/tls/server.crt".into(),
            tls_key_file: "data/tls/server.key".into(),
            tls_self_signed: true,
            public_url: None,
            workers: 0,
            shutdown_grace: 10 * SECOND,
            http2: true,
            tls_reload_interval: 10 * SECOND,
            max_header_bytes: 16 << 10,
            keep_alive: 75 * SECOND,
            client_request_timeout: 10 * SECOND,
            rate_limited_paths: vec!["/auth/".into(), "/pipeline/api/v1/token".into()],
            rate_limit_per_minute: 30,
            rate_limit_burst: 10,
            trusted_proxies: Vec::new(),
            scheduling: Scheduling::Batch,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::File,
            path: "data".into(),
            vault: None,
        }
    }
}

// `[store.vault]` has no default as a whole (its `address` must be given); its other
// keys do.

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
    5 * SECOND
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "https://kubegate.local/".into(),
            audience: "https://kubegate.local".into(),
            signing_key_file: "data/signing-key".into(),
            default_ttl: 24 * 3600 * SECOND,
            max_ttl: 720 * 3600 * SECOND,
            token_store: TokenStoreKind::File,
            revocation_poll: 2 * SECOND,
            kubectl_token_ttl: 15 * 60 * SECOND,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            model: None,
            policy: None,
            decision_timeout: 2 * SECOND,
            member_poll: 2 * SECOND,
            global_admins: Vec::new(),
            storage: PolicyStorage::File,
            postgres_url: None,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sinks: vec![AuditSinkKind::File],
            file: "data/audit.jsonl".into(),
            max_file_bytes: 100 << 20,
            // rotated files are compressed and kept: nothing of the trail is deleted
            // unless the operator says how much to keep
            keep_files: None,
            max_age: None,
            postgres_url: None,
            max_queue: 100_000,
            spill_dir: "data/audit-spill".into(),
            denials_per_client: 20,
            denial_window: 10 * SECOND,
            request_bodies: false,
            max_body_bytes: 64 << 10,
            batch: 512,
            flush_interval: Duration::from_millis(200),
            recordings_dir: "data/recordings".into(),
            recording_max_bytes: 64 << 20,
            record_stdin: false,
            recording_retention: Duration::ZERO,
        }
    }
}

impl Default for ClustersConfig {
    fn default() -> Self {
        ClustersConfig {
            allow_insecure_http: false,
            connect_timeout: 10 * SECOND,
            upgrade_timeout: 60 * SECOND,
            watch_streams_per_connection: 900,
            idle_timeout: 30 * 60 * SECOND,
            denied_networks: DEFAULT_DENIED_NETWORKS
                .iter()
                .map(|n| n.parse().expect("the default denied networks parse"))
                .collect(),
            allowed_exec_plugins: Vec::new(),
            impersonation_group_prefix: "{provider}:".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// Each default here is the value `config/default.toml` writes.
    #[test]
    fn the_defaults_are_the_documented_ones() {
        let documented = Config::defaults();
        assert_eq!(
            format!("{:#?}", Config::default()),
            format!("{documented:#?}")
        );
    }
}
