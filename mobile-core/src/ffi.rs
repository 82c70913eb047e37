//! The exported API for the phone apps (Kotlin, Swift, Python through UniFFI): a thin layer over
//! [`DeviceStore`] and [`SyncClient`]. Everything here converts at the boundary and forwards;
//! the rules live in the inner API and in `patrol-core`.
//!
//! - [`PatrolDevice`]: one phone store, made by enrolling the phone with a server
//!   ([`PatrolDevice::enroll`]) and opened afterwards. Thread-safe; every method blocks (disk writes are
//!   committed before a recording returns, `sync` talks to the server), so the app calls it from
//!   a background thread (a Kotlin `Dispatchers.IO` coroutine, a Swift background queue), never
//!   from the UI thread.
//! - Records and enums for inputs and outputs. Ids cross as strings and are validated on the way
//!   in; a bad id is [`PatrolError::InvalidInput`].
//! - [`PatrolError`]: the one error the apps see, converted from the internal [`Error`] in one
//!   place ([`From<Error> for PatrolError`]), which also logs through `tracing` and keeps
//!   personal data (note texts, descriptions, positions) out of messages.
//! - [`EventObserver`]: implemented by the app to hear about new events and sync attempts.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

use patrol_core::incident::{Attachment, IncidentAction, Party};
use patrol_core::siteconfig::{CheckpointState, ScanFlag, WindowProgress};
use patrol_core::{
    CheckpointId, EventBody, EventId, GuardId, IncidentCategory, IncidentId, IncidentReport,
    Location, LogError, Scan, ScanMethod, Severity, ShiftId, SiteId, ValidationError,
};

use crate::error::Error;
use crate::store::{
    Alarm, AlarmState, DeviceStore, Durability, LocalEvent, LocalIncident, RecordOptions,
    RejectedLog, ShiftInfo, StoreOptions, SyncReport, SyncStatus,
};

use crate::sync::SyncClient;

// ---------------------------------------------------------------------------------------------
// Errors

/// What went wrong in a call. Each variant carries a message for logs and support, free of
/// personal data; apps branch on the variant, not the text. In Kotlin this is
/// `PatrolException.InvalidInput` etc. (the message is the exception's `message`), in Swift
/// `PatrolError.InvalidInput(message:)`, in Python `PatrolError.InvalidInput` (`str(e)`).
#[derive(Debug, PartialEq, Eq, thiserror::Error, uniffi::Error)]
// Flat: each variant crosses as its name plus the message below. (A field called `message` in a
// non-flat error clashes with `Throwable.message` in the generated Kotlin.)
#[uniffi(flat_error)]
pub enum PatrolError {
    /// An argument breaks a rule: a malformed id, an empty or too long text, a location out of
    /// range, an event id reused for different content. Fix the input; retrying will not help.
    #[error("{message}")]
    InvalidInput { message: String },
    /// The call needs a shift in progress; start one first.
    #[error("no shift is open; start one first")]
    NoOpenShift,
    /// A shift is already in progress; end it first.
    #[error("{message}")]
    ShiftAlreadyOpen { message: String },
    /// The store could not be read or written (disk full, file not set up, written by a newer
    /// version of the app, unusable after an internal failure).
    #[error("{message}")]
    Storage { message: String },
    /// The server could not be reached, failed or answered badly. Retryable: nothing was lost,
    /// sync again later (the events stay pending until the server acknowledges them).
    #[error("{message}")]
    Network { message: String },
    /// The server refused the request as such (unknown site, bad request). Retrying unchanged
    /// will not help; the events stay pending and the status says which logs were refused.
    #[error("{message}")]
    ServerRejected { message: String },
    /// The store cannot sync: it was not made by enrolling, or the server no longer accepts its
    /// credential (revoked). Enroll the phone (into a new store) with a code from an
    /// administrator; the events recorded here stay in this store.
    #[error("{message}")]
    NotEnrolled { message: String },
    /// Stored data is damaged.
    #[error("{message}")]
    Corrupt { message: String },
}

impl PatrolError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PatrolError::Network { .. })
    }

    fn kind(&self) -> &'static str {
        match self {
            PatrolError::InvalidInput { .. } => "invalid_input",
            PatrolError::NoOpenShift => "no_open_shift",
            PatrolError::ShiftAlreadyOpen { .. } => "shift_already_open",
            PatrolError::Storage { .. } => "storage",
            PatrolError::Network { .. } => "network",
            PatrolError::ServerRejected { .. } => "server_rejected",
            PatrolError::NotEnrolled { .. } => "not_enrolled",
            PatrolError::Corrupt { .. } => "corrupt",
        }
    }
}

/// A validation failure in words, without the values that failed: coordinates are where a guard
/// was, so they stay out of messages and logs.
fn describe_invalid(e: &ValidationError) -> String {
    match e {
        ValidationError::BadLocation { .. } => {
            "location out of range (lat -90..90, lon -180..180)".into()
        }
        ValidationError::BadAccuracy(_) => {
            "location accuracy must be a finite, non-negative number of metres".into()
        }
        // Field names, lengths and the rule broken; never the text itself.
        ValidationError::BadId { .. }
        | ValidationError::TooLong { .. }
        | ValidationError::Empty { .. } => e.to_string(),
    }
}

fn invalid(message: impl Into<String>) -> PatrolError {
    PatrolError::InvalidInput {
        message: message.into(),
    }
}

