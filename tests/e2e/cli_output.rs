//! What a person and a program read from `patrol`: every listing a table with a header row, in
//! the reader's time zone and without Rust's debug forms; `--json` one document with the fields
//! docs/cli.md lists; the values a person needs next printed where they arise (the shift id
//! that `export-shift-log` takes, the panic's id that `ack-alarm` takes, the phone's public
//! key); users named by name; a missing token explained.

use std::process::Command;

use anyhow::{Context, Result, anyhow, ensure};
use patrol_e2e::Phone;
use patrol_testkit::{Server, run};
use serde_json::{Value, json};

const SITE: &str = "site-1";
/// India's time (Asia/Kolkata: a half-hour offset, no daylight saving) as a POSIX rule, so that
/// the test needs no time zone database: its offset shows in every time.
const TZ: &str = "IST-5:30";
const OFFSET: &str = "+05:30";
/// The site's time zone, not the reader's: tours' windows are shown in it (Japan has no daylight
/// saving, so its offset is the same whenever the test runs).
const SITE_ZONE: &str = "Asia/Tokyo";
const SITE_OFFSET: &str = "+09:00";

/// Runs `cmd` in [`TZ`]; its stdout and stderr, or an error saying what it printed.
fn out(cmd: &mut Command) -> Result<(String, String)> {
    let output = run(cmd.env("TZ", TZ))?;
    let stdout = String::from_utf8(output.stdout)?;
    let stderr = String::from_utf8(output.stderr)?;
    ensure!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    Ok((stdout, stderr))
}

fn phone(phone: &Phone, args: &[&str]) -> Result<(String, String)> {
    out(&mut phone.command(args)?)
}

fn control(server: &Server, args: &[&str]) -> Result<(String, String)> {
    out(&mut server.control(&server.admin_token, args)?)
}

fn parsed(text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("not one JSON document: {text}"))
}

/// A table for people: its first line names `columns` (upper case), and nothing in it is a Rust
/// debug form.
fn assert_table(what: &str, text: &str, columns: &[&str]) -> Result<()> {
    let header = text.lines().next().unwrap_or_default();
    for column in columns {
        ensure!(
            header.contains(column),
            "{what}: no {column} in the header of\n{text}"
        );
    }
    for debug in [
        "{",
        "Some(",
        "None",
        "at_ms",
        "Done",
        "CheckpointId(",
        "Acknowledged {",
    ] {
        ensure!(!text.contains(debug), "{what} shows {debug:?}:\n{text}");
    }
    Ok(())
}

/// The row of `table` that contains `needle`.
fn row<'a>(table: &'a str, needle: &str) -> Result<&'a str> {
    table
        .lines()
        .find(|l| l.contains(needle))
        .ok_or_else(|| anyhow!("no row with {needle:?} in\n{table}"))
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Writes the site configuration (two checkpoints, a tour with a one-off window and one with a
/// nightly schedule, in Tokyo) and has the phone fetch it.
fn configure(dir: &std::path::Path, server: &Server, phone: &Phone) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let config = json!({
        "base_version": 0,
        "time_zone": SITE_ZONE,
        "checkpoints": [
            {"id": "cp-1", "name": "Car park B2", "tags": ["04:a1"], "location": null, "radius_m": null},
            {"id": "cp-2", "name": "Loading bay", "tags": ["04:b2"], "location": null, "radius_m": null}
        ],
        "tours": [{
            "id": "night", "name": "Night round", "checkpoints": ["cp-1", "cp-2"],
            "windows": [{"start_ms": now - 3_600_000, "end_ms": now + 3_600_000}], "grace_min": 10
        }, {
            "id": "nightly", "name": "Nightly round", "checkpoints": ["cp-2"], "grace_min": 15,
            "schedule": [{"every_min": 90, "from": "22:00", "to": "06:00"}]
        }],
        "post_orders": []
    });
    let file = dir.join("config.json");
    std::fs::write(&file, config.to_string())?;
    control(
        server,
        &[
            "config",
            "--site",
            SITE,
            "--set",
            &file.display().to_string(),
        ],
    )?;
    phone.run(&["sync"])?;
    Ok(())
}

