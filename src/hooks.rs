//! Passing control on from pg_tenancy's hooks: each ends by calling the hook that was installed
//! before it, or PostgreSQL's standard routine when there was none. The choice is made here once.

use pgrx::pg_sys;
use std::ffi::{c_char, c_int};

/// Runs `previous` (the `ProcessUtility` hook saved when the caller was installed), or the
/// standard routine, with the caller's arguments.
///
/// # Safety
/// The arguments must be those PostgreSQL passed to the calling hook.
#[allow(clippy::too_many_arguments)]
pub unsafe fn next_process_utility(
    previous: pg_sys::ProcessUtility_hook_type,
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
        match previous {
            Some(hook) => hook(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
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
    }
}

/// Runs `previous` (the `ExecutorStart` hook saved when the caller was installed), or the
/// standard routine.
///
/// # Safety
/// The arguments must be those PostgreSQL passed to the calling hook.
pub unsafe fn next_executor_start(
    previous: pg_sys::ExecutorStart_hook_type,
    query_desc: *mut pg_sys::QueryDesc,
    eflags: c_int,
) {
    unsafe {
        match previous {
            Some(hook) => hook(query_desc, eflags),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
    }
}
