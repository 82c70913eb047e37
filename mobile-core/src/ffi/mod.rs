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
//!   place (`From<Error> for PatrolError`), which also logs through `tracing` and keeps
//!   personal data (note texts, descriptions, positions) out of messages.
//! - [`EventObserver`]: implemented by the app to hear about new events and sync attempts.
//!
//! [`PatrolDevice`]'s exported methods are spread over the files of their concept (UniFFI takes
//! several `#[uniffi::export] impl` blocks of one object); each file holds its records too:
//!
//! - `device.rs`: the object itself, opening, creating and enrolling a store, the phone's
//!   identity (device, site, key, server).
//! - `recording.rs`: shifts, checkpoint scans, notes, handovers and the local log; the one path
//!   every recording takes (`record`: store, then observer).
//! - `incidents.rs`: reporting an incident and working it, with its attachments.
//! - `alarms.rs`: raising a panic alarm and where each alarm stands.
//! - `tours.rs`: the site configuration, tag scans resolved through it, tour progress.
//! - `sync.rs`: the sync status, the outbox's schedule and the blocking `sync`.
//! - `observer.rs`: [`EventObserver`] and how it is called.
//! - `error.rs`: [`PatrolError`] and the one conversion from the internal [`Error`].
//! - `records.rs`: records several concepts share (a location, an event) and id parsing.
//!
//! [`DeviceStore`]: crate::store::DeviceStore
//! [`SyncClient`]: crate::sync::SyncClient
//! [`Error`]: crate::error::Error

mod alarms;
mod device;
mod error;
mod incidents;
mod observer;
mod recording;
mod records;
mod sync;
#[cfg(test)]
mod testing;
mod tours;

pub use alarms::{FfiAlarm, FfiAlarmState};
pub use device::{FfiDurability, PatrolDevice};
pub use error::PatrolError;
pub use incidents::{
    FfiAttachment, FfiIncident, FfiIncidentAction, FfiIncidentCategory, FfiIncidentHistoryAction,
    FfiIncidentHistoryEntry, FfiIncidentNote, FfiSeverity,
};
pub use observer::EventObserver;
pub use recording::{FfiNewFile, FfiScanInput, FfiScanMethod, FfiShift};
pub use records::{FfiEvent, FfiLocation};
pub use sync::{FfiRejectedLog, FfiSyncReport, FfiSyncStatus, FfiTransport};
pub use tours::{
    FfiCheckpointProgress, FfiPostOrder, FfiScanResult, FfiSiteConfig, FfiTagScanInput, FfiTour,
    FfiWindowProgress,
};
