//! Incidents worked together: one automerge document per incident, written by the reporting
//! guard's phone, responding guards and the control room, often offline and at the same time.
//!
//! Every write adds a new immutable *entry* under a fresh unique key, so automerge never has
//! two writers on one key (where it would pick a winner by actor id, which is no policy). The
//! incident's state is a pure fold over all entries, and each field's merge rule lives in that
//! fold ([`IncidentState::fold`]):
//!
//! | field | rule |
//! |---|---|
//! | status | a lattice per *round*: open < acknowledged < dispatched < resolved < closed; the state is the greatest (round, status); reopening starts round + 1 at open, so a reopen wins over a concurrent close of the round it reopens, and a concurrent acknowledge of the old round is absorbed |
//! | severity | the latest by hybrid logical clock (ties broken by entry id); the report sets the first |
//! | assignee | the latest by hybrid logical clock (ties broken by entry id) |
//! | notes | appended, never lost; ordered by hybrid logical clock, then entry id |
//! | attachments | a set keyed by content hash (the first in history order stands) |
//! | history | every entry, with who wrote it, when, and whether it took effect, ordered by hybrid logical clock, then entry id |

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ROOT, ReadDoc, ScalarValueRef, ValueRef};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DecodeError, EncodeError, LogError, ValidationError};
use crate::event::{IncidentCategory, Location, MAX_TEXT_LEN, Severity};
use crate::hlc::Hlc;
use crate::ids::{DeviceId, GuardId, IncidentId, SiteId};
use crate::shiftlog::LocalChange;

const ENTRY_V1: u8 = 1;
/// Longest media type and attachment name accepted.
pub const MAX_NAME_LEN: usize = 256;

/// Where an incident stands in its current round.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    #[default]
    Open,
    Acknowledged,
    Dispatched,
    Resolved,
    Closed,
}

impl IncidentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::Dispatched => "dispatched",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Closed => "closed",
        }
    }
}

/// Who wrote an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Guard { device: DeviceId, guard: GuardId },
    Operator { user: String },
}

/// A file attached to an incident from a guard's phone: the app keeps the bytes; the document
/// holds the reference, so an attachment is verifiable by its hash wherever it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub sha256: [u8; 32],
    pub media_type: String,
    pub size: u64,
    pub name: Option<String>,
}

impl Attachment {
    /// A reference names its media type and may name the file, each within [`MAX_NAME_LEN`].
    /// (Its size is checked against the limits where the bytes are: on the phone when attached,
    /// on the server when uploaded.)
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.media_type.trim().is_empty() {
            return Err(ValidationError::Empty {
                field: "media type",
            });
        }
        for (field, value) in [
            ("media type", self.media_type.as_str()),
            ("attachment name", self.name.as_deref().unwrap_or("")),
        ] {
            if value.len() > MAX_NAME_LEN {
                return Err(ValidationError::TooLong {
                    field,
                    len: value.len(),
                    max: MAX_NAME_LEN,
                });
            }
        }
        Ok(())
    }
}

/// One immutable entry of an incident document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// The first report; exactly one per incident, written when the incident is created.
    Reported {
        site: SiteId,
        category: IncidentCategory,
        severity: Severity,
        description: String,
        location: Option<Location>,
    },
    Status {
        round: u32,
        status: IncidentStatus,
    },
    Severity {
        severity: Severity,
    },
    Assign {
        to: Option<String>,
    },
    Note {
        text: String,
    },
    Attach {
        attachment: Attachment,
    },
}

/// An entry with who wrote it and when (hybrid logical clock, device wall time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    pub by: Party,
    pub at: Hlc,
    pub wall_ms: i64,
    pub entry: Entry,
}

impl Stamped {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        crate::codec::encode_versioned(ENTRY_V1, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::codec::decode_versioned(ENTRY_V1, bytes)
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        fn text(
            field: &'static str,
            s: &str,
            max: usize,
            required: bool,
        ) -> Result<(), ValidationError> {
            if required && s.trim().is_empty() {
                return Err(ValidationError::Empty { field });
            }
            if s.len() > max {
                return Err(ValidationError::TooLong {
                    field,
                    len: s.len(),
                    max,
                });
            }
            Ok(())
        }
        if let Party::Operator { user } = &self.by {
            text("operator", user, MAX_NAME_LEN, true)?;
        }
        match &self.entry {
            Entry::Reported {
                description,
                location,
                ..
            } => {
                text("description", description, MAX_TEXT_LEN, true)?;
                location.as_ref().map_or(Ok(()), Location::validate)
            }
            Entry::Note { text: t } => text("note", t, MAX_TEXT_LEN, true),
            Entry::Assign { to } => {
                text("assignee", to.as_deref().unwrap_or(""), MAX_NAME_LEN, false)
            }
            Entry::Attach { attachment } => attachment.validate(),
            Entry::Status { .. } | Entry::Severity { .. } => Ok(()),
        }
    }
}

