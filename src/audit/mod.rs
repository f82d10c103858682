//! The audit trail of denials: one structured server-log line each, a shared-memory ring and
//! counters (`tenancy.denials`, `tenancy.stats`), and a background worker that copies the ring
//! into `tenancy.audit_log` and raises `NOTIFY tenancy_alert` for critical denials and bursts.
//! Nothing here is transactional on the denying side, so a rollback erases none of it.
//!
//! Without `shared_preload_libraries = 'pg_tenancy'` there is no ring and no worker: denials go
//! to the server log only, and `tenancy.coverage` reports the missing preload.

mod batch;
mod classify;
mod observe;
mod record;
pub mod ring;
pub mod settings;
mod signals;
mod standby;
pub(crate) mod views;
mod worker;

use crate::verify::Denial;
pub use observe::{forget_write_targets, note_write_target, observe_error};
use pgrx::prelude::*;
pub use ring::Counter;
use settings as gucs;

/// When preloading: the shared memory and the worker (the error observer runs from
/// `src/surface/hooks.rs`).
pub fn init() {
    settings::define();
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        ring::init(gucs::AUDIT_RING_SIZE.get() as usize);
        worker::register();
    }
}

/// Records a denial: the server-log line and the ring entry.
pub fn record(denial: &Denial) {
    let line = remember(denial, true);
    log!("pg_tenancy denial: {line}");
}

/// Puts a denial in the ring and returns its JSON line without logging it. Catalog names are
/// looked up only when `with_names` (not from inside error reporting; names seen before are used
/// there).
fn remember(denial: &Denial, with_names: bool) -> String {
    let entry = record::entry_of(denial);
    let names = record::names_of(&entry, with_names);
    let line = record::to_json(&entry, &names).to_string();
    ring::push(entry);
    line
}

/// Learns the connection's database and user names once (see `record::learn_connection_names`).
pub fn learn_connection_names() {
    record::learn_connection_names();
}

/// Adds one to an audit counter (a no-op without the ring).
pub fn count(counter: Counter) {
    ring::count(counter);
}
