//! Tour compliance through the real server and the `patrol` command: phones set their clocks
//! (`patrol device --clock`) to record a scripted night and sync with their clocks right, as
//! phones that recorded then.
//!
//! - A night in London that ended an hour ago, a round every 30 minutes: Anna scans on time, late
//!   and misses one; Ben's phone reported his shift's start and then stays offline with his
//!   rounds until after the control room has looked. `patrol control tours --json` shows on
//!   time, late and missed, everything provisional while Ben's log is behind; his late sync
//!   fills his rounds in and the server's periodic pass makes every window final, which the
//!   live stream announces. Anna's phone, on her next shift, shows the night as the control
//!   room does, Ben's rounds included.
//! - The two nights of 2026 on which London's clocks change: every hourly round from 22:00 to
//!   06:00 is there once, none lost, none doubled, each credited with its scan.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use chrono::NaiveDate;
use patrol_core::event::format_time_ms;
use patrol_core::schedule::Window;
use patrol_core::siteconfig::{SiteConfig, SiteZone};
use patrol_e2e::{Phone, next_sse, open_stream};
use patrol_testkit::{Server, run_ok};
use serde_json::{Value, json};

const SITE: &str = "site-1";
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// A guard against a hang; every wait below ends within seconds.
const PATIENCE: Duration = Duration::from_secs(60);

fn london() -> Result<SiteZone> {
    Ok(SiteZone::new("Europe/London")?)
}

/// The site's configuration with one tour (`schedule`, grace `grace_min`) over cp-1 and cp-2,
/// in London, as `patrol control config --set` takes it.
fn config_json(schedule: Value, grace_min: u32) -> Value {
    json!({
        "base_version": 0,
        "time_zone": "Europe/London",
        "checkpoints": [
            {"id": "cp-1", "name": "Gate", "tags": ["04:C1:01"], "location": null, "radius_m": null},
            {"id": "cp-2", "name": "Stairs", "tags": ["04:C1:02"], "location": null, "radius_m": null},
        ],
        "tours": [{"id": "round", "name": "Night round", "checkpoints": ["cp-1", "cp-2"],
                   "schedule": [schedule], "grace_min": grace_min}],
        "post_orders": [],
    })
}

/// Sets the configuration and returns the tour's windows of `date`, worked out by the core as
/// the server works them out.
fn configure(
    server: &Server,
    dir: &std::path::Path,
    config: &Value,
    date: NaiveDate,
) -> Result<Vec<Window>> {
    let file = dir.join("config.json");
    std::fs::write(&file, config.to_string())?;
    let path = file.to_str().ok_or_else(|| anyhow!("path"))?;
    run_ok(&mut server.control(
        &server.admin_token,
        &["config", "--site", SITE, "--set", path],
    )?)?;
    let mut parsed = config.clone();
    parsed["site"] = json!(SITE);
    parsed["version"] = json!(1);
    let config: SiteConfig = serde_json::from_value(parsed)?;
    let tour = config.tour("round").ok_or_else(|| anyhow!("no tour"))?;
    Ok(tour.windows_of_date(config.time_zone, date))
}

/// `patrol control tours --json` of `date`.
fn tours(server: &Server, date: NaiveDate) -> Result<Value> {
    let out = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "tours",
            "--site",
            SITE,
            "--date",
            &date.to_string(),
            "--json",
        ],
    )?)?;
    serde_json::from_str(&out).context("parsing patrol control tours --json")
}

