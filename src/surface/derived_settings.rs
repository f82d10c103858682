//! `tenancy.workspace_id`, `user_id` and `role` exist only so that `SHOW` works in psql: their
//! value is derived from the verified credential by a show hook, and their check hook refuses
//! every assignment from every source (SET, SET LOCAL, set_config, ALTER ROLE/DATABASE … SET,
//! startup options, function SET clauses) with SQLSTATE 42501. The stored value is never read,
//! so RESET of them changes nothing either.

use crate::identity;
use crate::plumbing::guc::{check_error, pstrdup};
use crate::verify::{Denial, Reason};
use pgrx::pg_sys;
use std::ffi::{c_char, c_void, CStr};
use std::ptr;

/// Storage the derived settings need but never use.
static mut DERIVED_STORAGE: [*mut c_char; 3] = [ptr::null_mut(); 3];

/// Defines the three read-only identity settings.
pub fn init() {
    define_derived(
        c"tenancy.workspace_id",
        c"Workspace of the verified identity (read-only).",
        0,
        show_workspace_id,
    );
    define_derived(
        c"tenancy.user_id",
        c"User of the verified identity (read-only).",
        1,
        show_user_id,
    );
    define_derived(
        c"tenancy.role",
        c"Role of the verified identity (read-only).",
        2,
        show_role,
    );
}

/// Defines one read-only identity setting.
fn define_derived(
    name: &'static CStr,
    description: &'static CStr,
    slot: usize,
    show: unsafe extern "C-unwind" fn() -> *const c_char,
) {
    let flags = pg_sys::GUC_NOT_IN_SAMPLE
        | pg_sys::GUC_NO_RESET_ALL
        | pg_sys::GUC_DISALLOW_IN_FILE
        | pg_sys::GUC_DISALLOW_IN_AUTO_FILE;
    unsafe {
        pg_sys::DefineCustomStringVariable(
            name.as_ptr(),
            description.as_ptr(),
            c"Derived from the verified tenancy.token; it cannot be set.".as_ptr(),
            &raw mut DERIVED_STORAGE[slot],
            ptr::null(),
            pg_sys::GucContext::PGC_USERSET,
            flags as i32,
            Some(refuse_assignment),
            None,
            Some(show),
        );
    }
}

/// Check hook of the derived settings: only their built-in default passes.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn refuse_assignment(
    _newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if source == pg_sys::GucSource::PGC_S_DEFAULT {
        return true;
    }
    crate::audit::record(&Denial::new(
        Reason::SpoofAttempt,
        format!("assignment from {}", crate::plumbing::guc::source_name(source)),
    ));
    unsafe {
        check_error(
            pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32,
            "identity settings are derived from the verified token and cannot be set",
            Some("Set tenancy.token (or tenancy.api_key) instead."),
        );
    }
    false
}

/// Shows one field of the identity already verified for the current token.
fn show_field(field: impl Fn(&identity::Identity) -> Option<String>) -> *const c_char {
    let text = identity::peek(field).unwrap_or_default();
    unsafe { pstrdup(&text) }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_workspace_id() -> *const c_char {
    show_field(|i| i.workspace_id.clone())
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_user_id() -> *const c_char {
    show_field(|i| Some(i.user_id.clone()))
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_role() -> *const c_char {
    show_field(|i| i.role.clone())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::sqlstate_of;
    use pgrx::prelude::*;

    #[pg_test]
    fn derived_settings_refuse_every_assignment() {
        for attempt in [
            "SET tenancy.workspace_id = 'w'",
            "SET LOCAL tenancy.user_id = 'u'",
            "SELECT set_config('tenancy.role', 'admin', false)",
        ] {
            assert_eq!(sqlstate_of(attempt).as_deref(), Some("42501"), "{attempt}");
        }
    }
}
