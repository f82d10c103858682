//! The long-lived tasks of `run` beside alert delivery and the endpoint: the WorkOS side (JWKS
//! refreshes, passes of events and reconciles) and the listener of the audit writer's signals.
//! Neither returns; both are restarted by the supervisor if they panic (`service::run`).

use crate::context::{Ctx, APPLICATION};
use crate::db;
use crate::error::{describe, SyncError};
use crate::mirror;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Mutex, Notify};
use tokio_postgres::Client;

/// The WorkOS side of `run`: JWKS refreshes, passes of events and reconciles, woken early by
/// verified webhooks (`trigger`) and by the audit writer's unknown-key signals (`signals`, an
/// issuer each). The receiver outlives a restart of this task.
pub async fn workos_side(
    ctx: Arc<Ctx>,
    trigger: Arc<Notify>,
    signals: Arc<Mutex<mpsc::UnboundedReceiver<String>>>,
) -> Result<(), SyncError> {
    let mut signals = signals.lock().await;
    let mut db: Option<Client> = None;
    let (mut next_jwks, mut next_events) = (Instant::now(), Instant::now());
    let mut last_fast_refresh = Instant::now() - Duration::from_secs(10);
    loop {
        if db.as_ref().is_none_or(Client::is_closed) {
            match db::connect(&ctx.config.database_url, APPLICATION, None).await {
                Ok(c) => db = Some(c),
                Err(e) => {
                    ctx.metrics.error("database");
                    tracing::error!(problem = %e, "cannot connect to the database; retrying");
                    db = None;
                }
            }
        }
        if let Some(client) = db.as_mut() {
            if Instant::now() >= next_jwks {
                mirror::jwks_pass(&ctx, client).await;
                next_jwks = Instant::now() + ctx.config.jwks_interval;
            }
            if Instant::now() >= next_events && ctx.config.has_api_key() {
                mirror::sync_pass(&ctx, client, false).await;
                next_events = Instant::now() + ctx.config.events_interval;
            }
        }
        let wake = if db.is_some() {
            next_jwks.min(next_events)
        } else {
            Instant::now() + Duration::from_secs(2)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = trigger.notified() => next_events = Instant::now(),
            Some(issuer) = signals.recv() => {
                // A token with an unknown key id: WorkOS may have rotated. At most once a second.
                if issuer == ctx.config.issuer && last_fast_refresh.elapsed() >= Duration::from_secs(1) {
                    last_fast_refresh = Instant::now();
                    next_jwks = Instant::now();
                }
            }
        }
    }
}

/// LISTENs in the audit database, where the audit writer signals: `tenancy_jwks` (a trusted
/// issuer's token carried an unknown key id; each issuer is forwarded to `keys`) and
/// `tenancy_alert` (rows to deliver; each wakes the alert sinks). Reconnects when the connection
/// drops, and wakes the sinks then too, since a signal may have been missed meanwhile.
pub async fn listen_to_the_audit_writer(
    ctx: Arc<Ctx>,
    keys: mpsc::UnboundedSender<String>,
    alerts: Arc<watch::Sender<u64>>,
) -> Result<(), SyncError> {
    let wake_sinks = || alerts.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        match db::connect(&ctx.config.alert_database_url, APPLICATION, Some(tx)).await {
            Ok(client) => {
                if let Err(e) = client.batch_execute("LISTEN tenancy_jwks; LISTEN tenancy_alert").await {
                    tracing::warn!(problem = describe(&e), "cannot LISTEN to the audit writer");
                } else {
                    wake_sinks();
                    while let Some((channel, payload)) = rx.recv().await {
                        match channel.as_str() {
                            "tenancy_jwks" if keys.send(payload).is_err() => return Ok(()),
                            "tenancy_alert" => wake_sinks(),
                            _ => {}
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(problem = %e, "cannot connect for the audit writer's signals; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
