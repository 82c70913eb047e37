//! The shift log: one automerge document per (site, device, shift), written only by that
//! device. Its root map holds `meta` (who, where, which shift) and one entry per event, keyed by
//! the event id, whose value is the event's encoded [`EventRecord`]. Each event is one change of
//! exactly one operation, so a change can be checked on its own (see [`crate::merge`]).

use std::collections::HashSet;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ROOT, ReadDoc, ScalarValueRef, ValueRef};
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError, LogError};
use crate::event::{Event, EventBody, EventRecord};
use crate::ids::{DeviceId, EventId, GuardId, ShiftId, SiteId};

/// Root key of the shift metadata.
pub const META_KEY: &str = "meta";
const META_V1: u8 = 1;

/// Who wrote a shift log, where, and for which shift. Written once, in the document's first change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftMeta {
    pub site: SiteId,
    pub device: DeviceId,
    pub shift: ShiftId,
    pub guard: GuardId,
}

impl ShiftMeta {
    /// The whole event for a record of this log: the record plus the log's context.
    pub fn event(&self, id: EventId, record: EventRecord) -> Event {
        Event {
            id,
            site: self.site.clone(),
            device: self.device,
            shift: self.shift,
            guard: self.guard.clone(),
            record,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        crate::codec::encode_versioned(META_V1, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::codec::decode_versioned(META_V1, bytes)
    }
}

/// A change just made locally: its hash and its bytes, to persist before the call returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalChange {
    pub hash: ChangeHash,
    pub bytes: Vec<u8>,
}

/// An event checked against its log ([`ShiftLog::prepare`]) and encoded, not yet appended.
/// Its record bytes are what the log will hold, so a device may persist them first and build
/// the change afterwards (or again, after a crash, from the persisted bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedEvent {
    id: EventId,
    bytes: Vec<u8>,
    ends_shift: bool,
}

impl PreparedEvent {
    /// A record persisted earlier, to append again: checked by decoding it.
    pub fn from_record_bytes(id: EventId, bytes: Vec<u8>) -> Result<Self, LogError> {
        let record = EventRecord::decode(&bytes)?;
        Ok(PreparedEvent {
            id,
            bytes,
            ends_shift: matches!(record.body, EventBody::ShiftEnded { .. }),
        })
    }

    pub fn id(&self) -> EventId {
        self.id
    }

    /// The encoded [`EventRecord`], as the log will hold it.
    pub fn record_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One device's log of one shift.
#[derive(Debug)]
pub struct ShiftLog {
    doc: AutoCommit,
    meta: ShiftMeta,
    ended: bool,
    /// Ids of the events in the log (every root key but `meta`): asking whether an id is new
    /// costs a hash lookup, not a read of the document.
    ids: HashSet<EventId>,
}

impl ShiftLog {
    /// Starts a new log; the returned change (holding the metadata) must be persisted.
    pub fn create(meta: ShiftMeta) -> Result<(Self, LocalChange), LogError> {
        let mut doc = AutoCommit::new().with_actor(meta.device.actor_id());
        doc.put(ROOT, META_KEY, meta.encode()?)?;
        let change = commit(&mut doc)?;
        Ok((
            ShiftLog {
                doc,
                meta,
                ended: false,
                ids: HashSet::new(),
            },
            change,
        ))
    }

    /// Loads a log from what was persisted: a saved document and/or change chunks, concatenated.
    pub fn load(bytes: &[u8], device: DeviceId) -> Result<Self, LogError> {
        let doc = AutoCommit::load(bytes)?.with_actor(device.actor_id());
        let meta = read_meta(&doc)?;
        let mut log = ShiftLog {
            doc,
            meta,
            ended: false,
            ids: HashSet::new(),
        };
        let events = log.events_raw()?;
        log.ids = events.iter().map(|(id, _)| *id).collect();
        log.ended = events
            .iter()
            .any(|(_, r)| matches!(r.body, EventBody::ShiftEnded { .. }));
        Ok(log)
    }

    pub fn meta(&self) -> &ShiftMeta {
        &self.meta
    }

    /// How many events the log holds.
    pub fn event_count(&self) -> usize {
        self.ids.len()
    }

    /// Whether a `ShiftEnded` event has been recorded; a frozen log takes no more events.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Records one event as one change. Recording the same id with the same body again does
    /// nothing (returns `None`), whatever its clock readings, so an app may retry a call whose
    /// outcome it did not see; the same id with another body is a conflict.
    pub fn record(
        &mut self,
        id: EventId,
        record: &EventRecord,
    ) -> Result<Option<LocalChange>, LogError> {
        match self.prepare(id, record)? {
            Some(event) => self.append(event).map(Some),
            None => Ok(None),
        }
    }

