//! Webhooks on SQLite (migration 0020; the rules are in [`crate::store::webhooks`]). Every
//! write runs on the writer thread, so a claim and the recording of its attempt never race
//! another sender of this process (SQLite serves one).

use patrol_core::SiteId;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::auth::get_site;
use crate::store::StoreError;
use crate::store::access;
use crate::store::rows::read_site_id;
use crate::store::webhooks::{
    Attempt, Delivery, DeliveryState, DueDelivery, MAX_ENDPOINTS_PER_SITE, NewWebhook, NextStep,
    Outgoing, Webhook, events_column, parse_events, subscription_pattern,
};

fn require_site(conn: &Connection, site: &SiteId) -> Result<(), StoreError> {
    access::require_site(site, get_site(conn, site)?).map(drop)
}

fn to_u32(n: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::CorruptData(format!("{what} {n}")))
}

/// Queues `outgoing` for the site's endpoints subscribed to its type, in the caller's
/// transaction (the cause's); an endpoint that has the key already gets nothing new. One
/// indexed lookup of the site's endpoints.
pub(super) fn enqueue(tx: &Connection, outgoing: &Outgoing) -> Result<u64, StoreError> {
    let queued = tx
        .prepare_cached(
            "INSERT INTO webhook_deliveries (endpoint_id, site_id, event_type, idempotency_key,
                 body, created_at, state, attempts, next_attempt_at)
             SELECT id, site_id, ?2, ?3, ?4, ?5, 'pending', 0, ?5 FROM webhook_endpoints
             WHERE site_id = ?1 AND instr(events, ?6) > 0
             ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING",
        )?
        .execute(params![
            outgoing.site.as_str(),
            outgoing.event_type,
            outgoing.key,
            outgoing.body,
            outgoing.at_ms,
            subscription_pattern(outgoing.event_type),
        ])?;
    Ok(queued as u64)
}

pub(super) fn has_webhook_for(
    conn: &Connection,
    site: &SiteId,
    event_type: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM webhook_endpoints WHERE site_id = ?1 AND instr(events, ?2) > 0 LIMIT 1",
        )?
        .query_row(
            params![site.as_str(), subscription_pattern(event_type)],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

const WEBHOOK_COLUMNS: &str = "id, site_id, url, events, created_at, created_by";

fn webhook_row(row: &Row<'_>) -> Result<Webhook, StoreError> {
    let site: String = row.get(1)?;
    let events: String = row.get(3)?;
    Ok(Webhook {
        id: row.get(0)?,
        site: read_site_id(&site)?,
        url: row.get(2)?,
        events: parse_events(&events),
        created_at_ms: row.get(4)?,
        created_by: row.get(5)?,
    })
}

pub(super) fn create_webhook(tx: &Connection, new: &NewWebhook) -> Result<Webhook, StoreError> {
    require_site(tx, &new.site)?;
    let count: i64 = tx.query_row(
        "SELECT COUNT(*) FROM webhook_endpoints WHERE site_id = ?1",
        [new.site.as_str()],
        |r| r.get(0),
    )?;
    if count >= MAX_ENDPOINTS_PER_SITE as i64 {
        return Err(StoreError::TooManyWebhooks(new.site.clone()));
    }
    let webhook = tx
        .prepare_cached(&format!(
            "INSERT INTO webhook_endpoints (site_id, url, secret, events, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {WEBHOOK_COLUMNS}"
        ))?
        .query_row(
            params![
                new.site.as_str(),
                new.url,
                new.secret,
                events_column(&new.events),
                new.created_at_ms,
                new.created_by
            ],
            |r| Ok(webhook_row(r)),
        )??;
    Ok(webhook)
}

pub(super) fn webhooks(conn: &mut Connection, site: &SiteId) -> Result<Vec<Webhook>, StoreError> {
    let tx = conn.transaction()?;
    require_site(&tx, site)?;
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE site_id = ?1 ORDER BY id"
    ))?;
    let mut rows = stmt.query([site.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(webhook_row(row)?);
    }
    Ok(out)
}

pub(super) fn delete_webhook(tx: &Connection, site: &SiteId, id: i64) -> Result<(), StoreError> {
    require_site(tx, site)?;
    let removed = tx.execute(
        "DELETE FROM webhook_endpoints WHERE site_id = ?1 AND id = ?2",
        params![site.as_str(), id],
    )?;
    if removed == 0 {
        return Err(StoreError::UnknownWebhook {
            site: site.clone(),
            id,
        });
    }
    tx.execute(
        "DELETE FROM webhook_attempts WHERE delivery_id IN
             (SELECT id FROM webhook_deliveries WHERE endpoint_id = ?1)",
        [id],
    )?;
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1",
        [id],
    )?;
    Ok(())
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, site_id, event_type, idempotency_key, body,
    created_at, state, attempts, next_attempt_at, delivered_at";

fn delivery_row(row: &Row<'_>) -> Result<Delivery, StoreError> {
    let site: String = row.get(2)?;
    let state: String = row.get(7)?;
    let attempts: i64 = row.get(8)?;
    Ok(Delivery {
        id: row.get(0)?,
        endpoint: row.get(1)?,
        site: read_site_id(&site)?,
        event_type: row.get(3)?,
        key: row.get(4)?,
        body: row.get(5)?,
        created_at_ms: row.get(6)?,
        state: DeliveryState::parse(&state)?,
        attempts: to_u32(attempts, "webhook attempts")?,
        next_attempt_at_ms: row.get(9)?,
        delivered_at_ms: row.get(10)?,
        attempt_log: Vec::new(),
    })
}

