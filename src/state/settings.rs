//! The identity and protection settings, each in its narrowest context. The credentials a client
//! writes (`tenancy.token`, `tenancy.api_key`) live in `credentials.rs`, the audit trail's
//! settings in `audit/settings.rs`, the read-only derived settings in
//! `surface/derived_settings.rs`; `plumbing::guc::reserve_prefix` runs once all are defined.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::CString;

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

/// `tenancy.api_key_max_lifetime` (SUSET): days an API key made by an identity (a member's token or
/// another key) may live at most; 0 for no limit. An administrator's keys are not bounded.
pub static API_KEY_MAX_LIFETIME: GucSetting<i32> = GucSetting::<i32>::new(90);

/// Upper bound of `tenancy.clock_skew`: a leeway longer than a WorkOS token's life is a mistake.
pub const MAX_CLOCK_SKEW: i32 = 300;

/// Registers the settings of this file (`tenancy.token` and `tenancy.api_key` are registered by
/// `credentials.rs`; `plumbing::guc::reserve_prefix` reserves the prefix once all are defined).
pub fn init() {
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
    GucRegistry::define_int_guc(
        c"tenancy.api_key_max_lifetime",
        c"Days an API key made by an identity may live at most (0: no limit).",
        c"Keys made without expires_at get this lifetime; a later expires_at is refused. Administrators' keys are not bounded.",
        &API_KEY_MAX_LIFETIME,
        0,
        36_500,
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
}
