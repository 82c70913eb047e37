//! Webhooks: endpoints registered through the API, deliveries written in the transaction of
//! their cause (and not without it), once per endpoint and idempotency key, claimed under a
//! lease, retried, parked, re-queued.

use axum::http::StatusCode;
use patrol_core::{EventBody, SiteId};
use serde_json::{Value, json};

use patrol_server::credentials::{Role, Scope, new_user};
use patrol_server::store::StoreError;
use patrol_server::store::webhooks::{
    self, Attempt, DeliveryState, NewWebhook, NextStep, RetryPolicy,
};

use crate::common::{Backend, SITE, TestResult, TestServer, crate_now_ms};

fn hooks_uri() -> String {
    format!("/api/v1/sites/{SITE}/webhooks")
}

async fn register(server: &TestServer, events: &[&str]) -> Result<i64, Box<dyn std::error::Error>> {
    let (status, created) = server
        .send_json(
            "POST",
            &hooks_uri(),
            &json!({"url": "http://127.0.0.1:9/hook", "events": events}),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    created["id"].as_i64().ok_or_else(|| "no id".into())
}

async fn delete(
    server: &TestServer,
    uri: &str,
) -> Result<(StatusCode, String, axum::body::Bytes), Box<dyn std::error::Error>> {
    let req = axum::http::Request::delete(uri)
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", server.admin),
        )
        .body(axum::body::Body::empty())?;
    server.call(req).await
}

fn failed(at_ms: i64) -> Attempt {
    Attempt {
        at_ms,
        status: Some(500),
        error: None,
        duration_ms: 2,
    }
}

/// A panic's sync writes a delivery for each endpoint subscribed to `panic.raised`, with the
/// panic in its body; an endpoint of other types gets none, nor does a sync the server refuses;
/// the same panic pushed again, or an escalation checked twice, adds nothing.
async fn a_delivery_is_written_with_its_cause_and_only_then(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let site = SiteId::new(SITE)?;
    let panics = register(&server, &["panic.raised", "panic.unacknowledged"]).await?;
    let silences = register(&server, &["device.silent"]).await?;

    // A scan alone queues nothing: only a panic looks for endpoints.
    let mut alice = server.phone("guard-a").await?;
    alice.scan("cp-1")?;
    server.sync(&alice.push_request()?).await?;
    assert!(
        store
            .webhook_deliveries(site.clone(), None, 100)
            .await?
            .is_empty()
    );

    let panic = alice.record(EventBody::Panic { location: None })?;
    let request = alice.push_request()?;
    server.sync(&request).await?;
    let deliveries = store.webhook_deliveries(site.clone(), None, 100).await?;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let d = &deliveries[0];
    assert_eq!(
        (d.endpoint, d.event_type.as_str(), d.state, d.attempts),
        (panics, "panic.raised", DeliveryState::Pending, 0)
    );
    assert_eq!(d.key, format!("panic.raised:{panic}"));
    let body: Value = serde_json::from_str(&d.body)?;
    assert_eq!(body["id"], d.key.as_str());
    assert_eq!(body["type"], "panic.raised");
    assert_eq!(body["site_id"], SITE);
    assert_eq!(body["data"]["event_id"], panic.to_string());
    assert_eq!(body["data"]["guard"], "guard-a");

    // Pushed again (a new request with the same log): the panic is not new, nothing is queued.
    let again = alice.push()?;
    server.sync(&alice.request(vec![again])).await?;
    assert_eq!(
        store
            .webhook_deliveries(site.clone(), None, 100)
            .await?
            .len(),
        1
    );

    // A refused sync (the device is revoked) stores nothing, and queues nothing.
    let mut bob = server.phone("guard-b").await?;
    store
        .revoke_device(site.clone(), bob.device, crate_now_ms())
        .await?;
    bob.record(EventBody::Panic { location: None })?;
    let (status, _, _) = server.try_sync(&bob.push_request()?).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        store
            .webhook_deliveries(site.clone(), None, 100)
            .await?
            .len(),
        1
    );

    // Escalation writes its own, once.
    let at = crate_now_ms() + 200_000;
    assert_eq!(
        store.escalate_alarms(site.clone(), 1_000, at).await?.len(),
        1
    );
    assert!(
        store
            .escalate_alarms(site.clone(), 1_000, at + 1)
            .await?
            .is_empty()
    );
    let deliveries = store.webhook_deliveries(site.clone(), None, 100).await?;
    let types: Vec<&str> = deliveries.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(types, ["panic.unacknowledged", "panic.raised"]);
    assert_eq!(deliveries[0].key, format!("panic.unacknowledged:{panic}"));

    // A cause outside a transaction (a silence) is queued once per key, whoever sees it.
    let device = alice.device;
    let silence = webhooks::device_silent(&site, &device, Some("guard-a"), None, 5, 1_800, at);
    assert_eq!(store.enqueue_webhook(silence.clone()).await?, 1);
    assert_eq!(store.enqueue_webhook(silence).await?, 0);
    let deliveries = store.webhook_deliveries(site.clone(), None, 100).await?;
    assert_eq!(deliveries.len(), 3);
    assert_eq!(deliveries[0].endpoint, silences);
    assert_eq!(deliveries[0].key, format!("device.silent:{device}:5"));
    Ok(())
}

