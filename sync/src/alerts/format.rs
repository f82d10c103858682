//! What each sink receives for audit rows (pure; WORK IN PROGRESS, see mod.rs). Never a token,
//! an API key or statement text: the row is read without `statement` and `detail`.

use serde_json::{json, Value};

/// An audit row as alerts see it.
#[derive(Debug, Clone)]
pub struct Alert {
    /// `<ring_started_at>/<seq>`: the idempotency key and dedup key base.
    pub id: String,
    pub at: String,
    pub reason: String,
    pub critical: bool,
    /// 'denial' or 'burst' (or None for a non-alerting row delivered at min severity warning).
    pub alert: Option<String>,
    pub database: String,
    pub role: String,
    pub client_addr: Option<String>,
    pub application_name: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub org_id: Option<String>,
    pub sid: Option<String>,
    pub kid: Option<String>,
}

impl Alert {
    /// The severity sinks show.
    pub fn severity(&self) -> &'static str {
        if self.critical || self.alert.as_deref() == Some("burst") {
            "critical"
        } else {
            "warning"
        }
    }

    /// The source a burst is counted by (as the extension counts it).
    pub fn source(&self) -> String {
        format!("{}|{}|{}", self.client_addr.as_deref().unwrap_or("local"), self.role, self.database)
    }

    /// The generic webhook's body.
    pub fn webhook_body(&self) -> Value {
        json!({
            "id": self.id, "at": self.at, "reason": self.reason, "severity": self.severity(),
            "alert": self.alert, "database": self.database, "role": self.role,
            "client_addr": self.client_addr, "application_name": self.application_name,
            "token": {"iss": self.iss, "sub": self.sub, "org_id": self.org_id, "sid": self.sid, "kid": self.kid},
        })
    }

    /// PagerDuty Events API v2 `trigger` for this row.
    pub fn pagerduty_event(&self, routing_key: &str) -> Value {
        let dedup = if self.alert.as_deref() == Some("burst") {
            format!("pg_tenancy:burst:{}", self.source())
        } else {
            format!("pg_tenancy:{}", self.id)
        };
        json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup,
            "payload": {
                "summary": format!("pg_tenancy denial: {} by role {} in database {}", self.reason, self.role, self.database),
                "source": self.client_addr.clone().unwrap_or_else(|| self.database.clone()),
                "severity": self.severity(),
                "timestamp": self.at,
                "component": "pg_tenancy",
                "class": self.reason,
                "custom_details": self.webhook_body(),
            }
        })
    }
}

/// One Slack message for a batch: each row on a line, bursts counted per source.
pub fn slack_message(batch: &[Alert]) -> Value {
    let mut lines = Vec::new();
    let mut by_source: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    for a in batch {
        let entry = by_source.entry(format!("{} {}", a.source(), a.reason)).or_insert((0, a.at.clone()));
        entry.0 += 1;
    }
    for (key, (count, at)) in by_source {
        let times = if count > 1 { format!(" ×{count}") } else { String::new() };
        lines.push(format!("• `{key}`{times} (first at {at})"));
    }
    json!({ "text": format!(":rotating_light: pg_tenancy: {} denial(s)\n{}", batch.len(), lines.join("\n")) })
}
