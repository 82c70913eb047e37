//! Tamper evidence: a phone enrolls with its own signing key and signs its shift log's heads at
//! every sync; the control room exports the log and `patrol verify` checks it offline against
//! the phone's public key. Someone with write access to the server's database then changes,
//! removes or inserts a change of the stored log, and `patrol verify` must refuse each.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, ensure};
use patrol_core::{DeviceId, EventBody, EventId, ShiftLog};
use patrol_e2e::{Phone, control_pull};
use patrol_testkit::{Server, WEAK_ED25519_KEYS, bins, run, run_ok};
use rusqlite::{Connection, params};

const SITE: &str = "site-1";

/// The phone's public key, as `patrol device status` shows it.
fn public_key(phone: &Phone) -> Result<String> {
    let status = phone.run(&["status"])?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("key").map(|k| k.trim().to_owned()))
        .ok_or_else(|| anyhow!("no key line in {status}"))
}

fn export(server: &Server, shift: &str, out: &Path) -> Result<()> {
    run_ok(&mut server.control(
        &server.admin_token,
        &[
            "export-shift-log",
            "--site",
            SITE,
            "--shift",
            shift,
            "--out",
            &out.display().to_string(),
        ],
    )?)?;
    Ok(())
}

/// `patrol verify`: whether it verified, and what it said.
fn verify(file: &Path, key: &str) -> Result<(bool, String)> {
    let out = run(Command::new(&bins()?.patrol)
        .arg("verify")
        .arg(file)
        .args(["--public-key", key]))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// The stored chunks of the shift log, in order.
fn chunks(db: &Connection, shift: &str) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut stmt = db.prepare(
        "SELECT chunk_id, bytes FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2
         ORDER BY chunk_id",
    )?;
    let rows = stmt
        .query_map(params![SITE, shift], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A copy of the stopped server's data directory, for one tampering.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// A change the phone never made, as someone with the database (and so the device's actor id)
/// but not its key would make it: the log as `prefix` holds it, plus event `id` with a scan of
/// `checkpoint`.
fn forge(prefix: &[u8], device: DeviceId, id: EventId, checkpoint: &str) -> Result<Vec<u8>> {
    let mut log = ShiftLog::load(prefix, device)?;
    let template = log
        .events()?
        .into_iter()
        .rev()
        .find(|e| matches!(e.record.body, EventBody::CheckpointScanned(_)))
        .ok_or_else(|| anyhow!("no scan to copy"))?;
    let mut record = template.record;
    record.seq += 1;
    if let EventBody::CheckpointScanned(scan) = &mut record.body {
        scan.checkpoint = checkpoint.parse()?;
    }
    let change = log
        .record(id, &record)?
        .ok_or_else(|| anyhow!("the forged event made no change"))?;
    Ok(change.bytes)
}

#[test]
fn signed_logs_verify_offline_and_any_tampering_with_the_stored_log_is_detected() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("server");
    let server = Server::start(&base, &[SITE])?;
    let phone = Phone::enroll(dir.path().join("guard.db"), &server, SITE)?;
    let key = public_key(&phone)?;
    ensure!(key.len() == 64, "a 32-byte key in hex: {key}");
    let device: DeviceId = phone.device_id()?.parse()?;

    // The server registered the same key at enrollment.
    let devices: serde_json::Value = serde_json::from_str(&run_ok(
        &mut server.control(&server.admin_token, &["devices", "--site", SITE, "--json"])?,
    )?)?;
    ensure!(
        devices["devices"][0]["public_key"] == key.as_str(),
        "{devices}"
    );

    // Three syncs: the first stores the log as one save, the next two append a chunk each.
    phone.run(&["shift", "start", "--guard", "guard-1"])?;
    for round in 0..3 {
        for i in 0..3 {
            let cp = format!("cp-{}", round * 3 + i + 1);
            phone.run(&["scan", &cp, "--qr", &format!("QR-{cp}")])?;
        }
        phone.run(&["sync", "--server", &server.url])?;
    }
    let events = control_pull(&server, SITE, 1000)?;
    ensure!(events.len() == 10, "shift start and 9 scans: {events:?}");
    let shift = events[0]["shift_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no shift_id"))?
        .to_owned();
    let last_id: EventId = events[9]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no id"))?
        .parse()?;

    // The untouched log verifies against the phone's key, and only against it.
    let exported = dir.path().join("export.json");
    export(&server, &shift, &exported)?;
    let (ok, said) = verify(&exported, &key)?;
    ensure!(ok && said.contains("verified"), "{said}");
    ensure!(said.contains("10 event(s)"), "{said}");
    let other = Phone::enroll(dir.path().join("other.db"), &server, SITE)?;
    let (ok, said) = verify(&exported, &public_key(&other)?)?;
    ensure!(!ok && said.contains("NOT VERIFIED"), "{said}");

    let admin = server.admin_token.clone();
    server.kill()?;
    {
        let db = Connection::open(base.join("patrol.db"))?;
        let stored = chunks(&db, &shift)?;
        ensure!(stored.len() == 3, "one save and two appended chunks");
    }

    // Each tampering on its own copy of the stopped server's data.
    let tamper = |name: &str, edit: &dyn Fn(&Connection) -> Result<()>| -> Result<String> {
        let copy: PathBuf = dir.path().join(name);
        copy_dir(&base, &copy)?;
        {
            let db = Connection::open(copy.join("patrol.db"))?;
            edit(&db).with_context(|| format!("tampering: {name}"))?;
        }
        let server = Server::restart(&copy, &admin)?;
        let file = dir.path().join(format!("{name}.json"));
        export(&server, &shift, &file)?;
        let (ok, said) = verify(&file, &key)?;
        ensure!(!ok, "{name}: a tampered log verified: {said}");
        ensure!(said.contains("NOT VERIFIED"), "{name}: {said}");
        Ok(said)
    };

    // Changed: the last scan replaced by a scan of another checkpoint, same event id, same
    // place in the log, made with the device's actor id.
    let said = tamper("changed", &|db| {
        let stored = chunks(db, &shift)?;
        let prefix: Vec<u8> = stored[..2].iter().flat_map(|(_, b)| b.clone()).collect();
        // The last chunk holds the third sync's three scans; keep the first two as they were.
        let mut log = ShiftLog::load(&[prefix.clone(), stored[2].1.clone()].concat(), device)?;
        let changes = log.changes();
        let kept: Vec<u8> = changes[changes.len() - 3..changes.len() - 1]
            .iter()
            .flat_map(|c| c.raw_bytes().to_vec())
            .collect();
        let forged = forge(&[prefix, kept.clone()].concat(), device, last_id, "cp-99")?;
        db.execute(
            "UPDATE doc_chunks SET bytes = ?3 WHERE site_id = ?1 AND doc_id = ?2 AND chunk_id = ?4",
            params![SITE, shift, [kept, forged].concat(), stored[2].0],
        )?;
        Ok(())
    })?;
    ensure!(said.contains("missing"), "changed: {said}");

    // Removed: the second sync's chunk deleted.
    let said = tamper("removed", &|db| {
        let stored = chunks(db, &shift)?;
        db.execute(
            "DELETE FROM doc_chunks WHERE site_id = ?1 AND doc_id = ?2 AND chunk_id = ?3",
            params![SITE, shift, stored[1].0],
        )?;
        Ok(())
    })?;
    ensure!(said.contains("missing"), "removed: {said}");

    // Inserted: one more scan appended after the last signed change.
    let said = tamper("inserted", &|db| {
        let stored = chunks(db, &shift)?;
        let all: Vec<u8> = stored.iter().flat_map(|(_, b)| b.clone()).collect();
        let forged = forge(&all, device, EventId::generate(), "cp-42")?;
        db.execute(
            "INSERT INTO doc_chunks (site_id, doc_id, chunk_id, bytes) VALUES (?1, ?2, ?3, ?4)",
            params![SITE, shift, stored[2].0 + 1, forged],
        )?;
        Ok(())
    })?;
    ensure!(said.contains("covered by no signature"), "inserted: {said}");

    // Dropping the signatures instead leaves nothing that verifies.
    let said = tamper("unsigned", &|db| {
        db.execute("DELETE FROM shift_log_signatures", [])?;
        Ok(())
    })?;
    ensure!(said.contains("no signature"), "unsigned: {said}");
    Ok(())
}

