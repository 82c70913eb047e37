//! The load run (`patrol-load`): D devices, each a real `patrol-mobile` store (its own SQLite
//! file) with a real [`SyncClient`], all in one tokio runtime, record a checkpoint scan, sync,
//! and think, over and over for the run's length, against the real `patrol-server` binary on
//! 127.0.0.1. A control-room probe reads a feed page and the device list every 250 ms with an
//! operator's token. When the time is up, every device syncs until it holds nothing pending, and
//! the whole feed is pulled to check that every event any device had acknowledged is on the
//! server exactly once.
//!
//! A failed sync is handled as the phone's outbox handles it: a retryable error (network, 5xx,
//! 429, the server's `503 server_busy`) is tried again when the store says the next attempt is
//! due ([`SyncStatus::next_attempt_ms`](patrol_mobile::SyncStatus), the phone's own backoff with
//! the server's `Retry-After` as a floor); any other error ends that sync.
//!
//! Device stores use `synchronous=NORMAL`: the run measures the server, and a thousand phones'
//! `fdatasync`s on one virtual disk would measure the disk instead. A phone's durability is
//! W3's subject.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, ensure};
use patrol_mobile::{DeviceStore, Error as PhoneError, SyncClient};
use patrol_testkit::Server;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use crate::generator::{DeviceStream, SplitMix64};
use crate::{SITE, counters, enroll_device, one_address_server_args, procfs, pull, record_scan};

/// What a load run does.
#[derive(Clone, Debug)]
pub struct LoadParams {
    pub devices: u64,
    /// How long devices record and sync; the final syncs come after.
    pub duration: Duration,
    /// Mean pause between a device's syncs, in ms; each pause is drawn uniformly from
    /// [0.5, 1.5) times it. 0: a closed loop, each device syncs again at once.
    pub think_ms: u64,
    /// Seeds the events and the pauses: the same seed gives every device the same pauses.
    pub seed: u64,
    /// How often the control-room probe runs.
    pub probe_every: Duration,
    /// Bound on the final syncs after the run.
    pub final_timeout: Duration,
    /// Passed to `patrol-server serve`, e.g. `--max-queued-syncs 0`.
    pub server_args: Vec<String>,
    /// A guard in danger amid the load: one more device raises a panic this often, syncs it at
    /// once (the phone's panic lane) and an operator acknowledges it; `None`: no panics.
    pub panic_every: Option<Duration>,
}

impl LoadParams {
    pub fn new(devices: u64, duration: Duration) -> Self {
        LoadParams {
            devices,
            duration,
            think_ms: 1_000,
            seed: 42,
            probe_every: Duration::from_millis(250),
            final_timeout: Duration::from_secs(300),
            server_args: Vec::new(),
            panic_every: None,
        }
    }
}

/// Percentiles of a set of latencies, in milliseconds (nearest rank).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub n: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Latency {
            n: ms.len() as u64,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// How the syncs started during the run ended.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncOutcomes {
    /// Succeeded at the first attempt.
    pub ok: u64,
    /// Succeeded after one or more retryable failures.
    pub retried: u64,
    /// Failed with an error that is not retried, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Still retrying when the run ended: the next attempt was due after the end (their
    /// events went in the final sync).
    pub cut_off: u64,
}

/// The control-room probe: a feed page and the device list, every `probe_every`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub feed_page: Latency,
    pub device_list: Latency,
    /// Both requests of one probe, one after the other.
    pub probe: Latency,
    pub errors: BTreeMap<String, u64>,
    /// The most sync requests the server had waiting for a permit at a probe (its gauge).
    pub max_waiting_syncs: u64,
}

/// The server during the run (from `/proc` and its metrics side port).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerFigures {
    /// `VmHWM` over the run (reset after setup, read when the run ends).
    #[serde(rename = "peakRssMB")]
    pub peak_rss_mb: f64,
    /// After the final syncs and the loss check's pull of the whole feed.
    #[serde(rename = "finalRssMB")]
    pub final_rss_mb: f64,
    pub cpu_ms: f64,
    pub sync_requests: u64,
    pub syncs_queued: u64,
    pub refused_queue_full: u64,
    pub refused_wait_timeout: u64,
    pub http_5xx: u64,
}

