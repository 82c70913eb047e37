//! The PostgreSQL backend: the same record as SQLite, shared by any number of server instances.
//!
//! - A pool of connections ([`deadpool_postgres`]); statements are prepared once per connection.
//! - Sync requests run the two phases of [`super::merge`]. The merge reads each document in one
//!   statement (one snapshot) and runs on the blocking pool, at most one per core at a time,
//!   outside any transaction. The write phase is one READ COMMITTED transaction per request:
//!   1. it locks every document it writes, in doc-id order so that two requests never wait on
//!      each other in a cycle: an existing one with `SELECT .. FOR NO KEY UPDATE`, comparing its heads to
//!      those the merge started from; a new one by inserting its row, which a concurrent first
//!      push of the same document waits on, then finds taken. A moved version means the merge is
//!      redone; in the last of [`OPTIMISTIC_ROUNDS`] it is redone under the lock;
//!   2. it writes the chunks and `docs` rows;
//!   3. before the first new event it locks the site's row and numbers the events from its
//!      `next_seq`. Every writer of a site's events holds that lock until it commits, so sequence
//!      numbers are gap-free and commit (become visible) in order, whichever instance wrote them;
//!      event ids are checked against the site's feed under the same lock, and the schema keeps
//!      them unique per site;
//!   4. it records the device's sync and sends `NOTIFY patrol_events, '<site> <last seq>'`,
//!      which PostgreSQL delivers to every listener when (and only if) the transaction commits.
//! - Incidents, configurations and alarm acks ([`collab`]): each incident write locks the
//!   incident's row for its read-modify-write.
//! - Row locks are `FOR NO KEY UPDATE`, never `FOR UPDATE`: inserting a row that references
//!   another (a document of a site) takes a key-share lock on the referenced row, which
//!   `FOR UPDATE` would wait for, so two writers that had each inserted such a row would wait on
//!   each other for good.
//! - A listener task per store keeps one connection that `LISTEN`s on `patrol_events` and wakes
//!   the local subscribers ([`Store::subscribe`]). If the connection drops it reconnects, then
//!   wakes every subscribed site with its current last seq, so no one waits for a missed wake-up.
//! - Migrations in `postgres/migrations/`, each in its own transaction under an advisory lock
//!   (instances starting at once apply each migration once), recorded in `schema_migrations`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use patrol_core::merge::Rejection;
use patrol_core::protocol::{DocOutcome, to_wire};
use patrol_core::{DeviceId, ShiftId, SiteId};
use tokio::sync::{Semaphore, broadcast, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::event_json::FeedRenderer;
use super::incident::ServerClock;
use super::merge::{
    ChunkWrite, Merge, MergedLog, Prepared, SHIFT_LOG_KIND, StoredDoc, heads_to_blob, merge_push,
    shift_log_doc_id,
};
use super::notify::Notifier;
use super::rows::{read_device_id, read_public_key, read_signature, signed_heads_blob};
use super::{
    AlarmAckRecord, BoxFuture, CollabAnswer, CollabSync, DeviceCredential, DeviceStatus,
    Enrollment, EventPage, FILTER_SCAN_LIMIT, FeedFilter, IncidentList, IncidentQuery,
    NewEnrollmentCode, NewUser, OperatorAction, ShiftLogEvidence, Site, Store, StoreError,
    StoredConfig, SyncBatch, SyncRefusal, User,
};
use crate::credentials::TokenHash;

mod auth;
mod collab;
pub mod scratch;

/// The schema migrations, in order; migration `i` (from 0) brings the schema to version `i + 1`.
/// Never edit a released one: add a new file.
const MIGRATIONS: &[&str] = &[
    include_str!("postgres/migrations/0001_init.sql"),
    include_str!("postgres/migrations/0002_incidents_config_alarms.sql"),
    include_str!("postgres/migrations/0003_auth.sql"),
    include_str!("postgres/migrations/0004_signatures.sql"),
];

/// The advisory lock key migrations run under (any constant; this is "patrol" in ASCII).
const MIGRATION_LOCK: i64 = 0x7061_7472_6f6c;

/// The channel new events are announced on; the payload is `<site id> <last seq>`.
pub const EVENTS_CHANNEL: &str = "patrol_events";

/// Optimistic rounds of a sync request (read, merge, check and write) before the documents whose
/// version keeps moving are merged under the lock instead.
const OPTIMISTIC_ROUNDS: u32 = 3;

/// Attempts of a transaction that PostgreSQL aborted to break a deadlock or a serialization
/// conflict; the lock order above should make these rare.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// How long a request waits for a pooled connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Delays between the listener's reconnection attempts.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(100);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Settings of the PostgreSQL backend.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Most pooled connections (the listener's is extra).
    pub max_connections: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: 16,
        }
    }
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    /// Merges running at once on the blocking pool (one per core: they are CPU-bound).
    merges: Semaphore,
    /// Stamps operators' incident entries.
    clock: Arc<ServerClock>,
    notifier: Arc<Notifier>,
    listener: tokio::task::JoinHandle<()>,
    /// Where the database is, for logs: host, port and database, never the password.
    description: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// The PostgreSQL store. Cheap to clone; clones share the pool and the listener, which stop once
/// the last clone is dropped.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

/// Host, port and database of a connection config, for logs (no user or password).
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "postgres://{}:{}/{}",
        hosts.join(","),
        ports.join(","),
        config.get_dbname().unwrap_or("")
    )
}

fn pool_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Pool(e.to_string())
}

