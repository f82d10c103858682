//! The source of alerts: `tenancy.audit_log` in the audit database, read in the audit writer's
//! order, and each sink's cursor beside it in `tenancy.sync_state` (`alerts:<sink>`).
//!
//! The audit writer is the log's only writer and numbers its rows (`id`, an identity column) in
//! the order it commits them, so a cursor on `id` never skips a row committed later. Not
//! `(ring_started_at, seq)`: a ring's start is the postmaster's clock, which a clock step or a
//! promoted standby (whose ring started earlier) can move backwards.

use super::format::Alert;
use crate::config::Severity;
use crate::db;
use serde_json::{json, Value};
use tokio_postgres::{Client, Row};

/// A position in the audit log: after the row of this `id` (0: before every row).
pub type Position = i64;

/// The state name of `sink`'s cursor.
fn state_name(sink: &str) -> String {
    format!("alerts:{sink}")
}

/// `sink`'s cursor. A sink seen for the first time starts after the newest row (an operations
/// team adding Slack wants new alerts, not the log's history), and that start is stored at once.
pub async fn cursor(db: &Client, sink: &str) -> Result<Position, tokio_postgres::Error> {
    if let Some(text) = db::read_state(db, &state_name(sink)).await? {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(id) = value.get("id").and_then(Value::as_i64) {
            return Ok(id);
        }
        tracing::warn!(sink, "an alert cursor is unreadable; starting after the newest row");
    }
    let newest: Option<i64> = db.query_one("SELECT max(id) FROM tenancy.audit_log", &[]).await?.get(0);
    let start = newest.unwrap_or(0);
    write(db, sink, start).await?;
    tracing::info!(sink, id = start, "a new alert sink starts after the newest audit row");
    Ok(start)
}

/// Moves `sink`'s cursor to `position` (after the sink acknowledged everything up to it).
pub async fn write(db: &Client, sink: &str, position: Position) -> Result<(), tokio_postgres::Error> {
    db::write_state(db, &state_name(sink), &json!({ "id": position }).to_string()).await
}

/// Up to `limit` rows after `position` that reach sinks at `min` severity, oldest first. Only the
/// columns alert delivery is granted: never the statement text or the detail.
pub async fn after(
    db: &Client,
    position: Position,
    min: Severity,
    limit: i64,
) -> Result<Vec<Alert>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT id, at, reason, critical, alert, pid, database, role, client_addr,
                    application_name, iss, sub, org_id, sid, kid, exp
               FROM tenancy.audit_log
              WHERE id > $1 AND ($2 OR alert IS NOT NULL)
              ORDER BY id
              LIMIT $3",
            &[&position, &(min == Severity::Warning), &limit],
        )
        .await?;
    Ok(rows.iter().map(alert_of).collect())
}

/// An alert from a row of `after`'s query.
fn alert_of(row: &Row) -> Alert {
    Alert {
        id: row.get(0),
        at: row.get(1),
        reason: row.get(2),
        critical: row.get(3),
        alert: row.get(4),
        pid: row.get(5),
        database: row.get(6),
        role: row.get(7),
        client_addr: row.get(8),
        application_name: row.get(9),
        iss: row.get(10),
        sub: row.get(11),
        org_id: row.get(12),
        sid: row.get(13),
        kid: row.get(14),
        exp: row.get(15),
    }
}
