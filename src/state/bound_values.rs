//! What `tenancy.credentials_in_text = refuse` accepts: a credential that a client bound as a
//! parameter (the Bind message of the extended protocol) to the portal running the assignment.
//! Before each statement (and before its text is masked) the values bound to its portal that look
//! like credentials, and are not also written in the statement's text, are kept; the credentials'
//! check hook (`credentials.rs`) asks whether the value it is given is one of them.

use super::settings as gucs;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::CStr;

thread_local! {
    /// The credential-shaped values bound (extended protocol) to the portal running now, and
    /// which portal that is: what `tenancy.credentials_in_text = refuse` accepts.
    static BOUND: RefCell<(PortalKey, Vec<Vec<u8>>)> = const { RefCell::new(((0, 0), Vec::new())) };
}

/// Longest bound value kept as a possible credential (a WorkOS access token is about 1 KB).
const BOUND_MAX_BYTES: usize = 16 * 1024;

/// What tells one portal from the next: its address and creation time.
type PortalKey = (usize, i64);

/// The portal running now, when it is one a client made with Bind: visible (SQL `EXECUTE` runs
/// its statement in an invisible portal of its own, whose parameters were written in text).
fn client_portal() -> Option<(PortalKey, pg_sys::ParamListInfo)> {
    let portal = unsafe { pg_sys::ActivePortal.as_ref() }?;
    portal
        .visible
        .then_some(((portal as *const _ as usize, portal.creation_time), portal.portalParams))
}

/// Called before each statement runs (src/surface/hooks.rs): for a role with
/// `tenancy.credentials_in_text = refuse`, keeps the credential-shaped text values a client bound
/// (Bind message of the extended protocol) to the portal about to run. Only the portal's own
/// parameters qualify: SQL `EXECUTE p('…')` runs in an invisible portal, and a function's body or a
/// PL/pgSQL expression runs with parameters of its own, whose values came from statement text or
/// storage.
///
/// Deciding by where the value came from, instead of looking for it in the statement text, closes
/// every spelling a text scan misses (`E'\x65yJ…'`, `U&'…'`, concatenation, `decode`, a value
/// read from a table, a function's body, `PREPARE … EXECUTE`).
///
/// # Safety
/// `query_desc` must be the query about to start.
pub unsafe fn note_bound_values(query_desc: *mut pg_sys::QueryDesc) {
    if gucs::CREDENTIALS_IN_TEXT.get() != gucs::CredentialsInText::Refuse {
        return;
    }
    let Some((key, portal_params)) = client_portal() else {
        return;
    };
    unsafe {
        let params = (*query_desc).params;
        if params.is_null() || params != portal_params || (*params).paramFetch.is_some() {
            return;
        }
        let count = usize::try_from((*params).numParams).unwrap_or(0);
        let values = (*params).params.as_slice(count);
        let kept: Vec<Vec<u8>> = values
            .iter()
            .filter(|p| !p.isnull && matches!(p.ptype, pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::UNKNOWNOID))
            .filter_map(|p| {
                let raw = p.value.cast_mut_ptr::<pg_sys::varlena>();
                // Bound values are plain (never compressed or stored out of line).
                if raw.is_null() || pgrx::varlena::varatt_is_1b_e(raw) || pgrx::varlena::varatt_is_4b_c(raw) {
                    return None;
                }
                let bytes = pgrx::varlena::varlena_to_byte_slice(raw);
                let shaped = bytes.starts_with(b"eyJ") || bytes.starts_with(b"tnk_");
                // A literal equal to the bound value was in pg_stat_activity before parsing.
                let kept = shaped && bytes.len() <= BOUND_MAX_BYTES && !in_statement_text(bytes);
                kept.then(|| bytes.to_vec())
            })
            .collect();
        BOUND.with_borrow_mut(|bound| *bound = (key, kept));
    }
}

/// Whether `credential` is a value a client bound to the portal running now (and did not also
/// write in the statement's text).
pub fn bound_to_current_statement(credential: &str) -> bool {
    let Some((key, _)) = client_portal() else { return false };
    BOUND.with_borrow(|(portal, values)| *portal == key && values.iter().any(|v| v.as_slice() == credential.as_bytes()))
}

/// Whether `credential` appears as written in the top-level statement text (read before the
/// statement is masked: afterwards a literal is no longer there to be found).
fn in_statement_text(credential: &[u8]) -> bool {
    let text = unsafe { pg_sys::debug_query_string };
    if text.is_null() || credential.is_empty() {
        return false;
    }
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    bytes.windows(credential.len()).any(|w| w == credential)
}
