//! Flags: what about an event deserves a second look. One function gives every flag of an event
//! ([`Flagger::flags`]), for the server, which stores them with each event when it receives it,
//! and for the phone, which shows them beside its own events. A flag never refuses an event.
//!
//! The function is pure: it takes the site's configuration (and its rules, the thresholds), the
//! event with its corrected time, and the neighbouring scans the caller knows of ([`Context`]):
//! the guard's scans around it, and other devices' scans of its checkpoint near its time. The
//! server reads those from its record; the phone has its own scans only, so it never sees a
//! cloned tag. A scan is judged against the scans before it (by corrected time): the later of
//! two scans is the padding, the one reached too fast, the one ahead of its turn. A cloned tag
//! is the one flag both scans get.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::{clock_offset_ms, corrected_time_ms, is_skewed};
use crate::event::{Event, EventBody, EventRecord, Location, Scan, ScanMethod};
use crate::ids::{CheckpointId, DeviceId, EventId, GuardId};
use crate::siteconfig::{GPS_SLACK_M, MethodKind, SiteConfig, Tour, UNKNOWN_CHECKPOINT, Window};

/// What about an event deserves a second look (never a reason to refuse it). Serialized as an
/// object naming the flag (`{"flag": "clock_skew", "offset_ms": -10800000}`), with the flag's
/// own fields beside it, so that flags of every kind sit in one list. Times between two scans
/// are their corrected times'.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum EventFlag {
    /// The scan names a checkpoint the site configuration does not have.
    UnknownCheckpoint,
    /// No checkpoint has the scanned NFC tag or QR payload.
    UnknownTag,
    /// The scanned tag belongs to another checkpoint (`checkpoint`).
    TagOfAnotherCheckpoint { checkpoint: CheckpointId },
    /// Entered by hand instead of scanned.
    Manual,
    /// The scan's GPS fix is `distance_m` from the checkpoint: further than its radius, the
    /// fix's own accuracy (`accuracy_m`, when the phone gave one) and the indoor slack allow.
    FarFromCheckpoint {
        distance_m: u32,
        accuracy_m: Option<u32>,
    },
    /// Proven a way the checkpoint does not accept (an NFC scan of a QR-only checkpoint).
    MethodNotAccepted { method: MethodKind },
    /// The same guard scanned the same checkpoint `after_ms` before, within the site's
    /// `padding_within_min` (`earlier_event`).
    Padding {
        earlier_event: EventId,
        after_ms: i64,
    },
    /// From the guard's previous scan to this one: `distance_m` in `after_ms`, `speed_kmh`,
    /// faster than the site's `max_speed_kmh`.
    ImpossibleSpeed {
        speed_kmh: u32,
        distance_m: u32,
        after_ms: i64,
    },
    /// The same tag was scanned by another device (`other_device`, its scan `other_event`)
    /// `apart_ms` from this scan, within the site's `cloned_tag_within_secs`. Both scans carry
    /// it.
    ClonedTag {
        other_device: DeviceId,
        other_event: EventId,
        apart_ms: i64,
    },
    /// The checkpoint is on tours, and the scan's corrected time is outside every window (plus
    /// grace) of all of them.
    OutsideWindow,
    /// Tour `tour` must be walked in order, and its checkpoint `missing`, which comes before
    /// this one, has not been scanned by this guard in the window yet.
    OutOfOrder { tour: String, missing: CheckpointId },
    /// The device's clock was off by more than the site's threshold at the sync that delivered
    /// the event (on the phone: at its last sync): `offset_ms` is server time minus device
    /// time then (positive: the clock was slow).
    ClockSkew { offset_ms: i64 },
}

impl EventFlag {
    /// Every flag's name, as the feed's `flag` filter takes it, in the order [`Flagger::flags`]
    /// gives them. A new variant goes here too (a test checks every variant's name is here).
    pub const NAMES: &'static [&'static str] = &[
        "unknown_checkpoint",
        "unknown_tag",
        "tag_of_another_checkpoint",
        "manual",
        "far_from_checkpoint",
        "method_not_accepted",
        "padding",
        "impossible_speed",
        "cloned_tag",
        "outside_window",
        "out_of_order",
        "clock_skew",
    ];

    /// The flag's name, as serialized in its `flag` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventFlag::UnknownCheckpoint => "unknown_checkpoint",
            EventFlag::UnknownTag => "unknown_tag",
            EventFlag::TagOfAnotherCheckpoint { .. } => "tag_of_another_checkpoint",
            EventFlag::Manual => "manual",
            EventFlag::FarFromCheckpoint { .. } => "far_from_checkpoint",
            EventFlag::MethodNotAccepted { .. } => "method_not_accepted",
            EventFlag::Padding { .. } => "padding",
            EventFlag::ImpossibleSpeed { .. } => "impossible_speed",
            EventFlag::ClonedTag { .. } => "cloned_tag",
            EventFlag::OutsideWindow => "outside_window",
            EventFlag::OutOfOrder { .. } => "out_of_order",
            EventFlag::ClockSkew { .. } => "clock_skew",
        }
    }

    /// One flag of each kind, in the order of [`EventFlag::NAMES`], with plausible fields: what
    /// the documentation shows and the tests of its forms hold to.
    pub fn examples() -> Vec<EventFlag> {
        let checkpoint = |id: &str| CheckpointId::new(id).unwrap_or_else(|_| unreachable!());
        let device = DeviceId(uuid::Uuid::from_u128(
            0x0195_a1b2_0000_7000_8000_0000_0000_000d,
        ));
        let event = EventId(uuid::Uuid::from_u128(
            0x0195_a1b2_0000_7000_8000_0000_0000_000e,
        ));
        vec![
            EventFlag::UnknownCheckpoint,
            EventFlag::UnknownTag,
            EventFlag::TagOfAnotherCheckpoint {
                checkpoint: checkpoint("cp-12"),
            },
            EventFlag::Manual,
            EventFlag::FarFromCheckpoint {
                distance_m: 120,
                accuracy_m: Some(20),
            },
            EventFlag::MethodNotAccepted {
                method: MethodKind::Nfc,
            },
            EventFlag::Padding {
                earlier_event: event,
                after_ms: 250_000,
            },
            EventFlag::ImpossibleSpeed {
                speed_kmh: 126,
                distance_m: 1050,
                after_ms: 30_000,
            },
            EventFlag::ClonedTag {
                other_device: device,
                other_event: event,
                apart_ms: 4_000,
            },
            EventFlag::OutsideWindow,
            EventFlag::OutOfOrder {
                tour: "night".into(),
                missing: checkpoint("cp-1"),
            },
            EventFlag::ClockSkew {
                offset_ms: 3 * 3_600_000,
            },
        ]
    }

    /// Adds `flag` to `flags` (in the order of [`EventFlag::NAMES`]) unless it is there
    /// already; says whether it was added. How a stored event gains a flag that another event
    /// gives it (a cloned tag).
    pub fn add_to(flags: &mut Vec<EventFlag>, flag: EventFlag) -> bool {
        if flags.contains(&flag) {
            return false;
        }
        let rank = |f: &EventFlag| EventFlag::NAMES.iter().position(|n| *n == f.name());
        let at = flags.partition_point(|f| rank(f) <= rank(&flag));
        flags.insert(at, flag);
        true
    }

    /// The flag of a scan whose checkpoint the configuration does not have: a tag nobody has
    /// is recorded at [`UNKNOWN_CHECKPOINT`], and what is wrong with it is the tag.
    pub fn of_unknown_checkpoint(scan: &Scan) -> EventFlag {
        let by_tag = matches!(scan.method, ScanMethod::Nfc { .. } | ScanMethod::Qr { .. });
        if by_tag && scan.checkpoint.as_str() == UNKNOWN_CHECKPOINT {
            EventFlag::UnknownTag
        } else {
            EventFlag::UnknownCheckpoint
        }
    }
}

