//! The source of alerts: `tenancy.audit_log` in the audit database, read in the audit writer's
//! order, and each sink's cursor beside it in `tenancy.sync_state` (`alerts:<sink>`).
//!
//! The audit writer is the log's only writer and commits its rows in ring order, so
//! `(ring_started_at, seq)` only grows in commit order: a cursor of that pair never skips a row
//! committed later (a restarted server starts a newer ring).

use super::format::Alert;
use crate::config::Severity;
use crate::db;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::{Client, Row};

/// A position in the audit log: after this row.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub ring_started_at: DateTime<Utc>,
    pub seq: i64,
}

impl Position {
    /// Before every row.
    fn start() -> Position {
        Position {
            ring_started_at: DateTime::UNIX_EPOCH,
            seq: 0,
        }
    }

    /// Right after `alert`'s row.
    pub fn of(alert: &Alert) -> Position {
        Position {
            ring_started_at: alert.ring_started_at,
            seq: alert.seq,
        }
    }
}

/// The state name of `sink`'s cursor.
fn state_name(sink: &str) -> String {
    format!("alerts:{sink}")
}

/// `sink`'s cursor. A sink seen for the first time starts after the newest row (an operations
/// team adding Slack wants new alerts, not the log's history), and that start is stored at once.
pub async fn cursor(db: &Client, sink: &str) -> Result<Position, tokio_postgres::Error> {
    if let Some(text) = db::read_state(db, &state_name(sink)).await? {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ring = value
            .get("ring_started_at")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        if let (Some(ring), Some(seq)) = (ring, value.get("seq").and_then(Value::as_i64)) {
            return Ok(Position {
                ring_started_at: ring.with_timezone(&Utc),
                seq,
            });
        }
        crate::log::warn(
            "an alert cursor is unreadable; starting after the newest row",
            &[("sink", sink.into())],
        );
    }
    let newest = db
        .query_opt(
            "SELECT ring_started_at, seq FROM tenancy.audit_log
              ORDER BY ring_started_at DESC, seq DESC LIMIT 1",
            &[],
        )
        .await?;
    let start = newest.map_or_else(Position::start, |r| Position {
        ring_started_at: r.get(0),
        seq: r.get(1),
    });
    write(db, sink, &start).await?;
    crate::log::info(
        "a new alert sink starts after the newest audit row",
        &[("sink", sink.into()), ("seq", start.seq.into())],
    );
    Ok(start)
}

/// Moves `sink`'s cursor to `position` (after the sink acknowledged everything up to it).
pub async fn write(db: &Client, sink: &str, position: &Position) -> Result<(), tokio_postgres::Error> {
    let value = json!({
        "ring_started_at": position.ring_started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "seq": position.seq,
    });
    db::write_state(db, &state_name(sink), &value.to_string()).await
}

/// Up to `limit` rows after `position` that reach sinks at `min` severity, oldest first. Only the
/// columns alert delivery is granted: never the statement text or the detail.
pub async fn after(
    db: &Client,
    position: &Position,
    min: Severity,
    limit: i64,
) -> Result<Vec<Alert>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT ring_started_at, seq, at, reason, critical, alert, pid, database, role, client_addr,
                    application_name, iss, sub, org_id, sid, kid, exp
               FROM tenancy.audit_log
              WHERE (ring_started_at, seq) > ($1, $2) AND ($3 OR alert IS NOT NULL)
              ORDER BY ring_started_at, seq
              LIMIT $4",
            &[
                &position.ring_started_at,
                &position.seq,
                &(min == Severity::Warning),
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(alert_of).collect())
}

/// An alert from a row of `after`'s query.
fn alert_of(row: &Row) -> Alert {
    Alert {
        ring_started_at: row.get(0),
        seq: row.get(1),
        at: row.get(2),
        reason: row.get(3),
        critical: row.get(4),
        alert: row.get(5),
        pid: row.get(6),
        database: row.get(7),
        role: row.get(8),
        client_addr: row.get(9),
        application_name: row.get(10),
        iss: row.get(11),
        sub: row.get(12),
        org_id: row.get(13),
        sid: row.get(14),
        kid: row.get(15),
        exp: row.get(16),
    }
}
