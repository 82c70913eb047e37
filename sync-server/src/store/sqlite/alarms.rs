//! Panic alarms on SQLite: the control room's view of them, acknowledgements (migration 0003),
//! escalations and the alarm changes live streams announce (migration 0018); and lone-worker
//! check-in timers, with the check-ins found overdue (migration 0019). Every write runs
//! on the writer thread in its own transaction, so a change's id is its commit order.

use patrol_core::{EventId, SiteId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::auth::get_site;
use crate::store::check_ins::{self, CheckInTimerView, TimerEventRow};
use crate::store::rows::{read_device_id, read_event_id, read_site_id};
use crate::store::{
    Acknowledged, AlarmAckRecord, AlarmChange, AlarmChangeKind, ESCALATION_LOOKBACK_MS, PanicAlarm,
    StoreError,
};
use crate::store::{access, webhooks};

fn require_site(conn: &Connection, site: &SiteId) -> Result<(), StoreError> {
    access::require_site(site, get_site(conn, site)?).map(drop)
}

/// A panic alarm's columns, as [`alarm_at`] reads them: from `events e` (through the index of
/// panic events, migration 0006, named: the planner, without statistics, would walk the
/// site's events by primary key) with [`ALARM_JOINS`].
fn alarm_columns() -> String {
    format!(
        "e.event_id, e.device_id, e.guard_id, e.device_time_ms, {}, e.received_at_ms,
         a.acked_by, a.acked_at, x.escalated_at",
        super::feed::corrected_ms()
    )
}

const ALARM_JOINS: &str = "LEFT JOIN alarm_acks a
       ON a.site_id = e.site_id AND a.event_id = e.event_id
     LEFT JOIN alarm_escalations x
       ON x.site_id = e.site_id AND x.event_id = e.event_id";

/// The alarm whose [`alarm_columns`] start at column `at` of `row`.
fn alarm_at(row: &Row<'_>, at: usize) -> Result<PanicAlarm, StoreError> {
    let id: Vec<u8> = row.get(at)?;
    let device: String = row.get(at + 1)?;
    let by: Option<String> = row.get(at + 6)?;
    let acked_at: Option<i64> = row.get(at + 7)?;
    Ok(PanicAlarm {
        event: read_event_id(&id)?,
        device: read_device_id(&device)?,
        guard: row.get(at + 2)?,
        raised_at_ms: row.get(at + 3)?,
        corrected_ms: row.get(at + 4)?,
        received_at_ms: row.get(at + 5)?,
        acknowledged: by.zip(acked_at),
        escalated_at_ms: row.get(at + 8)?,
    })
}

pub(super) fn panic_alarms(
    conn: &mut Connection,
    site: &SiteId,
    open_only: bool,
    limit: u32,
) -> Result<Option<Vec<PanicAlarm>>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {} FROM events e INDEXED BY events_panics {ALARM_JOINS}
         WHERE e.site_id = ?1 AND e.kind = 'panic' AND (?2 = 0 OR a.event_id IS NULL)
         ORDER BY e.seq DESC LIMIT ?3",
        alarm_columns()
    ))?;
    let mut rows = stmt.query(params![site.as_str(), i64::from(open_only), limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(alarm_at(row, 0)?);
    }
    Ok(Some(out))
}

/// Every site's alarm changes with an id above `after`, at most `limit`, in order.
fn changes_after(
    conn: &Connection,
    after: u64,
    limit: u32,
) -> Result<Vec<AlarmChange>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT c.id, c.site_id, c.kind, {}
         FROM alarm_changes c
         JOIN events e INDEXED BY events_panics
           ON e.site_id = c.site_id AND e.event_id = c.event_id AND e.kind = 'panic'
         {ALARM_JOINS}
         WHERE c.id > ?1 ORDER BY c.id LIMIT ?2",
        alarm_columns()
    ))?;
    let mut rows = stmt.query(params![i64::try_from(after).unwrap_or(i64::MAX), limit])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let site: String = row.get(1)?;
        let kind: String = row.get(2)?;
        out.push(AlarmChange {
            id: u64::try_from(id)
                .map_err(|_| StoreError::CorruptData(format!("alarm change id {id}")))?,
            site: read_site_id(&site)?,
            kind: AlarmChangeKind::parse(&kind)?,
            alarm: alarm_at(row, 3)?,
        });
    }
    Ok(out)
}

