//! The background worker that makes denials durable: it copies new ring entries into
//! `tenancy.audit_log` of the audit database (`tenancy.audit_database`), sends
//! `NOTIFY tenancy_alert` for critical denials and for bursts from one source (recording which in
//! the row's `alert` column), `NOTIFY tenancy_jwks` naming a trusted issuer whose token carried an
//! unknown key id (src/audit/signals.rs), and purges rows
//! older than `tenancy.audit_retention`. An error rolls back its own batch only: the entries stay
//! in the ring and the next round tries again. The postmaster restarts the worker if it dies.

use super::batch::{without_client_fields, write_batch};
use super::classify::{alert_of, classify, Bursts, Classified};
use super::ring::{self, Entry};
use super::settings as gucs;
use super::signals::KeySignals;
use super::standby;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{pg_sys, PgTryBuilder};
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
        // On a hot standby too: it sends that server's denials to the primary (standby.rs).
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Entry point of the worker process.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_tenancy_audit_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::audit_database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // The audit database's owner may set its search_path: resolve nothing through it.
    crate::plumbing::pinned_context::pin_search_path_for_worker();
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
    ring::register_writer(Some(unsafe { pg_sys::MyLatch }));
    // Entries a previous writer claimed and did not persist (it died mid-batch) are unclaimed
    // again: overwriting them is a drop, counted as one.
    ring::unclaim();
    let mut bursts = Bursts::default();
    let mut key_signals = KeySignals::default();
    let (mut last_purge, mut last_warning, mut last_signal_warning) = (0_i64, 0_i64, 0_i64);
    let mut sender = standby::Sender::default();
    let (mut warn_now, mut last_problem) = (false, String::new());
    let (mut check_spool, mut was_standby) = (true, false);
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
        pause = Duration::from_millis(gucs::AUDIT_NAPTIME.get() as u64);
        let standby = standby::forwards();
        // A spool waits to be sent (standby, when its retry is due) or, after a promotion or a
        // restart as a primary, to be written here.
        check_spool |= was_standby && !standby;
        was_standby = standby;
        let spool_due = if standby {
            sender.due() && standby::has_spool()
        } else {
            (check_spool || purge) && standby::has_spool()
        };
        check_spool = false;
        if batch.is_empty() && !purge && !spool_due {
            continue;
        }
        let classified = classify(&batch, &mut bursts, &mut key_signals);
        let outcome = if standby {
            // A hot standby: the batch goes to the primary (or the spool), purging is the
            // primary's.
            in_transaction(|| {
                let started = ring::started_at();
                let next = (!batch.is_empty()).then(|| standby::Batch::of(&batch, &classified.alerts, started));
                classified.count_alerts();
                sender.send(next).map(|()| batch.len() as u64).or_else(|problem| {
                    // Spooled: durable here, and sent once the primary answers.
                    warn_now = true;
                    last_problem = problem;
                    Ok(batch.len() as u64)
                })
            })
        } else {
            let whole = in_transaction(|| {
                if spool_due {
                    standby::record_spool_locally()?;
                }
                write_batch(&batch, &classified.alerts, purge)
            });
            let written = match whole {
                Ok(rows) => {
                    classified.count_alerts();
                    Ok(rows)
                }
                // One entry that cannot be written must never hold back the others.
                Err(problem) if !batch.is_empty() => write_one_by_one(&batch, &classified, &problem),
                Err(problem) => Err(problem),
            };
            if written.is_ok() {
                if let Err(problem) = send_signals(&classified) {
                    if now - last_signal_warning >= HOUSEKEEPING_SECONDS {
                        warning!("pg_tenancy audit writer: {problem}; the denials are recorded, listeners learn of them with the next signal");
                        last_signal_warning = now;
                    }
                }
            }
            written
        };
        match outcome {
            Ok(rows) => {
                if batch.len() == BATCH {
                    pause = Duration::ZERO;
                }
                if let Some(last) = batch.last() {
                    let window = i64::from(gucs::ALERT_BURST_WINDOW.get()) * 1_000_000;
                    bursts.forget_before(last.at - window);
                    ring::mark_persisted(last.seq + 1, rows);
                }
                if purge {
                    last_purge = now;
                }
                if warn_now && now - last_warning >= HOUSEKEEPING_SECONDS {
                    warning!(
                        "pg_tenancy audit writer: {last_problem}; denials are spooled on this standby until it answers"
                    );
                    last_warning = now;
                }
                warn_now = false;
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
    if standby::forwards() {
        spool_the_ring();
    }
    // SIGTERM: at shutdown the postmaster restarts nothing; otherwise (pg_terminate_backend) a
    // non-zero exit has it started again after the restart interval, so auditing never stops.
    ring::register_writer(None);
    log!("pg_tenancy audit writer stopping");
    unsafe { pg_sys::proc_exit(1) };
}

/// At a standby's shutdown: what is still in the ring goes to the spool, to be sent after the
/// restart (a crash loses it, as it loses a primary's unwritten ring).
fn spool_the_ring() {
    loop {
        let batch = ring::claim(BATCH);
        if batch.is_empty() {
            return;
        }
        let alerts: Vec<Option<&str>> = batch
            .iter()
            .map(|e| e.reason().is_critical().then_some("denial"))
            .collect();
        let spooled = in_transaction(|| {
            standby::spool(&standby::Batch::of(&batch, &alerts, ring::started_at())).map(|()| batch.len() as u64)
        });
        match (spooled, batch.last()) {
            (Ok(rows), Some(last)) => ring::mark_persisted(last.seq + 1, rows),
            _ => {
                ring::unclaim();
                return;
            }
        }
    }
}

/// Runs `body` in its own transaction; an error inside rolls the transaction back.
fn in_transaction(body: impl FnOnce() -> Result<u64, String>) -> Result<u64, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let body = AssertUnwindSafe(body);
    // The commit runs inside the try as well: an error at commit is the batch's failure, not the
    // worker's end.
    let committed = std::cell::Cell::new(false);
    let committed_ref = AssertUnwindSafe(&committed);
    let outcome = PgTryBuilder::new(move || {
        let committed = committed_ref;
        let body = body;
        let outcome = (body.0)();
        if outcome.is_ok() {
            unsafe {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            committed.set(true);
        }
        outcome
    })
    .catch_others(|e| Err(format!("{e:?}")))
    .execute();
    if !committed.get() {
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    outcome
}

/// Writes a batch that failed as a whole one entry per transaction, so that an entry that cannot
/// be written holds back no other. An entry that fails alone is written without every field a
/// client chose (claims, application, address, statement; the error in `detail`), keeping who,
/// when, where and why. Progress is marked entry by entry; an error that even the bare entry
/// meets (no audit table, a read-only database) is the database's, not the entry's: it is
/// returned, and the next round tries again from that entry.
fn write_one_by_one(batch: &[Entry], classified: &Classified, problem: &str) -> Result<u64, String> {
    warning!(
        "pg_tenancy audit writer: a batch of {} denials failed ({problem}); writing them one by one",
        batch.len()
    );
    for (index, entry) in batch.iter().enumerate() {
        let single = classified.only(index);
        let written =
            in_transaction(|| write_batch(std::slice::from_ref(entry), &single.alerts, false)).or_else(|own| {
                warning!(
                    "pg_tenancy audit writer: denial {} recorded without its client-supplied fields: {own}",
                    entry.seq
                );
                let bare = without_client_fields(entry, &own);
                in_transaction(|| write_batch(std::slice::from_ref(&bare), &single.alerts, false))
            })?;
        single.count_alerts();
        ring::mark_persisted(entry.seq + 1, written);
    }
    // Everything is marked already.
    Ok(0)
}

/// Sends a batch's signals (`NOTIFY tenancy_jwks` per issuer with an unknown key id,
/// `tenancy_alert` per kind) in a transaction of their own, after its rows are committed. Any role
/// that may `LISTEN` can fill the cluster's notification queue by idling in a transaction; with
/// the signals in the rows' transaction, that failed every batch at commit and stopped the audit
/// trail. Now it fails only the signals: the rows are recorded, and a listener reads every row
/// newer than its cursor at the next signal. One signal per kind and batch: PostgreSQL folds
/// identical notifications of one transaction into one anyway.
fn send_signals(classified: &Classified) -> Result<(), String> {
    if !classified.critical && !classified.burst && classified.signals.is_empty() {
        return Ok(());
    }
    in_transaction(|| {
        Spi::connect_mut(|client| {
            for issuer in &classified.signals {
                notify(client, "tenancy_jwks", issuer)?;
            }
            if classified.critical {
                notify(client, "tenancy_alert", &alert_of("denial"))?;
            }
            if classified.burst {
                notify(client, "tenancy_alert", &alert_of("burst"))?;
            }
            Ok::<(), String>(())
        })?;
        Ok(0)
    })
    .map(|_| ())
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
