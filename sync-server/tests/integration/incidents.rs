//! Incidents in the sync exchange: pushes merged with the core's rules, forged ones refused,
//! and the incidents a device takes part in delivered to it.

use automerge::ChangeHash;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use patrol_core::incident::{Entry, IncidentAction, IncidentDoc, IncidentStatus, Party, Stamped};
use patrol_core::merge::plan_incident_push;
use patrol_core::protocol::{
    self, DocOutcome, DocPush, DocRef, IncidentUpdate, RejectCode, SyncRequest, SyncResponse,
};
use patrol_core::{Hlc, IncidentCategory, IncidentId, Severity, SiteId};
use serde_json::json;

use crate::common::{self, Backend, Phone, TestResult, TestServer, site};

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

async fn stored_state(
    server: &TestServer,
    id: IncidentId,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let state = server
        .text(&format!(
            "SELECT state FROM incidents WHERE site_id = '{}' AND incident_id = '{id}'",
            common::SITE
        ))
        .await?;
    Ok(serde_json::from_str(&state)?)
}

async fn incident_pushes_are_merged_and_answered_in_the_requests_order(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
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

    let state = stored_state(&server, theft.id()).await?;
    assert_eq!(state["status"], "open");
    assert_eq!(state["description"], "bike stolen from rack 3");
    assert_eq!(state["category"], "theft");
    assert_eq!(state["severity"], "medium");
    assert_eq!(state["notes"][0]["text"], "lock cut");
    assert_eq!(state["reported_by"]["kind"], "guard");
    assert_eq!(state["reported_by"]["guard"], "guard-1");
    assert_eq!(state["reported_by"]["device"], phone.device.to_string());
    assert_eq!(
        server
            .count("SELECT COUNT(*) FROM incident_participants")
            .await?,
        2
    );
    assert_eq!(server.count("SELECT COUNT(*) FROM incidents").await?, 2);

    // The very same request again is a replay: refused, nothing changes.
    let before = server.snapshot().await?;
    let (status, _, _) = server.try_sync(&request).await?;
    assert_eq!(status, axum::http::StatusCode::CONFLICT);
    assert_eq!(server.snapshot().await?, before);
    // The same pushes in a fresh request, and a heads-only push, change nothing.
    let again = server.sync(&phone.request(request.docs.clone())).await?;
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
    assert_eq!(server.snapshot().await?, before);

    // A later note goes up alone and lands.
    theft.note(&phone, "police informed", 1_740_866_520_000)?;
    let push = theft.push()?;
    assert!(!push.have.is_empty());
    let resp = server.sync(&phone.request(vec![push])).await?;
    theft.apply(&resp)?;
    let state = stored_state(&server, theft.id()).await?;
    assert_eq!(state["notes"][1]["text"], "police informed");
    Ok(())
}

async fn forged_incident_pushes_are_rejected_and_change_nothing(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let alice = server.phone("guard-a").await?;
    let bob = server.phone("guard-b").await?;
    let mut theirs = Replica::report(&alice, "door forced")?;
    let resp = server.sync(&alice.request(vec![theirs.push()?])).await?;
    theirs.apply(&resp)?;
    let before = server.snapshot().await?;

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
        signature: None,
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
    assert_eq!(server.snapshot().await?, before);

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
    assert_eq!(server.count("SELECT COUNT(*) FROM incidents").await?, 2);
    assert_eq!(
        server
            .count(&format!(
                "SELECT COUNT(*) FROM incidents WHERE incident_id = '{}'",
                hers.id()
            ))
            .await?,
        0
    );
    Ok(())
}

/// `request` as a phone with no shift open sends it: naming no guard.
fn off_shift(mut request: SyncRequest) -> SyncRequest {
    request.guard = None;
    request
}

