//! Incidents, site configurations and alarm acknowledgements on PostgreSQL (migration 0002).
//!
//! An incident's read-modify-write locks its row (`SELECT .. FOR NO KEY UPDATE`) in the write
//! transaction, so a device's push and an operator's action on one incident are serialised on
//! every instance. A new incident is inserted with `ON CONFLICT DO NOTHING`: if another
//! transaction created it meanwhile, the push is merged again on top of that one. A request's
//! incidents are locked in id order, so two requests never wait on each other in a cycle.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;
use patrol_core::protocol::{AlarmAck, ConfigUpdate};
use patrol_core::siteconfig::SiteConfig;
use patrol_core::{EventId, IncidentId, SiteId};

use super::auth::get_site;
use super::{execute, query, query_one, query_opt, to_i64, to_u64};
use crate::store::access;
use crate::store::collab::{
    Answered, NewConfig, OwedIncidents, awaited_alarms, next_config, owed_incidents, stored_config,
};
use crate::store::incident::{self, IncidentRow, PushMerge, ServerClock};
use crate::store::rows::{read_device_id, read_event_id, read_incident_id, read_site_id};
use crate::store::webhooks;
use crate::store::{
    AlarmAckRecord, CollabAnswer, CollabSync, IncidentList, IncidentPush, IncidentQuery,
    OperatorAction, StoreError, StoredConfig,
};

async fn require_site<C: GenericClient>(c: &C, site: &SiteId) -> Result<(), StoreError> {
    access::require_site(site, get_site(c, site).await?).map(drop)
}

/// An incident as stored: the document and its heads.
struct StoredIncident {
    doc: Vec<u8>,
    heads: Vec<u8>,
}

/// The stored incident; with `lock`, its row stays locked until the transaction ends.
async fn stored_incident<C: GenericClient>(
    c: &C,
    site: &SiteId,
    incident: IncidentId,
    lock: bool,
) -> Result<Option<StoredIncident>, StoreError> {
    let sql = if lock {
        "SELECT doc, heads FROM incidents WHERE site_id = $1 AND incident_id = $2
         FOR NO KEY UPDATE"
    } else {
        "SELECT doc, heads FROM incidents WHERE site_id = $1 AND incident_id = $2"
    };
    let row = query_opt(c, sql, &[&site.as_str(), &incident.to_string()]).await?;
    match row {
        Some(row) => Ok(Some(StoredIncident {
            doc: row.try_get(0)?,
            heads: row.try_get(1)?,
        })),
        None => Ok(None),
    }
}

/// Inserts a new incident's row; `false` if another transaction inserted it first.
async fn insert_incident<C: GenericClient>(
    c: &C,
    site: &SiteId,
    incident: IncidentId,
    row: &IncidentRow,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let inserted = execute(
        c,
        "INSERT INTO incidents (site_id, incident_id, doc, heads, status, round, severity,
             category, assignee, reported_at, created_at, updated_at, state, state_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13)
         ON CONFLICT (site_id, incident_id) DO NOTHING",
        &[
            &site.as_str(),
            &incident.to_string(),
            &row.doc,
            &row.heads,
            &row.status,
            &i64::from(row.round),
            &row.severity,
            &row.category,
            &row.assignee,
            &row.reported_at_ms,
            &at_ms,
            &row.state,
            &incident::STATE_VERSION,
        ],
    )
    .await?;
    Ok(inserted == 1)
}

/// Updates a stored (and locked) incident's row; `created_at` stays.
async fn update_incident<C: GenericClient>(
    c: &C,
    site: &SiteId,
    incident: IncidentId,
    row: &IncidentRow,
    at_ms: i64,
) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE incidents SET doc = $3, heads = $4, status = $5, round = $6, severity = $7,
             category = $8, assignee = $9, reported_at = $10, updated_at = $11, state = $12,
             state_version = $13
         WHERE site_id = $1 AND incident_id = $2",
        &[
            &site.as_str(),
            &incident.to_string(),
            &row.doc,
            &row.heads,
            &row.status,
            &i64::from(row.round),
            &row.severity,
            &row.category,
            &row.assignee,
            &row.reported_at_ms,
            &at_ms,
            &row.state,
            &incident::STATE_VERSION,
        ],
    )
    .await?;
    Ok(())
}

