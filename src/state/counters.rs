//! The two counters every identity read compares, and who is told when either moves.
//!
//! The credential's *generation* is bumped by the assign hook of `tenancy.token` and
//! `tenancy.api_key` on every change, including the restore of a rollback or `ROLLBACK TO
//! SAVEPOINT`; the *epoch* is bumped by the relcache callback (`invalidation.rs`) when an
//! identity table changed in any backend. Layers above register listeners (the planner folding
//! drops plans that hold an identity) instead of being called from here by name, so the state
//! layer knows nothing of them.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped by the credential settings' assign hook.
static TOKEN_GENERATION: AtomicU64 = AtomicU64::new(1);
/// Bumped when issuers, keys, workspaces, members or revocations change.
static EPOCH: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Called on every identity change, in the order registered (at `_PG_init`).
    static LISTENERS: RefCell<Vec<fn()>> = const { RefCell::new(Vec::new()) };
}

/// Registers `listener` to be called whenever the identity may have changed. It must only flip
/// flags: it runs inside GUC assign hooks and invalidation callbacks.
pub fn on_identity_change(listener: fn()) {
    LISTENERS.with_borrow_mut(|listeners| listeners.push(listener));
}

/// The credential's generation.
pub fn generation() -> u64 {
    TOKEN_GENERATION.load(Ordering::Relaxed)
}

/// The identity tables' epoch.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// Called by the assign hook of the credential settings.
pub fn token_changed() {
    TOKEN_GENERATION.fetch_add(1, Ordering::Relaxed);
    notify();
}

/// Called when any table the identity depends on changed (any backend, after commit).
pub fn invalidate() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    notify();
}

/// Tells every listener.
fn notify() {
    LISTENERS.with(|listeners| {
        if let Ok(listeners) = listeners.try_borrow() {
            listeners.iter().for_each(|listener| listener());
        }
    });
}
