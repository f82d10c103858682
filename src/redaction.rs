//! Keeps credentials out of statement text that others can read: `pg_stat_activity.query`,
//! `pg_stat_statements`, the server log (`log_statement`, `log_min_error_statement`) and error
//! messages.
//!
//! A client that runs `SET tenancy.token = 'eyJ…'` puts the token in its statement text, which
//! PostgreSQL shows to every other connection of the same database role. Three hooks mask it:
//! `ProcessUtility` (the `SET` itself) and `ExecutorStart` (a literal in `set_config(…)`) mask the
//! top-level statement text in place and report it again to `pg_stat_activity`; `emit_log_hook`
//! masks every message on its way to the log or the client. Masking keeps the text's length, so
//! statement offsets that `pg_stat_statements` and error cursors rely on stay valid.
//!
//! A statement that fails before it executes (a parse or analysis error) reaches none of those
//! hooks; the abort of its transaction masks the text `pg_stat_activity` shows.
//!
//! Residual window: PostgreSQL reports the raw text to `pg_stat_activity` before parsing, and a
//! connection polling it catches the token often (measured: 2,136 times in 10 s against a client
//! running ~3,100 `SET LOCAL` transactions per second). A bound parameter
//! (`SELECT set_config('tenancy.token', $1, true)`) never puts the token in the text, and
//! `tenancy.credentials_in_text = refuse` makes that the only form a role may use.

use crate::hooks;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};

/// Text that replaces the start of a masked credential; the rest is filled with `*`.
const MASK_LABEL: &[u8] = b"[redacted]";
/// A JWT (JWS compact form) always starts with the base64url of `{"`.
const JWT_START: &[u8] = b"eyJ";
/// An API key starts with its prefix (src/api_keys.rs).
const KEY_START: &[u8] = b"tnk_";
/// What a credential starts with.
const STARTS: [&[u8]; 2] = [JWT_START, KEY_START];
/// Shortest run of token characters treated as a credential.
const MIN_SECRET_LEN: usize = 16;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;

/// Installs the hooks, each chained to the one installed before it.
pub fn init() {
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
    }
}

/// Whether `byte` can be part of a JWT (base64url alphabet plus the segment separator).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// Byte ranges of every credential-looking run in `text`: a run of base64url characters and dots
/// starting with `eyJ` (a JWT) or `tnk_` (an API key) and at least 16 bytes long. Broad on purpose: a malformed token is still a
/// secret, and masking a harmless look-alike costs nothing.
pub fn secret_ranges(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let Some(start) = (at..text.len()).find(|&i| STARTS.iter().any(|s| text[i..].starts_with(s))) else {
            break;
        };
        let end = start + text[start..].iter().take_while(|b| is_token_byte(**b)).count();
        if end - start >= MIN_SECRET_LEN {
            ranges.push(start..end);
        }
        at = end.max(start + 1);
    }
    ranges
}

/// Masks every credential in `text` in place, keeping its length. Returns whether it masked any.
pub fn mask_in_place(text: &mut [u8]) -> bool {
    let ranges = secret_ranges(text);
    for range in &ranges {
        let span = &mut text[range.clone()];
        span.fill(b'*');
        let label = MASK_LABEL.len().min(span.len());
        span[..label].copy_from_slice(&MASK_LABEL[..label]);
    }
    !ranges.is_empty()
}

/// Masks credentials in a NUL-terminated string owned by the backend, in place.
///
/// # Safety
/// `text` must be null or point to writable memory holding a NUL-terminated string.
unsafe fn mask_c_string(text: *mut c_char) -> bool {
    if text.is_null() {
        return false;
    }
    let len = unsafe { CStr::from_ptr(text) }.to_bytes().len();
    let bytes = unsafe { std::slice::from_raw_parts_mut(text.cast::<u8>(), len) };
    // The common case costs one scan for "eyJ" and "tnk".
    bytes.windows(3).any(|w| w == JWT_START || w == &KEY_START[..3]) && mask_in_place(bytes)
}

thread_local! {
    /// The statement text masked last (its address and the statement's start time: an address
    /// alone is reused by the next message) and the SHA-256 of each credential masked in it:
    /// `tenancy.credentials_in_text = refuse` refuses a credential that arrived that way.
    static MASKED_LITERALS: RefCell<(Statement, Vec<[u8; 32]>)> = const { RefCell::new(((0, 0), Vec::new())) };
}

/// What tells one top-level statement from the next: its text's address and start time.
type Statement = (usize, i64);

/// The current top-level statement.
fn current_statement() -> Statement {
    unsafe {
        (
            pg_sys::debug_query_string as usize,
            pg_sys::GetCurrentStatementStartTimestamp(),
        )
    }
}

/// SHA-256 of a credential's text.
fn digest(text: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, text)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Masks the top-level statement text (always a buffer the backend allocated: the protocol
/// message or a prepared statement's copy), remembers what it masked, and shows the masked text
/// in `pg_stat_activity`.
fn scrub_current_statement() {
    unsafe {
        let text = pg_sys::debug_query_string.cast_mut();
        if text.is_null() {
            return;
        }
        let len = CStr::from_ptr(text).to_bytes().len();
        let bytes = std::slice::from_raw_parts_mut(text.cast::<u8>(), len);
        if !bytes.windows(3).any(|w| w == JWT_START || w == &KEY_START[..3]) {
            return;
        }
        let ranges = secret_ranges(bytes);
        if ranges.is_empty() {
            return;
        }
        let digests = ranges.iter().map(|r| digest(&bytes[r.clone()])).collect();
        MASKED_LITERALS.with_borrow_mut(|masked| *masked = (current_statement(), digests));
        mask_in_place(bytes);
        if pg_sys::pgstat_track_activities {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text);
        }
    }
}

