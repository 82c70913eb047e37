//! Patrol events: what a guard's phone records. An event is immutable once recorded; it is stored
//! in the shift log as one compact binary scalar (see [`EventRecord::encode`]) because immutable
//! records gain nothing from per-field CRDT operations and cost 2-3 times more as nested maps.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DecodeError, EncodeError, ValidationError};
use crate::hlc::Hlc;
use crate::ids::{CheckpointId, DeviceId, EventId, GuardId, IncidentId, ShiftId, SiteId};
use crate::incident::Attachment;
use crate::incident_view::AttachmentView;

/// Longest free text (notes, descriptions, reasons) accepted in one event.
pub const MAX_TEXT_LEN: usize = 4_096;
/// Longest NFC tag id or QR payload accepted.
pub const MAX_TAG_LEN: usize = 512;
/// Most files one note carries (a handful of photos of one scene; more go in more notes).
pub const MAX_NOTE_ATTACHMENTS: usize = 10;

/// Version byte in front of every encoded event record, so newer phones can add fields.
const RECORD_V1: u8 = 1;

/// A position fix. `accuracy_m` is the radius of the 68% confidence circle, as phones report it.
///
/// Recorded to 1e-7 degree (about 1 cm, the "E7" form of common location APIs): the binary
/// record stores whole multiples of 1e-7 degree, which is 2-3 times smaller than two `f64`s
/// once compressed; JSON shows degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f32>,
}

/// `Location` in JSON: degrees as numbers.
#[derive(Serialize, Deserialize)]
struct LocationDegrees {
    lat: f64,
    lon: f64,
    accuracy_m: Option<f32>,
}

/// `Location` in the binary record: 1e-7 degrees as integers.
#[derive(Serialize, Deserialize)]
struct LocationE7(i32, i32, Option<f32>);

fn to_e7(deg: f64) -> i32 {
    // Validated locations are within ±180°, so the product fits; out-of-range input saturates
    // (and fails validation anyway).
    (deg * 1e7).round() as i32
}

impl Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            LocationDegrees {
                lat: self.lat,
                lon: self.lon,
                accuracy_m: self.accuracy_m,
            }
            .serialize(s)
        } else {
            LocationE7(to_e7(self.lat), to_e7(self.lon), self.accuracy_m).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let l = LocationDegrees::deserialize(d)?;
            Ok(Location {
                lat: l.lat,
                lon: l.lon,
                accuracy_m: l.accuracy_m,
            })
        } else {
            let LocationE7(lat, lon, accuracy_m) = LocationE7::deserialize(d)?;
            Ok(Location {
                lat: f64::from(lat) / 1e7,
                lon: f64::from(lon) / 1e7,
                accuracy_m,
            })
        }
    }
}

impl Location {
    /// The location as the binary record keeps it (rounded to 1e-7 degree).
    pub fn recorded(&self) -> Location {
        Location {
            lat: f64::from(to_e7(self.lat)) / 1e7,
            lon: f64::from(to_e7(self.lon)) / 1e7,
            accuracy_m: self.accuracy_m,
        }
    }
}

impl Location {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon))
        {
            return Err(ValidationError::BadLocation {
                lat: self.lat,
                lon: self.lon,
            });
        }
        if let Some(acc) = self.accuracy_m
            && !(acc.is_finite() && acc >= 0.0)
        {
            return Err(ValidationError::BadAccuracy(acc));
        }
        Ok(())
    }
}

/// How a checkpoint was proven.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanMethod {
    Nfc {
        tag: String,
    },
    Qr {
        payload: String,
    },
    Gps,
    /// The tag could not be read; the guard says why.
    Manual {
        reason: String,
    },
}

/// A checkpoint scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    pub checkpoint: CheckpointId,
    pub method: ScanMethod,
    pub location: Option<Location>,
    pub note: Option<String>,
}

/// Incident categories a site reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentCategory {
    Theft,
    Shoplifting,
    Fraud,
    Robbery,
    Fighting,
    Provocation,
    /// Contradictions and disputes.
    Dispute,
    /// Fire or flammable material.
    Fire,
    Explosive,
    Toxic,
    Radioactive,
    Other,
}

