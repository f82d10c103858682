//! GUC helpers that know nothing of what the settings mean.

use pgrx::pg_sys;
use std::ffi::{c_char, CString};

/// Sets the error a failing check hook reports (the GUC_check_* macros of guc.h).
pub(crate) unsafe fn check_error(code: i32, message: &str, hint: Option<&str>) {
    unsafe {
        pg_sys::GUC_check_errcode(code);
        pg_sys::GUC_check_errmsg_string = pstrdup(message);
        if let Some(hint) = hint {
            pg_sys::GUC_check_errhint_string = pstrdup(hint);
        }
    }
}

/// Copies a Rust string into the current memory context.
pub(crate) unsafe fn pstrdup(text: &str) -> *mut c_char {
    let c = CString::new(text.replace('\0', "")).unwrap_or_default();
    unsafe { pg_sys::pstrdup(c.as_ptr()) }
}

/// Reserves the `tenancy.` prefix: any other `tenancy.*` name is an error. Called once every
/// setting is defined.
pub fn reserve_prefix() {
    unsafe { pg_sys::MarkGUCPrefixReserved(c"tenancy".as_ptr()) };
}
