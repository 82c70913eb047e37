//! The daily activity report (DAR) a site's client receives: what happened on a site during one
//! local day, or during one shift of it, built from the canonical record through the [`Store`]
//! trait (so the same on every backend) and rendered as CSV ([`csv`]) or PDF ([`pdf`]). The
//! sections and their columns: `docs/reports.md`.
//!
//! The day is `[00:00, 24:00)` of the date in the site's time zone (23 or 25 hours when the
//! clocks change); every event is placed by its corrected time. [`build`] reads the day's events
//! in pages through [`Store::events_between`], the day's tour windows as the server's
//! compliance keeps them ([`Store::tour_windows`]), the shifts, incidents and alarm
//! acknowledgements it needs, and nothing else.
//!
//! A report depends only on the record and on the time its statuses are computed at,
//! [`Dar::as_of_ms`]: the end of the day (or the finalisation deadline of its last window) once
//! that has passed, else the current minute. So a past day's report is the same, byte for byte, for
//! the same record, and both renderings take their dates and ids from the report, never from the
//! clock.

pub mod csv;
pub mod pdf;
pub mod tours;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use patrol_core::flags::EventFlag;
use patrol_core::schedule::ClockTime;
use patrol_core::siteconfig::{SiteConfig, SiteZone};
use patrol_core::{CheckpointId, DeviceId, EventId, GuardId, IncidentId, ShiftId, SiteId};
use serde::Deserialize;
use thiserror::Error;

pub use self::tours::DarTours;
use crate::store::compliance::{Span, WindowQuery};
use crate::store::{IncidentQuery, ShiftQuery, Store, StoreError, TimeCursor};

/// Events read per page of [`Store::events_between`].
pub const PAGE_EVENTS: u32 = 5_000;
/// Incidents a report lists at most (a site writes a few a day).
pub const MAX_INCIDENTS: u32 = 1_000;
/// A shift that started more than this before the day and recorded nothing in it is not listed
/// as on duty (a phone lost with its shift open would otherwise be on duty every day).
const OPEN_SHIFT_LOOKBACK_MS: i64 = 24 * 3_600_000;

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("site {0} does not exist")]
    UnknownSite(SiteId),
    #[error("site {site} has no shift {shift}: no log of it has reached the server")]
    UnknownShift { site: SiteId, shift: ShiftId },
    #[error("the date {0} is out of range")]
    DateOutOfRange(NaiveDate),
    #[error("the site's tour schedules cannot be expanded: {0}")]
    Schedule(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to report on.
#[derive(Clone, Debug)]
pub struct DarRequest {
    pub site: SiteId,
    /// The local date, in the site's time zone.
    pub date: NaiveDate,
    /// Only this shift's part of the day.
    pub shift: Option<ShiftId>,
    /// The server's clock, used only while the day (or a grace period of its windows) runs.
    pub now_ms: i64,
}

/// A daily activity report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dar {
    pub site: SiteId,
    pub site_name: String,
    pub time_zone: SiteZone,
    pub date: NaiveDate,
    pub shift: Option<ShiftId>,
    /// The day: `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// The time the statuses are computed at (see the module docs).
    pub as_of_ms: i64,
    /// The configuration version the tour windows come from (0: none).
    pub config_version: u64,
    pub guards: Vec<DarShift>,
    pub handovers: Vec<DarHandover>,
    pub tours: DarTours,
    pub incidents: Vec<DarIncident>,
    /// More incidents were written during the day than [`MAX_INCIDENTS`].
    pub incidents_truncated: bool,
    pub alarms: Vec<DarAlarm>,
    pub notes: Vec<DarNote>,
    pub anomalies: Vec<DarAnomaly>,
}

/// A guard's shift on duty during the day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarShift {
    pub guard: GuardId,
    pub device: DeviceId,
    pub shift: ShiftId,
    /// The corrected time of its start when that falls in the events read, else the phone's
    /// time of it from the shift's log; `None` before it has arrived.
    pub started_ms: Option<i64>,
    /// The same for its end; `None` while the shift is open (or its end has not arrived).
    pub ended_ms: Option<i64>,
    pub end_note: Option<String>,
    /// Its events in the day, and the checkpoint scans among them.
    pub events: u64,
    pub scans: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarHandover {
    pub at_ms: i64,
    pub guard: GuardId,
    pub to_guard: Option<GuardId>,
    pub text: String,
    pub shift: ShiftId,
    pub event: EventId,
}

