//! The command line (clap): `pg-tenancy-sync [OPTIONS] <run|once|check>`.
//!
//! The subcommands and the program's own options are derived (`Cli`); the settings are added
//! from `config::settings::SETTINGS`, the table the configuration takes its defaults from, so that
//! `--help` and `<subcommand> --help` list every setting with its environment variable, meaning
//! and default, and cannot drift from what the configuration reads. clap reads each setting from
//! its flag, else from its environment variable; `config::Source` puts what clap found over the
//! configuration file, and the file over the defaults: the environment still wins over the file.
//! A secret is refused on the command line, which other users of the machine can read.

use crate::config::settings::{Setting, SETTINGS};
use crate::error::SyncError;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

/// What follows the list of options in `--help`.
const AFTER_HELP: &str = "\
Each setting is taken from its flag, else its environment variable, else the configuration file, \
else its default; a variable set but empty counts as not set and hides the file's value. \
Logs: one JSON object per line on standard error (ts, level, msg and the event's fields); \
no line carries a secret.
Exit status: 0 done; 1 a failure (run: at start, or of a task the service needs; once: something \
not applied; check: a part that failed); 2 a usage or configuration error.";

/// pg-tenancy-sync: keeps pg_tenancy's tables in step with WorkOS (signing keys, organizations,
/// memberships, revoked sessions) and delivers its alerts
#[derive(Parser)]
#[command(
    name = "pg-tenancy-sync",
    version,
    after_help = AFTER_HELP,
    subcommand_required = true,
    arg_required_else_help = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A file of NAME=value lines, the settings below by their environment variables' names;
    /// the environment wins over it. Refused when it holds a secret and group or others may
    /// read it
    #[arg(long, global = true, env = "PG_TENANCY_SYNC_CONFIG", value_name = "FILE")]
    config: Option<String>,
    /// Which log lines are written: a level (error, warn, info, debug, trace) or EnvFilter
    /// directives such as warn,pg_tenancy_sync::alerts=debug [default: RUST_LOG, else info]
    #[arg(long, global = true, env = "PG_TENANCY_SYNC_LOG", value_name = "FILTER")]
    log: Option<String>,
}

/// What to do.
#[derive(Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The service: JWKS refreshes, events, reconciles and alert delivery until SIGTERM or
    /// SIGINT, beside PostgreSQL as a systemd unit or a sidecar
    Run,
    /// One pass: JWKS, reconcile when due, pending events, pending alerts; exit status 0 when
    /// everything applied
    Once,
    /// The configuration, the database (extension, role, issuer), the audit database, the alert
    /// sinks and WorkOS (JWKS, API key), one line each; exit status 0 when every part passes
    Check,
}

/// The command line, read.
pub struct Invocation {
    pub command: Command,
    /// `--config` or `PG_TENANCY_SYNC_CONFIG`.
    pub config_file: Option<String>,
    /// `--log`, `PG_TENANCY_SYNC_LOG` or `RUST_LOG`, else `info`.
    pub log_filter: String,
    matches: ArgMatches,
}

/// The whole command line: the derived part and a flag per setting, global, so that each
/// subcommand's help lists them too.
pub fn command() -> clap::Command {
    SETTINGS
        .iter()
        .fold(Cli::command(), |command, s| command.arg(arg_of(s)))
}

/// The flag of one setting.
fn arg_of(s: &'static Setting) -> Arg {
    let help = if s.secret {
        format!("{}. A secret: from the environment or the file only", s.help)
    } else {
        s.help.to_string()
    };
    let arg = Arg::new(s.name)
        .long(s.flag)
        .env(s.name)
        .value_name(s.value)
        .help(help)
        .help_heading(s.group)
        .global(true)
        .hide_env_values(s.secret);
    match s.default {
        Some(default) => arg.default_value(default),
        None => arg,
    }
}