/// Stores a change and returns it as read back.
fn add_change(
    tx: &Connection,
    site: &SiteId,
    event: EventId,
    kind: AlarmChangeKind,
    at_ms: i64,
) -> Result<AlarmChange, StoreError> {
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO alarm_changes (site_id, event_id, kind, at) VALUES (?1, ?2, ?3, ?4)
             RETURNING id",
        )?
        .query_row(
            params![
                site.as_str(),
                event.0.as_bytes().as_slice(),
                kind.as_str(),
                at_ms
            ],
            |r| r.get(0),
        )?;
    changes_after(tx, u64::try_from(id - 1).unwrap_or(0), 1)?
        .pop()
        .ok_or_else(|| StoreError::CorruptData(format!("alarm change {id} not read back")))
}

pub(super) fn acknowledge_alarm(
    tx: &Connection,
    site: &SiteId,
    event: EventId,
    by: &str,
    at_ms: i64,
) -> Result<Acknowledged, StoreError> {
    require_site(tx, site)?;
    let id: &[u8] = event.0.as_bytes();
    let panic: Option<String> = tx
        .prepare_cached(
            "SELECT device_id FROM events INDEXED BY events_panics
             WHERE site_id = ?1 AND event_id = ?2 AND kind = 'panic'",
        )?
        .query_row(params![site.as_str(), id], |r| r.get(0))
        .optional()?;
    let Some(device) = panic else {
        return Err(StoreError::UnknownAlarm {
            site: site.clone(),
            event,
        });
    };
    let first = tx
        .prepare_cached(
            "INSERT INTO alarm_acks (site_id, event_id, device_id, acked_by, acked_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (site_id, event_id) DO NOTHING",
        )?
        .execute(params![site.as_str(), id, device, by, at_ms])?
        == 1;
    let change = if first {
        Some(add_change(
            tx,
            site,
            event,
            AlarmChangeKind::Acknowledged,
            at_ms,
        )?)
    } else {
        None
    };
    let (device, by, at_ms): (String, String, i64) = tx
        .prepare_cached(
            "SELECT device_id, acked_by, acked_at FROM alarm_acks
             WHERE site_id = ?1 AND event_id = ?2",
        )?
        .query_row(params![site.as_str(), id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(Acknowledged {
        ack: AlarmAckRecord {
            site: site.clone(),
            event,
            device: read_device_id(&device)?,
            by,
            at_ms,
        },
        change,
    })
}

pub(super) fn escalate_alarms(
    tx: &Connection,
    site: &SiteId,
    after_ms: i64,
    now_ms: i64,
) -> Result<Vec<AlarmChange>, StoreError> {
    require_site(tx, site)?;
    let due: Vec<Vec<u8>> = {
        let mut stmt = tx.prepare_cached(
            "SELECT e.event_id FROM events e INDEXED BY events_panics
             WHERE e.site_id = ?1 AND e.kind = 'panic'
               AND e.received_at_ms <= ?2 AND e.received_at_ms > ?3
               AND NOT EXISTS (SELECT 1 FROM alarm_acks a
                               WHERE a.site_id = e.site_id AND a.event_id = e.event_id)
               AND NOT EXISTS (SELECT 1 FROM alarm_escalations x
                               WHERE x.site_id = e.site_id AND x.event_id = e.event_id)
             ORDER BY e.received_at_ms, e.seq",
        )?;
        let rows = stmt.query_map(
            params![
                site.as_str(),
                now_ms.saturating_sub(after_ms),
                now_ms.saturating_sub(ESCALATION_LOOKBACK_MS)
            ],
            |r| r.get(0),
        )?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(due.len());
    for id in due {
        tx.prepare_cached(
            "INSERT INTO alarm_escalations (site_id, event_id, escalated_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![site.as_str(), id, now_ms])?;
        let event = read_event_id(&id)?;
        let change = add_change(tx, site, event, AlarmChangeKind::Escalated, now_ms)?;
        // The webhooks of the escalation commit with it (or neither does).
        super::webhooks::enqueue(
            tx,
            &webhooks::panic_unacknowledged(site, &change.alarm, now_ms),
        )?;
        out.push(change);
    }
    Ok(out)
}

pub(super) fn alarm_changes(
    conn: &mut Connection,
    after: Option<u64>,
    limit: u32,
) -> Result<(Vec<AlarmChange>, u64), StoreError> {
    let tx = conn.transaction()?;
    let latest: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM alarm_changes", [], |r| {
        r.get(0)
    })?;
    let latest = u64::try_from(latest).unwrap_or(0);
    let changes = match after {
        Some(after) => changes_after(&tx, after, limit)?,
        None => Vec::new(),
    };
    Ok((changes, latest))
}

/// The timer events of the site's open shifts, each shift's in its order, through the index
/// of timer events (migrations 0019, 0024: its condition written exactly as there, or the
/// index cannot be used) and that of open shifts (0012), named: the planner, without
/// statistics, might walk the site's events instead.
fn timer_rows(conn: &Connection, site: &SiteId) -> Result<Vec<TimerEventRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT e.shift_id, e.device_id, e.guard_id, {}, e.record, e.json, e.kind
         FROM docs d INDEXED BY docs_open
         JOIN events e INDEXED BY events_check_ins
           ON e.site_id = d.site_id AND e.shift_id = d.doc_id
          AND (e.kind = 'checkin_timer_started' OR e.kind = 'checked_in'
               OR e.kind = 'checkin_timer_stopped')
         WHERE d.site_id = ?1 AND d.ended_at IS NULL
         ORDER BY e.shift_id, e.device_seq",
        super::feed::corrected_ms()
    ))?;
    let mut rows = stmt.query(params![site.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let record: Option<Vec<u8>> = row.get(4)?;
        let body = match record {
            Some(bytes) => {
                patrol_core::EventRecord::decode(&bytes)
                    .map_err(|e| StoreError::CorruptData(format!("timer event record: {e}")))?
                    .body
            }
            None => {
                let json: String = row.get(5)?;
                let kind: String = row.get(6)?;
                check_ins::body_from_json(&kind, &json)?
            }
        };
        out.push(TimerEventRow {
            shift: row.get(0)?,
            device: row.get(1)?,
            guard: row.get(2)?,
            corrected_ms: row.get(3)?,
            body,
        });
    }
    Ok(out)
}

