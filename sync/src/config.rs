//! Configuration: environment variables, over an optional file of `NAME=value` lines.
//!
//! Secrets (the WorkOS API key, webhook secrets, database passwords inside URLs) are held in
//! `Secret`, whose `Debug` and `Display` print `[redacted]`, so no log line or error can carry one.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A value that must never be printed.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    #[cfg(test)]
    pub fn new(value: &str) -> Secret {
        Secret(value.to_string())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

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

/// Where settings come from: the environment first, then the file.
pub struct Source {
    values: HashMap<String, String>,
}

impl Source {
    /// The environment over the file named by `--config` or `PG_TENANCY_SYNC_CONFIG`.
    pub fn load(file: Option<&str>) -> Result<Source, String> {
        let mut values = HashMap::new();
        let file = file
            .map(str::to_string)
            .or_else(|| std::env::var("PG_TENANCY_SYNC_CONFIG").ok());
        if let Some(path) = file {
            values = read_file(&path)?;
        }
        for (name, value) in std::env::vars() {
            if name.starts_with("PG_TENANCY_") || name.starts_with("WORKOS_") {
                values.insert(name, value);
            }
        }
        Ok(Source { values })
    }

    /// A setting's value, when given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A required setting.
    fn required(&self, name: &str) -> Result<String, String> {
        self.get(name)
            .map(str::to_string)
            .ok_or_else(|| format!("{name} is not set"))
    }

    /// A duration in seconds, with a default and a lower bound.
    pub fn seconds(&self, name: &str, default: f64, min: f64) -> Result<Duration, String> {
        let Some(text) = self.get(name) else {
            return Ok(Duration::from_secs_f64(default));
        };
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= min => Ok(Duration::from_secs_f64(v)),
            _ => Err(format!("{name} must be a number of seconds ≥ {min}, not \"{text}\"")),
        }
    }
}

/// Reads `NAME=value` lines (blank lines and `#` comments skipped). A file holding a secret must
/// not be readable by other users, as ssh insists for its keys.
fn read_file(path: &str) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("configuration file {path}: {e}"))?;
    let mut values = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "configuration file {path}, line {}: expected NAME=value",
                number + 1
            ));
        };
        let value = value.trim().trim_matches('"').to_string();
        values.insert(name.trim().to_string(), value);
    }
    let holds_secret = values.keys().any(|k| is_secret_name(k));
    if holds_secret {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{path}: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "configuration file {path} holds secrets but is readable by group or others (mode {:o}); chmod 600 it",
                mode & 0o777
            ));
        }
    }
    Ok(values)
}

/// Whether a setting holds a secret.
fn is_secret_name(name: &str) -> bool {
    name.ends_with("_KEY") || name.ends_with("_SECRET") || name.ends_with("_URL") || name.contains("ROUTING_KEY")
}

