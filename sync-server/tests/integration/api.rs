//! The HTTP API end to end through the real router and a real SQLite store.

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use patrol_core::protocol::{self, DocOutcome, DocPush, DocRef, RejectCode};
use patrol_core::{EventBody, ShiftId};
use patrol_server::config::ApiConfig;

use crate::common::{self, Backend, Phone, SITE, TestResult, TestServer};

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message in {v}"
    );
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {v}"))
        .to_string()
}

async fn a_shift_log_syncs_into_the_feed(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    phone.scan("cp-2")?;
    phone.record(EventBody::Note {
        text: "door 3 open".into(),
    })?;

    let push = phone.push()?;
    let resp = server.sync(&phone.request(vec![push])).await?;
    assert_eq!(resp.docs.len(), 1);
    assert_eq!(resp.docs[0].doc, DocRef::ShiftLog(phone.shift()));
    let DocOutcome::Accepted {
        heads,
        new_events,
        missing_deps,
    } = &resp.docs[0].outcome
    else {
        panic!("rejected: {:?}", resp.docs[0].outcome);
    };
    assert_eq!((*new_events, *missing_deps), (4, false));
    assert_eq!(heads, &protocol::to_wire(&phone.log.heads()));
    assert_eq!(
        phone.on_accepted(&resp.docs[0].outcome),
        0,
        "everything is delivered"
    );
    assert!((resp.server_time_ms - common::crate_now_ms()).abs() < 60_000);

    let events = server.whole_feed(1000).await?;
    assert_eq!(events.len(), 4);
    for (i, (event, id)) in events.iter().zip(&phone.recorded).enumerate() {
        let n = i as u64 + 1;
        assert_eq!(event["seq"], n);
        assert_eq!(event["id"], id.to_string());
        assert_eq!(event["site_id"], SITE);
        assert_eq!(event["device_id"], phone.device.to_string());
        assert_eq!(event["shift_id"], phone.shift().to_string());
        assert_eq!(event["guard_id"], "guard-1");
        assert_eq!(event["device_seq"], n);
        assert_eq!(
            event["device_time"],
            patrol_core::event::format_time_ms(Phone::wall_ms(n))
        );
        assert!(
            event["received_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{event}"
        );
    }
    assert_eq!(events[0]["kind"], "shift_started");
    assert_eq!(events[1]["kind"], "checkpoint_scanned");
    assert_eq!(events[1]["checkpoint"], "cp-1");
    assert_eq!(events[3]["text"], "door 3 open");

    let (status, devices) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(devices["site_id"], SITE);
    let list = devices["devices"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["device_id"], phone.device.to_string());
    // The phone held 4 undelivered events, all in a push the server accepted.
    assert_eq!(list[0]["pending_events"], 0);
    let skew = list[0]["clock_skew_ms"].as_i64().unwrap_or(i64::MIN);
    assert!((1_000..60_000).contains(&skew), "skew {skew}");
    assert!(list[0]["last_sync_at"].as_str().is_some());

    let (status, _, body) = server
        .call(Request::get("/healthz").body(Body::empty())?)
        .await?;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    Ok(())
}

async fn a_repeated_request_changes_nothing(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    let request = phone.push_request()?;

    let first = server.sync(&request).await?;
    let before = server.snapshot().await?;
    // The very same request again is a replay: refused, nothing changes.
    let (status, _, body) = server.try_sync(&request).await?;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "replayed_request");
    assert_eq!(server.snapshot().await?, before);
    // The same push in a fresh request (a retry after a lost answer) changes nothing either.
    let second = server.sync(&phone.request(request.docs.clone())).await?;
    assert_eq!(server.snapshot().await?, before);
    let (
        DocOutcome::Accepted {
            heads: h1,
            new_events: 2,
            ..
        },
        DocOutcome::Accepted {
            heads: h2,
            new_events: 0,
            ..
        },
    ) = (&first.docs[0].outcome, &second.docs[0].outcome)
    else {
        panic!("unexpected outcomes {first:?} {second:?}");
    };
    assert_eq!(h1, h2);

    // A heads-only push after the acknowledgement changes nothing either.
    phone.on_accepted(&first.docs[0].outcome);
    let heads_only = phone.push()?;
    assert!(heads_only.changes.is_empty());
    let third = server.sync(&phone.request(vec![heads_only])).await?;
    assert!(
        matches!(&third.docs[0].outcome, DocOutcome::Accepted { heads, new_events: 0, .. } if heads == h1)
    );
    assert_eq!(server.snapshot().await?, before);
    assert_eq!(server.count("SELECT COUNT(*) FROM devices").await?, 1);
    Ok(())
}

