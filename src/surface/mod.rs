//! What users and PostgreSQL see of pg_tenancy: the SQL functions, the planner folding of the
//! identity, the derived settings, held-cursor refusal, the vetting of signing keys and API keys,
//! the classification of write targets, a credential's `SET LOCAL` handed to Citus for its
//! workers, and the one module that installs every hook
//! (`hooks.rs`). Vector search is a layer of its own below this one (`src/search/`).

pub mod api_key_functions;
pub mod citus_forwarding;
pub mod citus_set_text;
pub mod cursors;
pub mod derived_settings;
pub mod folding;
pub mod functions;
pub mod hooks;
pub mod identity_params;
pub mod key_vetting;
pub mod write_targets;

/// Defines the derived settings, installs the hooks, and lets folded plans hear of identity
/// changes.
pub fn init() {
    derived_settings::init();
    identity_params::init();
    hooks::init();
    crate::state::counters::on_identity_change(folding::identity_changed);
}