    /// Checks and encodes an event for [`Self::append`], without changing the log: `None` if
    /// this id is already recorded with this body (a retry), an error if the event is invalid,
    /// conflicts with what is recorded, or the shift has ended. A device can persist the
    /// prepared record before its change exists (see [`PreparedEvent`]).
    pub fn prepare(
        &self,
        id: EventId,
        record: &EventRecord,
    ) -> Result<Option<PreparedEvent>, LogError> {
        record.body.validate()?;
        if self.ids.contains(&id)
            && let Some(existing) = self.get(&id)?
        {
            // Compared as recorded (locations rounded to 1e-7 degree), not as passed in.
            return if existing.body == record.body.as_recorded()? {
                Ok(None)
            } else {
                Err(LogError::ConflictingEvent(id))
            };
        }
        if self.ended {
            return Err(LogError::Frozen);
        }
        Ok(Some(PreparedEvent {
            id,
            bytes: record.encode()?,
            ends_shift: matches!(record.body, EventBody::ShiftEnded { .. }),
        }))
    }

    /// Appends a prepared event as one change of exactly one operation. The change depends
    /// only on the log and the record's bytes, so appending the same records to the same log
    /// always gives the same changes (the same hashes).
    pub fn append(&mut self, event: PreparedEvent) -> Result<LocalChange, LogError> {
        if self.ids.contains(&event.id) {
            return Err(LogError::ConflictingEvent(event.id));
        }
        if self.ended {
            return Err(LogError::Frozen);
        }
        self.doc.put(ROOT, event.id.to_string(), event.bytes)?;
        let change = commit(&mut self.doc)?;
        self.ids.insert(event.id);
        self.ended = event.ends_shift;
        Ok(change)
    }

    /// The record stored under `id`, if any.
    pub fn get(&self, id: &EventId) -> Result<Option<EventRecord>, LogError> {
        match self.doc.get(ROOT, id.to_string())? {
            Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
                automerge::ScalarValue::Bytes(b) => Ok(Some(EventRecord::decode(b)?)),
                _ => Err(DecodeError::Malformed(format!("event {id} is not bytes")).into()),
            },
            Some(_) => Err(DecodeError::Malformed(format!("event {id} is an object")).into()),
            None => Ok(None),
        }
    }

    fn events_raw(&self) -> Result<Vec<(EventId, EventRecord)>, LogError> {
        let mut out = Vec::new();
        for item in self.doc.map_range(ROOT, ..) {
            if item.key == META_KEY {
                continue;
            }
            let id: EventId = item.key.parse()?;
            let ValueRef::Scalar(ScalarValueRef::Bytes(bytes)) = &item.value else {
                return Err(DecodeError::Malformed(format!("event {id} is not bytes")).into());
            };
            out.push((id, EventRecord::decode(bytes)?));
        }
        out.sort_by_key(|(_, r)| r.seq);
        Ok(out)
    }

    /// Every event in the log, in the device's sequence order.
    pub fn events(&self) -> Result<Vec<Event>, LogError> {
        Ok(self
            .events_raw()?
            .into_iter()
            .map(|(id, record)| self.meta.event(id, record))
            .collect())
    }

    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Every change of the log, each after those it depends on.
    pub fn changes(&mut self) -> Vec<automerge::Change> {
        self.doc.get_changes(&[])
    }

    /// The compact form of the whole document (for compaction of a finished shift).
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The hashes of changes not covered by `acked` (heads the server acknowledged). Unknown hashes
    /// in `acked` are ignored, so a server that lost data gets everything again.
    pub fn unacked(&mut self, acked: &[ChangeHash]) -> Vec<ChangeHash> {
        let known = self.known(acked);
        // Metadata only: materialising whole changes costs several times more.
        self.doc
            .get_changes_meta(&known)
            .iter()
            .map(|c| c.hash)
            .collect()
    }

    /// Keeps only the hashes this document holds.
    pub fn known(&mut self, hashes: &[ChangeHash]) -> Vec<ChangeHash> {
        known(&mut self.doc, hashes)
    }

    /// The changes not covered by `acked`, as one compressed bundle (empty if there are none),
    /// and how many events they hold.
    pub fn bundle_since(&mut self, acked: &[ChangeHash]) -> Result<(Vec<u8>, u32), LogError> {
        let pending = self.unacked(acked);
        if pending.is_empty() {
            return Ok((Vec::new(), 0));
        }
        // History is linear (one writer), so the metadata change is pending only when nothing
        // has been acknowledged; every other change holds one event.
        let known = self.known(acked);
        let events = pending.len() - usize::from(known.is_empty());
        let bundle = self.doc.bundle(pending)?.bytes().to_vec();
        Ok((bundle, u32::try_from(events).unwrap_or(u32::MAX)))
    }
}

