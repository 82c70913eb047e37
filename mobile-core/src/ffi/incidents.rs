//! Incidents: reporting one (with references to its files), working it with the control room,
//! and reading what the phone holds.

use patrol_core::incident::{Attachment, Entry, HistoryEntry, IncidentAction, Party};
use patrol_core::{
    EventBody, IncidentCategory, IncidentId, IncidentReport, Severity, ValidationError,
};

use super::device::{PatrolDevice, lock};
use super::error::FfiResult;
use super::records::{FfiLocation, parse_uuid_id};
use crate::error::Error;
use crate::store::{LocalIncident, RecordOptions};

/// Incident categories a site reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiIncidentCategory {
    Theft,
    Shoplifting,
    Fraud,
    Robbery,
    Fighting,
    Provocation,
    /// Contradictions and disputes.
    Dispute,
    /// Fire or flammable material.
    Fire,
    Explosive,
    Toxic,
    Radioactive,
    Other,
}

impl From<FfiIncidentCategory> for IncidentCategory {
    fn from(c: FfiIncidentCategory) -> Self {
        match c {
            FfiIncidentCategory::Theft => IncidentCategory::Theft,
            FfiIncidentCategory::Shoplifting => IncidentCategory::Shoplifting,
            FfiIncidentCategory::Fraud => IncidentCategory::Fraud,
            FfiIncidentCategory::Robbery => IncidentCategory::Robbery,
            FfiIncidentCategory::Fighting => IncidentCategory::Fighting,
            FfiIncidentCategory::Provocation => IncidentCategory::Provocation,
            FfiIncidentCategory::Dispute => IncidentCategory::Dispute,
            FfiIncidentCategory::Fire => IncidentCategory::Fire,
            FfiIncidentCategory::Explosive => IncidentCategory::Explosive,
            FfiIncidentCategory::Toxic => IncidentCategory::Toxic,
            FfiIncidentCategory::Radioactive => IncidentCategory::Radioactive,
            FfiIncidentCategory::Other => IncidentCategory::Other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiSeverity {
    Low,
    Medium,
    High,
    Critical,
}

impl From<FfiSeverity> for Severity {
    fn from(s: FfiSeverity) -> Self {
        match s {
            FfiSeverity::Low => Severity::Low,
            FfiSeverity::Medium => Severity::Medium,
            FfiSeverity::High => Severity::High,
            FfiSeverity::Critical => Severity::Critical,
        }
    }
}

/// A file attached to an incident. The app keeps the bytes; the incident holds this reference,
/// verifiable by its SHA-256 wherever the file ends up.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiAttachment {
    /// SHA-256 of the file, 64 hex digits.
    pub sha256_hex: String,
    pub media_type: String,
    pub size: u64,
    #[uniffi(default)]
    pub name: Option<String>,
}

impl TryFrom<FfiAttachment> for Attachment {
    type Error = Error;

    fn try_from(a: FfiAttachment) -> Result<Self, Error> {
        let bad = || {
            Error::Invalid(ValidationError::BadId {
                what: "sha256",
                reason: "must be 64 hex digits".into(),
            })
        };
        if a.sha256_hex.len() != 64 {
            return Err(bad());
        }
        let mut sha256 = [0u8; 32];
        for (i, byte) in sha256.iter_mut().enumerate() {
            let pair = a.sha256_hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Attachment {
            sha256,
            media_type: a.media_type,
            size: a.size,
            name: a.name,
        })
    }
}

impl From<&Attachment> for FfiAttachment {
    fn from(a: &Attachment) -> Self {
        FfiAttachment {
            sha256_hex: a.sha256.iter().map(|b| format!("{b:02x}")).collect(),
            media_type: a.media_type.clone(),
            size: a.size,
            name: a.name.clone(),
        }
    }
}

/// What a guard does to an incident.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiIncidentAction {
    AddNote {
        text: String,
    },
    SetSeverity {
        severity: FfiSeverity,
    },
    Attach {
        attachment: FfiAttachment,
    },
    Acknowledge,
    Dispatch,
    Resolve,
    Close,
    Reopen,
    /// Assign to a guard or operator by name; `None` clears the assignment.
    Assign {
        to: Option<String>,
    },
}

impl TryFrom<FfiIncidentAction> for IncidentAction {
    type Error = Error;

