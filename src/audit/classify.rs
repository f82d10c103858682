//! Which denials of a batch raise an alert: every critical one, and the one that makes a burst
//! from a source (client address, role, database) within the window; and which issuers get a
//! `NOTIFY tenancy_jwks` for an unknown key id. Pure bookkeeping, tested without a server; the
//! worker (`worker.rs`) writes and signals what this decides.

use super::ring::{self, Counter, Entry};
use super::settings as gucs;
use super::signals::KeySignals;
use crate::verify::Reason;
use std::collections::{HashMap, VecDeque};

/// Denials per source within the burst window, and when each source last raised an alert.
#[derive(Default)]
pub struct Bursts {
    seen: HashMap<String, VecDeque<i64>>,
    alerted: HashMap<String, i64>,
}

impl Bursts {
    /// Counts a denial of `source` at `at` (microseconds); returns the count when it makes a burst
    /// that has not been alerted within the window.
    pub fn note(&mut self, source: &str, at: i64, threshold: usize, window: i64) -> Option<usize> {
        let times = self.seen.entry(source.to_string()).or_default();
        times.push_back(at);
        while times.front().is_some_and(|t| *t <= at - window) {
            times.pop_front();
        }
        let count = times.len();
        let recently = self.alerted.get(source).is_some_and(|t| *t > at - window);
        if count > threshold && !recently {
            self.alerted.insert(source.to_string(), at);
            return Some(count);
        }
        None
    }

    /// Forgets sources quiet for longer than the window.
    pub fn forget_before(&mut self, cutoff: i64) {
        self.seen.retain(|_, times| times.back().is_some_and(|t| *t > cutoff));
        self.alerted.retain(|_, t| *t > cutoff);
    }
}

/// The alert each entry of a batch raises, and the signals the batch sends.
pub struct Classified {
    pub alerts: Vec<Option<&'static str>>,
    pub critical: bool,
    pub burst: bool,
    /// Issuers whose tokens carried an unknown key id (`NOTIFY tenancy_jwks`).
    pub signals: Vec<String>,
}

impl Classified {
    /// The classification of entry `index` alone (a batch written entry by entry).
    pub fn only(&self, index: usize) -> Classified {
        let alert = self.alerts.get(index).copied().flatten();
        Classified {
            alerts: vec![alert],
            critical: alert == Some("denial"),
            burst: alert == Some("burst"),
            signals: Vec::new(),
        }
    }

    /// Counts the alerts raised, once their rows are committed (a batch that fails and is
    /// retried must not count its alerts twice: a blocked batch once counted 2,715 alerts for 83
    /// denials).
    pub fn count_alerts(&self) {
        for _ in self.alerts.iter().flatten() {
            ring::count(Counter::Alerts);
        }
    }
}

/// Classifies `batch`: a critical denial is an alert; so is the denial that makes a burst from
/// its source (client address, role, database) within the window.
pub fn classify(batch: &[Entry], bursts: &mut Bursts, key_signals: &mut KeySignals) -> Classified {
    let threshold = gucs::ALERT_BURST_COUNT.get() as usize;
    let window = i64::from(gucs::ALERT_BURST_WINDOW.get()) * 1_000_000;
    let mut classified = Classified {
        alerts: Vec::with_capacity(batch.len()),
        critical: false,
        burst: false,
        signals: Vec::new(),
    };
    for entry in batch {
        let reason = entry.reason();
        let source = format!("{}|{}|{}", entry.client.get(), entry.role, entry.database);
        let burst = bursts.note(&source, entry.at, threshold, window).is_some();
        let alert = if reason.is_critical() {
            Some("denial")
        } else {
            burst.then_some("burst")
        };
        classified.alerts.push(alert);
        classified.critical |= reason.is_critical();
        classified.burst |= burst;
        if reason == Reason::UnknownKey && key_signals.allow(entry.iss.get(), entry.at) {
            classified.signals.push(entry.iss.get().to_string());
        }
    }
    classified
}

/// The payload of an alert: a wake-up signal that names its kind and severity and nothing else.
/// Any role that may connect to the audit database can `LISTEN tenancy_alert`; the details stay
/// in `tenancy.audit_log`, readable by `tenancy_admin` and `tenancy_auditor` only.
pub fn alert_of(kind: &str) -> String {
    serde_json::json!({ "kind": kind, "severity": "critical" }).to_string()
}

#[cfg(test)]
mod tests {
    use super::Bursts;

    #[test]
    fn a_burst_alerts_once_per_window() {
        let mut bursts = Bursts::default();
        let second = 1_000_000;
        let alerts: Vec<_> = (0..30)
            .filter_map(|i| bursts.note("10.0.0.1|10|5", i * second / 10, 20, 10 * second))
            .collect();
        assert_eq!(
            alerts,
            vec![21],
            "the 21st denial within 10 s alerts, later ones do not"
        );
        assert_eq!(
            bursts.note("10.0.0.2|10|5", 0, 20, 10 * second),
            None,
            "another source counts apart"
        );
        let later: Vec<_> = (0..25)
            .filter_map(|i| bursts.note("10.0.0.1|10|5", 20 * second + i, 20, 10 * second))
            .collect();
        assert_eq!(later, vec![21], "a new window alerts again");
    }
}
