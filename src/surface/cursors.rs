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

use crate::state::credentials;
use crate::verify::{Denial, Reason};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

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
    crate::plumbing::errors::raise(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        denial.reason.message(),
        Some(denial.detail.clone()),
        denial.reason.hint(),
    );
}

/// The check `ProcessUtility` runs (src/hooks.rs) before a utility statement: a held cursor
/// under a transaction-scoped credential is refused.
///
/// # Safety
/// `stmt` must be null or the utility statement about to run.
pub(crate) unsafe fn check_utility(stmt: *mut pg_sys::Node) {
    if unsafe { declares_held_cursor(stmt) } {
        refuse_if_transaction_scoped();
    }
}
