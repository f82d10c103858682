//! What `tenancy.nearest` keeps between calls, per backend: each searchable column's target
//! (checked once by `tenancy._vector_target`), the workspaces that have their own HNSW index and
//! what calibration measured of those indexes, the capped row count that picks the exact scan or the shared index, and the prepared plans.
//!
//! A relcache invalidation of the table (DDL, a new or dropped index, a policy change) drops its
//! entries at the next call; the index list and the counts also expire after `FRESH_FOR`, since
//! a comment added to an index or rows added to a workspace send none. Plans are SPI plans kept
//! in the plan cache, which replans them itself when what they read changes. Invalidations are
//! only queued by the callback (it may run in the middle of a call) and applied when a call
//! starts, so no entry is freed while it is in use.

use super::calibration::Calibrations as Measured;
use super::model::{Strategy, Target};
use super::workspace_sizes;
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long the index list and a workspace's count are trusted without an invalidation.
const FRESH_FOR: Duration = Duration::from_secs(60);

/// The key of a kept plan: what its SQL text depends on.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PlanKey {
    /// A search plan of a table's column with a metric and k; its scope is a parameter.
    Search {
        rel: pg_sys::Oid,
        column: String,
        metric: String,
        strategy: Strategy,
        k: i32,
    },
    /// A search plan on a workspace's own index, whose scope is the workspace as a literal (so
    /// that the planner matches the partial index).
    OwnIndex {
        rel: pg_sys::Oid,
        column: String,
        metric: String,
        k: i32,
        workspace: String,
    },
    /// The capped count of a scope's rows in a table.
    Count { rel: pg_sys::Oid },
    /// The cast of a query of type `from` to the base type `to` (no table involved).
    Cast { from: pg_sys::Oid, to: String },
}

impl PlanKey {
    /// The key of `strategy`'s search plan for a column (the own-index plan of `workspace`).
    pub fn search(target: &Target, column: &str, metric: &str, strategy: Strategy, k: i32, workspace: &str) -> PlanKey {
        let (rel, column, metric) = (target.rel, column.to_string(), metric.to_string());
        if strategy == Strategy::WorkspaceHnsw {
            PlanKey::OwnIndex {
                rel,
                column,
                metric,
                k,
                workspace: workspace.to_string(),
            }
        } else {
            PlanKey::Search {
                rel,
                column,
                metric,
                strategy,
                k,
            }
        }
    }

    /// The table the plan reads, if any.
    fn rel(&self) -> Option<pg_sys::Oid> {
        match self {
            PlanKey::Search { rel, .. } | PlanKey::OwnIndex { rel, .. } | PlanKey::Count { rel } => Some(*rel),
            PlanKey::Cast { .. } => None,
        }
    }
}

/// A kept SPI plan (lives until the backend ends or its table is invalidated).
#[derive(Clone, Copy)]
pub struct Plan(pub pg_sys::SPIPlanPtr);

type TargetKey = (pg_sys::Oid, String, String);
/// When the list of workspaces with their own index was read, and the list.
type OwnIndexes = (Instant, Rc<HashSet<String>>);
/// When the calibrations of a table's indexes were read, and them by workspace.
type Calibrations = (Instant, Rc<Measured>);
/// (table, workspace, user) of a capped count.
type CountKey = (pg_sys::Oid, String, Option<String>);

thread_local! {
    static TARGETS: RefCell<HashMap<TargetKey, Rc<Target>>> = RefCell::new(HashMap::new());
    static OWN_INDEXES: RefCell<HashMap<TargetKey, OwnIndexes>> = RefCell::new(HashMap::new());
    static COUNTS: RefCell<HashMap<CountKey, (Instant, i64)>> = RefCell::new(HashMap::new());
    static CALIBRATIONS: RefCell<HashMap<TargetKey, Calibrations>> = RefCell::new(HashMap::new());
    static PLANS: RefCell<HashMap<PlanKey, Plan>> = RefCell::new(HashMap::new());
    /// Relations invalidated since the last call (applied by `apply_invalidations`).
    static STALE: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    static FLUSH_ALL: Cell<bool> = const { Cell::new(false) };
    /// Plans dropped from `PLANS` and not freed yet (a running call may still execute them).
    static FORGOTTEN: RefCell<Vec<Plan>> = const { RefCell::new(Vec::new()) };
    /// Calls running now (a call nested in a running search, through a policy or a function,
    /// counts twice). Reset at transaction end: a call that raised never decremented it.
    static RUNNING: Cell<u32> = const { Cell::new(0) };
    /// Tests only: plans freed so far.
    static FREED: Cell<usize> = const { Cell::new(0) };
}

