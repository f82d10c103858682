//! The two settings a client writes to say who it is: `tenancy.token` (a WorkOS access token)
//! and `tenancy.api_key` (a key issued by `tenancy.create_api_key`). One of them, never both.
//!
//! Each check hook refuses a value that could never verify (shape, size, checksum) at the SET
//! itself, verifies it fully when the SET runs inside a transaction, and refuses to store a
//! credential in role, database or function settings, which every user can read. The assign
//! hooks only start a new identity generation; the identity is derived on first use.

use super::counters;
use super::readiness;
use super::settings as gucs;
use crate::plumbing::guc::{check_error, is_stored_source, option_of, source_name};
use crate::plumbing::unguarded;
use crate::verify::{jws, Denial, Reason};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};
use std::ptr;

/// The raw `tenancy.token` value, owned by the GUC machinery.
static mut TOKEN: *mut c_char = ptr::null_mut();
/// The raw `tenancy.api_key` value, owned by the GUC machinery.
static mut API_KEY: *mut c_char = ptr::null_mut();

/// The credential of the session.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    Token(&'a str),
    ApiKey(&'a str),
}

impl Credential<'_> {
    /// The credential's text (the cache is keyed by its digest).
    pub fn text(&self) -> &str {
        match self {
            Credential::Token(text) | Credential::ApiKey(text) => text,
        }
    }
}

/// Registers `tenancy.token` and `tenancy.api_key`.
pub fn init() {
    define(
        c"tenancy.token",
        c"Access token (JWT) that identifies the session's user and workspace.",
        &raw mut TOKEN,
        check_token,
        show_token,
    );
    define(
        c"tenancy.api_key",
        c"API key (tnk_…) that identifies a service of a workspace.",
        &raw mut API_KEY,
        check_api_key,
        show_api_key,
    );
}

/// Defines one credential setting: USERSET, never in a file, never inside a security-restricted
/// operation (an index expression or a materialized view run by a maintenance command must not
/// change who the session is), shown as "(set)".
fn define(
    name: &'static CStr,
    description: &'static CStr,
    storage: *mut *mut c_char,
    check: unsafe extern "C-unwind" fn(*mut *mut c_char, *mut *mut c_void, pg_sys::GucSource::Type) -> bool,
    show: unsafe extern "C-unwind" fn() -> *const c_char,
) {
    let flags = pg_sys::GUC_NOT_IN_SAMPLE
        | pg_sys::GUC_DISALLOW_IN_FILE
        | pg_sys::GUC_DISALLOW_IN_AUTO_FILE
        | pg_sys::GUC_NOT_WHILE_SEC_REST;
    unsafe {
        pg_sys::DefineCustomStringVariable(
            name.as_ptr(),
            description.as_ptr(),
            c"Set it per transaction with SET LOCAL or set_config(..., true) behind a pooler. SHOW displays whether it is set, never its value.".as_ptr(),
            storage,
            ptr::null(),
            pg_sys::GucContext::PGC_USERSET,
            flags as i32,
            Some(check),
            Some(assign_credential),
            Some(show),
        );
    }
}

/// Text of a credential setting, `None` when unset or empty. Read on every identity read, so the
/// UTF-8 check is not repeated (447 of the read's ~1,000 instructions, callgrind): PostgreSQL
/// stores no value its check hook refused, and `check` refuses any that is not UTF-8.
fn value(raw: *mut c_char) -> Option<&'static str> {
    if raw.is_null() {
        return None;
    }
    let bytes = unsafe { CStr::from_ptr(raw) }.to_bytes();
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: every stored value passed `check`, which refuses text that is not UTF-8.
    let text = unsafe { std::str::from_utf8_unchecked(bytes) };
    (!text.is_empty()).then_some(text)
}

/// The session's credential, or why there is none.
pub fn current() -> Result<Credential<'static>, Denial> {
    match (value(unsafe { TOKEN }), value(unsafe { API_KEY })) {
        (Some(_), Some(_)) => Err(Denial::new(
            Reason::BothCredentials,
            "tenancy.token and tenancy.api_key",
        )),
        (Some(token), None) => Ok(Credential::Token(token)),
        (None, Some(key)) => Ok(Credential::ApiKey(key)),
        (None, None) => Err(Denial::new(Reason::NoToken, "tenancy.token is not set")),
    }
}

/// Whether the current credential was put there by a session-level SET (or `set_config(…,
/// false)`), as opposed to SET LOCAL, a function's SET clause or a startup option.
pub fn is_session_scoped() -> bool {
    let Some(option) = current_option() else {
        return false;
    };
    option.source == pg_sys::GucSource::PGC_S_SESSION && set_beyond_transaction(option)
}

