//! The device store as an app uses it: record offline, reopen, sync rounds whose answers are
//! lost or repeated. The server side of a round is patrol-core's real merge on an in-memory
//! document, so delivery is decided exactly as against the real server.

use patrol_core::evidence::DeviceKey;
use std::collections::HashMap;

use automerge::Automerge;
use patrol_core::flags::EventFlag;
use patrol_core::incident::{IncidentAction, IncidentDoc, IncidentStatus, Party};
use patrol_core::merge::{Owner, ingest_incident, ingest_shift_log};
use patrol_core::protocol::{
    AlarmAck, ConfigUpdate, CountedScan, DocOutcome, DocPush, DocRef, DocResult, IncidentUpdate,
    SyncRequest, SyncResponse, TourScans, TourStatus, from_wire, to_wire,
};
use patrol_core::siteconfig::{
    Checkpoint, CheckpointState, SiteConfig, SiteZone, Tour, UNKNOWN_CHECKPOINT, Window,
};
use patrol_core::{
    CheckpointId, EventBody, EventId, GuardId, IncidentCategory, IncidentId, IncidentReport,
    Location, Scan, ScanMethod, Severity, ShiftId, SiteId,
};
use patrol_mobile::clock::ManualClock;
use patrol_mobile::{AlarmState, DeviceStore, Enrollment, Error, RecordOptions, StoreOptions};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn site() -> SiteId {
    SiteId::new("site-1").unwrap_or_else(|e| panic!("{e}"))
}

fn guard() -> GuardId {
    GuardId::new("guard-7").unwrap_or_else(|e| panic!("{e}"))
}

fn scan(cp: &str) -> Scan {
    Scan {
        checkpoint: CheckpointId::new(cp).unwrap_or_else(|e| panic!("{e}")),
        method: ScanMethod::Nfc {
            tag: format!("tag-{cp}"),
        },
        location: Some(Location {
            lat: 51.5,
            lon: -0.12,
            accuracy_m: Some(12.0),
        }),
        note: None,
    }
}

/// The server's half of a round, on patrol-core's merge, keeping applied changes as its store.
#[derive(Default)]
struct Server {
    chunks: HashMap<ShiftId, Vec<u8>>,
    events: Vec<EventId>,
    incidents: HashMap<IncidentId, IncidentDoc>,
    config: Option<SiteConfig>,
    acks: HashMap<EventId, String>,
    /// What its compliance counted, sent with every answer.
    tours: Option<TourStatus>,
}

/// The fake server's clock: every answer says it is this time.
const SERVER_NOW_MS: i64 = 1_800_000_000_000;

impl Server {
    /// The control room's side of an incident: its copy, as the server holds it.
    fn incident(&mut self, id: IncidentId) -> &mut IncidentDoc {
        self.incidents
            .get_mut(&id)
            .unwrap_or_else(|| panic!("the server has no incident {id}"))
    }

    fn answer_incident(&mut self, req: &SyncRequest, id: IncidentId, push: &DocPush) -> DocResult {
        let doc = self.incidents.entry(id).or_insert_with(|| {
            IncidentDoc::load(id, &[], automerge::ActorId::random())
                .unwrap_or_else(|e| panic!("{e}"))
        });
        let outcome = match ingest_incident(doc, &req.site, req.device, &push.changes) {
            Ok(ing) => DocOutcome::Accepted {
                heads: to_wire(&doc.heads()),
                new_events: 0,
                missing_deps: ing.missing_deps,
            },
            Err(r) => DocOutcome::Rejected {
                code: r.code,
                message: r.message,
            },
        };
        DocResult {
            doc: push.doc,
            outcome,
        }
    }

    fn answer(&mut self, req: &SyncRequest) -> SyncResponse {
        let mut incidents = Vec::new();
        let docs = req
            .docs
            .iter()
            .map(|push| {
                let shift = match push.doc {
                    DocRef::ShiftLog(shift) => shift,
                    DocRef::Incident(id) => {
                        let result = self.answer_incident(req, id, push);
                        if matches!(result.outcome, DocOutcome::Accepted { .. }) {
                            let doc = self.incident(id);
                            incidents.push(IncidentUpdate {
                                incident: id,
                                heads: to_wire(&doc.heads()),
                                changes: doc.changes_since(&from_wire(&push.have)),
                            });
                        }
                        return result;
                    }
                };
                let stored = self.chunks.entry(shift).or_default();
                let mut doc = Automerge::load(stored).unwrap_or_else(|e| panic!("{e}"));
                let owner = Owner {
                    site: req.site.clone(),
                    device: req.device,
                    shift,
                };
                let outcome = match ingest_shift_log(&mut doc, &owner, &push.changes) {
                    Ok(ing) => {
                        for mut c in ing.applied {
                            stored.extend_from_slice(&c.bytes());
                        }
                        self.events.extend(ing.new_events.iter().map(|(id, _)| *id));
                        DocOutcome::Accepted {
                            heads: to_wire(&ing.heads),
                            new_events: ing.new_events.len() as u32,
                            missing_deps: ing.missing_deps,
                        }
                    }
                    Err(r) => DocOutcome::Rejected {
                        code: r.code,
                        message: r.message,
                    },
                };
                DocResult {
                    doc: push.doc,
                    outcome,
                }
            })
            .collect();
        SyncResponse {
            server_time_ms: SERVER_NOW_MS,
            docs,
            config: self
                .config
                .as_ref()
                .filter(|c| c.version > req.config_version)
                .map(|c| ConfigUpdate {
                    version: c.version,
                    config: c.encode().unwrap_or_else(|e| panic!("{e}")),
                }),
            incidents,
            alarm_acks: req
                .awaiting_ack
                .iter()
                .filter_map(|id| {
                    self.acks.get(id).map(|by| AlarmAck {
                        event: *id,
                        by: by.clone(),
                        at_ms: 1_800_000_000_000,
                    })
                })
                .collect(),
            tours: self.tours.clone(),
        }
    }
}

/// A scan the server's compliance counted.
fn counted(checkpoint: &str, at_ms: i64, event: EventId) -> CountedScan {
    CountedScan {
        checkpoint: CheckpointId::new(checkpoint).unwrap_or_else(|e| panic!("{e}")),
        at_ms,
        event,
    }
}

/// The tour "night" over cp-1 and cp-2 in these one-off windows, without grace.
fn night_round(windows: Vec<Window>) -> Tour {
    let cp = |id: &str| CheckpointId::new(id).unwrap_or_else(|e| panic!("{e}"));
    Tour {
        id: "night".into(),
        name: "Night round".into(),
        checkpoints: vec![cp("cp-1"), cp("cp-2")],
        windows,
        schedule: Vec::new(),
        grace_min: 0,
        ordered: false,
        assigned_guards: Vec::new(),
    }
}

