//! Handing Citus a credential's `SET LOCAL` so that it reaches the workers (issue 32).
//!
//! With `citus.propagate_set_commands = 'local'`, Citus's `ProcessUtility` hook sends the text it
//! receives for a `SET LOCAL` inside a transaction block to every worker connection of the
//! transaction, and replays it on connections opened later (`commands/variableset.c`). pg_tenancy's
//! own hook runs first (it is loaded after Citus, which must come first in
//! `shared_preload_libraries`) and masks the statement text in place, so Citus forwarded
//! `tenancy.token = '[redacted]…'` and every worker refused it as malformed (28000). Citus also
//! forwards the whole text of a multi-statement query string, not the one statement.
//!
//! So when, and only when, the next hook in the chain is Citus's (its address lies in a library
//! named `citus.so`: nothing between the two could read the text), pg_tenancy hands it a text of
//! its own, `SET LOCAL tenancy.token = '<value>'`, rebuilt from the parsed statement. The value is
//! forwarded only if every byte is in the credentials' alphabet (base64url, dots, the key
//! prefix's underscore), so it cannot close the quote. The worker verifies the credential itself
//! against its placements of the reference tables and masks the statement on arrival, as for
//! any client. The copy is wiped once Citus returns (Citus keeps its own copy for the
//! transaction's later connections, in its transaction memory).

use super::citus_set_text::{palloc_wiping, require_propagation, wipe};
use crate::verify::masking::is_token_byte;
use pgrx::pg_sys;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};

/// What `dladdr` reports for an address (glibc's `Dl_info`).
#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