/// Recomputes the projection of every incident stored with an older state JSON than
/// [`incident::STATE_VERSION`] (migration 0009), at start, in batches each in its own
/// transaction with the batch's rows locked (an instance already serving may write one
/// meanwhile; instances starting at once wait for each other's batch). A document that does
/// not load keeps its row as it was, and says so in the log: the others are refreshed and the
/// server starts. Returns how many were refreshed.
pub(super) async fn refresh_incident_states(
    client: &mut deadpool_postgres::Client,
) -> Result<u64, StoreError> {
    let mut after = (String::new(), String::new());
    let mut refreshed = 0;
    loop {
        let tx = client.transaction().await?;
        let stale = query(
            &tx,
            "SELECT site_id, incident_id, doc, updated_at FROM incidents
             WHERE state_version < $1 AND (site_id, incident_id) > ($2, $3)
             ORDER BY site_id, incident_id LIMIT $4 FOR NO KEY UPDATE",
            &[
                &incident::STATE_VERSION,
                &after.0,
                &after.1,
                &incident::REFRESH_BATCH,
            ],
        )
        .await?;
        let Some(last) = stale.last() else {
            tx.commit().await?;
            return Ok(refreshed);
        };
        after = (last.try_get(0)?, last.try_get(1)?);
        for row in &stale {
            let site = read_site_id(row.try_get(0)?)?;
            let id = read_incident_id(row.try_get(1)?)?;
            let bytes: &[u8] = row.try_get(2)?;
            let updated_at_ms: i64 = row.try_get(3)?;
            let fresh = match incident::refreshed_row(&site, id, bytes, updated_at_ms) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!(%site, incident = %id, error = %e,
                        "incident state not recomputed; it is served as stored");
                    continue;
                }
            };
            execute(
                &tx,
                "UPDATE incidents SET status = $3, round = $4, severity = $5, category = $6,
                     assignee = $7, reported_at = $8, state = $9, state_version = $10
                 WHERE site_id = $1 AND incident_id = $2",
                &[
                    &site.as_str(),
                    &id.to_string(),
                    &fresh.status,
                    &i64::from(fresh.round),
                    &fresh.severity,
                    &fresh.category,
                    &fresh.assignee,
                    &fresh.reported_at_ms,
                    &fresh.state,
                    &incident::STATE_VERSION,
                ],
            )
            .await?;
            refreshed += 1;
        }
        tx.commit().await?;
    }
}

/// Merges one incident push inside the write transaction, locking the incident's row.
async fn merge_incident<C: GenericClient>(
    tx: &C,
    sync: &CollabSync,
    push: &IncidentPush,
) -> Result<Answered, StoreError> {
    let site = &sync.site;
    loop {
        let stored = stored_incident(tx, site, push.incident, true).await?;
        let exists = stored.is_some();
        if let Some(StoredIncident { heads: blob, .. }) = &stored {
            let server_heads = incident::stored_heads(site, push.incident, blob)?;
            if incident::up_to_date(push, &server_heads) {
                return Ok(Answered::up_to_date(push.incident, &server_heads));
            }
        }
        let bytes = stored.map(|s| s.doc).unwrap_or_default();
        let mut doc = incident::load(site, push.incident, &bytes, incident::server_actor(site))?;
        match incident::merge_push(&mut doc, site, sync.device, push) {
            PushMerge::Rejected(rejection) => return Ok(Answered::rejected(rejection)),
            PushMerge::Accepted {
                changed,
                heads,
                missing_deps,
                update,
            } => {
                if changed {
                    let row = incident::row(&mut doc, site, sync.received_at_ms)?;
                    if exists {
                        update_incident(tx, site, push.incident, &row, sync.received_at_ms).await?;
                    } else if !insert_incident(tx, site, push.incident, &row, sync.received_at_ms)
                        .await?
                    {
                        // Created by a concurrent request since the read: merge onto that.
                        continue;
                    }
                    let outgoing =
                        webhooks::incident(site, push.incident, !exists, &row, sync.received_at_ms);
                    super::webhooks::enqueue(tx, &outgoing).await?;
                    // Only the sending device's changes can be new, so it wrote to the incident.
                    execute(
                        tx,
                        "INSERT INTO incident_participants (site_id, device_id, incident_id)
                         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[
                            &site.as_str(),
                            &sync.device.to_string(),
                            &push.incident.to_string(),
                        ],
                    )
                    .await?;
                }
                return Ok(Answered::accepted(
                    push.incident,
                    &heads,
                    missing_deps,
                    update,
                ));
            }
        }
    }
}

