//! What the phone shares with the control room beyond its own shift logs: the incidents its
//! guard takes part in (worked together: both sides write, the core's fold decides), the site
//! configuration (read-only here: its events' flags and tour progress offline), and the control
//! room's acknowledgements of this phone's panic alarms. All of it travels in the same sync
//! exchange as the shift logs.

use std::collections::HashMap;

use patrol_core::clock::corrected_time_ms;
use patrol_core::flags::{Context, EventFlag, Flagger, SeenScan};
use patrol_core::incident::{
    Entry, IncidentAction, IncidentDoc, IncidentError, IncidentState, Party, Stamped,
};
use patrol_core::merge::plan_incident_push;
use patrol_core::protocol::{DocOutcome, DocPush, DocRef, SyncResponse, TourStatus, from_wire};
use patrol_core::siteconfig::{SiteConfig, WindowProgress, tonight, tour_progress};
use patrol_core::{
    CheckpointId, DeviceId, DeviceTime, EventBody, EventId, GuardId, IncidentId, IncidentReport,
    LogError, SiteId,
};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{DeviceStore, LocalEvent, RecordOptions, to_i64};
use crate::error::{Error, Result};

/// An incident as the phone holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalIncident {
    pub state: IncidentState,
    /// Holds changes made here that the server has not acknowledged yet.
    pub pending: bool,
    /// Why the server refused this phone's changes to it, if it did.
    pub rejected: Option<String>,
}

/// The phone's clock offset measured at its last sync, and its own "now" corrected by it: an
/// event's device time corrected ([`patrol_core::clock::corrected_time_ms`]) is never later
/// than that now, as on the server never later than its receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrected {
    pub offset_ms: i64,
    pub now_ms: i64,
}

impl Corrected {
    /// A device time, corrected.
    pub fn time(&self, device_ms: i64) -> i64 {
        corrected_time_ms(device_ms, self.offset_ms, self.now_ms)
    }

    /// An event's corrected time.
    pub fn event(&self, e: &LocalEvent) -> i64 {
        self.time(e.event.record.time.wall_ms)
    }
}

/// Where a panic alarm stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlarmState {
    /// Recorded here, not yet on the server.
    Queued,
    /// On the server; nobody in the control room has acknowledged it yet.
    Delivered,
    /// Acknowledged by the control room.
    Acknowledged { by: String, at_ms: i64 },
}

/// In words; the time of an acknowledgement is left to the caller, who knows the reader's time
/// zone.
impl std::fmt::Display for AlarmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlarmState::Queued => f.write_str("queued"),
            AlarmState::Delivered => f.write_str("delivered"),
            AlarmState::Acknowledged { by, .. } => write!(f, "acknowledged by {by}"),
        }
    }
}

/// A panic alarm raised on this phone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    pub event: EventId,
    pub recorded_ms: i64,
    pub state: AlarmState,
}

/// A reported incident's first document, made in the same transaction as its event.
#[derive(Debug)]
pub(super) struct NewIncident {
    id: IncidentId,
    doc: Vec<u8>,
}

fn guard_party(device: DeviceId, guard: &GuardId) -> Party {
    Party::Guard {
        device,
        guard: guard.clone(),
    }
}

fn incident_error(e: IncidentError) -> Error {
    match e {
        IncidentError::Log(e) => Error::Log(e),
        IncidentError::NotAllowed { current, wanted } => {
            Error::IncidentRule(format!("the incident is {current}; it cannot be {wanted}"))
        }
    }
}

pub(super) fn new_incident(
    device: DeviceId,
    site: &SiteId,
    guard: &GuardId,
    report: &IncidentReport,
    time: &DeviceTime,
) -> Result<NewIncident> {
    let stamped = Stamped {
        by: guard_party(device, guard),
        at: time.hlc,
        wall_ms: time.wall_ms,
        entry: Entry::Reported {
            site: site.clone(),
            category: report.category,
            severity: report.severity,
            description: report.description.clone(),
            location: report.location,
        },
    };
    let (mut doc, _) =
        IncidentDoc::create(report.incident, device.actor_id(), stamped).map_err(incident_error)?;
    Ok(NewIncident {
        id: report.incident,
        doc: doc.save(),
    })
}

pub(super) fn insert_incident(tx: &Transaction<'_>, new: &NewIncident, now_ms: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO incidents (incident_id, doc, synced_heads, pending, updated_ms)
         VALUES (?1, ?2, x'', 1, ?3)",
        params![new.id.to_string(), new.doc, now_ms],
    )?;
    Ok(())
}

