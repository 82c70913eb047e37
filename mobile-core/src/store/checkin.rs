//! Lone-worker safety timers on the phone ([`patrol_core::checkin`]): the guard starts one,
//! checks in, stops it; the app asks [`DeviceStore::check_in_status`] (every minute or so, and
//! when it wakes) and alarms the guard at once when a check-in is missed, network or not:
//! offline, the phone's own alarm is what protects a guard working alone. The miss is recorded
//! in the shift log, once per deadline, and travels like a panic (first, in the server's panic
//! lane), so the control room learns of it at the phone's next contact.

use patrol_core::checkin::{CheckInTimer, running_timer};
use patrol_core::{EventBody, EventId};

use super::{DeviceStore, RecordOptions};
use crate::error::{Error, Result};

/// Where the guard's check-in timer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckInStatus {
    pub every_min: u32,
    /// When the timer started or the guard last checked in (the phone's clock).
    pub since_ms: i64,
    /// When the next check-in is due.
    pub due_ms: i64,
    /// The check-in due is missed: alarm the guard.
    pub missed: bool,
    /// The event this call recorded for the miss (the first call to find it).
    pub recorded_miss: Option<EventId>,
}

impl DeviceStore {
    /// Starts (or resets) the check-in timer of the shift in progress: the guard must check in
    /// within `every_min` minutes, and again within as long of each check-in.
    pub fn start_check_in_timer(&mut self, every_min: u32) -> Result<EventId> {
        self.record(
            EventBody::CheckInTimerStarted { every_min },
            RecordOptions::default(),
        )
    }

    /// The guard checks in: the next check-in is due a whole interval from now.
    /// [`Error::NoCheckInTimer`] unless a timer is running.
    pub fn check_in(&mut self) -> Result<EventId> {
        if self.running_check_in_timer()?.is_none() {
            return Err(Error::NoCheckInTimer);
        }
        self.record(EventBody::CheckedIn, RecordOptions::default())
    }

    /// Stops the check-in timer. [`Error::NoCheckInTimer`] unless one is running.
    pub fn stop_check_in_timer(&mut self) -> Result<EventId> {
        if self.running_check_in_timer()?.is_none() {
            return Err(Error::NoCheckInTimer);
        }
        self.record(EventBody::CheckInTimerStopped, RecordOptions::default())
    }

    /// The check-in timer of the shift in progress, if one is running, as of now. A check-in
    /// found missed is recorded (once per deadline), marked to be sent first, like a panic.
    pub fn check_in_status(&mut self) -> Result<Option<CheckInStatus>> {
        let Some((timer, recorded)) = self.timer_and_misses()? else {
            return Ok(None);
        };
        let now_ms = self.clock.now().wall_ms;
        let missed = timer.missed_at(now_ms);
        let due_ms = timer.due_ms();
        let recorded_miss = if missed && !recorded.contains(&due_ms) {
            Some(self.record(
                EventBody::CheckInMissed { due_ms },
                RecordOptions::default(),
            )?)
        } else {
            None
        };
        Ok(Some(CheckInStatus {
            every_min: timer.every_min,
            since_ms: timer.since_ms,
            due_ms,
            missed,
            recorded_miss,
        }))
    }

    fn running_check_in_timer(&self) -> Result<Option<CheckInTimer>> {
        Ok(self.timer_and_misses()?.map(|(timer, _)| timer))
    }

    /// The running timer of the shift in progress, read from its log, and the deadlines of the
    /// misses it already records.
    fn timer_and_misses(&self) -> Result<Option<(CheckInTimer, Vec<i64>)>> {
        let Some(open) = self.open.as_ref() else {
            return Ok(None);
        };
        let events = open.log.events()?;
        let timer = running_timer(
            events
                .iter()
                .map(|e| (e.record.time.wall_ms, &e.record.body)),
        );
        Ok(timer.map(|timer| {
            let misses = events
                .iter()
                .filter_map(|e| match e.record.body {
                    EventBody::CheckInMissed { due_ms } => Some(due_ms),
                    _ => None,
                })
                .collect();
            (timer, misses)
        }))
    }
}
