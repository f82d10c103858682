//! Alert delivery: critical denials reach a generic webhook, Slack and PagerDuty, at least once,
//! per sink, in order.
//!
//! Each sink follows `tenancy.audit_log` in the audit database with its own cursor (`source.rs`)
//! on its own connection and task, woken by `NOTIFY tenancy_alert` (forwarded by the service's
//! listener) and by a timer; the cursor moves only after the sink acknowledged (2xx). 429, 5xx
//! and network errors are retried with backoff and jitter (for ever in `run`, until the give-up
//! deadline in `once`); other answers are reported and skipped. A restart repeats at most the
//! requests in flight, with the same idempotency or dedup key. Only one companion delivers to a
//! sink at a time (a session advisory lock per sink); another stands by.

pub mod format;
mod sinks;
mod source;

use crate::config::Config;
use crate::context::APPLICATION;
use crate::db;
use crate::error::{audit, SyncError};
use crate::metrics::Metrics;
use crate::retry;
use sinks::{Outcome, Request, Sink};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::Client;

pub use sinks::configured;

/// The advisory lock class of alert sinks ("al"); the sink's number is the second key.
const LOCK_CLASS: i32 = 0x616c;
/// The longest wait a `Retry-After` may impose before the next attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// What delivery needs beside the sink.
pub struct Deliverer {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    http: reqwest::Client,
}

