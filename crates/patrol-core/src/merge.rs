//! The pure functions of a sync: what a device sends ([`plan_push`]), how the server checks and
//! merges a pushed shift log ([`ingest_shift_log`]), and what the device may then mark delivered
//! ([`acknowledge`]). No I/O: the phone and the server wrap these in their own storage and
//! transports, and the property tests drive them through lossy, duplicating, reordering networks.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, Bundle, Change, ChangeHash, ROOT, ReadDoc, ScalarValue};
use thiserror::Error;

use crate::error::LogError;
use crate::event::EventRecord;
use crate::ids::{DeviceId, EventId, ShiftId, SiteId};
use crate::incident::{Entry, IncidentDoc, Party, Stamped};
use crate::protocol::{DocPush, DocRef, RejectCode, from_wire, to_wire};
use crate::shiftlog::{META_KEY, ShiftLog, ShiftMeta, read_meta};

/// The device side: the push for one shift log, given the heads the server acknowledged last.
pub fn plan_push(log: &mut ShiftLog, acked: &[ChangeHash]) -> Result<DocPush, LogError> {
    let have = log.known(acked);
    let (changes, events) = log.bundle_since(&have)?;
    Ok(DocPush {
        doc: DocRef::ShiftLog(log.meta().shift),
        have: to_wire(&have),
        changes,
        events,
        signature: None,
    })
}

/// What a device learns from the server's heads for one of its logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The heads to remember as acknowledged (those of the server's heads this device knows).
    pub acked: Vec<ChangeHash>,
    /// Changes still not covered by the server's heads; their events are not delivered yet.
    pub unacked: Vec<ChangeHash>,
    /// How many of the log's events the server's heads cover. A log's history is linear (one
    /// writer, each change on the previous), so these are its first events in sequence order.
    pub delivered_events: usize,
}

/// The device side: an event is delivered only when the server's heads include its change.
pub fn acknowledge(log: &mut ShiftLog, server_heads: &[[u8; 32]]) -> Ack {
    let acked = log.known(&from_wire(server_heads));
    let unacked = log.unacked(&acked);
    // With nothing acknowledged, the metadata change is among the unacknowledged ones.
    let unacked_events = unacked.len() - usize::from(acked.is_empty() && !unacked.is_empty());
    let delivered_events = log.event_count().saturating_sub(unacked_events);
    Ack {
        acked,
        unacked,
        delivered_events,
    }
}

/// A push the server refuses; nothing of it is applied.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// Who the server expects a pushed shift log to belong to (from the request and its credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub site: SiteId,
    pub device: DeviceId,
    pub shift: ShiftId,
}

/// The result of merging one push into the server's copy of a shift log.
#[derive(Debug)]
pub struct Ingested {
    /// The log's metadata; `None` while the server has not received the log's first change.
    pub meta: Option<ShiftMeta>,
    /// Events that were not in the server's copy before, in the device's sequence order.
    pub new_events: Vec<(EventId, EventRecord)>,
    /// The changes that were applied, to persist with the projection in one transaction; in the
    /// order they were made (by sequence number), so that their raw bytes appended load again.
    pub applied: Vec<Change>,
    pub heads: Vec<ChangeHash>,
    /// Some pushed changes depend on changes the server does not have; they were not applied.
    pub missing_deps: bool,
}

enum Content {
    Meta(ShiftMeta),
    Event(EventId, EventRecord),
}

/// Parses a bundle into changes; malformed input of any kind is a rejection, never a panic.
pub fn parse_bundle(bytes: &[u8]) -> Result<Vec<Change>, Rejection> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    crate::bundle_limits::check(bytes)
        .map_err(|e| reject(RejectCode::Malformed, format!("changes do not decode: {e}")))?;
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        Bundle::try_from(bytes)
            .map_err(|e| e.to_string())
            .and_then(|b| b.to_changes().map_err(|e| e.to_string()))
    }));
    match parsed {
        Ok(Ok(changes)) => Ok(changes),
        Ok(Err(e)) => Err(reject(
            RejectCode::Malformed,
            format!("changes do not decode: {e}"),
        )),
        Err(_) => Err(reject(RejectCode::Malformed, "changes do not decode")),
    }
}