impl From<Error> for PatrolError {
    /// The one place internal errors become the public error. The message chosen here is also
    /// what is logged, so neither carries personal data.
    fn from(e: Error) -> Self {
        let out = match e {
            Error::Invalid(v) => invalid(describe_invalid(&v)),
            Error::Log(LogError::Invalid(v)) => invalid(describe_invalid(&v)),
            Error::Log(LogError::ConflictingEvent(id)) => invalid(format!(
                "event {id} is already recorded with different content; use a new event id"
            )),
            Error::Log(LogError::Frozen) => PatrolError::NoOpenShift,
            Error::Log(LogError::Encode(_)) | Error::Encode(_) => {
                invalid("the event could not be encoded")
            }
            Error::Log(
                e @ (LogError::Decode(_) | LogError::Automerge(_) | LogError::MissingMeta),
            ) => PatrolError::Corrupt {
                message: format!("a shift log is damaged: {e}"),
            },
            // SQLite's messages name the failure (disk full, I/O error, locked), never values.
            Error::Sqlite(e) => PatrolError::Storage {
                message: format!("storage error: {e}"),
            },
            Error::InUse { .. } => PatrolError::Storage {
                message: "the store is already open in another store object; close that one \
                          first"
                    .into(),
            },
            Error::Thread(e) => PatrolError::Storage {
                message: format!("cannot start the store's worker thread: {e}"),
            },
            Error::NotInitialised { .. } => PatrolError::Storage {
                message: "the store is not set up; create it with a site first".into(),
            },
            Error::SchemaTooNew { found, known, .. } => PatrolError::Storage {
                message: format!(
                    "the store was written by a newer version of the app (schema {found}, this \
                     version knows {known})"
                ),
            },
            Error::WrongSite {
                existing,
                requested,
            } => invalid(format!(
                "the store is set up for site {existing}, not {requested}"
            )),
            Error::NoOpenShift => PatrolError::NoOpenShift,
            Error::UnknownIncident(id) => invalid(format!("this phone holds no incident {id}")),
            Error::IncidentRule(rule) => invalid(rule),
            Error::NoSiteConfig => invalid("no site configuration yet; sync once with the server"),
            Error::UnknownTour(tour) => {
                invalid(format!("the site configuration has no tour {tour:?}"))
            }
            Error::ShiftAlreadyOpen(shift) => PatrolError::ShiftAlreadyOpen {
                message: format!("shift {shift} is already open; end it first"),
            },
            Error::Quarantined { moved_to, .. } => PatrolError::Corrupt {
                message: format!(
                    "the store was damaged and has been moved aside, untouched, to {moved_to}; \
                     create a new store"
                ),
            },
            Error::Corrupt(what) => PatrolError::Corrupt {
                message: format!("stored data is corrupt: {what}"),
            },
            Error::Network(what) => PatrolError::Network {
                message: format!("network: {what}"),
            },
            Error::KeyGeneration(what) => PatrolError::Storage {
                message: format!("the phone has no random source for its signing key: {what}"),
            },
            Error::ServerTransient {
                status, message, ..
            } => PatrolError::Network {
                message: format!("server error (HTTP {status}), will retry: {message}"),
            },
            Error::BadResponse(what) => PatrolError::Network {
                message: format!("bad response from the server: {what}"),
            },
            Error::ServerRejected { status, message } => PatrolError::ServerRejected {
                message: format!("the server refused the sync (HTTP {status}): {message}"),
            },
            Error::Replayed { last_seq } => PatrolError::ServerRejected {
                message: format!(
                    "the server refused a stale sync request (its last accepted is {last_seq}); \
                     sync again"
                ),
            },
            Error::AlreadySetUp { .. } => {
                invalid("a store is already set up at this path; enroll into a new store")
            }
            Error::NotEnrolled => PatrolError::NotEnrolled {
                message: "this store is not enrolled with a server, so it cannot sync; enroll \
                          the phone with a code from an administrator"
                    .into(),
            },
            Error::Unauthorized { status, message } => PatrolError::NotEnrolled {
                message: format!(
                    "the server refused this device's credential (HTTP {status}): {message}"
                ),
            },
        };
        match &out {
            PatrolError::InvalidInput { .. }
            | PatrolError::NoOpenShift
            | PatrolError::ShiftAlreadyOpen { .. } => {
                tracing::debug!(kind = out.kind(), error = %out, "call refused")
            }
            PatrolError::Network { .. } => {
                tracing::info!(kind = out.kind(), error = %out, "sync failed, will retry")
            }
            PatrolError::ServerRejected { .. } | PatrolError::NotEnrolled { .. } => {
                tracing::warn!(kind = out.kind(), error = %out, "sync refused by the server")
            }
            PatrolError::Storage { .. } | PatrolError::Corrupt { .. } => {
                tracing::error!(kind = out.kind(), error = %out, "store failure")
            }
        }
        out
    }
}

type FfiResult<T> = std::result::Result<T, PatrolError>;

// ---------------------------------------------------------------------------------------------
// Records and enums

/// How hard each commit pushes to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, uniffi::Enum)]
pub enum FfiDurability {
    /// A returned call survives power loss (SQLite `synchronous=FULL`). The default.
    #[default]
    Full,
    /// A returned call survives the app being killed; the last commits may be lost on power
    /// loss (`synchronous=NORMAL`), in exchange for faster writes.
    Normal,
}

impl From<FfiDurability> for Durability {
    fn from(d: FfiDurability) -> Self {
        match d {
            FfiDurability::Full => Durability::Full,
            FfiDurability::Normal => Durability::Normal,
        }
    }
}

/// A position fix in degrees (WGS 84); `accuracy_m` is the radius of the 68% confidence circle
/// as the phone reports it. Recorded to 1e-7 degree.
#[derive(Clone, Copy, Debug, PartialEq, uniffi::Record)]
pub struct FfiLocation {
    pub lat: f64,
    pub lon: f64,
    #[uniffi(default)]
    pub accuracy_m: Option<f32>,
}

impl From<FfiLocation> for Location {
    fn from(l: FfiLocation) -> Self {
        Location {
            lat: l.lat,
            lon: l.lon,
            accuracy_m: l.accuracy_m,
        }
    }
}

/// How a checkpoint was proven.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiScanMethod {
    /// The checkpoint's NFC tag was read; `tag` is its id as read.
    Nfc { tag: String },
    /// The checkpoint's QR code was read.
    Qr { payload: String },
    /// The phone's position proves the visit (a location is then required).
    Gps,
    /// The tag could not be read; the guard says why.
    Manual { reason: String },
}

impl From<FfiScanMethod> for ScanMethod {
    fn from(m: FfiScanMethod) -> Self {
        match m {
            FfiScanMethod::Nfc { tag } => ScanMethod::Nfc { tag },
            FfiScanMethod::Qr { payload } => ScanMethod::Qr { payload },
            FfiScanMethod::Gps => ScanMethod::Gps,
            FfiScanMethod::Manual { reason } => ScanMethod::Manual { reason },
        }
    }
}

/// A checkpoint scan to record.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct FfiScanInput {
    /// The checkpoint as the site configuration names it (letters, digits, `-_.:`; 1-64).
    pub checkpoint_id: String,
    pub method: FfiScanMethod,
    #[uniffi(default)]
    pub location: Option<FfiLocation>,
    #[uniffi(default)]
    pub note: Option<String>,
    /// An id (UUID) chosen by the app, so a call retried after a crash records the event once.
    #[uniffi(default)]
    pub event_id: Option<String>,
    /// When the scan happened (ms since the Unix epoch), if the app read the time earlier than
    /// the call; otherwise the time of the call.
    #[uniffi(default)]
    pub wall_time_ms: Option<i64>,
}

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

/// The shift in progress.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiShift {
    pub shift_id: String,
    pub guard_id: String,
    /// Device wall time when it started, ms since the Unix epoch.
    pub started_ms: i64,
}

impl From<&ShiftInfo> for FfiShift {
    fn from(s: &ShiftInfo) -> Self {
        FfiShift {
            shift_id: s.shift.to_string(),
            guard_id: s.guard.to_string(),
            started_ms: s.started_ms,
        }
    }
}

/// An event as the phone holds it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiEvent {
    /// The event id (UUID).
    pub id: String,
    /// `shift_started`, `shift_ended`, `checkpoint_scanned`, `incident_reported`, `panic`,
    /// `note` or `handover`, as the control-room API names it.
    pub kind: String,
    /// This device's sequence number, from 1, gap-free.
    pub seq: u64,
    /// Device wall time when recorded, ms since the Unix epoch.
    pub device_time_ms: i64,
    pub guard_id: String,
    pub shift_id: String,
    /// The server has acknowledged it.
    pub delivered: bool,
    /// The whole event as JSON, in the control-room API's form (without the server's fields).
    pub json: String,
}

impl From<LocalEvent> for FfiEvent {
    fn from(e: LocalEvent) -> Self {
        let LocalEvent { event, delivered } = e;
        FfiEvent {
            id: event.id.to_string(),
            kind: event.record.body.kind().to_owned(),
            seq: event.record.seq,
            device_time_ms: event.record.time.wall_ms,
            guard_id: event.guard.to_string(),
            shift_id: event.shift.to_string(),
            delivered,
            json: event.to_json(None).to_string(),
        }
    }
}

/// A shift log the server refused.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiRejectedLog {
    pub shift_id: String,
    /// The protocol's rejection code (see `docs/protocol.md`).
    pub code: String,
    pub message: String,
}