/// Registers the relcache callback and the transaction callback that resets `RUNNING`.
pub fn init() {
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(queue_invalidation), pg_sys::Datum::from(0));
        pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut());
    }
}

/// Transaction callback: no call runs once a transaction has ended (a call that raised left
/// `RUNNING` counted).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    ) {
        RUNNING.set(0);
    }
}

/// A call starts (after `apply_invalidations`).
pub fn call_started() {
    RUNNING.set(RUNNING.get().saturating_add(1));
}

/// A call ended normally.
pub fn call_ended() {
    RUNNING.set(RUNNING.get().saturating_sub(1));
}

/// Tests only: plans forgotten and not freed yet, and plans freed so far.
#[cfg(any(test, feature = "pg_test"))]
pub fn forgotten_and_freed() -> (usize, usize) {
    (FORGOTTEN.with_borrow(Vec::len), FREED.get())
}

/// Queues the invalidation of `relid` (every relation when invalid). It only records: it may
/// run in the middle of a call.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn queue_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid {
        FLUSH_ALL.set(true);
        return;
    }
    // Bounded: past 64 relations (a backend that does not search still hears every one) the
    // next call simply starts afresh.
    let queued = STALE.with(|stale| {
        stale
            .try_borrow_mut()
            .map(|mut s| {
                if s.len() >= 64 {
                    s.clear();
                    FLUSH_ALL.set(true);
                } else if !s.contains(&relid) {
                    s.push(relid);
                }
            })
            .is_ok()
    });
    if !queued {
        FLUSH_ALL.set(true);
    }
}

/// Drops the entries of every relation invalidated since the last call, freeing their plans.
pub fn apply_invalidations() {
    let all = FLUSH_ALL.replace(false);
    let stale: Vec<pg_sys::Oid> = STALE.with_borrow_mut(std::mem::take);
    if !all && stale.is_empty() {
        return;
    }
    let hit = |rel: &pg_sys::Oid| all || stale.contains(rel);
    TARGETS.with_borrow_mut(|t| t.retain(|key, target| !hit(&key.0) && !hit(&target.rel)));
    OWN_INDEXES.with_borrow_mut(|o| o.retain(|key, _| !hit(&key.0)));
    COUNTS.with_borrow_mut(|c| c.retain(|key, _| !hit(&key.0)));
    CALIBRATIONS.with_borrow_mut(|c| c.retain(|key, _| !hit(&key.0)));
    workspace_sizes::forget(hit);
    // A call nested inside a running search (a policy or a function that calls tenancy.nearest)
    // must not free a plan its caller is executing: dropped plans wait in FORGOTTEN and are freed
    // by the next call that starts with none running (the adversarial pass of issue 36 grew a
    // pooled backend from 2.2 to 24.8 MB in 10 s by invalidating its own tables, when forgotten
    // plans were never freed).
    PLANS.with_borrow_mut(|plans| {
        plans.retain(|key, plan| {
            let keep = !key.rel().is_some_and(|rel| hit(&rel));
            if !keep {
                FORGOTTEN.with_borrow_mut(|forgotten| forgotten.push(*plan));
            }
            keep
        })
    });
    free_forgotten();
}

