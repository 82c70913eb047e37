//! Tour compliance on the server, for both backends: the rule is the core's
//! ([`patrol_core::compliance`]); this is how the server keeps its answer, incrementally, as
//! logs arrive. A backend keeps its SQL and its transactions and runs these steps:
//!
//! - **At every sync** (in the sync's transaction): [`Ingest::of`] the accepted pushes says
//!   what compliance learns: the scans new to the site (corrected times, device, guard) and, per
//!   shift log, the corrected times of its start, its end and its latest delivered event (kept
//!   in `shift_deliveries` as logs arrive, so that finality never re-reads a log). Scans of a
//!   checkpoint that a tour of the current configuration holds are kept in `tour_scans`; then
//!   for each such tour a [`Recompute`] works out the windows those scans can change: from the
//!   first window whose range (start to end of grace) holds one of them, onwards for as long as
//!   the scans taken differ from what was stored (a scan taken by an earlier window leaves the
//!   next one short, and so on), reading the stored windows and scans it names and no more.
//!   What changed is written back ([`Writes`]): the windows' rows, amendments of final
//!   windows, and announcements for the live streams.
//! - **Periodically** ([`Settle`], per site, under the site's lock): windows whose grace ended
//!   since the last pass are closed (what was not scanned is missed), even those nobody scanned
//!   at all, and every provisional window that is final by now (delivery or deadline) is marked
//!   final with when it turned final. Final stays final.
//! - **To read** ([`view`]): the windows of a span or a date, from the configuration's
//!   schedule, with what is stored of each; a window without a row has no scan.
//!
//! What is stored per window (`tour_windows`): each checkpoint's [`Mark`] and the scan it took,
//! whether and when it turned final, and how many amendments it has. A checkpoint's state at a
//! given moment (upcoming, due, late) follows from the mark and the clock. A change to a window
//! already final (stored final, or past its deadline) is never silent: each checkpoint whose
//! state changes gets an [`Amendment`] (before, after, the scan that caused it, when).
//!
//! Windows are those of the configuration in force when the work is done; a window's
//! checkpoints are its tour's when it was last computed. Windows that start before a site's
//! `tracked_since` (sites that existed before the server kept compliance, whose earlier scans
//! were not recorded for it) are left out.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use patrol_core::compliance::{
    self as rule, Final, FinalBy, ShiftDelivery, Tally, checkpoint_state, closes_at,
};
use patrol_core::event::format_time_ms;
use patrol_core::protocol::{CountedScan, TourScans, TourStatus};
use patrol_core::schedule::Window;
use patrol_core::siteconfig::{CheckpointState, SiteConfig, SiteRules, Tour};
use patrol_core::{CheckpointId, DeviceId, EventBody, EventId, GuardId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::merge::{ChunkWrite, Merge, Prepared};
use super::{StoreError, SyncBatch};

const DAY_MS: i64 = 24 * 3_600_000;
const HOUR_MS: i64 = 3_600_000;

/// How far before a scan windows are expanded to find those it belongs to and those before
/// them that may have taken scans of their ranges (no scheduled window lasts more than a day).
const LOOK_BACK_MS: i64 = 2 * DAY_MS;
/// Announcements of window changes are kept this long for the live streams, then dropped.
pub const CHANGES_KEPT_MS: i64 = 7 * DAY_MS;
/// The longest span of windows one read of the API covers.
pub const MAX_VIEW_SPAN_MS: i64 = 31 * DAY_MS;

/// A scan as compliance reads it: a row of `tour_scans`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRow {
    pub checkpoint: CheckpointId,
    /// Its corrected time.
    pub at_ms: i64,
    pub event: EventId,
    pub device: DeviceId,
    pub guard: GuardId,
}

impl ScanRow {
    /// The order scans are read in (and taken in, at equal times): corrected time, then event
    /// id (as its bytes, which is how both backends order the column).
    pub fn order(&self) -> (i64, [u8; 16]) {
        (self.at_ms, *self.event.0.as_bytes())
    }

    /// A row of `tour_scans` read back.
    pub fn read(
        checkpoint: &str,
        at_ms: i64,
        event: &[u8],
        device: &str,
        guard: &str,
    ) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::CorruptData(format!("tour scan: {what}"));
        Ok(ScanRow {
            checkpoint: CheckpointId::new(checkpoint).map_err(|e| corrupt(e.to_string()))?,
            at_ms,
            event: super::rows::read_event_id(event)?,
            device: super::rows::read_device_id(device)?,
            guard: super::rows::read_guard_id(guard)?,
        })
    }

    fn scan_ref(&self) -> ScanRef {
        ScanRef {
            event_id: self.event,
            at_ms: self.at_ms,
            device_id: self.device,
            guard: self.guard.clone(),
        }
    }
}

/// Puts scans read by several ranges in order ([`ScanRow::order`]), each once.
pub fn in_order(scans: &mut Vec<ScanRow>) {
    scans.sort_by_key(ScanRow::order);
    scans.dedup_by_key(|s| s.order());
}

/// What a shift log's new events tell compliance: the corrected times of its start (its
/// `shift_started`, else its earliest new event; a stored start stays), of its end (if it
/// arrived) and of its latest delivered event. Upserted into `shift_deliveries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub doc_id: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub delivered_to_ms: i64,
}

/// What one sync tells compliance.
#[derive(Clone, Debug, Default)]
pub struct Ingest {
    /// The scans new to their logs of checkpoints a tour of the site's configuration holds (the
    /// others are of no tour's concern), in order ([`ScanRow::order`]).
    pub scans: Vec<ScanRow>,
    pub deliveries: Vec<DeliveryUpdate>,
}