/// A connection the pool could not get: the database's own error when there is one.
fn checkout_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
        other => pool_error(other),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname?..`, or the
    /// key-value form), migrates it to the current schema and starts listening for other
    /// instances' events. Returns once the listener is listening.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::DatabaseUrl(e.to_string()))?;
        if config.get_application_name().is_none() {
            config.application_name("patrol-server");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let description = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(pool_error)?;
        {
            let mut client = pool.get().await.map_err(checkout_error)?;
            migrate(&mut client, MIGRATIONS.len()).await?;
        }
        let notifier = Arc::new(Notifier::default());
        let (ready, listening) = oneshot::channel();
        let listener = tokio::spawn(listen(config, Arc::clone(&notifier), Some(ready)));
        match listening.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                listener.abort();
                return Err(e);
            }
            Err(_) => return Err(StoreError::Closed),
        }
        tracing::info!(database = %description, "opened the PostgreSQL store");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                merges: Semaphore::new(cpus()),
                clock: Arc::new(ServerClock::default()),
                notifier,
                listener,
                description,
            }),
        })
    }

    /// Host, port and database (no credentials), for logs.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.inner.pool.get().await.map_err(checkout_error)
    }

    /// Runs `attempt` (one transaction) again if PostgreSQL aborted it to break a deadlock or a
    /// serialization conflict.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(e) if tries < TRANSACTION_ATTEMPTS && retryable(&e) => {
                    tracing::debug!(error = %e, tries, "transaction aborted by the database; retrying");
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Merges push `index` of `batch` into `stored` on the blocking pool.
    async fn merge(
        &self,
        batch: &Arc<SyncBatch>,
        index: usize,
        stored: StoredDoc,
    ) -> Result<Prepared, StoreError> {
        let _permit = self
            .inner
            .merges
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let batch = Arc::clone(batch);
        tokio::task::spawn_blocking(move || merge_push(&batch, index, stored)).await?
    }

    /// Applies a sync request (see the module docs).
    async fn sync_batch(&self, batch: SyncBatch) -> Result<Vec<DocOutcome>, StoreError> {
        let batch = Arc::new(batch);
        let mut merged: Vec<Option<Prepared>> = batch.pushes.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..batch.pushes.len()).collect();
        let mut round = 1;
        let mut aborted = 0;
        loop {
            for &i in &todo {
                let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
                // The connection goes back to the pool before the (long) merge.
                let stored = {
                    let client = self.client().await?;
                    read_stored(&client, batch.site.as_str(), &doc_id).await?
                };
                merged[i] = Some(self.merge(&batch, i, stored).await?);
            }
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let final_round = round >= OPTIMISTIC_ROUNDS;
            match self
                .write_request(&tx, &batch, &mut merged, final_round)
                .await
            {
                Ok(Wrote::Committed { outcomes, last_seq }) => {
                    tx.commit().await?;
                    if let Some(seq) = last_seq {
                        // The listener hears the NOTIFY too; waking here spares local readers
                        // the round trip.
                        self.inner.notifier.notify(batch.site.as_str(), seq);
                    }
                    return Ok(outcomes);
                }
                Ok(Wrote::Refused(refusal)) => {
                    tx.rollback().await?;
                    return Err(StoreError::SyncRefused(refusal));
                }
                Ok(Wrote::Conflicts(conflicts)) => {
                    tx.rollback().await?;
                    tracing::debug!(
                        site = %batch.site, device = %batch.device, round, conflicts = conflicts.len(),
                        "documents changed while merging; merging them again"
                    );
                    todo = conflicts;
                    round += 1;
                }
                Err(e) if aborted + 1 < TRANSACTION_ATTEMPTS && retryable(&e) => {
                    // Every merged entry is still checked against its version on the next try.
                    drop(tx);
                    tracing::debug!(error = %e, "sync transaction aborted by the database; retrying");
                    aborted += 1;
                    todo = Vec::new();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The write phase of one request inside `tx` (see the module docs). If a document's version
    /// moved, writes nothing and reports the conflicts, unless `final_round`: then the
    /// conflicting documents are merged again here, under their lock.
    async fn write_request(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        batch: &Arc<SyncBatch>,
        merged: &mut [Option<Prepared>],
        final_round: bool,
    ) -> Result<Wrote, StoreError> {
        let site = batch.site.as_str();
        if query_opt(tx, "SELECT 1 FROM sites WHERE site_id = $1", &[&site])
            .await?
            .is_none()
        {
            return Err(StoreError::UnknownSite(batch.site.clone()));
        }
        if let Some(refusal) = auth::sync_refusal(tx, batch).await? {
            return Ok(Wrote::Refused(refusal));
        }

        // 1. Lock the documents to write, in doc-id order, and compare their versions.
        let mut to_lock: Vec<(String, usize)> = Vec::new();
        for (i, prepared) in merged.iter().enumerate() {
            let prepared = prepared.as_ref().ok_or_else(not_merged)?;
            if prepared.writes() {
                to_lock.push((prepared.doc_id.clone(), i));
            }
        }
        to_lock.sort();
        let mut locked: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        let mut conflicts = Vec::new();
        for (doc_id, i) in to_lock {
            let prepared = merged[i].as_ref().ok_or_else(not_merged)?;
            let current = match locked.get(&doc_id) {
                Some(version) => version.clone(),
                None => {
                    let version = lock_doc(tx, batch, prepared).await?;
                    locked.insert(doc_id, version.clone());
                    version
                }
            };
            if current != prepared.version {
                conflicts.push(i);
            }
        }
        if !conflicts.is_empty() && !final_round {
            return Ok(Wrote::Conflicts(conflicts));
        }

        // 2 and 3. Write each accepted document and its new events, in the request's order.
        let mut outcomes = Vec::with_capacity(merged.len());
        let mut written: Vec<String> = Vec::new();
        let mut seqs = SeqAllocator::default();
        for (i, slot) in merged.iter_mut().enumerate() {
            let stale = {
                let prepared = slot.as_ref().ok_or_else(not_merged)?;
                (prepared.writes() && written.contains(&prepared.doc_id)) || conflicts.contains(&i)
            };
            if stale {
                // Written earlier in this transaction (the same log twice in one request) or
                // moved under a concurrent request: merged again on top of what is stored now,
                // under the lock taken above.
                let doc_id = shift_log_doc_id(&batch.pushes[i].shift);
                let stored = read_stored(tx, site, &doc_id).await?;
                *slot = Some(self.merge(batch, i, stored).await?);
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
            let new_events = write_doc(tx, batch, &prepared.doc_id, log, &mut seqs).await?;
            if log.write != ChunkWrite::Nothing && !written.contains(&prepared.doc_id) {
                written.push(prepared.doc_id.clone());
            }
            outcomes.push(DocOutcome::Accepted {
                heads: to_wire(&log.heads),
                new_events,
                missing_deps: log.missing_deps,
            });
        }

        // 4. The site's next seq, the announcement, and the device's row.
        let mut last_seq = None;
        if let Some((first, next)) = seqs.range() {
            if next != first {
                execute(
                    tx,
                    "UPDATE sites SET next_seq = $2 WHERE site_id = $1",
                    &[&site, &next],
                )
                .await?;
                let last = u64::try_from(next - 1)
                    .map_err(|_| StoreError::CorruptData(format!("next_seq {next} of {site}")))?;
                query_one(
                    tx,
                    "SELECT pg_notify($1, $2)",
                    &[&EVENTS_CHANNEL, &format!("{site} {last}")],
                )
                .await?;
                last_seq = Some(last);
            }
        }
        let device = batch.device_sync(&outcomes);
        execute(
            tx,
            "INSERT INTO devices (site_id, device_id, first_seen, last_sync_at, last_pending,
                 clock_skew_ms)
             VALUES ($1, $2, $3, $3, $4, $5)
             ON CONFLICT (site_id, device_id) DO UPDATE SET
                 last_sync_at = GREATEST(devices.last_sync_at, excluded.last_sync_at),
                 last_pending = excluded.last_pending,
                 clock_skew_ms = excluded.clock_skew_ms",
            &[
                &site,
                &device.device.to_string(),
                &device.synced_at_ms,
                &to_i64(device.pending_events),
                &device.clock_skew_ms,
            ],
        )
        .await?;
        auth::accept_request(tx, batch).await?;
        Ok(Wrote::Committed { outcomes, last_seq })
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Whether PostgreSQL aborted the transaction to break a deadlock or a serialization conflict
/// (the same transaction may then succeed).
fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres(e) => e.code().is_some_and(|code| {
            *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        }),
        _ => false,
    }
}

fn not_merged() -> StoreError {
    StoreError::CorruptData("a push reached the write phase without a merge".into())
}

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::CorruptData(format!("negative {what} {n}")))
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

// Every statement goes through the connection's statement cache: parsed once per connection.
async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

async fn query_one<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_one(&stmt, params).await?)
}

async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// The version of `schema_migrations`: how many migrations are applied.
async fn schema_version<C: GenericClient>(c: &C) -> Result<i64, StoreError> {
    let row = c
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::bigint FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Applies migrations until the schema is at version `target`, each in its own transaction under
/// an advisory lock that makes instances starting at once wait for each other.
async fn migrate(client: &mut deadpool_postgres::Client, target: usize) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    loop {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // Checked first rather than `IF NOT EXISTS`, which logs a notice on every start.
        let missing: bool = tx
            .query_one("SELECT to_regclass('schema_migrations') IS NULL", &[])
            .await?
            .try_get(0)?;
        if missing {
            tx.batch_execute(
                "CREATE TABLE schema_migrations (
                     version    bigint NOT NULL PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await?;
        }
        let current = schema_version(&tx).await?;
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
            tx.commit().await?;
            return Ok(());
        }
        tx.batch_execute(MIGRATIONS[next]).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&(current + 1)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = current + 1, "applied database migration");
    }
}

/// A read-only transaction whose reads all see one snapshot.
async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// Reads a document's chunks and version in one statement (one snapshot).
async fn read_stored<C: GenericClient>(
    c: &C,
    site: &str,
    doc_id: &str,
) -> Result<StoredDoc, StoreError> {
    let rows = query(
        c,
        "SELECT d.heads, d.chunk_count, c.bytes FROM docs d
         LEFT JOIN doc_chunks c ON c.site_id = d.site_id AND c.doc_id = d.doc_id
         WHERE d.site_id = $1 AND d.doc_id = $2 ORDER BY c.chunk_id",
        &[&site, &doc_id],
    )
    .await?;
    let Some(first) = rows.first() else {
        return Ok(StoredDoc::default());
    };
    let heads: Vec<u8> = first.try_get(0)?;
    let chunk_count: i64 = first.try_get(1)?;
    let chunk_count = u32::try_from(chunk_count)
        .map_err(|_| StoreError::CorruptData(format!("chunk count {chunk_count} of {doc_id}")))?;
    let mut bytes = Vec::new();
    for row in &rows {
        if let Some(chunk) = row.try_get::<_, Option<&[u8]>>(2)? {
            bytes.extend_from_slice(chunk);
        }
    }
    Ok(StoredDoc {
        version: Some(heads),
        chunk_count,
        bytes,
    })
}

/// Locks the document `prepared` writes and returns its version under the lock. A document that
/// has no row yet is claimed by inserting one (overwritten by [`write_doc`] in this
/// transaction); if another transaction inserted it first, this waits for it and locks its row.
async fn lock_doc(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &SyncBatch,
    prepared: &Prepared,
) -> Result<Option<Vec<u8>>, StoreError> {
    let site = batch.site.as_str();
    if prepared.version.is_none() {
        let Merge::Accepted(MergedLog {
            meta: Some(meta), ..
        }) = &prepared.merge
        else {
            return Err(StoreError::CorruptData(format!(
                "changes applied to {} without shift metadata",
                prepared.doc_id
            )));
        };
        let claimed = execute(
            tx,
            "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads, chunk_count,
                 updated_at)
             VALUES ($1, $2, $3, $4, $5, '\\x', 0, $6)
             ON CONFLICT (site_id, doc_id) DO NOTHING",
            &[
                &site,
                &prepared.doc_id,
                &SHIFT_LOG_KIND,
                &meta.device.to_string(),
                &meta.guard.as_str(),
                &batch.received_at_ms,
            ],
        )
        .await?;
        if claimed == 1 {
            return Ok(None);
        }
    }
    let row = query_opt(
        tx,
        "SELECT heads FROM docs WHERE site_id = $1 AND doc_id = $2 FOR NO KEY UPDATE",
        &[&site, &prepared.doc_id],
    )
    .await?;
    Ok(match row {
        Some(row) => Some(row.try_get(0)?),
        None => None,
    })
}

/// The site's sequence numbers, once its row is locked.
#[derive(Debug, Default)]
struct SeqAllocator {
    /// The first seq this transaction gave out and the next one.
    range: Option<(i64, i64)>,
}

impl SeqAllocator {
    /// The next seq, locking the site's row (until commit) the first time.
    async fn next(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        site: &SiteId,
    ) -> Result<i64, StoreError> {
        if let Some((_, next)) = self.range {
            return Ok(next);
        }
        let row = query_opt(
            tx,
            "SELECT next_seq FROM sites WHERE site_id = $1 FOR NO KEY UPDATE",
            &[&site.as_str()],
        )
        .await?
        .ok_or_else(|| StoreError::UnknownSite(site.clone()))?;
        let next: i64 = row.try_get(0)?;
        self.range = Some((next, next));
        Ok(next)
    }

    fn advance(&mut self, to: i64) {
        if let Some((_, next)) = &mut self.range {
            *next = to;
        }
    }

    fn range(&self) -> Option<(i64, i64)> {
        self.range
    }
}

/// Persists one accepted document inside the write transaction: its chunk, its `docs` row and
/// its new events. Returns how many events were new to the site.
async fn write_doc(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &SyncBatch,
    doc_id: &str,
    log: &MergedLog,
    seqs: &mut SeqAllocator,
) -> Result<u32, StoreError> {
    let site = batch.site.as_str();
    let received_at_ms = batch.received_at_ms;
    let chunk = match &log.write {
        ChunkWrite::Nothing => return Ok(0),
        ChunkWrite::Append(bytes) | ChunkWrite::Replace(bytes) => bytes.as_slice(),
    };
    let Some(meta) = &log.meta else {
        return Err(StoreError::CorruptData(format!(
            "changes applied to {doc_id} without shift metadata"
        )));
    };
    let device_id = meta.device.to_string();
    let shift_id = meta.shift.to_string();
    execute(
        tx,
        "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads, chunk_count,
             updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (site_id, doc_id) DO UPDATE SET
             heads = excluded.heads, chunk_count = excluded.chunk_count,
             updated_at = excluded.updated_at",
        &[
            &site,
            &doc_id,
            &SHIFT_LOG_KIND,
            &device_id,
            &meta.guard.as_str(),
            &heads_to_blob(&log.heads),
            &i64::from(log.chunk_count),
            &received_at_ms,
        ],
    )
    .await?;
    if let ChunkWrite::Replace(_) = &log.write {
        execute(
            tx,
            "DELETE FROM doc_chunks WHERE site_id = $1 AND doc_id = $2",
            &[&site, &doc_id],
        )
        .await?;
    }
    execute(
        tx,
        "INSERT INTO doc_chunks (site_id, doc_id, chunk_id, bytes)
         SELECT $1::text, $2::text, COALESCE(MAX(chunk_id), 0) + 1, $3::bytea FROM doc_chunks
         WHERE site_id = $1 AND doc_id = $2",
        &[&site, &doc_id, &chunk],
    )
    .await?;
    if let Some(signed) = &log.signature {
        execute(
            tx,
            "INSERT INTO shift_log_signatures (site_id, doc_id, heads, signed_at, signature,
                 received_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &site,
                &doc_id,
                &signed_heads_blob(signed),
                &signed.signed_at_ms,
                &signed.signature,
                &received_at_ms,
            ],
        )
        .await?;
    }
    if log.new_events.is_empty() {
        return Ok(0);
    }

    // Under the site's lock: ids already in the feed (from this log's earlier pushes, or another
    // log reusing an id) are left out, and the rest numbered.
    let mut next_seq = seqs.next(tx, &batch.site).await?;
    let ids: Vec<&[u8]> = log
        .new_events
        .iter()
        .map(|e| e.id.0.as_bytes().as_slice())
        .collect();
    let known: HashMap<Vec<u8>, String> = query(
        tx,
        "SELECT event_id, shift_id FROM events WHERE site_id = $1 AND event_id = ANY($2)",
        &[&site, &ids],
    )
    .await?
    .into_iter()
    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
    .collect::<Result<_, StoreError>>()?;

    let mut seq_col: Vec<i64> = Vec::new();
    let mut id_col: Vec<&[u8]> = Vec::new();
    let mut guard_col: Vec<&str> = Vec::new();
    let mut kind_col: Vec<&str> = Vec::new();
    let mut checkpoint_col: Vec<Option<&str>> = Vec::new();
    let mut device_seq_col: Vec<i64> = Vec::new();
    let mut device_time_col: Vec<i64> = Vec::new();
    let mut json_col: Vec<String> = Vec::new();
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut renderer = FeedRenderer::default();
    for event in &log.new_events {
        let event_id: &[u8] = event.id.0.as_bytes();
        if let Some(existing) = known.get(event_id) {
            if *existing != shift_id {
                tracing::warn!(
                    site, event = %event.id, shift = %shift_id, existing_shift = %existing,
                    "event id already recorded from another shift log; keeping the first"
                );
            }
            continue;
        }
        if !seen.insert(event_id) {
            continue;
        }
        let seq = u64::try_from(next_seq)
            .map_err(|_| StoreError::CorruptData(format!("next_seq {next_seq} of site {site}")))?;
        // PostgreSQL keeps the JSON the feed serves (it has no binary-record projection yet).
        let json = renderer
            .render(event, seq, received_at_ms)
            .map_err(|e| StoreError::Encode(format!("event {}: {e}", event.id)))?;
        seq_col.push(next_seq);
        id_col.push(event_id);
        guard_col.push(event.guard.as_str());
        kind_col.push(event.record.body.kind());
        checkpoint_col.push(event.record.body.checkpoint().map(|c| c.as_str()));
        device_seq_col.push(to_i64(event.record.seq));
        device_time_col.push(event.record.time.wall_ms);
        json_col.push(json);
        next_seq += 1;
    }
    if seq_col.is_empty() {
        return Ok(0);
    }
    let inserted = execute(
        tx,
        "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
             checkpoint_id, device_seq, device_time_ms, received_at_ms, json)
         SELECT $1, u.seq, u.event_id, $2, $3, u.guard_id, u.kind, u.checkpoint_id, u.device_seq,
                u.device_time_ms, $4, u.json
         FROM unnest($5::bigint[], $6::bytea[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                     $11::bigint[], $12::text[])
              AS u (seq, event_id, guard_id, kind, checkpoint_id, device_seq, device_time_ms, json)",
        &[
            &site,
            &device_id,
            &shift_id,
            &received_at_ms,
            &seq_col,
            &id_col,
            &guard_col,
            &kind_col,
            &checkpoint_col,
            &device_seq_col,
            &device_time_col,
            &json_col,
        ],
    )
    .await?;
    seqs.advance(next_seq);
    u32::try_from(inserted).map_err(|_| StoreError::CorruptData("too many events".into()))
}

/// What the write phase did with one request.
#[derive(Debug)]
enum Wrote {
    /// Ready to commit; one outcome per push, and the last seq given out if any.
    Committed {
        outcomes: Vec<DocOutcome>,
        last_seq: Option<u64>,
    },
    /// Nothing written: these pushes' documents changed since they were read.
    Conflicts(Vec<usize>),
    /// Nothing written: the device may not sync this request.
    Refused(SyncRefusal),
}

fn read_site(row: &Row) -> Result<Site, StoreError> {
    let id: String = row.try_get(0)?;
    Ok(Site {
        id: SiteId::new(&id)
            .map_err(|e| StoreError::CorruptData(format!("site id {id:?}: {e}")))?,
        name: row.try_get(1)?,
        created_at_ms: row.try_get(2)?,
    })
}

pub(super) async fn get_site<C: GenericClient>(
    c: &C,
    site: &SiteId,
) -> Result<Option<Site>, StoreError> {
    match query_opt(
        c,
        "SELECT site_id, name, created_at FROM sites WHERE site_id = $1",
        &[&site.as_str()],
    )
    .await?
    {
        Some(row) => Ok(Some(read_site(&row)?)),
        None => Ok(None),
    }
}

/// The listener: keeps a connection that `LISTEN`s on [`EVENTS_CHANNEL`] and wakes the local
/// subscribers, reconnecting when it drops. `ready` hears how the first connection went (a
/// failure there ends the task: the store does not open).
async fn listen(
    config: tokio_postgres::Config,
    notifier: Arc<Notifier>,
    mut ready: Option<oneshot::Sender<Result<(), StoreError>>>,
) {
    let mut delay = LISTEN_RETRY_MIN;
    loop {
        let result = listen_once(&config, &notifier, &mut ready, &mut delay).await;
        let error = match result {
            Ok(()) => StoreError::Closed,
            Err(e) => e,
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(error));
            return;
        }
        tracing::warn!(error = %error, retry_in = ?delay, "lost the PostgreSQL listener connection; reconnecting");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LISTEN_RETRY_MAX);
    }
}

/// One listener connection, until it fails.
async fn listen_once(
    config: &tokio_postgres::Config,
    notifier: &Notifier,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
    delay: &mut Duration,
) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    // The connection delivers notifications only to whoever polls it for messages.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let listened = async {
        client
            .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
            .await?;
        // Whatever was committed while nobody listened.
        let sites = notifier.subscribed();
        if !sites.is_empty() {
            let rows = client
                .query(
                    "SELECT site_id, next_seq - 1 FROM sites WHERE site_id = ANY($1)",
                    &[&sites],
                )
                .await?;
            for row in rows {
                let site: String = row.try_get(0)?;
                let last: i64 = row.try_get(1)?;
                if last > 0 {
                    notifier.notify(&site, to_u64(last, "seq")?);
                }
            }
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        *delay = LISTEN_RETRY_MIN;
        while let Some(n) = notifications.recv().await {
            match parse_payload(n.payload()) {
                Some((site, seq)) => notifier.notify(site, seq),
                None => tracing::warn!(payload = n.payload(), "malformed event notification"),
            }
        }
        Ok::<(), StoreError>(())
    }
    .await;
    // Dropping the client lets the connection finish, and so the driver.
    drop(client);
    let driven = driver.await?;
    listened?;
    driven?;
    Ok(())
}

/// `<site id> <last seq>` (a site id has no spaces).
fn parse_payload(payload: &str) -> Option<(&str, u64)> {
    let (site, seq) = payload.rsplit_once(' ')?;
    Some((site, seq.parse().ok()?))
}

impl Store for PostgresStore {
    fn create_site(&self, site: Site) -> BoxFuture<'_, Result<Site, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = execute(
                &client,
                "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (site_id) DO NOTHING",
                &[&site.id.as_str(), &site.name, &site.created_at_ms],
            )
            .await?;
            if rows == 0 {
                return Err(StoreError::SiteExists(site.id));
            }
            Ok(site)
        })
    }

    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            query(
                &client,
                "SELECT site_id, name, created_at FROM sites ORDER BY site_id",
                &[],
            )
            .await?
            .iter()
            .map(read_site)
            .collect()
        })
    }

    fn get_site(&self, site: SiteId) -> BoxFuture<'_, Result<Option<Site>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            get_site(&client, &site).await
        })
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
        Box::pin(async move {
            let client = self.client().await?;
            // Sites are never deleted: the check and the page need not share a snapshot.
            if get_site(&client, &site).await?.is_none() {
                return Ok(None);
            }
            // One extra row tells whether more follow.
            let rows = query(
                &client,
                "SELECT seq, json FROM events WHERE site_id = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&site.as_str(), &to_i64(after), &(i64::from(limit) + 1)],
            )
            .await?;
            let mut page = EventPage {
                events: Vec::with_capacity(rows.len().min(limit as usize)),
                more: false,
                scanned_to: None,
            };
            for row in rows {
                if page.events.len() == limit as usize {
                    page.more = true;
                    break;
                }
                let seq: i64 = row.try_get(0)?;
                page.events
                    .push((to_u64(seq, "event seq")?, row.try_get(1)?));
            }
            Ok(Some(page))
        })
    }

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
            let client = self.client().await?;
            if get_site(&client, &site).await?.is_none() {
                return Ok(None);
            }
            // Walks the site's events in order (its primary key) and returns the JSON only of
            // those that match; at most FILTER_SCAN_LIMIT rows per page.
            let rows = query(
                &client,
                "SELECT seq, CASE WHEN ($4::bigint IS NULL OR device_time_ms >= $4)
                                   AND ($5::bigint IS NULL OR device_time_ms < $5)
                                   AND ($6::text IS NULL OR guard_id = $6)
                                   AND ($7::text IS NULL OR device_id = $7)
                                   AND ($8::text IS NULL OR kind = $8)
                                   AND ($9::text IS NULL OR checkpoint_id = $9)
                              THEN json END
                 FROM events WHERE site_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[
                    &site.as_str(),
                    &to_i64(after),
                    &(i64::from(FILTER_SCAN_LIMIT) + 1),
                    &filter.from_ms,
                    &filter.to_ms,
                    &filter.guard,
                    &filter.device,
                    &filter.kind,
                    &filter.checkpoint,
                ],
            )
            .await?;
            let mut page = EventPage::default();
            for (scanned, row) in rows.into_iter().enumerate() {
                let seq = to_u64(row.try_get(0)?, "event seq")?;
                if scanned == FILTER_SCAN_LIMIT as usize || page.events.len() == limit as usize {
                    page.more = true;
                    break;
                }
                page.scanned_to = Some(seq);
                if let Some(json) = row.try_get::<_, Option<String>>(1)? {
                    page.events.push((seq, json));
                }
            }
            Ok(Some(page))
        })
    }

    fn devices(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            if get_site(&client, &site).await?.is_none() {
                return Ok(None);
            }
            let rows = query(
                &client,
                "SELECT device_id, first_seen, last_sync_at, last_pending, clock_skew_ms
                 FROM devices WHERE site_id = $1 ORDER BY device_id",
                &[&site.as_str()],
            )
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let id: String = row.try_get(0)?;
                let pending: i64 = row.try_get(3)?;
                out.push(DeviceStatus {
                    device: DeviceId::from_str(&id)
                        .map_err(|e| StoreError::CorruptData(format!("device id {id:?}: {e}")))?,
                    first_seen_ms: row.try_get(1)?,
                    last_sync_at_ms: row.try_get(2)?,
                    pending_events: u64::try_from(pending).unwrap_or(0),
                    clock_skew_ms: row.try_get(4)?,
                });
            }
            Ok(Some(out))
        })
    }

    fn sync_collab(&self, sync: CollabSync) -> BoxFuture<'_, Result<CollabAnswer, StoreError>> {
        Box::pin(async move {
            if sync.incidents.is_empty() {
                // Nothing to write: the answer's reads share one snapshot.
                let mut client = self.client().await?;
                let tx = snapshot(&mut client).await?;
                let mut answer = CollabAnswer::default();
                collab::sync_extras(&tx, &sync, &HashSet::new(), &mut answer).await?;
                tx.commit().await?;
                return Ok(answer);
            }
            self.retrying(|| async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let answer = collab::write_collab(&tx, &sync).await?;
                tx.commit().await?;
                Ok(answer)
            })
            .await
        })
    }

    fn incidents(
        &self,
        site: SiteId,
        query: IncidentQuery,
    ) -> BoxFuture<'_, Result<IncidentList, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::incidents(&client, &site, &query).await
        })
    }

    fn incident(
        &self,
        site: SiteId,
        incident: patrol_core::IncidentId,
    ) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::incident_state(&client, &site, incident).await
        })
    }

    fn act_on_incident(&self, action: OperatorAction) -> BoxFuture<'_, Result<String, StoreError>> {
        Box::pin(async move {
            let clock = &self.inner.clock;
            self.retrying(|| async {
                let mut client = self.client().await?;
                let tx = client.transaction().await?;
                let state = collab::act_on_incident(&tx, action.clone(), clock).await?;
                tx.commit().await?;
                Ok(state)
            })
            .await
        })
    }

    fn site_config(&self, site: SiteId) -> BoxFuture<'_, Result<StoredConfig, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::site_config(&client, &site).await
        })
    }

    fn put_site_config(
        &self,
        config: patrol_core::siteconfig::SiteConfig,
        base_version: u64,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<StoredConfig, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::put_site_config(&client, config, base_version, at_ms).await
        })
    }

    fn acknowledge_alarm(
        &self,
        site: SiteId,
        event: patrol_core::EventId,
        by: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<AlarmAckRecord, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            collab::acknowledge_alarm(&client, &site, event, &by, at_ms).await
        })
    }

    fn create_user(&self, user: NewUser) -> BoxFuture<'_, Result<User, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let user = auth::create_user(&tx, user).await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    fn users(&self) -> BoxFuture<'_, Result<Vec<User>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::users(&client).await
        })
    }

    fn user_by_token(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(User, TokenHash)>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::user_by_token(&client, &hash).await
        })
    }

    fn revoke_user(
        &self,
        id: String,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let user = auth::revoke_user(&tx, &id, at_ms).await?;
            tx.commit().await?;
            Ok(user)
        })
    }

    fn create_enrollment_code(
        &self,
        code: NewEnrollmentCode,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::create_enrollment_code(&client, code).await
        })
    }

    fn enroll_device(
        &self,
        enrollment: Enrollment,
    ) -> BoxFuture<'_, Result<DeviceCredential, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let credential = auth::enroll_device(&tx, enrollment).await?;
            tx.commit().await?;
            Ok(credential)
        })
    }

    fn device_by_credential(
        &self,
        hash: TokenHash,
    ) -> BoxFuture<'_, Result<Option<(DeviceCredential, TokenHash)>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::device_by_credential(&client, &hash).await
        })
    }

    fn shift_log_evidence(
        &self,
        site: SiteId,
        shift: ShiftId,
    ) -> BoxFuture<'_, Result<Option<ShiftLogEvidence>, StoreError>> {
        Box::pin(async move {
            // One snapshot: the chunks and the signatures written with them.
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let doc_id = shift_log_doc_id(&shift);
            let site_id = site.as_str();
            let Some(row) = query_opt(
                &tx,
                "SELECT d.device_id, k.public_key FROM docs d
                 LEFT JOIN device_credentials k
                     ON k.site_id = d.site_id AND k.device_id = d.device_id
                 WHERE d.site_id = $1 AND d.doc_id = $2 AND d.kind = $3",
                &[&site_id, &doc_id, &SHIFT_LOG_KIND],
            )
            .await?
            else {
                return Ok(None);
            };
            let device: String = row.try_get(0)?;
            let public_key: Option<Vec<u8>> = row.try_get(1)?;
            let stored = read_stored(&tx, site_id, &doc_id).await?;
            let signatures = query(
                &tx,
                "SELECT heads, signed_at, signature, received_at FROM shift_log_signatures
                 WHERE site_id = $1 AND doc_id = $2 ORDER BY received_at, signed_at",
                &[&site_id, &doc_id],
            )
            .await?
            .iter()
            .map(|row| {
                read_signature(
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                )
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            tx.commit().await?;
            Ok(Some(ShiftLogEvidence {
                device: read_device_id(&device)?,
                bytes: stored.bytes,
                public_key: read_public_key(public_key)?,
                signatures,
            }))
        })
    }

    fn device_credentials(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceCredential>>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            auth::device_credentials(&client, &site).await
        })
    }

    fn revoke_device(
        &self,
        site: SiteId,
        device: DeviceId,
        at_ms: i64,
    ) -> BoxFuture<'_, Result<Option<DeviceCredential>, StoreError>> {
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let credential = auth::revoke_device(&tx, &site, &device, at_ms).await?;
            tx.commit().await?;
            Ok(credential)
        })
    }

    fn subscribe(&self, site: SiteId) -> broadcast::Receiver<u64> {
        self.inner.notifier.subscribe(site)
    }
}

#[cfg(test)]
mod tests {
    use super::scratch::ScratchDatabase;
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A scratch database on the local server (`PATROL_TEST_POSTGRES_URL` names another), or
    /// `None` when it is unreachable, unless `PATROL_REQUIRE_POSTGRES=1`: then that fails.
    async fn scratch() -> Result<Option<ScratchDatabase>, Box<dyn std::error::Error>> {
        let admin = std::env::var("PATROL_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match ScratchDatabase::create(&admin).await {
            Ok(db) => Ok(Some(db)),
            Err(e) if std::env::var("PATROL_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
                Err(format!("PostgreSQL is required (PATROL_REQUIRE_POSTGRES=1): {e}").into())
            }
            Err(e) => {
                use std::io::Write as _;
                // Straight to stderr, past the test harness's capture: a skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "NOTICE: skipping a PostgreSQL test, no server: {e}"
                );
                Ok(None)
            }
        }
    }

    async fn pool(db: &ScratchDatabase) -> Result<Pool, Box<dyn std::error::Error>> {
        let config = tokio_postgres::Config::from_str(db.url())?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Ok(Pool::builder(manager).max_size(2).build()?)
    }

    /// Everything that defines the schema, in a stable order: columns, constraints, indexes.
    async fn schema(client: &deadpool_postgres::Client) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for sql in [
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' null:' ||
                    is_nullable || ' default:' || COALESCE(column_default, '')
             FROM information_schema.columns WHERE table_schema = 'public'
             ORDER BY table_name, ordinal_position",
            "SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
             FROM pg_constraint WHERE connamespace = 'public'::regnamespace
             ORDER BY conrelid::regclass::text, conname",
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname",
        ] {
            for row in client.query(sql, &[]).await? {
                out.push(row.try_get(0)?);
            }
        }
        Ok(out)
    }

    /// A database upgraded from every earlier version, one server start per version, ends with
    /// the same schema as a fresh one and keeps the rows it had.
    #[tokio::test]
    async fn upgraded_schema_equals_fresh() -> TestResult {
        let Some(fresh) = scratch().await? else {
            return Ok(());
        };
        drop(PostgresStore::connect(fresh.url(), PostgresOptions::default()).await?);
        let fresh_schema = schema(&pool(&fresh).await?.get().await?).await?;
        assert!(
            fresh_schema
                .iter()
                .any(|c| c.starts_with("events.seq bigint"))
        );

        for start in 0..MIGRATIONS.len() {
            let Some(db) = scratch().await? else {
                return Ok(());
            };
            let pool = pool(&db).await?;
            for version in 1..=start {
                // An older server: it knew only the first `version` migrations.
                let mut client = pool.get().await?;
                migrate(&mut client, version).await?;
                assert_eq!(schema_version(&client).await?, version as i64);
                if version == 1 {
                    client
                        .execute(
                            "INSERT INTO sites (site_id, name, next_seq, created_at)
                             VALUES ('site-1', 's', 1, 0)",
                            &[],
                        )
                        .await?;
                }
            }
            let upgraded = PostgresStore::connect(db.url(), PostgresOptions::default()).await?;
            let client = pool.get().await?;
            assert_eq!(schema_version(&client).await?, MIGRATIONS.len() as i64);
            assert_eq!(
                schema(&client).await?,
                fresh_schema,
                "upgraded from version {start}"
            );
            let sites = upgraded.list_sites().await?;
            assert_eq!(sites.len(), usize::from(start >= 1), "from {start}");
        }
        Ok(())
    }

    /// A second start applies nothing; a schema newer than the server knows is refused.
    #[tokio::test]
    async fn reopening_applies_nothing_and_a_newer_schema_is_refused() -> TestResult {
        let Some(db) = scratch().await? else {
            return Ok(());
        };
        drop(PostgresStore::connect(db.url(), PostgresOptions::default()).await?);
        drop(PostgresStore::connect(db.url(), PostgresOptions::default()).await?);
        let pool = pool(&db).await?;
        let client = pool.get().await?;
        let applied: i64 = client
            .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
            .await?
            .try_get(0)?;
        assert_eq!(applied, MIGRATIONS.len() as i64);
        let newer = MIGRATIONS.len() as i64 + 1;
        client
            .execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&newer],
            )
            .await?;
        match PostgresStore::connect(db.url(), PostgresOptions::default()).await {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!((found, known), (newer, MIGRATIONS.len() as i64));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        Ok(())
    }

    /// Several instances starting at once on a fresh database apply each migration once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_starting_at_once_migrate_once() -> TestResult {
        let Some(db) = scratch().await? else {
            return Ok(());
        };
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = db.url().to_owned();
                tokio::spawn(async move {
                    PostgresStore::connect(&url, PostgresOptions::default()).await
                })
            })
            .collect();
        for start in starts {
            start.await??;
        }
        let client = pool(&db).await?.get().await?;
        let versions: Vec<i64> = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
        Ok(())
    }

    #[test]
    fn notification_payloads_parse() {
        assert_eq!(parse_payload("site-1 42"), Some(("site-1", 42)));
        assert_eq!(parse_payload("site-1"), None);
        assert_eq!(parse_payload("site-1 x"), None);
    }

    #[test]
    fn logs_never_show_credentials() -> TestResult {
        let config = tokio_postgres::Config::from_str("postgres://anna:s3cret@db.local:6543/p")?;
        let shown = describe(&config);
        assert_eq!(shown, "postgres://db.local:6543/p");
        Ok(())
    }
}
