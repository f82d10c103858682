//! pg-tenancy-sync: keeps pg_tenancy's side of the double check in step with WorkOS (signing
//! keys, organizations, memberships, revoked sessions).
//!
//! Usage: `pg-tenancy-sync [--config FILE] run|once|check`. Settings come from environment
//! variables over the optional file (README: "Keeping the database in step with WorkOS").

mod alerts;
mod apply;
mod config;
mod db;
mod decide;
mod error;
mod events;
mod http;
mod jwks;
mod log;
mod metrics;
mod model;
mod reconcile;
mod service;
mod webhook;
mod workos;

const USAGE: &str = "usage: pg-tenancy-sync [--config FILE] run|once|check";

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut file, mut command) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => file = args.next(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "run" | "once" | "check" if command.is_none() => command = Some(arg),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let Some(command) = command else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let config = config::Source::load(file.as_deref()).and_then(|s| config::Config::from_source(&s));
    let config = match config {
        Ok(c) => c,
        Err(problem) => {
            log::error("configuration", &[("problem", problem.into())]);
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log::error("cannot start", &[("problem", e.to_string().into())]);
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        let ctx = match service::Ctx::new(config) {
            Ok(c) => c,
            Err(problem) => {
                log::error("cannot start", &[("problem", problem.into())]);
                return 1;
            }
        };
        match command.as_str() {
            "run" => service::run(ctx).await,
            "once" => service::once(ctx).await,
            _ => service::check(ctx).await,
        }
    });
    std::process::exit(code);
}
