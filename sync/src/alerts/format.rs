//! What each sink receives for audit rows (pure: no I/O). Alerts are built only from the columns
//! alert delivery may read (the role cannot select the statement text or the detail), and the
//! client-chosen text among them is masked again, so no payload carries a token or an API key.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// An audit row as alerts see it.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The row's `id`: the order of the log, and the idempotency key a receiver deduplicates
    /// repeats by.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub reason: String,
    pub critical: bool,
    /// 'denial' (critical) or 'burst' (it made a burst from one source); None for a row
    /// delivered only because the minimum severity is `warning`.
    pub alert: Option<String>,
    pub pid: i32,
    pub database: String,
    pub role: String,
    pub client_addr: Option<String>,
    pub application_name: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub org_id: Option<String>,
    pub sid: Option<String>,
    pub kid: Option<String>,
    pub exp: Option<DateTime<Utc>>,
}

/// Longest PagerDuty `dedup_key` (its documented limit).
const DEDUP_KEY_MAX: usize = 255;
/// Sources listed one per line in a Slack message; the rest are counted.
const SLACK_LINES: usize = 20;

/// RFC 3339 in UTC with milliseconds, as every payload writes times.
fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Alert {
    /// The severity sinks show: a critical reason or a burst is critical, any other denial a
    /// warning (delivered only at `PG_TENANCY_ALERT_MIN_SEVERITY=warning`).
    pub fn severity(&self) -> &'static str {
        if self.critical || self.alert.is_some() {
            "critical"
        } else {
            "warning"
        }
    }

    /// Where the denial came from: the client address, or the local socket.
    fn client(&self) -> &str {
        self.client_addr.as_deref().unwrap_or("local")
    }

    /// One incident per database, kind (the reason, or `burst`), client and role, whatever the
    /// batch boundaries: a repeat after a restart carries the same key, and a burst from one
    /// source stays one incident while it is open.
    pub fn dedup_key(&self) -> String {
        let kind = if self.alert.as_deref() == Some("burst") {
            "burst"
        } else {
            &self.reason
        };
        let key = format!("pg_tenancy/{}/{kind}/{}/{}", self.database, self.client(), self.role);
        if key.len() <= DEDUP_KEY_MAX {
            key
        } else {
            format!(
                "pg_tenancy/{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()))
            )
        }
    }

    /// The generic webhook's body: the audit row without statement text or detail.
    pub fn webhook_body(&self) -> Value {
        json!({
            "id": self.id,
            "at": time(&self.at),
            "reason": self.reason,
            "severity": self.severity(),
            "critical": self.critical,
            "alert": self.alert,
            "database": mask(&self.database),
            "role": mask(&self.role),
            "client_addr": self.client_addr,
            "application_name": mask(&self.application_name),
            "pid": self.pid,
            "token": {
                "iss": self.iss.as_deref().map(mask),
                "sub": self.sub.as_deref().map(mask),
                "org_id": self.org_id.as_deref().map(mask),
                "sid": self.sid.as_deref().map(mask),
                "kid": self.kid.as_deref().map(mask),
                "exp": self.exp.as_ref().map(time),
            },
        })
    }
}

