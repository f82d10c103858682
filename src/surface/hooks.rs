//! Every hook pg_tenancy installs into PostgreSQL's statement path, installed here and only here,
//! once, each chained to the hook installed before it (as pg_stat_statements does). What runs in
//! which order is decided here, not by the order of `init()` calls:
//! - `ProcessUtility`: mask credentials in the statement text (`redaction`), take in pending
//!   invalidations, refuse a held cursor under a per-transaction credential (`cursors`), note
//!   writes to identity tables (`invalidation`), then the statement;
//! - `ExecutorStart`: take in pending invalidations, note the credentials bound to the portal
//!   (`state::bound_values`, before masking), mask (a literal in `set_config`), note writes
//!   to identity tables and to protected tables (`write_targets`), refuse a plan folded for another
//!   identity (`folding`), then the statement; after it, the evaluators of identity parameters (`identity_params`);
//! - `ExecutorRun`: take in pending invalidations, then the statement;
//! - `planner_hook`: the statement's plan, then identity initPlans made parameters
//!   (`identity_params`);
//! - `emit_log_hook`: mask the message and the statement first, then observe denials (so the
//!   audit's copy is masked too), then the previous hook;
//! - `get_relation_info_hook`: the previous hook, then which vector indexes the planner may use
//!   on a protected table (`search::index_choice`);
//! - transaction pre-commit: refuse a held cursor filled under a per-transaction credential
//!   (`cursors`); transaction end: forget the transaction's cursors;
//! - transaction and subtransaction abort: mask the statement text `pg_stat_activity` shows.
//!
//! **Transparency.** An error raised below these hooks (by the statement itself, by another
//! extension's hook) must reach the client exactly as PostgreSQL raised it. pgrx turns a
//! PostgreSQL error that crosses one of its guarded calls into a Rust panic and re-raises it at
//! the next `#[pg_guard]` boundary, keeping only some fields: the error position, `CONTEXT`,
//! `QUERY` and internal position are lost, and a Rust backtrace is added to `DETAIL` when the
//! server's environment sets `RUST_BACKTRACE` (measured with PostgreSQL's own regression suite:
//! 33 of 217 test files differed). So the hook functions here are plain `extern "C-unwind"`
//! functions without a guard: pg_tenancy's own work runs in a guarded function that returns
//! before the next routine is called, and the next routine is called through its raw function
//! pointer (the standard routines through unguarded declarations below). No Rust value with a
//! destructor is alive in a hook's frame when the next routine runs, so PostgreSQL's `longjmp`
//! passes these frames by as it passes C frames, with the error data untouched.
//! `scripts/postgres-regress` proves it against PostgreSQL's own suite.

use pgrx::pg_sys;
use std::ffi::{c_char, c_int};

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;
static mut PREV_GET_RELATION_INFO: pg_sys::get_relation_info_hook_type = None;
static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;

// PostgreSQL's standard routines, declared without pgrx's error guard (see the module comment).
extern "C-unwind" {
    #[link_name = "standard_ProcessUtility"]
    fn unguarded_standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
    #[link_name = "standard_ExecutorStart"]
    fn unguarded_standard_executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int);
    #[cfg(feature = "pg15")]
    #[link_name = "standard_ExecutorRun"]
    fn unguarded_standard_executor_run(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
        execute_once: bool,
    );
    #[cfg(not(feature = "pg15"))]
    #[link_name = "standard_ExecutorRun"]
    fn unguarded_standard_executor_run(
        query_desc: *mut pg_sys::QueryDesc,
        direction: pg_sys::ScanDirection::Type,
        count: u64,
    );
    #[link_name = "standard_planner"]
    fn unguarded_standard_planner(
        parse: *mut pg_sys::Query,
        query_string: *const c_char,
        cursor_options: c_int,
        bound_params: pg_sys::ParamListInfo,
    ) -> *mut pg_sys::PlannedStmt;
    #[link_name = "AcceptInvalidationMessages"]
    fn unguarded_accept_invalidation_messages();
}

/// Installs every hook and callback, each once, chained to the one installed before it.
pub fn init() {
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
        PREV_GET_RELATION_INFO = pg_sys::get_relation_info_hook;
        pg_sys::get_relation_info_hook = Some(get_relation_info);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner);
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
    }
}

/// pg_tenancy's part of `ProcessUtility`, before the statement runs: masking, then the
/// held-cursor check (which may raise its own error).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn before_process_utility(pstmt: *mut pg_sys::PlannedStmt) {
    crate::plumbing::redaction::scrub_current_statement();
    unsafe { super::cursors::check_utility((*pstmt).utilityStmt) };
    unsafe { crate::state::invalidation::note_utility_writes((*pstmt).utilityStmt) };
}

