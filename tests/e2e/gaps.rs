//! Gaps the control room sees, through the real server and phone: a phone starts a shift and
//! syncs, then stays silent past the server's no-contact threshold (seconds here, through
//! `--no-contact-after-secs`): the devices view marks it silent, `patrol control devices` says
//! so in words, and the live stream carries `device_silent`; when it syncs again the stream
//! carries `device_back`. The shift is found with `patrol control shifts` and exported by the
//! id it lists.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use patrol_core::GuardId;
use patrol_e2e::{enrolled_phone, next_sse, open_stream};
use patrol_mobile::StoreOptions;
use patrol_testkit::{Server, run_ok};
use serde_json::Value;

const SITE: &str = "site-1";

/// A guard against a hang; every wait below ends within seconds.
const PATIENCE: Duration = Duration::from_secs(60);

async fn device_view(http: &reqwest::Client, server: &Server, device: &str) -> Result<Value> {
    let view: Value = http
        .get(format!("{}/api/v1/sites/{SITE}/devices", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await?
        .json()
        .await?;
    view["devices"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["device_id"] == device).cloned())
        .ok_or_else(|| anyhow!("device {device} not listed: {view}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_phone_on_shift_is_announced_and_so_is_its_return() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &dir.path().join("server"),
        &[SITE],
        false,
        &["--no-contact-after-secs", "2", "--gap-check-secs", "1"],
    )?;
    let (mut phone, client) = enrolled_phone(
        &server,
        SITE,
        &dir.path().join("phone.db"),
        StoreOptions::default(),
    )
    .await?;
    let device = phone.device_id().to_string();
    let shift = phone.start_shift(GuardId::new("anna")?)?.to_string();
    client.sync(&mut phone).await?;

    let http = reqwest::Client::new();
    let mut live = open_stream(&server, SITE).await?;
    let mut buf = String::new();

    // The phone stays silent: the devices view marks it, the stream announces it.
    let view = tokio::time::timeout(PATIENCE, async {
        loop {
            let view = device_view(&http, &server, &device).await?;
            if view["silent_since"].is_string() {
                return Ok::<_, anyhow::Error>(view);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .context("the devices view never marked the phone silent")??;
    ensure!(view["open_shift"]["shift_id"] == shift.as_str(), "{view}");
    ensure!(view["silent_since"] == view["last_sync_at"], "{view}");
    let silent = next_sse(&mut live, &mut buf, Some("device_silent"), |d| {
        d["device_id"] == device.as_str()
    })
    .await?;
    ensure!(
        silent["shift_id"] == shift.as_str() && silent["guard"] == "anna",
        "{silent}"
    );
    let table = run_ok(&mut server.control(&server.admin_token, &["devices", "--site", SITE])?)?;
    let row = table
        .lines()
        .find(|l| l.contains(&device))
        .ok_or_else(|| anyhow!("no row for the phone in\n{table}"))?;
    ensure!(row.contains("no contact for"), "{table}");

    // It syncs again: back.
    phone.note("back in signal")?;
    client.sync(&mut phone).await?;
    let back = next_sse(&mut live, &mut buf, Some("device_back"), |d| {
        d["device_id"] == device.as_str()
    })
    .await?;
    ensure!(
        back["silent_since"] == silent["silent_since"],
        "{back} after {silent}"
    );
    ensure!(back["back_at"].is_string(), "{back}");

    // The shift is found by guard, open, and exported by the id listed.
    let listed = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "shifts", "--site", SITE, "--guard", "anna", "--open", "--json",
        ],
    )?)?;
    let listed: Value = serde_json::from_str(&listed)?;
    ensure!(
        listed["shifts"][0]["shift_id"] == shift.as_str(),
        "{listed}"
    );
    ensure!(listed["shifts"][0]["events"] == 2, "{listed}");
    let out = dir.path().join("shift.json");
    run_ok(&mut server.control(
        &server.admin_token,
        &[
            "export-shift-log",
            "--site",
            SITE,
            "--shift",
            &shift,
            "--out",
            out.to_str().ok_or_else(|| anyhow!("path"))?,
        ],
    )?)?;
    ensure!(std::fs::metadata(&out)?.len() > 0);
    Ok(())
}
