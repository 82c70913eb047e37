//! Incidents in the sync exchange: pushes merged with the core's rules, forged ones refused,
//! and the incidents a device takes part in delivered to it.

mod common;

use automerge::ChangeHash;
use common::{Phone, TestResult, TestServer, site};
use patrol_core::incident::{Entry, IncidentAction, IncidentDoc, Party, Stamped};
use patrol_core::merge::plan_incident_push;
use patrol_core::protocol::{
    self, DocOutcome, DocPush, DocRef, IncidentUpdate, RejectCode, SyncResponse,
};
use patrol_core::{Hlc, IncidentCategory, IncidentId, Severity, SiteId};

/// A phone's replica of one incident and the server heads it last merged.
struct Replica {
    doc: IncidentDoc,
    synced: Vec<ChangeHash>,
}

fn guard_of(phone: &Phone) -> Party {
    Party::Guard {
        device: phone.device,
        guard: phone.log.meta().guard.clone(),
    }
}

fn stamp(ms: u64) -> Hlc {
    Hlc {
        wall_ms: ms,
        counter: 0,
    }
}

fn report_as(by: Party, site: SiteId, description: &str) -> Stamped {
    Stamped {
        by,
        at: stamp(1_740_866_400_000),
        wall_ms: 1_740_866_400_000,
        entry: Entry::Reported {
            site,
            category: IncidentCategory::Theft,
            severity: Severity::Medium,
            description: description.into(),
            location: None,
        },
    }
}

impl Replica {
    /// A new incident reported on `phone`.
    fn report(phone: &Phone, description: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let (doc, _) = IncidentDoc::create(
            IncidentId::generate(),
            phone.device.actor_id(),
            report_as(guard_of(phone), site(), description),
        )?;
        Ok(Replica {
            doc,
            synced: Vec::new(),
        })
    }

    fn id(&self) -> IncidentId {
        self.doc.id()
    }

    fn note(&mut self, phone: &Phone, text: &str, ms: u64) -> TestResult {
        self.doc.act(
            IncidentAction::AddNote(text.into()),
            guard_of(phone),
            stamp(ms),
            ms as i64,
        )?;
        Ok(())
    }

    fn push(&mut self) -> Result<DocPush, Box<dyn std::error::Error>> {
        Ok(plan_incident_push(&mut self.doc, &self.synced)?)
    }

    /// Merges the server's update for this incident, as the phone does.
    fn apply(&mut self, resp: &SyncResponse) -> TestResult {
        let update = resp
            .incidents
            .iter()
            .find(|u| u.incident == self.id())
            .ok_or("no update for the incident")?;
        self.doc.merge(&update.changes)?;
        let heads = protocol::from_wire(&update.heads);
        assert_eq!(
            self.doc.known(&heads).len(),
            heads.len(),
            "the server's heads are in what the phone holds after the update"
        );
        self.synced = heads;
        Ok(())
    }

    fn sorted_heads(&mut self) -> Vec<[u8; 32]> {
        let mut heads = self.doc.heads();
        heads.sort();
        protocol::to_wire(&heads)
    }
}

fn update_for(resp: &SyncResponse, id: IncidentId) -> Option<&IncidentUpdate> {
    resp.incidents.iter().find(|u| u.incident == id)
}

fn stored_state(
    server: &TestServer,
    id: IncidentId,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let conn = rusqlite::Connection::open(server.db_path())?;
    let state: String = conn.query_row(
        "SELECT state FROM incidents WHERE site_id = ?1 AND incident_id = ?2",
        [common::SITE, &id.to_string()],
        |r| r.get(0),
    )?;
    Ok(serde_json::from_str(&state)?)
}

