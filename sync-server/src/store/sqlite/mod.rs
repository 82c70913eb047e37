//! The embedded SQLite backend: one file, zero set-up.
//!
//! - WAL with `synchronous = FULL`: a commit is fsynced before it returns, so whatever the
//!   server acknowledged to a device survives a crash or power loss (NORMAL could lose the last
//!   commits on power loss, and the device would already have been told they were delivered).
//! - One writer connection, owned by the writer thread (SQLite allows one writer at a time
//!   anyway). It runs the write phase of sync requests and commits the requests queued by then
//!   together (group commit: one fsync, and the index pages they share written once).
//! - One merge thread per core, each with its own read-only connection: the merge phase of sync
//!   requests, the CPU-heavy part, runs there in parallel, outside the write lock (optimistic
//!   concurrency, see [`super::merge`]).
//! - A checkpoint thread copies the WAL into the database file beside the writer, so commits
//!   never do; the writer finishes the copy now and then so that the WAL is reused.
//! - Event ids are deduplicated through a two-level index (migration 0002) that the writer
//!   folds in bulk, so that ids arriving in random order do not rewrite a large index on every
//!   commit.
//! - Feed and device reads run on tokio's blocking pool, on a small pool of read-only
//!   connections, which WAL lets run beside the writer.
//! - Incidents, site configurations and alarm acknowledgements (migration 0003, [`collab`]):
//!   each write is its own transaction on the writer thread; a sync request without incident
//!   pushes reads its answer on a read connection.
//! - Users, enrollment codes and device credentials (migration 0004) are small tables written
//!   by the writer thread like everything else; a sync request's credential check and replay
//!   counter are read and updated inside its write transaction.
//! - Schema changes are numbered migrations in `sqlite/migrations/`, applied in order, the
//!   applied count kept in `PRAGMA user_version` ([`schema`]).
//! - The data directory is its owner's alone (0700), and so are the database files (0600),
//!   set before SQLite opens them ([`files`]).
//!
//! - Tour compliance (migration 0015, [`compliance`]): kept in each sync's write transaction,
//!   settled periodically by a write transaction of its own, read on a read connection.
//! - Attachment blobs ([`blobs`]): files in a `blobs` directory beside the database, outside
//!   SQLite (a 25 MiB photo would bloat the WAL and every backup of the records); their
//!   references live in the incidents.
//!
//! One file per concern, as in the PostgreSQL backend: [`schema`], [`sync`] (merge threads,
//! writer, group commit; with [`event_ids`] and [`folded`]), [`feed`], [`auth`], [`collab`],
//! [`compliance`], [`files`], [`blobs`];
//! this one sets the store and its threads up and forwards the [`Store`] methods.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::credentials::passwords::PasswordHashString;
use crate::credentials::sessions::StoredSession;
use crate::credentials::{
    NewUser, StoredDeviceCredentials, StoredUserTokens, TokenHash, User, UserTokenRotation,
};
use patrol_core::protocol::DocOutcome;
use patrol_core::{DeviceId, ShiftId, SiteId};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Semaphore, oneshot};

use self::event_ids::EventIds;
use self::schema::{MIGRATIONS, migrate, open_connection, open_reader};
use self::sync::{MergeJob, WriterJob, merge_thread, writer_thread};
use super::blobs::{AttachmentRef, BlobChunk, BlobHash, ChunkOutcome, UploadState};
use super::compliance::{StoredChange, WindowQuery, WindowsAnswer};
use super::incident::ServerClock;
use super::notify::Notifier;
use super::rows::to_i64;
use super::{
    Acknowledged, AlarmAckRecord, AlarmChange, BackendError, BoxFuture, CollabAnswer, CollabSync,
    DeviceCredential, DeviceStatus, Enrollment, EventPage, FeedFilter, IncidentList, IncidentQuery,
    NewEnrollmentCode, OperatorAction, PanicAlarm, SettleReport, ShiftLogEvidence, ShiftPage,
    ShiftQuery, ShiftSummary, Site, Store, StoreError, StoredConfig, SyncBatch, TimeCursor,
    TimePage, UserKey, UserWithPassword, check_ins::CheckInTimerView,
};

