//! Whether a table is one `tenancy.protect` guards, with its row-level security in force for the
//! current user: asked by the planner hook (which vector indexes plain SQL may use) and by the
//! write-target check, read from the relcache without a query.

use pgrx::pg_sys;
use pgrx::PgList;
use std::ffi::CStr;

/// The name of the policy `tenancy.protect` creates (`sql/protect.sql`).
const WORKSPACE_POLICY: &[u8] = b"tenancy_workspace";

/// Whether `relid` carries `tenancy.protect`'s workspace policy and its row-level security
/// applies to the current user.
///
/// # Safety
/// Call inside a transaction.
pub unsafe fn protected_and_in_force(relid: pg_sys::Oid) -> bool {
    unsafe {
        if pg_sys::check_enable_rls(relid, pg_sys::InvalidOid, true) != pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32
        {
            return false;
        }
        let relation = pg_sys::RelationIdGetRelation(relid);
        if relation.is_null() {
            return false;
        }
        let desc = (*relation).rd_rsdesc;
        let ours = !desc.is_null()
            && PgList::<pg_sys::RowSecurityPolicy>::from_pg((*desc).policies)
                .iter_ptr()
                .any(|p| {
                    !(*p).policy_name.is_null() && CStr::from_ptr((*p).policy_name).to_bytes() == WORKSPACE_POLICY
                });
        pg_sys::RelationClose(relation);
        ours
    }
}