impl Ingest {
    /// What the request's accepted pushes (as written) brought: their new events' corrected
    /// times by the request's clock offset, as they are stamped.
    pub fn of(batch: &SyncBatch, merged: &[Option<Prepared>]) -> Ingest {
        let delivery = batch.delivery();
        // Only a tour's checkpoints are kept: on a site without tours no scan is (W1's pushes
        // are whole nights of scans, each copied and sorted for nothing otherwise).
        let held: HashSet<&CheckpointId> = batch
            .config
            .tours
            .iter()
            .flat_map(|t| &t.checkpoints)
            .collect();
        let mut out = Ingest::default();
        for prepared in merged.iter().flatten() {
            let Merge::Accepted(log) = &prepared.merge else {
                continue;
            };
            if log.write == ChunkWrite::Nothing || log.new_events.is_empty() {
                continue;
            }
            let mut started = None;
            let mut ended = None;
            let mut earliest = i64::MAX;
            let mut latest = i64::MIN;
            for event in &log.new_events {
                let at = delivery.corrected_ms(&event.record);
                earliest = earliest.min(at);
                latest = latest.max(at);
                match &event.record.body {
                    EventBody::ShiftStarted => {
                        started.get_or_insert(at);
                    }
                    EventBody::ShiftEnded { .. } => {
                        ended.get_or_insert(at);
                    }
                    EventBody::CheckpointScanned(scan) if held.contains(&scan.checkpoint) => {
                        out.scans.push(ScanRow {
                            checkpoint: scan.checkpoint.clone(),
                            at_ms: at,
                            event: event.id,
                            device: event.device,
                            guard: event.guard.clone(),
                        })
                    }
                    _ => {}
                }
            }
            out.deliveries.push(DeliveryUpdate {
                doc_id: prepared.doc_id.clone(),
                started_ms: started.unwrap_or(earliest),
                ended_ms: ended,
                delivered_to_ms: latest,
            });
        }
        out.scans.sort_by_key(ScanRow::order);
        out
    }
}

/// The scan a checkpoint of a window took, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRef {
    pub event_id: EventId,
    pub at_ms: i64,
    pub device_id: DeviceId,
    pub guard: GuardId,
}

/// What was recorded of a checkpoint of a window when it was last computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Not scanned, and the window's grace had not ended.
    Pending,
    Done,
    DoneLate,
    /// Not scanned by the end of the grace.
    Missed,
}

impl Mark {
    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Pending => "pending",
            Mark::Done => "done",
            Mark::DoneLate => "done_late",
            Mark::Missed => "missed",
        }
    }
}

/// One checkpoint of a stored window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRow {
    pub checkpoint_id: CheckpointId,
    pub mark: Mark,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanRef>,
}

impl CheckpointRow {
    fn pending(checkpoint_id: CheckpointId) -> Self {
        CheckpointRow {
            checkpoint_id,
            mark: Mark::Pending,
            scan: None,
        }
    }

    /// Its state in a final window: done, done late, or missed.
    pub fn final_state(&self) -> Mark {
        match (&self.scan, self.mark) {
            (Some(_), Mark::DoneLate) => Mark::DoneLate,
            (Some(_), _) => Mark::Done,
            (None, _) => Mark::Missed,
        }
    }

    /// As the API and the live streams show it, in state `mark`.
    fn json(&self, mark: Mark) -> StateJson {
        StateJson {
            state: mark.as_str().to_owned(),
            event_id: self.scan.as_ref().map(|s| s.event_id.to_string()),
            corrected_time: self.scan.as_ref().map(|s| format_time_ms(s.at_ms)),
            device_id: self.scan.as_ref().map(|s| s.device_id.to_string()),
            guard: self.scan.as_ref().map(|s| s.guard.to_string()),
        }
    }
}

/// A checkpoint's state in a window and the scan it took, as the API and the live streams show
/// it (before and after a change, in an amendment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct StateJson {
    /// `pending` (not scanned, grace not over), `done`, `done_late` or `missed`.
    pub state: String,
    /// The scan's event id; null without one.
    #[schema(format = Uuid)]
    pub event_id: Option<String>,
    /// The scan's corrected time (RFC 3339); null without one.
    pub corrected_time: Option<String>,
    #[schema(format = Uuid)]
    pub device_id: Option<String>,
    pub guard: Option<String>,
}

/// An amendment as the API and the live streams show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct AmendmentJson {
    pub checkpoint_id: String,
    /// The checkpoint's state before (in a final window: done, done_late or missed).
    pub before: StateJson,
    pub after: StateJson,
    /// The scan whose late arrival caused the change.
    #[schema(format = Uuid)]
    pub event_id: String,
    /// When the server recorded the change (RFC 3339).
    pub at: String,
}

/// A tour window as stored (a row of `tour_windows`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRow {
    pub tour: String,
    pub window: Window,
    pub grace_ms: i64,
    pub checkpoints: Vec<CheckpointRow>,
    /// When and why it turned final; `None` while provisional.
    pub final_: Option<Final>,
    pub amendments: u32,
    pub updated_at_ms: i64,
}

impl WindowRow {
    /// A window nothing has been stored of: every checkpoint pending.
    fn fresh(tour: &Tour, window: Window) -> Self {
        WindowRow {
            tour: tour.id.clone(),
            window,
            grace_ms: rule::grace_ms(tour.grace_min),
            checkpoints: tour
                .checkpoints
                .iter()
                .cloned()
                .map(CheckpointRow::pending)
                .collect(),
            final_: None,
            amendments: 0,
            updated_at_ms: 0,
        }
    }

    pub fn closes_at(&self) -> i64 {
        closes_at(&self.window, self.grace_ms)
    }

