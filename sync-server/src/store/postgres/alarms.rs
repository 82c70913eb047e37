//! Panic alarms on PostgreSQL: the control room's view of them, acknowledgements (migration
//! 0002), escalations and the alarm changes live streams announce (migration 0015). A change is
//! written under one advisory lock ([`CHANGES_LOCK`]), so the ids of changes commit in their
//! order and an instance reading after its cursor never passes one still to commit; the
//! escalation check holds it throughout, so instances checking at once escalate an alarm once.
//! Also lone-worker check-in timers, with the check-ins found overdue (migration 0016).

use deadpool_postgres::GenericClient;
use patrol_core::{EventId, SiteId};
use tokio_postgres::Row;

use super::auth::get_site;
use super::{execute, query, query_one, query_opt, to_u64};
use crate::store::check_ins::{self, CheckInTimerView, TimerEventRow};
use crate::store::rows::{read_device_id, read_event_id, read_site_id};
use crate::store::{
    Acknowledged, AlarmAckRecord, AlarmChange, AlarmChangeKind, ESCALATION_LOOKBACK_MS, PanicAlarm,
    StoreError,
};
use crate::store::{access, webhooks};

/// The advisory lock key alarm changes are written under (any constant: "alarms" in ASCII).
const CHANGES_LOCK: i64 = 0x616c_6172_6d73;

async fn require_site<C: GenericClient>(c: &C, site: &SiteId) -> Result<(), StoreError> {
    access::require_site(site, get_site(c, site).await?).map(drop)
}

/// A panic alarm's columns, as [`alarm_at`] reads them: from `events e` with [`ALARM_JOINS`].
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
fn alarm_at(row: &Row, at: usize) -> Result<PanicAlarm, StoreError> {
    let id: &[u8] = row.try_get(at)?;
    let device: String = row.try_get(at + 1)?;
    let by: Option<String> = row.try_get(at + 6)?;
    let acked_at: Option<i64> = row.try_get(at + 7)?;
    Ok(PanicAlarm {
        event: read_event_id(id)?,
        device: read_device_id(&device)?,
        guard: row.try_get(at + 2)?,
        raised_at_ms: row.try_get(at + 3)?,
        corrected_ms: row.try_get(at + 4)?,
        received_at_ms: row.try_get(at + 5)?,
        acknowledged: by.zip(acked_at),
        escalated_at_ms: row.try_get(at + 8)?,
    })
}

pub(super) async fn panic_alarms<C: GenericClient>(
    c: &C,
    site: &SiteId,
    open_only: bool,
    limit: u32,
) -> Result<Option<Vec<PanicAlarm>>, StoreError> {
    if get_site(c, site).await?.is_none() {
        return Ok(None);
    }
    // Through the index of panic events (migration 0014).
    let rows = query(
        c,
        &format!(
            "SELECT {} FROM events e {ALARM_JOINS}
             WHERE e.site_id = $1 AND e.kind = 'panic' AND ($2 = 0 OR a.event_id IS NULL)
             ORDER BY e.seq DESC LIMIT $3",
            alarm_columns()
        ),
        &[&site.as_str(), &i32::from(open_only), &i64::from(limit)],
    )
    .await?;
    rows.iter()
        .map(|row| alarm_at(row, 0))
        .collect::<Result<_, _>>()
        .map(Some)
}

/// Every site's alarm changes with an id above `after`, at most `limit`, in order.
async fn changes_after<C: GenericClient>(
    c: &C,
    after: u64,
    limit: u32,
) -> Result<Vec<AlarmChange>, StoreError> {
    let rows = query(
        c,
        &format!(
            "SELECT c.id, c.site_id, c.kind, {}
             FROM alarm_changes c
             JOIN events e
               ON e.site_id = c.site_id AND e.event_id = c.event_id AND e.kind = 'panic'
             {ALARM_JOINS}
             WHERE c.id > $1 ORDER BY c.id LIMIT $2",
            alarm_columns()
        ),
        &[&i64::try_from(after).unwrap_or(i64::MAX), &i64::from(limit)],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let site: String = row.try_get(1)?;
        let kind: String = row.try_get(2)?;
        out.push(AlarmChange {
            id: to_u64(row.try_get(0)?, "alarm change id")?,
            site: read_site_id(&site)?,
            kind: AlarmChangeKind::parse(&kind)?,
            alarm: alarm_at(row, 3)?,
        });
    }
    Ok(out)
}

