//! Pinned context and least rights for the extension's own lookups, with nothing of the caller's
//! session in them.
//!
//! Identity, issuer, membership, revocation, API-key and key-use statements run inside the
//! caller's transaction but must not depend on the caller's grants, and must not resolve a single
//! name through the caller's session: a role that can create a function, operator or type in one
//! schema (its own, `public`, or `pg_temp`, which is searched first for types) could otherwise
//! shadow a `pg_catalog` name that a lookup uses and run its code with the lookup's rights (the
//! CVE-2018-1058 class; `pg_regress/sql/privileges.sql` is the attack). So each lookup:
//! - runs as `tenancy_lookup`, a NOLOGIN role that owns nothing and may only read the identity
//!   tables and record API-key use (`sql/schema.sql`), never as a superuser;
//! - runs as a security-restricted operation (no `SET ROLE`, no credential settings, no
//!   temporary objects inside it);
//! - pins `search_path = pg_catalog, pg_temp` for its duration, as PostgreSQL's own maintenance
//!   commands do, and qualifies every function, operator and type anyway.
//!
//! The pin costs one GUC save and restore (about 2 µs), paid only on an identity-cache miss.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::ffi::CStr;

/// The role every lookup runs as (created by `CREATE EXTENSION`, cluster-wide).
pub const LOOKUP_ROLE: &CStr = c"tenancy_lookup";
/// The only search path a lookup resolves names in.
pub const PINNED_SEARCH_PATH: &CStr = c"pg_catalog, pg_temp";

/// Runs `f` as `tenancy_lookup` under a pinned `search_path`. An error inside restores both
/// through the (sub)transaction's abort, as for a SECURITY DEFINER function.
pub fn as_lookup_role<R>(f: impl FnOnce() -> R) -> R {
    let role = unsafe { pg_sys::get_role_oid(LOOKUP_ROLE.as_ptr(), true) };
    if role == pg_sys::InvalidOid {
        super::errors::error(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT)
            .message("role \"tenancy_lookup\" does not exist")
            .detail("pg_tenancy's identity lookups run as that role.")
            .hint("Run ALTER EXTENSION pg_tenancy UPDATE (or CREATE EXTENSION pg_tenancy) as a superuser.")
            .raise();
    }
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    let nest_level = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        let level = pg_sys::NewGUCNestLevel();
        pin_search_path();
        allow_local_reads_under_citus();
        level
    };
    let result = f();
    unsafe {
        pg_sys::AtEOXact_GUC(true, nest_level);
        pg_sys::SetUserIdAndSecContext(user, context);
    }
    result
}

/// Runs `f` as the caller under a pinned `search_path` (what a function's `SET search_path`
/// clause does, without the function call): for SQL built and run by Rust on the caller's
/// behalf. An error inside restores the setting through the (sub)transaction's abort.
pub fn with_pinned_search_path<R>(f: impl FnOnce() -> R) -> R {
    let nest_level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pin_search_path();
        level
    };
    let result = f();
    unsafe { pg_sys::AtEOXact_GUC(true, nest_level) };
    result
}

/// On a Citus node, lets the lookups read the identity tables' placements from inside a query on
/// a shard: a worker verifies the credential the coordinator forwarded while it runs the shard
/// query's first statement, and Citus refused the lookup there as a nested distributed query
/// (XX000 "cannot execute a distributed query from a query on a shard"). The identity tables are
/// reference tables with a placement on every node (`tenancy.distribute`), so the nested read is
/// a local one and sees what the node holds. The setting (USERSET, Citus's) is restored with the
/// lookup's nest level; without Citus it does not exist and nothing is set.
///
/// # Safety
/// Call inside a transaction, after `NewGUCNestLevel`.
unsafe fn allow_local_reads_under_citus() {
    if super::citus::loaded() {
        unsafe { set_at_nest_level(super::citus::NESTED_EXECUTION, c"on") };
    }
}

/// Sets `search_path = pg_catalog, pg_temp` at the current GUC nest level (restored when the
/// level ends).
///
/// # Safety
/// Call inside a transaction, after `NewGUCNestLevel`.
unsafe fn pin_search_path() {
    unsafe { set_at_nest_level(c"search_path", PINNED_SEARCH_PATH) };
}

/// Sets the user-settable `name` to `value` at the current GUC nest level, as a function's SET
/// clause does: restored when the level ends (or the transaction aborts).
///
/// # Safety
/// Call inside a transaction, after `NewGUCNestLevel`.
pub unsafe fn set_at_nest_level(name: &CStr, value: &CStr) {
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// Pins `search_path` for the rest of a background worker's life (it connects with the audit
/// database's and its role's settings, which a database owner may write).
pub fn pin_search_path_for_worker() {
    unsafe {
        pg_sys::SetConfigOption(
            c"search_path".as_ptr(),
            PINNED_SEARCH_PATH.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        );
    }
}