/// An incident reported or worked on during the day, with its whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarIncident {
    pub id: IncidentId,
    pub category: Option<String>,
    pub severity: Option<String>,
    /// Its status now (as of the report).
    pub status: String,
    pub description: Option<String>,
    /// The reporting guard (or operator).
    pub reported_by: Option<String>,
    /// The corrected time of its report when the report's event is among those read, else the
    /// reporting device's own time of it.
    pub reported_at_ms: Option<i64>,
    pub assignee: Option<String>,
    pub history: Vec<DarIncidentEntry>,
}

/// One entry of an incident's history: who did what, when (the writer's clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarIncidentEntry {
    pub at_ms: i64,
    pub by: String,
    pub action: String,
    pub what: String,
}

/// A panic alarm raised during the day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarAlarm {
    pub event: EventId,
    pub guard: GuardId,
    pub device: DeviceId,
    /// Corrected time it was raised.
    pub raised_ms: i64,
    /// The phone's own time of it.
    pub device_time_ms: i64,
    /// When the server received it.
    pub received_ms: i64,
    pub acknowledged_ms: Option<i64>,
    pub acknowledged_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarNote {
    pub at_ms: i64,
    pub guard: GuardId,
    pub text: String,
    pub shift: ShiftId,
    pub event: EventId,
    /// The files attached to the note: each its name, or its hash where it has none.
    pub files: Vec<String>,
}

/// An event of the day the server flagged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DarAnomaly {
    pub at_ms: i64,
    pub guard: GuardId,
    pub device: DeviceId,
    pub kind: String,
    pub checkpoint: Option<CheckpointId>,
    /// Each flag's name (`clock_skew`) and the same in words (`clock 3 h 0 min slow`).
    pub flags: Vec<(String, String)>,
    pub event: EventId,
}

/// The local day of `date` in `zone`: from its first instant to the next day's (midnight, or
/// the first time after it on a day the clocks skip midnight).
pub fn local_day(zone: SiteZone, date: NaiveDate) -> Result<(i64, i64), ReportError> {
    let next = date.succ_opt().ok_or(ReportError::DateOutOfRange(date))?;
    let midnight = ClockTime::new(0, 0).map_err(|e| ReportError::Schedule(e.to_string()))?;
    let from = zone.resolve(date, midnight);
    let to = zone.resolve(next, midnight);
    // chrono's range is far beyond any date a site holds; outside it `local` fails below.
    if zone.local(from).is_none() || zone.local(to).is_none() {
        return Err(ReportError::DateOutOfRange(date));
    }
    Ok((from, to))
}

/// The time a report's statuses are computed at: the end of what it covers (`until_ms`) once
/// that has passed, else `now_ms` down to its minute.
pub fn as_of(until_ms: i64, now_ms: i64) -> i64 {
    if now_ms >= until_ms {
        until_ms
    } else {
        now_ms - now_ms.rem_euclid(60_000)
    }
}

/// A file a note carries, as the feed names it.
#[derive(Deserialize)]
struct FeedAttachment {
    sha256: String,
    name: Option<String>,
}

/// An event of the feed as the report reads it (its JSON, `docs/protocol.md`), borrowing what
/// it can.
#[derive(Deserialize)]
struct FeedEvent<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    guard_id: Cow<'a, str>,
    #[serde(borrow)]
    device_id: Cow<'a, str>,
    #[serde(borrow)]
    shift_id: Cow<'a, str>,
    #[serde(borrow)]
    corrected_time: Cow<'a, str>,
    #[serde(borrow)]
    device_time: Cow<'a, str>,
    #[serde(borrow)]
    received_at: Cow<'a, str>,
    #[serde(default, borrow)]
    checkpoint: Option<Cow<'a, str>>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attachments: Vec<FeedAttachment>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    to_guard: Option<String>,
    #[serde(default, borrow)]
    incident: Option<Cow<'a, str>>,
    #[serde(default)]
    flags: Vec<serde_json::Value>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ReportError {
    ReportError::Corrupt(format!("{what}: {e}"))
}

