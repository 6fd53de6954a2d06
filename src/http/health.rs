//! `/healthz`, `/readyz` and `/metrics`: what operators and Prometheus ask of kubegate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Recipient};
use actix_web::{web, HttpResponse};
use kubegate_actors::auditor::{AuditCounters, RecordBatch};
use kubegate_actors::policy::Stats;
use kubegate_actors::registry::{ClusterRegistry, LiveCount};
use kubegate_actors::store::ClusterStore;

/// What health and metrics read: the store, the actors and their figures.
pub struct Health {
    /// The cluster store, checked for readiness.
    pub clusters: Arc<dyn ClusterStore>,
    /// The cluster registry, for the live proxies.
    pub registry: Addr<ClusterRegistry>,
    /// The policy enforcer, for its figures.
    pub policy_stats: Recipient<Stats>,
    /// How long to wait for the policy enforcer.
    pub decision_timeout: Duration,
    /// The auditor (whether it runs).
    pub auditor: Recipient<RecordBatch>,
    /// The auditor's figures (queue depth, spills, failing sinks).
    pub audit_counters: Arc<AuditCounters>,
}

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    operation_id = "healthz",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
    security(()),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Ready when the cluster store answers and the policy enforcer and auditor run.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "server",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", content_type = "text/plain", body = String),
        (status = 503, description = "Not ready: what is wrong, one line each", content_type = "text/plain", body = String),
    ),
    security(()),
)]
pub async fn readyz(state: web::Data<Health>) -> HttpResponse {
    let mut problems = Vec::new();
    if let Err(e) = state.clusters.check().await {
        problems.push(format!("store: {e}"));
    }
    if state
        .policy_stats
        .send(Stats)
        .timeout(state.decision_timeout)
        .await
        .is_err()
    {
        problems.push("policy: the policy enforcer does not answer".to_string());
    }
    if !state.auditor.connected() {
        problems.push("audit: the auditor is not running".to_string());
    }
    let failing = state.audit_counters.failing_sinks.load(Ordering::Relaxed);
    if failing > 0 {
        problems.push(format!(
            "audit: {failing} sink(s) failing; {} events queued, {} spilled to disk",
            state.audit_counters.queued.load(Ordering::Relaxed),
            state.audit_counters.spilled.load(Ordering::Relaxed)
        ));
    }
    if problems.is_empty() {
        HttpResponse::Ok().content_type("text/plain").body("ok")
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "problems": problems}))
    }
}

/// Prometheus metrics: the per-request figures of [`crate::metrics`], and those the
/// actors keep (live proxies, audit queues, policy reloads).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "server",
    operation_id = "metrics",
    responses((status = 200, description = "The OpenMetrics text format", content_type = "application/openmetrics-text", body = String)),
    security(()),
)]
pub async fn metrics(state: web::Data<Health>) -> HttpResponse {
    use crate::metrics::{Figure, FigureKind};
    let live = state.registry.send(LiveCount).await.unwrap_or(0);
    let stats = state
        .policy_stats
        .send(Stats)
        .timeout(state.decision_timeout)
        .await
        .ok();
    let audit = &state.audit_counters;
    let mut figures = vec![
        Figure {
            name: "kubegate_cluster_proxies_live",
            help: "Cluster proxy instances the registry holds.",
            kind: FigureKind::Gauge,
            value: live as u64,
        },
        Figure {
            name: "kubegate_audit_queued_events",
            help: "Audit events waiting in memory, over all sinks.",
            kind: FigureKind::Gauge,
            value: audit.queued.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_written_events_total",
            help: "Audit events written, over all sinks.",
            kind: FigureKind::Counter,
            value: audit.written.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_spilled_events_total",
            help: "Audit events spilled to disk because a sink was behind.",
            kind: FigureKind::Counter,
            value: audit.spilled.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_lost_events_total",
            help: "Audit events lost (spill failed too).",
            kind: FigureKind::Counter,
            value: audit.lost.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_failing_sinks",
            help: "Audit sinks failing now.",
            kind: FigureKind::Gauge,
            value: audit.failing_sinks.load(Ordering::Relaxed),
        },
        Figure {
            name: "kubegate_audit_aggregated_denials_total",
            help: "401s counted into summary events instead of recorded one by one.",
            kind: FigureKind::Counter,
            value: audit.aggregated.load(Ordering::Relaxed),
        },
    ];
    if let Some(stats) = stats {
        figures.extend([
            Figure {
                name: "kubegate_policy_rules",
                help: "Policy lines in force.",
                kind: FigureKind::Gauge,
                value: stats.policies as u64,
            },
            Figure {
                name: "kubegate_policy_role_bindings",
                help: "Role bindings (memberships) in force.",
                kind: FigureKind::Gauge,
                value: stats.groupings as u64,
            },
            Figure {
                name: "kubegate_policy_reloads_total",
                help: "Reloads that put a new policy in force (API, or a change seen by polling).",
                kind: FigureKind::Counter,
                value: stats.reloads,
            },
        ]);
    }
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(crate::metrics::render(&figures))
}
