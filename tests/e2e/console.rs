//! The web console in real headless browsers (`patrol_e2e::browser`), against the real
//! `patrol-server` and phones played by the `patrol` command: what an operator sees and does.
//! Each test runs once in Chromium and once in Firefox (`<test>::chromium`, `<test>::firefox`).
//!
//! - Signing in, and a wrong password refused on the page.
//! - A phone's scan appears in the live log without a reload.
//! - A panic appears on top of the page, sounding, is acknowledged with one click, and the phone
//!   learns of the acknowledgement at its next sync.
//! - An incident worked from the console while the reporting phone adds a note offline: both
//!   the operator's and the guard's notes kept, on the page and on the phone.
//! - An operator of one site sees nothing of another.
//! - A note's files in the live log (its count on the row, the files listed and the photo shown
//!   when opened), and every time in the site's zone (Pacific/Auckland), named in the header.
//! - Passwords from the console: set by an administrator, changed by the user, the old one
//!   refused afterwards.
//! - An unanswered panic shown escalated in the alarm bar.
//! - `console_latency` (ignored; run by name): how long a synced scan takes to be on screen.
//! - A seeded night: the tours grid shows on time, late and missed; every view is drawn, and
//!   with `PATROL_WRITE_SCREENSHOTS=1` its picture (Chromium's) is written to `docs/images/`
//!   for docs/console.md.
//!
//! Without a browser the tests in it skip with a notice, unless `PATROL_REQUIRE_BROWSER` is set.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use patrol_core::event::format_time_ms;
use patrol_core::siteconfig::SiteZone;
use patrol_e2e::Phone;
use patrol_e2e::browser::{Browser, Kind, TABLET};
use patrol_testkit::{Server, bins, run_ok};
use serde_json::{Value, json};

const SITE: &str = "site-1";
const MIN: i64 = 60_000;
const PASSWORD: &str = "correct horse battery staple";

/// Runs each named test, an `async fn(Kind) -> Result<()>` below, once per browser: as
/// `<test>::chromium` and `<test>::firefox`.
macro_rules! in_each_browser {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn chromium() -> Result<()> {
                super::$test(Kind::Chromium).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn firefox() -> Result<()> {
                super::$test(Kind::Firefox).await
            }
        }
    )*};
}

in_each_browser!(
    an_operator_signs_in_and_a_wrong_password_is_refused,
    a_phone_s_scan_appears_in_the_live_log_without_a_reload,
    a_panic_is_on_top_sounding_until_acknowledged_with_a_click_and_the_phone_learns_of_it,
    an_incident_worked_from_the_console_while_the_phone_edits_it_offline_keeps_both,
    an_operator_of_one_site_sees_nothing_of_another,
    a_seeded_night_shows_late_and_missed_rounds_and_every_view,
    a_note_s_files_and_times_in_the_site_s_zone_in_the_live_log,
    passwords_are_set_and_changed_from_the_console,
    an_unanswered_panic_shows_escalated_in_the_alarm_bar,
);

