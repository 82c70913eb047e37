//! The guard's phone and the control room work together through the real server: the site
//! configuration reaches the phone at sync and drives tag scans and tour progress offline; an
//! incident reported offline is worked at the same time on the phone and in the control room,
//! and both sides' edits survive on both sides; an open incident reaches another guard on shift
//! (the one it is assigned to); a panic alarm shows acknowledged once the control room
//! acknowledges it.

use anyhow::{Result, anyhow, ensure};
use patrol_core::flags::EventFlag;
use patrol_core::incident::{IncidentAction, IncidentStatus};
use patrol_core::siteconfig::CheckpointState;
use patrol_core::{
    EventBody, GuardId, IncidentCategory, IncidentId, IncidentReport, Scan, ScanMethod, Severity,
    SiteId,
};
use patrol_mobile::{AlarmState, DeviceStore, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::{Server, run_ok};
use serde_json::{Value, json};

const SITE: &str = "site-1";

/// A phone enrolled on the site with a code from the administrator, its guard's shift started.
async fn phone(
    server: &Server,
    dir: &std::path::Path,
    name: &str,
    guard: &str,
) -> Result<DeviceStore> {
    let code = server.enrollment_code(SITE)?;
    let enrollment = SyncClient::new(&server.url)?.enroll(&code).await?;
    ensure!(enrollment.site == SiteId::new(SITE)?);
    let mut store = DeviceStore::create_enrolled(
        dir.join(format!("{name}.db")),
        enrollment,
        StoreOptions::default(),
    )?;
    store.start_shift(GuardId::new(guard)?)?;
    Ok(store)
}

async fn sync(server: &Server, store: &mut DeviceStore) -> Result<()> {
    SyncClient::new(&server.url)?.sync(store).await?;
    Ok(())
}

/// A control-room call with a user's token; returns the status and the JSON body.
async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

fn notes(v: &Value) -> Vec<String> {
    v["notes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_and_the_control_room_work_incidents_config_and_alarms_together() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let http = reqwest::Client::new();
    let api = format!("{}/api/v1/sites/{SITE}", server.url);
    let admin = server.admin_token.as_str();
    // The control room's operator, who works the site's incidents and alarms.
    let anna = run_ok(&mut server.control(
        admin,
        &[
            "user", "create", "anna", "--role", "operator", "--site", SITE,
        ],
    )?)?
    .trim()
    .to_owned();
    let anna = anna.as_str();

    // The administrator sets up the site: two checkpoints with tags, one tour.
    let config = json!({
        "base_version": 0,
        "checkpoints": [
            {"id": "cp-1", "name": "Car park B2", "tags": ["04:a1"], "location": null, "radius_m": null},
            {"id": "cp-2", "name": "Loading bay", "tags": ["04:b2"], "location": null, "radius_m": null}
        ],
        "tours": [{
            "id": "night", "name": "Night round", "checkpoints": ["cp-1", "cp-2"],
            "windows": [{"start_ms": 1000, "end_ms": 4102444800000_i64}], "grace_min": 10
        }],
        "post_orders": [{"id": "po-1", "title": "Fire doors", "text": "Check every fire door."}]
    });
    let (status, body) = call(
        &http,
        admin,
        reqwest::Method::PUT,
        format!("{api}/config"),
        Some(config.clone()),
    )
    .await?;
    ensure!(status == 200, "config PUT: {status} {body}");
    // A second write from the same base version is refused: it would overwrite unseen work.
    let (status, _) = call(
        &http,
        admin,
        reqwest::Method::PUT,
        format!("{api}/config"),
        Some(config),
    )
    .await?;
    ensure!(
        status == 409,
        "a stale config write must be refused, got {status}"
    );

    // Guard 1's phone syncs once and then works offline.
    let mut guard1 = phone(&server, dir.path(), "guard1", "guard-1").await?;
    sync(&server, &mut guard1).await?;
    ensure!(guard1.site_config()?.map(|c| c.version) == Some(1));
    let cp = guard1.checkpoint_for_tag("04:a1")?;
    ensure!(cp.as_str() == "cp-1");
    guard1.scan(
        Scan {
            checkpoint: cp,
            method: ScanMethod::Nfc {
                tag: "04:a1".into(),
            },
            location: None,
            note: None,
        },
        RecordOptions::default(),
    )?;
    let stray = Scan {
        checkpoint: guard1.checkpoint_for_tag("04:ff")?,
        method: ScanMethod::Nfc {
            tag: "04:ff".into(),
        },
        location: None,
        note: None,
    };
    let stray = guard1.scan(stray, RecordOptions::default())?;
    let flags = guard1.event_flags(stray)?.unwrap_or_default();
    ensure!(flags.contains(&EventFlag::UnknownTag), "{flags:?}");
    let now = chrono_now_ms();
    let progress = guard1.tour_progress("night", now)?;
    let states: Vec<CheckpointState> = progress[0].checkpoints.iter().map(|(_, s)| *s).collect();
    ensure!(
        matches!(
            states[..],
            [CheckpointState::Done { .. }, CheckpointState::Due]
        ),
        "tour progress offline: {states:?}"
    );

    let incident = guard1.report_incident(
        IncidentReport {
            incident: IncidentId::generate(),
            category: IncidentCategory::Theft,
            severity: Severity::Medium,
            description: "bicycle taken from the rack at B2".into(),
            location: None,
        },
        Vec::new(),
        RecordOptions::default(),
    )?;
    let panic = guard1.record(
        EventBody::Panic { location: None },
        RecordOptions::default(),
    )?;
    sync(&server, &mut guard1).await?;
    ensure!(matches!(guard1.alarms()?[0].state, AlarmState::Delivered));

    // The control room sees the incident and works it ...
    let (status, list) = call(
        &http,
        anna,
        reqwest::Method::GET,
        format!("{api}/incidents"),
        None,
    )
    .await?;
    ensure!(status == 200, "incidents: {status} {list}");
    let listed = list
        .as_array()
        .or_else(|| list["incidents"].as_array())
        .ok_or_else(|| anyhow!("no list: {list}"))?;
    ensure!(
        listed
            .iter()
            .any(|i| i["id"] == incident.to_string().as_str()),
        "{list}"
    );
    let act = |body: Value| {
        let http = http.clone();
        let url = format!("{api}/incidents/{incident}/actions");
        async move { call(&http, anna, reqwest::Method::POST, url, Some(body)).await }
    };
    let (status, body) = act(json!({"action": "acknowledge"})).await?;
    ensure!(status == 200, "acknowledge: {status} {body}");
    let (status, body) = act(json!({"action": "add_note", "text": "checking the cameras"})).await?;
    ensure!(status == 200, "note: {status} {body}");
    let (status, body) = act(json!({"action": "assign", "to": "guard-2"})).await?;
    ensure!(status == 200, "assign: {status} {body}");
    // ... a rule the status lattice refuses is a clear conflict, and changes nothing.
    let (status, _) = act(json!({"action": "reopen"})).await?;
    ensure!(
        status == 409,
        "reopening an open incident must be refused, got {status}"
    );
    let (status, _) = act(json!({"action": "fly"})).await?;
    ensure!(
        (400..500).contains(&status),
        "an unknown action must be a 4xx, got {status}"
    );

    // ... while, offline on the phone, the guard adds a note and raises the severity.
    guard1.act_on_incident(incident, IncidentAction::AddNote("the lock was cut".into()))?;
    guard1.act_on_incident(incident, IncidentAction::SetSeverity(Severity::High))?;
    sync(&server, &mut guard1).await?;

    let (status, room) = call(
        &http,
        anna,
        reqwest::Method::GET,
        format!("{api}/incidents/{incident}"),
        None,
    )
    .await?;
    ensure!(status == 200, "incident: {status} {room}");
    let on_phone = guard1
        .incident(incident)?
        .ok_or_else(|| anyhow!("phone lost the incident"))?;
    ensure!(!on_phone.pending, "the phone's edits are acknowledged");
    ensure!(on_phone.state.status == IncidentStatus::Acknowledged);
    ensure!(on_phone.state.severity == Some(Severity::High));
    ensure!(on_phone.state.assignee.as_deref() == Some("guard-2"));
    ensure!(
        room["status"] == "acknowledged" && room["severity"] == "high",
        "{room}"
    );
    ensure!(room["assignee"] == "guard-2", "{room}");
    let mut room_notes = notes(&room);
    room_notes.sort();
    let mut phone_notes: Vec<String> = on_phone
        .state
        .notes
        .iter()
        .map(|n| n.text.clone())
        .collect();
    phone_notes.sort();
    ensure!(
        room_notes == ["checking the cameras", "the lock was cut"],
        "{room_notes:?}"
    );
    ensure!(
        phone_notes == room_notes,
        "phone {phone_notes:?} vs room {room_notes:?}"
    );

    // The incident (assigned to guard 2) reaches guard 2's phone, on shift, at its next sync.
    let mut guard2 = phone(&server, dir.path(), "guard2", "guard-2").await?;
    sync(&server, &mut guard2).await?;
    let assigned = guard2
        .incident(incident)?
        .ok_or_else(|| anyhow!("not delivered to the assignee"))?;
    ensure!(assigned.state == on_phone.state);

    // The control room acknowledges the panic; the phone shows it at its next sync.
    let (status, body) = call(
        &http,
        anna,
        reqwest::Method::POST,
        format!("{api}/alarms/{panic}/acknowledge"),
        Some(json!({})),
    )
    .await?;
    ensure!(status == 200, "alarm ack: {status} {body}");
    sync(&server, &mut guard1).await?;
    ensure!(
        matches!(&guard1.alarms()?[0].state, AlarmState::Acknowledged { by, .. } if by == "anna"),
        "{:?}",
        guard1.alarms()?
    );
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
