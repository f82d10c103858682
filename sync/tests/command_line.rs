//! The command line, without a database: `--help` (and each subcommand's) documents every
//! setting with its environment variable and default and never shows a secret's value; a usage
//! error and a configuration error exit 2, the latter with a JSON log line that names the setting
//! and echoes no secret.

use std::process::{Command, Output};

/// Every environment variable the companion reads (README, "Keeping the database in step with
/// WorkOS" and "How alerts reach people").
const VARIABLES: &[&str] = &[
    "PG_TENANCY_SYNC_CONFIG",
    "PG_TENANCY_SYNC_LOG",
    "PG_TENANCY_SYNC_DATABASE_URL",
    "PG_TENANCY_ALERT_DATABASE_URL",
    "WORKOS_CLIENT_ID",
    "WORKOS_API_KEY",
    "WORKOS_API_BASE",
    "WORKOS_ISSUER",
    "PG_TENANCY_SYNC_WORKSPACES",
    "WORKOS_WEBHOOK_SECRET",
    "PG_TENANCY_SYNC_JWKS_INTERVAL",
    "PG_TENANCY_SYNC_EVENTS_INTERVAL",
    "PG_TENANCY_SYNC_RECONCILE_INTERVAL",
    "PG_TENANCY_SYNC_EVENT_RETENTION",
    "PG_TENANCY_SYNC_GIVE_UP",
    "PG_TENANCY_SYNC_REQUEST_TIMEOUT",
    "PG_TENANCY_SYNC_REQUESTS_PER_SECOND",
    "PG_TENANCY_SYNC_LISTEN",
    "PG_TENANCY_ALERT_MIN_SEVERITY",
    "PG_TENANCY_ALERT_INTERVAL",
    "PG_TENANCY_ALERT_WEBHOOK_URL",
    "PG_TENANCY_ALERT_WEBHOOK_SECRET",
    "PG_TENANCY_ALERT_SLACK_URL",
    "PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY",
    "PG_TENANCY_ALERT_PAGERDUTY_URL",
];

/// The documented defaults, as `--help` shows them.
const DEFAULTS: &[&str] = &[
    "[default: https://api.workos.com]",
    "[default: existing]",
    "[default: 300]",
    "[default: 10]",
    "[default: 86400]",
    "[default: 2592000]",
    "[default: 60]",
    "[default: 50]",
    "[default: critical]",
    "[default: 5]",
    "[default: https://events.pagerduty.com/v2/enqueue]",
    "[default: the database URL]",
    "[default: https://api.workos.com/user_management/<client id>]",
    "[default: RUST_LOG, else info]",
];

const API_KEY: &str = "sk_test_command_line_5c1e";
const PASSWORD: &str = "pw-command-line-not-for-output";

/// The companion with only `env` in its environment.
fn companion(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pg-tenancy-sync"));
    command.args(args).env_clear().env("COLUMNS", "100");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn help_documents_every_setting_its_default_and_no_secret_value() {
    let secrets = [
        ("WORKOS_API_KEY", API_KEY),
        (
            "PG_TENANCY_SYNC_DATABASE_URL",
            "postgresql://bot:pw-command-line-not-for-output@db/app",
        ),
    ];
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["once", "--help"],
        &["check", "--help"],
    ] {
        let output = companion(args, &secrets);
        let help = String::from_utf8_lossy(&output.stdout).to_string();
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output));
        for variable in VARIABLES {
            assert!(help.contains(variable), "{args:?}: {variable} in\n{help}");
        }
        for default in DEFAULTS {
            assert!(
                help.replace('\n', " ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .contains(default),
                "{args:?}: {default} in\n{help}"
            );
        }
        assert!(
            !help.contains(API_KEY) && !help.contains(PASSWORD),
            "a secret in\n{help}"
        );
    }
    let top = companion(&["--help"], &[]);
    let top = String::from_utf8_lossy(&top.stdout);
    for line in ["run ", "once ", "check ", "Exit status: 0"] {
        assert!(top.contains(line), "{line} in\n{top}");
    }
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    for args in [&[][..], &["start"], &["run", "once"], &["once", "--no-such-flag"]] {
        let output = companion(args, &[]);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
    }
    // A configuration error is a JSON log line naming the setting.
    let output = companion(&["once"], &[("WORKOS_CLIENT_ID", "client_1")]);
    assert_eq!(output.status.code(), Some(2));
    let line: serde_json::Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(
        (&line["level"], &line["msg"], &line["problem"]),
        (
            &"error".into(),
            &"configuration".into(),
            &"PG_TENANCY_SYNC_DATABASE_URL is not set".into()
        )
    );
    // A secret on the command line is refused, and not echoed.
    let output = companion(
        &["check", "--workos-api-key", API_KEY],
        &[
            ("WORKOS_CLIENT_ID", "client_1"),
            ("PG_TENANCY_SYNC_DATABASE_URL", "postgresql:///app"),
        ],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(
        all.contains("--workos-api-key is a secret") && !all.contains(API_KEY),
        "{all}"
    );
    // An invalid value from the environment, and an invalid log filter.
    let base = [
        ("WORKOS_CLIENT_ID", "client_1"),
        ("PG_TENANCY_SYNC_DATABASE_URL", "postgresql:///app"),
    ];
    for (name, value, problem) in [
        (
            "PG_TENANCY_SYNC_GIVE_UP",
            "0",
            "PG_TENANCY_SYNC_GIVE_UP must be a number of seconds",
        ),
        ("PG_TENANCY_SYNC_LOG", "pg_tenancy_sync=loud", "the log filter"),
    ] {
        let mut env = base.to_vec();
        env.push((name, value));
        let output = companion(&["check"], &env);
        assert_eq!(output.status.code(), Some(2), "{name}: {}", text(&output));
        assert!(text(&output).contains(problem), "{name}: {}", text(&output));
    }
}
