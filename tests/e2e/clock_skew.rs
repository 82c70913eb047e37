//! A phone whose clock is 3 hours slow, beside one whose clock is right, syncing to the real
//! server: the control room's pull shows the slow phone's scan at its corrected time (the true
//! time of the scan, give or take the sync's time in transit) beside its raw device time,
//! flagged `clock_skew` in `--json` and in words in the table; the feed filtered by
//! `flag=clock_skew` holds the slow phone's events and none of the other's.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, ensure};
use patrol_core::{CheckpointId, GuardId, Scan, ScanMethod};
use patrol_mobile::clock::{Clock, ClockReading, SystemClock};
use patrol_mobile::{DeviceStore, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::{Server, run_ok};
use serde_json::Value;

const SITE: &str = "site-1";
const HOUR: i64 = 3_600_000;

/// The system's clocks with the wall clock `skew_ms` off.
#[derive(Debug)]
struct SkewedClock {
    skew_ms: i64,
}

impl Clock for SkewedClock {
    fn now(&self) -> ClockReading {
        let reading = SystemClock.now();
        ClockReading {
            wall_ms: reading.wall_ms + self.skew_ms,
            ..reading
        }
    }
}

/// Enrolls a phone whose clock is `skew_ms` off, starts a shift and scans `checkpoint`.
async fn phone_scanning(
    server: &Server,
    dir: &std::path::Path,
    name: &str,
    skew_ms: i64,
    checkpoint: &str,
) -> Result<(DeviceStore, SyncClient, String)> {
    let client = SyncClient::new(&server.url)?;
    let enrollment = client.enroll(&server.enrollment_code(SITE)?).await?;
    let mut store = DeviceStore::create_enrolled(
        dir.join(format!("{name}.db")),
        enrollment,
        StoreOptions {
            clock: Some(Arc::new(SkewedClock { skew_ms })),
            ..StoreOptions::default()
        },
    )?;
    store.start_shift(GuardId::new(name)?)?;
    let id = store.scan(
        Scan {
            checkpoint: CheckpointId::new(checkpoint)?,
            method: ScanMethod::Nfc {
                tag: format!("tag-{checkpoint}"),
            },
            location: None,
            note: None,
        },
        RecordOptions::default(),
    )?;
    Ok((store, client, id.to_string()))
}

fn ms(event: &Value, field: &str) -> Result<i64> {
    let text = event[field]
        .as_str()
        .ok_or_else(|| anyhow!("no {field} in {event}"))?;
    Ok(chrono::DateTime::parse_from_rfc3339(text)?.timestamp_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_phone_is_pulled_at_its_corrected_time_and_flagged() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let before_ms = chrono::Utc::now().timestamp_millis();
    let (mut slow, slow_client, slow_scan) =
        phone_scanning(&server, dir.path(), "anna", -3 * HOUR, "cp-1").await?;
    let (mut right, right_client, right_scan) =
        phone_scanning(&server, dir.path(), "ben", 0, "cp-2").await?;
    slow_client.sync(&mut slow).await?;
    right_client.sync(&mut right).await?;

    let events = patrol_e2e::control_pull(&server, SITE, 100)?;
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["id"] == id)
            .ok_or_else(|| anyhow!("event {id} not pulled"))
    };
    let scan = by_id(&slow_scan)?;
    let (device, corrected, received) = (
        ms(scan, "device_time")?,
        ms(scan, "corrected_time")?,
        ms(scan, "received_at")?,
    );
    // The raw device time stays 3 hours behind; the corrected time lies between the scan's
    // true time and its receipt, moved by the offset the flag gives.
    ensure!(
        device < before_ms - 2 * HOUR,
        "device time kept raw: {scan}"
    );
    ensure!(
        before_ms <= corrected && corrected <= received,
        "corrected time {corrected} not between {before_ms} and the receipt {received}: {scan}"
    );
    let flags = scan["flags"].as_array().context("no flags")?;
    ensure!(
        flags.len() == 1 && flags[0]["flag"] == "clock_skew",
        "{scan}"
    );
    let offset = flags[0]["offset_ms"].as_i64().context("no offset")?;
    ensure!(offset >= 3 * HOUR, "{scan}");
    ensure!(corrected == device + offset, "{scan}");
    ensure!(by_id(&right_scan)?["flags"] == serde_json::json!([]));

    // The feed filtered by the flag: the slow phone's shift start and scan, nothing of the
    // right one's.
    let page: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/sites/{SITE}/events", server.url))
        .query(&[("flag", "clock_skew")])
        .bearer_auth(&server.admin_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let kinds: Vec<(&str, &str)> = page["events"]
        .as_array()
        .context("no events")?
        .iter()
        .map(|e| {
            (
                e["guard_id"].as_str().unwrap_or(""),
                e["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    ensure!(
        kinds == [("anna", "shift_started"), ("anna", "checkpoint_scanned")],
        "{kinds:?}"
    );

    // The table says it in words.
    let table = run_ok(&mut server.control(&server.admin_token, &["pull", "--site", SITE])?)?;
    let line = table
        .lines()
        .find(|l| l.contains("cp-1"))
        .ok_or_else(|| anyhow!("no scan of cp-1 in {table}"))?;
    ensure!(line.contains("clock 3 h 0 min slow"), "{table}");
    Ok(())
}
