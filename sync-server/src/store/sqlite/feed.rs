//! The feed and the device list on SQLite: read on a pooled read-only connection, each in one
//! read transaction, so a page and its site check come from one snapshot.
//!
//! An event is stored as its binary record and its stamp (corrected time, flags) and served as
//! the JSON the feed shows, rendered at each read ([`feed_json`]); events stored before
//! migration 8 keep the JSON they were stored with, and are served as stored with their stamp
//! added (see migration 11 for the stamp of events stored before it).

use std::str::FromStr;

use patrol_core::{ShiftId, SiteId};
use rusqlite::{Connection, params};

use super::auth::get_site;
use super::to_i64;
use crate::store::event_hours;
use crate::store::event_json::{FeedRenderer, Stamp, with_stamp};
use crate::store::merge::shift_log_doc_id;
use crate::store::rows::{ShiftRow, corrupt, read_device_id, read_guard_id, read_latest_shift};
use crate::store::{
    DeviceStatus, EventPage, FILTER_SCAN_LIMIT, FeedFilter, ShiftPage, ShiftQuery, ShiftSummary,
    SqlValue, StoreError, TimeCursor, TimePage, corrected_ms_sql, device_list_sql, shift_list_sql,
    shift_sql,
};

pub(super) fn events_after(
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
    "seq, event_id, device_id, shift_id, guard_id, received_at_ms, record, json,
     device_time_ms, corrected_ms, flags";

/// An event's corrected time in SQL ([`corrected_ms_sql`]; `corrected_ms` is NULL for an event
/// stored before migration 11).
pub(super) fn corrected_ms() -> String {
    corrected_ms_sql("MIN")
}

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
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        corrupt(format!("event {seq} of site {site}: {what}: {e}"))
    };
    let received_at_ms: i64 = row.get(5)?;
    let stamp = Stamp::stored(
        row.get(9)?,
        row.get_ref(10)?
            .as_str_or_null()
            .map_err(|e| bad("flags", &e))?,
        row.get(8)?,
        received_at_ms,
    )?;
    if let Some(json) = row
        .get_ref(7)?
        .as_str_or_null()
        .map_err(|e| bad("JSON", &e))?
    {
        return with_stamp(json, &stamp).map_err(|e| bad("stored JSON", &e));
    }
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
    renderer
        .render(&event, seq, received_at_ms, &stamp)
        .map_err(|e| bad("JSON", &e))
}

pub(super) fn events_filtered(
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
        let corrected = corrected_ms();
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {FEED_COLUMNS},
                    CASE WHEN (?4 IS NULL OR {corrected} >= ?4)
                              AND (?5 IS NULL OR {corrected} < ?5)
                              AND (?6 IS NULL OR guard_id = ?6)
                              AND (?7 IS NULL OR device_id = ?7)
                              AND (?8 IS NULL OR kind = ?8)
                              AND (?9 IS NULL OR checkpoint_id = ?9)
                              AND (?10 IS NULL OR EXISTS (
                                  SELECT 1 FROM json_each(flags)
                                  WHERE json_extract(value, '$.flag') = ?10))
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
            filter.flag,
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
            if row.get::<_, bool>(11)? {
                page.events
                    .push((seq, feed_json(site, seq, row, &mut renderer)?));
            }
        }
    }
    Ok(Some(page))
}

/// The rows of `event_hours` [`events_between`] reads: site, first hour, end of the span.
pub(super) const EVENT_HOURS_SQL: &str = "SELECT first_seq, last_seq FROM event_hours
     WHERE site_id = ?1 AND hour_ms >= ?2 AND hour_ms < ?3";

/// The query of [`events_between`] for one seq range: site, span start, span end, the range's
/// first and last seq, limit. The table's primary key serves the range.
pub(super) fn events_between_sql() -> String {
    let corrected = corrected_ms();
    format!(
        "SELECT {FEED_COLUMNS} FROM events
         WHERE site_id = ?1 AND seq BETWEEN ?4 AND ?5
           AND {corrected} >= ?2 AND {corrected} < ?3
         ORDER BY seq LIMIT ?6"
    )
}