fn heads_blob(heads: &[patrol_core::ChangeHash]) -> Vec<u8> {
    patrol_core::codec::heads_to_blob(heads)
}

fn heads_of(blob: &[u8]) -> Result<Vec<patrol_core::ChangeHash>> {
    patrol_core::codec::heads_from_blob(blob)
        .map_err(|e| Error::Corrupt(format!("incident heads: {e}")))
}

impl DeviceStore {
    fn load_incident(&self, id: IncidentId) -> Result<Option<(IncidentDoc, Vec<u8>, bool)>> {
        let row: Option<(Vec<u8>, Vec<u8>, bool)> = self
            .conn
            .query_row(
                "SELECT doc, synced_heads, pending FROM incidents WHERE incident_id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((doc, synced, pending)) => Ok(Some((
                IncidentDoc::load(id, &doc, self.device.actor_id())?,
                synced,
                pending,
            ))),
        }
    }

    /// Reports an incident: records the `incident_reported` event and creates the incident's
    /// document, in one transaction; then attaches each attachment. Returns the incident's id.
    pub fn report_incident(
        &mut self,
        report: IncidentReport,
        attachments: Vec<patrol_core::incident::Attachment>,
        options: RecordOptions,
    ) -> Result<IncidentId> {
        let id = report.incident;
        self.record(EventBody::IncidentReported(report), options)?;
        for attachment in attachments {
            self.act_on_incident(id, IncidentAction::Attach(attachment))?;
        }
        Ok(id)
    }

    /// Acts on an incident this phone holds (a note, a new severity, an attachment, a status
    /// change), as the guard on duty. Durable when this returns; sent at the next sync.
    pub fn act_on_incident(
        &mut self,
        id: IncidentId,
        action: IncidentAction,
    ) -> Result<LocalIncident> {
        self.act_on_incident_with(id, action, |_| Ok(()))
    }

    /// As [`DeviceStore::act_on_incident`], with `also` written in the same transaction (an
    /// attachment's bytes, which must never be missing behind its reference).
    pub(super) fn act_on_incident_with(
        &mut self,
        id: IncidentId,
        action: IncidentAction,
        also: impl FnOnce(&Transaction<'_>) -> Result<()>,
    ) -> Result<LocalIncident> {
        let guard = self
            .current_shift()
            .map(|s| s.guard.clone())
            .ok_or(Error::NoOpenShift)?;
        let Some((mut doc, _, _)) = self.load_incident(id)? else {
            return Err(Error::UnknownIncident(id));
        };
        let now = self.clock.now();
        let hlc = self.hlc.tick(now.wall_ms.max(0) as u64);
        doc.act(action, guard_party(self.device, &guard), hlc, now.wall_ms)
            .map_err(incident_error)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE incidents SET doc = ?2, pending = 1, updated_ms = ?3 WHERE incident_id = ?1",
            params![id.to_string(), doc.save(), now.wall_ms],
        )?;
        also(&tx)?;
        // The clock never runs backwards across a restart, whatever is recorded next.
        tx.execute(
            "UPDATE device SET hlc_wall = ?1, hlc_counter = ?2",
            params![to_i64(hlc.wall_ms), hlc.counter],
        )?;
        tx.commit()?;
        self.hlc = hlc;
        self.incident(id)?.ok_or(Error::UnknownIncident(id))
    }

    /// One incident as this phone knows it.
    pub fn incident(&self, id: IncidentId) -> Result<Option<LocalIncident>> {
        let reject: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT reject_message FROM incidents WHERE incident_id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        let Some(rejected) = reject else {
            return Ok(None);
        };
        let Some((doc, _, pending)) = self.load_incident(id)? else {
            return Ok(None);
        };
        Ok(Some(LocalIncident {
            state: doc.state()?,
            pending,
            rejected,
        }))
    }

    /// Every incident this phone holds, most recently changed first.
    pub fn incidents(&self) -> Result<Vec<LocalIncident>> {
        let ids: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT incident_id FROM incidents ORDER BY updated_ms DESC")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id: IncidentId = super::parse(&id, "incident id")?;
            if let Some(incident) = self.incident(id)? {
                out.push(incident);
            }
        }
        Ok(out)
    }

    /// The site configuration the server last sent, if any.
    pub fn site_config(&self) -> Result<Option<SiteConfig>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT config FROM site_config WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        bytes
            .map(|b| {
                SiteConfig::decode(&b)
                    .map_err(|e| Error::Corrupt(format!("stored site configuration: {e}")))
            })
            .transpose()
    }

    /// This phone's times as the server's clock would have read them, at `now_ms` by this
    /// phone's clock ([`Corrected`]).
    pub fn corrected(&self, now_ms: i64) -> Result<Corrected> {
        let offset_ms = self.clock_offset_ms()?;
        Ok(Corrected {
            offset_ms,
            now_ms: now_ms.saturating_add(offset_ms),
        })
    }

    /// The phone's clock offset measured at its last sync (server time minus the phone's, as
    /// [`patrol_core::clock`] says); 0 before its first.
    pub fn clock_offset_ms(&self) -> Result<i64> {
        let offset: Option<i64> =
            self.conn
                .query_row("SELECT clock_offset_ms FROM sync_state", [], |r| r.get(0))?;
        Ok(offset.unwrap_or(0))
    }

    /// What about each of `events` deserves a second look, one list per event in order: the
    /// server's function ([`patrol_core::flags::Flagger`]) under the configuration held (none
    /// yet: only what needs none) and its rules, with the phone's last measured clock offset,
    /// and `events` themselves as the guard's scans around each (pass them all, or a whole
    /// shift's). The phone knows no other device's scans: it never sees a cloned tag.
    pub fn flags_of(&self, events: &[LocalEvent]) -> Result<Vec<Vec<EventFlag>>> {
        let config = self
            .site_config()?
            .unwrap_or_else(|| SiteConfig::empty(self.site.clone()));
        let corrected = self.corrected(self.clock.now().wall_ms)?;
        let flagger = Flagger::new(&config, corrected.offset_ms);
        let corrected = |e: &LocalEvent| corrected.event(e);
        // Each guard's scans, in order.
        let mut by_guard: HashMap<&GuardId, Vec<SeenScan>> = HashMap::new();
        for e in events {
            if let Some(seen) = SeenScan::of(&e.event, corrected(e)) {
                by_guard.entry(&e.event.guard).or_default().push(seen);
            }
        }
        for scans in by_guard.values_mut() {
            scans.sort_by_key(|s| (s.corrected_ms, s.event));
        }
        Ok(events
            .iter()
            .map(|e| {
                let context = Context {
                    guard_scans: by_guard.get(&e.event.guard).map_or(&[], Vec::as_slice),
                    other_devices: &[],
                };
                flagger.flags(&e.event, corrected(e), &context)
            })
            .collect())
    }

    /// The flags of the recorded event `id` ([`DeviceStore::flags_of`], among the events of
    /// its shift); `None` if there is no such event.
    pub fn event_flags(&self, id: EventId) -> Result<Option<Vec<EventFlag>>> {
        let Some(event) = self.event(id)? else {
            return Ok(None);
        };
        let shift = self.events(Some(event.event.shift))?;
        let flags = self.flags_of(&shift)?;
        Ok(shift
            .iter()
            .zip(flags)
            .find(|(e, _)| e.event.id == id)
            .map(|(_, f)| f))
    }

    /// The checkpoint an NFC tag id or QR payload proves under the configuration held; a tag
    /// nobody knows (or no configuration yet) gives the reserved unknown checkpoint, so the scan
    /// is still recorded, and flagged.
    pub fn checkpoint_for_tag(&self, tag: &str) -> Result<CheckpointId> {
        let config = self
            .site_config()?
            .unwrap_or_else(|| SiteConfig::empty(self.site.clone()));
        Ok(config.resolve_tag(tag)?)
    }

    /// How far each of tonight's windows of a tour has come at `now_ms` (this phone's clock:
    /// the windows overlapping the 24 hours either side, its schedule expanded in the site's
    /// time zone), offline: the scans the server counted as of the last sync, every guard's
    /// ([`TourStatus`]), with this phone's own scans not delivered then; every time corrected
    /// by the clock offset measured at the last sync, so that a phone whose clock is wrong
    /// still credits a scan to the window it was made in. Times in the answer are corrected.
    pub fn tour_progress(&self, tour: &str, now_ms: i64) -> Result<Vec<WindowProgress>> {
        let config = self.site_config()?.ok_or(Error::NoSiteConfig)?;
        let tour = config
            .tour(tour)
            .ok_or_else(|| Error::UnknownTour(tour.to_owned()))?;
        let corrected = self.corrected(now_ms)?;
        let server = self.server_tours()?;
        // This phone's scans, at its corrected times.
        let mut own: HashMap<EventId, (CheckpointId, i64, bool)> = self
            .events(None)?
            .into_iter()
            .filter_map(|e| match &e.event.record.body {
                EventBody::CheckpointScanned(scan) => Some((
                    e.event.id,
                    (scan.checkpoint.clone(), corrected.event(&e), e.delivered),
                )),
                _ => None,
            })
            .collect();
        let counted = server.as_ref().map_or(&[][..], |s| s.scans_of(&tour.id));
        // What the server counted includes everything delivered by the sync that brought it;
        // this phone's own scans among them at its own times, as it shows them everywhere.
        let mut scans: Vec<(CheckpointId, i64)> = counted
            .iter()
            .map(|c| match own.remove(&c.event) {
                Some((checkpoint, at_ms, _)) => (checkpoint, at_ms),
                None => (c.checkpoint.clone(), c.at_ms),
            })
            .collect();
        // Then its scans the server had not counted: all of them without a status, else those
        // not delivered by then.
        scans.extend(
            own.into_values()
                .filter(|(_, _, delivered)| server.is_none() || !delivered)
                .map(|(checkpoint, at_ms, _)| (checkpoint, at_ms)),
        );
        let now = corrected.now_ms;
        Ok(tour_progress(
            tour,
            config.time_zone,
            &scans,
            now,
            tonight(now),
        )?)
    }

    /// The server's tour status from the last sync, if its answer carried one.
    fn server_tours(&self) -> Result<Option<TourStatus>> {
        let blob: Option<Vec<u8>> =
            self.conn
                .query_row("SELECT server_tours FROM sync_state", [], |r| r.get(0))?;
        blob.map(|b| {
            patrol_core::codec::decode_versioned(TOURS_FORMAT, &b)
                .map_err(|e| Error::Corrupt(format!("stored tour status: {e}")))
        })
        .transpose()
    }

    /// Every panic alarm raised on this phone, newest first, with its state.
    pub fn alarms(&self) -> Result<Vec<Alarm>> {
        // Event id, sequence number, acknowledged by, acknowledged at.
        type Row = (Vec<u8>, i64, Option<String>, Option<i64>);
        let rows: Vec<Row> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT event_id, seq, acked_by, acked_at_ms FROM alarms ORDER BY seq DESC",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, _, by, at) in rows {
            let event = super::stored_event_id(&id, "alarm id")?;
            let Some(local) = self.event(event)? else {
                return Err(Error::Corrupt(format!("alarm {event} has no event")));
            };
            let state = match (by, at) {
                (Some(by), Some(at_ms)) => AlarmState::Acknowledged { by, at_ms },
                _ if local.delivered => AlarmState::Delivered,
                _ => AlarmState::Queued,
            };
            out.push(Alarm {
                event,
                recorded_ms: local.event.record.time.wall_ms,
                state,
            });
        }
        Ok(out)
    }

    /// Pushes for every incident held: its changes to send, or none (a heads-only push asks the
    /// server for what the phone lacks). Closed ones too: the control room and other guards may
    /// still write to a closed incident (a note, an assignee, a reopen), and the server sends an
    /// incident to a phone only when the phone pushes it, or when it is open and the phone takes
    /// part in it.
    pub(super) fn incident_pushes(&self) -> Result<Vec<DocPush>> {
        let rows: Vec<(String, Vec<u8>)> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT incident_id, synced_heads FROM incidents")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for (id, synced) in rows {
            let id: IncidentId = super::parse(&id, "incident id")?;
            let Some((mut doc, _, _)) = self.load_incident(id)? else {
                continue;
            };
            out.push(plan_incident_push(&mut doc, &heads_of(&synced)?)?);
        }
        Ok(out)
    }

    /// Whether an incident holds changes of this phone the server has not acknowledged.
    pub(super) fn incidents_pending(&self) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM incidents WHERE pending)",
            [],
            |r| r.get(0),
        )?)
    }

    /// Alarms not yet seen acknowledged.
    pub(super) fn awaiting_ack(&self) -> Result<Vec<EventId>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT event_id FROM alarms WHERE acked_by IS NULL")?;
        let ids: Vec<Vec<u8>> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.iter()
            .map(|b| super::stored_event_id(b, "alarm id"))
            .collect()
    }
}