async fn bad_requests_get_a_clear_4xx_and_change_nothing(backend: Backend) -> TestResult {
    let server = TestServer::with_config(
        backend,
        ApiConfig {
            max_body_bytes: 64 * 1024,
            ..ApiConfig::default()
        },
    )
    .await?;
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    let good = phone.push_request()?.encode()?;
    let ct = Some(protocol::CONTENT_TYPE);
    let before = server.snapshot().await?;

    let mut wrong_version = good.clone();
    wrong_version[4] = 99;
    let mut other_site = phone.push_request()?;
    other_site.site = patrol_core::SiteId::new("no-such-site")?;

    // (case, content type, body, expected status, expected error code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "garbage",
            ct,
            b"hello, server".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            "empty",
            ct,
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            "truncated",
            ct,
            good[..good.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            "version",
            ct,
            wrong_version,
            StatusCode::BAD_REQUEST,
            "unsupported_version",
        ),
        (
            "json",
            Some("application/json"),
            good.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no type",
            None,
            good.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "too large",
            ct,
            vec![0; 65 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "another site than the credential's",
            ct,
            other_site.encode()?,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (name, content_type, body, status, code) in cases {
        let (got, ct, resp) = server
            .post_sync(Some(&phone.credential), content_type, body)
            .await?;
        assert_eq!(got, status, "{name}: {}", String::from_utf8_lossy(&resp));
        assert_eq!(ct, "application/json", "{name}");
        assert_eq!(error_code(&resp), code, "{name}");
    }
    assert_eq!(server.snapshot().await?, before);
    assert_eq!(server.count("SELECT COUNT(*) FROM devices").await?, 0);
    assert!(server.whole_feed(10).await?.is_empty());

    // The feed's own bad input.
    for (uri, status, code) in [
        (
            format!("/api/v1/sites/{SITE}/events?after=-1"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("/api/v1/sites/{SITE}/events?limit=0"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("/api/v1/sites/{SITE}/events?limit=10001"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            format!("/api/v1/sites/{SITE}/events?after=abc"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/api/v1/sites/nowhere/events".into(),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
        (
            "/api/v1/sites/nowhere/devices".into(),
            StatusCode::NOT_FOUND,
            "unknown_site",
        ),
        (
            "/api/v1/sites/bad%20id/events".into(),
            StatusCode::BAD_REQUEST,
            "invalid_site_id",
        ),
        (
            "/api/v1/nothing-here".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let (got, body) = server.get_json(&uri).await?;
        assert_eq!(
            (got, error_code(body.to_string().as_bytes()).as_str()),
            (status, code),
            "{uri}"
        );
    }
    let (got, _, body) = server
        .call(Request::get("/api/v1/sync").body(Body::empty())?)
        .await?;
    assert_eq!(
        (got, error_code(&body).as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    Ok(())
}

async fn per_document_problems_are_rejected_while_the_rest_of_the_batch_lands(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut alice = server.phone("guard-a").await?;
    alice.scan("cp-1")?;
    let mut bob = server.phone("guard-b").await?;
    bob.scan("cp-2")?;
    bob.scan("cp-3")?;

    // Bob's own log, Alice's log (made by Alice's actor) pushed as Bob's, a corrupt bundle,
    // and Bob's changes pushed under another shift's id.
    let bob_push = bob.push()?;
    let mut alice_as_bob = alice.push()?;
    alice_as_bob.doc = DocRef::ShiftLog(alice.shift());
    let corrupt = DocPush {
        doc: DocRef::ShiftLog(ShiftId::generate()),
        have: vec![],
        changes: vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3],
        events: 1,
        signature: None,
    };
    let mut wrong_shift = bob.push()?;
    wrong_shift.doc = DocRef::ShiftLog(ShiftId::generate());
    let resp = server
        .sync(&bob.request(vec![alice_as_bob, bob_push, corrupt, wrong_shift]))
        .await?;

    let outcomes: Vec<_> = resp.docs.iter().map(|d| &d.outcome).collect();
    assert!(
        matches!(
            outcomes[0],
            DocOutcome::Rejected {
                code: RejectCode::ForeignActor,
                ..
            }
        ),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(outcomes[1], DocOutcome::Accepted { new_events: 3, .. }),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(
            outcomes[2],
            DocOutcome::Rejected {
                code: RejectCode::Malformed,
                ..
            }
        ),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(
            outcomes[3],
            DocOutcome::Rejected {
                code: RejectCode::WrongOwner,
                ..
            }
        ),
        "{:?}",
        outcomes[3]
    );
    if let DocOutcome::Rejected { message, .. } = outcomes[0] {
        assert!(message.contains("actor"), "{message}");
    }

    let feed = server.whole_feed(100).await?;
    assert_eq!(feed.len(), 3);
    assert!(
        feed.iter()
            .all(|e| e["device_id"] == bob.device.to_string())
    );
    assert_eq!(server.count("SELECT COUNT(*) FROM docs").await?, 1);

    // Alice syncs her own log; then Bob tries to write into it: rejected, her log unchanged.
    let resp = server.sync(&alice.push_request()?).await?;
    assert!(matches!(
        resp.docs[0].outcome,
        DocOutcome::Accepted { new_events: 2, .. }
    ));
    let before = server.snapshot().await?;
    let mut intruder = bob.push()?;
    intruder.doc = DocRef::ShiftLog(alice.shift());
    let resp = server.sync(&bob.request(vec![intruder])).await?;
    assert!(matches!(
        resp.docs[0].outcome,
        DocOutcome::Rejected {
            code: RejectCode::WrongOwner,
            ..
        }
    ));
    // Alice's own log pushed by Bob, on top of her stored copy.
    alice.scan("cp-9")?;
    let mut stolen = alice.push()?;
    stolen.doc = DocRef::ShiftLog(alice.shift());
    let resp = server.sync(&bob.request(vec![stolen])).await?;
    assert!(matches!(
        resp.docs[0].outcome,
        DocOutcome::Rejected {
            code: RejectCode::WrongOwner,
            ..
        }
    ));
    assert_eq!(server.snapshot().await?, before);
    Ok(())
}

async fn paging_returns_every_event_once_in_order(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phones = vec![
        server.phone("guard-1").await?,
        server.phone("guard-2").await?,
        server.phone("guard-3").await?,
    ];
    for round in 0..5 {
        for (p, phone) in phones.iter_mut().enumerate() {
            for k in 0..(3 + p) {
                phone.scan(&format!("cp-{round}-{k}"))?;
            }
            let push = phone.push()?;
            let resp = server.sync(&phone.request(vec![push])).await?;
            phone.on_accepted(&resp.docs[0].outcome);
        }
    }
    let recorded: HashSet<String> = phones
        .iter()
        .flat_map(|p| p.recorded.iter().map(|id| id.to_string()))
        .collect();

    for limit in [1, 7, 1000] {
        let feed = server.whole_feed(limit).await?;
        let seqs: Vec<u64> = feed
            .iter()
            .map(|e| e["seq"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(
            seqs,
            (1..=recorded.len() as u64).collect::<Vec<_>>(),
            "limit {limit}"
        );
        let ids: HashSet<String> = feed
            .iter()
            .map(|e| e["id"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(ids, recorded);
    }
    // Within one device, the feed keeps the device's order.
    let feed = server.whole_feed(1000).await?;
    for phone in &phones {
        let mine: Vec<u64> = feed
            .iter()
            .filter(|e| e["device_id"] == phone.device.to_string())
            .map(|e| e["device_seq"].as_u64().unwrap_or(0))
            .collect();
        assert_eq!(mine, (1..=phone.seq).collect::<Vec<_>>());
    }

    let total = recorded.len() as u64;
    let (status, end) = server
        .get_json(&format!("/api/v1/sites/{SITE}/events?after={total}"))
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        end,
        serde_json::json!({"site_id": SITE, "events": [], "next": total, "more": false})
    );
    let (_, page) = server
        .get_json(&format!("/api/v1/sites/{SITE}/events?after=10&limit=5"))
        .await?;
    assert_eq!(
        (page["next"].as_u64(), page["more"].as_bool()),
        (Some(15), Some(true))
    );
    assert_eq!(page["events"][0]["seq"], 11);
    // The cursor is in the headers too, for a client that asks for the next page before it
    // has read this one.
    let headers = server
        .get_headers(&format!("/api/v1/sites/{SITE}/events?after=10&limit=5"))
        .await?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("patrol-next-cursor").as_deref(), Some("15"));
    assert_eq!(header("patrol-more").as_deref(), Some("true"));
    assert_eq!(
        header("link").as_deref(),
        Some(format!("</api/v1/sites/{SITE}/events?after=15&limit=5>; rel=\"next\"").as_str())
    );
    // Guards' records are kept by no cache, and no browser guesses their type.
    assert_eq!(header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    Ok(())
}

async fn the_store_survives_a_restart_and_compacts(backend: Backend) -> TestResult {
    let mut server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    let mut last = None;
    // One event per sync: enough chunks to pass the compaction threshold.
    for i in 0..25 {
        phone.scan(&format!("cp-{i}"))?;
        let push = phone.push()?;
        let resp = server.sync(&phone.request(vec![push])).await?;
        assert_eq!(phone.on_accepted(&resp.docs[0].outcome), 0);
        last = Some(resp.docs[0].outcome.clone());
    }
    let chunks = server.count("SELECT COUNT(*) FROM doc_chunks").await?;
    assert!((1..=16).contains(&chunks), "{chunks} chunks");
    assert_eq!(server.count("SELECT chunk_count FROM docs").await?, chunks);
    let feed_before = server.whole_feed(1000).await?;
    assert_eq!(feed_before.len(), 26);
    let snapshot = server.snapshot().await?;

    server.reopen().await?;
    assert_eq!(server.snapshot().await?, snapshot);
    assert_eq!(server.whole_feed(1000).await?, feed_before);

    // The restarted server still has the whole log: a resend from scratch adds nothing...
    phone.acked.clear();
    let resp = server.sync(&phone.push_request()?).await?;
    let Some(DocOutcome::Accepted {
        heads: old_heads, ..
    }) = &last
    else {
        panic!("no outcome")
    };
    assert!(
        matches!(&resp.docs[0].outcome, DocOutcome::Accepted { heads, new_events: 0, missing_deps: false } if heads == old_heads)
    );
    assert_eq!(server.snapshot().await?, snapshot);
    // ...and a new event continues the sequence.
    phone.scan("cp-last")?;
    let resp = server.sync(&phone.push_request()?).await?;
    assert!(matches!(
        resp.docs[0].outcome,
        DocOutcome::Accepted { new_events: 1, .. }
    ));
    let feed = server.whole_feed(1000).await?;
    assert_eq!(
        feed.last().map(|e| e["seq"].clone()),
        Some(serde_json::json!(27))
    );
    Ok(())
}

/// (SQLite only: it restores a copy of the database, see [`TestServer::copy`].)
#[tokio::test]
async fn a_push_missing_its_first_change_asks_for_everything() -> TestResult {
    let server = TestServer::sqlite().await?;
    let mut phone = server.phone("guard-1").await?;
    // A second server restored from a backup made before the phone's first sync: it knows the
    // phone but never saw its first change.
    let other = server.copy()?;
    let first = server.sync(&phone.push_request()?).await?;
    let first_heads = match &first.docs[0].outcome {
        DocOutcome::Accepted { heads, .. } => heads.clone(),
        other => panic!("{other:?}"),
    };
    phone.scan("cp-1")?;

    // The phone sends only what is new to the restored server.
    phone.acked = protocol::from_wire(&first_heads);
    let resp = other.sync(&phone.push_request()?).await?;
    assert!(
        matches!(
            resp.docs[0].outcome,
            DocOutcome::Accepted {
                new_events: 0,
                missing_deps: true,
                ..
            }
        ),
        "{:?}",
        resp.docs[0].outcome
    );
    assert!(other.whole_feed(10).await?.is_empty());
    // The phone learns the server has nothing and sends everything.
    phone.on_accepted(&resp.docs[0].outcome);
    let resp = other.sync(&phone.push_request()?).await?;
    assert!(matches!(
        resp.docs[0].outcome,
        DocOutcome::Accepted {
            new_events: 2,
            missing_deps: false,
            ..
        }
    ));
    Ok(())
}

/// The device list names each device's guard: the guard of its most recent shift the server
/// holds a log of (the one the phone started last, even when an older shift's log syncs
/// later), null for a device that has synced no shift yet.
async fn the_device_list_names_the_guard_of_each_devices_latest_shift(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let guards = |devices: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        devices["devices"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|d| {
                        (
                            d["device_id"].as_str().unwrap_or("").to_owned(),
                            d["guard"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let uri = format!("/api/v1/sites/{SITE}/devices");
    let mut anna = server.phone("anna").await?;
    let idle = server.enroll_on(SITE).await?;
    let resp = server.sync(&anna.push_request()?).await?;
    anna.on_accepted(&resp.docs[0].outcome);
    let (status, devices) = server.get_json(&uri).await?;
    assert_eq!(status, StatusCode::OK, "{devices}");
    let mut expected = vec![
        (anna.device.to_string(), serde_json::json!("anna")),
        (idle.device.to_string(), serde_json::Value::Null),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(guards(&devices), expected, "{devices}");

    // The same phone, a new shift for another guard: bob is on it now.
    let mut bob = Phone::new(
        common::Enrolled {
            device: anna.device,
            credential: anna.credential.clone(),
        },
        "bob",
    )?;
    assert!(bob.shift() > anna.shift());
    bob.request_seq = anna
        .request_seq
        .load(std::sync::atomic::Ordering::Relaxed)
        .into();
    server.sync(&bob.push_request()?).await?;
    // A late change to anna's earlier shift does not make her the device's guard again.
    anna.request_seq = bob
        .request_seq
        .load(std::sync::atomic::Ordering::Relaxed)
        .into();
    anna.scan("cp-9")?;
    server.sync(&anna.push_request()?).await?;
    let (_, devices) = server.get_json(&uri).await?;
    let listed = guards(&devices);
    assert!(
        listed.contains(&(anna.device.to_string(), serde_json::json!("bob"))),
        "{devices}"
    );
    assert!(
        listed.contains(&(idle.device.to_string(), serde_json::Value::Null)),
        "{devices}"
    );
    Ok(())
}

/// A query parameter an endpoint does not take (a misspelt filter above all: `gaurd=g1` would
/// otherwise return every guard's events as if filtered) is refused with 400 `invalid_query`,
/// naming it and the parameters the endpoint takes; so is one given twice. On the paged feed,
/// the live stream and the incident list alike.
#[tokio::test]
async fn an_unknown_query_parameter_is_refused_and_named() -> TestResult {
    let server = TestServer::sqlite().await?;
    for (query, named) in [
        (
            format!("/api/v1/sites/{SITE}/events?gaurd=g1"),
            &["`gaurd`", "`guard`", "`after`", "`checkpoint`"][..],
        ),
        (
            format!("/api/v1/sites/{SITE}/events?after=0&limit=5&Kind=panic"),
            &["`Kind`", "`kind`"],
        ),
        (
            format!("/api/v1/sites/{SITE}/events?guard=g1&guard=g2"),
            &["given twice", "`guard`"],
        ),
        (
            format!("/api/v1/sites/{SITE}/stream?gaurd=g1"),
            &["`gaurd`", "`guard`"],
        ),
        (
            format!("/api/v1/sites/{SITE}/incidents?stauts=open"),
            &["`stauts`", "`status`", "`limit`"],
        ),
    ] {
        let (status, body) = server.get_json(&query).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], "invalid_query", "{query}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("unknown query parameter")
                || message.starts_with("query parameter given twice"),
            "{query}: {message}"
        );
        for name in named {
            assert!(message.contains(name), "{query}: {message}");
        }
    }
    // The parameters it does take still work, empty ones included.
    for query in [
        format!("/api/v1/sites/{SITE}/events?guard=g1&kind=&after=0"),
        format!("/api/v1/sites/{SITE}/incidents?status=open&limit=5"),
    ] {
        let (status, body) = server.get_json(&query).await?;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
    }
    Ok(())
}

crate::on_every_backend!(
    a_shift_log_syncs_into_the_feed,
    a_repeated_request_changes_nothing,
    bad_requests_get_a_clear_4xx_and_change_nothing,
    per_document_problems_are_rejected_while_the_rest_of_the_batch_lands,
    paging_returns_every_event_once_in_order,
    the_store_survives_a_restart_and_compacts,
    the_device_list_names_the_guard_of_each_devices_latest_shift,
);