/// Of `hashes`, those `doc` holds.
pub(crate) fn known(doc: &mut AutoCommit, hashes: &[ChangeHash]) -> Vec<ChangeHash> {
    hashes
        .iter()
        .copied()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .collect()
}

/// Commits the pending operations as one change and returns it, to persist and send.
pub(crate) fn commit(doc: &mut AutoCommit) -> Result<LocalChange, LogError> {
    doc.commit();
    let mut change = doc
        .get_last_local_change()
        .ok_or(LogError::Automerge(automerge::AutomergeError::Fail))?;
    Ok(LocalChange {
        hash: change.hash(),
        bytes: change.bytes().into_owned(),
    })
}

pub(crate) fn read_meta(doc: &impl ReadDoc) -> Result<ShiftMeta, LogError> {
    match doc.get(ROOT, META_KEY)? {
        Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
            automerge::ScalarValue::Bytes(b) => Ok(ShiftMeta::decode(b)?),
            _ => Err(LogError::MissingMeta),
        },
        _ => Err(LogError::MissingMeta),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{DeviceTime, Scan, ScanMethod};
    use crate::hlc::Hlc;
    use crate::ids::CheckpointId;
    use uuid::Uuid;

    pub(crate) fn meta(device: DeviceId) -> ShiftMeta {
        ShiftMeta {
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            device,
            shift: ShiftId::generate(),
            guard: GuardId::new("guard-1").unwrap_or_else(|e| panic!("{e}")),
        }
    }

    pub(crate) fn scan(seq: u64) -> EventRecord {
        EventRecord {
            seq,
            time: DeviceTime {
                wall_ms: 1_740_866_400_000 + seq as i64,
                boot_id: Uuid::nil(),
                mono_ms: seq,
                hlc: Hlc {
                    wall_ms: 1_740_866_400_000 + seq,
                    counter: 0,
                },
            },
            config_version: 1,
            body: EventBody::CheckpointScanned(Scan {
                checkpoint: CheckpointId::new(format!("cp-{}", seq % 40 + 1))
                    .unwrap_or_else(|e| panic!("{e}")),
                method: ScanMethod::Qr {
                    payload: format!("QR{seq}"),
                },
                location: None,
                note: None,
            }),
        }
    }

    #[test]
    fn records_load_back_in_order_and_retries_are_idempotent() -> Result<(), LogError> {
        let device = DeviceId::generate();
        let (mut log, first) = ShiftLog::create(meta(device))?;
        let mut persisted = first.bytes.clone();
        let ids: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            let c = log.record(*id, &scan(i as u64 + 1))?;
            persisted.extend(c.map(|c| c.bytes).unwrap_or_default());
        }
        assert_eq!(log.record(ids[0], &scan(1))?, None);
        assert!(matches!(
            log.record(ids[0], &scan(9)),
            Err(LogError::ConflictingEvent(_))
        ));

        let loaded = ShiftLog::load(&persisted, device)?;
        let events = loaded.events()?;
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert_eq!(loaded.meta(), log.meta());
        Ok(())
    }

    #[test]
    fn a_record_appended_again_to_the_same_log_gives_the_same_change() -> Result<(), LogError> {
        let device = DeviceId::generate();
        let (mut log, first) = ShiftLog::create(meta(device))?;
        let id = EventId::generate();
        let prepared = log.prepare(id, &scan(1))?.ok_or(LogError::MissingMeta)?;
        assert_eq!(log.event_count(), 0, "preparing changes nothing");
        let stored = prepared.record_bytes().to_vec();
        let change = log.append(prepared)?;
        assert_eq!(log.prepare(id, &scan(1))?, None, "a retry");
        assert!(matches!(
            log.prepare(id, &scan(2)),
            Err(LogError::ConflictingEvent(_))
        ));

        // A device that committed the record but died before its change was written.
        let mut reloaded = ShiftLog::load(&first.bytes, device)?;
        let again = reloaded.append(PreparedEvent::from_record_bytes(id, stored)?)?;
        assert_eq!(again, change);
        assert_eq!(reloaded.heads(), log.heads());
        Ok(())
    }

    #[test]
    fn an_ended_shift_is_frozen() -> Result<(), LogError> {
        let device = DeviceId::generate();
        let (mut log, first) = ShiftLog::create(meta(device))?;
        let mut end = scan(1);
        end.body = EventBody::ShiftEnded { note: None };
        let c = log
            .record(EventId::generate(), &end)?
            .map(|c| c.bytes)
            .unwrap_or_default();
        assert!(matches!(
            log.record(EventId::generate(), &scan(2)),
            Err(LogError::Frozen)
        ));
        let reloaded = ShiftLog::load(&[first.bytes, c].concat(), device)?;
        assert!(reloaded.is_ended());
        Ok(())
    }
}