/// Each window's checkpoint states, its status and its start.
fn summary(page: &Value) -> Vec<(String, Vec<String>, String)> {
    page["windows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                w["start"].as_str().unwrap_or_default().to_owned(),
                w["checkpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["state"].as_str().unwrap_or_default().to_owned())
                    .collect(),
                w["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Records a scan of `checkpoint` (by its tag) with the phone's clock set to `at_ms`.
fn scan_at(phone: &Phone, tag: &str, at_ms: i64) -> Result<()> {
    phone.run(&["--clock", &format_time_ms(at_ms), "scan", "--nfc", tag])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_night_is_on_time_late_missed_and_provisional_until_final() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &dir.path().join("server"),
        &[SITE],
        false,
        &["--compliance-check-secs", "1"],
    )?;
    let zone = london()?;
    let now = chrono::Utc::now().timestamp_millis();
    // Six rounds of 30 minutes, the last ending an hour or more ago: every grace (10 minutes)
    // over, no deadline (6 hours) reached.
    let start = (now - 4 * HOUR - 30 * MIN).div_euclid(30 * MIN) * 30 * MIN + 30 * MIN;
    let from = zone
        .local(start)
        .ok_or_else(|| anyhow!("time out of range"))?;
    let to = zone
        .local(start + 3 * HOUR)
        .ok_or_else(|| anyhow!("time out of range"))?;
    let date = from.date_naive();
    let schedule = json!({"every_min": 30, "from": from.format("%H:%M").to_string(),
                          "to": to.format("%H:%M").to_string()});
    let windows = configure(&server, dir.path(), &config_json(schedule, 10), date)?;
    ensure!(windows.len() >= 5, "{windows:?}");
    let w = |i: usize| windows[i];
    let last = windows.len() - 1;

    let anna = Phone::enroll(dir.path().join("anna.db"), &server, SITE)?;
    let ben = Phone::enroll(dir.path().join("ben.db"), &server, SITE)?;
    // Both fetch the configuration, which says which checkpoint each tag proves.
    anna.run(&["sync"])?;
    // Ben's phone reports his shift, then goes offline for the night.
    ben.run(&[
        "--clock",
        &format_time_ms(w(0).start_ms - 5 * MIN),
        "shift",
        "start",
        "--guard",
        "ben",
    ])?;
    ben.run(&["sync"])?;
    anna.run(&[
        "--clock",
        &format_time_ms(w(0).start_ms - 10 * MIN),
        "shift",
        "start",
        "--guard",
        "anna",
    ])?;
    // Round 0 on time; round 1: cp-1 on time, cp-2 in the grace; round 2: cp-2 missed.
    scan_at(&anna, "04:C1:01", w(0).start_ms + 5 * MIN)?;
    scan_at(&anna, "04:C1:02", w(0).start_ms + 6 * MIN)?;
    scan_at(&anna, "04:C1:01", w(1).start_ms + 5 * MIN)?;
    scan_at(&anna, "04:C1:02", w(1).end_ms + 5 * MIN)?;
    scan_at(&anna, "04:C1:01", w(2).start_ms + 10 * MIN)?;
    anna.run(&[
        "--clock",
        &format_time_ms(w(last).end_ms + 15 * MIN),
        "shift",
        "end",
    ])?;
    anna.run(&["sync"])?;
    // Ben walks the later rounds, but misses cp-2 in round 4, and keeps it all on his phone.
    // (Past the grace of the round before: a scan in it would be that round's late scan.)
    for i in 3..=last {
        scan_at(&ben, "04:C1:01", w(i).start_ms + 12 * MIN)?;
        if i != 4 {
            scan_at(&ben, "04:C1:02", w(i).start_ms + 13 * MIN)?;
        }
    }
    ben.run(&[
        "--clock",
        &format_time_ms(w(last).end_ms + 20 * MIN),
        "shift",
        "end",
    ])?;

    // The control room looks: Anna's rounds as she walked them, Ben's missed as far as the
    // server knows, and nothing final while Ben's log is behind.
    let page = tours(&server, date)?;
    ensure!(page["time_zone"] == "Europe/London", "{page}");
    let seen = summary(&page);
    ensure!(seen.len() == windows.len(), "{page}");
    let states = |i: usize| seen[i].1.iter().map(String::as_str).collect::<Vec<_>>();
    ensure!(states(0) == ["done", "done"], "{page}");
    ensure!(states(1) == ["done", "done_late"], "{page}");
    ensure!(states(2) == ["done", "missed"], "{page}");
    ensure!(states(3) == ["missed", "missed"], "{page}");
    ensure!(
        seen.iter().all(|(_, _, status)| status == "provisional"),
        "{page}"
    );
    let first = &page["windows"][0];
    ensure!(
        first["percent"] == 100 && first["checkpoints"][0]["guard"] == "anna",
        "{page}"
    );
    ensure!(page["windows"][2]["percent"] == 50, "{page}");

    // Ben's phone comes back into signal; the live stream hears his rounds filled in, and
    // every window turn final.
    let mut live = open_stream(&server, SITE).await?;
    let mut buf = String::new();
    ben.run(&["sync"])?;
    let starts = |at: i64| move |d: &Value| d["start"] == format_time_ms(at);
    let changed = next_sse(
        &mut live,
        &mut buf,
        Some("window_changed"),
        starts(w(3).start_ms),
    )
    .await?;
    ensure!(
        changed["tour_id"] == "round" && changed["site_id"] == SITE,
        "{changed}"
    );
    let final_ = next_sse(
        &mut live,
        &mut buf,
        Some("window_final"),
        starts(w(0).start_ms),
    )
    .await?;
    ensure!(
        final_["final_by"] == "delivery" && final_["percent"] == 100,
        "{final_}"
    );

    let page = tokio::time::timeout(PATIENCE, async {
        loop {
            let page = tours(&server, date)?;
            if summary(&page)
                .iter()
                .all(|(_, _, status)| status == "final")
            {
                return Ok::<_, anyhow::Error>(page);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .context("the windows never turned final")??;
    let seen = summary(&page);
    let states = |i: usize| seen[i].1.iter().map(String::as_str).collect::<Vec<_>>();
    ensure!(states(0) == ["done", "done"], "{page}");
    ensure!(states(1) == ["done", "done_late"], "{page}");
    ensure!(states(2) == ["done", "missed"], "{page}");
    ensure!(states(3) == ["done", "done"], "{page}");
    ensure!(states(4) == ["done", "missed"], "{page}");
    ensure!(states(last) == ["done", "done"], "{page}");
    for window in page["windows"].as_array().into_iter().flatten() {
        ensure!(window["final_by"] == "delivery", "{window}");
        ensure!(window["amendments"] == json!([]), "{window}");
    }
    ensure!(
        page["windows"][3]["checkpoints"][0]["guard"] == "ben",
        "{page}"
    );

    // Anna starts her next shift: once her phone has synced, its tour view is the site's, as
    // the control room sees it (Ben's rounds done, not missed), offline from then on.
    anna.run(&["shift", "start", "--guard", "anna"])?;
    anna.run(&["sync"])?;
    let view: Value = serde_json::from_str(&anna.run(&["tour", "round", "--json"])?)?;
    let on_phone: Vec<(String, Vec<String>)> = view["windows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let states = w["checkpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["state"].as_str().unwrap_or_default().to_owned())
                .collect();
            (w["start"].as_str().unwrap_or_default().to_owned(), states)
        })
        .collect();
    for (start, states, _) in &seen {
        let phone = on_phone
            .iter()
            .find(|(s, _)| s == start)
            .ok_or_else(|| anyhow!("the phone does not show the window at {start}: {view}"))?;
        ensure!(
            &phone.1 == states,
            "window {start}: phone {view}, server {page}"
        );
    }

    // For people: the states in words, the scans' times in the site's zone, FINAL.
    let table = run_ok(&mut server.control(
        &server.admin_token,
        &["tours", "--site", SITE, "--date", &date.to_string()],
    )?)?;
    ensure!(
        table.lines().next().is_some_and(|l| l.starts_with("TOUR")),
        "{table}"
    );
    ensure!(
        table.contains("done late") && table.contains("missed"),
        "{table}"
    );
    ensure!(
        table.contains("FINAL (delivery)") && !table.contains("provisional"),
        "{table}"
    );
    ensure!(
        table.contains(&patrol_term_site(zone, w(1).end_ms + 5 * MIN)),
        "{table}"
    );
    Ok(())
}

/// How `patrol` writes a time in the site's zone.
fn patrol_term_site(zone: SiteZone, ms: i64) -> String {
    zone.local(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string())
        .unwrap_or_default()
}

/// The nights of 28 March and 24 October 2026 in London, hourly rounds from 22:00 to 06:00: a
/// phone scans cp-1 ten minutes into each hour of the night, by the true time. The spring night
/// has 7 rounds and the autumn night 9, each an hour long, end to end from 22:00 to 06:00 local
/// time, each credited with its scan; none lost, none doubled.
#[test]
fn the_nights_the_clocks_change_lose_and_double_no_window() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let schedule = json!({"every_min": 60, "from": "22:00", "to": "06:00"});
    let spring = NaiveDate::from_ymd_opt(2026, 3, 28).ok_or_else(|| anyhow!("date"))?;
    let autumn = NaiveDate::from_ymd_opt(2026, 10, 24).ok_or_else(|| anyhow!("date"))?;
    configure(&server, dir.path(), &config_json(schedule, 5), spring)?;
    let phone = Phone::enroll(dir.path().join("phone.db"), &server, SITE)?;
    phone.run(&["sync"])?;
    let ms = |t: &str| -> Result<i64> {
        Ok(chrono::DateTime::parse_from_rfc3339(t)?.timestamp_millis())
    };
    for (date, first, last, rounds) in [
        (spring, "2026-03-28T22:00:00Z", "2026-03-29T05:00:00Z", 7),
        (autumn, "2026-10-24T21:00:00Z", "2026-10-25T06:00:00Z", 9),
    ] {
        let (first, last) = (ms(first)?, ms(last)?);
        phone.run(&[
            "--clock",
            &format_time_ms(first - 5 * MIN),
            "shift",
            "start",
            "--guard",
            "anna",
        ])?;
        let mut at = first + 10 * MIN;
        while at < last {
            scan_at(&phone, "04:C1:01", at)?;
            at += HOUR;
        }
        phone.run(&["--clock", &format_time_ms(last + 5 * MIN), "shift", "end"])?;
        phone.run(&["sync"])?;

        let page = tours(&server, date)?;
        let windows: Vec<&Value> = page["windows"].as_array().into_iter().flatten().collect();
        ensure!(windows.len() == rounds, "{date}: {page}");
        let times = |w: &Value, f: &str| -> Result<i64> {
            ms(w[f].as_str().ok_or_else(|| anyhow!("no {f}"))?)
        };
        ensure!(times(windows[0], "start")? == first, "{date}: {page}");
        ensure!(times(windows[rounds - 1], "end")? == last, "{date}: {page}");
        for pair in windows.windows(2) {
            ensure!(
                times(pair[0], "end")? == times(pair[1], "start")?,
                "{date}: {page}"
            );
        }
        for w in &windows {
            ensure!(times(w, "end")? - times(w, "start")? == HOUR, "{date}: {w}");
            ensure!(w["checkpoints"][0]["state"] == "done", "{date}: {w}");
            ensure!(w["checkpoints"][1]["state"] == "missed", "{date}: {w}");
            // Long past its deadline when the phone synced: final, its scan an amendment.
            ensure!(
                w["status"] == "final" && w["final_by"] == "deadline",
                "{date}: {w}"
            );
            ensure!(
                w["amendments"][0]["after"]["state"] == "done",
                "{date}: {w}"
            );
        }
    }
    Ok(())
}