/// Takes in the invalidations other backends committed, before the statement reads an identity.
/// PostgreSQL takes them in only when a statement acquires a lock it does not hold yet: inside
/// an open transaction whose earlier statements hold the table's locks, a prepared statement, a
/// driver's server-side statement, `tenancy.nearest` or `SELECT tenancy.workspace_id()` would
/// otherwise keep the identity of before a committed revocation (disabled member or workspace,
/// revoked session or API key, rotated keys) for as long as the transaction stays open. With no
/// message pending this is one unlocked read of the queue's flag. Called from the unguarded hook
/// functions, before pg_tenancy's own part (no Rust value is alive there, so an error it raises
/// passes as through C), without the cost of pgrx's FFI guard on every statement.
unsafe fn take_in_invalidations() {
    unsafe { unguarded_accept_invalidation_messages() };
}

/// `ProcessUtility` hook (unguarded: see the module comment).
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    unsafe {
        take_in_invalidations();
        before_process_utility(pstmt);
        // Citus next in the chain: a credential's SET LOCAL as a text of its own, unmasked, for
        // Citus to forward to the workers (`citus_forwarding.rs`).
        // Any other SET or RESET of a multi-statement string: its own text alone (Citus forwards
        // the text it gets, which was the whole string).
        let to_citus = matches!(PREV_PROCESS_UTILITY,
            Some(previous) if super::citus_forwarding::next_is_citus(previous as *const std::ffi::c_void));
        // A COPY of a distributed table runs its shard COPYs from Citus's hook, with no
        // `ExecutorStart` on the coordinator: the credential (or its reset) goes first (the
        // adversarial pass of session 14: the workers answered with the identity of an earlier
        // statement, or with none).
        if to_citus && !(*pstmt).utilityStmt.is_null() && (*(*pstmt).utilityStmt).type_ == pg_sys::NodeTag::T_CopyStmt {
            super::citus_forwarding::forward_current_credential(PREV_PROCESS_UTILITY);
        }
        if to_citus {
            super::citus_set_text::refuse_ambiguous_set(pstmt, query_string);
        }
        let forwarded = if to_citus {
            super::citus_set_text::credential_set_text((*pstmt).utilityStmt)
        } else {
            std::ptr::null_mut()
        };
        let own = if to_citus && forwarded.is_null() {
            super::citus_set_text::own_set_text(pstmt, query_string)
        } else {
            std::ptr::null_mut()
        };
        let (text, statement) = match (forwarded.is_null(), own.is_null()) {
            (false, _) => (forwarded.cast_const(), super::citus_set_text::alone(pstmt)),
            (true, false) => (own.cast_const(), super::citus_set_text::alone(pstmt)),
            (true, true) => (query_string, pstmt),
        };
        match PREV_PROCESS_UTILITY {
            Some(previous) => previous(statement, text, read_only_tree, context, params, query_env, dest, qc),
            None => unguarded_standard_process_utility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
        if !forwarded.is_null() {
            super::citus_set_text::wipe(forwarded);
            super::citus_forwarding::note_forwarded();
        }
    }
}

/// pg_tenancy's part of `ExecutorStart`: masking, then the folded-plan identity check.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn before_executor_start(query_desc: *mut pg_sys::QueryDesc) {
    // Before masking: a bound value also written in the statement's text is not kept.
    unsafe { crate::state::bound_values::note_bound_values(query_desc) };
    crate::plumbing::redaction::scrub_current_statement();
    crate::audit::learn_connection_names();
    unsafe { crate::state::invalidation::note_planned_writes((*query_desc).plannedstmt) };
    unsafe { super::write_targets::note(query_desc) };
    unsafe { super::folding::check_plan(query_desc) };
}

/// `ExecutorStart` hook (unguarded: see the module comment).
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    unsafe {
        take_in_invalidations();
        before_executor_start(query_desc);
        if let Some(previous) = PREV_PROCESS_UTILITY {
            if super::citus_forwarding::next_is_citus(previous as *const std::ffi::c_void) {
                super::citus_forwarding::forward_current_credential(PREV_PROCESS_UTILITY);
            }
        }
        match PREV_EXECUTOR_START {
            Some(previous) => previous(query_desc, eflags),
            None => unguarded_standard_executor_start(query_desc, eflags),
        }
        if super::identity_params::has_parameters((*query_desc).plannedstmt) {
            after_executor_start(query_desc);
        }
    }
}

