//! The background worker that makes denials durable: it copies new ring entries into
//! `tenancy.audit_log` of the audit database (`tenancy.audit_database`), sends
//! `NOTIFY tenancy_alert` for critical denials and for bursts from one source (recording which in
//! the row's `alert` column), `NOTIFY tenancy_jwks` naming a trusted issuer whose token carried an
//! unknown key id (src/audit/signals.rs), and purges rows
//! older than `tenancy.audit_retention`. An error rolls back its own batch only: the entries stay
//! in the ring and the next round tries again. The postmaster restarts the worker if it dies.

use super::ring::{self, Counter, Entry};
use super::settings as gucs;
use super::signals::KeySignals;
use crate::verify::Reason;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgOid, PgTryBuilder};
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// Entries written per transaction.
const BATCH: usize = 500;
/// Seconds between purges of expired rows, and between repeated warnings.
const HOUSEKEEPING_SECONDS: i64 = 60;

/// Registers the worker with the postmaster (while shared_preload_libraries is processed).
pub fn register() {
    BackgroundWorkerBuilder::new("pg_tenancy audit writer")
        .set_type("pg_tenancy audit")
        .set_library("pg_tenancy")
        .set_function("pg_tenancy_audit_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Denials per source within the burst window, and when each source last raised an alert.
#[derive(Default)]
struct Bursts {
    seen: HashMap<String, VecDeque<i64>>,
    alerted: HashMap<String, i64>,
}

impl Bursts {
    /// Counts a denial of `source` at `at` (microseconds); returns the count when it makes a burst
    /// that has not been alerted within the window.
    fn note(&mut self, source: &str, at: i64, threshold: usize, window: i64) -> Option<usize> {
        let times = self.seen.entry(source.to_string()).or_default();
        times.push_back(at);
        while times.front().is_some_and(|t| *t <= at - window) {
            times.pop_front();
        }
        let count = times.len();
        let recently = self.alerted.get(source).is_some_and(|t| *t > at - window);
        if count > threshold && !recently {
            self.alerted.insert(source.to_string(), at);
            return Some(count);
        }
        None
    }

    /// Forgets sources quiet for longer than the window.
    fn forget_before(&mut self, cutoff: i64) {
        self.seen.retain(|_, times| times.back().is_some_and(|t| *t > cutoff));
        self.alerted.retain(|_, t| *t > cutoff);
    }
}

/// Entry point of the worker process.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_tenancy_audit_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::audit_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // The audit database's owner may set its search_path: resolve nothing through it.
    crate::plumbing::raised::pin_search_path_for_worker();
    // A persisted denial must survive a crash even where the server runs with
    // synchronous_commit = off.
    unsafe {
        pg_sys::SetConfigOption(
            c"synchronous_commit".as_ptr(),
            c"on".as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
    log!("pg_tenancy audit writer started (database \"{database}\")");
    let mut bursts = Bursts::default();
    let mut key_signals = KeySignals::default();
    let (mut last_purge, mut last_warning) = (0_i64, 0_i64);
    // After a full batch the next round starts at once: a storm is copied as fast as the writer
    // goes, not at BATCH per naptime.
    let mut pause = Duration::from_millis(gucs::AUDIT_NAPTIME.get() as u64);
    while BackgroundWorker::wait_latch(Some(pause)) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let now = unsafe { pg_sys::GetCurrentTimestamp() } / 1_000_000;
        let purge = now - last_purge >= HOUSEKEEPING_SECONDS;
        let batch = ring::claim(BATCH);
        pause = if batch.len() == BATCH {
            Duration::ZERO
        } else {
            Duration::from_millis(gucs::AUDIT_NAPTIME.get() as u64)
        };
        if batch.is_empty() && !purge {
            continue;
        }
        match in_transaction(|| write_batch(&batch, &mut bursts, &mut key_signals, purge)) {
            Ok(rows) => {
                if let Some(last) = batch.last() {
                    ring::mark_persisted(last.seq + 1, rows);
                }
                if purge {
                    last_purge = now;
                }
            }
            Err(problem) => {
                ring::unclaim();
                if now - last_warning >= HOUSEKEEPING_SECONDS {
                    warning!("pg_tenancy audit writer: {problem}; denials stay in shared memory");
                    last_warning = now;
                }
            }
        }
    }
    // SIGTERM: at shutdown the postmaster restarts nothing; otherwise (pg_terminate_backend) a
    // non-zero exit has it started again after the restart interval, so auditing never stops.
    log!("pg_tenancy audit writer stopping");
    unsafe { pg_sys::proc_exit(1) };
}

/// Runs `body` in its own transaction; an error inside rolls the transaction back.
fn in_transaction(body: impl FnOnce() -> Result<u64, String>) -> Result<u64, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let body = AssertUnwindSafe(body);
    let outcome = PgTryBuilder::new(move || {
        let body = body;
        (body.0)()
    })
    .catch_others(|e| Err(format!("{e:?}")))
    .execute();
    unsafe {
        if outcome.is_ok() {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        } else {
            pg_sys::AbortCurrentTransaction();
        }
    }
    outcome
}

/// The insert of one entry; names are resolved from the shared catalogs. Every function, operator
/// and type is qualified (and `search_path` is pinned for the worker's life, `src/raised.rs`).
const INSERT: &str = "\
INSERT INTO tenancy.audit_log (ring_started_at, seq, at, reason, critical, pid, database, role,
                               client_addr, application_name, iss, sub, org_id, sid, kid, exp,
                               detail, statement, alert)
