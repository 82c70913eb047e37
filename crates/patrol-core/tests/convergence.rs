//! Property: whatever the network does to sync rounds (drop, duplicate, reorder, delay) and
//! whenever devices crash and reload, once the network behaves every device's events reach the
//! server exactly once, nothing a device was told is delivered is ever missing, and the server's
//! copy of each log equals the device's.

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, ChangeHash};
use patrol_core::merge::{Owner, acknowledge, ingest_shift_log, plan_push};
use patrol_core::protocol::{DocOutcome, DocPush, DocRef, to_wire};
use patrol_core::{
    DeviceId, DeviceTime, EventBody, EventId, EventRecord, GuardId, Hlc, ShiftId, ShiftLog,
    ShiftMeta, SiteId,
};
use proptest::prelude::*;
use uuid::Uuid;

struct Device {
    id: DeviceId,
    shift: ShiftId,
    /// What survives a crash: persisted change bytes and the acknowledged heads.
    persisted: Vec<u8>,
    acked: Vec<ChangeHash>,
    log: ShiftLog,
    hash_of: HashMap<EventId, ChangeHash>,
    recorded: Vec<EventId>,
    delivered: HashSet<EventId>,
    seq: u64,
}

impl Device {
    fn new(n: u32) -> Device {
        let id = DeviceId(Uuid::from_u128(0x1000 + u128::from(n)));
        let shift = ShiftId(Uuid::from_u128(0x2000 + u128::from(n)));
        let meta = ShiftMeta {
            site: site(),
            device: id,
            shift,
            guard: GuardId::new(format!("guard-{n}")).unwrap_or_else(|e| panic!("{e}")),
        };
        let (log, first) = ShiftLog::create(meta).unwrap_or_else(|e| panic!("{e}"));
        Device {
            id,
            shift,
            persisted: first.bytes,
            acked: Vec::new(),
            log,
            hash_of: HashMap::new(),
            recorded: Vec::new(),
            delivered: HashSet::new(),
            seq: 0,
        }
    }

    fn record(&mut self) {
        self.seq += 1;
        let id = EventId(Uuid::from_u128(
            (u128::from(self.id.0.as_u128() as u32) << 64) + u128::from(self.seq),
        ));
        let record = EventRecord {
            seq: self.seq,
            time: DeviceTime {
                wall_ms: 1_000 * self.seq as i64,
                boot_id: Uuid::nil(),
                mono_ms: self.seq,
                hlc: Hlc {
                    wall_ms: self.seq,
                    counter: 0,
                },
            },
            config_version: 1,
            body: EventBody::Note {
                text: format!("note {}", self.seq),
            },
        };
        let change = self
            .log
            .record(id, &record)
            .unwrap_or_else(|e| panic!("{e}"));
        let change = change.unwrap_or_else(|| panic!("new event made no change"));
        self.persisted.extend_from_slice(&change.bytes);
        self.hash_of.insert(id, change.hash);
        self.recorded.push(id);
    }

    fn crash(&mut self) {
        self.log = ShiftLog::load(&self.persisted, self.id).unwrap_or_else(|e| panic!("{e}"));
    }

    fn push(&mut self) -> DocPush {
        plan_push(&mut self.log, &self.acked).unwrap_or_else(|e| panic!("{e}"))
    }

    fn on_response(&mut self, outcome: &DocOutcome) {
        let DocOutcome::Accepted { heads, .. } = outcome else {
            panic!("server rejected a well-formed push: {outcome:?}");
        };
        let ack = acknowledge(&mut self.log, heads);
        let unacked: HashSet<ChangeHash> = ack.unacked.into_iter().collect();
        let covered: Vec<bool> = self
            .recorded
            .iter()
            .map(|id| !unacked.contains(&self.hash_of[id]))
            .collect();
        // What the heads cover is exactly a prefix of the log, of the length the ack reports.
        let prefix: Vec<bool> = (0..self.recorded.len())
            .map(|i| i < ack.delivered_events)
            .collect();
        assert_eq!(
            covered, prefix,
            "delivered events are not the reported prefix"
        );
        for (id, covered) in self.recorded.iter().zip(covered) {
            if covered {
                self.delivered.insert(*id);
            }
        }
        self.acked = ack.acked;
    }
}

fn site() -> SiteId {
    SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Default)]
struct Server {
    /// Persisted chunks per shift log; each request loads the log afresh, as the real server does.
    chunks: HashMap<ShiftId, Vec<u8>>,
    feed: Vec<EventId>,
}

