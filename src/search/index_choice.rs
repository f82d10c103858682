//! Which vector indexes the planner may use on a protected table (`get_relation_info_hook`).
//!
//! A vector index shared by every workspace answers `ORDER BY embedding <=> $1 LIMIT k` by
//! walking the whole table's graph and filtering out other workspaces' rows afterwards: a small
//! workspace gets fewer than k rows, often none. Measured (docs/benchmarks.md, "Plain SQL"): with
//! the identity folded into the plan (a session credential), PostgreSQL chose the shared HNSW
//! index for every workspace above a few hundred rows and returned k rows for 7.5 % of whale
//! queries, 0 % of large and 80 % of medium ones; with `SET LOCAL` (an initPlan, value unknown to
//! the planner) it chose the B-tree and a sort and was exact. So for statements on a table that
//! `tenancy.protect` guards, with its row-level security in force, such shared indexes are
//! removed from the planner's choices unless `tenancy.shared_vector_indexes` is on: plain SQL
//! gets the exact scan, or the workspace's own index (`tenancy.create_vector_index`, a partial
//! index the planner can match when the identity is folded).
//!
//! `tenancy.nearest` chooses for itself (`with_choice`): its own-index plans see no shared index
//! (the planner preferred the shared one, filtered, at 4.6 ms against 0.9 ms for the workspace's
//! own graph), its shared-index plan sees every index.

use crate::plumbing::protected_tables::protected_and_in_force;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use pgrx::PgList;
use std::cell::Cell;
use std::ffi::CStr;

/// `tenancy.shared_vector_indexes` (USERSET): whether plain SQL on a protected table may use a
/// vector index that spans every workspace.
static SHARED_VECTOR_INDEXES: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Which vector indexes the statement being planned may use.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Plain SQL: on a protected table under its row-level security, none spanning every
    /// workspace (unless `tenancy.shared_vector_indexes`).
    Plain,
    /// `tenancy.nearest`'s exact and own-index plans: none spanning every workspace, on any table.
    OwnOnly,
    /// `tenancy.nearest`'s shared-index plan: every index.
    Every,
}

thread_local! {
    static CHOICE: Cell<Choice> = const { Cell::new(Choice::Plain) };
}

/// Defines `tenancy.shared_vector_indexes`.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"tenancy.shared_vector_indexes",
        c"Lets plain SQL on a protected table use a vector index that spans every workspace.",
        c"Off: such queries get the exact scan or the workspace's own index, so they return min(k, n) rows; on: an approximate, filtered scan that can return fewer.",
        &SHARED_VECTOR_INDEXES,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Runs `f` (planning or executing one of nearest's plans, which may replan) with `choice`; the
/// previous choice is restored however `f` ends.
pub fn with_choice<T>(choice: Choice, f: impl FnOnce() -> T) -> T {
    struct Restore(Choice);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHOICE.set(self.0);
        }
    }
    let _restore = Restore(CHOICE.replace(choice));
    f()
}

/// The planner's list of indexes of `relid`, without the ones the current choice excludes.
///
/// # Safety
/// Called from `get_relation_info_hook` with the planner's `rel`.
pub unsafe fn steer(relid: pg_sys::Oid, rel: *mut pg_sys::RelOptInfo) {
    let choice = CHOICE.get();
    if choice == Choice::Every || unsafe { (*rel).indexlist.is_null() } {
        return;
    }
    let indexes = unsafe { PgList::<pg_sys::IndexOptInfo>::from_pg((*rel).indexlist) };
    if !indexes.iter_ptr().any(|index| unsafe { spans_every_workspace(index) }) {
        return;
    }
    if choice == Choice::Plain && (SHARED_VECTOR_INDEXES.get() || !unsafe { protected_and_in_force(relid) }) {
        return;
    }
    let mut kept = PgList::<pg_sys::IndexOptInfo>::new();
    for index in indexes.iter_ptr() {
        if !unsafe { spans_every_workspace(index) } {
            kept.push(index);
        }
    }
    unsafe { (*rel).indexlist = kept.into_pg() };
}

/// Whether `index` is a vector index (HNSW or IVFFlat) over every row, not a partial one.
unsafe fn spans_every_workspace(index: *mut pg_sys::IndexOptInfo) -> bool {
    unsafe {
        if !(*index).indpred.is_null() {
            return false;
        }
        let am = pg_sys::get_am_name((*index).relam);
        if am.is_null() {
            return false;
        }
        let vector = matches!(CStr::from_ptr(am).to_bytes(), b"hnsw" | b"ivfflat");
        pg_sys::pfree(am.cast());
        vector
    }
}
