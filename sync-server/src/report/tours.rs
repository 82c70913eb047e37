//! The daily activity report's tour section: its windows, each checkpoint's status, whether a
//! window is final, and the amendments made to final windows ([`DarTours`]), as plain data.
//!
//! It is filled from the server's tour compliance ([`from_compliance`]): the windows as the
//! compliance engine keeps them (`store::compliance`), each checkpoint's state and the scan
//! that counted, final or provisional, and the amendments made to final windows. The report
//! and the windows API (`GET /api/v1/sites/{site}/tours/windows`) say the same of a window.

use patrol_core::compliance::Tally;
use patrol_core::siteconfig::CheckpointState;
use patrol_core::{CheckpointId, EventId, GuardId};

use crate::store::compliance::{Amendment, Mark, WindowsAnswer};

/// Where one checkpoint of one window stands, as the report says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointStatus {
    /// Scanned within the window.
    OnTime,
    /// Scanned in the grace minutes after the window.
    Late,
    /// Not scanned by the end of the grace minutes.
    Missed,
    /// The window is open and the checkpoint not yet scanned.
    Due,
    /// The window has closed, its grace minutes run, and the checkpoint is not yet scanned.
    Overdue,
    /// The window has not opened.
    Upcoming,
}

impl CheckpointStatus {
    /// The status's code in the CSV.
    pub fn code(self) -> &'static str {
        match self {
            CheckpointStatus::OnTime => "on_time",
            CheckpointStatus::Late => "late",
            CheckpointStatus::Missed => "missed",
            CheckpointStatus::Due => "due",
            CheckpointStatus::Overdue => "overdue",
            CheckpointStatus::Upcoming => "upcoming",
        }
    }

    /// In words, for the PDF.
    pub fn words(self) -> &'static str {
        match self {
            CheckpointStatus::OnTime => "on time",
            CheckpointStatus::Late => "late",
            CheckpointStatus::Missed => "missed",
            CheckpointStatus::Due => "due",
            CheckpointStatus::Overdue => "overdue (in grace)",
            CheckpointStatus::Upcoming => "not yet due",
        }
    }

    /// Scanned, on time or late: counts towards the window's compliance.
    pub fn visited(self) -> bool {
        matches!(self, CheckpointStatus::OnTime | CheckpointStatus::Late)
    }
}

impl From<CheckpointState> for CheckpointStatus {
    fn from(state: CheckpointState) -> Self {
        match state {
            CheckpointState::Done { .. } => CheckpointStatus::OnTime,
            CheckpointState::DoneLate { .. } => CheckpointStatus::Late,
            CheckpointState::Missed => CheckpointStatus::Missed,
            CheckpointState::Due => CheckpointStatus::Due,
            CheckpointState::Late => CheckpointStatus::Overdue,
            CheckpointState::Upcoming => CheckpointStatus::Upcoming,
        }
    }
}

/// One checkpoint of a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarCheckpoint {
    pub checkpoint: CheckpointId,
    /// Its name in the configuration (its id when the configuration no longer has it).
    pub name: String,
    pub status: CheckpointStatus,
    /// The scan that counted (corrected time), its guard and event.
    pub scanned_at_ms: Option<i64>,
    pub guard: Option<GuardId>,
    pub event: Option<EventId>,
}

/// How a window stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowStatus {
    Upcoming,
    /// Opened, and some checkpoint can still be scanned (the window or its grace runs).
    InProgress,
    /// Every checkpoint scanned on time.
    Complete,
    /// Every checkpoint scanned, some late.
    CompleteLate,
    /// Some checkpoint missed.
    Incomplete,
}

impl WindowStatus {
    pub fn code(self) -> &'static str {
        match self {
            WindowStatus::Upcoming => "upcoming",
            WindowStatus::InProgress => "in_progress",
            WindowStatus::Complete => "complete",
            WindowStatus::CompleteLate => "complete_late",
            WindowStatus::Incomplete => "incomplete",
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            WindowStatus::Upcoming => "not yet due",
            WindowStatus::InProgress => "in progress",
            WindowStatus::Complete => "complete",
            WindowStatus::CompleteLate => "complete, late",
            WindowStatus::Incomplete => "incomplete",
        }
    }
}

/// One window of a tour, with its checkpoints in the tour's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarWindow {
    pub tour: String,
    pub tour_name: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub grace_min: u32,
    /// Final: later scans can no longer change it without an amendment. Otherwise provisional.
    pub is_final: bool,
    pub checkpoints: Vec<DarCheckpoint>,
}

impl DarWindow {
    fn count(&self, status: CheckpointStatus) -> usize {
        self.checkpoints
            .iter()
            .filter(|c| c.status == status)
            .count()
    }

    /// Checkpoints scanned on time, late, missed, and not yet decided (open), counted as the
    /// windows API counts them: the same percentage.
    pub fn counts(&self) -> Tally {
        let count = |status| self.count(status) as u32;
        let done = count(CheckpointStatus::OnTime);
        let done_late = count(CheckpointStatus::Late);
        let missed = count(CheckpointStatus::Missed);
        Tally {
            done,
            done_late,
            missed,
            open: self.checkpoints.len() as u32 - done - done_late - missed,
        }
    }