#[test]
fn a_forged_export_against_a_weak_key_does_not_verify() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let phone = Phone::enroll(dir.path().join("guard.db"), &server, SITE)?;
    phone.run(&["shift", "start", "--guard", "guard-1"])?;
    phone.run(&["scan", "cp-1", "--qr", "QR-cp-1"])?;
    phone.run(&["sync", "--server", &server.url])?;
    let events = control_pull(&server, SITE, 1000)?;
    let shift = events[0]["shift_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no shift_id"))?
        .to_owned();
    let exported = dir.path().join("export.json");
    export(&server, &shift, &exported)?;

    // The attacker keeps the log and its signed heads but puts in the constant signature
    // R = identity, s = 0, which the plain check accepts against the identity key for any
    // message (and against the other weak keys for some).
    let mut forged: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&exported)?)?;
    let mut constant = "00".repeat(64);
    constant.replace_range(0..2, "01");
    let signatures = forged["signatures"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("no signatures"))?;
    for s in signatures.iter_mut() {
        s["signature"] = constant.clone().into();
    }
    let file = dir.path().join("forged.json");
    std::fs::write(&file, serde_json::to_string(&forged)?)?;

    for weak in WEAK_ED25519_KEYS {
        let (ok, said) = verify(&file, weak)?;
        ensure!(!ok, "{weak}: a forged log verified: {said}");
        ensure!(
            !said.contains("verified:") && said.contains("weak"),
            "{weak}: {said}"
        );
    }
    Ok(())
}
