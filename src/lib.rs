//! pg_tenancy: multi-tenancy enforced inside PostgreSQL.
//!
//! Who the user is comes from a verified WorkOS access token; what they may touch is enforced
//! by the database on every query. Each module has one concern; `_PG_init` calls each `init()`.

// A `Denial` is a value on the refusal path only; boxing it would add noise to every `?`.
#![allow(clippy::result_large_err)]

// The layers, lowest first; each uses only those below it (scripts/check-layers keeps it so).
mod audit;
mod identity;
mod plumbing;
mod search;
mod state;
mod surface;
#[cfg(any(test, feature = "pg_test"))]
mod test_support;
pub mod verify;

pgrx::pg_module_magic!();

// Versions: `sql/pg_tenancy--0.1.0.sql` is the frozen install script of 0.1.0 and
// `sql/pg_tenancy--A--B.sql` the upgrade scripts; the current version's script is generated from
// the `extension_sql_file!`s below. Every C symbol a frozen script names (`…_wrapper`) must stay
// exported by this library, or `CREATE EXTENSION pg_tenancy VERSION '0.1.0'` fails: the upgrade
// test (scripts/upgrade-test) installs each frozen version with the current library.

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!(
    "../sql/admin.sql",
    name = "admin",
    requires = [
        surface::key_vetting::_vet_jwks,
        surface::key_vetting::_note_issuer_keys_changed,
        state::invalidation::invalidate_identities,
        state::invalidation::_create_invalidation_trigger
    ]
);
pgrx::extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["admin", audit::views::_denials, audit::views::_stats]
);
pgrx::extension_sql_file!("../sql/sync.sql", name = "sync", requires = ["admin", "audit"]);
pgrx::extension_sql_file!(
    "../sql/api_keys.sql",
    name = "api_keys",
    requires = [
        "sync",
        surface::api_key_functions::_mint_api_key,
        surface::key_vetting::_deny_admin,
        surface::functions::workspace_id,
        surface::functions::has_permission
    ]
);
pgrx::extension_sql_file!(
    "../sql/protect.sql",
    name = "protect",
    requires = [
        "audit",
        "api_keys",
        surface::functions::workspace_id,
        surface::functions::user_id,
        surface::functions::has_permission
    ]
);
pgrx::extension_sql_file!("../sql/coverage.sql", name = "coverage", requires = ["protect"]);
pgrx::extension_sql_file!("../sql/search.sql", name = "search", requires = ["coverage"]);
pgrx::extension_sql_file!("../sql/distribute.sql", name = "distribute", requires = ["api_keys"]);
pgrx::extension_sql_file!("../sql/calibration.sql", name = "calibration", finalize);

/// Registers settings and callbacks when the library is loaded (preloaded or on first use).
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    plumbing::errors::never_attach_backtraces();
    audit::init();
    state::init();
    identity::init();
    search::init();
    surface::init();
    plumbing::guc::reserve_prefix();
}

#[cfg(test)]
pub mod pg_test {
    /// One-off initialization when the pg_test framework starts.
    pub fn setup(_options: Vec<&str>) {}

    /// postgresql.conf settings the tests need.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_tenancy'"]
    }
}
