//! Keeps a flood of 401s (someone trying tokens) or 429s (someone over the rate limit)
//! from filling the audit trail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::AuditEvent;

/// Keeps a flood of 401s (someone trying tokens) or 429s from filling the disk: past
/// `limit` in a window, a client's 401s (and, apart, its 429s) are counted, then recorded
/// as one summary event.
pub(super) struct DenialFlood {
    limit: u64,
    window: Duration,
    clients: HashMap<(u16, String), (Instant, u64, Option<AuditEvent>)>,
}

impl DenialFlood {
    /// At most `limit` 401s per client in each `window` (0: every one).
    pub(super) fn new(limit: u64, window: Duration) -> Self {
        DenialFlood {
            limit,
            window,
            clients: HashMap::new(),
        }
    }

    /// Whether to record `event` now (else it is counted into its client's summary).
    pub(super) fn admit(&mut self, event: &AuditEvent) -> bool {
        if self.limit == 0 || !matches!(event.status, 401 | 429) {
            return true;
        }
        let now = Instant::now();
        let entry = self
            .clients
            .entry((event.status, event.client.clone()))
            .or_insert((now, 0, None));
        if entry.1 < self.limit {
            entry.1 += 1;
            return true;
        }
        let summary = entry.2.get_or_insert_with(|| {
            let mut summary = event.clone();
            summary.request_id = format!("{}-aggregated", event.request_id);
            summary.aggregated = Some(0);
            summary
        });
        summary.aggregated = Some(summary.aggregated.unwrap_or(0) + 1);
        summary.time = event.time.clone();
        false
    }

    /// Summaries of the windows that have ended (of every window when `all`).
    pub(super) fn ended(&mut self, all: bool) -> Vec<AuditEvent> {
        let now = Instant::now();
        let window = if all { Duration::ZERO } else { self.window };
        let mut summaries = Vec::new();
        let full_window = self.window;
        self.clients
            .retain(|(status, client), (started, _, summary)| {
                if now.duration_since(*started) < window {
                    return true;
                }
                if let Some(mut summary) = summary.take() {
                    let n = summary.aggregated.unwrap_or(0);
                    summary.reason = format!(
                    "{n} more {status} responses to {client} within {}s, not recorded one by one",
                    full_window.as_secs_f64()
                );
                    summaries.push(summary);
                }
                false
            });
        summaries
    }
}