/// A store whose clock reads `at_ms` until the test moves it.
fn store_at(
    path: &std::path::Path,
    at_ms: i64,
) -> Result<(DeviceStore, std::sync::Arc<ManualClock>), Error> {
    let clock = std::sync::Arc::new(ManualClock::new(at_ms));
    let options = StoreOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    };
    let store = DeviceStore::open_with(path, Some(site()), options)?;
    Ok((store, clock))
}

#[test]
fn a_shift_recorded_offline_survives_reopening() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("phone.db");
    let (device, shift, ids) = {
        let mut store = DeviceStore::create(&path, site())?;
        let shift = store.start_shift(guard())?;
        let a = store.scan(scan("cp-1"), RecordOptions::default())?;
        let b = store.note("fire door propped open")?;
        (store.device_id(), shift, vec![a, b])
    };
    let mut store = DeviceStore::open(&path)?;
    assert_eq!(store.device_id(), device);
    assert_eq!(store.current_shift().map(|s| s.shift), Some(shift));
    let c = store.scan(scan("cp-2"), RecordOptions::default())?;
    let events = store.events(None)?;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.record.body.kind()).collect();
    assert_eq!(
        kinds,
        [
            "shift_started",
            "checkpoint_scanned",
            "note",
            "checkpoint_scanned"
        ]
    );
    assert_eq!(events[1].event.id, ids[0]);
    assert_eq!(events[3].event.id, c);
    let seqs: Vec<u64> = events.iter().map(|e| e.event.record.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(
        events
            .windows(2)
            .all(|w| w[0].event.record.time.hlc < w[1].event.record.time.hlc)
    );
    assert!(events.iter().all(|e| !e.delivered));
    assert_eq!(store.status()?.pending_events, 4);
    Ok(())
}

/// Opening a store where there is none (a mistyped path) creates nothing and says what to do;
/// a file that is not a store is left as it was.
#[test]
fn opening_where_there_is_no_store_creates_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let typo = dir.path().join("phnoe.db");
    let err = DeviceStore::open(&typo).err().ok_or("opened")?;
    assert!(matches!(&err, Error::NoStore { .. }), "{err:?}");
    let said = err.to_string();
    assert!(
        said.contains(&format!("there is no phone store at {}", typo.display()))
            && said.contains("enroll the phone first")
            && said.contains("patrol device --store")
            && said.contains("check the path"),
        "{said}"
    );
    let opened = DeviceStore::open_with(&typo, None, StoreOptions::default());
    assert!(matches!(opened, Err(Error::NoStore { .. })));
    assert!(!DeviceStore::is_set_up(&typo)?);
    let left: Vec<_> = std::fs::read_dir(dir.path())?.collect();
    assert!(left.is_empty(), "{left:?}");

    // An empty file, and another program's SQLite database.
    let other_db = dir.path().join("other.sqlite");
    rusqlite::Connection::open(&other_db)?.execute_batch("CREATE TABLE notes (text TEXT)")?;
    let other_db_bytes = std::fs::read(&other_db)?;
    std::fs::remove_file(&other_db)?;
    for content in [&b""[..], &other_db_bytes] {
        let other = dir.path().join("notes.db");
        std::fs::write(&other, content)?;
        let err = DeviceStore::open(&other).err().ok_or("opened")?;
        assert!(matches!(&err, Error::NotInitialised { .. }), "{err:?}");
        assert!(err.to_string().contains("is not a phone store"), "{err}");
        assert_eq!(std::fs::read(&other)?, content);
        let left = std::fs::read_dir(dir.path())?.count();
        assert_eq!(left, 1, "only the file itself");
    }
    Ok(())
}

#[test]
fn store_rules_give_typed_errors_and_change_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("phone.db");
    assert!(matches!(
        DeviceStore::open(&path),
        Err(Error::NoStore { .. })
    ));
    let mut store = DeviceStore::create(&path, site())?;
    assert!(matches!(store.note("x"), Err(Error::NoOpenShift)));
    store.start_shift(guard())?;
    assert!(matches!(
        store.start_shift(guard()),
        Err(Error::ShiftAlreadyOpen(_))
    ));
    let gps_without_fix = Scan {
        method: ScanMethod::Gps,
        location: None,
        ..scan("cp-1")
    };
    assert!(
        store
            .scan(gps_without_fix, RecordOptions::default())
            .is_err()
    );
    assert_eq!(store.events(None)?.len(), 1);
    // One owner at a time: a second store object on the same file is refused while this one
    // is open, and nothing of either changes.
    assert!(matches!(
        DeviceStore::create(&path, site()),
        Err(Error::InUse { .. })
    ));
    store.end_shift(None)?;
    assert!(matches!(
        store.note("after the end"),
        Err(Error::NoOpenShift)
    ));
    drop(store);
    assert!(matches!(
        DeviceStore::create(&path, SiteId::new("site-2")?),
        Err(Error::WrongSite { .. })
    ));
    assert_eq!(DeviceStore::open(&path)?.events(None)?.len(), 2);
    Ok(())
}

#[test]
fn a_retried_call_with_the_same_event_id_records_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    store.start_shift(guard())?;
    let id = EventId::generate();
    let opts = RecordOptions {
        event_id: Some(id),
        wall_ms: None,
    };
    assert_eq!(store.scan(scan("cp-1"), opts)?, id);
    assert_eq!(store.scan(scan("cp-1"), opts)?, id);
    assert!(
        store.scan(scan("cp-9"), opts).is_err(),
        "same id, other content"
    );
    assert_eq!(store.events(None)?.len(), 2);
    Ok(())
}

#[test]
fn events_are_delivered_only_when_the_server_heads_cover_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    let mut store = DeviceStore::create(&path, site())?;
    let mut server = Server::default();
    store.start_shift(guard())?;
    for cp in ["cp-1", "cp-2", "cp-3"] {
        store.scan(scan(cp), RecordOptions::default())?;
    }

    // The first answer is lost: the server has the events, the phone still counts them pending.
    let prepared = store.prepare_sync()?;
    let _lost = server.answer(&prepared.request);
    drop(prepared);
    assert_eq!(store.status()?.pending_events, 4);

    // The app is killed and restarted, then syncs again: nothing is duplicated on the server.
    drop(store);
    let mut store = DeviceStore::open(&path)?;
    store.scan(scan("cp-4"), RecordOptions::default())?;
    let prepared = store.prepare_sync()?;
    let response = server.answer(&prepared.request);
    let report = store.complete_sync(prepared, &response)?;
    assert_eq!(report.events_delivered, 5);
    assert_eq!(report.pending_events, 0);
    assert_eq!(server.events.len(), 5);
    assert!(store.events(None)?.iter().all(|e| e.delivered));

    // Nothing new: the next round sends no log at all.
    let prepared = store.prepare_sync()?;
    assert!(prepared.request.docs.is_empty());
    Ok(())
}

