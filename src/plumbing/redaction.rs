//! Keeps credentials out of statement text that others can read: `pg_stat_activity.query`,
//! `pg_stat_statements`, the server log (`log_statement`, `log_min_error_statement`) and error
//! messages.
//!
//! A client that runs `SET tenancy.token = 'eyJ…'` puts the token in its statement text, which
//! PostgreSQL shows to every other connection of the same database role. Three hooks mask it:
//! `ProcessUtility` (the `SET` itself) and `ExecutorStart` (a literal in `set_config(…)`) mask the
//! top-level statement text in place and report it again to `pg_stat_activity`; `emit_log_hook`
//! masks every message PostgreSQL writes to the server log (and the same message on its way to
//! the client). A message that goes to the client only (a `NOTICE` below `log_min_messages`,
//! such as Citus's `citus.log_remote_commands`) does not pass that hook: it reaches the session
//! that raised it, whose own credential it may show. The hooks themselves live in
//! `surface/hooks.rs`; this module is what they call, and the scanner is `verify::masking`. Masking keeps the text's length, so
//! statement offsets that `pg_stat_statements` and error cursors rely on stay valid.
//!
//! A statement that fails before it executes (a parse or analysis error) reaches none of those
//! hooks; the abort of its transaction masks the text `pg_stat_activity` shows.
//!
//! Residual window: PostgreSQL reports the raw text to `pg_stat_activity` before parsing, and a
//! connection polling it catches the token often (measured: 2,136 times in 10 s against a client
//! running ~3,100 `SET LOCAL` transactions per second). A bound parameter
//! (`SELECT set_config('tenancy.token', $1, true)`) never puts the token in the text, and
//! `tenancy.credentials_in_text = refuse` makes that the only form a role may use (decided by
//! where the value came from, `state/bound_values.rs`, not by this module).
//!
//! Masking is best effort: it recognises tokens and keys as written, not every spelling of them
//! (`E'\x65yJ…'`, `U&'…'`, concatenations, `decode(…)` hide them from any scan of the text).

use crate::verify::masking::{mask_in_place, mask_ranges, secret_ranges};
use pgrx::pg_sys;
use std::ffi::{c_char, CStr};

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
    mask_in_place(bytes)
}

/// Masks the top-level statement text (always a buffer the backend allocated: the protocol
/// message or a prepared statement's copy) and shows the masked text in `pg_stat_activity`.
pub(crate) fn scrub_current_statement() {
    unsafe {
        let text = pg_sys::debug_query_string.cast_mut();
        if text.is_null() {
            return;
        }
        let len = CStr::from_ptr(text).to_bytes().len();
        let bytes = std::slice::from_raw_parts_mut(text.cast::<u8>(), len);
        let ranges = secret_ranges(bytes);
        if ranges.is_empty() {
            return;
        }
        mask_ranges(bytes, &ranges);
        if pg_sys::pgstat_track_activities {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text);
        }
    }
}

/// After an error: masks the statement text this backend shows in `pg_stat_activity`. A
/// statement that fails to parse never reaches the other hooks, and PostgreSQL keeps showing its
/// raw text until the connection's next statement; the abort of its transaction is the first
/// moment we run (logging settings do not matter here, unlike `emit_log_hook`).
pub(crate) fn scrub_reported_activity() {
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

/// The masking part of `emit_log_hook` (src/surface/hooks.rs): credentials in a message before the log
/// or the client sees it, in the statement text that `log_min_error_statement` appends
/// (`log_statement` runs before parsing), and, for an error, in `pg_stat_activity`.
///
/// # Safety
/// `edata` must be null or the error being reported.
pub(crate) unsafe fn scrub_error(edata: *mut pg_sys::ErrorData) {
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
        let statement_masked = mask_c_string(pg_sys::debug_query_string.cast_mut());
        // The copy `pg_stat_activity` shows, masked too whenever the statement text held a
        // credential: `log_statement` logs before parsing, so this hook masked the text first and
        // the statement's own hooks (`scrub_current_statement`) then found nothing to mask and
        // left the raw copy there, for the whole statement and as long as the session stayed idle
        // after it (adversarial pass of session 14; on Citus workers, every forwarded
        // credential). And for an error, before the client receives it: the abort's own scrub
        // runs only after PostgreSQL has sent it, and a client reading `pg_stat_activity` right
        // after a statement failed in parse analysis saw the raw token in between
        // (tests/client/tests/identity.rs::a_plain_set_leaves_no_token_in_pg_stat_activity, a
        // rare failure under load). With such logging off this hook is not called, and the
        // statement hooks and the abort's scrub remain.
        if statement_masked
            || edata
                .as_ref()
                .is_some_and(|e| e.elevel >= pgrx::PgLogLevel::ERROR as i32)
        {
            scrub_reported_activity();
        }
    }
}
