//! The daily activity report's tour section: its windows, each checkpoint's status, whether a
//! window is final, and the amendments made to final windows ([`DarTours`]), as plain data.
//!
//! The report renders whatever fills a [`DarTours`]. Today [`from_schedule`] fills it from what
//! the server already holds: each tour's windows from the site's configuration
//! ([`Tour::windows_between`] in the site's zone) and each checkpoint's state by
//! [`progress_of_windows`] over every device's scans of the site at their corrected times, the
//! rule the phone applies to its own scans. The server does not yet decide when a window turns
//! final, so every window is provisional and there are no amendments; the compliance engine,
//! once it keeps windows' states, fills the same types in its place.

use std::collections::HashMap;

use patrol_core::siteconfig::{CheckpointState, SiteConfig, Tour, Window, progress_of_windows};
use patrol_core::{CheckpointId, EventId, GuardId, ValidationError};

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

    /// Checkpoints scanned on time, late, missed, and not yet decided.
    pub fn counts(&self) -> WindowCounts {
        let on_time = self.count(CheckpointStatus::OnTime);
        let late = self.count(CheckpointStatus::Late);
        let missed = self.count(CheckpointStatus::Missed);
        WindowCounts {
            checkpoints: self.checkpoints.len(),
            on_time,
            late,
            missed,
            pending: self.checkpoints.len() - on_time - late - missed,
        }
    }

    pub fn status(&self) -> WindowStatus {
        let c = self.counts();
        if c.missed > 0 {
            WindowStatus::Incomplete
        } else if c.pending == 0 && c.late > 0 {
            WindowStatus::CompleteLate
        } else if c.pending == 0 {
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

/// A window's checkpoints by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub checkpoints: usize,
    pub on_time: usize,
    pub late: usize,
    pub missed: usize,
    /// Due, overdue or upcoming: not decided yet.
    pub pending: usize,
}

impl WindowCounts {
    pub fn add(&mut self, other: WindowCounts) {
        self.checkpoints += other.checkpoints;
        self.on_time += other.on_time;
        self.late += other.late;
        self.missed += other.missed;
        self.pending += other.pending;
    }

    /// Checkpoints scanned (on time or late) in percent of all, rounded to the nearest whole
    /// percent; `None` without checkpoints.
    pub fn compliance_pct(&self) -> Option<u32> {
        let total = self.checkpoints as u64;
        let visited = (self.on_time + self.late) as u64;
        (total > 0).then(|| ((visited * 100 + total / 2) / total) as u32)
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
    pub fn totals(&self) -> WindowCounts {
        let mut total = WindowCounts::default();
        for w in &self.windows {
            total.add(w.counts());
        }
        total
    }
}

/// A scan as the tour section uses it: checkpoint, corrected time, guard and event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TourScan {
    pub checkpoint: CheckpointId,
    pub at_ms: i64,
    pub guard: GuardId,
    pub event: EventId,
}

/// The windows of the site's tours that `[from_ms, to_ms)` reports on (those that start in it)
/// and the span of scans their states depend on: from the earliest start of a window whose
/// grace reaches into the span (such a window can take a scan of the span as late, as it does on
/// the phone) to the latest end of grace of a reported window.
pub fn tour_windows(
    config: &SiteConfig,
    (from_ms, to_ms): (i64, i64),
) -> Result<Vec<(&Tour, Vec<Window>)>, ValidationError> {
    config
        .tours
        .iter()
        .map(|tour| {
            let grace_ms = i64::from(tour.grace_min) * 60_000;
            let windows = tour.windows_between(config.time_zone, from_ms - grace_ms, to_ms)?;
            Ok((tour, windows))
        })
        .collect()
}

/// The span of corrected time whose scans decide the states of `windows` ([`tour_windows`]).
pub fn scan_span(windows: &[(&Tour, Vec<Window>)]) -> Option<(i64, i64)> {
    windows
        .iter()
        .flat_map(|(tour, ws)| {
            let grace_ms = i64::from(tour.grace_min) * 60_000;
            ws.iter().map(move |w| (w.start_ms, w.end_ms + grace_ms))
        })
        .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
}

/// The tour section from the configuration's schedules and the site's scans: every window of
/// `windows` that starts in `[from_ms, to_ms)`, its checkpoints' states at `as_of_ms` by the
/// phone's rule ([`progress_of_windows`], each scan counting for one window only), all
/// provisional, no amendments. `scans` are every device's scans of the site over
/// [`scan_span`], in corrected-time order.
pub fn from_schedule(
    config: &SiteConfig,
    windows: &[(&Tour, Vec<Window>)],
    scans: &[TourScan],
    (from_ms, to_ms): (i64, i64),
    as_of_ms: i64,
) -> DarTours {
    let times: Vec<(CheckpointId, i64)> = scans
        .iter()
        .map(|s| (s.checkpoint.clone(), s.at_ms))
        .collect();
    // Which scan a state's time came from: the first of that checkpoint at that time.
    let mut by_time: HashMap<(&CheckpointId, i64), &TourScan> = HashMap::new();
    for scan in scans {
        by_time
            .entry((&scan.checkpoint, scan.at_ms))
            .or_insert(scan);
    }
    let mut out = Vec::new();
    for (tour, tour_windows) in windows {
        for progress in progress_of_windows(tour, tour_windows, &times, as_of_ms) {
            if progress.window.start_ms < from_ms || progress.window.start_ms >= to_ms {
                continue;
            }
            let checkpoints = progress
                .checkpoints
                .into_iter()
                .map(|(checkpoint, state)| {
                    let scanned_at_ms = state.scanned_at_ms();
                    let scan = scanned_at_ms.and_then(|t| by_time.get(&(&checkpoint, t)));
                    DarCheckpoint {
                        name: config
                            .checkpoint(&checkpoint)
                            .map_or_else(|| checkpoint.to_string(), |c| c.name.clone()),
                        status: state.into(),
                        scanned_at_ms,
                        guard: scan.map(|s| s.guard.clone()),
                        event: scan.map(|s| s.event),
                        checkpoint,
                    }
                })
                .collect();
            out.push(DarWindow {
                tour: tour.id.clone(),
                tour_name: tour.name.clone(),
                start_ms: progress.window.start_ms,
                end_ms: progress.window.end_ms,
                grace_min: tour.grace_min,
                is_final: false,
                checkpoints,
            });
        }
    }
    out.sort_by(|a, b| (a.start_ms, &a.tour).cmp(&(b.start_ms, &b.tour)));
    DarTours {
        windows: out,
        amendments: Vec::new(),
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
            (&[OnTime, Missed, Late], WindowStatus::Incomplete, Some(67)),
            (&[OnTime, Due, Upcoming], WindowStatus::InProgress, Some(33)),
            (&[Upcoming, Upcoming], WindowStatus::Upcoming, Some(0)),
            (&[], WindowStatus::Complete, None),
        ];
        for (statuses, status, pct) in cases {
            let w = window(statuses);
            assert_eq!(
                (w.status(), w.counts().compliance_pct()),
                (status, pct),
                "{statuses:?}"
            );
        }
    }
}
