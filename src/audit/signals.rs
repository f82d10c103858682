//! Rate limits for the worker's signals to the companion: `NOTIFY tenancy_jwks` names an issuer
//! whose token carried a key id the database does not know (WorkOS may have rotated its keys), so
//! that pg-tenancy-sync refreshes that issuer's JWKS at once instead of at its next poll.
//!
//! A flood of tokens with made-up key ids must not become a flood of fetches: each issuer is
//! signalled at most once per `INTERVAL`, and only issuers the database trusts reach here (an
//! untrusted one is refused as `issuer_not_trusted` before any key is looked up).

use std::collections::HashMap;

/// Microseconds between two signals for one issuer.
pub const INTERVAL: i64 = 1_000_000;
/// Issuers remembered at most; beyond it the oldest are forgotten (there are few trusted ones).
const REMEMBERED: usize = 64;

/// When each issuer was last signalled.
#[derive(Default)]
pub struct KeySignals {
    last: HashMap<String, i64>,
}

impl KeySignals {
    /// Whether `issuer` may be signalled at `at` (microseconds); records the signal if so.
    pub fn allow(&mut self, issuer: &str, at: i64) -> bool {
        if issuer.is_empty() || self.last.get(issuer).is_some_and(|t| at - *t < INTERVAL) {
            return false;
        }
        if self.last.len() >= REMEMBERED {
            self.last.retain(|_, t| at - *t < INTERVAL);
        }
        self.last.insert(issuer.to_string(), at);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{KeySignals, INTERVAL};

    #[test]
    fn one_signal_per_issuer_per_interval() {
        let mut signals = KeySignals::default();
        let sent: Vec<i64> = (0..30)
            .map(|i| i * INTERVAL / 10)
            .filter(|at| signals.allow("https://a", *at))
            .collect();
        assert_eq!(
            sent,
            vec![0, INTERVAL, 2 * INTERVAL],
            "one per second over three seconds"
        );
        assert!(signals.allow("https://b", 0), "another issuer counts apart");
        assert!(!signals.allow("", 5 * INTERVAL), "no issuer, no signal");
    }
}
