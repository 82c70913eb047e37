//! Storage of the canonical site record, behind one trait so that backends (embedded SQLite now,
//! PostgreSQL later) are interchangeable. Everything SQL-specific stays inside a backend; the
//! merge of a pushed shift log into the stored document is shared by all of them ([`merge`]).
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

pub mod event_json;
pub mod merge;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use patrol_core::merge::Owner;
use patrol_core::protocol::DocOutcome;
use patrol_core::{DeviceId, ShiftId, SiteId};
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

/// One document of a sync request.
#[derive(Clone, Debug)]
pub struct ShiftLogPush {
    pub shift: ShiftId,
    /// The automerge bundle (or concatenated changes) the device sent.
    pub changes: Vec<u8>,
    /// Events the device counts in this push (for its pending count).
    pub events: u32,
}

/// One sync request: the documents a device pushed and what it said about itself. The owner of
/// every document is the request's site and device (later: its credentials).
#[derive(Clone, Debug)]
pub struct SyncBatch {
    pub site: SiteId,
    pub device: DeviceId,
    /// Server receive time of the request, stamped on every new event and on the device row.
    pub received_at_ms: i64,
    /// The device's wall clock when it sent the request.
    pub device_time_ms: i64,
    /// Events the device held undelivered when it sent the request.
    pub pending_events: u64,
    pub pushes: Vec<ShiftLogPush>,
}

impl SyncBatch {
    pub fn owner(&self, push: &ShiftLogPush) -> Owner {
        Owner {
            site: self.site.clone(),
            device: self.device,
            shift: push.shift,
        }
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
            clock_skew_ms: self.received_at_ms.saturating_sub(self.device_time_ms),
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
    #[error("the store is shut down")]
    Closed,
    #[error("commit failed: {0}")]
    Commit(String),
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

    /// The site's devices, ordered by device id; `None` if the site does not exist.
    fn devices(&self, site: SiteId)
    -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>>;
}
