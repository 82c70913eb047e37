//! The site configuration an administrator sets up (checkpoints with their tags, locations and
//! radii; tours with time windows and grace; post orders), and the rules applied with it: which
//! checkpoint a scan proves, what about a scan looks wrong (flagged, never refused), and how far
//! a tour has come. The phone applies these rules offline; the server checks a configuration is
//! coherent ([`SiteConfig::validate`]) before it stores and serves it.
//!
//! A configuration is versioned; every event records the version it was made under. Only
//! administrators write it, through the server, so it travels as one versioned value rather
//! than as a collaborative document.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::event::{Location, MAX_TAG_LEN, MAX_TEXT_LEN, Scan, ScanMethod};
use crate::ids::{CheckpointId, SiteId};

/// How far a GPS fix may be from a checkpoint, beyond its radius and the fix's own accuracy,
/// before the scan is flagged: indoor GPS is often 20-50 m off.
pub const GPS_SLACK_M: f64 = 50.0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: CheckpointId,
    pub name: String,
    /// NFC tag ids and QR payloads that prove this checkpoint.
    pub tags: Vec<String>,
    pub location: Option<Location>,
    /// Radius around `location` within which a GPS fix proves the checkpoint.
    pub radius_m: Option<f32>,
}

/// One time window in which a tour must be walked (milliseconds since the epoch, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tour {
    pub id: String,
    pub name: String,
    /// The checkpoints of the tour, in walking order.
    pub checkpoints: Vec<CheckpointId>,
    pub windows: Vec<Window>,
    /// Minutes after a window's end during which a scan still counts, as late.
    pub grace_min: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostOrder {
    pub id: String,
    pub title: String,
    pub text: String,
}

/// The checkpoint id a scan of a tag no checkpoint has is recorded under (flagged
/// [`ScanFlag::UnknownTag`]): a guard's scan is never refused. No checkpoint may use it.
pub const UNKNOWN_CHECKPOINT: &str = "unknown";

const CONFIG_V1: u8 = 1;

/// A site's configuration at one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteConfig {
    pub site: SiteId,
    pub version: u64,
    pub checkpoints: Vec<Checkpoint>,
    pub tours: Vec<Tour>,
    pub post_orders: Vec<PostOrder>,
}

fn bad(what: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError::BadId {
        what,
        reason: reason.into(),
    }
}

impl SiteConfig {
    /// An empty configuration (version 0) for a new site.
    pub fn empty(site: SiteId) -> Self {
        SiteConfig {
            site,
            version: 0,
            checkpoints: Vec::new(),
            tours: Vec::new(),
            post_orders: Vec::new(),
        }
    }

