//! The run: phones, the network between them and the server, the control room, and the steps.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use patrol_core::incident::{Attachment, IncidentAction};
use patrol_core::protocol::SyncResponse;
use patrol_core::{
    CheckpointId, DeviceId, EventBody, EventId, GuardId, IncidentCategory, IncidentId,
    IncidentReport, Location, Scan, ScanMethod, Severity,
};
use patrol_mobile::backoff::RetryPolicy;
use patrol_mobile::store::PreparedSync;
use patrol_mobile::{DeviceStore, Durability, Enrollment, RecordOptions, StoreOptions, SyncReport};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::runtime::Runtime;
use uuid::Uuid;

use crate::clock::{MAX_SKEW_MS, SimClock, SimTime};
use crate::server::{OPERATORS, SITE, SimServer, SyncAnswer};
use crate::{Failure, RunReport, SimConfig, SimError, Stats, Trace};

/// Sync rounds a phone gets in the healing phase to have nothing pending.
const HEAL_ROUNDS: usize = 8;

const CATEGORIES: [IncidentCategory; 4] = [
    IncidentCategory::Theft,
    IncidentCategory::Fire,
    IncidentCategory::Dispute,
    IncidentCategory::Other,
];

const SEVERITIES: [Severity; 4] = [
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

const WORDS: [&str; 8] = [
    "door", "open", "gate", "b2", "light", "out", "van", "parked",
];

/// A sync request the phone sent and still waits for an answer to.
#[derive(Debug)]
struct Waiting {
    prepared: PreparedSync,
    /// The network's id of the request, while it is held there.
    held: u64,
}

/// A request the network holds back, to deliver later (or lose).
#[derive(Debug)]
struct Held {
    id: u64,
    phone: usize,
    body: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Phone {
    pub(crate) path: PathBuf,
    clock: SimClock,
    pub(crate) store: Option<DeviceStore>,
    pub(crate) id: DeviceId,
    credential: String,
    /// Every event recorded, in the phone's order.
    pub(crate) recorded: Vec<EventId>,
    /// Every event the phone has ever shown as delivered.
    pub(crate) delivered: HashSet<EventId>,
    /// Incidents this phone reported.
    pub(crate) reported: Vec<IncidentId>,
    offline_until: usize,
    waiting: Option<Waiting>,
}

impl Phone {
    pub(crate) fn store(&mut self) -> Result<&mut DeviceStore, SimError> {
        self.store
            .as_mut()
            .ok_or_else(|| SimError::Failed("the phone's store is not open".into()))
    }
}

/// A recording call the app makes with its own event id (so it can retry it after a crash).
#[derive(Clone, Debug)]
enum Recording {
    Scan(Scan),
    Note(String),
    Report(IncidentReport, Vec<Attachment>),
    Panic(Option<Location>),
    Handover(GuardId, String),
}

impl Recording {
    fn name(&self) -> &'static str {
        match self {
            Recording::Scan(_) => "scan",
            Recording::Note(_) => "note",
            Recording::Report(..) => "report",
            Recording::Panic(_) => "panic",
            Recording::Handover(..) => "handover",
        }
    }

    fn apply(&self, store: &mut DeviceStore, id: EventId) -> Result<EventId, SimError> {
        let options = RecordOptions {
            event_id: Some(id),
            wall_ms: None,
        };
        let recorded = match self {
            Recording::Scan(scan) => store.scan(scan.clone(), options),
            Recording::Note(text) => store.record(EventBody::Note { text: text.clone() }, options),
            Recording::Report(report, attachments) => store
                .report_incident(report.clone(), attachments.clone(), options)
                .map(|_| id),
            Recording::Panic(location) => store.record(
                EventBody::Panic {
                    location: *location,
                },
                options,
            ),
            Recording::Handover(to, text) => store.record(
                EventBody::Handover {
                    to_guard: Some(to.clone()),
                    text: text.clone(),
                },
                options,
            ),
        };
        let got = recorded.map_err(SimError::from_display("record"))?;
        if got != id {
            return Err(SimError::invariant(format!(
                "recorded {got} for the app's id {id}"
            )));
        }
        Ok(id)
    }
}

pub(crate) struct Sim {
    rng: ChaCha8Rng,
    pub(crate) rt: Runtime,
    time: SimTime,
    pub(crate) server: SimServer,
    pub(crate) phones: Vec<Phone>,
    guards: Vec<GuardId>,
    held: Vec<Held>,
    next_held: u64,
    step: usize,
    trace: Trace,
    /// The first acknowledgement of each panic alarm (event id, operator).
    pub(crate) acks: BTreeMap<EventId, String>,
    /// The latest site configuration version published.
    pub(crate) config_version: u64,
    pub(crate) stats: Stats,
}

/// Where runs put their files: memory when the machine has a tmpfs (fsync is then free, and the
/// simulation's crashes are process crashes, which do not need it), else the temp directory.
fn run_dir() -> Result<tempfile::TempDir, SimError> {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("patrol-sim-");
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return Ok(dir);
    }
    builder
        .tempdir()
        .map_err(SimError::from_display("temp dir"))
}

