//! An event's feed JSON, written directly: byte for byte what
//! `serde_json::to_string(&event.to_json(Some((seq, received_at))))` gives with the server's
//! [`Stamp`] (`corrected_time` and `flags`) added (checked by the tests below for every kind of
//! event), without building the `serde_json::Value` tree. The SQLite
//! store keeps each event's binary record, not its JSON, and renders the JSON here each time it
//! serves the event; the PostgreSQL store renders it once, when the event arrives.
//!
//! `Event::to_json` builds a map: the event's own fields plus the body's fields lifted to the
//! top (no body field has the name of an event field), which serde_json writes compactly in key
//! order (its map is a `BTreeMap`). Here every field any event can have is written in that order,
//! each only if this event has it, straight into the output. Scalars, strings and single-key
//! enums are written by `serde_json::to_writer` from their typed value, which gives exactly what
//! writing them through a `Value` gives; the two nested objects whose `Value` form differs from
//! their direct form (keys in order, `f32` widened to `f64`) are written by hand: [`Location`]
//! and [`Hlc`]. Destructuring is exhaustive, so a field or kind added to an event fails to compile
//! here.

use std::io::Write as _;

use patrol_core::clock::corrected_time_ms;
use patrol_core::event::{
    IncidentCategory, IncidentReport, Location, Scan, ScanMethod, Severity, format_time_ms,
    try_format_time_ms,
};
use patrol_core::flags::EventFlag;
use patrol_core::incident::Attachment;
use patrol_core::incident_view::AttachmentView;
use patrol_core::{CheckpointId, Event, EventBody, EventRecord, GuardId, Hlc, IncidentId};

use super::StoreError;

/// What the server adds to an event when it receives it, computed once then and stored with
/// the event: its corrected time and its flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub corrected_ms: i64,
    pub flags: Vec<EventFlag>,
}

impl Stamp {
    /// The stamp of an event as stored: its `corrected_ms` and `flags` columns, both `NULL`
    /// for an event stored before they existed. The offset of the sync that delivered such an
    /// event was never recorded, and the device's skew kept since is that of its latest sync,
    /// which may follow a clock fix: its corrected time is its device time bounded by its
    /// receipt (the rule with no offset), and it has no flags.
    pub fn stored(
        corrected_ms: Option<i64>,
        flags: Option<&str>,
        device_ms: i64,
        received_ms: i64,
    ) -> Result<Stamp, StoreError> {
        let flags = match flags {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| StoreError::CorruptData(format!("stored event flags: {e}")))?,
            None => Vec::new(),
        };
        Ok(Stamp {
            corrected_ms: corrected_ms
                .unwrap_or_else(|| corrected_time_ms(device_ms, 0, received_ms)),
            flags,
        })
    }

    /// The flags as stored ([`flags_json`]).
    pub fn flags_json(&self) -> Result<Option<String>, StoreError> {
        flags_json(&self.flags)
    }
}

/// Flags as stored: a JSON array, or `None` when there are none (most events).
pub fn flags_json(flags: &[EventFlag]) -> Result<Option<String>, StoreError> {
    if flags.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(flags)
        .map(Some)
        .map_err(|e| StoreError::Encode(e.to_string()))
}

/// The feed JSON of a stored event (stamped when it arrived) with its flags replaced by
/// `flags`: parsed and written again, which gives the same bytes a fresh render with those
/// flags does (keys in order, compact).
pub fn with_flags(json: &str, flags: &[EventFlag]) -> Result<String, String> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    fields.insert(
        "flags".into(),
        serde_json::to_value(flags).map_err(|e| e.to_string())?,
    );
    serde_json::to_string(&fields).map_err(|e| e.to_string())
}

/// The feed JSON of an event stored as JSON before corrected times existed, with its stamp
/// added: parsed and written again, which gives the same bytes a fresh render does (keys in
/// order, compact).
pub fn with_stamp(json: &str, stamp: &Stamp) -> Result<String, String> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| e.to_string())?;
    fields.insert(
        "corrected_time".into(),
        format_time_ms(stamp.corrected_ms).into(),
    );
    fields.insert(
        "flags".into(),
        serde_json::to_value(&stamp.flags).map_err(|e| e.to_string())?,
    );
    serde_json::to_string(&fields).map_err(|e| e.to_string())
}