mod alarms;
mod auth;
mod blobs;
mod collab;
mod compliance;
mod event_ids;
mod feed;
mod files;
mod folded;
mod schema;
mod sync;
#[cfg(test)]
mod testing;
mod webhooks;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "patrol.db";

/// Idle read connections kept for reuse. Every sync request reads its answer's extras (config,
/// incidents, alarm acks) on one, beside its shift-log merge, so keep enough that concurrent
/// requests rarely open a new connection.
const MAX_IDLE_READERS: usize = 16;

/// Pages of the writer's cache (in KiB when negative, as `PRAGMA cache_size` takes it). The
/// writer revisits the same index pages in every transaction (the event-id index grows at random
/// places); keeping them cached saves reading them back from the file.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// The least time between two checkpoints of the checkpoint thread: the commits meanwhile are
/// copied in one go, and a page they all changed is copied once.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// The least time between two checkpoints of the writer itself (see [`checkpoint`]).
const WRITER_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// Sync requests merged or being merged at once, per core (see [`Inner::merging`]). With 8,
/// groups at 1000 devices average ~6 requests (3 with 4), one fsync for each group.
const MERGING_PER_CPU: usize = 8;

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// To the writer thread, which owns the only writing connection ([`writer_thread`]).
    writer: mpsc::Sender<WriterJob>,
    /// To the merge threads ([`merge_thread`]).
    merges: mpsc::Sender<MergeJob>,
    /// Sync requests being merged or merged and not yet written: it bounds the merge results
    /// (the new events, ready to insert, about 1 MiB per 1000) held in memory. Enough that the
    /// requests merged while the writer commits queue up for its next group commit.
    merging: Semaphore,
    readers: Mutex<Vec<Connection>>,
    /// Stamps operators' incident entries.
    clock: Arc<ServerClock>,
    /// Subscribers to sites' new events, woken by the writer thread after each commit.
    notifier: Arc<Notifier>,
    /// Attachment blobs, as files beside the database ([`blobs`]).
    blobs: blobs::BlobFiles,
}

