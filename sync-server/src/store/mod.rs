//! Storage of the canonical site record, behind one trait so that backends (embedded SQLite,
//! PostgreSQL) are interchangeable.
//!
//! Layout: the two backends sit side by side with one file per concern, so that they compare
//! file by file: `mod.rs` (the store's set-up and its [`Store`] impl, forwarding), `schema.rs`
//! (opening, migrations), `sync.rs` (the sync write path), `feed.rs` (feed and device-list
//! reads), `auth.rs` (sites, users, devices, enrollment), `collab.rs` (incidents, site
//! configurations, the alarm acks a sync answers) and `alarms.rs` (the alarms view,
//! acknowledgements, escalations and alarm changes) in [`sqlite`] and in [`postgres`]. A backend keeps its SQL and
//! its transactions; the rules both apply are written once, here:
//! - [`merge`]: merging a pushed shift log, the optimistic rounds of a sync request and the
//!   write phase's bookkeeping;
//! - [`incident`] and [`collab`]: the collaboration documents (incident merges and actions, what
//!   a sync answers, configuration versions);
//! - [`access`]: site checks, user scopes, enrollment codes, a device's right to sync;
//! - [`compliance`]: tour compliance kept as logs arrive (each sync's new scans, the periodic
//!   pass that closes and finalises windows, the windows' view);
//! - [`check_ins`]: lone-worker check-in timers of open shifts, and when one is overdue;
//! - [`flagging`]: the flags of a sync's new events, and of the stored scans they concern;
//! - [`webhooks`]: webhook endpoints, the bodies of their deliveries, the retry schedule;
//! - [`blobs`]: attachment blobs, stored once per content, uploaded in chunks that resume, the
//!   whole checked against its hash (files beside the SQLite database; tables in PostgreSQL);
//! - [`rows`]: reading stored values back; [`event_json`]: an event's feed JSON; [`notify`]:
//!   waking a site's feed readers.
//!

//! Contract every backend keeps:
//! - A sync request is applied in one transaction: the chunks, `docs` rows and projected events
//!   of every accepted document and the device's row commit together or not at all, and are
//!   durable once the call returns (the device forgets nothing until the server's heads cover
//!   it). A rejected document changes nothing and does not hold back the others.
//! - The CPU-heavy merge runs outside the write lock, with optimistic concurrency (see
//!   [`merge`]): a concurrent push of the same document is never lost nor applied twice.
//! - Event sequence numbers are per site, gap-free, and become visible in order: a reader that
//!   saw `seq = n` never later finds a new event with a smaller `seq` (the feed relies on it).
//! - An event id gets at most one row per site, whatever is pushed again.
//! - Each new event is stored with its stamp ([`event_json::Stamp`]: corrected time and flags),
//!   computed from the request ([`SyncBatch::delivery`], [`SyncBatch::config`]) and the scans
//!   stored before it ([`flagging`]) when the event is written, in the request's transaction
//!   and its one insert; the feed shows it and filters by it. A new scan that makes a stored
//!   one a cloned tag flags the stored one too, in the same transaction.
//! - Incidents, site configurations and alarm acknowledgements ([`Store::sync_collab`] and the
//!   control-room methods) are low volume and go their own way: every write of an incident is a
//!   read-modify-write of its document inside one write transaction, so concurrent writers (a
//!   device's push, an operator's action) never lose each other's entries. The shared logic is
//!   in [`incident`].
//! - A sync request is applied only for an enrolled, unrevoked device whose `request_seq` is
//!   greater than the last one accepted from it, checked in the request's transaction; the
//!   accepted seq is recorded in that transaction ([`SyncRefusal`] otherwise, nothing applied).
//! - Tokens are stored only as their SHA-256 ([`TokenHash`]); lookups are by that digest. A user
//!   has at most two tokens (the current one, and the one its last rotation replaced, until its
//!   overlap ends); a device at most two credentials (the current one, and a rotated one it has
//!   not used yet).
//! - A user's password is stored only as its argon2id PHC string, a sign-in session only as the
//!   SHA-256 of its token; the rules of both are [`crate::credentials::passwords`] and
//!   [`crate::credentials::sessions`], which the HTTP layer applies. Setting a password deletes
//!   the user's sessions but the one kept, and revoking a user deletes all of them, each in the
//!   same transaction.
//! - [`Store::subscribe`] wakes a site's readers after every commit that added events to it,
//!   whichever process committed them (PostgreSQL: `LISTEN`/`NOTIFY`, see [`postgres`]).
//! - Tour compliance ([`compliance`]) is written in the sync's transaction, from what it
//!   stored, and by [`Store::settle_windows`] under the site's lock (on PostgreSQL the row lock
//!   every writer of the site's events holds): a site's windows and announcements have one
//!   writer at a time, whichever instance.
//! - A webhook delivery ([`webhooks`]) is written in the transaction of its cause (the sync
//!   that stored a panic, the escalation), for each endpoint of the site subscribed to its type,
//!   at most once per endpoint and idempotency key; it is claimed for sending under a lease, so
//!   no two instances send it at once.

pub mod access;
pub mod blobs;
pub mod check_ins;
pub mod collab;
pub mod compliance;
pub mod event_hours;
pub mod event_json;
pub mod flagging;
pub mod incident;
pub mod merge;
pub mod notify;
pub mod postgres;
pub mod rows;
pub mod sqlite;
pub mod webhooks;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use automerge::ChangeHash;
use patrol_core::evidence::{PublicKey, SignedHeads};
use patrol_core::flags::Delivery;
use patrol_core::incident::{IncidentAction, IncidentStatus};
use patrol_core::merge::Owner;
use patrol_core::protocol::{AlarmAck, ConfigUpdate, DocOutcome, IncidentUpdate};
use patrol_core::siteconfig::SiteConfig;
use patrol_core::{DeviceId, EventId, GuardId, IncidentId, ShiftId, SiteId};
use thiserror::Error;

// The users the store keeps are defined with the credentials they hold; the store's methods
// take and return them.
use crate::credentials::passwords::PasswordHashString;
use crate::credentials::sessions::StoredSession;
use crate::credentials::{
    NewUser, StoredDeviceCredentials, StoredUserTokens, TokenHash, User, UserTokenRotation,
};

