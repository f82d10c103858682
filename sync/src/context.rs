//! What every step of the WorkOS side shares: the configuration, the WorkOS client and the
//! metrics; and the name the companion's connections carry.

use crate::config::Config;
use crate::error::SyncError;
use crate::metrics::Metrics;
use crate::workos::WorkOs;
use std::sync::Arc;
use std::time::Instant;

/// The application name of the companion's database connections (`pg_stat_activity`).
pub const APPLICATION: &str = "pg-tenancy-sync";

/// What every step needs.
pub struct Ctx {
    pub config: Config,
    pub workos: WorkOs,
    pub metrics: Arc<Metrics>,
}

impl Ctx {
    /// A context for `config`.
    pub fn new(config: Config) -> Result<Ctx, SyncError> {
        let workos = WorkOs::new(&config)?;
        Ok(Ctx {
            config,
            workos,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The deadline of a step started now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.config.give_up
    }
}
