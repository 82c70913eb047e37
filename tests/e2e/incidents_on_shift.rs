//! Open incidents reach every guard on shift, and every action keeps who and when: guard A
//! reports an incident; guard B, on shift and never involved, gets it at his next sync, adds a
//! note offline and syncs; the control room reads B's note with B's name and time in the
//! incident's history. A phone with no shift open is not sent it. All through the real `patrol`
//! command and server.

use std::process::Command;

use anyhow::{Context, Result, anyhow, ensure};
use patrol_e2e::Phone;
use patrol_testkit::{Server, run};
use serde_json::Value;

const SITE: &str = "site-1";
/// India's time as a POSIX rule (no time zone database needed): its offset shows in every
/// local time.
const TZ: &str = "IST-5:30";
const OFFSET: &str = "+05:30";

/// Runs `cmd` in [`TZ`]; its stdout, or an error saying what it printed.
fn out(cmd: &mut Command) -> Result<String> {
    let output = run(cmd.env("TZ", TZ))?;
    let stdout = String::from_utf8(output.stdout)?;
    ensure!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

fn on(phone: &Phone, args: &[&str]) -> Result<String> {
    out(&mut phone.command(args)?)
}

fn control(server: &Server, args: &[&str]) -> Result<String> {
    out(&mut server.control(&server.admin_token, args)?)
}

/// The lines of the HISTORY table of an incident's detail (header first).
fn history_table(detail: &str) -> Vec<&str> {
    detail
        .lines()
        .skip_while(|l| !l.starts_with("HISTORY AT"))
        .take_while(|l| !l.is_empty())
        .collect()
}

fn now_ms() -> Result<i64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64)
}

#[test]
fn an_open_incident_reaches_a_guard_on_shift_whose_note_the_control_room_sees_with_who_and_when()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let alice = Phone::enroll(dir.path().join("alice.db"), &server, SITE)?;
    let bob = Phone::enroll(dir.path().join("bob.db"), &server, SITE)?;
    let carol = Phone::enroll(dir.path().join("carol.db"), &server, SITE)?;

    on(&alice, &["shift", "start", "--guard", "alice"])?;
    let incident = on(
        &alice,
        &[
            "incident",
            "--category",
            "theft",
            "--severity",
            "high",
            "--description",
            "window smashed at the loading bay",
        ],
    )?
    .trim()
    .to_owned();
    on(&alice, &["sync"])?;

    // Bob is on shift and never touched the incident: his sync brings it.
    on(&bob, &["shift", "start", "--guard", "bob"])?;
    on(&bob, &["sync"])?;
    let listed = on(&bob, &["incidents"])?;
    ensure!(
        listed.contains(&incident) && listed.contains("window smashed"),
        "{listed}"
    );
    let detail = on(&bob, &["incidents", &incident])?;
    let history = history_table(&detail);
    ensure!(history.len() == 2, "{detail}");
    ensure!(
        history[1].contains("guard alice")
            && history[1].contains("reported (theft, high)")
            && history[1].contains(OFFSET),
        "{detail}"
    );

    // Carol's phone has no shift open: it is not sent the incident.
    on(&carol, &["sync"])?;
    let none = Value::from(Vec::<Value>::new());
    let held: Value = serde_json::from_str(&on(&carol, &["incidents", "--json"])?)?;
    ensure!(held["incidents"] == none, "{held}");

    // Offline, Bob adds a note; then he syncs.
    let before = now_ms()?;
    on(
        &bob,
        &["incident-update", &incident, "--note", "glass swept up"],
    )?;
    let after = now_ms()?;
    on(&bob, &["sync"])?;

    // The control room sees Bob's note in the history, with his name and time.
    let detail = control(&server, &["incidents", "--site", SITE, &incident])?;
    let history = history_table(&detail);
    let row = history
        .iter()
        .find(|l| l.contains("note: glass swept up"))
        .ok_or_else(|| anyhow!("no note in the history:\n{detail}"))?;
    ensure!(
        row.contains("guard bob") && row.contains(OFFSET),
        "{detail}"
    );
    let json: Value = serde_json::from_str(&control(
        &server,
        &["incidents", "--site", SITE, &incident, "--json"],
    )?)?;
    let entries = json["history"]
        .as_array()
        .ok_or_else(|| anyhow!("no history in {json}"))?;
    let note = entries
        .iter()
        .find(|h| h["action"] == "note")
        .ok_or_else(|| anyhow!("no note in {json}"))?;
    ensure!(
        note["by"]["kind"] == "guard"
            && note["by"]["guard"] == "bob"
            && note["took_effect"] == true,
        "{note}"
    );
    let at = note["at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .context("the note's time")?
        .timestamp_millis();
    ensure!(
        (before..=after).contains(&at),
        "{at} not in {before}..={after}"
    );

    // The control room acknowledges; both phones show the whole history in the same order.
    control(
        &server,
        &["incident-action", "--site", SITE, &incident, "acknowledge"],
    )?;
    let room = control(&server, &["incidents", "--site", SITE, &incident])?;
    let room_history = history_table(&room);
    ensure!(
        room_history
            .last()
            .is_some_and(|l| l.contains("acknowledged") && l.contains("control room (e2e-admin)")),
        "{room}"
    );
    for phone in [&alice, &bob] {
        on(phone, &["sync"])?;
        let detail = on(phone, &["incidents", &incident])?;
        ensure!(
            history_table(&detail) == room_history,
            "phone:\n{detail}\nroom:\n{room}"
        );
    }
    Ok(())
}
