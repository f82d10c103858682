//! Dropping cached identities in every backend when the tables they were checked against change.
//!
//! Row changes alone send no invalidation. A statement-level trigger on each of the extension's
//! tables calls `CacheInvalidateRelcacheByRelid` for that table; after the writer commits, every
//! backend's relcache callback sees the table's OID at its next command boundary and bumps the
//! identity epoch. Nothing polls, and no shared memory is needed.

use super::counters;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;

/// The tables whose changes invalidate identities.
const TABLES: [&std::ffi::CStr; 5] = [
    c"issuers",
    c"workspaces",
    c"members",
    c"revoked_sessions",
    c"_api_key_store",
];

thread_local! {
    /// OIDs of `TABLES` in this database, once known.
    static TABLE_OIDS: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
}

/// Registers the relcache callback.
pub fn init() {
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0)) };
}

/// Looks up the OIDs of the tables (called inside a transaction, before identities are cached).
pub fn remember_tables() {
    let namespace = unsafe { pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true) };
    if namespace == pg_sys::InvalidOid {
        return;
    }
    let oids = TABLES
        .iter()
        .map(|t| unsafe { pg_sys::get_relname_relid(t.as_ptr(), namespace) })
        .filter(|oid| *oid != pg_sys::InvalidOid)
        .collect();
    TABLE_OIDS.with_borrow_mut(|known| *known = oids);
}

/// Bumps the identity epoch when one of our tables (or every relation) is invalidated. It only
/// touches counters: it may run in the middle of a lookup.
#[pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let ours = relid == pg_sys::InvalidOid
        || TABLE_OIDS.with(|known| {
            known
                .try_borrow()
                .map(|k| k.is_empty() || k.contains(&relid))
                .unwrap_or(true)
        });
    if ours {
        counters::invalidate();
    }
}

/// Statement-level trigger on the identity tables: broadcast a relcache invalidation for them.
#[pg_trigger]
fn invalidate_identities<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::PgTriggerError> {
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(trigger.relid()?) };
    Ok(None)
}
