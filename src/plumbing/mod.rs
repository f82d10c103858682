//! PostgreSQL plumbing that knows nothing of identity: raising errors, GUC helpers, queries under
//! the latest snapshot, raised-rights lookups under a pinned `search_path`, a libpq client connection, and keeping
//! credentials out of statement text, `pg_stat_activity` and error messages.

pub mod errors;
pub mod fresh;
pub mod guc;
pub mod libpq;
pub mod raised;
pub mod redaction;
