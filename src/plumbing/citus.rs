//! Whether Citus is loaded in this backend, asked by the identity lookups, the credential
//! checks and the planner folding (issue 32). Citus defines its settings when its library loads
//! (it must be first in `shared_preload_libraries`), so one of them existing answers it; the
//! answer is kept for the backend's life.

use pgrx::pg_sys;
use std::cell::Cell;
use std::ffi::CStr;

/// Citus's setting that lets a query on a shard run another distributed query (USERSET).
pub const NESTED_EXECUTION: &CStr = c"citus.allow_nested_distributed_execution";

thread_local! {
    static LOADED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether Citus is loaded (its settings exist).
pub fn loaded() -> bool {
    if let Some(known) = LOADED.get() {
        return known;
    }
    let loaded = !unsafe { pg_sys::GetConfigOption(NESTED_EXECUTION.as_ptr(), true, false) }.is_null();
    LOADED.set(Some(loaded));
    loaded
}