    pub fn status(&self) -> WindowStatus {
        let c = self.counts();
        if c.missed > 0 {
            WindowStatus::Incomplete
        } else if c.open == 0 && c.done_late > 0 {
            WindowStatus::CompleteLate
        } else if c.open == 0 {
            WindowStatus::Complete
        } else if self
            .checkpoints
            .iter()
            .all(|c| c.status == CheckpointStatus::Upcoming)
        {
            WindowStatus::Upcoming
        } else {
            WindowStatus::InProgress
        }
    }
}

/// A change to a window already final, made by data that arrived after (a late sync).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarAmendment {
    pub tour: String,
    pub window_start_ms: i64,
    pub checkpoint: CheckpointId,
    pub before: CheckpointStatus,
    pub after: CheckpointStatus,
    /// The event that caused it.
    pub event: Option<EventId>,
    /// When the server made it.
    pub at_ms: i64,
}

/// The tour section of a report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DarTours {
    /// In order of start, then tour id.
    pub windows: Vec<DarWindow>,
    /// In the order they were made.
    pub amendments: Vec<DarAmendment>,
}

impl DarTours {
    /// Every window's checkpoints counted together.
    pub fn totals(&self) -> Tally {
        let mut total = Tally::default();
        for w in &self.windows {
            total.add(w.counts());
        }
        total
    }
}

impl From<Mark> for CheckpointStatus {
    /// A state as an amendment records it (before and after, `CheckpointRow::final_state`).
    fn from(mark: Mark) -> Self {
        match mark {
            Mark::Done => CheckpointStatus::OnTime,
            Mark::DoneLate => CheckpointStatus::Late,
            Mark::Missed => CheckpointStatus::Missed,
            Mark::Pending => CheckpointStatus::Due,
        }
    }
}

/// The tour section from the compliance engine's answer: every window of `answer` that starts
/// in `[from_ms, to_ms)` (the day), in order of start then tour, and their amendments in the
/// order they were made.
pub fn from_compliance(answer: WindowsAnswer, (from_ms, to_ms): (i64, i64)) -> DarTours {
    let mut windows = Vec::new();
    let mut amendments: Vec<Amendment> = Vec::new();
    for w in answer.windows {
        if w.window.start_ms < from_ms || w.window.start_ms >= to_ms {
            continue;
        }
        amendments.extend(w.amendments);
        windows.push(DarWindow {
            tour: w.tour,
            tour_name: w.tour_name,
            start_ms: w.window.start_ms,
            end_ms: w.window.end_ms,
            grace_min: u32::try_from(w.grace_ms / 60_000).unwrap_or(u32::MAX),
            is_final: w.final_.is_some(),
            checkpoints: w
                .checkpoints
                .into_iter()
                .map(|c| DarCheckpoint {
                    scanned_at_ms: c.scan.as_ref().map(|s| s.at_ms),
                    guard: c.scan.as_ref().map(|s| s.guard.clone()),
                    event: c.scan.as_ref().map(|s| s.event_id),
                    status: c.state.into(),
                    name: c.name,
                    checkpoint: c.checkpoint,
                })
                .collect(),
        });
    }
    windows.sort_by(|a, b| (a.start_ms, &a.tour).cmp(&(b.start_ms, &b.tour)));
    amendments.sort_by_key(|a| (a.at_ms, a.window.start_ms, a.n));
    DarTours {
        windows,
        amendments: amendments
            .into_iter()
            .map(|a| DarAmendment {
                tour: a.tour,
                window_start_ms: a.window.start_ms,
                checkpoint: a.checkpoint,
                // As the windows API shows them: states of a final window.
                before: a.before.final_state().into(),
                after: a.after.final_state().into(),
                event: Some(a.cause),
                at_ms: a.at_ms,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(statuses: &[CheckpointStatus]) -> DarWindow {
        DarWindow {
            tour: "night".into(),
            tour_name: "Night".into(),
            start_ms: 0,
            end_ms: 1,
            grace_min: 0,
            is_final: false,
            checkpoints: statuses
                .iter()
                .enumerate()
                .map(|(i, s)| DarCheckpoint {
                    checkpoint: CheckpointId::new(format!("cp-{i}"))
                        .unwrap_or_else(|e| panic!("{e}")),
                    name: String::new(),
                    status: *s,
                    scanned_at_ms: None,
                    guard: None,
                    event: None,
                })
                .collect(),
        }
    }

    /// A window's status and percentage: late scans count as visited, a single miss makes it
    /// incomplete, and the percentage rounds to the nearest whole percent.
    #[test]
    fn a_window_is_judged_by_its_checkpoints() {
        use CheckpointStatus::*;
        let cases: [(&[CheckpointStatus], WindowStatus, Option<u32>); 6] = [
            (&[OnTime, OnTime, OnTime], WindowStatus::Complete, Some(100)),
            (
                &[OnTime, Late, OnTime],
                WindowStatus::CompleteLate,
                Some(100),
            ),
            (&[OnTime, Missed, Late], WindowStatus::Incomplete, Some(66)),
            (&[OnTime, Due, Upcoming], WindowStatus::InProgress, Some(33)),
            (&[Upcoming, Upcoming], WindowStatus::Upcoming, Some(0)),
            (&[], WindowStatus::Complete, None),
        ];
        for (statuses, status, pct) in cases {
            let w = window(statuses);
            assert_eq!(
                (w.status(), w.counts().percent_if_any()),
                (status, pct),
                "{statuses:?}"
            );
        }
    }
}
