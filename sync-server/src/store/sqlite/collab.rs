//! Incidents, site configurations and alarm acknowledgements on SQLite (migration 0003).
//!
//! Writes run on the writer thread, each in its own IMMEDIATE transaction: an incident is read,
//! changed and written back under the write lock, so a device's push and an operator's action on
//! the same incident are serialised. Reads of the sync answer (when a request pushes no
//! incident) run on a read connection, beside the shift-log path.

use std::collections::HashSet;

use patrol_core::protocol::{AlarmAck, ConfigUpdate};
use patrol_core::siteconfig::SiteConfig;
use patrol_core::{EventId, IncidentId, SiteId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::auth::get_site;
use super::to_i64;
use crate::store::access;
use crate::store::collab::{
    Answered, NewConfig, OwedIncidents, awaited_alarms, next_config, owed_incidents, stored_config,
};
use crate::store::incident::{self, IncidentRow, PushMerge, ServerClock};
use crate::store::rows::{read_device_id, read_incident_id, read_site_id};
use crate::store::webhooks;
use crate::store::{
    AlarmAckRecord, CollabAnswer, CollabSync, IncidentList, IncidentQuery, OperatorAction,
    StoreError, StoredConfig,
};

fn require_site(conn: &Connection, site: &SiteId) -> Result<(), StoreError> {
    access::require_site(site, get_site(conn, site)?).map(drop)
}

/// An incident as stored: the document and its heads.
struct StoredIncident {
    doc: Vec<u8>,
    heads: Vec<u8>,
}

fn stored_incident(
    conn: &Connection,
    site: &SiteId,
    incident: IncidentId,
) -> Result<Option<StoredIncident>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT doc, heads FROM incidents WHERE site_id = ?1 AND incident_id = ?2")?
        .query_row(params![site.as_str(), incident.to_string()], |r| {
            Ok(StoredIncident {
                doc: r.get(0)?,
                heads: r.get(1)?,
            })
        })
        .optional()?)
}

/// Inserts or updates an incident's row. `created_at` is kept from the first write.
fn put_incident(
    tx: &Connection,
    site: &SiteId,
    incident: IncidentId,
    row: &IncidentRow,
    at_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO incidents (site_id, incident_id, doc, heads, status, round, severity,
             category, assignee, reported_at, created_at, updated_at, state, state_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13)
         ON CONFLICT (site_id, incident_id) DO UPDATE SET
             doc = excluded.doc, heads = excluded.heads, status = excluded.status,
             round = excluded.round, severity = excluded.severity, category = excluded.category,
             assignee = excluded.assignee, reported_at = excluded.reported_at,
             updated_at = excluded.updated_at, state = excluded.state,
             state_version = excluded.state_version",
    )?
    .execute(params![
        site.as_str(),
        incident.to_string(),
        row.doc,
        row.heads,
        row.status,
        row.round,
        row.severity,
        row.category,
        row.assignee,
        row.reported_at_ms,
        at_ms,
        row.state,
        incident::STATE_VERSION,
    ])?;
    Ok(())
}

