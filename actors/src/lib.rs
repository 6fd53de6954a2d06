//! kubegate's actors and the data they own.
//!
//! This crate knows actix, casbin, kube and vaultrs, and nothing of actix-web: the HTTP
//! layer in the `kubegate` package talks to these actors through messages. A map:
//!
//! **The actors**, one per folder, each with its messages above its handlers and its
//! tests in a sibling `tests.rs`:
//!
//! - [`registry`]: the [`ClusterRegistry`](registry::ClusterRegistry) owns one
//!   [`ClusterProxy`](registry::ClusterProxy) per cluster (`cluster.rs`), built from the
//!   kubeconfig kept in a [`ClusterStore`](store::ClusterStore), running the kubeconfig's
//!   exec credential plugin when it has one (`credential_plugin.rs`).
//! - [`policy`]: the [`PolicyEnforcer`](policy::PolicyEnforcer) owns the Casbin
//!   enforcers and answers [`Authorize`](policy::Authorize) about Kubernetes
//!   [`RequestAttributes`](attributes::RequestAttributes); `load.rs` builds the
//!   enforcers from the model, the policy lines and the memberships.
//! - [`auditor`]: the [`Auditor`](auditor::Auditor) owns the audit sinks and batches
//!   [`AuditEvent`](auditor::AuditEvent)s: `sinks.rs` (file, stdout), `postgres.rs`
//!   (the PostgreSQL sink and the audit query), `queue.rs` (each sink's queue and spill
//!   file), `flood.rs` (a flood of 401s summed up).
//!
//! **The stores** the actors and the HTTP layer read, in [`store`]: the traits and records
//! in `store/mod.rs`, one file per back end: `file.rs` (the embedded default: clusters,
//! members, policy lines, tokens), `vault.rs` (clusters and tokens), `postgres.rs`
//! (policy lines and memberships).
//!
//! **Shared by the actors and the HTTP layer**: [`kubeconfig`] (parsing and checking a
//! cluster's kubeconfig), [`attributes`] (a request in Kubernetes terms), [`network`]
//! (address ranges for the SSRF guard), [`fsutil`] (atomic, private file writes),
//! [`postgres_tls`] (PostgreSQL connection strings' `sslmode` and `sslrootcert`, over
//! rustls: the policy store and the audit sink connect through it), and [`ClusterKey`].

// the actors
pub mod auditor;
pub mod policy;
pub mod registry;

// what they keep
pub mod store;

// shared by the actors and the HTTP layer
pub mod attributes;
pub mod fsutil;
pub mod kubeconfig;
pub mod network;
pub mod postgres_tls;
pub mod tls;

/// Identifies one cluster: its organization and its id in that organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ClusterKey {
    /// The organization (the Casbin domain).
    pub org: u64,
    /// The cluster's id, assigned per organization.
    pub cluster: u64,
}

impl std::fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cluster {} of org {}", self.cluster, self.org)
    }
}
