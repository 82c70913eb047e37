//! An incident's state as JSON, in the shape the control-room API serves it (docs/protocol.md,
//! "Incident JSON"): written once here so that the server's stored projection, the `patrol`
//! CLI's phone view and the simulation's checks cannot drift apart.

use serde::Serialize;

use crate::event::{IncidentCategory, Location, Severity, format_time_ms};
use crate::ids::SiteId;
use crate::incident::{Attachment, Entry, HistoryEntry, IncidentState, IncidentStatus, Party};

/// Who wrote an entry.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PartyView<'a> {
    Guard { guard: &'a str, device: String },
    Operator { user: &'a str },
}

impl<'a> PartyView<'a> {
    pub fn new(party: &'a Party) -> Self {
        match party {
            Party::Guard { device, guard } => PartyView::Guard {
                guard: guard.as_str(),
                device: device.to_string(),
            },
            Party::Operator { user } => PartyView::Operator { user },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NoteView<'a> {
    pub by: PartyView<'a>,
    /// The writer's wall time.
    pub at: String,
    pub text: &'a str,
}

#[derive(Debug, Serialize)]
pub struct AttachmentView<'a> {
    /// Lower-case hex.
    pub sha256: String,
    pub media_type: &'a str,
    pub size: u64,
    pub name: Option<&'a str>,
}

impl<'a> AttachmentView<'a> {
    pub fn new(a: &'a Attachment) -> Self {
        AttachmentView {
            sha256: hex::encode(a.sha256),
            media_type: &a.media_type,
            size: a.size,
            name: a.name.as_deref(),
        }
    }
}

/// What a history entry did, with its own fields, tagged by `action`.
#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActionView<'a> {
    Reported {
        category: IncidentCategory,
        severity: Severity,
    },
    Status {
        round: u32,
        status: IncidentStatus,
    },
    Severity {
        severity: Severity,
    },
    Assigned {
        /// `null`: the assignment was cleared.
        to: Option<&'a str>,
    },
    Note {
        text: &'a str,
    },
    Attachment {
        #[serde(flatten)]
        attachment: AttachmentView<'a>,
    },
}

impl<'a> ActionView<'a> {
    fn new(entry: &'a Entry) -> Self {
        match entry {
            Entry::Reported {
                category, severity, ..
            } => ActionView::Reported {
                category: *category,
                severity: *severity,
            },
            Entry::Status { round, status } => ActionView::Status {
                round: *round,
                status: *status,
            },
            Entry::Severity { severity } => ActionView::Severity {
                severity: *severity,
            },
            Entry::Assign { to } => ActionView::Assigned { to: to.as_deref() },
            Entry::Note { text } => ActionView::Note { text },
            Entry::Attach { attachment } => ActionView::Attachment {
                attachment: AttachmentView::new(attachment),
            },
        }
    }
}

/// One entry of the history.
#[derive(Debug, Serialize)]
pub struct HistoryView<'a> {
    /// The entry's id in the document.
    pub id: &'a str,
    pub by: PartyView<'a>,
    /// The writer's wall time.
    pub at: String,
    #[serde(flatten)]
    pub action: ActionView<'a>,
    pub took_effect: bool,
    /// The same in words ([`HistoryEntry::what`]).
    pub what: String,
}

impl<'a> HistoryView<'a> {
    pub fn new(h: &'a HistoryEntry) -> Self {
        HistoryView {
            id: &h.id,
            by: PartyView::new(&h.by),
            at: format_time_ms(h.wall_ms),
            action: ActionView::new(&h.entry),
            took_effect: h.took_effect,
            what: h.what(),
        }
    }
}

/// An incident's state as the control-room API serves it.
#[derive(Debug, Serialize)]
pub struct IncidentView<'a> {
    pub id: String,
    pub site: Option<&'a str>,
    pub category: Option<IncidentCategory>,
    pub description: Option<&'a str>,
    pub location: Option<&'a Location>,
    pub reported_by: Option<PartyView<'a>>,
    /// The reporting device's wall time.
    pub reported_at: Option<String>,
    pub round: u32,
    pub status: IncidentStatus,
    pub severity: Option<Severity>,
    pub assignee: Option<&'a str>,
    pub notes: Vec<NoteView<'a>>,
    pub attachments: Vec<AttachmentView<'a>>,
    pub history: Vec<HistoryView<'a>>,
    /// Server time of the last change the server stored (absent where no server stored it: a
    /// phone's own view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl<'a> IncidentView<'a> {
    /// The state as the server stores and serves it, last changed at server time
    /// `updated_at_ms`.
    pub fn new(state: &'a IncidentState, updated_at_ms: i64) -> Self {
        IncidentView {
            updated_at: Some(format_time_ms(updated_at_ms)),
            ..Self::without_update_time(state)
        }
    }

    /// The state without the server's update time, as a phone knows it.
    pub fn without_update_time(state: &'a IncidentState) -> Self {
        IncidentView {
            id: state.id.to_string(),
            site: state.site.as_ref().map(SiteId::as_str),
            category: state.category,
            description: state.description.as_deref(),
            location: state.location.as_ref(),
            reported_by: state.reported_by.as_ref().map(PartyView::new),
            reported_at: state.reported_at_ms.map(format_time_ms),
            round: state.round,
            status: state.status,
            severity: state.severity,
            assignee: state.assignee.as_deref(),
            notes: state
                .notes
                .iter()
                .map(|n| NoteView {
                    by: PartyView::new(&n.by),
                    at: format_time_ms(n.wall_ms),
                    text: &n.text,
                })
                .collect(),
            attachments: state.attachments.iter().map(AttachmentView::new).collect(),
            history: state.history.iter().map(HistoryView::new).collect(),
            updated_at: None,
        }
    }
}
