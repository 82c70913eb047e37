//! Webhooks on PostgreSQL (migration 0017; the rules are in [`crate::store::webhooks`]). Several
//! instances send from one outbox: a claim takes due rows `FOR UPDATE SKIP LOCKED` and moves
//! them to the end of a lease, so two senders never hold one delivery at once, and the recording
//! of an attempt checks that the delivery is still where its claim left it.

use deadpool_postgres::GenericClient;
use patrol_core::SiteId;
use tokio_postgres::Row;

use super::auth::get_site;
use super::{execute, query, query_opt};
use crate::store::StoreError;
use crate::store::access;
use crate::store::rows::read_site_id;
use crate::store::webhooks::{
    Attempt, Delivery, DeliveryState, DueDelivery, MAX_ENDPOINTS_PER_SITE, NewWebhook, NextStep,
    Outgoing, Webhook, events_column, parse_events, subscription_pattern,
};

async fn require_site<C: GenericClient>(c: &C, site: &SiteId) -> Result<(), StoreError> {
    access::require_site(site, get_site(c, site).await?).map(drop)
}

fn to_u32(n: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| StoreError::CorruptData(format!("{what} {n}")))
}

/// Queues `outgoing` for the site's endpoints subscribed to its type, in the caller's
/// transaction (the cause's); an endpoint that has the key already gets nothing new.
pub(super) async fn enqueue<C: GenericClient>(
    c: &C,
    outgoing: &Outgoing,
) -> Result<u64, StoreError> {
    execute(
        c,
        "INSERT INTO webhook_deliveries (endpoint_id, site_id, event_type, idempotency_key, body,
             created_at, state, attempts, next_attempt_at)
         SELECT id, site_id, $2::text, $3::text, $4::text, $5::bigint, 'pending', 0, $5::bigint
         FROM webhook_endpoints
         WHERE site_id = $1 AND strpos(events, $6) > 0
         ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING",
        &[
            &outgoing.site.as_str(),
            &outgoing.event_type,
            &outgoing.key,
            &outgoing.body,
            &outgoing.at_ms,
            &subscription_pattern(outgoing.event_type),
        ],
    )
    .await
}

pub(super) async fn has_webhook_for<C: GenericClient>(
    c: &C,
    site: &SiteId,
    event_type: &str,
) -> Result<bool, StoreError> {
    Ok(query_opt(
        c,
        "SELECT 1 FROM webhook_endpoints WHERE site_id = $1 AND strpos(events, $2) > 0 LIMIT 1",
        &[&site.as_str(), &subscription_pattern(event_type)],
    )
    .await?
    .is_some())
}

const WEBHOOK_COLUMNS: &str = "id, site_id, url, events, created_at, created_by";

fn webhook_row(row: &Row) -> Result<Webhook, StoreError> {
    let site: &str = row.try_get(1)?;
    let events: &str = row.try_get(3)?;
    Ok(Webhook {
        id: row.try_get(0)?,
        site: read_site_id(site)?,
        url: row.try_get(2)?,
        events: parse_events(events),
        created_at_ms: row.try_get(4)?,
        created_by: row.try_get(5)?,
    })
}

pub(super) async fn create_webhook<C: GenericClient>(
    c: &C,
    new: &NewWebhook,
) -> Result<Webhook, StoreError> {
    require_site(c, &new.site).await?;
    // The site's row, locked: two registrations at once count each other.
    query(
        c,
        "SELECT 1 FROM sites WHERE site_id = $1 FOR UPDATE",
        &[&new.site.as_str()],
    )
    .await?;
    let count = query(
        c,
        "SELECT id FROM webhook_endpoints WHERE site_id = $1",
        &[&new.site.as_str()],
    )
    .await?
    .len();
    if count >= MAX_ENDPOINTS_PER_SITE {
        return Err(StoreError::TooManyWebhooks(new.site.clone()));
    }
    let rows = query(
        c,
        &format!(
            "INSERT INTO webhook_endpoints (site_id, url, secret, events, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {WEBHOOK_COLUMNS}"
        ),
        &[
            &new.site.as_str(),
            &new.url,
            &new.secret,
            &events_column(&new.events),
            &new.created_at_ms,
            &new.created_by,
        ],
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::CorruptData("webhook not read back".into()))?;
    webhook_row(row)
}

pub(super) async fn webhooks<C: GenericClient>(
    c: &C,
    site: &SiteId,
) -> Result<Vec<Webhook>, StoreError> {
    require_site(c, site).await?;
    query(
        c,
        &format!("SELECT {WEBHOOK_COLUMNS} FROM webhook_endpoints WHERE site_id = $1 ORDER BY id"),
        &[&site.as_str()],
    )
    .await?
    .iter()
    .map(webhook_row)
    .collect()
}

