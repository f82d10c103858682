//! The WorkOS API over HTTPS: GETs with the API key, paced under WorkOS's rate limits, retried
//! the way its documentation asks (429 honours `Retry-After`; 5xx, timeouts and network errors
//! back off exponentially with full jitter), and abandoned at a deadline.
//!
//! reqwest (rustls) rather than the official `workos` crate: the companion needs five GET
//! endpoints, control over every retry and over the pacing of requests, and events kept as raw
//! JSON so that a type the SDK does not know, or a malformed object, is reported instead of
//! failing the whole page.

use crate::config::{Config, Secret};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Why a request did not produce a JSON body.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// A 4xx other than 429: not retried. `body` is WorkOS's error text, truncated.
    Refused { status: u16, body: String },
    /// The deadline passed while retrying; `last` is the last failure.
    GaveUp { last: String },
    /// A 2xx whose body was not the JSON expected.
    Decode(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Refused { status, body } => write!(f, "WorkOS answered {status}: {body}"),
            ApiError::GaveUp { last } => write!(f, "WorkOS unreachable until the deadline: {last}"),
            ApiError::Decode(e) => write!(f, "WorkOS sent an unexpected body: {e}"),
        }
    }
}

impl ApiError {
    /// A short stable name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Refused { .. } => "api_refused",
            ApiError::GaveUp { .. } => "api_unavailable",
            ApiError::Decode(_) => "api_decode",
        }
    }
}

/// A client of one WorkOS environment.
pub struct WorkOs {
    http: reqwest::Client,
    base: String,
    key: Secret,
    timeout: Duration,
    spacing: Duration,
    give_up: Duration,
    next_slot: Mutex<Instant>,
}

/// Longest single back-off between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First back-off between retries.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

impl WorkOs {
    /// A client for `config`'s API base and key.
    pub fn new(config: &Config) -> Result<WorkOs, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pg-tenancy-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(WorkOs {
            http,
            base: config.api_base.clone(),
            key: config.api_key.clone(),
            timeout: config.request_timeout,
            spacing: Duration::from_secs(1) / config.requests_per_second,
            give_up: config.give_up,
            next_slot: Mutex::new(Instant::now()),
        })
    }

    /// Waits for the next request slot (requests are spaced evenly at the configured rate).
    async fn pace(&self) {
        let wait = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.spacing;
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// GET `path` with `query`, with the API key when `auth`; retried until `deadline`.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        auth: bool,
        deadline: Instant,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut attempt = 0_u32;
        loop {
            self.pace().await;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ApiError::GaveUp {
                    last: "deadline reached before the request".into(),
                });
            }
            let mut request = self.http.get(&url).query(query).timeout(self.timeout.min(remaining));
            if auth {
                request = request.bearer_auth(self.key.expose());
            }
            let (failure, wait) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        return match response.bytes().await {
                            Ok(body) => serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string())),
                            Err(e) => Err(ApiError::Decode(without_url(e))),
                        };
                    }
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let body = response.text().await.unwrap_or_default();
                    let body: String = body.chars().take(200).collect();
                    if status == 429 {
                        (
                            format!("429 rate limited: {body}"),
                            retry_after.unwrap_or_else(|| backoff(attempt)),
                        )
                    } else if status >= 500 {
                        (format!("{status}: {body}"), backoff(attempt))
                    } else {
                        return Err(ApiError::Refused { status, body });
                    }
                }
                Err(e) if e.is_timeout() => (
                    format!("timed out after {:?}", self.timeout.min(remaining)),
                    backoff(attempt),
                ),
                Err(e) => (without_url(e), backoff(attempt)),
            };
            if Instant::now() + wait >= deadline {
                return Err(ApiError::GaveUp { last: failure });
            }
            crate::log::warn(
                "WorkOS request failed; retrying",
                &[
                    ("path", path.into()),
                    ("problem", failure.into()),
                    ("retry_in_ms", (wait.as_millis() as u64).into()),
                ],
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Every object of a list endpoint, following `list_metadata.after` (`limit` 100). Fails as
    /// a whole: a partial listing is never returned.
    pub async fn list_all(
        &self,
        path: &str,
        query: &[(&str, String)],
        deadline: Instant,
    ) -> Result<Vec<Value>, ApiError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("limit", "100".into()));
            q.push(("order", "asc".into()));
            if let Some(a) = &after {
                q.push(("after", a.clone()));
            }
            // Each page gets the whole retry budget: a long listing is cut short only by a page
            // that keeps failing, not by its length.
            let page_deadline = deadline.max(Instant::now() + self.give_up);
            let page = self.get(path, &q, true, page_deadline).await?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| ApiError::Decode(format!("{path}: no \"data\" array")))?;
            all.extend(data.iter().cloned());
            // A page without list_metadata is not known to be the last one: fail rather than treat
            // a partial listing as complete (to the reconcile, absence means deletion).
            let after_field = page
                .get("list_metadata")
                .and_then(|m| m.get("after"))
                .ok_or_else(|| ApiError::Decode(format!("{path}: no \"list_metadata.after\"")))?;
            match after_field.as_str() {
                Some(a) if !a.is_empty() && !data.is_empty() => after = Some(a.to_string()),
                _ => return Ok(all),
            }
        }
    }
}

/// A reqwest error's text without the URL, with its cause (connection refused, reset…).
pub fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(&e) {
        text.push_str(&format!(": {source}"));
    }
    text
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs and falls back to back-off).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// Exponential back-off with full jitter: a random wait in [0, min(cap, first·2^attempt)].
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF);
    ceiling.mul_f64(0.5 + 0.5 * jitter())
}

/// A number in [0, 1) from the clock and a counter: enough to spread retries apart.
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ u64::from(nanos);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let ceiling = FIRST_BACKOFF.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF);
            let wait = backoff(attempt);
            assert!(
                wait <= ceiling && wait >= ceiling / 2,
                "attempt {attempt}: {wait:?} vs {ceiling:?}"
            );
        }
    }
}
