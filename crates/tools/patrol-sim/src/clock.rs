//! Simulated time. One true time for the whole run, moved on by the simulation only; each phone
//! reads it through its own [`SimClock`]: skewed (up to a day either way), drifting, jumping when
//! the simulation resets it, and with a time since boot that restarts at each reboot.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use patrol_mobile::clock::{Clock, ClockReading};
use uuid::Uuid;

/// The first instant of every run: 2025-03-01T00:00:00Z. Fixed, so that a run replays exactly.
pub const START_MS: i64 = 1_740_787_200_000;

/// A day, the largest skew a phone's clock gets.
pub const MAX_SKEW_MS: i64 = 24 * 3_600_000;

/// The run's true time, shared by every clock.
#[derive(Clone, Debug)]
pub struct SimTime(Arc<AtomicI64>);

impl Default for SimTime {
    fn default() -> Self {
        SimTime(Arc::new(AtomicI64::new(START_MS)))
    }
}

impl SimTime {
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms.max(0), Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct PhoneClock {
    /// Wall clock minus true time at `drift_from_ms`.
    skew_ms: i64,
    /// Parts per million the wall clock gains (or loses) from `drift_from_ms` on.
    drift_ppm: i64,
    drift_from_ms: i64,
    boot_id: Uuid,
    booted_at_ms: i64,
}

/// One phone's clocks, read by its `DeviceStore`. Clones share the state, so the simulation
/// keeps one to reset and reboot while the store reads another.
#[derive(Clone, Debug)]
pub struct SimClock {
    time: SimTime,
    state: Arc<Mutex<PhoneClock>>,
}

impl SimClock {
    pub fn new(time: SimTime, skew_ms: i64, drift_ppm: i64, boot_id: Uuid) -> Self {
        let now = time.now_ms();
        SimClock {
            time,
            state: Arc::new(Mutex::new(PhoneClock {
                skew_ms,
                drift_ppm,
                drift_from_ms: now,
                boot_id,
                booted_at_ms: now,
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut PhoneClock) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets the wall clock to true time plus `skew_ms` (a guard or the network setting it).
    pub fn set_skew(&self, skew_ms: i64) {
        let now = self.time.now_ms();
        self.with(|c| {
            c.skew_ms = skew_ms;
            c.drift_from_ms = now;
        });
    }

    /// A new boot: a new boot id, and the time since boot starts again from zero.
    pub fn reboot(&self, boot_id: Uuid) {
        let now = self.time.now_ms();
        self.with(|c| {
            c.boot_id = boot_id;
            c.booted_at_ms = now;
        });
    }
}

impl Clock for SimClock {
    fn now(&self) -> ClockReading {
        let now = self.time.now_ms();
        self.with(|c| {
            let drift = (now - c.drift_from_ms).saturating_mul(c.drift_ppm) / 1_000_000;
            ClockReading {
                wall_ms: now + c.skew_ms + drift,
                boot_id: c.boot_id,
                mono_ms: u64::try_from(now - c.booted_at_ms).unwrap_or(0),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_drift_and_reboot() {
        let time = SimTime::default();
        let clock = SimClock::new(time.clone(), -5_000, 1_000, Uuid::nil());
        assert_eq!(clock.now().wall_ms, START_MS - 5_000);
        time.advance(1_000_000);
        let r = clock.now();
        // 1000 ppm of 1000 s is one second gained.
        assert_eq!(r.wall_ms, START_MS + 1_000_000 - 5_000 + 1_000);
        assert_eq!(r.mono_ms, 1_000_000);
        clock.reboot(Uuid::max());
        time.advance(10);
        let r = clock.now();
        assert_eq!((r.boot_id, r.mono_ms), (Uuid::max(), 10));
        clock.set_skew(MAX_SKEW_MS);
        assert_eq!(clock.now().wall_ms, time.now_ms() + MAX_SKEW_MS);
    }
}
