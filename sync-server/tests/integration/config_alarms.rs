//! Site configuration versions and panic alarm acknowledgements: written by the control room,
//! delivered to phones in the sync exchange.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use patrol_core::protocol::SyncRequest;
use patrol_core::siteconfig::SiteConfig;
use patrol_core::{EventBody, EventId};
use serde_json::{Value, json};

use patrol_server::store::{AlarmChangeKind, ESCALATION_LOOKBACK_MS, StoreError};

use crate::common::{Backend, SITE, TestResult, TestServer};

fn config_uri() -> String {
    format!("/api/v1/sites/{SITE}/config")
}

fn config_body(base_version: u64, tag: &str) -> Value {
    json!({
        "base_version": base_version,
        "checkpoints": [
            {"id": "cp-1", "name": "Car park B2", "tags": [tag],
             "location": {"lat": 51.5, "lon": -0.12, "accuracy_m": null}, "radius_m": 15.0},
            {"id": "cp-2", "name": "Loading bay", "tags": ["QR-2"], "location": null, "radius_m": null}
        ],
        "tours": [{
            "id": "night", "name": "Night round", "checkpoints": ["cp-1", "cp-2"],
            "windows": [{"start_ms": 1000, "end_ms": 2000}], "grace_min": 10
        }],
        "post_orders": [{"id": "po-1", "title": "Fire doors", "text": "Check every fire door."}]
    })
}

fn with_config_version(request: SyncRequest, config_version: u64) -> SyncRequest {
    SyncRequest {
        config_version,
        ..request
    }
}

async fn configuration_versions_are_checked_and_delivered_once(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;

    let (status, empty) = server.get_json(&config_uri()).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        empty,
        json!({"site": SITE, "version": 0, "time_zone": "UTC", "checkpoints": [], "tours": [],
               "post_orders": [], "created_at": null,
               "rules": {"clock_skew_threshold_secs": 120, "padding_within_min": 10,
                         "max_speed_kmh": 25, "cloned_tag_within_secs": 60,
                         "no_contact_after_min": 30, "shift_overdue_after_hours": 12,
                         "finalise_after_hours": 6, "alarm_escalation_after_secs": 120}})
    );
    assert!(server.sync(&phone.request(vec![])).await?.config.is_none());

    let (status, v1) = server
        .send_json("PUT", &config_uri(), &config_body(0, "04:A1"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{v1}");
    assert_eq!(
        (v1["version"].as_u64(), v1["site"].as_str()),
        (Some(1), Some(SITE))
    );
    assert_eq!(v1["checkpoints"][0]["tags"], json!(["04:A1"]));
    // The form of before schedules (no time zone, absolute windows) is read as it was, in UTC.
    assert_eq!(v1["time_zone"], "UTC");
    assert_eq!(
        v1["tours"][0]["windows"],
        json!([{"start_ms": 1000, "end_ms": 2000}])
    );
    assert_eq!(v1["tours"][0]["schedule"], json!([]));
    assert!(v1["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let (_, got) = server.get_json(&config_uri()).await?;
    assert_eq!(got, v1);

    // A write from a stale base is refused: it would overwrite version 1 unseen.
    let before = server.snapshot().await?;
    let (status, body) = server
        .send_json("PUT", &config_uri(), &config_body(0, "04:A9"))
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("stale_config"))
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("version 1")),
        "{body}"
    );
    assert_eq!(server.snapshot().await?, before);

    let (status, v2) = server
        .send_json("PUT", &config_uri(), &config_body(1, "04:A2"))
        .await?;
    assert_eq!((status, v2["version"].as_u64()), (StatusCode::OK, Some(2)));

    // A phone with no configuration, or an older one, gets the latest; one that has it, none.
    for held in [0, 1] {
        let resp = server
            .sync(&with_config_version(phone.request(vec![]), held))
            .await?;
        let update = resp.config.ok_or("no config delivered")?;
        assert_eq!(update.version, 2);
        let config = SiteConfig::decode(&update.config)?;
        assert_eq!((config.version, config.site.as_str()), (2, SITE));
        assert_eq!(
            config.checkpoint_for_tag("04:A2").map(|c| c.id.as_str()),
            Some("cp-1")
        );
        assert_eq!(config.tours[0].grace_min, 10);
        assert_eq!(
            serde_json::to_value(&config)?["post_orders"],
            v2["post_orders"]
        );
    }
    for held in [2, 3] {
        let resp = server
            .sync(&with_config_version(phone.request(vec![]), held))
            .await?;
        assert!(resp.config.is_none(), "holding {held}");
    }
    Ok(())
}

