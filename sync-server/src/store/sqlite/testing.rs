//! What the SQLite backend's unit tests share: a database with one site, a shift log to push,
//! and a device's enrollment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use patrol_core::{DeviceId, SiteId};
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::schema::open_connection;
use crate::store::{ShiftLogPush, StoreError, SyncBatch};

pub(super) fn test_site_db(dir: &Path) -> Result<(PathBuf, Connection), StoreError> {
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
pub(super) struct TestLog {
    pub(super) log: patrol_core::ShiftLog,
    pub(super) meta: patrol_core::ShiftMeta,
    seq: u64,
    request_seq: u64,
}

impl TestLog {
    pub(super) fn new() -> Result<Self, Box<dyn std::error::Error>> {
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

    pub(super) fn record(&mut self, n: u64) -> Result<(), Box<dyn std::error::Error>> {
        for _ in 0..n {
            self.record_id(patrol_core::EventId::generate())?;
        }
        Ok(())
    }

    pub(super) fn record_id(
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

    pub(super) fn batch(&mut self) -> Result<Arc<SyncBatch>, Box<dyn std::error::Error>> {
        let push = patrol_core::merge::plan_push(&mut self.log, &[])?;
        self.request_seq += 1;
        Ok(Arc::new(SyncBatch {
            site: self.meta.site.clone(),
            device: self.meta.device,
            request_seq: self.request_seq,
            received_at_ms: 1_740_866_500_000,
            device_time_ms: 1_740_866_500_000,
            pending_events: 0,
            pushes: vec![ShiftLogPush {
                shift: self.meta.shift,
                changes: push.changes,
                events: push.events,
                signature: None,
            }],
            public_key: None,
            config: std::sync::Arc::new(patrol_core::siteconfig::SiteConfig::empty(
                patrol_core::SiteId::new("site-1")?,
            )),
        }))
    }
}

/// Gives the batch's device a credential on its site, as enrollment does.
pub(super) fn enroll(conn: &Connection, batch: &SyncBatch) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO device_credentials (site_id, device_id, credential_hash, enrolled_at)
         VALUES (?1, ?2, randomblob(32), 0) ON CONFLICT DO NOTHING",
        params![batch.site.as_str(), batch.device.to_string()],
    )?;
    Ok(())
}
