//! The feed and the device list on PostgreSQL: plain reads on a pooled connection.
//!
//! An event is stored with the JSON the feed shows, rendered once when it arrives
//! ([`super::sync`]) with its stamp (corrected time, flags), and served as stored; an event
//! stored before migration 7 gets the stamp it reads as added when served ([`feed_json`]).

use deadpool_postgres::GenericClient;
use patrol_core::{ShiftId, SiteId};
use tokio_postgres::types::ToSql;

use super::auth::get_site;
use super::{query, to_i64, to_u64};
use crate::store::event_hours;
use crate::store::event_json::{Stamp, with_stamp};
use crate::store::merge::shift_log_doc_id;
use crate::store::rows::{ShiftRow, read_device_id, read_guard_id, read_latest_shift};
use crate::store::{
    DeviceStatus, EventPage, FILTER_SCAN_LIMIT, FeedFilter, ShiftPage, ShiftQuery, ShiftSummary,
    SqlValue, StoreError, TimeCursor, TimePage, corrected_ms_sql, device_list_sql, shift_list_sql,
    shift_sql,
};

pub(super) async fn events_after<C: GenericClient>(
    client: &C,
    site: &SiteId,
    after: u64,
    limit: u32,
) -> Result<Option<EventPage>, StoreError> {
    // Sites are never deleted: the check and the page need not share a snapshot.
    if get_site(client, site).await?.is_none() {
        return Ok(None);
    }
    // One extra row tells whether more follow.
    let rows = query(
        client,
        &format!(
            "SELECT seq, json, {STAMP_COLUMNS} FROM events WHERE site_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3"
        ),
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
        let json = feed_json(&row, row.try_get(1)?)?;
        page.events.push((to_u64(seq, "event seq")?, json));
    }
    Ok(Some(page))
}

pub(super) async fn events_filtered<C: GenericClient>(
    client: &C,
    site: &SiteId,
    after: u64,
    limit: u32,
    filter: &FeedFilter,
) -> Result<Option<EventPage>, StoreError> {
    if get_site(client, site).await?.is_none() {
        return Ok(None);
    }
    // Walks the site's events in order (its primary key) and returns the JSON only of
    // those that match; at most FILTER_SCAN_LIMIT rows per page.
    let corrected = corrected_ms();
    let rows = query(
        client,
        &format!(
            "SELECT seq, CASE WHEN ($4::bigint IS NULL OR {corrected} >= $4)
                               AND ($5::bigint IS NULL OR {corrected} < $5)
                               AND ($6::text IS NULL OR guard_id = $6)
                               AND ($7::text IS NULL OR device_id = $7)
                               AND ($8::text IS NULL OR kind = $8)
                               AND ($9::text IS NULL OR checkpoint_id = $9)
                               AND ($10::text IS NULL
                                    OR flags @> jsonb_build_array(jsonb_build_object('flag', $10::text)))
                          THEN json END,
                    {STAMP_COLUMNS}
             FROM events WHERE site_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ),
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
            &filter.flag,
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
            page.events.push((seq, feed_json(&row, json)?));
        }
    }
    Ok(Some(page))
}

/// What [`feed_json`] reads of an event row after its seq and JSON (columns 2 to 5).
const STAMP_COLUMNS: &str = "corrected_ms IS NULL, device_time_ms, received_at_ms,
     flags::text";

/// An event's corrected time in SQL ([`corrected_ms_sql`]; `corrected_ms` is NULL for an event
/// stored before migration 7).
pub(super) fn corrected_ms() -> String {
    corrected_ms_sql("LEAST")
}

pub(super) async fn events_between<C: GenericClient>(
    client: &C,
    site: &SiteId,
    (from_ms, to_ms): (i64, i64),
    after: Option<TimeCursor>,
    limit: u32,
) -> Result<Option<TimePage>, StoreError> {
    if get_site(client, site).await?.is_none() {
        return Ok(None);
    }
    let (first_hour, end) = event_hours::hours_of(from_ms, to_ms);
    let rows: Vec<(i64, i64)> = query(
        client,
        "SELECT first_seq, last_seq FROM event_hours
         WHERE site_id = $1 AND hour_ms >= $2 AND hour_ms < $3",
        &[&site.as_str(), &first_hour, &end],
    )
    .await?
    .into_iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, StoreError>>()?;
    let after = after.map(|c| to_i64(c.seq));
    // The events' primary key serves each seq range.
    let corrected = corrected_ms();
    let sql = format!(
        "SELECT seq, json, {STAMP_COLUMNS} FROM events
         WHERE site_id = $1 AND seq BETWEEN $4 AND $5
           AND {corrected} >= $2 AND {corrected} < $3
         ORDER BY seq LIMIT $6"
    );
    let mut page = TimePage::default();
    'ranges: for (first, last) in event_hours::ranges(rows, after) {
        // One more than the page holds says whether another page follows.
        let room = i64::from(limit) + 1 - page.events.len() as i64;
        let rows = query(
            client,
            &sql,
            &[&site.as_str(), &from_ms, &to_ms, &first, &last, &room],
        )
        .await?;
        for row in rows {
            if page.events.len() == limit as usize {
                page.next = page.events.last().map(|(seq, _)| TimeCursor { seq: *seq });
                break 'ranges;
            }
            let seq = to_u64(row.try_get(0)?, "event seq")?;
            page.events.push((seq, feed_json(&row, row.try_get(1)?)?));
        }
    }
    Ok(Some(page))
}