impl From<RejectedLog> for FfiRejectedLog {
    fn from(r: RejectedLog) -> Self {
        FfiRejectedLog {
            shift_id: r.shift.to_string(),
            code: r.code,
            message: r.message,
        }
    }
}

/// What the app shows about syncing.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiSyncStatus {
    /// Events the server has not acknowledged yet.
    pub pending_events: u64,
    /// Device wall time of the oldest undelivered event.
    pub oldest_pending_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// When the outbox's backoff says to try again (ms since the Unix epoch), after a failure.
    pub next_attempt_ms: Option<i64>,
    /// A panic alarm is still undelivered: sync as soon as possible.
    pub urgent: bool,
    pub rejected: Vec<FfiRejectedLog>,
}

impl From<SyncStatus> for FfiSyncStatus {
    fn from(s: SyncStatus) -> Self {
        FfiSyncStatus {
            pending_events: s.pending_events,
            oldest_pending_ms: s.oldest_pending_ms,
            last_attempt_ms: s.last_attempt_ms,
            last_success_ms: s.last_success_ms,
            last_error: s.last_error,
            consecutive_failures: s.consecutive_failures,
            next_attempt_ms: s.next_attempt_ms,
            urgent: s.urgent,
            rejected: s.rejected.into_iter().map(Into::into).collect(),
        }
    }
}

/// What one `sync` call achieved.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiSyncReport {
    /// Shift logs sent.
    pub docs_sent: u64,
    /// Events newly acknowledged by the server.
    pub events_delivered: u64,
    /// Events still pending afterwards.
    pub pending_events: u64,
    pub rejected: Vec<FfiRejectedLog>,
    /// The server still lacks some history; sync again.
    pub needs_another_round: bool,
}

impl From<SyncReport> for FfiSyncReport {
    fn from(r: SyncReport) -> Self {
        FfiSyncReport {
            docs_sent: u64::try_from(r.docs_sent).unwrap_or(u64::MAX),
            events_delivered: r.events_delivered,
            pending_events: r.pending_events,
            rejected: r.rejected.into_iter().map(Into::into).collect(),
            needs_another_round: r.needs_another_round,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Observer

/// Implemented by the app to hear what the device records and how syncing goes (to refresh a
/// list, a pending badge, a "last synced" line).
///
/// Called on the thread that made the call, after the call's work is done and after the store
/// is released, so an observer may call back into the device. Keep it short (hand the value to
/// the UI thread); the call it follows returns only when the observer has. An observer that
/// throws is logged and otherwise ignored: the recording it reports has already succeeded.
#[uniffi::export(foreign)]
pub trait EventObserver: Send + Sync {
    /// An event was recorded (durably) by this device.
    fn on_event_recorded(&self, event: FfiEvent);
    /// A sync attempt finished, successfully or not; `status` is the state after it.
    fn on_sync_status(&self, status: FfiSyncStatus);
}

// ---------------------------------------------------------------------------------------------
// The device

/// A guard's phone: its store of shift logs and the means to sync them.
///
/// Thread-safe; all methods block and belong on a background thread. Recordings are serialised
/// on one store; a recording made while `sync` is exchanging with the server waits for that
/// sync to finish (each request is bounded by the client's timeout).
#[derive(uniffi::Object)]
pub struct PatrolDevice {
    store: Mutex<DeviceStore>,
    /// Held for the whole of a `sync`, so syncs do not overlap. Taken before the store.
    sync: Mutex<SyncState>,
    observer: Mutex<Option<Arc<dyn EventObserver>>>,
}

/// The runtime that drives the HTTP client, and the client of the last server synced with
/// (kept for its connection pool). Both are made on the first `sync`.
#[derive(Debug, Default)]
struct SyncState {
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<(String, SyncClient)>,
}

impl fmt::Debug for PatrolDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatrolDevice")
            .field("store", &self.store)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex. A poisoned store mutex means a call panicked half-way: the store's memory may
/// no longer match its disk, so it is refused until the app opens the store again (which
/// rebuilds everything from the disk).
fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> FfiResult<MutexGuard<'a, T>> {
    m.lock().map_err(|_| {
        let e = PatrolError::Storage {
            message: format!(
                "the {what} is unusable after an internal failure; open the store again"
            ),
        };
        tracing::error!(error = %e, "poisoned lock");
        e
    })
}

fn parse_uuid_id<T: std::str::FromStr<Err = ValidationError>>(s: &str) -> Result<T, Error> {
    s.parse().map_err(Error::Invalid)
}

fn scan_from(input: FfiScanInput) -> Result<(Scan, RecordOptions), Error> {
    let scan = Scan {
        checkpoint: CheckpointId::new(input.checkpoint_id)?,
        method: input.method.into(),
        location: input.location.map(Into::into),
        note: input.note,
    };
    let options = RecordOptions {
        event_id: input
            .event_id
            .as_deref()
            .map(parse_uuid_id::<EventId>)
            .transpose()?,
        wall_ms: input.wall_time_ms,
    };
    Ok((scan, options))
}

/// The event just recorded, as the app is told about it. `id` is `None` for a shift's first
/// event (`start_shift` returns the shift, not its event).
fn recorded_event(
    store: &DeviceStore,
    shift: ShiftId,
    id: Option<EventId>,
) -> Result<Option<FfiEvent>, Error> {
    let found = match id {
        Some(id) => store.event(id)?,
        None => store.events(Some(shift))?.into_iter().next(),
    };
    Ok(found.map(Into::into))
}

impl PatrolDevice {
    fn with_options(
        path: String,
        site: Option<SiteId>,
        durability: FfiDurability,
    ) -> FfiResult<Self> {
        let options = StoreOptions {
            durability: durability.into(),
            ..StoreOptions::default()
        };
        let store = DeviceStore::open_with(&path, site, options)?;
        Ok(Self::from_store(store, SyncState::default()))
    }

    fn from_store(store: DeviceStore, sync: SyncState) -> Self {
        PatrolDevice {
            store: Mutex::new(store),
            sync: Mutex::new(sync),
            observer: Mutex::new(None),
        }
    }

    fn enroll_inner(
        path: String,
        server_url: String,
        code: String,
        durability: FfiDurability,
    ) -> Result<Self, Error> {
        let base = checked_url(&server_url)?;
        // Before the code is spent: a store already set up here cannot take a new identity.
        if DeviceStore::is_set_up(&path)? {
            return Err(Error::AlreadySetUp { path });
        }
        let runtime = new_runtime()?;
        let client = SyncClient::new(base)?;
        let enrollment = runtime.block_on(client.enroll(&code))?;
        let options = StoreOptions {
            durability: durability.into(),
            ..StoreOptions::default()
        };
        let store = DeviceStore::create_enrolled(&path, enrollment, options)?;
        Ok(Self::from_store(
            store,
            SyncState {
                runtime: Some(runtime),
                client: Some((server_url, client)),
            },
        ))
    }

    fn observer(&self) -> Option<Arc<dyn EventObserver>> {
        // A poisoned observer slot only means an earlier caller panicked while swapping it;
        // the value itself is a plain Option and stays usable.
        match self.observer.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Runs one recording on the store; then, with the store released, tells the observer.
    /// `op` returns the event's id (`None`: the shift's first event) and the call's result.
    fn record<T>(
        &self,
        op: impl FnOnce(&mut DeviceStore) -> Result<(Option<EventId>, T), Error>,
    ) -> FfiResult<T> {
        let observer = self.observer();
        let (value, event) = {
            let mut store = lock(&self.store, "store")?;
            let shift_before = store.current_shift().map(|s| s.shift);
            let (id, value) = op(&mut store)?;
            let event = match (
                &observer,
                store.current_shift().map(|s| s.shift).or(shift_before),
            ) {
                (Some(_), Some(shift)) => match recorded_event(&store, shift, id) {
                    Ok(event) => event,
                    Err(e) => {
                        // The event is recorded; only the notification is lost.
                        let e = PatrolError::from(e);
                        tracing::warn!(error = %e, "cannot read back a recorded event");
                        None
                    }
                },
                _ => None,
            };
            (value, event)
        };
        if let (Some(observer), Some(event)) = (observer, event) {
            notify("on_event_recorded", || observer.on_event_recorded(event));
        }
        Ok(value)
    }

    fn notify_status(&self) {
        let Some(observer) = self.observer() else {
            return;
        };
        let status = match lock(&self.store, "store").and_then(|s| Ok(s.status()?)) {
            Ok(status) => FfiSyncStatus::from(status),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the sync status for the observer");
                return;
            }
        };
        notify("on_sync_status", || observer.on_sync_status(status));
    }

    fn sync_inner(&self, server_url: &str) -> FfiResult<SyncReport> {
        let mut state = lock(&self.sync, "sync client")?;
        let SyncState { runtime, client } = &mut *state;
        let runtime = match runtime {
            Some(rt) => rt,
            None => runtime.insert(new_runtime()?),
        };
        let client = match client {
            Some((url, c)) if url == server_url => c,
            _ => {
                let base = checked_url(server_url)?;
                &client
                    .insert((server_url.to_owned(), SyncClient::new(base)?))
                    .1
            }
        };
        // The store is locked only around building the request and applying the answer.
        Ok(runtime.block_on(client.sync_shared(&self.store))?)
    }
}

fn new_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Network(format!("cannot start the network runtime: {e}")))
}