/// Every phone on shift gets every open incident of the site, whole, once: then it holds it and
/// pushes it heads-only. A phone with no shift open gets only those it took part in.
async fn a_phone_on_shift_gets_every_open_incident_and_one_off_shift_only_its_own(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let alice = server.phone("guard-a").await?;
    let bob = server.phone("guard-b").await?;
    let carol = server.phone("guard-c").await?;
    let mut reported = Replica::report(&alice, "door forced")?;
    reported.note(&alice, "alarm sounding", 1_740_866_460_000)?;
    server.sync(&alice.request(vec![reported.push()?])).await?;

    // Alice's phone lost the incident (say it was reinstalled with the same device id): a
    // sync without it brings it back whole, on shift or not: she took part in it.
    for request in [alice.request(vec![]), off_shift(alice.request(vec![]))] {
        let resp = server.sync(&request).await?;
        let update = update_for(&resp, reported.id()).ok_or("not delivered")?;
        let mut restored = IncidentDoc::load(reported.id(), &[], alice.device.actor_id())?;
        restored.merge(&update.changes)?;
        assert_eq!(restored.state()?, reported.doc.state()?);
        assert_eq!(update.heads, reported.sorted_heads());
    }

    // Carol has no shift open and never touched it: nothing.
    let resp = server.sync(&off_shift(carol.request(vec![]))).await?;
    assert!(resp.incidents.is_empty(), "{:?}", resp.incidents);
    assert!(resp.config.is_none());
    assert!(resp.alarm_acks.is_empty());

    // Bob is on shift and never touched it (nor is it assigned to him): he gets it whole.
    let resp = server.sync(&bob.request(vec![])).await?;
    let update = update_for(&resp, reported.id()).ok_or("not delivered to a guard on shift")?;
    let mut on_bob = Replica {
        doc: IncidentDoc::load(reported.id(), &[], bob.device.actor_id())?,
        synced: Vec::new(),
    };
    on_bob.doc.merge(&update.changes)?;
    on_bob.synced = protocol::from_wire(&update.heads);
    assert_eq!(on_bob.doc.state()?, reported.doc.state()?);
    // Holding it, he pushes it heads-only; the server sends nothing of it again, and a
    // heads-only push makes him no participant.
    let push = on_bob.push()?;
    assert!(push.changes.is_empty());
    let before = server.snapshot().await?;
    let resp = server.sync(&bob.request(vec![push])).await?;
    assert_eq!(server.snapshot().await?, before, "nothing written");
    assert_eq!(resp.incidents.len(), 1);
    assert!(
        update_for(&resp, reported.id())
            .ok_or("no answer")?
            .changes
            .is_empty()
    );
    let resp = server.sync(&off_shift(bob.request(vec![]))).await?;
    assert!(resp.incidents.is_empty(), "off shift, Bob took no part");

    // Closed: no phone is sent it unasked, on shift or not, not even its reporter.
    for action in ["resolve", "close"] {
        act(
            &server,
            reported.id(),
            json!({"action": action, "by": "op-anna"}),
        )
        .await?;
    }
    for request in [
        alice.request(vec![]),
        bob.request(vec![]),
        carol.request(vec![]),
        off_shift(alice.request(vec![])),
    ] {
        assert!(server.sync(&request).await?.incidents.is_empty());
    }
    // A phone that still holds it and asks is answered, with what it lacks.
    let resp = server.sync(&bob.request(vec![on_bob.push()?])).await?;
    on_bob.apply(&resp)?;
    assert_eq!(on_bob.doc.state()?.status, IncidentStatus::Closed);
    Ok(())
}

fn incident_uri(id: IncidentId) -> String {
    format!("/api/v1/sites/{}/incidents/{id}", common::SITE)
}

async fn act(
    server: &TestServer,
    id: IncidentId,
    body: serde_json::Value,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let (status, state) = server
        .send_json("POST", &format!("{}/actions", incident_uri(id)), &body)
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}: {state}");
    Ok(state)
}

