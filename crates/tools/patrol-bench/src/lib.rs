//! # patrol-bench
//!
//! Runs the shared benchmark workloads (`shared/WORKLOADS.md`) on the real system: devices are
//! real `patrol-mobile` stores (one SQLite file each) syncing through the real `SyncClient`, the
//! server is the real `patrol-server` binary as a child process on 127.0.0.1 with a fresh
//! embedded store, and the control room reads the real control-room API.
//!
//! - [`generator`]: the exact event generator (SplitMix64), checked against the test vectors.
//! - [`procfs`]: the server's peak memory and CPU time, read from `/proc`.
//! - [`run`]: setup, W1, W2 and W3, returning the [`Results`] written as JSON.
//! - [`dar`]: the daily activity report's cost (`patrol-dar`): a day of D × E scans, its report
//!   downloaded as CSV and PDF.
//! - [`load`]: the load run (`patrol-load`): many devices recording and syncing at once for a
//!   while, with a control-room probe, then a check that nothing acknowledged was lost.
//!
//! Server counters (wire and body bytes, requests) are read from its metrics side port, whose
//! own traffic the server does not count; its event count is read from its store file.

pub mod dar;
pub mod generator;
pub mod load;
pub mod procfs;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use patrol_core::{CheckpointId, EventId, GuardId, Location, Scan, ScanMethod, SiteId};
use patrol_mobile::{DeviceStore, Durability, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::Server;
use serde::{Deserialize, Serialize};

use crate::generator::{DeviceStream, GenEvent};

pub const SITE: &str = "site-1";

/// The workload's parameters (WORKLOADS.md, "Parameters").
#[derive(Clone, Debug)]
pub struct Params {
    pub devices: u64,
    pub events: u64,
    pub seed: u64,
    pub w2_new: u64,
    pub w3_n: u64,
    pub w3_reps: usize,
    pub w1_timeout: Duration,
    pub pull_timeout: Duration,
    pub w3_timeout: Duration,
    /// Give the site a configuration with an hourly tour over the workload's checkpoints
    /// before W1, so that W1 measures the server's tour compliance at ingest too (the shared
    /// workloads have no configuration).
    pub tours: bool,
    /// The server runs under callgrind (`PATROL_SERVER_WRAPPER`, started with
    /// `--instr-atstart=no`): count its instructions over W1 alone, dumped when W1 ends. Each
    /// phone's request bound is raised, since the server runs some fifty times slower.
    pub callgrind_w1: bool,
}

impl Params {
    pub fn new(devices: u64, events: u64) -> Self {
        Params {
            devices,
            events,
            seed: 42,
            w2_new: 1_000,
            w3_n: 10_000,
            w3_reps: 3,
            w1_timeout: Duration::from_secs(900),
            pull_timeout: Duration::from_secs(600),
            w3_timeout: Duration::from_secs(300),
            tours: false,
            callgrind_w1: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct W1 {
    pub wall_ms: f64,
    pub events_per_sec: f64,
    pub server_count: u64,
    pub count_ok: bool,
    pub clients_done_ms: f64,
    pub wire_up: u64,
    pub wire_down: u64,
    pub body_up: u64,
    pub body_down: u64,
    pub wire_bytes_per_event: f64,
    pub http_requests: u64,
    /// Sync attempts refused as retryable (`503 server_busy`) and made again when the phone's
    /// backoff said, as a phone does; 0 when the server took every device at once.
    pub retried_syncs: u64,
    pub server_cpu_ms: f64,
    pub client_cpu_ms: f64,
    #[serde(rename = "serverPeakRssMB")]
    pub server_peak_rss_mb: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    pub ok: bool,
    pub received: u64,
    pub expected: u64,
    pub missing: u64,
    pub mismatched: u64,
    pub duplicates: u64,
    /// Server sequence numbers strictly increase through the pull (canonical order).
    pub ordered: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct W2Full {
    pub wall_ms: f64,
    pub wire_down: u64,
    pub http_requests: u64,
    #[serde(rename = "serverPeakRssMB")]
    pub server_peak_rss_mb: f64,
    pub verify: Verify,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct W2Push {
    pub wall_ms: f64,
    pub server_count: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct W2Incr {
    pub wall_ms: f64,
    pub verify: Verify,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct W3 {
    pub events_per_sec: f64,
    pub reps: Vec<f64>,
    pub durability: &'static str,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    pub events_per_sec: f64,
}

/// What the harness writes (the peers' keys, plus a few more).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Results {
    pub peer: String,
    #[serde(rename = "D")]
    pub d: u64,
    #[serde(rename = "E")]
    pub e: u64,
    pub seed: u64,
    /// W1 ran with a tour over the workload's checkpoints (`--tours`).
    pub tours: bool,
    pub setup_ms: f64,
    pub w1: W1,
    pub w2full: W2Full,
    pub w2push: W2Push,
    pub w2incr: W2Incr,
    pub w3: W3,
    pub w3_full: W3,
    pub w3_reference: Rate,
}

/// `serve` flags for a run whose devices all connect from 127.0.0.1: on a real site each phone
/// has its own address, so the server's per-address connection cap (which guards against one
/// host holding every connection) is raised to admit all of them, with room for the control
/// room's pulls. Flags already in `given` are left to the caller.
pub fn one_address_server_args(devices: u64, given: &[String]) -> Vec<String> {
    let cap = (devices.saturating_mul(2).saturating_add(256))
        .max(4_096)
        .to_string();
    let mut args = Vec::new();
    for flag in ["--max-connections", "--max-connections-per-address"] {
        if !given
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        {
            args.push(flag.to_owned());
            args.push(cap.clone());
        }
    }
    args.extend(given.iter().cloned());
    args
}

/// Runs `callgrind_control OPTION PID` against the server running under callgrind.
fn callgrind_control(pid: u32, option: &str) -> Result<()> {
    let out = std::process::Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control (valgrind)")?;
    ensure!(
        out.status.success(),
        "callgrind_control {option} {pid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// Records one generated event through the call an app makes for a checkpoint scan.
pub fn record_scan(store: &mut DeviceStore, ev: &GenEvent) -> Result<EventId> {
    let scan = Scan {
        checkpoint: CheckpointId::new(ev.checkpoint.clone())?,
        method: ScanMethod::Gps,
        location: Some(Location {
            lat: ev.lat,
            lon: ev.lon,
            accuracy_m: None,
        }),
        note: Some(ev.note.clone()),
    };
    let options = RecordOptions {
        event_id: Some(EventId(ev.id)),
        wall_ms: Some(ev.at_ms),
    };
    Ok(store.scan(scan, options)?)
}

/// Enrolls device `n` on the bench's site with a fresh code from the administrator, as a phone
/// is set up, and starts its shift. Its store uses `synchronous=NORMAL` (see the callers).
pub async fn enroll_device(
    http: &reqwest::Client,
    server: &Server,
    dir: &Path,
    n: u64,
) -> Result<DeviceStore> {
    let url = format!("{}/api/v1/sites/{SITE}/enrollment-codes", server.url);
    let resp = http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "POST {url}: {}", resp.status());
    let code: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
    let code = code["code"]
        .as_str()
        .ok_or_else(|| anyhow!("no code in the answer to POST {url}"))?;
    let enrollment = SyncClient::new(&server.url)?.enroll(code).await?;
    let mut store = DeviceStore::create_enrolled(
        dir.join(format!("dev-{n}.db")),
        enrollment,
        StoreOptions {
            durability: Durability::Normal,
            clock: None,
        },
    )?;
    store.start_shift(GuardId::new(format!("guard-{n}"))?)?;
    Ok(store)
}

/// The workload's checkpoints (cp-1 to cp-40) in one tour, hourly from 22:00 to 06:00 UTC with
/// 15 minutes' grace: its night is the workload's (its scans start at 22:00 UTC).
async fn set_tours(http: &reqwest::Client, server: &Server) -> Result<()> {
    let checkpoints: Vec<serde_json::Value> = (1..=40)
        .map(|i| {
            serde_json::json!({"id": format!("cp-{i}"), "name": format!("Checkpoint {i}"),
                               "tags": [], "location": null, "radius_m": null})
        })
        .collect();
    let ids: Vec<String> = (1..=40).map(|i| format!("cp-{i}")).collect();
    let url = format!("{}/api/v1/sites/{SITE}/config", server.url);
    let resp = http
        .put(&url)
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({
            "base_version": 0, "time_zone": "UTC", "checkpoints": checkpoints,
            "tours": [{"id": "night", "name": "Night", "checkpoints": ids, "grace_min": 15,
                       "schedule": [{"every_min": 60, "from": "22:00", "to": "06:00"}]}],
            "post_orders": [],
        }))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "PUT {url}: {}", resp.status());
    Ok(())
}

/// A store for W3's local writes, which never sync: not enrolled.
fn open_device(dir: &Path, n: u64, durability: Durability) -> Result<DeviceStore> {
    let mut store = DeviceStore::open_with(
        dir.join(format!("dev-{n}.db")),
        Some(SiteId::new(SITE)?),
        StoreOptions {
            durability,
            clock: None,
        },
    )?;
    store.start_shift(GuardId::new(format!("guard-{n}"))?)?;
    Ok(store)
}

/// The server's counters, read from its metrics side port (not counted by the server).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Counters(HashMap<String, f64>);

impl Counters {
    pub(crate) fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0.0) as u64
    }

    pub(crate) fn delta(&self, before: &Counters, name: &str) -> u64 {
        self.get(name).saturating_sub(before.get(name))
    }

    /// The change of one labelled series, `name{labels}`.
    pub(crate) fn delta_labelled(&self, before: &Counters, name: &str, labels: &str) -> u64 {
        self.delta(before, &format!("{name}{{{labels}}}"))
    }
}

/// The server's counters (series of one name summed over their labels) and gauges.
pub(crate) async fn counters(http: &reqwest::Client, metrics_url: &str) -> Result<Counters> {
    let text = http
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut sums = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        // Each labelled series by itself, and every name summed over its labels.
        if name.contains('{') {
            sums.insert(name.to_owned(), v);
        }
        let name = name.split('{').next().unwrap_or(name).to_owned();
        *sums.entry(name).or_insert(0.0) += v;
    }
    Ok(Counters(sums))
}

/// Waits until the counters stay unchanged for three polls 100 ms apart (at most 10 s).
async fn quiesce(http: &reqwest::Client, metrics_url: &str) -> Result<Counters> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = counters(http, metrics_url).await?;
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counters(http, metrics_url).await?;
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
    Ok(last)
}

/// Counts the workload's events in the server's store file (a read-only look at the store).
struct StoreCounter(rusqlite::Connection);

impl StoreCounter {
    fn open(data_dir: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open_with_flags(
            data_dir.join("patrol.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(StoreCounter(conn))
    }

    /// The workload's events in the store (exact, but a scan: used once per phase).
    fn count(&self) -> Result<u64> {
        let n: i64 = self.0.query_row(
            "SELECT COUNT(*) FROM events WHERE site_id = ?1 AND kind = 'checkpoint_scanned'",
            [SITE],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// All events of the site in the store: its highest server sequence number, since the
    /// sequence is gap-free per site (an index look-up, cheap enough to poll every 10 ms).
    fn rows(&self) -> Result<u64> {
        let n: i64 = self.0.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE site_id = ?1",
            [SITE],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Polls every 10 ms until the store holds `rows` events (or the bound passes), then returns
    /// the exact count of workload events.
    async fn wait_for(&self, rows: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        while self.rows()? < rows && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.count()
    }
}

/// One event of the control-room feed, with the fields the verification compares.
#[derive(Debug, Deserialize)]
pub(crate) struct FeedEvent {
    seq: u64,
    pub(crate) id: uuid::Uuid,
    kind: String,
    site_id: String,
    device_id: String,
    guard_id: String,
    checkpoint: Option<String>,
    device_time: String,
    location: Option<FeedLocation>,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FeedLocation {
    lat: f64,
    lon: f64,
}

#[derive(Debug, Deserialize)]
struct FeedPage {
    events: Vec<FeedEvent>,
    next: u64,
    more: bool,
}

/// Pulls every page after `cursor` through the control-room API, as the user whose token is
/// `token`. The next page is asked for as soon as a page's headers give its cursor, so the
/// server builds page k+1 while this client reads and parses page k.
pub(crate) async fn pull(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    cursor: u64,
) -> Result<(Vec<FeedEvent>, u64)> {
    let fetch = |after: u64| {
        let http = http.clone();
        let url = format!(
            "{}/api/v1/sites/{SITE}/events?after={after}&limit=10000",
            server.url
        );
        let token = token.to_owned();
        tokio::spawn(async move {
            let resp = http.get(&url).bearer_auth(token).send().await?;
            ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
            Ok::<_, anyhow::Error>(resp)
        })
    };
    let header = |resp: &reqwest::Response, name: &str| -> Option<String> {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut out = Vec::new();
    let mut inflight = fetch(cursor);
    loop {
        let resp = inflight.await??;
        let next: Option<u64> = header(&resp, "patrol-next-cursor").and_then(|v| v.parse().ok());
        let more = header(&resp, "patrol-more").as_deref() == Some("true");
        let ahead = match next {
            Some(next) if more => Some(fetch(next)),
            _ => None,
        };
        let page: FeedPage = serde_json::from_slice(&resp.bytes().await?)?;
        ensure!(
            next.is_none_or(|n| n == page.next),
            "the cursor header says {next:?}, the body {}",
            page.next
        );
        out.extend(page.events);
        match ahead {
            Some(request) => inflight = request,
            // A server without the headers: page by the body's cursor.
            None if page.more => inflight = fetch(page.next),
            None => return Ok((out, page.next)),
        }
    }
}

/// Compares the pulled workload events with the generated ones, field by field.
fn verify(pulled: &[FeedEvent], expected: &[GenEvent], devices: &HashMap<u64, String>) -> Verify {
    let by_id: HashMap<uuid::Uuid, &GenEvent> = expected.iter().map(|e| (e.id, e)).collect();
    let mut seen = HashSet::new();
    let mut v = Verify {
        expected: expected.len() as u64,
        ordered: pulled.windows(2).all(|w| w[0].seq < w[1].seq),
        ..Verify::default()
    };
    for p in pulled.iter().filter(|p| p.kind == "checkpoint_scanned") {
        v.received += 1;
        if !seen.insert(p.id) {
            v.duplicates += 1;
            continue;
        }
        let Some(g) = by_id.get(&p.id) else {
            v.mismatched += 1;
            continue;
        };
        let same = p.site_id == SITE
            && devices.get(&g.device) == Some(&p.device_id)
            && p.guard_id == g.guard_id()
            && p.checkpoint.as_deref() == Some(g.checkpoint.as_str())
            && p.device_time == g.at()
            && p.location
                .as_ref()
                .is_some_and(|l| l.lat == g.lat && l.lon == g.lon)
            && p.note.as_deref() == Some(g.note.as_str());
        if !same {
            v.mismatched += 1;
        }
    }
    v.missing = expected.iter().filter(|e| !seen.contains(&e.id)).count() as u64;
    v.ok = v.missing == 0
        && v.mismatched == 0
        && v.duplicates == 0
        && v.received == v.expected
        && v.ordered;
    v
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// W3: a fresh device store records `n` events one by one, each committed before the next.
fn w3_rep(params: &Params, durability: Durability) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let device = params.devices + 1;
    let mut store = open_device(dir.path(), device, durability)?;
    let events = DeviceStream::new(params.seed, device).take(params.w3_n);
    let start = Instant::now();
    for ev in &events {
        record_scan(&mut store, ev)?;
        if start.elapsed() > params.w3_timeout {
            bail!("W3 over its {:?} bound", params.w3_timeout);
        }
    }
    Ok(params.w3_n as f64 / start.elapsed().as_secs_f64())
}

fn w3(params: &Params, durability: Durability, name: &'static str) -> Result<W3> {
    let reps = (0..params.w3_reps)
        .map(|_| w3_rep(params, durability))
        .collect::<Result<Vec<_>>>()?;
    Ok(W3 {
        events_per_sec: median(&reps),
        reps,
        durability: name,
    })
}

/// The durability floor of the disk: append each event as a JSON line, `fdatasync` each.
fn w3_reference(params: &Params) -> Result<Rate> {
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("events.jsonl"))?;
    let events = DeviceStream::new(params.seed, params.devices + 1).take(params.w3_n);
    let start = Instant::now();
    for ev in &events {
        file.write_all((ev.to_json_line() + "\n").as_bytes())?;
        file.sync_data()?;
    }
    Ok(Rate {
        events_per_sec: params.w3_n as f64 / start.elapsed().as_secs_f64(),
    })
}

/// Runs setup, W1, W2 and W3.
pub async fn run(params: &Params) -> Result<Results> {
    let total = params.devices * params.events;
    let work = tempfile::tempdir()?;
    let devices_dir = work.path().join("devices");
    std::fs::create_dir_all(&devices_dir)?;

    let args = one_address_server_args(params.devices, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_args(&work.path().join("server"), &[SITE], true, &args)?;
    let http = reqwest::Client::new();
    if params.tours {
        set_tours(&http, &server).await?;
    }

    // Setup (untimed for the workload): every device is enrolled (once, online, as a phone is
    // set up), then records its events offline, one change and one committed call per scan.
    // NORMAL durability here only shortens setup.
    let setup_start = Instant::now();
    let mut expected: Vec<GenEvent> = Vec::with_capacity(total as usize);
    let mut stores = Vec::with_capacity(params.devices as usize);
    let mut device_ids = HashMap::new();
    for n in 1..=params.devices {
        let mut store = enroll_device(&http, &server, &devices_dir, n).await?;
        let events = DeviceStream::new(params.seed, n).take(params.events);
        for ev in &events {
            record_scan(&mut store, ev)?;
        }
        device_ids.insert(n, store.device_id().to_string());
        expected.extend(events);
        stores.push(store);
    }
    let setup_ms = ms(setup_start.elapsed());

    let metrics_url = server
        .metrics_url
        .clone()
        .ok_or_else(|| anyhow!("server printed no metrics port"))?;
    let pid = server.pid();
    let counter = StoreCounter::open(&server.data_dir)?;

    // Every event the devices hold: the workload's scans plus each shift's start.
    let mut rows_target = 0;
    for store in &stores {
        rows_target += store.status()?.pending_events;
    }

    // W1: all devices sync at once. The server's peak memory is W1's, not the enrollments'.
    procfs::reset_peak_rss(pid)?;
    let before = counters(&http, &metrics_url).await?;
    let cpu_before = procfs::cpu_ms(pid)?;
    let client_cpu_before = procfs::self_cpu_ms()?;
    // Each phone has its HTTP client from app start; building them is not part of the sync.
    let timeout = if params.callgrind_w1 {
        Duration::from_secs(3_600)
    } else {
        patrol_mobile::sync::DEFAULT_TIMEOUT
    };
    let clients = stores
        .iter()
        .map(|_| SyncClient::with_timeout(&server.url, timeout))
        .collect::<Result<Vec<_>, _>>()?;
    if params.callgrind_w1 {
        callgrind_control(pid, "--instr=on")?;
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (mut store, client)) in stores.into_iter().zip(clients).enumerate() {
        tasks.spawn(async move {
            let result = load::sync_as_phone(&client, &mut store).await;
            (i, store, result, start.elapsed())
        });
    }
    let mut stores: Vec<Option<DeviceStore>> = (0..params.devices).map(|_| None).collect();
    let mut clients_done = Duration::ZERO;
    let mut retried_syncs = 0;
    let mut finished = |joined: Result<_, tokio::task::JoinError>| -> Result<()> {
        let (i, store, result, done): (usize, DeviceStore, Result<u64>, Duration) = joined?;
        retried_syncs += result.with_context(|| format!("device {} sync", i + 1))?;
        clients_done = clients_done.max(done);
        stores[i] = Some(store);
        Ok(())
    };
    // A device whose sync fails ends the run at once, rather than leaving W1 to wait for
    // events that will not come.
    let wait = counter.wait_for(rows_target, params.w1_timeout);
    tokio::pin!(wait);
    let server_count = loop {
        tokio::select! {
            count = &mut wait => break count?,
            Some(joined) = tasks.join_next() => finished(joined)?,
        }
    };
    let wall = start.elapsed();
    while let Some(joined) = tasks.join_next().await {
        finished(joined)?;
    }
    let after = quiesce(&http, &metrics_url).await?;
    if params.callgrind_w1 {
        callgrind_control(pid, "--dump=W1")?;
        callgrind_control(pid, "--instr=off")?;
    }
    let wire_up = after.delta(&before, "patrol_wire_read_bytes_total");
    let wire_down = after.delta(&before, "patrol_wire_written_bytes_total");
    let w1 = W1 {
        wall_ms: ms(wall),
        events_per_sec: total as f64 / wall.as_secs_f64(),
        server_count,
        count_ok: server_count == total,
        clients_done_ms: ms(clients_done),
        wire_up,
        wire_down,
        body_up: after.delta(&before, "patrol_http_request_body_bytes_total"),
        body_down: after.delta(&before, "patrol_http_response_body_bytes_total"),
        wire_bytes_per_event: (wire_up + wire_down) as f64 / total.max(1) as f64,
        http_requests: after.delta(&before, "patrol_http_requests_total"),
        retried_syncs,
        server_cpu_ms: procfs::cpu_ms(pid)? - cpu_before,
        client_cpu_ms: procfs::self_cpu_ms()? - client_cpu_before,
        server_peak_rss_mb: procfs::peak_rss_mb(pid)?,
    };

    // W2 full pull: a control room with state in memory only.
    procfs::reset_peak_rss(pid)?;
    let before = counters(&http, &metrics_url).await?;
    let start = Instant::now();
    // The control room's client is made inside the timed pull (connection set-up counts).
    let control_room = reqwest::Client::new();
    let (pulled, cursor) = tokio::time::timeout(
        params.pull_timeout,
        pull(&control_room, &server, &server.admin_token, 0),
    )
    .await??;
    let full_wall = start.elapsed();
    let after = quiesce(&http, &metrics_url).await?;
    let w2full_verify = verify(&pulled, &expected, &device_ids);
    let full_wire_down = after.delta(&before, "patrol_wire_written_bytes_total");
    let full_requests = after.delta(&before, "patrol_http_requests_total");
    drop(pulled);

    // W2 device push: device 1 records new events offline, then pushes them.
    let mut device1 = stores
        .first_mut()
        .and_then(Option::take)
        .ok_or_else(|| anyhow!("device 1's store is gone"))?;
    let mut stream = DeviceStream::new(params.seed, 1);
    let new_events: Vec<GenEvent> = stream
        .take(params.events + params.w2_new)
        .split_off(params.events as usize);
    for ev in &new_events {
        record_scan(&mut device1, ev)?;
    }
    let start = Instant::now();
    SyncClient::new(&server.url)?.sync(&mut device1).await?;
    let push_count = counter
        .wait_for(total + params.w2_new, params.w1_timeout)
        .await?;
    let w2push = W2Push {
        wall_ms: ms(start.elapsed()),
        server_count: push_count,
    };

    // W2 incremental pull: only what is new since the control room's cursor.
    let start = Instant::now();
    // The same control room as the full pull: its client and connection are already there.
    let (incr, _) = tokio::time::timeout(
        params.pull_timeout,
        pull(&control_room, &server, &server.admin_token, cursor),
    )
    .await??;
    let incr_wall = start.elapsed();
    let w2incr = W2Incr {
        wall_ms: ms(incr_wall),
        verify: verify(&incr, &new_events, &device_ids),
    };
    let w2full = W2Full {
        wall_ms: ms(full_wall),
        wire_down: full_wire_down,
        http_requests: full_requests,
        server_peak_rss_mb: procfs::peak_rss_mb(pid)?,
        verify: w2full_verify,
    };
    drop(server);

    // W3: device writes, no server.
    let w3_normal = w3(params, Durability::Normal, "wal+normal")?;
    let w3_full = w3(params, Durability::Full, "wal+full")?;
    let w3_reference = w3_reference(params)?;

    Ok(Results {
        peer: "patrol (patrol-mobile → patrol-server, embedded SQLite)".into(),
        d: params.devices,
        e: params.events,
        seed: params.seed,
        tours: params.tours,
        setup_ms,
        w1,
        w2full,
        w2push,
        w2incr,
        w3: w3_normal,
        w3_full,
        w3_reference,
    })
}

/// The site a workload run sets up: D devices, E events each, the generator's seed.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct SiteArgs {
    /// D: devices at the site, each with its own store and shift.
    #[arg(long, default_value_t = 100)]
    pub devices: u64,
    /// E: events each device records (checkpoint scans, mostly).
    #[arg(long, default_value_t = 1000)]
    pub events: u64,
    /// The generator's seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Writes a run's results to `out` as JSON.
pub fn write_results<T: Serialize>(out: &Path, results: &T) -> Result<()> {
    std::fs::write(out, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("writing {}", out.display()))
}

/// The results as a table a person reads.
pub fn table(r: &Results) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        s.push_str(&format!("{k:<44} {v}\n"));
    };
    line(
        "workload",
        format!(
            "D={} E={} seed={}{}",
            r.d,
            r.e,
            r.seed,
            if r.tours { ", with a tour" } else { "" }
        ),
    );
    line(
        "setup (offline recording, untimed)",
        format!("{:.0} ms", r.setup_ms),
    );
    line(
        "W1 shift sync, wall",
        format!(
            "{:.0} ms ({:.0} events/s)",
            r.w1.wall_ms, r.w1.events_per_sec
        ),
    );
    line("W1 clients done", format!("{:.0} ms", r.w1.clients_done_ms));
    line("W1 syncs retried (503)", r.w1.retried_syncs.to_string());
    line(
        "W1 server count",
        format!("{} (ok: {})", r.w1.server_count, r.w1.count_ok),
    );
    line(
        "W1 wire up / down",
        format!("{:.2} / {:.2} MiB", mib(r.w1.wire_up), mib(r.w1.wire_down)),
    );
    line(
        "W1 wire bytes per event, up+down",
        format!("{:.1} B", r.w1.wire_bytes_per_event),
    );
    line(
        "W1 body up / down",
        format!("{:.2} / {:.2} MiB", mib(r.w1.body_up), mib(r.w1.body_down)),
    );
    line("W1 HTTP requests", r.w1.http_requests.to_string());
    line(
        "W1 CPU server / client",
        format!("{:.0} / {:.0} ms", r.w1.server_cpu_ms, r.w1.client_cpu_ms),
    );
    line(
        "W1 server peak RSS",
        format!("{:.1} MiB", r.w1.server_peak_rss_mb),
    );
    line(
        "W2 full pull, wall",
        format!(
            "{:.0} ms ({:.2} MiB down, verify ok: {})",
            r.w2full.wall_ms,
            mib(r.w2full.wire_down),
            r.w2full.verify.ok
        ),
    );
    line(
        "W2 device push, wall",
        format!("{:.0} ms", r.w2push.wall_ms),
    );
    line(
        "W2 incremental pull, wall",
        format!(
            "{:.1} ms (verify ok: {})",
            r.w2incr.wall_ms, r.w2incr.verify.ok
        ),
    );
    line(
        "W2 server peak RSS",
        format!("{:.1} MiB", r.w2full.server_peak_rss_mb),
    );
    line(
        "W3 device write, WAL+NORMAL",
        format!("{:.0} events/s", r.w3.events_per_sec),
    );
    line(
        "W3 device write, WAL+FULL",
        format!("{:.0} events/s", r.w3_full.events_per_sec),
    );
    line(
        "W3 reference, append+fdatasync",
        format!("{:.0} events/s", r.w3_reference.events_per_sec),
    );
    s
}