    /// The checkpoints as stored (`tour_windows.checkpoints`, JSON).
    pub fn checkpoints_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(&self.checkpoints).map_err(|e| StoreError::Encode(e.to_string()))
    }

    /// A row read back; `final_by` is stored as [`FinalBy::as_str`].
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        tour: String,
        start_ms: i64,
        end_ms: i64,
        grace_ms: i64,
        checkpoints: &str,
        final_at_ms: Option<i64>,
        final_by: Option<&str>,
        amendments: i64,
        updated_at_ms: i64,
    ) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::CorruptData(format!("tour window: {what}"));
        let checkpoints = serde_json::from_str(checkpoints).map_err(|e| corrupt(e.to_string()))?;
        let final_ = match (final_at_ms, final_by) {
            (Some(at_ms), Some(by)) => Some(Final {
                by: FinalBy::parse(by).ok_or_else(|| corrupt(format!("final_by {by:?}")))?,
                at_ms,
            }),
            (None, None) => None,
            other => return Err(corrupt(format!("final {other:?}"))),
        };
        Ok(WindowRow {
            tour,
            window: Window { start_ms, end_ms },
            grace_ms,
            checkpoints,
            final_,
            amendments: u32::try_from(amendments).map_err(|_| corrupt("amendments".into()))?,
            updated_at_ms,
        })
    }

    fn key(&self) -> (String, Window) {
        (self.tour.clone(), self.window)
    }

    /// Final as stored (if it was by `now_ms`: a report as of an earlier time shows it as it
    /// was then), or by its deadline once that passed (whether or not the finaliser has been by
    /// since).
    fn final_at(&self, rules: &SiteRules, now_ms: i64) -> Option<Final> {
        self.final_.filter(|f| f.at_ms <= now_ms).or_else(|| {
            let deadline =
                rule::deadline_ms(&self.window, self.grace_ms, rules.finalise_after_hours);
            (now_ms >= deadline).then_some(Final {
                by: FinalBy::Deadline,
                at_ms: deadline,
            })
        })
    }

    /// The checkpoint's stored row, if it has one.
    fn checkpoint(&self, id: &CheckpointId) -> Option<&CheckpointRow> {
        self.checkpoints.iter().find(|c| &c.checkpoint_id == id)
    }

    /// Its checkpoints' states at `now_ms` (unscanned ones missed once it is final).
    fn states(&self, final_: bool, now_ms: i64) -> Vec<CheckpointState> {
        self.checkpoints
            .iter()
            .map(|c| {
                let scan = c.scan.as_ref().map(|s| (s.at_ms, c.mark == Mark::DoneLate));
                match checkpoint_state(&self.window, self.grace_ms, scan, now_ms) {
                    CheckpointState::Upcoming | CheckpointState::Due | CheckpointState::Late
                        if final_ =>
                    {
                        CheckpointState::Missed
                    }
                    state => state,
                }
            })
            .collect()
    }

    fn tally(&self, final_: bool, now_ms: i64) -> Tally {
        Tally::of(&self.states(final_, now_ms))
    }

    /// The window's identity in announcements.
    fn json_head(&self) -> serde_json::Map<String, Value> {
        let mut head = serde_json::Map::new();
        head.insert("tour_id".into(), self.tour.clone().into());
        head.insert("start".into(), format_time_ms(self.window.start_ms).into());
        head.insert("end".into(), format_time_ms(self.window.end_ms).into());
        head
    }
}

/// A change to a final window: one checkpoint's state before and after, and the scan that
/// caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Amendment {
    pub tour: String,
    pub window: Window,
    /// 1, 2, ... within the window.
    pub n: u32,
    pub checkpoint: CheckpointId,
    pub before: CheckpointRow,
    pub after: CheckpointRow,
    pub cause: EventId,
    pub at_ms: i64,
}

impl Amendment {
    /// `before` and `after` as stored (`tour_amendments`, JSON).
    pub fn sides_json(&self) -> Result<(String, String), StoreError> {
        let encode = |row: &CheckpointRow| {
            serde_json::to_string(row).map_err(|e| StoreError::Encode(e.to_string()))
        };
        Ok((encode(&self.before)?, encode(&self.after)?))
    }

    /// An amendment read back.
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        tour: String,
        window: Window,
        n: i64,
        checkpoint: &str,
        before: &str,
        after: &str,
        cause: &[u8],
        at_ms: i64,
    ) -> Result<Self, StoreError> {
        let corrupt = |what: String| StoreError::CorruptData(format!("amendment: {what}"));
        let side = |text: &str| -> Result<CheckpointRow, StoreError> {
            serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))
        };
        Ok(Amendment {
            tour,
            window,
            n: u32::try_from(n).map_err(|_| corrupt(format!("number {n}")))?,
            checkpoint: CheckpointId::new(checkpoint).map_err(|e| corrupt(e.to_string()))?,
            before: side(before)?,
            after: side(after)?,
            cause: super::rows::read_event_id(cause)?,
            at_ms,
        })
    }

    pub fn json(&self) -> AmendmentJson {
        AmendmentJson {
            checkpoint_id: self.checkpoint.to_string(),
            before: self.before.json(self.before.final_state()),
            after: self.after.json(self.after.final_state()),
            event_id: self.cause.to_string(),
            at: format_time_ms(self.at_ms),
        }
    }
}

/// The announcements of window changes on the live streams: their event names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A provisional window's checkpoints changed (a scan arrived, or the grace ended).
    WindowChanged,
    /// A window turned final.
    WindowFinal,
    /// A final window was amended.
    WindowAmended,
}

impl ChangeKind {
    pub const NAMES: [&'static str; 3] = ["window_changed", "window_final", "window_amended"];

    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::WindowChanged => Self::NAMES[0],
            ChangeKind::WindowFinal => Self::NAMES[1],
            ChangeKind::WindowAmended => Self::NAMES[2],
        }
    }
}

/// One announcement to write (`tour_window_changes`): its kind and its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub data: Value,
}

/// A stored announcement: its per-site number, its event name and its JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChange {
    pub seq: u64,
    pub kind: String,
    pub data: String,
}