/// A boxed, sendable future, so that [`Store`] stays object-safe (`Arc<dyn Store>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A site as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub created_at_ms: i64,
}

impl Site {
    /// Longest site name, in bytes.
    pub const MAX_NAME_LEN: usize = 200;

    /// A new site, named `name` or else after its id. The one rule for a site's name, which
    /// the API and the `patrol-server site create` command both apply: 1 to
    /// [`Site::MAX_NAME_LEN`] bytes, not blank, one line without control characters (which
    /// PostgreSQL's text cannot hold, for NUL, and a terminal would obey).
    pub fn new(id: SiteId, name: Option<String>, created_at_ms: i64) -> Result<Site, String> {
        let name = name.unwrap_or_else(|| id.to_string());
        if name.trim().is_empty()
            || name.len() > Self::MAX_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return Err(format!(
                "a site name is 1 to {} bytes, not blank, without control characters",
                Self::MAX_NAME_LEN
            ));
        }
        Ok(Site {
            id,
            name,
            created_at_ms,
        })
    }
}

/// One document of a sync request.
#[derive(Clone, Debug)]
pub struct ShiftLogPush {
    pub shift: ShiftId,
    /// The automerge bundle (or concatenated changes) the device sent.
    pub changes: Vec<u8>,
    /// Events the device counts in this push (for its pending count).
    pub events: u32,
    /// The device's signature over the heads the changes bring the log to.
    pub signature: Option<SignedHeads>,
}

/// One sync request: the documents a device pushed and what it said about itself. The owner of
/// every document is the site and device of the credential the request was authenticated with.
#[derive(Clone, Debug)]
pub struct SyncBatch {
    pub site: SiteId,
    pub device: DeviceId,
    /// The device's number for this request; applied only if greater than the last accepted.
    pub request_seq: u64,
    /// Server receive time of the request, stamped on every new event and on the device row.
    pub received_at_ms: i64,
    /// The device's wall clock when it sent the request.
    pub device_time_ms: i64,
    /// Events the device held undelivered when it sent the request.
    pub pending_events: u64,
    pub pushes: Vec<ShiftLogPush>,
    /// The device's registered key: when set, every push of changes must be signed with it.
    pub public_key: Option<PublicKey>,
    /// The site's configuration when the request arrived, whose rules (thresholds) flag the
    /// request's new events ([`flagging`]); the server's explicit overrides of its rules, if
    /// any, already applied.
    pub config: Arc<SiteConfig>,
}

impl SyncBatch {
    pub fn owner(&self, push: &ShiftLogPush) -> Owner {
        Owner {
            site: self.site.clone(),
            device: self.device,
            shift: push.shift,
        }
    }

    /// The request as the rules that stamp its new events see it: when it arrived, and the
    /// device's clock offset it measured.
    pub fn delivery(&self) -> Delivery {
        Delivery::new(self.received_at_ms, self.device_time_ms)
    }

    /// The device row to record once the documents' outcomes (one per push, in order) are
    /// known: what the device still holds undelivered once the accepted pushes are counted.
    pub fn device_sync(&self, outcomes: &[DocOutcome]) -> DeviceSync {
        let mut pending = self.pending_events;
        for (push, outcome) in self.pushes.iter().zip(outcomes) {
            if let DocOutcome::Accepted {
                missing_deps: false,
                ..
            } = outcome
            {
                pending = pending.saturating_sub(u64::from(push.events));
            }
        }
        DeviceSync {
            site: self.site.clone(),
            device: self.device,
            synced_at_ms: self.received_at_ms,
            pending_events: pending,
            clock_skew_ms: self.delivery().offset_ms,
        }
    }
}

/// What a device told the server about itself in a sync, for the control room's device view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSync {
    pub site: SiteId,
    pub device: DeviceId,
    pub synced_at_ms: i64,
    pub pending_events: u64,
    /// Server time minus the device's clock at the sync ([`patrol_core::clock::clock_offset_ms`]).
    pub clock_skew_ms: i64,
}

/// A device of a site, as the control room sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    pub device: DeviceId,
    pub first_seen_ms: i64,
    /// The server's receive time of its last sync, which reported `pending_events`.
    pub last_sync_at_ms: i64,
    pub pending_events: u64,
    pub clock_skew_ms: i64,
    /// The guard of the device's most recent shift the server holds a log of
    /// ([`device_list_sql`]); `None` before its first shift log arrives.
    pub guard: Option<GuardId>,
    /// That most recent shift; `None` before its first shift log arrives.
    pub latest_shift: Option<LatestShift>,
}

impl DeviceStatus {
    /// The device's open shift: its most recent one, if its end has not arrived.
    pub fn open_shift(&self) -> Option<&LatestShift> {
        self.latest_shift
            .as_ref()
            .filter(|s| s.ended_at_ms.is_none())
    }
}

/// A device's most recent shift, as its log's `docs` row says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestShift {
    pub shift: ShiftId,
    /// Device time of its `shift_started` event; `None` until that arrives.
    pub started_at_ms: Option<i64>,
    /// Device time of its `shift_ended` event; `None` while the shift is open.
    pub ended_at_ms: Option<i64>,
}

/// The device list's query, for both backends, with `{site}` for the site parameter's
/// placeholder: each device with its last sync and the guard, id, start and end of its most
/// recent shift.
///
/// The most recent shift is the device's shift log with the greatest shift id: shift ids are
/// UUIDv7, so that is the shift the phone started last (by its own clock; a phone has one shift
/// open at a time), and their text sorts as their bytes do. The `docs_by_device` index finds it
/// without reading the site's other logs.
pub fn device_list_sql(site_placeholder: &str) -> String {
    format!(
        "SELECT devices.device_id, devices.first_seen, devices.last_sync_at, devices.last_pending,
                devices.clock_skew_ms, latest.guard_id, latest.doc_id, latest.started_at,
                latest.ended_at
         FROM devices LEFT JOIN docs latest
           ON latest.site_id = devices.site_id AND latest.doc_id =
              (SELECT docs.doc_id FROM docs
                WHERE docs.site_id = devices.site_id AND docs.device_id = devices.device_id
                  AND docs.kind = '{kind}'
                ORDER BY docs.doc_id DESC LIMIT 1)
         WHERE devices.site_id = {site_placeholder} ORDER BY devices.device_id",
        kind = merge::SHIFT_LOG_KIND
    )
}

