//! Tour compliance on SQLite (migration 0015): the SQL of the steps of
//! [`crate::store::compliance`]. The sync's part runs in its write transaction on the writer
//! thread ([`ingest`]); the periodic pass is a write transaction of its own ([`settle`]); the
//! API reads on a read connection ([`windows`], [`changes`]). The writer thread is the only
//! writer, so a site's windows are never written by two at once.

use patrol_core::SiteId;
use patrol_core::compliance::ShiftDelivery;
use rusqlite::{Connection, OptionalExtension, params};

use super::collab::latest_config;
use crate::store::compliance::{
    self, Amendment, CHANGES_KEPT_MS, Ingest, Reads, Recompute, ScanRow, Settle, SiteBookkeeping,
    Step, StoredChange, WindowQuery, WindowRow, WindowsAnswer, Writes,
};
use crate::store::merge::Prepared;
use crate::store::rows::read_site_id;
use crate::store::webhooks;
use crate::store::{SettleReport, StoreError, SyncBatch};

const WINDOW_COLUMNS: &str = "tour_id, start_ms, end_ms, grace_ms, checkpoints, final_at, \
                              final_by, amendments, updated_at";

fn read_window(r: &rusqlite::Row<'_>) -> Result<WindowRow, StoreError> {
    let final_by: Option<String> = r.get(6)?;
    WindowRow::read(
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        &r.get::<_, String>(4)?,
        r.get(5)?,
        final_by.as_deref(),
        r.get(7)?,
        r.get(8)?,
    )
}

fn collect_windows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<WindowRow>, StoreError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(read_window(r)?);
    }
    Ok(out)
}

/// The site's compliance bookkeeping (none stored: every window tracked, never settled).
fn bookkeeping(conn: &Connection, site: &str) -> Result<SiteBookkeeping, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT tracked_since, closed_through FROM compliance_sites WHERE site_id = ?1",
        )?
        .query_row([site], |r| {
            Ok(SiteBookkeeping {
                tracked_since: r.get(0)?,
                closed_through: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// One tour's stored windows starting in `[from, to)`.
fn tour_windows(
    conn: &Connection,
    site: &str,
    tour: &str,
    from: i64,
    to: i64,
) -> Result<Vec<WindowRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {WINDOW_COLUMNS} FROM tour_windows
         WHERE site_id = ?1 AND tour_id = ?2 AND start_ms >= ?3 AND start_ms < ?4"
    ))?;
    collect_windows(&mut stmt, params![site, tour, from, to])
}

/// Every tour's stored windows starting in `[from, to)`.
fn site_windows(
    conn: &Connection,
    site: &str,
    from: i64,
    to: i64,
) -> Result<Vec<WindowRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {WINDOW_COLUMNS} FROM tour_windows
         WHERE site_id = ?1 AND start_ms >= ?2 AND start_ms < ?3"
    ))?;
    collect_windows(&mut stmt, params![site, from, to])
}

/// The scans a [`Recompute`] reads, each once, in order.
fn read_scans(conn: &Connection, site: &str, reads: &Reads) -> Result<Vec<ScanRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT checkpoint_id, corrected_ms, event_id, device_id, guard_id FROM tour_scans
         WHERE site_id = ?1 AND checkpoint_id = ?2 AND corrected_ms >= ?3 AND corrected_ms < ?4
         ORDER BY corrected_ms, event_id LIMIT ?5",
    )?;
    let mut out = Vec::new();
    for range in &reads.scans {
        let mut rows = stmt.query(params![
            site,
            range.checkpoint.as_str(),
            range.from_ms,
            range.to_ms,
            range.limit
        ])?;
        while let Some(r) = rows.next()? {
            out.push(ScanRow::read(
                &r.get::<_, String>(0)?,
                r.get(1)?,
                r.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?,
                &r.get::<_, String>(3)?,
                &r.get::<_, String>(4)?,
            )?);
        }
    }
    compliance::in_order(&mut out);
    Ok(out)
}

