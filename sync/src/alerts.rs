//! Alert delivery (filled in by the alerts work): its configuration.

use crate::config::Source;

/// Which sinks receive alerts.
#[derive(Clone, Debug, Default)]
pub struct AlertConfig {}

impl AlertConfig {
    /// Reads the alert settings.
    pub fn from_source(_source: &Source) -> Result<AlertConfig, String> {
        Ok(AlertConfig {})
    }
}

/// Alert delivery's task (nothing to deliver until sinks are configured).
pub async fn run(_ctx: std::sync::Arc<crate::service::Ctx>) {}