/// In words, for a person reading an event's flags.
impl fmt::Display for EventFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventFlag::UnknownCheckpoint => {
                f.write_str("not a checkpoint of the site configuration")
            }
            EventFlag::UnknownTag => f.write_str("tag not in the site configuration"),
            EventFlag::TagOfAnotherCheckpoint { checkpoint } => {
                write!(f, "tag of checkpoint {checkpoint}")
            }
            EventFlag::Manual => f.write_str("entered by hand"),
            EventFlag::FarFromCheckpoint {
                distance_m,
                accuracy_m,
            } => match accuracy_m {
                Some(a) => write!(f, "{distance_m} m from the checkpoint (GPS ±{a} m)"),
                None => write!(f, "{distance_m} m from the checkpoint"),
            },
            EventFlag::MethodNotAccepted { method } => {
                write!(f, "{method} is not how this checkpoint is proven")
            }
            EventFlag::Padding {
                earlier_event,
                after_ms,
            } => write!(
                f,
                "scanned again {} after {earlier_event}",
                Span(after_ms.unsigned_abs())
            ),
            EventFlag::ImpossibleSpeed {
                speed_kmh,
                distance_m,
                after_ms,
            } => write!(
                f,
                "{speed_kmh} km/h: {distance_m} m in {} from the last scan",
                Span(after_ms.unsigned_abs())
            ),
            EventFlag::ClonedTag {
                other_device,
                other_event,
                apart_ms,
            } => write!(
                f,
                "tag also scanned {} apart by device {other_device} ({other_event})",
                Span(apart_ms.unsigned_abs())
            ),
            EventFlag::OutsideWindow => f.write_str("outside every window of its tours"),
            EventFlag::OutOfOrder { tour, missing } => {
                write!(
                    f,
                    "ahead of its turn on tour {tour}: {missing} not scanned yet"
                )
            }
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
/// the server received it, and the device's clock offset it measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub received_ms: i64,
    pub offset_ms: i64,
}

impl Delivery {
    /// A sync received at `received_ms` whose request carried the device clock
    /// `device_sent_ms`.
    pub fn new(received_ms: i64, device_sent_ms: i64) -> Self {
        Delivery {
            received_ms,
            offset_ms: clock_offset_ms(received_ms, device_sent_ms),
        }
    }

    /// The event's corrected time ([`corrected_time_ms`]).
    pub fn corrected_ms(&self, record: &EventRecord) -> i64 {
        corrected_time_ms(record.time.wall_ms, self.offset_ms, self.received_ms)
    }
}

/// A scan as the flags of the scans around it see it.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenScan {
    pub event: EventId,
    pub device: DeviceId,
    pub checkpoint: CheckpointId,
    /// The NFC tag id or QR payload scanned; `None` for a GPS or manual scan.
    pub tag: Option<String>,
    /// The scan's GPS fix, if it had one.
    pub fix: Option<Location>,
    pub corrected_ms: i64,
}

impl SeenScan {
    /// The scan of event `id` by `device`, at corrected time `corrected_ms`.
    pub fn new(id: EventId, device: DeviceId, scan: &Scan, corrected_ms: i64) -> SeenScan {
        SeenScan {
            event: id,
            device,
            checkpoint: scan.checkpoint.clone(),
            tag: tag_of(scan).map(str::to_owned),
            fix: scan.location,
            corrected_ms,
        }
    }

    /// The scan of `event`, if it is one.
    pub fn of(event: &Event, corrected_ms: i64) -> Option<SeenScan> {
        match &event.record.body {
            EventBody::CheckpointScanned(scan) => {
                Some(SeenScan::new(event.id, event.device, scan, corrected_ms))
            }
            _ => None,
        }
    }

    /// The order of scans: by corrected time, then (scans in the same millisecond) by event id.
    fn key(&self) -> (i64, EventId) {
        (self.corrected_ms, self.event)
    }
}

/// The NFC tag id or QR payload a scan read.
pub fn tag_of(scan: &Scan) -> Option<&str> {
    match &scan.method {
        ScanMethod::Nfc { tag } => Some(tag),
        ScanMethod::Qr { payload } => Some(payload),
        ScanMethod::Gps | ScanMethod::Manual { .. } => None,
    }
}

