//! Crash safety of the phone: a process recording events (and, in the second test, syncing
//! them) is SIGKILLed at random moments, 50 times. After every restart the store must open
//! cleanly and hold every event whose recording call had returned; at the end one sync must
//! deliver everything, and the server must hold each event exactly once.
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
use patrol_core::{CheckpointId, EventId, GuardId, Location, Scan, ScanMethod, SiteId};
use patrol_e2e::{Phone, control_pull};
use patrol_mobile::{DeviceStore, Durability, RecordOptions, StoreOptions, SyncClient};
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
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        let id = store.scan(scan(n)?, RecordOptions::default())?;
        writeln!(out, "RECORDED {id}")?;
        out.flush()?;
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
) -> Result<Vec<EventId>> {
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
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("RECORDED ") {
                let _ = tx.send(id.to_owned());
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
    ids.iter()
        .map(|s| s.parse().map_err(|e| anyhow!("bad id {s}: {e}")))
        .collect()
}

fn kill_repeatedly(
    server: Option<&Server>,
    seed: u64,
) -> Result<(std::path::PathBuf, HashSet<EventId>, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("phone.db");
    if let Some(server) = server {
        // A phone that syncs is enrolled first; the writer then opens its store.
        Phone::enroll(store.clone(), server, SITE)?;
    }
    let mut rng = Rng(seed);
    let mut returned = HashSet::new();
    for round in 0..KILLS {
        let durability = if round % 2 == 0 { "full" } else { "normal" };
        let delay = Duration::from_millis(5 + rng.next() % 150);
        let ids = run_and_kill(&store, server.map(|s| s.url.as_str()), durability, delay)?;
        returned.extend(ids);
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
    }
    Ok((store, returned, dir))
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
    let (_, returned, _dir) = kill_repeatedly(None, seed)?;
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
    let (store_path, returned, _store_dir) = kill_repeatedly(Some(&server), seed)?;

    let mut store = DeviceStore::open(&store_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(SyncClient::new(&server.url)?.sync(&mut store))?;
    ensure!(
        report.pending_events == 0,
        "still pending after a clean sync: {report:?}"
    );

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
