//! The executor's side of identity parameters: the EXECUTE right checked and a lazy evaluator put
//! in each parameter's slot when the statement starts (see the module above).

use super::{Kind, FUNCTION_TAG, GRANTED, PARAMETER_TAG};
use crate::identity;
use crate::plumbing::plan_tags;
use pgrx::pg_sys;
use std::ffi::c_int;
use std::ptr;

// `GetUserId` cannot fail; called without pgrx's guard (a `sigsetjmp` per call, measured ~100
// instructions) on every statement that runs an identity parameter.
extern "C-unwind" {
    #[link_name = "GetUserId"]
    fn unguarded_get_user_id() -> pg_sys::Oid;
}

/// The lazy evaluator of one parameter: what `ParamExecData.execPlan` points to. PostgreSQL's
/// `ExecSetParamPlan` reads the `SubPlanState`, its `SubPlan` (an uncorrelated expression sublink
/// that sets no parameter itself) and its `PlanState` (the executor state, and the routine it calls
/// to produce rows); the routine here writes the parameter and produces no row.
#[repr(C)]
struct Evaluator {
    state: pg_sys::SubPlanState,
    plan_state: pg_sys::PlanState,
    subplan: pg_sys::SubPlan,
    parameter: usize,
    kind: Kind,
}

/// After `ExecutorStart` of a statement whose plan `has_parameters` (src/surface/hooks.rs): checks
/// the EXECUTE right on each identity function, as the initPlan's initialization did, and gives
/// each parameter its evaluator. The part of a parallel plan a worker runs never comes here: the
/// leader serializes it without its dependency list (`ExecSerializePlan` empties `invalItems`),
/// so it carries no parameter to install and receives the values the leader computed. A statement
/// planned inside a worker (SPI from a function marked parallel safe) does come here, and must:
/// without an evaluator its parameter would be read as a zeroed slot (found by the adversarial
/// pass: a server crash); with one, the identity read in the worker refuses with 28000, as the
/// initPlan's call did.
///
/// # Safety
/// `query_desc` must have been started by `ExecutorStart`.
pub unsafe fn install(query_desc: *mut pg_sys::QueryDesc) {
    unsafe {
        let (stmt, estate) = ((*query_desc).plannedstmt, (*query_desc).estate);
        let count = usize::try_from(pg_sys::list_length((*stmt).paramExecTypes)).unwrap_or(0);
        let tags = plan_tags::read((*stmt).invalItems).zip(plan_tags::read((*stmt).invalItems).skip(1));
        for ((tag, code), (next_tag, oid)) in tags {
            if tag != PARAMETER_TAG || next_tag != FUNCTION_TAG {
                continue;
            }
            let function = pg_sys::Oid::from(oid);
            check_execute_right(function);
            let parameter = (code / 2) as usize;
            let kind = if code % 2 == 1 { Kind::User } else { Kind::Workspace };
            if estate.is_null() || (*estate).es_param_exec_vals.is_null() || parameter >= count {
                crate::plumbing::errors::internal("an identity parameter lies outside the statement's parameters");
            }
            let slot = (*estate).es_param_exec_vals.add(parameter);
            if !(*slot).execPlan.is_null() {
                crate::plumbing::errors::internal("an identity parameter already has an initPlan");
            }
            let evaluator =
                pg_sys::MemoryContextAllocZero((*estate).es_query_cxt, size_of::<Evaluator>()).cast::<Evaluator>();
            (*evaluator).subplan.xpr.type_ = pg_sys::NodeTag::T_SubPlan;
            (*evaluator).subplan.subLinkType = pg_sys::SubLinkType::EXPR_SUBLINK;
            (*evaluator).plan_state.type_ = pg_sys::NodeTag::T_ResultState;
            (*evaluator).plan_state.state = estate;
            (*evaluator).plan_state.ExecProcNode = Some(evaluate);
            (*evaluator).plan_state.ExecProcNodeReal = Some(evaluate);
            (*evaluator).state.type_ = pg_sys::NodeTag::T_SubPlanState;
            (*evaluator).state.subplan = &raw mut (*evaluator).subplan;
            (*evaluator).state.planstate = &raw mut (*evaluator).plan_state;
            (*evaluator).parameter = parameter;
            (*evaluator).kind = kind;
            (*slot).execPlan = (&raw mut (*evaluator).state).cast();
            (*slot).isnull = true;
        }
    }
}

/// The EXECUTE right on `function`, checked as `ExecInitFunc` checks it (42501 when missing), or
/// known granted to the current role since the last change of a function, role or membership
/// (`pg_proc_aclcheck` with its two guarded calls measured 939 instructions a statement).
unsafe fn check_execute_right(function: pg_sys::Oid) {
    unsafe {
        let role = unguarded_get_user_id();
        if !GRANTED.with_borrow(|granted| granted.contains(&(role, function))) {
            check_and_remember(function, role);
        }
        let hook = pg_sys::object_access_hook;
        if hook.is_some() {
            pg_sys::RunFunctionExecuteHook(function);
        }
    }
}

/// The EXECUTE right of `role` on `function`, checked by PostgreSQL (raising 42501) and
/// remembered as granted.
unsafe fn check_and_remember(function: pg_sys::Oid, role: pg_sys::Oid) {
    unsafe {
        #[cfg(feature = "pg15")]
        let result = pg_sys::pg_proc_aclcheck(function, role, pg_sys::ACL_EXECUTE as pg_sys::AclMode);
        #[cfg(not(feature = "pg15"))]
        let result = pg_sys::object_aclcheck(
            pg_sys::ProcedureRelationId,
            function,
            role,
            pg_sys::ACL_EXECUTE as pg_sys::AclMode,
        );
        if result != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                result,
                pg_sys::ObjectType::OBJECT_FUNCTION,
                pg_sys::get_func_name(function),
            );
        }
        GRANTED.with_borrow_mut(|granted| {
            if granted.len() >= 64 {
                granted.clear();
            }
            granted.push((role, function));
        });
    }
}

/// The evaluator's routine, called by `ExecSetParamPlan` in the query's memory: the identity's
/// value into the parameter (raising 28000 as the identity function would), the evaluator
/// unhooked, and no row.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn evaluate(plan_state: *mut pg_sys::PlanState) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let evaluator = plan_state
            .byte_sub(std::mem::offset_of!(Evaluator, plan_state))
            .cast::<Evaluator>();
        let current = identity::require();
        let value = match (*evaluator).kind {
            Kind::Workspace => identity::workspace_of(&current),
            Kind::User => current.user_id.clone(),
        };
        let datum = pg_sys::cstring_to_text_with_len(value.as_ptr().cast(), value.len() as c_int);
        let slot = (*(*plan_state).state).es_param_exec_vals.add((*evaluator).parameter);
        (*slot).value = pg_sys::Datum::from(datum);
        (*slot).isnull = false;
        (*slot).execPlan = ptr::null_mut();
    }
    ptr::null_mut()
}