impl Server {
    fn handle(&mut self, device: DeviceId, shift: ShiftId, push: &DocPush) -> DocOutcome {
        let stored = self.chunks.entry(shift).or_default();
        let mut doc = Automerge::load(stored).unwrap_or_else(|e| panic!("{e}"));
        let owner = Owner {
            site: site(),
            device,
            shift,
        };
        match ingest_shift_log(&mut doc, &owner, &push.changes) {
            Ok(ingested) => {
                for mut change in ingested.applied {
                    stored.extend_from_slice(&change.bytes());
                }
                self.feed
                    .extend(ingested.new_events.iter().map(|(id, _)| *id));
                DocOutcome::Accepted {
                    heads: to_wire(&ingested.heads),
                    new_events: ingested.new_events.len() as u32,
                    missing_deps: ingested.missing_deps,
                }
            }
            Err(r) => DocOutcome::Rejected {
                code: r.code,
                message: r.message,
            },
        }
    }

    fn check_delivered(&self, devices: &[Device]) {
        let on_server: HashSet<EventId> = self.feed.iter().copied().collect();
        assert_eq!(
            on_server.len(),
            self.feed.len(),
            "an event reached the feed twice"
        );
        for d in devices {
            for id in &d.delivered {
                assert!(
                    on_server.contains(id),
                    "event {id} marked delivered but not on the server"
                );
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Record(usize),
    Send(usize),
    Deliver(usize),
    Duplicate(usize),
    DropRequest(usize),
    Respond(usize),
    DropResponse(usize),
    Crash(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..3).prop_map(Step::Record),
        3 => (0usize..3).prop_map(Step::Send),
        3 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Duplicate),
        1 => any::<usize>().prop_map(Step::DropRequest),
        3 => any::<usize>().prop_map(Step::Respond),
        1 => any::<usize>().prop_map(Step::DropResponse),
        1 => (0usize..3).prop_map(Step::Crash),
    ]
}

fn run(steps: &[Step]) {
    let mut devices: Vec<Device> = (1..=3).map(Device::new).collect();
    let mut server = Server::default();
    let mut requests: Vec<(usize, DocPush)> = Vec::new();
    let mut responses: Vec<(usize, DocOutcome)> = Vec::new();

    for s in steps {
        match *s {
            Step::Record(d) => devices[d].record(),
            Step::Send(d) => {
                let push = devices[d].push();
                requests.push((d, push));
            }
            Step::Deliver(k) | Step::Duplicate(k) if !requests.is_empty() => {
                let k = k % requests.len();
                let (d, push) = if matches!(s, Step::Deliver(_)) {
                    requests.remove(k)
                } else {
                    requests[k].clone()
                };
                assert_eq!(push.doc, DocRef::ShiftLog(devices[d].shift));
                let outcome = server.handle(devices[d].id, devices[d].shift, &push);
                responses.push((d, outcome));
            }
            Step::DropRequest(k) if !requests.is_empty() => {
                requests.remove(k % requests.len());
            }
            Step::Respond(k) if !responses.is_empty() => {
                let (d, outcome) = responses.remove(k % responses.len());
                devices[d].on_response(&outcome);
            }
            Step::DropResponse(k) if !responses.is_empty() => {
                responses.remove(k % responses.len());
            }
            Step::Crash(d) => devices[d].crash(),
            _ => {}
        }
        server.check_delivered(&devices);
    }

    // The network heals: each device syncs until it has nothing unacknowledged; a few rounds
    // suffice (one to learn the server lacks a dependency, one to send everything).
    for device in &mut devices {
        for _ in 0..3 {
            let push = device.push();
            let outcome = server.handle(device.id, device.shift, &push);
            device.on_response(&outcome);
        }
    }
    server.check_delivered(&devices);
    let mut all = HashSet::new();
    for d in &mut devices {
        assert_eq!(
            d.delivered.len(),
            d.recorded.len(),
            "device still has undelivered events"
        );
        all.extend(d.recorded.iter().copied());
        let mut server_doc =
            Automerge::load(&server.chunks[&d.shift]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            server_doc.get_heads(),
            d.log.heads(),
            "server and device copies differ"
        );
        let _ = &mut server_doc;
    }
    assert_eq!(server.feed.len(), all.len());
    assert_eq!(server.feed.iter().copied().collect::<HashSet<_>>(), all);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_schedule_converges_without_loss_or_duplicates(steps in prop::collection::vec(step(), 0..120)) {
        run(&steps);
    }
}

#[test]
fn a_push_whose_base_the_server_lost_is_resent_whole() {
    let mut device = Device::new(1);
    let mut server = Server::default();
    device.record();
    let push = device.push();
    let outcome = server.handle(device.id, device.shift, &push);
    device.on_response(&outcome);
    // The server loses everything (restored from an old backup).
    server = Server::default();
    device.record();
    let push = device.push();
    let outcome = server.handle(device.id, device.shift, &push);
    assert!(matches!(
        outcome,
        DocOutcome::Accepted {
            missing_deps: true,
            ..
        }
    ));
    device.on_response(&outcome);
    let push = device.push();
    let outcome = server.handle(device.id, device.shift, &push);
    device.on_response(&outcome);
    assert_eq!(server.feed.len(), 2);
    assert_eq!(device.delivered.len(), 2);
}
