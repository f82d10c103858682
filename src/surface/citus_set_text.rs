//! The texts pg_tenancy hands Citus's `ProcessUtility` hook for a `SET` or `RESET` (issue 32):
//! a credential's `SET LOCAL` rebuilt from the parsed statement (`credential_set_text`), any
//! other `SET` of a multi-statement string alone (`own_set_text`), and the refusals that keep the
//! workers from reading a text otherwise than the coordinator did (`refuse_ambiguous_set`). What
//! is done with them, and when a credential is forwarded, is `citus_forwarding.rs`.

use crate::verify::masking::is_token_byte;
use pgrx::pg_sys;
use std::ffi::{c_char, CStr};

/// The text to hand Citus for `stmt` when Citus would forward it and it concerns a credential:
/// `SET LOCAL <name> = '<value>'` for a `SET LOCAL` of a credential with a value in the
/// credentials' alphabet, `RESET <name>` or `SET LOCAL <name> TO DEFAULT` for a credential's
/// reset, `RESET ALL` for that; in memory of the current context; None for anything else (Citus
/// then gets the statement's own text). The resets too: for a statement of a multi-statement
/// query string Citus forwards the whole string, whose other statements the workers would then
/// run as well, masked credentials included (found by `scripts/citus-test`: `SET tenancy.token
/// = …; SELECT …; RESET tenancy.token` in one string failed on a worker).
///
/// # Safety
/// `stmt` must be a parsed utility statement or null.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn credential_set_text(stmt: *mut pg_sys::Node) -> *mut c_char {
    unsafe {
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_VariableSetStmt {
            return std::ptr::null_mut();
        }
        let set = stmt.cast::<pg_sys::VariableSetStmt>();
        if (*set).kind == pg_sys::VariableSetKind::VAR_RESET_ALL {
            return palloc_wiping(&mut b"RESET ALL".to_vec());
        }
        if (*set).name.is_null() {
            return std::ptr::null_mut();
        }
        let name = CStr::from_ptr((*set).name).to_bytes();
        if name != b"tenancy.token" && name != b"tenancy.api_key" {
            return std::ptr::null_mut();
        }
        let mut text = Vec::with_capacity(name.len() + 24);
        match (*set).kind {
            pg_sys::VariableSetKind::VAR_RESET => {
                text.extend_from_slice(b"RESET ");
                text.extend_from_slice(name);
                return palloc_wiping(&mut text);
            }
            pg_sys::VariableSetKind::VAR_SET_DEFAULT if (*set).is_local => {
                text.extend_from_slice(b"SET LOCAL ");
                text.extend_from_slice(name);
                text.extend_from_slice(b" TO DEFAULT");
                return palloc_wiping(&mut text);
            }
            pg_sys::VariableSetKind::VAR_SET_VALUE if (*set).is_local => {}
            _ => return std::ptr::null_mut(),
        }
        let args = (*set).args;
        if args.is_null() || (*args).length != 1 {
            return std::ptr::null_mut();
        }
        let arg = (*(*args).elements).ptr_value.cast::<pg_sys::Node>();
        if arg.is_null() || (*arg).type_ != pg_sys::NodeTag::T_A_Const {
            return std::ptr::null_mut();
        }
        let constant = arg.cast::<pg_sys::A_Const>();
        if (*constant).isnull || (*constant).val.node.type_ != pg_sys::NodeTag::T_String {
            return std::ptr::null_mut();
        }
        let value = CStr::from_ptr((*constant).val.sval.sval).to_bytes();
        if value.is_empty() || !value.iter().all(|b| is_token_byte(*b)) {
            return std::ptr::null_mut();
        }
        if pg_sys::IsTransactionBlock() {
            require_propagation();
        }
        text.extend_from_slice(b"SET LOCAL ");
        text.extend_from_slice(name);
        text.extend_from_slice(b" = '");
        text.extend_from_slice(value);
        text.extend_from_slice(b"'");
        palloc_wiping(&mut text)
    }
}

/// The source text of a `SET` or `RESET` statement and the range of it that is this statement
/// (`stmt_location`/`stmt_len`, as `pg_stat_statements` cuts it; the whole text when the
/// location is unknown); None for any other statement or without a text.
///
/// # Safety
/// `pstmt` a utility statement's plan, `query_string` null or its NUL-terminated source text.
unsafe fn set_statement_text<'a>(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
) -> Option<(&'a [u8], std::ops::Range<usize>)> {
    unsafe {
        let stmt = (*pstmt).utilityStmt;
        if query_string.is_null() || stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_VariableSetStmt {
            return None;
        }
        let whole = CStr::from_ptr(query_string).to_bytes();
        let start = usize::try_from((*pstmt).stmt_location).unwrap_or(0).min(whole.len());
        let end = match usize::try_from((*pstmt).stmt_len) {
            Ok(0) | Err(_) => whole.len(),
            Ok(len) => start.saturating_add(len).min(whole.len()),
        };
        Some((whole, start..end))
    }
}

