//! Back-pressure of the real `patrol-server`: with one sync permit and one waiting place, a
//! request that holds the permit (its body trickles in) makes every other sync wait or be
//! refused. Refused syncs get `503 server_busy` with a `Retry-After` at once (the queue was
//! full) or after the wait bound, with nothing read or changed; the control room still answers;
//! the phones' `SyncClient` classes the 503 as retryable and schedules the next attempt no
//! sooner than the `Retry-After`. A phone that has raised a panic is not among them: its sync
//! takes the panic lane and is admitted at once, ahead of the queue, and its panic is in the
//! feed while the others wait. Once the permit is free again the phones retry as their outbox
//! says, and every event each of them recorded is in the feed exactly once.
//!
//! Nothing here depends on timing but the wait bound (500 ms) being longer than a request
//! takes to reach the server over loopback: the permit is held by a request the test controls.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, ensure};
use patrol_core::GuardId;
use patrol_e2e::{feed_ids, side_metrics};
use patrol_mobile::{DeviceStore, Durability, Error as PhoneError, StoreOptions, SyncClient};
use patrol_testkit::Server;
use serde_json::Value;

const SITE: &str = "site-1";
const PHONES: usize = 6;
const NOTES: usize = 5;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn phone(
    http: &reqwest::Client,
    server: &Server,
    dir: &std::path::Path,
    n: usize,
) -> Result<(DeviceStore, SyncClient)> {
    let url = format!("{}/api/v1/sites/{SITE}/enrollment-codes", server.url);
    let code: Value = http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .json(&serde_json::json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let code = code["code"].as_str().ok_or_else(|| anyhow!("no code"))?;
    let client = SyncClient::new(&server.url)?;
    let enrollment = client.enroll(code).await?;
    let mut store = DeviceStore::create_enrolled(
        dir.join(format!("phone-{n}.db")),
        enrollment,
        StoreOptions {
            durability: Durability::Normal,
            clock: None,
        },
    )?;
    store.start_shift(GuardId::new(format!("guard-{n}"))?)?;
    for i in 0..NOTES {
        store.note(format!("phone {n} note {i}"))?;
    }
    Ok((store, client))
}

/// Every event id in the site's feed, with how often it appears.
async fn feed(http: &reqwest::Client, server: &Server) -> Result<HashMap<String, usize>> {
    let mut ids = HashMap::new();
    for id in feed_ids(http, server, SITE).await? {
        *ids.entry(id).or_insert(0) += 1;
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_server_refuses_with_retry_after_stays_responsive_and_loses_nothing() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let server = Server::start_with_args(
        &dir.path().join("server"),
        &[SITE],
        true,
        &[
            "--max-concurrent-syncs",
            "1",
            "--max-queued-syncs",
            "1",
            "--max-sync-wait-ms",
            "500",
            "--sync-retry-after-secs",
            "1",
        ],
    )?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut phones = Vec::new();
    for n in 0..PHONES {
        phones.push(phone(&http, &server, dir.path(), n).await?);
    }
    let credential = phones[0]
        .0
        .credential()
        .ok_or_else(|| anyhow!("phone 0 has no credential"))?
        .to_owned();

    // A sync request whose body never finishes: it is admitted, and holds the only permit while
    // the server waits for the rest of its body.
    let mut holder = TcpStream::connect(server.addr)?;
    write!(
        holder,
        "POST /api/v1/sync HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {credential}\r\n\
         Content-Type: application/x-patrol-sync\r\nContent-Length: 100000\r\n\r\n\x02",
        server.addr
    )?;
    holder.flush()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while side_metrics(&http, &server).await?["patrol_sync_requests_total"] < 1 {
        ensure!(Instant::now() < deadline, "the held request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // It is in the handler; let it take the permit (one credential look-up).
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Alone in the queue, a request waits out the bound, then is refused, body unread.
    let busy = |body: &'static [u8]| {
        http.post(format!("{}/api/v1/sync", server.url))
            .bearer_auth(&credential)
            .header("content-type", "application/x-patrol-sync")
            .body(body)
            .send()
    };
    let started = Instant::now();
    let refused = busy(b"\x02not even a sync request").await?;
    let waited = started.elapsed();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = refused.json().await?;
    assert_eq!(body["error"], "server_busy", "{body}");
    assert!(waited >= Duration::from_millis(450), "{waited:?}");

    // The last phone's guard raises a panic.
    let (panicking, _) = phones.last_mut().ok_or_else(|| anyhow!("no phones"))?;
    let panic = panicking.record(
        patrol_core::EventBody::Panic { location: None },
        patrol_mobile::RecordOptions::default(),
    )?;

    // The flood: every phone syncs at once. The one with a panic gets through at once, in the
    // panic lane; of the others one waits and is refused after the bound, the rest at once,
    // each told to come back no sooner than the Retry-After.
    let before_ms = wall_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (mut store, client)) in phones.into_iter().enumerate() {
        tasks.spawn(async move {
            let result = client.sync(&mut store).await;
            (n, store, client, result)
        });
    }
    // The control room is not held up by the syncs.
    let t = Instant::now();
    let answer = http
        .get(format!("{}/api/v1/sites/{SITE}/devices", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await?;
    assert!(answer.status().is_success(), "{}", answer.status());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    feed(&http, &server).await?;

    let mut phones = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (n, store, client, result) = joined?;
        match result {
            Ok(report) if n == PHONES - 1 => {
                assert_eq!(report.pending_events, 0, "{report:?}");
                assert!(store.event(panic)?.is_some_and(|e| e.delivered));
            }
            Err(e @ PhoneError::ServerTransient { status: 503, .. }) if n != PHONES - 1 => {
                assert!(e.is_retryable());
                assert_eq!(e.retry_after_ms(), Some(1_000), "phone {n}");
                let next = store
                    .status()?
                    .next_attempt_ms
                    .ok_or_else(|| anyhow!("phone {n}: no next attempt scheduled"))?;
                assert!(
                    next >= before_ms + 1_000,
                    "phone {n} retries {} ms after the refusal, before the Retry-After",
                    next - before_ms
                );
                assert!(store.status()?.pending_events > 0);
            }
            other => panic!("phone {n}: expected 503 server_busy, got {other:?}"),
        }
        phones.push((n, store, client));
    }
    let m = side_metrics(&http, &server).await?;
    assert!(
        m["patrol_sync_refused_total{reason=\"queue_full\"}"] >= 1,
        "{m:?}"
    );
    assert!(
        m["patrol_sync_refused_total{reason=\"wait_timeout\"}"] >= 2,
        "{m:?}"
    );
    assert!(m["patrol_sync_queued_total"] >= 2, "{m:?}");
    assert_eq!(m["patrol_sync_waiting"], 0, "{m:?}");
    assert_eq!(m["patrol_sync_panic_total"], 1, "{m:?}");
    // Nothing of the others reached the feed; the panic and its shift did.
    let on_server = feed(&http, &server).await?;
    assert!(
        on_server.contains_key(&panic.0.to_string()),
        "{on_server:?}"
    );
    assert_eq!(on_server.len(), NOTES + 2, "{on_server:?}");

    // The permit comes free; the phones retry when their outbox says, until all is delivered.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut tasks = tokio::task::JoinSet::new();
    for (n, mut store, client) in phones {
        tasks.spawn(async move {
            let mut attempts = 0;
            while store.status()?.pending_events > 0 {
                ensure!(Instant::now() < deadline, "phone {n} never got through");
                if let Some(at) = store.status()?.next_attempt_ms {
                    let wait = (at - wall_ms()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                attempts += 1;
                match client.sync(&mut store).await {
                    Ok(_) => {}
                    Err(e) if e.is_retryable() => {}
                    Err(e) => return Err(e).context(format!("phone {n}")),
                }
            }
            Ok::<_, anyhow::Error>((n, store, attempts))
        });
    }
    let mut delivered = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (n, store, attempts) = joined??;
        // The phone with the panic delivered everything in the flood.
        assert!(attempts >= 1 || n == PHONES - 1, "phone {n}");
        for event in store.events(None)? {
            assert!(event.delivered, "{:?} is not delivered", event.event.id);
            delivered.push(event.event.id.0.to_string());
        }
    }
    // Each phone's shift start and notes, and the panic.
    assert_eq!(delivered.len(), PHONES * (NOTES + 1) + 1);
    let on_server = feed(&http, &server).await?;
    for id in &delivered {
        assert_eq!(
            on_server.get(id),
            Some(&1),
            "event {id} is not in the feed once"
        );
    }
    assert_eq!(on_server.len(), delivered.len());
    Ok(())
}
