//! The store contract beyond the API: subscribers wake for new events on every backend, and on
//! PostgreSQL several stores over one database (as several server instances) share one record
//! and wake each other's subscribers through LISTEN/NOTIFY.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use patrol_core::protocol::DocOutcome;
use patrol_server::Store;
use patrol_server::store::{EventPage, ShiftLogPush, SyncBatch};
use tokio::sync::broadcast;

use crate::common::{self, Backend, Phone, TestResult, TestServer, site};

/// A guard against a test hanging forever; the wake-ups come long before it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until the receiver reports `seq` or later (values may repeat: they are hints).
async fn woken_up_to(rx: &mut broadcast::Receiver<u64>, seq: u64) -> TestResult {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match rx.recv().await {
                Ok(n) if n >= seq => return Ok(()),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await??;
    Ok(())
}

/// The phone's push as a sync batch, straight to a store, with the phone's next request seq.
fn batch(phone: &mut Phone) -> Result<SyncBatch, Box<dyn std::error::Error>> {
    let push = phone.push()?;
    Ok(SyncBatch {
        site: site(),
        device: phone.device,
        request_seq: phone.request_seq.fetch_add(1, Ordering::Relaxed) + 1,
        received_at_ms: common::crate_now_ms(),
        device_time_ms: common::crate_now_ms(),
        pending_events: phone.recorded.len() as u64,
        pushes: vec![ShiftLogPush {
            shift: phone.shift(),
            changes: push.changes,
            events: push.events,
            signature: None,
        }],
        public_key: None,
        config: std::sync::Arc::new(patrol_core::siteconfig::SiteConfig::empty(
            patrol_core::SiteId::new("site-1")?,
        )),
    })
}

/// Syncs the phone's log to `store` and marks delivered what the answer covers.
async fn sync_to(store: &Arc<dyn Store>, phone: &mut Phone) -> TestResult {
    let outcomes = store.sync(batch(phone)?).await?;
    assert!(
        matches!(outcomes[0], DocOutcome::Accepted { .. }),
        "{outcomes:?}"
    );
    phone.on_accepted(&outcomes[0]);
    Ok(())
}

async fn whole_feed(
    store: &Arc<dyn Store>,
) -> Result<Vec<(u64, String)>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let Some(EventPage { events, more, .. }) = store.events_after(site(), after, 7).await?
        else {
            return Err("no site".into());
        };
        if let Some((seq, _)) = events.last() {
            after = *seq;
        }
        out.extend(events);
        if !more {
            return Ok(out);
        }
    }
}

/// A subscriber made before a sync wakes with the site's last seq once the sync committed;
/// one on another site does not.
async fn a_subscriber_wakes_for_new_events(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    let mut rx = store.subscribe(site());
    let mut other_site = store.subscribe(patrol_core::SiteId::new("site-2")?);
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    sync_to(&store, &mut phone).await?;
    // The shift start and the scan.
    woken_up_to(&mut rx, 2).await?;
    phone.scan("cp-2")?;
    sync_to(&store, &mut phone).await?;
    woken_up_to(&mut rx, 3).await?;
    assert!(matches!(
        other_site.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    assert_eq!(whole_feed(&store).await?.len(), 3);
    Ok(())
}

crate::on_every_backend!(a_subscriber_wakes_for_new_events);

/// Two stores over one database, as two server instances: a subscriber on the first wakes for
/// events written through the second (only LISTEN/NOTIFY connects them), and phones syncing to
/// both at once leave one feed that reads the same from either, every event once, numbered
/// without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_share_one_record_and_wake_each_other() -> TestResult {
    let Some(backend) = Backend::postgres().await? else {
        return Ok(());
    };
    let server = TestServer::new(backend).await?;
    let a = server.store();
    let b = server.backend.open().await?;
    let mut woken_on_a = a.subscribe(site());

    let mut phone = server.phone("guard-0").await?;
    phone.scan("cp-1")?;
    sync_to(&b, &mut phone).await?;
    woken_up_to(&mut woken_on_a, 2).await?;

    // Eight phones syncing at once, half through each instance, switching every round; each
    // push is then repeated through the other instance, which finds nothing new.
    let mut phones = Vec::new();
    for p in 1..=8 {
        phones.push(server.phone(&format!("guard-{p}")).await?);
    }
    for round in 0..3 {
        let mut tasks = Vec::new();
        for (p, mut phone) in phones.drain(..).enumerate() {
            for k in 0..5 {
                phone.scan(&format!("cp-{round}-{k}"))?;
            }
            let (first, second) = if (p + round) % 2 == 0 {
                (&a, &b)
            } else {
                (&b, &a)
            };
            let (first, second) = (Arc::clone(first), Arc::clone(second));
            let push = batch(&mut phone)?;
            let mut repeat = push.clone();
            repeat.request_seq = phone.request_seq.fetch_add(1, Ordering::Relaxed) + 1;
            tasks.push(tokio::spawn(async move {
                let new = |o: &[DocOutcome]| match o.first() {
                    Some(DocOutcome::Accepted { new_events, .. }) => Some(*new_events),
                    _ => None,
                };
                let x = first.sync(push).await?;
                let y = second.sync(repeat).await?;
                assert_eq!(
                    (new(&x), new(&y)),
                    (Some(5 + u32::from(round == 0)), Some(0))
                );
                phone.on_accepted(&y[0]);
                Ok::<_, patrol_server::StoreError>(phone)
            }));
        }
        for task in tasks {
            phones.push(task.await??);
        }
    }
    phones.push(phone);

    let from_a = whole_feed(&a).await?;
    let from_b = whole_feed(&b).await?;
    assert_eq!(from_a, from_b, "both instances read the same record");
    let seqs: Vec<u64> = from_a.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=from_a.len() as u64).collect::<Vec<_>>());
    let recorded: HashSet<String> = phones
        .iter()
        .flat_map(|p| p.recorded.iter().map(|id| id.to_string()))
        .collect();
    let mut fed = HashSet::new();
    for (_, json) in &from_a {
        let event: serde_json::Value = serde_json::from_str(json)?;
        let id = event["id"].as_str().ok_or("event without id")?.to_owned();
        assert!(fed.insert(id), "an event appears twice");
    }
    assert_eq!(fed, recorded);
    woken_up_to(&mut woken_on_a, from_a.len() as u64).await?;
    Ok(())
}

/// A listener that loses its connection reconnects and wakes its subscribers for what was
/// committed meanwhile (through another instance), so no wake-up is lost for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_that_lost_its_connection_catches_up() -> TestResult {
    let Some(backend) = Backend::postgres().await? else {
        return Ok(());
    };
    let server = TestServer::new(backend).await?;
    let a = server.store();
    let b = server.backend.open().await?;
    let mut woken_on_a = a.subscribe(site());
    // Cut every listener's connection (both stores'), then write through b at once.
    let terminated = server
        .count(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        .await?;
    assert_eq!(terminated, 2);
    let mut phone = server.phone("guard-1").await?;
    phone.scan("cp-1")?;
    sync_to(&b, &mut phone).await?;
    woken_up_to(&mut woken_on_a, 2).await?;
    Ok(())
}
