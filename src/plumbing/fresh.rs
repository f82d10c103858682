//! Queries that must see the latest committed state, whatever the caller's isolation level.
//!
//! The double check (membership, revoked sessions, trusted keys, API keys) runs inside the
//! caller's transaction. In REPEATABLE READ or SERIALIZABLE that transaction reads with one
//! snapshot taken at its first statement, so a member disabled or a session revoked after it began
//! would stay invisible, and the identity verified under that stale view would even be cached for
//! later transactions. These queries therefore run read-only under `GetLatestSnapshot()`, through
//! plain SPI (pgrx's client switches to the transaction snapshot once the transaction has written).
//! Arguments and results are text; each plan is prepared once per backend and kept.

use super::spi;
use pgrx::pg_sys;
use std::cell::Cell;
use std::ffi::CStr;
use std::thread::LocalKey;

/// Where a kept plan lives between calls.
pub type PlanSlot = LocalKey<Cell<pg_sys::SPIPlanPtr>>;

/// Runs `sql` (parameters `$1`… of type text) with `args`, returning every row as text columns.
pub fn query(slot: &'static PlanSlot, sql: &CStr, args: &[Option<&str>]) -> Vec<Vec<Option<String>>> {
    unsafe {
        spi::connect();
        let mut plan = slot.get();
        if plan.is_null() {
            let mut types = vec![pg_sys::TEXTOID; args.len()];
            plan = pg_sys::SPI_prepare(sql.as_ptr(), args.len() as i32, types.as_mut_ptr());
            if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                super::errors::internal("preparing an identity query failed");
            }
            slot.set(plan);
        }
        // A NUL byte, which no text can hold, is dropped.
        let mut values: Vec<pg_sys::Datum> = args
            .iter()
            .map(|a| spi::text_datum(&a.unwrap_or_default().replace('\0', "")))
            .collect();
        let nulls: Vec<std::ffi::c_char> = args.iter().map(|a| spi::null_flag(a.is_some())).collect();
        // A parallel operation may not take a new snapshot: read with the statement's, and let the
        // caller not cache the result (see `latest`).
        let latest = latest();
        if latest {
            pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        }
        let status = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), true, 0);
        if latest {
            pg_sys::PopActiveSnapshot();
        }
        if status != pg_sys::SPI_OK_SELECT as i32 {
            super::errors::internal(format!("an identity query failed (SPI result {status})"));
        }
        let rows = spi::result_as_text();
        spi::finish();
        rows
    }
}

/// Whether queries here see the latest committed state. Not while the leader runs a parallel
/// plan: it reads with the statement's snapshot then (stale under REPEATABLE READ), so an identity
/// verified there must not be cached beyond the statement.
pub fn latest() -> bool {
    !super::unguarded::is_in_parallel_mode()
}

/// A boolean column as PostgreSQL prints it.
pub fn flag(value: &Option<String>) -> bool {
    value.as_deref() == Some("t")
}
