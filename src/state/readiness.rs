//! Whether the extension's own lookups can run in this backend now: SPI needs a healthy
//! transaction, the tables need the extension, and a parallel worker must never look anything up.

use super::counters;
use crate::plumbing::unguarded;
use pgrx::pg_sys;
use std::cell::Cell;

thread_local! {
    /// The epoch in which the extension was last seen installed (0: not seen).
    static EXTENSION_SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Whether queries can run here: inside a healthy transaction, with the extension installed, and
/// not in a parallel worker (which restores the leader's `tenancy.token` while it starts, where SPI
/// cannot run; identity functions are PARALLEL RESTRICTED, so workers never need an identity).
pub fn lookups_can_run() -> bool {
    let healthy = unguarded::parallel_worker_number() < 0
        && !unsafe { pg_sys::InitializingParallelWorker }
        && unguarded::is_transaction_state()
        && !unguarded::is_aborted_transaction_block();
    healthy && extension_installed()
}

/// Whether `CREATE EXTENSION pg_tenancy` ran in this database. A catalog scan costs about a
/// microsecond, a third of a cached `SET LOCAL`, so a positive answer is remembered for the
/// current epoch: `DROP EXTENSION` drops the identity tables, which bumps the epoch.
fn extension_installed() -> bool {
    let epoch = counters::epoch();
    if EXTENSION_SEEN.get() == epoch {
        return true;
    }
    let installed = unsafe { pg_sys::get_extension_oid(c"pg_tenancy".as_ptr(), true) } != pg_sys::InvalidOid;
    if installed {
        EXTENSION_SEEN.set(epoch);
    }
    installed
}
