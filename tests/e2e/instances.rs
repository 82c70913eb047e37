//! Several instances: two `patrol-server` processes over one PostgreSQL database, real phone
//! stores syncing to both at once. The control room's feed reads the same from either instance,
//! every event once, in the same order, and a live stream open on one instance delivers events
//! synced through the other (LISTEN/NOTIFY between them).

use std::collections::HashSet;

use anyhow::{Result, ensure};
use patrol_core::{CheckpointId, GuardId, Scan, ScanMethod, SiteId};
use patrol_e2e::{control_pull, next_sse};
use patrol_mobile::{DeviceStore, RecordOptions, StoreOptions, SyncClient};
use patrol_testkit::{ScratchDatabase, Server};
use serde_json::Value;

const SITE: &str = "site-1";
const PHONES: usize = 6;

fn scan(store: &mut DeviceStore, round: usize, k: usize) -> Result<()> {
    store.scan(
        Scan {
            checkpoint: CheckpointId::new(format!("cp-{k}"))?,
            method: ScanMethod::Nfc {
                tag: format!("04:{round}:{k}"),
            },
            location: None,
            note: None,
        },
        RecordOptions::default(),
    )?;
    Ok(())
}

/// Syncs every phone at once, phone `p` to `servers[(p + round) % 2]`, so that every round
/// sends phones to both instances and every phone uses both over the rounds.
async fn sync_all(
    phones: Vec<DeviceStore>,
    servers: &[&Server; 2],
    round: usize,
) -> Result<Vec<DeviceStore>> {
    let mut tasks = Vec::new();
    for (p, mut store) in phones.into_iter().enumerate() {
        let url = servers[(p + round) % 2].url.clone();
        tasks.push(tokio::spawn(async move {
            let client = SyncClient::new(&url)?;
            // A round ends once the server holds everything (a push may ask for another).
            for _ in 0..3 {
                let report = client.sync(&mut store).await?;
                if !report.needs_another_round && report.pending_events == 0 {
                    break;
                }
            }
            Ok::<_, anyhow::Error>(store)
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await??);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_over_one_postgres_database_serve_one_record() -> Result<()> {
    let Some(db) = ScratchDatabase::create().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let admin = Server::prepare_database(db.url(), &[SITE])?;
    let a = Server::start_on_database(db.url(), &admin, &dir.path().join("a"))?;
    let b = Server::start_on_database(db.url(), &admin, &dir.path().join("b"))?;

    // Phones enroll through either instance: the credentials are in the shared database.
    let mut phones = Vec::new();
    for p in 0..PHONES {
        let server = [&a, &b][p % 2];
        let code = server.enrollment_code(SITE)?;
        let enrollment = SyncClient::new(&server.url)?.enroll(&code).await?;
        ensure!(enrollment.site == SiteId::new(SITE)?);
        let mut store = DeviceStore::create_enrolled(
            dir.path().join(format!("phone{p}.db")),
            enrollment,
            StoreOptions::default(),
        )?;
        store.start_shift(GuardId::new(format!("guard-{p}"))?)?;
        phones.push(store);
    }
    for round in 0..3 {
        for store in &mut phones {
            for k in 0..8 {
                scan(store, round, k)?;
            }
        }
        phones = sync_all(phones, &[&a, &b], round).await?;
    }

    let mut recorded = HashSet::new();
    for store in &phones {
        for local in store.events(None)? {
            ensure!(local.delivered, "phone still holds an undelivered event");
            recorded.insert(local.event.id.to_string());
        }
    }
    ensure!(recorded.len() == PHONES * (1 + 3 * 8));

    // The control room's feed, paged, from each instance.
    let from_a = control_pull(&a, SITE, 7)?;
    let from_b = control_pull(&b, SITE, 7)?;
    ensure!(from_a == from_b, "the instances read different records");
    let seqs: Vec<u64> = from_a.iter().filter_map(|e| e["seq"].as_u64()).collect();
    ensure!(
        seqs == (1..=recorded.len() as u64).collect::<Vec<_>>(),
        "sequence numbers are not 1..=n in order: {seqs:?}"
    );
    let ids: Vec<&str> = from_a.iter().filter_map(|e| e["id"].as_str()).collect();
    let unique: HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
    ensure!(ids.len() == unique.len(), "an event appears twice");
    ensure!(
        unique == recorded,
        "the feed is not exactly the phones' events"
    );
    ensure!(
        from_a
            .iter()
            .all(|e| e["received_at"].is_string() && e["device_time"].is_string()),
        "events lack their times"
    );

    // Both instances see every device.
    let http = reqwest::Client::new();
    for server in [&a, &b] {
        let devices: Value = http
            .get(format!("{}/api/v1/sites/{SITE}/devices", server.url))
            .bearer_auth(&admin)
            .send()
            .await?
            .json()
            .await?;
        let list = devices["devices"].as_array().map_or(0, Vec::len);
        ensure!(list == PHONES, "{} lists {list} devices", server.url);
    }

    // A live stream on a, from the end of the feed; a phone syncs a note through b.
    let last = from_a.len();
    let mut live = http
        .get(format!("{}/api/v1/sites/{SITE}/stream?after={last}", a.url))
        .bearer_auth(&admin)
        .send()
        .await?;
    ensure!(live.status() == 200, "stream: {}", live.status());
    let phone = &mut phones[0];
    let note = phone.note("seen on the other instance")?;
    SyncClient::new(&b.url)?.sync(phone).await?;
    let event = next_sse(&mut live, &mut String::new(), None, |_| true).await?;
    ensure!(
        event["id"] == note.to_string() && event["seq"] == last as u64 + 1,
        "the stream on a delivered {event} instead of the note synced through b"
    );
    Ok(())
}
