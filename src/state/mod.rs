//! State that only stores values and announces changes: the settings, the credential settings
//! and their checks, the generation and epoch counters with their listeners, and cross-backend
//! invalidation. Nothing here knows how an identity is derived; the identity layer registers its
//! verifier (`credentials::set_verifier`) and the surface its listeners.

pub mod bound_values;
pub mod counters;
pub mod credentials;
pub mod invalidation;
pub mod readiness;
pub mod settings;

/// Defines the credential settings and the other settings, and registers the invalidation
/// callback.
pub fn init() {
    credentials::init();
    settings::init();
    invalidation::init();
}