impl IncidentCategory {
    pub const ALL: [IncidentCategory; 12] = [
        Self::Theft,
        Self::Shoplifting,
        Self::Fraud,
        Self::Robbery,
        Self::Fighting,
        Self::Provocation,
        Self::Dispute,
        Self::Fire,
        Self::Explosive,
        Self::Toxic,
        Self::Radioactive,
        Self::Other,
    ];
}

/// Parses the snake_case name a value has in JSON (`"shoplifting"`, `"critical"`).
fn parse_name<T: serde::de::DeserializeOwned>(
    what: &'static str,
    s: &str,
) -> Result<T, ValidationError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        ValidationError::BadId {
            what,
            reason: format!("{s:?} is not one of the known names"),
        }
    })
}

/// Writes the snake_case name a value has in JSON.
fn write_name<T: Serialize>(v: &T, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => f.write_str(&s),
        _ => Err(std::fmt::Error),
    }
}

impl std::fmt::Display for IncidentCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_name(self, f)
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_name(self, f)
    }
}

impl std::str::FromStr for IncidentCategory {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name("incident category", s)
    }
}

impl std::str::FromStr for Severity {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_name("severity", s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// The first report of an incident, as recorded in the reporting guard's shift log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentReport {
    pub incident: IncidentId,
    pub category: IncidentCategory,
    pub severity: Severity,
    pub description: String,
    pub location: Option<Location>,
}

/// What happened. Serialised externally tagged so the binary encoding needs no field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    ShiftStarted,
    ShiftEnded {
        note: Option<String>,
    },
    CheckpointScanned(Scan),
    IncidentReported(IncidentReport),
    Panic {
        location: Option<Location>,
    },
    Note {
        text: String,
    },
    Handover {
        to_guard: Option<GuardId>,
        text: String,
    },
    /// The guard started (or reset) a lone-worker safety timer: they must check in within
    /// `every_min` minutes of this and of each check-in ([`crate::checkin`]).
    CheckInTimerStarted {
        every_min: u32,
    },
    /// The guard checked in: the timer's next deadline runs from here.
    CheckedIn,
    /// The guard stopped the timer.
    CheckInTimerStopped,
    /// The phone found a check-in missed: nobody checked in by `due_ms` (its own clock).
    CheckInMissed {
        due_ms: i64,
    },
    /// A note with files attached (photos, short videos, audio recordings): the log holds
    /// their references, the phone uploads the bytes once the note is delivered. Its kind is
    /// `note`, like a plain [`EventBody::Note`]; the text may be empty when files say it all.
    NoteWithAttachments {
        text: String,
        attachments: Vec<Attachment>,
    },
}