/// A shift as the control room lists it: from its log's `docs` row, which the sync keeps up to
/// date (in the same upsert as the rest of the row), and the signatures kept for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShiftSummary {
    pub shift: ShiftId,
    pub guard: GuardId,
    pub device: DeviceId,
    /// Device time of its `shift_started` event; `None` until that arrives.
    pub started_at_ms: Option<i64>,
    /// Device time of its `shift_ended` event; `None` while the shift is open (or its end has
    /// not been delivered).
    pub ended_at_ms: Option<i64>,
    /// Events of the log in the site's feed.
    pub events: u64,
    /// Server time the last of them was received; `None` before the first.
    pub last_event_at_ms: Option<i64>,
    /// Server time of the last write to the log.
    pub updated_at_ms: i64,
    /// Signatures kept for the log (one per signed push that moved it).
    pub signatures: u64,
    /// The device's clock at its latest signature.
    pub last_signed_at_ms: Option<i64>,
    /// Whether a signature covers the log as stored (its current heads): an export of it
    /// verifies as signed throughout.
    pub signed: bool,
}

/// Which shifts to list, in shift-id order (UUIDv7: the order the phones started them). Every
/// filter optional; all given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShiftQuery {
    pub guard: Option<GuardId>,
    pub device: Option<DeviceId>,
    /// Started (device time) at or after, ms since the epoch.
    pub from_ms: Option<i64>,
    /// Started before.
    pub to_ms: Option<i64>,
    /// `Some(true)`: only shifts whose end has not arrived; `Some(false)`: only ended ones.
    pub open: Option<bool>,
    /// Only shifts after this one (the previous page's last).
    pub after: Option<ShiftId>,
    pub limit: u32,
}

/// A page of shifts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShiftPage {
    pub shifts: Vec<ShiftSummary>,
    /// More shifts match than were returned.
    pub more: bool,
}

/// A value bound to a query [`shift_list_sql`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
}

/// The columns of a shift listing's row, in the order the backends read them into a
/// [`ShiftSummary`]: shift, guard, device, started, ended, events, last event, updated, then
/// the signatures' count, latest signing time and whether one signs the stored heads (each
/// over the signatures' primary key, one log's entries).
pub const SHIFT_COLUMNS: &str = "docs.doc_id, docs.guard_id, docs.device_id, docs.started_at,
    docs.ended_at, docs.event_count, docs.last_event_at, docs.updated_at,
    (SELECT COUNT(*) FROM shift_log_signatures s
      WHERE s.site_id = docs.site_id AND s.doc_id = docs.doc_id),
    (SELECT MAX(s.signed_at) FROM shift_log_signatures s
      WHERE s.site_id = docs.site_id AND s.doc_id = docs.doc_id),
    EXISTS (SELECT 1 FROM shift_log_signatures s
      WHERE s.site_id = docs.site_id AND s.doc_id = docs.doc_id AND s.heads = docs.heads)";

/// The shift listing's query for `query`, for both backends: `placeholder(n)` writes the `n`th
/// parameter (from 1). Only the filters given become conditions, so each can use its index
/// (guard: `docs_by_guard`, device: `docs_by_device`, open: `docs_open`, start: `docs_by_start`)
/// and no filter reads more than the site's shift rows; one row more than the limit tells
/// whether more follow.
pub fn shift_list_sql(
    site: &SiteId,
    query: &ShiftQuery,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<SqlValue>) {
    let mut values = vec![SqlValue::Text(site.to_string())];
    let mut conditions = vec![
        format!("docs.site_id = {}", placeholder(1)),
        format!("docs.kind = '{}'", merge::SHIFT_LOG_KIND),
    ];
    let mut bind = |condition: &str, value: SqlValue| {
        values.push(value);
        conditions.push(format!("{condition} {}", placeholder(values.len())));
    };
    if let Some(guard) = &query.guard {
        bind("docs.guard_id =", SqlValue::Text(guard.to_string()));
    }
    if let Some(device) = &query.device {
        bind("docs.device_id =", SqlValue::Text(device.to_string()));
    }
    if let Some(from) = query.from_ms {
        bind("docs.started_at >=", SqlValue::Int(from));
    }
    if let Some(to) = query.to_ms {
        bind("docs.started_at <", SqlValue::Int(to));
    }
    if let Some(after) = &query.after {
        bind(
            "docs.doc_id >",
            SqlValue::Text(merge::shift_log_doc_id(after)),
        );
    }
    match query.open {
        Some(true) => conditions.push("docs.ended_at IS NULL".into()),
        Some(false) => conditions.push("docs.ended_at IS NOT NULL".into()),
        None => {}
    }
    values.push(SqlValue::Int(i64::from(query.limit) + 1));
    let sql = format!(
        "SELECT {SHIFT_COLUMNS} FROM docs WHERE {} ORDER BY docs.doc_id LIMIT {}",
        conditions.join(" AND "),
        placeholder(values.len())
    );
    (sql, values)
}

/// One shift's query ([`SHIFT_COLUMNS`]), parameters: site, shift log id.
pub fn shift_sql(placeholder: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT {SHIFT_COLUMNS} FROM docs
         WHERE docs.site_id = {} AND docs.doc_id = {} AND docs.kind = '{}'",
        placeholder(1),
        placeholder(2),
        merge::SHIFT_LOG_KIND
    )
}

/// One incident document of a sync request.
#[derive(Clone, Debug)]
pub struct IncidentPush {
    pub incident: IncidentId,
    /// The server heads the device last merged.
    pub have: Vec<ChangeHash>,
    /// The device's changes since `have` (an automerge bundle), or empty.
    pub changes: Vec<u8>,
}

/// The part of a sync request beyond its shift logs: the incident pushes, and what the device
/// asks to receive (incidents it takes part in, a newer site configuration, alarm acks).
#[derive(Clone, Debug)]
pub struct CollabSync {
    pub site: SiteId,
    pub device: DeviceId,
    /// The guard on duty on the device (of its open shift; `None` with no shift open): a phone
    /// on duty is sent every open incident of the site ([`collab::owed_incidents`]).
    pub guard: Option<GuardId>,
    pub received_at_ms: i64,
    pub incidents: Vec<IncidentPush>,
    /// The configuration version the device holds (0: none).
    pub config_version: u64,
    /// The device's panic alarms it has not seen acknowledged.
    pub awaiting_ack: Vec<EventId>,
}

