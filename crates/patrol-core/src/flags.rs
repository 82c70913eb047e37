//! Flags: what about an event deserves a second look. The server stores them with each event
//! when it receives it ([`Delivery::flags`]); they never refuse an event.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::{clock_offset_ms, corrected_time_ms, is_skewed};
use crate::event::EventRecord;

/// What about an event deserves a second look, stored with the event by the server (never a
/// reason to refuse it). Serialized as an object naming the flag
/// (`{"flag": "clock_skew", "offset_ms": -10800000}`), so that flags of other kinds, with their
/// own fields, sit in the same list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum EventFlag {
    /// The device's clock was off by more than the threshold at the sync that delivered the
    /// event: `offset_ms` is server time minus device time then (positive: the clock was slow).
    ClockSkew { offset_ms: i64 },
}

impl EventFlag {
    /// Every flag's name, as the feed's `flag` filter takes it. A new variant goes here too.
    pub const NAMES: &'static [&'static str] = &["clock_skew"];

    /// The flag's name, as serialized in its `flag` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventFlag::ClockSkew { .. } => "clock_skew",
        }
    }
}

/// In words, for a person reading an event's flags.
impl fmt::Display for EventFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventFlag::ClockSkew { offset_ms } => {
                let way = if *offset_ms >= 0 { "slow" } else { "fast" };
                write!(f, "clock {} {way}", Span(offset_ms.unsigned_abs()))
            }
        }
    }
}

/// A length of time in words, to the second: `3 h 0 min`, `2 min 1 s`, `45 s`.
struct Span(u64);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h} h {m} min")
        } else if m > 0 {
            write!(f, "{m} min {s} s")
        } else {
            write!(f, "{s} s")
        }
    }
}

/// The sync that delivered events, as the rules that stamp each of them at ingest see it: when
/// the server received it, the device's clock offset it measured, and the site's threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub received_ms: i64,
    pub offset_ms: i64,
    pub clock_skew_threshold_ms: i64,
}

impl Delivery {
    /// A sync received at `received_ms` whose request carried the device clock
    /// `device_sent_ms`.
    pub fn new(received_ms: i64, device_sent_ms: i64, clock_skew_threshold_ms: i64) -> Self {
        Delivery {
            received_ms,
            offset_ms: clock_offset_ms(received_ms, device_sent_ms),
            clock_skew_threshold_ms,
        }
    }

    /// The event's corrected time ([`corrected_time_ms`]).
    pub fn corrected_ms(&self, record: &EventRecord) -> i64 {
        corrected_time_ms(record.time.wall_ms, self.offset_ms, self.received_ms)
    }

    /// The flags of every event of this delivery, in a stable order: they depend on the
    /// delivery alone, so a server computes them once per sync. Flags that would need more than
    /// the delivery (the site configuration, the guard's other scans) would be added per event,
    /// with the event's record.
    pub fn flags(&self) -> Vec<EventFlag> {
        let mut flags = Vec::new();
        if is_skewed(self.offset_ms, self.clock_skew_threshold_ms) {
            flags.push(EventFlag::ClockSkew {
                offset_ms: self.offset_ms,
            });
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DeviceTime, EventBody};
    use crate::hlc::Hlc;

    const HOUR: i64 = 3_600_000;
    /// When the server received the sync in these tests.
    const RECEIVED: i64 = 1_740_866_400_000;

    fn note_at(wall_ms: i64) -> EventRecord {
        EventRecord {
            seq: 1,
            time: DeviceTime {
                wall_ms,
                boot_id: uuid::Uuid::nil(),
                mono_ms: 0,
                hlc: Hlc::default(),
            },
            config_version: 0,
            body: EventBody::Note { text: "x".into() },
        }
    }

    /// A phone 3 hours slow sends its request at what it thinks is 3 hours before the server's
    /// time: an event it stamped an hour before that happened an hour before the receipt.
    #[test]
    fn a_slow_device_is_moved_forward() {
        let delivery = Delivery::new(RECEIVED, RECEIVED - 3 * HOUR, 120_000);
        assert_eq!(delivery.offset_ms, 3 * HOUR);
        let event = note_at(RECEIVED - 4 * HOUR);
        assert_eq!(delivery.corrected_ms(&event), RECEIVED - HOUR);
    }

    /// A phone 2 hours fast: moved back by 2 hours.
    #[test]
    fn a_fast_device_is_moved_back() {
        let delivery = Delivery::new(RECEIVED, RECEIVED + 2 * HOUR, 120_000);
        assert_eq!(delivery.offset_ms, -2 * HOUR);
        let event = note_at(RECEIVED + HOUR);
        assert_eq!(delivery.corrected_ms(&event), RECEIVED - HOUR);
    }

    /// An event stamped after the request was sent (the clock was set back between them) would
    /// be corrected past the receipt: it is held at the receipt.
    #[test]
    fn nothing_is_corrected_into_the_future() {
        let delivery = Delivery::new(RECEIVED, RECEIVED - 5_000, 120_000);
        assert_eq!(delivery.corrected_ms(&note_at(RECEIVED + HOUR)), RECEIVED);
        assert_eq!(delivery.corrected_ms(&note_at(RECEIVED - 4_000)), RECEIVED);
        assert_eq!(
            delivery.corrected_ms(&note_at(RECEIVED - 6_000)),
            RECEIVED - 1_000
        );
    }

    /// Beyond the threshold either way is flagged, with the offset; at or within it is not.
    #[test]
    fn an_offset_beyond_the_threshold_is_flagged() {
        let threshold = crate::clock::DEFAULT_CLOCK_SKEW_THRESHOLD_MS;
        let flags = |sent: i64| Delivery::new(RECEIVED, sent, threshold).flags();
        assert_eq!(
            flags(RECEIVED - 121_000),
            vec![EventFlag::ClockSkew { offset_ms: 121_000 }]
        );
        assert_eq!(
            flags(RECEIVED + 121_000),
            vec![EventFlag::ClockSkew {
                offset_ms: -121_000
            }]
        );
        for sent in [
            RECEIVED - 120_000,
            RECEIVED - 60_000,
            RECEIVED,
            RECEIVED + 120_000,
        ] {
            assert_eq!(flags(sent), vec![], "sent at {sent}");
        }
    }

    #[test]
    fn flags_serialize_by_name_and_read_as_words() -> Result<(), serde_json::Error> {
        let slow = EventFlag::ClockSkew {
            offset_ms: 3 * HOUR,
        };
        let json = serde_json::to_string(&slow)?;
        assert_eq!(json, r#"{"flag":"clock_skew","offset_ms":10800000}"#);
        assert_eq!(serde_json::from_str::<EventFlag>(&json)?, slow);
        assert!(EventFlag::NAMES.contains(&slow.name()));
        assert_eq!(slow.to_string(), "clock 3 h 0 min slow");
        let fast = EventFlag::ClockSkew {
            offset_ms: -121_000,
        };
        assert_eq!(fast.to_string(), "clock 2 min 1 s fast");
        Ok(())
    }
}
