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
use chrono::{DateTime, Utc};
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
                    application_name, iss, sub, org_id, sid, kid,
                    CAST(pg_catalog.date_part('epoch', exp) AS pg_catalog.int8)
               FROM tenancy.audit_log
              WHERE id > $1 AND ($2 OR alert IS NOT NULL)
              ORDER BY id
              LIMIT $3",
            &[&position, &(min == Severity::Warning), &limit],
        )
        .await?;
    Ok(rows.iter().map(alert_of).collect())
}

/// An alert from a row of `after`'s query. No value of a row stops delivery: a column that does
/// not decode (a claim's `exp` is the client's, and PostgreSQL's timestamps reach 294276 AD where
/// chrono's stop at 262142; text that is not UTF-8 in a `SQL_ASCII` audit database) is delivered
/// as absent, or as a placeholder where the payload needs a value, and logged. One such row
/// once made every drain of the sink fail, for good: nothing after it was delivered.
fn alert_of(row: &Row) -> Alert {
    let id: i64 = row.try_get(0).unwrap_or_default();
    let undecodable = |column: &str| {
        tracing::warn!(
            id,
            column,
            "an audit row's column does not decode; delivered without it"
        )
    };
    let text = |i: usize, column: &str| {
        row.try_get::<_, String>(i).unwrap_or_else(|_| {
            undecodable(column);
            "(undecodable)".to_string()
        })
    };
    let optional = |i: usize, column: &str| {
        row.try_get::<_, Option<String>>(i).unwrap_or_else(|_| {
            undecodable(column);
            None
        })
    };
    let exp = match row.try_get::<_, Option<i64>>(15) {
        Ok(Some(seconds)) => DateTime::<Utc>::from_timestamp(seconds, 0).or_else(|| {
            undecodable("exp");
            None
        }),
        Ok(None) => None,
        Err(_) => {
            undecodable("exp");
            None
        }
    };
    Alert {
        id,
        at: row.try_get(1).unwrap_or_else(|_| {
            undecodable("at");
            DateTime::<Utc>::UNIX_EPOCH
        }),
        reason: text(2, "reason"),
        critical: row.try_get(3).unwrap_or(true),
        alert: optional(4, "alert"),
        pid: row.try_get(5).unwrap_or_default(),
        database: text(6, "database"),
        role: text(7, "role"),
        client_addr: optional(8, "client_addr"),
        application_name: text(9, "application_name"),
        iss: optional(10, "iss"),
        sub: optional(11, "sub"),
        org_id: optional(12, "org_id"),
        sid: optional(13, "sid"),
        kid: optional(14, "kid"),
        exp,
    }
}
