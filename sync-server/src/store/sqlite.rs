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
//!   applied count kept in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::{self, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::credentials::TokenHash;
use patrol_core::merge::Rejection;
use patrol_core::protocol::{DocOutcome, to_wire};
use patrol_core::{DeviceId, ShiftId, SiteId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Semaphore, oneshot};

use self::event_ids::{Claims, Committed, EventIds};
use super::event_json::FeedRenderer;
use super::incident::ServerClock;
use super::merge::{
    ChunkWrite, Merge, MergedLog, Prepared, SHIFT_LOG_KIND, StoredDoc, heads_to_blob, merge_push,
    shift_log_doc_id,
};
use super::notify::Notifier;
use super::rows::{
    DEVICE_CREDENTIAL_COLUMNS, USER_COLUMNS, corrupt, read_device_id, read_hash, read_public_key,
    read_signature, read_site_id, signed_heads_blob,
};
use super::{
    AlarmAckRecord, BoxFuture, CollabAnswer, CollabSync, DeviceCredential, DeviceStatus,
    DeviceSync, EnrollRefusal, Enrollment, EventPage, FILTER_SCAN_LIMIT, FeedFilter, IncidentList,
    IncidentQuery, NewEnrollmentCode, NewUser, OperatorAction, Scope, ShiftLogEvidence, Site,
    Store, StoreError, StoredConfig, SyncBatch, SyncRefusal, User,
};

mod collab;
mod event_ids;
mod folded;

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "patrol.db";

/// The schema migrations, in order; migration `i` (from 0) brings the schema to version `i + 1`.
/// Never edit a released one: add a new file.
const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/migrations/0001_init.sql"),
    include_str!("sqlite/migrations/0002_event_ids.sql"),
    include_str!("sqlite/migrations/0003_incidents_config_alarms.sql"),
    include_str!("sqlite/migrations/0004_auth.sql"),
    include_str!("sqlite/migrations/0005_signatures.sql"),
    include_str!("sqlite/migrations/0006_recent_event_ids_in_memory.sql"),
    include_str!("sqlite/migrations/0007_event_id_runs.sql"),
    include_str!("sqlite/migrations/0008_event_records.sql"),
];

/// Idle read connections kept for reuse. Every sync request reads its answer's extras (config,
/// incidents, alarm acks) on one, beside its shift-log merge, so keep enough that concurrent
/// requests rarely open a new connection.
const MAX_IDLE_READERS: usize = 16;

/// Pages of the writer's cache (in KiB when negative, as `PRAGMA cache_size` takes it). The
/// writer revisits the same index pages in every transaction (the event-id index grows at random
/// places); keeping them cached saves reading them back from the file.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Page size of a new database (an existing one keeps its own). Every commit appends its pages
/// to the WAL and every checkpoint copies them on, a system call and a WAL-index entry per page:
/// with 16 KiB instead of SQLite's 4 KiB the server spent ~12% less CPU syncing a million events
/// (docs/benchmarks.md).
const PAGE_SIZE: i64 = 16 * 1024;

/// The least time between two checkpoints of the checkpoint thread: the commits meanwhile are
/// copied in one go, and a page they all changed is copied once.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// The least time between two checkpoints of the writer itself (see [`checkpoint`]).
const WRITER_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// How long a statement waits for another process (e.g. `patrol-server site create` beside a
/// running server) to release the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Optimistic rounds of a sync request (read, merge, check and write) before the documents whose
/// version keeps moving are merged under the write lock instead.
const OPTIMISTIC_ROUNDS: u32 = 3;

/// Sync requests merged or being merged at once, per core (see [`Inner::merging`]). With 8,
/// groups at 1000 devices average ~6 requests (3 with 4), one fsync for each group.
const MERGING_PER_CPU: usize = 8;

/// Most sync requests one group commit takes along.
const MAX_GROUP: usize = 64;

/// Events whose ids the recent level of the event-id index holds (in the writer's memory, about
/// 40 bytes an id) before the writer folds them into a new run of `event_ids` (see
/// [`EventIds`]). Larger: fewer runs, but more memory.
const FOLD_EVENT_IDS_AT: u64 = 1 << 17;

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
}