/// Frees the forgotten plans when no call is running.
fn free_forgotten() {
    if RUNNING.get() != 0 {
        return;
    }
    for plan in FORGOTTEN.with_borrow_mut(std::mem::take) {
        unsafe { pg_sys::SPI_freeplan(plan.0) };
        FREED.set(FREED.get() + 1);
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::{register_test_members, test_token};
    use pgrx::prelude::*;

    #[pg_test]
    fn plans_dropped_by_an_invalidation_are_freed_by_the_next_call() {
        register_test_members();
        Spi::run(&format!(
            "CREATE EXTENSION IF NOT EXISTS vector;
             CREATE TABLE public.cache_docs (id int, workspace_id text NOT NULL, embedding vector(3));
             CREATE INDEX ON public.cache_docs (workspace_id);
             SELECT tenancy.protect('public.cache_docs');
             INSERT INTO public.cache_docs VALUES (1, 'ws_a', '[1,0,0]'), (2, 'ws_a', '[0,1,0]');
             SET LOCAL tenancy.token = {}",
            pgrx::spi::quote_literal(test_token("user_a", "org_a"))
        ))
        .unwrap();
        let nearest =
            "SELECT count(*) FROM tenancy.nearest(NULL::public.cache_docs, 'embedding', '[1,0,0]'::vector, 2)";
        assert_eq!(Spi::get_one::<i64>(nearest).unwrap(), Some(2));
        let (_, freed_before) = super::forgotten_and_freed();
        Spi::run("SELECT tenancy._search_caches_changed('public.cache_docs'::regclass)").unwrap();
        assert_eq!(Spi::get_one::<i64>(nearest).unwrap(), Some(2), "planned again");
        let (forgotten, freed) = super::forgotten_and_freed();
        assert_eq!(forgotten, 0, "nothing left to free");
        assert!(
            freed > freed_before,
            "the dropped plans were freed: {freed_before} -> {freed}"
        );
    }
}

/// The cached target of (row type, column, metric), or None.
pub fn target(row_type: pg_sys::Oid, column: &str, metric: &str) -> Option<Rc<Target>> {
    TARGETS.with_borrow(|t| t.get(&(row_type, column.to_string(), metric.to_string())).cloned())
}

/// Remembers a target.
pub fn remember_target(row_type: pg_sys::Oid, column: &str, metric: &str, target: Target) -> Rc<Target> {
    let target = Rc::new(target);
    TARGETS.with_borrow_mut(|t| t.insert((row_type, column.to_string(), metric.to_string()), target.clone()));
    target
}

/// The workspaces of `rel` with their own index for (column, metric), when fresh.
pub fn own_indexes(rel: pg_sys::Oid, column: &str, metric: &str) -> Option<Rc<HashSet<String>>> {
    OWN_INDEXES.with_borrow(|o| {
        o.get(&(rel, column.to_string(), metric.to_string()))
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, set)| set.clone())
    })
}

/// Remembers the workspaces with their own index.
pub fn remember_own_indexes(rel: pg_sys::Oid, column: &str, metric: &str, set: HashSet<String>) -> Rc<HashSet<String>> {
    let set = Rc::new(set);
    OWN_INDEXES.with_borrow_mut(|o| {
        o.insert(
            (rel, column.to_string(), metric.to_string()),
            (Instant::now(), set.clone()),
        )
    });
    set
}

/// The calibrations of `rel`'s indexes on (column, metric), by workspace, when fresh.
pub fn calibrations(rel: pg_sys::Oid, column: &str, metric: &str) -> Option<Rc<Measured>> {
    CALIBRATIONS.with_borrow(|c| {
        c.get(&(rel, column.to_string(), metric.to_string()))
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, map)| map.clone())
    })
}

/// Remembers the calibrations of `rel`'s indexes on (column, metric).
pub fn remember_calibrations(rel: pg_sys::Oid, column: &str, metric: &str, map: Measured) -> Rc<Measured> {
    let map = Rc::new(map);
    CALIBRATIONS.with_borrow_mut(|c| {
        c.insert(
            (rel, column.to_string(), metric.to_string()),
            (Instant::now(), map.clone()),
        )
    });
    map
}

/// A workspace's (and user's) capped row count in `rel`, when fresh.
pub fn count(rel: pg_sys::Oid, workspace: &str, user: Option<&str>) -> Option<i64> {
    COUNTS.with_borrow(|c| {
        c.get(&(rel, workspace.to_string(), user.map(str::to_string)))
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, n)| *n)
    })
}

/// Remembers a capped count.
pub fn remember_count(rel: pg_sys::Oid, workspace: &str, user: Option<&str>, n: i64) {
    COUNTS.with_borrow_mut(|c| {
        c.insert(
            (rel, workspace.to_string(), user.map(str::to_string)),
            (Instant::now(), n),
        )
    });
}

/// The kept plan of `key`, prepared from `sql()` with `types` the first time. The plan is
/// generic (prepared once, the parameters bound at each call).
pub fn plan(key: PlanKey, types: &[pg_sys::Oid], sql: impl FnOnce() -> String) -> Plan {
    if let Some(plan) = PLANS.with_borrow(|p| p.get(&key).copied()) {
        return plan;
    }
    let text = CString::new(sql()).expect("no NUL in generated SQL");
    let mut types = types.to_vec();
    let plan = unsafe {
        let prepared = pg_sys::SPI_prepare_cursor(
            text.as_ptr(),
            types.len() as i32,
            types.as_mut_ptr(),
            pg_sys::CURSOR_OPT_GENERIC_PLAN as i32,
        );
        if prepared.is_null() {
            let result = std::ptr::addr_of!(pg_sys::SPI_result).read();
            crate::plumbing::errors::internal(format!("preparing a search plan failed (SPI result {result})"));
        }
        pg_sys::SPI_keepplan(prepared);
        Plan(prepared)
    };
    PLANS.with_borrow_mut(|p| p.insert(key, plan));
    plan
}