/// Stores a change (the caller holds [`CHANGES_LOCK`]) and returns it as read back.
async fn add_change<C: GenericClient>(
    c: &C,
    site: &SiteId,
    event: EventId,
    kind: AlarmChangeKind,
    at_ms: i64,
) -> Result<AlarmChange, StoreError> {
    let row = query_one(
        c,
        "INSERT INTO alarm_changes (site_id, event_id, kind, at) VALUES ($1, $2, $3, $4)
         RETURNING id",
        &[
            &site.as_str(),
            &event.0.as_bytes().as_slice(),
            &kind.as_str(),
            &at_ms,
        ],
    )
    .await?;
    let id = to_u64(row.try_get(0)?, "alarm change id")?;
    changes_after(c, id.saturating_sub(1), 1)
        .await?
        .pop()
        .ok_or_else(|| StoreError::CorruptData(format!("alarm change {id} not read back")))
}

async fn lock_changes<C: GenericClient>(c: &C) -> Result<(), StoreError> {
    query_one(c, "SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK]).await?;
    Ok(())
}

/// Records the first acknowledgement of a panic alarm, and its change; in the caller's
/// transaction.
pub(super) async fn acknowledge_alarm<C: GenericClient>(
    c: &C,
    site: &SiteId,
    event: EventId,
    by: &str,
    at_ms: i64,
) -> Result<Acknowledged, StoreError> {
    require_site(c, site).await?;
    let id: &[u8] = event.0.as_bytes();
    let panic = query_opt(
        c,
        "SELECT device_id FROM events WHERE site_id = $1 AND event_id = $2 AND kind = 'panic'",
        &[&site.as_str(), &id],
    )
    .await?;
    let Some(panic) = panic else {
        return Err(StoreError::UnknownAlarm {
            site: site.clone(),
            event,
        });
    };
    let device: String = panic.try_get(0)?;
    let first = execute(
        c,
        "INSERT INTO alarm_acks (site_id, event_id, device_id, acked_by, acked_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site_id, event_id) DO NOTHING",
        &[&site.as_str(), &id, &device, &by, &at_ms],
    )
    .await?
        == 1;
    let change = if first {
        lock_changes(c).await?;
        Some(add_change(c, site, event, AlarmChangeKind::Acknowledged, at_ms).await?)
    } else {
        None
    };
    let row = query_one(
        c,
        "SELECT device_id, acked_by, acked_at FROM alarm_acks
         WHERE site_id = $1 AND event_id = $2",
        &[&site.as_str(), &id],
    )
    .await?;
    let device: String = row.try_get(0)?;
    Ok(Acknowledged {
        ack: AlarmAckRecord {
            site: site.clone(),
            event,
            device: read_device_id(&device)?,
            by: row.try_get(1)?,
            at_ms: row.try_get(2)?,
        },
        change,
    })
}

/// In the caller's transaction.
pub(super) async fn escalate_alarms<C: GenericClient>(
    c: &C,
    site: &SiteId,
    after_ms: i64,
    now_ms: i64,
) -> Result<Vec<AlarmChange>, StoreError> {
    require_site(c, site).await?;
    lock_changes(c).await?;
    let due = query(
        c,
        "SELECT e.event_id FROM events e
         WHERE e.site_id = $1 AND e.kind = 'panic'
           AND e.received_at_ms <= $2 AND e.received_at_ms > $3
           AND NOT EXISTS (SELECT 1 FROM alarm_acks a
                           WHERE a.site_id = e.site_id AND a.event_id = e.event_id)
           AND NOT EXISTS (SELECT 1 FROM alarm_escalations x
                           WHERE x.site_id = e.site_id AND x.event_id = e.event_id)
         ORDER BY e.received_at_ms, e.seq",
        &[
            &site.as_str(),
            &now_ms.saturating_sub(after_ms),
            &now_ms.saturating_sub(ESCALATION_LOOKBACK_MS),
        ],
    )
    .await?;
    let mut out = Vec::with_capacity(due.len());
    for row in &due {
        let id: &[u8] = row.try_get(0)?;
        let escalated = execute(
            c,
            "INSERT INTO alarm_escalations (site_id, event_id, escalated_at) VALUES ($1, $2, $3)
             ON CONFLICT (site_id, event_id) DO NOTHING",
            &[&site.as_str(), &id, &now_ms],
        )
        .await?;
        if escalated == 1 {
            let event = read_event_id(id)?;
            let change = add_change(c, site, event, AlarmChangeKind::Escalated, now_ms).await?;
            // The webhooks of the escalation commit with it (or neither does).
            let outgoing = webhooks::panic_unacknowledged(site, &change.alarm, now_ms);
            super::webhooks::enqueue(c, &outgoing).await?;
            out.push(change);
        }
    }
    Ok(out)
}

pub(super) async fn alarm_changes<C: GenericClient>(
    c: &C,
    after: Option<u64>,
    limit: u32,
) -> Result<(Vec<AlarmChange>, u64), StoreError> {
    let row = query_one(c, "SELECT COALESCE(MAX(id), 0) FROM alarm_changes", &[]).await?;
    let latest = to_u64(row.try_get(0)?, "alarm change id")?;
    let changes = match after {
        Some(after) => changes_after(c, after, limit).await?,
        None => Vec::new(),
    };
    Ok((changes, latest))
}

/// The timer events of the site's open shifts, each shift's in its order (the index of timer
/// events, migration 0016).
async fn timer_rows<C: GenericClient>(
    c: &C,
    site: &SiteId,
) -> Result<Vec<TimerEventRow>, StoreError> {
    let rows = query(
        c,
        &format!(
            "SELECT e.shift_id, e.device_id, e.guard_id, {}, e.kind, e.json
             FROM docs d
             JOIN events e
               ON e.site_id = d.site_id AND e.shift_id = d.doc_id
              AND e.kind IN ('checkin_timer_started', 'checked_in', 'checkin_timer_stopped')
             WHERE d.site_id = $1 AND d.ended_at IS NULL
             ORDER BY e.shift_id, e.device_seq",
            super::feed::corrected_ms()
        ),
        &[&site.as_str()],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let kind: &str = row.try_get(4)?;
        let json: &str = row.try_get(5)?;
        out.push(TimerEventRow {
            shift: row.try_get(0)?,
            device: row.try_get(1)?,
            guard: row.try_get(2)?,
            corrected_ms: row.try_get(3)?,
            body: check_ins::body_from_json(kind, json)?,
        });
    }
    Ok(out)
}

pub(super) async fn check_in_timers<C: GenericClient>(
    c: &C,
    site: &SiteId,
    now_ms: i64,
) -> Result<Option<Vec<CheckInTimerView>>, StoreError> {
    if get_site(c, site).await?.is_none() {
        return Ok(None);
    }
    check_ins::timers(&timer_rows(c, site).await?, now_ms).map(Some)
}

/// In the caller's transaction: the primary key records an overdue check-in once, and its
/// webhooks commit with it.
pub(super) async fn record_overdue_check_ins<C: GenericClient>(
    c: &C,
    site: &SiteId,
    now_ms: i64,
) -> Result<Vec<CheckInTimerView>, StoreError> {
    require_site(c, site).await?;
    let mut out = Vec::new();
    for timer in check_ins::timers(&timer_rows(c, site).await?, now_ms)? {
        if !timer.overdue {
            continue;
        }
        let recorded = execute(
            c,
            "INSERT INTO check_ins_overdue
               (site_id, shift_id, due_ms, device_id, guard_id, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &site.as_str(),
                &timer.shift.to_string(),
                &timer.due_ms,
                &timer.device.to_string(),
                &timer.guard,
                &now_ms,
            ],
        )
        .await?;
        if recorded == 1 {
            super::webhooks::enqueue(c, &webhooks::check_in_overdue(site, &timer, now_ms)).await?;
            out.push(timer);
        }
    }
    Ok(out)
}