    /// Checks the configuration is coherent: unique checkpoint ids and tags, tours naming known
    /// checkpoints, windows that end after they start, sane sizes.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut ids = std::collections::HashSet::new();
        let mut tags = std::collections::HashMap::new();
        for cp in &self.checkpoints {
            if cp.id.as_str() == UNKNOWN_CHECKPOINT {
                return Err(bad(
                    "checkpoint",
                    format!("{UNKNOWN_CHECKPOINT:?} is reserved for scans of unknown tags"),
                ));
            }
            if !ids.insert(&cp.id) {
                return Err(bad("checkpoint", format!("{} appears twice", cp.id)));
            }
            if cp.name.len() > MAX_TEXT_LEN {
                return Err(ValidationError::TooLong {
                    field: "checkpoint name",
                    len: cp.name.len(),
                    max: MAX_TEXT_LEN,
                });
            }
            for tag in &cp.tags {
                if tag.trim().is_empty() || tag.len() > MAX_TAG_LEN {
                    return Err(bad(
                        "tag",
                        format!("tag of {} must be 1 to {MAX_TAG_LEN} bytes", cp.id),
                    ));
                }
                if let Some(other) = tags.insert(tag.as_str(), &cp.id) {
                    return Err(bad(
                        "tag",
                        format!("{tag:?} is on both {other} and {}", cp.id),
                    ));
                }
            }
            if let Some(l) = &cp.location {
                l.validate()?;
            }
            if cp.radius_m.is_some_and(|r| !(r.is_finite() && r >= 0.0)) {
                return Err(bad(
                    "radius",
                    format!(
                        "radius of {} must be a non-negative number of metres",
                        cp.id
                    ),
                ));
            }
        }
        let mut tour_ids = std::collections::HashSet::new();
        for tour in &self.tours {
            if !tour_ids.insert(tour.id.as_str()) {
                return Err(bad("tour", format!("{} appears twice", tour.id)));
            }
            CheckpointId::new(tour.id.clone())
                .map_err(|_| bad("tour", format!("id {:?} is not a valid id", tour.id)))?;
            if tour.checkpoints.is_empty() {
                return Err(ValidationError::Empty {
                    field: "tour checkpoints",
                });
            }
            for cp in &tour.checkpoints {
                if !ids.contains(cp) {
                    return Err(bad(
                        "tour",
                        format!("{} names unknown checkpoint {cp}", tour.id),
                    ));
                }
            }
            for w in &tour.windows {
                if w.end_ms <= w.start_ms {
                    return Err(bad(
                        "window",
                        format!("a window of {} ends before it starts", tour.id),
                    ));
                }
            }
        }
        for order in &self.post_orders {
            if order.text.len() > 64 * 1024 {
                return Err(ValidationError::TooLong {
                    field: "post order",
                    len: order.text.len(),
                    max: 64 * 1024,
                });
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, crate::EncodeError> {
        crate::codec::encode_versioned(CONFIG_V1, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        crate::codec::decode_versioned(CONFIG_V1, bytes)
    }

    /// The checkpoint an NFC tag id or QR payload proves, or [`UNKNOWN_CHECKPOINT`].
    pub fn resolve_tag(&self, tag: &str) -> Result<CheckpointId, ValidationError> {
        match self.checkpoint_for_tag(tag) {
            Some(cp) => Ok(cp.id.clone()),
            None => CheckpointId::new(UNKNOWN_CHECKPOINT),
        }
    }

    pub fn checkpoint(&self, id: &CheckpointId) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| &c.id == id)
    }

    /// The checkpoint an NFC tag id or QR payload belongs to.
    pub fn checkpoint_for_tag(&self, tag: &str) -> Option<&Checkpoint> {
        self.checkpoints
            .iter()
            .find(|c| c.tags.iter().any(|t| t == tag))
    }

    /// What looks wrong about a scan under this configuration. A scan is always recorded; these
    /// are shown beside it.
    pub fn flags(&self, scan: &Scan) -> Vec<ScanFlag> {
        let mut flags = Vec::new();
        let Some(cp) = self.checkpoint(&scan.checkpoint) else {
            flags.push(ScanFlag::of_unknown_checkpoint(scan));
            return flags;
        };
        let tag = match &scan.method {
            ScanMethod::Nfc { tag } => Some(tag),
            ScanMethod::Qr { payload } => Some(payload),
            ScanMethod::Gps | ScanMethod::Manual { .. } => None,
        };
        if let Some(tag) = tag {
            match self.checkpoint_for_tag(tag) {
                None => flags.push(ScanFlag::UnknownTag),
                Some(owner) if owner.id != cp.id => {
                    flags.push(ScanFlag::TagOfAnotherCheckpoint(owner.id.clone()))
                }
                Some(_) => {}
            }
        }
        if matches!(scan.method, ScanMethod::Manual { .. }) {
            flags.push(ScanFlag::Manual);
        }
        if let (Some(fix), Some(at)) = (&scan.location, &cp.location) {
            let distance = distance_m(fix, at);
            let allowed = f64::from(cp.radius_m.unwrap_or(0.0))
                + f64::from(fix.accuracy_m.unwrap_or(0.0))
                + GPS_SLACK_M;
            if distance > allowed {
                flags.push(ScanFlag::FarFromCheckpoint {
                    distance_m: distance.round() as u32,
                });
            }
        }
        flags
    }
}

/// Why a scan deserves a second look.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanFlag {
    /// The configuration has no such checkpoint.
    UnknownCheckpoint,
    /// No checkpoint has this NFC tag or QR payload.
    UnknownTag,
    /// The tag belongs to another checkpoint.
    TagOfAnotherCheckpoint(CheckpointId),
    /// Entered by hand instead of scanned.
    Manual,
    /// The GPS fix is further from the checkpoint than its radius, the fix's accuracy and the
    /// indoor slack allow.
    FarFromCheckpoint { distance_m: u32 },
}

