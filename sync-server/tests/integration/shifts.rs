//! The shift listing and the devices view's shifts and gaps, on every backend: shifts listed
//! with their fields after syncs (open and ended, signed or not), filtered and paged; one shift
//! by id; each device's open shift, pending count with its time, silence and overdue shift.

use axum::http::StatusCode;
use patrol_core::EventBody;
use patrol_core::event::format_time_ms;
use patrol_core::evidence::DeviceKey;
use patrol_server::store::{ShiftLogPush, SyncBatch};
use serde_json::Value;

use crate::common::{self, Backend, Phone, SITE, TestResult, TestServer, site};

/// The `shift_id`s of a listing page.
fn ids(page: &Value) -> Vec<String> {
    page["shifts"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| s["shift_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn list(server: &TestServer, query: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let (status, page) = server
        .get_json(&format!("/api/v1/sites/{SITE}/shifts{query}"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    Ok(page)
}

/// Anna's phone signs and is still on shift; bob's does not sign and has ended his; carol's
/// started an hour later than both. The listing shows each with its guard, device, start, end,
/// events, whether its end was delivered and its log signed; the filters pick them out and the
/// pages walk them in shift-id order.
async fn shifts_are_listed_with_their_fields_and_filtered(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let key = DeviceKey::generate()?;
    let mut anna =
        Phone::new(server.enroll_with_key(SITE, Some(&key)).await?, "anna")?.signing(key);
    let mut bob = server.phone("bob").await?;
    let mut carol = Phone::new_at(server.enroll_on(SITE).await?, "carol", 3_600_000)?;
    anna.scan("cp-1")?;
    anna.scan("cp-2")?;
    bob.scan("cp-1")?;
    bob.record(EventBody::ShiftEnded { note: None })?;
    for phone in [&mut anna, &mut bob, &mut carol] {
        let resp = server.sync(&phone.push_request()?).await?;
        phone.on_accepted(&resp.docs[0].outcome);
    }
    let mut order = [anna.shift(), bob.shift(), carol.shift()];
    order.sort();
    let order: Vec<String> = order.iter().map(ToString::to_string).collect();

    let all = list(&server, "").await?;
    assert_eq!(ids(&all), order, "{all}");
    assert_eq!(all["more"], false);
    let shift = |page: &Value, id: &str| -> Value {
        page["shifts"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["shift_id"] == id).cloned())
            .unwrap_or(Value::Null)
    };
    let a = shift(&all, &anna.shift().to_string());
    assert_eq!(a["guard"], "anna");
    assert_eq!(a["device_id"], anna.device.to_string());
    assert_eq!(a["started_at"], format_time_ms(Phone::wall_ms(1)));
    assert_eq!(a["ended_at"], Value::Null);
    assert_eq!(a["end_delivered"], false);
    assert_eq!(a["events"], 3);
    assert_eq!(a["signed"], true, "{a}");
    assert_eq!(a["signatures"], 1);
    assert!(a["last_signed_at"].is_string(), "{a}");
    assert!(a["last_event_at"].is_string(), "{a}");
    let b = shift(&all, &bob.shift().to_string());
    assert_eq!(b["ended_at"], format_time_ms(Phone::wall_ms(3)));
    assert_eq!(b["end_delivered"], true);
    assert_eq!(b["events"], 3);
    assert_eq!(
        (&b["signed"], &b["signatures"]),
        (&Value::Bool(false), &0.into())
    );
    assert_eq!(b["last_signed_at"], Value::Null);

    // A later sync moves the counts and the signature on; a repeated push changes nothing.
    anna.scan("cp-3")?;
    let resp = server.sync(&anna.push_request()?).await?;
    anna.on_accepted(&resp.docs[0].outcome);
    server.sync(&anna.push_request()?).await?;
    let (status, one) = server
        .get_json(&format!("/api/v1/sites/{SITE}/shifts/{}", anna.shift()))
        .await?;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(
        (&one["events"], &one["signatures"]),
        (&4.into(), &2.into()),
        "{one}"
    );
    assert_eq!(one["signed"], true);

    let anna_id = anna.shift().to_string();
    let bob_id = bob.shift().to_string();
    let carol_id = carol.shift().to_string();
    let open: Vec<String> = order.iter().filter(|id| **id != bob_id).cloned().collect();
    assert_eq!(ids(&list(&server, "?open=true").await?), open);
    assert_eq!(
        ids(&list(&server, "?open=false").await?),
        vec![bob_id.clone()]
    );
    assert_eq!(
        ids(&list(&server, "?guard=bob").await?),
        vec![bob_id.clone()]
    );
    assert_eq!(
        ids(&list(&server, &format!("?device={}", anna.device)).await?),
        vec![anna_id.clone()]
    );
    assert_eq!(
        ids(&list(&server, "?guard=anna&open=false").await?),
        Vec::<String>::new()
    );
    // Carol started an hour after the others.
    let later = format_time_ms(Phone::wall_ms(1) + 1);
    assert_eq!(
        ids(&list(&server, &format!("?from={later}")).await?),
        vec![carol_id.clone()]
    );
    let mut early = vec![anna_id.clone(), bob_id.clone()];
    early.sort();
    assert_eq!(ids(&list(&server, &format!("?to={later}")).await?), early);

    // Pages of one.
    let mut walked = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let page = list(&server, &query).await?;
        walked.extend(ids(&page));
        assert!(ids(&page).len() <= 1);
        if page["more"] != true {
            assert_eq!(page["next"], order[2].as_str());
            break;
        }
        query = format!("?limit=1&after={}", page["next"].as_str().ok_or("no next")?);
    }
    assert_eq!(walked, order);
    Ok(())
}

/// One shift by id: unknown is 404 `unknown_shift`, a bad id 400; a site without shifts lists
/// none; an unknown site is 404.
async fn one_shift_and_the_listings_errors(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    assert_eq!(ids(&list(&server, "").await?), Vec::<String>::new());
    let (status, body) = server
        .get_json(&format!(
            "/api/v1/sites/{SITE}/shifts/{}",
            patrol_core::ShiftId::generate()
        ))
        .await?;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &"unknown_shift".into())
    );
    let (status, body) = server
        .get_json(&format!("/api/v1/sites/{SITE}/shifts/not-a-uuid"))
        .await?;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_shift_id".into())
    );
    let (status, body) = server.get_json("/api/v1/sites/nowhere/shifts").await?;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &"unknown_site".into())
    );
    Ok(())
}

