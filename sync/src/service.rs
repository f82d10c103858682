//! The three subcommands: `once` (one complete pass), `run` (the service) and `check`.

use crate::config::Config;
use crate::db;
use crate::error::SyncError;
use crate::metrics::Metrics;
use crate::workos::WorkOs;
use crate::{events, jwks, log, reconcile};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_postgres::Client;

/// What every step needs.
pub struct Ctx {
    pub config: Config,
    pub workos: WorkOs,
    pub metrics: Arc<Metrics>,
}

/// The application name the companion's connections carry.
pub const APPLICATION: &str = "pg-tenancy-sync";

impl Ctx {
    /// A context for `config`.
    pub fn new(config: Config) -> Result<Ctx, String> {
        let workos = WorkOs::new(&config)?;
        Ok(Ctx {
            config,
            workos,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The deadline of a step started now.
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.give_up
    }

    /// Logs and counts a failed step.
    fn failed(&self, step: &str, e: &SyncError) {
        self.metrics.error(e.kind());
        log::error(
            &format!("{step} failed"),
            &[("kind", e.kind().into()), ("problem", e.to_string().into())],
        );
    }

    /// Whether a full reconcile is due: never made, or older than the interval.
    async fn reconcile_due(&self, db: &Client) -> Result<bool, SyncError> {
        let last = db::read_time(db, "reconciled_at").await?;
        let cursor = db::read_cursor(db).await?;
        let interval = chrono::Duration::from_std(self.config.reconcile_interval).unwrap_or(chrono::Duration::MAX);
        Ok(cursor == db::Cursor::None || last.is_none_or(|t| chrono::Utc::now() - t >= interval))
    }

    /// Reconcile when due, then drain events (reconciling again if the cursor proves unusable or
    /// an event was malformed). Returns whether everything applied.
    async fn sync_pass(&self, db: &mut Client, force_reconcile: bool) -> bool {
        let mut ok = true;
        let due = match self.reconcile_due(db).await {
            Ok(due) => due || force_reconcile,
            Err(e) => {
                self.failed("reading the cursor", &e);
                return false;
            }
        };
        if due {
            // A failing reconcile must not hold back the event stream (revocations, removals):
            // drain anyway (the drain itself asks for a reconcile when there is no cursor).
            if let Err(e) = reconcile::reconcile(self, db, self.deadline(), None).await {
                self.failed("reconcile", &e);
                ok = false;
            }
        }
        match events::drain(self, db, self.deadline()).await {
            Ok(d) if d.needs_reconcile || d.malformed > 0 => {
                ok &= d.malformed == 0;
                match reconcile::reconcile(self, db, self.deadline(), d.resume_from).await {
                    Ok(_) => {
                        if let Err(e) = events::drain(self, db, self.deadline()).await {
                            self.failed("draining events", &e);
                            ok = false;
                        }
                    }
                    Err(e) => {
                        self.failed("reconcile", &e);
                        ok = false;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.failed("draining events", &e);
                ok = false;
            }
        }
        ok
    }

    /// Refreshes the JWKS; returns whether it succeeded.
    async fn jwks_pass(&self, db: &Client) -> bool {
        match jwks::refresh(self, db, self.deadline()).await {
            Ok(_) => true,
            Err(e) => {
                self.failed("JWKS refresh", &e);
                false
            }
        }
    }
}

/// `once`: JWKS, reconcile when due, events. Exit status 0 when everything applied.
pub async fn once(ctx: Ctx) -> i32 {
    // The two sides run side by side: a WorkOS outage (retried until the give-up deadline) does
    // not hold alerts back, nor a sink that is down the WorkOS pass.
    let workos_side = async {
        let mut db = match db::connect(&ctx.config.database_url, APPLICATION, None).await {
            Ok(db) => db,
            Err(e) => {
                log::error("cannot connect to the database", &[("problem", e.into())]);
                return false;
            }
        };
        let keys = ctx.jwks_pass(&db).await;
        let synced = if ctx.config.has_api_key() {
            ctx.sync_pass(&mut db, false).await
        } else {
            log::error("WORKOS_API_KEY is not set: only the JWKS was refreshed", &[]);
            false
        };
        keys && synced
    };
    let alert_side = async {
        if !ctx.config.alerts.any() {
            return true;
        }
        match crate::alerts::Deliverer::new(Arc::new(ctx.config.clone()), ctx.metrics.clone()) {
            Ok(deliverer) => deliverer.once().await,
            Err(problem) => {
                log::error("cannot start alert delivery", &[("problem", problem.into())]);
                false
            }
        }
    };
    let (synced, alerted) = tokio::join!(workos_side, alert_side);
    let ok = synced && alerted;
    log::info("pass complete", &[("ok", ok.into())]);
    i32::from(!ok)
}

/// `run`: the long-running service, until SIGTERM or SIGINT.
pub async fn run(ctx: Ctx) -> i32 {
    let ctx = Arc::new(ctx);
    let trigger = Arc::new(Notify::new());
    if let Some(address) = ctx.config.listen.clone() {
        let state = crate::http::State {
            metrics: ctx.metrics.clone(),
            webhook_secrets: ctx.config.webhook_secrets.clone(),
            trigger: trigger.clone(),
            stale_after: ctx.config.events_interval.mul_f64(3.0).max(Duration::from_secs(60)),
        };
        match tokio::net::TcpListener::bind(&address).await {
            Ok(listener) => {
                log::info("listening", &[("address", address.into())]);
                tokio::spawn(crate::http::serve(listener, Arc::new(state)));
            }
            Err(e) => {
                log::error(
                    "cannot listen",
                    &[("address", address.into()), ("problem", e.to_string().into())],
                );
                return 1;
            }
        }
    }
    let (signal_tx, signals) = mpsc::unbounded_channel();
    let (alert_tx, alert_rx) = tokio::sync::watch::channel(0_u64);
    tokio::spawn(listen_to_the_audit_writer(ctx.clone(), signal_tx, alert_tx));
    // Alert delivery runs beside the WorkOS side, each sink on its own task and connection: a
    // WorkOS outage does not delay an alert, and a sink that is down holds back nothing else.
    if ctx.config.alerts.any() {
        let deliverer = match crate::alerts::Deliverer::new(Arc::new(ctx.config.clone()), ctx.metrics.clone()) {
            Ok(d) => Arc::new(d),
            Err(problem) => {
                log::error("cannot start alert delivery", &[("problem", problem.into())]);
                return 1;
            }
        };
        for sink in crate::alerts::configured(&ctx.config.alerts) {
            log::info("delivering alerts", &[("sink", sink.name().into())]);
            tokio::spawn(deliverer.clone().follow(sink, alert_rx.clone()));
        }
    }
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error("cannot handle SIGTERM", &[("problem", e.to_string().into())]);
            return 1;
        }
    };
    log::info(
        "started",
        &[
            ("issuer", ctx.config.issuer.clone().into()),
            (
                "workspaces",
                format!("{:?}", ctx.config.workspaces).to_lowercase().into(),
            ),
        ],
    );
    // SIGTERM stops at once, even inside a pass: an unfinished transaction rolls back (a page and
    // its cursor commit together), and a request in flight to a sink is repeated on restart under
    // the same key.
    tokio::select! {
        _ = workos_side(ctx.clone(), trigger, signals) => {}
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    log::info("stopping", &[]);
    0
}

/// The WorkOS side of `run`: JWKS refreshes, passes of events and reconciles, woken early by
/// verified webhooks and by the audit writer's unknown-key signals. Never returns.
async fn workos_side(ctx: Arc<Ctx>, trigger: Arc<Notify>, mut signals: mpsc::UnboundedReceiver<String>) {
    let mut db: Option<Client> = None;
    let (mut next_jwks, mut next_events) = (Instant::now(), Instant::now());
    let mut last_fast_refresh = Instant::now() - Duration::from_secs(10);
    loop {
        if db.as_ref().is_none_or(Client::is_closed) {
            match db::connect(&ctx.config.database_url, APPLICATION, None).await {
                Ok(c) => db = Some(c),
                Err(e) => {
                    ctx.metrics.error("database");
                    log::error("cannot connect to the database; retrying", &[("problem", e.into())]);
                    db = None;
                }
            }
        }
        if let Some(client) = db.as_mut() {
            if Instant::now() >= next_jwks {
                ctx.jwks_pass(client).await;
                next_jwks = Instant::now() + ctx.config.jwks_interval;
            }
            if Instant::now() >= next_events && ctx.config.has_api_key() {
                ctx.sync_pass(client, false).await;
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
async fn listen_to_the_audit_writer(
    ctx: Arc<Ctx>,
    keys: mpsc::UnboundedSender<String>,
    alerts: tokio::sync::watch::Sender<u64>,
) {
    let wake_sinks = || alerts.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        let (tx, mut rx) = mpsc::unbounded_channel();
        match db::connect(&ctx.config.alert_database_url, APPLICATION, Some(tx)).await {
            Ok(client) => {
                if let Err(e) = client.batch_execute("LISTEN tenancy_jwks; LISTEN tenancy_alert").await {
                    log::warn(
                        "cannot LISTEN to the audit writer",
                        &[("problem", db::describe(&e).into())],
                    );
                } else {
                    wake_sinks();
                    while let Some((channel, payload)) = rx.recv().await {
                        match channel.as_str() {
                            "tenancy_jwks" if keys.send(payload).is_err() => return,
                            "tenancy_alert" => wake_sinks(),
                            _ => {}
                        }
                    }
                }
            }
            Err(e) => log::warn(
                "cannot connect for the audit writer's signals; retrying",
                &[("problem", e.into())],
            ),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `check`: configuration, database and WorkOS reachability. Exit status 0 when all pass.
pub async fn check(ctx: Ctx) -> i32 {
    let mut failures = 0;
    let mut report = |what: &str, result: Result<String, String>| match &result {
        Ok(detail) => println!("ok    {what}: {detail}"),
        Err(problem) => {
            failures += 1;
            println!("FAIL  {what}: {problem}");
        }
    };
    report(
        "configuration",
        Ok(format!("issuer {}, workspaces {:?}", ctx.config.issuer, ctx.config.workspaces).to_lowercase()),
    );
    match db::connect(&ctx.config.database_url, APPLICATION, None).await {
        Err(e) => report("database", Err(e)),
        Ok(db) => {
            let row = db
                .query_one(
                    "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_tenancy'),
                            pg_catalog.pg_has_role(current_user, 'tenancy_sync', 'MEMBER'),
                            EXISTS (SELECT FROM tenancy.issuers WHERE issuer = $1)",
                    &[&ctx.config.issuer],
                )
                .await;
            match row {
                Err(e) => report("database", Err(db::describe(&e))),
                Ok(r) => {
                    let (version, member, trusted): (Option<String>, bool, bool) = (r.get(0), r.get(1), r.get(2));
                    report(
                        "pg_tenancy",
                        version
                            .map(|v| format!("version {v}"))
                            .ok_or_else(|| "not installed in this database".into()),
                    );
                    report(
                        "role",
                        if member {
                            Ok("member of tenancy_sync".into())
                        } else {
                            Err("not a member of tenancy_sync: GRANT tenancy_sync TO <this role>".into())
                        },
                    );
                    // Since 0.3.0 the companion replaces the keys only of issuers an administrator
                    // handed to it (tenancy.issuers.sync_jwks_url); earlier versions lack the column.
                    let managed = db
                        .query_one(
                            "SELECT i.sync_jwks_url IS NOT NULL FROM tenancy.issuers i WHERE i.issuer = $1",
                            &[&ctx.config.issuer],
                        )
                        .await
                        .map_or(true, |r| r.get::<_, bool>(0));
                    report(
                        "issuer",
                        match (trusted, managed) {
                            (true, true) => Ok("trusted".into()),
                            (true, false) => Err("trusted, but its keys are not handed to pg-tenancy-sync: an administrator sets tenancy.issuers.sync_jwks_url to the JWKS URL".into()),
                            (false, _) => Err("not trusted: an administrator runs tenancy.add_issuer() once".into()),
                        },
                    );
                }
            }
        }
    }
    // The audit database: key signals always, alerts when a sink is configured.
    let sinks: Vec<&str> = crate::alerts::configured(&ctx.config.alerts)
        .iter()
        .map(|s| s.name())
        .collect();
    let audit = match db::connect(&ctx.config.alert_database_url, APPLICATION, None).await {
        Err(e) => Err(e),
        Ok(db) => {
            // Since 0.3.0 alert cursors belong to tenancy_alerts, which a tenancy_sync login
            // should not hold (it could acknowledge the alert of a key change it made).
            let member = db
                .query_one(
                    "SELECT pg_catalog.pg_has_role(current_user, 'tenancy_alerts', 'MEMBER')",
                    &[],
                )
                .await
                .map_or(true, |r| r.get::<_, bool>(0));
            match db
                .query_one(
                    "SELECT pg_catalog.count(*) FROM (SELECT ring_started_at, seq, alert FROM tenancy.audit_log LIMIT 1) r",
                    &[],
                )
                .await
            {
                Err(e) => Err(db::describe(&e)),
                Ok(_) if !member && !sinks.is_empty() => Err(
                    "tenancy.audit_log readable, but this login cannot move alert cursors: GRANT tenancy_alerts TO <the alert login>"
                        .into(),
                ),
                Ok(_) => Ok("tenancy.audit_log readable".to_string()),
            }
        }
    };
    report("audit database", audit);
    report(
        "alert sinks",
        Ok(if sinks.is_empty() {
            "none configured".into()
        } else {
            format!(
                "{} (at least severity {:?})",
                sinks.join(", "),
                ctx.config.alerts.min_severity
            )
            .to_lowercase()
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let jwks = ctx
        .workos
        .get(&format!("/sso/jwks/{}", ctx.config.client_id), &[], false, deadline)
        .await;
    report(
        "WorkOS JWKS",
        jwks.map(|j| format!("{} keys", j.get("keys").and_then(|k| k.as_array()).map_or(0, Vec::len)))
            .map_err(|e| e.to_string()),
    );
    if ctx.config.has_api_key() {
        let orgs = ctx
            .workos
            .get("/organizations", &[("limit", "1".into())], true, deadline)
            .await;
        report(
            "WorkOS API key",
            orgs.map(|_| "accepted".to_string()).map_err(|e| e.to_string()),
        );
    } else {
        report("WorkOS API key", Err("WORKOS_API_KEY is not set".into()));
    }
    i32::from(failures > 0)
}
