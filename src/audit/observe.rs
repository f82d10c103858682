//! Denials that PostgreSQL itself raises and pg_tenancy can only observe: a write refused by a
//! row-level security check (`WITH CHECK` of a policy `tenancy.protect` wrote), and an
//! administration function called by a role without `EXECUTE` on it. `emit_log_hook` sees them on
//! their way out; it records them in the ring and attaches the structured line to the error's
//! server-log detail, because logging anew from inside error reporting is not safe.
//!
//! An error is classified by where it came from, never by words a caller can choose: any role can
//! raise any message with any SQLSTATE (`RAISE EXCEPTION … USING ERRCODE = '42501'`), and such an
//! error is no denial. So an error counts only when its untranslated format is PostgreSQL's own
//! (`message_id`, which `RAISE` sets to "%s") and, for a refused write, when the table it names
//! is one this transaction wrote that carries pg_tenancy's workspace policy (noted by
//! `ExecutorStart`, `note_write_target`). The API-key functions' own refusals are recorded where
//! they are raised (`tenancy._deny_admin`).

use crate::verify::{Denial, Reason};
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::CStr;

/// Administration functions whose refused calls are denials.
const ADMIN_FUNCTIONS: [&str; 7] = [
    "add_issuer",
    "set_jwks",
    "drop_issuer",
    "revoke_session",
    "create_api_key",
    "revoke_api_key",
    "rotate_api_key",
];

/// The denial an error stands for, if any (matched on the untranslated message format).
fn denial_of(edata: &pg_sys::ErrorData) -> Option<Denial> {
    if edata.elevel < pgrx::PgLogLevel::ERROR as i32
        || edata.sqlerrcode != pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32
        || edata.message_id.is_null()
    {
        return None;
    }
    let format = unsafe { CStr::from_ptr(edata.message_id) }.to_bytes();
    let message = super::ring::c_text(edata.message);
    if format.starts_with(b"new row violates row-level security policy") {
        let table = refused_table(&message)?;
        let ours = WRITE_TARGETS.with_borrow(|targets| targets.iter().any(|t| t == table));
        return ours.then(|| Denial::new(Reason::WriteRefused, message));
    }
    // PostgreSQL's own ACL refusal (aclcheck_error), not a message that merely reads the same.
    if format != b"permission denied for function %s" {
        return None;
    }
    if let Some(name) = message.strip_prefix("permission denied for function ") {
        if ADMIN_FUNCTIONS.contains(&name) {
            return Some(Denial::new(Reason::AdminRefused, message));
        }
    }
    None
}

thread_local! {
    /// Names of the tables carrying pg_tenancy's workspace policy that statements of the current
    /// transaction write (bounded: a transaction writing more keeps the first ones).
    static WRITE_TARGETS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Most names kept in `WRITE_TARGETS`.
const WRITE_TARGETS_MAX: usize = 64;

/// Notes that a statement of this transaction writes `table`, which carries pg_tenancy's policy.
pub fn note_write_target(table: &str) {
    WRITE_TARGETS.with_borrow_mut(|targets| {
        if targets.len() < WRITE_TARGETS_MAX && !targets.iter().any(|t| t == table) {
            targets.push(table.to_string());
        }
    });
}

/// Forgets the transaction's write targets (at its end).
pub fn forget_write_targets() {
    WRITE_TARGETS.with_borrow_mut(Vec::clear);
}

/// The table a row-level security refusal names: `… for table "docs"` (the policy's own name, when
/// PostgreSQL gives it, comes before).
fn refused_table(message: &str) -> Option<&str> {
    let start = message.rfind(" for table \"")? + " for table \"".len();
    message[start..].strip_suffix('"')
}

/// The observing part of `emit_log_hook` (src/surface/hooks.rs, after masking): records denials.
///
/// # Safety
/// `edata` must be null or the error being reported.
pub unsafe fn observe_error(edata: *mut pg_sys::ErrorData) {
    unsafe {
        if let Some(data) = edata.as_mut() {
            if let Some(denial) = denial_of(data) {
                let line = super::remember(&denial, false);
                if data.output_to_server && data.detail_log.is_null() {
                    let text = std::ffi::CString::new(format!("pg_tenancy denial: {line}")).unwrap_or_default();
                    data.detail_log = pg_sys::pstrdup(text.as_ptr());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::refused_table;

    #[test]
    fn the_refused_table_is_read_from_postgresqls_message() {
        assert_eq!(
            refused_table(r#"new row violates row-level security policy for table "docs""#),
            Some("docs")
        );
        assert_eq!(
            refused_table(r#"new row violates row-level security policy "p" for table "a "" b""#),
            Some(r#"a "" b"#)
        );
        assert_eq!(refused_table("new row violates row-level security policy"), None);
    }
}