/// What a step of compliance writes: window rows (inserted or replaced whole), amendments and
/// announcements, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Writes {
    pub windows: Vec<WindowRow>,
    pub amendments: Vec<Amendment>,
    pub changes: Vec<Change>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.amendments.is_empty() && self.changes.is_empty()
    }

    /// Records `new` for the window `old` was (its stored row, or a fresh one): the row, and
    /// what changed: amendments if the window was final (`was_final`: stored, or past its
    /// deadline), else the announcement of its changes; and the announcement that it turned
    /// final if it did here (a window final by its deadline and written for another reason is
    /// stored final from then on). Nothing if nothing changed.
    fn window(
        &mut self,
        old: &WindowRow,
        mut new: WindowRow,
        was_final: Option<Final>,
        causes: &Causes,
        now_ms: i64,
    ) {
        let changed: Vec<(CheckpointRow, &CheckpointRow)> = new
            .checkpoints
            .iter()
            .map(|n| {
                let o = old
                    .checkpoint(&n.checkpoint_id)
                    .cloned()
                    .unwrap_or_else(|| CheckpointRow::pending(n.checkpoint_id.clone()));
                (o, n)
            })
            .filter(|(o, n)| o != *n)
            .collect();
        if changed.is_empty() && new.final_ == old.final_ {
            return;
        }
        if new.final_.is_none() {
            new.final_ = was_final;
        }
        let mut head = new.json_head();
        if let Some(f) = was_final {
            // Final before this change: each change of a checkpoint's state is an amendment.
            let mut amendments = Vec::new();
            for (o, n) in &changed {
                if o.final_state() == n.final_state() && o.scan == n.scan {
                    continue;
                }
                amendments.push(Amendment {
                    tour: new.tour.clone(),
                    window: new.window,
                    n: new.amendments + amendments.len() as u32 + 1,
                    checkpoint: n.checkpoint_id.clone(),
                    before: o.clone(),
                    after: (*n).clone(),
                    cause: causes.of(&n.checkpoint_id, n.scan.as_ref()),
                    at_ms: now_ms,
                });
            }
            new.amendments += amendments.len() as u32;
            if !amendments.is_empty() {
                let mut data = head.clone();
                data.insert("final_by".into(), f.by.as_str().into());
                data.insert(
                    "amendments".into(),
                    json!(amendments.iter().map(Amendment::json).collect::<Vec<_>>()),
                );
                data.insert("percent".into(), new.tally(true, now_ms).percent().into());
                self.changes.push(Change {
                    kind: ChangeKind::WindowAmended,
                    data: Value::Object(data),
                });
            }
            self.amendments.extend(amendments);
        } else if !changed.is_empty() {
            let mut data = head.clone();
            data.insert(
                "changes".into(),
                changed
                    .iter()
                    .map(|(o, n)| {
                        json!({
                            "checkpoint_id": n.checkpoint_id.as_str(),
                            "before": o.json(o.mark),
                            "after": n.json(n.mark),
                        })
                    })
                    .collect(),
            );
            data.insert(
                "percent".into(),
                new.tally(new.final_.is_some(), now_ms).percent().into(),
            );
            self.changes.push(Change {
                kind: ChangeKind::WindowChanged,
                data: Value::Object(data),
            });
        }
        if let (None, Some(f)) = (old.final_, new.final_) {
            let tally = new.tally(true, now_ms);
            head.insert("final_by".into(), f.by.as_str().into());
            head.insert("finalised_at".into(), format_time_ms(f.at_ms).into());
            head.insert("percent".into(), tally.percent().into());
            head.insert("done".into(), tally.done.into());
            head.insert("done_late".into(), tally.done_late.into());
            head.insert("missed".into(), tally.missed.into());
            self.changes.push(Change {
                kind: ChangeKind::WindowFinal,
                data: Value::Object(head),
            });
        }
        new.updated_at_ms = now_ms;
        self.windows.push(new);
    }
}

/// Which new scan caused a checkpoint's change: the scan it took if that is new, else the
/// earliest new scan of the checkpoint (checkpoints are independent: only their own scans move
/// them).
struct Causes<'a> {
    new: &'a [ScanRow],
}

impl Causes<'_> {
    fn of(&self, checkpoint: &CheckpointId, took: Option<&ScanRef>) -> EventId {
        took.map(|s| s.event_id)
            .filter(|id| self.new.iter().any(|s| s.event == *id))
            .or_else(|| {
                self.new
                    .iter()
                    .find(|s| &s.checkpoint == checkpoint)
                    .map(|s| s.event)
            })
            .or_else(|| self.new.first().map(|s| s.event))
            .unwrap_or(EventId(uuid::Uuid::nil()))
    }
}

/// What a [`Recompute`] needs read: the tour's stored windows starting in
/// `[windows_from, windows_to)`, and the first `limit` scans (in order, [`ScanRow::order`]) of
/// each of `scans`' ranges; a backend gives them back once each, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reads {
    pub tour: String,
    pub windows_from: i64,
    pub windows_to: i64,
    pub scans: Vec<ScanRange>,
}

/// The first `limit` scans of `checkpoint` with corrected times in `[from_ms, to_ms)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRange {
    pub checkpoint: CheckpointId,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: u32,
}

/// The outcome of one [`Recompute::run`].
#[derive(Debug)]
pub enum Step {
    Done(Writes),
    /// The windows changed run past what was read: read again ([`Recompute::reads`]) and run.
    More,
}

/// A sync's new scans of one tour's checkpoints, in runs with at most [`LOOK_BACK_MS`]
/// between consecutive scans: each run is one [`Recompute`], run (and written) in order, so
/// that a clock gone wild (a scan a year off the others) costs two small expansions, not one
/// of a year.
pub fn runs(tour: &Tour, scans: &[ScanRow]) -> Vec<Vec<ScanRow>> {
    let mut out: Vec<Vec<ScanRow>> = Vec::new();
    let mut mine: Vec<&ScanRow> = scans
        .iter()
        .filter(|s| tour.checkpoints.contains(&s.checkpoint))
        .collect();
    mine.sort_by_key(|s| s.order());
    for scan in mine {
        match out.last_mut() {
            Some(run)
                if run
                    .last()
                    .is_some_and(|l| scan.at_ms - l.at_ms <= LOOK_BACK_MS) =>
            {
                run.push(scan.clone())
            }
            _ => out.push(vec![scan.clone()]),
        }
    }
    out
}

/// The windows of one tour that a run of new scans ([`runs`]) can change, worked out
/// incrementally (see the module docs). A backend asks [`Recompute::reads`], reads, and
/// [`Recompute::run`]s until it is [`Step::Done`], then writes what it gives. Only the
/// checkpoints with new scans are worked out again (each checkpoint's scans are its own).
#[derive(Debug)]
pub struct Recompute<'a> {
    tour: &'a Tour,
    zone: patrol_core::siteconfig::SiteZone,
    rules: SiteRules,
    grace_ms: i64,
    since_ms: Option<i64>,
    /// The run's scans, in order, and the checkpoints they are of.
    new: Vec<ScanRow>,
    touched: Vec<CheckpointId>,
    now_ms: i64,
    /// Windows are expanded from this...
    from_ms: i64,
    /// ...to those starting before this, which grows while a cascade runs on.
    ahead_ms: i64,
    step_ms: i64,
    /// The tour's tracked windows so expanded, in order of start.
    windows: Vec<Window>,
    /// The first window whose range holds a new scan.
    first: usize,
}

