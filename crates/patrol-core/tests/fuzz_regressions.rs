//! Replays the fuzzers' kept inputs on the stable toolchain, through the very code the fuzz
//! targets run (their harness files are compiled in here): every crash the fuzzers found, kept
//! under `fuzz/regressions/<target>/`, and the seed corpus under `fuzz/seeds/<target>/`.
//!
//! A regression file is named `<expected class>-<what it was>`; the class is what the harness
//! returns for it: for `sync_decode` the decode's class (`malformed`, `bad_magic`, …), for
//! `chunk_ingest` the outcome of the input's last push (`accepted` or a rejection code).
//!
//! `write_seed_corpus` (ignored) writes the seed corpus anew, from messages built with the
//! public encoders: run it after a protocol change with
//! `cargo test -p patrol-core --test fuzz_regressions -- --ignored write_seed_corpus`.

#[path = "../../../fuzz/harness/corpus.rs"]
mod corpus;
#[path = "../../../fuzz/harness/decode.rs"]
mod decode;
#[path = "../../../fuzz/harness/ingest.rs"]
mod ingest;

use std::path::{Path, PathBuf};

use automerge::ReadDoc;
use patrol_core::merge::plan_push;
use patrol_core::protocol::{
    AlarmAck, ConfigUpdate, CountedScan, DocOutcome, DocPush, DocRef, DocResult, RejectCode,
    SyncRequest, SyncResponse, TourScans, TourStatus, to_wire,
};
use patrol_core::{
    CheckpointId, DeviceTime, EventBody, EventId, EventRecord, GuardId, Hlc, Location, Scan,
    ScanMethod, ShiftLog, ShiftMeta,
};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;
/// Named inputs: `(file name, bytes)`.
type Files = Vec<(String, Vec<u8>)>;
/// Seeds: `(target, name, bytes)`.
type Seeds = Vec<(&'static str, String, Vec<u8>)>;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, by name, with their contents.
fn files(kind: &str, target: &str) -> TestResult<Files> {
    Ok(corpus::files(&fuzz_dir().join(kind).join(target))?)
}

fn expected_class(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

#[test]
fn sync_decode_regressions_replay() -> TestResult {
    for (name, data) in files("regressions", "sync_decode")? {
        assert_eq!(decode::run(&data), expected_class(&name), "{name}");
    }
    for (name, data) in files("seeds", "sync_decode")? {
        decode::run(&data);
        assert!(
            decode::class(&SyncRequest::decode(&data)) == "ok"
                || decode::class(&SyncResponse::decode(&data)) == "ok",
            "seed {name} is no longer a valid message: run write_seed_corpus"
        );
    }
    Ok(())
}

#[test]
fn chunk_ingest_regressions_replay() -> TestResult {
    for (name, data) in files("regressions", "chunk_ingest")? {
        let classes = ingest::run(&data);
        let last = classes.rsplit(',').next().unwrap_or_default();
        assert_eq!(last, expected_class(&name), "{name}: {classes}");
    }
    for (name, data) in files("seeds", "chunk_ingest")? {
        let classes = ingest::run(&data);
        assert!(
            classes.split(',').all(|c| c == "accepted"),
            "seed {name}: {classes}"
        );
    }
    Ok(())
}

fn record(log: &mut ShiftLog, seq: u64, body: EventBody) -> TestResult {
    let wall_ms = 1_740_866_400_000 + 60_000 * seq as i64;
    let record = EventRecord {
        seq,
        time: DeviceTime {
            wall_ms,
            boot_id: uuid::Uuid::from_u128(7),
            mono_ms: 1_000 * seq,
            hlc: Hlc {
                wall_ms: wall_ms as u64,
                counter: 0,
            },
        },
        config_version: 1,
        body,
    };
    log.record(
        EventId(uuid::Uuid::from_u128(0x1000 + u128::from(seq))),
        &record,
    )?;
    Ok(())
}

fn scan(n: u64) -> Result<EventBody, Box<dyn std::error::Error>> {
    Ok(EventBody::CheckpointScanned(Scan {
        checkpoint: CheckpointId::new(format!("cp-{n}"))?,
        method: ScanMethod::Nfc {
            tag: format!("04:A2:{n:02X}"),
        },
        location: Some(Location {
            lat: 51.5,
            lon: -0.12,
            accuracy_m: Some(8.0),
        }),
        note: n.is_multiple_of(2).then(|| "door locked".to_owned()),
    }))
}

/// The fuzz owner's shift log, with a start and `events - 1` scans.
fn shift_log(events: u64) -> Result<ShiftLog, Box<dyn std::error::Error>> {
    let owner = ingest::owner();
    let (mut log, _) = ShiftLog::create(ShiftMeta {
        site: owner.site,
        device: owner.device,
        shift: owner.shift,
        guard: GuardId::new("guard-1")?,
    })?;
    record(&mut log, 1, EventBody::ShiftStarted)?;
    for seq in 2..=events {
        record(&mut log, seq, scan(seq)?)?;
    }
    Ok(log)
}

fn request(docs: Vec<DocPush>) -> SyncRequest {
    let owner = ingest::owner();
    SyncRequest {
        site: owner.site,
        device: owner.device,
        request_seq: 1,
        device_time_ms: 1_740_866_400_000,
        hlc: Hlc {
            wall_ms: 1_740_866_400_000,
            counter: 3,
        },
        pending_events: docs.iter().map(|d| u64::from(d.events)).sum(),
        docs,
        guard: GuardId::new("guard-1").ok(),
        config_version: 3,
        awaiting_ack: vec![EventId(uuid::Uuid::from_u128(0x1001))],
    }
}

/// The seed corpus: messages and pushes as a phone and a server really send them.
fn seeds() -> TestResult<Seeds> {
    let mut out = Vec::new();

    // Pushes of one log over three syncs: a first push, one after an acknowledgement, a repeat,
    // and one whose base the server lacks.
    let mut log = shift_log(3)?;
    let first = plan_push(&mut log, &[])?;
    let acked = log.heads();
    for seq in 4..=6 {
        record(&mut log, seq, scan(seq)?)?;
    }
    let second = plan_push(&mut log, &acked)?;
    record(
        &mut log,
        7,
        EventBody::ShiftEnded {
            note: Some("all quiet".into()),
        },
    )?;
    let everything = plan_push(&mut log, &[])?;

    let ingest_seeds = [
        ("first-push", vec![first.changes.clone()]),
        (
            "three-syncs",
            vec![
                first.changes.clone(),
                second.changes.clone(),
                second.changes.clone(),
            ],
        ),
        ("whole-shift", vec![everything.changes.clone()]),
        (
            "empty-then-all",
            vec![Vec::new(), everything.changes.clone()],
        ),
    ];
    for (name, pushes) in ingest_seeds {
        out.push(("chunk_ingest", name.to_owned(), ingest::frame(&pushes)));
    }

    let requests = [
        ("heads-only", request(vec![])),
        ("first-push", request(vec![first.clone()])),
        ("second-push", request(vec![second.clone()])),
        (
            "two-docs",
            request(vec![
                first.clone(),
                DocPush {
                    doc: DocRef::ShiftLog(patrol_core::ShiftId(uuid::Uuid::from_u128(9))),
                    have: vec![[3; 32]],
                    changes: Vec::new(),
                    events: 0,
                    signature: None,
                },
            ]),
        ),
        ("whole-shift", request(vec![everything.clone()])),
    ];
    for (name, req) in &requests {
        let bytes = req.encode()?;
        out.push(("sync_decode", format!("request-{name}"), bytes.clone()));
        // Shape 1: the harness gives the request its next sequence number, so it merges.
        let mut http = vec![1u8];
        http.extend_from_slice(&bytes);
        out.push(("http_body", format!("sync-{name}"), http));
    }
    // Sent as is: the first such request is applied, a repeat is refused as a replay (409).
    let mut http_raw = vec![0u8];
    http_raw.extend_from_slice(&requests[1].1.encode()?);
    out.push(("http_body", "sync-raw".into(), http_raw));
    let mut unauthenticated = vec![8u8];
    unauthenticated.extend_from_slice(&requests[1].1.encode()?);
    out.push(("http_body", "unauthenticated-sync".into(), unauthenticated));
    let mut http_ct = b"\x02application/x-patrol-sync; charset=binary\n".to_vec();
    http_ct.extend_from_slice(&requests[1].1.encode()?);
    out.push(("http_body", "sync-content-type".into(), http_ct));
    for (name, bytes) in [
        ("feed", &b"\x03site-1\nafter=0&limit=10"[..]),
        ("feed-cursor", b"\x03site-1\nafter=3"),
        ("devices", b"\x04site-1"),
        ("json-post", b"\x05api/v1/sync\n{\"site\":\"site-1\"}"),
        ("healthz", b"\x07healthz"),
        ("metrics", b"\x07metrics"),
        ("stream", b"\x07api/v1/sites/site-1/stream?after=0"),
        ("incidents", b"\x07api/v1/sites/site-1/incidents"),
        (
            "incident-action",
            b"\x05api/v1/sites/site-1/incidents/0195b000-0000-7000-8000-000000000001/actions\n\
              {\"action\":\"acknowledge\",\"by\":\"operator-1\"}",
        ),
        (
            "config-put",
            b"\x06api/v1/sites/site-1/config\n\
              {\"checkpoints\":[],\"tours\":[],\"post_orders\":[],\"base_version\":0}",
        ),
        ("config-get", b"\x07api/v1/sites/site-1/config"),
        (
            "alarm-ack",
            b"\x05api/v1/sites/site-1/alarms/00000000-0000-0000-0000-000000001001/acknowledge\n\
              {\"by\":\"operator-1\"}",
        ),
    ] {
        out.push(("http_body", name.to_owned(), bytes.to_vec()));
    }

    let responses = [
        (
            "accepted",
            SyncResponse {
                server_time_ms: 1_740_866_401_000,
                docs: vec![DocResult {
                    doc: first.doc,
                    outcome: DocOutcome::Accepted {
                        heads: to_wire(&acked),
                        new_events: 3,
                        missing_deps: false,
                    },
                }],
                config: Some(ConfigUpdate {
                    version: 4,
                    config: vec![1, 0, 0],
                }),
                incidents: Vec::new(),
                alarm_acks: vec![AlarmAck {
                    event: EventId(uuid::Uuid::from_u128(0x1001)),
                    by: "operator-1".into(),
                    at_ms: 1_740_866_401_000,
                }],
                tours: None,
            },
        ),
        (
            "rejected",
            SyncResponse {
                server_time_ms: 1_740_866_401_000,
                docs: vec![DocResult {
                    doc: first.doc,
                    outcome: DocOutcome::Rejected {
                        code: RejectCode::ForeignActor,
                        message: "change made by another device".into(),
                    },
                }],
                config: None,
                incidents: Vec::new(),
                alarm_acks: Vec::new(),
                tours: None,
            },
        ),
        (
            "tours",
            SyncResponse {
                server_time_ms: 1_740_866_401_000,
                docs: Vec::new(),
                config: None,
                incidents: Vec::new(),
                alarm_acks: Vec::new(),
                tours: Some(TourStatus {
                    tours: vec![TourScans {
                        tour: "night".into(),
                        scans: vec![
                            CountedScan {
                                checkpoint: CheckpointId::new("cp-1")?,
                                at_ms: 1_740_866_100_000,
                                event: EventId(uuid::Uuid::from_u128(0x2001)),
                            },
                            CountedScan {
                                checkpoint: CheckpointId::new("cp-2")?,
                                at_ms: 1_740_866_200_000,
                                event: EventId(uuid::Uuid::from_u128(0x2002)),
                            },
                        ],
                    }],
                }),
            },
        ),
    ];
    for (name, resp) in responses {
        out.push(("sync_decode", format!("response-{name}"), resp.encode()?));
    }
    Ok(out)
}

#[test]
fn seeds_are_valid_inputs() -> TestResult {
    for (target, name, data) in seeds()? {
        match target {
            "sync_decode" => {
                let request = decode::class(&SyncRequest::decode(&data));
                let response = decode::class(&SyncResponse::decode(&data));
                assert!(request == "ok" || response == "ok", "{name}");
                decode::run(&data);
            }
            "chunk_ingest" => {
                let classes = ingest::run(&data);
                assert!(
                    classes.split(',').all(|c| c == "accepted"),
                    "{name}: {classes}"
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// The input that made the `chunk_ingest` harness panic ("event reported new twice") before
/// ingestion refused a second put of a recorded event: a first push, then a change that puts the
/// same event id again naming no predecessor (built by hand, as only a forged device sends it).
fn repeated_put() -> TestResult<Vec<u8>> {
    let mut log = shift_log(2)?;
    let first = plan_push(&mut log, &[])?;
    let mut doc = automerge::Automerge::new();
    doc.apply_changes(patrol_core::merge::parse_bundle(&first.changes)?)?;
    let heads = doc.get_heads();
    let latest = doc.get_change_by_hash(&heads[0]).ok_or("no head")?.clone();
    let mut forged = latest.decode();
    forged.seq += 1;
    forged.start_op = std::num::NonZeroU64::new(forged.start_op.get() + 1).ok_or("overflow")?;
    forged.deps = heads;
    forged.hash = None;
    let op = forged.operations.first_mut().ok_or("no operation")?;
    op.action = automerge::legacy::OpType::Put(automerge::ScalarValue::Bytes(
        EventRecord::decode(match &op.action {
            automerge::legacy::OpType::Put(automerge::ScalarValue::Bytes(b)) => b,
            _ => return Err("not an event put".into()),
        })
        .map(|mut r| {
            r.body = EventBody::Note {
                text: "nothing happened".into(),
            };
            r
        })?
        .encode()?,
    ));
    let forged = automerge::Change::from(forged);
    let hash = forged.hash();
    doc.apply_changes([forged])?;
    let second = doc.bundle([hash])?.bytes().to_vec();
    Ok(ingest::frame(&[first.changes, second]))
}

#[test]
fn repeated_put_regression_is_kept() -> TestResult {
    let kept = files("regressions", "chunk_ingest")?;
    assert!(
        kept.iter()
            .any(|(name, _)| name.starts_with("immutable_event-repeated-put")),
        "run write_seed_corpus"
    );
    assert_eq!(ingest::run(&repeated_put()?), "accepted,immutable_event");
    Ok(())
}

#[test]
#[ignore = "writes the seed corpus under fuzz/seeds; run after a protocol change"]
fn write_seed_corpus() -> TestResult {
    for (target, name, data) in seeds()? {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)?;
    }
    let dir = fuzz_dir().join("regressions").join("chunk_ingest");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("immutable_event-repeated-put"), repeated_put()?)?;
    Ok(())
}