/// A note as the incident shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentNote {
    pub by: Party,
    pub at: Hlc,
    pub wall_ms: i64,
    pub text: String,
}

/// One entry of an incident's history: who did what, when, and whether it took effect.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// The entry's key in the document (unique; breaks ties between equal clocks).
    pub id: String,
    pub by: Party,
    pub at: Hlc,
    /// The writer's wall time.
    pub wall_ms: i64,
    pub entry: Entry,
    /// Whether it changed the incident, taken in history order: a status that does not move
    /// (round, status) forward (a concurrent acknowledge of a round already reopened, a second
    /// close) and an attachment already attached did not; they still happened and stay listed.
    pub took_effect: bool,
}

impl HistoryEntry {
    /// What happened, in words: `reported (fire, high)`, `acknowledged`, `reopened (round 1)`,
    /// `closed (round 1)`, `severity critical`, `assigned to guard-4`, `unassigned`,
    /// `note: ...`, `attached bay14.jpg (image/jpeg, 123456 bytes)`; `(no effect)` after one
    /// that did not take effect. Text written by people is included as written: a terminal
    /// must make it safe.
    pub fn what(&self) -> String {
        let said = match &self.entry {
            Entry::Reported {
                category, severity, ..
            } => format!("reported ({category}, {severity})"),
            Entry::Status { round: 0, status } => status.as_str().to_owned(),
            Entry::Status {
                round,
                status: IncidentStatus::Open,
            } => format!("reopened (round {round})"),
            Entry::Status { round, status } => format!("{} (round {round})", status.as_str()),
            Entry::Severity { severity } => format!("severity {severity}"),
            Entry::Assign { to: Some(to) } => format!("assigned to {to}"),
            Entry::Assign { to: None } => "unassigned".to_owned(),
            Entry::Note { text } => format!("note: {text}"),
            Entry::Attach { attachment } => format!(
                "attached {} ({}, {} bytes)",
                attachment.name.as_deref().unwrap_or("a file"),
                attachment.media_type,
                attachment.size
            ),
        };
        if self.took_effect {
            said
        } else {
            format!("{said} (no effect)")
        }
    }
}

/// The incident as every replica computes it from the same entries.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentState {
    pub id: IncidentId,
    pub site: Option<SiteId>,
    pub category: Option<IncidentCategory>,
    pub description: Option<String>,
    pub location: Option<Location>,
    pub reported_by: Option<Party>,
    pub reported_at_ms: Option<i64>,
    pub round: u32,
    pub status: IncidentStatus,
    pub severity: Option<Severity>,
    pub assignee: Option<String>,
    pub notes: Vec<IncidentNote>,
    pub attachments: Vec<Attachment>,
    /// Every entry, ordered by hybrid logical clock, then entry id.
    pub history: Vec<HistoryEntry>,
}