/// PagerDuty Events API v2 `trigger`s for a batch: one per dedup key, in the order each key first
/// appears, counting the rows it stands for (PagerDuty folds repeats of an open incident's key
/// into it anyway; collapsing here keeps a storm within its rate limit).
pub fn pagerduty_events(batch: &[Alert], routing_key: &str) -> Vec<Value> {
    let mut groups: Vec<(String, Vec<&Alert>)> = Vec::new();
    for alert in batch {
        let key = alert.dedup_key();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rows)) => rows.push(alert),
            None => groups.push((key, vec![alert])),
        }
    }
    groups
        .into_iter()
        .map(|(key, rows)| {
            let (first, last) = (rows[0], rows[rows.len() - 1]);
            let kind = if first.alert.as_deref() == Some("burst") {
                "burst of denials"
            } else {
                "denial"
            };
            let times = if rows.len() > 1 {
                format!(" (×{})", rows.len())
            } else {
                String::new()
            };
            let summary = format!(
                "pg_tenancy {kind}: {} from {} as role {} in database {}{times}",
                first.reason,
                first.client(),
                mask(&first.role),
                mask(&first.database)
            );
            let mut details = last.webhook_body();
            details["count"] = json!(rows.len());
            details["first_id"] = json!(first.id);
            details["first_at"] = json!(time(&first.at));
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": key,
                "payload": {
                    "summary": truncate(&summary, 1024),
                    "source": mask(&first.database),
                    "severity": first.severity(),
                    "timestamp": time(&first.at),
                    "component": "pg_tenancy",
                    "group": mask(&first.role),
                    "class": first.reason,
                    "custom_details": details,
                },
            })
        })
        .collect()
}

/// One Slack message for a batch: a line per source and reason with its count and times, so a
/// burst is one line of one message.
pub fn slack_message(batch: &[Alert]) -> Value {
    let mut groups: Vec<(String, &Alert, &Alert, usize)> = Vec::new();
    for alert in batch {
        let key = format!("{}|{}|{}|{}", alert.reason, alert.client(), alert.role, alert.database);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(group) => {
                group.2 = alert;
                group.3 += 1;
            }
            None => groups.push((key, alert, alert, 1)),
        }
    }
    let critical = batch.iter().filter(|a| a.severity() == "critical").count();
    let mut lines = vec![format!(
        ":rotating_light: *pg_tenancy*: {} denial{} ({critical} critical)",
        batch.len(),
        if batch.len() == 1 { "" } else { "s" }
    )];
    for (_, first, last, count) in groups.iter().take(SLACK_LINES) {
        let times = if *count > 1 {
            format!("{count}× ")
        } else {
            String::new()
        };
        let span = if count > &1 {
            format!("{} – {}", time(&first.at), time(&last.at))
        } else {
            time(&first.at)
        };
        lines.push(escape(&format!(
            "• {times}{} ({}) from {} as role {} in database {}, application \"{}\", {span}",
            first.reason,
            first.severity(),
            first.client(),
            mask(&first.role),
            mask(&first.database),
            mask(&first.application_name)
        )));
    }
    if groups.len() > SLACK_LINES {
        lines.push(format!("… and {} more sources", groups.len() - SLACK_LINES));
    }
    if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
        lines.push(format!("_audit rows {} to {}_", first.id, last.id));
    }
    json!({ "text": lines.join("\n") })
}

