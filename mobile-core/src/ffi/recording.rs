//! Recording on a shift: starting and ending it, checkpoint scans, notes, handovers, and the
//! local log; and the path every recording takes (`PatrolDevice::record`: the store, then the
//! observer).

use patrol_core::{CheckpointId, EventBody, EventId, GuardId, Scan, ScanMethod, ShiftId};

use super::device::{PatrolDevice, lock};
use super::error::{FfiResult, PatrolError};
use super::observer::notify;
use super::records::{FfiEvent, FfiLocation, parse_uuid_id};
use crate::error::Error;
use crate::store::{DeviceStore, NewFile, RecordOptions, ShiftInfo};

/// How a checkpoint was proven.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiScanMethod {
    /// The checkpoint's NFC tag was read; `tag` is its id as read.
    Nfc { tag: String },
    /// The checkpoint's QR code was read.
    Qr { payload: String },
    /// The phone's position proves the visit (a location is then required).
    Gps,
    /// The tag could not be read; the guard says why.
    Manual { reason: String },
}

impl From<FfiScanMethod> for ScanMethod {
    fn from(m: FfiScanMethod) -> Self {
        match m {
            FfiScanMethod::Nfc { tag } => ScanMethod::Nfc { tag },
            FfiScanMethod::Qr { payload } => ScanMethod::Qr { payload },
            FfiScanMethod::Gps => ScanMethod::Gps,
            FfiScanMethod::Manual { reason } => ScanMethod::Manual { reason },
        }
    }
}

/// A checkpoint scan to record.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct FfiScanInput {
    /// The checkpoint as the site configuration names it (letters, digits, `-_.:`; 1-64).
    pub checkpoint_id: String,
    pub method: FfiScanMethod,
    #[uniffi(default)]
    pub location: Option<FfiLocation>,
    #[uniffi(default)]
    pub note: Option<String>,
    /// An id (UUID) chosen by the app, so a call retried after a crash records the event once.
    #[uniffi(default)]
    pub event_id: Option<String>,
    /// When the scan happened (ms since the Unix epoch), if the app read the time earlier than
    /// the call; otherwise the time of the call.
    #[uniffi(default)]
    pub wall_time_ms: Option<i64>,
}

/// A file to attach to a note: a photo, a short video or an audio recording, at most 25 MiB.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiNewFile {
    pub bytes: Vec<u8>,
    /// For example `image/jpeg`.
    pub media_type: String,
    /// The file's name, if it has one.
    #[uniffi(default)]
    pub name: Option<String>,
}

/// The shift in progress.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiShift {
    pub shift_id: String,
    pub guard_id: String,
    /// Device wall time when it started, ms since the Unix epoch.
    pub started_ms: i64,
}

impl From<&ShiftInfo> for FfiShift {
    fn from(s: &ShiftInfo) -> Self {
        FfiShift {
            shift_id: s.shift.to_string(),
            guard_id: s.guard.to_string(),
            started_ms: s.started_ms,
        }
    }
}

fn scan_from(input: FfiScanInput) -> Result<(Scan, RecordOptions), Error> {
    let scan = Scan {
        checkpoint: CheckpointId::new(input.checkpoint_id)?,
        method: input.method.into(),
        location: input.location.map(Into::into),
        note: input.note,
    };
    let options = RecordOptions {
        event_id: input
            .event_id
            .as_deref()
            .map(parse_uuid_id::<EventId>)
            .transpose()?,
        wall_ms: input.wall_time_ms,
    };
    Ok((scan, options))
}

/// The event just recorded, as the app is told about it. `id` is `None` for a shift's first
/// event (`start_shift` returns the shift, not its event).
fn recorded_event(
    store: &DeviceStore,
    shift: ShiftId,
    id: Option<EventId>,
) -> Result<Option<FfiEvent>, Error> {
    let found = match id {
        Some(id) => store.event(id)?,
        None => store.events(Some(shift))?.into_iter().next(),
    };
    Ok(found.map(Into::into))
}

impl PatrolDevice {
    /// Runs one recording on the store; then, with the store released, tells the observer.
    /// `op` returns the event's id (`None`: the shift's first event) and the call's result.
    pub(super) fn record<T>(
        &self,
        op: impl FnOnce(&mut DeviceStore) -> Result<(Option<EventId>, T), Error>,
    ) -> FfiResult<T> {
        self.record_or_not(op, true)
    }

