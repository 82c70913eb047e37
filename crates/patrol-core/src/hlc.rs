//! Hybrid logical clock (Kulkarni et al.): a timestamp that follows wall-clock time but never
//! goes backwards on one device and always moves past any timestamp the device has seen, so
//! events can be ordered causally even when a phone's clock is wrong.

use serde::{Deserialize, Serialize};

/// A hybrid logical clock reading: milliseconds since the Unix epoch plus a counter that breaks
/// ties within one millisecond.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    pub wall_ms: u64,
    pub counter: u32,
}

impl Hlc {
    /// The timestamp for a local event at physical time `now_ms`; `self` is the last one issued.
    pub fn tick(self, now_ms: u64) -> Hlc {
        if now_ms > self.wall_ms {
            Hlc {
                wall_ms: now_ms,
                counter: 0,
            }
        } else {
            Hlc {
                wall_ms: self.wall_ms,
                counter: self.counter.saturating_add(1),
            }
        }
    }

    /// Moves past a timestamp `remote` received from elsewhere (e.g. the server's clock at sync).
    pub fn observe(self, remote: Hlc, now_ms: u64) -> Hlc {
        let wall = now_ms.max(self.wall_ms).max(remote.wall_ms);
        let counter = if wall == self.wall_ms && wall == remote.wall_ms {
            self.counter.max(remote.counter).saturating_add(1)
        } else if wall == self.wall_ms {
            self.counter.saturating_add(1)
        } else if wall == remote.wall_ms {
            remote.counter.saturating_add(1)
        } else {
            0
        };
        Hlc {
            wall_ms: wall,
            counter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_when_the_wall_clock_does() {
        let a = Hlc::default().tick(1_000);
        let b = a.tick(500);
        let c = b.tick(500);
        assert!(a < b && b < c);
        assert_eq!(c.wall_ms, 1_000);
    }

    #[test]
    fn observing_a_later_clock_moves_past_it() {
        let local = Hlc {
            wall_ms: 100,
            counter: 3,
        };
        let remote = Hlc {
            wall_ms: 5_000,
            counter: 7,
        };
        let next = local.observe(remote, 200);
        assert!(next > remote && next > local);
        assert!(next.tick(200) > next);
    }
}