SELECT $1, $2, $3, $4, $5, $6,
       coalesce((SELECT CAST(d.datname AS pg_catalog.text) FROM pg_catalog.pg_database d
                  WHERE d.oid OPERATOR(pg_catalog.=) $7), 'oid:' OPERATOR(pg_catalog.||) $7),
       coalesce((SELECT CAST(r.rolname AS pg_catalog.text) FROM pg_catalog.pg_roles r
                  WHERE r.oid OPERATOR(pg_catalog.=) $8), 'oid:' OPERATOR(pg_catalog.||) $8),
       $9, $10, $11, $12, $13, $14, $15,
       pg_catalog.to_timestamp($16), $17, $18, $19
ON CONFLICT (ring_started_at, seq) DO NOTHING";

/// A text field of a ring entry as a column value: empty (not recorded) is NULL.
fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// The insert into a 0.1.0 audit log (the library updated, `ALTER EXTENSION … UPDATE` not yet
/// run): the same without the `alert` column.
fn insert_for(alert_column: bool) -> String {
    if alert_column {
        return INSERT.to_string();
    }
    INSERT
        .replace(", statement, alert)", ", statement)")
        .replace("$18, $19", "$18")
}

/// Writes `batch`, sends its alerts and key signals, and purges expired rows when `purge`.
fn write_batch(batch: &[Entry], bursts: &mut Bursts, key_signals: &mut KeySignals, purge: bool) -> Result<u64, String> {
    let installed = Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('tenancy.audit_log') IS NOT NULL")
        .map_err(|e| e.to_string())?
        .unwrap_or(false);
    if !installed {
        return Err(format!(
            "pg_tenancy is not installed in database \"{}\" (tenancy.audit_database)",
            gucs::audit_database()
        ));
    }
    let alert_column = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid OPERATOR(pg_catalog.=) CAST('tenancy.audit_log' AS pg_catalog.regclass)
                           AND a.attname OPERATOR(pg_catalog.=) 'alert' AND NOT a.attisdropped)",
    )
    .map_err(|e| e.to_string())?
    .unwrap_or(false);
    let insert = insert_for(alert_column);
    let started = pgrx::datum::TimestampWithTimeZone::try_from(ring::started_at()).map_err(|e| format!("{e:?}"))?;
    let threshold = gucs::ALERT_BURST_COUNT.get() as usize;
    let window = i64::from(gucs::ALERT_BURST_WINDOW.get()) * 1_000_000;
    let mut rows = 0;
    Spi::connect_mut(|client| {
        // Planned once per batch: the per-row parse and plan halved the writer's rate (a storm
        // of 10,000 critical denials at 2,800/s overflowed the 1,024-entry ring at ~1,100 rows/s).
        let mut prepared = None;
        let (mut critical, mut burst_seen) = (false, false);
        for entry in batch {
            let at = pgrx::datum::TimestampWithTimeZone::try_from(entry.at).map_err(|e| format!("{e:?}"))?;
            let reason = entry.reason();
            let exp = (entry.exp != i64::MIN).then_some(entry.exp as f64);
            let source = format!("{}|{}|{}", entry.client.get(), entry.role, entry.database);
            let burst = bursts.note(&source, entry.at, threshold, window).is_some();
            let alert = if reason.is_critical() {
                Some("denial")
            } else {
                burst.then_some("burst")
            };
            let mut args: Vec<pgrx::datum::DatumWithOid> = vec![
                started.into(),
                (entry.seq as i64).into(),
                at.into(),
                reason.code().into(),
                reason.is_critical().into(),
                entry.pid.into(),
                i64::from(entry.database).into(),
                i64::from(entry.role).into(),
                non_empty(entry.client.get()).into(),
                entry.application.get().into(),
                non_empty(entry.iss.get()).into(),
                non_empty(entry.sub.get()).into(),
                non_empty(entry.org_id.get()).into(),
                non_empty(entry.sid.get()).into(),
                non_empty(entry.kid.get()).into(),
                exp.into(),
                entry.detail.get().into(),
                entry.statement.get().into(),
            ];
            if alert_column {
                args.push(alert.into());
            }
            if prepared.is_none() {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                prepared = Some(client.prepare_mut(insert.as_str(), &types).map_err(|e| e.to_string())?);
            }
            if let Some(statement) = &prepared {
                client.update(statement, None, &args).map_err(|e| e.to_string())?;
            }
            rows += 1;
            for (raised, seen) in [(reason.is_critical(), &mut critical), (burst, &mut burst_seen)] {
                if raised {
                    ring::count(Counter::Alerts);
                    *seen = true;
                }
            }
            if reason == Reason::UnknownKey && key_signals.allow(entry.iss.get(), entry.at) {
                notify(client, "tenancy_jwks", entry.iss.get())?;
            }
        }
        // One signal per kind and batch: PostgreSQL folds identical notifications of one
        // transaction into one anyway, and a listener reads every row newer than its cursor.
        if critical {
            notify(client, "tenancy_alert", &alert_of("denial"))?;
        }
        if burst_seen {
            notify(client, "tenancy_alert", &alert_of("burst"))?;
        }
        if let Some(last) = batch.last() {
            bursts.forget_before(last.at - window);
        }
        if purge && gucs::AUDIT_RETENTION.get() > 0 {
            client
                .update(
                    "DELETE FROM tenancy.audit_log
                      WHERE at OPERATOR(pg_catalog.<)
                            (pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(days => $1))",
                    None,
                    &[gucs::AUDIT_RETENTION.get().into()],
                )
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    })?;
    Ok(rows)
}