#[test]
fn listings_are_tables_in_local_time_and_json_documents() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let code = server.enrollment_code(SITE)?;
    let guard = Phone {
        store: dir.path().join("guard.db"),
    };

    // Enrollment prints the device id, the site and the public key the README asks to record.
    let (enrolled, _) = phone(
        &guard,
        &["enroll", "--server", &server.url, "--code", &code],
    )?;
    let key = enrolled
        .lines()
        .find_map(|l| l.strip_prefix("key"))
        .map(str::trim)
        .ok_or_else(|| anyhow!("no key in {enrolled}"))?;
    ensure!(
        key.len() == 64 && enrolled.contains(&guard.device_id()?) && enrolled.contains(SITE),
        "{enrolled}"
    );
    let status = parsed(&phone(&guard, &["status", "--json"])?.0)?;
    ensure!(status["public_key"] == key, "{status}");
    configure(dir.path(), &server, &guard)?;

    // Commands that record print the new id alone on stdout; a scan's flags go to stderr, in
    // words.
    let (shift, _) = phone(&guard, &["shift", "start", "--guard", "anna"])?;
    ensure!(is_uuid(shift.trim()), "{shift:?}");
    let (scan, said) = phone(&guard, &["scan", "cp-1", "--nfc", "04:b2"])?;
    ensure!(is_uuid(scan.trim()), "{scan:?}");
    ensure!(said.contains("flagged: tag of checkpoint cp-2"), "{said}");
    let (incident, _) = phone(
        &guard,
        &[
            "incident",
            "--category",
            "theft",
            "--description",
            "bike gone",
        ],
    )?;
    let incident = incident.trim().to_owned();
    ensure!(is_uuid(&incident), "{incident:?}");
    let (panic, _) = phone(&guard, &["panic"])?;
    let panic = panic.trim().to_owned();
    ensure!(is_uuid(&panic), "{panic:?}");
    for args in [&["note", "door 4 locked"][..], &["handover", "all quiet"]] {
        ensure!(is_uuid(phone(&guard, args)?.0.trim()), "{args:?}");
    }

    // The phone's listings.
    let (log, _) = phone(&guard, &["log"])?;
    assert_table(
        "log",
        &log,
        &["SEQ", "TIME", "GUARD", "KIND", "SYNC", "DETAIL", "FLAGS"],
    )?;
    ensure!(
        row(&log, "checkpoint_scanned")?.contains("tag of checkpoint cp-2"),
        "{log}"
    );
    ensure!(row(&log, "shift_started")?.contains(OFFSET), "{log}");
    let (incidents, _) = phone(&guard, &["incidents"])?;
    assert_table(
        "device incidents",
        &incidents,
        &["INCIDENT", "REPORTED", "STATUS", "SYNC", "DESCRIPTION"],
    )?;
    ensure!(row(&incidents, &incident)?.contains(OFFSET), "{incidents}");
    let (alarms, _) = phone(&guard, &["alarms"])?;
    assert_table("alarms", &alarms, &["RAISED", "ALARM", "STATE"])?;
    ensure!(row(&alarms, &panic)?.contains("queued"), "{alarms}");
    let (tour, _) = phone(&guard, &["tour", "night"])?;
    assert_table("tour", &tour, &["WINDOW START", "CHECKPOINT", "STATE"])?;
    // The scan (of the wrong tag) counts, at its time; the other checkpoint is due. The
    // window and the scan are in the site's time zone.
    let done = row(&tour, "cp-1")?;
    ensure!(
        done.contains("done") && done.matches(SITE_OFFSET).count() == 3,
        "{tour}"
    );
    // (cp-1's row names cp-2 too, in its flag.)
    ensure!(row(&tour, " due ")?.contains("cp-2"), "{tour}");
    let (config, _) = phone(&guard, &["config"])?;
    assert_table(
        "device config",
        config
            .lines()
            .skip(2)
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
        &["CHECKPOINT", "NAME", "TAGS"],
    )?;
    ensure!(
        config.contains("Loading bay") && config.contains("TOUR"),
        "{config}"
    );
    ensure!(
        config.lines().next().is_some_and(|l| l.contains(SITE_ZONE)),
        "{config}"
    );
    // The schedule in words, and its next round at one of its times, in Tokyo.
    let nightly = row(&config, "Nightly round")?;
    ensure!(
        nightly.contains("every 90 min 22:00-06:00, every night, grace 15 min")
            && [
                "22:00:00", "23:30:00", "01:00:00", "02:30:00", "04:00:00", "05:30:00"
            ]
            .iter()
            .any(|t| nightly.contains(&format!("{t} {SITE_OFFSET}"))),
        "{config}"
    );
    let (rounds, _) = phone(&guard, &["tour", "nightly"])?;
    assert_table("scheduled tour", &rounds, &["WINDOW START", "STATE"])?;
    ensure!(
        rounds.lines().count() > 2 && !rounds.contains(OFFSET),
        "tonight's rounds, in the site's zone:\n{rounds}"
    );

    // And their JSON documents.
    let log = parsed(&phone(&guard, &["log", "--json"])?.0)?;
    let scanned = log["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["id"] == scan.trim()))
        .ok_or_else(|| anyhow!("no scan in {log}"))?;
    ensure!(
        scanned["delivered"] == false
            && scanned["flags"]
                == json!([{"flag": "tag_of_another_checkpoint", "checkpoint": "cp-2"}])
            && scanned["device_time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
        "{scanned}"
    );
    let incidents = parsed(&phone(&guard, &["incidents", "--json"])?.0)?;
    ensure!(
        incidents["incidents"][0]["id"] == incident.as_str()
            && incidents["incidents"][0]["pending"] == true,
        "{incidents}"
    );
    let alarms = parsed(&phone(&guard, &["alarms", "--json"])?.0)?;
    ensure!(
        alarms["alarms"][0]["event_id"] == panic.as_str()
            && alarms["alarms"][0]["state"] == "queued",
        "{alarms}"
    );
    let tour = parsed(&phone(&guard, &["tour", "night", "--json"])?.0)?;
    let checkpoints = &tour["windows"][0]["checkpoints"];
    ensure!(
        checkpoints[0]["state"] == "done"
            && checkpoints[0]["scanned_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
            && checkpoints[0]["flags"]
                == json!([{"flag": "tag_of_another_checkpoint", "checkpoint": "cp-2"}])
            && checkpoints[1]
                == json!({"checkpoint": "cp-2", "state": "due", "scanned_at": null, "flags": []}),
        "{tour}"
    );
    let config = parsed(&phone(&guard, &["config", "--json"])?.0)?;
    ensure!(
        config["version"] == 1 && config["time_zone"] == SITE_ZONE,
        "{config}"
    );
    ensure!(tour["time_zone"] == SITE_ZONE, "{tour}");

    // The control room's listings.
    guard.run(&["sync"])?;
    let (pulled, said) = control(&server, &["pull", "--site", SITE])?;
    assert_table(
        "pull",
        &pulled,
        &["SEQ", "TIME", "GUARD", "KIND", "FLAGS", "DETAIL"],
    )?;
    let (wide, _) = control(&server, &["pull", "--site", SITE, "--wide"])?;
    assert_table(
        "pull --wide",
        &wide,
        &[
            "SEQ",
            "TIME",
            "DEVICE TIME",
            "RECEIVED",
            "GUARD",
            "KIND",
            "FLAGS",
            "DETAIL",
        ],
    )?;
    ensure!(
        row(&pulled, "panic")?.contains(&format!("ack-alarm {panic}")),
        "{pulled}"
    );
    ensure!(row(&pulled, "shift_started")?.contains(OFFSET), "{pulled}");
    ensure!(said.contains("next cursor 6"), "{said}");
    let page = parsed(&control(&server, &["pull", "--site", SITE, "--json"])?.0)?;
    ensure!(
        page["events"].as_array().map(Vec::len) == Some(6)
            && page["next"] == 6
            && page["more"] == false,
        "{page}"
    );
    // A page after the end is still a page.
    let empty = parsed(
        &control(
            &server,
            &["pull", "--site", SITE, "--after", "1000", "--json"],
        )?
        .0,
    )?;
    ensure!(
        empty == json!({"events": [], "next": 1000, "more": false}),
        "{empty}"
    );
    let (devices, _) = control(&server, &["devices", "--site", SITE])?;
    assert_table(
        "devices",
        &devices,
        &[
            "DEVICE",
            "GUARD",
            "LAST SYNC",
            "PENDING",
            "STATE",
            "PUBLIC KEY",
        ],
    )?;
    ensure!(row(&devices, key)?.contains(OFFSET), "{devices}");
    let devices = parsed(&control(&server, &["devices", "--site", SITE, "--json"])?.0)?;
    ensure!(devices["devices"][0]["public_key"] == key, "{devices}");
    let (listed, _) = control(&server, &["incidents", "--site", SITE])?;
    assert_table(
        "control incidents",
        &listed,
        &["INCIDENT", "REPORTED", "CATEGORY", "SEVERITY", "STATUS"],
    )?;
    ensure!(row(&listed, &incident)?.contains("bike gone"), "{listed}");
    control(
        &server,
        &[
            "incident-action",
            "--site",
            SITE,
            &incident,
            "add_note",
            "--text",
            "police called",
        ],
    )?;
    let (one, _) = control(&server, &["incidents", "--site", SITE, &incident])?;
    assert_table(
        "one incident",
        one.lines()
            .skip_while(|l| !l.starts_with("NOTE AT"))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
        &["NOTE AT", "BY", "TEXT"],
    )?;
    ensure!(row(&one, "police called")?.contains(OFFSET), "{one}");
    let one = parsed(&control(&server, &["incidents", "--site", SITE, &incident, "--json"])?.0)?;
    ensure!(one["notes"][0]["text"] == "police called", "{one}");
    let listed = parsed(&control(&server, &["incidents", "--site", SITE, "--json"])?.0)?;
    ensure!(
        listed["incidents"][0]["id"] == incident.as_str(),
        "{listed}"
    );
    let (users, _) = control(&server, &["user", "list"])?;
    assert_table("users", &users, &["USER", "NAME", "ROLE", "SITES", "STATE"])?;
    ensure!(row(&users, "e2e-admin")?.contains(OFFSET), "{users}");
    let users = parsed(&control(&server, &["user", "list", "--json"])?.0)?;
    ensure!(users["users"][0]["name"] == "e2e-admin", "{users}");
    let (config, _) = control(&server, &["config", "--site", SITE])?;
    ensure!(
        config.contains("CHECKPOINT") && config.contains(OFFSET),
        "{config}"
    );
    let config = parsed(&control(&server, &["config", "--site", SITE, "--json"])?.0)?;
    ensure!(
        config["checkpoints"][1]["name"] == "Loading bay",
        "{config}"
    );

    // The operator acknowledges the panic by the id `pull` showed; the phone learns it.
    let (acked, _) = control(&server, &["ack-alarm", "--site", SITE, &panic])?;
    ensure!(acked.contains("acknowledged by e2e-admin"), "{acked}");
    guard.run(&["sync"])?;
    let (alarms, _) = phone(&guard, &["alarms"])?;
    assert_table("acknowledged alarms", &alarms, &["ACKNOWLEDGED"])?;
    let acknowledged = row(&alarms, &panic)?;
    ensure!(
        acknowledged.contains("acknowledged by e2e-admin")
            && acknowledged.matches(OFFSET).count() == 2,
        "{alarms}"
    );
    Ok(())
}

/// `shift end` prints the shift's id, the one `export-shift-log --shift` takes (it printed the
/// id of the shift's last event, which the export answered with 404).
#[test]
fn shift_end_prints_the_id_the_export_takes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let guard = Phone::enroll(dir.path().join("guard.db"), &server, SITE)?;
    let (started, _) = phone(&guard, &["shift", "start", "--guard", "anna"])?;
    guard.run(&["scan", "cp-1", "--nfc", "04:a1"])?;
    let (ended, said) = phone(&guard, &["shift", "end", "--note", "quiet"])?;
    ensure!(
        ended == started && is_uuid(ended.trim()),
        "{started:?} {ended:?}"
    );
    ensure!(said.contains("shift ended"), "{said}");
    guard.run(&["sync"])?;
    let file = dir.path().join("shift.json");
    let (exported, _) = control(
        &server,
        &[
            "export-shift-log",
            "--site",
            SITE,
            "--shift",
            ended.trim(),
            "--out",
            &file.display().to_string(),
        ],
    )?;
    ensure!(exported.contains(ended.trim()), "{exported}");
    Ok(())
}

/// `control user token` and `user revoke` take a name, as `patrol-server user revoke` does; a
/// name nobody has is refused and changes nothing.
#[test]
fn users_are_named_by_name_or_id() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let first = control(
        &server,
        &[
            "user", "create", "op-1", "--role", "operator", "--site", SITE,
        ],
    )?
    .0;
    let can_read = |token: &str| -> Result<bool> {
        Ok(run(server
            .control(token.trim(), &["pull", "--site", SITE])?
            .env("TZ", TZ))?
        .status
        .success())
    };
    ensure!(can_read(&first)?);

    let nobody = run(&mut server.control(&server.admin_token, &["user", "revoke", "op-2"])?)?;
    let said = String::from_utf8_lossy(&nobody.stderr);
    ensure!(
        !nobody.status.success() && said.contains("no user with id or name \"op-2\""),
        "{said}"
    );
    ensure!(can_read(&first)?, "a refused revoke changed something");

    let (second, _) = control(&server, &["user", "token", "op-1"])?;
    ensure!(!can_read(&first)? && can_read(&second)?);
    let users = parsed(&control(&server, &["user", "list", "--json"])?.0)?;
    let id = users["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "op-1"))
        .and_then(|u| u["id"].as_str())
        .ok_or_else(|| anyhow!("no op-1 in {users}"))?
        .to_owned();
    // By id as well.
    let (third, said) = control(&server, &["user", "token", &id])?;
    ensure!(said.contains("op-1") && !can_read(&second)? && can_read(&third)?);
    let (revoked, _) = control(&server, &["user", "revoke", "op-1"])?;
    ensure!(revoked.contains(&id), "{revoked}");
    ensure!(!can_read(&third)?, "revoked by name, the token still reads");
    Ok(())
}

/// Without a token, `patrol control` says how to give one; no backtrace.
#[test]
fn a_missing_token_says_to_pass_it_or_set_patrol_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let mut cmd = Command::new(&patrol_testkit::bins()?.patrol);
    cmd.args(["control", "--server", &server.url, "pull", "--site", SITE])
        .env_remove("PATROL_TOKEN")
        .env("RUST_BACKTRACE", "1");
    let output = run(&mut cmd)?;
    let said = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "ran without a token");
    ensure!(
        said.starts_with("error: ")
            && said.contains("--token")
            && said.contains("PATROL_TOKEN")
            && !said.contains("backtrace")
            && !said.contains("panicked"),
        "{said}"
    );
    let help = run(Command::new(&patrol_testkit::bins()?.patrol).args(["control", "--help"]))?;
    let help = String::from_utf8_lossy(&help.stdout);
    ensure!(help.contains("PATROL_TOKEN"), "{help}");
    Ok(())
}

/// The control room's device list names each phone's guard (the guard of its latest shift).
/// Needs the server's `guard` field in `GET /api/v1/sites/{site}/devices`.
#[test]
fn devices_shows_each_phones_guard() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let anna = Phone::enroll(dir.path().join("anna.db"), &server, SITE)?;
    let idle = Phone::enroll(dir.path().join("idle.db"), &server, SITE)?;
    anna.run(&["shift", "start", "--guard", "anna"])?;
    anna.run(&["sync"])?;
    let (devices, _) = control(&server, &["devices", "--site", SITE])?;
    let columns: Vec<&str> = row(&devices, &anna.device_id()?)?
        .split_whitespace()
        .collect();
    ensure!(columns.get(1) == Some(&"anna"), "{devices}");
    let columns: Vec<&str> = row(&devices, &idle.device_id()?)?
        .split_whitespace()
        .collect();
    ensure!(columns.get(1) == Some(&"-"), "{devices}");
    Ok(())
}