impl EventBody {
    /// The event kind as the control-room API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::ShiftStarted => "shift_started",
            EventBody::ShiftEnded { .. } => "shift_ended",
            EventBody::CheckpointScanned(_) => "checkpoint_scanned",
            EventBody::IncidentReported(_) => "incident_reported",
            EventBody::Panic { .. } => "panic",
            EventBody::Note { .. } => "note",
            EventBody::Handover { .. } => "handover",
            EventBody::CheckInTimerStarted { .. } => "checkin_timer_started",
            EventBody::CheckedIn => "checked_in",
            EventBody::CheckInTimerStopped => "checkin_timer_stopped",
            EventBody::CheckInMissed { .. } => "checkin_missed",
            EventBody::NoteWithAttachments { .. } => "note",
        }
    }

    /// Every kind's name, as [`EventBody::kind`] gives it.
    pub const KINDS: [&'static str; 11] = [
        "shift_started",
        "shift_ended",
        "checkpoint_scanned",
        "incident_reported",
        "panic",
        "note",
        "handover",
        "checkin_timer_started",
        "checked_in",
        "checkin_timer_stopped",
        "checkin_missed",
    ];

    /// The body as a record keeps it (locations rounded to 1e-7 degree), for comparing a
    /// retried call with what was recorded.
    pub fn as_recorded(&self) -> Result<EventBody, EncodeError> {
        let bytes = postcard::to_stdvec(self)?;
        postcard::from_bytes(&bytes).map_err(EncodeError::from)
    }

    /// The checkpoint a scan names, for indexing.
    pub fn checkpoint(&self) -> Option<&CheckpointId> {
        match self {
            EventBody::CheckpointScanned(scan) => Some(&scan.checkpoint),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        fn text(field: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
            if s.len() > max {
                return Err(ValidationError::TooLong {
                    field,
                    len: s.len(),
                    max,
                });
            }
            Ok(())
        }
        fn non_empty(field: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
            if s.trim().is_empty() {
                return Err(ValidationError::Empty { field });
            }
            text(field, s, max)
        }
        fn loc(l: &Option<Location>) -> Result<(), ValidationError> {
            l.as_ref().map_or(Ok(()), Location::validate)
        }
        match self {
            EventBody::ShiftStarted => Ok(()),
            EventBody::ShiftEnded { note } => {
                text("note", note.as_deref().unwrap_or(""), MAX_TEXT_LEN)
            }
            EventBody::CheckpointScanned(scan) => {
                match &scan.method {
                    ScanMethod::Nfc { tag } => non_empty("NFC tag", tag, MAX_TAG_LEN)?,
                    ScanMethod::Qr { payload } => non_empty("QR payload", payload, MAX_TAG_LEN)?,
                    ScanMethod::Gps => {
                        if scan.location.is_none() {
                            return Err(ValidationError::Empty {
                                field: "location of a GPS scan",
                            });
                        }
                    }
                    ScanMethod::Manual { reason } => {
                        non_empty("reason for a manual scan", reason, MAX_TEXT_LEN)?
                    }
                }
                text("note", scan.note.as_deref().unwrap_or(""), MAX_TEXT_LEN)?;
                loc(&scan.location)
            }
            EventBody::IncidentReported(report) => {
                non_empty("description", &report.description, MAX_TEXT_LEN)?;
                loc(&report.location)
            }
            EventBody::Panic { location } => loc(location),
            EventBody::Note { text: t } => non_empty("note", t, MAX_TEXT_LEN),
            EventBody::Handover { text: t, .. } => non_empty("handover note", t, MAX_TEXT_LEN),
            EventBody::CheckInTimerStarted { every_min } => {
                crate::checkin::validate_every_min(*every_min)
            }
            EventBody::CheckedIn
            | EventBody::CheckInTimerStopped
            | EventBody::CheckInMissed { .. } => Ok(()),
            EventBody::NoteWithAttachments {
                text: t,
                attachments,
            } => {
                text("note", t, MAX_TEXT_LEN)?;
                if attachments.is_empty() || attachments.len() > MAX_NOTE_ATTACHMENTS {
                    return Err(ValidationError::OutOfRange {
                        field: "number of files on a note",
                        value: attachments.len() as i64,
                        min: 1,
                        max: MAX_NOTE_ATTACHMENTS as i64,
                    });
                }
                attachments.iter().try_for_each(Attachment::validate)
            }
        }
    }
}

/// The clocks read when an event was recorded. Wall time can be wrong or jump; the monotonic
/// reading (milliseconds since boot, with the boot's id) orders events within one boot; the
/// hybrid logical clock orders them causally across devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTime {
    /// Device wall clock, milliseconds since the Unix epoch.
    pub wall_ms: i64,
    pub boot_id: Uuid,
    pub mono_ms: u64,
    pub hlc: Hlc,
}

impl DeviceTime {
    pub fn wall(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.wall_ms)
    }
}

/// What one map entry of a shift log holds: an event minus the context its document already
/// names (site, device, shift, guard), so that context is not repeated in every record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Per-device sequence number, from 1, gap-free on one device. The server keeps it as the
    /// event's `device_seq` without checking it for gaps (the feed's own `seq` is the server's).
    pub seq: u64,
    pub time: DeviceTime,
    /// Version of the site configuration in force when recorded.
    pub config_version: u64,
    pub body: EventBody,
}