impl<'a> Recompute<'a> {
    /// The work a run of new scans (in order) makes for `tour` of `config`; `None` when no
    /// tracked window of the tour can take any of them (they are kept all the same, for the
    /// windows of another schedule).
    pub fn new(
        config: &SiteConfig,
        tour: &'a Tour,
        since_ms: Option<i64>,
        run: Vec<ScanRow>,
        now_ms: i64,
    ) -> Option<Self> {
        let (first, last) = (run.first()?.at_ms, run.iter().map(|s| s.at_ms).max()?);
        let grace_ms = rule::grace_ms(tour.grace_min);
        let mut touched: Vec<CheckpointId> = Vec::new();
        for cp in &tour.checkpoints {
            if run.iter().any(|s| &s.checkpoint == cp) && !touched.contains(cp) {
                touched.push(cp.clone());
            }
        }
        let mut job = Recompute {
            tour,
            zone: config.time_zone,
            rules: config.rules,
            grace_ms,
            since_ms,
            new: run,
            touched,
            now_ms,
            from_ms: first.saturating_sub(grace_ms).saturating_sub(LOOK_BACK_MS),
            ahead_ms: last.saturating_add(1),
            step_ms: 6 * HOUR_MS,
            windows: Vec::new(),
            first: 0,
        };
        if let Err(e) = job.expand() {
            // A schedule that does not expand over the run (a span out of range): its windows
            // cannot be worked out, and a sync never fails for it.
            tracing::warn!(tour = %tour.id, error = %e, "cannot expand a tour's windows for compliance");
            return None;
        }
        let times: Vec<i64> = job.new.iter().map(|s| s.at_ms).collect();
        let holds = |w: &Window| {
            let i = times.partition_point(|&t| t < w.start_ms);
            times.get(i).is_some_and(|&t| t < closes_at(w, grace_ms))
        };
        job.first = job.windows.iter().position(holds)?;
        Some(job)
    }

    fn expand(&mut self) -> Result<(), patrol_core::ValidationError> {
        let windows = self
            .tour
            .windows_between(self.zone, self.from_ms, self.ahead_ms)?;
        self.windows = windows
            .into_iter()
            .filter(|w| self.since_ms.is_none_or(|since| w.start_ms >= since))
            .collect();
        Ok(())
    }

    /// The windows before the first concerned that may have taken scans of its range: their
    /// stored choices stand, and those scans are not the later windows' to take.
    fn pinned(&self) -> impl Iterator<Item = &Window> {
        let first = self.windows[self.first].start_ms;
        self.windows[..self.first]
            .iter()
            .filter(move |w| closes_at(w, self.grace_ms) > first)
    }

    /// What to read before the next [`Recompute::run`]: the stored windows from the first
    /// pinned one, and, per window from the first concerned and checkpoint worked out again,
    /// only the scans that can make its choice. A window takes the first scan not yet taken in
    /// its range, and each earlier window whose range meets that range takes at most one of
    /// them: so the first of them, one more than those windows, hold its choice; the scans of
    /// a night that other phones delivered before are not read whole at every sync.
    pub fn reads(&self) -> Reads {
        let first = self.windows[self.first];
        let mut scans = Vec::new();
        for (k, w) in self.windows.iter().enumerate().skip(self.first) {
            let close = closes_at(w, self.grace_ms);
            let earlier = |from: i64| {
                self.windows[..k]
                    .iter()
                    .filter(|j| closes_at(j, self.grace_ms) > from)
                    .count() as u32
            };
            for (from_ms, to_ms) in [(w.start_ms, w.end_ms), (w.end_ms, close)] {
                if to_ms <= from_ms {
                    continue;
                }
                let limit = earlier(from_ms) + 1;
                scans.extend(self.touched.iter().map(|cp| ScanRange {
                    checkpoint: cp.clone(),
                    from_ms,
                    to_ms,
                    limit,
                }));
            }
        }
        Reads {
            tour: self.tour.id.clone(),
            windows_from: self
                .pinned()
                .map(|w| w.start_ms)
                .min()
                .unwrap_or(first.start_ms),
            windows_to: self.ahead_ms,
            scans,
        }
    }