fn time_ms(what: &str, text: &str) -> Result<i64, ReportError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| corrupt(what, e))
}

fn parsed<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ReportError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| corrupt(what, e))
}

/// A flag as stored: its name and, when this server knows its kind, the flag in words.
fn flag_words(flag: &serde_json::Value) -> (String, String) {
    let name = flag["flag"].as_str().unwrap_or("unknown").to_owned();
    let words = serde_json::from_value::<EventFlag>(flag.clone())
        .map_or_else(|_| name.replace('_', " "), |f| f.to_string());
    (name, words)
}

/// What a shift shows in the day, gathered from its events.
#[derive(Default)]
struct ShiftSeen {
    guard: Option<GuardId>,
    device: Option<DeviceId>,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    end_note: Option<String>,
    events: u64,
    scans: u64,
}

/// Builds the report of `request` from the store. The tour section comes from the server's
/// tour compliance ([`tours::from_compliance`]).
pub async fn build(store: &dyn Store, request: DarRequest) -> Result<Dar, ReportError> {
    let DarRequest {
        site,
        date,
        shift: only_shift,
        now_ms,
    } = request;
    let Some(site_row) = store.get_site(site.clone()).await? else {
        return Err(ReportError::UnknownSite(site));
    };
    let only = match only_shift {
        Some(shift) => match store.shift(site.clone(), shift).await? {
            Some(summary) => Some(summary),
            None => return Err(ReportError::UnknownShift { site, shift }),
        },
        None => None,
    };
    let config: SiteConfig = store.site_config(site.clone()).await?.config;
    let zone = config.time_zone;
    let (from_ms, to_ms) = local_day(zone, date)?;

    // The statuses stop changing with time once the day is over and every window of it is past
    // its finalisation deadline: a report asked for after that is as of then.
    let until_ms = config
        .tours
        .iter()
        .filter_map(|tour| {
            let grace_ms = patrol_core::compliance::grace_ms(tour.grace_min);
            let windows = tour.windows_between(zone, from_ms, to_ms).ok()?;
            windows
                .iter()
                .filter(|w| w.start_ms >= from_ms && w.start_ms < to_ms)
                .map(|w| {
                    patrol_core::compliance::deadline_ms(
                        w,
                        grace_ms,
                        config.rules.finalise_after_hours,
                    )
                })
                .max()
        })
        .fold(to_ms, i64::max);
    let as_of_ms = as_of(until_ms, now_ms);

    let in_day = |ms: i64| ms >= from_ms && ms < to_ms;
    let mut shifts: BTreeMap<ShiftId, ShiftSeen> = BTreeMap::new();
    let mut handovers = Vec::new();
    let mut alarms = Vec::new();
    let mut notes = Vec::new();
    let mut anomalies = Vec::new();
    let mut reported_incidents = Vec::new();
    let mut cursor: Option<TimeCursor> = None;
    loop {
        let Some(page) = store
            .events_between(site.clone(), from_ms, to_ms, cursor, PAGE_EVENTS)
            .await?
        else {
            return Err(ReportError::UnknownSite(site));
        };
        for (seq, json) in &page.events {
            let e: FeedEvent<'_> =
                serde_json::from_str(json).map_err(|e| corrupt(&format!("event {seq}"), e))?;
            let at_ms = time_ms("corrected time", &e.corrected_time)?;
            // Ids are parsed only where the report keeps them: most of a day's events are
            // scans, of which it keeps a count and, for the tours, a few fields.
            let guard = || parsed::<GuardId>("guard id", &e.guard_id);
            let event = || parsed::<EventId>("event id", &e.id);
            let scanned = e.kind == "checkpoint_scanned";
            if !in_day(at_ms) {
                continue;
            }
            let shift: ShiftId = parsed("shift id", &e.shift_id)?;
            if only_shift.is_some_and(|s| s != shift) {
                continue;
            }
            let seen = shifts.entry(shift).or_default();
            if seen.guard.is_none() {
                seen.guard = Some(guard()?);
                seen.device = Some(parsed("device id", &e.device_id)?);
            }
            seen.events += 1;
            match &*e.kind {
                _ if scanned => seen.scans += 1,
                "shift_started" => seen.started_ms = Some(at_ms),
                "shift_ended" => {
                    seen.ended_ms = Some(at_ms);
                    seen.end_note = e.note.clone();
                }
                "handover" => handovers.push(DarHandover {
                    at_ms,
                    guard: guard()?,
                    to_guard: e
                        .to_guard
                        .as_deref()
                        .map(|g| parsed("guard id", g))
                        .transpose()?,
                    text: e.text.clone().unwrap_or_default(),
                    shift,
                    event: event()?,
                }),
                "panic" => alarms.push(DarAlarm {
                    event: event()?,
                    guard: guard()?,
                    device: parsed("device id", &e.device_id)?,
                    raised_ms: at_ms,
                    device_time_ms: time_ms("device time", &e.device_time)?,
                    received_ms: time_ms("receive time", &e.received_at)?,
                    acknowledged_ms: None,
                    acknowledged_by: None,
                }),
                "note" => notes.push(DarNote {
                    at_ms,
                    guard: guard()?,
                    text: e.text.clone().unwrap_or_default(),
                    shift,
                    event: event()?,
                    files: e
                        .attachments
                        .iter()
                        .map(|a| a.name.clone().unwrap_or_else(|| a.sha256.clone()))
                        .collect(),
                }),
                "incident_reported" => {
                    if let Some(incident) = &e.incident {
                        reported_incidents.push((parsed("incident id", incident)?, at_ms));
                    }
                }
                _ => {}
            }
            if !e.flags.is_empty() {
                anomalies.push(DarAnomaly {
                    at_ms,
                    guard: guard()?,
                    device: parsed("device id", &e.device_id)?,
                    kind: e.kind.to_string(),
                    checkpoint: e
                        .checkpoint
                        .as_deref()
                        .map(|c| parsed("checkpoint", c))
                        .transpose()?,
                    flags: e.flags.iter().map(flag_words).collect(),
                    event: event()?,
                });
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // Pages come in the order the server stored the events; the report lists them by time.
    handovers.sort_by_key(|h| (h.at_ms, h.event));
    alarms.sort_by_key(|a| (a.raised_ms, a.event));
    notes.sort_by_key(|n| (n.at_ms, n.event));
    anomalies.sort_by_key(|a| (a.at_ms, a.event));
    reported_incidents.sort_by_key(|(incident, at_ms)| (*at_ms, *incident));

    let guards = on_duty(store, &site, shifts, only.as_ref(), (from_ms, to_ms)).await?;

    // The tours: for one shift, the windows of the day that overlap it.
    let query = WindowQuery {
        tour: None,
        span: Span::Between { from_ms, to_ms },
    };
    let answer = store.tour_windows(site.clone(), query, as_of_ms).await?;
    let mut tours = tours::from_compliance(answer, (from_ms, to_ms));
    if let Some(shift) = &guards.first().filter(|_| only.is_some()) {
        let start = shift.started_ms.unwrap_or(from_ms).max(from_ms);
        let end = shift.ended_ms.unwrap_or(to_ms).min(to_ms);
        tours
            .windows
            .retain(|w| w.start_ms < end && w.end_ms > start);
    }

    // The alarms' acknowledgements.
    let ids: Vec<EventId> = alarms.iter().map(|a| a.event).collect();
    if !ids.is_empty() {
        let acks: HashMap<EventId, (i64, String)> = store
            .alarm_acks(site.clone(), ids)
            .await?
            .into_iter()
            .map(|a| (a.event, (a.at_ms, a.by)))
            .collect();
        for alarm in &mut alarms {
            if let Some((at, by)) = acks.get(&alarm.event) {
                alarm.acknowledged_ms = Some(*at);
                alarm.acknowledged_by = Some(by.clone());
            }
        }
    }

    let only_device = only.as_ref().map(|s| s.device);
    let (incidents, incidents_truncated) = incidents(
        store,
        &site,
        &reported_incidents,
        only_device,
        (from_ms, to_ms),
    )
    .await?;

    Ok(Dar {
        site,
        site_name: site_row.name,
        time_zone: zone,
        date,
        shift: only_shift,
        from_ms,
        to_ms,
        as_of_ms,
        config_version: config.version,
        guards,
        handovers,
        tours,
        incidents,
        incidents_truncated,
        alarms,
        notes,
        anomalies,
    })
}

/// The shifts on duty during the day: those with events in it, and those whose log says they
/// started before its end and had not ended before its start (started at most a day before it,
/// if their end has not arrived). With `only`, that shift alone. In order of start.
async fn on_duty(
    store: &dyn Store,
    site: &SiteId,
    mut seen: BTreeMap<ShiftId, ShiftSeen>,
    only: Option<&crate::store::ShiftSummary>,
    (from_ms, to_ms): (i64, i64),
) -> Result<Vec<DarShift>, ReportError> {
    let mut summaries = Vec::new();
    match only {
        Some(summary) => summaries.push(summary.clone()),
        None => {
            let mut after = None;
            loop {
                let query = ShiftQuery {
                    from_ms: Some(from_ms - OPEN_SHIFT_LOOKBACK_MS),
                    to_ms: Some(to_ms),
                    after,
                    limit: 1_000,
                    ..ShiftQuery::default()
                };
                let Some(page) = store.shifts(site.clone(), query).await? else {
                    return Err(ReportError::UnknownSite(site.clone()));
                };
                after = page.shifts.last().map(|s| s.shift);
                summaries.extend(page.shifts.into_iter().filter(|s| {
                    s.ended_at_ms.is_none_or(|end| end >= from_ms) || seen.contains_key(&s.shift)
                }));
                if !page.more {
                    break;
                }
            }
            // Shifts with events in the day that started before the listing's reach.
            let listed: HashSet<ShiftId> = summaries.iter().map(|s| s.shift).collect();
            for shift in seen
                .keys()
                .filter(|s| !listed.contains(s))
                .copied()
                .collect::<Vec<_>>()
            {
                if let Some(summary) = store.shift(site.clone(), shift).await? {
                    summaries.push(summary);
                }
            }
        }
    }
    let mut out: Vec<DarShift> = summaries
        .into_iter()
        .map(|s| {
            let day = seen.remove(&s.shift).unwrap_or_default();
            DarShift {
                guard: day.guard.unwrap_or(s.guard),
                device: day.device.unwrap_or(s.device),
                shift: s.shift,
                started_ms: day.started_ms.or(s.started_at_ms),
                ended_ms: day.ended_ms.or(s.ended_at_ms),
                end_note: day.end_note,
                events: day.events,
                scans: day.scans,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.started_ms, &a.guard, a.shift).cmp(&(b.started_ms, &b.guard, b.shift)));
    Ok(out)
}

/// An incident's state JSON as the report reads it (`docs/protocol.md`, "Incident JSON").
#[derive(Deserialize)]
struct IncidentJson {
    id: String,
    category: Option<String>,
    severity: Option<String>,
    status: String,
    description: Option<String>,
    reported_by: Option<PartyJson>,
    reported_at: Option<String>,
    assignee: Option<String>,
    #[serde(default)]
    history: Vec<HistoryJson>,
}

#[derive(Deserialize)]
struct PartyJson {
    guard: Option<String>,
    user: Option<String>,
    device: Option<String>,
}

impl PartyJson {
    fn name(&self) -> String {
        match (&self.guard, &self.user) {
            (Some(guard), _) => guard.clone(),
            (None, Some(user)) => format!("{user} (control room)"),
            (None, None) => "unknown".to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct HistoryJson {
    at: String,
    by: PartyJson,
    action: String,
    what: String,
}

/// The incidents of the day: reported by an event of the day, or with an entry in their history
/// during it; each with its whole history. With `only_device`, those the device reported or
/// wrote to during the day. In order of report.
async fn incidents(
    store: &dyn Store,
    site: &SiteId,
    reported: &[(IncidentId, i64)],
    only_device: Option<DeviceId>,
    (from_ms, to_ms): (i64, i64),
) -> Result<(Vec<DarIncident>, bool), ReportError> {
    // Every incident the server wrote since the day began (a phone's or an operator's change),
    // and those reported in the day whatever reached the server when.
    let list = store
        .incidents(
            site.clone(),
            IncidentQuery {
                status: None,
                updated_since: Some(from_ms),
                limit: MAX_INCIDENTS,
            },
        )
        .await?;
    let mut states = list.incidents;
    let reported: HashMap<IncidentId, i64> = reported.iter().copied().collect();
    let mut have = HashSet::new();
    let mut out = Vec::new();
    let mut missing: Vec<IncidentId> = reported.keys().copied().collect();
    missing.sort();
    loop {
        for state in states.drain(..) {
            let json: IncidentJson =
                serde_json::from_str(&state).map_err(|e| corrupt("incident state", e))?;
            let id: IncidentId = parsed("incident id", &json.id)?;
            if !have.insert(id) {
                continue;
            }
            let history = json
                .history
                .iter()
                .map(|h| {
                    Ok(DarIncidentEntry {
                        at_ms: time_ms("incident entry time", &h.at)?,
                        by: h.by.name(),
                        action: h.action.clone(),
                        what: h.what.clone(),
                    })
                })
                .collect::<Result<Vec<_>, ReportError>>()?;
            let by_device = |h: &HistoryJson| {
                only_device.is_none_or(|d| h.by.device.as_deref() == Some(&d.to_string()))
            };
            let active =
                json.history.iter().zip(&history).any(|(h, entry)| {
                    entry.at_ms >= from_ms && entry.at_ms < to_ms && by_device(h)
                });
            let reported_here = reported.get(&id).copied();
            if !(reported_here.is_some() || active) {
                continue;
            }
            out.push(DarIncident {
                id,
                category: json.category,
                severity: json.severity,
                status: json.status,
                description: json.description,
                reported_by: json.reported_by.as_ref().map(PartyJson::name),
                reported_at_ms: match reported_here {
                    Some(at_ms) => Some(at_ms),
                    None => json
                        .reported_at
                        .as_deref()
                        .map(|t| time_ms("incident report time", t))
                        .transpose()?,
                },
                assignee: json.assignee,
                history,
            });
        }
        // Reported in the day but not written since it began (it reached the server earlier).
        let Some(id) = missing.iter().copied().find(|id| !have.contains(id)) else {
            break;
        };
        missing.retain(|m| *m != id);
        match store.incident(site.clone(), id).await {
            Ok(state) => states.push(state),
            // A report whose incident document never arrived: nothing to show of it.
            Err(StoreError::UnknownIncident { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.sort_by(|a, b| {
        let first = |i: &DarIncident| i.reported_at_ms.or(i.history.first().map(|h| h.at_ms));
        (first(a), a.id).cmp(&(first(b), b.id))
    });
    Ok((out, list.more))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{e}"))
            .timestamp_millis()
    }

    /// The local day in London is 24 hours, 23 when the clocks go forward, 25 when they go
    /// back, and starts at local midnight.
    #[test]
    fn the_local_day_follows_the_site_clock() -> Result<(), Box<dyn std::error::Error>> {
        let london = SiteZone::new("Europe/London")?;
        let hours = |d: &str| -> Result<i64, ReportError> {
            let (a, b) = local_day(london, date(d))?;
            Ok((b - a) / 3_600_000)
        };
        assert_eq!(hours("2025-03-01")?, 24);
        assert_eq!(hours("2025-03-30")?, 23);
        assert_eq!(hours("2025-10-26")?, 25);
        assert_eq!(
            local_day(london, date("2025-07-01"))?,
            (ms("2025-06-30T23:00:00Z"), ms("2025-07-01T23:00:00Z"))
        );
        Ok(())
    }

    /// A report of a day still running is as of the current minute; once it is over, as of
    /// its end, whenever it is asked for.
    #[test]
    fn as_of_is_the_end_once_passed() {
        assert_eq!(as_of(1_000_000, 500_123), 480_000);
        assert_eq!(as_of(1_000_000, 2_000_000), 1_000_000);
        assert_eq!(as_of(1_000_000, 9_000_000), 1_000_000);
    }
}