impl Config {
    /// Reads and checks every setting; the error names the first one that is wrong.
    pub fn from_source(source: &Source) -> Result<Config, String> {
        let database_url = source.required("PG_TENANCY_SYNC_DATABASE_URL")?;
        let client_id = source.required("WORKOS_CLIENT_ID")?;
        let api_base = source
            .get("WORKOS_API_BASE")
            .unwrap_or("https://api.workos.com")
            .trim_end_matches('/')
            .to_string();
        https_or_loopback("WORKOS_API_BASE", &api_base, true)?;
        let issuer = source
            .get("WORKOS_ISSUER")
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://api.workos.com/user_management/{client_id}"));
        let workspaces = match source.get("PG_TENANCY_SYNC_WORKSPACES").unwrap_or("existing") {
            "existing" => WorkspaceMode::Existing,
            "create" => WorkspaceMode::Create,
            other => {
                return Err(format!(
                    "PG_TENANCY_SYNC_WORKSPACES must be existing or create, not \"{other}\""
                ))
            }
        };
        let requests_per_second = match source.get("PG_TENANCY_SYNC_REQUESTS_PER_SECOND") {
            None => 50,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|v| (1..=100).contains(v))
                .ok_or_else(|| format!("PG_TENANCY_SYNC_REQUESTS_PER_SECOND must be 1..100, not \"{text}\""))?,
        };
        let webhook_secrets = source
            .get("WORKOS_WEBHOOK_SECRET")
            .map(|v| {
                v.split(',')
                    .map(|s| Secret(s.trim().to_string()))
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let alert_database_url = source
            .get("PG_TENANCY_ALERT_DATABASE_URL")
            .map(str::to_string)
            .unwrap_or_else(|| database_url.clone());
        Ok(Config {
            database_url: Secret(database_url),
            alert_database_url: Secret(alert_database_url),
            api_key: Secret(source.get("WORKOS_API_KEY").unwrap_or_default().to_string()),
            client_id,
            api_base,
            issuer,
            workspaces,
            jwks_interval: source.seconds("PG_TENANCY_SYNC_JWKS_INTERVAL", 300.0, 1.0)?,
            events_interval: source.seconds("PG_TENANCY_SYNC_EVENTS_INTERVAL", 10.0, 0.1)?,
            reconcile_interval: source.seconds("PG_TENANCY_SYNC_RECONCILE_INTERVAL", 86_400.0, 1.0)?,
            event_retention: source.seconds("PG_TENANCY_SYNC_EVENT_RETENTION", 30.0 * 86_400.0, 1.0)?,
            give_up: source.seconds("PG_TENANCY_SYNC_GIVE_UP", 60.0, 1.0)?,
            request_timeout: source.seconds("PG_TENANCY_SYNC_REQUEST_TIMEOUT", 10.0, 0.1)?,
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
    fn from_source(source: &Source) -> Result<AlertConfig, String> {
        let min_severity = match source.get("PG_TENANCY_ALERT_MIN_SEVERITY").unwrap_or("critical") {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            other => {
                return Err(format!(
                    "PG_TENANCY_ALERT_MIN_SEVERITY must be critical or warning, not \"{other}\""
                ))
            }
        };
        let url = |name: &str| -> Result<Option<Secret>, String> {
            match source.get(name) {
                None => Ok(None),
                Some(url) => {
                    // The URL itself is a secret (Slack's carries its token): never echo it.
                    https_or_loopback(name, url, false)?;
                    Ok(Some(Secret(url.to_string())))
                }
            }
        };
        let webhook = match url("PG_TENANCY_ALERT_WEBHOOK_URL")? {
            None => None,
            Some(address) => {
                let secrets: Vec<Secret> = source
                    .get("PG_TENANCY_ALERT_WEBHOOK_SECRET")
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| Secret(s.trim().to_string()))
                    .filter(|s| !s.is_empty())
                    .collect();
                if secrets.is_empty() {
                    return Err(
                        "PG_TENANCY_ALERT_WEBHOOK_URL is set but PG_TENANCY_ALERT_WEBHOOK_SECRET is not: \
                                alerts are only sent signed"
                            .into(),
                    );
                }
                Some((address, secrets))
            }
        };
        let pagerduty = match source.get("PG_TENANCY_ALERT_PAGERDUTY_ROUTING_KEY") {
            None => None,
            Some(key) => {
                let address = source
                    .get("PG_TENANCY_ALERT_PAGERDUTY_URL")
                    .unwrap_or("https://events.pagerduty.com/v2/enqueue");
                https_or_loopback("PG_TENANCY_ALERT_PAGERDUTY_URL", address, true)?;
                Some((Secret(key.to_string()), address.to_string()))
            }
        };
        Ok(AlertConfig {
            min_severity,
            interval: source.seconds("PG_TENANCY_ALERT_INTERVAL", 5.0, 0.1)?,
            webhook,
            slack: url("PG_TENANCY_ALERT_SLACK_URL")?,
            pagerduty,
        })
    }
}

/// Refuses a URL that is neither `https://` nor plain HTTP to this host (test fixtures); names it
/// in the error only when `show` (a URL that is a secret is not echoed). The host is read by a URL
/// parser, so `http://127.0.0.1:@elsewhere/` is not mistaken for loopback.
fn https_or_loopback(name: &str, url: &str, show: bool) -> Result<(), String> {
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
    Err(if show {
        format!("{name} must be https:// (or http:// on loopback), not \"{url}\"")
    } else {
        format!("{name} must be https:// (or http:// on loopback)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of exactly `pairs`.
    fn source(pairs: &[(&str, &str)]) -> Source {
        Source {
            values: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
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
        let s = Secret("sk_live_abc".into());
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn a_secret_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("pg-tenancy-sync-{}.conf", std::process::id()));
        std::fs::write(&path, "# test\nWORKOS_API_KEY=sk_test\nWORKOS_CLIENT_ID = client_1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_file(path.to_str().unwrap()).unwrap_err();
        assert!(err.contains("chmod 600") && !err.contains("sk_test"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let values = read_file(path.to_str().unwrap()).unwrap();
        assert_eq!(values["WORKOS_CLIENT_ID"], "client_1");
        std::fs::remove_file(path).unwrap();
    }
}