/// The feed JSON of an event row: as stored, or for an event stored before migration 7 (whose
/// JSON lacks its stamp), with the stamp it reads as added.
fn feed_json(row: &tokio_postgres::Row, json: String) -> Result<String, StoreError> {
    if !row.try_get::<_, bool>(2)? {
        return Ok(json);
    }
    let stamp = Stamp::stored(
        None,
        row.try_get::<_, Option<&str>>(5)?,
        row.try_get(3)?,
        row.try_get(4)?,
    )?;
    with_stamp(&json, &stamp)
        .map_err(|e| StoreError::CorruptData(format!("stored event JSON: {e}")))
}

pub(super) async fn devices<C: GenericClient>(
    client: &C,
    site: &SiteId,
) -> Result<Option<Vec<DeviceStatus>>, StoreError> {
    if get_site(client, site).await?.is_none() {
        return Ok(None);
    }
    let rows = query(client, &device_list_sql("$1"), &[&site.as_str()]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0)?;
        let pending: i64 = row.try_get(3)?;
        out.push(DeviceStatus {
            device: read_device_id(&id)?,
            first_seen_ms: row.try_get(1)?,
            last_sync_at_ms: row.try_get(2)?,
            pending_events: u64::try_from(pending).unwrap_or(0),
            clock_skew_ms: row.try_get(4)?,
            guard: row
                .try_get::<_, Option<String>>(5)?
                .map(|g| read_guard_id(&g))
                .transpose()?,
            latest_shift: read_latest_shift(row.try_get(6)?, row.try_get(7)?, row.try_get(8)?)?,
        });
    }
    Ok(Some(out))
}

/// A shift listing's row ([`crate::store::SHIFT_COLUMNS`]).
fn shift_row(row: &tokio_postgres::Row) -> Result<ShiftSummary, StoreError> {
    ShiftRow {
        doc_id: row.try_get(0)?,
        guard: row.try_get(1)?,
        device: row.try_get(2)?,
        started_at_ms: row.try_get(3)?,
        ended_at_ms: row.try_get(4)?,
        events: row.try_get(5)?,
        last_event_at_ms: row.try_get(6)?,
        updated_at_ms: row.try_get(7)?,
        signatures: row.try_get(8)?,
        last_signed_at_ms: row.try_get(9)?,
        signed: row.try_get(10)?,
    }
    .summary()
}

pub(super) async fn shifts<C: GenericClient>(
    client: &C,
    site: &SiteId,
    shift_query: &ShiftQuery,
) -> Result<Option<ShiftPage>, StoreError> {
    if get_site(client, site).await?.is_none() {
        return Ok(None);
    }
    let (sql, values) = shift_list_sql(site, shift_query, |n| format!("${n}"));
    let params: Vec<Box<dyn ToSql + Sync + Send>> = values
        .into_iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                SqlValue::Text(t) => Box::new(t),
                SqlValue::Int(i) => Box::new(i),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = query(client, &sql, &refs).await?;
    let mut page = ShiftPage::default();
    for row in rows {
        if page.shifts.len() == shift_query.limit as usize {
            page.more = true;
            break;
        }
        page.shifts.push(shift_row(&row)?);
    }
    Ok(Some(page))
}

pub(super) async fn shift<C: GenericClient>(
    client: &C,
    site: &SiteId,
    shift: &ShiftId,
) -> Result<Option<ShiftSummary>, StoreError> {
    if get_site(client, site).await?.is_none() {
        return Err(StoreError::UnknownSite(site.clone()));
    }
    let rows = query(
        client,
        &shift_sql(|n| format!("${n}")),
        &[&site.as_str(), &shift_log_doc_id(shift)],
    )
    .await?;
    rows.first().map(shift_row).transpose()
}
