//! Every `tenancy.*` setting, each in its narrowest context, and the read-only identity settings.
//!
//! `tenancy.token` is the one identity input a client writes. `tenancy.workspace_id`, `user_id`
//! and `role` exist only so that `SHOW` works in psql: their value is derived from the verified
//! token by a show hook, and their check hook refuses every assignment from every source (SET,
//! SET LOCAL, set_config, ALTER ROLE/DATABASE … SET, startup options, function SET clauses) with
//! SQLSTATE 42501. The stored value is never read, so RESET of them changes nothing either.

use crate::identity;
use crate::verify::{jws, Denial, Reason};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

/// The raw `tenancy.token` value, owned by the GUC machinery.
static mut TOKEN: *mut c_char = ptr::null_mut();
/// Storage the derived settings need but never use.
static mut DERIVED_STORAGE: [*mut c_char; 3] = [ptr::null_mut(); 3];

/// `tenancy.clock_skew`: seconds of tolerated clock difference for `exp`, `nbf` and `iat`.
pub static CLOCK_SKEW: GucSetting<i32> = GucSetting::<i32>::new(30);
/// `tenancy.auto_protect`: protect new tables that have a workspace column (event trigger).
pub static AUTO_PROTECT: GucSetting<bool> = GucSetting::<bool>::new(false);
/// `tenancy.auto_protect_schemas`: comma-separated schemas the event trigger watches.
pub static AUTO_PROTECT_SCHEMAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"public"));

/// Whether a token may be set for a whole session (`tenancy.session_tokens`).
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum SessionTokens {
    /// Session-level `SET tenancy.token` is accepted.
    #[name = c"allow"]
    Allow,
    /// Identity reads refuse a token that a session-level SET put there (for pooled roles).
    #[name = c"refuse"]
    Refuse,
}

/// `tenancy.session_tokens` (SUSET): set `refuse` for roles that connect through a pooler.
pub static SESSION_TOKENS: GucSetting<SessionTokens> = GucSetting::<SessionTokens>::new(SessionTokens::Allow);

/// `tenancy.audit_ring_size` (POSTMASTER): denials kept in shared memory.
pub static AUDIT_RING_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1024);
/// `tenancy.audit_database` (POSTMASTER): where the worker writes `tenancy.audit_log`.
pub static AUDIT_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// `tenancy.audit_naptime` (SIGHUP): milliseconds between the worker's rounds.
pub static AUDIT_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(200);
/// `tenancy.audit_retention` (SIGHUP): days `tenancy.audit_log` keeps a row; 0 keeps them all.
pub static AUDIT_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(90);
/// `tenancy.alert_burst_count` (SIGHUP): more denials than this from one source make a burst.
pub static ALERT_BURST_COUNT: GucSetting<i32> = GucSetting::<i32>::new(20);
/// `tenancy.alert_burst_window` (SIGHUP): seconds over which a burst is counted.
pub static ALERT_BURST_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(10);

/// Upper bound of `tenancy.clock_skew`: a leeway longer than a WorkOS token's life is a mistake.
pub const MAX_CLOCK_SKEW: i32 = 300;

/// Registers every setting and reserves the `tenancy.` prefix.
pub fn init() {
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"tenancy.token".as_ptr(),
            c"Access token (JWT) that identifies the session's user and workspace.".as_ptr(),
            c"Set it per transaction with SET LOCAL or set_config(..., true) behind a pooler. SHOW displays whether it is set, never its value.".as_ptr(),
            &raw mut TOKEN,
            ptr::null(),
            pg_sys::GucContext::PGC_USERSET,
            (pg_sys::GUC_NOT_IN_SAMPLE | pg_sys::GUC_DISALLOW_IN_FILE | pg_sys::GUC_DISALLOW_IN_AUTO_FILE) as i32,
            Some(check_token),
            Some(assign_token),
            Some(show_token),
        );
    }
    GucRegistry::define_int_guc(
        c"tenancy.clock_skew",
        c"Seconds of clock difference tolerated when checking exp, nbf and iat.",
        c"Capped at 300 seconds.",
        &CLOCK_SKEW,
        0,
        MAX_CLOCK_SKEW,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"tenancy.auto_protect",
        c"Protect every new table that has a workspace column in a watched schema.",
        c"When off, creating such a table raises a WARNING instead. Schemas: tenancy.auto_protect_schemas.",
        &AUTO_PROTECT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"tenancy.auto_protect_schemas",
        c"Comma-separated schemas whose new tables tenancy.auto_protect watches.",
        c"",
        &AUTO_PROTECT_SCHEMAS,
        GucContext::Suset,
        GucFlags::from_bits_truncate(pg_sys::GUC_LIST_INPUT as i32),
    );
    GucRegistry::define_enum_guc(
        c"tenancy.session_tokens",
        c"Whether tenancy.token may be set for a whole session (allow) or only per transaction (refuse).",
        c"Set refuse for roles behind a transaction pooler, where a session-level SET would outlive its client.",
        &SESSION_TOKENS,
        GucContext::Suset,
        GucFlags::default(),
    );
    define_audit_settings();
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
    unsafe { pg_sys::MarkGUCPrefixReserved(c"tenancy".as_ptr()) };
}