/// Renders events as the feed serves them, one after the other: the text of the last receive
/// time (shared by every event of a sync request) is kept from one to the next.
#[derive(Debug, Default)]
pub struct FeedRenderer {
    received: Option<(i64, String)>,
}

impl FeedRenderer {
    /// The feed JSON of `event`, with its server `seq`, the time the server received it and
    /// what the server stamped it with.
    pub fn render(
        &mut self,
        event: &Event,
        seq: u64,
        received_at_ms: i64,
        stamp: &Stamp,
    ) -> Result<String, String> {
        let received_at = match &mut self.received {
            Some((ms, text)) if *ms == received_at_ms => text,
            slot => {
                let text = try_format_time_ms(received_at_ms)
                    .ok_or_else(|| format!("receive time {received_at_ms} out of range"))?;
                &slot.insert((received_at_ms, text)).1
            }
        };
        event_json(event, seq, received_at, stamp).map_err(|e| e.to_string())
    }
}

/// The fields a body lifts to the top of its event's JSON: `None` where its kind has no such
/// field.
#[derive(Default)]
struct BodyFields<'a> {
    attachments: Option<&'a Vec<Attachment>>,
    category: Option<&'a IncidentCategory>,
    checkpoint: Option<&'a CheckpointId>,
    description: Option<&'a String>,
    due_ms: Option<&'a i64>,
    every_min: Option<&'a u32>,
    incident: Option<&'a IncidentId>,
    location: Option<&'a Option<Location>>,
    method: Option<&'a ScanMethod>,
    note: Option<&'a Option<String>>,
    severity: Option<&'a Severity>,
    text: Option<&'a String>,
    to_guard: Option<&'a Option<GuardId>>,
}

impl<'a> BodyFields<'a> {
    /// A kind without fields serializes as a bare string, which `to_json` does not lift.
    fn of(body: &'a EventBody) -> Self {
        match body {
            EventBody::ShiftStarted => Self::default(),
            EventBody::ShiftEnded { note } => Self {
                note: Some(note),
                ..Self::default()
            },
            EventBody::CheckpointScanned(Scan {
                checkpoint,
                method,
                location,
                note,
            }) => Self {
                checkpoint: Some(checkpoint),
                method: Some(method),
                location: Some(location),
                note: Some(note),
                ..Self::default()
            },
            EventBody::IncidentReported(IncidentReport {
                incident,
                category,
                severity,
                description,
                location,
            }) => Self {
                incident: Some(incident),
                category: Some(category),
                severity: Some(severity),
                description: Some(description),
                location: Some(location),
                ..Self::default()
            },
            EventBody::Panic { location } => Self {
                location: Some(location),
                ..Self::default()
            },
            EventBody::Note { text } => Self {
                text: Some(text),
                ..Self::default()
            },
            EventBody::Handover { to_guard, text } => Self {
                to_guard: Some(to_guard),
                text: Some(text),
                ..Self::default()
            },
            EventBody::CheckInTimerStarted { every_min } => Self {
                every_min: Some(every_min),
                ..Self::default()
            },
            EventBody::CheckInMissed { due_ms } => Self {
                due_ms: Some(due_ms),
                ..Self::default()
            },
            EventBody::CheckedIn | EventBody::CheckInTimerStopped => Self::default(),
            EventBody::NoteWithAttachments { text, attachments } => Self {
                text: Some(text),
                attachments: Some(attachments),
                ..Self::default()
            },
        }
    }
}

