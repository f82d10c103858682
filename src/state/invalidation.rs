//! Dropping cached identities in every backend when the tables they were checked against change.
//!
//! Row changes alone send no invalidation. Two things send one, with `CacheInvalidateRelcacheByRelid`
//! for the table; after the writer commits, every backend's relcache callback sees the table's OID
//! at its next command boundary and bumps the identity epoch. Nothing polls, and no shared memory
//! is needed.
//! - An internal statement-level trigger on each identity table: it fires in every backend,
//!   including one that never loaded the library. Internal (`pg_trigger.tgisinternal`, as a
//!   foreign key's triggers): Citus counts only explicit triggers when it refuses to make a table
//!   a reference table ("cannot distribute relation because it has triggers", `citus/commands/
//!   trigger.c`, `GetExplicitTriggerIdList`), so the identity tables can become reference tables
//!   without `citus.enable_unsafe_triggers`; nothing else treats them differently, and `psql`'s
//!   `\d` does not list them.
//! - The statement itself, seen by the hooks of a backend that loaded the library (preloaded):
//!   `ExecutorStart` of a statement that writes to an identity table or to a Citus shard of one
//!   (`tenancy.members_102008`, which carries no trigger: Citus copies only explicit ones), and
//!   `ProcessUtility` of `COPY … FROM` and `TRUNCATE` on them. This also covers writes that fire no
//!   trigger (`session_replication_role = replica`, triggers disabled).

use super::counters;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;
use std::cell::{Cell, RefCell};

/// The tables whose changes invalidate identities.
const TABLES: [&std::ffi::CStr; 5] = [
    c"issuers",
    c"workspaces",
    c"members",
    c"revoked_sessions",
    c"_api_key_store",
];

/// Name of the invalidation triggers (PostgreSQL appends `_<trigger OID>` to an internal one's).
const TRIGGER: &std::ffi::CStr = c"invalidate_identities";

thread_local! {
    /// OIDs of `TABLES` in this database, once known.
    static TABLE_OIDS: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    /// OID of the `tenancy` schema, once known.
    static NAMESPACE: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// Registers the relcache callback.
pub fn init() {
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(bump_epoch_on_invalidation), pg_sys::Datum::from(0)) };
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
    NAMESPACE.set(namespace);
}

/// Bumps the identity epoch when one of our tables (or every relation) is invalidated. It only
/// touches counters: it may run in the middle of a lookup.
#[pg_guard]
unsafe extern "C-unwind" fn bump_epoch_on_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
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

/// Sends the invalidation of the identity table a statement about to run writes to (`INSERT`,
/// `UPDATE`, `DELETE`, `MERGE`, a writing CTE), directly or through a Citus shard of it. Queued in
/// the transaction: sent at commit, dropped by a rollback. Called from `ExecutorStart`; a
/// statement that writes nothing costs one comparison.
///
/// # Safety
/// `stmt` is the statement's valid `PlannedStmt`, inside a transaction.
pub unsafe fn note_planned_writes(stmt: *mut pg_sys::PlannedStmt) {
    unsafe {
        if stmt.is_null() || ((*stmt).commandType == pg_sys::CmdType::CMD_SELECT && !(*stmt).hasModifyingCTE) {
            return;
        }
        for rte in PgList::<pg_sys::RangeTblEntry>::from_pg((*stmt).rtable).iter_ptr() {
            if (*rte).rtekind == pg_sys::RTEKind::RTE_RELATION {
                note_write((*rte).relid);
            }
        }
    }
}

/// The same for the utility statements that write rows without the executor: `COPY … FROM` and
/// `TRUNCATE`. Names resolve as the statement itself will resolve them (a name that does not
/// resolve is left to the statement's own error).
///
/// # Safety
/// `node` is the statement's valid utility parse tree, inside a transaction.
pub unsafe fn note_utility_writes(node: *mut pg_sys::Node) {
    unsafe {
        if node.is_null() {
            return;
        }
        let relations: Vec<*mut pg_sys::RangeVar> = match (*node).type_ {
            pg_sys::NodeTag::T_CopyStmt => {
                let copy = node.cast::<pg_sys::CopyStmt>();
                if (*copy).is_from && !(*copy).relation.is_null() {
                    vec![(*copy).relation]
                } else {
                    vec![]
                }
            }
            pg_sys::NodeTag::T_TruncateStmt => {
                PgList::<pg_sys::RangeVar>::from_pg((*node.cast::<pg_sys::TruncateStmt>()).relations)
                    .iter_ptr()
                    .collect()
            }
            _ => return,
        };
        for relation in relations {
            let relid = pg_sys::RangeVarGetRelidExtended(
                relation,
                pg_sys::NoLock as pg_sys::LOCKMODE,
                pg_sys::RVROption::RVR_MISSING_OK,
                None,
                std::ptr::null_mut(),
            );
            if relid != pg_sys::InvalidOid {
                note_write(relid);
            }
        }
    }
}

