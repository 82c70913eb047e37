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

    /// Delay before the next attempt after `error`, the `failures`-th in a row: as
    /// [`RetryPolicy::delay_ms`], but never sooner than a server's `Retry-After`. That floor is
    /// spread over [`Retry-After`, 1.5 × `Retry-After`) by the same `unit`, so that phones a
    /// busy server refused together do not all come back in the same second; it is capped like
    /// any delay.
    pub fn delay_after(&self, error: &Error, failures: u32, urgent: bool, unit: f64) -> u64 {
        let delay = self.delay_ms(failures, error.failure_class(), urgent, unit);
        let Some(after) = error.retry_after_ms() else {
            return delay;
        };
        let cap = if urgent {
            self.urgent_max_ms
        } else {
            self.max_ms
        };
        let floor = after.saturating_add((unit.clamp(0.0, 1.0) * (after / 2) as f64) as u64);
        delay.max(floor.min(cap))
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
    fn a_retry_after_is_a_floor_spread_by_the_jitter_and_capped() {
        let p = RetryPolicy::default();
        let busy = |secs: u64| Error::ServerTransient {
            status: 503,
            message: String::new(),
            retry_after_ms: Some(secs * 1_000),
        };
        // Longer than the backoff: the server's word, plus up to half again.
        assert_eq!(p.delay_after(&busy(10), 1, false, 0.0), 10_000);
        assert_eq!(p.delay_after(&busy(10), 1, false, 0.5), 12_500);
        // Shorter than the backoff: the backoff.
        assert_eq!(
            p.delay_after(&busy(1), 4, false, 0.0),
            p.delay_ms(4, FailureClass::Transient, false, 0.0)
        );
        // Capped like any delay, and short while a panic alarm waits.
        assert_eq!(p.delay_after(&busy(3_600), 1, false, 0.9), p.max_ms);
        assert_eq!(p.delay_after(&busy(60), 1, true, 0.9), p.urgent_max_ms);
        // Without a Retry-After, the backoff as before.
        let plain = Error::Network("down".into());
        assert_eq!(
            p.delay_after(&plain, 2, false, 0.3),
            p.delay_ms(2, FailureClass::Network, false, 0.3)
        );
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
            retry_after_ms: None,
        };
        assert_eq!(busy.failure_class(), FailureClass::Transient);
        let refused = Error::ServerRejected {
            status: 404,
            message: String::new(),
        };
        assert_eq!(refused.failure_class(), FailureClass::Permanent);
    }
}