impl IncidentState {
    /// Folds every entry (keyed by entry id) into the state, by the rules in the module docs.
    /// The result depends only on the set of entries, never on their order or on actor ids:
    /// the entries are taken in history order (hybrid logical clock, then entry id), which
    /// every replica agrees on.
    pub fn fold<'a>(
        id: IncidentId,
        entries: impl IntoIterator<Item = (&'a str, &'a Stamped)>,
    ) -> Self {
        let mut entries: Vec<(&str, &Stamped)> = entries.into_iter().collect();
        entries.sort_by(|(ka, a), (kb, b)| (a.at, ka).cmp(&(b.at, kb)));
        let mut s = IncidentState {
            id,
            site: None,
            category: None,
            description: None,
            location: None,
            reported_by: None,
            reported_at_ms: None,
            round: 0,
            status: IncidentStatus::Open,
            severity: None,
            assignee: None,
            notes: Vec::new(),
            attachments: Vec::new(),
            history: Vec::with_capacity(entries.len()),
        };
        // The report's severity is the earliest: a change wins over it even when its clock is
        // behind the report's (a phone's clock set back).
        let mut severity_changed = false;
        let mut attachments: BTreeMap<[u8; 32], Attachment> = BTreeMap::new();
        for (key, e) in entries {
            let took_effect = match &e.entry {
                Entry::Reported {
                    site,
                    category,
                    severity,
                    description,
                    location,
                } => {
                    // One per incident (the server refuses another); the first stands.
                    let first = s.reported_by.is_none();
                    if first {
                        s.site = Some(site.clone());
                        s.category = Some(*category);
                        s.description = Some(description.clone());
                        s.location = *location;
                        s.reported_by = Some(e.by.clone());
                        s.reported_at_ms = Some(e.wall_ms);
                        if !severity_changed {
                            s.severity = Some(*severity);
                        }
                    }
                    first
                }
                Entry::Status { round, status } => {
                    let forward = (*round, *status) > (s.round, s.status);
                    if forward {
                        s.round = *round;
                        s.status = *status;
                    }
                    forward
                }
                Entry::Severity { severity } => {
                    s.severity = Some(*severity);
                    severity_changed = true;
                    true
                }
                Entry::Assign { to } => {
                    s.assignee.clone_from(to);
                    true
                }
                Entry::Note { text } => {
                    s.notes.push(IncidentNote {
                        by: e.by.clone(),
                        at: e.at,
                        wall_ms: e.wall_ms,
                        text: text.clone(),
                    });
                    true
                }
                Entry::Attach { attachment } => match attachments.entry(attachment.sha256) {
                    std::collections::btree_map::Entry::Occupied(_) => false,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(attachment.clone());
                        true
                    }
                },
            };
            s.history.push(HistoryEntry {
                id: key.to_owned(),
                by: e.by.clone(),
                at: e.at,
                wall_ms: e.wall_ms,
                entry: e.entry.clone(),
                took_effect,
            });
        }
        s.attachments = attachments.into_values().collect();
        s
    }
}

/// What a party may do to an incident. Each becomes one entry (one change).
#[derive(Clone, Debug, PartialEq)]
pub enum IncidentAction {
    Acknowledge,
    Dispatch,
    Resolve,
    Close,
    /// Starts a new round at open; only after the incident was resolved or closed.
    Reopen,
    Assign(Option<String>),
    SetSeverity(Severity),
    AddNote(String),
    Attach(Attachment),
}

/// Errors of incident actions.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("incident is {current}; it cannot be {wanted}")]
    NotAllowed {
        current: &'static str,
        wanted: &'static str,
    },
}

impl From<EncodeError> for IncidentError {
    fn from(e: EncodeError) -> Self {
        IncidentError::Log(LogError::Encode(e))
    }
}

impl From<automerge::AutomergeError> for IncidentError {
    fn from(e: automerge::AutomergeError) -> Self {
        IncidentError::Log(LogError::Automerge(e))
    }
}

/// One replica of an incident document.
#[derive(Debug)]
pub struct IncidentDoc {
    id: IncidentId,
    doc: AutoCommit,
}

impl IncidentDoc {
    /// Creates the incident with its report, written by `actor`.
    pub fn create(
        id: IncidentId,
        actor: automerge::ActorId,
        report: Stamped,
    ) -> Result<(Self, LocalChange), IncidentError> {
        if !matches!(report.entry, Entry::Reported { .. }) {
            return Err(IncidentError::NotAllowed {
                current: "new",
                wanted: "created without a report",
            });
        }
        let mut doc = IncidentDoc {
            id,
            doc: AutoCommit::new().with_actor(actor),
        };
        let change = doc.append(report)?;
        Ok((doc, change))
    }

    /// Loads a replica from persisted bytes (a save and/or changes, concatenated).
    pub fn load(id: IncidentId, bytes: &[u8], actor: automerge::ActorId) -> Result<Self, LogError> {
        Ok(IncidentDoc {
            id,
            doc: AutoCommit::load(bytes)?.with_actor(actor),
        })
    }

    pub fn id(&self) -> IncidentId {
        self.id
    }

    /// Every entry, keyed by entry id.
    pub fn entries(&self) -> Result<Vec<(String, Stamped)>, LogError> {
        let mut out = Vec::new();
        for item in self.doc.map_range(ROOT, ..) {
            let ValueRef::Scalar(ScalarValueRef::Bytes(bytes)) = &item.value else {
                return Err(
                    DecodeError::Malformed(format!("entry {} is not bytes", item.key)).into(),
                );
            };
            out.push((item.key.to_string(), Stamped::decode(bytes)?));
        }
        Ok(out)
    }

    pub fn state(&self) -> Result<IncidentState, LogError> {
        let entries = self.entries()?;
        Ok(IncidentState::fold(
            self.id,
            entries.iter().map(|(k, e)| (k.as_str(), e)),
        ))
    }