impl EventRecord {
    /// The compact binary form stored as the event's scalar value: a version byte, then postcard.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        crate::codec::encode_versioned(RECORD_V1, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::codec::decode_versioned(RECORD_V1, bytes)
    }
}

/// A whole event: the record plus the context of the shift log it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub site: SiteId,
    pub device: DeviceId,
    pub shift: ShiftId,
    pub guard: GuardId,
    pub record: EventRecord,
}

impl Event {
    /// The event as the control-room API shows it: flat JSON, `kind` naming the body's fields.
    /// `received_at` and `seq` are the server's (absent on a phone's local log).
    pub fn to_json(&self, server: Option<(u64, DateTime<Utc>)>) -> serde_json::Value {
        use serde_json::{Map, Value, json};
        let r = &self.record;
        let mut obj = Map::new();
        if let Some((seq, _)) = server {
            obj.insert("seq".into(), json!(seq));
        }
        obj.insert("id".into(), json!(self.id));
        obj.insert("kind".into(), json!(r.body.kind()));
        obj.insert("site_id".into(), json!(self.site));
        obj.insert("device_id".into(), json!(self.device));
        obj.insert("guard_id".into(), json!(self.guard));
        obj.insert("shift_id".into(), json!(self.shift));
        obj.insert("device_seq".into(), json!(r.seq));
        obj.insert("device_time".into(), json!(format_time_ms(r.time.wall_ms)));
        obj.insert("boot_id".into(), json!(r.time.boot_id));
        obj.insert("mono_ms".into(), json!(r.time.mono_ms));
        obj.insert("hlc".into(), json!(r.time.hlc));
        obj.insert("config_version".into(), json!(r.config_version));
        if let Some((_, received)) = server {
            obj.insert(
                "received_at".into(),
                json!(received.to_rfc3339_opts(SecondsFormat::Millis, true)),
            );
        }
        // The body is externally tagged ({"checkpoint_scanned": {...}}); lift its fields up.
        if let Ok(Value::Object(tagged)) = serde_json::to_value(&r.body) {
            for (_, inner) in tagged {
                match inner {
                    Value::Object(fields) => obj.extend(fields),
                    other => {
                        obj.insert("body".into(), other);
                    }
                }
            }
        }
        // Files are named by their hash in hex, as everywhere the API shows them (serde would
        // give 32 numbers).
        if let EventBody::NoteWithAttachments { attachments, .. } = &r.body {
            let views: Vec<AttachmentView<'_>> =
                attachments.iter().map(AttachmentView::new).collect();
            obj.insert("attachments".into(), json!(views));
        }
        Value::Object(obj)
    }
}

/// RFC 3339 with milliseconds, UTC (`2025-03-01T22:00:00.000Z`); the number itself for a time
/// out of chrono's range.
pub fn format_time_ms(ms: i64) -> String {
    try_format_time_ms(ms).unwrap_or_else(|| ms.to_string())
}

