//! Tour compliance on PostgreSQL (migration 0011): the SQL of the steps of
//! [`crate::store::compliance`]. The sync's part runs in its write transaction ([`ingest`]),
//! which holds the site's row lock from its first new event on (and takes it if it has not);
//! the periodic pass takes the same lock, skipping a site whose lock another instance holds
//! ([`settle`]). So a site's windows have one writer at a time, whichever instance.

use deadpool_postgres::GenericClient;
use patrol_core::SiteId;
use patrol_core::compliance::ShiftDelivery;

use super::collab::site_config;
use super::{execute, query, query_one, query_opt, to_u64};
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

fn read_windows(rows: &[tokio_postgres::Row]) -> Result<Vec<WindowRow>, StoreError> {
    rows.iter()
        .map(|r| {
            WindowRow::read(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
                r.try_get(8)?,
            )
        })
        .collect()
}

/// The site's compliance bookkeeping (none stored: every window tracked, never settled).
async fn bookkeeping<C: GenericClient>(c: &C, site: &str) -> Result<SiteBookkeeping, StoreError> {
    let row = query_opt(
        c,
        "SELECT tracked_since, closed_through FROM compliance_sites WHERE site_id = $1",
        &[&site],
    )
    .await?;
    Ok(match row {
        Some(r) => SiteBookkeeping {
            tracked_since: r.try_get(0)?,
            closed_through: r.try_get(1)?,
        },
        None => SiteBookkeeping::default(),
    })
}

/// One tour's stored windows starting in `[from, to)`.
async fn tour_windows<C: GenericClient>(
    c: &C,
    site: &str,
    tour: &str,
    from: i64,
    to: i64,
) -> Result<Vec<WindowRow>, StoreError> {
    let rows = query(
        c,
        &format!(
            "SELECT {WINDOW_COLUMNS} FROM tour_windows
             WHERE site_id = $1 AND tour_id = $2 AND start_ms >= $3 AND start_ms < $4"
        ),
        &[&site, &tour, &from, &to],
    )
    .await?;
    read_windows(&rows)
}

/// Every tour's stored windows starting in `[from, to)`.
async fn site_windows<C: GenericClient>(
    c: &C,
    site: &str,
    from: i64,
    to: i64,
) -> Result<Vec<WindowRow>, StoreError> {
    let rows = query(
        c,
        &format!(
            "SELECT {WINDOW_COLUMNS} FROM tour_windows
             WHERE site_id = $1 AND start_ms >= $2 AND start_ms < $3"
        ),
        &[&site, &from, &to],
    )
    .await?;
    read_windows(&rows)
}

/// The scans a [`Recompute`] reads, each once, in order: every range in one statement.
async fn read_scans<C: GenericClient>(
    c: &C,
    site: &str,
    reads: &Reads,
) -> Result<Vec<ScanRow>, StoreError> {
    let checkpoints: Vec<&str> = reads.scans.iter().map(|r| r.checkpoint.as_str()).collect();
    let froms: Vec<i64> = reads.scans.iter().map(|r| r.from_ms).collect();
    let tos: Vec<i64> = reads.scans.iter().map(|r| r.to_ms).collect();
    let limits: Vec<i64> = reads.scans.iter().map(|r| i64::from(r.limit)).collect();
    let rows = query(
        c,
        "SELECT DISTINCT s.checkpoint_id, s.corrected_ms, s.event_id, s.device_id, s.guard_id
         FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
              AS r (checkpoint_id, from_ms, to_ms, n)
         CROSS JOIN LATERAL (
             SELECT checkpoint_id, corrected_ms, event_id, device_id, guard_id FROM tour_scans
             WHERE site_id = $1 AND checkpoint_id = r.checkpoint_id
               AND corrected_ms >= r.from_ms AND corrected_ms < r.to_ms
             ORDER BY corrected_ms, event_id LIMIT r.n) s",
        &[&site, &checkpoints, &froms, &tos, &limits],
    )
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            ScanRow::read(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            )
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    compliance::in_order(&mut out);
    Ok(out)
}