#[tokio::test]
async fn incident_pushes_are_merged_and_answered_in_the_requests_order() -> TestResult {
    let server = TestServer::new().await?;
    let mut phone = Phone::new("guard-1")?;
    phone.scan("cp-1")?;
    let mut theft = Replica::report(&phone, "bike stolen from rack 3")?;
    theft.note(&phone, "lock cut", 1_740_866_460_000)?;
    let mut fire = Replica::report(&phone, "smoke in plant room")?;

    let docs = vec![theft.push()?, phone.push()?, fire.push()?];
    let request = phone.request(docs);
    let resp = server.sync(&request).await?;
    let order: Vec<DocRef> = resp.docs.iter().map(|d| d.doc).collect();
    assert_eq!(
        order,
        vec![
            DocRef::Incident(theft.id()),
            DocRef::ShiftLog(phone.shift()),
            DocRef::Incident(fire.id())
        ]
    );
    match &resp.docs[0].outcome {
        DocOutcome::Accepted {
            heads,
            new_events: 0,
            missing_deps: false,
        } => assert_eq!(heads, &theft.sorted_heads()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        resp.docs[1].outcome,
        DocOutcome::Accepted { new_events: 2, .. }
    ));
    assert!(matches!(resp.docs[2].outcome, DocOutcome::Accepted { .. }));
    // The phone has everything: its updates carry the heads and no changes.
    for replica in [&mut theft, &mut fire] {
        let update = update_for(&resp, replica.id()).ok_or("no update")?;
        assert!(update.changes.is_empty());
        assert_eq!(update.heads, replica.sorted_heads());
        replica.apply(&resp)?;
    }
    assert_eq!(resp.incidents.len(), 2);

    let state = stored_state(&server, theft.id())?;
    assert_eq!(state["status"], "open");
    assert_eq!(state["description"], "bike stolen from rack 3");
    assert_eq!(state["category"], "theft");
    assert_eq!(state["severity"], "medium");
    assert_eq!(state["notes"][0]["text"], "lock cut");
    assert_eq!(state["reported_by"]["kind"], "guard");
    assert_eq!(state["reported_by"]["guard"], "guard-1");
    assert_eq!(state["reported_by"]["device"], phone.device.to_string());
    assert_eq!(
        server.count("SELECT COUNT(*) FROM incident_participants")?,
        2
    );
    assert_eq!(server.count("SELECT COUNT(*) FROM incidents")?, 2);

    // The same request again, and a heads-only push, change nothing.
    let before = server.snapshot()?;
    let again = server.sync(&request).await?;
    assert_eq!(
        (&again.docs[0], &again.docs[2]),
        (&resp.docs[0], &resp.docs[2])
    );
    assert!(matches!(
        again.docs[1].outcome,
        DocOutcome::Accepted { new_events: 0, .. }
    ));
    let heads_only = theft.push()?;
    assert!(heads_only.changes.is_empty());
    let resp = server.sync(&phone.request(vec![heads_only])).await?;
    assert!(matches!(
        &resp.docs[0].outcome,
        DocOutcome::Accepted { heads, missing_deps: false, .. } if *heads == theft.sorted_heads()
    ));
    assert_eq!(server.snapshot()?, before);

    // A later note goes up alone and lands.
    theft.note(&phone, "police informed", 1_740_866_520_000)?;
    let push = theft.push()?;
    assert!(!push.have.is_empty());
    let resp = server.sync(&phone.request(vec![push])).await?;
    theft.apply(&resp)?;
    let state = stored_state(&server, theft.id())?;
    assert_eq!(state["notes"][1]["text"], "police informed");
    Ok(())
}

