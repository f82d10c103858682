//! PostgreSQL plumbing that knows nothing of identity: raising errors, GUC helpers, SPI helpers,
//! queries under the latest snapshot, lookups as the least-privileged role under a pinned
//! `search_path`, a libpq client connection, whether a table is protected, and keeping
//! credentials out of statement text, `pg_stat_activity` and error messages; lists read in place and
//! tags carried in a plan's dependency list; whether Citus is loaded; transaction-state questions asked without the FFI guard.

pub mod citus;
pub mod errors;
pub mod fresh;
pub mod guc;
pub mod libpq;
pub mod pinned_context;
pub mod plan_tags;
pub mod protected_tables;
pub mod redaction;
pub mod spi;
pub mod unguarded;
