//! Crash safety of the phone: a process recording events (and, in the second test, syncing
//! them) is SIGKILLed at random moments, 50 times. After every restart the store must open
//! cleanly and hold every event whose recording call had returned; at the end one sync must
//! deliver everything, and the server must hold each event exactly once.
//!
//! In the second test the writer also attaches a file (64 KiB to 1.5 MiB, several upload
//! chunks) at every start and every 20 events, alternately to an incident and to a new note,
//! so kills land in attachments' writes and uploads too: every attachment whose call returned must be held whole after each
//! restart, and after the last sync stored on the server, byte for byte (each stored blob
//! hashes to its name).
//!
//! The writer is this test binary run again in "child" mode (`child_writer`), so the killed
//! process runs exactly the library code an app runs.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use patrol_core::{
    CheckpointId, EventId, GuardId, IncidentCategory, IncidentId, IncidentReport, Location, Scan,
    ScanMethod, Severity, SiteId,
};
use patrol_e2e::{Phone, control_pull};
use patrol_mobile::{DeviceStore, Durability, NewFile, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::Server;

const STORE_ENV: &str = "PATROL_CRASH_STORE";
const SERVER_ENV: &str = "PATROL_CRASH_SERVER";
const DURABILITY_ENV: &str = "PATROL_CRASH_DURABILITY";
const SITE: &str = "site-1";
const KILLS: usize = 50;

/// Tiny deterministic generator for kill delays (SplitMix64), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn scan(n: u64) -> Result<Scan> {
    Ok(Scan {
        checkpoint: CheckpointId::new(format!("cp-{}", n % 30 + 1))?,
        method: ScanMethod::Nfc {
            tag: format!("04:{n:08x}"),
        },
        location: Some(Location {
            lat: 51.5,
            lon: -0.12,
            accuracy_m: Some(10.0),
        }),
        note: None,
    })
}

/// Child mode: records events forever, printing each id once its call has returned; with a
/// server, syncs after every few events. Only runs when the parent set the environment.
#[test]
fn child_writer() -> Result<()> {
    let Ok(path) = std::env::var(STORE_ENV) else {
        return Ok(());
    };
    let durability = match std::env::var(DURABILITY_ENV).as_deref() {
        Ok("normal") => Durability::Normal,
        _ => Durability::Full,
    };
    let mut store = DeviceStore::open_with(
        &path,
        Some(SiteId::new(SITE)?),
        StoreOptions {
            durability,
            clock: None,
        },
    )?;
    if store.current_shift().is_none() {
        store.start_shift(GuardId::new("guard-crash")?)?;
    }
    let server = std::env::var(SERVER_ENV).ok();
    let client = server.as_deref().map(SyncClient::new).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // With a server, an incident to attach files to: the one an earlier run reported, or a new
    // one.
    let incident = match (&client, store.incidents()?.first()) {
        (None, _) => None,
        (Some(_), Some(i)) => Some(i.state.id),
        (Some(_), None) => Some(store.report_incident(
            IncidentReport {
                incident: IncidentId::generate(),
                category: IncidentCategory::Theft,
                severity: Severity::Medium,
                description: "crash test".into(),
                location: None,
            },
            vec![],
            RecordOptions::default(),
        )?),
    };
    let mut bytes_rng = Rng(std::process::id() as u64 ^ 0x5eed);
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        let id = store.scan(scan(n)?, RecordOptions::default())?;
        writeln!(out, "RECORDED {id}")?;
        out.flush()?;
        if let Some(incident) = incident
            && n % 20 == 0
        {
            let len = 64 * 1024 + bytes_rng.next() % (1536 * 1024 - 64 * 1024);
            let bytes: Vec<u8> = (0..len).map(|_| bytes_rng.next() as u8).collect();
            // Alternately to the incident and to a note (an event whose bytes commit with it).
            let sha = if n % 40 == 0 {
                store
                    .attach_file(incident, &bytes, "image/jpeg", None)?
                    .0
                    .sha256
            } else {
                let file = NewFile {
                    bytes: &bytes,
                    media_type: "image/jpeg",
                    name: None,
                };
                let (id, refs) =
                    store.note_with_files("crash test", &[file], RecordOptions::default())?;
                writeln!(out, "RECORDED {id}")?;
                refs[0].sha256
            };
            writeln!(out, "ATTACHED {}", hex(&sha))?;
            out.flush()?;
        }
        if let Some(client) = &client
            && n % 7 == 0
        {
            // A failed sync (server busy, connection reset) is retried on a later round.
            let _ = runtime.block_on(client.sync(&mut store));
        }
    }
    Ok(())
}