pub(crate) fn run(config: &SimConfig) -> Result<RunReport, Failure> {
    let fail = |step: usize, error: SimError, trace: &Trace| Failure {
        config: config.clone(),
        step,
        error,
        trace_hash: trace.hash,
        last_steps: trace.tail.iter().cloned().collect(),
    };
    let dir = run_dir().map_err(|e| fail(0, e, &Trace::default()))?;
    let mut sim = Sim::new(config, dir.path()).map_err(|e| fail(0, e, &Trace::default()))?;
    let result = sim.run_steps(config.steps).and_then(|()| {
        sim.step = config.steps;
        sim.heal()?;
        crate::check::all(&mut sim)
    });
    match result {
        Ok(()) => Ok(RunReport {
            config: config.clone(),
            trace_hash: sim.trace.hash,
            steps_traced: sim.trace.lines,
            stats: sim.stats.clone(),
        }),
        Err(e) => Err(fail(sim.step, e, &sim.trace)),
    }
}

fn phone_options(clock: &SimClock) -> StoreOptions {
    StoreOptions {
        durability: Durability::Full,
        clock: Some(Arc::new(clock.clone())),
    }
}

/// Opens a phone's existing store again, as the app does after it was killed.
fn reopen_phone(path: &Path, clock: &SimClock) -> Result<DeviceStore, SimError> {
    DeviceStore::open_with(path, None, phone_options(clock)).map_err(|e| {
        SimError::invariant(format!("the store {} does not open: {e}", path.display()))
    })
}

fn create_phone(
    path: &Path,
    clock: &SimClock,
    enrollment: Enrollment,
) -> Result<DeviceStore, SimError> {
    DeviceStore::create_enrolled(path, enrollment, phone_options(clock))
        .map_err(SimError::from_display("create the phone's store"))
}

