//! The three subcommands: `once` (one complete pass), `run` (the service, its long-lived tasks in
//! `tasks.rs` and `alerts`, watched by `supervise.rs`) and `check` (`check.rs`).

mod check;
mod supervise;
mod tasks;

use crate::alerts;
use crate::context::{Ctx, APPLICATION};
use crate::db;
use crate::http;
use crate::mirror;
use std::sync::Arc;
use std::time::Duration;
use supervise::Supervisor;
use tokio::sync::{mpsc, watch, Mutex, Notify};

pub use check::check;

/// `once`: JWKS, reconcile when due, events. Exit status 0 when everything applied.
pub async fn once(ctx: Ctx) -> i32 {
    // The two sides run side by side: a WorkOS outage (retried until the give-up deadline) does
    // not hold alerts back, nor a sink that is down the WorkOS pass.
    let workos_side = async {
        let mut db = match db::connect(&ctx.config.database_url, APPLICATION, None).await {
            Ok(db) => db,
            Err(e) => {
                tracing::error!(problem = %e, "cannot connect to the database");
                return false;
            }
        };
        let keys = mirror::jwks_pass(&ctx, &db).await;
        let synced = if ctx.config.has_api_key() {
            mirror::sync_pass(&ctx, &mut db, false).await
        } else {
            tracing::error!("WORKOS_API_KEY is not set: only the JWKS was refreshed");
            false
        };
        keys && synced
    };
    let alert_side = async {
        if !ctx.config.alerts.any() {
            return true;
        }
        match alerts::Deliverer::new(Arc::new(ctx.config.clone()), ctx.metrics.clone()) {
            Ok(deliverer) => deliverer.once().await,
            Err(problem) => {
                tracing::error!(problem = %problem, "cannot start alert delivery");
                false
            }
        }
    };
    let (synced, alerted) = tokio::join!(workos_side, alert_side);
    let ok = synced && alerted;
    tracing::info!(ok, "pass complete");
    i32::from(!ok)
}

/// `run`: the long-running service, until SIGTERM or SIGINT (exit status 0), or until a task it
/// cannot run without fails (1).
///
/// Its tasks, and what becomes of one that panics or ends (none ends on its own):
/// - the WorkOS side (`workos`) and the listener of the audit writer's signals (`audit listener`)
///   are restarted: all their state is in the database or rebuilt at start (a page and its
///   cursor commit together, a missed signal is made up by the timers), and their failure must
///   not stop alert delivery; `/health` turns stale if the WorkOS side keeps failing;
/// - each alert sink (`alerts:<sink>`) is restarted: its cursor is in the audit database, and a
///   sink that fails must not hold back the other sinks or the WorkOS side;
/// - the endpoint (`endpoint`: `/health`, `/metrics`, webhooks) ends the service: its listener
///   is gone with it, and a service that answers no health check should be replaced whole.
///
/// Every restart is logged and counted in `pg_tenancy_sync_task_restarts_total{task}`.
pub async fn run(ctx: Ctx) -> i32 {
    let ctx = Arc::new(ctx);
    let mut supervisor = Supervisor::new(ctx.metrics.clone());
    let trigger = Arc::new(Notify::new());
    if let Some(address) = ctx.config.listen.clone() {
        let state = http::State {
            metrics: ctx.metrics.clone(),
            webhook_secrets: ctx.config.webhook_secrets.clone(),
            trigger: trigger.clone(),
            stale_after: ctx.config.events_interval.mul_f64(3.0).max(Duration::from_secs(60)),
        };
        match tokio::net::TcpListener::bind(&address).await {
            Ok(listener) => {
                tracing::info!(address = address.as_str(), "listening");
                supervisor.fatal("endpoint", http::serve(listener, Arc::new(state)));
            }
            Err(e) => {
                tracing::error!(address = address.as_str(), problem = %e, "cannot listen");
                return 1;
            }
        }
    }
    let (signal_tx, signals) = mpsc::unbounded_channel();
    let signals = Arc::new(Mutex::new(signals));
    let (alert_tx, alert_rx) = watch::channel(0_u64);
    let alert_tx = Arc::new(alert_tx);
    {
        let ctx = ctx.clone();
        supervisor.restart("audit listener", move || {
            tasks::listen_to_the_audit_writer(ctx.clone(), signal_tx.clone(), alert_tx.clone())
        });
    }
    // Alert delivery runs beside the WorkOS side, each sink on its own task and connection: a
    // WorkOS outage does not delay an alert, and a sink that is down holds back nothing else.
    if ctx.config.alerts.any() {
        let deliverer = match alerts::Deliverer::new(Arc::new(ctx.config.clone()), ctx.metrics.clone()) {
            Ok(d) => Arc::new(d),
            Err(problem) => {
                tracing::error!(problem = %problem, "cannot start alert delivery");
                return 1;
            }
        };
        for sink in alerts::configured(&ctx.config.alerts) {
            tracing::info!(sink = sink.name(), "delivering alerts");
            let (deliverer, wake) = (deliverer.clone(), alert_rx.clone());
            supervisor.restart(&format!("alerts:{}", sink.name()), move || {
                deliverer.clone().follow(sink.clone(), wake.clone())
            });
        }
    }
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(problem = %e, "cannot handle SIGTERM");
            return 1;
        }
    };
    tracing::info!(
        issuer = ctx.config.issuer.as_str(),
        workspaces = format!("{:?}", ctx.config.workspaces).to_lowercase(),
        "started"
    );
    {
        let ctx = ctx.clone();
        supervisor.restart("workos", move || {
            tasks::workos_side(ctx.clone(), trigger.clone(), signals.clone())
        });
    }
    // SIGTERM stops at once, even inside a pass: an unfinished transaction rolls back (a page and
    // its cursor commit together), and a request in flight to a sink is repeated on restart under
    // the same key.
    tokio::select! {
        e = supervisor.failed() => {
            tracing::error!(kind = e.kind(), problem = %e, "a task the service needs failed; stopping");
            return 1;
        }
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
    0
}