/// A claimed delivery is not claimed again within its lease; an attempt is recorded with its
/// next step, once (a stale claim's record is dropped); at the limit it is parked, listed as
/// such with its attempts, and re-queued by an administrator; removing the endpoint removes its
/// deliveries.
async fn deliveries_are_claimed_retried_parked_and_requeued(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let site = SiteId::new(SITE)?;
    let now = crate_now_ms();
    let hook = store
        .create_webhook(NewWebhook {
            site: site.clone(),
            url: "https://example.org/hook".into(),
            events: vec!["device.silent".into()],
            secret: "whsec_test".into(),
            created_at_ms: now,
            created_by: "admin".into(),
        })
        .await?;
    let device = patrol_core::DeviceId::generate();
    let outgoing = webhooks::device_silent(&site, &device, None, None, 1, 60, now);
    store.enqueue_webhook(outgoing).await?;

    let claimed = store
        .claim_webhook_deliveries(now, now + 60_000, 10)
        .await?;
    assert_eq!(claimed.len(), 1);
    let due = &claimed[0];
    assert_eq!(
        (due.url.as_str(), due.secret.as_str()),
        ("https://example.org/hook", "whsec_test")
    );
    assert_eq!(due.attempts, 0);
    // Leased: no other sender takes it before the lease ends.
    assert!(
        store
            .claim_webhook_deliveries(now + 1, now + 60_000, 10)
            .await?
            .is_empty()
    );

    let policy = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let first = failed(now + 10);
    let next = webhooks::next_step(&policy, due.created_at_ms, 0, &first, 0.5);
    assert!(matches!(next, NextStep::Retry { .. }));
    assert!(
        store
            .record_webhook_attempt(due.id, 0, first.clone(), next)
            .await?
    );
    // The same claim recorded twice (a sender whose lease ran out) counts once.
    assert!(!store.record_webhook_attempt(due.id, 0, first, next).await?);
    let NextStep::Retry { at_ms } = next else {
        return Err("not a retry".into());
    };
    assert!(
        store
            .claim_webhook_deliveries(at_ms - 1, at_ms + 60_000, 10)
            .await?
            .is_empty()
    );
    let again = store
        .claim_webhook_deliveries(at_ms, at_ms + 60_000, 10)
        .await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    let second = Attempt {
        status: None,
        error: Some("timed out".into()),
        ..failed(at_ms + 5)
    };
    let parked = webhooks::next_step(&policy, due.created_at_ms, 1, &second, 0.5);
    assert_eq!(parked, NextStep::Parked);
    assert!(
        store
            .record_webhook_attempt(due.id, 1, second, parked)
            .await?
    );
    assert!(
        store
            .claim_webhook_deliveries(i64::MAX / 2, i64::MAX / 2, 10)
            .await?
            .is_empty()
    );

    // Listed as parked, with both attempts, through the API.
    let (status, listed) = server
        .get_json(&format!("{}/deliveries?state=parked", hooks_uri()))
        .await?;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let d = &listed["deliveries"][0];
    assert_eq!(listed["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_u64()),
        (Some("parked"), Some(2))
    );
    assert_eq!(d["attempt_log"][0]["status"], 500);
    assert_eq!(d["attempt_log"][1]["error"], "timed out");
    assert_eq!(d["body"]["type"], "device.silent");
    let (_, pending) = server
        .get_json(&format!("{}/deliveries?state=pending", hooks_uri()))
        .await?;
    assert_eq!(pending["deliveries"], json!([]));

    // Re-queued: pending, due now, its attempts counted afresh; only a parked one is.
    let retry = format!("{}/deliveries/{}/retry", hooks_uri(), due.id);
    let (status, requeued) = server.send_json("POST", &retry, &json!({})).await?;
    assert_eq!(status, StatusCode::OK, "{requeued}");
    assert_eq!(
        (requeued["state"].as_str(), requeued["attempts"].as_u64()),
        (Some("pending"), Some(0))
    );
    assert_eq!(requeued["attempt_log"].as_array().map(Vec::len), Some(2));
    let (status, refused) = server.send_json("POST", &retry, &json!({})).await?;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::CONFLICT, Some("delivery_not_parked"))
    );
    assert_eq!(
        store
            .claim_webhook_deliveries(crate_now_ms(), crate_now_ms() + 1, 10)
            .await?
            .len(),
        1
    );

    // Delivered, it is dropped once older than the cut-off, not before.
    let due = store
        .claim_webhook_deliveries(crate_now_ms() + 100_000, crate_now_ms() + 200_000, 10)
        .await?;
    assert_eq!(due.len(), 1);
    let ok = Attempt {
        status: Some(200),
        ..failed(now + 1_000)
    };
    assert!(
        store
            .record_webhook_attempt(due[0].id, 0, ok, NextStep::Delivered)
            .await?
    );
    assert_eq!(store.prune_webhook_deliveries(now + 1_000).await?, 0);
    assert_eq!(
        store
            .webhook_deliveries(site.clone(), None, 10)
            .await?
            .len(),
        1
    );
    assert_eq!(store.prune_webhook_deliveries(now + 1_001).await?, 1);
    assert!(
        store
            .webhook_deliveries(site.clone(), None, 10)
            .await?
            .is_empty()
    );
    assert_eq!(
        server
            .count("SELECT COUNT(*) FROM webhook_attempts")
            .await?,
        0,
        "its attempts went with it"
    );
    store
        .enqueue_webhook(webhooks::device_silent(
            &site, &device, None, None, 2, 60, now,
        ))
        .await?;

    // Removing the endpoint removes its deliveries.
    store.delete_webhook(site.clone(), hook.id).await?;
    assert!(
        store
            .webhook_deliveries(site.clone(), None, 100)
            .await?
            .is_empty()
    );
    assert!(matches!(
        store.delete_webhook(site.clone(), hook.id).await,
        Err(StoreError::UnknownWebhook { .. })
    ));
    Ok(())
}