/// The scans around an event that the caller knows of. More than needed does no harm; what is
/// missing is not flagged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The guard's scans, in order of corrected time (then event id): at least those from
    /// [`Flagger::guard_scans_from`] up to the event, and the last one before that. The event
    /// itself may be among them.
    pub guard_scans: &'a [SeenScan],
    /// Scans by other devices of the event's checkpoint within
    /// [`Flagger::cloned_tag_within_ms`] of it, in any order (scans by the event's own device
    /// are ignored).
    pub other_devices: &'a [SeenScan],
}

/// Gives the flags of events under one site configuration and one clock offset (the sync that
/// delivered them, or the phone's last measured one): the offset's flags are worked out once.
#[derive(Clone, Debug)]
pub struct Flagger<'c> {
    config: &'c SiteConfig,
    /// Every event's flags that depend on the offset alone.
    delivery: Vec<EventFlag>,
}

impl<'c> Flagger<'c> {
    /// Flags under `config` (version 0 is a site without a configuration yet: only what needs
    /// none is flagged) and its rules, for events whose device's clock offset was `offset_ms`.
    pub fn new(config: &'c SiteConfig, offset_ms: i64) -> Self {
        let threshold_ms = i64::from(config.rules.clock_skew_threshold_secs) * 1000;
        let delivery = if is_skewed(offset_ms, threshold_ms) {
            vec![EventFlag::ClockSkew { offset_ms }]
        } else {
            Vec::new()
        };
        Flagger { config, delivery }
    }

    /// The flags every event of the delivery has (an event other than a scan has only these).
    pub fn delivery_flags(&self) -> &[EventFlag] {
        &self.delivery
    }

    /// Every flag of `event`, whose corrected time is `corrected_ms`, in the order of
    /// [`EventFlag::NAMES`].
    pub fn flags(&self, event: &Event, corrected_ms: i64, context: &Context<'_>) -> Vec<EventFlag> {
        let mut flags = match &event.record.body {
            EventBody::CheckpointScanned(scan) => {
                let seen = SeenScan::new(event.id, event.device, scan, corrected_ms);
                self.scan_flags(&event.guard, scan, &seen, context)
            }
            _ => Vec::new(),
        };
        flags.extend(self.delivery.iter().cloned());
        flags
    }

    /// How far back, in corrected time, `guard`'s scans before `scan` at `corrected_ms` matter
    /// to its flags (the padding window, and the window of an ordered tour the guard walks);
    /// the last scan before that matters too, for the speed.
    pub fn guard_scans_from(&self, guard: &GuardId, scan: &Scan, corrected_ms: i64) -> i64 {
        let padding = corrected_ms.saturating_sub(self.padding_within_ms());
        self.ordered_windows(&scan.checkpoint, guard, corrected_ms)
            .map(|(_, w)| w.start_ms)
            .fold(padding, i64::min)
    }

    /// How far apart two devices' scans of one tag are a cloned tag.
    pub fn cloned_tag_within_ms(&self) -> i64 {
        i64::from(self.config.rules.cloned_tag_within_secs) * 1000
    }

    fn padding_within_ms(&self) -> i64 {
        i64::from(self.config.rules.padding_within_min) * 60_000
    }

    /// Whether the site has a configuration to judge scans by.
    fn configured(&self) -> bool {
        self.config.version > 0
    }

    fn scan_flags(
        &self,
        guard: &GuardId,
        scan: &Scan,
        seen: &SeenScan,
        context: &Context<'_>,
    ) -> Vec<EventFlag> {
        let mut flags = self.configuration_flags(scan);
        // The guard's scans before this one, latest first.
        let end = context
            .guard_scans
            .partition_point(|s| s.key() < seen.key());
        let before = context.guard_scans[..end].iter().rev();
        if let Some(flag) = self.padding(seen, before.clone()) {
            flags.push(flag);
        }
        if let Some(flag) = before.clone().next().and_then(|p| self.speed(p, seen)) {
            flags.push(flag);
        }
        flags.extend(self.cloned_tags(seen, context.other_devices));
        if self.outside_every_window(seen) {
            flags.push(EventFlag::OutsideWindow);
        }
        if let Some(flag) = self.out_of_order(guard, seen, before) {
            flags.push(flag);
        }
        flags
    }

    /// What looks wrong about the scan under the configuration alone.
    fn configuration_flags(&self, scan: &Scan) -> Vec<EventFlag> {
        let mut flags = Vec::new();
        if !self.configured() {
            // Recorded at the reserved checkpoint: the phone knew no checkpoint with the tag.
            if scan.checkpoint.as_str() == UNKNOWN_CHECKPOINT {
                flags.push(EventFlag::of_unknown_checkpoint(scan));
            }
            if matches!(scan.method, ScanMethod::Manual { .. }) {
                flags.push(EventFlag::Manual);
            }
            return flags;
        }
        let config = self.config;
        let Some(cp) = config.checkpoint(&scan.checkpoint) else {
            flags.push(EventFlag::of_unknown_checkpoint(scan));
            if matches!(scan.method, ScanMethod::Manual { .. }) {
                flags.push(EventFlag::Manual);
            }
            return flags;
        };
        if let Some(tag) = tag_of(scan) {
            match config.checkpoint_for_tag(tag) {
                None => flags.push(EventFlag::UnknownTag),
                Some(owner) if owner.id != cp.id => flags.push(EventFlag::TagOfAnotherCheckpoint {
                    checkpoint: owner.id.clone(),
                }),
                Some(_) => {}
            }
        }
        if matches!(scan.method, ScanMethod::Manual { .. }) {
            flags.push(EventFlag::Manual);
        }
        if let (Some(fix), Some(at)) = (&scan.location, &cp.location) {
            let distance = crate::siteconfig::distance_m(fix, at);
            let allowed = f64::from(cp.radius_m.unwrap_or(0.0))
                + f64::from(fix.accuracy_m.unwrap_or(0.0))
                + GPS_SLACK_M;
            if distance > allowed {
                flags.push(EventFlag::FarFromCheckpoint {
                    distance_m: metres(distance),
                    accuracy_m: fix.accuracy_m.map(|a| metres(f64::from(a))),
                });
            }
        }
        let method = MethodKind::of(&scan.method);
        if !cp.methods.is_empty() && !cp.methods.contains(&method) {
            flags.push(EventFlag::MethodNotAccepted { method });
        }
        flags
    }