    fn try_from(a: FfiIncidentAction) -> Result<Self, Error> {
        Ok(match a {
            FfiIncidentAction::AddNote { text } => IncidentAction::AddNote(text),
            FfiIncidentAction::SetSeverity { severity } => {
                IncidentAction::SetSeverity(severity.into())
            }
            FfiIncidentAction::Attach { attachment } => {
                IncidentAction::Attach(attachment.try_into()?)
            }
            FfiIncidentAction::Acknowledge => IncidentAction::Acknowledge,
            FfiIncidentAction::Dispatch => IncidentAction::Dispatch,
            FfiIncidentAction::Resolve => IncidentAction::Resolve,
            FfiIncidentAction::Close => IncidentAction::Close,
            FfiIncidentAction::Reopen => IncidentAction::Reopen,
            FfiIncidentAction::Assign { to } => IncidentAction::Assign(to),
        })
    }
}

/// A note on an incident.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiIncidentNote {
    /// `guard:<guard id>` or `operator:<name>`.
    pub by: String,
    pub wall_ms: i64,
    pub text: String,
}

fn party_name(p: &Party) -> String {
    match p {
        Party::Guard { guard, .. } => format!("guard:{guard}"),
        Party::Operator { user } => format!("operator:{user}"),
    }
}

/// What one entry of an incident's history did.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiIncidentHistoryAction {
    Reported {
        category: String,
        severity: String,
    },
    /// `status` in reopening `round` (0 before any reopening); a reopen is `open` in a new round.
    Status {
        round: u32,
        status: String,
    },
    Severity {
        severity: String,
    },
    /// `None`: the assignment was cleared.
    Assigned {
        to: Option<String>,
    },
    Note {
        text: String,
    },
    Attachment {
        attachment: FfiAttachment,
    },
}

/// One entry of an incident's history: who did what, when.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiIncidentHistoryEntry {
    /// The entry's id in the incident's document.
    pub id: String,
    /// `guard:<guard id>` or `operator:<name>`.
    pub by: String,
    /// The writer's wall time.
    pub wall_ms: i64,
    pub action: FfiIncidentHistoryAction,
    /// Whether it changed the incident: a status change that lost to a further one (say, the
    /// old round's close after a reopen) or an attachment already attached did not, and is
    /// still listed.
    pub took_effect: bool,
    /// The same in words, e.g. `acknowledged`, `reopened (round 1)`, `assigned to guard-4`.
    pub what: String,
}

impl From<&HistoryEntry> for FfiIncidentHistoryEntry {
    fn from(h: &HistoryEntry) -> Self {
        let action = match &h.entry {
            Entry::Reported {
                category, severity, ..
            } => FfiIncidentHistoryAction::Reported {
                category: category.to_string(),
                severity: severity.to_string(),
            },
            Entry::Status { round, status } => FfiIncidentHistoryAction::Status {
                round: *round,
                status: status.as_str().to_owned(),
            },
            Entry::Severity { severity } => FfiIncidentHistoryAction::Severity {
                severity: severity.to_string(),
            },
            Entry::Assign { to } => FfiIncidentHistoryAction::Assigned { to: to.clone() },
            Entry::Note { text } => FfiIncidentHistoryAction::Note { text: text.clone() },
            Entry::Attach { attachment } => FfiIncidentHistoryAction::Attachment {
                attachment: attachment.into(),
            },
        };
        FfiIncidentHistoryEntry {
            id: h.id.clone(),
            by: party_name(&h.by),
            wall_ms: h.wall_ms,
            action,
            took_effect: h.took_effect,
            what: h.what(),
        }
    }
}

/// An incident as the phone knows it (its own changes and what the last sync brought).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiIncident {
    pub id: String,
    /// `open`, `acknowledged`, `dispatched`, `resolved` or `closed`.
    pub status: String,
    /// Reopenings so far.
    pub round: u32,
    pub category: Option<String>,
    pub severity: Option<String>,
    pub description: Option<String>,
    pub assignee: Option<String>,
    pub reported_by: Option<String>,
    pub reported_ms: Option<i64>,
    pub notes: Vec<FfiIncidentNote>,
    pub attachments: Vec<FfiAttachment>,
    /// Every action on the incident, with who and when, ordered by hybrid logical clock then
    /// entry id (the same order on every phone and in the control room).
    pub history: Vec<FfiIncidentHistoryEntry>,
    /// Holds changes made on this phone the server has not acknowledged.
    pub pending: bool,
    /// Why the server refused this phone's changes, if it did.
    pub rejected: Option<String>,
}