fn note_texts(state: &serde_json::Value) -> Vec<String> {
    state["notes"]
        .as_array()
        .map(|notes| {
            notes
                .iter()
                .map(|n| n["text"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A phone holding an incident closed pushes it heads-only; such a request writes nothing (it is
/// answered from a read connection) and brings down what was written after the close.
async fn a_heads_only_push_of_a_closed_incident_gets_what_was_written_after(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let mut replica = Replica::report(&phone, "window broken at the side door")?;
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    replica.apply(&resp)?;
    act(
        &server,
        replica.id(),
        json!({"action": "close", "by": "op-anna"}),
    )
    .await?;
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    replica.apply(&resp)?;
    assert_eq!(replica.doc.state()?.status, IncidentStatus::Closed);

    // Closed, and still written to: a note and an assignee.
    act(
        &server,
        replica.id(),
        json!({"action": "add_note", "text": "glazier booked", "by": "op-anna"}),
    )
    .await?;
    act(
        &server,
        replica.id(),
        json!({"action": "assign", "to": "guard-2", "by": "op-anna"}),
    )
    .await?;
    let before = server.snapshot().await?;
    let push = replica.push()?;
    assert!(push.changes.is_empty(), "nothing to send: heads only");
    let resp = server.sync(&phone.request(vec![push])).await?;
    assert_eq!(
        server.snapshot().await?,
        before,
        "a heads-only push writes nothing"
    );
    assert!(matches!(
        resp.docs[0].outcome,
        DocOutcome::Accepted {
            missing_deps: false,
            ..
        }
    ));
    replica.apply(&resp)?;
    let (status, room) = server.get_json(&incident_uri(replica.id())).await?;
    assert_eq!(status, StatusCode::OK);
    let state = replica.doc.state()?;
    assert_eq!(state.status, IncidentStatus::Closed);
    assert_eq!(state.assignee.as_deref(), Some("guard-2"));
    assert_eq!(
        state
            .notes
            .iter()
            .map(|n| n.text.clone())
            .collect::<Vec<_>>(),
        note_texts(&room)
    );

    // Up to date now: the same push is answered with the same heads and nothing to merge.
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    let update = update_for(&resp, replica.id()).ok_or("no update")?;
    assert!(update.changes.is_empty());
    assert_eq!(update.heads, replica.sorted_heads());
    Ok(())
}

/// The control room works an incident while the reporting phone edits it offline: both sides'
/// entries survive on both, and the phone is sent only the control room's changes.
async fn an_operators_action_and_a_phones_offline_edit_both_survive(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let mut replica = Replica::report(&phone, "car alarm in bay 12")?;
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    replica.apply(&resp)?;

    // The control room, now.
    let state = act(
        &server,
        replica.id(),
        json!({"action": "acknowledge", "by": "op-anna"}),
    )
    .await?;
    assert_eq!(state["status"], "acknowledged");
    let state = act(
        &server,
        replica.id(),
        json!({"action": "add_note", "text": "watching camera 4", "by": "op-anna"}),
    )
    .await?;
    assert_eq!(
        state["notes"][0]["by"],
        json!({"kind": "operator", "user": "op-anna"})
    );
    // The phone, offline meanwhile (its clock far ahead of the server's).
    replica.note(&phone, "owner found", 4_000_000_000_000)?;
    replica.doc.act(
        IncidentAction::SetSeverity(Severity::Low),
        guard_of(&phone),
        stamp(4_000_000_000_001),
        4_000_000_000_001,
    )?;

    let push = replica.push()?;
    let resp = server.sync(&phone.request(vec![push])).await?;
    let update = update_for(&resp, replica.id()).ok_or("no update")?.clone();
    let before = replica.doc.heads();
    replica.apply(&resp)?;
    // What came down is exactly what the phone lacked: the control room's two changes.
    assert_eq!(
        update.changes.len(),
        replica.doc.changes_since(&before).len()
    );
    assert!(!update.changes.is_empty());

    let (status, room) = server.get_json(&incident_uri(replica.id())).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(room["status"], "acknowledged");
    assert_eq!(room["severity"], "low");
    let mut notes = note_texts(&room);
    notes.sort();
    assert_eq!(notes, ["owner found", "watching camera 4"]);
    let phone_state = replica.doc.state()?;
    assert_eq!(phone_state.status, IncidentStatus::Acknowledged);
    assert_eq!(phone_state.notes.len(), 2);
    assert_eq!(phone_state.severity, Some(Severity::Low));

    // An operator acting after seeing the phone's entries is ordered after them, whatever the
    // phone's clock said.
    let state = act(
        &server,
        replica.id(),
        json!({"action": "set_severity", "severity": "critical", "by": "op-anna"}),
    )
    .await?;
    assert_eq!(state["severity"], "critical");
    // Every action is in the history with who wrote it and when, in clock order, the same as
    // the phone's own fold of what it holds.
    let history: Vec<(String, String, String)> = state["history"]
        .as_array()
        .ok_or("no history")?
        .iter()
        .map(|h| {
            let by = &h["by"];
            let who = by["guard"].as_str().or(by["user"].as_str()).unwrap_or("?");
            (
                who.to_owned(),
                h["at"].as_str().unwrap_or("?").to_owned(),
                h["what"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let whats: Vec<(&str, &str)> = history
        .iter()
        .map(|(who, _, what)| (who.as_str(), what.as_str()))
        .collect();
    assert_eq!(
        whats,
        [
            ("guard-1", "reported (theft, medium)"),
            ("op-anna", "acknowledged"),
            ("op-anna", "note: watching camera 4"),
            ("guard-1", "note: owner found"),
            ("guard-1", "severity low"),
            ("op-anna", "severity critical"),
        ]
    );
    assert_eq!(
        history[3].1, "2096-10-02T07:06:40.000Z",
        "the phone's wall time"
    );
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    replica.apply(&resp)?;
    let on_phone = serde_json::to_value(
        patrol_core::incident_view::IncidentView::without_update_time(&replica.doc.state()?),
    )?;
    assert_eq!(on_phone["history"], state["history"]);
    Ok(())
}

async fn incidents_are_listed_newest_first_and_filtered_by_status(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut replica = Replica::report(&phone, &format!("incident {n}"))?;
        server.sync(&phone.request(vec![replica.push()?])).await?;
        ids.push(replica.id());
    }
    act(
        &server,
        ids[1],
        json!({"action": "dispatch", "by": "op-anna"}),
    )
    .await?;

    let list_ids = |list: &serde_json::Value| -> Vec<String> {
        list["incidents"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|i| i["id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uri = format!("/api/v1/sites/{}/incidents", common::SITE);
    let (status, list) = server.get_json(&uri).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["site_id"], common::SITE);
    assert_eq!(list["more"], false);
    let expected: Vec<String> = ids.iter().rev().map(|id| id.to_string()).collect();
    assert_eq!(list_ids(&list), expected);
    let (_, open) = server.get_json(&format!("{uri}?status=open")).await?;
    assert_eq!(list_ids(&open), [ids[2].to_string(), ids[0].to_string()]);
    let (_, dispatched) = server.get_json(&format!("{uri}?status=dispatched")).await?;
    assert_eq!(list_ids(&dispatched), [ids[1].to_string()]);
    assert_eq!(dispatched["incidents"][0]["status"], "dispatched");
    let (_, first) = server.get_json(&format!("{uri}?limit=1")).await?;
    assert_eq!(list_ids(&first), [ids[2].to_string()]);
    assert_eq!(first["more"], true);
    Ok(())
}

async fn control_room_incident_calls_refuse_bad_input_and_change_nothing(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let mut replica = Replica::report(&phone, "broken window")?;
    server.sync(&phone.request(vec![replica.push()?])).await?;
    let id = replica.id();
    let actions = format!("{}/actions", incident_uri(id));
    let before = server.snapshot().await?;

    for (uri, status, code) in [
        (
            format!("/api/v1/sites/nowhere/incidents/{id}"),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
        (
            "/api/v1/sites/nowhere/incidents".to_string(),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
        (
            incident_uri(IncidentId::generate()),
            StatusCode::NOT_FOUND,
            "unknown_incident",
        ),
        (
            format!("/api/v1/sites/{}/incidents/not-a-uuid", common::SITE),
            StatusCode::BAD_REQUEST,
            "invalid_incident_id",
        ),
        (
            format!("/api/v1/sites/{}/incidents?status=lost", common::SITE),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ] {
        let (got, body) = server.get_json(&uri).await?;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{uri}: {body}"
        );
    }

    let post = |uri: String, content_type: &'static str, body: Vec<u8>| {
        let server = &server;
        async move {
            let req = Request::post(uri)
                .header(header::CONTENT_TYPE, content_type)
                .header(header::AUTHORIZATION, format!("Bearer {}", server.admin))
                .body(Body::from(body))?;
            let (status, _, body) = server.call(req).await?;
            let json: serde_json::Value = serde_json::from_slice(&body)?;
            Ok::<_, Box<dyn std::error::Error>>((status, json))
        }
    };
    let json = "application/json";
    // (case, uri, content type, body, expected status, expected error code)
    type Case<'a> = (&'a str, String, &'a str, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not json",
            actions.clone(),
            json,
            b"{\"action\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "wrong type",
            actions.clone(),
            "text/plain",
            br#"{"action":"close"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "unknown field",
            actions.clone(),
            json,
            br#"{"action":"close","why":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "unknown action",
            actions.clone(),
            json,
            br#"{"action":"fly"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_action",
        ),
        (
            "acting as another user",
            actions.clone(),
            json,
            br#"{"action":"acknowledge","by":"someone-else"}"#.to_vec(),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "empty note",
            actions.clone(),
            json,
            br#"{"action":"add_note","text":"  "}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_action",
        ),
        (
            "refused by status",
            actions.clone(),
            json,
            br#"{"action":"reopen"}"#.to_vec(),
            StatusCode::CONFLICT,
            "action_not_allowed",
        ),
        (
            "unknown incident",
            format!("{}/actions", incident_uri(IncidentId::generate())),
            json,
            br#"{"action":"close"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "unknown_incident",
        ),
        (
            "unknown site",
            format!("/api/v1/sites/nowhere/incidents/{id}/actions"),
            json,
            br#"{"action":"close"}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
    ];
    for (name, uri, content_type, body, status, code) in cases {
        let (got, body) = post(uri, content_type, body).await?;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    assert_eq!(server.snapshot().await?, before);

    // After a dispatch, acknowledging is refused with the core's words.
    act(&server, id, json!({"action": "dispatch", "by": "a"})).await?;
    let before = server.snapshot().await?;
    let (status, body) = server
        .send_json(
            "POST",
            &actions,
            &json!({"action": "acknowledge", "by": "a"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        "incident is dispatched; it cannot be acknowledged"
    );
    assert_eq!(server.snapshot().await?, before);
    Ok(())
}

/// Operator notes and phone notes sent at the same moment, many times over: the writes of one
/// incident are serialised, so none is lost.
async fn simultaneous_writes_to_one_incident_all_land(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let phone = server.phone("guard-1").await?;
    let mut replica = Replica::report(&phone, "water leak")?;
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    replica.apply(&resp)?;
    let actions = format!("{}/actions", incident_uri(replica.id()));
    for n in 0..20u64 {
        replica.note(&phone, &format!("phone {n}"), 1_740_866_500_000 + n)?;
        let request = phone.request(vec![replica.push()?]);
        let body = json!({"action": "add_note", "text": format!("room {n}"), "by": "op-anna"});
        let (synced, acted) = tokio::join!(
            server.sync(&request),
            server.send_json("POST", &actions, &body)
        );
        assert_eq!(acted?.0, StatusCode::OK);
        replica.apply(&synced?)?;
    }
    let (_, room) = server.get_json(&incident_uri(replica.id())).await?;
    let notes = note_texts(&room);
    assert_eq!(notes.len(), 40, "{notes:?}");
    for n in 0..20 {
        assert!(notes.contains(&format!("phone {n}")) && notes.contains(&format!("room {n}")));
    }
    // The phone converges on the same incident at its next exchange.
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    replica.apply(&resp)?;
    assert_eq!(replica.doc.state()?.notes.len(), 40);
    Ok(())
}

/// A phone's new incident queues `incident.created` for the endpoints subscribed to it, in its
/// sync's transaction; an operator's action and a phone's new changes `incident.changed`, once
/// per state; a refused action or a push already merged queues nothing.
async fn incident_writes_queue_their_webhooks(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let site = site();
    let (status, created) = server
        .send_json(
            "POST",
            &format!("/api/v1/sites/{}/webhooks", common::SITE),
            &json!({"url": "https://example.org/h",
                    "events": ["incident.created", "incident.changed"]}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let deliveries = || async {
        let list = server
            .store()
            .webhook_deliveries(site.clone(), None, 100)
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(
            list.into_iter()
                .rev()
                .map(|d| (d.event_type, d.key, d.body))
                .collect::<Vec<_>>(),
        )
    };
    let phone = server.phone("guard-1").await?;
    let mut replica = Replica::report(&phone, "a broken gate")?;
    let resp = server.sync(&phone.request(vec![replica.push()?])).await?;
    replica.apply(&resp)?;
    let id = replica.id();
    let queued = deliveries().await?;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, "incident.created");
    assert_eq!(queued[0].1, format!("incident.created:{id}"));
    let body: serde_json::Value = serde_json::from_str(&queued[0].2)?;
    assert_eq!(body["data"]["incident"]["id"], id.to_string());
    assert_eq!(body["data"]["incident"]["description"], "a broken gate");

    // The same push again changes nothing, and queues nothing.
    server.sync(&phone.request(vec![replica.push()?])).await?;
    assert_eq!(deliveries().await?.len(), 1);

    act(&server, id, json!({"action": "dispatch", "by": "op-anna"})).await?;
    let queued = deliveries().await?;
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert_eq!(queued[1].0, "incident.changed");
    assert!(queued[1].1.starts_with(&format!("incident.changed:{id}:")));
    let body: serde_json::Value = serde_json::from_str(&queued[1].2)?;
    assert_eq!(body["data"]["incident"]["status"], "dispatched");

    // Refused by the status rules (a dispatched incident is not dispatched again): nothing.
    let (status, _) = server
        .send_json(
            "POST",
            &format!("{}/actions", incident_uri(id)),
            &json!({"action": "reopen", "by": "op-anna"}),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(deliveries().await?.len(), 2);

    // The phone's note is a new state: one more.
    replica.note(&phone, "gate wired shut", 1_740_866_500_000)?;
    server.sync(&phone.request(vec![replica.push()?])).await?;
    let queued = deliveries().await?;
    assert_eq!(queued.len(), 3, "{queued:?}");
    assert_eq!(queued[2].0, "incident.changed");
    assert_ne!(queued[2].1, queued[1].1);
    Ok(())
}

crate::on_every_backend!(
    incident_pushes_are_merged_and_answered_in_the_requests_order,
    forged_incident_pushes_are_rejected_and_change_nothing,
    a_phone_on_shift_gets_every_open_incident_and_one_off_shift_only_its_own,
    an_operators_action_and_a_phones_offline_edit_both_survive,
    incidents_are_listed_newest_first_and_filtered_by_status,
    control_room_incident_calls_refuse_bad_input_and_change_nothing,
    simultaneous_writes_to_one_incident_all_land,
    a_heads_only_push_of_a_closed_incident_gets_what_was_written_after,
    incident_writes_queue_their_webhooks,
);
