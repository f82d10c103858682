//! Transaction-state questions asked without pgrx's error guard.
//!
//! pgrx wraps every call into PostgreSQL in a `sigsetjmp` so that an `ereport(ERROR)` becomes a
//! Rust panic: about 150 instructions per call (callgrind, PostgreSQL 15 release build). The
//! functions below only read backend-local state and cannot raise, so the guard protects
//! nothing; they are asked several times per statement on the pooled path (issue 37), where those
//! instructions were a tenth of what a protected statement added over a literal `WHERE`.

use pgrx::pg_sys;

mod raw {
    // Declared as in PostgreSQL's xact.h; none of them calls ereport or palloc.
    unsafe extern "C-unwind" {
        pub fn IsTransactionState() -> bool;
        pub fn IsAbortedTransactionBlockState() -> bool;
        pub fn IsInParallelMode() -> bool;
    }
}

/// Whether a transaction is in progress (not starting, committing or aborting): xact.c reads
/// `CurrentTransactionState`.
#[inline]
pub fn is_transaction_state() -> bool {
    unsafe { raw::IsTransactionState() }
}

/// Whether the transaction block failed and waits for ROLLBACK.
#[inline]
pub fn is_aborted_transaction_block() -> bool {
    unsafe { raw::IsAbortedTransactionBlockState() }
}

/// Whether parallel mode is on (in a worker, or in a leader while a parallel plan runs).
#[inline]
pub fn is_in_parallel_mode() -> bool {
    unsafe { raw::IsInParallelMode() }
}

/// The worker number of a parallel worker, negative in a leader or a plain backend.
#[inline]
pub fn parallel_worker_number() -> i32 {
    unsafe { pg_sys::ParallelWorkerNumber }
}
