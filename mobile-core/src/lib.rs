//! # patrol-mobile
//!
//! The library inside a guard's phone app. It keeps the phone's patrol log in one SQLite file
//! and syncs it with the patrol server whenever a network appears.
//!
//! - [`store::DeviceStore`]: create the store of an enrolled phone (with the device id and
//!   credential from [`sync::SyncClient::enroll`]) or open it, start and end shifts, record scans,
//!   notes and other events (each durable before the call returns), list the local log, and
//!   build and apply sync rounds. Delivery is set only from the server's acknowledged heads.
//!   One store object owns the file while it is open.
//! - [`sync::SyncClient`]: the HTTP transport (reqwest): enrollment, and sync rounds that
//!   present the device's credential.
//! - [`transport::Transport`]: which server URLs are accepted (`https://`; `http://` only on
//!   loopback unless allowed for a lab) and which certificates are trusted.
//! - [`backoff`]: when to retry a failed sync, and how failures are classed.
//! - [`clock`]: the device clocks stamped on each event (wall, time since boot with boot id).
//! - [`schema`]: numbered migrations under `PRAGMA user_version`.
//! - [`ffi`]: the API exported to the Kotlin, Swift and Python apps through UniFFI
//!   ([`ffi::PatrolDevice`], [`ffi::PatrolError`], [`ffi::EventObserver`]), one file per concept
//!   under `ffi/` (device and enrollment, recording, incidents, alarms, tours, sync, the
//!   observer, errors, shared records; its guide lists them); see `docs/mobile.md`.
//!
//! The rules shared with the server (validation, the shift-log document, the protocol, what
//! counts as delivered) live in `patrol-core`; this crate adds storage and transport only.

pub mod backoff;
pub mod clock;
pub mod error;
pub mod ffi;
pub mod schema;
pub mod store;
pub mod sync;
pub mod transport;

pub use error::{Error, Result};
pub use store::{
    Alarm, AlarmState, CheckInStatus, Corrected, DeviceStore, Durability, Enrollment, LocalEvent,
    LocalIncident, NewFile, RecordOptions, RejectedLog, ShiftInfo, StoreOptions, SyncReport,
    SyncStatus,
};
pub use sync::SyncClient;
pub use transport::Transport;

// The UniFFI scaffolding: the C-ABI entry points the generated bindings call.
uniffi::setup_scaffolding!();
