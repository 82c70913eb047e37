//! Crash safety of the server: the real `patrol-server` is SIGKILLed during sync 60 times while
//! four phones record and sync through a relay in front of it (three through the phone library's
//! `SyncClient`, one through the real `patrol` command), and restarted on the same data
//! directory each time. A round kills either after a seeded random delay, or the instant the
//! server starts an answer (it answers only after its commit), then either dropping that answer
//! or passing it on first.
//!
//! After every kill: the database image the server left behind passes SQLite's integrity check
//! and the store's own invariants (gap-free sequence numbers, one row and one id claim per
//! event, chunk counts), the server starts on it, and every event any phone saw acknowledged is
//! in the control-room feed exactly once. At the end the phones sync again: every recorded event
//! is delivered and in the feed exactly once, in canonical order.
//!
//! A run prints its seed; `PATROL_SERVER_CRASH_SEED=<seed>` replays the same kill schedule (the
//! threads' interleaving is the machine's).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use patrol_core::{CheckpointId, GuardId, Location, Scan, ScanMethod, SiteId};
use patrol_e2e::{OnAnswer, Phone, Relay, Rng, control_pull, seed_from_env};
use patrol_mobile::{DeviceStore, Durability, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::Server;
use serde_json::Value;

const SITE: &str = "site-1";
const KILLS: usize = 60;
const LIBRARY_PHONES: usize = 3;
/// A phone ends its shift after this many events and starts another, so the server holds many
/// shift logs, finished and open.
const SHIFT_EVENTS: usize = 40;

/// What the phones share with the test.
#[derive(Debug, Default)]
struct Shared {
    /// Ids of the events some phone has seen acknowledged (marked delivered).
    acked: Mutex<HashSet<String>>,
    stop: AtomicBool,
}

impl Shared {
    fn add_acked(&self, ids: impl IntoIterator<Item = String>) -> Result<()> {
        self.acked
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .extend(ids);
        Ok(())
    }

    fn acked(&self) -> Result<HashSet<String>> {
        Ok(self.acked.lock().map_err(|_| anyhow!("poisoned"))?.clone())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn scan(phone: usize, n: u64) -> Result<Scan> {
    Ok(Scan {
        checkpoint: CheckpointId::new(format!("cp-{}", n % 25 + 1))?,
        method: ScanMethod::Nfc {
            tag: format!("04:{phone:02x}:{n:06x}"),
        },
        location: Some(Location {
            lat: 51.5,
            lon: -0.12,
            accuracy_m: Some(6.0),
        }),
        note: None,
    })
}

/// A phone app on the library: records one to three scans, syncs (a failure is retried on the
/// next round, as the app's outbox does), notes what is delivered, pauses, again.
fn library_phone(n: usize, path: &Path, url: &str, seed: u64, shared: &Shared) -> Result<()> {
    let mut rng = Rng(seed ^ (n as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    // The phone itself is not killed here; NORMAL spares the machine fsyncs the test does not need.
    let mut store = DeviceStore::open_with(
        path,
        Some(SiteId::new(SITE)?),
        StoreOptions {
            durability: Durability::Normal,
            clock: None,
        },
    )?;
    let client = SyncClient::with_timeout(url, Duration::from_secs(20))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let guard = GuardId::new(format!("guard-{n}"))?;
    let (mut recorded, mut in_shift) = (0u64, 0usize);
    while !shared.stopped() {
        if store.current_shift().is_none() {
            store.start_shift(guard.clone())?;
            in_shift = 1;
        }
        for _ in 0..=rng.below(3) {
            store.scan(scan(n, recorded)?, RecordOptions::default())?;
            recorded += 1;
            in_shift += 1;
        }
        if in_shift >= SHIFT_EVENTS {
            store.end_shift(None)?;
        }
        if let Ok(report) = runtime.block_on(client.sync(&mut store)) {
            ensure!(
                report.rejected.is_empty(),
                "phone {n}: the server refused a log: {:?}",
                report.rejected
            );
        }
        shared.add_acked(
            store
                .events(None)?
                .into_iter()
                .filter(|e| e.delivered)
                .map(|e| e.event.id.to_string()),
        )?;
        std::thread::sleep(Duration::from_millis(5 + rng.below(25)));
    }
    Ok(())
}

/// A phone played by the real `patrol` command: scan, sync, read its log, again.
fn cli_phone(phone: &Phone, url: &str, shared: &Shared) -> Result<()> {
    phone.run(&["shift", "start", "--guard", "guard-cli"])?;
    let mut n = 0u64;
    while !shared.stopped() {
        let (cp, tag) = (format!("cp-{}", n % 25 + 1), format!("04:cc:{n:06x}"));
        phone.run(&["scan", &cp, "--nfc", &tag])?;
        n += 1;
        // Fails while the server is down or when it dies mid-answer; the next round retries.
        phone
            .command(&["sync", "--server", url])?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        shared.add_acked(
            phone
                .log()?
                .iter()
                .filter(|e| e["delivered"] == true)
                .filter_map(|e| e["id"].as_str().map(str::to_owned)),
        )?;
    }
    Ok(())
}

/// Checks the database exactly as the killed server left it, on a copy (so that the restarted
/// server still does its own recovery of the original): SQLite's integrity and foreign-key
/// checks, and the store's invariants. Returns the number of events stored.
fn check_store_image(db: &Path) -> Result<i64> {
    let copy = tempfile::tempdir()?;
    let image = copy.path().join("patrol.db");
    std::fs::copy(db, &image).context("copying the database")?;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, copy.path().join("patrol.db-wal")).context("copying the WAL")?;
    }
    let conn = rusqlite::Connection::open(&image)?;
    let integrity = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(integrity == ["ok"], "integrity check: {integrity:?}");
    let fk_violations = conn
        .prepare("PRAGMA foreign_key_check")?
        .query_map([], |_| Ok(()))?
        .count();
    ensure!(fk_violations == 0, "{fk_violations} foreign key violations");

    let one = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [SITE], |r| r.get(0))?) };
    let next_seq = one("SELECT next_seq FROM sites WHERE site_id = ?1")?;
    let events = one("SELECT count(*) FROM events WHERE site_id = ?1")?;
    let max_seq = one("SELECT coalesce(max(seq), 0) FROM events WHERE site_id = ?1")?;
    let distinct = one("SELECT count(DISTINCT event_id) FROM events WHERE site_id = ?1")?;
    ensure!(
        events == max_seq && next_seq == max_seq + 1,
        "sequence numbers not gap-free: {events} events, highest seq {max_seq}, next {next_seq}"
    );
    ensure!(distinct == events, "{} duplicate events", events - distinct);
    // The folded level of the event-id index holds exactly the events up to the site's
    // watermark, each with its seq; the later ones' ids live in the server's memory, rebuilt
    // from their rows when it starts.
    let through =
        one("SELECT coalesce((SELECT through_seq FROM event_id_folds WHERE site_id = ?1), 0)")?;
    let claims = one("SELECT count(*) FROM event_ids WHERE site_id = ?1")?;
    let folded: i64 = conn.query_row(
        "SELECT count(*) FROM events e JOIN event_ids i
           ON i.site_id = e.site_id AND i.event_id = e.event_id AND i.seq = e.seq
         WHERE e.site_id = ?1 AND e.seq <= ?2",
        rusqlite::params![SITE, through],
        |r| r.get(0),
    )?;
    ensure!(
        claims == folded && folded == through && through <= events,
        "{claims} folded id claims, {folded} of them matching the {through} events up to the watermark"
    );
    let bad_chunks = one(
        "SELECT count(*) FROM docs d WHERE d.site_id = ?1 AND d.chunk_count !=
           (SELECT count(*) FROM doc_chunks c WHERE c.site_id = d.site_id AND c.doc_id = d.doc_id)",
    )?;
    ensure!(
        bad_chunks == 0,
        "{bad_chunks} documents miscount their chunks"
    );
    Ok(events)
}

