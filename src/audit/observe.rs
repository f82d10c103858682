//! Denials that PostgreSQL itself raises and pg_tenancy can only observe: a write refused by a
//! row-level security check (`WITH CHECK` of a policy `tenancy.protect` wrote), and an
//! administration function called by a role without `EXECUTE` on it, and an API-key function
//! refusing its caller (not a manager of the workspace, or a key beyond the manager's rights). `emit_log_hook` sees them
//! on their way out; it records them in the ring and attaches the structured line to the error's
//! server-log detail, because logging anew from inside error reporting is not safe.

use crate::verify::{Denial, Reason};
use pgrx::pg_sys;
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
        return Some(Denial::new(Reason::WriteRefused, message));
    }
    // Refusals of the key functions themselves (src: sql/api_keys.sql): not a manager of the
    // workspace, or a key beyond the manager's rights.
    if message.starts_with("permission denied to ") && message.contains("api key") {
        return Some(Denial::new(Reason::AdminRefused, message));
    }
    if let Some(name) = message.strip_prefix("permission denied for function ") {
        if ADMIN_FUNCTIONS.contains(&name) {
            return Some(Denial::new(Reason::AdminRefused, message));
        }
    }
    None
}

/// The observing part of `emit_log_hook` (src/hooks.rs, after masking): records denials.
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
