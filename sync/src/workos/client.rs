//! The WorkOS API over HTTPS: GETs with the API key, paced under WorkOS's rate limits, retried
//! the way its documentation asks (429 honours `Retry-After`; 5xx, timeouts and network errors
//! back off exponentially with full jitter), and abandoned at a deadline.
//!
//! reqwest (rustls) rather than the official `workos` crate: the companion needs five GET
//! endpoints, control over every retry and over the pacing of requests, and events kept as raw
//! JSON so that a type the SDK does not know, or a malformed object, is reported instead of
//! failing the whole page.

use crate::config::{Config, Secret};
use crate::error::SyncError;
use crate::retry::{backoff, parse_retry_after, without_url};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

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

impl WorkOs {
    /// A client for `config`'s API base and key.
    pub fn new(config: &Config) -> Result<WorkOs, SyncError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pg-tenancy-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SyncError::HttpClient(e.to_string()))?;
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
    ) -> Result<Value, SyncError> {
        let url = format!("{}{}", self.base, path);
        let mut attempt = 0_u32;
        loop {
            self.pace().await;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(SyncError::ApiUnavailable {
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
                            Ok(body) => serde_json::from_slice(&body).map_err(|e| SyncError::ApiDecode(e.to_string())),
                            Err(e) => Err(SyncError::ApiDecode(without_url(e))),
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
                        return Err(SyncError::ApiRefused { status, body });
                    }
                }
                Err(e) if e.is_timeout() => (
                    format!("timed out after {:?}", self.timeout.min(remaining)),
                    backoff(attempt),
                ),
                Err(e) => (without_url(e), backoff(attempt)),
            };
            if Instant::now() + wait >= deadline {
                return Err(SyncError::ApiUnavailable { last: failure });
            }
            tracing::warn!(
                path,
                problem = failure.as_str(),
                retry_in_ms = wait.as_millis() as u64,
                "WorkOS request failed; retrying"
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
    ) -> Result<Vec<Value>, SyncError> {
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
                .ok_or_else(|| SyncError::ApiDecode(format!("{path}: no \"data\" array")))?;
            all.extend(data.iter().cloned());
            // A page without list_metadata is not known to be the last one: fail rather than treat
            // a partial listing as complete (to the reconcile, absence means deletion).
            let after_field = page
                .get("list_metadata")
                .and_then(|m| m.get("after"))
                .ok_or_else(|| SyncError::ApiDecode(format!("{path}: no \"list_metadata.after\"")))?;
            match after_field.as_str() {
                Some(a) if !a.is_empty() && !data.is_empty() => after = Some(a.to_string()),
                _ => return Ok(all),
            }
        }
    }
}