/// The server URL, trimmed, if it is http(s).
fn checked_url(server_url: &str) -> Result<&str, Error> {
    let base = server_url.trim();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::Invalid(ValidationError::BadId {
            what: "server URL",
            reason: "must start with http:// or https://".into(),
        }));
    }
    Ok(base)
}

/// Calls an observer, containing a failure: a foreign exception surfaces in Rust as a panic,
/// which must not turn the successful call it reports into a failed one.
fn notify(what: &str, call: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(call)).is_err() {
        tracing::warn!(callback = what, "the observer failed; ignored");
    }
}

#[uniffi::export]
impl PatrolDevice {
    /// Opens an existing store at `path`. `durability` defaults to `Full`.
    #[uniffi::constructor(default(durability = None))]
    pub fn open(path: String, durability: Option<FfiDurability>) -> FfiResult<Arc<Self>> {
        Self::with_options(path, None, durability.unwrap_or_default()).map(Arc::new)
    }

    /// Enrolls this phone with the server at `server_url` (e.g. `https://patrol.example.org`)
    /// using a one-time `code` from an administrator, and creates its store at `path` with the
    /// device id, site and credential the server gives it. Needs the network once; from then on
    /// the phone records offline and syncs with `sync`. Fails with `InvalidInput` if a store is
    /// already set up at `path` (the code is then not used), `NotEnrolled` if the server refuses
    /// the code (unknown, expired or already used), `Network` if it cannot be reached.
    /// `durability` defaults to `Full`.
    #[uniffi::constructor(default(durability = None))]
    pub fn enroll(
        path: String,
        server_url: String,
        code: String,
        durability: Option<FfiDurability>,
    ) -> FfiResult<Arc<Self>> {
        Self::enroll_inner(path, server_url, code, durability.unwrap_or_default())
            .map(Arc::new)
            .map_err(|e| match e {
                // A refused code is a 401 or 410; either way, the phone is not enrolled.
                Error::ServerRejected { status, message }
                | Error::Unauthorized { status, message } => PatrolError::NotEnrolled {
                    message: format!(
                        "the server refused the enrollment code (HTTP {status}): {message}"
                    ),
                },
                other => other.into(),
            })
    }

    /// Opens the store at `path`, creating it for `site_id` if it does not exist yet. A store
    /// created here records offline but is not enrolled, so its `sync` fails with
    /// `NotEnrolled`: phones are set up with `enroll`. Opening an existing store set up for
    /// another site fails. `durability` defaults to `Full`.
    #[uniffi::constructor(default(durability = None))]
    pub fn create(
        path: String,
        site_id: String,
        durability: Option<FfiDurability>,
    ) -> FfiResult<Arc<Self>> {
        let site = SiteId::new(site_id).map_err(Error::from)?;
        Self::with_options(path, Some(site), durability.unwrap_or_default()).map(Arc::new)
    }

    /// Sets (or with `None` removes) the observer told about new events and sync attempts.
    pub fn set_observer(&self, observer: Option<Arc<dyn EventObserver>>) {
        match self.observer.lock() {
            Ok(mut slot) => *slot = observer,
            Err(poisoned) => *poisoned.into_inner() = observer,
        }
    }

    /// This phone's id (UUID), made when the store was created.
    pub fn device_id(&self) -> FfiResult<String> {
        Ok(lock(&self.store, "store")?.device_id().to_string())
    }

    /// The site this phone's store is set up for.
    pub fn site_id(&self) -> FfiResult<String> {
        Ok(lock(&self.store, "store")?.site().to_string())
    }

    /// Whether the store was made by enrolling (only then can it sync).
    pub fn is_enrolled(&self) -> FfiResult<bool> {
        Ok(lock(&self.store, "store")?.credential().is_some())
    }

    /// The public key (64 hex digits) this phone signs its shift logs with, made when it
    /// enrolled; `None` for a store enrolled before keys existed or never enrolled. Show it to
    /// whoever records the phone's enrollment: `patrol verify` checks an exported log against it.
    pub fn public_key(&self) -> FfiResult<Option<String>> {
        Ok(lock(&self.store, "store")?
            .public_key()
            .map(|k| k.to_string()))
    }

    /// The server the phone enrolled with, if it did.
    pub fn server_url(&self) -> FfiResult<Option<String>> {
        Ok(lock(&self.store, "store")?.server_url().map(str::to_owned))
    }

    /// The shift in progress, if any.
    pub fn current_shift(&self) -> FfiResult<Option<FfiShift>> {
        Ok(lock(&self.store, "store")?
            .current_shift()
            .map(FfiShift::from))
    }

    /// Starts a shift for `guard_id`; returns the shift id. Fails with `ShiftAlreadyOpen` while
    /// one is in progress.
    pub fn start_shift(&self, guard_id: String) -> FfiResult<String> {
        let guard = GuardId::new(guard_id).map_err(Error::from)?;
        self.record(|store| Ok((None, store.start_shift(guard)?.to_string())))
    }

