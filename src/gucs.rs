//! Every `tenancy.*` setting, each in its narrowest context, and the read-only identity settings.
//!
//! The credentials a client writes (`tenancy.token`, `tenancy.api_key`) live in `credentials.rs`.
//! `tenancy.workspace_id`, `user_id` and `role` exist only so that `SHOW` works in psql: their
//! value is derived from the verified credential by a show hook, and their check hook refuses every assignment from every source (SET,
//! SET LOCAL, set_config, ALTER ROLE/DATABASE … SET, startup options, function SET clauses) with
//! SQLSTATE 42501. The stored value is never read, so RESET of them changes nothing either.

use crate::identity;
use crate::verify::{Denial, Reason};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

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

/// Whether a credential may arrive as a literal in statement text (`tenancy.credentials_in_text`).
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum CredentialsInText {
    /// `SET tenancy.token = '…'` and literals in `set_config` are accepted (and masked).
    #[name = c"allow"]
    Allow,
    /// Only a bound parameter or a startup option may carry the credential.
    #[name = c"refuse"]
    Refuse,
}

/// `tenancy.credentials_in_text` (SUSET): set `refuse` for application roles, whose statement
/// text other connections of the same role can read in `pg_stat_activity` before it is parsed.
pub static CREDENTIALS_IN_TEXT: GucSetting<CredentialsInText> =
    GucSetting::<CredentialsInText>::new(CredentialsInText::Allow);

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
    crate::credentials::init();
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
    GucRegistry::define_enum_guc(
        c"tenancy.credentials_in_text",
        c"Whether tenancy.token and tenancy.api_key may be written as literals in statement text.",
        c"Set refuse for application roles: pg_stat_activity shows statement text before it is parsed, so only a bound parameter keeps the credential out of it.",
        &CREDENTIALS_IN_TEXT,
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
        format!("assignment from {}", crate::credentials::source_name(source)),
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
