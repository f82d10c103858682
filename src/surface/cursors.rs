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
//!
//! A held cursor declared *before* the credential is set is materialized at COMMIT under that
//! credential (its initPlan keeps the identity it read even if the credential is cleared before
//! COMMIT). So the COMMIT of a transaction that declared a held cursor and had a
//! transaction-scoped credential at any moment is refused: the cursors are closed first (a portal
//! made holdable at pre-commit belongs to no transaction any more, and an abort would keep it),
//! then the COMMIT fails with 42501 and the transaction rolls back. "At any moment" comes from the
//! credentials' assign hook: a credential set and cleared inside PL/pgSQL, or between the portals
//! of the extended protocol, passes no statement hook.

use std::cell::RefCell;

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
    refuse("DECLARE … WITH HOLD while tenancy.token or tenancy.api_key is set for the transaction only".into());
}

/// Records a `held_cursor` denial with `detail` and raises it (42501).
fn refuse(detail: String) -> ! {
    let denial = Denial::new(Reason::HeldCursor, detail);
    crate::audit::record(&denial);
    crate::plumbing::errors::error(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE)
        .message(denial.reason.message())
        .detail(denial.detail.clone())
        .hint_if_any(denial.reason.hint())
        .raise()
}

thread_local! {
    /// Names of the held cursors declared in the current transaction.
    static HELD: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The check `ProcessUtility` runs (src/surface/hooks.rs) before a utility statement: a held cursor
/// under a transaction-scoped credential is refused, one declared without is remembered.
///
/// # Safety
/// `stmt` must be null or the utility statement about to run.
pub(crate) unsafe fn check_utility(stmt: *mut pg_sys::Node) {
    if unsafe { declares_held_cursor(stmt) } {
        refuse_if_transaction_scoped();
        let name = unsafe { (*stmt.cast::<pg_sys::DeclareCursorStmt>()).portalname };
        if !name.is_null() {
            let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned();
            HELD.with_borrow_mut(|held| held.push(name));
        }
    }
}

/// At pre-commit (src/surface/hooks.rs): refuses the COMMIT of a transaction that would hand a held
/// cursor filled under a transaction-scoped credential to the connection's next client, after
/// closing those cursors.
pub(crate) fn at_pre_commit() {
    if HELD.with_borrow(Vec::is_empty) {
        return;
    }
    let names = HELD.take();
    // Known from the credentials' assign hook, which sees every assignment: a statement's hooks
    // miss one made inside PL/pgSQL or by a portal that started before the credential was set.
    if !credentials::is_transaction_scoped() && !credentials::transaction_scoped_credential_was_set() {
        return;
    }
    let mut closed = Vec::new();
    for name in names {
        let Ok(c_name) = std::ffi::CString::new(name.clone()) else {
            continue;
        };
        unsafe {
            let portal = pg_sys::GetPortalByName(c_name.as_ptr());
            if !portal.is_null() && (*portal).cursorOptions & pg_sys::CURSOR_OPT_HOLD as i32 != 0 {
                pg_sys::PortalDrop(portal, false);
                closed.push(name);
            }
        }
    }
    if closed.is_empty() {
        return;
    }
    refuse(format!(
        "COMMIT with cursor {} declared WITH HOLD while tenancy.token or tenancy.api_key was set for the transaction only: closed, transaction rolled back",
        closed.join(", ")
    ));
}

/// At the end of every transaction: forget its cursors and whether it had a per-transaction
/// credential.
pub(crate) fn at_transaction_end() {
    HELD.with_borrow_mut(Vec::clear);
    credentials::forget_transaction_scoped_credential();
}