/// Recomputes the projection of every incident stored with an older state JSON than
/// [`incident::STATE_VERSION`] (migration 0013), at start, in batches each in its own IMMEDIATE
/// transaction. A document that does not load keeps its row as it was, and says so in the log:
/// the others are refreshed and the server starts. Returns how many were refreshed.
pub(super) fn refresh_incident_states(conn: &mut Connection) -> Result<u64, StoreError> {
    let mut after = (String::new(), String::new());
    let mut refreshed = 0;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stale: Vec<(String, String, Vec<u8>, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT site_id, incident_id, doc, updated_at FROM incidents
                 WHERE state_version < ?1 AND (site_id, incident_id) > (?2, ?3)
                 ORDER BY site_id, incident_id LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![
                    incident::STATE_VERSION,
                    after.0,
                    after.1,
                    incident::REFRESH_BATCH
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        let Some((site, id, _, _)) = stale.last() else {
            return Ok(refreshed);
        };
        after = (site.clone(), id.clone());
        for (site, id, doc, updated_at_ms) in &stale {
            let site = read_site_id(site)?;
            let id = read_incident_id(id)?;
            let row = match incident::refreshed_row(&site, id, doc, *updated_at_ms) {
                Ok(row) => row,
                Err(e) => {
                    tracing::warn!(%site, incident = %id, error = %e,
                        "incident state not recomputed; it is served as stored");
                    continue;
                }
            };
            tx.prepare_cached(
                "UPDATE incidents SET status = ?3, round = ?4, severity = ?5, category = ?6,
                     assignee = ?7, reported_at = ?8, state = ?9, state_version = ?10
                 WHERE site_id = ?1 AND incident_id = ?2",
            )?
            .execute(params![
                site.as_str(),
                id.to_string(),
                row.status,
                row.round,
                row.severity,
                row.category,
                row.assignee,
                row.reported_at_ms,
                row.state,
                incident::STATE_VERSION,
            ])?;
            refreshed += 1;
        }
        tx.commit()?;
    }
}

/// The write transaction of a sync request's incident pushes and its answer. Writes only what a
/// push applies: with heads-only pushes (no changes) it only reads, and runs on a read
/// connection.
pub(super) fn write_collab(tx: &Connection, sync: &CollabSync) -> Result<CollabAnswer, StoreError> {
    require_site(tx, &sync.site)?;
    let site = &sync.site;
    let actor = incident::server_actor(site);
    let mut answer = CollabAnswer::default();
    let mut pushed = HashSet::new();
    for push in &sync.incidents {
        pushed.insert(push.incident);
        let stored = stored_incident(tx, site, push.incident)?;
        if let Some(StoredIncident { heads: blob, .. }) = &stored {
            let server_heads = incident::stored_heads(site, push.incident, blob)?;
            if incident::up_to_date(push, &server_heads) {
                Answered::up_to_date(push.incident, &server_heads).add_to(&mut answer);
                continue;
            }
        }
        let created = stored.is_none();
        let bytes = stored.map(|s| s.doc).unwrap_or_default();
        let mut doc = incident::load(site, push.incident, &bytes, actor.clone())?;
        match incident::merge_push(&mut doc, site, sync.device, push) {
            PushMerge::Rejected(rejection) => Answered::rejected(rejection).add_to(&mut answer),
            PushMerge::Accepted {
                changed,
                heads,
                missing_deps,
                update,
            } => {
                if changed {
                    let row = incident::row(&mut doc, site, sync.received_at_ms)?;
                    put_incident(tx, site, push.incident, &row, sync.received_at_ms)?;
                    let outgoing =
                        webhooks::incident(site, push.incident, created, &row, sync.received_at_ms);
                    super::webhooks::enqueue(tx, &outgoing)?;
                    // Only the sending device's changes can be new, so it wrote to the incident.
                    tx.prepare_cached(
                        "INSERT INTO incident_participants (site_id, device_id, incident_id)
                         VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        site.as_str(),
                        sync.device.to_string(),
                        push.incident.to_string()
                    ])?;
                }
                Answered::accepted(push.incident, &heads, missing_deps, update).add_to(&mut answer);
            }
        }
    }
    sync_extras(tx, sync, &pushed, &mut answer)?;
    Ok(answer)
}