impl From<LocalIncident> for FfiIncident {
    fn from(i: LocalIncident) -> Self {
        let s = i.state;
        FfiIncident {
            id: s.id.to_string(),
            status: s.status.as_str().to_owned(),
            round: s.round,
            category: s.category.map(|c| c.to_string()),
            severity: s.severity.map(|v| v.to_string()),
            description: s.description,
            assignee: s.assignee,
            reported_by: s.reported_by.as_ref().map(party_name),
            reported_ms: s.reported_at_ms,
            notes: s
                .notes
                .iter()
                .map(|n| FfiIncidentNote {
                    by: party_name(&n.by),
                    wall_ms: n.wall_ms,
                    text: n.text.clone(),
                })
                .collect(),
            attachments: s.attachments.iter().map(Into::into).collect(),
            history: s.history.iter().map(Into::into).collect(),
            pending: i.pending,
            rejected: i.rejected,
        }
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// Reports an incident, with references to its photos or recordings (the app keeps the
    /// files); returns the new incident's id (UUID). The incident's document is created with
    /// the event and syncs with the control room, who works it with the guard.
    #[uniffi::method(default(location = None, attachments = []))]
    pub fn report_incident(
        &self,
        category: FfiIncidentCategory,
        severity: FfiSeverity,
        description: String,
        location: Option<FfiLocation>,
        attachments: Vec<FfiAttachment>,
    ) -> FfiResult<String> {
        let attachments = attachments
            .into_iter()
            .map(Attachment::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let incident = IncidentId::generate();
        let report = IncidentReport {
            incident,
            category: category.into(),
            severity: severity.into(),
            description,
            location: location.map(Into::into),
        };
        self.record(|store| {
            let id = store.record(
                EventBody::IncidentReported(report),
                RecordOptions::default(),
            )?;
            Ok((Some(id), ()))
        })?;
        let mut store = lock(&self.store, "store")?;
        for attachment in attachments {
            store.act_on_incident(incident, IncidentAction::Attach(attachment))?;
        }
        Ok(incident.to_string())
    }

    /// Acts on an incident this phone holds, as the guard on duty; returns the incident after.
    /// Edits made here and in the control room at the same time both survive (see
    /// `docs/protocol.md` for each field's rule).
    pub fn update_incident(
        &self,
        incident_id: String,
        action: FfiIncidentAction,
    ) -> FfiResult<FfiIncident> {
        let id = parse_uuid_id::<IncidentId>(&incident_id)?;
        let action = IncidentAction::try_from(action)?;
        let mut store = lock(&self.store, "store")?;
        Ok(store.act_on_incident(id, action)?.into())
    }

    /// Attaches a file's bytes (a photo, a short video or recording, at most 25 MiB) to an
    /// incident, as the guard on duty: the phone keeps them with the reference, durably, and
    /// uploads them after the incident at a sync. Returns the attachment's reference.
    #[uniffi::method(default(name = None))]
    pub fn attach_file(
        &self,
        incident_id: String,
        bytes: Vec<u8>,
        media_type: String,
        name: Option<String>,
    ) -> FfiResult<FfiAttachment> {
        let id = parse_uuid_id::<IncidentId>(&incident_id)?;
        let mut store = lock(&self.store, "store")?;
        let (attachment, _) = store.attach_file(id, &bytes, &media_type, name)?;
        Ok((&attachment).into())
    }

    /// Adds a note to an incident (shorthand for `update_incident` with `AddNote`).
    pub fn add_incident_note(&self, incident_id: String, text: String) -> FfiResult<FfiIncident> {
        self.update_incident(incident_id, FfiIncidentAction::AddNote { text })
    }

    /// Every incident the phone holds: those its guard reported or worked, and every open
    /// incident of the site while a shift was open at a sync (as of the last sync); most
    /// recently changed first.
    pub fn incidents(&self) -> FfiResult<Vec<FfiIncident>> {
        let store = lock(&self.store, "store")?;
        Ok(store.incidents()?.into_iter().map(Into::into).collect())
    }

    pub fn incident(&self, incident_id: String) -> FfiResult<Option<FfiIncident>> {
        let id = parse_uuid_id::<IncidentId>(&incident_id)?;
        let store = lock(&self.store, "store")?;
        Ok(store.incident(id)?.map(Into::into))
    }
}
