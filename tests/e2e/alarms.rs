//! A panic nobody answers, through the real server and phone: with the server's escalation
//! time cut to a second (`--alarm-escalation-after-secs`), a guard's panic left unacknowledged
//! is escalated: the live stream carries `alarm_escalated`, `patrol control alarms` shows it
//! escalated, and `/metrics` counts it. An operator then acknowledges it with
//! `patrol control ack-alarm`: the stream carries `alarm_acknowledged` at once, the panic's
//! latencies are counted, and the phone learns of the acknowledgement at its next sync.

use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use patrol_core::{EventBody, GuardId, SiteId};
use patrol_e2e::{metrics, next_sse, open_stream};
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
    let code = server.enrollment_code(SITE)?;
    let client = SyncClient::new(&server.url)?;
    let enrollment = client.enroll(&code).await?;
    ensure!(enrollment.site == SiteId::new(SITE)?);
    let mut phone = DeviceStore::create_enrolled(
        dir.path().join("phone.db"),
        enrollment,
        StoreOptions::default(),
    )?;
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