/// The SQLite store. Cheap to clone; clones share the connections and threads, which end once
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/patrol.db`, creating the directory too, private
    /// to the server's user (on Unix; an existing directory open to others is tightened, see
    /// [`files`]). Blocks: call it at start-up or from a blocking task.
    pub fn open_dir(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        files::private_dir(dir)?;
        Self::open(dir.join(DB_FILE))
    }

    /// Opens (creating if needed) the database file at `path` and migrates it to the current
    /// schema. The file and its WAL are private to the server's user (on Unix; see [`files`]).
    /// Blocks.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        files::private_db_file(&path)?;
        let mut writer = open_connection(&path)?;
        migrate(&mut writer, MIGRATIONS.len())?;
        auth::revoke_refused_keys(&mut writer, crate::now_ms())?;
        let refreshed = collab::refresh_incident_states(&mut writer)?;
        if refreshed > 0 {
            tracing::info!(refreshed, "recomputed stored incident states");
        }
        // The checkpoint thread copies the WAL into the database file, beside the writer.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        let event_ids = EventIds::load(&writer)?;
        let checkpointer = spawn_checkpointer(&path)?;
        let (writer_tx, writer_rx) = mpsc::channel();
        let notifier = Arc::new(Notifier::default());
        let writer_notifier = Arc::clone(&notifier);
        std::thread::Builder::new()
            .name("patrol-writer".into())
            .spawn(move || {
                writer_thread(writer, writer_rx, checkpointer, event_ids, &writer_notifier)
            })?;
        let (merges_tx, merges_rx) = mpsc::channel();
        let merges_rx = Arc::new(Mutex::new(merges_rx));
        for i in 0..cpus() {
            let (path, jobs) = (path.clone(), Arc::clone(&merges_rx));
            std::thread::Builder::new()
                .name(format!("patrol-merge-{i}"))
                .spawn(move || merge_thread(&path, &jobs))?;
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                blobs: blobs::BlobFiles::beside(&path),
                path,
                writer: writer_tx,
                merges: merges_tx,
                merging: Semaphore::new(MERGING_PER_CPU * cpus()),
                readers: Mutex::new(Vec::new()),
                clock: Arc::new(ServerClock::default()),
                notifier,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in its own IMMEDIATE transaction on the writer thread, committing if it
    /// returns `Ok` (and rolling back otherwise, so a refused write changes nothing).
    async fn write_tx<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Runs `f` on the writer connection, on the writer thread.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Box<dyn FnOnce(&mut Connection) + Send> = Box::new(move |conn| {
            // The caller may have stopped waiting; the result is not needed then.
            let _ = done.send(f(conn));
        });
        self.inner
            .writer
            .send(WriterJob::Run(job))
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| abandoned("a write"))?
    }

    /// Runs `f` on a pooled read-only connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = f(&mut conn);
            let mut idle = inner.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await?
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The error of a request whose job a store thread dropped without answering: the job
/// panicked (and was logged; see [`run_caught`]).
fn abandoned(what: &str) -> StoreError {
    StoreError::Commit(format!(
        "{what} failed unexpectedly; the server log has the details"
    ))
}

/// Runs `f`, logging rather than propagating a panic, so that one bad job does not stop a
/// store thread. A transaction open in `f` rolls back as it unwinds, and the callers waiting
/// for `f` see their answer channel closed.
fn run_caught(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("{what} panicked; its requests failed");
    }
}

/// Copies the WAL into the database file (PASSIVE: never waits for readers or the writer).
///
/// The checkpoint thread does most of the copying, beside the writer. But it races the
/// writer's commits and so rarely finds the WAL fully copied, and only a fully copied WAL is
/// started over from its beginning (by the writer's next transaction, when no reader still
/// needs it): otherwise the WAL grows, which costs more than reusing it, as new blocks of the
/// file are allocated and zeroed under each frame written. So every
/// [`WRITER_CHECKPOINT_INTERVAL`] the writer also checkpoints between two transactions, which
/// copies only the few frames the checkpoint thread has not.
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commit");
    }
}

/// Starts the thread that checkpoints the WAL into the database file when woken (after
/// commits), at most once per [`CHECKPOINT_INTERVAL`], so that commits do not copy pages
/// themselves (see [`checkpoint`]). The thread ends with the writer thread, which holds the
/// sender.
fn spawn_checkpointer(path: &Path) -> Result<SyncSender<()>, StoreError> {
    let conn = open_connection(path)?;
    let (wake, woken) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("patrol-checkpoint".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                checkpoint(&conn);
                std::thread::sleep(CHECKPOINT_INTERVAL);
            }
        })?;
    Ok(wake)
}

/// SQLite's error, as the store reports it.
#[derive(Debug, thiserror::Error)]
#[error("sqlite: {0}")]
struct SqliteError(#[source] rusqlite::Error);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(BackendError::new(SqliteError(e)))
    }
}

impl Store for SqliteStore {
    fn create_site(&self, site: Site) -> BoxFuture<'_, Result<Site, StoreError>> {
        Box::pin(self.write(move |conn| auth::create_site(conn, site)))
    }

    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StoreError>> {
        Box::pin(self.read(auth::list_sites))
    }

    fn get_site(&self, site: SiteId) -> BoxFuture<'_, Result<Option<Site>, StoreError>> {
        Box::pin(self.read(move |conn| auth::get_site(conn, &site)))
    }

    fn sync(&self, batch: SyncBatch) -> BoxFuture<'_, Result<Vec<DocOutcome>, StoreError>> {
        Box::pin(self.sync_batch(batch))
    }

    fn events_after(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>> {
        Box::pin(self.read(move |conn| feed::events_after(conn, &site, after, limit)))
    }

    fn events_filtered(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
        filter: FeedFilter,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>> {
        Box::pin(self.read(move |conn| {
            if filter.is_empty() {
                feed::events_after(conn, &site, after, limit)
            } else {
                feed::events_filtered(conn, &site, after, limit, &filter)
            }
        }))
    }

    fn events_between(
        &self,
        site: SiteId,
        from_ms: i64,
        to_ms: i64,
        after: Option<TimeCursor>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<TimePage>, StoreError>> {
        Box::pin(
            self.read(move |conn| {
                feed::events_between(conn, &site, (from_ms, to_ms), after, limit)
            }),
        )
    }

    fn alarm_acks(
        &self,
        site: SiteId,
        events: Vec<patrol_core::EventId>,
    ) -> BoxFuture<'_, Result<Vec<AlarmAckRecord>, StoreError>> {
        Box::pin(self.read(move |conn| collab::alarm_acks(conn, &site, &events)))
    }

    fn panic_alarms(
        &self,
        site: SiteId,
        open_only: bool,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<Vec<PanicAlarm>>, StoreError>> {
        Box::pin(self.read(move |conn| alarms::panic_alarms(conn, &site, open_only, limit)))
    }

    fn devices(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>> {
        Box::pin(self.read(move |conn| feed::devices(conn, &site)))
    }

    fn shifts(
        &self,
        site: SiteId,
        query: ShiftQuery,
    ) -> BoxFuture<'_, Result<Option<ShiftPage>, StoreError>> {
        Box::pin(self.read(move |conn| feed::shifts(conn, &site, &query)))
    }

    fn shift(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftSummary>, StoreError>> {
        Box::pin(self.read(move |conn| feed::shift(conn, &site, &shift)))
    }

    fn sync_collab(&self, sync: CollabSync) -> BoxFuture<'_, Result<CollabAnswer, StoreError>> {
        if sync.incidents.is_empty() {
            // Nothing to write: answer from a read connection, off the writer thread.
            return Box::pin(self.read(move |conn| {
                let tx = conn.transaction()?;
                let mut answer = CollabAnswer::default();
                collab::sync_extras(&tx, &sync, &Default::default(), &mut answer)?;
                Ok(answer)
            }));
        }
        if sync.incidents.iter().all(|push| push.changes.is_empty()) {
            // Heads-only pushes (a phone asking what it lacks, closed incidents included) apply
            // nothing, so they never write either: the same answer, from a read connection.
            return Box::pin(self.read(move |conn| {
                let tx = conn.transaction()?;
                collab::write_collab(&tx, &sync)
            }));
        }
        Box::pin(self.write_tx(move |tx| collab::write_collab(tx, &sync)))
    }

    fn incidents(
        &self,
        site: SiteId,
        query: IncidentQuery,
    ) -> BoxFuture<'_, Result<IncidentList, StoreError>> {
        Box::pin(self.read(move |conn| collab::incidents(conn, &site, &query)))
    }

    fn incident(
        &self,
        site: SiteId,
        incident: patrol_core::IncidentId,
    ) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(self.read(move |conn| collab::incident_state(conn, &site, incident)))
    }

    fn act_on_incident(&self, action: OperatorAction) -> BoxFuture<'_, Result<String, StoreError>> {
        let clock = Arc::clone(&self.inner.clock);
        Box::pin(self.write_tx(move |tx| collab::act_on_incident(tx, action, &clock)))
    }

    fn site_config(&self, site: SiteId) -> BoxFuture<'_, Result<StoredConfig, StoreError>> {
        Box::pin(self.read(move |conn| collab::site_config(conn, &site)))
    }

    fn put_site_config(
        &self,
        config: patrol_core::siteconfig::SiteConfig,
        base_version: u64,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<StoredConfig, StoreError>> {
        Box::pin(self.write_tx(move |tx| collab::put_site_config(tx, config, base_version, at_ms)))
    }

    fn acknowledge_alarm(
        &self,
        site: SiteId,
        event: patrol_core::EventId,
        by: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Acknowledged, StoreError>> {
        Box::pin(self.write_tx(move |tx| alarms::acknowledge_alarm(tx, &site, event, &by, at_ms)))
    }

    fn escalate_alarms(
        &self,
        site: SiteId,
        after_ms: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<AlarmChange>, StoreError>> {
        Box::pin(self.write_tx(move |tx| alarms::escalate_alarms(tx, &site, after_ms, now_ms)))
    }

    fn check_in_timers(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<Vec<CheckInTimerView>>, StoreError>> {
        Box::pin(self.read(move |conn| alarms::check_in_timers(conn, &site, now_ms)))
    }

    fn record_overdue_check_ins(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<CheckInTimerView>, StoreError>> {
        Box::pin(self.write_tx(move |tx| alarms::record_overdue_check_ins(tx, &site, now_ms)))
    }

    fn create_webhook(
        &self,
        webhook: super::webhooks::NewWebhook,
    ) -> BoxFuture<'_, Result<super::webhooks::Webhook, StoreError>> {
        Box::pin(self.write_tx(move |tx| webhooks::create_webhook(tx, &webhook)))
    }

    fn webhooks(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Vec<super::webhooks::Webhook>, StoreError>> {
        Box::pin(self.read(move |conn| webhooks::webhooks(conn, &site)))
    }

    fn delete_webhook(&self, site: SiteId, id: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write_tx(move |tx| webhooks::delete_webhook(tx, &site, id)))
    }

    fn enqueue_webhook(
        &self,
        outgoing: super::webhooks::Outgoing,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write_tx(move |tx| webhooks::enqueue(tx, &outgoing)))
    }

    fn has_webhook_for(
        &self,
        site: SiteId,
        event_type: &'static str,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.read(move |conn| webhooks::has_webhook_for(conn, &site, event_type)))
    }

    fn webhook_deliveries(
        &self,
        site: SiteId,
        state: Option<super::webhooks::DeliveryState>,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<super::webhooks::Delivery>, StoreError>> {
        Box::pin(self.read(move |conn| webhooks::deliveries(conn, &site, state, limit)))
    }

    fn retry_webhook_delivery(
        &self,
        site: SiteId,
        id: i64,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<super::webhooks::Delivery, StoreError>> {
        Box::pin(self.write_tx(move |tx| webhooks::retry_delivery(tx, &site, id, now_ms)))
    }

    fn claim_webhook_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<super::webhooks::DueDelivery>, StoreError>> {
        Box::pin(self.write_tx(move |tx| webhooks::claim(tx, now_ms, lease_until_ms, limit)))
    }

    fn prune_webhook_deliveries(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write_tx(move |tx| webhooks::prune(tx, before_ms)))
    }

    fn record_webhook_attempt(
        &self,
        id: i64,
        attempts_before: u32,
        attempt: super::webhooks::Attempt,
        next: super::webhooks::NextStep,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(
            self.write_tx(move |tx| {
                webhooks::record_attempt(tx, id, attempts_before, &attempt, next)
            }),
        )
    }

    fn alarm_changes(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<AlarmChange>, u64), StoreError>> {
        Box::pin(self.read(move |conn| alarms::alarm_changes(conn, after, limit)))
    }

    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>> {
        Box::pin(self.write(move |conn| auth::create_user(conn, user)))
    }

    fn users(&self) -> BoxFuture<'_, Result<Vec<User>, StoreError>> {
        Box::pin(self.read(auth::users))
    }

    fn user_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, StoredUserTokens)>, StoreError>> {
        Box::pin(self.read(move |conn| auth::user_by_token(conn, &hash)))
    }

    fn rotate_user_token(
        &self,
        id: String,
        rotation: UserTokenRotation,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(self.write(move |conn| auth::rotate_user_token(conn, &id, rotation)))
    }

    fn revoke_user(
        &self,
        id: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(self.write(move |conn| auth::revoke_user(conn, &id, at_ms)))
    }

    fn user_with_password(
        &self,
        key: UserKey,
    ) -> BoxFuture<'_, Result<Option<UserWithPassword>, StoreError>> {
        Box::pin(self.read(move |conn| auth::user_with_password(conn, &key)))
    }

    fn set_user_password(
        &self,
        id: String,
        password: PasswordHashString,
        keep: Option<TokenHash>,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(self.write(move |conn| auth::set_user_password(conn, &id, &password, keep)))
    }

    fn create_session(
        &self,
        user_id: String,
        session: StoredSession,
        idle_ms: i64,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| auth::create_session(conn, &user_id, &session, idle_ms)))
    }

    fn session_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, StoredSession)>, StoreError>> {
        Box::pin(self.read(move |conn| auth::session_by_token(conn, &hash)))
    }

    fn touch_session(&self, hash: TokenHash, now_ms: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| auth::touch_session(conn, &hash, now_ms)))
    }

    fn delete_session(&self, hash: TokenHash) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |conn| auth::delete_session(conn, &hash)))
    }

    fn create_enrollment_code(
        &self,
        code: NewEnrollmentCode,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| auth::create_enrollment_code(conn, code)))
    }

    fn enroll_device(
        &self,
        enrollment: Enrollment,
    ) -> BoxFuture<'_, Result<DeviceCredential, StoreError>> {
        Box::pin(self.write(move |conn| auth::enroll_device(conn, enrollment)))
    }

    fn device_by_credential(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(DeviceCredential, StoredDeviceCredentials)>, StoreError>>
    {
        Box::pin(self.read(move |conn| auth::device_by_credential(conn, &hash)))
    }

    fn stage_device_credential(
        &self,
        site: SiteId,
        device: DeviceId,
        next: TokenHash,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(
            self.write(move |conn| {
                auth::stage_device_credential(conn, &site, &device, &next, at_ms)
            }),
        )
    }

    fn promote_device_credential(
        &self,
        site: SiteId,
        device: DeviceId,
        next: TokenHash,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(
            self.write(move |conn| auth::promote_device_credential(conn, &site, &device, &next)),
        )
    }

    fn shift_log_evidence(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftLogEvidence>, StoreError>> {
        Box::pin(self.read(move |conn| sync::shift_log_evidence(conn, &site, &shift)))
    }

    fn device_credentials(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceCredential>>, StoreError>> {
        Box::pin(self.read(move |conn| auth::device_credentials(conn, &site)))
    }

    fn revoke_device(
        &self,
        site: SiteId,
        device: DeviceId,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(self.write(move |conn| auth::revoke_device(conn, &site, &device, at_ms)))
    }

    fn tour_windows(
        &self,
        site: SiteId,
        query: WindowQuery,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<WindowsAnswer, StoreError>> {
        Box::pin(self.read(move |conn| compliance::windows(conn, &site, &query, now_ms)))
    }

    fn settle_windows(
        &self,
        site: SiteId,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<SettleReport>, StoreError>> {
        Box::pin(self.write_tx(move |tx| compliance::settle(tx, &site, now_ms).map(Some)))
    }

    fn window_changes(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<(Vec<StoredChange>, u64), StoreError>> {
        Box::pin(self.read(move |conn| compliance::changes(conn, &site, after, limit)))
    }

    fn subscribe(&self, site: SiteId) -> tokio::sync::broadcast::Receiver<u64> {
        self.inner.notifier.subscribe(site)
    }

    fn attachment_refs(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Vec<AttachmentRef>, StoreError>> {
        Box::pin(self.read(move |conn| blobs::attachment_refs(conn, &site)))
    }

    fn stored_blobs(
        &self,
        hashes: Vec<BlobHash>,
    ) -> BoxFuture<'_, Result<Vec<BlobHash>, StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            Ok(tokio::task::spawn_blocking(move || {
                hashes
                    .into_iter()
                    .filter(|h| inner.blobs.is_stored(h))
                    .collect()
            })
            .await?)
        })
    }

    fn read_blob(&self, sha256: BlobHash) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(
            async move { tokio::task::spawn_blocking(move || inner.blobs.read(&sha256)).await? },
        )
    }

    fn blob_upload(
        &self,
        device: DeviceId,
        sha256: BlobHash,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<UploadState, StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.blobs.upload_state(&device, &sha256, now_ms))
                .await?
        })
    }

    fn put_blob_chunk(&self, chunk: BlobChunk) -> BoxFuture<'_, Result<ChunkOutcome, StoreError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.blobs.put_chunk(&chunk)).await?
        })
    }
}