/// An enrolled store keeps the server's device id, site and credential; every prepared request
/// takes a new request_seq, kept across restarts (a retry is never a replay of an applied one).
#[test]
fn an_enrolled_store_keeps_its_identity_and_numbers_every_request() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    assert!(!DeviceStore::is_set_up(&path)?);
    let device = patrol_core::DeviceId::generate();
    let enrollment = Enrollment {
        site: site(),
        device,
        credential: format!("pd_{}", "x".repeat(43)),
        server_url: "http://127.0.0.1:8080".into(),
        signing_key: Some(DeviceKey::generate()?),
    };
    assert!(
        !format!("{enrollment:?}").contains("xxxx"),
        "the secret stays out of Debug"
    );
    let mut store =
        DeviceStore::create_enrolled(&path, enrollment.clone(), StoreOptions::default())?;
    assert!(DeviceStore::is_set_up(&path)?);
    assert_eq!(store.device_id(), device);
    assert_eq!(store.credential(), Some(enrollment.credential.as_str()));
    assert_eq!(
        store.public_key(),
        enrollment.signing_key.as_ref().map(DeviceKey::public_key)
    );
    assert!(!format!("{store:?}").contains("xxxx"));
    store.start_shift(guard())?;
    assert_eq!(store.request_seq()?, 0);
    let first = store.prepare_sync()?;
    let second = store.prepare_sync()?;
    assert_eq!(
        (first.request.request_seq, second.request.request_seq),
        (1, 2)
    );
    // The shift log's changes are made by the enrolled device's actor.
    assert_eq!(first.request.device, device);
    drop(store);

    let mut store = DeviceStore::open(&path)?;
    assert_eq!(store.credential(), Some(enrollment.credential.as_str()));
    assert_eq!(
        store.public_key(),
        enrollment.signing_key.as_ref().map(DeviceKey::public_key)
    );
    assert_eq!(store.server_url(), Some("http://127.0.0.1:8080"));
    assert_eq!(store.prepare_sync()?.request.request_seq, 3);
    store.advance_request_seq(10)?;
    store.advance_request_seq(4)?;
    assert_eq!(store.prepare_sync()?.request.request_seq, 11);
    drop(store);

    // A set-up store never takes another identity.
    assert!(matches!(
        DeviceStore::create_enrolled(&path, enrollment, StoreOptions::default()),
        Err(Error::AlreadySetUp { .. })
    ));
    // A store made without enrolling has no credential.
    let plain = DeviceStore::create(dir.path().join("plain.db"), site())?;
    assert_eq!(plain.credential(), None);
    Ok(())
}

/// A rotated credential is kept beside the current one, across a restart, until it has worked
/// (then it replaces the current one) or was refused (then it is dropped); the current one is
/// never lost on the way.
#[test]
fn a_rotated_credential_waits_beside_the_current_one_until_it_has_worked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    let old = format!("pd_{}", "o".repeat(43));
    let new = format!("pd_{}", "n".repeat(43));
    let enrollment = Enrollment {
        site: site(),
        device: patrol_core::DeviceId::generate(),
        credential: old.clone(),
        server_url: "http://127.0.0.1:8080".into(),
        signing_key: Some(DeviceKey::generate()?),
    };
    let mut store = DeviceStore::create_enrolled(&path, enrollment, StoreOptions::default())?;
    assert_eq!(store.next_credential(), None);
    store.stage_credential(&new)?;
    assert!(
        !format!("{store:?}").contains("nnnn"),
        "secrets stay out of Debug"
    );
    drop(store);

    let mut store = DeviceStore::open(&path)?;
    assert_eq!(
        (store.credential(), store.next_credential()),
        (Some(old.as_str()), Some(new.as_str()))
    );
    store.drop_next_credential()?;
    assert_eq!(
        (store.credential(), store.next_credential()),
        (Some(old.as_str()), None)
    );
    store.stage_credential(&new)?;
    store.confirm_credential()?;
    drop(store);
    let store = DeviceStore::open(&path)?;
    assert_eq!(
        (store.credential(), store.next_credential()),
        (Some(new.as_str()), None)
    );
    Ok(())
}

/// The store holds the device credential and the signing key: its file and the WAL beside it
/// are the app's alone, whatever the umask (typically 0022, which would make them 0644).
#[cfg(unix)]
#[test]
fn the_store_and_its_wal_are_readable_by_the_app_alone() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| -> Result<u32, std::io::Error> {
        Ok(std::fs::metadata(p)?.permissions().mode() & 0o7777)
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    let wal = dir.path().join("p.db-wal");
    let enrollment = Enrollment {
        site: site(),
        device: patrol_core::DeviceId::generate(),
        credential: format!("pd_{}", "x".repeat(43)),
        server_url: "http://127.0.0.1:8080".into(),
        signing_key: Some(DeviceKey::generate()?),
    };
    let mut store = DeviceStore::create_enrolled(&path, enrollment, StoreOptions::default())?;
    store.start_shift(guard())?;
    store.note("first round")?;
    assert_eq!(mode(&path)?, 0o600);
    assert_eq!(mode(&wal)?, 0o600);
    drop(store);

    // A store left open to others (a copy, an older version of the library) is tightened
    // when opened, and keeps what it held.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    let mut store = DeviceStore::open(&path)?;
    assert_eq!(mode(&path)?, 0o600);
    store.note("second round")?;
    assert_eq!(mode(&wal)?, 0o600);
    assert_eq!(store.events(None)?.len(), 3);
    Ok(())
}

#[test]
fn a_rejected_log_is_reported_and_does_not_block_the_others() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    store.start_shift(guard())?;
    store.note("first shift")?;
    store.end_shift(None)?;
    let second = store.start_shift(guard())?;
    store.note("second shift")?;

    let prepared = store.prepare_sync()?;
    assert_eq!(prepared.request.docs.len(), 2);
    let mut response = server.answer(&prepared.request);
    // The server refuses the second log (as it would a log of a revoked device's shift).
    for r in &mut response.docs {
        if r.doc == DocRef::ShiftLog(second) {
            r.outcome = DocOutcome::Rejected {
                code: patrol_core::protocol::RejectCode::WrongOwner,
                message: "not yours".into(),
            };
        }
    }
    let report = store.complete_sync(prepared, &response)?;
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].shift, second);
    assert_eq!(
        report.events_delivered, 3,
        "the first shift's three events got through"
    );
    let status = store.status()?;
    assert_eq!(status.pending_events, 2);
    assert_eq!(status.rejected.len(), 1);
    assert!(status.last_error.is_some());

    // Once the server accepts it, the rejection clears.
    let prepared = store.prepare_sync()?;
    let response = server.answer(&prepared.request);
    store.complete_sync(prepared, &response)?;
    let status = store.status()?;
    assert_eq!(status.pending_events, 0);
    assert!(status.rejected.is_empty());
    Ok(())
}