/// The answer to a [`CollabSync`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollabAnswer {
    /// One per incident push, in order.
    pub outcomes: Vec<DocOutcome>,
    pub incidents: Vec<IncidentUpdate>,
    pub config: Option<ConfigUpdate>,
    pub alarm_acks: Vec<AlarmAck>,
}

/// An operator's action on an incident.
#[derive(Clone, Debug)]
pub struct OperatorAction {
    pub site: SiteId,
    pub incident: IncidentId,
    /// The operator, as entries and the automerge actor name them.
    pub user: String,
    pub action: IncidentAction,
    /// Server wall time of the action.
    pub at_ms: i64,
}

/// Which incidents to list, newest (first seen by the server) first.
#[derive(Clone, Debug)]
pub struct IncidentQuery {
    pub status: Option<IncidentStatus>,
    /// Only incidents the server wrote (a device's push, an operator's action) at or after this
    /// server time, ms since the epoch.
    pub updated_since: Option<i64>,
    pub limit: u32,
}

/// A page of incidents: each incident's state JSON, as [`incident::IncidentRow`] renders it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentList {
    pub incidents: Vec<String>,
    /// More incidents match than were returned.
    pub more: bool,
}

/// A site configuration as stored: the latest, or the empty version 0 when there is none.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredConfig {
    pub config: SiteConfig,
    /// When this version was stored; `None` for the empty version 0.
    pub created_at_ms: Option<i64>,
}

/// The control room's acknowledgement of a panic alarm, as stored (the first one stands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmAckRecord {
    pub site: SiteId,
    pub event: EventId,
    /// The device that raised the alarm.
    pub device: DeviceId,
    pub by: String,
    pub at_ms: i64,
}

/// A panic alarm as the control room's alarms view lists it: when it was raised (the phone's
/// own time, and corrected), received, and acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicAlarm {
    pub event: EventId,
    pub device: DeviceId,
    pub guard: String,
    /// The phone's own time of the panic.
    pub raised_at_ms: i64,
    /// That time corrected by the phone's clock offset ([`corrected_ms_sql`]).
    pub corrected_ms: i64,
    pub received_at_ms: i64,
    /// Who acknowledged it and when; `None` while it is open.
    pub acknowledged: Option<(String, i64)>,
    /// When the server escalated it, nobody having acknowledged it in the site's time.
    pub escalated_at_ms: Option<i64>,
}

/// What happened to a panic alarm that live streams announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmChangeKind {
    Acknowledged,
    Escalated,
}

impl AlarmChangeKind {
    /// As stored, and in the stream's event name (`alarm_acknowledged`, `alarm_escalated`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmChangeKind::Acknowledged => "acknowledged",
            AlarmChangeKind::Escalated => "escalated",
        }
    }

    pub fn parse(stored: &str) -> Result<Self, StoreError> {
        match stored {
            "acknowledged" => Ok(AlarmChangeKind::Acknowledged),
            "escalated" => Ok(AlarmChangeKind::Escalated),
            other => Err(StoreError::CorruptData(format!(
                "unknown alarm change {other:?}"
            ))),
        }
    }
}

/// A change of a panic alarm, as stored for the live streams of every instance
/// ([`Store::alarm_changes`]), with the alarm as it stands when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmChange {
    /// Its place in the order of every site's alarm changes.
    pub id: u64,
    pub site: SiteId,
    pub kind: AlarmChangeKind,
    pub alarm: PanicAlarm,
}

/// What an acknowledgement did: the acknowledgement that stands, and the change it made
/// (`None` when the alarm was acknowledged before: the first one stands).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acknowledged {
    pub ack: AlarmAckRecord,
    pub change: Option<AlarmChange>,
}

/// How far back the escalation check looks: a panic nobody acknowledged for a day is past
/// escalating (and a server upgraded to escalation does not escalate its whole history).
pub const ESCALATION_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// Most panic alarms one listing returns (the latest).
pub const MAX_PANIC_ALARMS: u32 = 1_000;

/// One page of a site's event feed: each event's stored JSON text, in sequence order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<(u64, String)>,
    /// More events follow the last one returned.
    pub more: bool,
    /// With a filter: the last sequence number examined, where the next page starts (a page of
    /// a rare filter may hold few events but still move the cursor on).
    pub scanned_to: Option<u64>,
}

impl EventPage {
    /// The cursor to ask the next page from.
    pub fn next(&self, after: u64) -> u64 {
        let last = self.events.last().map_or(after, |(seq, _)| *seq);
        self.scanned_to.map_or(last, |s| s.max(last))
    }
}

/// Where a page of [`Store::events_between`] ended: the seq of its last event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeCursor {
    pub seq: u64,
}

/// One page of a site's events of a span of corrected time, in seq order
/// ([`Store::events_between`]): each event's feed JSON, with its seq.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimePage {
    pub events: Vec<(u64, String)>,
    /// Where the next page starts; `None` when no more events are in the span.
    pub next: Option<TimeCursor>,
}

/// An event's corrected time in SQL, as [`event_json::Stamp::stored`] reads it: its
/// `corrected_ms`, or for an event stored before corrected times, its device time bounded by
/// its receipt; `least` is the backend's two-argument minimum (`MIN`, `LEAST`). The scan indexes
/// of SQLite's migration 23 (PostgreSQL's 10) hold exactly this expression, which a query must
/// write the same for an index to serve it.
pub fn corrected_ms_sql(least: &str) -> String {
    format!("COALESCE(corrected_ms, {least}(device_time_ms, received_at_ms))")
}

/// Which events a control room wants (every field optional; all given must match).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedFilter {
    /// Corrected time at or after, ms since the epoch.
    pub from_ms: Option<i64>,
    /// Corrected time before, ms since the epoch.
    pub to_ms: Option<i64>,
    pub guard: Option<String>,
    pub device: Option<String>,
    pub kind: Option<String>,
    pub checkpoint: Option<String>,
    /// Events carrying this flag (a name of [`patrol_core::flags::EventFlag::NAMES`]).
    pub flag: Option<String>,
}