/// The control room's view of the feed, read with its HTTP API page by page.
#[derive(Debug)]
struct ControlRoom {
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// The administrator's token, which reads every site.
    token: String,
}

impl ControlRoom {
    fn new(token: String) -> Result<Self> {
        Ok(ControlRoom {
            token,
            http: reqwest::Client::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        })
    }

    /// The whole feed, checked: every event once, sequence numbers 1, 2, 3, … in order.
    fn feed(&self, url: &str) -> Result<Vec<Value>> {
        let pulled = self.runtime.block_on(async {
            let mut after = 0;
            let mut out: Vec<Value> = Vec::new();
            loop {
                let page: Value = self
                    .http
                    .get(format!("{url}/api/v1/sites/{SITE}/events"))
                    .bearer_auth(&self.token)
                    .query(&[("after", after), ("limit", 10_000)])
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                out.extend(page["events"].as_array().cloned().unwrap_or_default());
                after = page["next"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("a feed page without next: {page}"))?;
                if page["more"] != true {
                    return anyhow::Ok(out);
                }
            }
        })?;
        check_feed(&pulled)?;
        Ok(pulled)
    }
}

/// Every event once, sequence numbers 1, 2, 3, … in order.
fn check_feed(pulled: &[Value]) -> Result<()> {
    let ids: HashSet<&str> = pulled.iter().filter_map(|e| e["id"].as_str()).collect();
    ensure!(
        ids.len() == pulled.len(),
        "the feed holds {} events but {} distinct ids",
        pulled.len(),
        ids.len()
    );
    for (i, e) in pulled.iter().enumerate() {
        ensure!(
            e["seq"].as_u64() == Some(i as u64 + 1),
            "feed position {i} has seq {}: not in canonical order",
            e["seq"]
        );
    }
    Ok(())
}