#[test]
fn every_event_kind_records_and_lists() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    store.start_shift(guard())?;
    store.record(
        EventBody::Panic { location: None },
        RecordOptions::default(),
    )?;
    store.record(
        EventBody::Handover {
            to_guard: Some(guard()),
            text: "keys at desk".into(),
        },
        RecordOptions::default(),
    )?;
    store.record(
        EventBody::IncidentReported(patrol_core::IncidentReport {
            incident: patrol_core::IncidentId::generate(),
            category: patrol_core::IncidentCategory::Shoplifting,
            severity: patrol_core::Severity::High,
            description: "two people left without paying".into(),
            location: None,
        }),
        RecordOptions::default(),
    )?;
    store.end_shift(Some("quiet night".into()))?;
    let kinds: Vec<&str> = store
        .events(None)?
        .iter()
        .map(|e| e.event.record.body.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "shift_started",
            "panic",
            "handover",
            "incident_reported",
            "shift_ended"
        ]
    );
    assert!(store.current_shift().is_none());
    Ok(())
}

#[test]
fn a_finished_shift_is_compacted_and_still_lists_and_syncs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    let mut server = Server::default();
    let mut store = DeviceStore::create(&path, site())?;
    store.start_shift(guard())?;
    for i in 0..50 {
        store.scan(scan(&format!("cp-{}", i % 9 + 1)), RecordOptions::default())?;
    }
    store.end_shift(Some("all quiet".into()))?;
    drop(store);
    let raw: i64 = rusqlite::Connection::open(&path)?.query_row(
        "SELECT SUM(LENGTH(change)) FROM events",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(
        raw, 0,
        "the events' changes were folded into the shift's snapshot"
    );

    let mut store = DeviceStore::open(&path)?;
    assert_eq!(store.events(None)?.len(), 52);
    let prepared = store.prepare_sync()?;
    let response = server.answer(&prepared.request);
    let report = store.complete_sync(prepared, &response)?;
    assert_eq!(report.events_delivered, 52);
    assert_eq!(server.events.len(), 52);
    assert!(store.events(None)?.iter().all(|e| e.delivered));
    Ok(())
}

/// With `synchronous=FULL` a scan's change is built while its record's commit syncs, and
/// written with the next commit. An app killed in between loses nothing: the next open builds
/// the change again from the record, the very change the phone may already have sent.
#[test]
fn a_scan_committed_just_before_the_app_is_killed_is_kept_and_syncs_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    let mut server = Server::default();
    let mut store = DeviceStore::create(&path, site())?;
    store.start_shift(guard())?;
    let mut ids = Vec::new();
    for cp in ["cp-1", "cp-2", "cp-3"] {
        ids.push(store.scan(scan(cp), RecordOptions::default())?);
    }
    // What a kill now would leave on the disk (the store keeps no shared-memory file).
    let killed = dir.path().join("killed.db");
    for suffix in ["", "-wal"] {
        std::fs::copy(
            format!("{}{suffix}", path.display()),
            format!("{}{suffix}", killed.display()),
        )?;
    }
    let (without_change, with_record): (i64, i64) = rusqlite::Connection::open(&killed)?
        .query_row(
            "SELECT COUNT(*) FILTER (WHERE change IS NULL),
                    COUNT(*) FILTER (WHERE record IS NOT NULL)
             FROM events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    assert_eq!(
        (without_change, with_record),
        (1, 1),
        "only the last scan's change is not written yet, and only its row keeps the record"
    );

    // The phone that was not killed delivers all four events.
    let prepared = store.prepare_sync()?;
    let response = server.answer(&prepared.request);
    assert_eq!(
        store.complete_sync(prepared, &response)?.events_delivered,
        4
    );

    let mut restarted = DeviceStore::open(&killed)?;
    let listed: Vec<EventId> = restarted.events(None)?.iter().map(|e| e.event.id).collect();
    assert_eq!(listed[1..], ids[..]);
    // Its rebuilt change is the one the server holds: accepted, nothing new, no duplicate.
    let prepared = restarted.prepare_sync()?;
    let response = server.answer(&prepared.request);
    let report = restarted.complete_sync(prepared, &response)?;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.events_delivered, 4);
    assert_eq!(server.events.len(), 4);
    restarted.scan(scan("cp-4"), RecordOptions::default())?;
    assert_eq!(restarted.status()?.pending_events, 1);
    Ok(())
}

#[test]
fn a_file_a_person_names_is_never_moved_aside() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("notes.txt");
    let text = b"shopping list: milk, eggs\n".repeat(100);
    std::fs::write(&path, &text)?;
    let err = DeviceStore::open_in_place(&path).err().ok_or("opened")?;
    assert!(matches!(&err, Error::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("left as it is"), "{err}");
    assert_eq!(std::fs::read(&path)?, text, "left untouched");
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        1,
        "nothing moved aside"
    );
    Ok(())
}

#[test]
fn a_damaged_store_is_moved_aside_and_reported_never_deleted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.db");
    let garbage = b"this is not a database, but somebody's data all the same".repeat(200);
    std::fs::write(&path, &garbage)?;
    let Err(Error::Quarantined { moved_to, .. }) = DeviceStore::open(&path) else {
        panic!("a damaged store must be quarantined");
    };
    assert!(!path.exists(), "the damaged file no longer blocks the path");
    assert_eq!(std::fs::read(&moved_to)?, garbage, "moved aside untouched");
    // The app can now create a fresh store in its place.
    DeviceStore::create(&path, site())?;
    Ok(())
}

