//! Tour compliance: for each window of a tour and each of its checkpoints, whether it was
//! scanned on time, late (within the tour's grace), missed, or is not due yet; the share of the
//! window's checkpoints done; and when that answer is final. The server applies it to every
//! device's scans of a site at their corrected times ([`crate::clock`]); the phone to its own.
//!
//! The rules (also in `docs/compliance.md`, "Compliance" and "Finality and amendments"):
//!
//! - **Which scan counts** ([`assign_scans`]). A window runs from its start until just before
//!   its end; a scan in it is on time, one in the grace minutes after it is late. A scan counts
//!   for one window only, the earliest it can count for, and a window takes an on-time scan
//!   before a late one: windows are served in order of start, each taking, per checkpoint, the
//!   first scan not yet taken within the window, else the first within its grace.
//! - **Not yet due, due, late, missed** ([`checkpoint_state`]): a checkpoint without a scan is
//!   upcoming before its window opens, due while it is open, late during the grace, and missed
//!   once the grace is over.
//! - **Compliance** ([`Tally::percent`]): the share of the window's checkpoints done, on time or
//!   late, in whole percent (rounded down: 100 means every one).
//! - **Final** ([`finality`]). A window's answer is provisional until it is final: when every
//!   device known to be on shift during the window (its shift started before the grace ended,
//!   and had not ended before the window started) has delivered its log past the end of the
//!   grace (its delivered events reach a corrected time at or after it, or its shift's end was
//!   delivered), at least one device being on shift; or, whatever is missing, once the site's
//!   `finalise_after_hours` have passed since the window's end (its deadline). A phone that has
//!   not synced since before its shift started is not known to be on shift.
//! - **Amendments.** Final stays final. Scans that arrive later and change a final window's
//!   answer change it visibly, each change recorded as an amendment (the server's
//!   `store::compliance`).

use serde::{Deserialize, Serialize};

use crate::ids::CheckpointId;
use crate::schedule::Window;
use crate::siteconfig::CheckpointState;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// A tour's grace in milliseconds.
pub fn grace_ms(grace_min: u32) -> i64 {
    i64::from(grace_min) * MINUTE_MS
}

/// When a window's grace ends: a scan from then on is too late for it.
pub fn closes_at(window: &Window, grace_ms: i64) -> i64 {
    window.end_ms.saturating_add(grace_ms)
}

/// The scan a checkpoint of a window takes: its index among the scans given, and whether it
/// came during the grace (late) rather than in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    pub scan: usize,
    pub late: bool,
}

/// Which scan each checkpoint of each window takes (see the module docs): one entry per window
/// (in the order given, which must be by start), one per checkpoint of `checkpoints` (in that
/// order). `scans` are checkpoint and time; of two at the same time the one given first is
/// taken first. `taken` marks the scans that are not available (taken by windows before these);
/// the scans these windows take are marked too.
pub fn assign_scans(
    checkpoints: &[CheckpointId],
    grace_ms: i64,
    windows: &[Window],
    scans: &[(CheckpointId, i64)],
    taken: &mut [bool],
) -> Vec<Vec<Option<Taken>>> {
    // Each checkpoint's scans in order of time (then as given).
    let by_checkpoint: Vec<Vec<usize>> = checkpoints
        .iter()
        .map(|cp| {
            let mut mine: Vec<usize> = (0..scans.len()).filter(|&i| &scans[i].0 == cp).collect();
            mine.sort_by_key(|&i| (scans[i].1, i));
            mine
        })
        .collect();
    let first_free = |mine: &[usize], from: i64, to: i64, taken: &mut [bool]| {
        let start = mine.partition_point(|&i| scans[i].1 < from);
        let found = mine[start..]
            .iter()
            .take_while(|&&i| scans[i].1 < to)
            .find(|&&i| !taken.get(i).copied().unwrap_or(false))
            .copied()?;
        if let Some(t) = taken.get_mut(found) {
            *t = true;
        }
        Some(found)
    };
    windows
        .iter()
        .map(|w| {
            let close = closes_at(w, grace_ms);
            by_checkpoint
                .iter()
                .map(|mine| {
                    if let Some(scan) = first_free(mine, w.start_ms, w.end_ms, taken) {
                        Some(Taken { scan, late: false })
                    } else {
                        first_free(mine, w.end_ms, close, taken)
                            .map(|scan| Taken { scan, late: true })
                    }
                })
                .collect()
        })
        .collect()
}

/// Where a checkpoint of `window` stands at `now_ms`, given the scan it took (its time, and
/// whether it was late), if any.
pub fn checkpoint_state(
    window: &Window,
    grace_ms: i64,
    scan: Option<(i64, bool)>,
    now_ms: i64,
) -> CheckpointState {
    match scan {
        Some((at_ms, false)) => CheckpointState::Done { at_ms },
        Some((at_ms, true)) => CheckpointState::DoneLate { at_ms },
        None if now_ms < window.start_ms => CheckpointState::Upcoming,
        None if now_ms < window.end_ms => CheckpointState::Due,
        None if now_ms < closes_at(window, grace_ms) => CheckpointState::Late,
        None => CheckpointState::Missed,
    }
}