    /// Works out the windows from the first concerned, given what [`Recompute::reads`] named:
    /// `stored` (the tour's rows in the window range) and `scans` (each once, in order).
    pub fn run(&mut self, stored: &[WindowRow], scans: &[ScanRow]) -> Step {
        let rows: HashMap<Window, &WindowRow> = stored
            .iter()
            .filter(|r| r.tour == self.tour.id)
            .map(|r| (r.window, r))
            .collect();
        let pinned: HashSet<EventId> = self
            .pinned()
            .filter_map(|w| rows.get(w))
            .flat_map(|r| r.checkpoints.iter().filter_map(|c| c.scan.as_ref()))
            .map(|s| s.event_id)
            .collect();
        let mut taken: Vec<bool> = scans.iter().map(|s| pinned.contains(&s.event)).collect();
        let pairs: Vec<(CheckpointId, i64)> = scans
            .iter()
            .map(|s| (s.checkpoint.clone(), s.at_ms))
            .collect();
        let windows = &self.windows[self.first..];
        let assigned =
            rule::assign_scans(&self.touched, self.grace_ms, windows, &pairs, &mut taken);
        // The scans available to later windows that differ between what was stored and what
        // is worked out now (with their corrected times): the new ones to begin with. Windows
        // starting after all of them see what they saw before, and stay as stored.
        let mut differ: BTreeMap<EventId, i64> =
            self.new.iter().map(|s| (s.event, s.at_ms)).collect();
        let causes = Causes { new: &self.new };
        let mut writes = Writes::default();
        for (k, (w, row)) in windows.iter().zip(&assigned).enumerate() {
            let old = rows
                .get(w)
                .map(|r| (*r).clone())
                .unwrap_or_else(|| WindowRow::fresh(self.tour, *w));
            let was_final = old.final_at(&self.rules, self.now_ms);
            let missed = self.now_ms >= closes_at(w, self.grace_ms) || was_final.is_some();
            let mut new = WindowRow {
                checkpoints: Vec::with_capacity(self.tour.checkpoints.len()),
                grace_ms: self.grace_ms,
                ..old.clone()
            };
            for cp in &self.tour.checkpoints {
                let before = old.checkpoint(cp);
                let (scan, late) = match self.touched.iter().position(|t| t == cp) {
                    Some(i) => {
                        let took = row[i];
                        let after = took.map(|t| &scans[t.scan]);
                        let before = before.and_then(|c| c.scan.as_ref());
                        if before.map(|s| s.event_id) != after.map(|s| s.event) {
                            let moved = before
                                .map(|s| (s.event_id, s.at_ms))
                                .into_iter()
                                .chain(after.map(|s| (s.event, s.at_ms)));
                            for (id, at) in moved {
                                if differ.remove(&id).is_none() {
                                    differ.insert(id, at);
                                }
                            }
                        }
                        (after.map(ScanRow::scan_ref), took.is_some_and(|t| t.late))
                    }
                    // Not worked out again: as stored.
                    None => (
                        before.and_then(|c| c.scan.clone()),
                        before.is_some_and(|c| c.mark == Mark::DoneLate),
                    ),
                };
                new.checkpoints.push(CheckpointRow {
                    checkpoint_id: cp.clone(),
                    mark: match (&scan, late) {
                        (Some(_), true) => Mark::DoneLate,
                        (Some(_), false) => Mark::Done,
                        (None, _) if missed => Mark::Missed,
                        (None, _) => Mark::Pending,
                    },
                    scan,
                });
            }
            writes.window(&old, new, was_final, &causes, self.now_ms);
            let next_start = windows.get(k + 1).map_or(self.ahead_ms, |n| n.start_ms);
            if differ.values().all(|&at| at < next_start) {
                return Step::Done(writes);
            }
        }
        // The windows read were not enough: read further and run again.
        self.ahead_ms = self.ahead_ms.saturating_add(self.step_ms);
        self.step_ms = self.step_ms.saturating_mul(2);
        if let Err(e) = self.expand() {
            tracing::warn!(tour = %self.tour.id, error = %e, "cannot expand a tour's windows for compliance");
            return Step::Done(writes);
        }
        Step::More
    }
}

/// A site's compliance bookkeeping (`compliance_sites`): windows starting before
/// `tracked_since` are not kept (`None`: all are), and the finaliser has closed every window
/// whose grace ended by `closed_through` (`None` before its first pass).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteBookkeeping {
    pub tracked_since: Option<i64>,
    pub closed_through: Option<i64>,
}

/// The finaliser's pass over one site at `now_ms` (see the module docs): a backend reads what
/// [`Settle::reads`] names, calls [`Settle::run`], writes what it gives and records
/// `closed_through = now_ms`.
#[derive(Debug)]
pub struct Settle<'a> {
    config: &'a SiteConfig,
    book: SiteBookkeeping,
    now_ms: i64,
    /// The tours' windows whose grace ended since the last pass, by tour: closed by this one.
    closing: Vec<(&'a Tour, Vec<Window>)>,
}

/// What a [`Settle`] needs read: the site's stored windows starting in
/// `[windows_from, windows_to)` (those closing in this pass), its provisional windows whose grace
/// ended by `now` (index `tour_windows_provisional`), and its shift logs open or ended since
/// `shifts_ended_since`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettleReads {
    pub windows_from: i64,
    pub windows_to: i64,
    pub now_ms: i64,
    pub shifts_ended_since: i64,
}

/// What a [`Settle`] gives: the writes, and what happened, for the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settled {
    pub writes: Writes,
    pub closed: u32,
    pub finalised: u32,
}

impl<'a> Settle<'a> {
    pub fn new(config: &'a SiteConfig, book: SiteBookkeeping, now_ms: i64) -> Self {
        let finalise_after_ms = i64::from(config.rules.finalise_after_hours) * HOUR_MS;
        // On a first pass (or after a long stop), windows whose deadline passed long ago are
        // final by it without a row; from then on, each pass takes up where the last ended.
        let earliest = now_ms
            .saturating_sub(finalise_after_ms)
            .saturating_sub(LOOK_BACK_MS);
        let from_ms = book
            .closed_through
            .unwrap_or(now_ms.saturating_sub(finalise_after_ms))
            .max(earliest);
        let mut closing = Vec::new();
        for tour in &config.tours {
            let grace = rule::grace_ms(tour.grace_min);
            let windows = match tour.windows_between(
                config.time_zone,
                from_ms.saturating_sub(grace).saturating_sub(LOOK_BACK_MS),
                now_ms,
            ) {
                Ok(windows) => windows,
                Err(e) => {
                    tracing::warn!(tour = %tour.id, error = %e, "cannot expand a tour's windows to close them");
                    continue;
                }
            };
            let windows: Vec<Window> = windows
                .into_iter()
                .filter(|w| {
                    let close = closes_at(w, grace);
                    close > from_ms
                        && close <= now_ms
                        && book.tracked_since.is_none_or(|s| w.start_ms >= s)
                })
                .collect();
            if !windows.is_empty() {
                closing.push((tour, windows));
            }
        }
        Settle {
            config,
            book,
            now_ms,
            closing,
        }
    }

    /// Whether no window closes in this pass: then a pass that finds nothing to finalise
    /// writes nothing at all (not even its bookkeeping, which the next pass takes up as is).
    pub fn idle(&self) -> bool {
        self.closing.is_empty()
    }

    pub fn reads(&self) -> SettleReads {
        let starts = self
            .closing
            .iter()
            .flat_map(|(_, ws)| ws.iter().map(|w| w.start_ms));
        let (lo, hi) = starts.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        let finalise_after_ms = i64::from(self.config.rules.finalise_after_hours) * HOUR_MS;
        SettleReads {
            windows_from: if lo <= hi { lo } else { self.now_ms },
            windows_to: if lo <= hi {
                hi.saturating_add(1)
            } else {
                self.now_ms
            },
            now_ms: self.now_ms,
            // A window still provisional ends after now - finalise_after; a shift on during it
            // ended after its start, at most a day before its end.
            shifts_ended_since: self
                .now_ms
                .saturating_sub(finalise_after_ms)
                .saturating_sub(LOOK_BACK_MS),
        }
    }