/// The text of a `SET` or `RESET` that is one statement of a multi-statement query string, alone,
/// in memory of the current context (None: not such a statement, or already alone). Citus
/// forwards the text it receives for a `SET LOCAL` it propagates, and that text is the whole
/// query string: `BEGIN; SET LOCAL tenancy.token = '…'; SET LOCAL statement_timeout = 100;
/// SELECT …` sent every statement of the string to the workers, which ran them again under their
/// masked credentials (found by `scripts/citus-test`: "tenancy token is malformed" on a worker;
/// a role's `SET ROLE` in the string ran there too). The statement's own text is the
/// `stmt_location`/`stmt_len` range of the string, as `pg_stat_statements` cuts it.
///
/// # Safety
/// `pstmt` a utility statement's plan, `query_string` its NUL-terminated source text.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn own_set_text(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
) -> *mut c_char {
    unsafe {
        let Some((whole, range)) = set_statement_text(pstmt, query_string) else {
            return std::ptr::null_mut();
        };
        if range.is_empty() || range.len() == whole.len() {
            return std::ptr::null_mut();
        }
        pg_sys::pnstrdup(whole[range.clone()].as_ptr().cast(), range.len())
    }
}

/// Refuses to hand Citus the text of a `SET` that contains a backslash while
/// `standard_conforming_strings` is off in this session: Citus sends the text to the workers,
/// whose sessions read backslashes in quotes literally, so `SET LOCAL x = 'a\'; …; --'` was one
/// statement here and several there (adversarial pass of session 14: a session-level credential
/// planted on Citus's cached connections). Lexing differs between the two only by that setting.
///
/// # Safety
/// `pstmt` a utility statement's plan, `query_string` its NUL-terminated source text.
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn refuse_ambiguous_set(pstmt: *mut pg_sys::PlannedStmt, query_string: *const c_char) {
    unsafe {
        if pg_sys::standard_conforming_strings {
            return;
        }
        let Some((whole, range)) = set_statement_text(pstmt, query_string) else {
            return;
        };
        if whole[range].contains(&b'\\') {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "a SET with a backslash cannot be sent to the Citus workers while standard_conforming_strings is off",
                "The workers would read the statement differently.",
            );
        }
    }
}

/// A flat copy of `pstmt` whose statement is the whole of the text handed with it (location 0,
/// length 0), for a text made by `credential_set_text` or `own_set_text`.
///
/// # Safety
/// `pstmt` a valid plan; inside a transaction (palloc).
pub unsafe fn alone(pstmt: *mut pg_sys::PlannedStmt) -> *mut pg_sys::PlannedStmt {
    unsafe {
        let copy = pg_sys::palloc(std::mem::size_of::<pg_sys::PlannedStmt>()).cast::<pg_sys::PlannedStmt>();
        std::ptr::copy_nonoverlapping(pstmt, copy, 1);
        (*copy).stmt_location = 0;
        (*copy).stmt_len = 0;
        copy
    }
}

/// `text` copied into memory of the current context, NUL-terminated; `text` itself is wiped
/// (it held a credential).
///
/// # Safety
/// Inside a transaction (palloc).
pub(super) unsafe fn palloc_wiping(text: &mut [u8]) -> *mut c_char {
    unsafe {
        let copy = pg_sys::palloc0(text.len() + 1).cast::<u8>();
        std::ptr::copy_nonoverlapping(text.as_ptr(), copy, text.len());
        text.fill(0);
        copy.cast()
    }
}

/// Wipes a text `credential_set_text` made, once Citus has taken its copy.
///
/// # Safety
/// `text` must be null or a NUL-terminated string in writable memory.
pub unsafe fn wipe(text: *mut c_char) {
    if text.is_null() {
        return;
    }
    unsafe {
        let len = CStr::from_ptr(text).to_bytes().len();
        std::ptr::write_bytes(text, 0, len);
    }
}

/// Refuses to forward when Citus would not propagate what it is handed
/// (`citus.propagate_set_commands` other than `local`, which any role may set for its
/// transaction): the workers would keep an earlier credential (adversarial pass of session 14).
pub(super) fn require_propagation() {
    let value = unsafe { pg_sys::GetConfigOption(c"citus.propagate_set_commands".as_ptr(), true, false) };
    let local = !value.is_null() && unsafe { CStr::from_ptr(value) }.to_bytes() == b"local";
    if !local {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_tenancy needs citus.propagate_set_commands = 'local' to carry the identity to the workers",
            "A credential set or cleared now would not reach the workers.",
        );
    }
}