impl Sim {
    fn new(config: &SimConfig, dir: &Path) -> Result<Self, SimError> {
        if config.devices == 0 {
            return Err(SimError::Failed("a run needs at least one phone".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SimError::from_display("runtime"))?;
        let time = SimTime::default();
        let server = SimServer::create(&rt, &dir.join("server"))?;
        let mut phones = Vec::with_capacity(config.devices);
        for i in 0..config.devices {
            let skew = rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS);
            let drift = rng.random_range(-500..=500);
            let boot = random_uuid(&mut rng, time.now_ms());
            let clock = SimClock::new(time.clone(), skew, drift, boot);
            let path = dir.join(format!("phone-{i}.db"));
            let enrollment = server.enroll(&rt)?;
            let credential = enrollment.credential.clone();
            let store = create_phone(&path, &clock, enrollment)?;
            phones.push(Phone {
                id: store.device_id(),
                credential,
                path,
                clock,
                store: Some(store),
                recorded: Vec::new(),
                delivered: HashSet::new(),
                reported: Vec::new(),
                offline_until: 0,
                waiting: None,
            });
        }
        let guards = (1..=config.devices + 1)
            .map(|i| GuardId::new(format!("guard-{i}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SimError::from_display("guard id"))?;
        Ok(Sim {
            rng,
            rt,
            time,
            server,
            phones,
            guards,
            held: Vec::new(),
            next_held: 0,
            step: 0,
            trace: Trace::default(),
            acks: BTreeMap::new(),
            config_version: 0,
            stats: Stats::default(),
        })
    }

    fn log(&mut self, line: impl AsRef<str>) {
        let line = format!("{} {}", self.step, line.as_ref());
        self.trace.log(line);
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn uuid(&mut self) -> Uuid {
        let now = self.time.now_ms();
        random_uuid(&mut self.rng, now)
    }

    fn words(&mut self) -> String {
        let n = self.rng.random_range(1..=4);
        (0..n)
            .map(|_| WORDS[self.rng.random_range(0..WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn location(&mut self) -> Option<Location> {
        self.chance(0.5).then(|| Location {
            lat: 51.5 + self.rng.random_range(0.0..0.01),
            lon: -0.12 + self.rng.random_range(0.0..0.01),
            accuracy_m: Some(self.rng.random_range(3..30) as f32),
        })
    }

    fn guard(&mut self) -> GuardId {
        self.guards[self.rng.random_range(0..self.guards.len())].clone()
    }

    fn run_steps(&mut self, steps: usize) -> Result<(), SimError> {
        for step in 0..steps {
            self.step = step;
            self.time.advance(self.rng.random_range(1_000..120_000));
            let roll = self.rng.random_range(0..100);
            match roll {
                0..60 => {
                    let p = self.rng.random_range(0..self.phones.len());
                    self.phone_step(p)?;
                }
                60..72 => self.network_step()?,
                72..90 => self.control_room_step()?,
                90..93 => {
                    self.log("server restart");
                    self.server.restart()?;
                    self.stats.server_restarts += 1;
                }
                _ => self.log("time passes"),
            }
        }
        Ok(())
    }

    fn phone_step(&mut self, p: usize) -> Result<(), SimError> {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..50 => self.record(p),
            50..80 => self.sync_attempt(p),
            80..87 => self.crash(p, "idle"),
            87..95 => {
                let steps = self.rng.random_range(3..40);
                self.phones[p].offline_until = self.step + steps;
                self.log(format!("p{p} offline for {steps} steps"));
                Ok(())
            }
            _ => {
                let skew = self.rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS);
                self.phones[p].clock.set_skew(skew);
                self.log(format!("p{p} clock set to {skew} ms off"));
                Ok(())
            }
        }
    }

    /// One recording call on phone `p`: a shift start when none is open, else an event, an
    /// incident action or the shift's end; sometimes the app crashes around the call and, not
    /// knowing whether it went through, makes it again with the same id after the restart.
    fn record(&mut self, p: usize) -> Result<(), SimError> {
        if self.phones[p].store()?.current_shift().is_none() {
            let guard = self.guard();
            let store = self.phones[p].store()?;
            let shift = store
                .start_shift(guard.clone())
                .map_err(SimError::from_display("start shift"))?;
            let started = store
                .events(Some(shift))
                .map_err(SimError::from_display("events"))?
                .first()
                .map(|e| e.event.id)
                .ok_or_else(|| SimError::invariant("a started shift holds no event"))?;
            self.phones[p].recorded.push(started);
            self.stats.events += 1;
            self.log(format!("p{p} start shift {guard}"));
            return Ok(());
        }
        let roll = self.rng.random_range(0..100);
        match roll {
            0..14 => self.act_on_incident(p),
            14..22 => {
                let note = self.words();
                let id = self.phones[p]
                    .store()?
                    .end_shift(Some(note))
                    .map_err(SimError::from_display("end shift"))?;
                self.phones[p].recorded.push(id);
                self.stats.events += 1;
                self.log(format!("p{p} end shift"));
                Ok(())
            }
            _ => {
                let recording = self.recording()?;
                let id = EventId(self.uuid());
                let mut recorded = false;
                if self.chance(0.1) {
                    // The app dies around the call: before or after it committed.
                    recorded = self.chance(0.5);
                    if recorded {
                        recording.apply(self.phones[p].store()?, id)?;
                        self.phones[p].recorded.push(id);
                    }
                    self.log(format!(
                        "p{p} {} then crash (recorded: {recorded})",
                        recording.name()
                    ));
                    self.crash(p, "around a recording")?;
                    self.stats.retried_recordings += 1;
                }
                // Not knowing whether the call went through, the app makes it again: at most
                // one event may result.
                recording.apply(self.phones[p].store()?, id)?;
                if !recorded {
                    self.phones[p].recorded.push(id);
                }
                if let Recording::Report(report, _) = &recording {
                    self.phones[p].reported.push(report.incident);
                    self.stats.incidents_reported += 1;
                }
                self.stats.events += 1;
                self.log(format!("p{p} {}", recording.name()));
                self.check_phone(p)
            }
        }
    }

    fn recording(&mut self) -> Result<Recording, SimError> {
        let roll = self.rng.random_range(0..100);
        Ok(match roll {
            0..50 => {
                let n = self.rng.random_range(1..=6);
                let method = match self.rng.random_range(0..4) {
                    0 => ScanMethod::Nfc {
                        tag: format!("tag-{n}"),
                    },
                    1 => ScanMethod::Qr {
                        payload: format!("qr-{n}"),
                    },
                    2 => ScanMethod::Gps,
                    _ => ScanMethod::Manual {
                        reason: self.words(),
                    },
                };
                let note = self.chance(0.2).then(|| self.words());
                let mut location = self.location();
                if matches!(method, ScanMethod::Gps) && location.is_none() {
                    // A GPS scan is its location.
                    location = Some(Location {
                        lat: 51.5,
                        lon: -0.12,
                        accuracy_m: Some(10.0),
                    });
                }
                Recording::Scan(Scan {
                    // Ids of this shape are always valid.
                    checkpoint: CheckpointId::new(format!("cp-{n}"))
                        .map_err(SimError::from_display("checkpoint id"))?,
                    method,
                    location,
                    note,
                })
            }
            50..72 => Recording::Note(self.words()),
            72..86 => {
                let incident = IncidentId(self.uuid());
                let category = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
                let severity = SEVERITIES[self.rng.random_range(0..SEVERITIES.len())];
                let description = self.words();
                let location = self.location();
                let attachments = if self.chance(0.3) {
                    let mut sha256 = [0u8; 32];
                    self.rng.fill(&mut sha256);
                    vec![Attachment {
                        sha256,
                        media_type: "image/jpeg".into(),
                        size: self.rng.random_range(1_000..1_000_000),
                        name: Some("photo.jpg".into()),
                    }]
                } else {
                    Vec::new()
                };
                Recording::Report(
                    IncidentReport {
                        incident,
                        category,
                        severity,
                        description,
                        location,
                    },
                    attachments,
                )
            }
            86..93 => Recording::Panic(self.location()),
            _ => Recording::Handover(self.guard(), self.words()),
        })
    }

    /// The guard acts on one of the incidents the phone holds; the status rules may refuse it.
    fn act_on_incident(&mut self, p: usize) -> Result<(), SimError> {
        let mut ids: Vec<IncidentId> = self.phones[p]
            .store()?
            .incidents()
            .map_err(SimError::from_display("incidents"))?
            .iter()
            .map(|i| i.state.id)
            .collect();
        // The store lists by local update time; the choice must not depend on it.
        ids.sort();
        if ids.is_empty() {
            self.log(format!("p{p} no incident to act on"));
            return Ok(());
        }
        let id = ids[self.rng.random_range(0..ids.len())];
        let action = match self.rng.random_range(0..100) {
            0..50 => IncidentAction::AddNote(self.words()),
            50..58 => IncidentAction::Acknowledge,
            58..64 => IncidentAction::Dispatch,
            64..72 => IncidentAction::Resolve,
            72..78 => IncidentAction::Close,
            78..84 => IncidentAction::Reopen,
            84..92 => {
                IncidentAction::SetSeverity(SEVERITIES[self.rng.random_range(0..SEVERITIES.len())])
            }
            _ => IncidentAction::Assign(Some(self.guard().to_string())),
        };
        let name = action_name(&action);
        let outcome = match self.phones[p].store()?.act_on_incident(id, action) {
            Ok(_) => {
                self.stats.phone_incident_actions += 1;
                "ok"
            }
            Err(patrol_mobile::Error::IncidentRule(_)) => "refused",
            Err(e) => return Err(SimError::Failed(format!("act on incident {id}: {e}"))),
        };
        self.log(format!("p{p} incident {id} {name}: {outcome}"));
        Ok(())
    }

    /// Drops the phone's store as a killed app does, and opens it again from its file.
    fn crash(&mut self, p: usize, when: &str) -> Result<(), SimError> {
        let reboot = self.chance(0.3);
        let boot = self.uuid();
        let phone = &mut self.phones[p];
        phone.waiting = None;
        drop(phone.store.take());
        if reboot {
            phone.clock.reboot(boot);
        }
        let store = reopen_phone(&phone.path, &phone.clock)?;
        if store.device_id() != phone.id {
            return Err(SimError::invariant(format!(
                "phone {p} reopened as device {}, was {}",
                store.device_id(),
                phone.id
            )));
        }
        phone.store = Some(store);
        self.stats.phone_crashes += 1;
        self.log(format!("p{p} crash {when} (reboot: {reboot})"));
        self.check_phone(p)
    }

    /// The phone's log is what was recorded, in order, and nothing once delivered is undelivered.
    pub(crate) fn check_phone(&mut self, p: usize) -> Result<(), SimError> {
        let phone = &mut self.phones[p];
        let events = phone
            .store()?
            .events(None)
            .map_err(SimError::from_display("events"))?;
        let ids: Vec<EventId> = events.iter().map(|e| e.event.id).collect();
        if ids != phone.recorded {
            return Err(SimError::invariant(format!(
                "phone {p} holds {} events, {} were recorded (or in another order)",
                ids.len(),
                phone.recorded.len()
            )));
        }
        for e in &events {
            if e.delivered {
                phone.delivered.insert(e.event.id);
            } else if phone.delivered.contains(&e.event.id) {
                return Err(SimError::invariant(format!(
                    "phone {p}: event {} was shown delivered and is not any more",
                    e.event.id
                )));
            }
        }
        Ok(())
    }

    fn sync_failed(&mut self, p: usize, why: &str) -> Result<(), SimError> {
        let error = patrol_mobile::Error::Network(why.to_owned());
        self.phones[p]
            .store()?
            .sync_failed(&error, &RetryPolicy::default())
            .map_err(SimError::from_display("sync failed"))
    }

    /// The phone applies an answer to the request it prepared.
    fn complete(
        &mut self,
        p: usize,
        prepared: PreparedSync,
        response: &SyncResponse,
    ) -> Result<SyncReport, SimError> {
        let report = self.phones[p]
            .store()?
            .complete_sync(prepared, response)
            .map_err(SimError::from_display("complete sync"))?;
        self.log(format!(
            "p{p} completed: {} docs, {} delivered, {} pending, again: {}",
            report.docs_sent,
            report.events_delivered,
            report.pending_events,
            report.needs_another_round
        ));
        self.check_phone(p)?;
        Ok(report)
    }

    fn deliver(&mut self, p: usize, body: &[u8]) -> Result<SyncAnswer, SimError> {
        self.stats.syncs_delivered += 1;
        self.server.sync(&self.rt, &self.phones[p].credential, body)
    }

    /// Delivers the newest request phone `p` prepared: no later one exists, so it must apply.
    fn deliver_fresh(&mut self, p: usize, body: &[u8]) -> Result<SyncResponse, SimError> {
        match self.deliver(p, body)? {
            SyncAnswer::Applied(response) => Ok(response),
            SyncAnswer::Replayed { last_seq } => Err(SimError::invariant(format!(
                "phone {p}'s newest request was refused as a replay (last accepted: {last_seq})"
            ))),
        }
    }

    /// The phone saw its request refused as a replay: as the sync client does, it moves its
    /// counter past the server's (a no-op unless its store fell behind) and tries afresh later.
    fn replayed(&mut self, p: usize, last_seq: u64) -> Result<(), SimError> {
        self.phones[p]
            .store()?
            .advance_request_seq(last_seq)
            .map_err(SimError::from_display("advance request_seq"))
    }

    /// One sync attempt of phone `p` through the faulty network.
    fn sync_attempt(&mut self, p: usize) -> Result<(), SimError> {
        if self.phones[p].waiting.is_some() {
            self.phones[p].waiting = None;
            self.log(format!("p{p} gives up waiting"));
            return self.sync_failed(p, "timed out");
        }
        let prepared = self.phones[p]
            .store()?
            .prepare_sync()
            .map_err(SimError::from_display("prepare sync"))?;
        let body = prepared
            .request
            .encode()
            .map_err(SimError::from_display("encode"))?;
        if self.step < self.phones[p].offline_until {
            self.stats.offline_attempts += 1;
            self.log(format!("p{p} sync: offline"));
            return self.sync_failed(p, "offline");
        }
        let roll = self.rng.random_range(0..100);
        match roll {
            0..10 => {
                self.stats.requests_dropped += 1;
                self.log(format!("p{p} sync: request lost"));
                self.sync_failed(p, "connection reset")
            }
            10..25 => {
                let id = self.next_held;
                self.next_held += 1;
                self.held.push(Held { id, phone: p, body });
                self.phones[p].waiting = Some(Waiting { prepared, held: id });
                self.stats.requests_held += 1;
                self.log(format!("p{p} sync: request held as {id}"));
                Ok(())
            }
            25..31 => {
                let sent = self.chance(0.5);
                self.log(format!("p{p} sync: crash while waiting (sent: {sent})"));
                if sent {
                    self.deliver_fresh(p, &body)?;
                }
                drop(prepared);
                self.crash(p, "between prepare and complete")
            }
            _ => {
                let response = self.deliver_fresh(p, &body)?;
                if self.chance(0.1) {
                    self.stats.requests_duplicated += 1;
                    let last_seq = match self.deliver(p, &body)? {
                        SyncAnswer::Replayed { last_seq } => last_seq,
                        SyncAnswer::Applied(_) => {
                            return Err(SimError::invariant(format!(
                                "phone {p}: the same request was applied twice"
                            )));
                        }
                    };
                    if self.chance(0.5) {
                        // The first answer was lost; the phone got the refusal of the copy.
                        self.log(format!(
                            "p{p} sync: duplicated, the copy's refusal answered"
                        ));
                        return self.replayed(p, last_seq);
                    }
                    self.log(format!("p{p} sync: duplicated"));
                }
                match self.rng.random_range(0..100) {
                    0..10 => {
                        self.stats.responses_dropped += 1;
                        self.log(format!("p{p} sync: answer lost"));
                        self.sync_failed(p, "connection reset")
                    }
                    10..17 => {
                        drop(prepared);
                        self.crash(p, "after the server answered")
                    }
                    _ => self.complete(p, prepared, &response).map(|_| ()),
                }
            }
        }
    }

    /// The network delivers (or loses) one request it held back.
    fn network_step(&mut self) -> Result<(), SimError> {
        if self.held.is_empty() {
            self.log("network idle");
            return Ok(());
        }
        let i = self.rng.random_range(0..self.held.len());
        let lose = self.chance(0.2);
        let held = self.held.remove(i);
        if lose {
            self.log(format!("network loses {}", held.id));
            return Ok(());
        }
        self.deliver_held(held)
    }

    fn deliver_held(&mut self, held: Held) -> Result<(), SimError> {
        let p = held.phone;
        let waits = self.phones[p]
            .waiting
            .as_ref()
            .is_some_and(|w| w.held == held.id);
        if !waits {
            // The phone gave up on it (or crashed) and may have sent newer requests since: then
            // it is refused as a replay, else applied; nobody reads the answer.
            let answer = self.deliver(p, &held.body)?;
            self.stats.delivered_late += 1;
            let outcome = match answer {
                SyncAnswer::Applied(_) => "applied",
                SyncAnswer::Replayed { .. } => "refused as a replay",
            };
            self.log(format!(
                "network delivers {} late to p{p}: {outcome}",
                held.id
            ));
            return Ok(());
        }
        let response = self.deliver_fresh(p, &held.body)?;
        self.log(format!("network delivers {} to p{p}", held.id));
        let Some(waiting) = self.phones[p].waiting.take() else {
            return Ok(());
        };
        self.complete(p, waiting.prepared, &response).map(|_| ())
    }

    fn control_room_step(&mut self) -> Result<(), SimError> {
        match self.rng.random_range(0..100) {
            0..65 => self.operator_incident_action(),
            65..93 => self.operator_alarm_ack(),
            _ => self.publish_config(),
        }
    }

    fn operator_incident_action(&mut self) -> Result<(), SimError> {
        let uri = format!("/api/v1/sites/{SITE}/incidents?limit=1000");
        let (status, list) = self.server.get_json(&self.rt, self.server.admin(), &uri)?;
        if status != StatusCode::OK {
            return Err(SimError::invariant(format!("GET {uri}: {status} {list}")));
        }
        let mut ids: Vec<String> = list["incidents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        if ids.is_empty() {
            self.log("control room: no incident");
            return Ok(());
        }
        let id = ids[self.rng.random_range(0..ids.len())].clone();
        let operator = self.rng.random_range(0..OPERATORS.len());
        let body = match self.rng.random_range(0..100) {
            0..10 => json!({"action": "acknowledge"}),
            10..20 => json!({"action": "dispatch"}),
            20..30 => json!({"action": "resolve"}),
            30..40 => json!({"action": "close"}),
            40..50 => json!({"action": "reopen"}),
            50..62 => {
                let to = self.chance(0.8).then(|| self.guard().to_string());
                json!({"action": "assign", "to": to})
            }
            62..72 => {
                let severity = SEVERITIES[self.rng.random_range(0..SEVERITIES.len())];
                json!({"action": "set_severity", "severity": severity.to_string()})
            }
            _ => json!({"action": "add_note", "text": self.words()}),
        };
        let uri = format!("/api/v1/sites/{SITE}/incidents/{id}/actions");
        let token = self.server.operator(operator)?;
        let (status, answer) = self
            .server
            .send_json(&self.rt, token, "POST", &uri, &body)?;
        let outcome = match status {
            StatusCode::OK => {
                self.stats.operator_actions += 1;
                "ok"
            }
            StatusCode::CONFLICT if answer["error"] == "action_not_allowed" => "refused",
            _ => {
                return Err(SimError::invariant(format!(
                    "POST {uri} {body}: {status} {answer}"
                )));
            }
        };
        self.log(format!(
            "control room: {} {} on {id}: {outcome}",
            OPERATORS[operator], body["action"]
        ));
        Ok(())
    }

    fn operator_alarm_ack(&mut self) -> Result<(), SimError> {
        let mut panics: Vec<String> = self
            .server
            .feed(&self.rt, "&kind=panic")?
            .iter()
            .filter_map(|e| e["id"].as_str().map(str::to_owned))
            .collect();
        panics.sort();
        if panics.is_empty() {
            self.log("control room: no alarm");
            return Ok(());
        }
        let event = panics[self.rng.random_range(0..panics.len())].clone();
        let operator = self.rng.random_range(0..OPERATORS.len());
        let by = OPERATORS[operator];
        let uri = format!("/api/v1/sites/{SITE}/alarms/{event}/acknowledge");
        let token = self.server.operator(operator)?;
        let (status, answer) = self
            .server
            .send_json(&self.rt, token, "POST", &uri, &json!({}))?;
        if status != StatusCode::OK {
            return Err(SimError::invariant(format!(
                "POST {uri}: {status} {answer}"
            )));
        }
        let id: EventId = event
            .parse()
            .map_err(SimError::from_display("alarm event id"))?;
        let first = self.acks.entry(id).or_insert_with(|| by.to_owned()).clone();
        if answer["by"] != first.as_str() {
            return Err(SimError::invariant(format!(
                "alarm {event} was first acknowledged by {first}, the server says {}",
                answer["by"]
            )));
        }
        self.stats.alarm_acks += 1;
        self.log(format!("control room: {by} acknowledges {event}"));
        Ok(())
    }

    fn publish_config(&mut self) -> Result<(), SimError> {
        let n = self.rng.random_range(1..=6);
        let checkpoints: Vec<serde_json::Value> = (1..=n)
            .map(|i| {
                json!({"id": format!("cp-{i}"), "name": format!("Checkpoint {i}"),
                       "tags": [format!("tag-{i}")], "location": null, "radius_m": null})
            })
            .collect();
        let body = json!({"checkpoints": checkpoints, "tours": [], "post_orders": [],
                          "base_version": self.config_version});
        let uri = format!("/api/v1/sites/{SITE}/config");
        let admin = self.server.admin();
        let (status, answer) = self.server.send_json(&self.rt, admin, "PUT", &uri, &body)?;
        if status != StatusCode::OK {
            return Err(SimError::invariant(format!("PUT {uri}: {status} {answer}")));
        }
        self.config_version += 1;
        if answer["version"] != self.config_version {
            return Err(SimError::invariant(format!(
                "published configuration version {} is stored as {}",
                self.config_version, answer["version"]
            )));
        }
        self.stats.configs += 1;
        self.log(format!(
            "control room: configuration {}",
            self.config_version
        ));
        Ok(())
    }

    /// One sync of phone `p` over a network that works.
    fn reliable_sync(&mut self, p: usize) -> Result<SyncReport, SimError> {
        let prepared = self.phones[p]
            .store()?
            .prepare_sync()
            .map_err(SimError::from_display("prepare sync"))?;
        let body = prepared
            .request
            .encode()
            .map_err(SimError::from_display("encode"))?;
        let response = self.deliver_fresh(p, &body)?;
        self.complete(p, prepared, &response)
    }

    /// The network heals: held requests arrive, phones stop waiting, and every phone syncs until
    /// it has nothing pending, then once more so that it has what the others sent meanwhile.
    fn heal(&mut self) -> Result<(), SimError> {
        self.log("heal");
        for phone in &mut self.phones {
            phone.offline_until = 0;
        }
        while !self.held.is_empty() {
            let i = self.rng.random_range(0..self.held.len());
            let held = self.held.remove(i);
            self.deliver_held(held)?;
        }
        for p in 0..self.phones.len() {
            if self.phones[p].waiting.take().is_some() {
                self.sync_failed(p, "timed out")?;
            }
        }
        for p in 0..self.phones.len() {
            let mut settled = false;
            for _ in 0..HEAL_ROUNDS {
                let report = self.reliable_sync(p)?;
                let incidents_pending = self.phones[p]
                    .store()?
                    .incidents()
                    .map_err(SimError::from_display("incidents"))?
                    .iter()
                    .any(|i| i.pending);
                if report.pending_events == 0 && !report.needs_another_round && !incidents_pending {
                    settled = true;
                    break;
                }
            }
            if !settled {
                return Err(SimError::invariant(format!(
                    "phone {p} still has something pending after {HEAL_ROUNDS} syncs on a \
                     healed network"
                )));
            }
        }
        for p in 0..self.phones.len() {
            self.reliable_sync(p)?;
        }
        Ok(())
    }
}

fn action_name(action: &IncidentAction) -> &'static str {
    match action {
        IncidentAction::Acknowledge => "acknowledge",
        IncidentAction::Dispatch => "dispatch",
        IncidentAction::Resolve => "resolve",
        IncidentAction::Close => "close",
        IncidentAction::Reopen => "reopen",
        IncidentAction::Assign(_) => "assign",
        IncidentAction::SetSeverity(_) => "set_severity",
        IncidentAction::AddNote(_) => "add_note",
        IncidentAction::Attach(_) => "attach",
    }
}

/// A UUIDv7 at simulated time `ms` with random bits from the run's PRNG, like the ids a phone
/// makes, but replayable.
fn random_uuid(rng: &mut ChaCha8Rng, ms: i64) -> Uuid {
    let mut bytes = [0u8; 10];
    rng.fill(&mut bytes);
    uuid::Builder::from_unix_timestamp_millis(u64::try_from(ms).unwrap_or(0), &bytes).into_uuid()
}