async fn bad_configurations_get_a_clear_4xx_and_change_nothing(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    server
        .send_json("PUT", &config_uri(), &config_body(0, "04:A1"))
        .await?;
    let before = server.snapshot().await?;

    let mut unknown_checkpoint = config_body(1, "04:A1");
    unknown_checkpoint["tours"][0]["checkpoints"] = json!(["cp-1", "cp-9"]);
    let mut duplicate_tag = config_body(1, "QR-2");
    duplicate_tag["checkpoints"][0]["tags"] = json!(["QR-2"]);
    let mut backwards = config_body(1, "04:A1");
    backwards["tours"][0]["windows"] = json!([{"start_ms": 5, "end_ms": 1}]);
    let mut bad_id = config_body(1, "04:A1");
    bad_id["checkpoints"][0]["id"] = json!("cp 1");
    let mut typo = config_body(1, "04:A1");
    typo["post_order"] = json!([]);
    let mut no_base = config_body(1, "04:A1");
    no_base.as_object_mut().map(|o| o.remove("base_version"));
    for (name, body, code) in [
        ("unknown checkpoint", unknown_checkpoint, "invalid_config"),
        ("duplicate tag", duplicate_tag, "invalid_config"),
        ("backwards window", backwards, "invalid_config"),
        ("bad checkpoint id", bad_id, "invalid_json"),
        ("unknown field", typo, "invalid_json"),
        ("no base version", no_base, "invalid_json"),
        ("not an object", json!([1, 2]), "invalid_json"),
    ] {
        let (status, resp) = server.send_json("PUT", &config_uri(), &body).await?;
        assert_eq!(
            (status, resp["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{name}: {resp}"
        );
    }
    let req = Request::put(config_uri())
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::AUTHORIZATION, format!("Bearer {}", server.admin))
        .body(Body::from(config_body(1, "04:A1").to_string()))?;
    let (status, _, _) = server.call(req).await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, resp) = server
        .send_json(
            "PUT",
            "/api/v1/sites/nowhere/config",
            &config_body(0, "04:A1"),
        )
        .await?;
    assert_eq!(
        (status, resp["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_site"))
    );
    let (status, _) = server.get_json("/api/v1/sites/nowhere/config").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(server.snapshot().await?, before);
    Ok(())
}

/// The site's zone and a tour written as people say it, beside one with a one-off window.
fn scheduled_body(base_version: u64) -> Value {
    let mut body = config_body(base_version, "04:A1");
    body["time_zone"] = json!("Europe/London");
    body["tours"] = json!([
        {"id": "night", "name": "Night round", "checkpoints": ["cp-1", "cp-2"], "grace_min": 15,
         "schedule": [{"every_min": 90, "from": "22:00", "to": "06:00"}]},
        {"id": "weekend", "name": "Weekend checks", "checkpoints": ["cp-2"], "grace_min": 10,
         "schedule": [{"at": ["23:00", "01:00", "03:00", "05:00"], "days": ["sat", "sun"],
                       "window_min": 30}],
         "windows": [{"start_ms": 1000, "end_ms": 2000}]}
    ]);
    body
}

