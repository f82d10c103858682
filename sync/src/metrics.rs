//! Counters and gauges, rendered in Prometheus's text format at `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Everything the companion reports about itself.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    newest_event_created: Option<f64>,
    last_poll_success: Option<f64>,
    last_jwks_refresh: Option<f64>,
    last_reconcile: Option<f64>,
    events: BTreeMap<String, u64>,
    reconcile_runs: u64,
    reconcile_differences: u64,
    jwks_changes: u64,
    errors: BTreeMap<String, u64>,
    /// Alert rows by (sink, outcome: delivered, rejected, retried).
    alerts: BTreeMap<(String, String), u64>,
    /// Per sink: the time of the oldest row not yet acknowledged (None: nothing pending).
    alert_pending: BTreeMap<String, Option<f64>>,
    alert_delivered_at: BTreeMap<String, f64>,
    /// Restarts of the service's supervised tasks, by task.
    task_restarts: BTreeMap<String, u64>,
}

/// Seconds since the Unix epoch, as a float.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// An event consumed, with its outcome and creation time.
    pub fn event(&self, outcome: &str, created: Option<f64>) {
        self.with(|m| {
            *m.events.entry(outcome.to_string()).or_default() += 1;
            if let Some(c) = created {
                m.newest_event_created = Some(m.newest_event_created.map_or(c, |n| n.max(c)));
            }
        });
    }

    /// A poll of the Events API that completed.
    pub fn poll_succeeded(&self) {
        self.with(|m| m.last_poll_success = Some(now()));
    }

    /// A JWKS fetched and applied (or found unchanged).
    pub fn jwks_refreshed(&self, changed: bool) {
        self.with(|m| {
            m.last_jwks_refresh = Some(now());
            m.jwks_changes += u64::from(changed);
        });
    }

    /// A reconcile that completed, with the number of rows it changed.
    pub fn reconciled(&self, differences: u64) {
        self.with(|m| {
            m.reconcile_runs += 1;
            m.reconcile_differences += differences;
            m.last_reconcile = Some(now());
        });
    }

    /// A failure of kind `kind`.
    pub fn error(&self, kind: &str) {
        self.with(|m| *m.errors.entry(kind.to_string()).or_default() += 1);
    }

    /// `rows` alert rows of `sink` with `outcome` (delivered, rejected or retried).
    pub fn alerts(&self, sink: &str, outcome: &str, rows: u64) {
        self.with(|m| {
            *m.alerts.entry((sink.to_string(), outcome.to_string())).or_default() += rows;
            if outcome == "delivered" {
                m.alert_delivered_at.insert(sink.to_string(), now());
            }
        });
    }

    /// The oldest row `sink` has not had acknowledged yet, or None when it has everything.
    pub fn alert_pending(&self, sink: &str, oldest: Option<chrono::DateTime<chrono::Utc>>) {
        let at = oldest.map(|t| t.timestamp_micros() as f64 / 1e6);
        self.with(|m| {
            m.alert_pending.insert(sink.to_string(), at);
        });
    }

    /// A supervised task restarted after it panicked or ended.
    pub fn task_restarted(&self, task: &str) {
        self.with(|m| *m.task_restarts.entry(task.to_string()).or_default() += 1);
    }

    /// Seconds since the last successful poll, if any.
    pub fn poll_age(&self) -> Option<f64> {
        self.with(|m| m.last_poll_success.map(|t| now() - t))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            let mut gauge = |name: &str, help: &str, value: Option<f64>| {
                if let Some(v) = value {
                    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v:.3}\n"));
                }
            };
            let t = now();
            gauge("pg_tenancy_sync_newest_event_age_seconds", "Age of the newest applied WorkOS event", m.newest_event_created.map(|c| t - c));
            gauge("pg_tenancy_sync_poll_age_seconds", "Seconds since the Events API was last polled successfully", m.last_poll_success.map(|c| t - c));
            gauge("pg_tenancy_sync_jwks_refresh_timestamp_seconds", "When the JWKS was last fetched and applied", m.last_jwks_refresh);
            gauge("pg_tenancy_sync_reconcile_timestamp_seconds", "When the last full reconcile completed", m.last_reconcile);
            out.push_str("# HELP pg_tenancy_sync_events_total WorkOS events consumed, by outcome\n# TYPE pg_tenancy_sync_events_total counter\n");
            for (outcome, n) in &m.events {
                out.push_str(&format!("pg_tenancy_sync_events_total{{outcome=\"{outcome}\"}} {n}\n"));
            }
            out.push_str(&format!(
                "# TYPE pg_tenancy_sync_reconcile_runs_total counter\npg_tenancy_sync_reconcile_runs_total {}\n\
                 # TYPE pg_tenancy_sync_reconcile_differences_total counter\npg_tenancy_sync_reconcile_differences_total {}\n\
                 # TYPE pg_tenancy_sync_jwks_changes_total counter\npg_tenancy_sync_jwks_changes_total {}\n",
                m.reconcile_runs, m.reconcile_differences, m.jwks_changes
            ));
            out.push_str("# HELP pg_tenancy_sync_alerts_total Alert rows, by sink and outcome\n# TYPE pg_tenancy_sync_alerts_total counter\n");
            for ((sink, outcome), n) in &m.alerts {
                out.push_str(&format!("pg_tenancy_sync_alerts_total{{sink=\"{sink}\",outcome=\"{outcome}\"}} {n}\n"));
            }
            out.push_str("# HELP pg_tenancy_sync_alert_pending_age_seconds Age of the oldest alert a sink has not acknowledged (0: none)\n# TYPE pg_tenancy_sync_alert_pending_age_seconds gauge\n");
            for (sink, oldest) in &m.alert_pending {
                let age = oldest.map_or(0.0, |o| (t - o).max(0.0));
                out.push_str(&format!("pg_tenancy_sync_alert_pending_age_seconds{{sink=\"{sink}\"}} {age:.3}\n"));
            }
            for (sink, at) in &m.alert_delivered_at {
                out.push_str(&format!("pg_tenancy_sync_alert_delivered_timestamp_seconds{{sink=\"{sink}\"}} {at:.3}\n"));
            }
            out.push_str("# HELP pg_tenancy_sync_errors_total Failures, by kind\n# TYPE pg_tenancy_sync_errors_total counter\n");
            for (kind, n) in &m.errors {
                out.push_str(&format!("pg_tenancy_sync_errors_total{{kind=\"{kind}\"}} {n}\n"));
            }
            out.push_str("# HELP pg_tenancy_sync_task_restarts_total Restarts of the service's tasks after a panic or an end, by task\n# TYPE pg_tenancy_sync_task_restarts_total counter\n");
            for (task, n) in &m.task_restarts {
                out.push_str(&format!("pg_tenancy_sync_task_restarts_total{{task=\"{task}\"}} {n}\n"));
            }
            out
        })
    }
}
