//! Opening the SQLite database: the connection pragmas (WAL, `synchronous = FULL`, page size,
//! busy timeout) and the schema migrations in `migrations/`, applied in order, the applied count
//! kept in `PRAGMA user_version`.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// The schema migrations, in order; migration `i` (from 0) brings the schema to version `i + 1`.
/// Never edit a released one: add a new file.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_event_ids.sql"),
    include_str!("migrations/0003_incidents_config_alarms.sql"),
    include_str!("migrations/0004_auth.sql"),
    include_str!("migrations/0005_signatures.sql"),
    include_str!("migrations/0006_recent_event_ids_in_memory.sql"),
    include_str!("migrations/0007_event_id_runs.sql"),
    include_str!("migrations/0008_event_records.sql"),
    include_str!("migrations/0009_credentials_age.sql"),
    include_str!("migrations/0010_docs_by_device.sql"),
    include_str!("migrations/0011_corrected_time_and_flags.sql"),
    include_str!("migrations/0012_shift_summaries.sql"),
    include_str!("migrations/0013_incident_history.sql"),
    include_str!("migrations/0014_scan_neighbours.sql"),
    include_str!("migrations/0015_tour_compliance.sql"),
    include_str!("migrations/0016_events_by_corrected_time.sql"),
    include_str!("migrations/0017_event_hours.sql"),
    include_str!("migrations/0018_alarm_escalations.sql"),
    include_str!("migrations/0019_check_in_timers.sql"),
    include_str!("migrations/0020_webhooks.sql"),
    include_str!("migrations/0021_note_attachments.sql"),
    include_str!("migrations/0022_sessions.sql"),
    include_str!("migrations/0023_scan_neighbours_coarse.sql"),
    include_str!("migrations/0024_check_ins_index_without_in_list.sql"),
];

/// Page size of a new database (an existing one keeps its own). Every commit appends its pages
/// to the WAL and every checkpoint copies them on, a system call and a WAL-index entry per page:
/// with 16 KiB instead of SQLite's 4 KiB the server spent ~12% less CPU syncing a million events
/// (docs/benchmarks.md).
const PAGE_SIZE: i64 = 16 * 1024;

/// How long a statement waits for another process (e.g. `patrol-server site create` beside a
/// running server) to release the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
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

pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

