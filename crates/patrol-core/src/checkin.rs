//! Lone-worker safety timers. A guard working alone starts a timer ("check in every 30
//! minutes"); each check-in moves the deadline on; a check-in not made by the deadline is
//! missed. The phone alarms its guard at the deadline whatever the network (offline, its own
//! alarm is what protects the guard) and records the miss; the server, which learns of the
//! timer and the check-ins as the phone syncs, alarms the control room when no check-in has
//! reached it [`SERVER_GRACE_MS`] after the deadline. Both read the timer from the shift's
//! events with [`running_timer`].

use crate::error::ValidationError;
use crate::event::EventBody;

/// Shortest and longest interval between check-ins, in minutes.
pub const MIN_EVERY_MIN: u32 = 1;
pub const MAX_EVERY_MIN: u32 = 24 * 60;

/// How long after a deadline the server waits for a check-in to arrive before it alarms the
/// control room: a check-in made just in time is on its way in the phone's next sync.
pub const SERVER_GRACE_MS: i64 = 2 * 60_000;

pub fn validate_every_min(every_min: u32) -> Result<(), ValidationError> {
    if (MIN_EVERY_MIN..=MAX_EVERY_MIN).contains(&every_min) {
        Ok(())
    } else {
        Err(ValidationError::OutOfRange {
            field: "check-in interval (minutes)",
            value: i64::from(every_min),
            min: i64::from(MIN_EVERY_MIN),
            max: i64::from(MAX_EVERY_MIN),
        })
    }
}

/// A running timer: checked in (or started) at `since_ms`, due every `every_min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckInTimer {
    pub every_min: u32,
    /// When the timer started or the guard last checked in.
    pub since_ms: i64,
}

impl CheckInTimer {
    /// When the next check-in is due.
    pub fn due_ms(&self) -> i64 {
        self.since_ms
            .saturating_add(i64::from(self.every_min).saturating_mul(60_000))
    }

    /// Whether the check-in due is missed at `now_ms`.
    pub fn missed_at(&self, now_ms: i64) -> bool {
        now_ms > self.due_ms()
    }
}

/// The timer running after a shift's events, given in log order with their times: started by
/// `checkin_timer_started` (again: reset), moved on by `checked_in`, ended by
/// `checkin_timer_stopped` or the shift's end. A missed check-in does not move the deadline:
/// the guard must still check in.
pub fn running_timer<'a>(
    events: impl IntoIterator<Item = (i64, &'a EventBody)>,
) -> Option<CheckInTimer> {
    let mut timer = None;
    for (at_ms, body) in events {
        match body {
            EventBody::CheckInTimerStarted { every_min } => {
                timer = Some(CheckInTimer {
                    every_min: *every_min,
                    since_ms: at_ms,
                })
            }
            EventBody::CheckedIn => {
                if let Some(t) = timer.as_mut() {
                    t.since_ms = at_ms;
                }
            }
            EventBody::CheckInTimerStopped | EventBody::ShiftEnded { .. } => timer = None,
            _ => {}
        }
    }
    timer
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn check_ins_move_the_deadline_and_a_stop_or_the_shift_end_ends_it() {
        let start = EventBody::CheckInTimerStarted { every_min: 30 };
        let note = EventBody::Note { text: "x".into() };
        let missed = EventBody::CheckInMissed { due_ms: 30 * MIN };
        let timer = running_timer([(0, &start), (10 * MIN, &note)]).map(|t| t.due_ms());
        assert_eq!(timer, Some(30 * MIN), "a note is not a check-in");
        let timer = running_timer([(0, &start), (25 * MIN, &EventBody::CheckedIn)]);
        assert_eq!(timer.map(|t| t.due_ms()), Some(55 * MIN));
        let timer = running_timer([(0, &start), (31 * MIN, &missed)]);
        assert_eq!(timer.map(|t| t.due_ms()), Some(30 * MIN), "still due");
        assert!(timer.is_some_and(|t| t.missed_at(30 * MIN + 1) && !t.missed_at(30 * MIN)));
        let reset = EventBody::CheckInTimerStarted { every_min: 10 };
        let timer = running_timer([(0, &start), (5 * MIN, &reset)]);
        assert_eq!(timer.map(|t| t.due_ms()), Some(15 * MIN));
        for end in [
            EventBody::CheckInTimerStopped,
            EventBody::ShiftEnded { note: None },
        ] {
            assert_eq!(running_timer([(0, &start), (MIN, &end)]), None);
        }
        assert_eq!(
            running_timer([(0, &EventBody::CheckedIn)]),
            None,
            "no timer"
        );
    }

    #[test]
    fn the_interval_is_bounded() {
        assert!(validate_every_min(0).is_err());
        assert!(validate_every_min(MAX_EVERY_MIN + 1).is_err());
        assert!(validate_every_min(30).is_ok());
        assert!(
            EventBody::CheckInTimerStarted { every_min: 0 }
                .validate()
                .is_err()
        );
    }
}
