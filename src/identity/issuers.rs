//! The trusted issuers, as `tenancy.issuers` lists them: read once per identity epoch (any
//! change to the table bumps it) and kept per backend, each row's keys parsed and checked against
//! the key policy on the way in.

use crate::plumbing::{fresh, pinned_context};
use crate::state::invalidation;
use crate::verify::{self, Algorithm, KeySet, TrustedIssuer};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

thread_local! {
    /// Trusted issuers as loaded from `tenancy.issuers`, tagged with their epoch.
    static ISSUERS: RefCell<Option<(u64, HashMap<String, TrustedIssuer>)>> = const { RefCell::new(None) };
    /// The issuers query, planned once per backend (its plan is revalidated by PostgreSQL).
    static ISSUERS_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

/// Runs `f` with the trusted issuers, (re)loading them when the epoch moved.
pub fn with_trusted_issuers<R>(epoch: u64, f: impl FnOnce(&HashMap<String, TrustedIssuer>) -> R) -> R {
    let fresh = ISSUERS.with_borrow(|loaded| matches!(loaded, Some((e, _)) if *e == epoch));
    if !fresh {
        let issuers = load_issuers();
        ISSUERS.with_borrow_mut(|loaded| *loaded = Some((epoch, issuers)));
    }
    ISSUERS.with_borrow(|loaded| f(&loaded.as_ref().expect("loaded above").1))
}

/// Reads `tenancy.issuers` (as `tenancy_lookup`, names pinned: `src/plumbing/pinned_context.rs`);
/// a row that no longer passes the key policy is skipped with a warning.
fn load_issuers() -> HashMap<String, TrustedIssuer> {
    invalidation::remember_tables();
    let rows = pinned_context::as_lookup_role(|| {
        fresh::query(
            &ISSUERS_PLAN,
            c"SELECT i.issuer, i.audience, pg_catalog.array_to_string(i.algorithms, ','),
                CAST(i.jwks AS pg_catalog.text), i.allow_no_organization FROM tenancy.issuers i",
            &[],
        )
    });
    let rows = rows.into_iter().map(|mut r| {
        let mut take = |i: usize| r.get_mut(i).and_then(Option::take);
        (
            take(0).unwrap_or_default(),
            take(1),
            take(2).unwrap_or_default(),
            take(3).unwrap_or_default(),
            fresh::flag(&take(4)),
        )
    });
    let mut issuers = HashMap::new();
    for (issuer, audience, algorithms, jwks, allows_no_organization) in rows {
        let names: Vec<String> = algorithms.split(',').map(str::to_owned).collect();
        let parsed = Algorithm::parse_list(&names)
            .and_then(|algorithms| KeySet::parse(jwks.as_bytes(), &algorithms).map(|keys| (algorithms, keys)));
        match parsed {
            Ok((algorithms, keys)) => {
                issuers.insert(
                    issuer.clone(),
                    TrustedIssuer {
                        issuer,
                        audience,
                        algorithms,
                        keys,
                        allows_no_organization,
                    },
                );
            }
            Err(e) => warning!("issuer \"{}\" skipped: {e}", verify::json::printable(&issuer)),
        }
    }
    issuers
}
