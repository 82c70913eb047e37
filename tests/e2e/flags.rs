//! Anomaly flags through the real server and two phones played by `patrol device`: anna walks an
//! ordered round out of order, scans one checkpoint twice within minutes and another outside
//! every window of its tour; anna and bob scan one tag within seconds of each other. The
//! control room's `patrol control pull --json` shows each flag on its scan (the cloned tag on
//! both), and its table says them in words; anna's own `patrol device log` shows the same flags
//! of her scans, worked out on the phone by the same function (all but the cloned tag, which
//! takes another phone's scans to see).

use anyhow::{Context, Result, anyhow, ensure};
use patrol_e2e::Phone;
use patrol_testkit::{Server, run_ok};
use serde_json::{Value, json};

const SITE: &str = "site-1";
const HOUR: i64 = 3_600_000;

/// The names of an event's flags.
fn names(event: &Value) -> Vec<&str> {
    event["flags"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["flag"].as_str()).collect())
        .unwrap_or_default()
}

fn by_id<'a>(events: &'a [Value], id: &str) -> Result<&'a Value> {
    events
        .iter()
        .find(|e| e["id"] == id)
        .ok_or_else(|| anyhow!("event {id} not in {events:?}"))
}

/// A phone enrolled on the site, holding its configuration, on shift as `guard`.
fn on_shift(server: &Server, dir: &std::path::Path, guard: &str) -> Result<Phone> {
    let phone = Phone::enroll(dir.join(format!("{guard}.db")), server, SITE)?;
    phone.run(&["sync"])?;
    phone.run(&["shift", "start", "--guard", guard])?;
    Ok(phone)
}

/// Scans `tag` by NFC (its checkpoint looked up in the configuration); the event's id.
fn scan(phone: &Phone, tag: &str) -> Result<String> {
    Ok(phone.run(&["scan", "--nfc", tag])?.trim().to_owned())
}

#[test]
fn flags_show_in_the_control_rooms_pull_and_on_the_phone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let now = chrono::Utc::now().timestamp_millis();
    // `round` is walked in order, cp-1 then cp-2, in a window open now; cp-3's tour opens in
    // five hours; cp-9 is on no tour.
    let config = json!({
        "base_version": 0,
        "checkpoints": [
            {"id": "cp-1", "name": "Gate", "tags": ["t1"], "location": null, "radius_m": null},
            {"id": "cp-2", "name": "Yard", "tags": ["t2"], "location": null, "radius_m": null},
            {"id": "cp-3", "name": "Roof", "tags": ["t3"], "location": null, "radius_m": null},
            {"id": "cp-9", "name": "Lobby", "tags": ["t9"], "location": null, "radius_m": null}
        ],
        "tours": [
            {"id": "round", "name": "Round", "checkpoints": ["cp-1", "cp-2"], "ordered": true,
             "windows": [{"start_ms": now - HOUR, "end_ms": now + HOUR}], "grace_min": 10},
            {"id": "roof", "name": "Roof check", "checkpoints": ["cp-3"],
             "windows": [{"start_ms": now + 5 * HOUR, "end_ms": now + 6 * HOUR}], "grace_min": 10}
        ],
        "post_orders": []
    });
    let file = dir.path().join("config.json");
    std::fs::write(&file, config.to_string())?;
    let path = file.display().to_string();
    run_ok(&mut server.control(
        &server.admin_token,
        &["config", "--site", SITE, "--set", &path],
    )?)?;
    let anna = on_shift(&server, dir.path(), "anna")?;
    let bob = on_shift(&server, dir.path(), "bob")?;

    let ahead = scan(&anna, "t2")?;
    let first = scan(&anna, "t1")?;
    let again = scan(&anna, "t1")?;
    let outside = scan(&anna, "t3")?;
    let annas_t9 = scan(&anna, "t9")?;
    let bobs_t9 = scan(&bob, "t9")?;
    anna.run(&["sync"])?;
    bob.run(&["sync"])?;

    let pulled = patrol_e2e::control_pull(&server, SITE, 100)?;
    let flags = |id: &str| -> Result<Vec<&str>> { Ok(names(by_id(&pulled, id)?)) };
    ensure!(flags(&ahead)? == ["out_of_order"], "{pulled:?}");
    ensure!(flags(&first)?.is_empty(), "{pulled:?}");
    ensure!(flags(&again)? == ["padding"], "{pulled:?}");
    ensure!(flags(&outside)? == ["outside_window"], "{pulled:?}");
    ensure!(flags(&annas_t9)? == ["cloned_tag"], "{pulled:?}");
    ensure!(flags(&bobs_t9)? == ["cloned_tag"], "{pulled:?}");
    let padding = &by_id(&pulled, &again)?["flags"][0];
    ensure!(padding["earlier_event"] == first.as_str(), "{padding}");
    let ahead_flag = &by_id(&pulled, &ahead)?["flags"][0];
    ensure!(
        ahead_flag["tour"] == "round" && ahead_flag["missing"] == "cp-1",
        "{ahead_flag}"
    );
    // Each scan names the other, whichever arrived first.
    ensure!(
        by_id(&pulled, &annas_t9)?["flags"][0]["other_event"] == bobs_t9.as_str()
            && by_id(&pulled, &bobs_t9)?["flags"][0]["other_event"] == annas_t9.as_str(),
        "{pulled:?}"
    );

    // The control room's table, in words.
    let table = run_ok(&mut server.control(&server.admin_token, &["pull", "--site", SITE])?)?;
    for words in [
        "ahead of its turn on tour round: cp-1 not scanned yet",
        "scanned again",
        "outside every window of its tours",
        "tag also scanned",
    ] {
        ensure!(table.contains(words), "no {words:?} in\n{table}");
    }

    // Anna's phone flags her scans the same way, from her own scans.
    let log = anna.log()?;
    let on_phone = |id: &str| -> Result<Vec<&str>> { Ok(names(by_id(&log, id)?)) };
    ensure!(on_phone(&ahead)? == ["out_of_order"], "{log:?}");
    ensure!(on_phone(&first)?.is_empty(), "{log:?}");
    ensure!(on_phone(&again)? == ["padding"], "{log:?}");
    ensure!(on_phone(&outside)? == ["outside_window"], "{log:?}");
    ensure!(on_phone(&annas_t9)?.is_empty(), "{log:?}");
    let table = anna.run(&["log"])?;
    let row = table
        .lines()
        .find(|l| l.contains("cp-3"))
        .context("no cp-3 row in the log")?;
    ensure!(row.contains("outside every window of its tours"), "{table}");
    let tour = anna.run(&["tour", "round"])?;
    let row = tour
        .lines()
        .find(|l| l.contains("cp-2"))
        .context("no cp-2 row in the tour")?;
    ensure!(
        row.contains("done") && row.contains("ahead of its turn"),
        "{tour}"
    );
    Ok(())
}