/// Whether the current credential stays when the transaction ends: a startup option or a
/// session-level SET, not SET LOCAL or a function's SET clause.
pub fn outlives_transaction() -> bool {
    current_option().is_some_and(set_beyond_transaction)
}

/// Whether a credential is set and the end of the transaction (or of a function call) takes it
/// away: SET LOCAL, `set_config(…, true)` or a function's SET clause.
pub fn is_transaction_scoped() -> bool {
    current_option().is_some_and(|option| !set_beyond_transaction(option))
}

/// Whether `option`'s current value is not one that the end of the transaction (or of the
/// function call) restores.
fn set_beyond_transaction(option: &pg_sys::config_generic) -> bool {
    match unsafe { option.stack.as_ref() } {
        None => true,
        Some(top) => top.state == pg_sys::GucStackState::GUC_SET,
    }
}

/// PostgreSQL's record of the setting that holds the current credential.
fn current_option() -> Option<&'static pg_sys::config_generic> {
    let option = match current() {
        Ok(Credential::Token(_)) => option_of(&TOKEN_OPTION, c"tenancy.token"),
        Ok(Credential::ApiKey(_)) => option_of(&API_KEY_OPTION, c"tenancy.api_key"),
        Err(_) => return None,
    };
    unsafe { option.as_ref() }
}

thread_local! {
    /// PostgreSQL's records of our two settings, found once: this runs on every identity read of
    /// a role with `tenancy.session_tokens = refuse`, and records never move once defined.
    static TOKEN_OPTION: Cell<*const pg_sys::config_generic> = const { Cell::new(ptr::null()) };
    static API_KEY_OPTION: Cell<*const pg_sys::config_generic> = const { Cell::new(ptr::null()) };
}

/// Check hook of `tenancy.token`.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_token(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    check(unsafe { *newval }, source, "tenancy.token", jws::check_shape, |text| {
        Credential::Token(text)
    })
}

/// Check hook of `tenancy.api_key`.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_api_key(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    check(
        unsafe { *newval },
        source,
        "tenancy.api_key",
        crate::verify::api_key_format::check_shape,
        |text| Credential::ApiKey(text),
    )
}

thread_local! {
    /// What fully verifies a credential at the SET (registered by the identity layer above).
    static VERIFIER: Cell<Option<Verifier>> = const { Cell::new(None) };
}

/// A full verification of a credential: the identity layer's, registered at `_PG_init`.
pub type Verifier = for<'a> fn(Credential<'a>) -> Result<(), Denial>;

/// Registers the full verification the check hooks run when a SET happens inside a transaction.
pub fn set_verifier(verifier: Verifier) {
    VERIFIER.set(Some(verifier));
}

/// Runs the registered verification (none registered: shape only).
fn verify_at_set(credential: Credential<'_>) -> Result<(), Denial> {
    VERIFIER.get().map_or(Ok(()), |verify| verify(credential))
}

