//! The device's clocks. Wall time can be set wrong or jump (NTP, a guard changing the time);
//! the time since boot cannot go backwards within one boot, so each event carries both, plus the
//! boot's id so readings from different boots are never compared.

use std::sync::OnceLock;

use uuid::Uuid;

/// One reading of the device's clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockReading {
    pub wall_ms: i64,
    pub boot_id: Uuid,
    pub mono_ms: u64,
}

/// A source of clock readings; tests substitute their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> ClockReading;
}

/// The operating system's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The kernel's id for this boot where it has one (Linux, Android); elsewhere an id made once per
/// process, so monotonic readings are still only compared within what is known to be one boot.
fn boot_id() -> Uuid {
    static BOOT: OnceLock<Uuid> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .unwrap_or_else(Uuid::new_v4)
    })
}

fn monotonic_ms() -> u64 {
    // BOOTTIME keeps counting while the phone sleeps, which MONOTONIC does not on Linux.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

impl Clock for SystemClock {
    fn now(&self) -> ClockReading {
        ClockReading {
            wall_ms: chrono::Utc::now().timestamp_millis(),
            boot_id: boot_id(),
            mono_ms: monotonic_ms(),
        }
    }
}

/// A wall clock set by hand, for tests and rehearsals: it reads what it was last set to, and
/// its monotonic reading follows it within one made-up boot.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(wall_ms: i64) -> Self {
        ManualClock(wall_ms.into())
    }

    pub fn set(&self, wall_ms: i64) {
        self.0.store(wall_ms, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn wall_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> ClockReading {
        let wall_ms = self.wall_ms();
        ClockReading {
            wall_ms,
            boot_id: Uuid::nil(),
            mono_ms: u64::try_from(wall_ms).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_monotonic_within_a_boot() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert_eq!(a.boot_id, b.boot_id);
        assert!(b.mono_ms >= a.mono_ms);
        assert!(a.wall_ms > 1_600_000_000_000);
    }
}