/// The SQLite store. Cheap to clone; clones share the connections and threads, which end once
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/patrol.db`, creating the directory too.
    /// Blocks: call it at start-up or from a blocking task.
    pub fn open_dir(data_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = data_dir.as_ref();
        std::fs::create_dir_all(dir)?;
        Self::open(dir.join(DB_FILE))
    }

    /// Opens (creating if needed) the database file at `path` and migrates it to the current
    /// schema. Blocks.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = open_connection(&path)?;
        migrate(&mut writer, MIGRATIONS.len())?;
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

    /// Applies a sync request: merges its documents outside the write lock (on a merge thread),
    /// then writes them all and the device row in one transaction, shared with the other
    /// requests that wait for the writer by then (on the writer thread), redoing the merge of a
    /// document that a concurrent request changed meanwhile (see [`super::merge`]).
    async fn sync_batch(&self, batch: SyncBatch) -> Result<Vec<DocOutcome>, StoreError> {
        let _merging = self
            .inner
            .merging
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let batch = Arc::new(batch);
        let mut merged: Vec<Option<Prepared>> = batch.pushes.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..batch.pushes.len()).collect();
        let mut round = 1;
        loop {
            if !todo.is_empty() {
                let (done, result) = oneshot::channel();
                self.inner
                    .merges
                    .send(MergeJob {
                        batch: Arc::clone(&batch),
                        todo,
                        merged,
                        done,
                    })
                    .map_err(|_| StoreError::Closed)?;
                merged = result.await.map_err(|_| abandoned("a merge"))??;
            }
            let (done, result) = oneshot::channel();
            self.inner
                .writer
                .send(WriterJob::Sync(WriteJob {
                    batch: Arc::clone(&batch),
                    merged,
                    final_round: round >= OPTIMISTIC_ROUNDS,
                    done,
                }))
                .map_err(|_| StoreError::Closed)?;
            match result.await.map_err(|_| abandoned("a group commit"))?? {
                Written::Committed(outcomes) => {
                    return Ok(outcomes);
                }
                Written::Refused(refusal) => return Err(StoreError::SyncRefused(refusal)),
                Written::Conflicts {
                    merged: m,
                    conflicts,
                } => {
                    tracing::debug!(
                        site = %batch.site, device = %batch.device, round, conflicts = conflicts.len(),
                        "documents changed while merging; merging them again"
                    );
                    merged = m;
                    todo = conflicts;
                    round += 1;
                }
            }
        }
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

/// What the writer thread runs.
enum WriterJob {
    /// A sync request's write phase, committed together with the others queued by then.
    Sync(WriteJob),
    /// Anything else, alone.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

impl std::fmt::Debug for WriterJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriterJob::Sync(job) => f.debug_tuple("Sync").field(job).finish(),
            WriterJob::Run(_) => f.write_str("Run(..)"),
        }
    }
}

/// The writer thread: owns the writing connection and runs the jobs in order. Sync requests
/// queued together are committed together ([`commit_jobs`]): one transaction, one fsync, and
/// the index pages they all touch written once. Ends when the store is dropped, after the
/// queued jobs.
fn writer_thread(
    mut conn: Connection,
    jobs: mpsc::Receiver<WriterJob>,
    checkpointer: SyncSender<()>,
    mut event_ids: EventIds,
    notifier: &Notifier,
) {
    let mut next = None;
    let mut last_checkpoint = Instant::now();
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            WriterJob::Run(f) => run_caught("a write", || f(&mut conn)),
            WriterJob::Sync(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(WriterJob::Sync(job)) => group.push(job),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_caught("a group commit", || {
                    commit_jobs(&mut conn, &mut event_ids, group, notifier);
                });
                if event_ids.recent_len() >= FOLD_EVENT_IDS_AT {
                    run_caught("a fold of event ids", || {
                        if let Err(e) = event_ids.fold(&mut conn) {
                            tracing::warn!(error = %e, "could not fold event ids; will retry");
                        }
                    });
                }
                // The checkpoint thread copies the WAL beside the writer; now and then the
                // writer finishes the job itself (see [`checkpoint`]).
                if last_checkpoint.elapsed() >= WRITER_CHECKPOINT_INTERVAL {
                    checkpoint(&conn);
                    last_checkpoint = Instant::now();
                } else {
                    // A wake is already pending if the channel is full.
                    let _ = checkpointer.try_send(());
                }
            }
        }
    }
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

/// Documents of one request to read and merge, on a merge thread.
#[derive(Debug)]
struct MergeJob {
    batch: Arc<SyncBatch>,
    /// Indexes of the pushes to (re)merge; the others keep their entry in `merged`.
    todo: Vec<usize>,
    merged: Vec<Option<Prepared>>,
    done: oneshot::Sender<Result<Vec<Option<Prepared>>, StoreError>>,
}

/// A merge thread: reads each document with its own read-only connection (a read transaction
/// that ends before the merge, so it pins no snapshot) and merges it. There is one per core:
/// merges are CPU-bound, and more at once would only hold more documents in memory. Ends when
/// the store is dropped.
fn merge_thread(path: &Path, jobs: &Mutex<mpsc::Receiver<MergeJob>>) {
    let mut conn = None;
    loop {
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        run_caught("a merge", || {
            let MergeJob {
                batch,
                todo,
                mut merged,
                done,
            } = job;
            let result = (|| {
                let conn = match &mut conn {
                    Some(conn) => conn,
                    None => conn.insert(open_reader(path)?),
                };
                let site = batch.site.as_str();
                for i in todo {
                    let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
                    let stored = read_stored(conn, site, &doc_id)?;
                    merged[i] = Some(merge_push(&batch, i, stored)?);
                }
                Ok(merged)
            })();
            let _ = done.send(result);
        });
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::CorruptData(format!(
            "could not switch {} to WAL mode (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
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

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Applies migrations until the schema is at version `target`. Each runs in its own IMMEDIATE
/// transaction that re-reads the version, so two processes opening one file at once apply
/// each migration exactly once.
fn migrate(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = schema_version(&tx)?;
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        let Ok(next) = usize::try_from(current) else {
            return Err(StoreError::CorruptData(format!(
                "negative schema version {current}"
            )));
        };
        if next >= target {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[next])?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
        tracing::info!(version = current + 1, "applied database migration");
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn read_site(row: &rusqlite::Row<'_>) -> Result<Site, StoreError> {
    let id: String = row.get(0)?;
    Ok(Site {
        id: SiteId::new(&id)
            .map_err(|e| StoreError::CorruptData(format!("site id {id:?}: {e}")))?,
        name: row.get(1)?,
        created_at_ms: row.get(2)?,
    })
}

fn get_site(conn: &Connection, site: &SiteId) -> Result<Option<Site>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT site_id, name, created_at FROM sites WHERE site_id = ?1")?;
    let mut rows = stmt.query([site.as_str()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_site(row)?)),
        None => Ok(None),
    }
}

/// Reads a document's chunks and version in one read transaction (one snapshot).
fn read_stored(conn: &mut Connection, site: &str, doc_id: &str) -> Result<StoredDoc, StoreError> {
    let tx = conn.transaction()?;
    let stored = read_stored_in(&tx, site, doc_id)?;
    tx.finish()?;
    Ok(stored)
}

/// Reads a document's chunks and version inside an open transaction.
fn read_stored_in(conn: &Connection, site: &str, doc_id: &str) -> Result<StoredDoc, StoreError> {
    let row: Option<(Vec<u8>, i64)> = conn
        .prepare_cached("SELECT heads, chunk_count FROM docs WHERE site_id = ?1 AND doc_id = ?2")?
        .query_row(params![site, doc_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((heads, chunk_count)) = row else {
        return Ok(StoredDoc::default());
    };
    let chunk_count = u32::try_from(chunk_count)
        .map_err(|_| StoreError::CorruptData(format!("chunk count {chunk_count} of {doc_id}")))?;
    let mut bytes = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT bytes FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2 ORDER BY chunk_id",
    )?;
    let mut rows = stmt.query(params![site, doc_id])?;
    while let Some(row) = rows.next()? {
        let chunk = row
            .get_ref(0)?
            .as_blob()
            .map_err(|e| StoreError::CorruptData(format!("chunk of {doc_id}: {e}")))?;
        bytes.extend_from_slice(chunk);
    }
    Ok(StoredDoc {
        version: Some(heads),
        chunk_count,
        bytes,
    })
}

/// The version of a document as the write phase compares it ([`StoredDoc::version`]).
fn current_version(
    conn: &Connection,
    site: &str,
    doc_id: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT heads FROM docs WHERE site_id = ?1 AND doc_id = ?2")?
        .query_row(params![site, doc_id], |r| r.get(0))
        .optional()?)
}

/// The answer to a request's write job.
#[derive(Debug)]
enum Written {
    /// Committed; one outcome per push.
    Committed(Vec<DocOutcome>),
    /// Nothing written: the device may not sync this request.
    Refused(SyncRefusal),
    /// Nothing written: these pushes' documents changed since they were read.
    Conflicts {
        merged: Vec<Option<Prepared>>,
        conflicts: Vec<usize>,
    },
}

/// What the write phase did with one request.
#[derive(Debug)]
enum Wrote {
    Committed(Vec<DocOutcome>),
    /// Nothing written: the device may not sync this request.
    Refused(SyncRefusal),
    /// Nothing written: these pushes' documents changed since they were read.
    Conflicts(Vec<usize>),
}

/// The write phase of one request, inside the writer's open transaction (shared with the other
/// requests of its group, see [`commit_jobs`]): checks that every document to write is still at
/// the version it was merged from, then persists every accepted document, the events with their
/// sequence numbers, the device row and the request's seq as the device's last accepted one.
///
/// First of all, the device must hold an unrevoked credential on the site and the request's seq
/// must be greater than the last accepted one, else nothing is written ([`Wrote::Refused`]):
/// checked here, in the transaction, so that a revocation or a concurrent request with the same
/// seq is never missed.
///
/// If a version moved, writes nothing and reports the conflicts, unless `final_round`: then the
/// conflicting documents are read and merged again here, under the write lock (replacing their
/// entry in `merged`). A document pushed twice in one request is merged again here on top of its
/// first push.
fn write_request(
    tx: &Connection,
    claims: &mut Claims<'_>,
    batch: &SyncBatch,
    merged: &mut [Option<Prepared>],
    final_round: bool,
) -> Result<Wrote, StoreError> {
    let site = batch.site.as_str();
    let next_seq: Option<i64> = tx
        .prepare_cached("SELECT next_seq FROM sites WHERE site_id = ?1")?
        .query_row([site], |r| r.get(0))
        .optional()?;
    let Some(mut next_seq) = next_seq else {
        return Err(StoreError::UnknownSite(batch.site.clone()));
    };
    if let Some(refusal) = sync_refusal(tx, batch)? {
        return Ok(Wrote::Refused(refusal));
    }

    let mut conflicts = Vec::new();
    for (i, prepared) in merged.iter().enumerate() {
        let prepared = prepared.as_ref().ok_or_else(not_merged)?;
        if prepared.writes() && current_version(tx, site, &prepared.doc_id)? != prepared.version {
            conflicts.push(i);
        }
    }
    if !conflicts.is_empty() && !final_round {
        return Ok(Wrote::Conflicts(conflicts));
    }

    let first_seq = next_seq;
    let mut outcomes = Vec::with_capacity(merged.len());
    // Documents this transaction has written already.
    let mut written: Vec<String> = Vec::new();
    for (i, slot) in merged.iter_mut().enumerate() {
        let stale = {
            let prepared = slot.as_ref().ok_or_else(not_merged)?;
            (prepared.writes() && written.contains(&prepared.doc_id)) || conflicts.contains(&i)
        };
        if stale {
            let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
            let stored = read_stored_in(tx, site, &doc_id)?;
            *slot = Some(merge_push(batch, i, stored)?);
        }
        let prepared = slot.as_ref().ok_or_else(not_merged)?;
        let log = match &prepared.merge {
            Merge::Rejected(Rejection { code, message }) => {
                outcomes.push(DocOutcome::Rejected {
                    code: *code,
                    message: message.clone(),
                });
                continue;
            }
            Merge::Accepted(log) => log,
        };
        let new_events = write_doc(tx, claims, batch, &prepared.doc_id, log, &mut next_seq)?;
        if log.write != ChunkWrite::Nothing && !written.contains(&prepared.doc_id) {
            written.push(prepared.doc_id.clone());
        }
        outcomes.push(DocOutcome::Accepted {
            heads: to_wire(&log.heads),
            new_events,
            missing_deps: log.missing_deps,
        });
    }
    if next_seq != first_seq {
        tx.prepare_cached("UPDATE sites SET next_seq = ?1 WHERE site_id = ?2")?
            .execute(params![next_seq, site])?;
    }
    record_device_sync(tx, &batch.device_sync(&outcomes))?;
    tx.prepare_cached(
        "UPDATE device_credentials SET last_request_seq = ?3 WHERE site_id = ?1 AND device_id = ?2",
    )?
    .execute(params![
        site,
        batch.device.to_string(),
        to_i64(batch.request_seq)
    ])?;
    Ok(Wrote::Committed(outcomes))
}

/// Why the device may not sync `batch`, if it may not: no credential on the site, a revoked
/// one, or a request seq not greater than the last accepted.
fn sync_refusal(tx: &Connection, batch: &SyncBatch) -> Result<Option<SyncRefusal>, StoreError> {
    let row: Option<(i64, Option<i64>)> = tx
        .prepare_cached(
            "SELECT last_request_seq, revoked_at FROM device_credentials
             WHERE site_id = ?1 AND device_id = ?2",
        )?
        .query_row(
            params![batch.site.as_str(), batch.device.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        None => Some(SyncRefusal::NotEnrolled),
        Some((_, Some(_))) => Some(SyncRefusal::Revoked),
        Some((last, None)) => {
            let last = u64::try_from(last).unwrap_or(0);
            (batch.request_seq <= last).then_some(SyncRefusal::Replayed { last_seq: last })
        }
    })
}

/// A request's merged documents, waiting for the writer.
#[derive(Debug)]
struct WriteJob {
    batch: Arc<SyncBatch>,
    merged: Vec<Option<Prepared>>,
    final_round: bool,
    done: oneshot::Sender<Result<Written, StoreError>>,
}

/// Group commit: writes every queued request in one IMMEDIATE transaction, one fsync for all,
/// and answers each once it committed. A request with conflicts writes nothing and does not
/// disturb the others. If the transaction fails, its requests are written again one by one, so
/// that a request that cannot be written fails alone.
fn commit_jobs(
    conn: &mut Connection,
    event_ids: &mut EventIds,
    mut jobs: Vec<WriteJob>,
    notifier: &Notifier,
) {
    match write_jobs(conn, event_ids, &mut jobs) {
        Ok((wrote, claims)) => {
            event_ids.committed(claims);
            let mut sites_added: Vec<SiteId> = Vec::new();
            for (job, wrote) in jobs.into_iter().zip(wrote) {
                let answer = match wrote {
                    Wrote::Committed(outcomes) => {
                        for outcome in &outcomes {
                            if let DocOutcome::Accepted { new_events, .. } = outcome {
                                if *new_events > 0 && !sites_added.contains(&job.batch.site) {
                                    sites_added.push(job.batch.site.clone());
                                }
                            }
                        }
                        Written::Committed(outcomes)
                    }
                    Wrote::Conflicts(conflicts) => Written::Conflicts {
                        merged: job.merged,
                        conflicts,
                    },
                    Wrote::Refused(refusal) => Written::Refused(refusal),
                };
                // The request may have given up waiting (its connection closed).
                let _ = job.done.send(Ok(answer));
            }
            notify_sites(conn, notifier, &sites_added);
        }
        Err(e) if jobs.len() > 1 => {
            tracing::warn!(error = %e, requests = jobs.len(), "a group commit failed; writing its requests one by one");
            for job in jobs {
                commit_jobs(conn, event_ids, vec![job], notifier);
            }
        }
        Err(e) => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.done.send(Err(e));
            }
        }
    }
}

/// Wakes the subscribers of `sites` after a commit that added events to them, with each site's
/// last sequence number (read after the commit, so it covers every event committed by then).
fn notify_sites(conn: &Connection, notifier: &Notifier, sites: &[SiteId]) {
    for site in sites {
        let last = conn
            .prepare_cached("SELECT next_seq - 1 FROM sites WHERE site_id = ?1")
            .and_then(|mut stmt| stmt.query_row([site.as_str()], |r| r.get::<_, i64>(0)));
        match last {
            Ok(last) => notifier.notify(site.as_str(), u64::try_from(last).unwrap_or(0)),
            // Subscribers then wake at the next commit; their cursors lose nothing.
            Err(e) => tracing::warn!(error = %e, %site, "cannot read the last seq to notify"),
        }
    }
}

/// Writes `jobs` in one transaction, and returns with what each wrote the event ids it claimed;
/// on `Err` nothing of them is written.
fn write_jobs(
    conn: &mut Connection,
    event_ids: &EventIds,
    jobs: &mut [WriteJob],
) -> Result<(Vec<Wrote>, Committed), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut claims = event_ids.claims();
    let mut wrote = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        wrote.push(write_request(
            &tx,
            &mut claims,
            &job.batch,
            &mut job.merged,
            job.final_round,
        )?);
    }
    tx.commit()?;
    Ok((wrote, claims.into_committed()))
}

fn not_merged() -> StoreError {
    StoreError::CorruptData("a push reached the write phase without a merge".into())
}

/// Persists one accepted document inside the write transaction: its chunk, its `docs` row and
/// its new events, numbered from `next_seq` on. Returns how many events were new to the site.
fn write_doc(
    tx: &Connection,
    claims: &mut Claims<'_>,
    batch: &SyncBatch,
    doc_id: &str,
    log: &MergedLog,
    next_seq: &mut i64,
) -> Result<u32, StoreError> {
    let site = batch.site.as_str();
    let received_at_ms = batch.received_at_ms;
    let chunk = match &log.write {
        ChunkWrite::Nothing => return Ok(0),
        ChunkWrite::Append(bytes) => bytes.as_slice(),
        ChunkWrite::Replace(bytes) => bytes.as_slice(),
    };
    let Some(meta) = &log.meta else {
        return Err(StoreError::CorruptData(format!(
            "changes applied to {doc_id} without shift metadata"
        )));
    };
    let device_id = meta.device.to_string();
    let shift_id = meta.shift.to_string();
    tx.prepare_cached(
        "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads, chunk_count, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (site_id, doc_id) DO UPDATE SET
             heads = excluded.heads, chunk_count = excluded.chunk_count, updated_at = excluded.updated_at",
    )?
    .execute(params![
        site,
        doc_id,
        SHIFT_LOG_KIND,
        device_id,
        meta.guard.as_str(),
        heads_to_blob(&log.heads),
        log.chunk_count,
        received_at_ms,
    ])?;
    if let ChunkWrite::Replace(_) = &log.write {
        tx.prepare_cached("DELETE FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2")?
            .execute(params![site, doc_id])?;
    }
    tx.prepare_cached(
        "INSERT INTO doc_chunks (site_id, doc_id, chunk_id, bytes)
         SELECT ?1, ?2, COALESCE(MAX(chunk_id), 0) + 1, ?3 FROM doc_chunks
         WHERE site_id = ?1 AND doc_id = ?2",
    )?
    .execute(params![site, doc_id, chunk])?;
    if let Some(signed) = &log.signature {
        tx.prepare_cached(
            "INSERT INTO shift_log_signatures (site_id, doc_id, heads, signed_at, signature,
                 received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            site,
            doc_id,
            signed_heads_blob(signed),
            signed.signed_at_ms,
            signed.signature,
            received_at_ms
        ])?;
    }

    // The id is looked up in the site's event-id index and claimed before the event goes in.
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
             checkpoint_id, device_seq, device_time_ms, received_at_ms, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut inserted: u32 = 0;
    for event in &log.new_events {
        let event_id = event.id.0.as_bytes();
        if let Some(known) = claims.existing(tx, site, event_id)? {
            // Already in the feed. From another shift log it is a device reusing an id: the
            // first row stands, but say so.
            warn_if_from_another_log(tx, site, event, &shift_id, known)?;
            continue;
        }
        claims.claim(site, *event_id, *next_seq);
        let record = event
            .record
            .encode()
            .map_err(|e| StoreError::Encode(e.to_string()))?;
        insert.execute(params![
            site,
            *next_seq,
            &event_id[..],
            device_id,
            shift_id,
            event.guard.as_str(),
            event.record.body.kind(),
            event.record.body.checkpoint().map(|c| c.as_str()),
            to_i64(event.record.seq),
            event.record.time.wall_ms,
            received_at_ms,
            record,
        ])?;
        inserted += 1;
        *next_seq += 1;
    }
    Ok(inserted)
}

/// For an event whose id the site already has (as its event `seq`): warns unless the existing
/// row is from the same shift log.
fn warn_if_from_another_log(
    tx: &Connection,
    site: &str,
    event: &patrol_core::Event,
    shift_id: &str,
    seq: i64,
) -> Result<(), StoreError> {
    let existing: Option<String> = tx
        .prepare_cached("SELECT shift_id FROM events WHERE site_id = ?1 AND seq = ?2")?
        .query_row(params![site, seq], |r| r.get(0))
        .optional()?;
    if existing.as_deref() != Some(shift_id) {
        tracing::warn!(
            site, event = %event.id, shift = %shift_id, existing_shift = ?existing,
            "event id already recorded from another shift log; keeping the first"
        );
    }
    Ok(())
}

/// Records that a device synced (creating its row on first contact).
fn record_device_sync(tx: &Connection, sync: &DeviceSync) -> Result<(), StoreError> {
    let rows = tx
        .prepare_cached(
            "INSERT INTO devices (site_id, device_id, first_seen, last_sync_at, last_pending, clock_skew_ms)
             SELECT ?1, ?2, ?3, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM sites WHERE site_id = ?1)
             ON CONFLICT (site_id, device_id) DO UPDATE SET
                 last_sync_at = MAX(last_sync_at, excluded.last_sync_at),
                 last_pending = excluded.last_pending,
                 clock_skew_ms = excluded.clock_skew_ms",
        )?
        .execute(params![
            sync.site.as_str(),
            sync.device.to_string(),
            sync.synced_at_ms,
            to_i64(sync.pending_events),
            sync.clock_skew_ms,
        ])?;
    if rows == 0 {
        return Err(StoreError::UnknownSite(sync.site.clone()));
    }
    Ok(())
}

fn events_after(
    conn: &mut Connection,
    site: &SiteId,
    after: u64,
    limit: u32,
) -> Result<Option<EventPage>, StoreError> {
    // One read transaction: the site check and the page come from the same snapshot.
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let mut page = EventPage {
        events: Vec::with_capacity(limit.min(10_000) as usize),
        more: false,
        scanned_to: None,
    };
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {FEED_COLUMNS} FROM events WHERE site_id = ?1 AND seq > ?2 ORDER BY seq
             LIMIT ?3"
        ))?;
        // One extra row tells whether more follow.
        let mut rows = stmt.query(params![site.as_str(), to_i64(after), i64::from(limit) + 1])?;
        let mut renderer = FeedRenderer::default();
        while let Some(row) = rows.next()? {
            if page.events.len() == limit as usize {
                page.more = true;
                break;
            }
            let seq = feed_seq(row)?;
            page.events
                .push((seq, feed_json(site, seq, row, &mut renderer)?));
        }
    }
    Ok(Some(page))
}

/// The `events` columns [`feed_seq`] and [`feed_json`] read, from the first.
const FEED_COLUMNS: &str =
    "seq, event_id, device_id, shift_id, guard_id, received_at_ms, record, json";

fn feed_seq(row: &rusqlite::Row<'_>) -> Result<u64, StoreError> {
    let seq: i64 = row.get(0)?;
    u64::try_from(seq).map_err(|_| StoreError::CorruptData(format!("negative event seq {seq}")))
}

/// The feed JSON of the event in `row` ([`FEED_COLUMNS`]): rendered from its record and
/// columns, or as stored by a version before migration 8.
fn feed_json(
    site: &SiteId,
    seq: u64,
    row: &rusqlite::Row<'_>,
    renderer: &mut FeedRenderer,
) -> Result<String, StoreError> {
    if let Some(json) = row.get::<_, Option<String>>(7)? {
        return Ok(json);
    }
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        corrupt(format!("event {seq} of site {site}: {what}: {e}"))
    };
    let text = |i: usize, what: &str| -> Result<&str, StoreError> {
        row.get_ref(i)?.as_str().map_err(|e| bad(what, &e))
    };
    let blob = |i: usize, what: &str| -> Result<&[u8], StoreError> {
        row.get_ref(i)?.as_blob().map_err(|e| bad(what, &e))
    };
    let event = patrol_core::Event {
        id: patrol_core::EventId(
            uuid::Uuid::from_slice(blob(1, "id")?).map_err(|e| bad("id", &e))?,
        ),
        site: site.clone(),
        device: read_device_id(text(2, "device id")?)?,
        shift: ShiftId::from_str(text(3, "shift id")?).map_err(|e| bad("shift id", &e))?,
        guard: patrol_core::GuardId::new(text(4, "guard id")?).map_err(|e| bad("guard id", &e))?,
        record: patrol_core::EventRecord::decode(blob(6, "record")?)
            .map_err(|e| bad("record", &e))?,
    };
    let received_at_ms: i64 = row.get(5)?;
    renderer
        .render(&event, seq, received_at_ms)
        .map_err(|e| bad("JSON", &e))
}

fn events_filtered(
    conn: &mut Connection,
    site: &SiteId,
    after: u64,
    limit: u32,
    filter: &FeedFilter,
) -> Result<Option<EventPage>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let mut page = EventPage::default();
    {
        // Walks the site's events in order (its primary key) and renders only those that
        // match; at most FILTER_SCAN_LIMIT rows per page.
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {FEED_COLUMNS},
                    CASE WHEN (?4 IS NULL OR device_time_ms >= ?4)
                              AND (?5 IS NULL OR device_time_ms < ?5)
                              AND (?6 IS NULL OR guard_id = ?6)
                              AND (?7 IS NULL OR device_id = ?7)
                              AND (?8 IS NULL OR kind = ?8)
                              AND (?9 IS NULL OR checkpoint_id = ?9)
                         THEN 1 ELSE 0 END
             FROM events WHERE site_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))?;
        let mut rows = stmt.query(params![
            site.as_str(),
            to_i64(after),
            i64::from(FILTER_SCAN_LIMIT) + 1,
            filter.from_ms,
            filter.to_ms,
            filter.guard,
            filter.device,
            filter.kind,
            filter.checkpoint,
        ])?;
        let mut renderer = FeedRenderer::default();
        let mut scanned = 0u32;
        while let Some(row) = rows.next()? {
            let seq = feed_seq(row)?;
            if scanned == FILTER_SCAN_LIMIT || page.events.len() == limit as usize {
                page.more = true;
                break;
            }
            scanned += 1;
            page.scanned_to = Some(seq);
            if row.get::<_, bool>(8)? {
                page.events
                    .push((seq, feed_json(site, seq, row, &mut renderer)?));
            }
        }
    }
    Ok(Some(page))
}

fn devices(conn: &mut Connection, site: &SiteId) -> Result<Option<Vec<DeviceStatus>>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT device_id, first_seen, last_sync_at, last_pending, clock_skew_ms
             FROM devices WHERE site_id = ?1 ORDER BY device_id",
        )?;
        let mut rows = stmt.query([site.as_str()])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let pending: i64 = row.get(3)?;
            out.push(DeviceStatus {
                device: DeviceId::from_str(&id)
                    .map_err(|e| StoreError::CorruptData(format!("device id {id:?}: {e}")))?,
                first_seen_ms: row.get(1)?,
                last_sync_at_ms: row.get(2)?,
                pending_events: u64::try_from(pending).unwrap_or(0),
                clock_skew_ms: row.get(4)?,
            });
        }
    }
    Ok(Some(out))
}

/// A `users` row read with [`USER_COLUMNS`], its sites read from `user_sites`.
fn read_user(conn: &Connection, row: &rusqlite::Row<'_>) -> Result<(User, TokenHash), StoreError> {
    let id: String = row.get(0)?;
    let role: String = row.get(2)?;
    let all_sites: bool = row.get(3)?;
    let hash = read_hash(row.get_ref(7)?.as_blob().map_err(corrupt)?, "a token hash")?;
    let scope = if all_sites {
        Scope::AllSites
    } else {
        let mut stmt = conn
            .prepare_cached("SELECT site_id FROM user_sites WHERE user_id = ?1 ORDER BY site_id")?;
        let mut rows = stmt.query([&id])?;
        let mut sites = Vec::new();
        while let Some(r) = rows.next()? {
            sites.push(read_site_id(r.get_ref(0)?.as_str().map_err(corrupt)?)?);
        }
        Scope::Sites(sites)
    };
    let user = User {
        role: role.parse().map_err(corrupt)?,
        name: row.get(1)?,
        scope,
        created_at_ms: row.get(4)?,
        created_by: row.get(5)?,
        revoked_at_ms: row.get(6)?,
        id,
    };
    Ok((user, hash))
}

fn user_by_id(conn: &Connection, id: &str) -> Result<Option<User>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1"
    ))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_user(conn, row)?.0)),
        None => Ok(None),
    }
}

fn create_user(conn: &mut Connection, new: NewUser) -> Result<User, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let NewUser { user, token_hash } = new;
    let sites: &[SiteId] = match &user.scope {
        Scope::AllSites => &[],
        Scope::Sites(sites) => sites,
    };
    for site in sites {
        if get_site(&tx, site)?.is_none() {
            return Err(StoreError::UnknownSite(site.clone()));
        }
    }
    let inserted = tx.execute(
        "INSERT INTO users (user_id, name, role, all_sites, token_hash, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (name) DO NOTHING",
        params![
            user.id,
            user.name,
            user.role.as_str(),
            user.scope == Scope::AllSites,
            token_hash.0.as_slice(),
            user.created_at_ms,
            user.created_by,
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::UserExists(user.name));
    }
    for site in sites {
        tx.execute(
            "INSERT INTO user_sites (site_id, user_id) VALUES (?1, ?2)",
            params![site.as_str(), user.id],
        )?;
    }
    tx.commit()?;
    Ok(user)
}

fn read_device_credential(
    row: &rusqlite::Row<'_>,
) -> Result<(DeviceCredential, TokenHash), StoreError> {
    let last: i64 = row.get(4)?;
    let credential = DeviceCredential {
        site: read_site_id(row.get_ref(0)?.as_str().map_err(corrupt)?)?,
        device: read_device_id(row.get_ref(1)?.as_str().map_err(corrupt)?)?,
        enrolled_at_ms: row.get(2)?,
        revoked_at_ms: row.get(3)?,
        last_request_seq: u64::try_from(last).unwrap_or(0),
        public_key: read_public_key(row.get(6)?)?,
    };
    let hash = read_hash(
        row.get_ref(5)?.as_blob().map_err(corrupt)?,
        "a credential hash",
    )?;
    Ok((credential, hash))
}

fn device_credential(
    conn: &Connection,
    site: &SiteId,
    device: &DeviceId,
) -> Result<Option<DeviceCredential>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
         WHERE site_id = ?1 AND device_id = ?2"
    ))?;
    let mut rows = stmt.query(params![site.as_str(), device.to_string()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_device_credential(row)?.0)),
        None => Ok(None),
    }
}

/// Uses an enrollment code and stores the device's credential, in one transaction.
fn enroll_device(conn: &mut Connection, e: Enrollment) -> Result<DeviceCredential, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<(String, Vec<u8>, i64, Option<i64>)> = tx
        .query_row(
            "SELECT site_id, code_hash, expires_at, used_at FROM enrollment_codes
             WHERE code_hash = ?1",
            [e.code_hash.0.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((site, stored, expires_at_ms, used_at)) = row else {
        return Err(StoreError::Enrollment(EnrollRefusal::Unknown));
    };
    if !read_hash(&stored, "a code hash")?.matches(&e.code_hash) {
        return Err(StoreError::Enrollment(EnrollRefusal::Unknown));
    }
    if let Some(used_at_ms) = used_at {
        return Err(StoreError::Enrollment(EnrollRefusal::Used { used_at_ms }));
    }
    if e.now_ms >= expires_at_ms {
        return Err(StoreError::Enrollment(EnrollRefusal::Expired {
            expired_at_ms: expires_at_ms,
        }));
    }
    let device = e.device.to_string();
    tx.execute(
        "UPDATE enrollment_codes SET used_at = ?3, device_id = ?4
         WHERE site_id = ?1 AND code_hash = ?2",
        params![site, e.code_hash.0.as_slice(), e.now_ms, device],
    )?;
    tx.execute(
        "INSERT INTO device_credentials (site_id, device_id, credential_hash, enrolled_at,
             public_key)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            site,
            device,
            e.credential_hash.0.as_slice(),
            e.now_ms,
            e.public_key.map(|k| k.to_bytes().to_vec())
        ],
    )?;
    tx.commit()?;
    Ok(DeviceCredential {
        site: read_site_id(&site)?,
        device: e.device,
        enrolled_at_ms: e.now_ms,
        revoked_at_ms: None,
        last_request_seq: 0,
        public_key: e.public_key,
    })
}

impl Store for SqliteStore {
    fn create_site(&self, site: Site) -> BoxFuture<'_, Result<Site, StoreError>> {
        Box::pin(self.write(move |conn| {
            let rows = conn.execute(
                "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (site_id) DO NOTHING",
                params![site.id.as_str(), site.name, site.created_at_ms],
            )?;
            if rows == 0 {
                return Err(StoreError::SiteExists(site.id));
            }
            Ok(site)
        }))
    }

    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StoreError>> {
        Box::pin(self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT site_id, name, created_at FROM sites ORDER BY site_id")?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(read_site(row)?);
            }
            Ok(out)
        }))
    }

    fn get_site(&self, site: SiteId) -> BoxFuture<'_, Result<Option<Site>, StoreError>> {
        Box::pin(self.read(move |conn| get_site(conn, &site)))
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
        Box::pin(self.read(move |conn| events_after(conn, &site, after, limit)))
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
                events_after(conn, &site, after, limit)
            } else {
                events_filtered(conn, &site, after, limit, &filter)
            }
        }))
    }

    fn devices(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>> {
        Box::pin(self.read(move |conn| devices(conn, &site)))
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
    ) -> BoxFuture<'_, Result<AlarmAckRecord, StoreError>> {
        Box::pin(self.write_tx(move |tx| collab::acknowledge_alarm(tx, &site, event, &by, at_ms)))
    }

    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>> {
        Box::pin(self.write(move |conn| create_user(conn, user)))
    }

    fn users(&self) -> BoxFuture<'_, Result<Vec<User>, StoreError>> {
        Box::pin(self.read(|conn| {
            let tx = conn.transaction()?;
            let mut out = Vec::new();
            {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, user_id"
                ))?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    out.push(read_user(&tx, row)?.0);
                }
            }
            Ok(out)
        }))
    }

    fn user_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, TokenHash)>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let tx = conn.transaction()?;
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE token_hash = ?1"
            ))?;
            let mut rows = stmt.query([hash.0.as_slice()])?;
            match rows.next()? {
                Some(row) => Ok(Some(read_user(&tx, row)?)),
                None => Ok(None),
            }
        }))
    }

    fn revoke_user(
        &self,
        id: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE users SET revoked_at = COALESCE(revoked_at, ?2) WHERE user_id = ?1",
                params![id, at_ms],
            )?;
            let user = user_by_id(&tx, &id)?;
            tx.commit()?;
            Ok(user)
        }))
    }

    fn create_enrollment_code(
        &self,
        code: NewEnrollmentCode,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if get_site(&tx, &code.site)?.is_none() {
                return Err(StoreError::UnknownSite(code.site));
            }
            tx.execute(
                "INSERT INTO enrollment_codes (site_id, code_hash, created_by, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    code.site.as_str(),
                    code.code_hash.0.as_slice(),
                    code.created_by,
                    code.created_at_ms,
                    code.expires_at_ms,
                ],
            )?;
            tx.commit()?;
            Ok(())
        }))
    }

    fn enroll_device(
        &self,
        enrollment: Enrollment,
    ) -> BoxFuture<'_, Result<DeviceCredential, StoreError>> {
        Box::pin(self.write(move |conn| enroll_device(conn, enrollment)))
    }

    fn device_by_credential(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(DeviceCredential, TokenHash)>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
                 WHERE credential_hash = ?1"
            ))?;
            let mut rows = stmt.query([hash.0.as_slice()])?;
            match rows.next()? {
                Some(row) => Ok(Some(read_device_credential(row)?)),
                None => Ok(None),
            }
        }))
    }

    fn shift_log_evidence(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftLogEvidence>, StoreError>> {
        Box::pin(self.read(move |conn| {
            // One snapshot: the chunks and the signatures written with them.
            let tx = conn.transaction()?;
            let doc_id = shift_log_doc_id(&shift);
            let device: Option<String> = tx
                .prepare_cached(
                    "SELECT device_id FROM docs WHERE site_id = ?1 AND doc_id = ?2 AND kind = ?3",
                )?
                .query_row(params![site.as_str(), doc_id, SHIFT_LOG_KIND], |r| r.get(0))
                .optional()?;
            let Some(device) = device else {
                return Ok(None);
            };
            let stored = read_stored_in(&tx, site.as_str(), &doc_id)?;
            let public_key: Option<Vec<u8>> = tx
                .prepare_cached(
                    "SELECT public_key FROM device_credentials WHERE site_id = ?1 AND device_id = ?2",
                )?
                .query_row(params![site.as_str(), device], |r| r.get(0))
                .optional()?
                .flatten();
            let mut signatures = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT heads, signed_at, signature, received_at FROM shift_log_signatures
                     WHERE site_id = ?1 AND doc_id = ?2 ORDER BY received_at, signed_at",
                )?;
                let mut rows = stmt.query(params![site.as_str(), doc_id])?;
                while let Some(row) = rows.next()? {
                    let heads: Vec<u8> = row.get(0)?;
                    signatures.push(read_signature(&heads, row.get(1)?, row.get(2)?, row.get(3)?)?);
                }
            }
            tx.finish()?;
            Ok(Some(ShiftLogEvidence {
                device: read_device_id(&device)?,
                bytes: stored.bytes,
                public_key: read_public_key(public_key)?,
                signatures,
            }))
        }))
    }

    fn device_credentials(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceCredential>>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let tx = conn.transaction()?;
            if get_site(&tx, &site)?.is_none() {
                return Ok(None);
            }
            let mut out = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {DEVICE_CREDENTIAL_COLUMNS} FROM device_credentials
                     WHERE site_id = ?1 ORDER BY device_id"
                ))?;
                let mut rows = stmt.query([site.as_str()])?;
                while let Some(row) = rows.next()? {
                    out.push(read_device_credential(row)?.0);
                }
            }
            Ok(Some(out))
        }))
    }

    fn revoke_device(
        &self,
        site: SiteId,
        device: DeviceId,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE device_credentials SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE site_id = ?1 AND device_id = ?2",
                params![site.as_str(), device.to_string(), at_ms],
            )?;
            let credential = device_credential(&tx, &site, &device)?;
            tx.commit()?;
            Ok(credential)
        }))
    }

    fn subscribe(&self, site: SiteId) -> tokio::sync::broadcast::Receiver<u64> {
        self.inner.notifier.subscribe(site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// One `sqlite_master` row: type, name, table, SQL.
    type SchemaRow = (String, String, String, Option<String>);

    /// Everything that defines the schema, in a stable order (root pages differ by history).
    fn schema(conn: &Connection) -> Result<Vec<SchemaRow>, StoreError> {
        let mut stmt = conn
            .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A database upgraded from every earlier version, one server start per version, ends with
    /// the same schema as a fresh one, keeps the rows it had, and passes SQLite's integrity and
    /// foreign-key checks.
    #[tokio::test]
    async fn upgraded_schema_equals_fresh() -> TestResult {
        let dir = tempfile::tempdir()?;
        let fresh = SqliteStore::open(dir.path().join("fresh.db"))?;
        let fresh_schema = fresh.write(|conn| schema(conn)).await?;
        assert!(!fresh_schema.is_empty());

        for start in 0..MIGRATIONS.len() {
            let path = dir.path().join(format!("from-{start}.db"));
            for version in 1..=start {
                // An older server: it knew only the first `version` migrations.
                let mut conn = open_connection(&path)?;
                migrate(&mut conn, version)?;
                assert_eq!(schema_version(&conn)?, version as i64);
                if version == 1 {
                    // A site every version has, to survive the later migrations.
                    conn.execute(
                        "INSERT INTO sites (site_id, name, next_seq, created_at)
                         VALUES ('site-1', 's', 1, 0)",
                        [],
                    )?;
                }
            }
            let upgraded = SqliteStore::open(&path)?;
            let (version, upgraded_schema, integrity, fk_violations) = upgraded
                .write(|conn| {
                    let integrity: String =
                        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
                    let fk_violations: i64 =
                        conn.query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                            r.get(0)
                        })?;
                    Ok((
                        schema_version(conn)?,
                        schema(conn)?,
                        integrity,
                        fk_violations,
                    ))
                })
                .await?;
            assert_eq!(version, MIGRATIONS.len() as i64);
            assert_eq!(
                upgraded_schema, fresh_schema,
                "upgraded from version {start}"
            );
            assert_eq!(
                (integrity.as_str(), fk_violations),
                ("ok", 0),
                "from {start}"
            );
            let sites = upgraded.list_sites().await?;
            assert_eq!(sites.len(), usize::from(start >= 1), "from {start}");
        }
        Ok(())
    }

    /// A store file migrated to schema `version` only, holding site `site-1` (next seq 2) and
    /// one event at seq 1 with the given id, device, kind and stored JSON.
    fn db_with_one_event(
        dir: &Path,
        version: usize,
        event_id: &dyn rusqlite::ToSql,
        device: &str,
        kind: &str,
        json: &str,
    ) -> Result<(PathBuf, Connection), StoreError> {
        let path = dir.join("p.db");
        let mut conn = open_connection(&path)?;
        migrate(&mut conn, version)?;
        conn.execute(
            "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 2, 0)",
            [],
        )?;
        conn.execute(
            "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
                 checkpoint_id, device_seq, device_time_ms, received_at_ms, json)
             VALUES ('site-1', 1, ?1, ?2, 's', 'g', ?3, NULL, 1, 2, 3, ?4)",
            params![event_id, device, kind, json],
        )?;
        Ok((path, conn))
    }

    /// Migration 3 adds its tables beside the data of version 2, which the new features then
    /// use: a panic recorded before the upgrade is acknowledged after it.
    #[tokio::test]
    async fn migration_3_works_with_the_events_of_version_2() -> TestResult {
        let dir = tempfile::tempdir()?;
        let panic = patrol_core::EventId::generate();
        let device = DeviceId::generate();
        let (path, conn) = db_with_one_event(
            dir.path(),
            2,
            &panic.0.as_bytes().as_slice(),
            &device.to_string(),
            "panic",
            "{}",
        )?;
        conn.execute(
            "INSERT INTO event_ids (site_id, event_id, seq) VALUES ('site-1', ?1, 1)",
            [panic.0.as_bytes().as_slice()],
        )?;
        drop(conn);

        let store = SqliteStore::open(&path)?;
        let site = SiteId::new("site-1")?;
        let ack = store
            .acknowledge_alarm(site.clone(), panic, "op-anna".into(), 10)
            .await?;
        assert_eq!(
            (ack.device, ack.by.as_str(), ack.at_ms),
            (device, "op-anna", 10)
        );
        let page = store
            .events_after(site.clone(), 0, 10)
            .await?
            .ok_or("no site")?;
        assert_eq!(page.events, vec![(1, "{}".to_string())]);
        let config = store.site_config(site).await?;
        assert_eq!(config.config.version, 0);
        Ok(())
    }

    /// Migration 8: the events stored before it keep their JSON and are served as stored;
    /// events written after it keep only their record, and both feed pages serve exactly what
    /// `Event::to_json` gives for them.
    #[tokio::test]
    async fn migration_8_serves_stored_json_and_renders_new_records() -> TestResult {
        let dir = tempfile::tempdir()?;
        let old = patrol_core::EventId::generate();
        let (path, conn) = db_with_one_event(
            dir.path(),
            7,
            &old.0.as_bytes().as_slice(),
            "d",
            "note",
            "{\"old\":1}",
        )?;
        let mut log = TestLog::new()?;
        log.record(3)?;
        let batch = Arc::unwrap_or_clone(log.batch()?);
        enroll(&conn, &batch)?;
        drop(conn);

        let store = SqliteStore::open(&path)?;
        let received = chrono::DateTime::from_timestamp_millis(batch.received_at_ms).ok_or("ms")?;
        store.sync(batch).await?;
        let mut expected = vec![(1, "{\"old\":1}".to_string())];
        for (seq, event) in (2..).zip(log.log.events()?) {
            let json = serde_json::to_string(&event.to_json(Some((seq, received))))?;
            expected.push((seq, json));
        }
        assert_eq!(expected.len(), 4);
        let site = SiteId::new("site-1")?;
        let page = store
            .events_after(site.clone(), 0, 10)
            .await?
            .ok_or("site")?;
        assert_eq!(page.events, expected);
        let filter = FeedFilter {
            device: Some(log.meta.device.to_string()),
            ..FeedFilter::default()
        };
        let page = store
            .events_filtered(site, 0, 10, filter)
            .await?
            .ok_or("site")?;
        assert_eq!(page.events, expected[1..]);
        let stored: (i64, i64) = store
            .write(|conn| {
                Ok(
                    conn.query_row("SELECT COUNT(record), COUNT(json) FROM events", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?,
                )
            })
            .await?;
        assert_eq!(stored, (3, 1));
        Ok(())
    }

    #[test]
    fn reopening_applies_nothing_and_a_newer_schema_is_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.db");
        drop(SqliteStore::open(&path)?);
        drop(SqliteStore::open(&path)?);
        let conn = open_connection(&path)?;
        assert_eq!(schema_version(&conn)?, MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64 + 1)?;
        drop(conn);
        match SqliteStore::open(&path) {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!(
                    (found, known),
                    (MIGRATIONS.len() as i64 + 1, MIGRATIONS.len() as i64)
                );
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn durable_pragmas_are_set() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open_dir(dir.path().join("data"))?;
        assert!(dir.path().join("data").join(DB_FILE).exists());
        let pragmas = store
            .write(|conn| {
                let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
                let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
                let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
                Ok((mode, sync, fk, page))
            })
            .await?;
        assert_eq!(pragmas, ("wal".to_string(), 2, 1, PAGE_SIZE));
        Ok(())
    }

    #[tokio::test]
    async fn a_database_made_with_smaller_pages_keeps_them_and_works() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path)?;
            conn.pragma_update(None, "page_size", 4096)?;
            conn.execute_batch("CREATE TABLE before_the_store (x INTEGER) STRICT")?;
        }
        let store = SqliteStore::open(&path)?;
        store
            .create_site(Site {
                id: SiteId::new("site-1")?,
                name: "Mall".into(),
                created_at_ms: 0,
            })
            .await?;
        let page = store
            .write(|conn| Ok(conn.pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))?))
            .await?;
        assert_eq!(page, 4096);
        assert_eq!(store.list_sites().await?.len(), 1);
        Ok(())
    }

    fn test_site_db(dir: &Path) -> Result<(PathBuf, Connection), StoreError> {
        let path = dir.join("p.db");
        drop(SqliteStore::open(&path)?);
        let conn = open_connection(&path)?;
        conn.execute(
            "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 1, 0)",
            [],
        )?;
        Ok((path, conn))
    }

    /// A shift log and a batch pushing everything it holds so far.
    struct TestLog {
        log: patrol_core::ShiftLog,
        meta: patrol_core::ShiftMeta,
        seq: u64,
        request_seq: u64,
    }

    impl TestLog {
        fn new() -> Result<Self, Box<dyn std::error::Error>> {
            let meta = patrol_core::ShiftMeta {
                site: SiteId::new("site-1")?,
                device: DeviceId::generate(),
                shift: patrol_core::ShiftId::generate(),
                guard: patrol_core::GuardId::new("guard-1")?,
            };
            let (log, _) = patrol_core::ShiftLog::create(meta.clone())?;
            Ok(TestLog {
                log,
                meta,
                seq: 0,
                request_seq: 0,
            })
        }

        fn record(&mut self, n: u64) -> Result<(), Box<dyn std::error::Error>> {
            for _ in 0..n {
                self.record_id(patrol_core::EventId::generate())?;
            }
            Ok(())
        }

        fn record_id(
            &mut self,
            id: patrol_core::EventId,
        ) -> Result<(), Box<dyn std::error::Error>> {
            {
                self.seq += 1;
                let record = patrol_core::EventRecord {
                    seq: self.seq,
                    time: patrol_core::DeviceTime {
                        wall_ms: 1_740_866_400_000,
                        boot_id: uuid::Uuid::nil(),
                        mono_ms: self.seq,
                        hlc: patrol_core::Hlc::default(),
                    },
                    config_version: 1,
                    body: patrol_core::EventBody::Note {
                        text: format!("note {}", self.seq),
                    },
                };
                self.log.record(id, &record)?;
            }
            Ok(())
        }

        fn batch(&mut self) -> Result<Arc<SyncBatch>, Box<dyn std::error::Error>> {
            let push = patrol_core::merge::plan_push(&mut self.log, &[])?;
            self.request_seq += 1;
            Ok(Arc::new(SyncBatch {
                site: self.meta.site.clone(),
                device: self.meta.device,
                request_seq: self.request_seq,
                received_at_ms: 1_740_866_500_000,
                device_time_ms: 1_740_866_500_000,
                pending_events: 0,
                pushes: vec![super::super::ShiftLogPush {
                    shift: self.meta.shift,
                    changes: push.changes,
                    events: push.events,
                    signature: None,
                }],
                public_key: None,
            }))
        }
    }

    /// Gives the batch's device a credential on its site, as enrollment does.
    fn enroll(conn: &Connection, batch: &SyncBatch) -> Result<(), StoreError> {
        conn.execute(
            "INSERT INTO device_credentials (site_id, device_id, credential_hash, enrolled_at)
             VALUES (?1, ?2, randomblob(32), 0) ON CONFLICT DO NOTHING",
            params![batch.site.as_str(), batch.device.to_string()],
        )?;
        Ok(())
    }

    /// Merges the batch's one push against the stored document (enrolling its device first).
    fn merge_all(
        conn: &mut Connection,
        batch: &SyncBatch,
    ) -> Result<Vec<Option<Prepared>>, StoreError> {
        enroll(conn, batch)?;
        let doc_id = shift_log_doc_id(&batch.pushes[0].shift);
        let stored = read_stored(conn, batch.site.as_str(), &doc_id)?;
        Ok(vec![Some(merge_push(batch, 0, stored)?)])
    }

    /// Writes one request in a transaction of its own, as the writer thread does, keeping the
    /// event-id index in step.
    fn write_alone(
        conn: &mut Connection,
        ids: &mut EventIds,
        batch: &SyncBatch,
        merged: &mut [Option<Prepared>],
        final_round: bool,
    ) -> Result<Wrote, StoreError> {
        let tx = conn.transaction()?;
        let mut claims = ids.claims();
        let wrote = write_request(&tx, &mut claims, batch, merged, final_round)?;
        let claims = claims.into_committed();
        tx.commit()?;
        ids.committed(claims);
        Ok(wrote)
    }

    fn new_events(wrote: &Wrote) -> Vec<u32> {
        match wrote {
            Wrote::Committed(outcomes) => outcomes
                .iter()
                .map(|o| match o {
                    DocOutcome::Accepted { new_events, .. } => *new_events,
                    other => panic!("{other:?}"),
                })
                .collect(),
            Wrote::Conflicts(conflicts) => panic!("conflicts {conflicts:?}"),
            Wrote::Refused(refusal) => panic!("refused {refusal:?}"),
        }
    }

    /// Two pushes of one log merged from the same stored version: the first to write wins; the
    /// second finds the version moved and writes nothing, and in its final round is merged again
    /// under the write lock, on top of the first. No event is lost or projected twice.
    #[test]
    fn a_stale_merge_conflicts_and_is_merged_again_under_the_lock() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let mut log = TestLog::new()?;
        log.record(5)?;
        let first = log.batch()?;
        log.record(5)?;
        let second = log.batch()?;
        let mut merged_first = merge_all(&mut conn, &first)?;
        let mut merged_second = merge_all(&mut conn, &second)?;
        let mut index = EventIds::load(&conn)?;

        let wrote = write_alone(&mut conn, &mut index, &first, &mut merged_first, false)?;
        // The metadata change holds no event: the 5 notes.
        assert_eq!(new_events(&wrote), vec![5]);

        let Wrote::Conflicts(conflicts) =
            write_alone(&mut conn, &mut index, &second, &mut merged_second, false)?
        else {
            panic!("a stale merge was written");
        };
        assert_eq!(conflicts, vec![0]);

        let wrote = write_alone(&mut conn, &mut index, &second, &mut merged_second, true)?;
        assert_eq!(new_events(&wrote), vec![5]);

        let (rows, ids, seqs): (i64, i64, i64) = conn.query_row(
            "SELECT COUNT(*), COUNT(DISTINCT event_id), MAX(seq) FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        assert_eq!((rows, ids, seqs), (10, 10, 10));
        let next_seq: i64 = conn.query_row("SELECT next_seq FROM sites", [], |r| r.get(0))?;
        assert_eq!(next_seq, 11);
        // A fresh merge of the whole log finds nothing new, from the stored chunks.
        let again = log.batch()?;
        let mut merged = merge_all(&mut conn, &again)?;
        assert_eq!(
            new_events(&write_alone(
                &mut conn,
                &mut index,
                &again,
                &mut merged,
                false
            )?),
            vec![0]
        );
        Ok(())
    }

    /// Migration 2 turns the text event ids into their bytes and keeps everything else.
    #[test]
    fn migration_2_stores_event_ids_as_bytes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let id = uuid::Uuid::now_v7();
        // Version 1 keeps event ids as text.
        let (path, conn) =
            db_with_one_event(dir.path(), 1, &id.to_string(), "d", "note", "{\"x\":1}")?;
        drop(conn);
        drop(SqliteStore::open(&path)?);
        let conn = open_connection(&path)?;
        let row: (i64, Vec<u8>, String, i64) = conn.query_row(
            "SELECT seq, event_id, json, received_at_ms FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        assert_eq!(row, (1, id.as_bytes().to_vec(), "{\"x\":1}".into(), 3));
        let folded: (Vec<u8>, i64) =
            conn.query_row("SELECT event_id, seq FROM event_ids", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        assert_eq!(folded, (id.as_bytes().to_vec(), 1));
        let through: i64 =
            conn.query_row("SELECT through_seq FROM event_id_folds", [], |r| r.get(0))?;
        assert_eq!(through, 1);
        Ok(())
    }

    /// A new shift log holding `ids`, as one sync request.
    fn log_with_ids(
        ids: &[patrol_core::EventId],
    ) -> Result<Arc<SyncBatch>, Box<dyn std::error::Error>> {
        let mut log = TestLog::new()?;
        for id in ids {
            log.record_id(*id)?;
        }
        log.batch()
    }

    /// Merges and writes a new shift log holding `ids` alone; returns its new events' count.
    fn push_log_with_ids(
        conn: &mut Connection,
        index: &mut EventIds,
        ids: &[patrol_core::EventId],
    ) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
        let batch = log_with_ids(ids)?;
        let mut merged = merge_all(conn, &batch)?;
        let wrote = write_alone(conn, index, &batch, &mut merged, false)?;
        Ok(new_events(&wrote))
    }

    /// Each fold writes its ids as a new run of `event_ids`; an id is found in whichever run
    /// holds it, by the index as it is and as read back from the database; and the fold that
    /// makes more than `MAX_RUNS` runs merges them into run 0, where they are found as well.
    #[test]
    fn folded_ids_are_found_in_every_run_and_runs_merge() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let runs = |conn: &Connection| -> rusqlite::Result<Vec<i64>> {
            conn.prepare("SELECT DISTINCT run FROM event_ids ORDER BY run")?
                .query_map([], |r| r.get(0))?
                .collect()
        };
        // A new event in a log of its own, folded at once.
        let fold_one = |conn: &mut Connection, index: &mut EventIds| {
            let id = patrol_core::EventId::generate();
            assert_eq!(push_log_with_ids(conn, index, &[id])?, vec![1]);
            assert_eq!(index.fold(conn)?, 1);
            Ok::<_, Box<dyn std::error::Error>>(id)
        };
        // Each id again, in a log of its own: known to `index` and to one read from the database.
        let known_to_both =
            |conn: &mut Connection, index: &mut EventIds, ids: &[patrol_core::EventId]| {
                let mut fresh = EventIds::load(conn)?;
                for id in ids {
                    assert_eq!(push_log_with_ids(conn, index, &[*id])?, vec![0]);
                    assert_eq!(push_log_with_ids(conn, &mut fresh, &[*id])?, vec![0]);
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            };
        let mut index = EventIds::load(&conn)?;
        let mut folded = Vec::new();
        for fold in 1..=event_ids::MAX_RUNS {
            folded.push(fold_one(&mut conn, &mut index)?);
            assert_eq!(runs(&conn)?, (1..=fold).collect::<Vec<_>>());
        }
        known_to_both(&mut conn, &mut index, &folded)?;
        folded.push(fold_one(&mut conn, &mut index)?);
        assert_eq!(runs(&conn)?, vec![0]);
        known_to_both(&mut conn, &mut index, &folded)?;
        // The next fold starts run 1 again, and the merged ids keep their seqs.
        fold_one(&mut conn, &mut index)?;
        assert_eq!(runs(&conn)?, vec![0, 1]);
        let matching: i64 = conn.query_row(
            "SELECT COUNT(*) FROM events e JOIN event_ids i
               ON i.site_id = e.site_id AND i.event_id = e.event_id AND i.seq = e.seq",
            [],
            |r| r.get(0),
        )?;
        assert_eq!(matching, event_ids::MAX_RUNS + 2);
        Ok(())
    }

    /// An event id already on the site from another log is not projected again, whether the
    /// first one's id is still in the recent level of the index (in memory), already folded into
    /// `event_ids`, or claimed earlier in the same transaction; and the recent level is rebuilt
    /// from the events past the fold when the store opens.
    #[test]
    fn an_event_id_from_another_log_stays_once_in_either_level() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let ids: Vec<patrol_core::EventId> =
            (0..6).map(|_| patrol_core::EventId::generate()).collect();
        let (batch, push) = (log_with_ids, push_log_with_ids);
        let mut index = EventIds::load(&conn)?;
        assert_eq!(push(&mut conn, &mut index, &ids[0..3])?, vec![3]);
        // ids[0] is in the recent level.
        assert_eq!(push(&mut conn, &mut index, &[ids[0], ids[3]])?, vec![1]);
        assert_eq!(index.recent_len(), 4);
        assert_eq!(index.fold(&mut conn)?, 4);
        assert_eq!(index.recent_len(), 0);
        // ids[1] is folded...
        assert_eq!(push(&mut conn, &mut index, &[ids[1], ids[4]])?, vec![1]);
        // ...and an index read from the database knows both levels: ids[2] folded, ids[4]
        // recent.
        let mut fresh = EventIds::load(&conn)?;
        assert_eq!(fresh.recent_len(), 1);
        assert_eq!(push(&mut conn, &mut fresh, &[ids[2], ids[4]])?, vec![0]);
        // Two logs in one transaction with the same new id: the first claims it.
        let (a, b) = (batch(&[ids[5]])?, batch(&[ids[5]])?);
        let (mut merged_a, mut merged_b) = (merge_all(&mut conn, &a)?, merge_all(&mut conn, &b)?);
        let tx = conn.transaction()?;
        let mut claims = fresh.claims();
        let first = write_request(&tx, &mut claims, &a, &mut merged_a, false)?;
        let second = write_request(&tx, &mut claims, &b, &mut merged_b, false)?;
        // Rolled back: the claim must not outlive the transaction.
        drop(claims);
        drop(tx);
        assert_eq!(
            (new_events(&first), new_events(&second)),
            (vec![1], vec![0])
        );
        assert_eq!(fresh.recent_len(), 1);
        assert_eq!(push(&mut conn, &mut fresh, &[ids[5]])?, vec![1]);

        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        assert_eq!(count("SELECT COUNT(*) FROM events")?, 6);
        assert_eq!(count("SELECT COUNT(DISTINCT event_id) FROM events")?, 6);
        assert_eq!(count("SELECT MAX(seq) FROM events")?, 6);
        assert_eq!(count("SELECT through_seq FROM event_id_folds")?, 4);
        // The folded level holds exactly the events up to the watermark, with their seq.
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM events e JOIN event_ids i
                   ON i.site_id = e.site_id AND i.event_id = e.event_id AND i.seq = e.seq
                 WHERE e.seq <= 4"
            )?,
            4
        );
        assert_eq!(count("SELECT COUNT(*) FROM event_ids")?, 4);
        Ok(())
    }

    /// A sync request is written only for an enrolled, unrevoked device, with a request seq
    /// above the last accepted one: checked in the write transaction, and a refused request
    /// writes nothing at all (no document, event, device row or seq).
    #[test]
    fn a_sync_is_refused_in_its_transaction_unless_the_device_may_send_it() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (_path, mut conn) = test_site_db(dir.path())?;
        let mut log = TestLog::new()?;
        log.record(3)?;
        let first = log.batch()?;
        let count = |conn: &Connection, sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        let write = |conn: &mut Connection, batch: &SyncBatch| -> Result<Wrote, StoreError> {
            let doc_id = shift_log_doc_id(&batch.pushes[0].shift);
            let stored = read_stored(conn, batch.site.as_str(), &doc_id)?;
            let mut merged = vec![Some(merge_push(batch, 0, stored)?)];
            let mut ids = EventIds::load(conn)?;
            write_alone(conn, &mut ids, batch, &mut merged, true)
        };
        let nothing_written = |conn: &Connection| -> Result<bool, StoreError> {
            Ok(count(conn, "SELECT COUNT(*) FROM events")? == 0
                && count(conn, "SELECT COUNT(*) FROM docs")? == 0
                && count(conn, "SELECT COUNT(*) FROM devices")? == 0)
        };

        assert!(matches!(
            write(&mut conn, &first)?,
            Wrote::Refused(SyncRefusal::NotEnrolled)
        ));
        assert!(nothing_written(&conn)?);

        enroll(&conn, &first)?;
        assert_eq!(new_events(&write(&mut conn, &first)?), vec![3]);
        assert_eq!(
            count(&conn, "SELECT last_request_seq FROM device_credentials")?,
            1
        );
        // The same request again, and one numbered below the last accepted.
        log.record(2)?;
        let mut replayed = (*log.batch()?).clone();
        for seq in [1, 0] {
            replayed.request_seq = seq;
            assert!(matches!(
                write(&mut conn, &replayed)?,
                Wrote::Refused(SyncRefusal::Replayed { last_seq: 1 })
            ));
        }
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM events")?, 3);

        conn.execute("UPDATE device_credentials SET revoked_at = 5", [])?;
        replayed.request_seq = 9;
        assert!(matches!(
            write(&mut conn, &replayed)?,
            Wrote::Refused(SyncRefusal::Revoked)
        ));
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM events")?, 3);
        assert_eq!(
            count(&conn, "SELECT last_request_seq FROM device_credentials")?,
            1
        );
        Ok(())
    }

    /// Migration 4 adds the auth tables, empty, and leaves the devices already known alone.
    #[test]
    fn migration_4_keeps_devices_and_starts_with_no_credentials() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.db");
        let mut conn = open_connection(&path)?;
        migrate(&mut conn, 3)?;
        conn.execute_batch(
            "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 1, 0);
             INSERT INTO devices (site_id, device_id, first_seen, last_sync_at, last_pending,
                                  clock_skew_ms)
             VALUES ('site-1', '0195a1b2-0000-7000-8000-000000000001', 1, 2, 3, 4);",
        )?;
        drop(conn);
        drop(SqliteStore::open(&path)?);
        let conn = open_connection(&path)?;
        let devices: i64 = conn.query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0))?;
        assert_eq!(devices, 1);
        for table in [
            "users",
            "user_sites",
            "enrollment_codes",
            "device_credentials",
        ] {
            let rows: i64 =
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            assert_eq!(rows, 0, "{table}");
        }
        Ok(())
    }

    /// Users, enrollment codes and device credentials through the store's interface.
    #[tokio::test]
    async fn users_codes_and_credentials_are_stored_by_hash() -> TestResult {
        use crate::credentials::{Secret, TokenKind};
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(dir.path().join("p.db"))?;
        let site = SiteId::new("site-1")?;
        store
            .create_site(Site {
                id: site.clone(),
                name: "s".into(),
                created_at_ms: 0,
            })
            .await?;

        // Users: created once per name, within existing sites, found by their token's hash.
        let (new, token) = crate::credentials::new_user(
            "ann".into(),
            super::super::Role::Operator,
            Scope::Sites(vec![site.clone()]),
            None,
            1,
        )?;
        let ann = store.create_user(new.clone()).await?;
        assert!(matches!(
            store.create_user(new).await,
            Err(StoreError::UserExists(name)) if name == "ann"
        ));
        let (nowhere, _) = crate::credentials::new_user(
            "bob".into(),
            super::super::Role::Operator,
            Scope::Sites(vec![SiteId::new("nowhere")?]),
            None,
            1,
        )?;
        assert!(matches!(
            store.create_user(nowhere).await,
            Err(StoreError::UnknownSite(_))
        ));
        let (found, stored) = store
            .user_by_token(token.hash())
            .await?
            .ok_or("ann not found by her token")?;
        assert_eq!(found, ann);
        assert!(stored.matches(&token.hash()));
        assert!(
            store
                .user_by_token(TokenHash::of("pu_other"))
                .await?
                .is_none()
        );
        let revoked = store.revoke_user(ann.id.clone(), 7).await?.ok_or("gone")?;
        assert_eq!(revoked.revoked_at_ms, Some(7));
        let again = store.revoke_user(ann.id.clone(), 9).await?.ok_or("gone")?;
        assert_eq!(
            again.revoked_at_ms,
            Some(7),
            "the first revocation time stays"
        );
        assert_eq!(store.users().await?, vec![again]);
        assert!(store.revoke_user("nobody".into(), 9).await?.is_none());

        // Enrollment: a code works once, before it expires; nothing else changes.
        let code = Secret::generate(TokenKind::Enrollment)?;
        let new_code = |code: &Secret, expires_at_ms| NewEnrollmentCode {
            site: site.clone(),
            code_hash: code.hash(),
            created_by: None,
            created_at_ms: 0,
            expires_at_ms,
        };
        store.create_enrollment_code(new_code(&code, 1_000)).await?;
        let credential = Secret::generate(TokenKind::Device)?;
        let enrollment = |code: &Secret, now_ms| Enrollment {
            code_hash: code.hash(),
            device: DeviceId::generate(),
            credential_hash: Secret::generate(TokenKind::Device)
                .map(|c| c.hash())
                .unwrap_or(TokenHash([0; 32])),
            public_key: None,
            now_ms,
        };
        let device = DeviceId::generate();
        let enrolled = store
            .enroll_device(Enrollment {
                code_hash: code.hash(),
                device,
                credential_hash: credential.hash(),
                public_key: None,
                now_ms: 500,
            })
            .await?;
        assert_eq!(
            (
                enrolled.site.clone(),
                enrolled.device,
                enrolled.last_request_seq
            ),
            (site.clone(), device, 0)
        );
        assert!(matches!(
            store.enroll_device(enrollment(&code, 600)).await,
            Err(StoreError::Enrollment(EnrollRefusal::Used {
                used_at_ms: 500
            }))
        ));
        let expired = Secret::generate(TokenKind::Enrollment)?;
        store
            .create_enrollment_code(new_code(&expired, 1_000))
            .await?;
        assert!(matches!(
            store.enroll_device(enrollment(&expired, 1_000)).await,
            Err(StoreError::Enrollment(EnrollRefusal::Expired {
                expired_at_ms: 1_000
            }))
        ));
        let unknown = Secret::generate(TokenKind::Enrollment)?;
        assert!(matches!(
            store.enroll_device(enrollment(&unknown, 1)).await,
            Err(StoreError::Enrollment(EnrollRefusal::Unknown))
        ));
        let elsewhere = NewEnrollmentCode {
            site: SiteId::new("nowhere")?,
            ..new_code(&unknown, 1_000)
        };
        assert!(matches!(
            store.create_enrollment_code(elsewhere).await,
            Err(StoreError::UnknownSite(_))
        ));
        assert_eq!(
            store.device_credentials(site.clone()).await?,
            Some(vec![enrolled.clone()])
        );

        // The credential finds its device; revoking keeps the first revocation time.
        let (by_credential, stored) = store
            .device_by_credential(credential.hash())
            .await?
            .ok_or("device not found by its credential")?;
        assert_eq!(by_credential, enrolled);
        assert!(stored.matches(&credential.hash()));
        let revoked = store
            .revoke_device(site.clone(), device, 800)
            .await?
            .ok_or("gone")?;
        assert_eq!(revoked.revoked_at_ms, Some(800));
        let again = store
            .revoke_device(site.clone(), device, 900)
            .await?
            .ok_or("gone")?;
        assert_eq!(again.revoked_at_ms, Some(800));
        assert!(
            store
                .revoke_device(site, DeviceId::generate(), 900)
                .await?
                .is_none()
        );
        // Only hashes are stored: no byte of the database or its log holds a token's text.
        let mut files = Vec::new();
        for suffix in ["", "-wal"] {
            let file = PathBuf::from(format!("{}{suffix}", store.path().display()));
            if file.exists() {
                files.push(std::fs::read(file)?);
            }
        }
        for secret in [token.expose(), code.expose(), credential.expose()] {
            let needle = secret.as_bytes();
            for bytes in &files {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
        Ok(())
    }
}