/// How a window's checkpoints stand, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Scanned in the window.
    pub done: u32,
    /// Scanned during the grace.
    pub done_late: u32,
    pub missed: u32,
    /// Not scanned and not missed yet: upcoming, due or late.
    pub open: u32,
}

impl Tally {
    pub fn of<'a>(states: impl IntoIterator<Item = &'a CheckpointState>) -> Tally {
        let mut t = Tally::default();
        for s in states {
            match s {
                CheckpointState::Done { .. } => t.done += 1,
                CheckpointState::DoneLate { .. } => t.done_late += 1,
                CheckpointState::Missed => t.missed += 1,
                CheckpointState::Upcoming | CheckpointState::Due | CheckpointState::Late => {
                    t.open += 1
                }
            }
        }
        t
    }

    /// Counted together with `other` (a day's windows, say).
    pub fn add(&mut self, other: Tally) {
        self.done += other.done;
        self.done_late += other.done_late;
        self.missed += other.missed;
        self.open += other.open;
    }

    pub fn total(&self) -> u32 {
        self.done + self.done_late + self.missed + self.open
    }

    /// The window's compliance: the share of its checkpoints done, on time or late, in whole
    /// percent rounded down (100 only when every one is done; 0 for a window without any).
    pub fn percent(&self) -> u32 {
        let total = u64::from(self.total());
        if total == 0 {
            return 0;
        }
        ((u64::from(self.done + self.done_late) * 100) / total) as u32
    }

    /// [`Tally::percent`], or `None` without checkpoints: nothing to comply with.
    pub fn percent_if_any(&self) -> Option<u32> {
        (self.total() > 0).then(|| self.percent())
    }
}

/// What the server knows of one shift log, for finality: the corrected times of its start, of
/// its end (once delivered) and of the latest event delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftDelivery {
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub delivered_to_ms: i64,
}

impl ShiftDelivery {
    /// Whether the shift was on during `window` or its grace: started before the grace ended,
    /// not ended before the window started.
    pub fn on_during(&self, window: &Window, grace_ms: i64) -> bool {
        self.started_ms < closes_at(window, grace_ms)
            && self.ended_ms.is_none_or(|end| end >= window.start_ms)
    }

    /// Whether its log is delivered past `at_ms`: an event at or after it, or its end, arrived.
    pub fn delivered_past(&self, at_ms: i64) -> bool {
        self.ended_ms.is_some() || self.delivered_to_ms >= at_ms
    }
}

/// Why a window turned final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalBy {
    /// Every device on shift during it delivered its log past its grace.
    Delivery,
    /// Its deadline passed.
    Deadline,
}

impl FinalBy {
    pub fn as_str(self) -> &'static str {
        match self {
            FinalBy::Delivery => "delivery",
            FinalBy::Deadline => "deadline",
        }
    }

    pub fn parse(s: &str) -> Option<FinalBy> {
        match s {
            "delivery" => Some(FinalBy::Delivery),
            "deadline" => Some(FinalBy::Deadline),
            _ => None,
        }
    }
}

/// When and why a window turned final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Final {
    pub by: FinalBy,
    pub at_ms: i64,
}

/// A window's deadline: `finalise_after_hours` after its end (never before its grace ends). From
/// then on it is final whoever has not delivered.
pub fn deadline_ms(window: &Window, grace_ms: i64, finalise_after_hours: u32) -> i64 {
    window
        .end_ms
        .saturating_add(i64::from(finalise_after_hours) * HOUR_MS)
        .max(closes_at(window, grace_ms))
}

