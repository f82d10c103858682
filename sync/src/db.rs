//! The database side: connections (TLS as the URL's `sslmode` asks), a pinned `search_path`, the
//! single-writer lock, and the companion's cursors in `tenancy.sync_state`.

use crate::config::Secret;
use crate::error::SyncError;
use crate::workos::model::parse_time;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::{Client, GenericClient};

/// Serializes the companion's writing transactions (two instances never interleave a batch).
const WRITER_LOCK: i64 = 0x7067_5f74_656e_616e; // "pg_tenan"

/// Where the event stream resumes.
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// No cursor: a full reconcile comes first.
    None,
    /// After this event id; `at` is the event's creation time (for the retention check).
    After { id: String, at: Option<DateTime<Utc>> },
    /// From this time on (`range_start`), set by a reconcile made without a cursor.
    Since(DateTime<Utc>),
}

/// Connects to `url` and pins `search_path`. The connection runs on a task of its own, which is
/// not supervised: it lives exactly as long as the connection, and its end (a lost connection, or
/// a panic) closes the `Client`, whose owner notices (`is_closed`, a failing statement) and
/// reconnects. Notifications of the channels LISTENed to are sent to `notifications`.
pub async fn connect(
    url: &Secret,
    application: &str,
    notifications: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
) -> Result<Client, SyncError> {
    let mut config: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| SyncError::DatabaseUrl(e.to_string()))?;
    config.application_name(application);
    // A dead peer is noticed within about a minute, not TCP's two hours: a half-open connection
    // would otherwise keep holding the writer's or a sink's advisory lock. (A URL can still set
    // its own `keepalives_idle`.)
    if config.get_keepalives_idle() == std::time::Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(std::time::Duration::from_secs(30));
    }
    config.keepalives_interval(std::time::Duration::from_secs(10));
    config.keepalives_retries(3);
    config.tcp_user_timeout(std::time::Duration::from_secs(60));
    let connector = native_tls::TlsConnector::new().map_err(|e| SyncError::Tls(e.to_string()))?;
    let tls = postgres_native_tls::MakeTlsConnector::new(connector);
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| SyncError::Database(e.to_string()))?;
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(message) = stream.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if let Some(tx) = &notifications {
                        let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(problem = %e, "database connection lost");
                    break;
                }
            }
        }
    });
    client
        .batch_execute("SET search_path = pg_catalog, pg_temp")
        .await
        .map_err(|e| SyncError::Database(e.to_string()))?;
    Ok(client)
}

/// Takes the writer lock for the current transaction.
pub async fn lock_writer(tx: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_catalog.pg_advisory_xact_lock($1)", &[&WRITER_LOCK])
        .await?;
    Ok(())
}

/// The event cursor (read inside the writing transaction, after the lock, so it is current).
pub async fn read_cursor(tx: &impl GenericClient) -> Result<Cursor, tokio_postgres::Error> {
    let Some(text) = read_state(tx, "events").await? else {
        return Ok(Cursor::None);
    };
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let at = |field: &str| value.get(field).and_then(Value::as_str).and_then(parse_time);
    Ok(match (value.get("after").and_then(Value::as_str), at("since")) {
        (Some(id), _) if !id.is_empty() => Cursor::After {
            id: id.to_string(),
            at: at("at"),
        },
        (_, Some(since)) => Cursor::Since(since),
        _ => Cursor::None,
    })
}

/// Writes the event cursor; called last in the transaction whose changes it covers.
pub async fn write_cursor(tx: &impl GenericClient, cursor: &Cursor) -> Result<(), tokio_postgres::Error> {
    let value = match cursor {
        Cursor::None => json!({}),
        Cursor::After { id, at } => json!({ "after": id, "at": at.map(|t| t.to_rfc3339()) }),
        Cursor::Since(t) => json!({ "since": t.to_rfc3339() }),
    };
    write_state(tx, "events", &value.to_string()).await
}

/// A timestamp kept in `tenancy.sync_state` (such as `reconciled_at`).
pub async fn read_time(db: &impl GenericClient, name: &str) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    Ok(read_state(db, name).await?.and_then(|v| parse_time(&v)))
}

/// Sets a timestamp in `tenancy.sync_state`.
pub async fn write_time(db: &impl GenericClient, name: &str, at: DateTime<Utc>) -> Result<(), tokio_postgres::Error> {
    write_state(db, name, &at.to_rfc3339()).await
}

/// The value of `name` in `tenancy.sync_state`.
pub async fn read_state(db: &impl GenericClient, name: &str) -> Result<Option<String>, tokio_postgres::Error> {
    let row = db
        .query_opt("SELECT value FROM tenancy.sync_state WHERE name = $1", &[&name])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Sets `name` in `tenancy.sync_state`.
pub async fn write_state(db: &impl GenericClient, name: &str, value: &str) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO tenancy.sync_state (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = pg_catalog.now()",
        &[&name, &value],
    )
    .await?;
    Ok(())
}
