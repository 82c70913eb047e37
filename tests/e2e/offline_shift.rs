//! Three guards patrol offline; one phone is killed mid-sync, after the server committed its
//! events but before it heard so, and syncs again. The control room's pull must hold every
//! event exactly once, in canonical order, with both device time and server receive time.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, ensure};
use patrol_e2e::{KillingProxy, Phone, control_pull};
use patrol_testkit::Server;
use serde_json::Value;

const SITE: &str = "site-1";

fn record_offline_shift(phone: &Phone, guard: &str, scans: usize) -> Result<()> {
    phone.run(&["shift", "start", "--guard", guard])?;
    for i in 0..scans {
        let cp = format!("cp-{}", i % 12 + 1);
        let tag = format!("04:{guard}:{i}");
        phone.run(&[
            "scan", &cp, "--nfc", &tag, "--lat", "51.5074", "--lon", "-0.1278",
        ])?;
    }
    phone.run(&["note", &format!("{guard}: fire exit B2 clear")])?;
    Ok(())
}

fn pending(phone: &Phone) -> Result<usize> {
    Ok(phone
        .log()?
        .iter()
        .filter(|e| e["delivered"] == false)
        .count())
}

#[test]
fn offline_logs_from_three_phones_merge_exactly_once_even_when_a_sync_is_killed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;

    // Three guards record their rounds with no network at all.
    let phones: Vec<Phone> = (1..=3)
        .map(|n| Phone::enroll(dir.path().join(format!("guard{n}.db")), &server, SITE))
        .collect::<Result<_>>()?;
    for (n, phone) in phones.iter().enumerate() {
        record_offline_shift(phone, &format!("guard-{}", n + 1), 5 + 3 * n)?;
    }
    let local: Vec<Vec<Value>> = phones.iter().map(Phone::log).collect::<Result<_>>()?;
    ensure!(
        local
            .iter()
            .all(|log| log.iter().all(|e| e["delivered"] == false))
    );

    // Guard 1 syncs normally.
    phones[0].run(&["sync", "--server", &server.url])?;
    ensure!(
        pending(&phones[0])? == 0,
        "guard 1 still has pending events"
    );

    // Guard 2's phone dies the moment the server starts answering.
    let victim = Arc::new(Mutex::new(None));
    let proxy = KillingProxy::start(server.addr, victim.clone())?;
    {
        let mut slot = victim.lock().map_err(|_| anyhow!("poisoned"))?;
        let child = phones[1]
            .command(&["sync", "--server", &format!("http://{}", proxy.addr)])?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        *slot = Some(child);
    }
    proxy.finish()?;
    ensure!(
        pending(&phones[1])? == local[1].len(),
        "a phone killed before the answer must still count every event pending"
    );
    let after_kill = control_pull(&server, SITE, 1000)?;
    ensure!(
        after_kill.len() == local[0].len() + local[1].len(),
        "the server committed guard 2's events before answering"
    );

    // The phone comes back and retries; guard 3 syncs for the first time.
    phones[1].run(&["sync", "--server", &server.url])?;
    phones[2].run(&["sync", "--server", &server.url])?;
    // A repeat sync with nothing new changes nothing.
    phones[0].run(&["sync", "--server", &server.url])?;
    for phone in &phones {
        ensure!(
            pending(phone)? == 0,
            "{} has pending events",
            phone.store.display()
        );
    }

    // The control room pulls in small pages to exercise the cursor.
    let pulled = control_pull(&server, SITE, 7)?;
    let expected: HashMap<String, &Value> = local
        .iter()
        .flatten()
        .map(|e| (e["id"].as_str().unwrap_or_default().to_owned(), e))
        .collect();
    ensure!(
        pulled.len() == expected.len(),
        "pulled {} of {} events",
        pulled.len(),
        expected.len()
    );
    let ids: HashSet<&str> = pulled.iter().filter_map(|e| e["id"].as_str()).collect();
    ensure!(
        ids.len() == pulled.len(),
        "an event appears twice in the site record"
    );

    let seqs: Vec<u64> = pulled.iter().filter_map(|e| e["seq"].as_u64()).collect();
    ensure!(
        seqs.len() == pulled.len(),
        "every event has a server sequence number"
    );
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events are not in canonical order: {seqs:?}"
    );

    for e in &pulled {
        let id = e["id"].as_str().unwrap_or_default();
        let mine = expected
            .get(id)
            .ok_or_else(|| anyhow!("server invented event {id}"))?;
        for key in [
            "kind",
            "device_id",
            "guard_id",
            "shift_id",
            "device_seq",
            "device_time",
        ] {
            ensure!(
                e[key] == mine[key],
                "event {id}: {key} {} != {}",
                e[key],
                mine[key]
            );
        }
        ensure!(
            e["received_at"].as_str().is_some_and(|s| s.ends_with('Z')),
            "{id} lacks received_at"
        );
        if e["kind"] == "checkpoint_scanned" {
            ensure!(e["checkpoint"] == mine["checkpoint"] && e["method"] == mine["method"]);
            ensure!(e["location"] == mine["location"]);
        }
    }
    // Each phone's events keep their device order within the canonical order.
    for log in &local {
        let device = &log[0]["device_id"];
        let order: Vec<&Value> = pulled
            .iter()
            .filter(|e| &e["device_id"] == device)
            .map(|e| &e["device_seq"])
            .collect();
        let mine: Vec<&Value> = log.iter().map(|e| &e["device_seq"]).collect();
        ensure!(order == mine, "device {device}: events out of device order");
    }
    Ok(())
}

#[test]
fn a_store_made_without_enrolling_records_but_its_sync_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let path = dir.path().join("lost.db");
    // A store set up for the site without enrolling (the library's offline-only path).
    drop(patrol_mobile::DeviceStore::create(
        &path,
        patrol_core::SiteId::new(SITE)?,
    )?);
    let phone = Phone { store: path };
    record_offline_shift(&phone, "guard-9", 2)?;
    let out = phone
        .command(&["sync", "--server", &server.url])?
        .output()?;
    ensure!(
        !out.status.success(),
        "sync of a store not enrolled must fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("not enrolled"),
        "the error says so: {stderr}"
    );
    ensure!(pending(&phone)? == 4);
    ensure!(control_pull(&server, SITE, 100)?.is_empty());
    Ok(())
}
