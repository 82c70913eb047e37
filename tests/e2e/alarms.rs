//! A panic nobody answers, through the real server and phone: with the server's escalation
//! time cut to a second (`--alarm-escalation-after-secs`), a guard's panic left unacknowledged
//! is escalated: the live stream carries `alarm_escalated`, `patrol control alarms` shows it
//! escalated, and `/metrics` counts it. An operator then acknowledges it with
//! `patrol control ack-alarm`: the stream carries `alarm_acknowledged` at once, the panic's
//! latencies are counted, and the phone learns of the acknowledgement at its next sync.

use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use patrol_core::{EventBody, GuardId};
use patrol_e2e::{enrolled_phone, metrics, next_sse, open_stream};
use patrol_mobile::clock::ManualClock;
use patrol_mobile::{AlarmState, DeviceStore, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::{Server, run_ok};

const SITE: &str = "site-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_panic_is_escalated_then_acknowledged_on_the_live_stream() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &dir.path().join("server"),
        &[SITE],
        false,
        &[
            "--alarm-escalation-after-secs",
            "1",
            "--alarm-check-secs",
            "1",
        ],
    )?;
    let (mut phone, client) = enrolled_phone(
        &server,
        SITE,
        &dir.path().join("phone.db"),
        StoreOptions::default(),
    )
    .await?;
    phone.start_shift(GuardId::new("anna")?)?;
    let mut live = open_stream(&server, SITE).await?;
    let mut buf = String::new();

    let panic = phone
        .record(
            EventBody::Panic { location: None },
            RecordOptions::default(),
        )?
        .to_string();
    client.sync(&mut phone).await?;

    let escalated = next_sse(&mut live, &mut buf, Some("alarm_escalated"), |d| {
        d["event_id"] == panic.as_str()
    })
    .await?;
    ensure!(
        escalated["site_id"] == SITE
            && escalated["guard"] == "anna"
            && escalated["open"] == true
            && escalated["escalated_at"].is_string(),
        "{escalated}"
    );
    let table =
        run_ok(&mut server.control(&server.admin_token, &["alarms", "--site", SITE, "--open"])?)?;
    let row = table
        .lines()
        .find(|l| l.starts_with(&panic))
        .ok_or_else(|| anyhow!("the panic is not listed open:\n{table}"))?;
    ensure!(row.contains("OPEN, ESCALATED"), "{table}");
    let http = reqwest::Client::new();
    let m = metrics(&http, &server).await?;
    ensure!(m.get("patrol_alarm_escalations_total") == Some(&1), "{m:?}");

    run_ok(&mut server.control(&server.admin_token, &["ack-alarm", "--site", SITE, &panic])?)?;
    let acknowledged = next_sse(&mut live, &mut buf, Some("alarm_acknowledged"), |d| {
        d["event_id"] == panic.as_str()
    })
    .await?;
    ensure!(
        acknowledged["open"] == false
            && acknowledged["acknowledged_by"].is_string()
            && acknowledged["escalated_at"] == escalated["escalated_at"],
        "{acknowledged}"
    );
    let m = metrics(&http, &server).await?;
    ensure!(
        m.get("patrol_panic_acknowledgement_seconds_count") == Some(&1)
            && m.get("patrol_panic_delivery_seconds_count") == Some(&1),
        "{m:?}"
    );
    // Escalated once, however many checks passed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let m = metrics(&http, &server).await?;
    ensure!(m.get("patrol_alarm_escalations_total") == Some(&1), "{m:?}");

    client.sync(&mut phone).await?;
    let alarms = phone.alarms()?;
    ensure!(
        alarms
            .iter()
            .any(|a| a.event.to_string() == panic
                && matches!(a.state, AlarmState::Acknowledged { .. })),
        "the phone has not learnt of the acknowledgement: {alarms:?}"
    );
    Ok(())
}

/// A guard working alone misses a check-in: the phone says so itself and records the miss,
/// which its next sync takes through the panic lane; the server, seeing no check-in by the
/// deadline and its grace, lists the timer overdue (`patrol control check-ins`), counts it and
/// announces `check_in_overdue` on the live stream, where the phone's `checkin_missed` event
/// arrives too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_worker_s_missed_check_in_alarms_the_phone_and_the_control_room() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &dir.path().join("server"),
        &[SITE],
        false,
        &["--alarm-check-secs", "1"],
    )?;
    let code = server.enrollment_code(SITE)?;
    let client = SyncClient::new(&server.url)?;
    let enrollment = client.enroll(&code).await?;
    let now = chrono::Utc::now().timestamp_millis();
    // The guard started a one-minute timer four minutes ago (the phone's clock then).
    let clock = std::sync::Arc::new(ManualClock::new(now - 4 * 60_000));
    let mut phone = DeviceStore::create_enrolled(
        dir.path().join("phone.db"),
        enrollment,
        StoreOptions {
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )?;
    let device = phone.device_id().to_string();
    phone.start_shift(GuardId::new("anna")?)?;
    phone.start_check_in_timer(1)?;
    let status = phone
        .check_in_status()?
        .ok_or_else(|| anyhow!("no timer"))?;
    ensure!(!status.missed, "{status:?}");

    // Now: the phone alarms its guard, offline, and records the miss once.
    clock.set(now);
    let status = phone
        .check_in_status()?
        .ok_or_else(|| anyhow!("no timer"))?;
    ensure!(
        status.missed && status.recorded_miss.is_some(),
        "{status:?}"
    );
    ensure!(phone.status()?.urgent, "the miss goes first");

    let mut live = open_stream(&server, SITE).await?;
    let mut buf = String::new();
    client.sync(&mut phone).await?;
    let missed = next_sse(&mut live, &mut buf, Some("event"), |d| {
        d["kind"] == "checkin_missed"
    })
    .await?;
    ensure!(missed["device_id"] == device.as_str(), "{missed}");
    let overdue = next_sse(&mut live, &mut buf, Some("check_in_overdue"), |d| {
        d["device_id"] == device.as_str()
    })
    .await?;
    ensure!(
        overdue["guard"] == "anna" && overdue["every_min"] == 1 && overdue["overdue"] == true,
        "{overdue}"
    );
    let table = run_ok(&mut server.control(&server.admin_token, &["check-ins", "--site", SITE])?)?;
    ensure!(
        table
            .lines()
            .any(|l| l.contains("anna") && l.contains("OVERDUE")),
        "{table}"
    );
    let http = reqwest::Client::new();
    let m = metrics(&http, &server).await?;
    ensure!(
        m.get("patrol_check_ins_overdue_total") == Some(&1)
            && m.get("patrol_sync_panic_total") == Some(&1),
        "{m:?}"
    );

    // The guard checks in: the timer runs again, on time.
    phone.check_in()?;
    client.sync(&mut phone).await?;
    let view: serde_json::Value = http
        .get(format!("{}/api/v1/sites/{SITE}/check-ins", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await?
        .json()
        .await?;
    ensure!(view["check_ins"][0]["overdue"] == false, "{view}");
    Ok(())
}