impl FeedFilter {
    pub fn is_empty(&self) -> bool {
        *self == FeedFilter::default()
    }
}

/// At most this many events are examined for one filtered page; the page then says where it
/// stopped, so a rare filter never makes one request scan a whole site.
pub const FILTER_SCAN_LIMIT: u32 = 50_000;

/// What a [`Store::settle_windows`] pass did: windows closed (unscanned checkpoints missed)
/// and windows turned final.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettleReport {
    pub closed: u32,
    pub finalised: u32,
}

/// An enrolled device's credential record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCredential {
    pub site: SiteId,
    pub device: DeviceId,
    pub enrolled_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// The highest `request_seq` accepted from the device (0 before its first sync).
    pub last_request_seq: u64,
    /// The key the device registered at enrollment: every push of shift-log changes it makes
    /// must carry its signature. `None` for a device enrolled before keys existed.
    pub public_key: Option<PublicKey>,
    /// When its current credential was issued (at enrollment, or by its last rotation).
    pub credential_issued_at_ms: i64,
}

/// What the server holds as evidence of one shift log ([`Store::shift_log_evidence`]).
#[derive(Clone, Debug)]
pub struct ShiftLogEvidence {
    pub device: DeviceId,
    /// The document's chunks, concatenated (they load as the document).
    pub bytes: Vec<u8>,
    pub public_key: Option<PublicKey>,
    /// Every signature kept, with when it was received, oldest first.
    pub signatures: Vec<(SignedHeads, i64)>,
}

/// A one-time enrollment code to store, by its hash.
#[derive(Clone, Debug)]
pub struct NewEnrollmentCode {
    pub site: SiteId,
    pub code_hash: TokenHash,
    pub created_by: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A device enrolling with a code: the device id and credential the server made for it.
#[derive(Clone, Debug)]
pub struct Enrollment {
    pub code_hash: TokenHash,
    pub device: DeviceId,
    pub credential_hash: TokenHash,
    pub public_key: Option<PublicKey>,
    pub now_ms: i64,
}

/// Why an enrollment code was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnrollRefusal {
    /// No such code.
    Unknown,
    Expired {
        expired_at_ms: i64,
    },
    Used {
        used_at_ms: i64,
    },
}

/// A user with its password's hash (`None`: it has none).
pub type UserWithPassword = (User, Option<PasswordHashString>);

/// How a user is looked up for its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserKey {
    Id(String),
    /// Exact, as stored (user names are case-sensitive).
    Name(String),
}