/// Writes what a step of compliance gives.
async fn write<C: GenericClient>(
    c: &C,
    site: &str,
    writes: &Writes,
    now_ms: i64,
) -> Result<(), StoreError> {
    for w in &writes.windows {
        execute(
            c,
            "INSERT INTO tour_windows (site_id, tour_id, start_ms, end_ms, grace_ms, closes_at,
                 checkpoints, final_at, final_by, amendments, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (site_id, tour_id, start_ms, end_ms) DO UPDATE SET
                 grace_ms = excluded.grace_ms, closes_at = excluded.closes_at,
                 checkpoints = excluded.checkpoints, final_at = excluded.final_at,
                 final_by = excluded.final_by, amendments = excluded.amendments,
                 updated_at = excluded.updated_at",
            &[
                &site,
                &w.tour,
                &w.window.start_ms,
                &w.window.end_ms,
                &w.grace_ms,
                &w.closes_at(),
                &w.checkpoints_json()?,
                &w.final_.map(|f| f.at_ms),
                &w.final_.map(|f| f.by.as_str()),
                &i64::from(w.amendments),
                &w.updated_at_ms,
            ],
        )
        .await?;
    }
    for a in &writes.amendments {
        let (before, after) = a.sides_json()?;
        execute(
            c,
            "INSERT INTO tour_amendments (site_id, tour_id, start_ms, end_ms, n, checkpoint_id,
                 before, after, event_id, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &site,
                &a.tour,
                &a.window.start_ms,
                &a.window.end_ms,
                &i64::from(a.n),
                &a.checkpoint.as_str(),
                &before,
                &after,
                &&a.cause.0.as_bytes()[..],
                &a.at_ms,
            ],
        )
        .await?;
    }
    for change in &writes.changes {
        let data = compliance::change_json(site, change).to_string();
        execute(
            c,
            "INSERT INTO tour_window_changes (site_id, seq, kind, data, at_ms)
             SELECT $1::text, COALESCE(MAX(seq), 0) + 1, $2::text, $3::text, $4::bigint
             FROM tour_window_changes WHERE site_id = $1",
            &[&site, &change.kind.name(), &data, &now_ms],
        )
        .await?;
        // A window final with checkpoints missed: its webhooks commit with it.
        if let Some(outgoing) = webhooks::window_missed(&read_site_id(site)?, change, now_ms) {
            super::webhooks::enqueue(c, &outgoing).await?;
        }
    }
    Ok(())
}

/// Compliance's part of a sync, in its write transaction: what the request's accepted pushes
/// (`merged`, as written) bring (see [`crate::store::compliance`]).
pub(super) async fn ingest(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &SyncBatch,
    merged: &[Option<Prepared>],
) -> Result<(), StoreError> {
    let ingest = Ingest::of(batch, merged);
    let site = batch.site.as_str();
    for d in &ingest.deliveries {
        execute(
            tx,
            "INSERT INTO shift_deliveries (site_id, doc_id, started_ms, ended_ms, delivered_to)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (site_id, doc_id) DO UPDATE SET
                 ended_ms = COALESCE(shift_deliveries.ended_ms, excluded.ended_ms),
                 delivered_to = GREATEST(shift_deliveries.delivered_to, excluded.delivered_to)",
            &[
                &site,
                &d.doc_id,
                &d.started_ms,
                &d.ended_ms,
                &d.delivered_to_ms,
            ],
        )
        .await?;
    }
    // Only the scans of a tour's checkpoints ([`Ingest::of`]).
    let scans = ingest.scans;
    if scans.is_empty() {
        return Ok(());
    }
    // The configuration the sync's flags were computed with, read once per request.
    let config = &*batch.config;
    // The site's lock, which a request that added events holds already: one writer of the
    // site's windows at a time.
    query_one(
        tx,
        "SELECT 1 FROM sites WHERE site_id = $1 FOR NO KEY UPDATE",
        &[&site],
    )
    .await?;
    let checkpoint_col: Vec<&str> = scans.iter().map(|s| s.checkpoint.as_str()).collect();
    let at_col: Vec<i64> = scans.iter().map(|s| s.at_ms).collect();
    let event_col: Vec<&[u8]> = scans.iter().map(|s| &s.event.0.as_bytes()[..]).collect();
    let device_col: Vec<String> = scans.iter().map(|s| s.device.to_string()).collect();
    let guard_col: Vec<&str> = scans.iter().map(|s| s.guard.as_str()).collect();
    execute(
        tx,
        "INSERT INTO tour_scans (site_id, checkpoint_id, corrected_ms, event_id, device_id,
             guard_id)
         SELECT $1, u.checkpoint_id, u.corrected_ms, u.event_id, u.device_id, u.guard_id
         FROM unnest($2::text[], $3::bigint[], $4::bytea[], $5::text[], $6::text[])
              AS u (checkpoint_id, corrected_ms, event_id, device_id, guard_id)
         ON CONFLICT DO NOTHING",
        &[
            &site,
            &checkpoint_col,
            &at_col,
            &event_col,
            &device_col,
            &guard_col,
        ],
    )
    .await?;
    let book = bookkeeping(tx, site).await?;
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
                    tour_windows(tx, site, &reads.tour, reads.windows_from, reads.windows_to)
                        .await?;
                let scans = read_scans(tx, site, &reads).await?;
                if let Step::Done(writes) = job.run(&stored, &scans) {
                    break writes;
                }
            };
            write(tx, site, &writes, now_ms).await?;
        }
    }
    Ok(())
}