/// In words, for a person reading a scan's flags.
impl std::fmt::Display for ScanFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanFlag::UnknownCheckpoint => {
                f.write_str("not a checkpoint of the site configuration")
            }
            ScanFlag::UnknownTag => f.write_str("tag not in the site configuration"),
            ScanFlag::TagOfAnotherCheckpoint(cp) => write!(f, "tag of checkpoint {cp}"),
            ScanFlag::Manual => f.write_str("entered by hand"),
            ScanFlag::FarFromCheckpoint { distance_m } => {
                write!(f, "{distance_m} m from the checkpoint")
            }
        }
    }
}

impl ScanFlag {
    /// The flag of a scan whose checkpoint the configuration does not have: a tag nobody has
    /// is recorded at [`UNKNOWN_CHECKPOINT`], and what is wrong with it is the tag.
    pub fn of_unknown_checkpoint(scan: &Scan) -> ScanFlag {
        let by_tag = matches!(scan.method, ScanMethod::Nfc { .. } | ScanMethod::Qr { .. });
        if by_tag && scan.checkpoint.as_str() == UNKNOWN_CHECKPOINT {
            ScanFlag::UnknownTag
        } else {
            ScanFlag::UnknownCheckpoint
        }
    }
}

/// Great-circle distance in metres (haversine; plenty for distances within a site).
pub fn distance_m(a: &Location, b: &Location) -> f64 {
    const R: f64 = 6_371_000.0;
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * R * h.sqrt().min(1.0).asin()
}

/// Where one checkpoint of one tour window stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointState {
    /// The window has not opened yet.
    Upcoming,
    /// The window is open and the checkpoint not yet scanned.
    Due,
    /// The window has closed; scans during the grace period still count, as late.
    Late,
    /// Scanned in time (at this device time).
    Done { at_ms: i64 },
    /// Scanned during the grace period.
    DoneLate { at_ms: i64 },
    /// Not scanned by the end of the grace period.
    Missed,
}

/// In words; a scan's time is left to the caller, who knows the reader's time zone.
impl std::fmt::Display for CheckpointState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckpointState::Upcoming => "upcoming",
            CheckpointState::Due => "due",
            CheckpointState::Late => "late",
            CheckpointState::Done { .. } => "done",
            CheckpointState::DoneLate { .. } => "done late",
            CheckpointState::Missed => "missed",
        })
    }
}

/// One window of a tour and its checkpoints' states.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowProgress {
    pub tour: String,
    pub window: Window,
    pub checkpoints: Vec<(CheckpointId, CheckpointState)>,
}