pub(super) fn events_between(
    conn: &mut Connection,
    site: &SiteId,
    (from_ms, to_ms): (i64, i64),
    after: Option<TimeCursor>,
    limit: u32,
) -> Result<Option<TimePage>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let (first_hour, end) = event_hours::hours_of(from_ms, to_ms);
    let rows: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare_cached(EVENT_HOURS_SQL)?;
        stmt.query_map(params![site.as_str(), first_hour, end], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?
    };
    let after = after.map(|c| to_i64(c.seq));
    let mut page = TimePage::default();
    let mut renderer = FeedRenderer::default();
    let mut stmt = tx.prepare_cached(&events_between_sql())?;
    'ranges: for (first, last) in event_hours::ranges(rows, after) {
        // One more than the page holds says whether another page follows.
        let room = i64::from(limit) + 1 - page.events.len() as i64;
        let mut rows = stmt.query(params![site.as_str(), from_ms, to_ms, first, last, room])?;
        while let Some(row) = rows.next()? {
            let seq = feed_seq(row)?;
            if page.events.len() == limit as usize {
                page.next = page.events.last().map(|(seq, _)| TimeCursor { seq: *seq });
                break 'ranges;
            }
            page.events
                .push((seq, feed_json(site, seq, row, &mut renderer)?));
        }
    }
    Ok(Some(page))
}

pub(super) fn devices(
    conn: &mut Connection,
    site: &SiteId,
) -> Result<Option<Vec<DeviceStatus>>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&device_list_sql("?1"))?;
        let mut rows = stmt.query([site.as_str()])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let pending: i64 = row.get(3)?;
            out.push(DeviceStatus {
                device: read_device_id(&id)?,
                first_seen_ms: row.get(1)?,
                last_sync_at_ms: row.get(2)?,
                pending_events: u64::try_from(pending).unwrap_or(0),
                clock_skew_ms: row.get(4)?,
                guard: row
                    .get::<_, Option<String>>(5)?
                    .map(|g| read_guard_id(&g))
                    .transpose()?,
                latest_shift: read_latest_shift(row.get(6)?, row.get(7)?, row.get(8)?)?,
            });
        }
    }
    Ok(Some(out))
}

/// A shift listing's row ([`crate::store::SHIFT_COLUMNS`]).
fn shift_row(row: &rusqlite::Row<'_>) -> Result<ShiftSummary, StoreError> {
    ShiftRow {
        doc_id: row.get(0)?,
        guard: row.get(1)?,
        device: row.get(2)?,
        started_at_ms: row.get(3)?,
        ended_at_ms: row.get(4)?,
        events: row.get(5)?,
        last_event_at_ms: row.get(6)?,
        updated_at_ms: row.get(7)?,
        signatures: row.get(8)?,
        last_signed_at_ms: row.get(9)?,
        signed: row.get(10)?,
    }
    .summary()
}

pub(super) fn shifts(
    conn: &mut Connection,
    site: &SiteId,
    query: &ShiftQuery,
) -> Result<Option<ShiftPage>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let (sql, values) = shift_list_sql(site, query, |n| format!("?{n}"));
    let values: Vec<rusqlite::types::Value> = values
        .into_iter()
        .map(|v| match v {
            SqlValue::Text(t) => rusqlite::types::Value::Text(t),
            SqlValue::Int(i) => rusqlite::types::Value::Integer(i),
        })
        .collect();
    let mut page = ShiftPage::default();
    {
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
        while let Some(row) = rows.next()? {
            if page.shifts.len() == query.limit as usize {
                page.more = true;
                break;
            }
            page.shifts.push(shift_row(row)?);
        }
    }
    Ok(Some(page))
}

pub(super) fn shift(
    conn: &mut Connection,
    site: &SiteId,
    shift: &ShiftId,
) -> Result<Option<ShiftSummary>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Err(StoreError::UnknownSite(site.clone()));
    }
    let mut stmt = tx.prepare_cached(&shift_sql(|n| format!("?{n}")))?;
    let mut rows = stmt.query(params![site.as_str(), shift_log_doc_id(shift)])?;
    match rows.next()? {
        Some(row) => Ok(Some(shift_row(row)?)),
        None => Ok(None),
    }
}