pub(super) fn check_in_timers(
    conn: &mut Connection,
    site: &SiteId,
    now_ms: i64,
) -> Result<Option<Vec<CheckInTimerView>>, StoreError> {
    let tx = conn.transaction()?;
    if get_site(&tx, site)?.is_none() {
        return Ok(None);
    }
    check_ins::timers(&timer_rows(&tx, site)?, now_ms).map(Some)
}

pub(super) fn record_overdue_check_ins(
    tx: &Connection,
    site: &SiteId,
    now_ms: i64,
) -> Result<Vec<CheckInTimerView>, StoreError> {
    require_site(tx, site)?;
    let mut out = Vec::new();
    for timer in check_ins::timers(&timer_rows(tx, site)?, now_ms)? {
        if !timer.overdue {
            continue;
        }
        let recorded = tx
            .prepare_cached(
                "INSERT INTO check_ins_overdue
                   (site_id, shift_id, due_ms, device_id, guard_id, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                site.as_str(),
                timer.shift.to_string(),
                timer.due_ms,
                timer.device.to_string(),
                timer.guard,
                now_ms
            ])?;
        if recorded == 1 {
            // The webhooks of the overdue check-in commit with its record (or neither does).
            super::webhooks::enqueue(tx, &webhooks::check_in_overdue(site, &timer, now_ms))?;
            out.push(timer);
        }
    }
    Ok(out)
}