async fn a_schedule_and_time_zone_round_trip_and_reach_phones(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let (status, stored) = server
        .send_json("PUT", &config_uri(), &scheduled_body(0))
        .await?;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["time_zone"], "Europe/London");
    // Written back in full: `days` spelled out where it was left to its default.
    assert_eq!(
        stored["tours"][0]["schedule"],
        json!([{"every_min": 90, "from": "22:00", "to": "06:00",
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}])
    );
    assert_eq!(
        stored["tours"][1]["schedule"],
        json!([{"at": ["23:00", "01:00", "03:00", "05:00"], "days": ["sat", "sun"],
                "window_min": 30}])
    );
    let (_, got) = server.get_json(&config_uri()).await?;
    assert_eq!(got, stored);

    // The phone gets the same configuration, and with it the same windows.
    let update = server
        .sync(&phone.request(vec![]))
        .await?
        .config
        .ok_or("no config delivered")?;
    let config = SiteConfig::decode(&update.config)?;
    let mut as_served = serde_json::to_value(&config)?;
    as_served["created_at"] = stored["created_at"].clone();
    assert_eq!(as_served, stored);
    let night = config.tour("night").ok_or("no night tour")?;
    let ms = |t: &str| -> Result<i64, chrono::ParseError> {
        Ok(chrono::DateTime::parse_from_rfc3339(t)?.timestamp_millis())
    };
    // Saturday 24 October 2026, the night the clocks go back: 22:00 BST to 06:00 GMT.
    let windows = night.windows_between(
        config.time_zone,
        ms("2026-10-24T12:00:00Z")?,
        ms("2026-10-25T12:00:00Z")?,
    )?;
    assert_eq!(windows.len(), 6);
    assert_eq!(windows[0].start_ms, ms("2026-10-24T21:00:00Z")?);
    assert_eq!(windows[5].end_ms, ms("2026-10-25T06:00:00Z")?);
    Ok(())
}