    /// The latest earlier scan of the same checkpoint by the guard within the padding window.
    fn padding<'s>(
        &self,
        seen: &SeenScan,
        before: impl Iterator<Item = &'s SeenScan>,
    ) -> Option<EventFlag> {
        let from = seen.corrected_ms.saturating_sub(self.padding_within_ms());
        before
            .take_while(|s| s.corrected_ms >= from)
            .find(|s| s.checkpoint == seen.checkpoint && s.event != seen.event)
            .map(|earlier| EventFlag::Padding {
                earlier_event: earlier.event,
                after_ms: seen.corrected_ms - earlier.corrected_ms,
            })
    }

    /// Where a scan was: its GPS fix, else its checkpoint's configured location.
    fn position(&self, s: &SeenScan) -> Option<Location> {
        s.fix.or_else(|| {
            self.config
                .checkpoint(&s.checkpoint)
                .and_then(|cp| cp.location)
        })
    }

    /// From the guard's previous scan to this one, faster than the site allows. Two scans of
    /// one checkpoint are padding's business, not speed's (their fixes differ by GPS noise
    /// alone). Scans less than a second apart count as a second apart.
    fn speed(&self, previous: &SeenScan, seen: &SeenScan) -> Option<EventFlag> {
        if previous.checkpoint == seen.checkpoint {
            return None;
        }
        let (from, to) = (self.position(previous)?, self.position(seen)?);
        let distance = crate::siteconfig::distance_m(&from, &to);
        let after_ms = seen.corrected_ms - previous.corrected_ms;
        let secs = (after_ms.max(1000) as f64) / 1000.0;
        let kmh = distance / secs * 3.6;
        (kmh > f64::from(self.config.rules.max_speed_kmh)).then(|| EventFlag::ImpossibleSpeed {
            speed_kmh: metres(kmh),
            distance_m: metres(distance),
            after_ms,
        })
    }

    /// For each other device that scanned the same tag within the window, its nearest such
    /// scan (the earlier of two as near).
    fn cloned_tags(&self, seen: &SeenScan, others: &[SeenScan]) -> Vec<EventFlag> {
        let Some(tag) = &seen.tag else {
            return Vec::new();
        };
        let within = self.cloned_tag_within_ms();
        let mut nearest: Vec<&SeenScan> = Vec::new();
        for other in others {
            let apart = (other.corrected_ms - seen.corrected_ms).abs();
            if other.device == seen.device || other.tag.as_ref() != Some(tag) || apart > within {
                continue;
            }
            let distance = |s: &SeenScan| ((s.corrected_ms - seen.corrected_ms).abs(), s.key());
            match nearest.iter_mut().find(|n| n.device == other.device) {
                Some(n) if distance(other) < distance(n) => *n = other,
                Some(_) => {}
                None => nearest.push(other),
            }
        }
        nearest.sort_by_key(|n| (n.device, n.key()));
        nearest
            .into_iter()
            .map(|n| EventFlag::ClonedTag {
                other_device: n.device,
                other_event: n.event,
                apart_ms: (n.corrected_ms - seen.corrected_ms).abs(),
            })
            .collect()
    }

    /// The tours holding a checkpoint (none without a configuration).
    fn tours_of<'t>(&'t self, checkpoint: &'t CheckpointId) -> impl Iterator<Item = &'t Tour> {
        let tours = if self.configured() {
            self.config.tours.as_slice()
        } else {
            &[]
        };
        tours
            .iter()
            .filter(move |t| t.checkpoints.contains(checkpoint))
    }

    /// The windows of `tour` a scan at `at_ms` falls in, grace included. A window whose
    /// schedule cannot be expanded there (a time out of the calendar's range) holds nothing.
    fn windows_at(&self, tour: &Tour, at_ms: i64) -> Vec<Window> {
        let grace_ms = i64::from(tour.grace_min) * 60_000;
        tour.windows_between(
            self.config.time_zone,
            at_ms.saturating_sub(grace_ms),
            at_ms.saturating_add(1),
        )
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.start_ms <= at_ms && at_ms < w.end_ms.saturating_add(grace_ms))
        .collect()
    }

    /// On tours, and outside every window (plus grace) of every one of them.
    fn outside_every_window(&self, seen: &SeenScan) -> bool {
        let mut on_a_tour = false;
        for tour in self.tours_of(&seen.checkpoint) {
            on_a_tour = true;
            if !self.windows_at(tour, seen.corrected_ms).is_empty() {
                return false;
            }
        }
        on_a_tour
    }

    /// The ordered tours of a checkpoint that `guard` walks (tours assigned to the guard, or to
    /// nobody in particular), with the window a scan at `at_ms` belongs to: the one open then,
    /// else one whose grace it is in.
    fn ordered_windows<'t>(
        &'t self,
        checkpoint: &'t CheckpointId,
        guard: &'t GuardId,
        at_ms: i64,
    ) -> impl Iterator<Item = (&'t Tour, Window)> + 't {
        self.tours_of(checkpoint)
            .filter(move |t| {
                t.ordered && (t.assigned_guards.is_empty() || t.assigned_guards.contains(guard))
            })
            .filter_map(move |tour| {
                let windows = self.windows_at(tour, at_ms);
                let open = windows
                    .iter()
                    .find(|w| at_ms < w.end_ms)
                    .or(windows.first())
                    .copied();
                open.map(|w| (tour, w))
            })
    }

    /// Ahead of its turn on an ordered tour the guard walks: a checkpoint before it on the
    /// tour has no scan by the guard since the window opened.
    fn out_of_order<'s>(
        &self,
        guard: &GuardId,
        seen: &SeenScan,
        before: impl Iterator<Item = &'s SeenScan> + Clone,
    ) -> Option<EventFlag> {
        for (tour, window) in self.ordered_windows(&seen.checkpoint, guard, seen.corrected_ms) {
            let Some(turn) = tour.checkpoints.iter().position(|c| c == &seen.checkpoint) else {
                continue;
            };
            let in_window: Vec<&SeenScan> = before
                .clone()
                .take_while(|s| s.corrected_ms >= window.start_ms)
                .collect();
            let missing = tour.checkpoints[..turn]
                .iter()
                .find(|cp| !in_window.iter().any(|s| &s.checkpoint == *cp));
            if let Some(missing) = missing {
                return Some(EventFlag::OutOfOrder {
                    tour: tour.id.clone(),
                    missing: missing.clone(),
                });
            }
        }
        None
    }
}