/// The periodic pass over one site ([`Settle`]) in `tx`, under the site's row lock; `None`
/// (nothing done) when another transaction holds it.
pub(super) async fn settle(
    tx: &deadpool_postgres::Transaction<'_>,
    site: &SiteId,
    now_ms: i64,
) -> Result<Option<SettleReport>, StoreError> {
    let config = site_config(tx, site).await?.config;
    let id = site.as_str();
    let locked = query_opt(
        tx,
        "SELECT 1 FROM sites WHERE site_id = $1 FOR NO KEY UPDATE SKIP LOCKED",
        &[&id],
    )
    .await?;
    if locked.is_none() {
        return Ok(None);
    }
    let book = bookkeeping(tx, id).await?;
    let pass = Settle::new(&config, book, now_ms);
    let reads = pass.reads();
    let stored = site_windows(tx, id, reads.windows_from, reads.windows_to).await?;
    let provisional = {
        let rows = query(
            tx,
            &format!(
                "SELECT {WINDOW_COLUMNS} FROM tour_windows
                 WHERE site_id = $1 AND final_at IS NULL AND closes_at <= $2"
            ),
            &[&id, &now_ms],
        )
        .await?;
        read_windows(&rows)?
    };
    let shifts = query(
        tx,
        "SELECT started_ms, ended_ms, delivered_to FROM shift_deliveries
         WHERE site_id = $1 AND (ended_ms IS NULL OR ended_ms >= $2)",
        &[&id, &reads.shifts_ended_since],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ShiftDelivery {
            started_ms: r.try_get(0)?,
            ended_ms: r.try_get(1)?,
            delivered_to_ms: r.try_get(2)?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    let settled = pass.run(&stored, &provisional, &shifts);
    if pass.idle() && settled.writes.is_empty() {
        return Ok(Some(SettleReport::default()));
    }
    write(tx, id, &settled.writes, now_ms).await?;
    execute(
        tx,
        "INSERT INTO compliance_sites (site_id, tracked_since, closed_through)
         VALUES ($1, NULL, $2)
         ON CONFLICT (site_id) DO UPDATE SET closed_through = excluded.closed_through",
        &[&id, &now_ms],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM tour_window_changes WHERE site_id = $1 AND at_ms < $2",
        &[&id, &now_ms.saturating_sub(CHANGES_KEPT_MS)],
    )
    .await?;
    Ok(Some(SettleReport {
        closed: settled.closed,
        finalised: settled.finalised,
    }))
}

/// The windows of `query` at `now_ms`, read in one snapshot ([`compliance::view`]).
pub(super) async fn windows<C: GenericClient>(
    c: &C,
    site: &SiteId,
    query_: &WindowQuery,
    now_ms: i64,
) -> Result<WindowsAnswer, StoreError> {
    let config = site_config(c, site).await?.config;
    let id = site.as_str();
    let book = bookkeeping(c, id).await?;
    let (from, to) = query_.rows_range(&config)?;
    let rows = match &query_.tour {
        Some(tour) => tour_windows(c, id, tour, from, to).await?,
        None => site_windows(c, id, from, to).await?,
    };
    let mut amendments = Vec::new();
    for w in rows.iter().filter(|w| w.amendments > 0) {
        let found = query(
            c,
            "SELECT n, checkpoint_id, before, after, event_id, at_ms FROM tour_amendments
             WHERE site_id = $1 AND tour_id = $2 AND start_ms = $3 AND end_ms = $4 ORDER BY n",
            &[&id, &w.tour, &w.window.start_ms, &w.window.end_ms],
        )
        .await?;
        for r in &found {
            amendments.push(Amendment::read(
                w.tour.clone(),
                w.window,
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
            )?);
        }
    }
    compliance::view(&config, book, &rows, &amendments, query_, now_ms)
}

/// The site's announcements after `after` (at most `limit`) and its last number.
pub(super) async fn changes<C: GenericClient>(
    c: &C,
    site: &SiteId,
    after: u64,
    limit: u32,
) -> Result<(Vec<StoredChange>, u64), StoreError> {
    let id = site.as_str();
    let last: i64 = query_one(
        c,
        "SELECT COALESCE(MAX(seq), 0)::bigint FROM tour_window_changes WHERE site_id = $1",
        &[&id],
    )
    .await?
    .try_get(0)?;
    let rows = query(
        c,
        "SELECT seq, kind, data FROM tour_window_changes
         WHERE site_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&id, &crate::store::rows::to_i64(after), &i64::from(limit)],
    )
    .await?;
    let changes = rows
        .iter()
        .map(|r| {
            Ok(StoredChange {
                seq: to_u64(r.try_get(0)?, "change seq")?,
                kind: r.try_get(1)?,
                data: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((changes, to_u64(last, "change seq")?))
}
