//! Scoped vector search, a layer of its own above identity: `tenancy.nearest` returns the
//! caller's k nearest rows of a protected table, min(k, n) of them always, and plain SQL on a
//! protected table is kept off vector indexes that span every workspace.
//!
//! Files, each one concern, in the order a call meets them:
//! - `entry_points.rs`: the C functions and their arguments;
//! - `strategy.rs`: which plan answers the caller's scope (own index, exact scan, shared index);
//! - `calibration.rs`: the recall target, and the `ef_search` or exact scan that meets it on a
//!   workspace's own index, from what calibration measured;
//! - `query_sampling.rs`: the queries calibration measures with, drawn like the workspace's rows
//!   (pure; unit-tested without a server);
//! - `sql_text.rs`: the SQL text of each plan (pure; unit-tested without a server);
//! - `execute.rs`: the checked target, the query's cast, the HNSW settings, running the plan;
//! - `plan_cache.rs`: what is kept per backend between calls, and its invalidation;
//! - `workspace_sizes.rs`: a workspace's rows estimated from the planner's statistics;
//! - `index_choice.rs`: which vector indexes the planner may use (for the planner hook);
//! - `model.rs`: the call, the target and the strategies, shared by all of them.
//!
//! Measured (docs/benchmarks.md, "Vector search"): the PL/pgSQL version this replaces spent about
//! 1 ms per call before the search itself (entering helpers with pinned `search_path`, catalog
//! checks, a capped count of the workspace, planning a dynamic statement); a cache hit here is a
//! few hash lookups, a `search_path` pin and the execution of a kept generic plan.

pub mod calibration;
pub mod entry_points;
pub mod execute;
pub mod index_choice;
pub mod model;
pub mod plan_cache;
pub mod query_sampling;
pub mod sql_text;
pub mod strategy;
pub mod workspace_sizes;

/// Registers the cache's relcache callback and defines `tenancy.shared_vector_indexes` and
/// `tenancy.nearest_recall`.
pub fn init() {
    plan_cache::init();
    index_choice::init();
    calibration::init();
}