/// Settings of the audit trail: the POSTMASTER ones only while preloading (as
/// pg_stat_statements does), since shared memory is sized from them then and only then.
fn define_audit_settings() {
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_int_guc(
            c"tenancy.audit_ring_size",
            c"Denials kept in the shared-memory ring (tenancy.denials).",
            c"The oldest entry is overwritten when the ring is full; tenancy.stats counts the dropped ones.",
            &AUDIT_RING_SIZE,
            16,
            1 << 20,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"tenancy.audit_database",
            c"Database whose tenancy.audit_log receives every database's denials.",
            c"pg_tenancy must be installed there.",
            &AUDIT_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"tenancy.audit_naptime",
        c"Milliseconds between rounds of the audit writer.",
        c"",
        &AUDIT_NAPTIME,
        10,
        10_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"tenancy.audit_retention",
        c"Days tenancy.audit_log keeps a row; 0 keeps every row.",
        c"",
        &AUDIT_RETENTION,
        0,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.alert_burst_count",
        c"More denials than this from one source within tenancy.alert_burst_window raise an alert.",
        c"A source is a client address, database role and database.",
        &ALERT_BURST_COUNT,
        1,
        1_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tenancy.alert_burst_window",
        c"Seconds over which denials from one source are counted for a burst alert.",
        c"",
        &ALERT_BURST_WINDOW,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
}

/// The audit database's name.
pub fn audit_database() -> String {
    AUDIT_DATABASE
        .get()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".into())
}

/// The current `tenancy.token` text, `None` when unset or empty.
pub fn token() -> Option<&'static str> {
    let raw = unsafe { TOKEN };
    if raw.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(raw) }.to_str().ok()?;
    (!text.is_empty()).then_some(text)
}

/// Whether the current `tenancy.token` value was put there by a session-level SET (or
/// `set_config(…, false)`), as opposed to SET LOCAL, a function's SET clause or a startup option.
pub fn token_is_session_scoped() -> bool {
    let Some(option) = token_option() else { return false };
    let option = unsafe { &*option };
    if option.source != pg_sys::GucSource::PGC_S_SESSION {
        return false;
    }
    match unsafe { option.stack.as_ref() } {
        None => true,
        Some(top) => top.state == pg_sys::GucStackState::GUC_SET,
    }
}

/// PostgreSQL's record of the `tenancy.token` setting, found once (records never move).
fn token_option() -> Option<*const pg_sys::config_generic> {
    static mut FOUND: *const pg_sys::config_generic = ptr::null();
    unsafe {
        if FOUND.is_null() {
            let all = pg_sys::get_guc_variables();
            for i in 0..pg_sys::GetNumConfigOptions() as usize {
                let option = *all.add(i);
                if !option.is_null() && CStr::from_ptr((*option).name) == c"tenancy.token" {
                    FOUND = option;
                    break;
                }
            }
        }
        (!FOUND.is_null()).then_some(FOUND)
    }
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

/// Sets the error a failing check hook reports (the GUC_check_* macros of guc.h).
unsafe fn check_error(code: i32, message: &str, hint: Option<&str>) {
    unsafe {
        pg_sys::GUC_check_errcode(code);
        pg_sys::GUC_check_errmsg_string = pstrdup(message);
        if let Some(hint) = hint {
            pg_sys::GUC_check_errhint_string = pstrdup(hint);
        }
    }
}

/// Copies a Rust string into the current memory context.
unsafe fn pstrdup(text: &str) -> *mut c_char {
    let c = CString::new(text.replace('\0', "")).unwrap_or_default();
    unsafe { pg_sys::pstrdup(c.as_ptr()) }
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
        format!("assignment from {}", source_name(source)),
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

/// Check hook of `tenancy.token`: shape and size always; full verification when a transaction
/// can run queries (a SET or set_config), so that a bad token fails at the SET itself.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_token(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    let raw = unsafe { *newval };
    if raw.is_null() {
        return true;
    }
    let Ok(token) = unsafe { CStr::from_ptr(raw) }.to_str() else {
        unsafe {
            check_error(
                pgrx::PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION as i32,
                "tenancy token is malformed",
                None,
            )
        };
        return false;
    };
    if token.is_empty() {
        return true;
    }
    if is_stored_source(source) {
        crate::audit::record(&Denial::new(
            Reason::TokenStored,
            format!("assignment from {}", source_name(source)),
        ));
        unsafe {
            check_error(
                pgrx::PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32,
                "tenancy.token cannot be stored in role, database or function settings",
                Some("Those are readable by every user (pg_roles, pg_proc). Set the token per session or transaction."),
            )
        };
        return false;
    }
    let outcome = jws::check_shape(token).and_then(|()| {
        if source == pg_sys::GucSource::PGC_S_SESSION && identity::can_query() {
            identity::resolve(token).map(|_| ())
        } else {
            Ok(())
        }
    });
    match outcome {
        Ok(()) => true,
        Err(denial) => {
            identity::note_denial(&denial);
            unsafe {
                check_error(
                    pgrx::PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION as i32,
                    &identity::describe(&denial),
                    denial.reason.hint(),
                )
            };
            false
        }
    }
}

/// Whether a value comes from, or is being validated for, a catalog that every user can read:
/// `ALTER ROLE/DATABASE … SET` (pg_db_role_setting, shown by `pg_roles.rolconfig`) or a function's
/// `SET` clause (`pg_proc.proconfig`). PGC_S_TEST is the validation of both.
fn is_stored_source(source: pg_sys::GucSource::Type) -> bool {
    use pg_sys::GucSource::*;
    matches!(
        source,
        PGC_S_TEST | PGC_S_DATABASE | PGC_S_USER | PGC_S_DATABASE_USER | PGC_S_GLOBAL
    )
}

/// Where an assignment comes from, in words, for the audit trail.
fn source_name(source: pg_sys::GucSource::Type) -> &'static str {
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

/// Assign hook of `tenancy.token`: any change, including a rollback's, starts a new generation.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn assign_token(_newval: *const c_char, _extra: *mut c_void) {
    identity::token_changed();
}

/// `SHOW tenancy.token` tells whether a token is set, never the token.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_token() -> *const c_char {
    if token().is_some() {
        c"(set)".as_ptr()
    } else {
        c"".as_ptr()
    }
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