/// How far each window of `tour` has come at `now_ms`, given the scans seen (checkpoint and
/// device wall time). The phone calls it with its own scans, offline.
pub fn tour_progress(
    tour: &Tour,
    scans: &[(CheckpointId, i64)],
    now_ms: i64,
) -> Vec<WindowProgress> {
    let grace_ms = i64::from(tour.grace_min) * 60_000;
    tour.windows
        .iter()
        .map(|w| {
            let checkpoints = tour
                .checkpoints
                .iter()
                .map(|cp| {
                    let first = |from: i64, to: i64| {
                        scans
                            .iter()
                            .filter(|(c, t)| c == cp && *t >= from && *t <= to)
                            .map(|(_, t)| *t)
                            .min()
                    };
                    let state = if let Some(at_ms) = first(w.start_ms, w.end_ms) {
                        CheckpointState::Done { at_ms }
                    } else if let Some(at_ms) = first(w.end_ms + 1, w.end_ms + grace_ms) {
                        CheckpointState::DoneLate { at_ms }
                    } else if now_ms < w.start_ms {
                        CheckpointState::Upcoming
                    } else if now_ms <= w.end_ms {
                        CheckpointState::Due
                    } else if now_ms <= w.end_ms + grace_ms {
                        CheckpointState::Late
                    } else {
                        CheckpointState::Missed
                    };
                    (cp.clone(), state)
                })
                .collect();
            WindowProgress {
                tour: tour.id.clone(),
                window: *w,
                checkpoints,
            }
        })
        .collect()
}