/// After the run: every device syncs until nothing is pending.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalSync {
    pub wall_ms: f64,
    /// Sync attempts it took, over all devices, and the failed ones by kind.
    pub attempts: u64,
    pub attempt_errors: BTreeMap<String, u64>,
    /// Devices that still held pending events at the end (should be 0).
    pub devices_pending: u64,
}

/// Every event a device acknowledged, against the control-room feed.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LossCheck {
    pub ok: bool,
    /// Events the devices hold as delivered (acknowledged by the server).
    pub acknowledged: u64,
    /// Events in the site's feed.
    pub on_server: u64,
    /// Acknowledged but not in the feed.
    pub missing: u64,
    /// In the feed more than once.
    pub duplicates: u64,
    /// In the feed but no device holds them as delivered.
    pub unexpected: u64,
    /// Recorded but still pending on a device after the final sync.
    pub undelivered: u64,
}

/// The panics raised amid the load ([`LoadParams::panic_every`]).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Panics {
    /// From the guard's press to the server's acknowledgement of the sync that carried it
    /// (the panic lane, retries included).
    pub delivery_ms: Latency,
    /// From the operator's acknowledgement sent to the server's answer.
    pub acknowledge_ms: Latency,
    /// Panic syncs the server admitted through its panic lane.
    pub panic_lane_syncs: u64,
    pub errors: BTreeMap<String, u64>,
}

/// What `patrol-load` writes.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadResults {
    pub devices: u64,
    /// From the start until the last device had finished its last sync begun in the run.
    pub seconds: f64,
    pub think_ms: u64,
    pub seed: u64,
    pub server_args: Vec<String>,
    /// Enrolling the devices and starting their shifts (untimed for the run).
    pub setup_ms: f64,
    /// The 1-minute load average when the run started and when it ended.
    pub load_average: [f64; 2],
    pub syncs: SyncOutcomes,
    /// Every failed attempt during the run, by kind, including those retried.
    pub attempt_errors: BTreeMap<String, u64>,
    /// A sync as the guard's phone lives it: from its first attempt to its success, retries and
    /// their waits included (syncs that succeeded).
    pub sync_latency_ms: Latency,
    /// One successful request/response exchange (`SyncClient::sync` call).
    pub exchange_latency_ms: Latency,
    /// Attempts the server refused with `503` (how fast a refusal comes back).
    pub refused_latency_ms: Latency,
    pub events_recorded: u64,
    /// Events the server acknowledged to syncs during the run (scans, and each device's shift
    /// start with its first sync).
    pub events_acknowledged: u64,
    pub syncs_per_sec: f64,
    pub events_per_sec: f64,
    pub probe: Probe,
    pub panics: Panics,
    pub server: ServerFigures,
    pub generator_cpu_ms: f64,
    pub final_sync: FinalSync,
    pub loss: LossCheck,
}

/// A short, stable name for a failed attempt: `http_503`, `network`, ...
fn error_kind(e: &PhoneError) -> String {
    match e {
        PhoneError::Network(_) => "network".into(),
        PhoneError::ServerTransient { status, .. }
        | PhoneError::ServerRejected { status, .. }
        | PhoneError::Unauthorized { status, .. } => format!("http_{status}"),
        PhoneError::Replayed { .. } => "http_409_replayed".into(),
        PhoneError::BadResponse(_) => "bad_response".into(),
        other => format!("phone: {other}"),
    }
}

