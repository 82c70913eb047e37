//! The backend-neutral part of incidents: loading a stored incident document, merging a
//! device's push into it with the core's rules, applying an operator's action, and the
//! projection (columns and state JSON) a backend stores beside the document.
//!
//! Incidents are low volume, so a backend does the whole read-modify-write of one incident
//! inside its write transaction (no optimistic merge as for shift logs): a device's push and an
//! operator's action on the same incident are serialised and neither loses the other's entries.

use std::sync::{Mutex, PoisonError};

use automerge::{ActorId, ChangeHash};
use patrol_core::incident::{IncidentAction, IncidentDoc, IncidentError, Party};
pub use patrol_core::incident_view::IncidentView;
use patrol_core::merge::{Rejection, ingest_incident, parse_bundle};
use patrol_core::protocol::{IncidentUpdate, to_wire};
use patrol_core::{DeviceId, Hlc, IncidentId, LogError, SiteId};
use sha2::{Digest, Sha256};

use super::{IncidentPush, StoreError};

fn derived_actor(label: &str) -> ActorId {
    let digest = Sha256::digest(label.as_bytes());
    ActorId::from(&digest[..16])
}

/// The actor the server loads incident documents with. It never writes: operators' changes are
/// made with their own actors ([`operator_actor`]).
/// An incident's stored heads, or which document is damaged (both backends keep them as a blob).
pub fn stored_heads(
    site: &SiteId,
    incident: IncidentId,
    blob: &[u8],
) -> Result<Vec<ChangeHash>, StoreError> {
    super::merge::heads_from_blob(blob).map_err(|reason| StoreError::CorruptDocument {
        site: site.clone(),
        doc: format!("incident {incident}"),
        reason,
    })
}

pub fn server_actor(site: &SiteId) -> ActorId {
    derived_actor(&format!("server:{site}"))
}

/// The automerge actor of an operator on a site: the first 16 bytes of
/// SHA-256(`"operator:" site "\n" user`). Deterministic, so every action of one operator is one
/// actor's history, on any server instance; the newline cannot occur in a site id, so no two
/// (site, user) pairs share an actor.
pub fn operator_actor(site: &SiteId, user: &str) -> ActorId {
    derived_actor(&format!("operator:{site}\n{user}"))
}

/// The server's hybrid logical clock, which stamps operators' entries.
#[derive(Debug, Default)]
pub struct ServerClock {
    last: Mutex<Hlc>,
}

impl ServerClock {
    /// A stamp at wall time `now_ms`, after every stamp this clock issued and after `seen` (the
    /// latest entry of the document acted on), so that an operator's change is ordered after
    /// everything the operator saw, even when a phone's clock runs ahead. `seen` is not kept:
    /// a phone whose clock is far ahead skews only the documents it wrote to, not this clock.
    pub fn stamp(&self, seen: Hlc, now_ms: i64) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        *last = last.tick(u64::try_from(now_ms).unwrap_or(0));
        let after_seen = Hlc {
            wall_ms: seen.wall_ms,
            counter: seen.counter.saturating_add(1),
        };
        (*last).max(after_seen)
    }
}

fn corrupt(site: &SiteId, incident: IncidentId, reason: impl ToString) -> StoreError {
    StoreError::CorruptDocument {
        site: site.clone(),
        doc: format!("incident {incident}"),
        reason: reason.to_string(),
    }
}

/// Loads a stored incident document (`bytes` empty: one the server does not have yet).
pub fn load(
    site: &SiteId,
    incident: IncidentId,
    bytes: &[u8],
    actor: ActorId,
) -> Result<IncidentDoc, StoreError> {
    IncidentDoc::load(incident, bytes, actor).map_err(|e| corrupt(site, incident, e))
}

/// Heads in the one order they are stored and compared in.
pub fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort_unstable();
    heads
}

/// Whether a push holds nothing new and the device already has exactly the server's heads: the
/// answer is then known without loading the document.
pub fn up_to_date(push: &IncidentPush, stored_heads: &[ChangeHash]) -> bool {
    push.changes.is_empty() && sorted(push.have.clone()) == stored_heads
}

/// The result of merging a device's incident push.
#[derive(Debug)]
pub enum PushMerge {
    /// The core's rules refused it; the document is untouched.
    Rejected(Rejection),
    Accepted {
        /// New changes were applied: store the document, and the device takes part in it.
        changed: bool,
        /// The document's heads after the merge (sorted).
        heads: Vec<ChangeHash>,
        /// The device should send everything it has: some pushed changes build on changes
        /// the server lacks, or its `have` names changes the server does not hold.
        missing_deps: bool,
        /// The changes the device lacks (raw changes, concatenated).
        update: Vec<u8>,
    },
}

