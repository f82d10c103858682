//! The configuration's checks, its defaults, and that no secret is echoed or printed.

use super::source::read_file;
use super::*;

/// A source of exactly `pairs`.
fn source(pairs: &[(&str, &str)]) -> Source {
    Source::from_pairs(pairs)
}

#[test]
fn alert_settings_are_checked_and_their_urls_never_echoed() {
    let base = [
        ("PG_TENANCY_SYNC_DATABASE_URL", "postgresql:///x"),
        ("WORKOS_CLIENT_ID", "c"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        Config::from_source(&source(&pairs))
    };
    type Case<'a> = (&'a [(&'a str, &'a str)], Result<(), &'a str>);
    let cases: &[Case] = &[
        (&[], Ok(())),
        (&[("PG_TENANCY_ALERT_MIN_SEVERITY", "info")], Err("critical or warning")),
        (
            &[("PG_TENANCY_ALERT_WEBHOOK_URL", "https://ops.example/hook")],
            Err("WEBHOOK_SECRET is not"),
        ),
        (
            &[
                ("PG_TENANCY_ALERT_WEBHOOK_URL", "http://ops.example/hook?t=s3cr3t"),
                ("PG_TENANCY_ALERT_WEBHOOK_SECRET", "k"),
            ],
            Err("must be https://"),
        ),
        (
            &[(
                "PG_TENANCY_ALERT_SLACK_URL",
                "http://hooks.slack.com/services/T/B/s3cr3t",
            )],
            Err("must be https://"),
        ),
        (
            &[("PG_TENANCY_ALERT_SLACK_URL", "https://hooks.slack.com/services/T/B/X")],
            Ok(()),
        ),
        (
            &[(
                "PG_TENANCY_ALERT_SLACK_URL",
                "http://127.0.0.1:@hooks.example/services/T/B/s3cr3t",
            )],
            Err("must be https://"),
        ),
        (&[("PG_TENANCY_ALERT_SLACK_URL", "http://[::1]:8080/x")], Ok(())),
        (
            &[
                ("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY", "r"),
                ("PG_TENANCY_ALERT_PAGERDUTY_URL", "ftp://x"),
            ],
            Err("PAGERDUTY_URL"),
        ),
        (
            &[
                ("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY", "r"),
                ("PG_TENANCY_ALERT_INTERVAL", "0"),
            ],
            Err("ALERT_INTERVAL"),
        ),
    ];
    for (extra, expected) in cases {
        match (with(extra), expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(part)) => {
                let e = e.to_string();
                assert!(e.contains(part), "{extra:?}: {e}");
                assert!(!e.contains("s3cr3t"), "a secret URL was echoed: {e}");
            }
            (got, _) => panic!("{extra:?}: expected {expected:?}, got {:?}", got.map(|_| ())),
        }
    }
    let config = with(&[("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY", "r")]).unwrap();
    let (_, url) = config.alerts.pagerduty.unwrap();
    assert_eq!(url, "https://events.pagerduty.com/v2/enqueue", "the documented default");
    assert_eq!(config.alerts.min_severity, Severity::Critical);
}

#[test]
fn secrets_never_print() {
    let s = Secret::new("sk_live_abc");
    assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
}

#[test]
fn a_secret_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("pg-tenancy-sync-{}.conf", std::process::id()));
    std::fs::write(&path, "# test\nWORKOS_API_KEY=sk_test\nWORKOS_CLIENT_ID = client_1\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = read_file(path.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("chmod 600") && !err.contains("sk_test"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let values = read_file(path.to_str().unwrap()).unwrap();
    assert_eq!(values["WORKOS_CLIENT_ID"], "client_1");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_settings_table_is_complete_and_its_defaults_apply() {
    // Every name `from_source` reads is in SETTINGS (`Source::get` asserts it in tests), and each
    // setting once: reading a complete configuration touches them all.
    let mut names = std::collections::HashSet::new();
    let mut flags = std::collections::HashSet::new();
    for s in settings::SETTINGS {
        assert!(names.insert(s.name), "{} twice", s.name);
        assert!(flags.insert(s.flag), "--{} twice", s.flag);
        assert!(!s.help.is_empty() && !s.help.ends_with('.'), "{}: {}", s.name, s.help);
        assert!(
            !(s.secret && s.default.is_some()),
            "{}: a secret has no default",
            s.name
        );
    }
    let config = Config::from_source(&source(&[
        ("PG_TENANCY_SYNC_DATABASE_URL", "postgresql:///x"),
        ("WORKOS_CLIENT_ID", "client_1"),
        ("PG_TENANCY_ALERT_WEBHOOK_URL", "https://ops.example/hook"),
        ("PG_TENANCY_ALERT_WEBHOOK_SECRET", "k"),
        ("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY", "r"),
    ]))
    .unwrap();
    // The documented defaults (README, "Keeping the database in step with WorkOS").
    assert_eq!(config.api_base, "https://api.workos.com");
    assert_eq!(config.issuer, "https://api.workos.com/user_management/client_1");
    assert_eq!(config.workspaces, WorkspaceMode::Existing);
    assert_eq!(config.jwks_interval, Duration::from_secs(300));
    assert_eq!(config.events_interval, Duration::from_secs(10));
    assert_eq!(config.reconcile_interval, Duration::from_secs(86_400));
    assert_eq!(config.event_retention, Duration::from_secs(30 * 86_400));
    assert_eq!(config.give_up, Duration::from_secs(60));
    assert_eq!(config.request_timeout, Duration::from_secs(10));
    assert_eq!(config.requests_per_second, 50);
    assert_eq!(config.listen, None);
    assert_eq!(config.alerts.interval, Duration::from_secs(5));
    assert_eq!(config.alert_database_url.expose(), "postgresql:///x");
    // A value given empty is no value: the default holds.
    let config = Config::from_source(&source(&[
        ("PG_TENANCY_SYNC_DATABASE_URL", "postgresql:///x"),
        ("WORKOS_CLIENT_ID", "c"),
        ("PG_TENANCY_SYNC_GIVE_UP", ""),
    ]))
    .unwrap();
    assert_eq!(config.give_up, Duration::from_secs(60));
}

#[test]
fn the_environment_wins_over_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("pg-tenancy-sync-over-{}.conf", std::process::id()));
    std::fs::write(
        &path,
        "WORKOS_CLIENT_ID=from_file\nPG_TENANCY_SYNC_GIVE_UP=7\nPG_TENANCY_SYNC_JWKS_INTERVAL=9\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let given = vec![
        (
            "PG_TENANCY_SYNC_DATABASE_URL".to_string(),
            "postgresql:///x".to_string(),
        ),
        ("WORKOS_CLIENT_ID".to_string(), "from_environment".to_string()),
        ("PG_TENANCY_SYNC_JWKS_INTERVAL".to_string(), String::new()),
    ];
    let source = Source::load(path.to_str(), given).unwrap();
    std::fs::remove_file(path).unwrap();
    let config = Config::from_source(&source).unwrap();
    assert_eq!(config.client_id, "from_environment");
    assert_eq!(
        config.give_up,
        Duration::from_secs(7),
        "the file fills in what is not given"
    );
    assert_eq!(
        config.jwks_interval,
        Duration::from_secs(300),
        "a variable set empty hides the file's value, as before"
    );
}