/// The payload of an alert: a wake-up signal that names its kind and severity and nothing else.
/// Any role that may connect to the audit database can `LISTEN tenancy_alert`; the details stay
/// in `tenancy.audit_log`, readable by `tenancy_admin` and `tenancy_auditor` only.
fn alert_of(kind: &str) -> String {
    serde_json::json!({ "kind": kind, "severity": "critical" }).to_string()
}

/// `NOTIFY channel, payload` (delivered when the batch commits).
fn notify(client: &mut pgrx::spi::SpiClient<'_>, channel: &str, payload: &str) -> Result<(), String> {
    client
        .update(
            "SELECT pg_catalog.pg_notify($1, $2)",
            None,
            &[channel.into(), payload.into()],
        )
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Bursts;

    #[test]
    fn a_burst_alerts_once_per_window() {
        let mut bursts = Bursts::default();
        let second = 1_000_000;
        let alerts: Vec<_> = (0..30)
            .filter_map(|i| bursts.note("10.0.0.1|10|5", i * second / 10, 20, 10 * second))
            .collect();
        assert_eq!(
            alerts,
            vec![21],
            "the 21st denial within 10 s alerts, later ones do not"
        );
        assert_eq!(
            bursts.note("10.0.0.2|10|5", 0, 20, 10 * second),
            None,
            "another source counts apart"
        );
        let later: Vec<_> = (0..25)
            .filter_map(|i| bursts.note("10.0.0.1|10|5", 20 * second + i, 20, 10 * second))
            .collect();
        assert_eq!(later, vec![21], "a new window alerts again");
    }
}