fn with_attempts(conn: &Connection, delivery: &mut Delivery) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, status, error, duration_ms FROM webhook_attempts
         WHERE delivery_id = ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([delivery.id])?;
    while let Some(row) = rows.next()? {
        let status: Option<i64> = row.get(1)?;
        delivery.attempt_log.push(Attempt {
            at_ms: row.get(0)?,
            status: status.and_then(|s| u16::try_from(s).ok()),
            error: row.get(2)?,
            duration_ms: row.get(3)?,
        });
    }
    Ok(())
}

pub(super) fn deliveries(
    conn: &mut Connection,
    site: &SiteId,
    state: Option<DeliveryState>,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    let tx = conn.transaction()?;
    require_site(&tx, site)?;
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE site_id = ?1 AND (?2 IS NULL OR state = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let mut rows = stmt.query(params![
            site.as_str(),
            state.map(DeliveryState::as_str),
            limit
        ])?;
        while let Some(row) = rows.next()? {
            out.push(delivery_row(row)?);
        }
    }
    for delivery in &mut out {
        with_attempts(&tx, delivery)?;
    }
    Ok(out)
}

fn delivery(conn: &Connection, site: &SiteId, id: i64) -> Result<Delivery, StoreError> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE site_id = ?1 AND id = ?2"
        ))?
        .query_row(params![site.as_str(), id], |r| Ok(delivery_row(r)))
        .optional()?
        .transpose()?;
    let Some(mut delivery) = found else {
        return Err(StoreError::UnknownDelivery {
            site: site.clone(),
            id,
        });
    };
    with_attempts(conn, &mut delivery)?;
    Ok(delivery)
}

pub(super) fn retry_delivery(
    tx: &Connection,
    site: &SiteId,
    id: i64,
    now_ms: i64,
) -> Result<Delivery, StoreError> {
    require_site(tx, site)?;
    let before = delivery(tx, site, id)?;
    if before.state != DeliveryState::Parked {
        return Err(StoreError::DeliveryNotParked {
            id,
            state: before.state.as_str(),
        });
    }
    tx.execute(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?2
         WHERE id = ?1",
        params![id, now_ms],
    )?;
    delivery(tx, site, id)
}

pub(super) fn claim(
    tx: &Connection,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> Result<Vec<DueDelivery>, StoreError> {
    let due: Vec<DueDelivery> = {
        let mut stmt = tx.prepare_cached(
            "SELECT d.id, e.url, e.secret, d.event_type, d.idempotency_key, d.body, d.created_at,
                    d.attempts
             FROM webhook_deliveries d INDEXED BY webhook_deliveries_due
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.state = 'pending' AND d.next_attempt_at <= ?1
             ORDER BY d.next_attempt_at, d.id LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![now_ms, limit])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let attempts: i64 = row.get(7)?;
            out.push(DueDelivery {
                id: row.get(0)?,
                url: row.get(1)?,
                secret: row.get(2)?,
                event_type: row.get(3)?,
                key: row.get(4)?,
                body: row.get(5)?,
                created_at_ms: row.get(6)?,
                attempts: to_u32(attempts, "webhook attempts")?,
            });
        }
        out
    };
    let mut lease =
        tx.prepare_cached("UPDATE webhook_deliveries SET next_attempt_at = ?2 WHERE id = ?1")?;
    for d in &due {
        lease.execute(params![d.id, lease_until_ms])?;
    }
    Ok(due)
}

pub(super) fn record_attempt(
    tx: &Connection,
    id: i64,
    attempts_before: u32,
    attempt: &Attempt,
    next: NextStep,
) -> Result<bool, StoreError> {
    let (state, next_at, delivered_at) = match next {
        NextStep::Delivered => (DeliveryState::Delivered, None, Some(attempt.at_ms)),
        NextStep::Retry { at_ms } => (DeliveryState::Pending, Some(at_ms), None),
        NextStep::Parked => (DeliveryState::Parked, None, None),
    };
    let updated = tx
        .prepare_cached(
            "UPDATE webhook_deliveries
             SET state = ?3, attempts = attempts + 1, next_attempt_at = ?4, delivered_at = ?5
             WHERE id = ?1 AND state = 'pending' AND attempts = ?2",
        )?
        .execute(params![
            id,
            i64::from(attempts_before),
            state.as_str(),
            next_at,
            delivered_at
        ])?;
    if updated == 0 {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO webhook_attempts (delivery_id, at, status, error, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        attempt.at_ms,
        attempt.status.map(i64::from),
        attempt.error,
        attempt.duration_ms
    ])?;
    Ok(true)
}

pub(super) fn prune(tx: &Connection, before_ms: i64) -> Result<u64, StoreError> {
    tx.prepare_cached(
        "DELETE FROM webhook_attempts WHERE delivery_id IN
             (SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_delivered
              WHERE state = 'delivered' AND delivered_at < ?1)",
    )?
    .execute([before_ms])?;
    let dropped = tx
        .prepare_cached(
            "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < ?1",
        )?
        .execute([before_ms])?;
    Ok(dropped as u64)
}
