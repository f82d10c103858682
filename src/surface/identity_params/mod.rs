//! The per-transaction identity as a plain executor parameter: planned as an initPlan, run
//! without one.
//!
//! Under `SET LOCAL tenancy.token` (the pooled pattern) `folding.rs` turns each identity call of
//! a policy into `(SELECT tenancy.workspace_id())`, so that PostgreSQL plans an initPlan whose
//! output parameter the scan reads: one cached plan serves every identity, and PostgreSQL does
//! all of the parameter's bookkeeping (which nodes depend on it, what a Gather sends to its
//! workers). Starting that initPlan for each execution cost more than running it: a `Result`
//! node, its projection, the function's lookup and EXECUTE check (4,090 instructions of a
//! 183,000-instruction pooled transaction, callgrind, docs/benchmarks.md), then ~2,750 to run it
//! through the function manager.
//!
//! Here, after planning, each initPlan that is exactly `(SELECT tenancy.workspace_id())` or
//! `(SELECT tenancy.user_id())` (the genuine functions, matched by OID and shape) is taken out of
//! the finished plan; its slot in `PlannedStmt.subplans` becomes NULL, as PostgreSQL itself leaves
//! unused alternative subplans, and the plan records `(parameter, kind, function)` in its
//! dependency list. When the statement starts, the parameter gets a lazy evaluator in
//! PostgreSQL's own place for one (`ParamExecData.execPlan`): PostgreSQL calls it exactly where
//! it called the initPlan — the first evaluation of the parameter (the first FETCH of a cursor),
//! the leader's `ExecSetParamPlanMulti` before a parallel plan serializes the value for its
//! workers — so the identity is read as late as before, a missing one fails with 28000 at the same
//! moment, and workers receive the value as before. The EXECUTE right on the function is checked
//! when the statement starts, as the initPlan's initialization checked it.
//!
//! Only plain `SELECT`s are rewritten (no row marks, no data-modifying CTE): an `EvalPlanQual`
//! recheck, which only `UPDATE`, `DELETE`, `MERGE` and `SELECT … FOR UPDATE` run, starts its own
//! executor state without passing through `ExecutorStart`, and keeps the initPlan. An initPlan
//! below a Gather (possible from PostgreSQL 16 on for a parallel-safe one; the identity functions
//! are parallel restricted) is kept too. `tenancy.identity_parameters = off` keeps every initPlan.
//!
//! `strip.rs` is the planner's side, `evaluator.rs` the executor's.

pub mod evaluator;
pub mod strip;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

use crate::plumbing::plan_tags;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::{c_int, CStr};

/// `tenancy.identity_parameters` (SUSET): whether identity initPlans become plain parameters.
pub static IDENTITY_PARAMETERS: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `PlanInvalItem.cacheId` of the item naming a rewritten parameter (`hashValue`: the parameter
/// number times 2, plus 1 for `user_id`), and of the item after it (`hashValue`: the function's
/// OID). Negative, like folding's tags: no syscache invalidation ever matches them.
const PARAMETER_TAG: c_int = -0x0074_6e70;
const FUNCTION_TAG: c_int = -0x0074_6e71;

/// What an identity parameter holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Workspace,
    User,
}

thread_local! {
    /// What each function met as an initPlan's target is, by OID (`None`: not an identity
    /// function). Forgotten whenever any `pg_proc` row changes (`forget_functions`).
    static FUNCTIONS: RefCell<Vec<(pg_sys::Oid, Option<Kind>)>> = const { RefCell::new(Vec::new()) };
    /// `(role, function)` pairs whose EXECUTE right was checked and granted. Forgotten whenever a
    /// function (its ACL), a role (superuser) or a role membership changes (`forget_rights`).
    static GRANTED: RefCell<Vec<(pg_sys::Oid, pg_sys::Oid)>> = const { RefCell::new(Vec::new()) };
}

/// Defines the setting and the catalog callback that keeps the function cache true.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"tenancy.identity_parameters",
        c"Runs the identity of a per-transaction credential as a plain executor parameter.",
        c"Off: policies under SET LOCAL keep the (SELECT tenancy.workspace_id()) initPlan the planner made.",
        &IDENTITY_PARAMETERS,
        GucContext::Suset,
        GucFlags::default(),
    );
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::PROCOID as c_int,
            Some(forget_functions),
            pg_sys::Datum::from(0),
        );
        for cache in [
            pg_sys::SysCacheIdentifier::AUTHOID,
            pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(cache as c_int, Some(forget_rights), pg_sys::Datum::from(0));
        }
    }
}

/// Syscache callback on `pg_authid` and `pg_auth_members`: a role's attributes or memberships
/// changed, so an EXECUTE right granted through them may be gone.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn forget_rights(_argument: pg_sys::Datum, _cache: c_int, _hash: u32) {
    GRANTED.with_borrow_mut(Vec::clear);
}

/// Syscache callback on `pg_proc`: a function was created, changed or dropped, so an OID may now
/// name another function, and an ACL may have changed.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn forget_functions(_argument: pg_sys::Datum, _cache: c_int, _hash: u32) {
    FUNCTIONS.with_borrow_mut(Vec::clear);
    GRANTED.with_borrow_mut(Vec::clear);
}

/// What `function` is, learnt from the catalog once per OID. A genuine identity function lives in
/// the `tenancy` schema, takes no argument, returns one `text`, and has a planner support
/// function: only a superuser can give a function one, so a role's own `workspace_id()` (in
/// `pg_temp`, in its schema, returning anything) never qualifies.
unsafe fn kind_of(function: pg_sys::Oid) -> Option<Kind> {
    if let Some(known) = FUNCTIONS.with_borrow(|known| known.iter().find(|(oid, _)| *oid == function).map(|(_, k)| *k))
    {
        return known;
    }
    let kind = unsafe { learn(function) };
    FUNCTIONS.with_borrow_mut(|known| known.push((function, kind)));
    kind
}

/// The catalog reads behind `kind_of`.
unsafe fn learn(function: pg_sys::Oid) -> Option<Kind> {
    unsafe {
        let schema = pg_sys::get_namespace_oid(c"tenancy".as_ptr(), true);
        if schema == pg_sys::InvalidOid
            || pg_sys::get_func_namespace(function) != schema
            || pg_sys::get_func_support(function) == pg_sys::InvalidOid
            || pg_sys::get_func_nargs(function) != 0
            || pg_sys::get_func_rettype(function) != pg_sys::TEXTOID
            || pg_sys::get_func_retset(function)
        {
            return None;
        }
        let name = pg_sys::get_func_name(function);
        if name.is_null() {
            return None;
        }
        match CStr::from_ptr(name).to_bytes() {
            b"workspace_id" => Some(Kind::Workspace),
            b"user_id" => Some(Kind::User),
            _ => None,
        }
    }
}

/// Whether `stmt` carries rewritten identity parameters: the cheap test `ExecutorStart` makes on
/// every statement before anything else (reads the dependency list in place, raises nothing).
///
/// # Safety
/// `stmt` must be null or a valid plan.
pub unsafe fn has_parameters(stmt: *mut pg_sys::PlannedStmt) -> bool {
    unsafe {
        stmt.as_ref()
            .is_some_and(|planned| plan_tags::read(planned.invalItems).any(|(tag, _)| tag == PARAMETER_TAG))
    }
}
