//! The identity a statement reads under a per-transaction credential, put in place when the
//! statement starts instead of computed by its initPlan.
//!
//! Under `SET LOCAL tenancy.token` (the pooled pattern) `folding.rs` turns each identity call of a
//! policy into `(SELECT tenancy.workspace_id())`, an initPlan whose output parameter the scan's
//! index condition reads: one cached plan serves every identity. Running that initPlan costs a
//! subplan start, a projection and a call through the function manager into the SQL function.
//! Here, once `ExecutorStart` has built the executor state, each such output parameter that
//! nothing has computed yet gets the current identity's value directly, and its initPlan is marked
//! done (`execPlan` cleared), as `ExecSetParamPlan` itself marks it after running it: the plan, its
//! parameters and every reader of them are PostgreSQL's own, so parallel workers (which receive
//! computed initPlan outputs from the leader), `EvalPlanQual` rechecks and cursors see the value
//! as they would have seen the initPlan's.
//!
//! When there is no valid identity at that moment the parameter is left alone: the initPlan runs
//! when first needed and raises 28000 exactly as before (and a cursor declared before its
//! credential was set still reads the identity of its first fetch). Nothing is filled for
//! `EXPLAIN` without `ANALYZE`, which never runs the plan, or in a parallel worker.

use super::folding::{constant_text_argument, what_is_asked, Asked, ONCE_PER_STATEMENT};
use crate::identity;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::{c_int, CStr};

/// After `ExecutorStart` of `query_desc` (src/surface/hooks.rs): the identity's values into the
/// output parameters of the initPlans `folding.rs` made, for the current identity.
///
/// # Safety
/// `query_desc` must have been started by `ExecutorStart` with `eflags`.
pub unsafe fn fill(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    unsafe {
        if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as c_int != 0 || pg_sys::ParallelWorkerNumber >= 0 {
            return;
        }
        let (estate, statement) = ((*query_desc).estate, (*query_desc).plannedstmt);
        if estate.is_null() || statement.is_null() || (*estate).es_param_exec_vals.is_null() {
            return;
        }
        let count = pg_sys::list_length((*statement).paramExecTypes).max(0) as usize;
        let mut identity = None;
        for i in 0..count {
            let param = (*estate).es_param_exec_vals.add(i);
            let Some(asked) = asked_by((*param).execPlan.cast(), i) else {
                continue;
            };
            if identity.is_none() {
                match identity::current() {
                    Ok(current) => identity = Some(current),
                    // Left to the initPlan, which raises the denial when it runs.
                    Err(_) => return,
                }
            }
            let Some(identity) = identity.as_ref() else { return };
            let Some(value) = value_of(&asked, identity, (*estate).es_query_cxt) else {
                continue;
            };
            (*param).value = value;
            (*param).isnull = false;
            (*param).execPlan = std::ptr::null_mut();
        }
    }
}

/// What the initPlan `state` asks for, when it is one `folding.rs` made and it sets parameter
/// `param` (and has not run yet: its `execPlan` is set).
unsafe fn asked_by(state: *mut pg_sys::SubPlanState, param: usize) -> Option<Asked> {
    unsafe {
        let state = state.as_ref()?;
        let (subplan, planstate) = (state.subplan.as_ref()?, state.planstate.as_ref()?);
        let plan = planstate.plan.as_ref()?;
        let sets_only_this = pg_sys::list_length(subplan.setParam) == 1
            && usize::try_from(pg_sys::list_nth_int(subplan.setParam, 0)).ok() == Some(param);
        if subplan.subLinkType != pg_sys::SubLinkType::EXPR_SUBLINK
            || !sets_only_this
            || pg_sys::list_length(plan.targetlist) != 1
        {
            return None;
        }
        let entry = pg_sys::list_nth(plan.targetlist, 0).cast::<pg_sys::TargetEntry>();
        if (*entry).resname.is_null() || CStr::from_ptr((*entry).resname) != ONCE_PER_STATEMENT {
            return None;
        }
        let expression = (*entry).expr.cast::<pg_sys::Node>();
        if (*expression).type_ != pg_sys::NodeTag::T_FuncExpr {
            return None;
        }
        asked_of(expression.cast())
    }
}

/// The identity epoch, and what each identity function asks by OID (None: not an identity call).
type KnownFunctions = (u64, Vec<(pg_sys::Oid, Option<Asked>)>);

thread_local! {
    /// What each identity function asks, by OID, for the identity epoch it was learnt in: the name
    /// lookup is a catalog read, this runs for every protected statement, and OIDs change only
    /// when the extension is dropped (which drops the identity tables and moves the epoch).
    static FUNCTIONS: RefCell<KnownFunctions> = const { RefCell::new((0, Vec::new())) };
}

/// What `call` asks for (`folding::what_is_asked`), with the function's name looked up once per
/// backend and epoch. `has_permission`'s argument is read from the call each time.
unsafe fn asked_of(call: *mut pg_sys::FuncExpr) -> Option<Asked> {
    let function = unsafe { (*call).funcid };
    let epoch = crate::state::counters::epoch();
    let known = FUNCTIONS.with_borrow(|(learnt, functions)| {
        (*learnt == epoch)
            .then(|| {
                functions
                    .iter()
                    .find(|(oid, _)| *oid == function)
                    .map(|(_, asked)| asked.clone())
            })
            .flatten()
    });
    let kind = match known {
        Some(kind) => kind,
        None => {
            let kind = unsafe { what_is_asked(call) }.map(|asked| match asked {
                Asked::Permission(_) => Asked::Permission(String::new()),
                other => other,
            });
            FUNCTIONS.with_borrow_mut(|(learnt, functions)| {
                if *learnt != epoch {
                    *learnt = epoch;
                    functions.clear();
                }
                functions.push((function, kind.clone()));
            });
            kind
        }
    };
    match kind? {
        Asked::Permission(_) => unsafe { constant_text_argument(call) }.map(Asked::Permission),
        other => Some(other),
    }
}

/// The datum the call would have returned for `identity`, allocated in `context` (the query's
/// memory); None when the call would raise (no workspace), which the initPlan then does itself.
unsafe fn value_of(
    asked: &Asked,
    identity: &identity::Identity,
    context: pg_sys::MemoryContext,
) -> Option<pg_sys::Datum> {
    let text = |value: &str| unsafe {
        let previous = pg_sys::MemoryContextSwitchTo(context);
        let datum = pg_sys::cstring_to_text_with_len(value.as_ptr().cast(), value.len() as c_int);
        pg_sys::MemoryContextSwitchTo(previous);
        pg_sys::Datum::from(datum)
    };
    match asked {
        Asked::Workspace => identity.workspace_id.as_deref().map(text),
        Asked::User => Some(text(&identity.user_id)),
        Asked::Permission(permission) => Some(pg_sys::Datum::from(identity.permissions.contains(permission))),
    }
}