/// Whether `credential` is written as a literal in the current top-level statement text (masked
/// there already, or not yet).
pub fn in_statement_text(credential: &str) -> bool {
    let text = unsafe { pg_sys::debug_query_string };
    if text.is_null() || credential.is_empty() {
        return false;
    }
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    if bytes.windows(credential.len()).any(|w| w == credential.as_bytes()) {
        return true;
    }
    let wanted = digest(credential.as_bytes());
    MASKED_LITERALS.with_borrow(|(statement, digests)| *statement == current_statement() && digests.contains(&wanted))
}

/// After an error: masks the statement text this backend shows in `pg_stat_activity`. A
/// statement that fails to parse never reaches the other hooks, and PostgreSQL keeps showing its
/// raw text until the connection's next statement; the abort of its transaction is the first
/// moment we run (logging settings do not matter here, unlike `emit_log_hook`).
fn scrub_reported_activity() {
    unsafe {
        let entry = pg_sys::MyBEEntry;
        if entry.is_null() || !pg_sys::pgstat_track_activities || (*entry).st_activity_raw.is_null() {
            return;
        }
        let mut text = CStr::from_ptr((*entry).st_activity_raw).to_bytes().to_vec();
        if !mask_in_place(&mut text) {
            return;
        }
        text.push(0);
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr().cast());
    }
}

/// Transaction callback: masks the reported statement text when a transaction aborts.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_xact_event(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT {
        scrub_reported_activity();
    }
}

/// Subtransaction callback: the same when a savepoint's work aborts.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        scrub_reported_activity();
    }
}

/// `ProcessUtility` hook: masks the statement text before any other hook or the `SET` sees it.
#[pgrx::pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    scrub_current_statement();
    unsafe {
        hooks::next_process_utility(
            PREV_PROCESS_UTILITY,
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        )
    }
}

/// `ExecutorStart` hook: masks a token written as a literal, e.g. in `set_config('tenancy.token', …)`.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    scrub_current_statement();
    unsafe { hooks::next_executor_start(PREV_EXECUTOR_START, query_desc, eflags) }
}

/// `emit_log_hook`: masks credentials in a message before the log or the client sees it, and in
/// the statement text that `log_min_error_statement` appends (`log_statement` runs before parsing).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    unsafe {
        if let Some(edata) = edata.as_mut() {
            for field in [
                edata.message,
                edata.detail,
                edata.detail_log,
                edata.hint,
                edata.context,
                edata.internalquery,
            ] {
                mask_c_string(field);
            }
        }
        mask_c_string(pg_sys::debug_query_string.cast_mut());
        if let Some(prev) = PREV_EMIT_LOG {
            prev(edata);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEifQ.c2lnbmF0dXJl";

    /// Each row: input, expected output after masking.
    #[test]
    fn masks_every_token_and_keeps_the_length() {
        let masked_token = format!("[redacted]{}", "*".repeat(TOKEN.len() - 10));
        let cases = [
            (
                format!("SET tenancy.token = '{TOKEN}'"),
                format!("SET tenancy.token = '{masked_token}'"),
            ),
            (
                format!("set local tenancy.token to {TOKEN}; select 1"),
                format!("set local tenancy.token to {masked_token}; select 1"),
            ),
            (
                format!("select set_config('tenancy.token', E'{TOKEN}', true), '{TOKEN}'"),
                format!("select set_config('tenancy.token', E'{masked_token}', true), '{masked_token}'"),
            ),
            (
                "select 'eyJ' || 'short'".to_string(),
                "select 'eyJ' || 'short'".to_string(),
            ),
            ("select 1".to_string(), "select 1".to_string()),
            (String::new(), String::new()),
        ];
        for (input, expected) in cases {
            let mut bytes = input.clone().into_bytes();
            let masked = mask_in_place(&mut bytes);
            assert_eq!(String::from_utf8(bytes).unwrap(), expected, "input: {input}");
            assert_eq!(masked, input != expected);
        }
    }

    #[test]
    fn api_keys_are_masked_too() {
        let (key, _, _) = crate::api_keys::generate().unwrap();
        let mut text = format!("SET tenancy.api_key = '{key}'").into_bytes();
        assert!(mask_in_place(&mut text));
        let text = String::from_utf8(text).unwrap();
        assert!(!text.contains(&key[4..]), "{text}");
        assert_eq!(text.len(), "SET tenancy.api_key = ''".len() + key.len());
    }

    #[test]
    fn a_malformed_token_is_still_masked() {
        let mut text = b"SET tenancy.token = 'eyJnot-a-valid.token but secret'".to_vec();
        assert!(mask_in_place(&mut text));
        assert!(!String::from_utf8_lossy(&text).contains("eyJnot"));
    }
}
