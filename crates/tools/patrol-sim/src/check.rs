//! The invariants checked at the end of a run, once the network healed and every phone synced
//! until nothing was pending and once more:
//!
//! - (a) no event a phone ever showed as delivered is missing from the server's feed;
//! - (b) no event is in the feed twice;
//! - (c) every event recorded is in the feed, and the feed holds nothing no phone recorded;
//! - (d) the feed is in canonical order (sequence numbers 1, 2, 3.. without gaps) and each
//!   phone's events appear in the phone's own order (device sequence numbers increasing);
//! - (e) incident documents are equal everywhere: each phone's state of every incident it holds
//!   is the server's, the server's stored projection is a fresh fold of its stored document,
//!   every incident a phone reported is on the server, and every open incident is on every
//!   phone with a shift open;
//! - (f) stores open cleanly after every crash (checked at each crash, see `sim`);
//! - and what the exchange carries besides: every phone has nothing pending or refused (and the
//!   control room's device view says so), holds the latest site configuration, and shows each of
//!   its panic alarms acknowledged by whoever acknowledged it first, or delivered.

use std::collections::{HashMap, HashSet};

use axum::http::StatusCode;
use patrol_core::IncidentId;
use patrol_core::incident::{IncidentDoc, IncidentState};
use patrol_mobile::AlarmState;
use patrol_server::store::incident::IncidentView;
use serde_json::Value;

use crate::SimError;
use crate::server::SITE;
use crate::sim::Sim;

fn fail(message: String) -> Result<(), SimError> {
    Err(SimError::Invariant(message))
}

/// An incident state as the control room's JSON, without the server's update time (a phone
/// does not know it).
fn view(state: &IncidentState) -> Result<Value, SimError> {
    let mut v = serde_json::to_value(IncidentView::new(state, 0))
        .map_err(SimError::from_display("incident json"))?;
    strip(&mut v);
    Ok(v)
}

fn strip(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("updated_at");
    }
}

pub(crate) fn all(sim: &mut Sim) -> Result<(), SimError> {
    feed(sim)?;
    incidents(sim)?;
    phones(sim)
}

/// (a) to (d).
fn feed(sim: &mut Sim) -> Result<(), SimError> {
    let feed = sim.server.feed(&sim.rt, "")?;
    sim.stats.feed_events = feed.len() as u64;
    let mut seen = HashSet::new();
    // Per device id: the event ids in feed order, and the last device sequence number.
    let mut by_device: HashMap<String, (Vec<String>, u64)> = HashMap::new();
    for (i, e) in feed.iter().enumerate() {
        let seq = e["seq"].as_u64();
        if seq != Some(i as u64 + 1) {
            return fail(format!(
                "feed position {} holds sequence number {:?}: not canonical order",
                i + 1,
                seq
            ));
        }
        let (Some(id), Some(device), Some(device_seq)) = (
            e["id"].as_str(),
            e["device_id"].as_str(),
            e["device_seq"].as_u64(),
        ) else {
            return fail(format!("feed event without id, device or device_seq: {e}"));
        };
        if !seen.insert(id.to_owned()) {
            return fail(format!("event {id} is in the feed twice"));
        }
        let (ids, last) = by_device.entry(device.to_owned()).or_default();
        if device_seq <= *last {
            return fail(format!(
                "device {device}: event {id} (device_seq {device_seq}) comes after device_seq \
                 {last} in the feed"
            ));
        }
        *last = device_seq;
        ids.push(id.to_owned());
    }
    let mut recorded = 0;
    for (p, phone) in sim.phones.iter().enumerate() {
        for id in &phone.delivered {
            if !seen.contains(&id.to_string()) {
                return fail(format!(
                    "phone {p}: event {id} was acknowledged as delivered and is not in the feed"
                ));
            }
        }
        for id in &phone.recorded {
            if !seen.contains(&id.to_string()) {
                return fail(format!(
                    "phone {p}: event {id} was recorded and never reached the feed"
                ));
            }
        }
        recorded += phone.recorded.len();
        let in_feed = by_device
            .get(&phone.id.to_string())
            .map(|(ids, _)| ids.as_slice())
            .unwrap_or_default();
        let own: Vec<String> = phone.recorded.iter().map(|id| id.to_string()).collect();
        if in_feed != own.as_slice() {
            return fail(format!(
                "phone {p}: its {} events are in the feed as {} events or in another order",
                own.len(),
                in_feed.len()
            ));
        }
    }
    if recorded != feed.len() {
        return fail(format!(
            "the feed holds {} events, the phones recorded {recorded}",
            feed.len()
        ));
    }
    Ok(())
}