/// Writes what a step of compliance gives.
fn write(tx: &Connection, site: &str, writes: &Writes, now_ms: i64) -> Result<(), StoreError> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO tour_windows (site_id, tour_id, start_ms, end_ms, grace_ms, closes_at,
             checkpoints, final_at, final_by, amendments, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (site_id, tour_id, start_ms, end_ms) DO UPDATE SET
             grace_ms = excluded.grace_ms, closes_at = excluded.closes_at,
             checkpoints = excluded.checkpoints, final_at = excluded.final_at,
             final_by = excluded.final_by, amendments = excluded.amendments,
             updated_at = excluded.updated_at",
    )?;
    for w in &writes.windows {
        upsert.execute(params![
            site,
            w.tour,
            w.window.start_ms,
            w.window.end_ms,
            w.grace_ms,
            w.closes_at(),
            w.checkpoints_json()?,
            w.final_.map(|f| f.at_ms),
            w.final_.map(|f| f.by.as_str()),
            w.amendments,
            w.updated_at_ms,
        ])?;
    }
    let mut amend = tx.prepare_cached(
        "INSERT INTO tour_amendments (site_id, tour_id, start_ms, end_ms, n, checkpoint_id,
             before, after, event_id, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for a in &writes.amendments {
        let (before, after) = a.sides_json()?;
        amend.execute(params![
            site,
            a.tour,
            a.window.start_ms,
            a.window.end_ms,
            a.n,
            a.checkpoint.as_str(),
            before,
            after,
            &a.cause.0.as_bytes()[..],
            a.at_ms,
        ])?;
    }
    let mut announce = tx.prepare_cached(
        "INSERT INTO tour_window_changes (site_id, seq, kind, data, at_ms)
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 FROM tour_window_changes
         WHERE site_id = ?1",
    )?;
    for c in &writes.changes {
        let data = compliance::change_json(site, c).to_string();
        announce.execute(params![site, c.kind.name(), data, now_ms])?;
        // A window final with checkpoints missed: its webhooks commit with it.
        if let Some(outgoing) = webhooks::window_missed(&read_site_id(site)?, c, now_ms) {
            super::webhooks::enqueue(tx, &outgoing)?;
        }
    }
    Ok(())
}