/// A non-negative measure rounded to a whole number (metres, km/h), saturating.
fn metres(x: f64) -> u32 {
    x.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeviceTime;
    use crate::hlc::Hlc;
    use crate::ids::{ShiftId, SiteId};
    use crate::siteconfig::{Checkpoint, SiteRules, SiteZone};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    /// When the server received the sync in these tests; also the night's first window.
    const RECEIVED: i64 = 1_740_866_400_000;

    fn cp(id: &str) -> CheckpointId {
        CheckpointId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn guard(id: &str) -> GuardId {
        GuardId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    /// 51.5 N, and `metres` north of it.
    fn north(metres: f64, accuracy_m: Option<f32>) -> Location {
        Location {
            lat: 51.5 + metres / 111_195.0,
            lon: -0.12,
            accuracy_m,
        }
    }

    /// cp-1 (NFC tag T1, at 51.5 N, radius 15 m), cp-2 (tag T2, 1 km north), cp-3 (QR Q3
    /// only, nowhere); tour `night` walks them in order from RECEIVED for an hour, grace 10 min;
    /// cp-9 is on no tour.
    fn config() -> SiteConfig {
        let checkpoint = |id: &str, tag: &str, location: Option<Location>| Checkpoint {
            id: cp(id),
            name: id.to_uppercase(),
            tags: vec![tag.into()],
            location,
            radius_m: location.map(|_| 15.0),
            methods: vec![],
        };
        let mut qr_only = checkpoint("cp-3", "Q3", None);
        qr_only.methods = vec![MethodKind::Qr];
        SiteConfig {
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            version: 3,
            time_zone: SiteZone::UTC,
            checkpoints: vec![
                checkpoint("cp-1", "T1", Some(north(0.0, None))),
                checkpoint("cp-2", "T2", Some(north(1000.0, None))),
                qr_only,
                checkpoint("cp-9", "T9", None),
            ],
            tours: vec![Tour {
                id: "night".into(),
                name: "Night round".into(),
                checkpoints: vec![cp("cp-1"), cp("cp-2"), cp("cp-3")],
                windows: vec![Window {
                    start_ms: RECEIVED,
                    end_ms: RECEIVED + HOUR,
                }],
                schedule: vec![],
                grace_min: 10,
                ordered: true,
                assigned_guards: vec![],
            }],
            post_orders: vec![],
            rules: SiteRules::default(),
        }
    }

    /// A scan by `device` of guard `anna`, at device (and corrected) time `at_ms`.
    fn scan_event(device: DeviceId, checkpoint: &str, method: ScanMethod, at_ms: i64) -> Event {
        Event {
            id: EventId::generate(),
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            device,
            shift: ShiftId::generate(),
            guard: guard("anna"),
            record: EventRecord {
                seq: 1,
                time: DeviceTime {
                    wall_ms: at_ms,
                    boot_id: uuid::Uuid::nil(),
                    mono_ms: 0,
                    hlc: Hlc::default(),
                },
                config_version: 3,
                body: EventBody::CheckpointScanned(Scan {
                    checkpoint: cp(checkpoint),
                    method,
                    location: None,
                    note: None,
                }),
            },
        }
    }

    fn nfc(tag: &str) -> ScanMethod {
        ScanMethod::Nfc { tag: tag.into() }
    }

    fn with_fix(mut e: Event, fix: Location) -> Event {
        if let EventBody::CheckpointScanned(scan) = &mut e.record.body {
            scan.location = Some(fix);
        }
        e
    }

    fn seen(e: &Event) -> SeenScan {
        SeenScan::of(e, e.record.time.wall_ms).unwrap_or_else(|| panic!("not a scan"))
    }

    /// The flags of `event` under `config`, with no clock offset and `guard` as the guard's
    /// scans (sorted here) and `others` as other devices'.
    fn flags_with(
        config: &SiteConfig,
        event: &Event,
        guard: &[&Event],
        others: &[&Event],
    ) -> Vec<EventFlag> {
        let mut guard: Vec<SeenScan> = guard.iter().map(|e| seen(e)).collect();
        guard.sort_by_key(SeenScan::key);
        let others: Vec<SeenScan> = others.iter().map(|e| seen(e)).collect();
        let context = Context {
            guard_scans: &guard,
            other_devices: &others,
        };
        Flagger::new(config, 0).flags(event, event.record.time.wall_ms, &context)
    }

    fn alone(config: &SiteConfig, event: &Event) -> Vec<EventFlag> {
        flags_with(config, event, &[], &[])
    }

    /// In the window, in order, by its tag: nothing to say.
    #[test]
    fn a_right_scan_has_no_flags() {
        let d = DeviceId::generate();
        assert_eq!(
            alone(&config(), &scan_event(d, "cp-1", nfc("T1"), RECEIVED)),
            []
        );
    }

    #[test]
    fn unknown_and_foreign_tags_and_checkpoints_are_flagged() {
        let c = config();
        let d = DeviceId::generate();
        let at = RECEIVED + 5 * MIN;
        assert_eq!(
            alone(&c, &scan_event(d, "cp-1", nfc("T?"), at)),
            [EventFlag::UnknownTag]
        );
        assert_eq!(
            alone(&c, &scan_event(d, "cp-9", nfc("T1"), at)),
            [EventFlag::TagOfAnotherCheckpoint {
                checkpoint: cp("cp-1")
            }]
        );
        assert_eq!(
            alone(&c, &scan_event(d, "cp-7", ScanMethod::Gps, at)),
            [EventFlag::UnknownCheckpoint]
        );
        // A tag nobody has, recorded at the reserved checkpoint: the tag is what is wrong.
        let stray = scan_event(
            d,
            UNKNOWN_CHECKPOINT,
            ScanMethod::Qr {
                payload: "X".into(),
            },
            at,
        );
        assert_eq!(alone(&c, &stray), [EventFlag::UnknownTag]);
        let by_hand = ScanMethod::Manual {
            reason: "tag broken".into(),
        };
        assert_eq!(
            alone(&c, &scan_event(d, "cp-9", by_hand.clone(), at)),
            [EventFlag::Manual]
        );
        // A QR-only checkpoint scanned by NFC (on a tour walked in any order).
        let mut unordered = c.clone();
        unordered.tours[0].ordered = false;
        assert_eq!(
            alone(
                &unordered,
                &scan_event(d, "cp-3", nfc("Q3"), RECEIVED + 30 * MIN)
            ),
            [EventFlag::MethodNotAccepted {
                method: MethodKind::Nfc
            }]
        );
        // Before a site has a configuration, only what needs none.
        let none = SiteConfig::empty(c.site.clone());
        assert_eq!(alone(&none, &scan_event(d, "cp-7", nfc("T?"), at)), []);
        assert_eq!(alone(&none, &stray), [EventFlag::UnknownTag]);
        assert_eq!(
            alone(&none, &scan_event(d, "cp-7", by_hand, at)),
            [EventFlag::Manual]
        );
    }

    /// cp-1 has a 15 m radius; with the 50 m slack and the fix's accuracy, 65 m (plus the
    /// accuracy) is allowed.
    #[test]
    fn a_fix_far_from_its_checkpoint_is_flagged_with_distance_and_accuracy() {
        let c = config();
        let d = DeviceId::generate();
        let at = |m: f64, accuracy: Option<f32>| {
            alone(
                &c,
                &with_fix(
                    scan_event(d, "cp-1", nfc("T1"), RECEIVED),
                    north(m, accuracy),
                ),
            )
        };
        assert_eq!(at(64.9, None), []);
        assert_eq!(
            at(65.2, None),
            [EventFlag::FarFromCheckpoint {
                distance_m: 65,
                accuracy_m: None
            }]
        );
        assert_eq!(at(84.9, Some(20.0)), []);
        assert_eq!(
            at(300.0, Some(20.4)),
            [EventFlag::FarFromCheckpoint {
                distance_m: 300,
                accuracy_m: Some(20)
            }]
        );
    }

    /// The same checkpoint by the same guard within 10 minutes (the default), at 10 minutes
    /// exactly too; 10 minutes and a millisecond is not padding. Another checkpoint between
    /// them does not hide it; the flag names the latest earlier scan.
    #[test]
    fn a_repeat_within_the_padding_window_is_flagged() {
        let c = config();
        let d = DeviceId::generate();
        let first = scan_event(d, "cp-9", nfc("T9"), RECEIVED);
        let second = scan_event(d, "cp-9", nfc("T9"), RECEIVED + 2 * MIN);
        let between = scan_event(d, "cp-1", nfc("T1"), RECEIVED + 3 * MIN);
        let padding = |after_ms: i64, earlier: &Event| EventFlag::Padding {
            earlier_event: earlier.id,
            after_ms,
        };
        for (after, flagged) in [(9 * MIN, true), (10 * MIN, true), (10 * MIN + 1, false)] {
            let again = scan_event(d, "cp-9", nfc("T9"), RECEIVED + after);
            let flags = flags_with(&c, &again, &[&first, &again], &[]);
            let expected = if flagged {
                vec![padding(after, &first)]
            } else {
                vec![]
            };
            assert_eq!(flags, expected, "after {after} ms");
        }
        let again = scan_event(d, "cp-9", nfc("T9"), RECEIVED + 5 * MIN);
        assert_eq!(
            flags_with(&c, &again, &[&first, &second, &between], &[]),
            [padding(3 * MIN, &second)]
        );
        // The earlier scan itself is not padding of the later one.
        assert_eq!(flags_with(&c, &first, &[&first, &second], &[]), []);
    }

    /// cp-1 to cp-2 is 1 km: at 25 km/h (the default) that takes 144 s. In 144 s it is not
    /// flagged; in 143 s it is (25.2 km/h, rounded to 25 in the flag). By their GPS fixes when
    /// the scans have them, else by the checkpoints' locations; a scan with neither has no
    /// speed.
    #[test]
    fn an_impossible_speed_is_flagged_with_and_without_fixes() {
        let c = config();
        let d = DeviceId::generate();
        let from = scan_event(d, "cp-1", nfc("T1"), RECEIVED);
        let to = |secs: i64| scan_event(d, "cp-2", nfc("T2"), RECEIVED + secs * 1000);
        let speed = |e: &Event| flags_with(&c, e, &[&from, e], &[]);
        assert_eq!(speed(&to(144)), []);
        assert_eq!(
            speed(&to(143)),
            [EventFlag::ImpossibleSpeed {
                speed_kmh: 25,
                distance_m: 1000,
                after_ms: 143_000
            }]
        );
        // GPS fixes 200 m apart instead (cp-9 has no location): 200 m in 28.8 s is 25 km/h.
        let fixed_from = with_fix(scan_event(d, "cp-1", nfc("T1"), RECEIVED), north(0.0, None));
        let fixed = |ms: i64| {
            with_fix(
                scan_event(d, "cp-9", nfc("T9"), RECEIVED + ms),
                north(200.0, Some(5.0)),
            )
        };
        assert_eq!(
            flags_with(&c, &fixed(28_800), &[&fixed_from, &fixed(28_800)], &[]),
            []
        );
        assert!(matches!(
            flags_with(&c, &fixed(28_700), &[&fixed_from], &[])[..],
            [EventFlag::ImpossibleSpeed {
                distance_m: 200,
                after_ms: 28_700,
                ..
            }]
        ));
        // cp-9 without a fix has no position: no speed.
        let nowhere = scan_event(d, "cp-9", nfc("T9"), RECEIVED + 1000);
        assert_eq!(flags_with(&c, &nowhere, &[&from], &[]), []);
        // Only the previous scan counts: a slow walk from cp-2 back to cp-1 after a fast one.
        let back = scan_event(d, "cp-1", nfc("T1"), RECEIVED + 143_000 + 20 * MIN);
        assert_eq!(flags_with(&c, &back, &[&from, &to(143)], &[]), []);
    }

    /// One tag scanned by another device within 60 s (the default) either way, at 60 s too:
    /// flagged, naming that device and its scan (its nearest one); beyond 60 s, by the same
    /// device, or of another tag, not.
    #[test]
    fn a_tag_scanned_by_another_device_at_nearly_the_same_time_is_cloned() {
        let c = config();
        let (mine, other, third) = (
            DeviceId::generate(),
            DeviceId::generate(),
            DeviceId::generate(),
        );
        let at = RECEIVED + 20 * MIN;
        let scan = scan_event(mine, "cp-9", nfc("T9"), at);
        let cloned = |e: &Event| EventFlag::ClonedTag {
            other_device: e.device,
            other_event: e.id,
            apart_ms: (e.record.time.wall_ms - at).abs(),
        };
        for (apart, flagged) in [
            (59_999, true),
            (60_000, true),
            (-60_000, true),
            (60_001, false),
        ] {
            let theirs = scan_event(other, "cp-9", nfc("T9"), at + apart);
            let expected = if flagged {
                vec![cloned(&theirs)]
            } else {
                vec![]
            };
            assert_eq!(flags_with(&c, &scan, &[], &[&theirs]), expected, "{apart}");
        }
        let near = scan_event(other, "cp-9", nfc("T9"), at - 5_000);
        let far = scan_event(other, "cp-9", nfc("T9"), at + 30_000);
        let by_third = scan_event(third, "cp-9", nfc("T9"), at + 1_000);
        let own = scan_event(mine, "cp-9", nfc("T9"), at + 1_000);
        let other_tag = scan_event(
            other,
            "cp-9",
            ScanMethod::Qr {
                payload: "T9b".into(),
            },
            at,
        );
        let mut expected = vec![cloned(&near), cloned(&by_third)];
        expected.sort_by_key(|f| match f {
            EventFlag::ClonedTag { other_device, .. } => *other_device,
            _ => DeviceId(uuid::Uuid::nil()),
        });
        assert_eq!(
            flags_with(&c, &scan, &[], &[&far, &own, &near, &other_tag, &by_third]),
            expected
        );
        // A GPS scan has no tag to clone.
        let gps = with_fix(
            scan_event(mine, "cp-9", ScanMethod::Gps, at),
            north(0.0, None),
        );
        assert_eq!(flags_with(&c, &gps, &[], &[&near]), []);
    }

    /// cp-3's tour has one window, from RECEIVED for an hour, grace 10 min: a scan from its
    /// start to 10 min after its end is inside; a millisecond before or at the grace's end is
    /// outside. cp-9 is on no tour: never outside.
    #[test]
    fn a_scan_outside_every_window_of_its_tours_is_flagged() {
        let mut c = config();
        c.tours[0].ordered = false;
        let d = DeviceId::generate();
        let qr = || ScanMethod::Qr {
            payload: "Q3".into(),
        };
        for (at, outside) in [
            (RECEIVED - 1, true),
            (RECEIVED, false),
            (RECEIVED + HOUR - 1, false),
            (RECEIVED + HOUR, false),
            (RECEIVED + HOUR + 10 * MIN - 1, false),
            (RECEIVED + HOUR + 10 * MIN, true),
        ] {
            let expected = if outside {
                vec![EventFlag::OutsideWindow]
            } else {
                vec![]
            };
            assert_eq!(
                alone(&c, &scan_event(d, "cp-3", qr(), at)),
                expected,
                "at {at}"
            );
        }
        assert_eq!(
            alone(&c, &scan_event(d, "cp-9", nfc("T9"), RECEIVED - HOUR)),
            []
        );
        // On a second tour whose window holds the scan: inside.
        let mut other = c.tours[0].clone();
        other.id = "day".into();
        other.windows = vec![Window {
            start_ms: RECEIVED - 2 * HOUR,
            end_ms: RECEIVED,
        }];
        c.tours.push(other);
        assert_eq!(alone(&c, &scan_event(d, "cp-3", qr(), RECEIVED - 1)), []);
    }

    /// `night` is ordered cp-1, cp-2, cp-3. cp-2 scanned first is ahead of its turn, naming
    /// cp-1; after cp-1 (in this window) it is not; a cp-1 scan before the window opened does
    /// not count. Another guard's tour, or an unordered one, is not judged.
    #[test]
    fn a_scan_ahead_of_its_turn_on_an_ordered_tour_is_flagged() {
        let c = config();
        let d = DeviceId::generate();
        let at = RECEIVED + 20 * MIN;
        let second = scan_event(d, "cp-2", nfc("T2"), at);
        let ahead = |missing: &str| EventFlag::OutOfOrder {
            tour: "night".into(),
            missing: cp(missing),
        };
        assert_eq!(alone(&c, &second), [ahead("cp-1")]);
        let first = scan_event(d, "cp-1", nfc("T1"), RECEIVED + 5 * MIN);
        assert_eq!(flags_with(&c, &second, &[&first, &second], &[]), []);
        let too_early = scan_event(d, "cp-1", nfc("T1"), RECEIVED - 1);
        assert_eq!(flags_with(&c, &second, &[&too_early], &[]), [ahead("cp-1")]);
        let third = scan_event(
            d,
            "cp-3",
            ScanMethod::Qr {
                payload: "Q3".into(),
            },
            at + MIN,
        );
        assert_eq!(flags_with(&c, &third, &[&first], &[]), [ahead("cp-2")]);
        let mut theirs = c.clone();
        theirs.tours[0].assigned_guards = vec![guard("bob")];
        assert_eq!(alone(&theirs, &second), []);
        let mut unordered = c.clone();
        unordered.tours[0].ordered = false;
        assert_eq!(alone(&unordered, &second), []);
        // How far back the guard's scans matter: to the window's start here, else the padding.
        let f = Flagger::new(&c, 0);
        let scan_of = |e: &Event| match &e.record.body {
            EventBody::CheckpointScanned(s) => s.clone(),
            _ => panic!("not a scan"),
        };
        assert_eq!(
            f.guard_scans_from(&guard("anna"), &scan_of(&second), at),
            RECEIVED
        );
        assert_eq!(
            f.guard_scans_from(&guard("anna"), &scan_of(&second), RECEIVED + 2 * HOUR),
            RECEIVED + 2 * HOUR - 10 * MIN
        );
    }

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
        let delivery = Delivery::new(RECEIVED, RECEIVED - 3 * HOUR);
        assert_eq!(delivery.offset_ms, 3 * HOUR);
        let event = note_at(RECEIVED - 4 * HOUR);
        assert_eq!(delivery.corrected_ms(&event), RECEIVED - HOUR);
    }

    /// A phone 2 hours fast: moved back by 2 hours.
    #[test]
    fn a_fast_device_is_moved_back() {
        let delivery = Delivery::new(RECEIVED, RECEIVED + 2 * HOUR);
        assert_eq!(delivery.offset_ms, -2 * HOUR);
        let event = note_at(RECEIVED + HOUR);
        assert_eq!(delivery.corrected_ms(&event), RECEIVED - HOUR);
    }

    /// An event stamped after the request was sent (the clock was set back between them) would
    /// be corrected past the receipt: it is held at the receipt.
    #[test]
    fn nothing_is_corrected_into_the_future() {
        let delivery = Delivery::new(RECEIVED, RECEIVED - 5_000);
        assert_eq!(delivery.corrected_ms(&note_at(RECEIVED + HOUR)), RECEIVED);
        assert_eq!(delivery.corrected_ms(&note_at(RECEIVED - 4_000)), RECEIVED);
        assert_eq!(
            delivery.corrected_ms(&note_at(RECEIVED - 6_000)),
            RECEIVED - 1_000
        );
    }

    /// Beyond the site's threshold either way is flagged, with the offset, on every event; at
    /// or within it is not. A site sets its own threshold.
    #[test]
    fn an_offset_beyond_the_threshold_is_flagged() {
        let c = config();
        let note = Event {
            record: note_at(RECEIVED),
            ..scan_event(DeviceId::generate(), "cp-1", nfc("T1"), RECEIVED)
        };
        let flags = |c: &SiteConfig, offset: i64| {
            Flagger::new(c, offset).flags(&note, RECEIVED, &Context::default())
        };
        assert_eq!(
            flags(&c, 121_000),
            [EventFlag::ClockSkew { offset_ms: 121_000 }]
        );
        assert_eq!(
            flags(&c, -121_000),
            [EventFlag::ClockSkew {
                offset_ms: -121_000
            }]
        );
        for offset in [120_000, 60_000, 0, -120_000] {
            assert_eq!(flags(&c, offset), [], "offset {offset}");
        }
        let mut strict = c.clone();
        strict.rules.clock_skew_threshold_secs = 30;
        assert_eq!(
            flags(&strict, 31_000),
            [EventFlag::ClockSkew { offset_ms: 31_000 }]
        );
        // A scan has it after its own.
        let scan = scan_event(note.device, "cp-1", nfc("T?"), RECEIVED);
        assert_eq!(
            Flagger::new(&c, -HOUR).flags(&scan, RECEIVED, &Context::default()),
            [
                EventFlag::UnknownTag,
                EventFlag::ClockSkew { offset_ms: -HOUR }
            ]
        );
    }

    /// One of each flag: each serializes by its name (one of `NAMES`, in `NAMES`' order), with
    /// its fields beside it, reads back, and reads as words.
    #[test]
    fn flags_serialize_by_name_and_read_as_words() -> Result<(), serde_json::Error> {
        let all = EventFlag::examples();
        let names: Vec<&str> = all.iter().map(EventFlag::name).collect();
        assert_eq!(names, EventFlag::NAMES);
        for flag in &all {
            let json = serde_json::to_value(flag)?;
            assert_eq!(json["flag"], flag.name());
            assert_eq!(&serde_json::from_value::<EventFlag>(json)?, flag);
        }
        assert_eq!(
            serde_json::to_string(&all[8])?,
            r#"{"flag":"cloned_tag","other_device":"0195a1b2-0000-7000-8000-00000000000d","other_event":"0195a1b2-0000-7000-8000-00000000000e","apart_ms":4000}"#
        );
        let words: Vec<String> = all.iter().map(ToString::to_string).collect();
        let (device, e) = (
            "0195a1b2-0000-7000-8000-00000000000d",
            "0195a1b2-0000-7000-8000-00000000000e",
        );
        assert_eq!(
            words,
            [
                "not a checkpoint of the site configuration".to_owned(),
                "tag not in the site configuration".to_owned(),
                "tag of checkpoint cp-12".to_owned(),
                "entered by hand".to_owned(),
                "120 m from the checkpoint (GPS ±20 m)".to_owned(),
                "NFC is not how this checkpoint is proven".to_owned(),
                format!("scanned again 4 min 10 s after {e}"),
                "126 km/h: 1050 m in 30 s from the last scan".to_owned(),
                format!("tag also scanned 4 s apart by device {device} ({e})"),
                "outside every window of its tours".to_owned(),
                "ahead of its turn on tour night: cp-1 not scanned yet".to_owned(),
                "clock 3 h 0 min slow".to_owned(),
            ]
        );
        assert_eq!(
            EventFlag::ClockSkew {
                offset_ms: -121_000
            }
            .to_string(),
            "clock 2 min 1 s fast"
        );
        assert_eq!(
            EventFlag::FarFromCheckpoint {
                distance_m: 80,
                accuracy_m: None
            }
            .to_string(),
            "80 m from the checkpoint"
        );
        Ok(())
    }
}