/// Why a sync request was refused as a whole, in its transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncRefusal {
    /// The device has no credential on the site.
    NotEnrolled,
    /// The device's credential was revoked.
    Revoked,
    /// The request's `request_seq` is not greater than `last_seq`, the last one accepted.
    Replayed { last_seq: u64 },
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("site {0} does not exist")]
    UnknownSite(SiteId),
    #[error("site {0} already exists")]
    SiteExists(SiteId),
    #[error("a user named {0:?} already exists")]
    UserExists(String),
    /// Revoking the user would leave no active administrator over all sites.
    #[error(
        "user {0:?} is the last active administrator over all sites: create another one before \
         revoking it, or no one could manage sites and users any more"
    )]
    LastAdministrator(String),
    #[error("enrollment code refused: {0:?}")]
    Enrollment(EnrollRefusal),
    #[error("sync refused: {0:?}")]
    SyncRefused(SyncRefusal),
    #[error(
        "the database schema is version {found}, newer than this server knows ({known}); \
         run a newer patrol-server"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("stored document {doc} of site {site} is unreadable: {reason}")]
    CorruptDocument {
        site: SiteId,
        doc: String,
        reason: String,
    },
    #[error("incident {incident} does not exist on site {site}")]
    UnknownIncident { site: SiteId, incident: IncidentId },
    #[error("site {site} has no tour {tour:?}")]
    UnknownTour { site: SiteId, tour: String },
    #[error("site {site} has no panic alarm {event}")]
    UnknownAlarm { site: SiteId, event: EventId },
    #[error(
        "site {site} configuration is at version {latest}, not {base}: reload it and apply \
         your changes to version {latest}"
    )]
    StaleConfig {
        site: SiteId,
        base: u64,
        latest: u64,
    },
    /// The incident's status rules refuse the action (the core's message).
    #[error("{0}")]
    ActionRefused(String),
    /// The action's content is invalid (e.g. an empty note).
    #[error("{0}")]
    InvalidAction(String),
    #[error("site {site} has no webhook {id}")]
    UnknownWebhook { site: SiteId, id: i64 },
    #[error("site {site} has no webhook delivery {id}")]
    UnknownDelivery { site: SiteId, id: i64 },
    /// Only a parked delivery is re-queued (a pending one is queued already).
    #[error("webhook delivery {id} is {state}, not parked: only a parked delivery is re-queued")]
    DeliveryNotParked { id: i64, state: &'static str },
    /// The site has [`webhooks::MAX_ENDPOINTS_PER_SITE`] endpoints already.
    #[error("site {0} has the most webhooks a site may have ({max}); remove one first", max = webhooks::MAX_ENDPOINTS_PER_SITE)]
    TooManyWebhooks(SiteId),
    #[error("stored data is invalid: {0}")]
    CorruptData(String),
    #[error("could not encode: {0}")]
    Encode(String),
    /// The database or its driver failed; the backend's own description (see [`BackendError`]).
    #[error(transparent)]
    Backend(BackendError),
    #[error("invalid database URL: {0}")]
    DatabaseUrl(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the store is shut down")]
    Closed,
    #[error("commit failed: {0}")]
    Commit(String),
}

/// A failure of the database or its driver, boxed so that [`StoreError`] names no driver's
/// type. It reads exactly as the backend's own error (message and causes); the backend has
/// already said, from the driver's error, whether running the same transaction again may
/// succeed ([`BackendError::is_transient`]).
#[derive(Debug)]
pub struct BackendError {
    error: Box<dyn std::error::Error + Send + Sync>,
    transient: bool,
}

impl BackendError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError {
            error: Box::new(error),
            transient: false,
        }
    }

    /// An error after which the same transaction may succeed if run again: the database
    /// aborted it to break a deadlock or a serialization conflict.
    pub fn transient(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        BackendError {
            error: Box::new(error),
            transient: true,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The canonical site record.
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates a site; [`StoreError::SiteExists`] if its id is taken.
    fn create_site(&self, site: Site) -> BoxFuture<'_, Result<Site, StoreError>>;

    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StoreError>>;

    fn get_site(&self, site: SiteId) -> BoxFuture<'_, Result<Option<Site>, StoreError>>;

    /// Checks and merges every pushed shift log of a sync request into the stored copies and
    /// records the device's sync, in one transaction (see the module docs). Returns one outcome
    /// per push, in order. A push the merge rules refuse is `DocOutcome::Rejected` and changes
    /// nothing; `Err` is reserved for the server's own failures, and then nothing is applied.
    fn sync(&self, batch: SyncBatch) -> BoxFuture<'_, Result<Vec<DocOutcome>, StoreError>>;

    /// Up to `limit` events with `seq > after`, in order; `None` if the site does not exist.
    fn events_after(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>>;

    /// Up to `limit` events with `seq > after` matching `filter`, in order, examining at most
    /// [`FILTER_SCAN_LIMIT`] events; `None` if the site does not exist. This default reads
    /// pages through [`Store::events_after`] and matches each event's JSON; a backend may
    /// answer it in its query language instead.
    fn events_filtered(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
        filter: FeedFilter,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>> {
        Box::pin(async move {
            if filter.is_empty() {
                return self.events_after(site, after, limit).await;
            }
            let mut out = EventPage::default();
            let mut cursor = after;
            let mut scanned = 0u32;
            loop {
                let chunk = limit.max(1_000).min(FILTER_SCAN_LIMIT - scanned);
                let Some(page) = self.events_after(site.clone(), cursor, chunk).await? else {
                    return Ok(None);
                };
                for (seq, json) in page.events.iter() {
                    scanned += 1;
                    cursor = *seq;
                    if event_json::matches(json, &filter)? {
                        out.events.push((*seq, json.clone()));
                        if out.events.len() == limit as usize {
                            out.more = true;
                            out.scanned_to = Some(cursor);
                            return Ok(Some(out));
                        }
                    }
                }
                if !page.more || scanned >= FILTER_SCAN_LIMIT {
                    out.more = page.more;
                    out.scanned_to = Some(cursor);
                    return Ok(Some(out));
                }
            }
        })
    }

    /// Up to `limit` of the site's events whose corrected time is in `[from_ms, to_ms)`, in
    /// seq order, after `after` (the previous page's [`TimePage::next`]); `None` if the site
    /// does not exist. Read through the rows of [`event_hours`] of the span's hours: a page
    /// reads the seq ranges of the logs written with events in those hours, whatever the
    /// site's history holds before or after them.
    fn events_between(
        &self,
        site: SiteId,
        from_ms: i64,
        to_ms: i64,
        after: Option<TimeCursor>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<TimePage>, StoreError>>;

    /// The control room's acknowledgements of those of `events` (panic alarms of the site)
    /// that have one, in no particular order. [`StoreError::UnknownSite`] if there is no site.
    fn alarm_acks(
        &self,
        site: SiteId,
        events: Vec<EventId>,
    ) -> BoxFuture<'_, Result<Vec<AlarmAckRecord>, StoreError>>;

    /// The site's panic alarms, the latest first (at most `limit`), only those not acknowledged
    /// if `open_only`; `None` if the site does not exist.
    fn panic_alarms(
        &self,
        site: SiteId,
        open_only: bool,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<Vec<PanicAlarm>>, StoreError>>;

    /// The site's devices, ordered by device id; `None` if the site does not exist.
    fn devices(&self, site: SiteId)
    -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>>;

    /// The site's shifts matching `query`, in shift-id order; `None` if the site does not
    /// exist. Reads the shifts' own rows ([`shift_list_sql`]), never their events.
    fn shifts(
        &self,
        site: SiteId,
        query: ShiftQuery,
    ) -> BoxFuture<'_, Result<Option<ShiftPage>, StoreError>>;

    /// One shift of the site; `None` if the site has no log of it.
    /// [`StoreError::UnknownSite`] if there is no site.
    fn shift(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftSummary>, StoreError>>;

    /// Merges a sync request's incident pushes (checked by `patrol_core::merge::ingest_incident`)
    /// and answers what the device should receive, in one transaction: the incidents it pushed
    /// (the changes it lacks), the open incidents it is owed ([`collab::owed_incidents`]) that
    /// it did not push (whole),
    /// a newer site configuration, and acks of its awaited alarms. A rejected push changes
    /// nothing. Without incident pushes it only reads.
    fn sync_collab(&self, sync: CollabSync) -> BoxFuture<'_, Result<CollabAnswer, StoreError>>;

    /// The site's incidents, newest first. [`StoreError::UnknownSite`] if there is no site.
    fn incidents(
        &self,
        site: SiteId,
        query: IncidentQuery,
    ) -> BoxFuture<'_, Result<IncidentList, StoreError>>;

    /// One incident's state JSON.
    fn incident(
        &self,
        site: SiteId,
        incident: IncidentId,
    ) -> BoxFuture<'_, Result<String, StoreError>>;

    /// Applies an operator's action to the stored incident and returns its new state JSON.
    /// [`StoreError::ActionRefused`] if the status rules refuse it; then nothing changes.
    fn act_on_incident(&self, action: OperatorAction) -> BoxFuture<'_, Result<String, StoreError>>;

    /// The site's latest configuration (the empty version 0 if none was stored).
    fn site_config(&self, site: SiteId) -> BoxFuture<'_, Result<StoredConfig, StoreError>>;

    /// Stores `config` as version `base_version + 1` if `base_version` is the latest
    /// ([`StoreError::StaleConfig`] otherwise) and returns it as stored. The caller has
    /// validated it; its `site` and `version` are set here.
    fn put_site_config(
        &self,
        config: SiteConfig,
        base_version: u64,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<StoredConfig, StoreError>>;

    /// Records that `by` acknowledged the site's panic alarm `event` (an event of kind `panic`
    /// in the site's feed, else [`StoreError::UnknownAlarm`]). Idempotent: the first
    /// acknowledgement stands and is returned.
    fn acknowledge_alarm(
        &self,
        site: SiteId,
        event: EventId,
        by: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Acknowledged, StoreError>>;

    /// Escalates the site's panic alarms that nobody acknowledged and that were received
    /// `after_ms` or longer before `now_ms` (and less than [`ESCALATION_LOOKBACK_MS`]): each is
    /// escalated once, whichever instance gets there first, with its change, in one
    /// transaction. Returns the changes made. [`StoreError::UnknownSite`] if there is no site.
    fn escalate_alarms(
        &self,
        site: SiteId,
        after_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<AlarmChange>, StoreError>>;

    /// The check-in timers running on the site's open shifts as of `now_ms`
    /// ([`check_ins::timers`]); `None` if the site does not exist.
    fn check_in_timers(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<check_ins::CheckInTimerView>>, StoreError>>;

    /// Records each of the site's check-ins overdue at `now_ms` (once per shift and deadline,
    /// whichever instance gets there first) and returns those this call recorded.
    fn record_overdue_check_ins(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<check_ins::CheckInTimerView>, StoreError>>;

    /// Every site's alarm changes after `after` (at most `limit`, in order), and the id of
    /// the latest change stored (0 if none); `after: None` reads none, only the latest id.
    fn alarm_changes(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<AlarmChange>, u64), StoreError>>;
    /// Creates a user; [`StoreError::UserExists`] if its name is taken,
    /// [`StoreError::UnknownSite`] if its scope names a site that does not exist.
    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>>;

    /// Every user, revoked ones included, in order of creation.
    fn users(&self) -> BoxFuture<'_, Result<Vec<User>, StoreError>>;

    /// The user whose current or previous token hashes to `hash` (revoked, expired or not), with
    /// its stored tokens; the caller tells which one it is ([`StoredUserTokens::identify`]).
    fn user_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, StoredUserTokens)>, StoreError>>;

    /// Replaces a user's token as `rotation` says: the new one becomes current, and the one it
    /// replaces is kept until `rotation.previous_valid_until_ms` (or dropped). A token kept from
    /// an earlier rotation is dropped. `None` if there is no such user.
    fn rotate_user_token(
        &self,
        id: String,
        rotation: UserTokenRotation,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>>;

    /// Revokes a user's token at `at_ms` (a revoked user stays revoked, with its first
    /// revocation time) and deletes its sessions; `None` if there is no such user.
    fn revoke_user(
        &self,
        id: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>>;

    /// The user `key` names (revoked or not) with its password's hash (`None`: it has none);
    /// `None` if there is no such user.
    fn user_with_password(
        &self,
        key: UserKey,
    ) -> BoxFuture<'_, Result<Option<UserWithPassword>, StoreError>>;

    /// Sets a user's password and, in the same transaction, deletes its sessions but `keep`
    /// (the session it was changed from, if any). `None` if there is no such user.
    fn set_user_password(
        &self,
        id: String,
        password: PasswordHashString,
        keep: Option<TokenHash>,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>>;

    /// Stores a new session of user `user_id`, and deletes every session that ended by
    /// `session.created_at_ms` (its lifetime, or its last use more than `idle_ms` before), so
    /// that abandoned sessions do not pile up.
    fn create_session(
        &self,
        user_id: String,
        session: StoredSession,
        idle_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The session whose token hashes to `hash`, with its user (whether it may be used is
    /// [`crate::credentials::sessions::check_session`]'s to say).
    fn session_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, StoredSession)>, StoreError>>;

    /// Records a use of the session at `now_ms` (no earlier than the last one recorded).
    fn touch_session(&self, hash: TokenHash, now_ms: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes a session (sign-out); whether there was one.
    fn delete_session(&self, hash: TokenHash) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Stores a one-time enrollment code; [`StoreError::UnknownSite`] if its site does not exist.
    fn create_enrollment_code(
        &self,
        code: NewEnrollmentCode,
    ) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Enrolls a device with a code, in one transaction: the code must be known, unexpired at
    /// `now_ms` and unused ([`StoreError::Enrollment`] otherwise, nothing changed); it is marked
    /// used and the device's credential stored, bound to the code's site.
    fn enroll_device(
        &self,
        enrollment: Enrollment,
    ) -> BoxFuture<'_, Result<DeviceCredential, StoreError>>;

    /// The device whose current or next credential hashes to `hash` (revoked or not), with its
    /// stored credentials; the caller tells which one it is
    /// ([`StoredDeviceCredentials::identify`]).
    fn device_by_credential(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(DeviceCredential, StoredDeviceCredentials)>, StoreError>>;

    /// Issues the device a next credential (its hash), which replaces any next one issued before
    /// and not yet used; the current one keeps working until the next one is used
    /// ([`Store::promote_device_credential`]). `None` if the site has no such enrolled device.
    fn stage_device_credential(
        &self,
        site: SiteId,
        device: DeviceId,
        next: TokenHash,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>>;

    /// Makes the device's next credential, if it is still `next`, its current one (the old one
    /// stops working) and returns the device as it is now; `None` if the device has no such next
    /// credential (another rotation replaced it).
    fn promote_device_credential(
        &self,
        site: SiteId,
        device: DeviceId,
        next: TokenHash,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>>;

    /// A shift log as stored, with its device's registered key and every signature kept for
    /// it, for export; `None` if the site has no such log.
    fn shift_log_evidence(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftLogEvidence>, StoreError>>;

    /// The site's enrolled devices, ordered by device id; `None` if the site does not exist.
    fn device_credentials(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceCredential>>, StoreError>>;

    /// Revokes a device's credential at `at_ms` (a revoked device stays revoked, with its first
    /// revocation time); `None` if the site has no such enrolled device.
    fn revoke_device(
        &self,
        site: SiteId,
        device: DeviceId,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>>;

    /// The site's tour windows for `query` as they stand at `now_ms`: each checkpoint's state
    /// and scan, the share done, provisional or final, amendments ([`compliance::view`]).
    /// [`StoreError::UnknownSite`]; [`StoreError::UnknownTour`] for a tour the site's
    /// configuration does not have.
    fn tour_windows(
        &self,
        site: SiteId,
        query: compliance::WindowQuery,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<compliance::WindowsAnswer, StoreError>>;

    /// The periodic pass over one site's windows at `now_ms` ([`compliance::Settle`]): closes
    /// those whose grace ended since the last pass and marks final those that are, in one
    /// transaction under the site's lock. `None` when another instance holds the lock (it is
    /// doing the same work). [`StoreError::UnknownSite`] if there is no site.
    fn settle_windows(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<SettleReport>, StoreError>>;

    /// The site's window announcements numbered after `after`, at most `limit`, in order, and
    /// the last number given so far (0 before the first).
    fn window_changes(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<compliance::StoredChange>, u64), StoreError>>;

    /// Registers a webhook endpoint and returns it. [`StoreError::UnknownSite`],
    /// [`StoreError::TooManyWebhooks`]. The caller has validated it ([`webhooks::validate`]).
    fn create_webhook(
        &self,
        webhook: webhooks::NewWebhook,
    ) -> BoxFuture<'_, Result<webhooks::Webhook, StoreError>>;

    /// The site's webhook endpoints, in order of creation. [`StoreError::UnknownSite`].
    fn webhooks(&self, site: SiteId) -> BoxFuture<'_, Result<Vec<webhooks::Webhook>, StoreError>>;

    /// Removes an endpoint with its deliveries and their attempts.
    /// [`StoreError::UnknownWebhook`] if the site has no such endpoint.
    fn delete_webhook(&self, site: SiteId, id: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Queues `outgoing` for each endpoint of its site subscribed to its type, unless that
    /// endpoint has a delivery with its key already (then nothing: the cause was seen before).
    /// Returns the deliveries queued. For causes outside any other write (a device gone
    /// silent); the others are queued in their own transaction.
    fn enqueue_webhook(
        &self,
        outgoing: webhooks::Outgoing,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Whether the site has an endpoint subscribed to `event_type` (so a watcher skips sites
    /// without one).
    fn has_webhook_for(
        &self,
        site: SiteId,
        event_type: &'static str,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// The site's latest deliveries (at most `limit`), only those in `state` if given, each
    /// with its attempts. [`StoreError::UnknownSite`].
    fn webhook_deliveries(
        &self,
        site: SiteId,
        state: Option<webhooks::DeliveryState>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<webhooks::Delivery>, StoreError>>;

    /// Re-queues a parked delivery, due at `now_ms`, its attempts counted from zero again (the
    /// earlier ones stay listed). [`StoreError::UnknownDelivery`],
    /// [`StoreError::DeliveryNotParked`].
    fn retry_webhook_delivery(
        &self,
        site: SiteId,
        id: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<webhooks::Delivery, StoreError>>;

    /// Claims up to `limit` pending deliveries due at `now_ms`, the oldest due first: each is
    /// due again only at `lease_until_ms`, so no other sender takes it before then (PostgreSQL:
    /// `FOR UPDATE SKIP LOCKED`, whichever instance).
    fn claim_webhook_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<webhooks::DueDelivery>, StoreError>>;

    /// Records an attempt at a claimed delivery and its next step, in one transaction, if the
    /// delivery is still pending with `attempts_before` attempts (else another sender got to it
    /// after the lease ended, and recorded its own; this one is dropped). Returns whether it was
    /// recorded.
    fn record_webhook_attempt(
        &self,
        id: i64,
        attempts_before: u32,
        attempt: webhooks::Attempt,
        next: webhooks::NextStep,
    ) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Drops the deliveries delivered before `before_ms`, with their attempts; returns how many.
    fn prune_webhook_deliveries(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Wakes on the site's new events: after each commit that added events to the site's feed,
    /// in this process or (PostgreSQL) any other sharing the database, the receiver gets the
    /// last sequence number committed. A hint, not a delivery: read
    /// [`Store::events_after`] from your own cursor (see [`notify`]). A receiver made before a
    /// write wakes for it.
    fn subscribe(&self, site: SiteId) -> tokio::sync::broadcast::Receiver<u64>;

    /// The attachments `site`'s incidents reference ([`blobs::attachment_refs`]).
    fn attachment_refs(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Vec<blobs::AttachmentRef>, StoreError>>;

    /// Which of `hashes` are stored whole.
    fn stored_blobs(
        &self,
        hashes: Vec<blobs::BlobHash>,
    ) -> BoxFuture<'_, Result<Vec<blobs::BlobHash>, StoreError>>;

    /// A stored blob's bytes; `None` unless stored whole.
    fn read_blob(
        &self,
        sha256: blobs::BlobHash,
    ) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;

    /// What the server holds of `device`'s upload of `sha256`. Drops every unfinished upload
    /// older than [`blobs::PARTIAL_UPLOAD_TTL_MS`] at `now_ms` first.
    fn blob_upload(
        &self,
        device: DeviceId,
        sha256: blobs::BlobHash,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<blobs::UploadState, StoreError>>;

    /// Appends a chunk to its device's upload ([`blobs`]): durable when this returns; the
    /// chunk that completes the upload stores the blob if it hashes to its address, and
    /// discards the upload otherwise.
    fn put_blob_chunk(
        &self,
        chunk: blobs::BlobChunk,
    ) -> BoxFuture<'_, Result<blobs::ChunkOutcome, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the filters given become conditions, numbered in order, the limit last.
    #[test]
    fn the_shift_listing_binds_only_the_filters_given() -> Result<(), Box<dyn std::error::Error>> {
        let site = SiteId::new("site-1")?;
        let query = ShiftQuery {
            guard: Some(GuardId::new("anna")?),
            open: Some(true),
            limit: 10,
            ..ShiftQuery::default()
        };
        let (sql, values) = shift_list_sql(&site, &query, |n| format!("${n}"));
        assert!(sql.contains("docs.guard_id = $2"), "{sql}");
        assert!(sql.contains("docs.ended_at IS NULL"), "{sql}");
        assert!(sql.ends_with("LIMIT $3"), "{sql}");
        assert!(!sql.contains("device_id ="), "{sql}");
        assert_eq!(
            values,
            vec![
                SqlValue::Text("site-1".into()),
                SqlValue::Text("anna".into()),
                SqlValue::Int(11)
            ]
        );
        Ok(())
    }
}
