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
/// On a Citus worker the trigger fires on a shard of a reference table (`tenancy.members_102008`
/// for `tenancy.members`), whose OID no backend knows: the invalidation then names the table the
/// shard belongs to too, which the worker's backends know (docs/scale-out.md).
#[pg_trigger]
fn invalidate_identities<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::PgTriggerError> {
    let relid = trigger.relid()?;
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
    if let Some(base) = unsafe { table_of_shard(relid) } {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(base) };
    }
    Ok(None)
}

/// The identity table `relid` is a shard of, by Citus's naming (`<table>_<shard id>` in the same
/// schema), when it is one.
unsafe fn table_of_shard(relid: pg_sys::Oid) -> Option<pg_sys::Oid> {
    let name = unsafe { pg_sys::get_rel_name(relid) };
    if name.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes().to_vec();
    let base = shard_base(&name)?;
    let namespace = unsafe { pg_sys::get_rel_namespace(relid) };
    let base = std::ffi::CString::new(base).ok()?;
    let oid = unsafe { pg_sys::get_relname_relid(base.as_ptr(), namespace) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// `members` of `members_102008` when the prefix is one of the identity tables.
fn shard_base(name: &[u8]) -> Option<&[u8]> {
    let cut = name.iter().rposition(|&b| b == b'_')?;
    let (base, suffix) = (&name[..cut], &name[cut + 1..]);
    let numeric = !suffix.is_empty() && suffix.iter().all(u8::is_ascii_digit);
    (numeric && TABLES.iter().any(|t| t.to_bytes() == base)).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::shard_base;

    #[test]
    fn shards_of_identity_tables_are_recognised() {
        for (name, base) in [
            ("members_102008", Some("members")),
            ("_api_key_store_7", Some("_api_key_store")),
            ("revoked_sessions_1", Some("revoked_sessions")),
            ("members", None),
            ("members_", None),
            ("members_x1", None),
            ("documents_102008", None),
            ("members_102008_1", None),
        ] {
            assert_eq!(shard_base(name.as_bytes()), base.map(str::as_bytes), "{name}");
        }
    }
}