/// The write transaction of a sync request's incident pushes and its answer.
pub(super) async fn write_collab<C: GenericClient>(
    tx: &C,
    sync: &CollabSync,
) -> Result<CollabAnswer, StoreError> {
    require_site(tx, &sync.site).await?;
    // Merged in incident-id order (the lock order), answered in the request's order.
    let mut order: Vec<usize> = (0..sync.incidents.len()).collect();
    order.sort_by_key(|&i| (sync.incidents[i].incident, i));
    let mut answered: Vec<Option<Answered>> = sync.incidents.iter().map(|_| None).collect();
    for i in order {
        answered[i] = Some(merge_incident(tx, sync, &sync.incidents[i]).await?);
    }
    let mut answer = CollabAnswer::default();
    for a in answered.into_iter().flatten() {
        a.add_to(&mut answer);
    }
    let pushed: HashSet<IncidentId> = sync.incidents.iter().map(|p| p.incident).collect();
    sync_extras(tx, sync, &pushed, &mut answer).await?;
    Ok(answer)
}

/// What a sync answers beyond the pushed documents: the open incidents it is owed
/// ([`owed_incidents`]) and did not push (whole), a newer configuration, and acknowledgements
/// of its alarms.
pub(super) async fn sync_extras<C: GenericClient>(
    c: &C,
    sync: &CollabSync,
    pushed: &HashSet<IncidentId>,
    answer: &mut CollabAnswer,
) -> Result<(), StoreError> {
    let site = &sync.site;
    let device = sync.device.to_string();
    // Through the index of open incidents (migration 0009); the documents of those the device
    // pushed are not read.
    let pushed_ids: Vec<String> = pushed.iter().map(ToString::to_string).collect();
    let rows = match owed_incidents(sync) {
        OwedIncidents::EveryOpen => {
            query(
                c,
                "SELECT incident_id, doc FROM incidents
                 WHERE site_id = $1 AND status <> 'closed' AND incident_id <> ALL($2)
                 ORDER BY incident_id",
                &[&site.as_str(), &pushed_ids],
            )
            .await?
        }
        OwedIncidents::TakenPart { device } => {
            query(
                c,
                "SELECT incident_id, doc FROM incidents
                 WHERE site_id = $1 AND status <> 'closed' AND incident_id <> ALL($2)
                   AND incident_id IN (SELECT incident_id FROM incident_participants
                                       WHERE site_id = $1 AND device_id = $3)
                 ORDER BY incident_id",
                &[&site.as_str(), &pushed_ids, &device],
            )
            .await?
        }
    };
    let actor = incident::server_actor(site);
    for row in rows {
        let id: String = row.try_get(0)?;
        let incident = read_incident_id(&id)?;
        let bytes: &[u8] = row.try_get(1)?;
        answer
            .incidents
            .push(incident::whole(site, incident, bytes, actor.clone())?);
    }

    let config = query_opt(
        c,
        "SELECT version, config FROM site_configs WHERE site_id = $1 AND version > $2
         ORDER BY version DESC LIMIT 1",
        &[&site.as_str(), &to_i64(sync.config_version)],
    )
    .await?;
    if let Some(row) = config {
        let version: i64 = row.try_get(0)?;
        answer.config = Some(ConfigUpdate {
            version: to_u64(version, "config version")?,
            config: row.try_get(1)?,
        });
    }

    if !sync.awaiting_ack.is_empty() {
        for event in awaited_alarms(sync) {
            let ack = query_opt(
                c,
                "SELECT acked_by, acked_at FROM alarm_acks
                 WHERE site_id = $1 AND event_id = $2 AND device_id = $3",
                &[&site.as_str(), &event.0.as_bytes().as_slice(), &device],
            )
            .await?;
            if let Some(row) = ack {
                answer.alarm_acks.push(AlarmAck {
                    event,
                    by: row.try_get(0)?,
                    at_ms: row.try_get(1)?,
                });
            }
        }
    }
    Ok(())
}

pub(super) async fn incidents<C: GenericClient>(
    c: &C,
    site: &SiteId,
    query_: &IncidentQuery,
) -> Result<IncidentList, StoreError> {
    require_site(c, site).await?;
    // One extra row tells whether more follow.
    let rows = query(
        c,
        "SELECT state FROM incidents WHERE site_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($4::bigint IS NULL OR updated_at >= $4)
         ORDER BY created_at DESC, incident_id DESC LIMIT $3",
        &[
            &site.as_str(),
            &query_.status.map(|s| s.as_str()),
            &(i64::from(query_.limit) + 1),
            &query_.updated_since,
        ],
    )
    .await?;
    let mut list = IncidentList::default();
    for row in rows {
        if list.incidents.len() == query_.limit as usize {
            list.more = true;
            break;
        }
        list.incidents.push(row.try_get(0)?);
    }
    Ok(list)
}