impl Deliverer {
    /// A deliverer for `config`'s sinks.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Deliverer, SyncError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pg-tenancy-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SyncError::HttpClient(e.to_string()))?;
        Ok(Deliverer { config, metrics, http })
    }

    /// Connects to the audit database and takes `sink`'s lock; None when another companion
    /// holds it. Any role that may connect to the audit database can take an advisory lock of
    /// the same numbers: a holder that is not alert delivery (a member of `tenancy_alerts`; not
    /// even a `tenancy_sync` login, which could so hold back the alert of its own key change) is
    /// ignored, and the sink delivered anyway, rather than letting it silence the alerts.
    async fn claim(&self, sink: &Sink) -> Result<Option<Client>, SyncError> {
        let db = db::connect(&self.config.alert_database_url, APPLICATION, None).await?;
        let row = db
            .query_one(
                "SELECT pg_catalog.pg_try_advisory_lock($1, $2)",
                &[&LOCK_CLASS, &sink.number()],
            )
            .await
            .map_err(audit)?;
        if row.get::<_, bool>(0) {
            return Ok(Some(db));
        }
        let companion = db
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_locks l
                                  JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) l.pid
                                 WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted
                                   AND l.classid OPERATOR(pg_catalog.=) CAST($1::pg_catalog.int4 AS pg_catalog.oid)
                                   AND l.objid OPERATOR(pg_catalog.=) CAST($2::pg_catalog.int4 AS pg_catalog.oid)
                                   AND l.objsubid OPERATOR(pg_catalog.=) 2
                                   AND pg_catalog.pg_has_role(a.usesysid, 'tenancy_alerts', 'MEMBER'))",
                &[&LOCK_CLASS, &sink.number()],
            )
            .await
            .map_err(audit)?
            .get::<_, bool>(0);
        if companion {
            return Ok(None);
        }
        tracing::error!(
            sink = sink.name(),
            "an alert sink's lock is held by a role that is no companion; delivering anyway"
        );
        Ok(Some(db))
    }

    /// Delivers every pending row to `sink`; returns how many rows it delivered. `last_request`
    /// is when the sink was last sent anything, kept by the caller across drains, so the sink's
    /// spacing holds however often drains are woken.
    pub async fn drain(
        &self,
        sink: &Sink,
        db: &Client,
        deadline: Option<Instant>,
        last_request: &mut Option<Instant>,
    ) -> Result<u64, SyncError> {
        let mut position = source::cursor(db, sink.name()).await.map_err(audit)?;
        let mut delivered = 0;
        loop {
            let batch = source::after(db, position, self.config.alerts.min_severity, sink.batch_rows())
                .await
                .map_err(audit)?;
            if batch.is_empty() {
                self.metrics.alert_pending(sink.name(), None);
                return Ok(delivered);
            }
            let (mut done, mut rejected) = (0, false);
            let requests = sink.requests(&batch);
            if requests.is_empty() {
                // Every row folded into incidents triggered lately.
                self.metrics.alerts(sink.name(), "folded", batch.len() as u64);
                position = batch[batch.len() - 1].id;
                source::write(db, sink.name(), position).await.map_err(audit)?;
                continue;
            }
            for request in requests {
                if let Some(at) = *last_request {
                    tokio::time::sleep_until((at + sink.spacing()).into()).await;
                }
                self.metrics.alert_pending(sink.name(), Some(batch[done].at));
                let outcome = self.send(sink, &request, deadline).await?;
                *last_request = Some(Instant::now());
                if outcome == Outcome::Acknowledged {
                    sink.acknowledged(&request);
                }
                if let Outcome::Rejected { status, body } = &outcome {
                    rejected = true;
                    tracing::error!(
                        sink = sink.name(),
                        status = *status,
                        answer = body.as_str(),
                        "an alert sink rejected a request; skipped"
                    );
                }
                if let Some(last) = request.completes {
                    let rows = (last + 1 - done) as u64;
                    let kind = if rejected { "rejected" } else { "delivered" };
                    self.metrics.alerts(sink.name(), kind, rows);
                    delivered += rows;
                    position = batch[last].id;
                    source::write(db, sink.name(), position).await.map_err(audit)?;
                    (done, rejected) = (last + 1, false);
                }
            }
        }
    }

    /// Sends `request` until the sink acknowledges or rejects it; retries the rest with backoff.
    async fn send(&self, sink: &Sink, request: &Request, deadline: Option<Instant>) -> Result<Outcome, SyncError> {
        let mut attempt = 0;
        loop {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let mut post = self.http.post(sink.url()).body(request.body.clone());
            for (name, value) in sink.headers(request, now_ms) {
                post = post.header(name, value);
            }
            let outcome = match post.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(retry::parse_retry_after);
                    let body = response.text().await.unwrap_or_default();
                    sinks::outcome(status, retry_after, &body)
                }
                // Without the URL: Slack's carries its secret.
                Err(e) => Outcome::Retry {
                    wait: None,
                    problem: retry::without_url(e),
                },
            };
            let Outcome::Retry { wait, problem } = outcome else {
                return Ok(outcome);
            };
            // A `Retry-After` of 0 (or a tiny one) must not become a hot loop.
            let backoff = retry::backoff(attempt);
            let wait = wait.map_or(backoff, |w| w.max(backoff).min(MAX_RETRY_AFTER));
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                return Err(SyncError::SinkUnavailable(problem));
            }
            self.metrics.alerts(sink.name(), "retried", 1);
            if attempt == 0 || attempt % 10 == 0 {
                tracing::warn!(
                    sink = sink.name(),
                    attempt = attempt + 1,
                    problem = problem.as_str(),
                    wait_ms = wait.as_millis() as u64,
                    "an alert sink failed; retrying"
                );
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// `run`: delivers to `sink` for ever, woken by `wake` (a `NOTIFY tenancy_alert`) or the
    /// timer; reconnects after a database failure and stands by while another companion holds
    /// the sink. Never returns (the service supervises it).
    pub async fn follow(self: Arc<Self>, sink: Sink, mut wake: watch::Receiver<u64>) -> Result<(), SyncError> {
        let interval = self.config.alerts.interval;
        let (mut standing_by, mut last_request) = (false, None);
        loop {
            let db = match self.claim(&sink).await {
                Ok(Some(db)) => db,
                Ok(None) => {
                    if !standing_by {
                        tracing::info!(
                            sink = sink.name(),
                            "another companion delivers to this sink; standing by"
                        );
                        standing_by = true;
                    }
                    tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
                    continue;
                }
                Err(problem) => {
                    self.metrics.error("alert_database");
                    tracing::warn!(
                        sink = sink.name(),
                        problem = %problem,
                        "cannot reach the audit database for alerts; retrying"
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            standing_by = false;
            while !db.is_closed() {
                if let Err(e) = self.drain(&sink, &db, None, &mut last_request).await {
                    self.metrics.error("alert_database");
                    tracing::warn!(sink = sink.name(), problem = %e, "alert delivery interrupted; resuming");
                    break;
                }
                tokio::select! {
                    changed = wake.changed() => {
                        if changed.is_err() {
                            // No listener any more: the timer alone wakes the sink.
                            tokio::time::sleep(interval).await;
                        }
                    }
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            // Closing the session releases its lock before this companion claims the sink again.
            drop(db);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `once`: delivers what is pending to every sink within the give-up deadline; returns
    /// whether every sink has everything.
    pub async fn once(&self) -> bool {
        let mut ok = true;
        for sink in configured(&self.config.alerts) {
            let deadline = Instant::now() + self.config.give_up;
            let result = match self.claim(&sink).await {
                Ok(Some(db)) => self.drain(&sink, &db, Some(deadline), &mut None).await,
                Ok(None) => Err(SyncError::SinkClaimed),
                Err(problem) => Err(problem),
            };
            match result {
                Ok(rows) => tracing::info!(sink = sink.name(), rows, "alerts delivered"),
                Err(problem) => {
                    ok = false;
                    self.metrics.error("alert_delivery");
                    tracing::error!(sink = sink.name(), problem = %problem, "alert delivery incomplete");
                }
            }
        }
        ok
    }
}
