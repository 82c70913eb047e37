//! The daily activity report's cost (`patrol-dar`): D devices each record E scans spread over
//! one local day of a site in London with an hourly tour, sync them all to the real server, and
//! the control room downloads that day's report as CSV and as PDF, each timed as the client sees
//! it (request to last byte) over several repetitions. Issue 18 asks for a day of 100,000
//! events in under a second.

use std::time::Instant;

use anyhow::{Result, ensure};
use patrol_mobile::SyncClient;
use patrol_testkit::Server;
use serde::Serialize;
use serde_json::json;

use crate::generator::DeviceStream;
use crate::{SITE, enroll_device, load, one_address_server_args, procfs, record_scan};

/// 2025-03-03 in Europe/London (GMT): the day the scans fall on.
pub const DAY: &str = "2025-03-03";
const DAY_START_MS: i64 = 1_740_960_000_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Debug)]
pub struct DarParams {
    pub devices: u64,
    pub events: u64,
    pub seed: u64,
    pub reps: usize,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DarFormat {
    pub format: &'static str,
    pub bytes: usize,
    /// Each repetition, request to last byte.
    pub wall_ms: Vec<f64>,
    pub median_ms: f64,
    /// The server's CPU time (user + system) for each repetition: what the report costs the
    /// server, whatever else the machine runs meanwhile.
    pub server_cpu_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DarResults {
    pub devices: u64,
    pub events_per_device: u64,
    pub day: &'static str,
    pub events_in_day: u64,
    pub formats: Vec<DarFormat>,
}

/// The site's configuration: 40 checkpoints (the generator's), one tour over ten of them every
/// hour of the day with 15 minutes' grace.
fn config() -> serde_json::Value {
    let checkpoints: Vec<serde_json::Value> = (1..=40)
        .map(|i| json!({"id": format!("cp-{i}"), "name": format!("Checkpoint {i}"), "tags": []}))
        .collect();
    let tour: Vec<String> = (1..=10).map(|i| format!("cp-{i}")).collect();
    json!({
        "base_version": 0,
        "time_zone": "Europe/London",
        "checkpoints": checkpoints,
        "tours": [{"id": "hourly", "name": "Hourly round", "grace_min": 15,
                   "schedule": [{"every_min": 60, "from": "00:00", "to": "00:00"}],
                   "checkpoints": tour}],
        "post_orders": []
    })
}

pub async fn run_dar(params: &DarParams) -> Result<DarResults> {
    let work = tempfile::tempdir()?;
    let devices_dir = work.path().join("devices");
    std::fs::create_dir_all(&devices_dir)?;
    let args = one_address_server_args(params.devices, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_args(&work.path().join("server"), &[SITE], false, &args)?;
    let http = reqwest::Client::new();
    let resp = http
        .put(format!("{}/api/v1/sites/{SITE}/config", server.url))
        .bearer_auth(&server.admin_token)
        .json(&config())
        .send()
        .await?;
    ensure!(resp.status().is_success(), "PUT config: {}", resp.status());

    // Each device's scans, spread evenly over the day (the generator's ids, checkpoints,
    // positions and notes, at times within the day).
    let spacing = DAY_MS / params.events.max(1) as i64;
    for n in 1..=params.devices {
        let mut store = enroll_device(&http, &server, &devices_dir, n).await?;
        for mut ev in DeviceStream::new(params.seed, n).take(params.events) {
            ev.at_ms = DAY_START_MS + ev.index as i64 * spacing + (n as i64 - 1);
            record_scan(&mut store, &ev)?;
        }
        load::sync_as_phone(&SyncClient::new(&server.url)?, &mut store).await?;
    }

    let mut formats = Vec::new();
    for format in ["csv", "pdf"] {
        let url = format!(
            "{}/api/v1/sites/{SITE}/reports/dar?date={DAY}&format={format}",
            server.url
        );
        let mut wall_ms = Vec::new();
        let mut server_cpu_ms = Vec::new();
        let mut bytes = 0;
        for _ in 0..params.reps.max(1) {
            let cpu_before = procfs::cpu_ms(server.pid())?;
            let start = Instant::now();
            let resp = http
                .get(&url)
                .bearer_auth(&server.admin_token)
                .send()
                .await?;
            ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
            let body = resp.bytes().await?;
            wall_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            server_cpu_ms.push(procfs::cpu_ms(server.pid())? - cpu_before);
            bytes = body.len();
            if format == "csv" {
                // Every device's shift is on duty in the report.
                let text = String::from_utf8_lossy(&body);
                let guards = text.lines().filter(|l| l.starts_with("guards,")).count();
                ensure!(
                    guards as u64 == params.devices,
                    "{guards} guards in the report"
                );
            }
        }
        let mut sorted = wall_ms.clone();
        sorted.sort_by(f64::total_cmp);
        formats.push(DarFormat {
            format,
            bytes,
            median_ms: sorted[sorted.len() / 2],
            wall_ms,
            server_cpu_ms,
        });
    }
    Ok(DarResults {
        devices: params.devices,
        events_per_device: params.events,
        day: DAY,
        events_in_day: params.devices * params.events,
        formats,
    })
}
