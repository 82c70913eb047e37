//! A panic raised on a phone with a long backlog, against the real `patrol-server`: the phone
//! sends the panic first, in a small request of its own (the panic's shift log alone, which
//! brings the events before the panic in that shift with it), in the server's panic lane; the
//! backlog follows in the same `sync` call, the ordinary way. Sent together, the two would be
//! too large for the panic lane (256 KiB), and the panic would wait in the ordinary queue
//! behind every other phone's sync.

use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use patrol_core::protocol::MAX_PANIC_SYNC_BODY_BYTES;
use patrol_core::{EventBody, GuardId};
use patrol_e2e::{Rng, feed_ids, side_metrics};
use patrol_mobile::{DeviceStore, Durability, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::Server;
use serde_json::Value;

const SITE: &str = "site-1";
/// Notes of last night's shift, each of nearly the longest text a note may hold: together well
/// over the panic lane's limit.
const BACKLOG_NOTES: usize = 120;
const NOTE_CHARS: usize = 4_000;

/// Text that does not compress much (automerge compresses the changes it sends), so that the
/// backlog is as large on the wire as it looks.
fn text(rng: &mut Rng, chars: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";
    (0..chars)
        .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len() as u64) as usize]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_behind_a_long_backlog_goes_first_in_the_panic_lane_and_the_backlog_follows()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start_with(&dir.path().join("server"), &[SITE], true)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let code: Value = http
        .post(format!(
            "{}/api/v1/sites/{SITE}/enrollment-codes",
            server.url
        ))
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
        dir.path().join("phone.db"),
        enrollment,
        StoreOptions {
            durability: Durability::Normal,
            clock: None,
        },
    )?;

    // Last night's shift, never synced (the phone was out of signal).
    let guard = GuardId::new("guard-1")?;
    let mut rng = Rng(19);
    let earlier = store.start_shift(guard.clone())?;
    for _ in 0..BACKLOG_NOTES {
        store.note(text(&mut rng, NOTE_CHARS))?;
    }
    store.end_shift(None)?;
    // Tonight: a note, then the guard raises a panic.
    store.start_shift(guard)?;
    let before_panic = store.note("a van with no plates at the loading bay")?;
    let panic = store.record(
        EventBody::Panic { location: None },
        RecordOptions::default(),
    )?;
    // Everything at once would be too large for the panic lane.
    let whole = store.prepare_sync()?.request.encode()?.len();
    ensure!(
        whole > MAX_PANIC_SYNC_BODY_BYTES,
        "the backlog is only {whole} bytes: not over the panic lane's limit"
    );
    let backlog: Vec<String> = store
        .events(Some(earlier))?
        .iter()
        .map(|e| e.event.id.0.to_string())
        .collect();

    // One sync delivers both: the panic through the panic lane, then the backlog.
    let report = client.sync(&mut store).await?;
    assert_eq!(report.pending_events, 0, "{report:?}");
    assert!(report.rejected.is_empty(), "{report:?}");
    for event in store.events(None)? {
        assert!(event.delivered, "{:?} is not delivered", event.event.id);
    }
    assert!(!store.status()?.urgent);
    let m = side_metrics(&http, &server).await?;
    assert_eq!(m["patrol_sync_panic_total"], 1, "{m:?}");
    assert_eq!(m["patrol_sync_requests_total"], 2, "{m:?}");

    // The server had the panic, and what came before it in its shift, before the backlog.
    let on_server = feed_ids(&http, &server, SITE).await?;
    let position = |id: &str| on_server.iter().position(|e| e == id);
    let panic_at = position(&panic.0.to_string()).ok_or_else(|| anyhow!("no panic"))?;
    let before_at =
        position(&before_panic.0.to_string()).ok_or_else(|| anyhow!("no note before it"))?;
    assert!(before_at < panic_at);
    for id in &backlog {
        let at = position(id).ok_or_else(|| anyhow!("backlog event {id} is not in the feed"))?;
        assert!(at > panic_at, "backlog event {id} reached the server first");
    }
    assert_eq!(
        on_server.len(),
        store.events(None)?.len(),
        "each event once"
    );
    Ok(())
}
