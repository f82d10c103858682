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

/// The record of setting `name`, looked up among all settings the first time only (null if absent).
pub fn option_of(
    slot: &'static std::thread::LocalKey<std::cell::Cell<*const pg_sys::config_generic>>,
    name: &std::ffi::CStr,
) -> *const pg_sys::config_generic {
    if slot.get().is_null() {
        let found = unsafe {
            let (all, count) = guc_variables();
            (0..count)
                .map(|i| *all.add(i) as *const pg_sys::config_generic)
                .find(|option| !option.is_null() && std::ffi::CStr::from_ptr((**option).name) == name)
        };
        slot.set(found.unwrap_or(std::ptr::null()));
    }
    slot.get()
}

/// Every setting's record and their number (PostgreSQL 16 made the count an out-parameter).
///
/// # Safety
/// Call in a backend, after the settings are defined.
#[cfg(feature = "pg15")]
unsafe fn guc_variables() -> (*mut *mut pg_sys::config_generic, usize) {
    unsafe { (pg_sys::get_guc_variables(), pg_sys::GetNumConfigOptions() as usize) }
}

/// Every setting's record and their number (PostgreSQL 16 made the count an out-parameter).
///
/// # Safety
/// Call in a backend, after the settings are defined.
#[cfg(not(feature = "pg15"))]
unsafe fn guc_variables() -> (*mut *mut pg_sys::config_generic, usize) {
    let mut count = 0;
    let all = unsafe { pg_sys::get_guc_variables(&mut count) };
    (all, usize::try_from(count).unwrap_or(0))
}

/// Whether a value comes from, or is being validated for, a catalog that every user can read:
/// `ALTER ROLE/DATABASE … SET` (pg_db_role_setting, shown by `pg_roles.rolconfig`) or a function's
/// `SET` clause (`pg_proc.proconfig`). PGC_S_TEST is the validation of both.
pub fn is_stored_source(source: pg_sys::GucSource::Type) -> bool {
    use pg_sys::GucSource::*;
    matches!(
        source,
        PGC_S_TEST | PGC_S_DATABASE | PGC_S_USER | PGC_S_DATABASE_USER | PGC_S_GLOBAL
    )
}

/// Where an assignment comes from, in words, for the audit trail.
pub fn source_name(source: pg_sys::GucSource::Type) -> &'static str {
    use pg_sys::GucSource::*;
    match source {
        PGC_S_TEST => "ALTER ROLE/DATABASE … SET or a function SET clause",
        PGC_S_DATABASE | PGC_S_USER | PGC_S_DATABASE_USER => "role or database settings",
        PGC_S_CLIENT => "connection startup options",
        PGC_S_SESSION => "SET, set_config or a function SET clause",
        PGC_S_FILE | PGC_S_GLOBAL => "configuration files",
        _ => "another source",
    }
}
