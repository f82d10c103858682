//! Configuration: every setting (`settings.rs`: the table `--help` is built from), read from the
//! environment or the command line over an optional file of `NAME=value` lines (`source.rs`),
//! checked here into a `Config`.
//!
//! Secrets (the WorkOS API key, webhook secrets, database passwords inside URLs, alert sink URLs)
//! are held in `Secret` (`secret.rs`), whose `Debug` and `Display` print `[redacted]`, so no log
//! line or error can carry one.

mod secret;
pub mod settings;
mod source;
#[cfg(test)]
mod tests;

use crate::error::SyncError;
use std::time::Duration;

pub use secret::Secret;
pub use source::Source;

/// How WorkOS organizations map to `tenancy.workspaces` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkspaceMode {
    /// The platform owns its workspace rows; the companion keeps those whose `organization_id`
    /// matches current and creates none.
    Existing,
    /// A workspace per organization: `workspace_id` from its `external_id`, else its id.
    Create,
}

/// Everything the companion is told.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: Secret,
    pub alert_database_url: Secret,
    pub api_key: Secret,
    pub client_id: String,
    pub api_base: String,
    pub issuer: String,
    pub workspaces: WorkspaceMode,
    pub jwks_interval: Duration,
    pub events_interval: Duration,
    pub reconcile_interval: Duration,
    pub event_retention: Duration,
    pub give_up: Duration,
    pub request_timeout: Duration,
    pub requests_per_second: u32,
    pub listen: Option<String>,
    pub webhook_secrets: Vec<Secret>,
    pub alerts: AlertConfig,
}

/// Which audit rows reach the alert sinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Every denial.
    Warning,
    /// The rows the extension marked as alerts (critical denials and bursts): the default.
    Critical,
}

/// Where alerts go (each sink optional) and which ones.
#[derive(Clone, Debug)]
pub struct AlertConfig {
    pub min_severity: Severity,
    /// The timer that backs up `NOTIFY tenancy_alert` (a signal missed while reconnecting).
    pub interval: Duration,
    /// The generic webhook's URL and its signing secrets (the first signs; all are sent, for
    /// rotation).
    pub webhook: Option<(Secret, Vec<Secret>)>,
    /// A Slack incoming webhook's URL.
    pub slack: Option<Secret>,
    /// PagerDuty Events API v2: the routing key and the enqueue URL.
    pub pagerduty: Option<(Secret, String)>,
}

impl AlertConfig {
    /// Whether any sink is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some() || self.slack.is_some() || self.pagerduty.is_some()
    }
}

impl Config {
    /// Reads and checks every setting; the error names the first one that is wrong.
    pub fn from_source(source: &Source) -> Result<Config, SyncError> {
        let database_url = source.required("PG_TENANCY_SYNC_DATABASE_URL")?;
        let client_id = source.required("WORKOS_CLIENT_ID")?;
        let api_base = source.required("WORKOS_API_BASE")?.trim_end_matches('/').to_string();
        https_or_loopback("WORKOS_API_BASE", &api_base, true)?;
        let issuer = source
            .get("WORKOS_ISSUER")
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://api.workos.com/user_management/{client_id}"));
        let workspaces = match source.required("PG_TENANCY_SYNC_WORKSPACES")?.as_str() {
            "existing" => WorkspaceMode::Existing,
            "create" => WorkspaceMode::Create,
            other => {
                return Err(SyncError::Config(format!(
                    "PG_TENANCY_SYNC_WORKSPACES must be existing or create, not \"{other}\""
                )))
            }
        };
        let requests_per_second = {
            let text = source.required("PG_TENANCY_SYNC_REQUESTS_PER_SECOND")?;
            text.parse::<u32>()
                .ok()
                .filter(|v| (1..=100).contains(v))
                .ok_or_else(|| {
                    SyncError::Config(format!(
                        "PG_TENANCY_SYNC_REQUESTS_PER_SECOND must be 1..100, not \"{text}\""
                    ))
                })?
        };
        let webhook_secrets = secrets(source.get("WORKOS_WEBHOOK_SECRET"));
        let alert_database_url = source
            .get("PG_TENANCY_ALERT_DATABASE_URL")
            .map(str::to_string)
            .unwrap_or_else(|| database_url.clone());
        Ok(Config {
            database_url: Secret::new(&database_url),
            alert_database_url: Secret::new(&alert_database_url),
            api_key: Secret::new(source.get("WORKOS_API_KEY").unwrap_or_default()),
            client_id,
            api_base,
            issuer,
            workspaces,
            jwks_interval: source.seconds("PG_TENANCY_SYNC_JWKS_INTERVAL", 1.0)?,
            events_interval: source.seconds("PG_TENANCY_SYNC_EVENTS_INTERVAL", 0.1)?,
            reconcile_interval: source.seconds("PG_TENANCY_SYNC_RECONCILE_INTERVAL", 1.0)?,
            event_retention: source.seconds("PG_TENANCY_SYNC_EVENT_RETENTION", 1.0)?,
            give_up: source.seconds("PG_TENANCY_SYNC_GIVE_UP", 1.0)?,
            request_timeout: source.seconds("PG_TENANCY_SYNC_REQUEST_TIMEOUT", 0.1)?,
            requests_per_second,
            listen: source.get("PG_TENANCY_SYNC_LISTEN").map(str::to_string),
            webhook_secrets,
            alerts: AlertConfig::from_source(source)?,
        })
    }