/// What every change a device pushes must be, whatever the document: made by the device's
/// own actor, naming no author, decodable, and only puts of new root keys holding bytes (never
/// an overwrite or delete: what is recorded is evidence). Returns the puts as (key, value).
fn device_puts(
    change: &Change,
    device: DeviceId,
    doc: &str,
) -> Result<Vec<(String, Vec<u8>)>, Rejection> {
    let hash = change.hash();
    if change.actor_id() != &device.actor_id() {
        return Err(reject(
            RejectCode::ForeignActor,
            format!(
                "change {hash} was made by actor {}, not by the sending device",
                change.actor_id()
            ),
        ));
    }
    if change.author().is_some() {
        return Err(reject(
            RejectCode::UnexpectedOperation,
            format!("change {hash} names an author; a device's changes never do"),
        ));
    }
    let expanded = catch_unwind(AssertUnwindSafe(|| change.decode())).map_err(|_| {
        reject(
            RejectCode::Malformed,
            format!("change {hash} does not decode"),
        )
    })?;
    let mut puts = Vec::with_capacity(expanded.operations.len());
    for op in &expanded.operations {
        if !op.pred.is_empty() || matches!(op.action, OpType::Delete) {
            return Err(reject(
                RejectCode::ImmutableEvent,
                format!("change {hash} overwrites or deletes a recorded value"),
            ));
        }
        let (ObjectId::Root, Key::Map(key), OpType::Put(ScalarValue::Bytes(value)), false) =
            (&op.obj, &op.key, &op.action, op.insert)
        else {
            return Err(reject(
                RejectCode::UnexpectedOperation,
                format!("change {hash} holds an operation {doc} never contains"),
            ));
        };
        puts.push((key.to_string(), value.clone()));
    }
    Ok(puts)
}

/// Checks one change of a shift log: made by the device, only puts of new root keys, each
/// holding a well-formed, valid record. Returns what the change holds.
fn check_change(change: &Change, owner: &Owner) -> Result<Vec<Content>, Rejection> {
    let puts = device_puts(change, owner.device, "a shift log")?;
    let mut out = Vec::with_capacity(puts.len());
    for (key, value) in &puts {
        let value = value.as_slice();
        if key.as_str() == META_KEY {
            let meta = ShiftMeta::decode(value).map_err(|e| {
                reject(
                    RejectCode::Malformed,
                    format!("shift metadata does not decode: {e}"),
                )
            })?;
            check_owner(&meta, owner)?;
            out.push(Content::Meta(meta));
        } else {
            let id: EventId = key.parse().map_err(|_| {
                reject(
                    RejectCode::UnexpectedOperation,
                    format!("key {key:?} is not an event id"),
                )
            })?;
            let record = EventRecord::decode(value)
                .map_err(|e| reject(RejectCode::Malformed, format!("event {id}: {e}")))?;
            record
                .body
                .validate()
                .map_err(|e| reject(RejectCode::Malformed, format!("event {id}: {e}")))?;
            out.push(Content::Event(id, record));
        }
    }
    Ok(out)
}

/// A shift log has one writer, so its history is one line: the device's first change depends on
/// nothing and each later one on exactly the change numbered before it. automerge applies a
/// forked history of one actor in memory, but cannot load it again once stored (it panics), so
/// a fork would make the log unreadable on the server. A dependency the server lacks cannot be
/// checked yet: the change waits for it (`missing_deps`) and is checked again when it comes.
fn check_linear(doc: &Automerge, fresh: &[Change]) -> Result<(), Rejection> {
    let in_push: HashMap<ChangeHash, u64> = fresh.iter().map(|c| (c.hash(), c.seq())).collect();
    for change in fresh {
        let follows = match (change.seq(), change.deps()) {
            (1, []) => true,
            (seq, [dep]) if seq > 1 => in_push
                .get(dep)
                .copied()
                .or_else(|| doc.get_change_meta_by_hash(dep).map(|m| m.seq))
                .is_none_or(|dep_seq| dep_seq.checked_add(1) == Some(seq)),
            _ => false,
        };
        if !follows {
            return Err(reject(
                RejectCode::Malformed,
                format!(
                    "change {} (the device's number {}) does not follow the device's previous \
                     change: a shift log's history is one line",
                    change.hash(),
                    change.seq()
                ),
            ));
        }
    }
    Ok(())
}

fn check_owner(meta: &ShiftMeta, owner: &Owner) -> Result<(), Rejection> {
    if meta.site != owner.site || meta.device != owner.device || meta.shift != owner.shift {
        return Err(reject(
            RejectCode::WrongOwner,
            format!(
                "shift log belongs to site {}, device {}, shift {}; the request says site {}, device {}, shift {}",
                meta.site, meta.device, meta.shift, owner.site, owner.device, owner.shift
            ),
        ));
    }
    Ok(())
}

