//! Lone-worker check-in timers as the server sees them ([`patrol_core::checkin`]): each open
//! shift's timer, read from its timer events (`checkin_timer_started`, `checked_in`,
//! `checkin_timer_stopped`, at their corrected times) with the core's rule, and due when no
//! check-in reached the server by the deadline and [`SERVER_GRACE_MS`] after it. Both backends
//! read the rows ([`TimerEventRow`]) with their own SQL and fold them here.
//!
//! A shift is open here while its log has not delivered its `shift_ended`: a phone that went
//! silent mid-shift keeps its timer running, and its guard is the one to worry about.

use std::collections::BTreeMap;

use patrol_core::checkin::{SERVER_GRACE_MS, running_timer};
use patrol_core::{DeviceId, EventBody, ShiftId};

use super::StoreError;
use super::rows::{read_device_id, read_shift_id};

/// A timer event of an open shift, as a backend reads it, in the shift's order.
#[derive(Clone, Debug)]
pub struct TimerEventRow {
    pub shift: String,
    pub device: String,
    pub guard: String,
    pub corrected_ms: i64,
    pub body: EventBody,
}

/// A check-in timer running on an open shift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckInTimerView {
    pub shift: ShiftId,
    pub device: DeviceId,
    pub guard: String,
    pub every_min: u32,
    /// When it started or the guard last checked in (corrected time).
    pub since_ms: i64,
    pub due_ms: i64,
    /// No check-in reached the server by the deadline and its grace.
    pub overdue: bool,
}

/// A timer event's body from its kind and feed JSON (`every_min` for a start), for a backend
/// that keeps the JSON.
pub fn body_from_json(kind: &str, json: &str) -> Result<EventBody, StoreError> {
    Ok(match kind {
        "checkin_timer_started" => {
            let json: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| StoreError::CorruptData(format!("timer event JSON: {e}")))?;
            let every_min = json["every_min"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| StoreError::CorruptData("a timer start without every_min".into()))?;
            EventBody::CheckInTimerStarted { every_min }
        }
        "checked_in" => EventBody::CheckedIn,
        "checkin_timer_stopped" => EventBody::CheckInTimerStopped,
        other => {
            return Err(StoreError::CorruptData(format!(
                "{other:?} is not a timer event"
            )));
        }
    })
}

/// The running timers of the shifts whose timer events `rows` are (each shift's in order), as
/// of `now_ms`, ordered by shift.
pub fn timers(rows: &[TimerEventRow], now_ms: i64) -> Result<Vec<CheckInTimerView>, StoreError> {
    let mut shifts: BTreeMap<&str, Vec<&TimerEventRow>> = BTreeMap::new();
    for row in rows {
        shifts.entry(row.shift.as_str()).or_default().push(row);
    }
    let mut out = Vec::new();
    for (shift, rows) in shifts {
        let timer = running_timer(rows.iter().map(|r| (r.corrected_ms, &r.body)));
        let (Some(timer), Some(last)) = (timer, rows.last()) else {
            continue;
        };
        let due_ms = timer.due_ms();
        out.push(CheckInTimerView {
            shift: read_shift_id(shift)?,
            device: read_device_id(&last.device)?,
            guard: last.guard.clone(),
            every_min: timer.every_min,
            since_ms: timer.since_ms,
            due_ms,
            overdue: now_ms > due_ms.saturating_add(SERVER_GRACE_MS),
        });
    }
    Ok(out)
}