    /// Ends the shift in progress, with an optional closing note; returns the event id.
    #[uniffi::method(default(note = None))]
    pub fn end_shift(&self, note: Option<String>) -> FfiResult<String> {
        self.record(|store| {
            let id = store.end_shift(note)?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Records a checkpoint scan; returns the event id. With `event_id` set, repeating the call
    /// with the same content records it once.
    pub fn scan_checkpoint(&self, input: FfiScanInput) -> FfiResult<String> {
        let (scan, options) = scan_from(input)?;
        self.record(|store| {
            let id = store.scan(scan, options)?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Records a free-text note; returns the event id.
    pub fn add_note(&self, text: String) -> FfiResult<String> {
        self.record(|store| {
            let id = store.note(text)?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// Records a panic alarm, with the position if the phone has one; returns the event id.
    #[uniffi::method(default(location = None))]
    pub fn raise_panic(&self, location: Option<FfiLocation>) -> FfiResult<String> {
        let body = EventBody::Panic {
            location: location.map(Into::into),
        };
        self.record(|store| {
            let id = store.record(body, RecordOptions::default())?;
            Ok((Some(id), id.to_string()))
        })
    }

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

    /// Records a handover note, to a named guard or to whoever takes over; returns the event id.
    pub fn handover(&self, to_guard: Option<String>, text: String) -> FfiResult<String> {
        let to_guard = to_guard
            .map(GuardId::new)
            .transpose()
            .map_err(Error::from)?;
        self.record(|store| {
            let id = store.record(
                EventBody::Handover { to_guard, text },
                RecordOptions::default(),
            )?;
            Ok((Some(id), id.to_string()))
        })
    }

    /// The local log in the device's order: of one shift, or (with `None`) of all shifts.
    #[uniffi::method(default(shift_id = None))]
    pub fn events(&self, shift_id: Option<String>) -> FfiResult<Vec<FfiEvent>> {
        let shift = shift_id
            .as_deref()
            .map(parse_uuid_id::<ShiftId>)
            .transpose()?;
        let events = lock(&self.store, "store")?.events(shift)?;
        Ok(events.into_iter().map(Into::into).collect())
    }

    /// Pending events, last attempt and success, last error, refused logs.
    pub fn status(&self) -> FfiResult<FfiSyncStatus> {
        Ok(lock(&self.store, "store")?.status()?.into())
    }

    /// Whether the outbox should sync now: something is pending and the backoff after the last
    /// failure has passed (an undelivered panic alarm makes it due at once). For the app's
    /// scheduler; `sync` itself may be called at any time.
    pub fn sync_due(&self) -> FfiResult<bool> {
        Ok(lock(&self.store, "store")?.sync_due()?)
    }

    /// Sends everything the server has not acknowledged to `server_url` (e.g.
    /// `https://patrol.example.org`) and marks delivered what it acknowledges.
    ///
    /// Blocking: it returns when the exchange is over (each request is bounded by a 30 s
    /// timeout), so call it from a background thread (a WorkManager worker, a background task).
    /// Safe to repeat and to interrupt: an event is marked delivered only once the server holds
    /// it. A `Network` error means try again later. Concurrent calls run one after another;
    /// recordings made meanwhile wait for the exchange. The observer hears the resulting status
    /// whether the sync succeeded or not.
    pub fn sync(&self, server_url: String) -> FfiResult<FfiSyncReport> {
        let result = self.sync_inner(&server_url);
        self.notify_status();
        result.map(Into::into)
    }
}

// ---------------------------------------------------------------------------------------------
// Incidents, site configuration, tour progress and alarms

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
            pending: i.pending,
            rejected: i.rejected,
        }
    }
}

/// A checkpoint scanned by its NFC tag or QR code, resolved through the site configuration.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct FfiTagScanInput {
    /// The NFC tag id or QR payload as read.
    pub tag: String,
    /// True for a QR code, false for an NFC tag.
    #[uniffi(default = false)]
    pub qr: bool,
    #[uniffi(default)]
    pub location: Option<FfiLocation>,
    #[uniffi(default)]
    pub note: Option<String>,
    #[uniffi(default)]
    pub event_id: Option<String>,
    #[uniffi(default)]
    pub wall_time_ms: Option<i64>,
}

/// A recorded tag scan: the checkpoint it proved (`unknown` if no checkpoint has the tag) and
/// what looks wrong about it (`unknown_checkpoint`, `unknown_tag`, `tag_of_another_checkpoint`,
/// `manual`, `far_from_checkpoint`). A scan is never refused.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiScanResult {
    pub event_id: String,
    pub checkpoint_id: String,
    pub flags: Vec<String>,
}

fn flag_name(f: &ScanFlag) -> String {
    match f {
        ScanFlag::UnknownCheckpoint => "unknown_checkpoint".into(),
        ScanFlag::UnknownTag => "unknown_tag".into(),
        ScanFlag::TagOfAnotherCheckpoint(_) => "tag_of_another_checkpoint".into(),
        ScanFlag::Manual => "manual".into(),
        ScanFlag::FarFromCheckpoint { .. } => "far_from_checkpoint".into(),
    }
}

/// A tour of the site configuration.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiTour {
    pub id: String,
    pub name: String,
    pub checkpoint_ids: Vec<String>,
}

/// The site configuration the phone holds.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiSiteConfig {
    pub version: u64,
    pub checkpoint_ids: Vec<String>,
    pub tours: Vec<FfiTour>,
    /// Post orders as (title, text).
    pub post_orders: Vec<FfiPostOrder>,
}

#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiPostOrder {
    pub title: String,
    pub text: String,
}

/// One checkpoint of a tour window: `upcoming`, `due`, `late`, `done`, `done_late` or
/// `missed`; `at_ms` is the scan's device time when done.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiCheckpointProgress {
    pub checkpoint_id: String,
    pub state: String,
    pub at_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiWindowProgress {
    pub tour_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub checkpoints: Vec<FfiCheckpointProgress>,
}

impl From<WindowProgress> for FfiWindowProgress {
    fn from(w: WindowProgress) -> Self {
        FfiWindowProgress {
            tour_id: w.tour,
            start_ms: w.window.start_ms,
            end_ms: w.window.end_ms,
            checkpoints: w
                .checkpoints
                .into_iter()
                .map(|(cp, state)| {
                    let (state, at_ms) = match state {
                        CheckpointState::Upcoming => ("upcoming", None),
                        CheckpointState::Due => ("due", None),
                        CheckpointState::Late => ("late", None),
                        CheckpointState::Done { at_ms } => ("done", Some(at_ms)),
                        CheckpointState::DoneLate { at_ms } => ("done_late", Some(at_ms)),
                        CheckpointState::Missed => ("missed", None),
                    };
                    FfiCheckpointProgress {
                        checkpoint_id: cp.to_string(),
                        state: state.into(),
                        at_ms,
                    }
                })
                .collect(),
        }
    }
}

/// Where a panic alarm stands.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum FfiAlarmState {
    /// On this phone only, retried at once whenever a network appears.
    Queued,
    /// On the server, not yet acknowledged by the control room.
    Delivered,
    /// The control room has acknowledged it (seen at the last sync).
    Acknowledged { by: String, at_ms: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct FfiAlarm {
    pub event_id: String,
    pub recorded_ms: i64,
    pub state: FfiAlarmState,
}

impl From<Alarm> for FfiAlarm {
    fn from(a: Alarm) -> Self {
        FfiAlarm {
            event_id: a.event.to_string(),
            recorded_ms: a.recorded_ms,
            state: match a.state {
                AlarmState::Queued => FfiAlarmState::Queued,
                AlarmState::Delivered => FfiAlarmState::Delivered,
                AlarmState::Acknowledged { by, at_ms } => FfiAlarmState::Acknowledged { by, at_ms },
            },
        }
    }
}

#[uniffi::export]
impl PatrolDevice {
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

    /// Adds a note to an incident (shorthand for `update_incident` with `AddNote`).
    pub fn add_incident_note(&self, incident_id: String, text: String) -> FfiResult<FfiIncident> {
        self.update_incident(incident_id, FfiIncidentAction::AddNote { text })
    }

    /// Every incident the phone holds: those its guard reported or worked, and those the
    /// control room assigned to the guard (as of the last sync); most recently changed first.
    pub fn incidents(&self) -> FfiResult<Vec<FfiIncident>> {
        let store = lock(&self.store, "store")?;
        Ok(store.incidents()?.into_iter().map(Into::into).collect())
    }

    pub fn incident(&self, incident_id: String) -> FfiResult<Option<FfiIncident>> {
        let id = parse_uuid_id::<IncidentId>(&incident_id)?;
        let store = lock(&self.store, "store")?;
        Ok(store.incident(id)?.map(Into::into))
    }

    /// Records a scan of an NFC tag or QR code: the checkpoint comes from the site
    /// configuration; a tag it does not know is recorded all the same, and flagged.
    pub fn scan_tag(&self, input: FfiTagScanInput) -> FfiResult<FfiScanResult> {
        let options = RecordOptions {
            event_id: input
                .event_id
                .as_deref()
                .map(parse_uuid_id::<EventId>)
                .transpose()?,
            wall_ms: input.wall_time_ms,
        };
        self.record(|store| {
            let checkpoint = store.checkpoint_for_tag(&input.tag)?;
            let method = if input.qr {
                ScanMethod::Qr { payload: input.tag }
            } else {
                ScanMethod::Nfc { tag: input.tag }
            };
            let scan = Scan {
                checkpoint: checkpoint.clone(),
                method,
                location: input.location.map(Into::into),
                note: input.note,
            };
            let flags = store.scan_flags(&scan)?;
            let id = store.scan(scan, options)?;
            Ok((
                Some(id),
                FfiScanResult {
                    event_id: id.to_string(),
                    checkpoint_id: checkpoint.to_string(),
                    flags: flags.iter().map(flag_name).collect(),
                },
            ))
        })
    }

    /// The site configuration the phone holds (after a sync), if any.
    pub fn site_config(&self) -> FfiResult<Option<FfiSiteConfig>> {
        let store = lock(&self.store, "store")?;
        Ok(store.site_config()?.map(|c| FfiSiteConfig {
            version: c.version,
            checkpoint_ids: c.checkpoints.iter().map(|cp| cp.id.to_string()).collect(),
            tours: c
                .tours
                .iter()
                .map(|t| FfiTour {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    checkpoint_ids: t.checkpoints.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            post_orders: c
                .post_orders
                .iter()
                .map(|p| FfiPostOrder {
                    title: p.title.clone(),
                    text: p.text.clone(),
                })
                .collect(),
        }))
    }

    /// Which checkpoints of a tour are done, due, late or missed at `now_ms` (ms since the Unix
    /// epoch), from this phone's scans and its site configuration: no network needed.
    pub fn tour_progress(&self, tour_id: String, now_ms: i64) -> FfiResult<Vec<FfiWindowProgress>> {
        let store = lock(&self.store, "store")?;
        Ok(store
            .tour_progress(&tour_id, now_ms)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Panic alarms raised on this phone, newest first: queued, delivered or acknowledged.
    pub fn alarms(&self) -> FfiResult<Vec<FfiAlarm>> {
        let store = lock(&self.store, "store")?;
        Ok(store.alarms()?.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn temp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
    }

    fn path(dir: &tempfile::TempDir, name: &str) -> String {
        dir.path().join(name).display().to_string()
    }

    fn device(dir: &tempfile::TempDir) -> Arc<PatrolDevice> {
        PatrolDevice::create(path(dir, "phone.db"), "site-1".into(), None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A store as enrollment makes it, with what a server would have given the phone (no
    /// server is needed to record; these tests' syncs fail before any server answers).
    fn enrolled(dir: &tempfile::TempDir) -> Arc<PatrolDevice> {
        let enrollment = crate::store::Enrollment {
            site: SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}")),
            device: patrol_core::DeviceId::generate(),
            credential: format!("pd_{}", "A".repeat(43)),
            server_url: "http://127.0.0.1:9".into(),
            signing_key: None,
        };
        let store = DeviceStore::create_enrolled(
            path(dir, "phone.db"),
            enrollment,
            StoreOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(PatrolDevice::from_store(store, SyncState::default()))
    }

    fn nfc(checkpoint: &str) -> FfiScanInput {
        FfiScanInput {
            checkpoint_id: checkpoint.into(),
            method: FfiScanMethod::Nfc {
                tag: "04:A2:2B".into(),
            },
            location: Some(FfiLocation {
                lat: 51.5074,
                lon: -0.1278,
                accuracy_m: Some(20.0),
            }),
            note: None,
            event_id: None,
            wall_time_ms: None,
        }
    }

    fn is_invalid<T: fmt::Debug>(r: FfiResult<T>) -> bool {
        matches!(r, Err(PatrolError::InvalidInput { .. }))
    }

    /// Keeps what it hears; optionally reads the device back from inside the callback, which
    /// deadlocks if the store is still locked.
    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<FfiEvent>>,
        statuses: Mutex<Vec<FfiSyncStatus>>,
        reenter: Mutex<Option<Weak<PatrolDevice>>>,
        reentered: Mutex<usize>,
    }

    impl Recorder {
        fn events(&self) -> Vec<FfiEvent> {
            self.events.lock().map(|e| e.clone()).unwrap_or_default()
        }
        fn statuses(&self) -> Vec<FfiSyncStatus> {
            self.statuses.lock().map(|s| s.clone()).unwrap_or_default()
        }
        fn reenter(&self) {
            let device = self
                .reenter
                .lock()
                .ok()
                .and_then(|d| d.as_ref().and_then(Weak::upgrade));
            if let Some(device) = device {
                assert!(device.events(None).is_ok());
                assert!(device.status().is_ok());
                if let Ok(mut n) = self.reentered.lock() {
                    *n += 1;
                }
            }
        }
    }

    impl EventObserver for Recorder {
        fn on_event_recorded(&self, event: FfiEvent) {
            self.reenter();
            if let Ok(mut events) = self.events.lock() {
                events.push(event);
            }
        }
        fn on_sync_status(&self, status: FfiSyncStatus) {
            self.reenter();
            if let Ok(mut statuses) = self.statuses.lock() {
                statuses.push(status);
            }
        }
    }

    #[test]
    fn internal_errors_map_to_the_public_kinds() {
        use patrol_core::DecodeError;
        let shift = ShiftId::generate();
        let cases: Vec<(Error, PatrolError)> = vec![
            (
                Error::Invalid(ValidationError::Empty { field: "note" }),
                invalid("note must not be empty"),
            ),
            (Error::NoOpenShift, PatrolError::NoOpenShift),
            (Error::Log(LogError::Frozen), PatrolError::NoOpenShift),
            (
                Error::ShiftAlreadyOpen(shift),
                PatrolError::ShiftAlreadyOpen {
                    message: format!("shift {shift} is already open; end it first"),
                },
            ),
            (
                Error::Network("connection refused".into()),
                PatrolError::Network {
                    message: "network: connection refused".into(),
                },
            ),
            (
                Error::ServerTransient {
                    status: 503,
                    message: "busy".into(),
                    retry_after_ms: Some(1_000),
                },
                PatrolError::Network {
                    message: "server error (HTTP 503), will retry: busy".into(),
                },
            ),
            (
                Error::ServerRejected {
                    status: 404,
                    message: "unknown site".into(),
                },
                PatrolError::ServerRejected {
                    message: "the server refused the sync (HTTP 404): unknown site".into(),
                },
            ),
        ];
        for (internal, public) in cases {
            assert_eq!(PatrolError::from(internal), public);
        }
        let kind = |e: Error| PatrolError::from(e).kind();
        assert_eq!(kind(Error::BadResponse("short".into())), "network");
        assert_eq!(
            kind(Error::Sqlite(rusqlite::Error::InvalidQuery)),
            "storage"
        );
        assert_eq!(
            kind(Error::SchemaTooNew {
                path: "p".into(),
                found: 9,
                known: 2
            }),
            "storage"
        );
        assert_eq!(kind(Error::Corrupt("heads".into())), "corrupt");
        assert_eq!(
            kind(Error::Log(LogError::Decode(DecodeError::Empty))),
            "corrupt"
        );
        assert_eq!(
            kind(Error::Quarantined {
                path: "p".into(),
                moved_to: "p.corrupt".into(),
                reason: "r".into()
            }),
            "corrupt"
        );
        assert_eq!(
            kind(Error::Log(LogError::ConflictingEvent(EventId::generate()))),
            "invalid_input"
        );
        assert_eq!(
            kind(Error::WrongSite {
                existing: "a".into(),
                requested: "b".into()
            }),
            "invalid_input"
        );
        assert!(PatrolError::from(Error::Network(String::new())).is_retryable());
        assert!(!PatrolError::from(Error::NoOpenShift).is_retryable());
    }

    #[test]
    fn messages_carry_no_personal_data() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        device.start_shift("guard-1".into())?;

        // A position out of range: where the guard was stays out of the message.
        let far = FfiLocation {
            lat: 91.123_456,
            lon: -0.987_654,
            accuracy_m: None,
        };
        let err = device.raise_panic(Some(far)).err().ok_or("accepted")?;
        assert!(matches!(err, PatrolError::InvalidInput { .. }));
        let text = err.to_string();
        assert!(!text.contains("91.12") && !text.contains("0.98"), "{text}");

        // A note too long: its length is named, not its text.
        let secret = format!(
            "patient in bed 4 {}",
            "x".repeat(patrol_core::event::MAX_TEXT_LEN)
        );
        let err = device.add_note(secret).err().ok_or("accepted")?;
        assert!(matches!(err, PatrolError::InvalidInput { .. }));
        assert!(!err.to_string().contains("patient"), "{err}");

        // The store at a path nobody set up: the path is not repeated.
        let err = PatrolDevice::open(path(&dir, "guard-jane-doe.db"), None)
            .err()
            .ok_or("opened")?;
        assert!(matches!(err, PatrolError::Storage { .. }), "{err:?}");
        assert!(!err.to_string().contains("jane"), "{err}");
        Ok(())
    }

    #[test]
    fn ids_are_validated_on_the_way_in() -> TestResult {
        let dir = temp();
        assert!(is_invalid(PatrolDevice::create(
            path(&dir, "a.db"),
            "site 1".into(),
            None
        )));
        let device = device(&dir);
        assert!(is_invalid(device.start_shift("guard/1".into())));
        assert_eq!(device.current_shift()?, None);
        device.start_shift("guard-1".into())?;

        assert!(is_invalid(device.scan_checkpoint(nfc("cp 12"))));
        assert!(is_invalid(device.scan_checkpoint(nfc(""))));
        let mut bad_event_id = nfc("cp-12");
        bad_event_id.event_id = Some("not-a-uuid".into());
        assert!(is_invalid(device.scan_checkpoint(bad_event_id)));
        assert!(is_invalid(
            device.handover(Some("guard 2".into()), "keys on the hook".into())
        ));
        assert!(is_invalid(device.events(Some("not-a-shift".into()))));
        let gps_without_fix = FfiScanInput {
            method: FfiScanMethod::Gps,
            location: None,
            ..nfc("cp-12")
        };
        assert!(is_invalid(device.scan_checkpoint(gps_without_fix)));
        assert!(is_invalid(device.sync("ftp://example.org".into())));
        // Nothing but the shift's start was recorded.
        assert_eq!(device.events(None)?.len(), 1);
        // The store holds its file while open: a second opener is refused as such.
        let second = PatrolDevice::create(path(&dir, "phone.db"), "site-1".into(), None);
        assert!(
            matches!(second, Err(PatrolError::Storage { .. })),
            "{second:?}"
        );
        drop(device);
        assert!(is_invalid(PatrolDevice::create(
            path(&dir, "phone.db"),
            "site-2".into(),
            None
        )));
        Ok(())
    }

    #[test]
    fn a_shift_through_the_exported_api() -> TestResult {
        let dir = temp();
        let device = PatrolDevice::create(
            path(&dir, "phone.db"),
            "site-1".into(),
            Some(FfiDurability::Normal),
        )?;
        assert_eq!(device.site_id()?, "site-1");
        assert_eq!(
            device.add_note("too early".into()),
            Err(PatrolError::NoOpenShift)
        );
        let shift = device.start_shift("guard-1".into())?;
        assert!(matches!(
            device.start_shift("guard-2".into()),
            Err(PatrolError::ShiftAlreadyOpen { .. })
        ));
        let current = device.current_shift()?.ok_or("no shift")?;
        assert_eq!(
            (current.shift_id.as_str(), current.guard_id.as_str()),
            (shift.as_str(), "guard-1")
        );

        // An app-chosen event id makes a retried call record once.
        let retried = FfiScanInput {
            event_id: Some(EventId::generate().to_string()),
            wall_time_ms: Some(1_740_866_400_000),
            ..nfc("cp-12")
        };
        let first = device.scan_checkpoint(retried.clone())?;
        assert_eq!(device.scan_checkpoint(retried.clone())?, first);
        assert_eq!(retried.event_id.as_deref(), Some(first.as_str()));

        let photo = FfiAttachment {
            sha256_hex: "ab".repeat(32),
            media_type: "image/jpeg".into(),
            size: 48_213,
            name: Some("plant-room.jpg".into()),
        };
        let incident = device.report_incident(
            FfiIncidentCategory::Fire,
            FfiSeverity::High,
            "smoke in plant room 2".into(),
            None,
            vec![photo.clone()],
        )?;
        let worked = device.add_incident_note(incident.clone(), "brigade called".into())?;
        assert_eq!(worked.attachments, vec![photo]);
        assert_eq!(worked.notes.len(), 1);
        assert!(worked.pending);
        assert_eq!(worked.category.as_deref(), Some("fire"));
        let bad_hash = FfiAttachment {
            sha256_hex: "zz".into(),
            media_type: "image/jpeg".into(),
            size: 1,
            name: None,
        };
        assert!(is_invalid(device.update_incident(
            incident.clone(),
            FfiIncidentAction::Attach {
                attachment: bad_hash
            }
        )));
        assert!(is_invalid(
            device.update_incident(incident.clone(), FfiIncidentAction::Reopen)
        ));
        // Without a site configuration, a tag scan is still recorded, and flagged.
        let stray = device.scan_tag(FfiTagScanInput {
            tag: "04:a2:19".into(),
            qr: false,
            location: None,
            note: None,
            event_id: None,
            wall_time_ms: None,
        })?;
        assert_eq!(stray.checkpoint_id, "unknown");
        assert_eq!(stray.flags, vec!["unknown_checkpoint".to_owned()]);
        device.raise_panic(None)?;
        assert!(matches!(
            device.alarms()?.first().map(|a| &a.state),
            Some(FfiAlarmState::Queued)
        ));
        device.handover(None, "B2 door reported".into())?;
        let ended = device.end_shift(Some("quiet night".into()))?;
        assert_eq!(device.current_shift()?, None);

        let events = device.events(Some(shift.clone()))?;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "shift_started",
                "checkpoint_scanned",
                "incident_reported",
                "checkpoint_scanned",
                "panic",
                "handover",
                "shift_ended"
            ]
        );
        assert_eq!(events[1].id, first);
        assert_eq!(events[1].device_time_ms, 1_740_866_400_000);
        assert_eq!(events[6].id, ended);
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
        assert!(
            events
                .iter()
                .all(|e| e.shift_id == shift && e.guard_id == "guard-1")
        );
        let json: serde_json::Value = serde_json::from_str(&events[2].json)?;
        assert_eq!(json["incident"], incident.as_str());
        assert_eq!(json["category"], "fire");
        assert_eq!(json["device_id"], device.device_id()?.as_str());

        let status = device.status()?;
        assert_eq!(status.pending_events, 7);
        assert!(status.urgent);
        assert!(device.sync_due()?);

        // Reopened, the store holds the same log.
        drop(device);
        let again = PatrolDevice::open(path(&dir, "phone.db"), None)?;
        assert_eq!(again.events(None)?, events);
        Ok(())
    }

    /// Runs `f` on another thread and fails if it does not finish: a re-entrant observer
    /// deadlocks if the store is still locked when it is called.
    fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("deadlock: the observer was called with the store locked"))
    }

    #[test]
    fn the_observer_hears_every_recording_without_the_store_locked() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        let recorder = Arc::new(Recorder::default());
        if let Ok(mut slot) = recorder.reenter.lock() {
            *slot = Some(Arc::downgrade(&device));
        }
        device.set_observer(Some(recorder.clone()));

        let ids = within_seconds({
            let device = device.clone();
            move || -> FfiResult<Vec<String>> {
                let shift = device.start_shift("guard-1".into())?;
                let scan = device.scan_checkpoint(nfc("cp-1"))?;
                let note = device.add_note("lift 3 out of service".into())?;
                // A refused call is not reported.
                assert!(device.add_note("  ".into()).is_err());
                let panic = device.raise_panic(None)?;
                let end = device.end_shift(None)?;
                Ok(vec![shift, scan, note, panic, end])
            }
        })?;

        let heard = recorder.events();
        let events = device.events(None)?;
        assert_eq!(heard, events);
        assert_eq!(heard.len(), 5);
        assert_eq!(heard[0].shift_id, ids[0]);
        assert_eq!(heard[0].kind, "shift_started");
        let heard_ids: Vec<&str> = heard[1..].iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            heard_ids,
            ids[1..].iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(recorder.reentered.lock().map(|n| *n).unwrap_or(0), 5);

        // Removed, it hears nothing more.
        device.set_observer(None);
        device.start_shift("guard-2".into())?;
        assert_eq!(recorder.events().len(), 5);
        Ok(())
    }

    #[test]
    fn a_failed_sync_is_a_retryable_error_and_the_observer_hears_the_status() -> TestResult {
        let dir = temp();
        let device = enrolled(&dir);
        let recorder = Arc::new(Recorder::default());
        if let Ok(mut slot) = recorder.reenter.lock() {
            *slot = Some(Arc::downgrade(&device));
        }
        device.set_observer(Some(recorder.clone()));
        device.start_shift("guard-1".into())?;
        device.add_note("basement level 3".into())?;

        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = within_seconds({
            let device = device.clone();
            move || device.sync(url)
        })
        .err()
        .ok_or("synced")?;
        assert!(matches!(err, PatrolError::Network { .. }), "{err:?}");
        assert!(err.is_retryable());

        let statuses = recorder.statuses();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].pending_events, 2);
        assert_eq!(statuses[0].consecutive_failures, 1);
        assert!(statuses[0].last_error.is_some());
        assert!(statuses[0].next_attempt_ms.is_some());
        assert_eq!(device.status()?, statuses[0]);
        assert_eq!(
            device.events(None)?.iter().filter(|e| e.delivered).count(),
            0
        );
        Ok(())
    }

    #[test]
    fn a_store_not_made_by_enrolling_records_but_cannot_sync() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        assert!(!device.is_enrolled()?);
        assert_eq!(device.server_url()?, None);
        device.start_shift("guard-1".into())?;
        device.add_note("recorded offline".into())?;
        // A port nobody listens on: the sync fails before it would try the network.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let err = device
            .sync(format!("http://127.0.0.1:{port}"))
            .err()
            .ok_or("synced")?;
        assert!(matches!(err, PatrolError::NotEnrolled { .. }), "{err:?}");
        assert!(!err.is_retryable());
        let status = device.status()?;
        assert_eq!(status.pending_events, 2);
        assert!(
            status
                .last_error
                .is_some_and(|e| e.contains("not enrolled"))
        );

        // Enrolling into a path that holds a store is refused before the code is sent.
        let err = PatrolDevice::enroll(
            path(&dir, "phone.db"),
            format!("http://127.0.0.1:{port}"),
            format!("pe_{}", "A".repeat(43)),
            None,
        )
        .err()
        .ok_or("enrolled")?;
        assert!(matches!(err, PatrolError::InvalidInput { .. }), "{err:?}");
        assert_eq!(device.events(None)?.len(), 2);

        let other = temp();
        let enrolled = enrolled(&other);
        assert!(enrolled.is_enrolled()?);
        assert_eq!(
            enrolled.server_url()?.as_deref(),
            Some("http://127.0.0.1:9")
        );
        Ok(())
    }

