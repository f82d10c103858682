//! What users and PostgreSQL see of pg_tenancy: the SQL functions, the planner folding of the
//! identity, the derived settings, held-cursor refusal, key vetting, scoped vector search
//! (`nearest.rs`) and the vector indexes plain SQL may use on protected tables (`vector_plans.rs`), and the one module that installs every hook (`hooks.rs`).

pub mod admin;
pub mod api_key_functions;
pub mod cursors;
pub mod derived_settings;
pub mod folding;
pub mod functions;
pub mod hooks;
pub mod nearest;
pub mod nearest_cache;
pub mod vector_plans;
pub mod workspace_sizes;
pub mod write_targets;

/// Defines the derived settings, installs the hooks, and lets folded plans hear of identity
/// changes.
pub fn init() {
    derived_settings::init();
    hooks::init();
    nearest_cache::init();
    vector_plans::init();
    crate::state::counters::on_identity_change(folding::identity_changed);
}
