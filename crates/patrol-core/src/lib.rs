//! # patrol-core
//!
//! The sans-I/O heart of the guard patrol system, shared by the phone (`patrol-mobile`) and the
//! server (`patrol-server`) so that no rule is written twice. It does no I/O: no files, sockets,
//! threads or clocks of its own (callers pass the time in).
//!
//! - [`bundle_limits`]: what a pushed bundle may ask of the parser (values per column,
//!   inflated bytes), checked before automerge expands it.
//! - [`checkin`]: lone-worker safety timers: when a guard's next check-in is due, the one rule
//!   the phone (which alarms the guard) and the server (which alarms the control room) apply.
//! - [`clock`]: a device's clock offset as a sync measures it, and events' corrected times.
//! - [`codec`]: the versioned binary form of stored values, and stored heads.
//! - [`compliance`]: which scan counts for which tour window, each checkpoint's state (on time,
//!   late, missed, not yet due), a window's compliance, and when its answer is final.
//! - [`ids`]: site, device, guard, shift, checkpoint, event and incident identifiers.
//! - [`evidence`]: devices' ed25519 signatures over their shift logs' heads, and the offline
//!   check of an exported log against a device's public key.
//! - [`event`]: what a guard records (scans, incidents, panics, notes, shift start/end,
//!   handovers), its validation and its compact binary encoding.
//! - [`flags`]: what about an event deserves a second look: the one function the server (when
//!   it stores an event) and the phone (beside its own events) both flag events with.
//! - [`hlc`]: the hybrid logical clock stamped on every event.
//! - [`incident`]: the collaborative incident document, each field's merge rule and its history.
//! - [`incident_view`]: an incident's state as the control-room API's JSON.
//! - [`shiftlog`]: the automerge document holding one device's events of one shift; an event is
//!   prepared (checked, encoded) and then appended as one change, which the same record
//!   appended to the same log always gives again.
//! - [`schedule`]: tour schedules in a site's local time and their expansion into windows
//!   across midnight and daylight-saving changes.
//! - [`siteconfig`]: checkpoints, tours and post orders, the site's time zone and thresholds;
//!   tour progress.
//! - [`protocol`]: the sync messages exchanged over HTTP and their binary encoding.
//! - [`merge`]: the pure functions that plan a push, check and merge it on the server, and tell
//!   the device what is delivered.
//!
//! This crate must not depend on tokio, rusqlite, reqwest, axum, hyper, uniffi or a database
//! driver (`scripts/check-core-deps.sh` checks it in CI).

pub mod bundle_limits;
pub mod checkin;
pub mod clock;
pub mod codec;
pub mod compliance;
pub mod error;
pub mod event;
pub mod evidence;
pub mod flags;
pub mod hlc;
pub mod ids;
pub mod incident;
pub mod incident_view;
pub mod merge;
pub mod protocol;
pub mod schedule;
pub mod shiftlog;
pub mod siteconfig;

pub use automerge::ChangeHash;
pub use error::{DecodeError, EncodeError, LogError, ValidationError};
pub use event::{
    DeviceTime, Event, EventBody, EventRecord, IncidentCategory, IncidentReport, Location, Scan,
    ScanMethod, Severity,
};
pub use hlc::Hlc;
pub use ids::{CheckpointId, DeviceId, EventId, GuardId, IncidentId, ShiftId, SiteId};
pub use shiftlog::{LocalChange, PreparedEvent, ShiftLog, ShiftMeta};