unsafe extern "C" {
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

thread_local! {
    /// Whether the hook after pg_tenancy's is Citus's, decided once (hooks are installed at
    /// `_PG_init` and never change afterwards).
    static NEXT_IS_CITUS: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether `next` (the `ProcessUtility` hook pg_tenancy calls) is a function of Citus's library.
pub fn next_is_citus(next: *const c_void) -> bool {
    if let Some(known) = NEXT_IS_CITUS.get() {
        return known;
    }
    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let found = !next.is_null() && unsafe { dladdr(next, &mut info) } != 0 && !info.dli_fname.is_null();
    let citus = found
        && unsafe { CStr::from_ptr(info.dli_fname) }
            .to_bytes()
            .rsplit(|b| *b == b'/')
            .next()
            .is_some_and(|name| name == b"citus.so");
    NEXT_IS_CITUS.set(Some(citus));
    citus
}

thread_local! {
    /// The credential generation last handed to Citus in this transaction (0: none; reset at
    /// the transaction's end).
    static FORWARDED: Cell<u64> = const { Cell::new(0) };
}

/// Notes that the credential of the current generation reached Citus (a client's own `SET
/// LOCAL`, handed over by the `ProcessUtility` hook).
pub fn note_forwarded() {
    FORWARDED.set(crate::state::counters::generation());
}

/// Forgets what was handed to Citus (transaction end: Citus forgets its `SET LOCAL`s too).
pub fn at_transaction_end() {
    FORWARDED.set(0);
}

/// A subtransaction rolled back: Citus dropped the `SET LOCAL`s it sent inside it and the
/// workers rolled theirs back, to whatever credential was in force before it, while this
/// backend's credential (and its generation) may be the one forwarded inside: the next
/// statement forwards the credential in force, or its reset, again (adversarial pass of session
/// 14: after `ROLLBACK TO` the workers were back on an earlier token, another workspace's).
pub fn at_subtransaction_abort() {
    if FORWARDED.get() != 0 {
        FORWARDED.set(u64::MAX);
    }
}

thread_local! {
    /// Where Citus's `PostprocessVariableSetStmt` and `UseCoordinatedTransaction` are (looked up
    /// once; None inside: absent).
    static POSTPROCESS: Cell<Option<Option<usize>>> = const { Cell::new(None) };
    static COORDINATE: Cell<Option<Option<usize>>> = const { Cell::new(None) };
}

/// The address of Citus's exported function `name`, found once in the loaded libraries and kept
/// in `slot`; None when absent.
fn citus_function(slot: &'static std::thread::LocalKey<Cell<Option<Option<usize>>>>, name: &CStr) -> Option<usize> {
    unsafe extern "C" {
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    }
    slot.get().unwrap_or_else(|| {
        // RTLD_DEFAULT (a null handle on glibc): PostgreSQL loads libraries with RTLD_GLOBAL.
        let found = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
        let found = (!found.is_null()).then_some(found as usize);
        slot.set(Some(found));
        found
    })
}

/// Citus's `PostprocessVariableSetStmt(VariableSetStmt *, const char *)`, which sends a `SET
/// LOCAL` text to the transaction's worker connections and keeps it for the connections opened
/// later; None when Citus is absent.
fn citus_postprocess() -> Option<unsafe extern "C-unwind" fn(*mut pg_sys::VariableSetStmt, *const c_char)> {
    let address = citus_function(&POSTPROCESS, c"PostprocessVariableSetStmt")?;
    Some(unsafe {
        std::mem::transmute::<usize, unsafe extern "C-unwind" fn(*mut pg_sys::VariableSetStmt, *const c_char)>(address)
    })
}

/// Before a statement of a transaction block runs, with Citus next in the chain: sends Citus's
/// worker connections the credential in force when they have not had this generation of it.
/// Citus forwards no function call, so a credential set with `set_config(…, true)` (the form a
/// bound parameter takes, and the recommended one), for the session or by a startup option never
/// reached the workers (28000 there). The text goes straight to Citus's
/// `PostprocessVariableSetStmt`, not through `ProcessUtility`: no other hook sees it (the
/// adversarial pass found pg_stat_statements, loaded after pg_tenancy, recording the raw token
/// of an `SPI` `SET LOCAL` tried first), and the coordinator's own setting is left as it is (that
/// `SET LOCAL` over a session credential also made it look transaction-scoped, which
/// `tenancy.session_tokens = refuse` then let through). The other credential setting is reset
/// with it, and a credential cleared since the last one sent is cleared on the workers too.
/// Runs only at a statement's top level (not inside a security-restricted operation such as
/// pg_tenancy's own lookups, not in parallel mode).
///
/// A statement outside a transaction block (autocommit: node-postgres's default, psycopg's
/// `autocommit = True`) runs its shard queries without a remote transaction block, where Citus
/// replays no `SET LOCAL`: its workers had no identity (28000). With a credential in force, such
/// a statement first makes its transaction a coordinated one (Citus's exported
/// `UseCoordinatedTransaction`, what a transaction block's first distributed statement does), so
/// that Citus opens its worker transactions with `BEGIN` and the credential; the price is the
/// `COMMIT` Citus then sends each worker it used (docs/scale-out.md).
///
/// Citus 14 builds hide those two functions (`-fvisibility=hidden`): there the text goes to
/// Citus's `ProcessUtility` hook (`next_utility`, reached directly: no other hook sees it) with
/// a harmless `SET LOCAL tenancy_citus.forward TO DEFAULT` as its statement, which Citus
/// propagates with the text it is handed, inside a transaction block; a statement outside one
/// (autocommit, a DO block or procedure run outside one) is not forwarded there, and its workers
/// refuse it (28000: docs/scale-out.md).
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn forward_current_credential(next_utility: pg_sys::ProcessUtility_hook_type) {
    use crate::state::credentials::{self, Credential};
    let in_block = unsafe {
        if crate::plumbing::unguarded::is_in_parallel_mode()
            || pg_sys::InSecurityRestrictedOperation()
            || pg_sys::InLocalUserIdChange()
            || !crate::plumbing::unguarded::is_transaction_state()
        {
            return;
        }
        pg_sys::IsTransactionBlock()
    };
    let generation = crate::state::counters::generation();
    if FORWARDED.get() == generation {
        return;
    }
    let postprocess = citus_postprocess();
    if postprocess.is_none() && (next_utility.is_none() || !in_block) {
        return;
    }
    let current = credentials::current();
    if !in_block {
        if !matches!(current, Ok(Credential::Token(_) | Credential::ApiKey(_))) {
            // A credential forwarded earlier in this transaction (a DO block, a procedure, a
            // function's statements) and cleared since: the reset below, as in a block (the
            // adversarial pass of session 14 found the workers keeping the old identity).
            if FORWARDED.get() == 0 {
                FORWARDED.set(generation);
                return;
            }
        } else if let Some(coordinate) = citus_function(&COORDINATE, c"UseCoordinatedTransaction") {
            let coordinate = unsafe { std::mem::transmute::<usize, unsafe extern "C-unwind" fn()>(coordinate) };
            unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| coordinate()) };
        }
    }
    let text = match current {
        Ok(Credential::Token(value)) if value.bytes().all(is_token_byte) => {
            format!("SET LOCAL tenancy.api_key TO DEFAULT;SET LOCAL tenancy.token = '{value}';")
        }
        Ok(Credential::ApiKey(value)) if value.bytes().all(is_token_byte) => {
            format!("SET LOCAL tenancy.token TO DEFAULT;SET LOCAL tenancy.api_key = '{value}';")
        }
        _ if FORWARDED.get() != 0 => {
            "SET LOCAL tenancy.token TO DEFAULT;SET LOCAL tenancy.api_key TO DEFAULT;".to_string()
        }
        _ => {
            FORWARDED.set(generation);
            return;
        }
    };
    require_propagation();
    unsafe {
        let copy = palloc_wiping(&mut text.into_bytes());
        let stmt = pg_sys::palloc0(size_of::<pg_sys::VariableSetStmt>()).cast::<pg_sys::VariableSetStmt>();
        (*stmt).type_ = pg_sys::NodeTag::T_VariableSetStmt;
        (*stmt).is_local = true;
        match (postprocess, next_utility) {
            (Some(postprocess), _) => {
                (*stmt).kind = pg_sys::VariableSetKind::VAR_SET_VALUE;
                (*stmt).name = pg_sys::pstrdup(c"tenancy.token".as_ptr());
                pg_sys::ffi::pg_guard_ffi_boundary(|| postprocess(stmt, copy));
            }
            (None, Some(utility)) => {
                (*stmt).kind = pg_sys::VariableSetKind::VAR_SET_DEFAULT;
                (*stmt).name = pg_sys::pstrdup(c"tenancy_citus.forward".as_ptr());
                let pstmt = pg_sys::palloc0(size_of::<pg_sys::PlannedStmt>()).cast::<pg_sys::PlannedStmt>();
                (*pstmt).type_ = pg_sys::NodeTag::T_PlannedStmt;
                (*pstmt).commandType = pg_sys::CmdType::CMD_UTILITY;
                (*pstmt).utilityStmt = stmt.cast();
                pg_sys::ffi::pg_guard_ffi_boundary(|| {
                    utility(
                        pstmt,
                        copy,
                        false,
                        pg_sys::ProcessUtilityContext::PROCESS_UTILITY_QUERY,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        pg_sys::None_Receiver,
                        std::ptr::null_mut(),
                    )
                });
            }
            (None, None) => {}
        }
        // Citus keeps its own copy for the connections it opens later.
        wipe(copy);
    }
    FORWARDED.set(generation);
}