    /// Closes the windows closing in this pass and finalises what is final: `stored` are the
    /// rows read for the closing windows, `provisional` the provisional rows closed by now,
    /// `shifts` the shift logs read.
    pub fn run(
        &self,
        stored: &[WindowRow],
        provisional: &[WindowRow],
        shifts: &[ShiftDelivery],
    ) -> Settled {
        let rows: HashMap<(String, Window), &WindowRow> = stored
            .iter()
            .chain(provisional)
            .map(|r| (r.key(), r))
            .collect();
        let mut out = Settled::default();
        let causes = Causes { new: &[] };
        // Every window closing now, and every provisional one closed before: the latest of each.
        let mut candidates: BTreeMap<(String, Window), WindowRow> = provisional
            .iter()
            .filter(|r| r.final_.is_none())
            .map(|r| (r.key(), r.clone()))
            .collect();
        for (tour, windows) in &self.closing {
            for w in windows {
                let old = rows
                    .get(&(tour.id.clone(), *w))
                    .map(|r| (*r).clone())
                    .unwrap_or_else(|| WindowRow::fresh(tour, *w));
                candidates.insert(old.key(), old);
            }
        }
        for (_, old) in candidates {
            if self
                .book
                .tracked_since
                .is_some_and(|s| old.window.start_ms < s)
            {
                continue;
            }
            let final_ = rule::finality(
                &old.window,
                old.grace_ms,
                self.config.rules.finalise_after_hours,
                shifts,
                self.now_ms,
            );
            let mut new = old.clone();
            for c in &mut new.checkpoints {
                if c.mark == Mark::Pending {
                    c.mark = Mark::Missed;
                }
            }
            new.final_ = old.final_.or(final_);
            let before = out.writes.windows.len();
            let closed = new.checkpoints != old.checkpoints;
            out.writes
                .window(&old, new, old.final_, &causes, self.now_ms);
            if out.writes.windows.len() > before {
                out.closed += u32::from(closed);
                out.finalised += u32::from(final_.is_some());
            }
        }
        out
    }
}

/// Which windows to read through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Span {
    /// The windows overlapping `[from, to)`.
    Between { from_ms: i64, to_ms: i64 },
    /// The windows of a local date in the site's zone: its nights' scheduled windows and the
    /// one-off windows starting on it ([`Tour::windows_of_date`]).
    Date(NaiveDate),
}

/// A read of a site's windows: one tour's or all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowQuery {
    pub tour: Option<String>,
    pub span: Span,
}

/// One checkpoint of a window as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointView {
    pub checkpoint: CheckpointId,
    /// Its name in the configuration (the id if it has none there now).
    pub name: String,
    pub state: CheckpointState,
    pub scan: Option<ScanRef>,
}

/// One window as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowView {
    pub tour: String,
    pub tour_name: String,
    pub window: Window,
    pub grace_ms: i64,
    pub checkpoints: Vec<CheckpointView>,
    pub tally: Tally,
    pub final_: Option<Final>,
    pub amendments: Vec<Amendment>,
}

/// A read's answer: the site's zone, since when compliance is kept, the windows in order of
/// start (then tour).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowsAnswer {
    pub time_zone: patrol_core::siteconfig::SiteZone,
    pub tracked_since: Option<i64>,
    pub windows: Vec<WindowView>,
}

impl WindowQuery {
    /// The tours read, in the configuration's order; [`StoreError::UnknownTour`] for a tour the
    /// configuration does not have.
    fn tours<'c>(&self, config: &'c SiteConfig) -> Result<Vec<&'c Tour>, StoreError> {
        match &self.tour {
            None => Ok(config.tours.iter().collect()),
            Some(id) => config
                .tour(id)
                .map(|t| vec![t])
                .ok_or_else(|| StoreError::UnknownTour {
                    site: config.site.clone(),
                    tour: id.clone(),
                }),
        }
    }

    /// Each tour's windows of the span from the configuration.
    fn expected(&self, config: &SiteConfig) -> Result<Vec<(String, Window)>, StoreError> {
        let mut out = Vec::new();
        for tour in self.tours(config)? {
            let windows = match self.span {
                Span::Between { from_ms, to_ms } => tour
                    .windows_between(config.time_zone, from_ms, to_ms)
                    .map_err(|e| StoreError::CorruptData(format!("tour {}: {e}", tour.id)))?,
                Span::Date(date) => tour.windows_of_date(config.time_zone, date),
            };
            out.extend(windows.into_iter().map(|w| (tour.id.clone(), w)));
        }
        Ok(out)
    }

    /// The stored windows to read: those starting in `[from, to)` (of the query's tour only,
    /// when it names one).
    pub fn rows_range(&self, config: &SiteConfig) -> Result<(i64, i64), StoreError> {
        Ok(match self.span {
            // A scheduled window overlapping the span started at most a day before it.
            Span::Between { from_ms, to_ms } => (from_ms.saturating_sub(LOOK_BACK_MS), to_ms),
            Span::Date(_) => {
                let expected = self.expected(config)?;
                let lo = expected.iter().map(|(_, w)| w.start_ms).min();
                let hi = expected.iter().map(|(_, w)| w.start_ms).max();
                match (lo, hi) {
                    (Some(lo), Some(hi)) => (lo, hi.saturating_add(1)),
                    _ => (0, 0),
                }
            }
        })
    }
}