/// The server side: checks every change of a push, then applies the new ones to `doc` (the
/// server's copy, empty for a shift it has not seen). On a rejection `doc` is left untouched.
/// On an `Err` from automerge itself after checks passed, the caller must discard `doc`.
pub fn ingest_shift_log(
    doc: &mut Automerge,
    owner: &Owner,
    bundle: &[u8],
) -> Result<Ingested, Rejection> {
    let changes = parse_bundle(bundle)?;
    let mut meta = match read_meta(doc) {
        Ok(meta) => {
            check_owner(&meta, owner)?;
            Some(meta)
        }
        Err(LogError::MissingMeta) => None,
        Err(e) => {
            return Err(reject(
                RejectCode::Malformed,
                format!("stored log unreadable: {e}"),
            ));
        }
    };

    let mut fresh = Vec::new();
    let mut contents = Vec::new();
    let mut seen = HashSet::new();
    for change in changes {
        // A change the bundle holds twice is one change.
        if doc.get_change_meta_by_hash(&change.hash()).is_some() || !seen.insert(change.hash()) {
            continue;
        }
        let content = check_change(&change, owner)?;
        contents.push((change.hash(), content));
        fresh.push(change);
    }
    // Every key is put once in a log's whole history. A put naming no predecessor passes
    // `check_change`, yet on a key the log already holds automerge takes it as a concurrent
    // write, and the later value would win in the document while the feed kept the first.
    let mut put = HashSet::new();
    for (hash, content) in &contents {
        for c in content {
            match c {
                Content::Meta(m) => {
                    if meta.as_ref().is_some_and(|existing| existing != m) {
                        return Err(reject(RejectCode::WrongOwner, "shift metadata changed"));
                    }
                    if meta.is_some() {
                        return Err(reject(
                            RejectCode::ImmutableEvent,
                            format!("change {hash} puts the shift metadata again"),
                        ));
                    }
                    meta = Some(m.clone());
                }
                Content::Event(id, _) => {
                    if !put.insert(*id) || doc.get(ROOT, id.to_string()).ok().flatten().is_some() {
                        return Err(reject(
                            RejectCode::ImmutableEvent,
                            format!(
                                "change {hash} puts event {id} again; a recorded event is never \
                                 overwritten"
                            ),
                        ));
                    }
                }
            }
        }
    }
    let Some(meta) = meta else {
        // Without the first change the server cannot tell whose log this is: apply nothing and
        // ask for everything.
        return Ok(Ingested {
            meta: None,
            new_events: Vec::new(),
            applied: Vec::new(),
            heads: doc.get_heads(),
            missing_deps: !fresh.is_empty(),
        });
    };

    check_linear(doc, &fresh)?;
    // automerge asserts some invariants of changes with panics; a change that trips one is
    // malformed, and the caller discards `doc`.
    catch_unwind(AssertUnwindSafe(|| {
        doc.apply_changes(fresh.iter().cloned())
    }))
    .map_err(|_| reject(RejectCode::Malformed, "changes do not apply"))?
    .map_err(|e| reject(RejectCode::Malformed, format!("changes do not apply: {e}")))?;

    let mut new_events = Vec::new();
    let mut applied = Vec::new();
    let mut missing_deps = false;
    for (change, (hash, content)) in fresh.into_iter().zip(contents) {
        if doc.get_change_meta_by_hash(&hash).is_none() {
            missing_deps = true;
            continue;
        }
        applied.push(change);
        for c in content {
            if let Content::Event(id, record) = c {
                new_events.push((id, record));
            }
        }
    }
    new_events.sort_by_key(|(_, r)| r.seq);
    // In the order the device made them (one actor, so by sequence number), whatever order the
    // bundle listed them in: persisted in this order, they load again; out of order, automerge's
    // load panics on them.
    applied.sort_by_key(Change::seq);
    Ok(Ingested {
        meta: Some(meta),
        new_events,
        applied,
        heads: doc.get_heads(),
        missing_deps,
    })
}

/// The device side: the push for one incident, given the server heads it last merged.
pub fn plan_incident_push(
    doc: &mut IncidentDoc,
    synced: &[ChangeHash],
) -> Result<DocPush, LogError> {
    let have = doc.known(synced);
    let changes = doc.bundle_since(&have)?;
    Ok(DocPush {
        doc: DocRef::Incident(doc.id()),
        have: to_wire(&have),
        changes,
        events: 0,
        signature: None,
    })
}

