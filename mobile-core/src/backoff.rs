//! When to try a sync again after a failure: exponential backoff with jitter, shorter while a
//! panic alarm waits to be delivered. Failures are classed so the app can tell the guard what
//! is wrong (no network, server trouble, or something only a person can fix).

use crate::error::Error;

/// What kind of failure a sync attempt met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// No connection, DNS failure, timeout: try again when the network returns.
    Network,
    /// The server failed or is overloaded (5xx, 429): try again later.
    Transient,
    /// The server refused the request as such (4xx) or the store cannot build it: retrying
    /// unchanged will not help; retried only at the longest interval.
    Permanent,
}

impl Error {
    pub fn failure_class(&self) -> FailureClass {
        match self {
            Error::Network(_) => FailureClass::Network,
            Error::ServerTransient { .. } | Error::BadResponse(_) => FailureClass::Transient,
            _ => FailureClass::Permanent,
        }
    }
}

/// Retry intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub base_ms: u64,
    /// Longest delay.
    pub max_ms: u64,
    /// Longest delay while a panic alarm is undelivered.
    pub urgent_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 2_000,
            max_ms: 5 * 60_000,
            urgent_max_ms: 5_000,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `failures` consecutive failures (at least 1), with
    /// "equal jitter": half fixed, half random (`unit` in [0, 1)), so a site's phones coming
    /// back into signal together do not retry in lockstep.
    pub fn delay_ms(&self, failures: u32, class: FailureClass, urgent: bool, unit: f64) -> u64 {
        let cap = if urgent {
            self.urgent_max_ms
        } else if class == FailureClass::Permanent {
            return self.max_ms;
        } else {
            self.max_ms
        };
        let exp = failures.saturating_sub(1).min(30);
        let ceiling = self.base_ms.saturating_mul(1u64 << exp).min(cap);
        let half = ceiling / 2;
        half + (unit.clamp(0.0, 1.0) * half as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_with_jitter() {
        let p = RetryPolicy::default();
        let net = FailureClass::Network;
        assert_eq!(p.delay_ms(1, net, false, 0.0), 1_000);
        assert_eq!(p.delay_ms(1, net, false, 0.999_999), 1_999);
        assert_eq!(p.delay_ms(2, net, false, 0.0), 2_000);
        assert_eq!(p.delay_ms(4, net, false, 0.0), 8_000);
        assert_eq!(p.delay_ms(40, net, false, 0.0), 150_000);
        assert!(p.delay_ms(40, net, false, 0.5) <= p.max_ms);
    }

    #[test]
    fn a_pending_panic_keeps_retries_short_and_permanent_failures_wait_longest() {
        let p = RetryPolicy::default();
        assert!(p.delay_ms(40, FailureClass::Network, true, 0.9) <= p.urgent_max_ms);
        assert_eq!(p.delay_ms(1, FailureClass::Permanent, false, 0.0), p.max_ms);
        assert!(p.delay_ms(1, FailureClass::Permanent, true, 0.0) <= p.urgent_max_ms);
    }

    #[test]
    fn errors_are_classed() {
        assert_eq!(
            Error::Network("x".into()).failure_class(),
            FailureClass::Network
        );
        let busy = Error::ServerTransient {
            status: 503,
            message: String::new(),
        };
        assert_eq!(busy.failure_class(), FailureClass::Transient);
        let refused = Error::ServerRejected {
            status: 404,
            message: String::new(),
        };
        assert_eq!(refused.failure_class(), FailureClass::Permanent);
    }
}