    /// Whether the WorkOS side is configured (an API key is needed for everything but the JWKS).
    pub fn has_api_key(&self) -> bool {
        !self.api_key.is_empty()
    }
}

impl AlertConfig {
    /// Reads the `PG_TENANCY_ALERT_*` settings.
    fn from_source(source: &Source) -> Result<AlertConfig, SyncError> {
        let min_severity = match source.required("PG_TENANCY_ALERT_MIN_SEVERITY")?.as_str() {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            other => {
                return Err(SyncError::Config(format!(
                    "PG_TENANCY_ALERT_MIN_SEVERITY must be critical or warning, not \"{other}\""
                )))
            }
        };
        let url = |name: &str| -> Result<Option<Secret>, SyncError> {
            match source.get(name) {
                None => Ok(None),
                Some(url) => {
                    // The URL itself is a secret (Slack's carries its token): never echo it.
                    https_or_loopback(name, url, false)?;
                    Ok(Some(Secret::new(url)))
                }
            }
        };
        let webhook = match url("PG_TENANCY_ALERT_WEBHOOK_URL")? {
            None => None,
            Some(address) => {
                let secrets = secrets(source.get("PG_TENANCY_ALERT_WEBHOOK_SECRET"));
                if secrets.is_empty() {
                    return Err(SyncError::Config(
                        "PG_TENANCY_ALERT_WEBHOOK_URL is set but PG_TENANCY_ALERT_WEBHOOK_SECRET is not: \
                                alerts are only sent signed"
                            .into(),
                    ));
                }
                Some((address, secrets))
            }
        };
        let pagerduty = match source.get("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY") {
            None => None,
            Some(key) => {
                let address = source.required("PG_TENANCY_ALERT_PAGERDUTY_URL")?;
                https_or_loopback("PG_TENANCY_ALERT_PAGERDUTY_URL", &address, true)?;
                Some((Secret::new(key), address))
            }
        };
        Ok(AlertConfig {
            min_severity,
            interval: source.seconds("PG_TENANCY_ALERT_INTERVAL", 0.1)?,
            webhook,
            slack: url("PG_TENANCY_ALERT_SLACK_URL")?,
            pagerduty,
        })
    }
}

/// Refuses a URL that is neither `https://` nor plain HTTP to this host (test fixtures); names it
/// in the error only when `show` (a URL that is a secret is not echoed). The host is read by a URL
/// parser, so `http://127.0.0.1:@elsewhere/` is not mistaken for loopback.
fn https_or_loopback(name: &str, url: &str, show: bool) -> Result<(), SyncError> {
    use reqwest::Url;
    let allowed = Url::parse(url).ok().is_some_and(|u| match u.scheme() {
        "https" => u.host().is_some(),
        "http" => match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    });
    if allowed {
        return Ok(());
    }
    Err(SyncError::Config(if show {
        format!("{name} must be https:// (or http:// on loopback), not \"{url}\"")
    } else {
        format!("{name} must be https:// (or http:// on loopback)")
    }))
}

/// Comma-separated secrets (several during a rotation), empty ones dropped.
fn secrets(list: Option<&str>) -> Vec<Secret> {
    list.unwrap_or_default()
        .split(',')
        .map(|s| Secret::new(s.trim()))
        .filter(|s| !s.is_empty())
        .collect()
}
