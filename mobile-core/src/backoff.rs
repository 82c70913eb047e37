//! When to try a sync again after a failure: exponential backoff with jitter, or, while a panic
//! alarm waits to be delivered, a short fixed schedule ([`URGENT_SCHEDULE_MS`]). Failures are
//! classed so the app can tell the guard what is wrong (no network, server trouble, or
//! something only a person can fix).

use crate::error::Error;

/// What kind of failure a sync attempt met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// No connection, DNS failure, timeout: try again when the network returns.
    Network,
    /// The server failed or is overloaded (5xx, 429): try again later.
    Transient,
    /// The server refused the request as such (4xx) or the store cannot build it: retrying
    /// unchanged will not help; retried only at the longest interval (but on the urgent
    /// schedule while a panic is undelivered).
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

/// Delays before each retry while a panic alarm is undelivered, after the first, second, ...
/// failure in a row; the last repeats. The first retry comes quickly, for the blip a phone
/// meets most (a dropped connection, a tower handover); the steps then spare the radio and
/// battery of a phone out of signal, and every 5 s after that is still within a guard's patience
/// with an alarm. Fixed, without jitter: only phones with a panic use it, few at once, and the
/// app can tell the guard when the next attempt comes.
pub const URGENT_SCHEDULE_MS: [u64; 4] = [1_000, 2_000, 3_000, 5_000];

/// Retry intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub base_ms: u64,
    /// Longest delay.
    pub max_ms: u64,
    /// Delays while a panic alarm is undelivered (see [`URGENT_SCHEDULE_MS`]); the last
    /// repeats, an empty schedule waits `base_ms`.
    pub urgent_schedule_ms: &'static [u64],
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 2_000,
            max_ms: 5 * 60_000,
            urgent_schedule_ms: &URGENT_SCHEDULE_MS,
        }
    }
}

impl RetryPolicy {
    /// Delay before the next attempt after `failures` consecutive failures (at least 1).
    ///
    /// While a panic is undelivered (`urgent`) it is the urgent schedule's step, whatever the
    /// failure's class: a refusal that looks permanent (a 401 while a credential rotation
    /// settles, a 403 or 404 from a server being reconfigured) may be gone in a minute, and a
    /// guard's life may depend on the alarm getting through; a few small requests from one
    /// phone cost the server nothing.
    ///
    /// Otherwise, "equal jitter": half fixed, half random (`unit` in [0, 1)), so a site's phones
    /// coming back into signal together do not retry in lockstep.
    pub fn delay_ms(&self, failures: u32, class: FailureClass, urgent: bool, unit: f64) -> u64 {
        if urgent {
            return self.urgent_delay_ms(failures);
        }
        if class == FailureClass::Permanent {
            return self.max_ms;
        }
        let exp = failures.saturating_sub(1).min(30);
        let ceiling = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let half = ceiling / 2;
        half + (unit.clamp(0.0, 1.0) * half as f64) as u64
    }

    /// The urgent schedule's step after `failures` consecutive failures (at least 1).
    fn urgent_delay_ms(&self, failures: u32) -> u64 {
        let step = usize::try_from(failures.saturating_sub(1)).unwrap_or(usize::MAX);
        self.urgent_schedule_ms
            .get(step)
            .or(self.urgent_schedule_ms.last())
            .copied()
            .unwrap_or(self.base_ms)
    }

    /// Delay before the next attempt after `error`, the `failures`-th in a row: as
    /// [`RetryPolicy::delay_ms`], but never sooner than a server's `Retry-After`. That floor is
    /// spread over [`Retry-After`, 1.5 × `Retry-After`) by the same `unit`, so that phones a
    /// busy server refused together do not all come back in the same second; it is capped like
    /// any delay.
    ///
    /// While a panic is undelivered the schedule alone applies, whatever the `Retry-After`: it
    /// speaks for the server's ordinary queue, which a panic's request skips (the panic lane is
    /// never refused for load); a panic sent the ordinary way (too large for the lane) and
    /// refused comes back within seconds all the same, one phone's few requests.
    pub fn delay_after(&self, error: &Error, failures: u32, urgent: bool, unit: f64) -> u64 {
        let delay = self.delay_ms(failures, error.failure_class(), urgent, unit);
        if urgent {
            return delay;
        }
        let Some(after) = error.retry_after_ms() else {
            return delay;
        };
        let floor = after.saturating_add((unit.clamp(0.0, 1.0) * (after / 2) as f64) as u64);
        delay.max(floor.min(self.max_ms))
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
    fn a_pending_panic_is_retried_on_the_fixed_schedule_whatever_the_failure() {
        let p = RetryPolicy::default();
        for class in [
            FailureClass::Network,
            FailureClass::Transient,
            FailureClass::Permanent,
        ] {
            let delays: Vec<u64> = (1..=6).map(|n| p.delay_ms(n, class, true, 0.9)).collect();
            assert_eq!(
                delays,
                [1_000, 2_000, 3_000, 5_000, 5_000, 5_000],
                "{class:?}"
            );
            assert_eq!(p.delay_ms(u32::MAX, class, true, 0.0), 5_000);
        }
        // Without a panic, a permanent failure waits longest.
        assert_eq!(p.delay_ms(1, FailureClass::Permanent, false, 0.0), p.max_ms);
        // A schedule of the app's own; an empty one waits the base delay.
        let own = RetryPolicy {
            urgent_schedule_ms: &[500],
            ..p
        };
        assert_eq!(own.delay_ms(3, FailureClass::Network, true, 0.0), 500);
        let none = RetryPolicy {
            urgent_schedule_ms: &[],
            ..p
        };
        assert_eq!(
            none.delay_ms(1, FailureClass::Network, true, 0.0),
            p.base_ms
        );
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
        // Capped like any delay.
        assert_eq!(p.delay_after(&busy(3_600), 1, false, 0.9), p.max_ms);
        // Without a Retry-After, the backoff as before.
        let plain = Error::Network("down".into());
        assert_eq!(
            p.delay_after(&plain, 2, false, 0.3),
            p.delay_ms(2, FailureClass::Network, false, 0.3)
        );
    }

    #[test]
    fn a_pending_panic_does_not_wait_out_a_long_retry_after() {
        let p = RetryPolicy::default();
        let busy = Error::ServerTransient {
            status: 503,
            message: String::new(),
            retry_after_ms: Some(60_000),
        };
        assert_eq!(p.delay_after(&busy, 1, true, 0.9), 1_000);
        assert_eq!(p.delay_after(&busy, 9, true, 0.9), 5_000);
        let refused = Error::Unauthorized {
            status: 401,
            message: String::new(),
        };
        assert_eq!(p.delay_after(&refused, 2, true, 0.0), 2_000);
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
