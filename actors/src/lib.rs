//! kubegate's actors and the data they own.
//!
//! This crate knows actix, casbin and kube, and nothing of actix-web: the HTTP layer in
//! the `kubegate` package talks to these actors through messages.
//!
//! - [`registry::ClusterRegistry`] owns one [`registry::ClusterProxy`] per cluster, built
//!   from the kubeconfig kept in a [`store::ClusterStore`].
//! - [`policy::PolicyEnforcer`] owns the Casbin enforcer and answers authorization questions
//!   about Kubernetes [`attributes::RequestAttributes`].
//! - [`auditor::Auditor`] owns the audit sinks and batches [`auditor::AuditEvent`]s.

pub mod attributes;
pub mod auditor;
pub mod fsutil;
pub mod kubeconfig;
pub mod network;
pub mod policy;
pub mod registry;
pub mod store;

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
