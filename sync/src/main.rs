//! pg-tenancy-sync: keeps pg_tenancy's side of the double check in step with WorkOS (signing
//! keys, organizations, memberships, revoked sessions) and delivers its alerts.
//!
//! Usage: `pg-tenancy-sync [OPTIONS] <run|once|check>` (`--help` lists every setting). Settings
//! come from flags and environment variables over the optional file (README: "Keeping the
//! database in step with WorkOS").
//!
//! The modules, lowest layer first (scripts/check-layers keeps each using only its own layer and
//! those below, with no cycle between modules or between the files of one):
//! - `error`: SyncError, the one error type;
//! - `config`, `log`, `metrics`, `retry`: settings and secrets, JSON log lines, counters, the
//!   HTTP retry policy;
//! - `workos`: the WorkOS API client, its objects, webhook signatures;
//! - `db`: connections, the writer lock, cursors;
//! - `decide`: what to do with one WorkOS object (pure);
//! - `context`: what every step shares;
//! - `mirror` (WorkOS to the database), `alerts` (alert delivery), `http` (the endpoint);
//! - `service`: the subcommands and the supervision of the service's tasks;
//! - `cli`: the command line; this file strings it together.

mod alerts;
mod cli;
mod config;
mod context;
mod db;
mod decide;
mod error;
mod http;
mod log;
mod metrics;
mod mirror;
mod retry;
mod service;
mod workos;

use error::SyncError;

/// Logs a configuration or usage problem and exits 2.
fn configuration_error(problem: SyncError) -> ! {
    tracing::error!(problem = %problem, "configuration");
    std::process::exit(2);
}

fn main() {
    let invocation = cli::parse();
    if let Err(problem) = log::init(&invocation.log_filter) {
        configuration_error(problem);
    }
    let config = invocation
        .given()
        .and_then(|given| config::Source::load(invocation.config_file.as_deref(), given))
        .and_then(|source| config::Config::from_source(&source))
        .unwrap_or_else(|problem| configuration_error(problem));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(problem = %e, "cannot start");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        let ctx = match context::Ctx::new(config) {
            Ok(c) => c,
            Err(problem) => {
                tracing::error!(problem = %problem, "cannot start");
                return 1;
            }
        };
        match invocation.command {
            cli::Command::Run => service::run(ctx).await,
            cli::Command::Once => service::once(ctx).await,
            cli::Command::Check => service::check(ctx).await,
        }
    });
    std::process::exit(code);
}
