//! The tables a statement writes that carry pg_tenancy's workspace policy, told to the audit
//! trail before the statement runs: a row-level security refusal is a `write_refused` denial only
//! when it names one of them (`audit/observe.rs`), never because of its words.

use crate::plumbing::protected_tables::protected_and_in_force;
use pgrx::pg_sys;

/// Notes the protected tables among the result relations of the statement about to start.
/// A statement that writes nothing costs one null check.
///
/// # Safety
/// `query_desc` must be the query about to start, inside a transaction.
pub(crate) unsafe fn note(query_desc: *mut pg_sys::QueryDesc) {
    unsafe {
        let stmt = (*query_desc).plannedstmt;
        let results = (*stmt).resultRelations;
        let Some(results) = results.as_ref() else { return };
        let Some(rtable) = (*stmt).rtable.as_ref() else { return };
        let indexes = std::slice::from_raw_parts(results.elements, results.length as usize);
        let entries = std::slice::from_raw_parts(rtable.elements, rtable.length as usize);
        for index in indexes {
            let Some(cell) = usize::try_from(index.int_value - 1).ok().and_then(|i| entries.get(i)) else {
                continue;
            };
            let entry = cell.ptr_value.cast::<pg_sys::RangeTblEntry>();
            if entry.is_null() || (*entry).rtekind != pg_sys::RTEKind::RTE_RELATION {
                continue;
            }
            let relid = (*entry).relid;
            if !protected_and_in_force(relid) {
                continue;
            }
            let name = pg_sys::get_rel_name(relid);
            if !name.is_null() {
                crate::audit::note_write_target(&std::ffi::CStr::from_ptr(name).to_string_lossy());
            }
        }
    }
}