/// Writes `event` as the feed serves it, with its server `seq`, `received_at` (already
/// formatted, e.g. `2025-03-01T23:10:04.512Z`) and stamp.
fn event_json(
    event: &Event,
    seq: u64,
    received_at: &str,
    stamp: &Stamp,
) -> Result<String, serde_json::Error> {
    let Event {
        id,
        site,
        device,
        shift,
        guard,
        record,
    } = event;
    let EventRecord {
        seq: device_seq,
        time,
        config_version,
        body,
    } = record;
    let b = BodyFields::of(body);
    let mut w = Writer(Vec::with_capacity(768));
    // Every field in key order.
    if let Some(attachments) = b.attachments {
        // Through a `Value`, as `to_json` builds it: keys in order (a note's few files only).
        let views: Vec<AttachmentView<'_>> = attachments.iter().map(AttachmentView::new).collect();
        w.put("attachments", &serde_json::to_value(views)?)?;
    }
    w.uuid("boot_id", &time.boot_id);
    w.some("category", b.category)?;
    w.some("checkpoint", b.checkpoint)?;
    w.put("config_version", config_version)?;
    w.plain_str("corrected_time", &format_time_ms(stamp.corrected_ms));
    w.some("description", b.description)?;
    w.uuid("device_id", &device.0);
    w.put("device_seq", device_seq)?;
    w.plain_str("device_time", &format_time_ms(time.wall_ms));
    w.some("due_ms", b.due_ms)?;
    w.some("every_min", b.every_min)?;
    w.flags("flags", &stamp.flags)?;
    w.put("guard_id", guard)?;
    w.hlc("hlc", &time.hlc)?;
    w.uuid("id", &id.0);
    if let Some(incident) = b.incident {
        w.uuid("incident", &incident.0);
    }
    w.put("kind", body.kind())?;
    if let Some(location) = b.location {
        w.location("location", location)?;
    }
    w.some("method", b.method)?;
    w.put("mono_ms", &time.mono_ms)?;
    w.some("note", b.note)?;
    w.plain_str("received_at", received_at);
    w.put("seq", &seq)?;
    w.some("severity", b.severity)?;
    w.uuid("shift_id", &shift.0);
    w.put("site_id", site)?;
    w.some("text", b.text)?;
    w.some("to_guard", b.to_guard)?;
    w.0.push(b'}');
    // Only serde_json's output and ASCII went in.
    String::from_utf8(w.0).map_err(serde::ser::Error::custom)
}

/// The object being written: `{` and the fields so far, comma-separated.
struct Writer(Vec<u8>);

impl Writer {
    fn key(&mut self, name: &str) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        self.0.push(b'"');
        // Field names are plain ASCII identifiers: nothing to escape.
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    /// A string that needs no escaping (ASCII letters, digits and punctuation other than `"`
    /// and `\\`): a time this module or chrono formatted.
    fn plain_str(&mut self, name: &str, value: &str) {
        self.key(name);
        self.0.push(b'"');
        self.0.extend_from_slice(value.as_bytes());
        self.0.push(b'"');
    }

    /// A UUID as serde writes it: hyphenated, lower case.
    fn uuid(&mut self, name: &str, value: &uuid::Uuid) {
        self.key(name);
        self.0.push(b'"');
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.0
            .extend_from_slice(value.hyphenated().encode_lower(&mut buf).as_bytes());
        self.0.push(b'"');
    }

    fn put<T: serde::Serialize + ?Sized>(
        &mut self,
        name: &str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.key(name);
        serde_json::to_writer(&mut self.0, value)
    }

    fn some<T: serde::Serialize>(
        &mut self,
        name: &str,
        value: Option<&T>,
    ) -> Result<(), serde_json::Error> {
        match value {
            Some(value) => self.put(name, value),
            None => Ok(()),
        }
    }

    /// `[]`, or each flag as its `Value` form writes it (keys in order); few events have any.
    fn flags(&mut self, name: &str, flags: &[EventFlag]) -> Result<(), serde_json::Error> {
        self.key(name);
        if flags.is_empty() {
            self.0.extend_from_slice(b"[]");
            Ok(())
        } else {
            serde_json::to_writer(&mut self.0, &serde_json::to_value(flags)?)
        }
    }

    /// `{"counter":..,"wall_ms":..}`: the `Value` form of [`Hlc`] has its keys in order.
    fn hlc(&mut self, name: &str, hlc: &Hlc) -> Result<(), serde_json::Error> {
        let Hlc { wall_ms, counter } = hlc;
        self.key(name);
        write!(self.0, "{{\"counter\":{counter},\"wall_ms\":{wall_ms}}}")
            .map_err(serde_json::Error::io)
    }

    /// `null` or `{"accuracy_m":..,"lat":..,"lon":..}`: the `Value` form of a [`Location`] (in
    /// degrees, as human-readable formats get it) has its keys in order and its `f32` accuracy
    /// widened to `f64`.
    fn location(
        &mut self,
        name: &str,
        location: &Option<Location>,
    ) -> Result<(), serde_json::Error> {
        self.key(name);
        match location {
            None => self.0.extend_from_slice(b"null"),
            Some(Location {
                lat,
                lon,
                accuracy_m,
            }) => {
                self.0.extend_from_slice(b"{\"accuracy_m\":");
                serde_json::to_writer(&mut self.0, &accuracy_m.map(f64::from))?;
                self.0.extend_from_slice(b",\"lat\":");
                serde_json::to_writer(&mut self.0, lat)?;
                self.0.extend_from_slice(b",\"lon\":");
                serde_json::to_writer(&mut self.0, lon)?;
                self.0.push(b'}');
            }
        }
        Ok(())
    }
}