#[test]
fn failed_syncs_back_off_and_a_pending_panic_makes_sync_due_at_once() -> TestResult {
    use patrol_mobile::backoff::RetryPolicy;
    let dir = tempfile::tempdir()?;
    let clock = std::sync::Arc::new(ManualClock::new(1_800_000_000_000));
    let options = patrol_mobile::StoreOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    };
    let mut store = DeviceStore::open_with(dir.path().join("p.db"), Some(site()), options)?;
    store.start_shift(guard())?;
    assert!(store.sync_due()?);

    let policy = RetryPolicy::default();
    let offline = Error::Network("no route to host".into());
    store.sync_failed(&offline, &policy)?;
    store.sync_failed(&offline, &policy)?;
    let status = store.status()?;
    assert_eq!(status.consecutive_failures, 2);
    let next = status.next_attempt_ms.unwrap_or_default();
    assert!(
        (1_800_000_002_000..=1_800_000_004_000).contains(&next),
        "{next}"
    );
    assert!(!store.sync_due()?, "backing off");
    clock.set(next);
    assert!(store.sync_due()?, "due once the backoff has passed");

    // A panic alarm jumps the queue: due at once, whatever the backoff.
    store.sync_failed(&offline, &policy)?;
    assert!(!store.sync_due()?);
    store.record(
        EventBody::Panic { location: None },
        RecordOptions::default(),
    )?;
    assert!(store.status()?.urgent);
    assert!(store.sync_due()?);

    // While it is undelivered, failed attempts are retried on the short fixed schedule (the
    // fourth failure in a row: 5 s), a server's long Retry-After and a refusal included.
    let busy = Error::ServerTransient {
        status: 503,
        message: "busy".into(),
        retry_after_ms: Some(60_000),
    };
    let refused = Error::ServerRejected {
        status: 404,
        message: "no such site".into(),
    };
    for failure in [&offline, &busy, &refused] {
        let now = clock.wall_ms();
        store.sync_failed(failure, &policy)?;
        assert_eq!(
            store.status()?.next_attempt_ms,
            Some(now + 5_000),
            "{failure}"
        );
        clock.set(now + 4_999);
        assert!(!store.sync_due()?, "{failure}");
        clock.set(now + 5_000);
        assert!(store.sync_due()?, "{failure}");
    }

    // Delivery clears the urgency and the failure count.
    let mut server = Server::default();
    let prepared = store.prepare_sync()?;
    let response = server.answer(&prepared.request);
    store.complete_sync(prepared, &response)?;
    let status = store.status()?;
    assert!(!status.urgent);
    assert_eq!(status.consecutive_failures, 0);
    assert!(!store.sync_due()?, "nothing pending");
    Ok(())
}

fn sync_once(store: &mut DeviceStore, server: &mut Server) -> Result<(), patrol_mobile::Error> {
    let prepared = store.prepare_sync()?;
    let response = server.answer(&prepared.request);
    store.complete_sync(prepared, &response)?;
    Ok(())
}

#[test]
fn incident_edits_on_the_phone_and_in_the_control_room_both_survive() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    store.start_shift(guard())?;
    let id = store.report_incident(
        IncidentReport {
            incident: IncidentId::generate(),
            category: IncidentCategory::Theft,
            severity: Severity::Medium,
            description: "bike taken from level -2".into(),
            location: None,
        },
        Vec::new(),
        RecordOptions::default(),
    )?;
    let local = store.incident(id)?.ok_or("no incident")?;
    assert!(local.pending);
    assert_eq!(local.state.status, IncidentStatus::Open);
    sync_once(&mut store, &mut server)?;
    assert!(!store.incident(id)?.ok_or("no incident")?.pending);

    // Offline on the phone: a note and a raised severity. In the control room meanwhile: an
    // acknowledgement and a note.
    store.act_on_incident(id, IncidentAction::AddNote("lock was cut".into()))?;
    store.act_on_incident(id, IncidentAction::SetSeverity(Severity::High))?;
    let operator = Party::Operator {
        user: "anna".into(),
    };
    let doc = server.incident(id);
    doc.act(
        IncidentAction::Acknowledge,
        operator.clone(),
        patrol_core::Hlc::default(),
        1,
    )?;
    doc.act(
        IncidentAction::AddNote("checking the cameras".into()),
        operator,
        patrol_core::Hlc::default(),
        2,
    )?;
    sync_once(&mut store, &mut server)?;
    let phone = store.incident(id)?.ok_or("no incident")?;
    let room = server.incident(id).state()?;
    assert_eq!(phone.state, room);
    assert!(!phone.pending);
    assert_eq!(room.status, IncidentStatus::Acknowledged);
    assert_eq!(room.severity, Some(Severity::High));
    let notes: Vec<&str> = room.notes.iter().map(|n| n.text.as_str()).collect();
    assert!(notes.contains(&"lock was cut") && notes.contains(&"checking the cameras"));
    // Reopened, the store still holds it.
    drop(store);
    let store = DeviceStore::open(dir.path().join("p.db"))?;
    assert_eq!(store.incidents()?.len(), 1);
    Ok(())
}

/// Found by the deterministic simulation (`patrol-sim`, seed 24): a phone stopped pushing an
/// incident once it held it closed, and the server sends an incident unpushed only while it is
/// open, so a note the control room added to the closed incident never reached the phone.
#[test]
fn a_closed_incident_still_receives_what_is_written_to_it_later() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    store.start_shift(guard())?;
    let id = store.report_incident(
        IncidentReport {
            incident: IncidentId::generate(),
            category: IncidentCategory::Dispute,
            severity: Severity::Low,
            description: "argument at the gate".into(),
            location: None,
        },
        Vec::new(),
        RecordOptions::default(),
    )?;
    store.act_on_incident(id, IncidentAction::Close)?;
    sync_once(&mut store, &mut server)?;
    let closed = store.incident(id)?.ok_or("no incident")?;
    assert_eq!(closed.state.status, IncidentStatus::Closed);
    assert!(!closed.pending);

    // The control room notes something on the closed incident.
    server.incident(id).act(
        IncidentAction::AddNote("police report filed".into()),
        Party::Operator {
            user: "anna".into(),
        },
        patrol_core::Hlc::default(),
        3,
    )?;
    let push = store.prepare_sync()?;
    assert!(
        push.request
            .docs
            .iter()
            .any(|d| d.doc == DocRef::Incident(id) && d.changes.is_empty()),
        "a closed incident with nothing to send is pushed heads-only"
    );
    let response = server.answer(&push.request);
    store.complete_sync(push, &response)?;
    let phone = store.incident(id)?.ok_or("no incident")?;
    assert_eq!(phone.state, server.incident(id).state()?);
    assert_eq!(phone.state.notes.len(), 1);
    assert!(!phone.pending);
    Ok(())
}

