//! The site configuration an administrator sets up (checkpoints with their tags, locations and
//! radii; tours with time windows and grace; post orders; the site's thresholds), and the rules
//! applied with it: which checkpoint a scan proves and how far a tour has come (what about a
//! scan looks wrong is [`crate::flags`]). The phone applies these rules offline; the server checks a configuration is
//! coherent ([`SiteConfig::validate`]) before it stores and serves it.
//!
//! A configuration is versioned; every event records the version it was made under. Only
//! administrators write it, through the server, so it travels as one versioned value rather
//! than as a collaborative document.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::event::{Location, MAX_TAG_LEN, MAX_TEXT_LEN, ScanMethod};
use crate::ids::{CheckpointId, GuardId, SiteId};

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
    /// The ways of proving this checkpoint that count without a second look; empty: any. A
    /// scan made another way is flagged
    /// ([`crate::flags::EventFlag::MethodNotAccepted`]), never refused.
    #[serde(default)]
    pub methods: Vec<MethodKind>,
}

/// A way of proving a checkpoint, without the scan's details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    Nfc,
    Qr,
    Gps,
    Manual,
}

impl MethodKind {
    pub fn of(method: &ScanMethod) -> MethodKind {
        match method {
            ScanMethod::Nfc { .. } => MethodKind::Nfc,
            ScanMethod::Qr { .. } => MethodKind::Qr,
            ScanMethod::Gps => MethodKind::Gps,
            ScanMethod::Manual { .. } => MethodKind::Manual,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Nfc => "nfc",
            MethodKind::Qr => "qr",
            MethodKind::Gps => "gps",
            MethodKind::Manual => "manual",
        }
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MethodKind::Nfc => "NFC",
            MethodKind::Qr => "QR",
            MethodKind::Gps => "GPS",
            MethodKind::Manual => "by hand",
        })
    }
}

pub use crate::schedule::{ScheduleRule, SiteZone, Window};

/// How far around `now` the phone looks for a tour's windows: "tonight" is the windows
/// overlapping `[now - TONIGHT_MS, now + TONIGHT_MS)`.
pub const TONIGHT_MS: i64 = 24 * 3_600_000;