    /// As [`PatrolDevice::record`], for a call that may record nothing: `None` is no event.
    pub(super) fn maybe_record<T>(
        &self,
        op: impl FnOnce(&mut DeviceStore) -> Result<(Option<EventId>, T), Error>,
    ) -> FfiResult<T> {
        self.record_or_not(op, false)
    }

    fn record_or_not<T>(
        &self,
        op: impl FnOnce(&mut DeviceStore) -> Result<(Option<EventId>, T), Error>,
        none_is_shift_start: bool,
    ) -> FfiResult<T> {
        let observer = self.observer();
        let (value, event) = {
            let mut store = lock(&self.store, "store")?;
            let shift_before = store.current_shift().map(|s| s.shift);
            let (id, value) = op(&mut store)?;
            if id.is_none() && !none_is_shift_start {
                return Ok(value);
            }
            let event = match (
                &observer,
                store.current_shift().map(|s| s.shift).or(shift_before),
            ) {
                (Some(_), Some(shift)) => match recorded_event(&store, shift, id) {
                    Ok(event) => event,
                    Err(e) => {
                        // The event is recorded; only the notification is lost.
                        let e = PatrolError::from(e);
                        tracing::warn!(error = %e, "cannot read back a recorded event");
                        None
                    }
                },
                _ => None,
            };
            (value, event)
        };
        if let (Some(observer), Some(event)) = (observer, event) {
            notify("on_event_recorded", || observer.on_event_recorded(event));
        }
        Ok(value)
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// The shift in progress, if any.
    pub fn current_shift(&self) -> FfiResult<Option<FfiShift>> {
        Ok(lock(&self.store, "store")?
            .current_shift()
            .map(FfiShift::from))
    }

    /// Starts a shift for `guard_id`; returns the shift id. Fails with `ShiftAlreadyOpen` while
    /// one is in progress.
    pub fn start_shift(&self, guard_id: String) -> FfiResult<String> {
        let guard = GuardId::new(guard_id).map_err(Error::from)?;
        self.record(|store| Ok((None, store.start_shift(guard)?.to_string())))
    }

    /// Ends the shift in progress, with an optional closing note; returns the event id.
    #[uniffi::method(default(note = None))]
    pub fn end_shift(&self, note: Option<String>) -> FfiResult<String> {
        self.record(|store| {
            let id = store.end_shift(note)?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Records a checkpoint scan; returns the event id. With `event_id` set, repeating the call
    /// with the same content records it once.
    pub fn scan_checkpoint(&self, input: FfiScanInput) -> FfiResult<String> {
        let (scan, options) = scan_from(input)?;
        self.record(|store| {
            let id = store.scan(scan, options)?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Records a free-text note; returns the event id.
    pub fn add_note(&self, text: String) -> FfiResult<String> {
        self.record(|store| {
            let id = store.note(text)?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Records a note with files attached (at most 10; `text` may be empty): the phone keeps
    /// their bytes with the note, durably, and uploads them after the note at a sync. Returns
    /// the event id.
    pub fn add_note_with_files(&self, text: String, files: Vec<FfiNewFile>) -> FfiResult<String> {
        self.record(|store| {
            let files: Vec<NewFile<'_>> = files
                .iter()
                .map(|f| NewFile {
                    bytes: &f.bytes,
                    media_type: &f.media_type,
                    name: f.name.as_deref(),
                })
                .collect();
            let (id, _) = store.note_with_files(text, &files, RecordOptions::default())?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Records a handover note, to a named guard or to whoever takes over; returns the event id.
    pub fn handover(&self, to_guard: Option<String>, text: String) -> FfiResult<String> {
        let to_guard = to_guard
            .map(GuardId::new)
            .transpose()
            .map_err(Error::from)?;
        self.record(|store| {
            let id = store.record(
                EventBody::Handover { to_guard, text },
                RecordOptions::default(),
            )?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// The local log in the device's order: of one shift, or (with `None`) of all shifts.
    #[uniffi::method(default(shift_id = None))]
    pub fn events(&self, shift_id: Option<String>) -> FfiResult<Vec<FfiEvent>> {
        let shift = shift_id
            .as_deref()
            .map(parse_uuid_id::<ShiftId>)
            .transpose()?;
        let events = lock(&self.store, "store")?.events(shift)?;
        Ok(events.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::testing::{TestResult, is_invalid, nfc, path, temp};
    use crate::ffi::{
        FfiAlarmState, FfiAttachment, FfiDurability, FfiIncidentAction, FfiIncidentCategory,
        FfiSeverity, FfiTagScanInput,
    };

    #[test]
    fn a_shift_through_the_exported_api() -> TestResult {
        let dir = temp();
        let device = PatrolDevice::create(
            path(&dir, "phone.db"),
            "site-1".into(),
            Some(FfiDurability::Normal),
        )?;
        assert_eq!(device.site_id()?, "site-1");
        assert_eq!(
            device.add_note("too early".into()),
            Err(PatrolError::NoOpenShift)
        );
        let shift = device.start_shift("guard-1".into())?;
        assert!(matches!(
            device.start_shift("guard-2".into()),
            Err(PatrolError::ShiftAlreadyOpen { .. })
        ));
        let current = device.current_shift()?.ok_or("no shift")?;
        assert_eq!(
            (current.shift_id.as_str(), current.guard_id.as_str()),
            (shift.as_str(), "guard-1")
        );

        // An app-chosen event id makes a retried call record once.
        let retried = FfiScanInput {
            event_id: Some(EventId::generate().to_string()),
            wall_time_ms: Some(1_740_866_400_000),
            ..nfc("cp-12")
        };
        let first = device.scan_checkpoint(retried.clone())?;
        assert_eq!(device.scan_checkpoint(retried.clone())?, first);
        assert_eq!(retried.event_id.as_deref(), Some(first.as_str()));

        let photo = FfiAttachment {
            sha256_hex: "ab".repeat(32),
            media_type: "image/jpeg".into(),
            size: 48_213,
            name: Some("plant-room.jpg".into()),
        };
        let incident = device.report_incident(
            FfiIncidentCategory::Fire,
            FfiSeverity::High,
            "smoke in plant room 2".into(),
            None,
            vec![photo.clone()],
        )?;
        let worked = device.add_incident_note(incident.clone(), "brigade called".into())?;
        assert_eq!(worked.attachments, vec![photo]);
        assert_eq!(worked.notes.len(), 1);
        assert!(worked.pending);
        assert_eq!(worked.category.as_deref(), Some("fire"));
        let bad_hash = FfiAttachment {
            sha256_hex: "zz".into(),
            media_type: "image/jpeg".into(),
            size: 1,
            name: None,
        };
        assert!(is_invalid(device.update_incident(
            incident.clone(),
            FfiIncidentAction::Attach {
                attachment: bad_hash
            }
        )));
        assert!(is_invalid(
            device.update_incident(incident.clone(), FfiIncidentAction::Reopen)
        ));
        // Without a site configuration, a tag scan is still recorded, and flagged.
        let stray = device.scan_tag(FfiTagScanInput {
            tag: "04:a2:19".into(),
            qr: false,
            location: None,
            note: None,
            event_id: None,
            wall_time_ms: None,
        })?;
        assert_eq!(stray.checkpoint_id, "unknown");
        assert_eq!(stray.flags, vec!["unknown_tag".to_owned()]);
        device.raise_panic(None)?;
        assert!(matches!(
            device.alarms()?.first().map(|a| &a.state),
            Some(FfiAlarmState::Queued)
        ));
        device.handover(None, "B2 door reported".into())?;
        let ended = device.end_shift(Some("quiet night".into()))?;
        assert_eq!(device.current_shift()?, None);

        let events = device.events(Some(shift.clone()))?;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "shift_started",
                "checkpoint_scanned",
                "incident_reported",
                "checkpoint_scanned",
                "panic",
                "handover",
                "shift_ended"
            ]
        );
        assert_eq!(events[1].id, first);
        assert_eq!(events[1].device_time_ms, 1_740_866_400_000);
        assert_eq!(events[6].id, ended);
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
        assert!(
            events
                .iter()
                .all(|e| e.shift_id == shift && e.guard_id == "guard-1")
        );
        let json: serde_json::Value = serde_json::from_str(&events[2].json)?;
        assert_eq!(json["incident"], incident.as_str());
        assert_eq!(json["category"], "fire");
        assert_eq!(json["device_id"], device.device_id()?.as_str());

        let status = device.status()?;
        assert_eq!(status.pending_events, 7);
        assert!(status.urgent);
        assert!(device.sync_due()?);

        // Reopened, the store holds the same log.
        drop(device);
        let again = PatrolDevice::open(path(&dir, "phone.db"), None)?;
        assert_eq!(again.events(None)?, events);
        Ok(())
    }
}
