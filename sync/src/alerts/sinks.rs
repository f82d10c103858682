//! The three sinks: what requests a batch of alerts becomes, how each is signed, and what an
//! answer means for delivery (acknowledged, rejected for good, or to be retried).

use super::format::{self, Alert};
use crate::config::{AlertConfig, Secret};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where alerts go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// A generic webhook: one signed POST per audit row.
    Webhook { url: Secret, secrets: Vec<Secret> },
    /// A Slack incoming webhook: one message per batch, at most one a second.
    Slack { url: Secret },
    /// PagerDuty Events API v2: one `trigger` per dedup key in a batch, and none for a key
    /// triggered within `PAGERDUTY_REPEAT` (its open incident already holds the alert).
    PagerDuty {
        routing_key: Secret,
        url: String,
        triggered: Arc<Mutex<HashMap<String, Instant>>>,
    },
}

/// How long a PagerDuty dedup key, once acknowledged, folds further rows of its kind into the
/// open incident without another event. PagerDuty takes about 120 events a minute per routing
/// key: a storm from 100 sources is 100 events, not one per batch per source. Short, because an
/// incident resolved meanwhile is only triggered again by the next event.
pub const PAGERDUTY_REPEAT: Duration = Duration::from_secs(60);

/// One request and how far it carries the sink's cursor once acknowledged.
pub struct Request {
    pub body: Vec<u8>,
    /// The idempotency key (the webhook's audit row id).
    pub key: Option<String>,
    /// The PagerDuty dedup key, remembered once acknowledged.
    pub dedup_key: Option<String>,
    /// The index in the batch of the last row this request completes: the cursor may move
    /// there after an acknowledgement (None: a later request of the batch completes it).
    pub completes: Option<usize>,
}

/// What an answer means.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// 2xx: the sink has it.
    Acknowledged,
    /// A 4xx other than 429 (or a redirect, which is never followed): reported and skipped.
    Rejected { status: u16, body: String },
    /// 429, 5xx, a timeout or a network error: retried, after `wait` when the sink said so.
    Retry { wait: Option<Duration>, problem: String },
}

/// The sinks `config` names, in a fixed order.
pub fn configured(config: &AlertConfig) -> Vec<Sink> {
    let mut sinks = Vec::new();
    if let Some((url, secrets)) = &config.webhook {
        sinks.push(Sink::Webhook {
            url: url.clone(),
            secrets: secrets.clone(),
        });
    }
    if let Some(url) = &config.slack {
        sinks.push(Sink::Slack { url: url.clone() });
    }
    if let Some((routing_key, url)) = &config.pagerduty {
        sinks.push(Sink::PagerDuty {
            routing_key: routing_key.clone(),
            url: url.clone(),
            triggered: Arc::default(),
        });
    }
    sinks
}

/// The header carrying the webhook's signature.
pub const SIGNATURE_HEADER: &str = "Pg-Tenancy-Signature";