/// The devices view: a device on shift shows its open shift, its pending count with the time
/// it was reported, and, its last sync two hours old, that it is silent since then; its shift,
/// started in 2025, is overdue. A device whose shift ended shows none of it.
async fn the_devices_view_shows_open_shifts_and_gaps(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let mut anna = server.phone("anna").await?;
    let mut bob = server.phone("bob").await?;
    bob.record(EventBody::ShiftEnded { note: None })?;
    let two_hours_ago = common::crate_now_ms() - 2 * 3_600_000;
    for (phone, pending) in [(&mut anna, 7u64), (&mut bob, 0)] {
        let push = phone.push()?;
        store
            .sync(SyncBatch {
                site: site(),
                device: phone.device,
                request_seq: 1,
                received_at_ms: two_hours_ago,
                device_time_ms: two_hours_ago,
                pending_events: pending,
                config: std::sync::Arc::new(patrol_core::siteconfig::SiteConfig::empty(
                    patrol_core::SiteId::new("site-1")?,
                )),
                pushes: vec![ShiftLogPush {
                    shift: phone.shift(),
                    changes: push.changes,
                    events: 0,
                    signature: None,
                }],
                public_key: None,
            })
            .await?;
    }
    let (status, view) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["no_contact_after_secs"], 1800);
    assert_eq!(view["shift_overdue_after_secs"], 12 * 3600);
    assert!(view["as_of"].is_string());
    let device = |id: patrol_core::DeviceId| -> Value {
        view["devices"]
            .as_array()
            .and_then(|l| l.iter().find(|d| d["device_id"] == id.to_string()).cloned())
            .unwrap_or(Value::Null)
    };
    let a = device(anna.device);
    assert_eq!(a["open_shift"]["shift_id"], anna.shift().to_string(), "{a}");
    assert_eq!(
        a["open_shift"]["started_at"],
        format_time_ms(Phone::wall_ms(1))
    );
    assert_eq!(a["pending_events"], 7);
    assert_eq!(a["pending_reported_at"], format_time_ms(two_hours_ago));
    assert_eq!(a["silent_since"], format_time_ms(two_hours_ago));
    assert_eq!(a["overdue"], true);
    let b = device(bob.device);
    assert_eq!(b["guard"], "bob", "{b}");
    assert_eq!(
        (&b["open_shift"], &b["silent_since"], &b["overdue"]),
        (&Value::Null, &Value::Null, &Value::Bool(false)),
        "{b}"
    );

    // Anna's phone syncs now: no longer silent, still on an overdue shift.
    anna.scan("cp-1")?;
    let mut request = anna.push_request()?;
    request.request_seq = 2;
    server.sync(&request).await?;
    let (_, view) = server
        .get_json(&format!("/api/v1/sites/{SITE}/devices"))
        .await?;
    let a = view["devices"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|d| d["device_id"] == anna.device.to_string())
                .cloned()
        })
        .unwrap_or(Value::Null);
    assert_eq!(
        (&a["silent_since"], &a["overdue"]),
        (&Value::Null, &Value::Bool(true)),
        "{a}"
    );
    Ok(())
}

crate::on_every_backend!(
    shifts_are_listed_with_their_fields_and_filtered,
    one_shift_and_the_listings_errors,
    the_devices_view_shows_open_shifts_and_gaps,
);

/// The listing refuses a query parameter it does not take (`gaurd=`), naming it, and bad
/// values, with 400 `invalid_query`.
#[tokio::test]
async fn the_shift_listing_refuses_unknown_and_bad_parameters() -> TestResult {
    let server = TestServer::sqlite().await?;
    for query in [
        "gaurd=anna",
        "guard=anna&guard=bob",
        "open=maybe",
        "limit=0",
        "from=tonight",
        "after=17",
        "device=phone-1",
    ] {
        let (status, body) = server
            .get_json(&format!("/api/v1/sites/{SITE}/shifts?{query}"))
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], "invalid_query", "{query}: {body}");
    }
    let (_, body) = server
        .get_json(&format!("/api/v1/sites/{SITE}/shifts?gaurd=anna"))
        .await?;
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains("gaurd") && message.contains("guard"),
        "{message}"
    );
    Ok(())
}
