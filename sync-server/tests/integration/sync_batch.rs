//! A sync request is applied in one transaction, with the documents merged outside the write
//! lock: concurrent pushes of one log converge, rejected documents leave the rest (and the
//! device's row) to commit.

use std::collections::HashSet;

use patrol_core::ShiftId;
use patrol_core::protocol::{DocOutcome, DocRef, RejectCode, SyncRequest};

use crate::common::{Backend, SITE, TestResult, TestServer};

/// Every event of the feed once, numbered 1..=n without gaps; returns the ids.
async fn feed_ids(server: &TestServer) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let feed = server.whole_feed(10_000).await?;
    let seqs: Vec<u64> = feed.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=feed.len() as u64).collect::<Vec<_>>());
    let ids: Vec<String> = feed
        .iter()
        .filter_map(|e| e["id"].as_str().map(String::from))
        .collect();
    assert_eq!(ids.len(), feed.len());
    Ok(ids)
}

fn new_events(outcome: &DocOutcome) -> u32 {
    match outcome {
        DocOutcome::Accepted {
            new_events,
            missing_deps: false,
            ..
        } => *new_events,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// Several phones each send three overlapping requests for their one log at the same time
/// (the first half of the log, all of it, all of it again), over several rounds: the requests
/// merge in parallel from the same stored version, so most of them find the log changed when
/// they come to write and merge again. Nothing is lost, nothing is projected twice, and every
/// event is counted new exactly once.
async fn concurrent_pushes_of_one_log_converge_without_duplicates(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phones = Vec::new();
    for p in 0..6 {
        phones.push(server.phone(&format!("guard-{p}")).await?);
    }
    let mut counted_new = 0u64;
    for round in 0..4 {
        let mut requests = Vec::new();
        for (p, phone) in phones.iter_mut().enumerate() {
            for k in 0..20 {
                phone.scan(&format!("cp-{round}-{k}"))?;
            }
            let half = phone.push_request()?;
            for k in 20..40 {
                phone.scan(&format!("cp-{round}-{k}"))?;
            }
            let all = phone.push_request()?;
            let again = phone.request(all.docs.clone());
            requests.extend([(p, half), (p, all), (p, again)]);
        }
        // A request that commits after a later one of its phone is refused as stale (409) and
        // sent again with a fresh seq, as a phone does: the merges still race.
        let answers = futures_join_all(
            requests
                .iter()
                .map(|(p, r)| server.sync_fresh_on_replay(&phones[*p], r))
                .collect::<Vec<_>>(),
        )
        .await;
        for (answer, phone_index) in answers
            .into_iter()
            .zip((0..phones.len()).flat_map(|p| [p; 3]))
        {
            let answer = answer?;
            counted_new += u64::from(new_events(&answer.docs[0].outcome));
            // The last answer's heads cover what the phone holds once every request landed.
            phones[phone_index].on_accepted(&answer.docs[0].outcome);
        }
        for phone in &mut phones {
            assert_eq!(phone.push()?.events, 0, "round {round}: all acknowledged");
        }
    }

    let recorded: Vec<String> = phones
        .iter()
        .flat_map(|p| p.recorded.iter().map(|id| id.to_string()))
        .collect();
    let ids = feed_ids(&server).await?;
    assert_eq!(
        ids.len(),
        recorded.len(),
        "no event lost or projected twice"
    );
    assert_eq!(
        ids.iter().collect::<HashSet<_>>(),
        recorded.iter().collect::<HashSet<_>>()
    );
    assert_eq!(counted_new, recorded.len() as u64);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM docs").await?,
        phones.len() as i64
    );

    // The stored logs load and hold everything: a push of each whole log adds nothing.
    for phone in &mut phones {
        phone.acked.clear();
        let answer = server.sync(&phone.push_request()?).await?;
        assert_eq!(new_events(&answer.docs[0].outcome), 0);
    }
    assert_eq!(feed_ids(&server).await?, ids);
    Ok(())
}

/// `join_all` without a dependency: polls the futures concurrently on this task.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::with_capacity(futures.len());
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, f) in out.iter_mut().zip(set.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The same log twice in one request (an older and a newer push): the second is merged on top
/// of the first within the request's transaction.
async fn one_log_twice_in_a_request_lands_once(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    for k in 0..10 {
        phone.scan(&format!("cp-{k}"))?;
    }
    let older = phone.push()?;
    for k in 10..20 {
        phone.scan(&format!("cp-{k}"))?;
    }
    let newer = phone.push()?;
    let answer = server
        .sync(&phone.request(vec![older, newer.clone(), newer]))
        .await?;
    let counted: Vec<u32> = answer.docs.iter().map(|d| new_events(&d.outcome)).collect();
    assert_eq!(counted, vec![11, 10, 0]);
    assert_eq!(phone.on_accepted(&answer.docs[2].outcome), 0);
    assert_eq!(feed_ids(&server).await?.len(), 21);
    assert_eq!(server.count("SELECT COUNT(*) FROM docs").await?, 1);
    Ok(())
}

/// A request with a rejected document and an accepted one: the accepted log, its events and
/// the device's row commit; the rejected document leaves no trace. A request whose documents
/// are all rejected still records the device's sync.
async fn a_rejected_document_does_not_hold_back_the_accepted_one_or_the_device_row(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut alice = server.phone("guard-a").await?;
    alice.scan("cp-1")?;
    let mut bob = server.phone("guard-b").await?;
    bob.scan("cp-2")?;
    bob.scan("cp-3")?;

    let mut alice_as_bob = alice.push()?;
    alice_as_bob.doc = DocRef::ShiftLog(alice.shift());
    let bob_push = bob.push()?;
    let bob_events = u64::from(bob_push.events);
    let request = SyncRequest {
        pending_events: bob_events + 5,
        ..bob.request(vec![alice_as_bob, bob_push])
    };
    let answer = server.sync(&request).await?;
    assert!(
        matches!(
            answer.docs[0].outcome,
            DocOutcome::Rejected {
                code: RejectCode::ForeignActor,
                ..
            }
        ),
        "{:?}",
        answer.docs[0].outcome
    );
    assert_eq!(new_events(&answer.docs[1].outcome), 3);

    let ids = feed_ids(&server).await?;
    let bob_ids: Vec<String> = bob.recorded.iter().map(|id| id.to_string()).collect();
    assert_eq!(ids, bob_ids);
    assert_eq!(server.count("SELECT COUNT(*) FROM docs").await?, 1);
    assert_eq!(server.count("SELECT COUNT(*) FROM doc_chunks").await?, 1);
    let (_, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    let list = devices["devices"].as_array().cloned().unwrap_or_default();
    let entry = |list: &[serde_json::Value], device: patrol_core::DeviceId| {
        list.iter()
            .find(|d| d["device_id"] == device.to_string())
            .cloned()
            .unwrap_or_default()
    };
    // Both are enrolled; only Bob has synced.
    assert_eq!(list.len(), 2, "{devices}");
    assert!(entry(&list, alice.device)["last_sync_at"].is_null());
    // Only the accepted push counts as delivered.
    assert_eq!(entry(&list, bob.device)["pending_events"], 5);

    // Alice: every document rejected, yet her sync is on record.
    let mut wrong_shift = alice.push()?;
    wrong_shift.doc = DocRef::ShiftLog(ShiftId::generate());
    let answer = server.sync(&alice.request(vec![wrong_shift])).await?;
    assert!(matches!(
        answer.docs[0].outcome,
        DocOutcome::Rejected {
            code: RejectCode::WrongOwner,
            ..
        }
    ));
    let (_, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    let list = devices["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 2, "{devices}");
    assert!(entry(&list, alice.device)["last_sync_at"].is_string());
    assert_eq!(feed_ids(&server).await?, bob_ids);
    Ok(())
}

/// With one sync admitted at a time, concurrent requests queue and all land.
async fn requests_beyond_the_admission_limit_wait_and_land(backend: Backend) -> TestResult {
    let mut server = TestServer::new(backend).await?;
    server.state = server.state.clone().with_max_concurrent_syncs(1);
    let mut phones = Vec::new();
    let mut requests = Vec::new();
    for p in 0..8 {
        let mut phone = server.phone(&format!("guard-{p}")).await?;
        phone.scan("cp-1")?;
        requests.push(phone.push_request()?);
        phones.push(phone);
    }
    let answers =
        futures_join_all(requests.iter().map(|r| server.sync(r)).collect::<Vec<_>>()).await;
    for answer in answers {
        assert_eq!(new_events(&answer?.docs[0].outcome), 2);
    }
    assert_eq!(feed_ids(&server).await?.len(), 16);
    Ok(())
}

crate::on_every_backend!(
    concurrent_pushes_of_one_log_converge_without_duplicates,
    one_log_twice_in_a_request_lands_once,
    a_rejected_document_does_not_hold_back_the_accepted_one_or_the_device_row,
    requests_beyond_the_admission_limit_wait_and_land,
);