/// Whether `window` is final at `now_ms` (see the module docs), given what the server knows of
/// the site's shifts (any of them; those not on during the window do not count): by its
/// deadline once passed (final at the deadline itself), else by delivery (final now). `None`
/// while provisional, and always before its grace ends.
pub fn finality(
    window: &Window,
    grace_ms: i64,
    finalise_after_hours: u32,
    shifts: &[ShiftDelivery],
    now_ms: i64,
) -> Option<Final> {
    let close = closes_at(window, grace_ms);
    if now_ms < close {
        return None;
    }
    let deadline = deadline_ms(window, grace_ms, finalise_after_hours);
    if now_ms >= deadline {
        return Some(Final {
            by: FinalBy::Deadline,
            at_ms: deadline,
        });
    }
    let mut on_shift = shifts.iter().filter(|s| s.on_during(window, grace_ms));
    let mut any = false;
    let all = on_shift.all(|s| {
        any = true;
        s.delivered_past(close)
    });
    (any && all).then_some(Final {
        by: FinalBy::Delivery,
        at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = MINUTE_MS;

    fn cp(id: &str) -> CheckpointId {
        CheckpointId::new(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn w(start_min: i64, end_min: i64) -> Window {
        Window {
            start_ms: start_min * MIN,
            end_ms: end_min * MIN,
        }
    }

    /// Windows every 90 minutes with 15 minutes' grace: a scan in a window's grace is that
    /// window's late scan, not the next one's on-time scan; an on-time scan is preferred to a
    /// late one; a scan already taken is not taken again; ties go to the one given first.
    #[test]
    fn a_scan_counts_for_the_earliest_window_it_can() {
        let cps = [cp("a"), cp("b")];
        let windows = [w(0, 90), w(90, 180), w(180, 270)];
        let scans = [
            (cp("a"), 95 * MIN), // late for the first (none in it), so not on time for the 2nd
            (cp("a"), 100 * MIN), // on time for the second
            (cp("b"), 10 * MIN), // on time for the first
            (cp("b"), 100 * MIN), // in the first's grace, but it has one: the second's
            (cp("b"), 185 * MIN), // the second's grace, but it has one: the third's, on time
            (cp("b"), 185 * MIN), // the same time again: nothing left to take it
        ];
        let mut taken = [false; 6];
        let got = assign_scans(&cps, 15 * MIN, &windows, &scans, &mut taken);
        let t = |scan, late| Some(Taken { scan, late });
        assert_eq!(
            got,
            [
                vec![t(0, true), t(2, false)],
                vec![t(1, false), t(3, false)],
                vec![None, t(4, false)],
            ]
        );
        assert_eq!(taken, [true, true, true, true, true, false]);
        // A scan already taken by an earlier window is not taken again.
        let mut taken = [false, true, false, false, false, false];
        let got = assign_scans(&cps, 15 * MIN, &windows[1..], &scans, &mut taken);
        assert_eq!(
            got[0][0],
            Some(Taken {
                scan: 0,
                late: false
            })
        );
    }

    #[test]
    fn an_unscanned_checkpoint_is_upcoming_due_late_then_missed() {
        let window = w(60, 120);
        let state = |now_min: i64| checkpoint_state(&window, 10 * MIN, None, now_min * MIN);
        assert_eq!(state(59), CheckpointState::Upcoming);
        assert_eq!(state(60), CheckpointState::Due);
        assert_eq!(state(120), CheckpointState::Late);
        assert_eq!(state(129), CheckpointState::Late);
        assert_eq!(state(130), CheckpointState::Missed);
        assert_eq!(
            checkpoint_state(&window, 0, Some((5, true)), 0),
            CheckpointState::DoneLate { at_ms: 5 }
        );
    }

    #[test]
    fn compliance_is_the_share_done_rounded_down() {
        let states = [
            CheckpointState::Done { at_ms: 1 },
            CheckpointState::DoneLate { at_ms: 2 },
            CheckpointState::Missed,
        ];
        let t = Tally::of(&states);
        assert_eq!((t.done, t.done_late, t.missed, t.open), (1, 1, 1, 0));
        assert_eq!(t.percent(), 66);
        assert_eq!(Tally::of(&states[..2]).percent(), 100);
        assert_eq!(Tally::default().percent(), 0);
        assert_eq!(Tally::default().percent_if_any(), None);
        let mut day = t;
        day.add(Tally::of(&states[..1]));
        assert_eq!((day.total(), day.percent_if_any()), (4, Some(75)));
    }

    /// The window 01:00-02:00, 10 minutes' grace, a deadline 6 hours after its end: final
    /// once every device on shift during it delivered past 02:10, or at 08:00 regardless.
    #[test]
    fn a_window_is_final_once_every_device_on_shift_delivered_past_its_grace() {
        let window = w(60, 120);
        let grace = 10 * MIN;
        let close = 130 * MIN;
        let shift = |started: i64, ended: Option<i64>, delivered: i64| ShiftDelivery {
            started_ms: started * MIN,
            ended_ms: ended.map(|e| e * MIN),
            delivered_to_ms: delivered * MIN,
        };
        let at = |shifts: &[ShiftDelivery], now: i64| finality(&window, grace, 6, shifts, now);
        let delivered = shift(0, None, 131);
        // Never before the grace ends.
        assert_eq!(at(&[delivered], close - 1), None);
        assert_eq!(
            at(&[delivered], close),
            Some(Final {
                by: FinalBy::Delivery,
                at_ms: close
            })
        );
        // A device on shift that has not delivered past 02:10 keeps it provisional...
        let behind = shift(30, None, 125);
        assert_eq!(at(&[delivered, behind], 200 * MIN), None);
        // ...until its end arrives, whenever the end was.
        let ended = shift(30, Some(100), 100);
        assert!(at(&[delivered, ended], 200 * MIN).is_some());
        // Shifts that were not on during the window do not count, either way.
        let before = shift(0, Some(59), 59);
        let after = shift(131, None, 131);
        assert!(at(&[delivered, before, after], 200 * MIN).is_some());
        // Nobody known on shift: provisional until the deadline.
        assert_eq!(at(&[before, after], 200 * MIN), None);
        // The deadline: 08:00, final whoever is behind, as of the deadline itself.
        let deadline = 120 * MIN + 6 * HOUR_MS;
        assert_eq!(at(&[behind], deadline - 1), None);
        assert_eq!(
            at(&[behind], deadline + 5),
            Some(Final {
                by: FinalBy::Deadline,
                at_ms: deadline
            })
        );
        assert_eq!(
            deadline_ms(&window, 10 * HOUR_MS, 6),
            120 * MIN + 10 * HOUR_MS
        );
    }
}