    /// Applies an action as `by` at `at`/`wall_ms`; returns the change to persist and send.
    pub fn act(
        &mut self,
        action: IncidentAction,
        by: Party,
        at: Hlc,
        wall_ms: i64,
    ) -> Result<LocalChange, IncidentError> {
        let state = self.state()?;
        let status = |wanted: IncidentStatus| -> Result<Entry, IncidentError> {
            if state.status >= wanted {
                return Err(IncidentError::NotAllowed {
                    current: state.status.as_str(),
                    wanted: wanted.as_str(),
                });
            }
            Ok(Entry::Status {
                round: state.round,
                status: wanted,
            })
        };
        let entry = match action {
            IncidentAction::Acknowledge => status(IncidentStatus::Acknowledged)?,
            IncidentAction::Dispatch => status(IncidentStatus::Dispatched)?,
            IncidentAction::Resolve => status(IncidentStatus::Resolved)?,
            IncidentAction::Close => status(IncidentStatus::Closed)?,
            IncidentAction::Reopen => {
                if state.status < IncidentStatus::Resolved {
                    return Err(IncidentError::NotAllowed {
                        current: state.status.as_str(),
                        wanted: "reopened",
                    });
                }
                Entry::Status {
                    round: state.round + 1,
                    status: IncidentStatus::Open,
                }
            }
            IncidentAction::Assign(to) => Entry::Assign { to },
            IncidentAction::SetSeverity(severity) => Entry::Severity { severity },
            IncidentAction::AddNote(text) => Entry::Note { text },
            IncidentAction::Attach(attachment) => Entry::Attach { attachment },
        };
        self.append(Stamped {
            by,
            at,
            wall_ms,
            entry,
        })
    }

    fn append(&mut self, entry: Stamped) -> Result<LocalChange, IncidentError> {
        entry.validate().map_err(LogError::from)?;
        self.doc
            .put(ROOT, Uuid::now_v7().to_string(), entry.encode()?)?;
        Ok(crate::shiftlog::commit(&mut self.doc)?)
    }

    /// Whether the replica holds no entry yet (a server's copy of an incident it never saw).
    pub fn is_empty(&self) -> bool {
        self.doc.map_range(ROOT, ..).next().is_none()
    }

    /// Whether the replica holds an entry under `key`.
    pub(crate) fn has_key(&self, key: &str) -> bool {
        self.doc.get(ROOT, key).ok().flatten().is_some()
    }

    pub(crate) fn has_change(&mut self, hash: &ChangeHash) -> bool {
        self.doc.get_change_meta_by_hash(hash).is_some()
    }

    pub(crate) fn apply(
        &mut self,
        changes: Vec<automerge::Change>,
    ) -> Result<(), automerge::AutomergeError> {
        self.doc.apply_changes(changes)
    }

    /// Of `hashes`, those this replica holds.
    pub fn known(&mut self, hashes: &[ChangeHash]) -> Vec<ChangeHash> {
        crate::shiftlog::known(&mut self.doc, hashes)
    }