/// Queues the invalidation of `relid`'s identity table, when it is one or a shard of one.
unsafe fn note_write(relid: pg_sys::Oid) {
    if TABLE_OIDS.with_borrow(Vec::is_empty) {
        remember_tables();
    }
    let table = if TABLE_OIDS.with_borrow(|known| known.contains(&relid)) {
        Some(relid)
    } else if NAMESPACE.get() != pg_sys::InvalidOid && unsafe { pg_sys::get_rel_namespace(relid) } == NAMESPACE.get() {
        unsafe { table_of_shard(relid) }
    } else {
        None
    };
    if let Some(table) = table {
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(table) };
    }
}

/// `tenancy._create_invalidation_trigger(table)`: puts the invalidation trigger on the identity
/// table `table` (of the `tenancy` schema) as an internal trigger, unless it has one (the
/// install and upgrade scripts call it; `tenancy.coverage` names it as the fix when one is
/// missing, as after a `pg_upgrade`, whose dump leaves internal triggers out). The caller must
/// own the table.
#[pg_extern]
fn _create_invalidation_trigger(table: &str) {
    use crate::plumbing::errors::error;
    if !TABLES.iter().any(|t| t.to_bytes() == table.as_bytes()) {
        error(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE)
            .message(format!("\"{table}\" is not one of the identity tables"))
            .hint("The identity tables are issuers, workspaces, members, revoked_sessions and _api_key_store.")
            .raise();
    }
    let name = std::ffi::CString::new(table).unwrap_or_default();
    let relid =
        unsafe { pg_sys::get_relname_relid(name.as_ptr(), pg_sys::get_namespace_oid(c"tenancy".as_ptr(), false)) };
    let (owner, present, function) = pgrx::Spi::get_three_with_args::<bool, bool, pg_sys::Oid>(
        "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE'),
                EXISTS (SELECT FROM pg_catalog.pg_trigger t
                         WHERE t.tgrelid OPERATOR(pg_catalog.=) c.oid AND t.tgfoid OPERATOR(pg_catalog.=) f.oid),
                f.oid
           FROM pg_catalog.pg_class c,
                (SELECT CAST(CAST('tenancy.invalidate_identities()' AS pg_catalog.regprocedure) AS pg_catalog.oid)) f(oid)
          WHERE c.oid OPERATOR(pg_catalog.=) $1",
        &[relid.into()],
    )
    .unwrap_or((None, None, None));
    if owner != Some(true) {
        error(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE)
            .message(format!(
                "must be the owner of tenancy.{table} to create its invalidation trigger"
            ))
            .raise();
    }
    if present == Some(true) {
        return;
    }
    let function = function.unwrap_or(pg_sys::InvalidOid);
    unsafe {
        let stmt = pg_sys::palloc0(size_of::<pg_sys::CreateTrigStmt>()).cast::<pg_sys::CreateTrigStmt>();
        (*stmt).type_ = pg_sys::NodeTag::T_CreateTrigStmt;
        (*stmt).trigname = pg_sys::pstrdup(TRIGGER.as_ptr());
        (*stmt).relation =
            pg_sys::makeRangeVar(pg_sys::pstrdup(c"tenancy".as_ptr()), pg_sys::pstrdup(name.as_ptr()), -1);
        (*stmt).funcname = PgList::<pg_sys::Node>::new().into_pg();
        (*stmt).row = false;
        (*stmt).timing = pg_sys::TRIGGER_TYPE_AFTER as i16;
        (*stmt).events = (pg_sys::TRIGGER_TYPE_INSERT
            | pg_sys::TRIGGER_TYPE_UPDATE
            | pg_sys::TRIGGER_TYPE_DELETE
            | pg_sys::TRIGGER_TYPE_TRUNCATE) as i16;
        pg_sys::CreateTrigger(
            stmt,
            c"".as_ptr(),
            relid,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            pg_sys::InvalidOid,
            function,
            pg_sys::InvalidOid,
            std::ptr::null_mut(),
            true,
            false,
        );
        pg_sys::CommandCounterIncrement();
    }
}