#[tokio::test]
async fn forged_incident_pushes_are_rejected_and_change_nothing() -> TestResult {
    let server = TestServer::new().await?;
    let alice = Phone::new("guard-a")?;
    let bob = Phone::new("guard-b")?;
    let mut theirs = Replica::report(&alice, "door forced")?;
    let resp = server.sync(&alice.request(vec![theirs.push()?])).await?;
    theirs.apply(&resp)?;
    let before = server.snapshot()?;

    // Alice's unsynced incident, pushed by Bob: her actor's changes.
    let mut hers = Replica::report(&alice, "window broken")?;
    // Bob's actor, but written as Alice.
    let (mut posing, _) = IncidentDoc::create(
        IncidentId::generate(),
        bob.device.actor_id(),
        report_as(guard_of(&alice), site(), "posing"),
    )?;
    // Bob's own report, for another site.
    let (mut elsewhere, _) = IncidentDoc::create(
        IncidentId::generate(),
        bob.device.actor_id(),
        report_as(guard_of(&bob), SiteId::new("site-2")?, "elsewhere"),
    )?;
    // An entry on Alice's incident written as an operator by Bob's phone.
    let mut as_operator =
        IncidentDoc::load(theirs.id(), &theirs.doc.save(), bob.device.actor_id())?;
    as_operator.act(
        IncidentAction::Close,
        Party::Operator {
            user: "op-anna".into(),
        },
        stamp(1_740_866_500_000),
        1_740_866_500_000,
    )?;
    let as_operator_push = plan_incident_push(&mut as_operator, &theirs.synced)?;
    // A note on an incident the server has never seen, without its report.
    let mut unreported = Replica::report(&bob, "unreported")?;
    let report_heads = unreported.doc.heads();
    unreported.note(&bob, "follow-up", 1_740_866_500_000)?;
    let mut without_report = plan_incident_push(&mut unreported.doc, &report_heads)?;
    without_report.have.clear();
    let garbage = DocPush {
        doc: DocRef::Incident(IncidentId::generate()),
        have: vec![],
        changes: vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3],
        events: 0,
    };

    let request = bob.request(vec![
        hers.push()?,
        plan_incident_push(&mut posing, &[])?,
        plan_incident_push(&mut elsewhere, &[])?,
        as_operator_push,
        without_report,
        garbage,
    ]);
    let resp = server.sync(&request).await?;
    let codes: Vec<Option<RejectCode>> = resp
        .docs
        .iter()
        .map(|d| match &d.outcome {
            DocOutcome::Rejected { code, message } => {
                assert!(!message.is_empty());
                Some(*code)
            }
            DocOutcome::Accepted { .. } => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            Some(RejectCode::ForeignActor),
            Some(RejectCode::WrongAuthor),
            Some(RejectCode::WrongAuthor),
            Some(RejectCode::WrongAuthor),
            Some(RejectCode::MissingMeta),
            Some(RejectCode::Malformed),
        ]
    );
    assert!(resp.incidents.is_empty(), "{:?}", resp.incidents);
    assert_eq!(server.snapshot()?, before);

    // A valid push beside a forged one lands; the forged one still leaves no trace.
    let mut own = Replica::report(&bob, "spill in aisle 4")?;
    let resp = server
        .sync(&bob.request(vec![hers.push()?, own.push()?]))
        .await?;
    assert!(matches!(
        resp.docs[0].outcome,
        DocOutcome::Rejected {
            code: RejectCode::ForeignActor,
            ..
        }
    ));
    assert!(matches!(resp.docs[1].outcome, DocOutcome::Accepted { .. }));
    own.apply(&resp)?;
    assert_eq!(server.count("SELECT COUNT(*) FROM incidents")?, 2);
    assert_eq!(
        server.count(&format!(
            "SELECT COUNT(*) FROM incidents WHERE incident_id = '{}'",
            hers.id()
        ))?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn a_device_gets_its_open_incidents_whole_and_no_one_elses() -> TestResult {
    let server = TestServer::new().await?;
    let alice = Phone::new("guard-a")?;
    let bob = Phone::new("guard-b")?;
    let mut reported = Replica::report(&alice, "door forced")?;
    reported.note(&alice, "alarm sounding", 1_740_866_460_000)?;
    server.sync(&alice.request(vec![reported.push()?])).await?;

    // Alice's phone lost the incident (say it was reinstalled with the same device id): a
    // sync without it brings it back whole.
    let resp = server.sync(&alice.request(vec![])).await?;
    let update = update_for(&resp, reported.id()).ok_or("not delivered")?;
    let mut restored = IncidentDoc::load(reported.id(), &[], alice.device.actor_id())?;
    restored.merge(&update.changes)?;
    assert_eq!(restored.state()?, reported.doc.state()?);
    assert_eq!(update.heads, reported.sorted_heads());

    // Bob never wrote to it and is not assigned: he gets nothing.
    let resp = server.sync(&bob.request(vec![])).await?;
    assert!(resp.incidents.is_empty(), "{:?}", resp.incidents);
    assert!(resp.config.is_none());
    assert!(resp.alarm_acks.is_empty());
    Ok(())
}