#[test]
fn the_site_config_arrives_at_sync_and_drives_flags_and_tour_progress_offline() -> TestResult {
    let dir = tempfile::tempdir()?;
    // In step with the server's clock: times are not corrected.
    let (mut store, _) = store_at(&dir.path().join("p.db"), SERVER_NOW_MS)?;
    let mut server = Server::default();
    store.start_shift(guard())?;
    assert!(matches!(
        store.tour_progress("night", 0),
        Err(Error::NoSiteConfig)
    ));
    let cp = |id: &str| -> Result<Checkpoint, Box<dyn std::error::Error>> {
        Ok(Checkpoint {
            id: CheckpointId::new(id)?,
            name: id.into(),
            tags: vec![format!("tag-{id}")],
            location: None,
            radius_m: None,
            methods: Vec::new(),
        })
    };
    server.config = Some(SiteConfig {
        site: site(),
        version: 3,
        time_zone: SiteZone::UTC,
        checkpoints: vec![cp("cp-1")?, cp("cp-2")?],
        tours: vec![night_round(vec![Window {
            start_ms: 1_000,
            end_ms: 10_000,
        }])],
        post_orders: Vec::new(),
        rules: Default::default(),
    });
    sync_once(&mut store, &mut server)?;
    assert_eq!(store.site_config()?.map(|c| c.version), Some(3));

    // A known tag resolves to its checkpoint; an unknown one is recorded and flagged.
    assert_eq!(store.checkpoint_for_tag("tag-cp-1")?.as_str(), "cp-1");
    let unknown = store.checkpoint_for_tag("tag-nobody")?;
    assert_eq!(unknown.as_str(), UNKNOWN_CHECKPOINT);
    let stray = Scan {
        checkpoint: unknown,
        method: ScanMethod::Nfc {
            tag: "tag-nobody".into(),
        },
        location: None,
        note: None,
    };
    let stray = store.scan(stray, RecordOptions::default())?;
    let flags = store.event_flags(stray)?.unwrap_or_default();
    assert!(flags.contains(&EventFlag::UnknownTag), "{flags:?}");
    store.scan(
        scan("cp-1"),
        RecordOptions {
            event_id: None,
            wall_ms: Some(5_000),
        },
    )?;
    let progress = store.tour_progress("night", 6_000)?;
    let states: Vec<CheckpointState> = progress[0].checkpoints.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        states,
        [CheckpointState::Done { at_ms: 5_000 }, CheckpointState::Due]
    );
    let later = store.tour_progress("night", 20_000)?;
    assert_eq!(later[0].checkpoints[1].1, CheckpointState::Missed);
    // The config is not sent again once the phone has it.
    let prepared = store.prepare_sync()?;
    assert_eq!(prepared.request.config_version, 3);
    assert!(server.answer(&prepared.request).config.is_none());
    Ok(())
}

/// A server newer than the app sends its configuration in a format the app does not read: the
/// sync still completes (what it delivered is acknowledged, not sent again forever), the
/// configuration held stays in force, and the report says to update the app.
#[test]
fn a_configuration_in_a_newer_format_does_not_stop_the_phone_syncing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    let mut config = SiteConfig::empty(site());
    config.version = 1;
    server.config = Some(config);
    store.start_shift(guard())?;
    sync_once(&mut store, &mut server)?;
    assert_eq!(store.site_config()?.map(|c| c.version), Some(1));

    store.scan(scan("cp-1"), RecordOptions::default())?;
    let prepared = store.prepare_sync()?;
    let mut response = server.answer(&prepared.request);
    // Version 2 of the site's configuration, in an encoding from the future.
    response.config = Some(ConfigUpdate {
        version: 2,
        config: vec![200, 1, 2, 3],
    });
    let report = store.complete_sync(prepared, &response)?;
    assert_eq!(report.events_delivered, 1);
    assert_eq!(report.pending_events, 0);
    let why = report
        .config_unreadable
        .ok_or("no word of the unreadable configuration")?;
    assert!(
        why.contains("version 2") && why.contains("update the app"),
        "{why}"
    );
    assert_eq!(store.site_config()?.map(|c| c.version), Some(1));
    // It is asked for again at the next sync, in case the app was updated meanwhile.
    assert_eq!(store.prepare_sync()?.request.config_version, 1);
    Ok(())
}

/// A tour written as a nightly schedule in the site's zone: after one sync the phone shows
/// tonight's rounds, offline, on the night the clocks go forward as on any other.
#[test]
fn a_phone_shows_tonights_windows_of_a_scheduled_tour() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (mut store, _) = store_at(&dir.path().join("p.db"), SERVER_NOW_MS)?;
    let mut server = Server::default();
    store.start_shift(guard())?;
    let config: SiteConfig = serde_json::from_value(serde_json::json!({
        "site": "site-1", "version": 1, "time_zone": "Europe/London",
        "checkpoints": [
            {"id": "cp-1", "name": "Gate", "tags": ["tag-cp-1"], "location": null, "radius_m": null},
            {"id": "cp-2", "name": "Yard", "tags": ["tag-cp-2"], "location": null, "radius_m": null}
        ],
        "tours": [{"id": "night", "name": "Night round", "checkpoints": ["cp-1", "cp-2"],
                   "schedule": [{"every_min": 90, "from": "22:00", "to": "06:00"}],
                   "grace_min": 15}],
        "post_orders": []
    }))?;
    config.validate()?;
    server.config = Some(config);
    sync_once(&mut store, &mut server)?;
    let ms = |t: &str| -> Result<i64, Box<dyn std::error::Error>> {
        Ok(chrono::DateTime::parse_from_rfc3339(t)?.timestamp_millis())
    };
    // Saturday 28 March 2026, the night London's clocks go forward at 01:00 GMT. The guard
    // scans cp-1 at 22:10 and cp-2 at 23:40 (in the first round's grace).
    for (cp, at) in [
        ("cp-1", "2026-03-28T22:10:00Z"),
        ("cp-2", "2026-03-28T23:40:00Z"),
    ] {
        store.scan(
            scan(cp),
            RecordOptions {
                event_id: None,
                wall_ms: Some(ms(at)?),
            },
        )?;
    }
    let now = ms("2026-03-28T23:45:00Z")?;
    let progress = store.tour_progress("night", now)?;
    // Saturday night's rounds: 22:00 and 23:30 GMT, then 02:00, 03:30 and 05:00 BST, the last
    // ending at 06:00 BST (05:00Z): five, an hour fewer than other nights.
    let saturday: Vec<_> = progress
        .iter()
        .filter(|w| w.window.start_ms >= ms("2026-03-28T22:00:00Z").unwrap_or(0))
        .filter(|w| w.window.end_ms <= ms("2026-03-29T05:00:00Z").unwrap_or(0))
        .collect();
    let starts: Vec<i64> = saturday.iter().map(|w| w.window.start_ms).collect();
    assert_eq!(
        starts,
        [
            ms("2026-03-28T22:00:00Z")?,
            ms("2026-03-28T23:30:00Z")?,
            ms("2026-03-29T01:00:00Z")?,
            ms("2026-03-29T02:30:00Z")?,
            ms("2026-03-29T04:00:00Z")?,
        ]
    );
    assert_eq!(
        saturday[0]
            .checkpoints
            .iter()
            .map(|(_, s)| *s)
            .collect::<Vec<_>>(),
        [
            CheckpointState::Done {
                at_ms: ms("2026-03-28T22:10:00Z")?
            },
            CheckpointState::DoneLate {
                at_ms: ms("2026-03-28T23:40:00Z")?
            },
        ]
    );
    assert_eq!(
        saturday[1]
            .checkpoints
            .iter()
            .map(|(_, s)| *s)
            .collect::<Vec<_>>(),
        [CheckpointState::Due, CheckpointState::Due]
    );
    // Every window shown overlaps the 24 hours either side of now, and they are in order.
    assert!(
        progress
            .iter()
            .all(|w| w.window.end_ms > now - 86_400_000 && w.window.start_ms < now + 86_400_000)
    );
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].window.start_ms < w[1].window.start_ms)
    );
    Ok(())
}

