//! The embedded SQLite backend: one file, zero set-up.
//!
//! - WAL with `synchronous = FULL`: a commit is fsynced before it returns, so whatever the
//!   server acknowledged to a device survives a crash or power loss (NORMAL could lose the last
//!   commits on power loss, and the device would already have been told they were delivered).
//! - One writer connection behind a mutex (SQLite allows one writer at a time anyway) and a
//!   small pool of read-only connections, which WAL lets run beside the writer.
//! - All database work runs on tokio's blocking pool.
//! - Schema changes are numbered migrations in `sqlite/migrations/`, applied in order, the
//!   applied count kept in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::DateTime;
use patrol_core::merge::Rejection;
use patrol_core::protocol::{DocOutcome, to_wire};
use patrol_core::{DeviceId, SiteId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::merge::{
    ChunkWrite, Merge, SHIFT_LOG_KIND, heads_to_blob, merge_shift_log, shift_log_doc_id,
};
use super::{
    BoxFuture, DeviceStatus, DeviceSync, EventPage, ShiftLogPush, Site, Store, StoreError,
};

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "patrol.db";

/// The schema migrations, in order; migration `i` (from 0) brings the schema to version `i + 1`.
/// Never edit a released one: add a new file.
const MIGRATIONS: &[&str] = &[include_str!("sqlite/migrations/0001_init.sql")];

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// How long a statement waits for another process (e.g. `patrol-server site create` beside a
/// running server) to release the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// The SQLite store. Cheap to clone; clones share the connections.
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
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic inside `f` rolls its transaction back when the transaction drops, so the
            // connection behind a poisoned lock is still consistent.
            let mut conn = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await?
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

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
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

fn push_shift_log(conn: &mut Connection, push: &ShiftLogPush) -> Result<DocOutcome, StoreError> {
    let owner = &push.owner;
    let site = owner.site.as_str();
    let doc_id = shift_log_doc_id(&owner.shift);
    let received_at = DateTime::from_timestamp_millis(push.received_at_ms).ok_or_else(|| {
        StoreError::CorruptData(format!("receive time {} out of range", push.received_at_ms))
    })?;

    // IMMEDIATE takes the write lock up front: the document is read and rewritten under it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let next_seq: Option<i64> = tx
        .query_row(
            "SELECT next_seq FROM sites WHERE site_id = ?1",
            [site],
            |r| r.get(0),
        )
        .optional()?;
    let Some(mut next_seq) = next_seq else {
        return Err(StoreError::UnknownSite(owner.site.clone()));
    };
    let chunk_count: i64 = tx
        .query_row(
            "SELECT chunk_count FROM docs WHERE site_id = ?1 AND doc_id = ?2",
            params![site, doc_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let mut stored = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT bytes FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2 ORDER BY chunk_id",
        )?;
        let mut rows = stmt.query(params![site, doc_id])?;
        while let Some(row) = rows.next()? {
            let chunk = row
                .get_ref(0)?
                .as_blob()
                .map_err(|e| StoreError::CorruptData(format!("chunk of {doc_id}: {e}")))?;
            stored.extend_from_slice(chunk);
        }
    }
    let chunk_count = u32::try_from(chunk_count)
        .map_err(|_| StoreError::CorruptData(format!("chunk count {chunk_count} of {doc_id}")))?;

    let merged = match merge_shift_log(&stored, chunk_count, owner, &push.changes) {
        Err(reason) => {
            return Err(StoreError::CorruptDocument {
                site: owner.site.clone(),
                doc: doc_id,
                reason,
            });
        }
        // Dropping `tx` rolls back: nothing of a rejected document changes.
        Ok(Merge::Rejected(Rejection { code, message })) => {
            return Ok(DocOutcome::Rejected { code, message });
        }
        Ok(Merge::Accepted(merged)) => merged,
    };

    let mut inserted: u32 = 0;
    if merged.write != ChunkWrite::Nothing {
        let Some(meta) = &merged.meta else {
            return Err(StoreError::CorruptData(format!(
                "changes applied to {doc_id} without shift metadata"
            )));
        };
        tx.execute(
            "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads, chunk_count, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (site_id, doc_id) DO UPDATE SET
                 heads = excluded.heads, chunk_count = excluded.chunk_count, updated_at = excluded.updated_at",
            params![
                site,
                doc_id,
                SHIFT_LOG_KIND,
                meta.device.to_string(),
                meta.guard.as_str(),
                heads_to_blob(&merged.heads),
                merged.chunk_count,
                push.received_at_ms,
            ],
        )?;
        let chunk = match &merged.write {
            ChunkWrite::Append(bytes) => bytes.as_slice(),
            ChunkWrite::Replace(bytes) => {
                tx.execute(
                    "DELETE FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2",
                    params![site, doc_id],
                )?;
                bytes.as_slice()
            }
            ChunkWrite::Nothing => &[],
        };
        tx.execute(
            "INSERT INTO doc_chunks (site_id, doc_id, chunk_id, bytes)
             SELECT ?1, ?2, COALESCE(MAX(chunk_id), 0) + 1, ?3 FROM doc_chunks
             WHERE site_id = ?1 AND doc_id = ?2",
            params![site, doc_id, chunk],
        )?;

        let mut insert = tx.prepare_cached(
            "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
                 checkpoint_id, device_seq, device_time_ms, received_at_ms, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (site_id, event_id) DO NOTHING",
        )?;
        for event in &merged.new_events {
            let seq = u64::try_from(next_seq).map_err(|_| {
                StoreError::CorruptData(format!("next_seq {next_seq} of site {site}"))
            })?;
            let json = serde_json::to_string(&event.to_json(Some((seq, received_at))))
                .map_err(|e| StoreError::Encode(e.to_string()))?;
            let event_id = event.id.to_string();
            let shift_id = event.shift.to_string();
            let rows = insert.execute(params![
                site,
                next_seq,
                event_id,
                event.device.to_string(),
                shift_id,
                event.guard.as_str(),
                event.record.body.kind(),
                event.record.body.checkpoint().map(|c| c.as_str()),
                to_i64(event.record.seq),
                event.record.time.wall_ms,
                push.received_at_ms,
                json,
            ])?;
            if rows == 1 {
                inserted += 1;
                next_seq += 1;
            } else {
                // Already in the feed. From another shift log it is a device reusing an id:
                // the first row stands, but say so.
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT shift_id FROM events WHERE site_id = ?1 AND event_id = ?2",
                        params![site, event_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if existing.as_deref() != Some(shift_id.as_str()) {
                    tracing::warn!(
                        site, event = %event_id, shift = %shift_id, existing_shift = ?existing,
                        "event id already recorded from another shift log; keeping the first"
                    );
                }
            }
        }
        drop(insert);
        if inserted > 0 {
            tx.execute(
                "UPDATE sites SET next_seq = ?1 WHERE site_id = ?2",
                params![next_seq, site],
            )?;
        }
        tx.commit()?;
    }
    Ok(DocOutcome::Accepted {
        heads: to_wire(&merged.heads),
        new_events: inserted,
        missing_deps: merged.missing_deps,
    })
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
    };
    {
        let mut stmt = tx.prepare_cached(
            "SELECT seq, json FROM events WHERE site_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        // One extra row tells whether more follow.
        let mut rows = stmt.query(params![site.as_str(), to_i64(after), i64::from(limit) + 1])?;
        while let Some(row) = rows.next()? {
            if page.events.len() == limit as usize {
                page.more = true;
                break;
            }
            let seq: i64 = row.get(0)?;
            let seq = u64::try_from(seq)
                .map_err(|_| StoreError::CorruptData(format!("negative event seq {seq}")))?;
            page.events.push((seq, row.get(1)?));
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

    fn push_shift_log(&self, push: ShiftLogPush) -> BoxFuture<'_, Result<DocOutcome, StoreError>> {
        Box::pin(self.write(move |conn| push_shift_log(conn, &push)))
    }

    fn record_device_sync(&self, sync: DeviceSync) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |conn| {
            let rows = conn.execute(
                "INSERT INTO devices (site_id, device_id, first_seen, last_sync_at, last_pending, clock_skew_ms)
                 SELECT ?1, ?2, ?3, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM sites WHERE site_id = ?1)
                 ON CONFLICT (site_id, device_id) DO UPDATE SET
                     last_sync_at = MAX(last_sync_at, excluded.last_sync_at),
                     last_pending = excluded.last_pending,
                     clock_skew_ms = excluded.clock_skew_ms",
                params![
                    sync.site.as_str(),
                    sync.device.to_string(),
                    sync.synced_at_ms,
                    to_i64(sync.pending_events),
                    sync.clock_skew_ms,
                ],
            )?;
            if rows == 0 {
                return Err(StoreError::UnknownSite(sync.site));
            }
            Ok(())
        }))
    }

    fn events_after(
        &self,
        site: SiteId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Option<EventPage>, StoreError>> {
        Box::pin(self.read(move |conn| events_after(conn, &site, after, limit)))
    }

    fn devices(
        &self,
        site: SiteId,
    ) -> BoxFuture<'_, Result<Option<Vec<DeviceStatus>>, StoreError>> {
        Box::pin(self.read(move |conn| devices(conn, &site)))
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
    /// the same schema as a fresh one.
    #[test]
    fn upgraded_schema_equals_fresh() -> TestResult {
        let dir = tempfile::tempdir()?;
        let fresh = SqliteStore::open(dir.path().join("fresh.db"))?;
        let fresh_schema = schema(
            &fresh
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )?;
        assert!(!fresh_schema.is_empty());

        for start in 0..MIGRATIONS.len() {
            let path = dir.path().join(format!("from-{start}.db"));
            for version in 1..=start {
                // An older server: it knew only the first `version` migrations.
                let mut conn = open_connection(&path)?;
                migrate(&mut conn, version)?;
                assert_eq!(schema_version(&conn)?, version as i64);
            }
            let upgraded = SqliteStore::open(&path)?;
            let conn = upgraded
                .inner
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            assert_eq!(schema_version(&conn)?, MIGRATIONS.len() as i64);
            assert_eq!(
                schema(&conn)?,
                fresh_schema,
                "upgraded from version {start}"
            );
        }
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

    #[test]
    fn durable_pragmas_are_set() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open_dir(dir.path().join("data"))?;
        assert!(dir.path().join("data").join(DB_FILE).exists());
        let conn = store
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
        assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
        Ok(())
    }
}