pub(super) async fn incident_state<C: GenericClient>(
    c: &C,
    site: &SiteId,
    incident: IncidentId,
) -> Result<String, StoreError> {
    let row = query_opt(
        c,
        "SELECT state FROM incidents WHERE site_id = $1 AND incident_id = $2",
        &[&site.as_str(), &incident.to_string()],
    )
    .await?;
    match row {
        Some(row) => Ok(row.try_get(0)?),
        None => {
            require_site(c, site).await?;
            Err(StoreError::UnknownIncident {
                site: site.clone(),
                incident,
            })
        }
    }
}

pub(super) async fn act_on_incident<C: GenericClient>(
    tx: &C,
    action: OperatorAction,
    clock: &ServerClock,
) -> Result<String, StoreError> {
    let OperatorAction {
        site,
        incident,
        user,
        action,
        at_ms,
    } = action;
    let Some(StoredIncident { doc: bytes, .. }) =
        stored_incident(tx, &site, incident, true).await?
    else {
        require_site(tx, &site).await?;
        return Err(StoreError::UnknownIncident { site, incident });
    };
    let row = incident::apply_action(&site, incident, &bytes, &user, action, clock, at_ms)?;
    update_incident(tx, &site, incident, &row, at_ms).await?;
    super::webhooks::enqueue(tx, &webhooks::incident(&site, incident, false, &row, at_ms)).await?;
    Ok(row.state)
}

pub(super) async fn site_config<C: GenericClient>(
    c: &C,
    site: &SiteId,
) -> Result<StoredConfig, StoreError> {
    require_site(c, site).await?;
    let latest = query_opt(
        c,
        "SELECT version, config, created_at FROM site_configs WHERE site_id = $1
         ORDER BY version DESC LIMIT 1",
        &[&site.as_str()],
    )
    .await?;
    let latest = match &latest {
        Some(row) => Some((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)),
        None => None,
    };
    stored_config(site, latest)
}

async fn latest_config_version<C: GenericClient>(c: &C, site: &SiteId) -> Result<u64, StoreError> {
    let row = query_one(
        c,
        "SELECT COALESCE(MAX(version), 0)::bigint FROM site_configs WHERE site_id = $1",
        &[&site.as_str()],
    )
    .await?;
    to_u64(row.try_get(0)?, "config version")
}

/// Stores the next configuration version. Each statement stands alone: the version's primary
/// key decides between two concurrent writers from the same base, and the loser is told stale.
pub(super) async fn put_site_config<C: GenericClient>(
    c: &C,
    config: SiteConfig,
    base_version: u64,
    at_ms: i64,
) -> Result<StoredConfig, StoreError> {
    require_site(c, &config.site).await?;
    let latest = latest_config_version(c, &config.site).await?;
    let NewConfig {
        config,
        bytes,
        json,
    } = next_config(config, base_version, latest)?;
    let inserted = execute(
        c,
        "INSERT INTO site_configs (site_id, version, config, json, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (site_id, version) DO NOTHING",
        &[
            &config.site.as_str(),
            &to_i64(config.version),
            &bytes,
            &json,
            &at_ms,
        ],
    )
    .await?;
    if inserted == 0 {
        let latest = latest_config_version(c, &config.site).await?;
        return Err(StoreError::StaleConfig {
            site: config.site,
            base: base_version,
            latest,
        });
    }
    Ok(StoredConfig {
        config,
        created_at_ms: Some(at_ms),
    })
}

pub(super) async fn alarm_acks<C: GenericClient>(
    c: &C,
    site: &SiteId,
    events: &[EventId],
) -> Result<Vec<AlarmAckRecord>, StoreError> {
    require_site(c, site).await?;
    let ids: Vec<&[u8]> = events.iter().map(|e| e.0.as_bytes().as_slice()).collect();
    let rows = query(
        c,
        "SELECT event_id, device_id, acked_by, acked_at FROM alarm_acks
         WHERE site_id = $1 AND event_id = ANY($2)",
        &[&site.as_str(), &ids],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: &[u8] = row.try_get(0)?;
        let device: String = row.try_get(1)?;
        out.push(AlarmAckRecord {
            site: site.clone(),
            event: read_event_id(id)?,
            device: read_device_id(&device)?,
            by: row.try_get(2)?,
            at_ms: row.try_get(3)?,
        });
    }
    Ok(out)
}