/// [`format_time_ms`], or `None` for a time out of chrono's range.
pub fn try_format_time_ms(ms: i64) -> Option<String> {
    DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_record(seq: u64) -> EventRecord {
        EventRecord {
            seq,
            time: DeviceTime {
                wall_ms: 1_740_866_400_000,
                boot_id: Uuid::nil(),
                mono_ms: 42,
                hlc: Hlc {
                    wall_ms: 1_740_866_400_000,
                    counter: 0,
                },
            },
            config_version: 3,
            body: EventBody::CheckpointScanned(Scan {
                checkpoint: CheckpointId::new("cp-12").unwrap_or_else(|e| panic!("{e}")),
                method: ScanMethod::Nfc {
                    tag: "04:A2:2B".into(),
                },
                location: Some(Location {
                    lat: 51.512751,
                    lon: -0.124974,
                    accuracy_m: Some(8.0),
                }),
                note: None,
            }),
        }
    }

    #[test]
    fn record_round_trips_and_is_compact() {
        let r = sample_record(7);
        let bytes = r.encode().unwrap_or_else(|e| panic!("{e}"));
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        assert_eq!(EventRecord::decode(&bytes), Ok(r));
    }

    #[test]
    fn locations_keep_seven_decimals_exactly() {
        for (lat, lon) in [
            (51.512751, -0.124974),
            (-33.8688197, 151.2092955),
            (90.0, -180.0),
        ] {
            let l = Location {
                lat,
                lon,
                accuracy_m: Some(4.5),
            };
            let bytes = postcard::to_stdvec(&l).unwrap_or_default();
            let back: Location = postcard::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, l, "{lat} {lon}");
            assert_eq!(l.recorded(), l);
        }
        let fine = Location {
            lat: 51.51275149,
            lon: 0.0,
            accuracy_m: None,
        };
        assert_eq!(fine.recorded().lat, 51.5127515);
        let json = serde_json::to_value(fine).unwrap_or_default();
        assert_eq!(json["lat"], 51.51275149);
    }

    #[test]
    fn record_decode_rejects_garbage() {
        assert_eq!(EventRecord::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            EventRecord::decode(&[9, 1, 2]),
            Err(DecodeError::UnknownVersion(9))
        );
        let mut bytes = sample_record(1).encode().unwrap_or_else(|e| panic!("{e}"));
        bytes.truncate(bytes.len() - 3);
        assert!(EventRecord::decode(&bytes).is_err());
        let mut bytes = sample_record(1).encode().unwrap_or_else(|e| panic!("{e}"));
        bytes.push(0);
        assert!(EventRecord::decode(&bytes).is_err());
    }

    #[test]
    fn validation_catches_bad_bodies() {
        let gps_without_fix = EventBody::CheckpointScanned(Scan {
            checkpoint: CheckpointId::new("cp-1").unwrap_or_else(|e| panic!("{e}")),
            method: ScanMethod::Gps,
            location: None,
            note: None,
        });
        assert!(gps_without_fix.validate().is_err());
        assert!(EventBody::Note { text: "  ".into() }.validate().is_err());
        let far = EventBody::Panic {
            location: Some(Location {
                lat: 91.0,
                lon: 0.0,
                accuracy_m: None,
            }),
        };
        assert!(far.validate().is_err());
        assert!(sample_record(1).body.validate().is_ok());
    }

    #[test]
    fn a_note_carries_one_to_ten_files_and_stays_a_note() {
        let photo = |n: u8| Attachment {
            sha256: [n; 32],
            media_type: "image/jpeg".into(),
            size: 1_000,
            name: Some(format!("door-{n}.jpg")),
        };
        let note = |text: &str, files: Vec<Attachment>| EventBody::NoteWithAttachments {
            text: text.into(),
            attachments: files,
        };
        // A photo may say it all; the kind is the plain note's.
        let ok = note("", vec![photo(1)]);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.kind(), "note");
        assert!(note("x", vec![]).validate().is_err());
        let eleven = (0..11).map(photo).collect();
        assert!(
            note("x", eleven)
                .validate()
                .is_err_and(|e| e.to_string().contains("1 to 10"))
        );
        let mut unnamed_type = photo(2);
        unnamed_type.media_type = " ".into();
        assert!(note("x", vec![unnamed_type]).validate().is_err());
        // The record's encoding keeps every reference.
        let mut record = sample_record(3);
        record.body = note("broken window", vec![photo(4), photo(5)]);
        let bytes = record.encode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(EventRecord::decode(&bytes), Ok(record));
    }

    #[test]
    fn json_view_is_flat_and_names_the_kind() {
        let ev = Event {
            id: EventId(Uuid::nil()),
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            device: DeviceId(Uuid::nil()),
            shift: ShiftId(Uuid::nil()),
            guard: GuardId::new("guard-1").unwrap_or_else(|e| panic!("{e}")),
            record: sample_record(1),
        };
        let v = ev.to_json(None);
        assert_eq!(v["kind"], "checkpoint_scanned");
        assert_eq!(v["checkpoint"], "cp-12");
        assert_eq!(v["method"]["nfc"]["tag"], "04:A2:2B");
        assert_eq!(v["device_time"], "2025-03-01T22:00:00.000Z");
        assert!(v.get("received_at").is_none());
    }
}