fn bump(map: &mut BTreeMap<String, u64>, kind: String) {
    *map.entry(kind).or_insert(0) += 1;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

fn wall_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A uniform number in [0, 1) from the generator.
fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// What one device saw.
#[derive(Debug, Default)]
struct DeviceLog {
    syncs: SyncOutcomes,
    attempt_errors: BTreeMap<String, u64>,
    sync_ms: Vec<f64>,
    exchange_ms: Vec<f64>,
    refused_ms: Vec<f64>,
    recorded: u64,
    acknowledged: u64,
    final_attempts: u64,
    final_errors: BTreeMap<String, u64>,
    final_pending: u64,
    /// Ids of the events the store holds as delivered, after the final sync.
    delivered: Vec<uuid::Uuid>,
    undelivered: u64,
    /// When it left the run for its final sync, from the start.
    left_run: Duration,
}

/// How one sync, with its retries, ended.
enum Synced {
    Ok {
        retried: bool,
        events: u64,
    },
    Failed(String),
    /// The next retry would come after `deadline`.
    CutOff,
}

/// How long until the store's outbox lets it sync again (0 when it may now).
fn until_due(store: &DeviceStore) -> Result<Duration> {
    let wait_ms = store
        .status()?
        .next_attempt_ms
        .map_or(0, |at| at.saturating_sub(wall_now_ms()).max(0));
    Ok(Duration::from_millis(wait_ms as u64))
}

/// One sync until it succeeds, as a phone's outbox does it: a retryable failure (a
/// `503 server_busy` above all) is tried again when the store's backoff says. Returns how many
/// attempts were refused on the way. For W1, where every device must deliver.
pub async fn sync_as_phone(client: &SyncClient, store: &mut DeviceStore) -> Result<u64> {
    let mut retried = 0;
    loop {
        match client.sync(store).await {
            Ok(report) => {
                if let Some(r) = report.rejected.first() {
                    anyhow::bail!("the server rejected a log: {} {}", r.code, r.message);
                }
                return Ok(retried);
            }
            Err(e) if e.is_retryable() && retried < 100 => {
                retried += 1;
                tokio::time::sleep(until_due(store)?).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One sync as the phone's outbox does it: only once the store says an attempt is due (after a
/// failure, its backoff), and retryable failures again when due, until `deadline`.
async fn sync_with_retries(
    store: &mut DeviceStore,
    client: &SyncClient,
    deadline: Instant,
    attempts: &mut u64,
    errors: &mut BTreeMap<String, u64>,
    exchange_ms: &mut Vec<f64>,
    refused_ms: &mut Vec<f64>,
) -> Result<Synced> {
    let mut retried = false;
    loop {
        let wait = until_due(store)?;
        if Instant::now() + wait > deadline {
            return Ok(Synced::CutOff);
        }
        tokio::time::sleep(wait).await;
        let t = Instant::now();
        *attempts += 1;
        match client.sync(store).await {
            Ok(report) => {
                exchange_ms.push(ms(t.elapsed()));
                if let Some(r) = report.rejected.first() {
                    return Ok(Synced::Failed(format!("rejected_{}", r.code)));
                }
                return Ok(Synced::Ok {
                    retried,
                    events: report.events_delivered,
                });
            }
            Err(e) => {
                let kind = error_kind(&e);
                if matches!(e, PhoneError::ServerTransient { status: 503, .. }) {
                    refused_ms.push(ms(t.elapsed()));
                }
                bump(errors, kind.clone());
                if !e.is_retryable() {
                    return Ok(Synced::Failed(kind));
                }
                // Again when the schedule `sync_failed` just wrote says.
                retried = true;
            }
        }
    }
}

/// Shared by every device task.
#[derive(Debug)]
struct RunClock {
    start: Instant,
    end: Instant,
    final_deadline: Instant,
}

/// One device: scan, sync, think, until the end; then sync until nothing is pending.
async fn device_loop(
    n: u64,
    mut store: DeviceStore,
    client: SyncClient,
    params: Arc<LoadParams>,
    clock: Arc<RunClock>,
) -> Result<DeviceLog> {
    let mut log = DeviceLog::default();
    let mut events = DeviceStream::new(params.seed, n);
    let mut pauses = SplitMix64::new(((params.seed << 32) | n) ^ 0xA5A5_A5A5_A5A5_A5A5);
    let think = params.think_ms as f64;
    // Start somewhere in the first pause, so that the devices do not all sync in the first ms.
    let first = Duration::from_millis((think * unit(&mut pauses)) as u64);
    tokio::time::sleep_until((clock.start + first).min(clock.end).into()).await;
    let mut attempts = 0;
    while Instant::now() < clock.end {
        record_scan(&mut store, &events.next_event())?;
        log.recorded += 1;
        let started = Instant::now();
        match sync_with_retries(
            &mut store,
            &client,
            clock.end,
            &mut attempts,
            &mut log.attempt_errors,
            &mut log.exchange_ms,
            &mut log.refused_ms,
        )
        .await?
        {
            Synced::Ok { retried, events } => {
                log.sync_ms.push(ms(started.elapsed()));
                log.acknowledged += events;
                if retried {
                    log.syncs.retried += 1;
                } else {
                    log.syncs.ok += 1;
                }
            }
            Synced::Failed(kind) => bump(&mut log.syncs.errors, kind),
            Synced::CutOff => {
                // Its next attempt is due after the end: it goes in the final sync.
                log.syncs.cut_off += 1;
                break;
            }
        }
        let pause = Duration::from_millis((think * (0.5 + unit(&mut pauses))) as u64);
        tokio::time::sleep_until((Instant::now() + pause).min(clock.end).into()).await;
    }

    log.left_run = clock.start.elapsed();
    final_sync(&mut store, &client, &clock, &mut log).await?;
    Ok(log)
}

/// The final sync after the run: until nothing is pending, each failure retried when due; then
/// what the store holds as delivered, for the loss check.
async fn final_sync(
    store: &mut DeviceStore,
    client: &SyncClient,
    clock: &RunClock,
    log: &mut DeviceLog,
) -> Result<()> {
    let (mut exchange, mut refused) = (Vec::new(), Vec::new());
    while store.status()?.pending_events > 0 && Instant::now() < clock.final_deadline {
        let synced = sync_with_retries(
            store,
            client,
            clock.final_deadline,
            &mut log.final_attempts,
            &mut log.final_errors,
            &mut exchange,
            &mut refused,
        )
        .await?;
        if let Synced::Failed(_) | Synced::CutOff = synced {
            break;
        }
    }
    log.final_pending = store.status()?.pending_events;
    for event in store.events(None)? {
        if event.delivered {
            log.delivered.push(event.event.id.0);
        } else {
            log.undelivered += 1;
        }
    }
    Ok(())
}

/// The guard in danger: a panic every `every` until the end, synced at once, then acknowledged
/// by the operator; then the final sync like any device's.
async fn panic_loop(
    mut store: DeviceStore,
    client: SyncClient,
    server_url: String,
    token: String,
    every: Duration,
    clock: Arc<RunClock>,
) -> Result<(DeviceLog, Panics, Vec<f64>, Vec<f64>)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut log = DeviceLog::default();
    let mut panics = Panics::default();
    let (mut delivery, mut acknowledge) = (Vec::new(), Vec::new());
    let mut attempts = 0;
    let (mut exchange, mut refused) = (Vec::new(), Vec::new());
    loop {
        tokio::time::sleep(every).await;
        if Instant::now() >= clock.end {
            break;
        }
        let pressed = Instant::now();
        let panic = store.record(
            patrol_core::EventBody::Panic { location: None },
            patrol_mobile::RecordOptions::default(),
        )?;
        log.recorded += 1;
        match sync_with_retries(
            &mut store,
            &client,
            clock.final_deadline,
            &mut attempts,
            &mut panics.errors,
            &mut exchange,
            &mut refused,
        )
        .await?
        {
            Synced::Ok { events, .. } => {
                delivery.push(ms(pressed.elapsed()));
                log.acknowledged += events;
            }
            Synced::Failed(kind) => {
                bump(&mut panics.errors, kind);
                continue;
            }
            Synced::CutOff => break,
        }
        let t = Instant::now();
        let url = format!("{server_url}/api/v1/sites/{SITE}/alarms/{panic}/acknowledge");
        match http
            .post(&url)
            .bearer_auth(&token)
            .json(&serde_json::json!({}))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => acknowledge.push(ms(t.elapsed())),
            Ok(resp) => bump(&mut panics.errors, format!("ack: http_{}", resp.status())),
            Err(_) => bump(&mut panics.errors, "ack: network".into()),
        }
    }
    final_sync(&mut store, &client, &clock, &mut log).await?;
    Ok((log, panics, delivery, acknowledge))
}

/// The control room, every `probe_every` until the end: the next page of the live feed (at
/// most 100 events after its cursor) and the site's device list, as an operator.
async fn probe_loop(
    server_url: String,
    metrics_url: String,
    token: String,
    every: Duration,
    end: Instant,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>, BTreeMap<String, u64>, u64)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let side = reqwest::Client::new();
    let (mut feed, mut devices, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors = BTreeMap::new();
    let mut max_waiting = 0;
    let mut cursor = 0u64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        let t = Instant::now();
        let url = format!("{server_url}/api/v1/sites/{SITE}/events?after={cursor}&limit=100");
        let page = async {
            let resp = http.get(&url).bearer_auth(&token).send().await?;
            let status = resp.status();
            ensure!(status.is_success(), "http_{}", status.as_u16());
            let page: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
            page["next"].as_u64().ok_or_else(|| anyhow!("no cursor"))
        }
        .await;
        match page {
            Ok(next) => {
                cursor = next;
                feed.push(ms(t.elapsed()));
            }
            Err(e) => bump(&mut errors, format!("feed: {e}")),
        }
        let t2 = Instant::now();
        let url = format!("{server_url}/api/v1/sites/{SITE}/devices");
        let list = async {
            let resp = http.get(&url).bearer_auth(&token).send().await?;
            let status = resp.status();
            ensure!(status.is_success(), "http_{}", status.as_u16());
            resp.bytes().await?;
            Ok(())
        }
        .await;
        match list {
            Ok(()) => devices.push(ms(t2.elapsed())),
            Err(e) => bump(&mut errors, format!("devices: {e}")),
        }
        both.push(ms(t.elapsed()));
        // Not timed: the side port, which the server does not count.
        if let Ok(c) = counters(&side, &metrics_url).await {
            max_waiting = max_waiting.max(c.get("patrol_sync_waiting"));
        }
    }
    Ok((feed, devices, both, errors, max_waiting))
}

/// Raises this process's soft limit on open files to at least `want` (within the hard limit):
/// each device holds its database, WAL and shared-memory files and a socket, and the server,
/// a child, inherits the limit for its side of the sockets. Returns the limit in force.
pub fn raise_open_files(want: u64) -> Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return Ok(current);
    }
    let raised = limit.maximum.map_or(want, |max| want.min(max));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        },
    )
    .context("raising RLIMIT_NOFILE")?;
    Ok(raised)
}