    /// An observer that fails (a foreign exception arrives in Rust as a panic).
    struct Failing;

    impl EventObserver for Failing {
        fn on_event_recorded(&self, _: FfiEvent) {
            panic!("observer failed");
        }
        fn on_sync_status(&self, _: FfiSyncStatus) {
            panic!("observer failed");
        }
    }

    #[test]
    fn a_failing_observer_does_not_fail_the_call() -> TestResult {
        let dir = temp();
        let device = device(&dir);
        device.set_observer(Some(Arc::new(Failing)));
        device.start_shift("guard-1".into())?;
        let id = device.add_note("fire door B2 propped open".into())?;
        assert_eq!(device.events(None)?.last().map(|e| e.id.clone()), Some(id));
        // The store was not poisoned by the observer's failure.
        device.add_note("and again".into())?;
        assert_eq!(device.status()?.pending_events, 3);
        Ok(())
    }

    #[test]
    fn a_panic_is_recorded_while_a_sync_waits_on_the_network() -> TestResult {
        let dir = temp();
        let device = enrolled(&dir);
        device.start_shift("guard-1".into())?;
        // A "server" that accepts the connection and answers only when told to.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let syncing = {
            let device = Arc::clone(&device);
            std::thread::spawn(move || device.sync(url))
        };
        let (connection, _) = listener.accept()?;
        // The sync is now waiting on the network; a panic alarm must not wait for it.
        let (tx, rx) = mpsc::channel();
        {
            let device = Arc::clone(&device);
            std::thread::spawn(move || {
                let _ = tx.send(device.raise_panic(None));
            });
        }
        let recorded = rx.recv_timeout(Duration::from_secs(60));
        assert!(!syncing.is_finished(), "the sync was still in flight");
        drop(connection);
        let synced = syncing.join().map_err(|_| "sync thread panicked")?;
        assert!(
            recorded.is_ok_and(|r| r.is_ok()),
            "the panic was recorded during the sync"
        );
        assert!(matches!(synced, Err(PatrolError::Network { .. })));
        assert!(device.status()?.urgent);
        Ok(())
    }
}
