//! Panic alarms: raising one, and where each alarm raised on this phone stands; the guard's
//! lone-worker check-in timer.

use patrol_core::EventBody;

use super::device::{PatrolDevice, lock};
use super::error::FfiResult;
use super::records::FfiLocation;
use crate::store::{Alarm, AlarmState, CheckInStatus, RecordOptions};

/// Where the guard's check-in timer stands ([`PatrolDevice::check_in_status`]).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiCheckInStatus {
    pub every_min: u32,
    /// When the timer started or the guard last checked in (the phone's clock).
    pub since_ms: i64,
    pub due_ms: i64,
    /// The check-in due is missed: sound the phone's alarm now.
    pub missed: bool,
}

impl From<CheckInStatus> for FfiCheckInStatus {
    fn from(s: CheckInStatus) -> Self {
        FfiCheckInStatus {
            every_min: s.every_min,
            since_ms: s.since_ms,
            due_ms: s.due_ms,
            missed: s.missed,
        }
    }
}

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

    /// Starts (or resets) the lone-worker check-in timer: check in within `every_min` minutes
    /// (1 to 1,440), and again within as long of each check-in. Returns the event id.
    pub fn start_check_in_timer(&self, every_min: u32) -> FfiResult<String> {
        self.record(|store| {
            let id = store.start_check_in_timer(every_min)?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// The guard checks in. Returns the event id.
    pub fn check_in(&self) -> FfiResult<String> {
        self.record(|store| {
            let id = store.check_in()?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Stops the check-in timer. Returns the event id.
    pub fn stop_check_in_timer(&self) -> FfiResult<String> {
        self.record(|store| {
            let id = store.stop_check_in_timer()?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// The check-in timer now, if one is running. Call it every minute or so and when the app
    /// wakes: when `missed`, sound the phone's own alarm (it is what protects the guard with no
    /// network); the miss is recorded and sent to the control room first at the next sync.
    pub fn check_in_status(&self) -> FfiResult<Option<FfiCheckInStatus>> {
        self.maybe_record(|store| {
            let status = store.check_in_status()?;
            Ok((status.and_then(|s| s.recorded_miss), status.map(Into::into)))
        })
    }
}
