//! Cursors that would outlive the identity that fills them.
//!
//! A cursor declared `WITH HOLD` is materialized at COMMIT with the rows the declaring identity
//! could see, and stays open in the session after the transaction. With a per-transaction
//! identity (`SET LOCAL tenancy.token`, the pattern behind a transaction pooler) the server
//! connection then goes to the pooler's next client, who can list the cursor in `pg_cursors`
//! and `FETCH` another tenant's rows from it. pg_tenancy refuses to declare a held cursor while
//! the credential is transaction-scoped (42501, recorded as `held_cursor`). A session-level or
//! startup-option identity belongs to the connection, so its held cursors stay allowed; so do
//! held cursors declared without any credential, which cannot read a protected row.
//!
//! Guarding FETCH instead would not be enough: the extended protocol's Execute message names
//! portals directly and does not pass through `ProcessUtility`, so the cursor must never exist.

use crate::credentials;
use crate::hooks;
use crate::verify::{Denial, Reason};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::ffi::c_char;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Installs the `ProcessUtility` check, chained to the hook installed before it.
pub fn init() {
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Whether `stmt` declares a cursor `WITH HOLD`.
unsafe fn declares_held_cursor(stmt: *mut pg_sys::Node) -> bool {
    unsafe {
        !stmt.is_null()
            && (*stmt).type_ == pg_sys::NodeTag::T_DeclareCursorStmt
            && (*stmt.cast::<pg_sys::DeclareCursorStmt>()).options & pg_sys::CURSOR_OPT_HOLD as i32 != 0
    }
}

/// Refuses a held cursor under a transaction-scoped credential.
fn refuse_if_transaction_scoped() {
    if !credentials::is_transaction_scoped() {
        return;
    }
    let denial = Denial::new(
        Reason::HeldCursor,
        "DECLARE … WITH HOLD while tenancy.token or tenancy.api_key is set for the transaction only",
    );
    crate::audit::record(&denial);
    crate::errors::raise(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        denial.reason.message(),
        Some(denial.detail.clone()),
        denial.reason.hint(),
    );
}

/// `ProcessUtility` hook: the held-cursor check, then the statement.
#[pgrx::pg_guard]
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
        if declares_held_cursor((*pstmt).utilityStmt) {
            refuse_if_transaction_scoped();
        }
        hooks::next_process_utility(
            PREV_PROCESS_UTILITY,
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        )
    }
}