/// Two guards on one tour, and this phone's clock 2 hours slow. The tour view shows the
/// checkpoint the other guard scanned as done (the server's count, as of the last sync) rather
/// than missed, and credits this phone's own scan to the window it was made in by the server's
/// clock, not by its own; its scans delivered since count once, and again from its own record
/// when an answer comes without the server's count.
#[test]
fn the_tour_view_shows_other_guards_scans_and_corrects_a_wrong_clock() -> TestResult {
    const MIN: i64 = 60_000;
    let dir = tempfile::tempdir()?;
    // Two hours slow: it reads 20:00 when the server reads 22:00.
    let slow = 120 * MIN;
    let (mut store, _clock) = store_at(&dir.path().join("p.db"), SERVER_NOW_MS - slow)?;
    let other = EventId::generate();
    // Hourly windows from 20:30 (server time), no grace: 20:30-21:30, 21:30-22:30.
    let first = SERVER_NOW_MS - 90 * MIN;
    let windows = vec![
        Window {
            start_ms: first,
            end_ms: first + 60 * MIN,
        },
        Window {
            start_ms: first + 60 * MIN,
            end_ms: first + 120 * MIN,
        },
    ];
    let mut server = Server {
        config: Some(SiteConfig {
            site: site(),
            version: 1,
            time_zone: SiteZone::UTC,
            checkpoints: Vec::new(),
            tours: vec![night_round(windows)],
            post_orders: Vec::new(),
            rules: Default::default(),
        }),
        // Another guard scanned cp-2 at 20:40, in the first window.
        tours: Some(TourStatus {
            tours: vec![TourScans {
                tour: "night".into(),
                scans: vec![counted("cp-2", first + 10 * MIN, other)],
            }],
        }),
        ..Server::default()
    };
    store.start_shift(guard())?;
    sync_once(&mut store, &mut server)?;
    assert_eq!(store.clock_offset_ms()?, slow);

    // This phone scans cp-1 at 22:00 by the server's clock, 20:00 by its own.
    let mine = store.scan(scan("cp-1"), RecordOptions::default())?;
    // Seen a minute later by this phone's clock (the store's clock stays where it was, so
    // every sync measures the same offset).
    let now = SERVER_NOW_MS - slow + MIN;
    let states = |store: &DeviceStore| -> Result<Vec<Vec<CheckpointState>>, Error> {
        Ok(store
            .tour_progress("night", now)?
            .iter()
            .map(|w| w.checkpoints.iter().map(|(_, s)| *s).collect())
            .collect())
    };
    let expected = vec![
        vec![
            CheckpointState::Missed,
            CheckpointState::Done {
                at_ms: first + 10 * MIN,
            },
        ],
        vec![
            CheckpointState::Done {
                at_ms: SERVER_NOW_MS,
            },
            CheckpointState::Due,
        ],
    ];
    assert_eq!(states(&store)?, expected);

    // Delivered: the server's count now holds it, and it counts once.
    server.tours = Some(TourStatus {
        tours: vec![TourScans {
            tour: "night".into(),
            scans: vec![
                counted("cp-2", first + 10 * MIN, other),
                // The server's corrected time of this phone's scan, a few ms off its own.
                counted("cp-1", SERVER_NOW_MS + 3, mine),
            ],
        }],
    });
    sync_once(&mut store, &mut server)?;
    assert_eq!(store.status()?.pending_events, 0);
    assert_eq!(states(&store)?, expected);

    // An answer without the server's count: the phone's own record is what it has.
    server.tours = None;
    sync_once(&mut store, &mut server)?;
    let mut own = expected.clone();
    own[0][1] = CheckpointState::Missed;
    assert_eq!(states(&store)?, own);
    Ok(())
}

#[test]
fn a_panic_is_queued_then_delivered_then_acknowledged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    store.start_shift(guard())?;
    let id = store.record(
        patrol_core::EventBody::Panic { location: None },
        RecordOptions::default(),
    )?;
    let state = |s: &DeviceStore| -> Result<AlarmState, patrol_mobile::Error> {
        s.alarms()?
            .first()
            .map(|a| a.state.clone())
            .ok_or_else(|| patrol_mobile::Error::Corrupt("no alarm".into()))
    };
    assert_eq!(state(&store)?, AlarmState::Queued);
    sync_once(&mut store, &mut server)?;
    assert_eq!(state(&store)?, AlarmState::Delivered);
    server.acks.insert(id, "op-anna".into());
    sync_once(&mut store, &mut server)?;
    assert_eq!(
        state(&store)?,
        AlarmState::Acknowledged {
            by: "op-anna".into(),
            at_ms: 1_800_000_000_000
        }
    );
    // Once acknowledged, the phone stops asking.
    assert!(store.prepare_sync()?.request.awaiting_ack.is_empty());
    Ok(())
}

fn incident_report(description: &str) -> IncidentReport {
    IncidentReport {
        incident: IncidentId::generate(),
        category: IncidentCategory::Theft,
        severity: Severity::Medium,
        description: description.into(),
        location: None,
    }
}

fn panic_now(store: &mut DeviceStore) -> Result<EventId, Error> {
    store.record(
        EventBody::Panic { location: None },
        RecordOptions::default(),
    )
}