/// Merges `push` from `device` into `doc` (the server's copy, empty if it has none) with
/// `patrol_core::merge::ingest_incident`.
pub fn merge_push(
    doc: &mut IncidentDoc,
    site: &SiteId,
    device: DeviceId,
    push: &IncidentPush,
) -> PushMerge {
    let before = sorted(doc.heads());
    let ingested = match ingest_incident(doc, site, device, &push.changes) {
        Ok(ingested) => ingested,
        Err(rejection) => return PushMerge::Rejected(rejection),
    };
    let heads = sorted(doc.heads());
    let have_unknown = doc.known(&push.have).len() != push.have.len();
    // The device holds everything under `have` and what it pushed: send only the rest, not
    // its own changes back. The bundle parsed in the ingest, so it parses here.
    let mut device_has = push.have.clone();
    if let Ok(changes) = parse_bundle(&push.changes) {
        device_has.extend(changes.iter().map(|c| c.hash()));
    }
    PushMerge::Accepted {
        changed: heads != before,
        update: doc.changes_since(&device_has),
        heads,
        missing_deps: ingested.missing_deps || have_unknown,
    }
}

/// Applies an operator's action to `doc` (loaded with [`operator_actor`]), stamped by `clock`
/// after every entry the document holds.
pub fn act(
    doc: &mut IncidentDoc,
    site: &SiteId,
    user: &str,
    action: IncidentAction,
    clock: &ServerClock,
    at_ms: i64,
) -> Result<(), StoreError> {
    let incident = doc.id();
    let seen = doc
        .entries()
        .map_err(|e| corrupt(site, incident, e))?
        .iter()
        .map(|(_, e)| e.at)
        .max()
        .unwrap_or_default();
    let at = clock.stamp(seen, at_ms);
    let by = Party::Operator {
        user: user.to_owned(),
    };
    match doc.act(action, by, at, at_ms) {
        Ok(_) => Ok(()),
        Err(e @ IncidentError::NotAllowed { .. }) => Err(StoreError::ActionRefused(e.to_string())),
        Err(IncidentError::Log(LogError::Invalid(e))) => {
            Err(StoreError::InvalidAction(e.to_string()))
        }
        Err(e) => Err(corrupt(site, incident, e)),
    }
}

/// The whole of a stored incident, for a device that takes part in it and did not push it.
pub fn whole(
    site: &SiteId,
    incident: IncidentId,
    bytes: &[u8],
    actor: ActorId,
) -> Result<IncidentUpdate, StoreError> {
    let mut doc = load(site, incident, bytes, actor)?;
    Ok(IncidentUpdate {
        incident,
        heads: to_wire(&sorted(doc.heads())),
        changes: doc.changes_since(&[]),
    })
}

/// Applies `user`'s action to the stored incident `bytes` (loaded with [`operator_actor`], see
/// [`act`]) and returns the row to store in its place.
pub fn apply_action(
    site: &SiteId,
    incident: IncidentId,
    bytes: &[u8],
    user: &str,
    action: IncidentAction,
    clock: &ServerClock,
    at_ms: i64,
) -> Result<IncidentRow, StoreError> {
    let mut doc = load(site, incident, bytes, operator_actor(site, user))?;
    act(&mut doc, site, user, action, clock, at_ms)?;
    row(&mut doc, site, at_ms)
}

/// The shape of the state JSON ([`IncidentView`]) a stored row's `state` holds, kept in its
/// `state_version` column. Raise it whenever the view changes: at start each backend recomputes
/// the rows below it from their documents ([`refreshed_row`]), so an incident stored long ago
/// is served with the same fields as one stored today. 0: before `history` (issue 18); 1: with
/// it.
pub const STATE_VERSION: i64 = 1;

/// How many stale rows a backend refreshes in one transaction at start.
pub const REFRESH_BATCH: i64 = 100;

/// The row of a stored incident recomputed from its document `bytes`, with its stored
/// `updated_at_ms` kept (its last write is as it was): the same row a write at that time
/// stores today. A backend writes its projection columns and `state`; the document and heads
/// are as stored.
pub fn refreshed_row(
    site: &SiteId,
    incident: IncidentId,
    bytes: &[u8],
    updated_at_ms: i64,
) -> Result<IncidentRow, StoreError> {
    let mut doc = load(site, incident, bytes, server_actor(site))?;
    row(&mut doc, site, updated_at_ms)
}