impl Sink {
    /// The sink's name: in its cursor (`alerts:<name>`), logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Webhook { .. } => "webhook",
            Sink::Slack { .. } => "slack",
            Sink::PagerDuty { .. } => "pagerduty",
        }
    }

    /// A small number naming the sink in its advisory lock.
    pub fn number(&self) -> i32 {
        match self {
            Sink::Webhook { .. } => 1,
            Sink::Slack { .. } => 2,
            Sink::PagerDuty { .. } => 3,
        }
    }

    /// Where requests go.
    pub fn url(&self) -> &str {
        match self {
            Sink::Webhook { url, .. } | Sink::Slack { url } => url.expose(),
            Sink::PagerDuty { url, .. } => url,
        }
    }

    /// Rows read per batch: a webhook request carries one, so its batches only bound a read;
    /// Slack and PagerDuty fold a batch into few requests.
    pub fn batch_rows(&self) -> i64 {
        match self {
            Sink::Webhook { .. } => 100,
            Sink::Slack { .. } | Sink::PagerDuty { .. } => 500,
        }
    }

    /// The least time between two requests: Slack accepts about one message a second per
    /// webhook, PagerDuty about 120 events a minute per routing key (more are answered 429).
    pub fn spacing(&self) -> Duration {
        match self {
            Sink::Slack { .. } => Duration::from_secs(1),
            Sink::PagerDuty { .. } => Duration::from_millis(500),
            Sink::Webhook { .. } => Duration::ZERO,
        }
    }

    /// The requests that deliver `batch`, in order; none when every row folds into an incident
    /// triggered lately (the cursor then moves past the batch at once).
    pub fn requests(&self, batch: &[Alert]) -> Vec<Request> {
        match self {
            Sink::Webhook { .. } => batch
                .iter()
                .enumerate()
                .map(|(i, alert)| Request {
                    body: alert.webhook_body().to_string().into_bytes(),
                    key: Some(alert.id.to_string()),
                    dedup_key: None,
                    completes: Some(i),
                })
                .collect(),
            Sink::Slack { .. } => vec![Request {
                body: format::slack_message(batch).to_string().into_bytes(),
                key: None,
                dedup_key: None,
                completes: Some(batch.len() - 1),
            }],
            Sink::PagerDuty {
                routing_key, triggered, ..
            } => {
                let now = Instant::now();
                let mut triggered = triggered.lock().unwrap_or_else(|p| p.into_inner());
                triggered.retain(|_, at| now.duration_since(*at) < PAGERDUTY_REPEAT);
                let events: Vec<_> = format::pagerduty_events(batch, routing_key.expose())
                    .into_iter()
                    .filter(|event| !triggered.contains_key(event["dedup_key"].as_str().unwrap_or_default()))
                    .collect();
                let Some(last) = events.len().checked_sub(1) else {
                    return Vec::new();
                };
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, event)| Request {
                        dedup_key: event["dedup_key"].as_str().map(str::to_string),
                        body: event.to_string().into_bytes(),
                        key: None,
                        completes: (i == last).then_some(batch.len() - 1),
                    })
                    .collect()
            }
        }
    }

    /// Notes that the sink acknowledged `request` (PagerDuty: its incident is open now).
    pub fn acknowledged(&self, request: &Request) {
        if let (Sink::PagerDuty { triggered, .. }, Some(key)) = (self, &request.dedup_key) {
            triggered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), Instant::now());
        }
    }

    /// The headers of one attempt of `request` (the webhook is signed at each attempt, so its
    /// timestamp is always fresh for the receiver's tolerance).
    pub fn headers(&self, request: &Request, now_ms: i64) -> Vec<(&'static str, String)> {
        let mut headers = vec![("Content-Type", "application/json".to_string())];
        if let Sink::Webhook { secrets, .. } = self {
            headers.push((SIGNATURE_HEADER, signature(secrets, now_ms, &request.body)));
            if let Some(key) = &request.key {
                headers.push(("Idempotency-Key", key.clone()));
            }
        }
        headers
    }
}

/// `t=<unix ms>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, one `v1` per secret (the first is
/// the current one; the others let a receiver rotate without losing alerts).
pub fn signature(secrets: &[Secret], now_ms: i64, body: &[u8]) -> String {
    let mut header = format!("t={now_ms}");
    for secret in secrets {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
        mac.update(format!("{now_ms}.").as_bytes());
        mac.update(body);
        header.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    header
}

/// What an HTTP status (and `Retry-After`) means for delivery.
pub fn outcome(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let body: String = body.chars().take(200).collect();
    match status {
        200..=299 => Outcome::Acknowledged,
        429 => Outcome::Retry {
            wait: retry_after,
            problem: format!("429: {body}"),
        },
        500..=599 => Outcome::Retry {
            wait: retry_after,
            problem: format!("{status}: {body}"),
        },
        _ => Outcome::Rejected { status, body },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        let table: [(u16, Option<u64>, &str); 8] = [
            (200, None, "ack"),
            (202, None, "ack"),
            (204, None, "ack"),
            (429, Some(3), "retry after 3"),
            (503, None, "retry"),
            (400, None, "rejected"),
            (404, None, "rejected"),
            (302, None, "rejected"),
        ];
        for (status, after, expected) in table {
            let got = match outcome(status, after.map(Duration::from_secs), "x") {
                Outcome::Acknowledged => "ack".to_string(),
                Outcome::Retry { wait: Some(w), .. } => format!("retry after {}", w.as_secs()),
                Outcome::Retry { wait: None, .. } => "retry".into(),
                Outcome::Rejected { .. } => "rejected".into(),
            };
            assert_eq!(got, expected, "{status}");
        }
    }

    #[test]
    fn the_signature_has_one_v1_per_secret() {
        let secrets = [Secret::new("new"), Secret::new("old")];
        let header = signature(&secrets, 1_700_000_000_000, b"{}");
        let parts: Vec<&str> = header.split(',').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "t=1700000000000");
        assert_ne!(parts[1], parts[2], "each secret signs");
        // HMAC-SHA256("new", "1700000000000.{}") computed independently (Python's hmac module).
        assert_eq!(
            parts[1],
            "v1=da17091b0feee86522b878f7bae4b27bf8461053d2e63d7ee51d2353adbe5644"
        );
    }
}