/// The answer to `query` at `now_ms`: every window the configuration gives for it, and every
/// stored one it covers (a window of a schedule changed since keeps its row), each with what is
/// stored of it (a window without a row has no scan), untracked windows left out.
pub fn view(
    config: &SiteConfig,
    book: SiteBookkeeping,
    rows: &[WindowRow],
    amendments: &[Amendment],
    query: &WindowQuery,
    now_ms: i64,
) -> Result<WindowsAnswer, StoreError> {
    let expected = query.expected(config)?;
    let mut windows: BTreeMap<(i64, i64, String), WindowRow> = BTreeMap::new();
    for (tour_id, w) in &expected {
        if let Some(tour) = config.tour(tour_id) {
            windows.insert(
                (w.start_ms, w.end_ms, tour_id.clone()),
                WindowRow::fresh(tour, *w),
            );
        }
    }
    let covered = |r: &WindowRow| match query.span {
        Span::Between { from_ms, to_ms } => r.window.overlaps(from_ms, to_ms),
        Span::Date(_) => expected
            .iter()
            .filter(|(t, _)| *t == r.tour)
            .map(|(_, w)| w.start_ms)
            .fold(None, |range: Option<(i64, i64)>, s| {
                Some(range.map_or((s, s), |(lo, hi)| (lo.min(s), hi.max(s))))
            })
            .is_some_and(|(lo, hi)| (lo..=hi).contains(&r.window.start_ms)),
    };
    for r in rows {
        if query.tour.as_ref().is_none_or(|t| *t == r.tour) && covered(r) {
            windows.insert(
                (r.window.start_ms, r.window.end_ms, r.tour.clone()),
                r.clone(),
            );
        }
    }
    let mut by_window: HashMap<(String, Window), Vec<Amendment>> = HashMap::new();
    for a in amendments {
        by_window
            .entry((a.tour.clone(), a.window))
            .or_default()
            .push(a.clone());
    }
    let out = windows
        .into_values()
        .filter(|r| book.tracked_since.is_none_or(|s| r.window.start_ms >= s))
        .map(|r| {
            let final_ = r.final_at(&config.rules, now_ms);
            let states = r.states(final_.is_some(), now_ms);
            let mut amendments = by_window.remove(&r.key()).unwrap_or_default();
            amendments.sort_by_key(|a| a.n);
            WindowView {
                tour_name: config
                    .tour(&r.tour)
                    .map_or_else(|| r.tour.clone(), |t| t.name.clone()),
                tally: Tally::of(&states),
                checkpoints: r
                    .checkpoints
                    .iter()
                    .zip(states)
                    .map(|(c, state)| CheckpointView {
                        name: config
                            .checkpoint(&c.checkpoint_id)
                            .map_or_else(|| c.checkpoint_id.to_string(), |cp| cp.name.clone()),
                        checkpoint: c.checkpoint_id.clone(),
                        state,
                        scan: c.scan.clone(),
                    })
                    .collect(),
                tour: r.tour,
                window: r.window,
                grace_ms: r.grace_ms,
                final_,
                amendments,
            }
        })
        .collect();
    Ok(WindowsAnswer {
        time_zone: config.time_zone,
        tracked_since: book.tracked_since,
        windows: out,
    })
}

/// What a sync's answer tells a phone on shift of `answer`'s windows: per tour, the scans they
/// counted, in order of time (the phone's tour view, `patrol_core::protocol::TourStatus`).
pub fn counted_scans(answer: &WindowsAnswer) -> TourStatus {
    let mut tours: Vec<TourScans> = Vec::new();
    for w in &answer.windows {
        let scans = w.checkpoints.iter().filter_map(|c| {
            c.scan.as_ref().map(|s| CountedScan {
                checkpoint: c.checkpoint.clone(),
                at_ms: s.at_ms,
                event: s.event_id,
            })
        });
        match tours.iter_mut().find(|t| t.tour == w.tour) {
            Some(t) => t.scans.extend(scans),
            None => tours.push(TourScans {
                tour: w.tour.clone(),
                scans: scans.collect(),
            }),
        }
    }
    for t in &mut tours {
        t.scans.sort_by_key(|s| (s.at_ms, s.event));
    }
    TourStatus { tours }
}

/// The JSON of an announcement, with the site it is about.
pub fn change_json(site: &str, change: &Change) -> Value {
    let mut data = change.data.clone();
    if let Some(map) = data.as_object_mut() {
        map.insert("site_id".into(), site.into());
    }
    data
}

/// What both backends' migration tests check of the compliance migration.
#[cfg(test)]
pub(crate) mod testing {
    use patrol_core::SiteId;
    use patrol_core::siteconfig::SiteConfig;

    use super::{Span, WindowQuery};
    use crate::store::{Site, Store};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// `old` existed before the migration, which ran between `before_ms` and `after_ms`: its
    /// windows are tracked from the migration on (the scans before were never recorded for
    /// tours), the earlier ones left out; a site created after it is tracked whole.
    pub async fn existing_sites_are_tracked_from_the_migration(
        store: &dyn Store,
        old: SiteId,
        before_ms: i64,
        after_ms: i64,
    ) -> TestResult {
        let new = SiteId::new("site-new")?;
        store
            .create_site(Site {
                id: new.clone(),
                name: "new".into(),
                created_at_ms: after_ms,
            })
            .await?;
        for site in [&old, &new] {
            let config: SiteConfig = serde_json::from_value(serde_json::json!({
                "site": site.as_str(), "version": 0,
                "checkpoints": [{"id": "cp-1", "name": "Gate", "tags": [], "location": null,
                                 "radius_m": null}],
                "tours": [{"id": "hourly", "name": "Hourly", "checkpoints": ["cp-1"],
                           "schedule": [{"every_min": 60, "from": "00:00", "to": "00:00"}],
                           "grace_min": 0}],
                "post_orders": [],
            }))?;
            store.put_site_config(config, 0, after_ms).await?;
        }
        let read = |site: SiteId| {
            store.tour_windows(
                site,
                WindowQuery {
                    tour: None,
                    span: Span::Between {
                        from_ms: before_ms - 6 * 3_600_000,
                        to_ms: after_ms + 3_600_000,
                    },
                },
                after_ms,
            )
        };
        let old = read(old).await?;
        let since = old
            .tracked_since
            .ok_or("an existing site is tracked from the migration")?;
        assert!((before_ms..=after_ms).contains(&since), "{since}");
        assert!(old.windows.iter().all(|w| w.window.start_ms >= since));
        assert!(!old.windows.is_empty());
        let new = read(new).await?;
        assert_eq!(new.tracked_since, None);
        assert!(new.windows.len() >= 7, "{}", new.windows.len());
        Ok(())
    }
}