/// Reads the command line; prints the help or the version and exits 0 when asked, prints the
/// problem and exits 2 on a usage error.
pub fn parse() -> Invocation {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let log_filter = cli
        .log
        .filter(|f| !f.is_empty())
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty()))
        .unwrap_or_else(|| crate::log::DEFAULT_FILTER.to_string());
    Invocation {
        command: cli.command,
        config_file: cli.config,
        log_filter,
        matches,
    }
}

impl Invocation {
    /// Each setting given on the command line or in the environment (defaults are not: the file
    /// comes first), by its environment variable's name. A secret on the command line is refused.
    pub fn given(&self) -> Result<Vec<(String, String)>, SyncError> {
        let mut given = Vec::new();
        for s in SETTINGS {
            match self.matches.value_source(s.name) {
                Some(ValueSource::CommandLine) if s.secret => {
                    return Err(SyncError::Config(format!(
                        "--{} is a secret: set {} in the environment or the configuration file, not on the \
                         command line, which other users can read",
                        s.flag, s.name
                    )))
                }
                Some(ValueSource::CommandLine | ValueSource::EnvVariable) => {
                    let value = self.matches.get_one::<String>(s.name).cloned().unwrap_or_default();
                    given.push((s.name.to_string(), value));
                }
                _ => {}
            }
        }
        Ok(given)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The invocation of `args` (after the program's name), or clap's error.
    fn invoke(args: &[&str]) -> Result<Invocation, clap::Error> {
        let matches = command().try_get_matches_from(std::iter::once("pg-tenancy-sync").chain(args.iter().copied()))?;
        let cli = Cli::from_arg_matches(&matches)?;
        Ok(Invocation {
            command: cli.command,
            config_file: cli.config,
            log_filter: cli.log.unwrap_or_default(),
            matches,
        })
    }

    #[test]
    fn the_command_line_is_well_formed_and_documents_every_setting() {
        command().debug_assert();
        let help = command().render_long_help().to_string();
        for s in SETTINGS {
            assert!(help.contains(&format!("--{}", s.flag)), "--{} in\n{help}", s.flag);
            assert!(help.contains(s.name), "{} in\n{help}", s.name);
        }
        for sub in ["run", "once", "check"] {
            let mut command = command();
            command.build();
            let help = command.find_subcommand_mut(sub).unwrap().render_long_help().to_string();
            assert!(
                help.contains("PG_TENANCY_SYNC_DATABASE_URL") && help.contains("[default: 300]"),
                "{help}"
            );
        }
    }

    #[test]
    fn subcommands_options_anywhere_and_secrets_refused_on_the_command_line() {
        let i = invoke(&["--config", "/etc/sync.conf", "once", "--jwks-interval", "7"]).unwrap();
        assert_eq!(i.command, Command::Once);
        assert_eq!(i.config_file.as_deref(), Some("/etc/sync.conf"));
        assert!(i
            .given()
            .unwrap()
            .contains(&("PG_TENANCY_SYNC_JWKS_INTERVAL".to_string(), "7".to_string())));
        let i = invoke(&["check", "--config", "/etc/sync.conf"]).unwrap();
        assert_eq!(
            (i.command, i.config_file.as_deref()),
            (Command::Check, Some("/etc/sync.conf"))
        );
        let defaults: Vec<_> = i.given().unwrap().into_iter().map(|(name, _)| name).collect();
        assert!(
            !defaults.contains(&"PG_TENANCY_SYNC_JWKS_INTERVAL".to_string()),
            "a default is not given: the file may still set it"
        );
        let e = invoke(&["run", "--workos-api-key", "sk_live_x"])
            .unwrap()
            .given()
            .unwrap_err();
        assert!(
            e.to_string().contains("--workos-api-key is a secret") && !e.to_string().contains("sk_live_x"),
            "{e}"
        );
        for wrong in [&[][..], &["start"], &["run", "once"], &["run", "--no-such-flag"]] {
            let e = invoke(wrong).err().unwrap_or_else(|| panic!("{wrong:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{wrong:?}: {e}");
        }
        assert_eq!(invoke(&["--help"]).err().unwrap().exit_code(), 0);
    }
}