pub(super) fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Applies migrations until the schema is at version `target`. Each runs in its own IMMEDIATE
/// transaction that re-reads the version, so two processes opening one file at once apply
/// each migration exactly once.
pub(super) fn migrate(conn: &mut Connection, target: usize) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use patrol_core::{DeviceId, SiteId};
    use rusqlite::params;

    use super::*;
    use crate::store::event_json::{Stamp, with_stamp};
    use crate::store::sqlite::testing::{TestLog, enroll};
    use crate::store::sqlite::{DB_FILE, SqliteStore};
    use crate::store::{FeedFilter, Site, Store};
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

    /// A day of a site's events (`events_between`, the daily activity report's read) is read
    /// through the rows of its hours in `event_hours` and the events' primary key: a page reads
    /// the seq ranges of its logs, not the site's history, and sorts nothing.
    #[tokio::test]
    async fn a_day_of_events_is_read_through_its_hours() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(dir.path().join("p.db"))?;
        let plan = |sql: String, args: Vec<i64>| {
            store.write(move |conn| {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let mut params: Vec<&dyn rusqlite::ToSql> = vec![&"site-1"];
                params.extend(args.iter().map(|a| a as &dyn rusqlite::ToSql));
                let rows = stmt.query_map(params.as_slice(), |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<String>, _>>()?)
            })
        };
        let hours = plan(super::super::feed::EVENT_HOURS_SQL.into(), vec![0, 1]).await?;
        assert_eq!(
            hours,
            ["SEARCH event_hours USING PRIMARY KEY (site_id=? AND hour_ms>? AND hour_ms<?)"]
        );
        let events = plan(
            super::super::feed::events_between_sql(),
            vec![0, 1, 2, 3, 10],
        )
        .await?;
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            events[0].starts_with("SEARCH events USING ")
                && events[0].ends_with("(site_id=? AND seq>? AND seq<?)"),
            "{events:?}"
        );
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
            .await?
            .ack;
        assert_eq!(
            (ack.device, ack.by.as_str(), ack.at_ms),
            (device, "op-anna", 10)
        );
        let page = store
            .events_after(site.clone(), 0, 10)
            .await?
            .ok_or("no site")?;
        // Served as stored, with the stamp it reads as (migration 11): its device time
        // (2 ms) bounded by its receipt (3 ms), no flags.
        assert_eq!(
            page.events,
            vec![(
                1,
                r#"{"corrected_time":"1970-01-01T00:00:00.002Z","flags":[]}"#.to_string()
            )]
        );
        let config = store.site_config(site).await?;
        assert_eq!(config.config.version, 0);
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

    /// Migration 9: a user token issued before it expires 30 days after the migration rather
    /// than never; a device credential enrolled before it counts as issued at its enrollment.
    #[tokio::test]
    async fn migration_9_gives_existing_tokens_the_default_lifetime() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.db");
        let mut conn = open_connection(&path)?;
        migrate(&mut conn, 8)?;
        conn.execute_batch(
            "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 1, 0);
             INSERT INTO users (user_id, name, role, all_sites, token_hash, created_at)
             VALUES ('u1', 'root', 'admin', 1, zeroblob(32), 5);
             INSERT INTO device_credentials (site_id, device_id, credential_hash, enrolled_at)
             VALUES ('site-1', '0195a1b2-0000-7000-8000-000000000001', zeroblob(32), 77);",
        )?;
        drop(conn);
        let store = SqliteStore::open(&path)?;
        let users = store.users().await?;
        let month = 30 * 24 * 3_600_000;
        let expected = crate::now_ms() + month;
        assert_eq!(users.len(), 1);
        assert!(
            (users[0].token_expires_at_ms - expected).abs() < 60_000,
            "expires at {}, not about {expected}",
            users[0].token_expires_at_ms
        );
        let devices = store
            .device_credentials(SiteId::new("site-1")?)
            .await?
            .ok_or("no site")?;
        assert_eq!(devices[0].credential_issued_at_ms, 77);
        Ok(())
    }

    /// The shift summaries' migration (0012): a shift log stored before it is listed with its
    /// start, end, event count and last receive time, taken from its events; a log of another
    /// shift keeps its own.
    #[tokio::test]
    async fn the_shift_summaries_migration_fills_them_from_the_events() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.db");
        let mut conn = open_connection(&path)?;
        // Every migration before this one (0012).
        migrate(&mut conn, 11)?;
        let device = "0195a1b2-0000-7000-8000-000000000001";
        let (ended, open) = (
            "0195a1b2-0000-7000-8000-00000000000a",
            "0195a1b2-0000-7000-8000-00000000000b",
        );
        conn.execute(
            "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 6, 0)",
            [],
        )?;
        for shift in [ended, open] {
            conn.execute(
                "INSERT INTO docs (site_id, doc_id, kind, device_id, guard_id, heads,
                     chunk_count, updated_at)
                 VALUES ('site-1', ?1, 'shift_log', ?2, 'anna', x'', 0, 9)",
                params![shift, device],
            )?;
        }
        for (seq, shift, kind, device_time, received) in [
            (1, ended, "shift_started", 100, 1_000),
            (2, ended, "note", 200, 1_000),
            (3, ended, "shift_ended", 300, 2_000),
            (4, open, "shift_started", 400, 3_000),
            (5, open, "note", 500, 4_000),
        ] {
            conn.execute(
                "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id,
                     kind, checkpoint_id, device_seq, device_time_ms, received_at_ms, json)
                 VALUES ('site-1', ?1, randomblob(16), ?2, ?3, 'anna', ?4, NULL, ?1, ?5, ?6,
                         '{}')",
                params![seq, device, shift, kind, device_time, received],
            )?;
        }
        drop(conn);
        let store = SqliteStore::open(&path)?;
        let site = SiteId::new("site-1")?;
        let page = store
            .shifts(
                site,
                crate::store::ShiftQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await?
            .ok_or("no site")?;
        let got: Vec<_> = page
            .shifts
            .iter()
            .map(|s| {
                (
                    s.shift.to_string(),
                    s.started_at_ms,
                    s.ended_at_ms,
                    s.events,
                    s.last_event_at_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (ended.to_owned(), Some(100), Some(300), 3, Some(2_000)),
                (open.to_owned(), Some(400), None, 2, Some(4_000)),
            ]
        );
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
        let delivery = batch.delivery();
        store.sync(batch).await?;
        let old_json = r#"{"corrected_time":"1970-01-01T00:00:00.002Z","flags":[],"old":1}"#;
        let mut expected = vec![(1, old_json.to_string())];
        for (seq, event) in (2..).zip(log.log.events()?) {
            let json = serde_json::to_string(&event.to_json(Some((seq, received))))?;
            // Notes, received with no clock offset: no flags.
            let stamp = Stamp {
                corrected_ms: delivery.corrected_ms(&event.record),
                flags: vec![],
            };
            expected.push((seq, with_stamp(&json, &stamp)?));
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

    /// Migration 11, upgraded equals fresh: events stored by version 10 (record, no stamp)
    /// read exactly as the same events received fresh with no clock offset do (corrected =
    /// device time bounded by the receipt, no flags), in the feed and in its filters.
    #[tokio::test]
    async fn migration_11_reads_earlier_events_as_a_fresh_sync_without_offset() -> TestResult {
        let dir = tempfile::tempdir()?;
        // One log received before its events' device time (a clock ahead: bounded by the
        // receipt), one after.
        let mut batches = Vec::new();
        for received in [1_740_866_399_000, 1_740_866_401_000] {
            let mut log = TestLog::new()?;
            log.record(2)?;
            let mut batch = Arc::unwrap_or_clone(log.batch()?);
            batch.received_at_ms = received;
            batch.device_time_ms = received;
            batches.push((batch, log.log.events()?));
        }
        let site = SiteId::new("site-1")?;
        let add_site = "INSERT INTO sites (site_id, name, next_seq, created_at)
                        VALUES ('site-1', 's', 1, 0)";

        let fresh = SqliteStore::open(dir.path().join("fresh.db"))?;
        fresh.write(|conn| Ok(conn.execute(add_site, [])?)).await?;
        for (batch, _) in &batches {
            let batch = batch.clone();
            fresh.write(move |conn| enroll(conn, &batch)).await?;
        }
        for (batch, _) in &batches {
            fresh.sync(batch.clone()).await?;
        }

        let path = dir.path().join("upgraded.db");
        let mut conn = open_connection(&path)?;
        migrate(&mut conn, 10)?;
        conn.execute(add_site, [])?;
        let mut seq = 0;
        for (batch, events) in &batches {
            for event in events {
                seq += 1;
                conn.execute(
                    "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id,
                         kind, checkpoint_id, device_seq, device_time_ms, received_at_ms, record)
                     VALUES ('site-1', ?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?9, ?10)",
                    params![
                        seq,
                        event.id.0.as_bytes().as_slice(),
                        event.device.to_string(),
                        event.shift.to_string(),
                        event.guard.as_str(),
                        event.record.body.kind(),
                        event.record.seq as i64,
                        event.record.time.wall_ms,
                        batch.received_at_ms,
                        event.record.encode()?,
                    ],
                )?;
            }
        }
        conn.execute("UPDATE sites SET next_seq = ?1", [seq + 1])?;
        drop(conn);
        let upgraded = SqliteStore::open(&path)?;

        let fresh_feed = fresh
            .events_after(site.clone(), 0, 10)
            .await?
            .ok_or("site")?;
        let upgraded_feed = upgraded
            .events_after(site.clone(), 0, 10)
            .await?
            .ok_or("site")?;
        assert_eq!(upgraded_feed.events.len(), 4);
        assert_eq!(upgraded_feed, fresh_feed);
        let stored_stamps: (i64, i64) = upgraded
            .write(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(corrected_ms), COUNT(flags) FROM events",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await?;
        assert_eq!(stored_stamps, (0, 0), "the migration rewrites no row");
        // The first log's events are corrected to their receipt, the second's keep their
        // device time: `from` at the device time finds the second only.
        for (filter, found) in [
            (
                FeedFilter {
                    from_ms: Some(1_740_866_400_000),
                    ..FeedFilter::default()
                },
                2,
            ),
            (
                FeedFilter {
                    to_ms: Some(1_740_866_400_000),
                    ..FeedFilter::default()
                },
                2,
            ),
            (
                FeedFilter {
                    flag: Some("clock_skew".into()),
                    ..FeedFilter::default()
                },
                0,
            ),
        ] {
            let on_fresh = fresh
                .events_filtered(site.clone(), 0, 10, filter.clone())
                .await?
                .ok_or("site")?;
            let on_upgraded = upgraded
                .events_filtered(site.clone(), 0, 10, filter.clone())
                .await?
                .ok_or("site")?;
            assert_eq!(on_upgraded.events.len(), found, "{filter:?}");
            assert_eq!(on_upgraded.events, on_fresh.events, "{filter:?}");
        }
        Ok(())
    }

    /// Migration 13: an incident stored before it (its state JSON without `history`) is served
    /// after it exactly as a fresh store serves the same document: its projection is recomputed
    /// from the document when the server starts, once.
    #[tokio::test]
    async fn migration_13_recomputes_incidents_stored_before() -> TestResult {
        use crate::store::IncidentQuery;
        use crate::store::incident::testing::old_incident;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.db");
        let site = SiteId::new("site-1")?;
        let old = old_incident(&site)?;
        let mut conn = open_connection(&path)?;
        // Every migration before this one (0013).
        migrate(&mut conn, 12)?;
        conn.execute(
            "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 1, 0)",
            [],
        )?;
        conn.execute(
            "INSERT INTO incidents (site_id, incident_id, doc, heads, status, round, severity,
                 category, assignee, reported_at, created_at, updated_at, state)
             VALUES ('site-1', ?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, 4000, ?9, ?10)",
            params![
                old.id.to_string(),
                old.row.doc,
                old.row.heads,
                old.row.status,
                old.row.round,
                old.row.severity,
                old.row.category,
                old.row.reported_at_ms,
                old.updated_at_ms,
                old.old_state,
            ],
        )?;
        drop(conn);

        let store = SqliteStore::open(&path)?;
        assert_eq!(store.incident(site.clone(), old.id).await?, old.row.state);
        let list = store
            .incidents(
                site.clone(),
                IncidentQuery {
                    status: None,
                    updated_since: None,
                    limit: 10,
                },
            )
            .await?;
        assert_eq!(list.incidents, vec![old.row.state.clone()]);
        let history: serde_json::Value = serde_json::from_str(&list.incidents[0])?;
        assert_eq!(history["history"].as_array().map(Vec::len), Some(3));
        let stale: i64 = store
            .write(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*) FROM incidents WHERE state_version < 1",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await?;
        assert_eq!(stale, 0, "recomputed once, not at every start");
        Ok(())
    }

    /// Migration 0015 (tour compliance): a site that existed before it is tracked from the
    /// migration on; one created after it, whole.
    #[tokio::test]
    async fn the_compliance_migration_tracks_existing_sites_from_then_on() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.db");
        let mut conn = open_connection(&path)?;
        // Every migration before it (found by its name: other migrations may precede it).
        let before = MIGRATIONS
            .iter()
            .position(|m| m.starts_with("-- 0015"))
            .ok_or("no migration 0015")?;
        migrate(&mut conn, before)?;
        conn.execute(
            "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 1, 0)",
            [],
        )?;
        drop(conn);
        let before_ms = crate::now_ms();
        let store = SqliteStore::open(&path)?;
        let after_ms = crate::now_ms();
        crate::store::compliance::testing::existing_sites_are_tracked_from_the_migration(
            &store,
            SiteId::new("site-1")?,
            before_ms,
            after_ms,
        )
        .await
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
}
