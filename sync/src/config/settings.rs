//! Every setting the companion reads: its environment variable (also its name in the
//! configuration file), its command-line flag, what it means and its default. `--help` is built
//! from this table and the configuration takes its defaults from it, so the two cannot disagree;
//! `Source::get` refuses (in debug builds and tests) a name that is not here.

/// One setting.
pub struct Setting {
    /// The environment variable, and the name in the configuration file.
    pub name: &'static str,
    /// The command-line flag, without `--`.
    pub flag: &'static str,
    /// What the value is, in `--help`.
    pub value: &'static str,
    /// What it means (the range it must be in, and the default when it depends on another).
    pub help: &'static str,
    /// The default, when it is a constant.
    pub default: Option<&'static str>,
    /// A secret: its value is never shown, and it is refused on the command line (which other
    /// users of the machine can read, as they could a configuration file `read_file` refuses).
    pub secret: bool,
    /// Its group in `--help`.
    pub group: &'static str,
}

const DATABASE: &str = "Databases";
const WORKOS: &str = "WorkOS";
const PACE: &str = "Schedule and limits";
const ENDPOINT: &str = "Endpoint (run)";
const ALERTS: &str = "Alert delivery";

/// A setting without a constant default.
const fn setting(
    name: &'static str,
    flag: &'static str,
    value: &'static str,
    group: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        flag,
        value,
        help,
        default: None,
        secret: false,
        group,
    }
}

/// A secret setting.
const fn secret(
    name: &'static str,
    flag: &'static str,
    value: &'static str,
    group: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        secret: true,
        ..setting(name, flag, value, group, help)
    }
}

/// A setting with a constant default.
const fn with_default(
    name: &'static str,
    flag: &'static str,
    value: &'static str,
    group: &'static str,
    default: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        default: Some(default),
        ..setting(name, flag, value, group, help)
    }
}

/// Every setting, in the order `--help` lists them.
pub const SETTINGS: &[Setting] = &[
    secret(
        "PG_TENANCY_SYNC_DATABASE_URL",
        "database-url",
        "URL",
        DATABASE,
        "libpq URL of the application database (required); TLS as its sslmode says",
    ),
    secret(
        "PG_TENANCY_ALERT_DATABASE_URL",
        "alert-database-url",
        "URL",
        DATABASE,
        "The audit database, where tenancy_jwks and tenancy_alert are signalled and alerts are read; \
         for alerts its login must be granted tenancy_alerts [default: the database URL]",
    ),
    setting(
        "WORKOS_CLIENT_ID",
        "workos-client-id",
        "ID",
        WORKOS,
        "The WorkOS client id (required): the JWKS is <api base>/sso/jwks/<client id>",
    ),
    secret(
        "WORKOS_API_KEY",
        "workos-api-key",
        "KEY",
        WORKOS,
        "The WorkOS API key, needed for everything but the JWKS",
    ),
    with_default(
        "WORKOS_API_BASE",
        "workos-api-base",
        "URL",
        WORKOS,
        "https://api.workos.com",
        "The WorkOS API: https://, or http:// on loopback",
    ),
    setting(
        "WORKOS_ISSUER",
        "workos-issuer",
        "ISSUER",
        WORKOS,
        "The issuer of the tokens, trusted once with tenancy.add_issuer \
         [default: https://api.workos.com/user_management/<client id>]",
    ),
    with_default(
        "PG_TENANCY_SYNC_WORKSPACES",
        "workspaces",
        "MODE",
        WORKOS,
        "existing",
        "existing: follow the workspaces whose organization_id matches and create none; \
         create: a workspace per organization, its id the external_id, else the organization id",
    ),
    secret(
        "WORKOS_WEBHOOK_SECRET",
        "workos-webhook-secret",
        "SECRETS",
        WORKOS,
        "Comma-separated WorkOS webhook secrets (several during a rotation): a webhook with a \
         valid WorkOS-Signature triggers a poll, its body is never applied",
    ),
    with_default(
        "PG_TENANCY_SYNC_JWKS_INTERVAL",
        "jwks-interval",
        "SECONDS",
        PACE,
        "300",
        "How often the JWKS is fetched (at least 1)",
    ),
    with_default(
        "PG_TENANCY_SYNC_EVENTS_INTERVAL",
        "events-interval",
        "SECONDS",
        PACE,
        "10",
        "How often the Events API is polled (at least 0.1)",
    ),
    with_default(
        "PG_TENANCY_SYNC_RECONCILE_INTERVAL",
        "reconcile-interval",
        "SECONDS",
        PACE,
        "86400",
        "How often a full reconcile runs (at least 1)",
    ),
    with_default(
        "PG_TENANCY_SYNC_EVENT_RETENTION",
        "event-retention",
        "SECONDS",
        PACE,
        "2592000",
        "How long the Events API keeps events: an older cursor means a full reconcile (at least 1)",
    ),
    with_default(
        "PG_TENANCY_SYNC_GIVE_UP",
        "give-up",
        "SECONDS",
        PACE,
        "60",
        "How long a step retries WorkOS, and `once` an alert sink, before it fails (at least 1)",
    ),
    with_default(
        "PG_TENANCY_SYNC_REQUEST_TIMEOUT",
        "request-timeout",
        "SECONDS",
        PACE,
        "10",
        "Timeout of one HTTP request (at least 0.1)",
    ),
    with_default(
        "PG_TENANCY_SYNC_REQUESTS_PER_SECOND",
        "requests-per-second",
        "N",
        PACE,
        "50",
        "Pace of the requests to WorkOS (1 to 100)",
    ),
    setting(
        "PG_TENANCY_SYNC_LISTEN",
        "listen",
        "HOST:PORT",
        ENDPOINT,
        "Where `run` answers GET /health, GET /metrics and POST /webhooks/workos [default: nowhere]",
    ),
    with_default(
        "PG_TENANCY_ALERT_MIN_SEVERITY",
        "alert-min-severity",
        "SEVERITY",
        ALERTS,
        "critical",
        "critical: the rows the extension marked as alerts (critical denials, bursts); \
         warning: every denial",
    ),
    with_default(
        "PG_TENANCY_ALERT_INTERVAL",
        "alert-interval",
        "SECONDS",
        ALERTS,
        "5",
        "The timer behind NOTIFY tenancy_alert (at least 0.1)",
    ),
    secret(
        "PG_TENANCY_ALERT_WEBHOOK_URL",
        "alert-webhook-url",
        "URL",
        ALERTS,
        "A webhook receiving one signed POST per audit row: https://, or http:// on loopback",
    ),
    secret(
        "PG_TENANCY_ALERT_WEBHOOK_SECRET",
        "alert-webhook-secret",
        "SECRETS",
        ALERTS,
        "Comma-separated secrets signing the webhook's requests (the first is current); required \
         with its URL",
    ),
    secret(
        "PG_TENANCY_ALERT_SLACK_URL",
        "alert-slack-url",
        "URL",
        ALERTS,
        "A Slack incoming webhook: one message per batch, at most one a second",
    ),
    secret(
        "PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY",
        "alert-pagerduty-routing-key",
        "KEY",
        ALERTS,
        "A PagerDuty Events API v2 routing key",
    ),
    with_default(
        "PG_TENANCY_ALERT_PAGERDUTY_URL",
        "alert-pagerduty-url",
        "URL",
        ALERTS,
        "https://events.pagerduty.com/v2/enqueue",
        "Where PagerDuty events are enqueued: https://, or http:// on loopback",
    ),
];

/// The setting called `name`.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}
