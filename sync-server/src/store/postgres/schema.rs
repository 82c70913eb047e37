//! The PostgreSQL schema: the migrations in `migrations/`, each applied in its own transaction
//! under an advisory lock (instances starting at once apply each migration once), and recorded
//! in `schema_migrations`.

use deadpool_postgres::GenericClient;

use crate::store::StoreError;

/// The schema migrations, in order; migration `i` (from 0) brings the schema to version `i + 1`.
/// Never edit a released one: add a new file.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_incidents_config_alarms.sql"),
    include_str!("migrations/0003_auth.sql"),
    include_str!("migrations/0004_signatures.sql"),
    include_str!("migrations/0005_credentials_age.sql"),
    include_str!("migrations/0006_docs_by_device.sql"),
    include_str!("migrations/0007_corrected_time_and_flags.sql"),
    include_str!("migrations/0008_shift_summaries.sql"),
    include_str!("migrations/0009_incident_history.sql"),
    include_str!("migrations/0010_scan_neighbours.sql"),
    include_str!("migrations/0011_tour_compliance.sql"),
    include_str!("migrations/0012_events_by_corrected_time.sql"),
    include_str!("migrations/0013_event_hours.sql"),
    include_str!("migrations/0014_panics_by_site.sql"),
    include_str!("migrations/0015_alarm_escalations.sql"),
    include_str!("migrations/0016_check_in_timers.sql"),
    include_str!("migrations/0017_webhooks.sql"),
    include_str!("migrations/0018_attachments.sql"),
    include_str!("migrations/0019_note_attachments.sql"),
    include_str!("migrations/0020_sessions.sql"),
];