thread_local! {
    /// The last credential text that passed its shape check in this backend, with the setting's
    /// name: a pooled backend sees the same credential again and again, and comparing bytes
    /// (vectorized `bcmp`, ~100 instructions for a 568-byte token) is cheaper than the UTF-8 and
    /// shape checks (~2,300 instructions, callgrind, PostgreSQL 15 release build). The comparison
    /// stops at the first differing 32-byte block, which tells a timing attacker nothing a
    /// guess of a whole block would not (docs/security.md, residual risks).
    static SHAPE_PASSED: std::cell::RefCell<(&'static str, Vec<u8>)> = const { std::cell::RefCell::new(("", Vec::new())) };
}

/// The shared checks: not stored in a catalog, the shape (`shape`, skipped for the text that
/// passed it last), not both credentials, and full verification when a transaction can run
/// queries (a SET or set_config). `wrap` says which credential the text is.
fn check(
    raw: *mut c_char,
    source: pg_sys::GucSource::Type,
    name: &'static str,
    shape: fn(&str) -> Result<(), Denial>,
    wrap: for<'a> fn(&'a str) -> Credential<'a>,
) -> bool {
    if raw.is_null() {
        return true;
    }
    let bytes = unsafe { CStr::from_ptr(raw) }.to_bytes();
    if bytes.is_empty() {
        return true;
    }
    let known_shape = SHAPE_PASSED.with_borrow(|(kept_name, kept)| *kept_name == name && kept.as_slice() == bytes);
    let text = if known_shape {
        // SAFETY: these exact bytes passed `str::from_utf8` when they were kept.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    } else {
        match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                let reason = if name == "tenancy.api_key" {
                    Reason::ApiKeyMalformed
                } else {
                    Reason::Malformed
                };
                return refuse(&Denial::new(reason, "not UTF-8"));
            }
        }
    };
    if is_stored_source(source) {
        crate::audit::record(&Denial::new(
            Reason::TokenStored,
            format!("{name} assigned from {}", source_name(source)),
        ));
        unsafe {
            check_error(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32,
                &format!("{name} cannot be stored in role, database or function settings"),
                Some("Those are readable by every user (pg_roles, pg_proc). Set it per session or transaction."),
            )
        };
        return false;
    }
    // A parallel worker re-applies the leader's settings as session-level ones while it starts:
    // the value passed these checks in the leader, and the worker's statement binds nothing.
    // (Found by the adversarial pass: every parallel plan of a refusing role failed, and
    // PostgreSQL's CONTEXT line of the failure carried the token to the client.)
    let in_parallel_worker = unsafe { pg_sys::InitializingParallelWorker } || unguarded::parallel_worker_number() >= 0;
    if source == pg_sys::GucSource::PGC_S_SESSION
        && !in_parallel_worker
        && !set_by_citus_coordinator()
        && gucs::CREDENTIALS_IN_TEXT.get() == gucs::CredentialsInText::Refuse
        && !super::bound_values::bound_to_current_statement(text)
    {
        return refuse(&Denial::new(
            Reason::CredentialInText,
            format!("{name} was not a bound parameter of the statement (a literal, an expression, a stored value or a function's)"),
        ));
    }
    let shaped = if known_shape { Ok(()) } else { shape(text) };
    let outcome = shaped.map(|()| wrap(text)).and_then(|credential| {
        let other = match credential {
            Credential::Token(_) => value(unsafe { API_KEY }),
            Credential::ApiKey(_) => value(unsafe { TOKEN }),
        };
        if other.is_some() {
            return Err(Denial::new(
                Reason::BothCredentials,
                format!("setting {name} while the other is set"),
            ));
        }
        if source == pg_sys::GucSource::PGC_S_SESSION && readiness::lookups_can_run() && !set_by_citus_coordinator() {
            verify_at_set(credential)
        } else {
            Ok(())
        }
    });
    match outcome {
        Ok(()) => {
            // Only a credential that passed every check is remembered (not another client's
            // refused one).
            if !known_shape {
                SHAPE_PASSED.with_borrow_mut(|(kept_name, kept)| {
                    *kept_name = name;
                    kept.clear();
                    kept.extend_from_slice(bytes);
                });
            }
            true
        }
        Err(denial) => refuse(&denial),
    }
}

/// Whether this `SET` is one a Citus coordinator replays on a worker connection it opens
/// (`application_name` `citus_internal gpid=…`, with Citus loaded): those arrive between the
/// connection's `BEGIN` and Citus's `assign_distributed_transaction_id`, and a lookup there
/// (reading the identity tables' placements) took a distributed transaction id first, so Citus
/// failed the connection with "the backend has already been assigned a transaction id". The
/// credential is then verified at the transaction's first identity read, as a credential set
/// before the extension's tables could be read is. Such a `SET` is the coordinator's text, not
/// the client's, so `tenancy.credentials_in_text = refuse` does not apply to it either (the
/// adversarial pass found every distributed read of a refusing role failing on the workers).
/// Anyone can choose that application name: it moves the verification from the `SET` to the
/// first read, which refuses the same way, and lets a client that connects to a worker directly
/// write its own credential as text there (docs/security.md, residual risk 32).
/// (Also read on every identity read: `identity::current` refuses a session-level credential on
/// such a connection. Citus loaded is asked first, the cheaper question.)
/// The name the connection started with counts, not the current one: a client of the
/// coordinator could plant `SET application_name = …` on Citus's cached connection (through a
/// string the workers parse differently) and so lift the refusal of session-level credentials
/// there (adversarial pass of session 14); Citus names its connections in their startup packet.
pub fn set_by_citus_coordinator() -> bool {
    if !crate::plumbing::citus::loaded() {
        return false;
    }
    let name = unsafe { pg_sys::GetConfigOptionResetString(c"application_name".as_ptr()) };
    !name.is_null()
        && unsafe { CStr::from_ptr(name) }
            .to_bytes()
            .starts_with(b"citus_internal")
}

/// Records a denial and makes the check hook fail with it (SQLSTATE 28000).
fn refuse(denial: &Denial) -> bool {
    crate::audit::record(denial);
    unsafe {
        check_error(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION as i32,
            denial.reason.message(),
            denial.reason.hint(),
        )
    };
    false
}