/// Only an administrator of the site registers, lists and removes endpoints; bad input is
/// refused with a message and changes nothing; the secret is shown once.
async fn endpoints_are_managed_by_administrators(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    for (body, code) in [
        (
            json!({"url": "ftp://example.org", "events": ["panic.raised"]}),
            "invalid_webhook",
        ),
        (
            json!({"url": "https://example.org", "events": []}),
            "invalid_webhook",
        ),
        (
            json!({"url": "https://example.org", "events": ["panic.lol"]}),
            "invalid_webhook",
        ),
        (json!({"url": "https://example.org"}), "invalid_json"),
    ] {
        let (status, refused) = server.send_json("POST", &hooks_uri(), &body).await?;
        assert_eq!(
            (status, refused["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
    }
    let (_, none) = server.get_json(&hooks_uri()).await?;
    assert_eq!(none, json!({"site_id": SITE, "webhooks": []}));

    let (new, token) = new_user(
        "op".into(),
        Role::Operator,
        Scope::Sites(vec![SiteId::new(SITE)?]),
        None,
        0,
        i64::MAX,
    )?;
    server.state.store.create_user(new).await?;
    let op = token.expose().to_owned();
    let body = json!({"url": "https://example.org/h", "events": ["panic.raised"]});
    let (status, _) = server
        .send_json_as(&op, "POST", &hooks_uri(), &body)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.get_json_as(&op, &hooks_uri()).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let id = register(&server, &["panic.raised"]).await?;
    let (status, listed) = server.get_json(&hooks_uri()).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["webhooks"][0]["id"], id);
    assert_eq!(listed["webhooks"][0]["events"], json!(["panic.raised"]));
    assert_eq!(listed["webhooks"][0]["created_by"], "admin");
    assert!(listed["webhooks"][0].get("secret").is_none());

    let one = format!("{}/{id}", hooks_uri());
    let (status, _) = server.send_json_as(&op, "DELETE", &one, &json!({})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = delete(&server, &one).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = delete(&server, &one).await?;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, refused) = server
        .send_json(
            "POST",
            "/api/v1/sites/nowhere/webhooks",
            &json!({"url": "https://example.org/h", "events": ["panic.raised"]}),
        )
        .await?;
    assert_eq!(
        (status, refused["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_site"))
    );
    Ok(())
}

/// Two instances on one PostgreSQL database claiming at once never both take a delivery: each
/// of 40 due is claimed exactly once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_claiming_at_once_never_share_a_delivery() -> TestResult {
    let Some(backend) = Backend::postgres().await? else {
        return Ok(());
    };
    let server = TestServer::new(backend).await?;
    let site = SiteId::new(SITE)?;
    let (one, other) = (server.store(), server.backend.open().await?);
    let now = crate_now_ms();
    one.create_webhook(NewWebhook {
        site: site.clone(),
        url: "https://example.org/hook".into(),
        events: vec!["device.silent".into()],
        secret: "whsec_test".into(),
        created_at_ms: now,
        created_by: "admin".into(),
    })
    .await?;
    let device = patrol_core::DeviceId::generate();
    for since in 0..40 {
        let outgoing = webhooks::device_silent(&site, &device, None, None, since, 60, now);
        one.enqueue_webhook(outgoing).await?;
    }
    let mut claimed = Vec::new();
    for _ in 0..10 {
        let (a, b) = tokio::join!(
            one.claim_webhook_deliveries(now, now + 60_000, 3),
            other.claim_webhook_deliveries(now, now + 60_000, 3)
        );
        claimed.extend(a?.into_iter().chain(b?).map(|d| d.id));
    }
    let mut unique = claimed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!((claimed.len(), unique.len()), (40, 40), "{claimed:?}");
    Ok(())
}

crate::on_every_backend!(
    a_delivery_is_written_with_its_cause_and_only_then,
    deliveries_are_claimed_retried_parked_and_requeued,
    endpoints_are_managed_by_administrators,
);