/// What a sync answers beyond the pushed documents: the open incidents it is owed
/// ([`owed_incidents`]) and did not push (whole), a newer configuration, and acknowledgements
/// of its alarms.
pub(super) fn sync_extras(
    conn: &Connection,
    sync: &CollabSync,
    pushed: &HashSet<IncidentId>,
    answer: &mut CollabAnswer,
) -> Result<(), StoreError> {
    let site = &sync.site;
    // Through the index of open incidents (migration 0013); the documents of those the device
    // pushed are not read.
    let ids: Vec<String> = match owed_incidents(sync) {
        OwedIncidents::EveryOpen => conn
            .prepare_cached(
                "SELECT incident_id FROM incidents WHERE site_id = ?1 AND status <> 'closed'
                 ORDER BY incident_id",
            )?
            .query_map(params![site.as_str()], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
        OwedIncidents::TakenPart { device } => conn
            .prepare_cached(
                "SELECT incident_id FROM incidents
                 WHERE site_id = ?1 AND status <> 'closed' AND incident_id IN (
                     SELECT incident_id FROM incident_participants
                     WHERE site_id = ?1 AND device_id = ?2)
                 ORDER BY incident_id",
            )?
            .query_map(params![site.as_str(), device], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
    };
    let actor = incident::server_actor(site);
    for id in ids {
        let incident = read_incident_id(&id)?;
        if pushed.contains(&incident) {
            continue;
        }
        let Some(StoredIncident { doc: bytes, .. }) = stored_incident(conn, site, incident)? else {
            continue;
        };
        answer
            .incidents
            .push(incident::whole(site, incident, &bytes, actor.clone())?);
    }

    let config: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT version, config FROM site_configs WHERE site_id = ?1 AND version > ?2
             ORDER BY version DESC LIMIT 1",
        )?
        .query_row(params![site.as_str(), to_i64(sync.config_version)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    if let Some((version, config)) = config {
        answer.config = Some(ConfigUpdate {
            version: u64::try_from(version)
                .map_err(|_| StoreError::CorruptData(format!("config version {version}")))?,
            config,
        });
    }

    if !sync.awaiting_ack.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT acked_by, acked_at FROM alarm_acks
             WHERE site_id = ?1 AND event_id = ?2 AND device_id = ?3",
        )?;
        let device = sync.device.to_string();
        for event in awaited_alarms(sync) {
            let ack: Option<(String, i64)> = stmt
                .query_row(
                    params![site.as_str(), event.0.as_bytes().as_slice(), device],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((by, at_ms)) = ack {
                answer.alarm_acks.push(AlarmAck { event, by, at_ms });
            }
        }
    }
    Ok(())
}

pub(super) fn incidents(
    conn: &mut Connection,
    site: &SiteId,
    query: &IncidentQuery,
) -> Result<IncidentList, StoreError> {
    let tx = conn.transaction()?;
    require_site(&tx, site)?;
    let limit = i64::from(query.limit);
    let mut list = IncidentList::default();
    {
        // One extra row tells whether more follow.
        let mut stmt = tx.prepare_cached(
            "SELECT state FROM incidents WHERE site_id = ?1 AND (?2 IS NULL OR status = ?2)
               AND (?4 IS NULL OR updated_at >= ?4)
             ORDER BY created_at DESC, incident_id DESC LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![
            site.as_str(),
            query.status.map(|s| s.as_str()),
            limit + 1,
            query.updated_since
        ])?;
        while let Some(row) = rows.next()? {
            if list.incidents.len() == query.limit as usize {
                list.more = true;
                break;
            }
            list.incidents.push(row.get(0)?);
        }
    }
    Ok(list)
}

pub(super) fn incident_state(
    conn: &mut Connection,
    site: &SiteId,
    incident: IncidentId,
) -> Result<String, StoreError> {
    let tx = conn.transaction()?;
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM incidents WHERE site_id = ?1 AND incident_id = ?2")?
        .query_row(params![site.as_str(), incident.to_string()], |r| r.get(0))
        .optional()?;
    match state {
        Some(state) => Ok(state),
        None => {
            require_site(&tx, site)?;
            Err(StoreError::UnknownIncident {
                site: site.clone(),
                incident,
            })
        }
    }
}

pub(super) fn act_on_incident(
    tx: &Connection,
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
    let Some(StoredIncident { doc: bytes, .. }) = stored_incident(tx, &site, incident)? else {
        require_site(tx, &site)?;
        return Err(StoreError::UnknownIncident { site, incident });
    };
    let row = incident::apply_action(&site, incident, &bytes, &user, action, clock, at_ms)?;
    put_incident(tx, &site, incident, &row, at_ms)?;
    super::webhooks::enqueue(tx, &webhooks::incident(&site, incident, false, &row, at_ms))?;
    Ok(row.state)
}

pub(super) fn site_config(
    conn: &mut Connection,
    site: &SiteId,
) -> Result<StoredConfig, StoreError> {
    let tx = conn.transaction()?;
    require_site(&tx, site)?;
    latest_config(&tx, site)
}

/// The site's latest configuration (the empty version 0 if none), inside an open transaction.
pub(super) fn latest_config(tx: &Connection, site: &SiteId) -> Result<StoredConfig, StoreError> {
    let latest: Option<(i64, Vec<u8>, i64)> = tx
        .prepare_cached(
            "SELECT version, config, created_at FROM site_configs WHERE site_id = ?1
             ORDER BY version DESC LIMIT 1",
        )?
        .query_row([site.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    stored_config(
        site,
        latest
            .as_ref()
            .map(|(version, bytes, created_at_ms)| (*version, bytes.as_slice(), *created_at_ms)),
    )
}

pub(super) fn put_site_config(
    tx: &Connection,
    config: SiteConfig,
    base_version: u64,
    at_ms: i64,
) -> Result<StoredConfig, StoreError> {
    require_site(tx, &config.site)?;
    let latest: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM site_configs WHERE site_id = ?1")?
        .query_row([config.site.as_str()], |r| r.get(0))?;
    let latest = u64::try_from(latest)
        .map_err(|_| StoreError::CorruptData(format!("config version {latest}")))?;
    let NewConfig {
        config,
        bytes,
        json,
    } = next_config(config, base_version, latest)?;
    tx.prepare_cached(
        "INSERT INTO site_configs (site_id, version, config, json, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        config.site.as_str(),
        to_i64(config.version),
        bytes,
        json,
        at_ms
    ])?;
    Ok(StoredConfig {
        config,
        created_at_ms: Some(at_ms),
    })
}

pub(super) fn alarm_acks(
    conn: &mut Connection,
    site: &SiteId,
    events: &[EventId],
) -> Result<Vec<AlarmAckRecord>, StoreError> {
    let tx = conn.transaction()?;
    require_site(&tx, site)?;
    let mut out = Vec::new();
    let mut stmt = tx.prepare_cached(
        "SELECT device_id, acked_by, acked_at FROM alarm_acks
         WHERE site_id = ?1 AND event_id = ?2",
    )?;
    // One lookup by primary key per alarm: a day holds few.
    for &event in events {
        let row: Option<(String, String, i64)> = stmt
            .query_row(params![site.as_str(), event.0.as_bytes().as_slice()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        if let Some((device, by, at_ms)) = row {
            out.push(AlarmAckRecord {
                site: site.clone(),
                event,
                device: read_device_id(&device)?,
                by,
                at_ms,
            });
        }
    }
    Ok(out)
}