/// The stored tour status's format (its first byte).
const TOURS_FORMAT: u8 = 1;

/// Keeps the answer's tour status in place of the last one, inside the sync's transaction; an
/// answer without one clears it, so that the phone's own delivered scans count again.
pub(super) fn keep_tours(tx: &Transaction<'_>, response: &SyncResponse) -> Result<()> {
    let blob = response
        .tours
        .as_ref()
        .map(|t| patrol_core::codec::encode_versioned(TOURS_FORMAT, t))
        .transpose()?;
    tx.execute("UPDATE sync_state SET server_tours = ?1", [blob])?;
    Ok(())
}

/// What a sync's answer did to the site configuration the phone holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ConfigApplied {
    /// The answer carried none (the phone has the latest).
    Unchanged,
    /// This version arrived and is held.
    Stored(u64),
    /// A newer configuration arrived in a form this build cannot read (a newer server's
    /// format): the one held stays in force, and the sync completes (what it delivered is
    /// acknowledged) rather than failing on every attempt. Says what to do, in words.
    Unreadable(String),
}

/// Applies what the server's answer says about incidents, the configuration and alarms, inside
/// the sync's transaction.
pub(super) fn apply_response(
    tx: &Transaction<'_>,
    device: DeviceId,
    response: &SyncResponse,
    now_ms: i64,
) -> Result<ConfigApplied> {
    let mut rejected: HashMap<IncidentId, (&str, &str)> = HashMap::new();
    for result in &response.docs {
        if let (DocRef::Incident(id), DocOutcome::Rejected { code, message }) =
            (&result.doc, &result.outcome)
        {
            rejected.insert(*id, (code.as_str(), message.as_str()));
        }
    }
    for (id, (code, message)) in &rejected {
        tx.execute(
            "UPDATE incidents SET reject_code = ?2, reject_message = ?3 WHERE incident_id = ?1",
            params![id.to_string(), code, message],
        )?;
    }
    for update in &response.incidents {
        if rejected.contains_key(&update.incident) {
            continue;
        }
        let key = update.incident.to_string();
        let stored: Option<Vec<u8>> = tx
            .query_row(
                "SELECT doc FROM incidents WHERE incident_id = ?1",
                [&key],
                |r| r.get(0),
            )
            .optional()?;
        let mut doc = match &stored {
            Some(bytes) => IncidentDoc::load(update.incident, bytes, device.actor_id())?,
            None => IncidentDoc::load(update.incident, &[], device.actor_id())?,
        };
        if !update.changes.is_empty() {
            doc.merge(&update.changes).map_err(|e| match e {
                LogError::Automerge(e) => {
                    Error::BadResponse(format!("incident {key}: changes do not load: {e}"))
                }
                other => Error::Log(other),
            })?;
        }
        let server_heads = from_wire(&update.heads);
        if doc.known(&server_heads).len() != server_heads.len() {
            return Err(Error::BadResponse(format!(
                "incident {key}: the server's heads are not in the changes it sent"
            )));
        }
        // Pending while this phone holds changes beyond the server's heads (made during the
        // exchange, or refused for missing history).
        let mut local = doc.heads();
        local.sort();
        let mut server = server_heads.clone();
        server.sort();
        let pending = local != server;
        let saved = doc.save();
        tx.execute(
            "INSERT INTO incidents (incident_id, doc, synced_heads, pending, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (incident_id) DO UPDATE SET doc = ?2, synced_heads = ?3, pending = ?4,
                 updated_ms = CASE WHEN doc = ?2 THEN updated_ms ELSE ?5 END,
                 reject_code = NULL, reject_message = NULL",
            params![key, saved, heads_blob(&server_heads), pending, now_ms],
        )?;
    }
    for ack in &response.alarm_acks {
        tx.execute(
            "UPDATE alarms SET acked_by = ?2, acked_at_ms = ?3
             WHERE event_id = ?1 AND acked_by IS NULL",
            params![ack.event.0.as_bytes().as_slice(), ack.by, ack.at_ms],
        )?;
    }
    let Some(update) = &response.config else {
        return Ok(ConfigApplied::Unchanged);
    };
    let config = match SiteConfig::decode(&update.config) {
        Ok(config) => config,
        Err(patrol_core::DecodeError::UnknownVersion(format)) => {
            return Ok(ConfigApplied::Unreadable(format!(
                "the server's site configuration (version {}) is in format {format}, which this \
                 app does not read: update the app; scan flags and tours use the configuration \
                 held until then",
                update.version
            )));
        }
        Err(e) => return Err(Error::BadResponse(format!("site configuration: {e}"))),
    };
    if config.version != update.version {
        return Err(Error::BadResponse(format!(
            "site configuration says version {}, the answer {}",
            config.version, update.version
        )));
    }
    tx.execute(
        "INSERT INTO site_config (id, version, config, received_ms) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET version = ?1, config = ?2, received_ms = ?3
         WHERE excluded.version > site_config.version",
        params![to_i64(update.version), update.config, now_ms],
    )?;
    tx.execute(
        "UPDATE device SET config_version = MAX(config_version, ?1)",
        [to_i64(update.version)],
    )?;
    Ok(ConfigApplied::Stored(update.version))
}