/// The span a phone shows of its tours at `now_ms`: the windows overlapping it are tonight's.
pub fn tonight(now_ms: i64) -> (i64, i64) {
    (
        now_ms.saturating_sub(TONIGHT_MS),
        now_ms.saturating_add(TONIGHT_MS),
    )
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// A misspelt field (`"schedules"`) would otherwise leave a tour silently without windows.
#[serde(deny_unknown_fields)]
pub struct Tour {
    pub id: String,
    pub name: String,
    /// The checkpoints of the tour, in walking order.
    pub checkpoints: Vec<CheckpointId>,
    /// One-off windows, at absolute times.
    #[serde(default)]
    pub windows: Vec<Window>,
    /// Rules for windows that repeat, in the site's local time.
    #[serde(default)]
    pub schedule: Vec<ScheduleRule>,
    /// Minutes after a window's end during which a scan still counts, as late.
    pub grace_min: u32,
    /// The checkpoints must be scanned in the order listed; a scan ahead of its turn is flagged.
    #[serde(default)]
    pub ordered: bool,
    /// The guards who walk this tour; empty: any guard on duty at the site.
    #[serde(default)]
    pub assigned_guards: Vec<GuardId>,
}

impl Tour {
    /// The tour's windows overlapping `[from_ms, to_ms)`: its one-off windows and those of its
    /// schedule in `zone`, in order of start, each once.
    pub fn windows_between(
        &self,
        zone: SiteZone,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Window>, ValidationError> {
        let mut out = crate::schedule::windows_between(&self.schedule, zone, from_ms, to_ms)?;
        out.extend(
            self.windows
                .iter()
                .filter(|w| w.overlaps(from_ms, to_ms))
                .copied(),
        );
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The tour's windows of local `date` in `zone`: its schedule's windows of the nights
    /// starting on that date ([`crate::schedule::night_windows`]) and its one-off windows that
    /// start on it, in order of start, each once.
    pub fn windows_of_date(&self, zone: SiteZone, date: chrono::NaiveDate) -> Vec<Window> {
        let mut out = crate::schedule::night_windows(&self.schedule, zone, date);
        out.extend(
            self.windows
                .iter()
                .filter(|w| zone.local(w.start_ms).map(|t| t.date_naive()) == Some(date))
                .copied(),
        );
        out.sort();
        out.dedup();
        out
    }

    /// The window open at `now_ms`, else the next to open (within a week and a day for its
    /// schedule, whenever for a one-off window).
    pub fn next_window(&self, zone: SiteZone, now_ms: i64) -> Option<Window> {
        const AHEAD_MS: i64 = 8 * 24 * 3_600_000;
        let scheduled = crate::schedule::windows_between(
            &self.schedule,
            zone,
            now_ms,
            now_ms.saturating_add(AHEAD_MS),
        )
        .ok()
        .and_then(|w| w.first().copied());
        self.windows
            .iter()
            .filter(|w| w.end_ms > now_ms)
            .copied()
            .chain(scheduled)
            .min()
    }

    /// When the tour is walked, in words: its rules, its one-off windows counted, and its grace:
    /// `every 90 min 22:00-06:00, every night, grace 15 min`.
    pub fn schedule_words(&self) -> String {
        let mut parts: Vec<String> = self.schedule.iter().map(ToString::to_string).collect();
        match self.windows.len() {
            0 => {}
            1 => parts.push("1 one-off window".to_owned()),
            n => parts.push(format!("{n} one-off windows")),
        }
        if parts.is_empty() {
            return "no windows".to_owned();
        }
        format!("{}, grace {} min", parts.join("; "), self.grace_min)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostOrder {
    pub id: String,
    pub title: String,
    pub text: String,
}

/// The checkpoint id a scan of a tag no checkpoint has is recorded under (flagged
/// [`crate::flags::EventFlag::UnknownTag`]): a guard's scan is never refused. No checkpoint may use it.
pub const UNKNOWN_CHECKPOINT: &str = "unknown";

/// The first encoding: no time zone, tours with absolute windows only. Decoded and brought up to
/// date ([`v1`]).
const CONFIG_V1: u8 = 1;
/// The site's time zone and tours' schedules ([`v2`]).
const CONFIG_V2: u8 = 2;
/// Accepted methods per checkpoint, ordered and assigned tours, the site's rules.
const CONFIG_V3: u8 = 3;

/// A site's configuration at one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteConfig {
    pub site: SiteId,
    pub version: u64,
    /// The site's IANA time zone, in which its tours' schedules are written (UTC when not given,
    /// and for configurations stored before sites had one).
    #[serde(default)]
    pub time_zone: SiteZone,
    pub checkpoints: Vec<Checkpoint>,
    pub tours: Vec<Tour>,
    pub post_orders: Vec<PostOrder>,
    /// The site's thresholds for flags, gaps and compliance.
    #[serde(default)]
    pub rules: SiteRules,
}

/// A site's thresholds: when a scan, a device or a window deserves a second look or turns
/// final. Each has a default that suits a typical site; an administrator sets them per site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteRules {
    /// A device whose clock is off by more than this is flagged on its events.
    pub clock_skew_threshold_secs: u32,
    /// The same checkpoint scanned again by the same guard within this is padding.
    pub padding_within_min: u32,
    /// Faster than this between a guard's consecutive checkpoints is an impossible speed.
    pub max_speed_kmh: u32,
    /// One tag scanned by two devices within this of each other: a cloned tag.
    pub cloned_tag_within_secs: u32,
    /// A device on shift with no contact for longer than this is shown as silent.
    pub no_contact_after_min: u32,
    /// A shift still open this long after it started is overdue.
    pub shift_overdue_after_hours: u32,
    /// A tour window turns final this long after its end, whoever has not yet synced.
    pub finalise_after_hours: u32,
    /// A panic alarm nobody acknowledged this long after the server received it is escalated.
    pub alarm_escalation_after_secs: u32,
}

impl Default for SiteRules {
    fn default() -> Self {
        SiteRules {
            clock_skew_threshold_secs: (crate::clock::DEFAULT_CLOCK_SKEW_THRESHOLD_MS / 1000)
                as u32,
            padding_within_min: 10,
            max_speed_kmh: 25,
            cloned_tag_within_secs: 60,
            no_contact_after_min: 30,
            shift_overdue_after_hours: 12,
            finalise_after_hours: 6,
            // Two minutes: long enough for an operator at the screen to answer, short enough
            // that a guard in danger is not left waiting on an unattended one.
            alarm_escalation_after_secs: 120,
        }
    }
}

impl SiteRules {
    /// Each threshold within a range that makes sense (zero would flag or finalise everything).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let ranges: [(&str, u32, u32, u32); 8] = [
            (
                "clock_skew_threshold_secs",
                self.clock_skew_threshold_secs,
                1,
                86_400,
            ),
            ("padding_within_min", self.padding_within_min, 1, 1_440),
            ("max_speed_kmh", self.max_speed_kmh, 1, 1_000),
            (
                "cloned_tag_within_secs",
                self.cloned_tag_within_secs,
                1,
                3_600,
            ),
            ("no_contact_after_min", self.no_contact_after_min, 1, 10_080),
            (
                "shift_overdue_after_hours",
                self.shift_overdue_after_hours,
                1,
                168,
            ),
            ("finalise_after_hours", self.finalise_after_hours, 1, 168),
            (
                "alarm_escalation_after_secs",
                self.alarm_escalation_after_secs,
                10,
                3_600,
            ),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(bad(
                    "rule",
                    format!("{name} must be {min} to {max}, not {value}"),
                ));
            }
        }
        Ok(())
    }
}