/// The result of merging a device's incident push into the server's copy.
#[derive(Debug)]
pub struct IncidentIngested {
    /// Entries new to the server's copy.
    pub new_entries: usize,
    /// Some pushed changes depend on changes the server does not have; they were not applied.
    pub missing_deps: bool,
}

/// Checks one change of an incident pushed by `device`: made by the device's actor, only new
/// root keys holding valid entries written by that device as a guard; a report only for `site`
/// and only as the incident's first entry. Returns the keys of the entries it adds.
fn check_incident_change(
    change: &Change,
    site: &SiteId,
    device: DeviceId,
    first: bool,
) -> Result<Vec<String>, Rejection> {
    let puts = device_puts(change, device, "an incident")?;
    let mut keys = Vec::with_capacity(puts.len());
    for (key, value) in &puts {
        let value = value.as_slice();
        if key.parse::<uuid::Uuid>().is_err() {
            return Err(reject(
                RejectCode::UnexpectedOperation,
                format!("key {key:?} is not an entry id"),
            ));
        }
        keys.push(key.to_string());
        let entry = Stamped::decode(value)
            .map_err(|e| reject(RejectCode::Malformed, format!("entry {key}: {e}")))?;
        entry
            .validate()
            .map_err(|e| reject(RejectCode::Malformed, format!("entry {key}: {e}")))?;
        match &entry.by {
            Party::Guard { device: d, .. } if *d == device => {}
            _ => {
                return Err(reject(
                    RejectCode::WrongAuthor,
                    format!("entry {key} is not written by the sending device"),
                ));
            }
        }
        if let Entry::Reported { site: s, .. } = &entry.entry {
            if s != site {
                return Err(reject(
                    RejectCode::WrongAuthor,
                    format!("entry {key} reports an incident of site {s}, not {site}"),
                ));
            }
            if !first {
                return Err(reject(
                    RejectCode::ImmutableEvent,
                    format!("entry {key} reports an incident that is already reported"),
                ));
            }
        }
    }
    Ok(keys)
}

/// The server side of an incident push: checks every change the server does not hold yet, then
/// applies them. A rejection leaves `doc` untouched. An incident the server has never seen must
/// arrive with its report.
pub fn ingest_incident(
    doc: &mut IncidentDoc,
    site: &SiteId,
    device: DeviceId,
    bundle: &[u8],
) -> Result<IncidentIngested, Rejection> {
    let changes = parse_bundle(bundle)?;
    let mut fresh = Vec::new();
    let mut new_entries = 0;
    // The report must be the first change of a new incident: in a bundle, changes come in
    // dependency order, so it is the first fresh one.
    let mut first = doc.is_empty();
    // Entries are immutable: every key is put once in an incident's whole history (see
    // `ingest_shift_log` for why a put naming no predecessor is not enough).
    let mut put = HashSet::new();
    let mut seen = HashSet::new();
    for change in changes {
        if doc.has_change(&change.hash()) || !seen.insert(change.hash()) {
            continue;
        }
        let keys = check_incident_change(&change, site, device, first)?;
        for key in &keys {
            if doc.has_key(key) || !put.insert(key.clone()) {
                return Err(reject(
                    RejectCode::ImmutableEvent,
                    format!(
                        "change {} puts entry {key} again; an entry is never overwritten",
                        change.hash()
                    ),
                ));
            }
        }
        new_entries += keys.len();
        if first && !is_report(&change) {
            return Err(reject(
                RejectCode::MissingMeta,
                format!(
                    "incident {} is unknown here and the push has no report",
                    doc.id()
                ),
            ));
        }
        first = false;
        fresh.push(change);
    }
    let hashes: Vec<ChangeHash> = fresh.iter().map(Change::hash).collect();
    // automerge asserts some invariants of changes with panics; such a push is malformed.
    catch_unwind(AssertUnwindSafe(|| doc.apply(fresh)))
        .map_err(|_| reject(RejectCode::Malformed, "changes do not apply"))?
        .map_err(|e| reject(RejectCode::Malformed, format!("changes do not apply: {e}")))?;
    let missing_deps = hashes.iter().any(|h| !doc.has_change(h));
    Ok(IncidentIngested {
        new_entries,
        missing_deps,
    })
}

fn is_report(change: &Change) -> bool {
    catch_unwind(AssertUnwindSafe(|| change.decode()))
        .ok()
        .is_some_and(|expanded| {
            expanded.operations.iter().any(|op| match &op.action {
                OpType::Put(ScalarValue::Bytes(value)) => {
                    Stamped::decode(value).is_ok_and(|e| matches!(e.entry, Entry::Reported { .. }))
                }
                _ => false,
            })
        })
}
