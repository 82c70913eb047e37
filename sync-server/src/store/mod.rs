//! Storage of the canonical site record, behind one trait so that backends (embedded SQLite now,
//! PostgreSQL later) are interchangeable. Everything SQL-specific stays inside a backend; the
//! merge of a pushed shift log into the stored document is shared by all of them ([`merge`]).
//!
//! Contract every backend keeps:
//! - A document push is applied in one transaction: its chunks, its `docs` row and its events
//!   in the projection commit together or not at all, and are durable once the call returns
//!   (the device forgets nothing until the server's heads cover it).
//! - Event sequence numbers are per site, gap-free, and become visible in order: a reader that
//!   saw `seq = n` never later finds a new event with a smaller `seq` (the feed relies on it).
//! - An event id gets at most one row per site, whatever is pushed again.

pub mod merge;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use patrol_core::merge::Owner;
use patrol_core::protocol::DocOutcome;
use patrol_core::{DeviceId, SiteId};
use thiserror::Error;

/// A boxed, sendable future, so that [`Store`] stays object-safe (`Arc<dyn Store>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A site as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub created_at_ms: i64,
}

/// One document push to apply: the owner comes from the request (later: its credentials).
#[derive(Clone, Debug)]
pub struct ShiftLogPush {
    pub owner: Owner,
    /// The automerge bundle (or concatenated changes) the device sent.
    pub changes: Vec<u8>,
    /// Server receive time of the request, stamped on every new event.
    pub received_at_ms: i64,
}

/// What a device told the server about itself in a sync, for the control room's device view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSync {
    pub site: SiteId,
    pub device: DeviceId,
    pub synced_at_ms: i64,
    pub pending_events: u64,
    /// Server time minus the device's clock at the sync.
    pub clock_skew_ms: i64,
}

/// A device of a site, as the control room sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    pub device: DeviceId,
    pub first_seen_ms: i64,
    pub last_sync_at_ms: i64,
    pub pending_events: u64,
    pub clock_skew_ms: i64,
}

/// One page of a site's event feed: each event's stored JSON text, in sequence order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<(u64, String)>,
    /// More events follow the last one returned.
    pub more: bool,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("site {0} does not exist")]
    UnknownSite(SiteId),
    #[error("site {0} already exists")]
    SiteExists(SiteId),
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
    #[error("stored data is invalid: {0}")]
    CorruptData(String),
    #[error("could not encode: {0}")]
    Encode(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The canonical site record.
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates a site; [`StoreError::SiteExists`] if its id is taken.
    fn create_site(&self, site: Site) -> BoxFuture<'_, Result<Site, StoreError>>;

    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StoreError>>;

    fn get_site(&self, site: SiteId) -> BoxFuture<'_, Result<Option<Site>, StoreError>>;

    /// Checks and merges one pushed shift log into the stored copy, in one transaction (see the
    /// module docs). A push the merge rules refuse is `Ok(DocOutcome::Rejected)` and changes
    /// nothing; `Err` is reserved for the server's own failures.
    fn push_shift_log(&self, push: ShiftLogPush) -> BoxFuture<'_, Result<DocOutcome, StoreError>>;

    /// Records that a device synced (creating its row on first contact).
    fn record_device_sync(&self, sync: DeviceSync) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Up to `limit` events with `seq > after`, in order; `None` if the site does not exist.
    fn events_after(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>>;

    /// The site's devices, ordered by device id; `None` if the site does not exist.
    fn devices(&self, site: SiteId)
    -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>>;
}