/// Whether a stored event's JSON matches a feed filter (the generic path of
/// [`super::Store::events_filtered`]).
pub fn matches(json: &str, filter: &super::FeedFilter) -> Result<bool, super::StoreError> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| super::StoreError::CorruptData(format!("stored event JSON: {e}")))?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str());
    let same = |want: &Option<String>, k: &str| want.as_deref().is_none_or(|w| text(k) == Some(w));
    let time_ok = if filter.from_ms.is_some() || filter.to_ms.is_some() {
        let at = text("corrected_time")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        match at {
            Some(at) => {
                filter.from_ms.is_none_or(|f| at >= f) && filter.to_ms.is_none_or(|t| at < t)
            }
            None => false,
        }
    } else {
        true
    };
    let flag_ok = filter.flag.as_deref().is_none_or(|want| {
        v.get("flags")
            .and_then(|f| f.as_array())
            .is_some_and(|flags| {
                flags
                    .iter()
                    .any(|f| f.get("flag").and_then(|n| n.as_str()) == Some(want))
            })
    });
    Ok(time_ok
        && flag_ok
        && same(&filter.guard, "guard_id")
        && same(&filter.device, "device_id")
        && same(&filter.kind, "kind")
        && same(&filter.checkpoint, "checkpoint"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use patrol_core::{DeviceId, DeviceTime, EventId, ShiftId, SiteId};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn event(seq: u64, body: EventBody) -> Result<Event, Box<dyn std::error::Error>> {
        Ok(Event {
            id: EventId::generate(),
            site: SiteId::new("site-1")?,
            device: DeviceId::generate(),
            shift: ShiftId::generate(),
            guard: GuardId::new("guard.7:x")?,
            record: EventRecord {
                seq,
                time: DeviceTime {
                    wall_ms: 1_740_866_400_000 + seq as i64 * 1_001,
                    boot_id: uuid::Uuid::new_v4(),
                    mono_ms: seq * 977,
                    hlc: Hlc {
                        wall_ms: u64::MAX - seq,
                        counter: u32::MAX - seq as u32,
                    },
                },
                config_version: seq * 3,
                body,
            },
        })
    }

    fn bodies() -> Result<Vec<EventBody>, Box<dyn std::error::Error>> {
        let odd = "a \"quoted\" \\ back\nslash\t\u{1} é ✓ 🚓 </script>".to_string();
        let locations = [
            None,
            Some(Location {
                lat: 51.512751,
                lon: -0.124974,
                accuracy_m: None,
            }),
            Some(Location {
                lat: -89.9999999,
                lon: 180.0,
                accuracy_m: Some(8.1),
            }),
            Some(Location {
                lat: 0.0,
                lon: -0.0,
                accuracy_m: Some(0.0),
            }),
            Some(Location {
                lat: 1e-7,
                lon: 123.456789,
                accuracy_m: Some(1e30),
            }),
        ];
        let methods = [
            ScanMethod::Gps,
            ScanMethod::Nfc {
                tag: "04:A2:2B".into(),
            },
            ScanMethod::Qr {
                payload: odd.clone(),
            },
            ScanMethod::Manual {
                reason: "tag broken".into(),
            },
        ];
        let mut out = vec![
            EventBody::ShiftStarted,
            EventBody::ShiftEnded { note: None },
            EventBody::ShiftEnded {
                note: Some(odd.clone()),
            },
            EventBody::Note { text: odd.clone() },
            EventBody::Handover {
                to_guard: None,
                text: "keys".into(),
            },
            EventBody::Handover {
                to_guard: Some(GuardId::new("guard-2")?),
                text: odd.clone(),
            },
            EventBody::CheckInTimerStarted { every_min: 30 },
            EventBody::CheckedIn,
            EventBody::CheckInTimerStopped,
            EventBody::CheckInMissed {
                due_ms: 1_740_870_000_000,
            },
            EventBody::NoteWithAttachments {
                text: String::new(),
                attachments: vec![
                    patrol_core::incident::Attachment {
                        sha256: [0xab; 32],
                        media_type: "image/jpeg".into(),
                        size: 2_400_000,
                        name: Some(odd.clone()),
                    },
                    patrol_core::incident::Attachment {
                        sha256: [0; 32],
                        media_type: "audio/ogg".into(),
                        size: 0,
                        name: None,
                    },
                ],
            },
        ];
        for (i, location) in locations.iter().enumerate() {
            out.push(EventBody::Panic {
                location: *location,
            });
            for (j, method) in methods.iter().enumerate() {
                out.push(EventBody::CheckpointScanned(Scan {
                    checkpoint: CheckpointId::new(format!("cp-{i}-{j}"))?,
                    method: method.clone(),
                    location: *location,
                    note: (j % 2 == 0).then(|| odd.clone()),
                }));
            }
            for (k, category) in IncidentCategory::ALL.iter().enumerate() {
                out.push(EventBody::IncidentReported(IncidentReport {
                    incident: IncidentId::generate(),
                    category: *category,
                    severity: [
                        Severity::Low,
                        Severity::Medium,
                        Severity::High,
                        Severity::Critical,
                    ][k % 4],
                    description: odd.clone(),
                    location: *location,
                }));
            }
        }
        Ok(out)
    }

    /// Every kind of event, with and without its optional fields, odd text and floats, and
    /// sequence numbers of every width: the same bytes as `Event::to_json`.
    #[test]
    fn the_json_is_to_json_byte_for_byte() -> TestResult {
        let mut renderer = FeedRenderer::default();
        let stamps = [
            Stamp::default(),
            Stamp {
                corrected_ms: 1_740_866_399_999,
                flags: vec![EventFlag::ClockSkew {
                    offset_ms: -10_800_000,
                }],
            },
            Stamp {
                corrected_ms: i64::MIN,
                flags: vec![EventFlag::ClockSkew {
                    offset_ms: i64::MAX,
                }],
            },
        ];
        for received_ms in [0, 1_740_866_401_234, 253_402_300_799_999] {
            let received = DateTime::from_timestamp_millis(received_ms).ok_or("time")?;
            for (n, body) in bodies()?.into_iter().enumerate() {
                let event = event(n as u64 + 1, body)?;
                for (seq, stamp) in [0, 7, 10, 12_345, u64::MAX]
                    .into_iter()
                    .zip(stamps.iter().cycle())
                {
                    let unstamped = serde_json::to_string(&event.to_json(Some((seq, received))))?;
                    let expected = with_stamp(&unstamped, stamp)?;
                    assert_eq!(renderer.render(&event, seq, received_ms, stamp)?, expected);
                }
            }
        }
        Ok(())
    }

    /// The stamp added to JSON stored before stamps existed sits where a fresh render puts it,
    /// and a stored stamp reads back: its flags from their JSON, a missing corrected time as
    /// the device time bounded by the receipt.
    #[test]
    fn stamps_are_added_and_read_back() -> TestResult {
        let stamp = Stamp {
            corrected_ms: 1_740_866_400_000,
            flags: vec![EventFlag::ClockSkew { offset_ms: 121_000 }],
        };
        let json = with_stamp(
            r#"{"config_version":1,"device_time":"x","guard_id":"g"}"#,
            &stamp,
        )?;
        assert_eq!(
            json,
            r#"{"config_version":1,"corrected_time":"2025-03-01T22:00:00.000Z","device_time":"x","flags":[{"flag":"clock_skew","offset_ms":121000}],"guard_id":"g"}"#
        );
        let flags = stamp.flags_json()?;
        assert_eq!(
            Stamp::stored(Some(stamp.corrected_ms), flags.as_deref(), 0, 0)?,
            stamp
        );
        assert_eq!(Stamp::default().flags_json()?, None);
        assert_eq!(
            Stamp::stored(None, None, 5, 9)?,
            Stamp {
                corrected_ms: 5,
                flags: vec![]
            }
        );
        assert_eq!(Stamp::stored(None, None, 9, 5)?.corrected_ms, 5);
        assert!(Stamp::stored(None, Some("[{\"flag\":\"nope\"}]"), 0, 0).is_err());
        Ok(())
    }

    /// A receive time chrono cannot represent is an error, not a wrong date.
    #[test]
    fn a_receive_time_out_of_range_is_an_error() -> TestResult {
        let event = event(1, EventBody::ShiftStarted)?;
        let mut renderer = FeedRenderer::default();
        assert!(
            renderer
                .render(&event, 1, i64::MAX, &Stamp::default())
                .is_err()
        );
        Ok(())
    }
}