/// Compliance's part of a sync, in its write transaction: what the request's accepted pushes
/// (`merged`, as written) bring (see [`crate::store::compliance`]).
pub(super) fn ingest(
    tx: &Connection,
    batch: &SyncBatch,
    merged: &[Option<Prepared>],
) -> Result<(), StoreError> {
    let ingest = Ingest::of(batch, merged);
    let site = batch.site.as_str();
    let mut deliver = tx.prepare_cached(
        "INSERT INTO shift_deliveries (site_id, doc_id, started_ms, ended_ms, delivered_to)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (site_id, doc_id) DO UPDATE SET
             ended_ms = COALESCE(shift_deliveries.ended_ms, excluded.ended_ms),
             delivered_to = MAX(shift_deliveries.delivered_to, excluded.delivered_to)",
    )?;
    for d in &ingest.deliveries {
        deliver.execute(params![
            site,
            d.doc_id,
            d.started_ms,
            d.ended_ms,
            d.delivered_to_ms
        ])?;
    }
    // Only the scans of a tour's checkpoints ([`Ingest::of`]).
    let scans = ingest.scans;
    if scans.is_empty() {
        return Ok(());
    }
    // The configuration the sync's flags were computed with, read once per request.
    let config = &*batch.config;
    let mut keep = tx.prepare_cached(
        "INSERT INTO tour_scans (site_id, checkpoint_id, corrected_ms, event_id, device_id,
             guard_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    for s in &scans {
        keep.execute(params![
            site,
            s.checkpoint.as_str(),
            s.at_ms,
            &s.event.0.as_bytes()[..],
            s.device.to_string(),
            s.guard.as_str(),
        ])?;
    }
    let book = bookkeeping(tx, site)?;
    let now_ms = batch.received_at_ms;
    for tour in &config.tours {
        for run in compliance::runs(tour, &scans) {
            let Some(mut job) = Recompute::new(config, tour, book.tracked_since, run, now_ms)
            else {
                continue;
            };
            let writes = loop {
                let reads = job.reads();
                let stored =
                    tour_windows(tx, site, &reads.tour, reads.windows_from, reads.windows_to)?;
                if let Step::Done(writes) = job.run(&stored, &read_scans(tx, site, &reads)?) {
                    break writes;
                }
            };
            write(tx, site, &writes, now_ms)?;
        }
    }
    Ok(())
}

/// The periodic pass over one site, in a write transaction of its own ([`Settle`]).
pub(super) fn settle(
    tx: &Connection,
    site: &SiteId,
    now_ms: i64,
) -> Result<SettleReport, StoreError> {
    super::auth::get_site(tx, site)?.ok_or_else(|| StoreError::UnknownSite(site.clone()))?;
    let config = latest_config(tx, site)?.config;
    let id = site.as_str();
    let book = bookkeeping(tx, id)?;
    let pass = Settle::new(&config, book, now_ms);
    let reads = pass.reads();
    let stored = site_windows(tx, id, reads.windows_from, reads.windows_to)?;
    let provisional = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS} FROM tour_windows
             WHERE site_id = ?1 AND final_at IS NULL AND closes_at <= ?2"
        ))?;
        collect_windows(&mut stmt, params![id, now_ms])?
    };
    let shifts = {
        let mut stmt = tx.prepare_cached(
            "SELECT started_ms, ended_ms, delivered_to FROM shift_deliveries
             WHERE site_id = ?1 AND (ended_ms IS NULL OR ended_ms >= ?2)",
        )?;
        let rows = stmt.query_map(params![id, reads.shifts_ended_since], |r| {
            Ok(ShiftDelivery {
                started_ms: r.get(0)?,
                ended_ms: r.get(1)?,
                delivered_to_ms: r.get(2)?,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let settled = pass.run(&stored, &provisional, &shifts);
    if pass.idle() && settled.writes.is_empty() {
        return Ok(SettleReport::default());
    }
    write(tx, id, &settled.writes, now_ms)?;
    tx.prepare_cached(
        "INSERT INTO compliance_sites (site_id, tracked_since, closed_through)
         VALUES (?1, NULL, ?2)
         ON CONFLICT (site_id) DO UPDATE SET closed_through = excluded.closed_through",
    )?
    .execute(params![id, now_ms])?;
    tx.prepare_cached("DELETE FROM tour_window_changes WHERE site_id = ?1 AND at_ms < ?2")?
        .execute(params![id, now_ms.saturating_sub(CHANGES_KEPT_MS)])?;
    Ok(SettleReport {
        closed: settled.closed,
        finalised: settled.finalised,
    })
}

/// The windows of `query` at `now_ms`, read in one transaction ([`compliance::view`]).
pub(super) fn windows(
    conn: &mut Connection,
    site: &SiteId,
    query: &WindowQuery,
    now_ms: i64,
) -> Result<WindowsAnswer, StoreError> {
    let tx = conn.transaction()?;
    super::auth::get_site(&tx, site)?.ok_or_else(|| StoreError::UnknownSite(site.clone()))?;
    let config = latest_config(&tx, site)?.config;
    let id = site.as_str();
    let book = bookkeeping(&tx, id)?;
    let (from, to) = query.rows_range(&config)?;
    let rows = match &query.tour {
        Some(tour) => tour_windows(&tx, id, tour, from, to)?,
        None => site_windows(&tx, id, from, to)?,
    };
    let amendments = amendments(&tx, id, &rows)?;
    let answer = compliance::view(&config, book, &rows, &amendments, query, now_ms)?;
    tx.finish()?;
    Ok(answer)
}

/// The amendments of the windows `rows` that have any.
fn amendments(
    conn: &Connection,
    site: &str,
    rows: &[WindowRow],
) -> Result<Vec<Amendment>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT n, checkpoint_id, before, after, event_id, at_ms FROM tour_amendments
         WHERE site_id = ?1 AND tour_id = ?2 AND start_ms = ?3 AND end_ms = ?4 ORDER BY n",
    )?;
    let mut out = Vec::new();
    for w in rows.iter().filter(|w| w.amendments > 0) {
        let mut found = stmt.query(params![site, w.tour, w.window.start_ms, w.window.end_ms])?;
        while let Some(r) = found.next()? {
            out.push(Amendment::read(
                w.tour.clone(),
                w.window,
                r.get(0)?,
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                &r.get::<_, String>(3)?,
                r.get_ref(4)?.as_blob().map_err(rusqlite::Error::from)?,
                r.get(5)?,
            )?);
        }
    }
    Ok(out)
}

/// The site's announcements after `after` (at most `limit`) and its last number.
pub(super) fn changes(
    conn: &mut Connection,
    site: &SiteId,
    after: u64,
    limit: u32,
) -> Result<(Vec<StoredChange>, u64), StoreError> {
    let tx = conn.transaction()?;
    let id = site.as_str();
    let last: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM tour_window_changes WHERE site_id = ?1")?
        .query_row([id], |r| r.get(0))?;
    let mut stmt = tx.prepare_cached(
        "SELECT seq, kind, data FROM tour_window_changes
         WHERE site_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![id, super::to_i64(after), i64::from(limit)], |r| {
        Ok(StoredChange {
            seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            kind: r.get(1)?,
            data: r.get(2)?,
        })
    })?;
    let out = rows.collect::<Result<Vec<_>, _>>()?;
    drop(stmt);
    tx.finish()?;
    Ok((out, u64::try_from(last).unwrap_or(0)))
}