/// Makes a user with a password, as an administrator would on the server's machine:
/// `patrol-server user create <name> --role <role> --site <site>... --password-stdin`.
fn user_with_password(server: &Server, name: &str, role: &str, sites: &[&str]) -> Result<()> {
    let mut cmd = Command::new(&bins()?.server);
    cmd.args(["user", "create", name, "--role", role]);
    for site in sites {
        cmd.args(["--site", site]);
    }
    cmd.arg("--password-stdin")
        .arg("--data-dir")
        .arg(&server.data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("patrol-server user create")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(format!("{PASSWORD}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "user create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The site's configuration: the example hospital's checkpoints (with their positions) and a
/// round every 30 minutes from `from` to `to` (site time, London) over five of them.
fn config(from: &str, to: &str) -> Result<Value> {
    let example: Value = serde_json::from_str(&std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/site-1.json"),
    )?)?;
    Ok(json!({
        "base_version": 0,
        "time_zone": "Europe/London",
        "checkpoints": example["checkpoints"],
        "tours": [{"id": "night", "name": "Night round, basement", "grace_min": 10,
                   "schedule": [{"every_min": 30, "from": from, "to": to}],
                   "checkpoints": ["cp-1", "cp-2", "cp-3", "cp-4", "cp-5"]}],
        "post_orders": example["post_orders"],
    }))
}

fn set_config(server: &Server, dir: &Path, config: &Value) -> Result<()> {
    let file = dir.join("config.json");
    std::fs::write(&file, config.to_string())?;
    let path = file.to_str().ok_or_else(|| anyhow!("path"))?;
    patrol_testkit::run_ok(&mut server.control(
        &server.admin_token,
        &["config", "--site", SITE, "--set", path],
    )?)?;
    Ok(())
}

/// A server with `sites`, an operator `anna` of site-1 with a password, the example
/// configuration (a round that ran from three hours ago), and a `kind` browser, or `None`
/// without one.
struct Console {
    dir: tempfile::TempDir,
    server: Server,
    browser: Browser,
}

impl Console {
    async fn start(kind: Kind, sites: &[&str], args: &[&str]) -> Result<Option<Console>> {
        let Some(browser) = Browser::start(kind).await? else {
            return Ok(None);
        };
        let dir = tempfile::tempdir()?;
        let server = Server::start_with_args(&dir.path().join("server"), sites, false, args)?;
        user_with_password(&server, "anna", "operator", &[SITE])?;
        set_config(&server, dir.path(), &config("22:00", "06:00")?)?;
        Ok(Some(Console {
            dir,
            server,
            browser,
        }))
    }

    fn phone(&self, name: &str, site: &str) -> Result<Phone> {
        let phone = Phone::enroll(
            self.dir.path().join(format!("{name}.db")),
            &self.server,
            site,
        )?;
        phone.run(&["sync"])?;
        Ok(phone)
    }

    async fn sign_in(&self, name: &str) -> Result<()> {
        self.browser
            .sign_in(&self.server.url, name, PASSWORD)
            .await?;
        self.browser.wait_text("#who", name).await?;
        Ok(())
    }

    /// Waits until the live log has a row of `kind` whose text contains `text`.
    async fn live_row(&self, kind: &str, text: &str) -> Result<()> {
        self.browser
            .wait_for(
                &format!("a {kind} row with {text:?} in the live log"),
                "return [...document.querySelectorAll('#live-rows tr')].some(
                    r => r.dataset.kind === arguments[0] && r.innerText.includes(arguments[1]))",
                vec![json!(kind), json!(text)],
            )
            .await?;
        Ok(())
    }
}

async fn an_operator_signs_in_and_a_wrong_password_is_refused(kind: Kind) -> Result<()> {
    let Some(c) = Console::start(kind, &[SITE], &[]).await? else {
        return Ok(());
    };
    let b = &c.browser;
    b.goto(&format!("{}/", c.server.url)).await?;
    b.type_into("#signin-name", "anna").await?;
    b.type_into("#signin-password", "not her password").await?;
    b.click("#signin-submit").await?;
    b.wait_text("#signin-error", "Wrong name or password")
        .await?;
    ensure!(b.text("#who").await?.is_empty(), "signed in anyway");

    c.sign_in("anna").await?;
    b.wait_text("#who", "operator").await?;
    b.wait_text("#connection", "Live").await?;
    // The session survives a reload (the cookie), and signing out ends it.
    b.client.refresh().await?;
    b.wait_text("#who", "anna").await?;
    b.click("#sign-out").await?;
    b.wait_text("#signin-error", "Signed out").await?;
    b.client.refresh().await?;
    b.wait_for(
        "the sign-in form after signing out",
        "return !!document.querySelector('#signin-name')",
        vec![],
    )
    .await?;
    c.browser.close().await
}

async fn a_phone_s_scan_appears_in_the_live_log_without_a_reload(kind: Kind) -> Result<()> {
    let Some(c) = Console::start(kind, &[SITE], &[]).await? else {
        return Ok(());
    };
    let phone = c.phone("ben", SITE)?;
    phone.run(&["shift", "start", "--guard", "ben"])?;
    phone.run(&["sync"])?;
    c.sign_in("anna").await?;
    c.live_row("shift_started", "ben").await?;
    c.browser.wait_text("#connection", "Live").await?;
    // A mark in the page: a reload would lose it.
    c.browser.js("window.patrolTestMark = 42", vec![]).await?;

    phone.run(&["scan", "--nfc", "04:A1:13"])?;
    phone.run(&["scan", "cp-4", "--manual", "tag missing"])?;
    phone.run(&["sync"])?;
    let synced = Instant::now();
    c.live_row("checkpoint_scanned", "Car park B2, bay 14")
        .await?;
    let seen = synced.elapsed();
    eprintln!("the scan was on screen {seen:?} after its sync returned");
    c.live_row("checkpoint_scanned", "manual").await?;
    let mark = c.browser.js("return window.patrolTestMark", vec![]).await?;
    ensure!(mark == json!(42), "the page was reloaded: {mark}");

    // The filters: ben's scans of cp-4 only, and a click opens the event with its times.
    c.browser.js(
        "const s = document.querySelector('#filter-flag'); s.value = 'manual'; s.dispatchEvent(new Event('change'));",
        vec![],
    ).await?;
    let rows = c
        .browser
        .js(
            "return [...document.querySelectorAll('#live-rows tr')].map(r => r.innerText)",
            vec![],
        )
        .await?;
    ensure!(
        rows.as_array().is_some_and(|r| r.len() == 1),
        "the manual filter shows {rows}"
    );
    c.browser.click("#live-rows tr").await?;
    let detail = c
        .browser
        .wait_text("#event-detail", "Received by the server")
        .await?;
    for field in ["Device time", "Corrected time", "Hybrid clock", "Monotonic"] {
        ensure!(detail.contains(field), "no {field} in {detail}");
    }
    c.browser.close().await
}

async fn a_panic_is_on_top_sounding_until_acknowledged_with_a_click_and_the_phone_learns_of_it(
    kind: Kind,
) -> Result<()> {
    let Some(c) = Console::start(kind, &[SITE], &[]).await? else {
        return Ok(());
    };
    let phone = c.phone("ben", SITE)?;
    phone.run(&["shift", "start", "--guard", "ben"])?;
    phone.run(&["scan", "--nfc", "04:A1:14"])?;
    phone.run(&["sync"])?;
    c.sign_in("anna").await?;
    c.live_row("checkpoint_scanned", "Plant room 2").await?;
    // Another view: the alarm is on top of every page.
    c.browser
        .goto(&format!("{}/#/{SITE}/devices", c.server.url))
        .await?;

    let panic = phone
        .run(&[
            "panic",
            "--lat",
            "51.51676",
            "--lon",
            "-0.17478",
            "--accuracy",
            "12",
        ])?
        .trim()
        .to_owned();
    phone.run(&["sync"])?;
    let bar = c.browser.wait_text("#alarms .alarm", "PANIC").await?;
    ensure!(bar.contains("ben"), "{bar}");
    ensure!(bar.contains("Plant room 2"), "no last checkpoint in {bar}");
    ensure!(bar.contains("51.51676"), "no position in {bar}");
    let sound = c
        .browser
        .js("return document.body.dataset.alarmSound", vec![])
        .await?;
    ensure!(sound == json!("playing"), "the alarm's sound is {sound}");
    ensure!(
        c.browser.js("return document.title", vec![]).await? == json!("(1) PANIC · Patrol"),
        "the tab's title does not say it"
    );

    c.browser.click("#alarms .alarm button.ack").await?;
    c.browser
        .wait_for(
            "the alarm to leave the bar",
            "return !document.querySelector('#alarms .alarm')",
            vec![],
        )
        .await?;
    let sound = c
        .browser
        .js("return document.body.dataset.alarmSound", vec![])
        .await?;
    ensure!(sound == json!("off"), "the alarm's sound is {sound}");

    phone.run(&["sync"])?;
    let alarms: Value = serde_json::from_str(&phone.run(&["alarms", "--json"])?)?;
    let alarm = alarms["alarms"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["event_id"] == panic.as_str()))
        .ok_or_else(|| anyhow!("the phone has no alarm {panic}: {alarms}"))?;
    ensure!(
        alarm["state"] == "acknowledged" && alarm["acknowledged_by"] == "anna",
        "{alarm}"
    );
    c.browser.close().await
}

async fn an_incident_worked_from_the_console_while_the_phone_edits_it_offline_keeps_both(
    kind: Kind,
) -> Result<()> {
    let Some(c) = Console::start(kind, &[SITE], &[]).await? else {
        return Ok(());
    };
    let phone = c.phone("ben", SITE)?;
    phone.run(&["shift", "start", "--guard", "ben"])?;
    let incident = phone
        .run(&[
            "incident",
            "--category",
            "fire",
            "--severity",
            "high",
            "--description",
            "smoke in plant room 2",
        ])?
        .trim()
        .to_owned();
    phone.run(&["sync"])?;
    c.sign_in("anna").await?;
    c.browser
        .goto(&format!("{}/#/{SITE}/incidents", c.server.url))
        .await?;
    c.browser
        .wait_text("#incident-rows", "smoke in plant room 2")
        .await?;
    c.browser
        .click(&format!("#incident-rows tr[data-id='{incident}']"))
        .await?;
    c.browser
        .wait_text("#incident-status-badge", "open")
        .await?;

    // The phone, offline, adds its note while the operator works the incident.
    phone.run(&["incident-update", &incident, "--note", "brigade on site"])?;
    c.browser
        .click("#incident-detail button[data-action='acknowledge']")
        .await?;
    c.browser
        .wait_text("#incident-status-badge", "acknowledged")
        .await?;
    c.browser
        .type_into("#incident-note", "police called")
        .await?;
    c.browser.click("#incident-add-note").await?;
    c.browser
        .wait_text("#incident-notes", "police called")
        .await?;

    // Back in signal: both notes, on the page (without a reload) and on the phone.
    phone.run(&["sync"])?;
    let notes = c
        .browser
        .wait_text("#incident-notes", "brigade on site")
        .await?;
    ensure!(notes.contains("police called"), "{notes}");
    let held: Value = serde_json::from_str(&phone.run(&["incidents", "--json"])?)?;
    let text = held.to_string();
    ensure!(
        text.contains("police called") && text.contains("brigade on site"),
        "{held}"
    );
    c.browser.close().await
}

async fn an_operator_of_one_site_sees_nothing_of_another(kind: Kind) -> Result<()> {
    let Some(c) = Console::start(kind, &[SITE, "site-2"], &[]).await? else {
        return Ok(());
    };
    let other = c.phone("zoe", "site-2")?;
    other.run(&["shift", "start", "--guard", "zoe"])?;
    other.run(&["panic"])?;
    other.run(&["sync"])?;
    let ours = c.phone("ben", SITE)?;
    ours.run(&["shift", "start", "--guard", "ben"])?;
    ours.run(&["sync"])?;

    c.sign_in("anna").await?;
    c.live_row("shift_started", "ben").await?;
    let b = &c.browser;
    let sites = b
        .js(
            "return [...document.querySelectorAll('#site-picker option')].map(o => o.value)",
            vec![],
        )
        .await?;
    ensure!(sites == json!([SITE]), "the site picker offers {sites}");
    // The other site's address lands on her own site.
    b.goto(&format!("{}/#/site-2/live", c.server.url)).await?;
    b.wait_for(
        "the page to go back to site-1",
        "return location.hash.startsWith('#/site-1/')",
        vec![],
    )
    .await?;
    c.live_row("shift_started", "ben").await?;
    let page = b.text("body").await?;
    ensure!(
        !page.contains("zoe") && !page.contains("PANIC"),
        "site-2 shows through: {page}"
    );
    // And the API behind the page refuses it, with her session.
    let status = b
        .client
        .execute_async(
            "fetch('/api/v1/sites/site-2/events').then(r => arguments[0](r.status))",
            vec![],
        )
        .await?;
    ensure!(status == json!(403), "site-2's feed answered {status}");
    c.browser.close().await
}

/// A night at the hospital, seeded through phones with their clocks set: two guards walking a
/// round every 30 minutes (on time, late, missed), flagged scans, an incident with a photo that
/// the control room works, a panic, a handover. The tours grid shows late and missed; each
/// view is drawn, and pictured for docs/console.md when `PATROL_WRITE_SCREENSHOTS=1`.
async fn a_seeded_night_shows_late_and_missed_rounds_and_every_view(kind: Kind) -> Result<()> {
    // Windows' changes and silent phones checked every second; a phone on shift is silent
    // after 20 s without contact (30 min in a real night).
    let args = [
        "--compliance-check-secs",
        "1",
        "--gap-check-secs",
        "1",
        "--no-contact-after-secs",
        "20",
    ];
    let Some(c) = Console::start(kind, &[SITE], &args).await? else {
        return Ok(());
    };
    let zone = SiteZone::new("Europe/London")?;
    let now = chrono::Utc::now().timestamp_millis();
    // Rounds every 30 minutes for four hours from 3 h 20 ago (to the minute): six past (the
    // last one's grace of 10 minutes over), one open for 20 minutes, one to come.
    let start = (now - 3 * 60 * MIN - 20 * MIN).div_euclid(MIN) * MIN;
    let local = |ms: i64| {
        zone.local(ms)
            .ok_or_else(|| anyhow!("time out of range"))
            .map(|t| t.format("%H:%M").to_string())
    };
    let date = zone
        .local(start)
        .ok_or_else(|| anyhow!("time out of range"))?
        .date_naive();
    let mut night = config(&local(start)?, &local(start + 4 * 60 * MIN)?)?;
    night["base_version"] = json!(1);
    set_config(&c.server, c.dir.path(), &night)?;
    user_with_password(&c.server, "admin-maria", "admin", &[SITE])?;
    let w = |i: i64| start + i * 30 * MIN;

    let anna = c.phone("anna-phone", SITE)?;
    let ben = c.phone("ben-phone", SITE)?;
    // Carl's phone starts his shift and is not heard from again.
    let carl = c.phone("carl-phone", SITE)?;
    carl.run(&["shift", "start", "--guard", "carl"])?;
    carl.run(&["sync"])?;
    let carl_synced = Instant::now();
    // What each phone records, and when by its clock; played in order of time.
    // Ben's photo of the door he closed, on his note.
    let door = c.dir.path().join("door-b2.png");
    std::fs::write(&door, include_bytes!("fence.png"))?;
    let door = door.to_str().ok_or_else(|| anyhow!("path"))?;
    let mut script: Vec<(i64, &Phone, Vec<String>)> = Vec::new();
    let mut at = |when: i64, phone: &'static str, args: &[&str]| {
        script.push((
            when,
            if phone == "anna" { &anna } else { &ben },
            args.iter().map(|a| a.to_string()).collect(),
        ))
    };
    at(
        w(0) - 10 * MIN,
        "anna",
        &["shift", "start", "--guard", "anna"],
    );
    at(w(0) - 8 * MIN, "ben", &["shift", "start", "--guard", "ben"]);
    let tags = ["04:A1:11", "04:A1:12", "04:A1:13", "04:A1:14", "04:A1:15"];
    // Which checkpoints each past round leaves late (scanned in the grace) or missed; the
    // others are scanned after the grace of the round before, so each counts where meant.
    let late = [(1, 2), (4, 4)];
    let missed = [(2, 3), (4, 1), (5, 0), (5, 4)];
    for round in 0..6 {
        for (i, tag) in tags.iter().enumerate() {
            if missed.contains(&(round, i)) {
                continue;
            }
            let when = if late.contains(&(round, i)) {
                w(round + 1) + 4 * MIN
            } else {
                w(round) + (11 + 3 * i as i64) * MIN
            };
            at(
                when,
                if round % 2 == 0 { "anna" } else { "ben" },
                &["scan", "--nfc", tag],
            );
        }
    }
    // The open round: two checkpoints so far.
    at(w(6) + 11 * MIN, "anna", &["scan", "--nfc", tags[0]]);
    at(w(6) + 14 * MIN, "anna", &["scan", "--nfc", tags[1]]);
    // Flagged: a tag nobody has, a checkpoint entered by hand.
    at(w(3) + 20 * MIN, "ben", &["scan", "--nfc", "04:FF:99"]);
    at(
        w(3) + 22 * MIN,
        "ben",
        &["scan", "cp-7", "--manual", "QR label torn off"],
    );
    at(
        w(2) + 10 * MIN,
        "ben",
        &[
            "note",
            "fire door B2 propped open, closed it",
            "--attach",
            door,
        ],
    );
    at(
        w(5) + 2 * MIN,
        "ben",
        &["handover", "B2 door reported to estates", "--to", "anna"],
    );
    script.sort_by_key(|(when, _, _)| *when);
    let run_at = |when: i64, phone: &Phone, args: &[&str]| {
        let mut all = vec!["--clock".to_owned(), format_time_ms(when)];
        all.extend(args.iter().map(|a| a.to_string()));
        phone.run(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let incident_at = w(4) + 20 * MIN;
    let mut incident = String::new();
    for (when, phone, args) in &script {
        if incident.is_empty() && *when > incident_at {
            incident = run_at(
                incident_at,
                &anna,
                &[
                    "incident",
                    "--category",
                    "fire",
                    "--severity",
                    "high",
                    "--description",
                    "smoke in plant room 2",
                    "--lat",
                    "51.51676",
                    "--lon",
                    "-0.17478",
                ],
            )?
            .trim()
            .to_owned();
            run_at(
                incident_at + 4 * MIN,
                &anna,
                &[
                    "incident-update",
                    &incident,
                    "--note",
                    "extinguisher used, brigade called",
                ],
            )?;
        }
        run_at(
            *when,
            phone,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
    }
    let photo = c.dir.path().join("plant-room.svg");
    std::fs::write(
        &photo,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200" viewBox="0 0 320 200"><rect width="320" height="200" fill="#555"/><rect x="20" y="60" width="120" height="120" fill="#333"/><circle cx="200" cy="70" r="50" fill="#bbb" opacity=".6"/><circle cx="240" cy="50" r="40" fill="#ddd" opacity=".5"/><text x="20" y="30" fill="#fff" font-family="sans-serif" font-size="18">Plant room 2</text></svg>"##,
    )?;
    anna.run(&[
        "attach",
        "--incident",
        &incident,
        photo.to_str().ok_or_else(|| anyhow!("path"))?,
        "--type",
        "image/svg+xml",
    ])?;
    anna.run(&["sync"])?;
    ben.run(&["sync"])?;

    // The control room: the tours grid with late and missed, provisional and final.
    let b = &c.browser;
    c.sign_in("admin-maria").await?;
    b.goto(&format!("{}/#/{SITE}/tours/{date}", c.server.url))
        .await?;
    b.wait_for(
        "a late and a missed checkpoint in the tours grid",
        "return document.querySelector('#tour-grids td[data-state=done_late]')
             && document.querySelector('#tour-grids td[data-state=missed]')",
        vec![],
    )
    .await?;
    let late_cell = b.text("#tour-grids td[data-state=done_late]").await?;
    ensure!(late_cell.contains("late"), "{late_cell}");
    let missed_cell = b.text("#tour-grids td[data-state=missed]").await?;
    ensure!(missed_cell.contains("missed"), "{missed_cell}");
    let states = b
        .js(
            "return [...document.querySelectorAll('#tour-grids td.cell')].map(td => td.dataset.state)",
            vec![],
        )
        .await?;
    let count = |s: &str| {
        states
            .as_array()
            .map_or(0, |a| a.iter().filter(|v| *v == s).count())
    };
    ensure!(count("done_late") == late.len(), "{states}");
    ensure!(count("missed") == missed.len(), "{states}");

    // The operator works the incident: acknowledged, dispatched, a note.
    b.goto(&format!("{}/#/{SITE}/incidents/{incident}", c.server.url))
        .await?;
    b.click("#incident-detail button[data-action='acknowledge']")
        .await?;
    b.wait_text("#incident-status-badge", "acknowledged")
        .await?;
    b.click("#incident-detail button[data-action='dispatch']")
        .await?;
    b.wait_text("#incident-status-badge", "dispatched").await?;
    b.type_into("#incident-note", "fire brigade on the way, ETA 6 min")
        .await?;
    b.click("#incident-add-note").await?;
    b.wait_text("#incident-notes", "ETA 6 min").await?;
    b.wait_for(
        "the photo to be shown",
        "const img = document.querySelector('#incident-detail .images img');
         return img && img.complete && img.naturalWidth > 0",
        vec![],
    )
    .await?;
    b.screenshot("incident").await?;

    b.goto(&format!("{}/#/{SITE}/tours/{date}", c.server.url))
        .await?;
    b.wait_text("#tour-grids", "missed").await?;
    b.screenshot("tours").await?;

    b.goto(&format!("{}/#/{SITE}/live", c.server.url)).await?;
    c.live_row("checkpoint_scanned", "manual").await?;
    b.click("#live-rows tr[data-kind=checkpoint_scanned] .flag")
        .await?;
    b.wait_text("#event-detail", "Received by the server")
        .await?;
    b.screenshot("live").await?;
    header_on_one_line(b).await?;
    // Ben's note, with its photo.
    b.click("#live-rows tr[data-kind=note]").await?;
    b.wait_text("#event-files", "door-b2.png").await?;
    b.wait_for(
        "the note's photo to be shown",
        "const img = document.querySelector('#event-detail .images img');
         return img && img.complete && img.naturalWidth > 0",
        vec![],
    )
    .await?;
    b.screenshot("live-note").await?;

    // Anna and Ben in contact, Carl silent: silence is time passing (the seeding above has
    // usually taken longer already), not a wait for something to happen.
    if let Some(left) = std::time::Duration::from_secs(21).checked_sub(carl_synced.elapsed()) {
        tokio::time::sleep(left).await;
    }
    anna.run(&["sync"])?;
    ben.run(&["sync"])?;
    b.goto(&format!("{}/#/{SITE}/devices", c.server.url))
        .await?;
    b.wait_text("#device-rows", "anna").await?;
    b.wait_for(
        "Carl's phone shown silent",
        "return [...document.querySelectorAll('#device-rows tr.silent')].some(
            r => r.innerText.includes('carl') && r.innerText.includes('No contact since'))",
        vec![],
    )
    .await?;
    b.screenshot("devices").await?;

    b.goto(&format!("{}/#/{SITE}/plan", c.server.url)).await?;
    b.wait_text("#site-plan", "Plant room 2").await?;
    b.screenshot("plan").await?;

    b.goto(&format!("{}/#/{SITE}/reports", c.server.url))
        .await?;
    let href = b
        .wait_for(
            "the report's links",
            "const a = document.querySelector('#report-pdf'); return a && a.href",
            vec![],
        )
        .await?;
    ensure!(
        href.as_str().is_some_and(|h| h.contains("format=pdf")),
        "{href}"
    );
    let pdf_status = b
        .client
        .execute_async(
            "fetch(document.querySelector('#report-pdf').href).then(r => arguments[0](r.status + ' ' + r.headers.get('content-type')))",
            vec![],
        )
        .await?;
    ensure!(
        pdf_status == json!("200 application/pdf"),
        "the report answered {pdf_status}"
    );
    b.screenshot("reports").await?;

    b.goto(&format!("{}/#/{SITE}/admin", c.server.url)).await?;
    b.click("#new-enrollment-code").await?;
    let code = b.wait_text("#enrollment-code", "pe_").await?;
    b.wait_for(
        "the QR code",
        "return !!document.querySelector('#enrollment-qr svg')",
        vec![],
    )
    .await?;
    b.wait_text("#admin-users", "anna").await?;
    b.screenshot("admin").await?;
    // The code on the page enrolls a phone.
    let phone = Phone {
        store: c.dir.path().join("new-phone.db"),
    };
    phone.run(&["enroll", "--server", &c.server.url, "--code", code.trim()])?;

    // Ben presses panic: on top of the live log, red.
    ben.run(&[
        "panic",
        "--lat",
        "51.51693",
        "--lon",
        "-0.17420",
        "--accuracy",
        "15",
    ])?;
    ben.run(&["sync"])?;
    b.goto(&format!("{}/#/{SITE}/live", c.server.url)).await?;
    b.wait_text("#alarms .alarm", "ben").await?;
    b.screenshot("alarm").await?;

    // The same page on a tablet.
    b.resize(TABLET).await?;
    b.goto(&format!("{}/#/{SITE}/tours/{date}", c.server.url))
        .await?;
    b.wait_text("#tour-grids", "missed").await?;
    b.screenshot("tablet-tours").await?;
    header_on_one_line(b).await?;

    // And the way in.
    b.click("#sign-out").await?;
    b.wait_for(
        "the sign-in form",
        "return !!document.querySelector('#signin-name')",
        vec![],
    )
    .await?;
    b.resize(patrol_e2e::browser::DESKTOP).await?;
    b.screenshot("signin").await?;
    c.browser.close().await
}

/// Fails unless everything the header shows sits on one line (the same vertical middle).
async fn header_on_one_line(b: &Browser) -> Result<()> {
    let spread = b
        .js(
            "const mids = [...document.querySelectorAll('#top > *')]
               .map(e => e.getBoundingClientRect()).filter(r => r.width > 0)
               .map(r => r.top + r.height / 2);
             return Math.max(...mids) - Math.min(...mids);",
            vec![],
        )
        .await?;
    let (width, _) = b.client.get_window_size().await?;
    ensure!(
        spread.as_f64().is_some_and(|s| s < 4.0),
        "the header is on more than one line at {width} px wide (its items' middles {spread} px apart)"
    );
    Ok(())
}

/// The live log's time cell as the site's zone writes `ms`: "22:14:03" (the row is today's in
/// that zone), and the zone's name as the header gives it ("GMT+13", "GMT-8"; Chromium's
/// en-US short names for zones without one of their own, like these two).
fn site_clock(zone: &str, ms: i64) -> Result<(String, String)> {
    use chrono::Offset as _;
    let local = SiteZone::new(zone)?
        .local(ms)
        .ok_or_else(|| anyhow!("time out of range"))?;
    let hours = local.offset().fix().local_minus_utc() / 3600;
    Ok((
        local.format("%H:%M:%S").to_string(),
        format!("GMT{hours:+}"),
    ))
}

/// A guard's note with a photo, and one that is only two files, in a site far from UTC: the live
/// log shows each note's text with its file count, a time in the site's zone (named in the
/// header), and the opened note lists its files with links and shows the photo.
async fn a_note_s_files_and_times_in_the_site_s_zone_in_the_live_log(kind: Kind) -> Result<()> {
    let Some(c) = Console::start(kind, &[SITE], &[]).await? else {
        return Ok(());
    };
    // Pacific/Auckland is 12 or 13 hours from UTC, and from the browser's own zone.
    const ZONE: &str = "Pacific/Auckland";
    let mut auckland = config("22:00", "06:00")?;
    auckland["base_version"] = json!(1);
    auckland["time_zone"] = json!(ZONE);
    set_config(&c.server, c.dir.path(), &auckland)?;
    let phone = c.phone("ben", SITE)?;
    phone.run(&["shift", "start", "--guard", "ben"])?;
    // A photo of a cut fence (a small PNG kept beside the tests).
    let photo = c.dir.path().join("fence.png");
    std::fs::write(&photo, include_bytes!("fence.png"))?;
    let photo = photo.to_str().ok_or_else(|| anyhow!("path"))?;
    let plan = c.dir.path().join("plan.pdf");
    std::fs::write(&plan, b"%PDF-1.4 not much of a plan")?;
    let plan = plan.to_str().ok_or_else(|| anyhow!("path"))?;
    let note = phone
        .run(&["note", "fence cut by the loading bay", "--attach", photo])?
        .trim()
        .to_owned();
    let files_only = phone
        .run(&["note", "", "--attach", photo, "--attach", plan])?
        .trim()
        .to_owned();
    phone.run(&["sync"])?;

    c.sign_in("anna").await?;
    let b = &c.browser;
    c.live_row("note", "fence cut by the loading bay [1 file]")
        .await?;
    let row = |id: &str| format!("#live-rows tr[data-id='{id}']");
    b.wait_text(&row(&files_only), "[2 files]").await?;

    // Its time is the site's, whatever the browser's zone, and the header says which zone.
    let feed = patrol_e2e::control_pull(&c.server, SITE, 1000)?;
    let event = feed
        .iter()
        .find(|e| e["id"] == note.as_str())
        .ok_or_else(|| anyhow!("the note is not in the feed"))?;
    let corrected = chrono::DateTime::parse_from_rfc3339(
        event["corrected_time"]
            .as_str()
            .ok_or_else(|| anyhow!("no corrected_time in {event}"))?,
    )?
    .timestamp_millis();
    let (clock, zone_name) = site_clock(ZONE, corrected)?;
    let shown = b.text(&format!("{} td.time", row(&note))).await?;
    ensure!(
        shown == clock,
        "the note's time shows {shown:?}, not {clock:?} ({ZONE})"
    );
    let header = b.wait_text("#site-zone", &zone_name).await?;
    ensure!(header.starts_with("Site time"), "{header}");
    let title = b
        .js("return document.querySelector('#site-zone').title", vec![])
        .await?;
    ensure!(title.as_str().is_some_and(|t| t.contains(ZONE)), "{title}");

    // Opened: its files, each a link, the photo drawn, and its times in the site's zone.
    b.click(&row(&note)).await?;
    let files = b.wait_text("#event-files", "fence.png").await?;
    ensure!(files.contains("image/png"), "{files}");
    b.wait_for(
        "the note's photo to be shown",
        "const img = document.querySelector('#event-detail .images img');
         return img && img.complete && img.naturalWidth > 0",
        vec![],
    )
    .await?;
    let link = b
        .js(
            "const a = document.querySelector('#event-files a'); return a && a.href",
            vec![],
        )
        .await?;
    let status = b
        .client
        .execute_async(
            "fetch(arguments[0]).then(r => arguments[1](r.status))",
            vec![link.clone()],
        )
        .await?;
    ensure!(status == json!(200), "{link} answered {status}");
    let detail = b.text("#event-detail").await?;
    ensure!(
        detail.contains(&format!("{clock}.")) && detail.contains(&zone_name),
        "the detail's times are not the site's ({clock} {zone_name}): {detail}"
    );
    b.click(&row(&files_only)).await?;
    let files = b.wait_text("#event-files", "plan.pdf").await?;
    ensure!(files.contains("fence.png"), "{files}");
    c.browser.close().await
}

/// Types into the sign-in form already on the page (no page load) and waits until `name` is
/// signed in.
async fn sign_in_here(b: &Browser, name: &str, password: &str) -> Result<()> {
    b.type_into("#signin-name", name).await?;
    b.type_into("#signin-password", password).await?;
    b.click("#signin-submit").await?;
    b.wait_text("#who", name).await?;
    Ok(())
}

/// Passwords from the console, in one page load: an administrator's too-short password refused
/// with the reason, a new operator created with a password, who signs in with it, changes it on
/// her own page, and after signing out finds the old one refused and the new one working; an
/// administrator resets another user's password.
async fn passwords_are_set_and_changed_from_the_console(kind: Kind) -> Result<()> {
    let Some(c) = Console::start(kind, &[SITE], &[]).await? else {
        return Ok(());
    };
    user_with_password(&c.server, "admin-maria", "admin", &[SITE])?;
    let b = &c.browser;
    c.sign_in("admin-maria").await?;
    b.click("#nav-admin").await?;

    // A password too short is refused, saying why.
    b.type_into("#new-user-name", "olga").await?;
    b.type_into("#new-user-password", "short").await?;
    b.click("#new-user button[type=submit]").await?;
    b.wait_text("#admin-message", "at least 12 characters")
        .await?;
    const FIRST: &str = "olga's first night shift";
    const SECOND: &str = "a calmer second password";
    b.type_into("#new-user-password", FIRST).await?;
    b.click("#new-user button[type=submit]").await?;
    b.wait_text("#new-user-token", "sign in here with the password given")
        .await?;
    // Anna forgot hers: set from the same page.
    // A select's options are not in its innerText in Firefox: look for the option itself.
    b.wait_for(
        "anna among the users whose password can be set",
        "return [...document.querySelectorAll('#set-password-user option')]
            .some(o => o.text === 'anna');",
        vec![],
    )
    .await?;
    b.js(
        "const s = document.querySelector('#set-password-user');
         s.value = [...s.options].find(o => o.text === 'anna').value;",
        vec![],
    )
    .await?;
    b.type_into("#set-password", "anna's new password here")
        .await?;
    b.click("#set-password-form button[type=submit]").await?;
    b.wait_text("#admin-message", "anna's password is set")
        .await?;

    // Olga signs in with the password given, and changes it.
    b.click("#sign-out").await?;
    sign_in_here(b, "olga", FIRST).await?;
    b.click("#who").await?;
    b.type_into("#password-current", "not my password at all")
        .await?;
    b.type_into("#password-new", SECOND).await?;
    b.type_into("#password-again", SECOND).await?;
    b.click("#password-change").await?;
    b.wait_text("#account-message", "current password is not right")
        .await?;
    b.type_into("#password-current", FIRST).await?;
    b.click("#password-change").await?;
    b.wait_text("#account-message", "Password changed").await?;

    // The old password no longer opens the console; the new one does.
    b.click("#sign-out").await?;
    b.type_into("#signin-name", "olga").await?;
    b.type_into("#signin-password", FIRST).await?;
    b.click("#signin-submit").await?;
    b.wait_text("#signin-error", "Wrong name or password")
        .await?;
    sign_in_here(b, "olga", SECOND).await?;
    c.browser.close().await
}

/// A panic nobody acknowledges is escalated by the server (its escalation time cut to a second,
/// checked every second) and the alarm bar says so, with the time in the site's zone.
async fn an_unanswered_panic_shows_escalated_in_the_alarm_bar(kind: Kind) -> Result<()> {
    let args = [
        "--alarm-escalation-after-secs",
        "1",
        "--alarm-check-secs",
        "1",
    ];
    let Some(c) = Console::start(kind, &[SITE], &args).await? else {
        return Ok(());
    };
    let phone = c.phone("ben", SITE)?;
    phone.run(&["shift", "start", "--guard", "ben"])?;
    phone.run(&["sync"])?;
    c.sign_in("anna").await?;
    c.live_row("shift_started", "ben").await?;
    phone.run(&["panic"])?;
    phone.run(&["sync"])?;
    let bar = c
        .browser
        .wait_text("#alarms .alarm .escalated", "escalated")
        .await?;
    let alarm = c.browser.text("#alarms .alarm").await?;
    ensure!(alarm.contains("PANIC") && alarm.contains("ben"), "{alarm}");
    // The time it was escalated, as the server gives it, in the site's zone (London).
    let out = run_ok(
        &mut c
            .server
            .control(&c.server.admin_token, &["alarms", "--site", SITE, "--json"])?,
    )?;
    let alarms: Value = serde_json::from_str(&out)?;
    let at = alarms["alarms"][0]["escalated_at"]
        .as_str()
        .ok_or_else(|| anyhow!("no escalated_at in {alarms}"))?;
    let at = chrono::DateTime::parse_from_rfc3339(at)?.timestamp_millis();
    let (clock, _) = site_clock("Europe/London", at)?;
    ensure!(bar.contains(&clock), "{bar} does not say {clock}");
    c.browser.close().await
}

/// The `q` quantile (0..=1) of sorted `values`, by the nearest rank.
fn quantile(sorted: &[i64], q: f64) -> i64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// A measurement, not a check of speed (timings belong in benchmarks): with the live log open,
/// a phone (the phone library) syncs 30 single scans one at a time, and for each the page
/// records (a MutationObserver, `Date.now()`) when its row was added; the host's clock is read
/// when the sync returned, on the same machine. Prints the spread; asserts only that every row
/// arrived.
///
/// `cargo test -p patrol-e2e --test e2e -- --ignored console_latency --nocapture` (Chromium)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it by name"]
async fn console_latency() -> Result<()> {
    use patrol_core::{CheckpointId, GuardId, Scan, ScanMethod};
    use patrol_mobile::{RecordOptions, StoreOptions};
    const N: usize = 30;
    let Some(c) = Console::start(Kind::Chromium, &[SITE], &[]).await? else {
        return Ok(());
    };
    let (mut phone, client) = patrol_e2e::enrolled_phone(
        &c.server,
        SITE,
        &c.dir.path().join("ben.db"),
        StoreOptions::default(),
    )
    .await?;
    phone.start_shift(GuardId::new("ben")?)?;
    client.sync(&mut phone).await?;
    c.sign_in("anna").await?;
    c.live_row("shift_started", "ben").await?;
    c.browser.wait_text("#connection", "Live").await?;
    c.browser
        .js(
            "window.arrived = {};
             new MutationObserver((changes) => {
               const at = Date.now();
               for (const m of changes) for (const n of m.addedNodes) {
                 if (n.dataset && n.dataset.id && !(n.dataset.id in window.arrived)) window.arrived[n.dataset.id] = at;
               }
             }).observe(document.querySelector('#live-rows'), { childList: true });",
            vec![],
        )
        .await?;
    let now_ms = || chrono::Utc::now().timestamp_millis();
    let (mut after_return, mut after_start) = (Vec::with_capacity(N), Vec::with_capacity(N));
    for _ in 0..N {
        let id = phone
            .scan(
                Scan {
                    checkpoint: CheckpointId::new("cp-1")?,
                    method: ScanMethod::Nfc {
                        tag: "04:A1:11".into(),
                    },
                    location: None,
                    note: None,
                },
                RecordOptions::default(),
            )?
            .to_string();
        let started = now_ms();
        client.sync(&mut phone).await?;
        let returned = now_ms();
        let shown = c
            .browser
            .wait_for(
                &format!("the scan {id} on screen"),
                "return window.arrived[arguments[0]]",
                vec![json!(id)],
            )
            .await?
            .as_i64()
            .ok_or_else(|| anyhow!("no arrival time for {id}"))?;
        after_return.push(shown - returned);
        after_start.push(shown - started);
    }
    ensure!(after_return.len() == N, "not every row arrived");
    for (what, values) in [
        ("from the sync's return", &mut after_return),
        ("from the sync's start", &mut after_start),
    ] {
        values.sort_unstable();
        println!(
            "console_latency: {N} scans, on screen {what}: p50 {} ms, p95 {} ms, max {} ms (min {} ms)",
            quantile(values, 0.5),
            quantile(values, 0.95),
            values.last().copied().unwrap_or_default(),
            values.first().copied().unwrap_or_default(),
        );
    }
    c.browser.close().await
}