#[test]
fn a_panic_goes_first_in_a_request_of_its_own_ahead_of_a_backlog() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    // Last night's shift never synced, and an incident reported in it waits to be pushed.
    let earlier = store.start_shift(guard())?;
    for i in 0..20 {
        store.scan(scan(&format!("cp-{i}")), RecordOptions::default())?;
    }
    let incident = store.report_incident(
        incident_report("side door forced"),
        Vec::new(),
        RecordOptions::default(),
    )?;
    store.end_shift(None)?;
    // Tonight: two scans, then the guard raises a panic.
    let tonight = store.start_shift(guard())?;
    let before_panic = store.scan(scan("cp-1"), RecordOptions::default())?;
    store.scan(scan("cp-2"), RecordOptions::default())?;
    let panic = panic_now(&mut store)?;
    let backlog = store.events(Some(earlier))?.len() as u64;
    let seq = store.request_seq()?;

    // The first request holds tonight's log alone, in the panic lane.
    let first = store
        .prepare_urgent_sync()?
        .ok_or("no request of the panic's own")?;
    assert!(first.urgent);
    assert_eq!(first.request.docs.len(), 1);
    assert_eq!(first.request.docs[0].doc, DocRef::ShiftLog(tonight));
    assert_eq!(first.request.request_seq, seq + 1);
    // It tells the server what the phone still holds, the backlog included.
    assert_eq!(first.request.pending_events, backlog + 4);
    let response = server.answer(&first.request);
    let report = store.complete_sync(first, &response)?;
    assert_eq!(report.events_delivered, 4);

    // The panic is delivered, with what came before it in its shift; the backlog and the
    // incident are still pending.
    assert!(store.event(panic)?.is_some_and(|e| e.delivered));
    assert!(store.event(before_panic)?.is_some_and(|e| e.delivered));
    let status = store.status()?;
    assert!(!status.urgent);
    assert_eq!(status.pending_events, backlog);
    assert!(store.incident(incident)?.ok_or("no incident")?.pending);
    assert!(store.events(Some(earlier))?.iter().all(|e| !e.delivered));
    assert!(!server.incidents.contains_key(&incident));

    // Then the rest, the ordinary way.
    assert!(store.prepare_urgent_sync()?.is_none());
    let rest = store.prepare_sync()?;
    assert!(!rest.urgent);
    assert_eq!(rest.request.request_seq, seq + 2);
    let sent: Vec<DocRef> = rest.request.docs.iter().map(|d| d.doc).collect();
    assert_eq!(
        sent,
        [DocRef::ShiftLog(earlier), DocRef::Incident(incident)]
    );
    let response = server.answer(&rest.request);
    let report = store.complete_sync(rest, &response)?;
    assert_eq!(report.events_delivered, backlog);
    assert_eq!(store.status()?.pending_events, 0);
    assert!(!store.incident(incident)?.ok_or("no incident")?.pending);
    assert!(server.incidents.contains_key(&incident));
    Ok(())
}

#[test]
fn an_incident_edit_waiting_beside_a_panic_is_pushed_after_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    let shift = store.start_shift(guard())?;
    let incident = store.report_incident(
        incident_report("bike taken from level -2"),
        Vec::new(),
        RecordOptions::default(),
    )?;
    sync_once(&mut store, &mut server)?;
    // Offline: a note on the incident, then a panic.
    store.act_on_incident(incident, IncidentAction::AddNote("he is back".into()))?;
    panic_now(&mut store)?;

    let first = store
        .prepare_urgent_sync()?
        .ok_or("no request of the panic's own")?;
    let sent: Vec<DocRef> = first.request.docs.iter().map(|d| d.doc).collect();
    assert_eq!(sent, [DocRef::ShiftLog(shift)]);
    let response = server.answer(&first.request);
    store.complete_sync(first, &response)?;
    assert!(!store.status()?.urgent);
    assert!(store.incident(incident)?.ok_or("no incident")?.pending);
    sync_once(&mut store, &mut server)?;
    assert!(!store.incident(incident)?.ok_or("no incident")?.pending);
    let notes = server.incident(incident).state()?.notes;
    assert!(notes.iter().any(|n| n.text == "he is back"), "{notes:?}");
    Ok(())
}

#[test]
fn a_panic_with_nothing_else_pending_is_one_ordinary_request() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = DeviceStore::create(dir.path().join("p.db"), site())?;
    let mut server = Server::default();
    // A delivered earlier shift and a delivered incident are not pending work.
    store.start_shift(guard())?;
    store.report_incident(
        incident_report("light out in the car park"),
        Vec::new(),
        RecordOptions::default(),
    )?;
    store.end_shift(None)?;
    let shift = store.start_shift(guard())?;
    sync_once(&mut store, &mut server)?;
    store.note("someone at the gate")?;
    panic_now(&mut store)?;

    assert!(store.prepare_urgent_sync()?.is_none());
    let prepared = store.prepare_sync()?;
    assert!(prepared.urgent);
    assert!(
        prepared
            .request
            .docs
            .iter()
            .any(|d| d.doc == DocRef::ShiftLog(shift))
    );
    let response = server.answer(&prepared.request);
    store.complete_sync(prepared, &response)?;
    assert!(!store.status()?.urgent);
    assert_eq!(store.status()?.pending_events, 0);
    Ok(())
}

/// A guard working alone: the timer runs from its start and from each check-in; a check-in not
/// made by the deadline is missed, the phone says so, and records the miss once, marked to be
/// sent first; a stop ends it, and so does the shift's end.
#[test]
fn a_missed_check_in_is_found_on_the_phone_and_recorded_once_to_send_first() -> TestResult {
    let dir = tempfile::tempdir()?;
    let start = 1_800_000_000_000;
    let (mut store, clock) = store_at(&dir.path().join("phone.db"), start)?;
    let set = |ms: i64| clock.set(ms);
    const MIN: i64 = 60_000;
    assert!(matches!(
        store.start_check_in_timer(30),
        Err(Error::NoOpenShift)
    ));
    store.start_shift(guard())?;
    assert!(matches!(store.check_in(), Err(Error::NoCheckInTimer)));
    assert_eq!(store.check_in_status()?, None);
    assert!(store.start_check_in_timer(0).is_err(), "0 minutes");
    store.start_check_in_timer(30)?;
    set(start + 20 * MIN);
    let status = store.check_in_status()?.ok_or("a timer runs")?;
    assert_eq!((status.due_ms, status.missed), (start + 30 * MIN, false));
    store.check_in()?;
    set(start + 50 * MIN);
    let status = store.check_in_status()?.ok_or("a timer runs")?;
    assert_eq!((status.due_ms, status.missed), (start + 50 * MIN, false));

    // Past the deadline: missed, recorded once, urgent.
    set(start + 50 * MIN + 1);
    let status = store.check_in_status()?.ok_or("a timer runs")?;
    assert!(status.missed && status.recorded_miss.is_some());
    let again = store.check_in_status()?.ok_or("a timer runs")?;
    assert!(
        again.missed && again.recorded_miss.is_none(),
        "recorded once"
    );
    let misses: Vec<_> = store
        .events(None)?
        .into_iter()
        .filter(|e| {
            e.event.record.body
                == EventBody::CheckInMissed {
                    due_ms: start + 50 * MIN,
                }
        })
        .collect();
    assert_eq!(misses.len(), 1);
    assert!(store.status()?.urgent, "the miss is sent first");

    // A late check-in puts it right; a stop ends it.
    store.check_in()?;
    let status = store.check_in_status()?.ok_or("a timer runs")?;
    assert!(!status.missed);
    store.stop_check_in_timer()?;
    assert_eq!(store.check_in_status()?, None);
    store.start_check_in_timer(10)?;
    store.end_shift(None)?;
    assert_eq!(store.check_in_status()?, None);
    Ok(())
}
