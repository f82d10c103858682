//! A value that must never be printed: the WorkOS API key, webhook secrets, database URLs (their
//! passwords), alert sink URLs (Slack's carries its token) and the PagerDuty routing key.

use std::fmt;

/// A value whose `Debug` and `Display` print `[redacted]`, so no log line or error can carry it.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
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