fn ids(feed: &[Value]) -> HashSet<String> {
    feed.iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

/// Kills and restarts the server `KILLS` times; returns how many kills came right after a commit.
fn kill_repeatedly(
    relay: &Relay,
    data_dir: &Path,
    db: &Path,
    seed: u64,
    shared: &Shared,
    control: &ControlRoom,
) -> Result<usize> {
    let mut rng = Rng(seed);
    let mut after_commit = 0;
    for round in 0..KILLS {
        let ctx = || format!("round {round} (seed {seed})");
        match rng.below(4) {
            0 | 1 => {
                let on_answer = if rng.below(2) == 0 {
                    OnAnswer::KillAndDrop
                } else {
                    OnAnswer::ForwardThenKill
                };
                relay.arm(on_answer)?;
                if relay.wait_for_kill(Duration::from_secs(20))? {
                    after_commit += 1;
                } else {
                    relay.kill_server()?;
                }
            }
            _ => {
                std::thread::sleep(Duration::from_millis(rng.below(250)));
                relay.kill_server()?;
            }
        }
        // Only now: what the phones saw acknowledged before the kill (or while it happened).
        let acked = shared.acked()?;

        check_store_image(db).with_context(ctx)?;
        let server = Server::restart(data_dir, &control.token)
            .with_context(|| format!("{}: the server does not start again", ctx()))?;
        let url = server.url.clone();
        relay.attach(server)?;
        let on_server = ids(&control.feed(&url).with_context(ctx)?);
        let lost: Vec<&String> = acked.difference(&on_server).collect();
        ensure!(
            lost.is_empty(),
            "{}: {} acknowledged events are missing from the feed: {lost:?}",
            ctx(),
            lost.len()
        );
    }
    Ok(after_commit)
}

#[test]
fn the_server_killed_during_sync_loses_no_acknowledged_event() -> Result<()> {
    let started = Instant::now();
    let seed = seed_from_env("PATROL_SERVER_CRASH_SEED");
    eprintln!("server crash seed {seed} (replay with PATROL_SERVER_CRASH_SEED={seed})");
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("server");
    let server = Server::start(&data_dir, &[SITE])?;
    let db = server.db_path();
    let admin_token = server.admin_token.clone();
    // Every phone is enrolled (through the `patrol` command) before the kills begin.
    let stores: Vec<PathBuf> = (0..LIBRARY_PHONES)
        .map(|n| dir.path().join(format!("phone{n}.db")))
        .collect();
    for path in &stores {
        Phone::enroll(path.clone(), &server, SITE)?;
    }
    let cli = Phone::enroll(dir.path().join("phone-cli.db"), &server, SITE)?;
    let relay = Relay::start()?;
    relay.attach(server)?;

    let shared = Arc::new(Shared::default());
    let mut phones: Vec<JoinHandle<Result<()>>> = Vec::new();
    for (n, path) in stores.iter().enumerate() {
        let (path, url, shared) = (path.clone(), relay.url.clone(), shared.clone());
        phones.push(std::thread::spawn(move || {
            library_phone(n, &path, &url, seed, &shared).with_context(|| format!("phone {n}"))
        }));
    }
    {
        let (phone, url, shared) = (cli.clone(), relay.url.clone(), shared.clone());
        phones.push(std::thread::spawn(move || {
            cli_phone(&phone, &url, &shared).context("the patrol command's phone")
        }));
    }

    let control = ControlRoom::new(admin_token)?;
    let killed = kill_repeatedly(&relay, &data_dir, &db, seed, &shared, &control);
    shared.stop.store(true, Ordering::Relaxed);
    for phone in phones {
        phone
            .join()
            .map_err(|_| anyhow!("a phone thread panicked"))??;
    }
    let after_commit = killed?;
    let acked_during_kills = shared.acked()?.len();
    eprintln!(
        "{KILLS} kills ({after_commit} right after a commit), {acked_during_kills} events \
         acknowledged meanwhile, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ensure!(
        after_commit >= KILLS / 4,
        "only {after_commit} kills came right after a commit"
    );
    ensure!(
        acked_during_kills > 2 * KILLS,
        "the phones got too few events acknowledged ({acked_during_kills}) to test anything"
    );

    // The last server stays up: every phone finishes on retry.
    relay.kill_server()?;
    let stored = check_store_image(&db)?;
    let server = Server::restart(&data_dir, &control.token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = SyncClient::new(&server.url)?;
    let mut recorded: HashMap<String, Value> = HashMap::new();
    for path in &stores {
        let mut store = DeviceStore::open(path)?;
        let report = runtime.block_on(client.sync(&mut store))?;
        ensure!(
            report.pending_events == 0 && report.rejected.is_empty(),
            "{}: not finished after a retry: {report:?}",
            path.display()
        );
        for e in store.events(None)? {
            ensure!(e.delivered, "event {} not delivered", e.event.id);
            recorded.insert(
                e.event.id.to_string(),
                serde_json::json!({"device_id": e.event.device.to_string(),
                                   "device_seq": e.event.record.seq}),
            );
        }
    }
    cli.run(&["sync", "--server", &server.url])?;
    for e in cli.log()? {
        ensure!(e["delivered"] == true, "event {} not delivered", e["id"]);
        let id = e["id"]
            .as_str()
            .ok_or_else(|| anyhow!("an event without id"))?;
        recorded.insert(
            id.to_owned(),
            serde_json::json!({"device_id": e["device_id"], "device_seq": e["device_seq"]}),
        );
    }

    // The control room's pull through the real `patrol` command, in small pages.
    let pulled = control_pull(&server, SITE, 500)?;
    check_feed(&pulled)?;
    ensure!(
        pulled.len() as i64 >= stored,
        "the feed shrank after the restart"
    );
    let on_server = ids(&pulled);
    let recorded_ids: HashSet<String> = recorded.keys().cloned().collect();
    if on_server != recorded_ids {
        bail!(
            "feed and phones differ: {} recorded but not in the feed, {} in the feed but never \
             recorded",
            recorded_ids.difference(&on_server).count(),
            on_server.difference(&recorded_ids).count()
        );
    }
    // Within the canonical order, each phone's events keep the order they were recorded in.
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for e in &pulled {
        let id = e["id"].as_str().unwrap_or_default();
        let mine = &recorded[id];
        ensure!(
            e["device_id"] == mine["device_id"] && e["device_seq"] == mine["device_seq"],
            "event {id}: the feed says {} #{}, the phone {} #{}",
            e["device_id"],
            e["device_seq"],
            mine["device_id"],
            mine["device_seq"]
        );
        let device = e["device_id"].as_str().unwrap_or_default().to_owned();
        let seq = e["device_seq"].as_u64().unwrap_or_default();
        let previous = last_seq.insert(device.clone(), seq);
        ensure!(
            previous.is_none_or(|p| p < seq),
            "device {device}: event #{seq} after #{previous:?} in the feed"
        );
    }
    eprintln!(
        "{} events from {} phones, each once in the feed; {:.1} s in all",
        pulled.len(),
        LIBRARY_PHONES + 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