    /// The changes not covered by `heads`, as an automerge bundle (empty if none): what a device
    /// pushes of an incident.
    pub fn bundle_since(&mut self, heads: &[ChangeHash]) -> Result<Vec<u8>, LogError> {
        let heads = self.known(heads);
        let pending: Vec<ChangeHash> = self
            .doc
            .get_changes(&heads)
            .iter()
            .map(|c| c.hash())
            .collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.doc.bundle(pending)?.bytes().to_vec())
    }

    /// Merges changes received from elsewhere (bytes of changes, a save, or a bundle).
    pub fn merge(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        self.doc.load_incremental(bytes)?;
        Ok(())
    }

    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The changes `other_heads` does not cover, as raw change bytes (heads this replica does
    /// not know are ignored).
    pub fn changes_since(&mut self, other_heads: &[ChangeHash]) -> Vec<u8> {
        let heads = self.known(other_heads);
        self.doc.save_after(&heads)
    }

    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard_party(device: DeviceId) -> Party {
        Party::Guard {
            device,
            guard: GuardId::new("guard-1").unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn operator() -> Party {
        Party::Operator {
            user: "op-anna".into(),
        }
    }

    fn at(ms: u64) -> Hlc {
        Hlc {
            wall_ms: ms,
            counter: 0,
        }
    }

    fn report(device: DeviceId) -> Stamped {
        Stamped {
            by: guard_party(device),
            at: at(1_000),
            wall_ms: 1_000,
            entry: Entry::Reported {
                site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
                category: IncidentCategory::Fire,
                severity: Severity::High,
                description: "smoke from plant room 2".into(),
                location: None,
            },
        }
    }

    /// A phone and the control room each hold a replica, edit offline, then exchange changes.
    fn two_replicas() -> Result<(IncidentDoc, IncidentDoc, DeviceId), IncidentError> {
        let device = DeviceId::generate();
        let id = IncidentId::generate();
        let (mut phone, _) = IncidentDoc::create(id, device.actor_id(), report(device))?;
        let room = IncidentDoc::load(id, &phone.save(), automerge::ActorId::random())?;
        Ok((phone, room, device))
    }

    fn exchange(a: &mut IncidentDoc, b: &mut IncidentDoc) -> Result<(), LogError> {
        let (ha, hb) = (a.heads(), b.heads());
        let to_b = a.changes_since(&hb);
        let to_a = b.changes_since(&ha);
        b.merge(&to_b)?;
        a.merge(&to_a)?;
        Ok(())
    }

    #[test]
    fn concurrent_offline_edits_converge_to_the_decided_rules() -> Result<(), IncidentError> {
        let (mut phone, mut room, device) = two_replicas()?;
        // Offline on the phone: a note, severity raised to critical, resolved.
        phone.act(
            IncidentAction::AddNote("fire brigade on site".into()),
            guard_party(device),
            at(2_000),
            2_000,
        )?;
        phone.act(
            IncidentAction::SetSeverity(Severity::Critical),
            guard_party(device),
            at(2_100),
            2_100,
        )?;
        // Meanwhile in the control room: acknowledged, assigned, a note, severity set to medium
        // earlier than the phone's change.
        room.act(IncidentAction::Acknowledge, operator(), at(1_500), 1_500)?;
        room.act(
            IncidentAction::Assign(Some("guard-4".into())),
            operator(),
            at(1_600),
            1_600,
        )?;
        room.act(
            IncidentAction::AddNote("calling estates".into()),
            operator(),
            at(1_700),
            1_700,
        )?;
        room.act(
            IncidentAction::SetSeverity(Severity::Medium),
            operator(),
            at(1_800),
            1_800,
        )?;
        phone.act(
            IncidentAction::Resolve,
            guard_party(device),
            at(2_200),
            2_200,
        )?;

        exchange(&mut phone, &mut room)?;
        let (a, b) = (phone.state()?, room.state()?);
        assert_eq!(a, b, "replicas converge");
        assert_eq!(
            a.status,
            IncidentStatus::Resolved,
            "the lattice keeps the furthest status"
        );
        assert_eq!(
            a.severity,
            Some(Severity::Critical),
            "the latest severity by clock wins"
        );
        assert_eq!(a.assignee.as_deref(), Some("guard-4"));
        let notes: Vec<&str> = a.notes.iter().map(|n| n.text.as_str()).collect();
        assert_eq!(
            notes,
            ["calling estates", "fire brigade on site"],
            "both notes, in clock order"
        );
        Ok(())
    }

    /// (who, wall time, what in words) of each history entry.
    fn history(s: &IncidentState) -> Vec<(String, i64, String)> {
        s.history
            .iter()
            .map(|h| {
                let who = match &h.by {
                    Party::Guard { guard, .. } => guard.to_string(),
                    Party::Operator { user } => user.clone(),
                };
                (who, h.wall_ms, h.what())
            })
            .collect()
    }

    #[test]
    fn every_action_keeps_who_and_when_in_clock_order() -> Result<(), IncidentError> {
        let (mut phone, mut room, device) = two_replicas()?;
        let photo = Attachment {
            sha256: [7; 32],
            media_type: "image/jpeg".into(),
            size: 2_048,
            name: Some("door.jpg".into()),
        };
        phone.act(
            IncidentAction::Attach(photo),
            guard_party(device),
            at(1_200),
            1_200,
        )?;
        phone.act(
            IncidentAction::SetSeverity(Severity::Critical),
            guard_party(device),
            at(2_100),
            2_100,
        )?;
        room.act(IncidentAction::Acknowledge, operator(), at(1_500), 1_500)?;
        room.act(
            IncidentAction::Assign(Some("guard-4".into())),
            operator(),
            at(1_600),
            1_600,
        )?;
        room.act(IncidentAction::Dispatch, operator(), at(1_700), 1_700)?;
        room.act(IncidentAction::Assign(None), operator(), at(1_800), 1_800)?;
        room.act(
            IncidentAction::AddNote("estates called".into()),
            operator(),
            at(1_900),
            1_900,
        )?;
        room.act(IncidentAction::Resolve, operator(), at(2_000), 2_000)?;
        exchange(&mut phone, &mut room)?;
        let s = room.state()?;
        assert_eq!(s, phone.state()?, "replicas agree on the history too");
        let expected: Vec<(String, i64, String)> = [
            ("guard-1", 1_000, "reported (fire, high)"),
            (
                "guard-1",
                1_200,
                "attached door.jpg (image/jpeg, 2048 bytes)",
            ),
            ("op-anna", 1_500, "acknowledged"),
            ("op-anna", 1_600, "assigned to guard-4"),
            ("op-anna", 1_700, "dispatched"),
            ("op-anna", 1_800, "unassigned"),
            ("op-anna", 1_900, "note: estates called"),
            ("op-anna", 2_000, "resolved"),
            ("guard-1", 2_100, "severity critical"),
        ]
        .iter()
        .map(|(w, t, x)| (w.to_string(), *t, x.to_string()))
        .collect();
        assert_eq!(history(&s), expected);
        assert!(s.history.iter().all(|h| h.took_effect));
        Ok(())
    }

    #[test]
    fn a_status_that_lost_stays_in_the_history_without_effect() -> Result<(), IncidentError> {
        let (mut phone, mut room, device) = two_replicas()?;
        room.act(IncidentAction::Resolve, operator(), at(2_000), 2_000)?;
        exchange(&mut phone, &mut room)?;
        // Offline on the phone: reopened; meanwhile the room closes the old round, later by
        // the clock, and the phone's guard acknowledges the new round.
        phone.act(
            IncidentAction::Reopen,
            guard_party(device),
            at(2_500),
            2_500,
        )?;
        room.act(IncidentAction::Close, operator(), at(3_000), 3_000)?;
        phone.act(
            IncidentAction::Acknowledge,
            guard_party(device),
            at(2_600),
            2_600,
        )?;
        // Two copies of one photo: the second adds nothing.
        let photo = Attachment {
            sha256: [1; 32],
            media_type: "image/png".into(),
            size: 10,
            name: None,
        };
        phone.act(
            IncidentAction::Attach(photo.clone()),
            guard_party(device),
            at(2_700),
            2_700,
        )?;
        room.act(IncidentAction::Attach(photo), operator(), at(3_100), 3_100)?;
        exchange(&mut phone, &mut room)?;
        let s = room.state()?;
        assert_eq!(s, phone.state()?);
        assert_eq!((s.round, s.status), (1, IncidentStatus::Acknowledged));
        let whats: Vec<(String, bool)> = s
            .history
            .iter()
            .map(|h| (h.what(), h.took_effect))
            .collect();
        assert_eq!(
            whats,
            [
                ("reported (fire, high)".to_string(), true),
                ("resolved".into(), true),
                ("reopened (round 1)".into(), true),
                ("acknowledged (round 1)".into(), true),
                ("attached a file (image/png, 10 bytes)".into(), true),
                ("closed (no effect)".into(), false),
                (
                    "attached a file (image/png, 10 bytes) (no effect)".into(),
                    false
                ),
            ]
        );
        Ok(())
    }

    #[test]
    fn the_api_json_lists_the_history_with_its_fields() -> Result<(), Box<dyn std::error::Error>> {
        let (_, mut room, _) = two_replicas()?;
        room.act(IncidentAction::Acknowledge, operator(), at(1_500), 1_500)?;
        room.act(IncidentAction::Assign(None), operator(), at(1_600), 1_600)?;
        let state = room.state()?;
        let json = serde_json::to_value(crate::incident_view::IncidentView::new(&state, 9))?;
        let history = json["history"].as_array().ok_or("no history")?;
        assert_eq!(history.len(), 3);
        assert_eq!(history[0]["action"], "reported");
        assert_eq!(history[0]["by"]["kind"], "guard");
        assert_eq!(history[0]["severity"], "high");
        assert_eq!(
            history[1],
            serde_json::json!({
                "id": state.history[1].id,
                "by": {"kind": "operator", "user": "op-anna"},
                "at": "1970-01-01T00:00:01.500Z",
                "action": "status",
                "round": 0,
                "status": "acknowledged",
                "took_effect": true,
                "what": "acknowledged",
            })
        );
        assert_eq!(history[2]["action"], "assigned");
        assert_eq!(history[2]["to"], serde_json::Value::Null);
        assert_eq!(json["updated_at"], "1970-01-01T00:00:00.009Z");
        let phone = serde_json::to_value(crate::incident_view::IncidentView::without_update_time(
            &state,
        ))?;
        assert!(phone.get("updated_at").is_none());
        Ok(())
    }

    #[test]
    fn a_reopen_wins_over_a_concurrent_close_of_the_same_round() -> Result<(), IncidentError> {
        let (mut phone, mut room, device) = two_replicas()?;
        room.act(IncidentAction::Resolve, operator(), at(2_000), 2_000)?;
        exchange(&mut phone, &mut room)?;
        room.act(IncidentAction::Close, operator(), at(3_000), 3_000)?;
        phone.act(
            IncidentAction::Reopen,
            guard_party(device),
            at(2_500),
            2_500,
        )?;
        exchange(&mut phone, &mut room)?;
        let s = room.state()?;
        assert_eq!(s, phone.state()?);
        assert_eq!((s.round, s.status), (1, IncidentStatus::Open));
        // The new round is worked like the first.
        room.act(IncidentAction::Acknowledge, operator(), at(4_000), 4_000)?;
        assert_eq!(room.state()?.status, IncidentStatus::Acknowledged);
        Ok(())
    }

    #[test]
    fn actions_out_of_order_are_refused_and_change_nothing() -> Result<(), IncidentError> {
        let (_, mut room, _) = two_replicas()?;
        room.act(IncidentAction::Dispatch, operator(), at(2_000), 2_000)?;
        let before = room.heads();
        assert!(matches!(
            room.act(IncidentAction::Acknowledge, operator(), at(2_100), 2_100),
            Err(IncidentError::NotAllowed { .. })
        ));
        assert!(matches!(
            room.act(IncidentAction::Reopen, operator(), at(2_100), 2_100),
            Err(IncidentError::NotAllowed { .. })
        ));
        assert!(
            room.act(
                IncidentAction::AddNote("  ".into()),
                operator(),
                at(2_100),
                2_100
            )
            .is_err()
        );
        assert_eq!(room.heads(), before);
        Ok(())
    }

    #[test]
    fn attachments_are_a_set_by_content_hash() -> Result<(), IncidentError> {
        let (mut phone, mut room, device) = two_replicas()?;
        let photo = Attachment {
            sha256: [9; 32],
            media_type: "image/jpeg".into(),
            size: 123_456,
            name: Some("bay14.jpg".into()),
        };
        phone.act(
            IncidentAction::Attach(photo.clone()),
            guard_party(device),
            at(2_000),
            2_000,
        )?;
        room.act(
            IncidentAction::Attach(photo.clone()),
            operator(),
            at(2_001),
            2_001,
        )?;
        exchange(&mut phone, &mut room)?;
        assert_eq!(room.state()?.attachments, vec![photo]);
        Ok(())
    }

    #[test]
    fn the_fold_ignores_entry_order() {
        let device = DeviceId::generate();
        let entries = [
            ("a".to_owned(), report(device)),
            (
                "b".to_owned(),
                Stamped {
                    by: operator(),
                    at: at(5),
                    wall_ms: 5,
                    entry: Entry::Status {
                        round: 0,
                        status: IncidentStatus::Closed,
                    },
                },
            ),
            (
                "c".to_owned(),
                Stamped {
                    by: operator(),
                    at: at(9),
                    wall_ms: 9,
                    entry: Entry::Status {
                        round: 1,
                        status: IncidentStatus::Open,
                    },
                },
            ),
            (
                "d".to_owned(),
                Stamped {
                    by: operator(),
                    at: at(7),
                    wall_ms: 7,
                    entry: Entry::Note { text: "x".into() },
                },
            ),
        ];
        let id = IncidentId::generate();
        let forward = IncidentState::fold(id, entries.iter().map(|(k, e)| (k.as_str(), e)));
        let backward = IncidentState::fold(id, entries.iter().rev().map(|(k, e)| (k.as_str(), e)));
        assert_eq!(forward, backward);
        assert_eq!((forward.round, forward.status), (1, IncidentStatus::Open));
    }

    #[test]
    fn a_device_putting_an_incident_entry_again_is_refused()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::merge::{ingest_incident, plan_incident_push};
        use crate::protocol::RejectCode;
        let site = SiteId::new("site-1")?;
        let device = DeviceId::generate();
        let id = IncidentId::generate();
        let (mut phone, _) = IncidentDoc::create(id, device.actor_id(), report(device))?;
        phone.act(
            IncidentAction::AddNote("door forced".into()),
            guard_party(device),
            at(1_100),
            1_100,
        )?;
        let mut server = IncidentDoc::load(id, &[], automerge::ActorId::random())?;
        let push = plan_incident_push(&mut phone, &[])?;
        ingest_incident(&mut server, &site, device, &push.changes).map_err(|r| r.to_string())?;
        let synced = server.heads();

        // A change after the note that puts the note's key again, naming no predecessor:
        // automerge would show it instead of the note.
        let note = phone.doc.get_last_local_change().ok_or("no local change")?;
        let mut forged = note.decode();
        forged.seq += 1;
        forged.start_op = std::num::NonZeroU64::new(forged.start_op.get() + 1).ok_or("overflow")?;
        forged.deps = vec![note.hash()];
        forged.hash = None;
        let forged = automerge::Change::from(forged);
        phone.doc.apply_changes([forged])?;
        let push = plan_incident_push(&mut phone, &synced)?;
        let refused = ingest_incident(&mut server, &site, device, &push.changes);
        assert!(
            matches!(&refused, Err(r) if r.code == RejectCode::ImmutableEvent),
            "{refused:?}"
        );
        Ok(())
    }

    #[test]
    fn the_server_takes_a_devices_incident_pushes_and_refuses_forged_ones()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::merge::{ingest_incident, plan_incident_push};
        use crate::protocol::RejectCode;
        let site = SiteId::new("site-1")?;
        let device = DeviceId::generate();
        let id = IncidentId::generate();
        let (mut phone, _) = IncidentDoc::create(id, device.actor_id(), report(device))?;
        phone.act(
            IncidentAction::AddNote("door forced".into()),
            guard_party(device),
            at(1_100),
            1_100,
        )?;
        // The server's copy starts empty; a push without the report is refused.
        let mut server = IncidentDoc::load(id, &[], automerge::ActorId::random())?;
        let push = plan_incident_push(&mut phone, &[])?;
        let ingested = ingest_incident(&mut server, &site, device, &push.changes)
            .map_err(|r| r.to_string())?;
        assert_eq!(ingested.new_entries, 2);
        assert!(!ingested.missing_deps);
        assert_eq!(server.state()?, phone.state()?);
        // The same push again adds nothing.
        let again = ingest_incident(&mut server, &site, device, &push.changes)
            .map_err(|r| r.to_string())?;
        assert_eq!(again.new_entries, 0);

        // The control room acts while the phone adds a note offline; both survive.
        server.act(IncidentAction::Acknowledge, operator(), at(1_200), 1_200)?;
        let synced = server.heads();
        let down = server.changes_since(&phone.heads());
        phone.merge(&down)?;
        phone.act(
            IncidentAction::AddNote("police called".into()),
            guard_party(device),
            at(1_300),
            1_300,
        )?;
        server.act(
            IncidentAction::AddNote("sending a second guard".into()),
            operator(),
            at(1_310),
            1_310,
        )?;
        let push = plan_incident_push(&mut phone, &synced)?;
        let ingested = ingest_incident(&mut server, &site, device, &push.changes)
            .map_err(|r| r.to_string())?;
        assert_eq!(ingested.new_entries, 1);
        let phone_heads = phone.heads();
        phone.merge(&server.changes_since(&phone_heads))?;
        let state = server.state()?;
        assert_eq!(state, phone.state()?);
        assert_eq!(state.status, IncidentStatus::Acknowledged);
        assert_eq!(state.notes.len(), 3);

        // Another device may not push changes made by this device's actor, nor write as an
        // operator, nor report for another site.
        let other = DeviceId::generate();
        let forged = plan_incident_push(&mut phone, &[])?;
        let mut fresh = IncidentDoc::load(id, &[], automerge::ActorId::random())?;
        let refused = ingest_incident(&mut fresh, &site, other, &forged.changes);
        assert!(matches!(refused, Err(r) if r.code == RejectCode::ForeignActor));
        assert!(fresh.is_empty());
        let (mut posing, _) = IncidentDoc::create(id, other.actor_id(), report(device))?;
        let push = plan_incident_push(&mut posing, &[])?;
        let refused = ingest_incident(&mut fresh, &site, other, &push.changes);
        assert!(matches!(refused, Err(r) if r.code == RejectCode::WrongAuthor));
        let refused = ingest_incident(&mut fresh, &SiteId::new("site-2")?, device, &{
            let (mut d, _) = IncidentDoc::create(id, device.actor_id(), report(device))?;
            plan_incident_push(&mut d, &[])?.changes
        });
        assert!(matches!(refused, Err(r) if r.code == RejectCode::WrongAuthor));
        assert!(fresh.is_empty());
        Ok(())
    }
}