/// (e).
fn incidents(sim: &mut Sim) -> Result<(), SimError> {
    let mut server_states: HashMap<IncidentId, Value> = HashMap::new();
    for p in 0..sim.phones.len() {
        let held = sim.phones[p]
            .store()?
            .incidents()
            .map_err(SimError::from_display("incidents"))?;
        let mut ids: HashSet<IncidentId> = HashSet::new();
        for incident in held {
            let id = incident.state.id;
            ids.insert(id);
            if incident.pending || incident.rejected.is_some() {
                return fail(format!(
                    "phone {p}: incident {id} still pending ({}) or refused ({:?}) after healing",
                    incident.pending, incident.rejected
                ));
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = server_states.entry(id) {
                let uri = format!("/api/v1/sites/{SITE}/incidents/{id}");
                let (status, mut state) = sim.server.get_json(&sim.rt, sim.server.admin(), &uri)?;
                if status != StatusCode::OK {
                    return fail(format!(
                        "phone {p} holds incident {id}; the server answers {status} {state}"
                    ));
                }
                strip(&mut state);
                slot.insert(state);
            }
            let phone = view(&incident.state)?;
            if server_states.get(&id) != Some(&phone) {
                return fail(format!(
                    "incident {id} differs: phone {p} has {phone}, the server {}",
                    server_states.get(&id).unwrap_or(&Value::Null)
                ));
            }
        }
        for id in &sim.phones[p].reported {
            if !ids.contains(id) {
                return fail(format!(
                    "phone {p} reported incident {id} and does not hold it"
                ));
            }
        }
    }
    // Every open incident of the site is on every phone with a shift open.
    let uri = format!("/api/v1/sites/{SITE}/incidents?limit=1000");
    let (status, list) = sim.server.get_json(&sim.rt, sim.server.admin(), &uri)?;
    if status != StatusCode::OK {
        return fail(format!("GET {uri}: {status} {list}"));
    }
    let open: Vec<String> = list["incidents"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|i| i["status"] != "closed")
                .filter_map(|i| Some(i["id"].as_str()?.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    for p in 0..sim.phones.len() {
        let store = sim.phones[p].store()?;
        let Some(guard) = store.current_shift().map(|s| s.guard.to_string()) else {
            continue;
        };
        for id in &open {
            let id: IncidentId = id.parse().map_err(SimError::from_display("incident id"))?;
            if store
                .incident(id)
                .map_err(SimError::from_display("incident"))?
                .is_none()
            {
                return fail(format!(
                    "incident {id} is open and {guard} is on duty on phone {p}, which does not \
                     hold it"
                ));
            }
        }
    }
    // Every reported incident is on the server.
    for (p, phone) in sim.phones.iter().enumerate() {
        for id in &phone.reported {
            if !server_states.contains_key(id) {
                return fail(format!(
                    "phone {p} reported incident {id}; the server does not have it"
                ));
            }
        }
    }
    // The server's stored projection is the fold of its stored document.
    let conn = rusqlite::Connection::open_with_flags(
        sim.server.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .map_err(SimError::from_display("open server db"))?;
    let mut stmt = conn
        .prepare("SELECT incident_id, doc, state FROM incidents WHERE site_id = ?1")
        .map_err(SimError::from_display("query server db"))?;
    let rows = stmt
        .query_map([SITE], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(SimError::from_display("query server db"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(SimError::from_display("read server db"))?;
    for (id, doc, stored) in rows {
        let id: IncidentId = id
            .parse()
            .map_err(SimError::from_display("stored incident id"))?;
        let doc = IncidentDoc::load(id, &doc, automerge_actor())
            .map_err(SimError::from_display("stored incident document"))?;
        let fresh = view(
            &doc.state()
                .map_err(SimError::from_display("fold the stored incident"))?,
        )?;
        let mut stored: Value =
            serde_json::from_str(&stored).map_err(SimError::from_display("stored state"))?;
        strip(&mut stored);
        if fresh != stored {
            return fail(format!(
                "incident {id}: the server's projection {stored} is not the fold of its \
                 document {fresh}"
            ));
        }
    }
    Ok(())
}

/// An actor to load documents with, for reading only.
fn automerge_actor() -> automerge::ActorId {
    automerge::ActorId::from(&[0u8; 16][..])
}

/// Nothing pending or refused, the latest configuration, and the alarms' states.
fn phones(sim: &mut Sim) -> Result<(), SimError> {
    let acks = sim.acks.clone();
    let latest = sim.config_version;
    // The control room's device view agrees: every phone seen, nothing pending.
    let uri = format!("/api/v1/sites/{SITE}/devices");
    let (status, devices) = sim.server.get_json(&sim.rt, sim.server.admin(), &uri)?;
    if status != StatusCode::OK {
        return fail(format!("GET {uri}: {status} {devices}"));
    }
    let pending: HashMap<String, u64> = devices["devices"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|d| {
                    Some((
                        d["device_id"].as_str()?.to_owned(),
                        d["pending_events"].as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for (p, phone) in sim.phones.iter().enumerate() {
        match pending.get(&phone.id.to_string()) {
            Some(0) => {}
            other => {
                return fail(format!(
                    "phone {p}: the device view shows {other:?} events pending after healing"
                ));
            }
        }
    }
    for p in 0..sim.phones.len() {
        let store = sim.phones[p].store()?;
        let status = store.status().map_err(SimError::from_display("status"))?;
        if status.pending_events != 0 || !status.rejected.is_empty() {
            return fail(format!(
                "phone {p}: {} events pending, {} logs refused after healing",
                status.pending_events,
                status.rejected.len()
            ));
        }
        let held = store
            .site_config()
            .map_err(SimError::from_display("site config"))?
            .map_or(0, |c| c.version);
        if held != latest {
            return fail(format!(
                "phone {p} holds configuration version {held}, the latest is {latest}"
            ));
        }
        for alarm in store.alarms().map_err(SimError::from_display("alarms"))? {
            let expected = match acks.get(&alarm.event) {
                Some(by) => AlarmState::Acknowledged {
                    by: by.clone(),
                    at_ms: match &alarm.state {
                        AlarmState::Acknowledged { at_ms, .. } => *at_ms,
                        _ => 0,
                    },
                },
                None => AlarmState::Delivered,
            };
            if alarm.state != expected {
                return fail(format!(
                    "phone {p}: alarm {} is {:?}, expected {:?}",
                    alarm.event, alarm.state, expected
                ));
            }
        }
    }
    Ok(())
}