/// Whether a missed checkpoint is final: only once every device of the site has synced past the
/// window's end plus grace (or has gone stale), so a checkpoint is never declared missed just
/// because a guard's scans have not arrived yet.
pub fn missed_is_final(
    window: &Window,
    grace_min: u32,
    device_last_sync_ms: &[i64],
    stale_after_ms: i64,
    now_ms: i64,
) -> bool {
    let deadline = window.end_ms + i64::from(grace_min) * 60_000;
    now_ms > deadline
        && device_last_sync_ms
            .iter()
            .all(|&synced| synced > deadline || now_ms - synced > stale_after_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(id: &str) -> CheckpointId {
        CheckpointId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn flags_and_states_read_as_words() {
        let words: Vec<String> = [
            ScanFlag::UnknownCheckpoint,
            ScanFlag::UnknownTag,
            ScanFlag::TagOfAnotherCheckpoint(cp("cp-12")),
            ScanFlag::Manual,
            ScanFlag::FarFromCheckpoint { distance_m: 120 },
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            words,
            [
                "not a checkpoint of the site configuration",
                "tag not in the site configuration",
                "tag of checkpoint cp-12",
                "entered by hand",
                "120 m from the checkpoint",
            ]
        );
        assert_eq!(
            CheckpointState::DoneLate { at_ms: 5 }.to_string(),
            "done late"
        );
    }

    fn config() -> SiteConfig {
        SiteConfig {
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            version: 3,
            checkpoints: vec![
                Checkpoint {
                    id: cp("cp-1"),
                    name: "B2 stairs".into(),
                    tags: vec!["04:AA".into()],
                    location: Some(Location {
                        lat: 51.5,
                        lon: -0.12,
                        accuracy_m: None,
                    }),
                    radius_m: Some(15.0),
                },
                Checkpoint {
                    id: cp("cp-2"),
                    name: "Loading bay".into(),
                    tags: vec!["QR-2".into()],
                    location: None,
                    radius_m: None,
                },
            ],
            tours: vec![Tour {
                id: "night".into(),
                name: "Night round".into(),
                checkpoints: vec![cp("cp-1"), cp("cp-2")],
                windows: vec![Window {
                    start_ms: 1_000_000,
                    end_ms: 2_000_000,
                }],
                grace_min: 10,
            }],
            post_orders: vec![],
        }
    }

    #[test]
    fn configuration_must_be_coherent() {
        assert!(config().validate().is_ok());
        let mut dup_tag = config();
        dup_tag.checkpoints[1].tags.push("04:AA".into());
        assert!(dup_tag.validate().is_err());
        let mut unknown = config();
        unknown.tours[0].checkpoints.push(cp("cp-9"));
        assert!(unknown.validate().is_err());
        let mut backwards = config();
        backwards.tours[0].windows[0].end_ms = 0;
        assert!(backwards.validate().is_err());
    }

    #[test]
    fn scans_are_flagged_not_refused() {
        let c = config();
        let scan = |checkpoint: &str, method: ScanMethod, location: Option<Location>| Scan {
            checkpoint: cp(checkpoint),
            method,
            location,
            note: None,
        };
        assert!(
            c.flags(&scan(
                "cp-1",
                ScanMethod::Nfc {
                    tag: "04:AA".into()
                },
                None
            ))
            .is_empty()
        );
        assert_eq!(
            c.flags(&scan(
                "cp-1",
                ScanMethod::Nfc {
                    tag: "04:FF".into()
                },
                None
            )),
            vec![ScanFlag::UnknownTag]
        );
        assert_eq!(
            c.flags(&scan(
                "cp-2",
                ScanMethod::Nfc {
                    tag: "04:AA".into()
                },
                None
            )),
            vec![ScanFlag::TagOfAnotherCheckpoint(cp("cp-1"))]
        );
        assert_eq!(
            c.flags(&scan("cp-7", ScanMethod::Gps, None)),
            vec![ScanFlag::UnknownCheckpoint]
        );
        // A tag nobody has, recorded at the reserved checkpoint: the tag is what is wrong.
        assert_eq!(
            c.flags(&scan(
                UNKNOWN_CHECKPOINT,
                ScanMethod::Qr {
                    payload: "CP99".into()
                },
                None
            )),
            vec![ScanFlag::UnknownTag]
        );
        // 30 m away with 20 m accuracy: within radius + accuracy + slack. 300 m away: flagged.
        let near = Location {
            lat: 51.50027,
            lon: -0.12,
            accuracy_m: Some(20.0),
        };
        assert!(
            c.flags(&scan("cp-1", ScanMethod::Gps, Some(near)))
                .is_empty()
        );
        let far = Location {
            lat: 51.5027,
            lon: -0.12,
            accuracy_m: Some(20.0),
        };
        assert!(
            matches!(c.flags(&scan("cp-1", ScanMethod::Gps, Some(far)))[..], [ScanFlag::FarFromCheckpoint { distance_m }] if (290..=310).contains(&distance_m))
        );
    }

    #[test]
    fn tour_progress_moves_from_upcoming_to_missed() {
        let tour = &config().tours[0];
        let states = |scans: &[(CheckpointId, i64)], now| -> Vec<CheckpointState> {
            tour_progress(tour, scans, now)[0]
                .checkpoints
                .iter()
                .map(|(_, s)| *s)
                .collect()
        };
        use CheckpointState::*;
        assert_eq!(states(&[], 500_000), [Upcoming, Upcoming]);
        assert_eq!(
            states(&[(cp("cp-1"), 1_200_000)], 1_500_000),
            [Done { at_ms: 1_200_000 }, Due]
        );
        assert_eq!(
            states(&[(cp("cp-1"), 1_200_000)], 2_100_000),
            [Done { at_ms: 1_200_000 }, Late]
        );
        assert_eq!(
            states(&[(cp("cp-2"), 2_300_000)], 2_400_000),
            [Late, DoneLate { at_ms: 2_300_000 }]
        );
        assert_eq!(
            states(&[(cp("cp-2"), 900_000)], 2_700_000),
            [Missed, Missed],
            "a scan before the window does not count"
        );
    }

    #[test]
    fn a_missed_checkpoint_is_provisional_until_every_device_synced_past_the_deadline() {
        let w = Window {
            start_ms: 0,
            end_ms: 1_000_000,
        };
        let deadline = 1_000_000 + 10 * 60_000;
        let stale = 3_600_000;
        assert!(
            !missed_is_final(&w, 10, &[deadline + 1], stale, deadline),
            "grace not over"
        );
        assert!(
            !missed_is_final(&w, 10, &[deadline + 1, deadline - 5], stale, deadline + 10),
            "one device has not synced since"
        );
        assert!(missed_is_final(
            &w,
            10,
            &[deadline + 1, deadline + 2],
            stale,
            deadline + 10
        ));
        assert!(
            missed_is_final(&w, 10, &[deadline + 1, 0], stale, deadline + stale),
            "a stale device does not hold it open"
        );
    }
}