/// Creates an operator of the bench's site through the API; returns its token.
async fn operator_token(http: &reqwest::Client, server: &Server) -> Result<String> {
    let url = format!("{}/api/v1/users", server.url);
    let resp = http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({"name": "load-probe", "role": "operator", "sites": [SITE]}))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "POST {url}: {}", resp.status());
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no token in the answer to POST {url}"))
}

/// Runs the load: setup, the timed run with the probe, the final syncs, the loss check.
pub async fn run_load(params: &LoadParams) -> Result<LoadResults> {
    // Per device: database, WAL, shm, a socket or two; plus the server's side of each socket.
    raise_open_files(params.devices * 8 + 1_024)?;
    let work = tempfile::tempdir()?;
    let devices_dir = work.path().join("devices");
    std::fs::create_dir_all(&devices_dir)?;
    let args = one_address_server_args(params.devices, &params.server_args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_args(&work.path().join("server"), &[SITE], true, &args)?;
    let metrics_url = server
        .metrics_url
        .clone()
        .ok_or_else(|| anyhow!("server printed no metrics port"))?;
    let http = reqwest::Client::new();

    let setup_start = Instant::now();
    let mut devices = Vec::with_capacity(params.devices as usize);
    for n in 1..=params.devices {
        let store = enroll_device(&http, &server, &devices_dir, n)
            .await
            .with_context(|| format!("enrolling device {n}"))?;
        // Each phone has its HTTP client from app start.
        let client = SyncClient::new(&server.url)?;
        devices.push((n, store, client));
    }
    let token = operator_token(&http, &server).await?;
    let panic_phone = match params.panic_every {
        Some(every) => {
            let n = params.devices + 1;
            let store = enroll_device(&http, &server, &devices_dir, n)
                .await
                .context("enrolling the panic phone")?;
            Some((store, SyncClient::new(&server.url)?, every))
        }
        None => None,
    };
    let setup_ms = ms(setup_start.elapsed());

    let pid = server.pid();
    procfs::reset_peak_rss(pid)?;
    let before = counters(&http, &metrics_url).await?;
    let cpu_before = procfs::cpu_ms(pid)?;
    let self_cpu_before = procfs::self_cpu_ms()?;
    let load_start = procfs::load_average()?[0];

    let start = Instant::now();
    let clock = Arc::new(RunClock {
        start,
        end: start + params.duration,
        final_deadline: start + params.duration + params.final_timeout,
    });
    let shared = Arc::new(params.clone());
    let probe = tokio::spawn(probe_loop(
        server.url.clone(),
        metrics_url.clone(),
        token.clone(),
        params.probe_every,
        clock.end,
    ));
    let panicking = panic_phone.map(|(store, client, every)| {
        tokio::spawn(panic_loop(
            store,
            client,
            server.url.clone(),
            token.clone(),
            every,
            clock.clone(),
        ))
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (n, store, client) in devices {
        let (params, clock) = (shared.clone(), clock.clone());
        tasks.spawn(async move {
            device_loop(n, store, client, params, clock)
                .await
                .with_context(|| format!("device {n}"))
        });
    }
    let (feed_ms, devices_ms, probe_ms, probe_errors, max_waiting) = probe.await??;
    // The devices are now in their final syncs (a few may still finish their last one).
    let during = counters(&http, &metrics_url).await?;
    let server_cpu_ms = procfs::cpu_ms(pid)? - cpu_before;
    let generator_cpu_ms = procfs::self_cpu_ms()? - self_cpu_before;
    let peak_rss_mb = procfs::peak_rss_mb(pid)?;

    let final_start = Instant::now();
    let mut logs = Vec::with_capacity(params.devices as usize);
    while let Some(joined) = tasks.join_next().await {
        logs.push(joined??);
    }
    let mut panics = Panics::default();
    if let Some(task) = panicking {
        let (log, mut p, delivery, acknowledge) = task.await??;
        p.delivery_ms = Latency::of(delivery);
        p.acknowledge_ms = Latency::of(acknowledge);
        p.panic_lane_syncs = counters(&http, &metrics_url)
            .await?
            .delta(&before, "patrol_sync_panic_total");
        panics = p;
        logs.push(log);
    }
    let final_wall = final_start.elapsed();
    let load_end = procfs::load_average()?[0];

    // Every event a device holds as delivered must be in the feed, once.
    let (pulled, _) = pull(&reqwest::Client::new(), &server, &token, 0).await?;
    let mut on_server: HashMap<uuid::Uuid, u64> = HashMap::with_capacity(pulled.len());
    for event in &pulled {
        *on_server.entry(event.id).or_insert(0) += 1;
    }
    let acknowledged: HashSet<uuid::Uuid> = logs
        .iter()
        .flat_map(|l| l.delivered.iter().copied())
        .collect();
    let missing = acknowledged
        .iter()
        .filter(|id| !on_server.contains_key(id))
        .count() as u64;
    let duplicates = on_server.values().map(|n| n.saturating_sub(1)).sum();
    let unexpected = on_server
        .keys()
        .filter(|id| !acknowledged.contains(id))
        .count() as u64;
    let undelivered = logs.iter().map(|l| l.undelivered).sum();
    let loss = LossCheck {
        ok: missing == 0 && duplicates == 0 && unexpected == 0 && undelivered == 0,
        acknowledged: acknowledged.len() as u64,
        on_server: pulled.len() as u64,
        missing,
        duplicates,
        unexpected,
        undelivered,
    };
    let final_rss_mb = procfs::rss_mb(pid)?;
    drop(server);

    let mut syncs = SyncOutcomes::default();
    let mut attempt_errors = BTreeMap::new();
    let mut final_sync = FinalSync {
        wall_ms: ms(final_wall),
        ..FinalSync::default()
    };
    let (mut sync_ms, mut exchange_ms, mut refused_ms) = (Vec::new(), Vec::new(), Vec::new());
    let (mut recorded, mut acked) = (0, 0);
    let mut run_left = params.duration;
    for log in logs {
        run_left = run_left.max(log.left_run);
        syncs.ok += log.syncs.ok;
        syncs.retried += log.syncs.retried;
        syncs.cut_off += log.syncs.cut_off;
        for (kind, n) in log.syncs.errors {
            *syncs.errors.entry(kind).or_insert(0) += n;
        }
        for (kind, n) in log.attempt_errors {
            *attempt_errors.entry(kind).or_insert(0) += n;
        }
        for (kind, n) in log.final_errors {
            *final_sync.attempt_errors.entry(kind).or_insert(0) += n;
        }
        final_sync.attempts += log.final_attempts;
        final_sync.devices_pending += u64::from(log.final_pending > 0);
        sync_ms.extend(log.sync_ms);
        exchange_ms.extend(log.exchange_ms);
        refused_ms.extend(log.refused_ms);
        recorded += log.recorded;
        acked += log.acknowledged;
    }
    // The run lasted until the last device's last sync begun before the end had finished.
    let secs = run_left.as_secs_f64();
    Ok(LoadResults {
        devices: params.devices,
        seconds: secs,
        think_ms: params.think_ms,
        seed: params.seed,
        server_args: params.server_args.clone(),
        setup_ms,
        load_average: [load_start, load_end],
        syncs_per_sec: (syncs.ok + syncs.retried) as f64 / secs,
        events_per_sec: acked as f64 / secs,
        syncs,
        attempt_errors,
        sync_latency_ms: Latency::of(sync_ms),
        exchange_latency_ms: Latency::of(exchange_ms),
        refused_latency_ms: Latency::of(refused_ms),
        events_recorded: recorded,
        events_acknowledged: acked,
        probe: Probe {
            feed_page: Latency::of(feed_ms),
            device_list: Latency::of(devices_ms),
            probe: Latency::of(probe_ms),
            errors: probe_errors,
            max_waiting_syncs: max_waiting,
        },
        panics,
        server: ServerFigures {
            peak_rss_mb,
            final_rss_mb,
            cpu_ms: server_cpu_ms,
            sync_requests: during.delta(&before, "patrol_sync_requests_total"),
            syncs_queued: during.delta(&before, "patrol_sync_queued_total"),
            refused_queue_full: during.delta_labelled(
                &before,
                "patrol_sync_refused_total",
                "reason=\"queue_full\"",
            ),
            refused_wait_timeout: during.delta_labelled(
                &before,
                "patrol_sync_refused_total",
                "reason=\"wait_timeout\"",
            ),
            http_5xx: during.delta_labelled(
                &before,
                "patrol_http_responses_total",
                "class=\"5xx\"",
            ),
        },
        generator_cpu_ms,
        final_sync,
        loss,
    })
}

/// The results as a table a person reads.
pub fn load_table(r: &LoadResults) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        s.push_str(&format!("{k:<40} {v}\n"));
    };
    let lat = |l: &Latency| {
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms (n={})",
            l.p50, l.p90, l.p99, l.max, l.n
        )
    };
    let kinds = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    line(
        "load",
        format!(
            "D={} for {:.1} s, think {} ms, seed {}{}",
            r.devices,
            r.seconds,
            r.think_ms,
            r.seed,
            if r.server_args.is_empty() {
                String::new()
            } else {
                format!(", server {}", r.server_args.join(" "))
            }
        ),
    );
    line(
        "load average (1 min) at start / end",
        format!("{:.2} / {:.2}", r.load_average[0], r.load_average[1]),
    );
    line(
        "setup (enrollment, untimed)",
        format!("{:.0} ms", r.setup_ms),
    );
    line(
        "syncs ok / retried / cut off",
        format!("{} / {} / {}", r.syncs.ok, r.syncs.retried, r.syncs.cut_off),
    );
    line("sync errors (not retried)", kinds(&r.syncs.errors));
    line("failed attempts (retried)", kinds(&r.attempt_errors));
    line("sync latency, retries included", lat(&r.sync_latency_ms));
    line("one exchange (successful)", lat(&r.exchange_latency_ms));
    line("refused attempt (503)", lat(&r.refused_latency_ms));
    line(
        "events recorded / acknowledged",
        format!("{} / {}", r.events_recorded, r.events_acknowledged),
    );
    line(
        "throughput",
        format!(
            "{:.0} syncs/s, {:.0} events/s",
            r.syncs_per_sec, r.events_per_sec
        ),
    );
    line("control room: feed page", lat(&r.probe.feed_page));
    line("control room: device list", lat(&r.probe.device_list));
    line("control room: both (one probe)", lat(&r.probe.probe));
    line("control room errors", kinds(&r.probe.errors));
    line(
        "server syncs waiting, most seen",
        r.probe.max_waiting_syncs.to_string(),
    );
    if r.panics.delivery_ms.n > 0 || !r.panics.errors.is_empty() {
        line("panic: press to delivered", lat(&r.panics.delivery_ms));
        line("panic: acknowledgement", lat(&r.panics.acknowledge_ms));
        line(
            "panic: lane syncs / failures",
            format!(
                "{} / {}",
                r.panics.panic_lane_syncs,
                kinds(&r.panics.errors)
            ),
        );
    }
    line(
        "server sync requests / queued",
        format!("{} / {}", r.server.sync_requests, r.server.syncs_queued),
    );
    line(
        "server refused: queue full / waited",
        format!(
            "{} / {}",
            r.server.refused_queue_full, r.server.refused_wait_timeout
        ),
    );
    line("server 5xx responses", r.server.http_5xx.to_string());
    line(
        "server RSS: run peak (VmHWM) / at the end",
        format!(
            "{:.1} / {:.1} MiB",
            r.server.peak_rss_mb, r.server.final_rss_mb
        ),
    );
    line(
        "CPU server / generator",
        format!("{:.0} / {:.0} ms", r.server.cpu_ms, r.generator_cpu_ms),
    );
    line(
        "final sync",
        format!(
            "{:.0} ms, {} attempts, failed: {}, devices still pending: {}",
            r.final_sync.wall_ms,
            r.final_sync.attempts,
            kinds(&r.final_sync.attempt_errors),
            r.final_sync.devices_pending
        ),
    );
    line(
        "loss check",
        format!(
            "{} (acknowledged {}, on server {}, missing {}, duplicates {}, unexpected {}, undelivered {})",
            if r.loss.ok { "ok" } else { "FAILED" },
            r.loss.acknowledged,
            r.loss.on_server,
            r.loss.missing,
            r.loss.duplicates,
            r.loss.unexpected,
            r.loss.undelivered
        ),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!(
            (l.n, l.p50, l.p90, l.p99, l.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        let one = Latency::of(vec![7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Latency::of(Vec::new()).n, 0);
    }

    #[test]
    fn pauses_are_seeded_and_in_range() {
        let mut a = SplitMix64::new(9);
        let mut b = SplitMix64::new(9);
        for _ in 0..1_000 {
            let (x, y) = (unit(&mut a), unit(&mut b));
            assert_eq!(x, y);
            assert!((0.0..1.0).contains(&x));
        }
    }
}
