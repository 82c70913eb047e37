//! Panic alarms: raising one, and where each alarm raised on this phone stands.

use patrol_core::EventBody;

use super::device::{PatrolDevice, lock};
use super::error::FfiResult;
use super::records::FfiLocation;
use crate::store::{Alarm, AlarmState, RecordOptions};

/// Where a panic alarm stands.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiAlarmState {
    /// On this phone only, retried at once whenever a network appears.
    Queued,
    /// On the server, not yet acknowledged by the control room.
    Delivered,
    /// The control room has acknowledged it (seen at the last sync).
    Acknowledged { by: String, at_ms: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiAlarm {
    pub event_id: String,
    pub recorded_ms: i64,
    pub state: FfiAlarmState,
}

impl From<Alarm> for FfiAlarm {
    fn from(a: Alarm) -> Self {
        FfiAlarm {
            event_id: a.event.to_string(),
            recorded_ms: a.recorded_ms,
            state: match a.state {
                AlarmState::Queued => FfiAlarmState::Queued,
                AlarmState::Delivered => FfiAlarmState::Delivered,
                AlarmState::Acknowledged { by, at_ms } => FfiAlarmState::Acknowledged { by, at_ms },
            },
        }
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// Records a panic alarm, with the position if the phone has one; returns the event id.
    #[uniffi::method(default(location = None))]
    pub fn raise_panic(&self, location: Option<FfiLocation>) -> FfiResult<String> {
        let body = EventBody::Panic {
            location: location.map(Into::into),
        };
        self.record(|store| {
            let id = store.record(body, RecordOptions::default())?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Panic alarms raised on this phone, newest first: queued, delivered or acknowledged.
    pub fn alarms(&self) -> FfiResult<Vec<FfiAlarm>> {
        let store = lock(&self.store, "store")?;
        Ok(store.alarms()?.into_iter().map(Into::into).collect())
    }
}