async fn a_bad_schedule_or_zone_is_refused_with_the_reason(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let before = server.snapshot().await?;
    let mut unknown_zone = scheduled_body(0);
    unknown_zone["time_zone"] = json!("Europe/Lndon");
    let mut bad_time = scheduled_body(0);
    bad_time["tours"][0]["schedule"][0]["from"] = json!("25:00");
    let mut every_zero = scheduled_body(0);
    every_zero["tours"][0]["schedule"][0]["every_min"] = json!(0);
    let mut unordered = scheduled_body(0);
    unordered["tours"][1]["schedule"][0]["at"] = json!(["23:00", "05:00", "01:00"]);
    let mut misspelt = scheduled_body(0);
    let rules = misspelt["tours"][0]
        .as_object_mut()
        .and_then(|t| t.remove("schedule"))
        .ok_or("no schedule")?;
    misspelt["tours"][0]["schedules"] = rules;
    for (name, body, code, says) in [
        ("unknown zone", unknown_zone, "invalid_json", "Europe/Lndon"),
        ("25:00", bad_time, "invalid_json", "25:00"),
        ("every 0 minutes", every_zero, "invalid_config", "every_min"),
        ("unordered at", unordered, "invalid_config", "order"),
        ("misspelt schedule", misspelt, "invalid_json", "schedules"),
    ] {
        let (status, resp) = server.send_json("PUT", &config_uri(), &body).await?;
        assert_eq!(
            (status, resp["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{name}: {resp}"
        );
        assert!(
            resp["message"].as_str().is_some_and(|m| m.contains(says)),
            "{name}: {resp}"
        );
    }
    assert_eq!(server.snapshot().await?, before);
    Ok(())
}

fn ack_uri(site: &str, event: impl std::fmt::Display) -> String {
    format!("/api/v1/sites/{site}/alarms/{event}/acknowledge")
}

fn awaiting(request: SyncRequest, awaiting_ack: Vec<EventId>) -> SyncRequest {
    SyncRequest {
        awaiting_ack,
        ..request
    }
}

async fn alarm_acks_are_idempotent_and_reach_only_the_raising_phone(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut alice = server.phone("guard-a").await?;
    let mut bob = server.phone("guard-b").await?;
    let alice_panic = alice.record(EventBody::Panic { location: None })?;
    let alice_scan = alice.scan("cp-1")?;
    let bob_panic = bob.record(EventBody::Panic { location: None })?;
    server.sync(&alice.push_request()?).await?;
    server.sync(&bob.push_request()?).await?;

    // Not acknowledged yet: nothing to deliver.
    let resp = server
        .sync(&awaiting(alice.request(vec![]), vec![alice_panic]))
        .await?;
    assert!(resp.alarm_acks.is_empty());

    let (status, ack) = server
        .send_json(
            "POST",
            &ack_uri(SITE, alice_panic),
            &json!({"by": "op-anna"}),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["event_id"], alice_panic.to_string());
    assert_eq!(ack["device_id"], alice.device.to_string());
    assert_eq!(
        (ack["site_id"].as_str(), ack["by"].as_str()),
        (Some(SITE), Some("op-anna"))
    );
    // Again, by someone else: the first acknowledgement stands.
    let before = server.snapshot().await?;
    let (status, again) = server
        .send_json(
            "POST",
            &ack_uri(SITE, alice_panic),
            &json!({"by": "op-bob"}),
        )
        .await?;
    assert_eq!((status, &again), (StatusCode::OK, &ack));
    assert_eq!(server.snapshot().await?, before);

    // Alice's phone learns of it; Bob's, asking about Alice's alarm and his own, learns nothing.
    let resp = server
        .sync(&awaiting(
            alice.request(vec![]),
            vec![alice_panic, bob_panic, alice_panic],
        ))
        .await?;
    assert_eq!(resp.alarm_acks.len(), 1);
    assert_eq!(
        (resp.alarm_acks[0].event, resp.alarm_acks[0].by.as_str()),
        (alice_panic, "op-anna")
    );
    let resp = server
        .sync(&awaiting(bob.request(vec![]), vec![alice_panic, bob_panic]))
        .await?;
    assert!(resp.alarm_acks.is_empty(), "{:?}", resp.alarm_acks);

    // Only panics of this site's feed can be acknowledged.
    for (uri, body, status, code) in [
        (
            ack_uri(SITE, alice_scan),
            json!({"by": "a"}),
            StatusCode::NOT_FOUND,
            "unknown_alarm",
        ),
        (
            ack_uri(SITE, EventId::generate()),
            json!({"by": "a"}),
            StatusCode::NOT_FOUND,
            "unknown_alarm",
        ),
        (
            ack_uri("nowhere", bob_panic),
            json!({"by": "a"}),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
        (
            ack_uri(SITE, "42"),
            json!({"by": "a"}),
            StatusCode::BAD_REQUEST,
            "invalid_event_id",
        ),
        (
            ack_uri(SITE, bob_panic),
            json!({"by": "a", "x": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ] {
        let (got, resp) = server.send_json("POST", &uri, &body).await?;
        assert_eq!(
            (got, resp["error"].as_str()),
            (status, Some(code)),
            "{uri} {body}: {resp}"
        );
    }
    // Nobody acknowledges in another user's name.
    let (got, resp) = server
        .send_json_as(
            &server.admin,
            "POST",
            &ack_uri(SITE, bob_panic),
            &json!({"by": "op-bob"}),
        )
        .await?;
    assert_eq!(
        (got, resp["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(server.snapshot().await?, before);

    // Bob's own acknowledged alarm reaches him.
    server
        .send_json("POST", &ack_uri(SITE, bob_panic), &json!({"by": "op-bob"}))
        .await?;
    let resp = server
        .sync(&awaiting(bob.request(vec![]), vec![bob_panic]))
        .await?;
    assert_eq!(resp.alarm_acks.len(), 1);
    assert_eq!(resp.alarm_acks[0].by, "op-bob");
    Ok(())
}

/// The alarms view lists every panic of the site, the latest first, with when it was raised
/// (the phone's time and corrected), received and acknowledged; `open=true` only those nobody
/// has acknowledged; another site's and other events are not there.
async fn the_alarms_view_lists_panics_open_and_acknowledged(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut alice = server.phone("guard-a").await?;
    let mut bob = server.phone("guard-b").await?;
    let t = crate::common::crate_now_ms() - 60_000;
    let alice_panic = alice.record_at(t, EventBody::Panic { location: None })?;
    alice.scan("cp-1")?;
    let bob_panic = bob.record_at(t + 10_000, EventBody::Panic { location: None })?;
    server.sync(&alice.push_request()?).await?;
    server.sync(&bob.push_request()?).await?;
    server
        .send_json(
            "POST",
            &ack_uri(SITE, alice_panic),
            &json!({"by": "op-anna"}),
        )
        .await?;

    let uri = format!("/api/v1/sites/{SITE}/alarms");
    let (status, all) = server.get_json(&uri).await?;
    assert_eq!(status, StatusCode::OK, "{all}");
    let alarms = all["alarms"].as_array().ok_or("no alarms")?;
    let ids: Vec<&str> = alarms
        .iter()
        .filter_map(|a| a["event_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [bob_panic.to_string(), alice_panic.to_string()],
        "{all}"
    );
    let (bob_alarm, alice_alarm) = (&alarms[0], &alarms[1]);
    assert_eq!(bob_alarm["guard"], "guard-b");
    assert_eq!(bob_alarm["device_id"], bob.device.to_string());
    assert_eq!(
        bob_alarm["raised_at"],
        patrol_core::event::format_time_ms(t + 10_000)
    );
    assert_eq!(
        (
            bob_alarm["open"].as_bool(),
            bob_alarm["acknowledged_by"].is_null()
        ),
        (Some(true), true)
    );
    assert_eq!(
        (
            alice_alarm["open"].as_bool(),
            alice_alarm["acknowledged_by"].as_str()
        ),
        (Some(false), Some("op-anna"))
    );
    for field in ["raised_at_corrected", "received_at", "acknowledged_at"] {
        assert!(alice_alarm[field].is_string(), "{field}: {alice_alarm}");
    }

    let (status, open) = server.get_json(&format!("{uri}?open=true")).await?;
    assert_eq!(status, StatusCode::OK, "{open}");
    let ids: Vec<&str> = open["alarms"]
        .as_array()
        .ok_or("no alarms")?
        .iter()
        .filter_map(|a| a["event_id"].as_str())
        .collect();
    assert_eq!(ids, [bob_panic.to_string()]);

    for (uri, status, code) in [
        (
            format!("{uri}?open=yes"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("{uri}?state=open"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/sites/nowhere/alarms".to_owned(),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
    ] {
        let (got, resp) = server.get_json(&uri).await?;
        assert_eq!((got, resp["error"].as_str()), (status, Some(code)), "{uri}");
    }
    // An operator of another site does not see them.
    let admin = server.admin.clone();
    let (status, _) = server
        .post_json(&admin, "/api/v1/sites", json!({"site_id": "mall-2"}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, user) = server
        .post_json(
            &admin,
            "/api/v1/users",
            json!({"name": "op-mall", "role": "operator", "sites": ["mall-2"]}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let token = user["token"].as_str().ok_or("no token")?;
    let (got, resp) = server.get_json_as(token, &uri).await?;
    assert_eq!(
        (got, resp["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    Ok(())
}

/// A panic nobody acknowledges within the site's time is escalated once, whichever check
/// comes first; one acknowledged in time never is; one received longer ago than the lookback is
/// past escalating. Every first acknowledgement and escalation is a change, read by every
/// instance in order with the alarm as it stands; the alarms view says when it was escalated.
async fn unacknowledged_panics_escalate_once_and_every_change_is_read_in_order(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let site = patrol_core::SiteId::new(SITE)?;
    let (_, latest_before) = store.alarm_changes(None, 0).await?;
    let mut alice = server.phone("guard-a").await?;
    let mut bob = server.phone("guard-b").await?;
    let mut carol = server.phone("guard-c").await?;
    let t = crate::common::crate_now_ms();
    let alice_panic = alice.record_at(t, EventBody::Panic { location: None })?;
    let bob_panic = bob.record_at(t, EventBody::Panic { location: None })?;
    let carol_panic = carol.record_at(t, EventBody::Panic { location: None })?;
    server.sync(&alice.push_request()?).await?;
    server.sync(&bob.push_request()?).await?;
    server.sync(&carol.push_request()?).await?;
    let received = crate::common::crate_now_ms();
    let after_ms = 120_000;

    // Carol's is acknowledged in time; nothing is due yet.
    let first = store
        .acknowledge_alarm(site.clone(), carol_panic, "op-anna".into(), received)
        .await?;
    let carol_ack = first.change.ok_or("a first acknowledgement is a change")?;
    assert_eq!(carol_ack.kind, AlarmChangeKind::Acknowledged);
    assert_eq!(
        carol_ack.alarm.acknowledged,
        Some(("op-anna".to_owned(), received))
    );
    let again = store
        .acknowledge_alarm(site.clone(), carol_panic, "op-bob".into(), received + 5)
        .await?;
    assert_eq!((again.ack.by.as_str(), again.change), ("op-anna", None));
    assert!(
        store
            .escalate_alarms(site.clone(), after_ms, received + 1_000)
            .await?
            .is_empty()
    );

    // Past the site's time: Alice's and Bob's, once.
    let at = received + after_ms + 1_000;
    let escalated = store.escalate_alarms(site.clone(), after_ms, at).await?;
    let ids: Vec<EventId> = escalated.iter().map(|c| c.alarm.event).collect();
    assert_eq!(ids.len(), 2, "{escalated:?}");
    assert!(ids.contains(&alice_panic) && ids.contains(&bob_panic));
    assert!(
        escalated
            .iter()
            .all(|c| c.kind == AlarmChangeKind::Escalated
                && c.site == site
                && c.alarm.escalated_at_ms == Some(at)
                && c.alarm.acknowledged.is_none())
    );
    assert!(
        store
            .escalate_alarms(site.clone(), after_ms, at + 10_000)
            .await?
            .is_empty(),
        "escalated once"
    );
    // Bob's is acknowledged after its escalation: still a change, and still escalated.
    let bob_ack = store
        .acknowledge_alarm(site.clone(), bob_panic, "op-anna".into(), at + 20_000)
        .await?
        .change
        .ok_or("a first acknowledgement is a change")?;
    assert_eq!(bob_ack.alarm.escalated_at_ms, Some(at));

    // Every instance reads the changes in order, after its own cursor.
    let (changes, latest) = store.alarm_changes(Some(latest_before), 100).await?;
    let read: Vec<(AlarmChangeKind, EventId)> =
        changes.iter().map(|c| (c.kind, c.alarm.event)).collect();
    assert_eq!(
        read,
        [
            (AlarmChangeKind::Acknowledged, carol_panic),
            (AlarmChangeKind::Escalated, ids[0]),
            (AlarmChangeKind::Escalated, ids[1]),
            (AlarmChangeKind::Acknowledged, bob_panic),
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(changes.last().map(|c| c.id), Some(latest));
    assert_eq!(store.alarm_changes(None, 100).await?, (vec![], latest));
    let (rest, _) = store.alarm_changes(Some(changes[1].id), 100).await?;
    assert_eq!(rest, changes[2..]);

    // The alarms view says which were escalated, and when.
    let (status, view) = server
        .get_json(&format!("/api/v1/sites/{SITE}/alarms"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{view}");
    let escalated_at = |id: EventId| {
        view["alarms"]
            .as_array()
            .and_then(|l| l.iter().find(|a| a["event_id"] == id.to_string()))
            .map(|a| a["escalated_at"].clone())
    };
    let when = Value::from(patrol_core::event::format_time_ms(at));
    assert_eq!(escalated_at(alice_panic), Some(when.clone()));
    assert_eq!(escalated_at(bob_panic), Some(when));
    assert_eq!(escalated_at(carol_panic), Some(Value::Null));

    // Long past the lookback, a new panic nobody acknowledged is not escalated at all.
    let mut dan = server.phone("guard-d").await?;
    dan.record_at(t, EventBody::Panic { location: None })?;
    server.sync(&dan.push_request()?).await?;
    let day_later = crate::common::crate_now_ms() + ESCALATION_LOOKBACK_MS + 1_000;
    assert!(
        store
            .escalate_alarms(site.clone(), after_ms, day_later)
            .await?
            .is_empty()
    );
    assert!(matches!(
        store
            .escalate_alarms(patrol_core::SiteId::new("nowhere")?, after_ms, at)
            .await,
        Err(StoreError::UnknownSite(_))
    ));
    Ok(())
}

/// Acknowledging through the API counts the panic's latencies once, at its first
/// acknowledgement.
async fn the_first_acknowledgement_counts_the_panic_latencies(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut alice = server.phone("guard-a").await?;
    let raised = crate::common::crate_now_ms() - 30_000;
    let panic = alice.record_at(raised, EventBody::Panic { location: None })?;
    server.sync(&alice.push_request()?).await?;
    for by in ["op-anna", "op-bob"] {
        let (status, body) = server
            .send_json("POST", &ack_uri(SITE, panic), &json!({ "by": by }))
            .await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let m = server.state.metrics.snapshot();
    assert_eq!(m.panic_acknowledgement.count(), 1);
    assert_eq!(m.panic_delivery.count(), 1);
    // Raised about 30 s before its sync (less the test phone's clock offset, a second or two).
    assert!((20_000..60_000).contains(&m.panic_delivery.sum_ms), "{m:?}");
    Ok(())
}

/// Lone workers' check-in timers as the server sees them from the phones' synced events: due a
/// whole interval after the start or the last check-in, overdue once no check-in reached the
/// server by the deadline and its grace (recorded once), ended by a stop or the shift's end.
async fn check_in_timers_turn_overdue_without_a_check_in_and_end_with_the_shift(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let site = patrol_core::SiteId::new(SITE)?;
    const MIN: i64 = 60_000;
    let mut alice = server.phone("guard-a").await?;
    let mut bob = server.phone("guard-b").await?;
    store
        .create_webhook(patrol_server::store::webhooks::NewWebhook {
            site: site.clone(),
            url: "https://alerts.example.org/patrol".into(),
            events: vec!["checkin.overdue".into()],
            secret: "s".into(),
            created_at_ms: 0,
            created_by: "admin".into(),
        })
        .await?;
    let now = crate::common::crate_now_ms();
    alice.record_at(
        now - 40 * MIN,
        EventBody::CheckInTimerStarted { every_min: 30 },
    )?;
    bob.record_at(
        now - 5 * MIN,
        EventBody::CheckInTimerStarted { every_min: 30 },
    )?;
    server.sync(&alice.push_request()?).await?;
    server.sync(&bob.push_request()?).await?;

    let timers = store
        .check_in_timers(site.clone(), now)
        .await?
        .ok_or("the site exists")?;
    let by_guard = |timers: &[patrol_server::store::check_ins::CheckInTimerView], guard: &str| {
        timers.iter().find(|t| t.guard == guard).cloned()
    };
    let a = by_guard(&timers, "guard-a").ok_or("Alice's timer runs")?;
    let b = by_guard(&timers, "guard-b").ok_or("Bob's timer runs")?;
    assert_eq!((a.every_min, a.overdue, b.overdue), (30, true, false));
    assert_eq!(a.shift, alice.shift());
    // Corrected by the phone's measured offset, a few seconds at most here.
    assert!((a.due_ms - (now - 10 * MIN)).abs() < 10_000, "{a:?}");

    let recorded = store.record_overdue_check_ins(site.clone(), now).await?;
    assert_eq!(
        recorded
            .iter()
            .map(|t| t.guard.as_str())
            .collect::<Vec<_>>(),
        ["guard-a"]
    );
    assert!(
        store
            .record_overdue_check_ins(site.clone(), now + MIN)
            .await?
            .is_empty(),
        "recorded once"
    );
    // With its webhook, once.
    let deliveries = store.webhook_deliveries(site.clone(), None, 10).await?;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].event_type, "checkin.overdue");
    assert!(
        deliveries[0].body.contains("guard-a"),
        "{}",
        deliveries[0].body
    );

    // Alice checks in late; Bob stops his timer.
    alice.record_at(now - MIN, EventBody::CheckedIn)?;
    bob.record_at(now - MIN, EventBody::CheckInTimerStopped)?;
    server.sync(&alice.push_request()?).await?;
    server.sync(&bob.push_request()?).await?;
    let timers = store
        .check_in_timers(site.clone(), now)
        .await?
        .ok_or("the site exists")?;
    assert_eq!(timers.len(), 1, "{timers:?}");
    assert!(!timers[0].overdue && timers[0].guard == "guard-a");

    // Her shift ends: no timer runs.
    alice.record_at(now, EventBody::ShiftEnded { note: None })?;
    server.sync(&alice.push_request()?).await?;
    let timers = store.check_in_timers(site.clone(), now + 60 * MIN).await?;
    assert_eq!(timers, Some(vec![]));
    assert_eq!(
        store
            .check_in_timers(patrol_core::SiteId::new("nowhere")?, now)
            .await?,
        None
    );

    // The API lists them for the site's users.
    let (status, view) = server
        .get_json(&format!("/api/v1/sites/{SITE}/check-ins"))
        .await?;
    assert_eq!(
        (status, view["check_ins"].clone()),
        (StatusCode::OK, json!([]))
    );
    Ok(())
}

crate::on_every_backend!(
    check_in_timers_turn_overdue_without_a_check_in_and_end_with_the_shift,
    unacknowledged_panics_escalate_once_and_every_change_is_read_in_order,
    the_first_acknowledgement_counts_the_panic_latencies,
    the_alarms_view_lists_panics_open_and_acknowledged,
    configuration_versions_are_checked_and_delivered_once,
    bad_configurations_get_a_clear_4xx_and_change_nothing,
    a_schedule_and_time_zone_round_trip_and_reach_phones,
    a_bad_schedule_or_zone_is_refused_with_the_reason,
    alarm_acks_are_idempotent_and_reach_only_the_raising_phone,
);
