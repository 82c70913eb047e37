//! The store's schema, versioned with `PRAGMA user_version`. Each migration runs in the same
//! transaction as the version bump, so a store is always at exactly one version.

use rusqlite::{Connection, Transaction};

use crate::error::{Error, Result};

/// Migrations in order; migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_compaction_backoff.sql"),
    include_str!("migrations/0003_incidents_config_alarms.sql"),
    include_str!("migrations/0004_enrollment.sql"),
    include_str!("migrations/0005_signing_key.sql"),
    include_str!("migrations/0006_event_records.sql"),
    include_str!("migrations/0007_credential_rotation.sql"),
    include_str!("migrations/0008_clock_offset.sql"),
    include_str!("migrations/0009_server_tours.sql"),
    include_str!("migrations/0010_attachments.sql"),
    include_str!("migrations/0011_note_attachments.sql"),
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

pub fn version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the schema up to [`VERSION`], one migration per step.
pub fn upgrade(conn: &mut Connection, path: &str) -> Result<()> {
    upgrade_to(conn, path, VERSION)
}

pub(crate) fn upgrade_to(conn: &mut Connection, path: &str, target: i64) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: VERSION,
        });
    }
    for v in found..target {
        apply(&tx, v)?;
    }
    tx.commit()?;
    Ok(())
}

fn apply(tx: &Transaction<'_>, from: i64) -> Result<()> {
    let sql = usize::try_from(from)
        .ok()
        .and_then(|i| MIGRATIONS.get(i))
        .ok_or_else(|| Error::Corrupt(format!("no migration from schema version {from}")))?;
    tx.execute_batch(sql)?;
    tx.pragma_update(None, "user_version", from + 1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap_or_else(|e| panic!("{e}"));
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn upgrading_step_by_step_equals_a_fresh_schema() -> Result<()> {
        let mut fresh = Connection::open_in_memory()?;
        upgrade(&mut fresh, "fresh")?;
        let mut stepped = Connection::open_in_memory()?;
        for v in 1..=VERSION {
            upgrade_to(&mut stepped, "stepped", v)?;
            assert_eq!(version(&stepped)?, v);
        }
        assert_eq!(schema(&stepped), schema(&fresh));
        assert_eq!(version(&fresh)?, VERSION);
        Ok(())
    }

    /// A store at `version` holding a device, a shift and its first event (seq 1, change 0x02).
    fn one_event_at(version: i64) -> Result<Connection> {
        let mut conn = Connection::open_in_memory()?;
        upgrade_to(&mut conn, &format!("v{version}"), version)?;
        conn.execute_batch(
            "INSERT INTO device (id, device_id, site_id, created_ms) VALUES (1, 'd', 's', 1);
             INSERT INTO shifts (id, shift_id, guard_id, started_ms, first_seq, meta_change)
                 VALUES (1, 'x', 'g', 1, 1, x'00');
             INSERT INTO events (seq, shift, event_id, wall_ms, hlc_wall, hlc_counter, change)
                 VALUES (1, 1, x'01', 5, 5, 0, x'02');",
        )?;
        Ok(conn)
    }

    #[test]
    fn data_written_at_version_1_survives_the_upgrade() -> Result<()> {
        let mut conn = one_event_at(1)?;
        upgrade(&mut conn, "v1")?;
        let (wall, snapshot, failures): (i64, Option<Vec<u8>>, i64) = conn.query_row(
            "SELECT e.wall_ms, s.snapshot, (SELECT failures FROM sync_state)
             FROM events e JOIN shifts s ON s.id = e.shift",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        assert_eq!((wall, snapshot, failures), (5, None, 0));
        Ok(())
    }

    #[test]
    fn a_panic_pending_at_version_2_becomes_a_tracked_alarm() -> Result<()> {
        let mut conn = one_event_at(2)?;
        conn.execute_batch(
            "INSERT INTO events (seq, shift, event_id, wall_ms, hlc_wall, hlc_counter, change)
                 VALUES (2, 1, x'03', 6, 6, 0, x'04');
             UPDATE sync_state SET urgent_seq = 2;",
        )?;
        upgrade(&mut conn, "v2")?;
        let alarms: Vec<(Vec<u8>, i64)> = conn
            .prepare("SELECT event_id, seq FROM alarms")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        assert_eq!(alarms, [(vec![3u8], 2)]);
        Ok(())
    }

    #[test]
    fn a_device_from_version_3_is_not_enrolled_after_the_upgrade() -> Result<()> {
        let mut conn = Connection::open_in_memory()?;
        upgrade_to(&mut conn, "v3", 3)?;
        conn.execute_batch(
            "INSERT INTO device (id, device_id, site_id, created_ms) VALUES (1, 'd', 's', 1);",
        )?;
        upgrade(&mut conn, "v3")?;
        let (credential, url, seq): (Option<String>, Option<String>, i64) = conn.query_row(
            "SELECT credential, server_url, request_seq FROM device",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        assert_eq!((credential, url, seq), (None, None, 0));
        Ok(())
    }

    #[test]
    fn an_event_from_version_5_keeps_its_change_and_new_rows_need_one_of_the_two() -> Result<()> {
        let mut conn = one_event_at(5)?;
        upgrade(&mut conn, "v5")?;
        let (record, change): (Option<Vec<u8>>, Option<Vec<u8>>) =
            conn.query_row("SELECT record, change FROM events WHERE seq = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        assert_eq!((record, change), (None, Some(vec![2u8])));
        let neither = conn.execute(
            "INSERT INTO events (seq, shift, event_id, wall_ms, hlc_wall, hlc_counter)
             VALUES (2, 1, x'03', 6, 6, 0)",
            [],
        );
        assert!(neither.is_err(), "a row with neither record nor change");
        Ok(())
    }

    #[test]
    fn an_attachment_from_version_10_keeps_its_bytes_and_new_rows_name_one_referrer() -> Result<()>
    {
        let mut conn = Connection::open_in_memory()?;
        upgrade_to(&mut conn, "v10", 10)?;
        conn.execute(
            "INSERT INTO attachment_blobs (sha256, bytes, size, incident_id, created_ms)
             VALUES (?1, x'0102', 2, 'inc', 7)",
            [[9u8; 32].as_slice()],
        )?;
        upgrade(&mut conn, "v10")?;
        let kept: (Vec<u8>, Option<String>, Option<i64>, Option<i64>) = conn.query_row(
            "SELECT bytes, incident_id, event_seq, uploaded_ms FROM attachment_blobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        assert_eq!(kept, (vec![1, 2], Some("inc".into()), None, None));
        for (incident, seq) in [(None, None), (Some("inc"), Some(3))] {
            let refused = conn.execute(
                "INSERT INTO attachment_blobs (sha256, bytes, size, incident_id, event_seq,
                     created_ms)
                 VALUES (?1, x'', 0, ?2, ?3, 8)",
                rusqlite::params![[8u8; 32].as_slice(), incident, seq],
            );
            assert!(
                refused.is_err(),
                "a blob referenced by {incident:?} and {seq:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> Result<()> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "user_version", VERSION + 1)?;
        assert!(matches!(
            upgrade(&mut conn, "x"),
            Err(Error::SchemaTooNew { .. })
        ));
        Ok(())
    }
}