/// Slack's three control characters, escaped as its message formatting asks.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// `text` with every credential-looking run masked: a run of base64url characters and dots of at
/// least 16 bytes starting with `eyJ` (a JWT) or `tnk_` (an API key), the extension's own rule.
/// The extension masks these fields before they are stored; this is the second line.
pub fn mask(text: &str) -> String {
    let token_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.starts_with(b"eyJ") || rest.starts_with(b"tnk_") {
            let run = rest.iter().take_while(|b| token_byte(**b)).count();
            if run >= 16 {
                out.push_str("[redacted]");
                at += run;
                continue;
            }
        }
        let len = text[at..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[at..at + len]);
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A critical denial of `role` from `client`, row `seq`.
    fn row(id: i64, reason: &str, client: Option<&str>, alert: Option<&str>) -> Alert {
        let start = DateTime::from_timestamp(1_764_000_000, 123_456_000).unwrap();
        Alert {
            id,
            at: start + chrono::Duration::seconds(id),
            reason: reason.into(),
            critical: alert == Some("denial"),
            alert: alert.map(str::to_string),
            pid: 42,
            database: "app".into(),
            role: "web".into(),
            client_addr: client.map(str::to_string),
            application_name: "api <v2> & co".into(),
            iss: Some("https://api.workos.com/user_management/client_1".into()),
            sub: Some("user_1".into()),
            org_id: None,
            sid: None,
            kid: Some("k9".into()),
            exp: None,
        }
    }

    #[test]
    fn credentials_are_masked_and_other_text_kept() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        let cases = [
            (format!("app {jwt} end"), "app [redacted] end".to_string()),
            ("tnk_0123456789abcdefghij".into(), "[redacted]".into()),
            ("eyJshort".into(), "eyJshort".into()),
            ("café tnk_".into(), "café tnk_".into()),
            ("ünïcode eyJ0eXAiOiJKV1QiLCJhbGciOi".into(), "ünïcode [redacted]".into()),
        ];
        for (input, expected) in cases {
            assert_eq!(mask(&input), expected, "{input}");
        }
    }

    #[test]
    fn the_webhook_body_is_the_row_without_statement_or_detail() {
        let body = row(7, "spoof_attempt", Some("10.0.0.9"), Some("denial")).webhook_body();
        assert_eq!(body["id"], 7);
        assert_eq!(body["severity"], "critical");
        assert_eq!(body["token"]["kid"], "k9");
        assert_eq!(body["at"], "2025-11-24T16:00:07.123Z");
        assert!(body.get("statement").is_none() && body.get("detail").is_none());
    }

    #[test]
    fn dedup_keys_follow_the_source_and_bursts_share_one() {
        let table = [
            (
                row(1, "spoof_attempt", Some("10.0.0.1"), Some("denial")),
                "pg_tenancy/app/spoof_attempt/10.0.0.1/web",
            ),
            (
                row(2, "malformed", Some("10.0.0.1"), Some("burst")),
                "pg_tenancy/app/burst/10.0.0.1/web",
            ),
            (
                row(3, "token_expired", None, Some("burst")),
                "pg_tenancy/app/burst/local/web",
            ),
        ];
        for (alert, key) in &table {
            assert_eq!(alert.dedup_key(), *key);
        }
        let mut long = row(4, "spoof_attempt", None, Some("denial"));
        long.role = "r".repeat(300);
        assert!(long.dedup_key().len() <= DEDUP_KEY_MAX);
        assert_eq!(long.dedup_key(), long.dedup_key(), "stable across calls");
    }

    #[test]
    fn pagerduty_collapses_one_key_per_batch_and_keeps_the_documented_shape() {
        let batch = [
            row(1, "spoof_attempt", Some("10.0.0.1"), Some("denial")),
            row(2, "spoof_attempt", Some("10.0.0.2"), Some("denial")),
            row(3, "spoof_attempt", Some("10.0.0.1"), Some("denial")),
        ];
        let events = pagerduty_events(&batch, "R0UTING");
        assert_eq!(events.len(), 2, "two sources, two events");
        let first = &events[0];
        assert_eq!(first["routing_key"], "R0UTING");
        assert_eq!(first["event_action"], "trigger");
        assert_eq!(first["dedup_key"], "pg_tenancy/app/spoof_attempt/10.0.0.1/web");
        assert_eq!(first["payload"]["severity"], "critical");
        assert_eq!(first["payload"]["custom_details"]["count"], 2);
        assert!(first["payload"]["summary"].as_str().unwrap().ends_with("(×2)"));
        for field in ["summary", "source", "severity", "timestamp"] {
            assert!(first["payload"][field].is_string(), "{field}");
        }
    }

    #[test]
    fn slack_aggregates_a_burst_into_one_line_and_escapes() {
        let mut batch: Vec<Alert> = (1..=30).map(|i| row(i, "malformed", Some("10.0.0.1"), None)).collect();
        batch[20].alert = Some("burst".into());
        batch.push(row(31, "spoof_attempt", Some("10.0.0.2"), Some("denial")));
        let text = slack_message(&batch)["text"].as_str().unwrap().to_string();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("31 denials (2 critical)"), "{text}");
        assert!(text.contains("30× malformed"), "{text}");
        assert!(
            text.contains("api &lt;v2&gt; &amp; co") && !text.contains("<v2>"),
            "{text}"
        );
    }
}