/// Runs the child until a random moment, SIGKILLs it, and returns the ids it reported.
fn run_and_kill(
    store: &Path,
    server: Option<&str>,
    durability: &str,
    delay: Duration,
) -> Result<(Vec<EventId>, Vec<String>)> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "crash::child_writer",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(STORE_ENV, store)
    .env(DURABILITY_ENV, durability)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(url) = server {
        cmd.env(SERVER_ENV, url);
    }
    let mut child = cmd.spawn().context("starting the writer")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    let (attached_tx, attached) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("RECORDED ") {
                let _ = tx.send(id.to_owned());
            } else if let Some(sha) = line.strip_prefix("ATTACHED ") {
                let _ = attached_tx.send(sha.to_owned());
            }
        }
    });
    // Wait for the first recording so every kill lands while the writer is busy.
    let first = rx.recv_timeout(Duration::from_secs(60));
    std::thread::sleep(delay);
    child.kill()?;
    child.wait()?;
    reader.join().map_err(|_| anyhow!("reader panicked"))?;
    let mut ids: Vec<String> = first.into_iter().collect();
    ids.extend(rx.try_iter());
    let ids = ids
        .iter()
        .map(|s| s.parse().map_err(|e| anyhow!("bad id {s}: {e}")))
        .collect::<Result<_>>()?;
    Ok((ids, attached.try_iter().collect()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

fn hash_from_hex(s: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    ensure!(s.len() == 64, "bad hash {s}");
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// What the killed writers returned: the store, the events and the attachments (hex SHA-256)
/// whose calls returned, and the directory holding the store.
type Returned = (
    std::path::PathBuf,
    HashSet<EventId>,
    HashSet<String>,
    tempfile::TempDir,
);

fn kill_repeatedly(server: Option<&Server>, seed: u64) -> Result<Returned> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("phone.db");
    if let Some(server) = server {
        // A phone that syncs is enrolled first; the writer then opens its store.
        Phone::enroll(store.clone(), server, SITE)?;
    }
    let mut rng = Rng(seed);
    let mut returned = HashSet::new();
    let mut attached = HashSet::new();
    for round in 0..KILLS {
        let durability = if round % 2 == 0 { "full" } else { "normal" };
        let delay = Duration::from_millis(5 + rng.next() % 150);
        let (ids, shas) = run_and_kill(&store, server.map(|s| s.url.as_str()), durability, delay)?;
        returned.extend(ids);
        attached.extend(shas);
        // The store opens cleanly and holds every event whose call returned.
        let reopened = DeviceStore::open(&store)
            .with_context(|| format!("round {round} (seed {seed}): store does not open"))?;
        let held: HashSet<EventId> = reopened.events(None)?.iter().map(|e| e.event.id).collect();
        let lost: Vec<_> = returned.difference(&held).collect();
        ensure!(
            lost.is_empty(),
            "round {round} (seed {seed}): lost {} events: {lost:?}",
            lost.len()
        );
        // Every attachment whose call returned is held whole.
        for sha in &attached {
            let bytes = reopened.attachment_bytes(&hash_from_hex(sha)?)?;
            ensure!(
                bytes.as_deref().map(sha256_hex).as_deref() == Some(sha.as_str()),
                "round {round} (seed {seed}): attachment {sha} lost or damaged"
            );
        }
    }
    Ok((store, returned, attached, dir))
}

fn seed() -> u64 {
    std::env::var("PATROL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        })
}

#[test]
fn a_phone_killed_while_recording_keeps_every_returned_event() -> Result<()> {
    let seed = seed();
    eprintln!("crash seed {seed} (replay with PATROL_CRASH_SEED={seed})");
    let (_, returned, _, _dir) = kill_repeatedly(None, seed)?;
    ensure!(
        returned.len() > KILLS,
        "the writer recorded too little to test anything"
    );
    Ok(())
}

#[test]
fn a_phone_killed_while_syncing_loses_nothing_and_duplicates_nothing() -> Result<()> {
    let seed = seed();
    eprintln!("crash seed {seed} (replay with PATROL_CRASH_SEED={seed})");
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let (store_path, returned, attached, _store_dir) = kill_repeatedly(Some(&server), seed)?;
    ensure!(!attached.is_empty(), "the writer attached nothing");

    let mut store = DeviceStore::open(&store_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(SyncClient::new(&server.url)?.sync(&mut store))?;
    ensure!(
        report.pending_events == 0,
        "still pending after a clean sync: {report:?}"
    );
    ensure!(
        report.attachments_pending == 0 && report.attachment_error.is_none(),
        "attachments still pending after a clean sync: {report:?}"
    );
    // Every returned attachment is stored on the server; every stored blob is whole.
    let blobs = server.data_dir.join("blobs");
    let mut stored = HashSet::new();
    for fan in std::fs::read_dir(&blobs)? {
        let fan = fan?.path();
        if fan.file_name().is_some_and(|n| n == "partial") {
            continue;
        }
        for file in std::fs::read_dir(fan)? {
            let file = file?.path();
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ensure!(
                sha256_hex(&std::fs::read(&file)?) == name,
                "stored blob {name} does not hash to its name"
            );
            stored.insert(name);
        }
    }
    for sha in &attached {
        ensure!(
            stored.contains(sha),
            "attachment {sha} never reached the server"
        );
    }

    let local: HashSet<EventId> = store.events(None)?.iter().map(|e| e.event.id).collect();
    let pulled = control_pull(&server, SITE, 10_000)?;
    let on_server: Vec<String> = pulled
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let unique: HashSet<&String> = on_server.iter().collect();
    ensure!(
        unique.len() == on_server.len(),
        "the server holds an event twice"
    );
    ensure!(
        on_server.len() == local.len(),
        "server {} vs phone {}",
        on_server.len(),
        local.len()
    );
    for id in &returned {
        ensure!(
            unique.contains(&id.to_string()),
            "event {id} never reached the server"
        );
    }
    Ok(())
}