/// `members` of `members_102008` when the prefix is one of the identity tables.
fn shard_base(name: &[u8]) -> Option<&[u8]> {
    let cut = name.iter().rposition(|&b| b == b'_')?;
    let (base, suffix) = (&name[..cut], &name[cut + 1..]);
    let numeric = !suffix.is_empty() && suffix.iter().all(u8::is_ascii_digit);
    (numeric && TABLES.iter().any(|t| t.to_bytes() == base)).then_some(base)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    #[cfg(test)]
    use super::shard_base;
    use crate::test_support::sqlstate_of;
    use pgrx::prelude::*;

    /// The identity epoch after the current command's invalidations were taken in.
    fn epoch_after_command() -> u64 {
        unsafe { pg_sys::CommandCounterIncrement() };
        crate::state::counters::epoch()
    }

    #[pg_test]
    fn writes_that_fire_no_trigger_still_invalidate_identities() {
        // A Citus shard of an identity table carries no trigger (Citus copies only explicit ones);
        // the identity tables' own triggers are disabled here, so only the hooks can tell.
        Spi::run(
            "CREATE TABLE tenancy.members_102008 (LIKE tenancy.members);
             CREATE TABLE public.unrelated (LIKE tenancy.members);
             ALTER TABLE tenancy.members DISABLE TRIGGER ALL;
             ALTER TABLE tenancy.revoked_sessions DISABLE TRIGGER ALL",
        )
        .unwrap();
        // Writes to an identity table or to a shard of one, however they are made.
        let invalidating = [
            "INSERT INTO tenancy.members_102008 VALUES ('ws_a', 'user_a', NULL, NULL)",
            "UPDATE tenancy.members_102008 SET disabled_at = now()",
            "DELETE FROM tenancy.members_102008",
            "INSERT INTO tenancy.members VALUES ('ws_x', 'user_x', NULL, NULL)",
            "WITH d AS (DELETE FROM tenancy.members WHERE user_id = 'user_x' RETURNING 1) SELECT count(*) FROM d",
            "MERGE INTO tenancy.members_102008 m USING (VALUES ('ws_a', 'user_a')) v(w, u) ON m.user_id = v.u
                 WHEN NOT MATCHED THEN INSERT VALUES (v.w, v.u, NULL, NULL)",
            "COPY tenancy.members_102008 FROM '/dev/null'",
            "TRUNCATE tenancy.members_102008",
            "TRUNCATE tenancy.revoked_sessions",
        ];
        // Reads of identity tables, and writes elsewhere.
        let neutral = [
            "SELECT count(*) FROM tenancy.members",
            "INSERT INTO public.unrelated VALUES ('ws_a', 'user_a', NULL, NULL)",
            "COPY public.unrelated FROM '/dev/null'",
            "COPY tenancy.members TO '/dev/null'",
            "TRUNCATE public.unrelated",
        ];
        let statements = invalidating
            .iter()
            .map(|s| (s, true))
            .chain(neutral.iter().map(|s| (s, false)));
        for (statement, invalidates) in statements {
            let before = epoch_after_command();
            Spi::run(statement).unwrap();
            let after = epoch_after_command();
            assert_eq!(after > before, invalidates, "{statement}");
        }
    }

    #[pg_test]
    fn the_invalidation_triggers_are_internal_and_recreatable() {
        let name = "SELECT tgname::text FROM pg_trigger WHERE tgrelid = 'tenancy.members'::regclass
                     AND tgfoid = 'tenancy.invalidate_identities()'::regprocedure";
        let name = Spi::get_one::<String>(name).unwrap().unwrap_or_default();
        assert!(name.starts_with("invalidate_identities_"), "{name}");
        // What Citus counts before it makes a table a reference table: explicit triggers.
        let explicit = "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                         WHERE c.relnamespace = 'tenancy'::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0
                           AND c.relname IN ('issuers', 'workspaces', 'members', 'revoked_sessions', '_api_key_store')";
        assert_eq!(Spi::get_one::<i64>(explicit).unwrap(), Some(0));
        let internal = "SELECT count(*) FROM pg_trigger WHERE tgisinternal
                         AND tgfoid = 'tenancy.invalidate_identities()'::regprocedure";
        assert_eq!(Spi::get_one::<i64>(internal).unwrap(), Some(5));
        let missing = "SELECT count(*) FROM tenancy.coverage WHERE finding = 'invalidation_trigger_missing'";
        assert_eq!(Spi::get_one::<i64>(missing).unwrap(), Some(0));
        let drop = |table: &str| {
            format!(
                "DO $$ BEGIN EXECUTE (SELECT format('DROP TRIGGER %I ON tenancy.{table}', tgname) FROM pg_trigger
                   WHERE tgrelid = 'tenancy.{table}'::regclass AND tgfoid = 'tenancy.invalidate_identities()'::regprocedure); END $$"
            )
        };
        Spi::run(&drop("members")).unwrap();
        assert_eq!(Spi::get_one::<i64>(missing).unwrap(), Some(1), "coverage reports it");
        Spi::run("SELECT tenancy._create_invalidation_trigger('members')").unwrap();
        Spi::run("SELECT tenancy._create_invalidation_trigger('members')").unwrap();
        assert_eq!(Spi::get_one::<i64>(internal).unwrap(), Some(5), "recreated once");
        assert_eq!(Spi::get_one::<i64>(missing).unwrap(), Some(0));
        for (call, code) in [
            ("SELECT tenancy._create_invalidation_trigger('documents')", "22023"),
            ("SELECT tenancy._create_invalidation_trigger('members_102008')", "22023"),
        ] {
            assert_eq!(sqlstate_of(call).as_deref(), Some(code), "{call}");
        }
        Spi::run(&drop("issuers")).unwrap();
        Spi::run(
            "CREATE ROLE tenancy_test_not_owner;
             GRANT USAGE ON SCHEMA tenancy TO tenancy_test_not_owner;
             GRANT EXECUTE ON FUNCTION tenancy._create_invalidation_trigger(text) TO tenancy_test_not_owner;
             SET ROLE tenancy_test_not_owner",
        )
        .unwrap();

        assert_eq!(
            sqlstate_of("SELECT tenancy._create_invalidation_trigger('issuers')").as_deref(),
            Some("42501"),
            "only the owner"
        );
        Spi::run("RESET ROLE").unwrap();
    }

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