/// Its deliveries and their attempts go with it (`ON DELETE CASCADE`).
pub(super) async fn delete_webhook<C: GenericClient>(
    c: &C,
    site: &SiteId,
    id: i64,
) -> Result<(), StoreError> {
    require_site(c, site).await?;
    let removed = execute(
        c,
        "DELETE FROM webhook_endpoints WHERE site_id = $1 AND id = $2",
        &[&site.as_str(), &id],
    )
    .await?;
    if removed == 0 {
        return Err(StoreError::UnknownWebhook {
            site: site.clone(),
            id,
        });
    }
    Ok(())
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, site_id, event_type, idempotency_key, body,
    created_at, state, attempts, next_attempt_at, delivered_at";

fn delivery_row(row: &Row) -> Result<Delivery, StoreError> {
    let site: &str = row.try_get(2)?;
    let state: &str = row.try_get(7)?;
    Ok(Delivery {
        id: row.try_get(0)?,
        endpoint: row.try_get(1)?,
        site: read_site_id(site)?,
        event_type: row.try_get(3)?,
        key: row.try_get(4)?,
        body: row.try_get(5)?,
        created_at_ms: row.try_get(6)?,
        state: DeliveryState::parse(state)?,
        attempts: to_u32(row.try_get(8)?, "webhook attempts")?,
        next_attempt_at_ms: row.try_get(9)?,
        delivered_at_ms: row.try_get(10)?,
        attempt_log: Vec::new(),
    })
}

async fn with_attempts<C: GenericClient>(
    c: &C,
    deliveries: &mut [Delivery],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let rows = query(
        c,
        "SELECT delivery_id, at, status, error, duration_ms FROM webhook_attempts
         WHERE delivery_id = ANY($1) ORDER BY id",
        &[&ids],
    )
    .await?;
    for row in rows {
        let id: i64 = row.try_get(0)?;
        let status: Option<i32> = row.try_get(2)?;
        let attempt = Attempt {
            at_ms: row.try_get(1)?,
            status: status.and_then(|s| u16::try_from(s).ok()),
            error: row.try_get(3)?,
            duration_ms: row.try_get(4)?,
        };
        if let Some(d) = deliveries.iter_mut().find(|d| d.id == id) {
            d.attempt_log.push(attempt);
        }
    }
    Ok(())
}

pub(super) async fn deliveries<C: GenericClient>(
    c: &C,
    site: &SiteId,
    state: Option<DeliveryState>,
    limit: u32,
) -> Result<Vec<Delivery>, StoreError> {
    require_site(c, site).await?;
    let mut out = query(
        c,
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE site_id = $1 AND ($2::text IS NULL OR state = $2::text) ORDER BY id DESC LIMIT $3"
        ),
        &[&site.as_str(), &state.map(DeliveryState::as_str), &i64::from(limit)],
    )
    .await?
    .iter()
    .map(delivery_row)
    .collect::<Result<Vec<_>, _>>()?;
    with_attempts(c, &mut out).await?;
    Ok(out)
}

async fn delivery<C: GenericClient>(
    c: &C,
    site: &SiteId,
    id: i64,
    lock: bool,
) -> Result<Delivery, StoreError> {
    let row = query_opt(
        c,
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE site_id = $1 AND id = $2 {}",
            if lock { "FOR UPDATE" } else { "" }
        ),
        &[&site.as_str(), &id],
    )
    .await?;
    let Some(row) = row else {
        return Err(StoreError::UnknownDelivery {
            site: site.clone(),
            id,
        });
    };
    let mut one = [delivery_row(&row)?];
    with_attempts(c, &mut one).await?;
    let [delivery] = one;
    Ok(delivery)
}

pub(super) async fn retry_delivery<C: GenericClient>(
    c: &C,
    site: &SiteId,
    id: i64,
    now_ms: i64,
) -> Result<Delivery, StoreError> {
    require_site(c, site).await?;
    let before = delivery(c, site, id, true).await?;
    if before.state != DeliveryState::Parked {
        return Err(StoreError::DeliveryNotParked {
            id,
            state: before.state.as_str(),
        });
    }
    execute(
        c,
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2
         WHERE id = $1",
        &[&id, &now_ms],
    )
    .await?;
    delivery(c, site, id, false).await
}

pub(super) async fn claim<C: GenericClient>(
    c: &C,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> Result<Vec<DueDelivery>, StoreError> {
    let rows = query(
        c,
        "WITH due AS (
             SELECT id FROM webhook_deliveries
             WHERE state = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $3
             FOR UPDATE SKIP LOCKED)
         UPDATE webhook_deliveries d SET next_attempt_at = $2
         FROM due, webhook_endpoints e
         WHERE d.id = due.id AND e.id = d.endpoint_id
         RETURNING d.id, e.url, e.secret, d.event_type, d.idempotency_key, d.body, d.created_at,
                   d.attempts",
        &[&now_ms, &lease_until_ms, &i64::from(limit)],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DueDelivery {
                id: row.try_get(0)?,
                url: row.try_get(1)?,
                secret: row.try_get(2)?,
                event_type: row.try_get(3)?,
                key: row.try_get(4)?,
                body: row.try_get(5)?,
                created_at_ms: row.try_get(6)?,
                attempts: to_u32(row.try_get(7)?, "webhook attempts")?,
            })
        })
        .collect()
}

pub(super) async fn record_attempt<C: GenericClient>(
    c: &C,
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
    let before = i32::try_from(attempts_before).unwrap_or(i32::MAX);
    let updated = execute(
        c,
        "UPDATE webhook_deliveries
         SET state = $3, attempts = attempts + 1, next_attempt_at = $4, delivered_at = $5
         WHERE id = $1 AND state = 'pending' AND attempts = $2",
        &[&id, &before, &state.as_str(), &next_at, &delivered_at],
    )
    .await?;
    if updated == 0 {
        return Ok(false);
    }
    execute(
        c,
        "INSERT INTO webhook_attempts (delivery_id, at, status, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &id,
            &attempt.at_ms,
            &attempt.status.map(i32::from),
            &attempt.error,
            &attempt.duration_ms,
        ],
    )
    .await?;
    Ok(true)
}

/// Their attempts go with them (`ON DELETE CASCADE`).
pub(super) async fn prune<C: GenericClient>(c: &C, before_ms: i64) -> Result<u64, StoreError> {
    execute(
        c,
        "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < $1",
        &[&before_ms],
    )
    .await
}
