//! Records several concepts share (a position fix, an event as the phone holds it), and how ids
//! crossing as strings are parsed on the way in.

use patrol_core::{Location, ValidationError};

use crate::error::Error;
use crate::store::LocalEvent;

/// A position fix in degrees (WGS 84); `accuracy_m` is the radius of the 68% confidence circle
/// as the phone reports it. Recorded to 1e-7 degree.
#[derive(Clone, Copy, Debug, PartialEq, uniffi::Record)]
pub struct FfiLocation {
    pub lat: f64,
    pub lon: f64,
    #[uniffi(default)]
    pub accuracy_m: Option<f32>,
}

impl From<FfiLocation> for Location {
    fn from(l: FfiLocation) -> Self {
        Location {
            lat: l.lat,
            lon: l.lon,
            accuracy_m: l.accuracy_m,
        }
    }
}

/// An event as the phone holds it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiEvent {
    /// The event id (UUID).
    pub id: String,
    /// `shift_started`, `shift_ended`, `checkpoint_scanned`, `incident_reported`, `panic`,
    /// `note` or `handover`, as the control-room API names it.
    pub kind: String,
    /// This device's sequence number, from 1, gap-free.
    pub seq: u64,
    /// Device wall time when recorded, ms since the Unix epoch.
    pub device_time_ms: i64,
    pub guard_id: String,
    pub shift_id: String,
    /// The server has acknowledged it.
    pub delivered: bool,
    /// The whole event as JSON, in the control-room API's form (without the server's fields).
    pub json: String,
}

impl From<LocalEvent> for FfiEvent {
    fn from(e: LocalEvent) -> Self {
        let LocalEvent { event, delivered } = e;
        FfiEvent {
            id: event.id.to_string(),
            kind: event.record.body.kind().to_owned(),
            seq: event.record.seq,
            device_time_ms: event.record.time.wall_ms,
            guard_id: event.guard.to_string(),
            shift_id: event.shift.to_string(),
            delivered,
            json: event.to_json(None).to_string(),
        }
    }
}

pub(super) fn parse_uuid_id<T: std::str::FromStr<Err = ValidationError>>(
    s: &str,
) -> Result<T, Error> {
    s.parse().map_err(Error::Invalid)
}

#[cfg(test)]
mod tests {
    use crate::ffi::testing::{TestResult, device, is_invalid, nfc, path, temp};
    use crate::ffi::{FfiScanInput, FfiScanMethod, PatrolDevice, PatrolError};

    #[test]
    fn ids_are_validated_on_the_way_in() -> TestResult {
        let dir = temp();
        assert!(is_invalid(PatrolDevice::create(
            path(&dir, "a.db"),
            "site 1".into(),
            None
        )));
        let device = device(&dir);
        assert!(is_invalid(device.start_shift("guard/1".into())));
        assert_eq!(device.current_shift()?, None);
        device.start_shift("guard-1".into())?;

        assert!(is_invalid(device.scan_checkpoint(nfc("cp 12"))));
        assert!(is_invalid(device.scan_checkpoint(nfc(""))));
        let mut bad_event_id = nfc("cp-12");
        bad_event_id.event_id = Some("not-a-uuid".into());
        assert!(is_invalid(device.scan_checkpoint(bad_event_id)));
        assert!(is_invalid(
            device.handover(Some("guard 2".into()), "keys on the hook".into())
        ));
        assert!(is_invalid(device.events(Some("not-a-shift".into()))));
        let gps_without_fix = FfiScanInput {
            method: FfiScanMethod::Gps,
            location: None,
            ..nfc("cp-12")
        };
        assert!(is_invalid(device.scan_checkpoint(gps_without_fix)));
        assert!(is_invalid(device.sync("ftp://example.org".into())));
        // Nothing but the shift's start was recorded.
        assert_eq!(device.events(None)?.len(), 1);
        // The store holds its file while open: a second opener is refused as such.
        let second = PatrolDevice::create(path(&dir, "phone.db"), "site-1".into(), None);
        assert!(
            matches!(second, Err(PatrolError::Storage { .. })),
            "{second:?}"
        );
        drop(device);
        assert!(is_invalid(PatrolDevice::create(
            path(&dir, "phone.db"),
            "site-2".into(),
            None
        )));
        Ok(())
    }
}