/// The advisory lock key migrations run under (any constant; this is "patrol" in ASCII).
const MIGRATION_LOCK: i64 = 0x7061_7472_6f6c;

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
pub(super) async fn migrate(
    client: &mut deadpool_postgres::Client,
    target: usize,
) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    use tokio_postgres::NoTls;

    use super::*;
    use crate::store::Store;
    use crate::store::postgres::{PostgresOptions, PostgresStore};
    use patrol_testkit::ScratchDatabase;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

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
        let Some(fresh) = ScratchDatabase::create().await? else {
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
            let Some(db) = ScratchDatabase::create().await? else {
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

    /// Migration 5: a user token issued before it expires 30 days after the migration rather
    /// than never; a device credential enrolled before it counts as issued at its enrollment.
    #[tokio::test]
    async fn migration_5_gives_existing_tokens_the_default_lifetime() -> TestResult {
        let Some(db) = ScratchDatabase::create().await? else {
            return Ok(());
        };
        let pool = pool(&db).await?;
        let mut client = pool.get().await?;
        migrate(&mut client, 4).await?;
        client
            .batch_execute(
                "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 1, 0);
                 INSERT INTO users (user_id, name, role, all_sites, token_hash, created_at)
                 VALUES ('u1', 'root', 'admin', true, decode(repeat('00', 32), 'hex'), 5);
                 INSERT INTO device_credentials (site_id, device_id, credential_hash, enrolled_at)
                 VALUES ('site-1', '0195a1b2-0000-7000-8000-000000000001',
                         decode(repeat('00', 32), 'hex'), 77);",
            )
            .await?;
        drop(client);
        let store = PostgresStore::connect(db.url(), PostgresOptions::default()).await?;
        let users = store.users().await?;
        let expected = crate::now_ms() + 30 * 24 * 3_600_000;
        assert_eq!(users.len(), 1);
        assert!(
            (users[0].token_expires_at_ms - expected).abs() < 60_000,
            "expires at {}, not about {expected}",
            users[0].token_expires_at_ms
        );
        let devices = store
            .device_credentials(patrol_core::SiteId::new("site-1")?)
            .await?
            .ok_or("no site")?;
        assert_eq!(devices[0].credential_issued_at_ms, 77);
        Ok(())
    }

    /// Migration 7, upgraded equals fresh: an event stored by version 6 (its JSON without a
    /// stamp) is served exactly as the same event received fresh with no clock offset renders
    /// (corrected = device time bounded by the receipt, no flags), and the feed's filters
    /// treat it by the same rule.
    #[tokio::test]
    async fn migration_7_serves_earlier_events_as_a_fresh_sync_without_offset() -> TestResult {
        use crate::store::FeedFilter;
        use crate::store::event_json::{FeedRenderer, Stamp};
        use patrol_core::flags::Delivery;
        use patrol_core::{
            DeviceId, DeviceTime, Event, EventBody, EventId, EventRecord, GuardId, Hlc, ShiftId,
            SiteId,
        };

        let Some(db) = ScratchDatabase::create().await? else {
            return Ok(());
        };
        let site = SiteId::new("site-1")?;
        // A clock ahead of the receipt (bounded by it), and one behind.
        let device_ms = 1_740_866_400_000;
        let events: Vec<(Event, i64)> = [device_ms - 1_000, device_ms + 1_000]
            .into_iter()
            .enumerate()
            .map(|(i, received)| {
                let event = Event {
                    id: EventId::generate(),
                    site: site.clone(),
                    device: DeviceId::generate(),
                    shift: ShiftId::generate(),
                    guard: GuardId::new("guard-1")?,
                    record: EventRecord {
                        seq: i as u64 + 1,
                        time: DeviceTime {
                            wall_ms: device_ms,
                            boot_id: uuid::Uuid::nil(),
                            mono_ms: 5,
                            hlc: Hlc::default(),
                        },
                        config_version: 1,
                        body: EventBody::Note { text: "n".into() },
                    },
                };
                Ok::<_, Box<dyn std::error::Error>>((event, received))
            })
            .collect::<Result<_, _>>()?;
        let pool = pool(&db).await?;
        let mut client = pool.get().await?;
        migrate(&mut client, 6).await?;
        client
            .execute(
                "INSERT INTO sites (site_id, name, next_seq, created_at)
                 VALUES ('site-1', 's', 3, 0)",
                &[],
            )
            .await?;
        let mut fresh = Vec::new();
        for (seq, (event, received)) in (1i64..).zip(&events) {
            let when = chrono::DateTime::from_timestamp_millis(*received).ok_or("time")?;
            // As version 6 stored it: `Event::to_json`, no stamp.
            let json = serde_json::to_string(&event.to_json(Some((seq as u64, when))))?;
            client
                .execute(
                    "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id,
                         kind, checkpoint_id, device_seq, device_time_ms, received_at_ms, json)
                     VALUES ('site-1', $1, $2, $3, $4, 'guard-1', 'note', NULL, $5, $6, $7, $8)",
                    &[
                        &seq,
                        &event.id.0.as_bytes().as_slice(),
                        &event.device.to_string(),
                        &event.shift.to_string(),
                        &(event.record.seq as i64),
                        &device_ms,
                        received,
                        &json,
                    ],
                )
                .await?;
            // A note, received with no clock offset: no flags.
            let stamp = Stamp {
                corrected_ms: Delivery::new(*received, *received).corrected_ms(&event.record),
                flags: vec![],
            };
            fresh.push((
                seq as u64,
                FeedRenderer::default().render(event, seq as u64, *received, &stamp)?,
            ));
        }
        drop(client);

        let store = PostgresStore::connect(db.url(), PostgresOptions::default()).await?;
        let page = store
            .events_after(site.clone(), 0, 10)
            .await?
            .ok_or("site")?;
        assert_eq!(page.events, fresh);
        for (filter, expected) in [
            (
                FeedFilter {
                    from_ms: Some(device_ms),
                    ..FeedFilter::default()
                },
                &fresh[1..],
            ),
            (
                FeedFilter {
                    to_ms: Some(device_ms),
                    ..FeedFilter::default()
                },
                &fresh[..1],
            ),
            (
                FeedFilter {
                    flag: Some("clock_skew".into()),
                    ..FeedFilter::default()
                },
                &fresh[..0],
            ),
        ] {
            let page = store
                .events_filtered(site.clone(), 0, 10, filter.clone())
                .await?
                .ok_or("site")?;
            assert_eq!(page.events, expected, "{filter:?}");
        }
        Ok(())
    }

    /// Migration 9: an incident stored before it (its state JSON without `history`) is served
    /// after it exactly as a fresh store serves the same document: its projection is recomputed
    /// from the document when the server starts, once.
    #[tokio::test]
    async fn migration_9_recomputes_incidents_stored_before() -> TestResult {
        use crate::store::IncidentQuery;
        use crate::store::incident::testing::old_incident;
        let Some(db) = ScratchDatabase::create().await? else {
            return Ok(());
        };
        let site = patrol_core::SiteId::new("site-1")?;
        let old = old_incident(&site)?;
        let pool = pool(&db).await?;
        let mut client = pool.get().await?;
        // Every migration before this one (0009).
        migrate(&mut client, 8).await?;
        client
            .execute(
                "INSERT INTO sites (site_id, name, next_seq, created_at)
                 VALUES ('site-1', 's', 1, 0)",
                &[],
            )
            .await?;
        client
            .execute(
                "INSERT INTO incidents (site_id, incident_id, doc, heads, status, round,
                     severity, category, assignee, reported_at, created_at, updated_at, state)
                 VALUES ('site-1', $1, $2, $3, $4, $5, $6, $7, NULL, $8, 4000, $9, $10)",
                &[
                    &old.id.to_string(),
                    &old.row.doc,
                    &old.row.heads,
                    &old.row.status,
                    &i64::from(old.row.round),
                    &old.row.severity,
                    &old.row.category,
                    &old.row.reported_at_ms,
                    &old.updated_at_ms,
                    &old.old_state,
                ],
            )
            .await?;
        drop(client);

        let store = PostgresStore::connect(db.url(), PostgresOptions::default()).await?;
        assert_eq!(store.incident(site.clone(), old.id).await?, old.row.state);
        let list = store
            .incidents(
                site,
                IncidentQuery {
                    status: None,
                    updated_since: None,
                    limit: 10,
                },
            )
            .await?;
        assert_eq!(list.incidents, vec![old.row.state.clone()]);
        let stale: i64 = pool
            .get()
            .await?
            .query_one(
                "SELECT COUNT(*) FROM incidents WHERE state_version < 1",
                &[],
            )
            .await?
            .try_get(0)?;
        assert_eq!(stale, 0, "recomputed once, not at every start");
        Ok(())
    }

    /// Migration 0011 (tour compliance): a site that existed before it is tracked from the
    /// migration on; one created after it, whole.
    #[tokio::test]
    async fn the_compliance_migration_tracks_existing_sites_from_then_on() -> TestResult {
        let Some(db) = ScratchDatabase::create().await? else {
            return Ok(());
        };
        let pool = pool(&db).await?;
        let mut client = pool.get().await?;
        // Every migration before it (found by its name: other migrations may precede it).
        let before = MIGRATIONS
            .iter()
            .position(|m| m.starts_with("-- 0011: tour compliance"))
            .ok_or("no migration 0011")?;
        migrate(&mut client, before).await?;
        client
            .batch_execute(
                "INSERT INTO sites (site_id, name, next_seq, created_at) VALUES ('site-1', 's', 1, 0)",
            )
            .await?;
        drop(client);
        let before_ms = crate::now_ms();
        let store = PostgresStore::connect(db.url(), PostgresOptions::default()).await?;
        let after_ms = crate::now_ms();
        crate::store::compliance::testing::existing_sites_are_tracked_from_the_migration(
            &store,
            patrol_core::SiteId::new("site-1")?,
            before_ms,
            after_ms,
        )
        .await
    }

    /// A second start applies nothing; a schema newer than the server knows is refused.
    #[tokio::test]
    async fn reopening_applies_nothing_and_a_newer_schema_is_refused() -> TestResult {
        let Some(db) = ScratchDatabase::create().await? else {
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
        let Some(db) = ScratchDatabase::create().await? else {
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
}
