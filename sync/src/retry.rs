//! The retry policy both HTTP clients share (the WorkOS API and the alert sinks): exponential
//! back-off with full jitter, `Retry-After` in seconds, and reqwest errors described without their
//! URL (a Slack webhook's URL carries its secret).

use std::time::Duration;

/// Longest single back-off between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First back-off between retries.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);

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
