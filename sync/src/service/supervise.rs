//! Supervision of the service's long-lived tasks. Each runs on a tokio task of its own, watched by
//! a watcher task that notices when it panics, returns an error or ends (none of them ends on its
//! own), logs it as an error line with the task's name, and then either
//!   - restarts it (`restart`) after a pause (1 s, doubling up to 60 s, back to 1 s once a run
//!     lasted 60 s), counting the restart in `pg_tenancy_sync_task_restarts_total{task}`: for a
//!     task whose state is all in the database or rebuilt at start, and whose failure must not
//!     stop the others; or
//!   - ends the service (`fatal`): `failed` returns the reason, `run` logs it and exits 1, and the
//!     process supervisor (systemd, Kubernetes) starts a new one.
//!
//! Which task gets which is decided where they are started (`service::run`).

use crate::error::SyncError;
use crate::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

/// The first pause before a restart.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause before a restart.
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// A run this long resets the pause to the first one.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// The service's tasks and their watchers.
pub struct Supervisor {
    /// One watcher per task; only the watcher of a fatal task ends, with the reason.
    watchers: JoinSet<SyncError>,
    metrics: Arc<Metrics>,
}

/// Aborts a task when its watcher is dropped (the service is stopping).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for a task to end and says how it ended.
async fn ended(handle: JoinHandle<Result<(), SyncError>>) -> String {
    let _guard = AbortOnDrop(handle.abort_handle());
    match handle.await {
        Ok(Ok(())) => "ended".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) if e.is_panic() => format!("panicked: {}", crate::log::panic_text(&*e.into_panic())),
        Err(e) => e.to_string(),
    }
}

impl Supervisor {
    /// A supervisor counting restarts in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Supervisor {
        Supervisor {
            watchers: JoinSet::new(),
            metrics,
        }
    }

    /// Runs `task`, which the service cannot run without: when it panics, returns an error or
    /// ends, `failed` returns why.
    pub fn fatal<F>(&mut self, name: &str, task: F)
    where
        F: Future<Output = Result<(), SyncError>> + Send + 'static,
    {
        let name = name.to_string();
        self.watchers.spawn(async move {
            let problem = ended(tokio::spawn(task)).await;
            SyncError::Task { task: name, problem }
        });
    }

    /// Runs the task `start` makes, and a new one each time it panics, returns an error or ends.
    pub fn restart<S, F>(&mut self, name: &str, mut start: S)
    where
        S: FnMut() -> F + Send + 'static,
        F: Future<Output = Result<(), SyncError>> + Send + 'static,
    {
        let (name, metrics) = (name.to_string(), self.metrics.clone());
        self.watchers.spawn(async move {
            let mut pause = FIRST_PAUSE;
            loop {
                let started = Instant::now();
                let problem = ended(tokio::spawn(start())).await;
                if started.elapsed() >= STABLE_RUN {
                    pause = FIRST_PAUSE;
                }
                metrics.task_restarted(&name);
                tracing::error!(
                    task = name.as_str(),
                    problem,
                    restart_in_ms = pause.as_millis() as u64,
                    "a task of the service failed; restarting it"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        });
    }

    /// Waits until a fatal task failed (or a watcher itself did), and returns why; never returns
    /// while they all run.
    pub async fn failed(&mut self) -> SyncError {
        match self.watchers.join_next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => SyncError::Task {
                task: "supervisor".into(),
                problem: e.to_string(),
            },
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_or_fails_is_restarted_and_counted() {
        let metrics = Arc::new(Metrics::default());
        let mut supervisor = Supervisor::new(metrics.clone());
        let starts = Arc::new(AtomicUsize::new(0));
        let counter = starts.clone();
        supervisor.restart("flaky", move || {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => panic!("the first run dies"),
                    1 => Err(SyncError::Refused("the second run fails".into())),
                    _ => std::future::pending().await,
                }
            }
        });
        // Time is paused: it advances whenever every task waits, so the pauses pass at once.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "restarted after the panic and after the error"
        );
        let rendered = metrics.render();
        assert!(
            rendered.contains("pg_tenancy_sync_task_restarts_total{task=\"flaky\"} 2"),
            "{rendered}"
        );
        // A restarted task does not end the service.
        let failed = tokio::time::timeout(Duration::from_secs(600), supervisor.failed()).await;
        assert!(failed.is_err(), "the service kept running");
        assert_eq!(starts.load(Ordering::SeqCst), 3, "the third run still runs");
    }

    #[tokio::test]
    async fn a_task_the_service_needs_ends_it_with_the_reason() {
        type Case = (
            &'static str,
            std::pin::Pin<Box<dyn Future<Output = Result<(), SyncError>> + Send>>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "panics",
                Box::pin(async { panic!("boom") }),
                "task endpoint: panicked: boom",
            ),
            (
                "fails",
                Box::pin(async { Err(SyncError::Database("connection lost".into())) }),
                "task endpoint: database: connection lost",
            ),
            ("ends", Box::pin(async { Ok(()) }), "task endpoint: ended"),
        ];
        for (name, task, expected) in cases {
            let mut supervisor = Supervisor::new(Arc::new(Metrics::default()));
            supervisor.fatal("endpoint", task);
            supervisor.restart("steady", std::future::pending);
            let e = tokio::time::timeout(Duration::from_secs(10), supervisor.failed())
                .await
                .unwrap_or_else(|_| panic!("{name}: the failure went unnoticed"));
            assert_eq!(e.to_string(), expected, "{name}");
            assert_eq!(e.kind(), "task");
        }
    }
}