use crate::schedule::bad;

impl SiteConfig {
    /// An empty configuration (version 0) for a new site.
    pub fn empty(site: SiteId) -> Self {
        SiteConfig {
            site,
            version: 0,
            time_zone: SiteZone::UTC,
            checkpoints: Vec::new(),
            tours: Vec::new(),
            post_orders: Vec::new(),
            rules: SiteRules::default(),
        }
    }

    /// Checks the configuration is coherent: unique checkpoint ids and tags, tours naming known
    /// checkpoints, windows that end after they start, schedules that make sense, sane sizes.
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
            for rule in &tour.schedule {
                rule.validate().map_err(|e| match e {
                    ValidationError::BadId { what, reason } => {
                        bad(what, format!("tour {}: {reason}", tour.id))
                    }
                    other => other,
                })?;
            }
        }
        self.rules.validate()?;
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
        crate::codec::encode_versioned(CONFIG_V3, self)
    }

    /// Decodes any encoding; an earlier one comes back with what it lacks at its defaults: a
    /// first-version configuration in UTC, its tours with their windows and no schedule; a
    /// second-version one with every method accepted, tours unordered and unassigned, the
    /// default rules.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::DecodeError> {
        match bytes.first() {
            Some(&CONFIG_V1) => {
                crate::codec::decode_versioned::<v1::SiteConfig>(CONFIG_V1, bytes).map(Into::into)
            }
            Some(&CONFIG_V2) => {
                crate::codec::decode_versioned::<v2::SiteConfig>(CONFIG_V2, bytes).map(Into::into)
            }
            _ => crate::codec::decode_versioned(CONFIG_V3, bytes),
        }
    }

    /// A tour by id.
    pub fn tour(&self, id: &str) -> Option<&Tour> {
        self.tours.iter().find(|t| t.id == id)
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

impl CheckpointState {
    /// The state's name for programs (`--json`, the app): `upcoming`, `due`, `late`, `done`,
    /// `done_late` or `missed`.
    pub fn code(&self) -> &'static str {
        match self {
            CheckpointState::Upcoming => "upcoming",
            CheckpointState::Due => "due",
            CheckpointState::Late => "late",
            CheckpointState::Done { .. } => "done",
            CheckpointState::DoneLate { .. } => "done_late",
            CheckpointState::Missed => "missed",
        }
    }

    /// When the checkpoint was scanned, for a state that has a scan.
    pub fn scanned_at_ms(&self) -> Option<i64> {
        match self {
            CheckpointState::Done { at_ms } | CheckpointState::DoneLate { at_ms } => Some(*at_ms),
            _ => None,
        }
    }
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

/// How far each window of `tour` overlapping `[from_ms, to_ms)` has come at `now_ms` (its
/// schedule expanded in `zone`, with its one-off windows), given the scans seen (checkpoint and
/// time). The phone calls it with its own scans, offline, for [`tonight`].
///
/// A window runs from its start until just before its end; a scan in it is on time, one in the
/// grace minutes after it is late. A scan counts for one window only, the earliest it can count
/// for: when windows follow one another, a scan in the grace of one is that window's late scan,
/// not the next one's on-time scan.
pub fn tour_progress(
    tour: &Tour,
    zone: SiteZone,
    scans: &[(CheckpointId, i64)],
    now_ms: i64,
    (from_ms, to_ms): (i64, i64),
) -> Result<Vec<WindowProgress>, ValidationError> {
    let windows = tour.windows_between(zone, from_ms, to_ms)?;
    Ok(progress_of_windows(tour, &windows, scans, now_ms))
}

/// [`tour_progress`] of windows already expanded (in order of start), by the rules of
/// [`crate::compliance`].
pub fn progress_of_windows(
    tour: &Tour,
    windows: &[Window],
    scans: &[(CheckpointId, i64)],
    now_ms: i64,
) -> Vec<WindowProgress> {
    let grace_ms = crate::compliance::grace_ms(tour.grace_min);
    let mut taken = vec![false; scans.len()];
    let assigned =
        crate::compliance::assign_scans(&tour.checkpoints, grace_ms, windows, scans, &mut taken);
    windows
        .iter()
        .zip(assigned)
        .map(|(w, row)| WindowProgress {
            tour: tour.id.clone(),
            window: *w,
            checkpoints: tour
                .checkpoints
                .iter()
                .zip(row)
                .map(|(cp, took)| {
                    let scan = took.map(|t| (scans[t.scan].1, t.late));
                    (
                        cp.clone(),
                        crate::compliance::checkpoint_state(w, grace_ms, scan, now_ms),
                    )
                })
                .collect(),
        })
        .collect()
}

/// The first encoding's shapes, frozen as they were: configurations stored with it decode
/// through these and are brought up to date (time zone UTC, tours without a schedule).
mod v1 {
    use serde::Deserialize;

    use crate::event::Location;
    use crate::ids::{CheckpointId, SiteId};

    #[derive(Deserialize)]
    pub(super) struct SiteConfig {
        site: SiteId,
        version: u64,
        checkpoints: Vec<Checkpoint>,
        tours: Vec<Tour>,
        post_orders: Vec<PostOrder>,
    }

    /// A checkpoint of the first and second encodings.
    #[derive(Deserialize)]
    pub(super) struct Checkpoint {
        id: CheckpointId,
        name: String,
        tags: Vec<String>,
        location: Option<Location>,
        radius_m: Option<f32>,
    }

    impl From<Checkpoint> for super::Checkpoint {
        fn from(cp: Checkpoint) -> Self {
            super::Checkpoint {
                id: cp.id,
                name: cp.name,
                tags: cp.tags,
                location: cp.location,
                radius_m: cp.radius_m,
                methods: Vec::new(),
            }
        }
    }

    #[derive(Deserialize)]
    struct Window {
        start_ms: i64,
        end_ms: i64,
    }

    #[derive(Deserialize)]
    struct Tour {
        id: String,
        name: String,
        checkpoints: Vec<CheckpointId>,
        windows: Vec<Window>,
        grace_min: u32,
    }

    #[derive(Deserialize)]
    pub(super) struct PostOrder {
        id: String,
        title: String,
        text: String,
    }

    impl From<PostOrder> for super::PostOrder {
        fn from(p: PostOrder) -> Self {
            super::PostOrder {
                id: p.id,
                title: p.title,
                text: p.text,
            }
        }
    }

    impl From<SiteConfig> for super::SiteConfig {
        fn from(c: SiteConfig) -> Self {
            super::SiteConfig {
                site: c.site,
                version: c.version,
                time_zone: super::SiteZone::UTC,
                checkpoints: c.checkpoints.into_iter().map(Into::into).collect(),
                tours: c
                    .tours
                    .into_iter()
                    .map(|t| super::Tour {
                        id: t.id,
                        name: t.name,
                        checkpoints: t.checkpoints,
                        windows: t
                            .windows
                            .into_iter()
                            .map(|w| super::Window {
                                start_ms: w.start_ms,
                                end_ms: w.end_ms,
                            })
                            .collect(),
                        schedule: Vec::new(),
                        grace_min: t.grace_min,
                        ordered: false,
                        assigned_guards: Vec::new(),
                    })
                    .collect(),
                post_orders: c.post_orders.into_iter().map(Into::into).collect(),
                rules: super::SiteRules::default(),
            }
        }
    }
}

/// The second encoding's shapes, frozen: postcard is not self-describing, so a stored
/// configuration is read with the shapes it was written with. The zone, windows and schedule
/// rules are the current types, whose encodings are pinned by a stored V2 blob in the tests.
mod v2 {
    use serde::Deserialize;

    use super::{ScheduleRule, SiteZone, Window};
    use crate::ids::{CheckpointId, SiteId};

    #[derive(Deserialize)]
    pub(super) struct SiteConfig {
        site: SiteId,
        version: u64,
        time_zone: SiteZone,
        checkpoints: Vec<super::v1::Checkpoint>,
        tours: Vec<Tour>,
        post_orders: Vec<super::v1::PostOrder>,
    }

    #[derive(Deserialize)]
    struct Tour {
        id: String,
        name: String,
        checkpoints: Vec<CheckpointId>,
        windows: Vec<Window>,
        schedule: Vec<ScheduleRule>,
        grace_min: u32,
    }

    impl From<SiteConfig> for super::SiteConfig {
        fn from(c: SiteConfig) -> Self {
            super::SiteConfig {
                site: c.site,
                version: c.version,
                time_zone: c.time_zone,
                checkpoints: c.checkpoints.into_iter().map(Into::into).collect(),
                tours: c
                    .tours
                    .into_iter()
                    .map(|t| super::Tour {
                        id: t.id,
                        name: t.name,
                        checkpoints: t.checkpoints,
                        windows: t.windows,
                        schedule: t.schedule,
                        grace_min: t.grace_min,
                        ordered: false,
                        assigned_guards: Vec::new(),
                    })
                    .collect(),
                post_orders: c.post_orders.into_iter().map(Into::into).collect(),
                rules: super::SiteRules::default(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(id: &str) -> CheckpointId {
        CheckpointId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn states_read_as_words() {
        assert_eq!(
            CheckpointState::DoneLate { at_ms: 5 }.to_string(),
            "done late"
        );
    }

    fn config() -> SiteConfig {
        SiteConfig {
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            version: 3,
            time_zone: SiteZone::UTC,
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
                    methods: vec![],
                },
                Checkpoint {
                    id: cp("cp-2"),
                    name: "Loading bay".into(),
                    tags: vec!["QR-2".into()],
                    location: None,
                    radius_m: None,
                    methods: vec![],
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
                schedule: vec![],
                grace_min: 10,
                ordered: false,
                assigned_guards: vec![],
            }],
            post_orders: vec![],
            rules: SiteRules::default(),
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
    fn tour_progress_moves_from_upcoming_to_missed() {
        let tour = &config().tours[0];
        let states = |scans: &[(CheckpointId, i64)], now| -> Vec<CheckpointState> {
            tour_progress(tour, SiteZone::UTC, scans, now, tonight(now))
                .unwrap_or_else(|e| panic!("{e}"))[0]
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

    /// A configuration as the first encoding stored it (written by the code of that time): two
    /// checkpoints, a tour with one absolute window, a post order.
    const V1_BLOB: &str = "0106736974652d3103020463702d3109423220737461697273010530343a414101809b\
        92eb03ffbd92010001000070410463702d320b4c6f6164696e6720626179010451522d32000001056e69676874\
        0b4e6967687420726f756e64020463702d320463702d310180bcb0e7a66780f6e7eaa6670a0104706f2d310a46\
        69726520646f6f72730b436865636b207468656d2e";

    #[test]
    fn a_configuration_stored_in_the_first_encoding_decodes_in_utc_with_its_windows() {
        let bytes = hex::decode(V1_BLOB).unwrap_or_else(|e| panic!("{e}"));
        let c = SiteConfig::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.site.as_str(), "site-1");
        assert_eq!(c.version, 3);
        assert_eq!(c.time_zone, SiteZone::UTC);
        assert_eq!(c.checkpoints.len(), 2);
        assert_eq!(c.checkpoints[0].tags, ["04:AA"]);
        assert_eq!(c.checkpoints[0].radius_m, Some(15.0));
        let tour = &c.tours[0];
        // Checkpoint order kept.
        assert_eq!(tour.checkpoints, [cp("cp-2"), cp("cp-1")]);
        assert_eq!(
            tour.windows,
            [Window {
                start_ms: 1_774_735_200_000,
                end_ms: 1_774_738_800_000
            }]
        );
        assert!(tour.schedule.is_empty());
        assert_eq!(tour.grace_min, 10);
        assert_eq!(c.post_orders[0].text, "Check them.");
        // Written again, it is the current encoding, and reads back the same.
        let again = c.encode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again[0], CONFIG_V3);
        assert_eq!(SiteConfig::decode(&again), Ok(c));
        assert!(SiteConfig::decode(&[9, 0]).is_err());
    }

    /// A configuration as the second encoding wrote it (Europe/London, a tour with a one-off
    /// window and two schedule rules), from the code of commit 702fe65.
    const V2_BLOB: &str = "0206736974652d31040d4575726f70652f4c6f6e646f6e020463702d3109423220737461\
        697273010530343a414101809b92eb03ffbd92010001000070410463702d320b4c6f6164696e672062617901\
        0451522d32000001056e696768740b4e6967687420726f756e64020463702d320463702d310180bcb0e7a667\
        80f6e7eaa66702005aa80ae8027f000102e40a3c60011e0f0104706f2d310a4669726520646f6f72730b4368\
        65636b207468656d2e";

    #[test]
    fn a_configuration_stored_in_the_second_encoding_decodes_with_the_defaults_it_lacks() {
        let bytes = hex::decode(V2_BLOB).unwrap_or_else(|e| panic!("{e}"));
        let c = SiteConfig::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.version, 4);
        assert_eq!(
            c.time_zone,
            SiteZone::new("Europe/London").unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(c.checkpoints.iter().all(|cp| cp.methods.is_empty()));
        let tour = &c.tours[0];
        assert_eq!(tour.checkpoints, [cp("cp-2"), cp("cp-1")]);
        assert_eq!(tour.windows.len(), 1);
        assert_eq!(tour.schedule.len(), 2);
        assert_eq!(
            tour.schedule_words(),
            "every 90 min 22:00-06:00, every night; at 23:00, 01:00 for 30 min, Sat and Sun nights; \
             1 one-off window, grace 15 min"
        );
        assert!(!tour.ordered && tour.assigned_guards.is_empty());
        assert_eq!(c.rules, SiteRules::default());
        let again = c.encode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again[0], CONFIG_V3);
        assert_eq!(SiteConfig::decode(&again), Ok(c));
    }

    #[test]
    fn rules_take_their_defaults_and_refuse_a_zero() {
        let json = r#"{"site":"s","version":1,"checkpoints":[],"tours":[],"post_orders":[],
                       "rules":{"max_speed_kmh":8}}"#;
        let c: SiteConfig = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.rules.max_speed_kmh, 8);
        assert_eq!(c.rules.finalise_after_hours, 6);
        let mut bad_rules = c.clone();
        bad_rules.rules.padding_within_min = 0;
        let said = bad_rules
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            said.contains("padding_within_min must be 1 to 1440, not 0"),
            "{said}"
        );
        let unknown = json.replace("max_speed_kmh", "max_speed");
        assert!(serde_json::from_str::<SiteConfig>(&unknown).is_err());
    }

    fn scheduled() -> SiteConfig {
        let mut c = config();
        c.time_zone = SiteZone::new("Europe/London").unwrap_or_else(|e| panic!("{e}"));
        c.tours[0].windows.clear();
        c.tours[0].grace_min = 15;
        c.tours[0].schedule = serde_json::from_str(
            r#"[{"every_min": 90, "from": "22:00", "to": "06:00"},
                {"at": ["23:00", "01:00", "03:00", "05:00"], "days": ["sat", "sun"], "window_min": 30}]"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        c
    }

    #[test]
    fn a_schedule_and_time_zone_survive_both_encodings() {
        let c = scheduled();
        assert!(c.validate().is_ok());
        let bytes = c.encode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(SiteConfig::decode(&bytes), Ok(c.clone()));
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert!(json.contains(r#""time_zone":"Europe/London""#), "{json}");
        assert_eq!(serde_json::from_str::<SiteConfig>(&json).ok(), Some(c));
    }

    #[test]
    fn the_json_of_before_schedules_still_reads() {
        let old = r#"{"site": "site-1", "version": 2, "checkpoints": [],
            "tours": [{"id": "night", "name": "Night", "checkpoints": ["cp-1"],
                       "windows": [{"start_ms": 1000, "end_ms": 2000}], "grace_min": 10}],
            "post_orders": []}"#;
        let c: SiteConfig = serde_json::from_str(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.time_zone, SiteZone::UTC);
        assert!(c.tours[0].schedule.is_empty());
        assert_eq!(c.tours[0].windows.len(), 1);
        // A tour may have a schedule and no `windows` at all.
        let new = r#"{"id": "night", "name": "Night", "checkpoints": ["cp-1"], "grace_min": 15,
                      "schedule": [{"at": ["21:30"], "window_min": 30}]}"#;
        let tour: Tour = serde_json::from_str(new).unwrap_or_else(|e| panic!("{e}"));
        assert!(tour.windows.is_empty() && tour.schedule.len() == 1);
        // A misspelt field is refused, not dropped; so is a zone that does not exist.
        let typo = new.replace("\"schedule\"", "\"schedules\"");
        assert!(serde_json::from_str::<Tour>(&typo).is_err());
        let zone = old.replace(
            "\"version\": 2,",
            "\"version\": 2, \"time_zone\": \"Europe/Lndon\",",
        );
        let err = serde_json::from_str::<SiteConfig>(&zone)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not an IANA time zone"), "{err}");
    }

    #[test]
    fn a_bad_rule_makes_the_configuration_incoherent_naming_the_tour() {
        let mut c = scheduled();
        c.tours[0].schedule =
            serde_json::from_str(r#"[{"every_min": 0, "from": "22:00", "to": "06:00"}]"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let err = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("tour night") && err.contains("every_min"),
            "{err}"
        );
    }

    #[test]
    fn a_tours_schedule_reads_in_words() {
        let c = scheduled();
        assert_eq!(
            c.tours[0].schedule_words(),
            "every 90 min 22:00-06:00, every night; at 23:00, 01:00, 03:00, 05:00 for 30 min, \
             Sat and Sun nights, grace 15 min"
        );
        assert_eq!(
            config().tours[0].schedule_words(),
            "1 one-off window, grace 10 min"
        );
        let mut none = config();
        none.tours[0].windows.clear();
        assert_eq!(none.tours[0].schedule_words(), "no windows");
    }

    #[test]
    fn tonights_windows_come_from_the_schedule_in_the_sites_zone() {
        let mut c = scheduled();
        c.tours[0].schedule.truncate(1);
        let tour = &c.tours[0];
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap_or_else(|e| panic!("{t}: {e}"))
                .timestamp_millis()
        };
        // Friday 10 July 2026, 23:40 BST (22:40Z): the rounds of 22:00 and 23:30 BST. cp-1 was
        // scanned at 23:35 BST (in the grace of the first), cp-2 at 22:10 and at 23:45.
        let now = at("2026-07-10T22:40:00Z");
        let scans = [
            (cp("cp-1"), at("2026-07-10T22:35:00Z")),
            (cp("cp-2"), at("2026-07-10T21:10:00Z")),
            (cp("cp-2"), at("2026-07-10T22:45:00Z")),
        ];
        let progress = tour_progress(tour, c.time_zone, &scans, now, tonight(now))
            .unwrap_or_else(|e| panic!("{e}"));
        // The span reaches back 24 hours, to 23:40 BST on Thursday: Thursday night's windows
        // from its 23:30 round on (23:30, 01:00, 02:30, 04:00, 05:30 BST).
        let tonight: Vec<&WindowProgress> = progress
            .iter()
            .filter(|w| {
                w.window.start_ms >= at("2026-07-10T21:00:00Z")
                    && w.window.end_ms <= at("2026-07-11T05:00:00Z")
            })
            .collect();
        assert_eq!(tonight.len(), 6, "Friday night's six");
        // And forward 24 hours, to 23:40 BST on Saturday: Saturday's 22:00 and 23:30 rounds.
        assert_eq!(progress.len(), 5 + 6 + 2);
        use CheckpointState::*;
        assert_eq!(tonight[0].window.start_ms, at("2026-07-10T21:00:00Z"));
        assert_eq!(
            tonight[0].checkpoints,
            [
                (
                    cp("cp-1"),
                    DoneLate {
                        at_ms: at("2026-07-10T22:35:00Z")
                    }
                ),
                (
                    cp("cp-2"),
                    Done {
                        at_ms: at("2026-07-10T21:10:00Z")
                    }
                ),
            ]
        );
        // The late scan of cp-1 counted for the first round only: the second still needs it.
        assert_eq!(
            tonight[1].checkpoints,
            [
                (cp("cp-1"), Due),
                (
                    cp("cp-2"),
                    Done {
                        at_ms: at("2026-07-10T22:45:00Z")
                    }
                ),
            ]
        );
        assert_eq!(tonight[2].checkpoints[0].1, Upcoming);
    }

    #[test]
    fn the_next_window_is_the_open_one_else_the_next_to_open() {
        let c = scheduled();
        let tour = &c.tours[0];
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap_or_else(|e| panic!("{t}: {e}"))
                .timestamp_millis()
        };
        // Wednesday 15 July 2026 (BST), midday: tonight's 22:00 BST round; at 00:10 BST, the
        // 23:30 round, still open.
        assert_eq!(
            tour.next_window(c.time_zone, at("2026-07-15T11:00:00Z")),
            Some(Window {
                start_ms: at("2026-07-15T21:00:00Z"),
                end_ms: at("2026-07-15T22:30:00Z")
            })
        );
        assert_eq!(
            tour.next_window(c.time_zone, at("2026-07-15T23:10:00Z"))
                .map(|w| w.start_ms),
            Some(at("2026-07-15T22:30:00Z"))
        );
        // A one-off window sooner than the schedule's is the next.
        let mut with_one_off = tour.clone();
        with_one_off.windows = vec![Window {
            start_ms: at("2026-07-15T12:00:00Z"),
            end_ms: at("2026-07-15T13:00:00Z"),
        }];
        assert_eq!(
            with_one_off
                .next_window(c.time_zone, at("2026-07-15T11:00:00Z"))
                .map(|w| w.start_ms),
            Some(at("2026-07-15T12:00:00Z"))
        );
        assert_eq!(
            config().tours[0].next_window(SiteZone::UTC, 3_000_000),
            None
        );
    }

    #[test]
    fn a_window_ends_just_before_its_end() {
        let tour = &config().tours[0];
        let windows = [Window {
            start_ms: 1_000_000,
            end_ms: 2_000_000,
        }];
        let state = |scan_at: i64| {
            progress_of_windows(tour, &windows, &[(cp("cp-1"), scan_at)], 3_000_000)[0].checkpoints
                [0]
            .1
        };
        assert_eq!(state(1_000_000), CheckpointState::Done { at_ms: 1_000_000 });
        assert_eq!(
            state(2_000_000),
            CheckpointState::DoneLate { at_ms: 2_000_000 }
        );
        assert_eq!(state(2_600_000), CheckpointState::Missed, "past the grace");
    }
}