/// `ExecutorRun` hook (unguarded): takes in pending invalidations before a portal produces rows.
/// A protocol-level portal (Bind, then Execute) runs without passing `ExecutorStart` or
/// `ProcessUtility` again, and its identity is read when it first needs it: a revocation committed
/// between Bind and the first Execute is seen there.
#[cfg(feature = "pg15")]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    unsafe {
        take_in_invalidations();
        match PREV_EXECUTOR_RUN {
            Some(previous) => previous(query_desc, direction, count, execute_once),
            None => unguarded_standard_executor_run(query_desc, direction, count, execute_once),
        }
    }
}

/// `ExecutorRun` hook (unguarded), PostgreSQL 16 and later: as above.
#[cfg(not(feature = "pg15"))]
unsafe extern "C-unwind" fn executor_run(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    unsafe {
        take_in_invalidations();
        match PREV_EXECUTOR_RUN {
            Some(previous) => previous(query_desc, direction, count),
            None => unguarded_standard_executor_run(query_desc, direction, count),
        }
    }
}

/// pg_tenancy's part of `ExecutorStart` after the standard routine, for a plan whose identity
/// initPlans became parameters: their evaluators.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn after_executor_start(query_desc: *mut pg_sys::QueryDesc) {
    unsafe { super::identity_params::evaluator::install(query_desc) };
}

/// pg_tenancy's part of planning, once the plan is finished: identity initPlans become parameters.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn after_planner(stmt: *mut pg_sys::PlannedStmt) {
    unsafe { super::identity_params::strip::strip(stmt) };
}

/// `planner_hook` (unguarded, like the others).
unsafe extern "C-unwind" fn planner(
    parse: *mut pg_sys::Query,
    query_string: *const c_char,
    cursor_options: c_int,
    bound_params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    unsafe {
        let outer = super::folding::begin_planning();
        let stmt = match PREV_PLANNER {
            Some(previous) => previous(parse, query_string, cursor_options, bound_params),
            None => unguarded_standard_planner(parse, query_string, cursor_options, bound_params),
        };
        super::folding::carry_into(stmt, outer);
        if !(*stmt).subplans.is_null() {
            after_planner(stmt);
        }
        stmt
    }
}

/// pg_tenancy's part of `emit_log_hook`: masking, then the denial observer.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn before_emit_log(edata: *mut pg_sys::ErrorData) {
    unsafe {
        crate::plumbing::redaction::scrub_error(edata);
        crate::audit::observe_error(edata);
    }
}

/// `emit_log_hook` (unguarded, like the others).
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    unsafe {
        before_emit_log(edata);
        if let Some(previous) = PREV_EMIT_LOG {
            previous(edata);
        }
    }
}

/// pg_tenancy's part of `get_relation_info_hook`: the vector indexes the planner may use.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn after_get_relation_info(relation: pg_sys::Oid, rel: *mut pg_sys::RelOptInfo) {
    unsafe { crate::search::index_choice::steer(relation, rel) };
}

/// `get_relation_info_hook` (unguarded, like the others).
unsafe extern "C-unwind" fn get_relation_info(
    root: *mut pg_sys::PlannerInfo,
    relation: pg_sys::Oid,
    inhparent: bool,
    rel: *mut pg_sys::RelOptInfo,
) {
    unsafe {
        if let Some(previous) = PREV_GET_RELATION_INFO {
            previous(root, relation, inhparent, rel);
        }
        after_get_relation_info(relation, rel);
    }
}

/// Transaction callback: at pre-commit, refuse a held cursor filled under a per-transaction
/// identity (`cursors`); at the end, forget the transaction's cursors; on abort, mask the
/// statement text `pg_stat_activity` shows.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact_event(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_COMMIT => super::cursors::at_pre_commit(),
        XACT_EVENT_COMMIT | XACT_EVENT_PREPARE | XACT_EVENT_ABORT => {
            super::cursors::at_transaction_end();
            super::citus_forwarding::at_transaction_end();
            crate::audit::forget_write_targets();
            if event == XACT_EVENT_ABORT {
                crate::plumbing::redaction::scrub_reported_activity();
                super::folding::forget_planning();
            }
        }
        _ => {}
    }
}

/// Subtransaction callback: the same when a savepoint's work aborts.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        crate::plumbing::redaction::scrub_reported_activity();
        super::folding::forget_planning();
        super::citus_forwarding::at_subtransaction_abort();
    }
}