/// What a backend stores for an incident: the document and its projection.
#[derive(Debug)]
pub struct IncidentRow {
    /// The document as one automerge save.
    pub doc: Vec<u8>,
    /// Sorted heads, as [`patrol_core::codec::heads_to_blob`] stores them.
    pub heads: Vec<u8>,
    pub status: &'static str,
    pub round: u32,
    pub severity: Option<String>,
    pub category: Option<String>,
    pub assignee: Option<String>,
    /// Device wall time of the report.
    pub reported_at_ms: Option<i64>,
    /// The state as the control-room API serves it ([`IncidentView`]).
    pub state: String,
}

/// The row to store for `doc`, written at server time `updated_at_ms`.
pub fn row(
    doc: &mut IncidentDoc,
    site: &SiteId,
    updated_at_ms: i64,
) -> Result<IncidentRow, StoreError> {
    let incident = doc.id();
    let state = doc.state().map_err(|e| corrupt(site, incident, e))?;
    let json = serde_json::to_string(&IncidentView::new(&state, updated_at_ms))
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(IncidentRow {
        heads: patrol_core::codec::heads_to_blob(&sorted(doc.heads())),
        doc: doc.save(),
        status: state.status.as_str(),
        round: state.round,
        severity: state.severity.map(|s| s.to_string()),
        category: state.category.map(|c| c.to_string()),
        assignee: state.assignee.clone(),
        reported_at_ms: state.reported_at_ms,
        state: json,
    })
}

/// A stored incident as a server before `history` stored it, for the migration tests of both
/// backends.
#[cfg(test)]
pub(crate) mod testing {
    use patrol_core::incident::{Entry, IncidentAction, IncidentDoc, Party, Stamped};
    use patrol_core::{DeviceId, GuardId, Hlc, IncidentCategory, IncidentId, Severity, SiteId};

    use super::{IncidentRow, row};

    pub struct OldIncident {
        pub id: IncidentId,
        /// The row a server stores for it today.
        pub row: IncidentRow,
        /// Its state JSON as stored before `history` existed.
        pub old_state: String,
        pub updated_at_ms: i64,
    }

    /// A reported, acknowledged and noted incident of `site`.
    pub fn old_incident(site: &SiteId) -> Result<OldIncident, Box<dyn std::error::Error>> {
        let device = DeviceId::generate();
        let id = IncidentId::generate();
        let at = |ms: u64| Hlc {
            wall_ms: ms,
            counter: 0,
        };
        let guard = Party::Guard {
            device,
            guard: GuardId::new("guard-1")?,
        };
        let (mut doc, _) = IncidentDoc::create(
            id,
            device.actor_id(),
            Stamped {
                by: guard.clone(),
                at: at(1_000),
                wall_ms: 1_000,
                entry: Entry::Reported {
                    site: site.clone(),
                    category: IncidentCategory::Theft,
                    severity: Severity::Low,
                    description: "bike taken from rack 3".into(),
                    location: None,
                },
            },
        )?;
        let operator = Party::Operator {
            user: "op-anna".into(),
        };
        doc.act(
            IncidentAction::Acknowledge,
            operator.clone(),
            at(2_000),
            2_000,
        )?;
        doc.act(
            IncidentAction::AddNote("police informed".into()),
            guard,
            at(3_000),
            3_000,
        )?;
        let updated_at_ms = 5_000;
        let row = row(&mut doc, site, updated_at_ms)?;
        let mut old: serde_json::Value = serde_json::from_str(&row.state)?;
        old.as_object_mut()
            .ok_or("state is not an object")?
            .remove("history");
        Ok(OldIncident {
            id,
            row,
            old_state: old.to_string(),
            updated_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_clock_stamps_after_what_was_seen_without_keeping_it() {
        let clock = ServerClock::default();
        let a = clock.stamp(Hlc::default(), 1_000);
        let b = clock.stamp(Hlc::default(), 1_000);
        assert!(b > a, "monotonic within a millisecond");
        let ahead = Hlc {
            wall_ms: 9_000_000,
            counter: 4,
        };
        let c = clock.stamp(ahead, 1_001);
        assert!(c > ahead && c > b);
        // A phone's clock far ahead does not drag the stamps of other documents with it.
        let d = clock.stamp(Hlc::default(), 1_002);
        assert_eq!(d.wall_ms, 1_002);
    }

    #[test]
    fn operator_actors_are_deterministic_and_distinct() -> Result<(), Box<dyn std::error::Error>> {
        let site = SiteId::new("site-1")?;
        assert_eq!(operator_actor(&site, "anna"), operator_actor(&site, "anna"));
        assert_ne!(operator_actor(&site, "anna"), operator_actor(&site, "bob"));
        assert_ne!(
            operator_actor(&site, "anna"),
            operator_actor(&SiteId::new("site-2")?, "anna")
        );
        assert_eq!(operator_actor(&site, "anna").to_bytes().len(), 16);
        Ok(())
    }
}
