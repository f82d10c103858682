//! Alert delivery (issue: critical denials reach the operations team) — WORK IN PROGRESS, not yet
//! compiled into the binary (`main.rs` does not declare `mod alerts` yet).
//!
//! Source of truth: `tenancy.audit_log` in the audit database (`PG_TENANCY_ALERT_DATABASE_URL`),
//! rows whose `alert` column is set (the extension's severity and burst rules) or every row when
//! `PG_TENANCY_ALERT_MIN_SEVERITY=warning`. Each sink keeps its own cursor
//! (`tenancy.sync_state`, name `alerts:<sink>`, value `<ring_started_at>/<seq>`), starting at the
//! newest row the first time it is seen; the cursor advances only after the sink answered 2xx.
//! Woken by `NOTIFY tenancy_alert` and by a timer (`PG_TENANCY_ALERT_INTERVAL`, 5 s).
//!
//! Sinks:
//! - webhook (`PG_TENANCY_ALERT_WEBHOOK_URL`, `PG_TENANCY_ALERT_WEBHOOK_SECRET` comma-separated):
//!   JSON of the row without `statement`/`detail`; `Pg-Tenancy-Signature: t=<ms>,v1=<hex>` (one
//!   v1 per secret), `Idempotency-Key: <ring_started_at>/<seq>`;
//! - Slack (`PG_TENANCY_ALERT_SLACK_URL`): one `{"text": …}` message per batch (bursts
//!   aggregated), at most one per second;
//! - PagerDuty Events v2 (`PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY`, `…_URL`): `event_action`
//!   trigger, `dedup_key` per row, or per source for bursts.
//!
//! Plan for the extension side: GRANT SELECT on tenancy.audit_log's columns except `statement`
//! and `detail` to tenancy_sync (in sql/audit.sql and the upgrade script).