/// Assign hook of both settings: any change, including a rollback's, starts a new generation;
/// a credential assigned for the transaction only is remembered for the transaction (see
/// `transaction_scoped_credential_was_set`).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn assign_credential(newval: *const c_char, _extra: *mut c_void) {
    counters::token_changed();
    let non_empty = !newval.is_null() && unsafe { *newval } != 0;
    // Only while the transaction is in progress: the restore at its end (AtEOXact_GUC runs in
    // the commit or abort state) is no assignment of the transaction's.
    if non_empty && unguarded::is_transaction_state() && assigned_for_the_transaction() {
        SCOPED_IN_TRANSACTION.set(true);
    }
}

thread_local! {
    /// Whether a credential was assigned for the transaction only in the current transaction
    /// (cleared at its end by `forget_transaction_scoped_credential`).
    static SCOPED_IN_TRANSACTION: Cell<bool> = const { Cell::new(false) };
}

/// Whether the assignment being made is one the transaction's end takes back: PostgreSQL pushes
/// the setting's old value before it calls the assign hook, so the top of either credential's
/// stack says how it is being set (`SET LOCAL`, `set_config(…, true)`, a function's SET clause).
fn assigned_for_the_transaction() -> bool {
    [(&TOKEN_OPTION, c"tenancy.token"), (&API_KEY_OPTION, c"tenancy.api_key")]
        .into_iter()
        .filter_map(|(slot, name)| unsafe { option_of(slot, name).as_ref() })
        .any(|option| !set_beyond_transaction(option))
}

/// Whether a credential was assigned for this transaction only at any moment of it, however it
/// was assigned (a statement, a PL/pgSQL expression, a fast-path call) and whatever it is now.
pub fn transaction_scoped_credential_was_set() -> bool {
    SCOPED_IN_TRANSACTION.get()
}

/// Called at the end of every transaction (src/surface/hooks.rs): the next one starts unmarked.
/// (Keyed by the transaction's start time instead, several transactions of one simple Query
/// message shared the mark.)
pub fn forget_transaction_scoped_credential() {
    SCOPED_IN_TRANSACTION.set(false);
}

/// `SHOW tenancy.token` tells whether a token is set, never the token.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_token() -> *const c_char {
    shown(value(unsafe { TOKEN }))
}

/// `SHOW tenancy.api_key` tells whether a key is set, never the key.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn show_api_key() -> *const c_char {
    shown(value(unsafe { API_KEY }))
}

/// "(set)" or the empty string.
fn shown(value: Option<&str>) -> *const c_char {
    if value.is_some() {
        c"(set)".as_ptr()
    } else {
        c"".as_ptr()
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use crate::test_support::sqlstate_of;
    use pgrx::prelude::*;

    #[pg_test]
    fn token_shape_is_checked_at_set() {
        for bad in ["a.b", "a.b.c.d", "a..", "x".repeat(20_000).as_str()] {
            let set = format!("SET tenancy.token = {}", pgrx::spi::quote_literal(bad));
            assert_eq!(
                sqlstate_of(&set).as_deref(),
                Some("28000"),
                "{}",
                &bad[..bad.len().min(20)]
            );
        }
        assert_eq!(
            Spi::get_one::<String>("SELECT current_setting('tenancy.token')")
                .unwrap()
                .as_deref(),
            Some("")
        );
    }

    /// The message of the error `sql` raises (None: none).
    fn message_of(sql: &str) -> Option<String> {
        let quoted = pgrx::spi::quote_literal(sql);
        Spi::get_one::<String>(&format!(
            "DO $$ BEGIN EXECUTE {quoted}; PERFORM set_config('pg_tenancy_test.message', '', true); \
             EXCEPTION WHEN OTHERS THEN PERFORM set_config('pg_tenancy_test.message', SQLERRM, true); END $$; \
             SELECT current_setting('pg_tenancy_test.message')"
        ))
        .ok()
        .flatten()
        .filter(|m| !m.is_empty())
    }

    /// The shape check skipped for the text that passed it last is skipped for exactly that text
    /// of exactly that setting: a well-shaped token (refused later, by verification: no issuer
    /// signed it) is not called malformed, twice; a text one byte longer, one with a byte outside
    /// the alphabet, and the same text given as an API key still are.
    #[pg_test]
    fn a_remembered_shape_is_no_pass_for_other_text() {
        let good = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
        for _ in 0..2 {
            let message = message_of(&format!("SET tenancy.token = '{good}'")).unwrap_or_default();
            assert!(!message.contains("malformed"), "{message}");
        }
        for bad in [format!("{good}."), format!("{good}!"), format!("{good}.x")] {
            let message = message_of(&format!("SET tenancy.token = '{bad}'"));
            assert_eq!(message.as_deref(), Some("tenancy token is malformed"), "{bad}");
        }
        let message = message_of(&format!("SET tenancy.api_key = '{good}'"));
        assert_eq!(message.as_deref(), Some("api key is malformed"));
    }
}
