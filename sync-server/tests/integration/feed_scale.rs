//! The feed pages through a large site: 100,000 events, 10,000 at a time, each once and in
//! order (its speed is the benchmark's W2, not a test's business). The rows are
//! written straight into the projection (building 100,000 events through automerge would make
//! this test about the merge, not the feed); their JSON is what the server stores.

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use crate::common::{SITE, TestResult, TestServer};

const EVENTS: u64 = 100_000;

#[tokio::test]
async fn paging_through_100k_events_serves_each_once_in_order() -> TestResult {
    let server = TestServer::sqlite().await?;
    {
        let mut conn = rusqlite::Connection::open(server.db_path()?)?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO events (site_id, seq, event_id, device_id, shift_id, guard_id, kind,
                     checkpoint_id, device_seq, device_time_ms, received_at_ms, json)
                 VALUES (?1, ?2, ?3, 'd', 's', 'g', 'checkpoint_scanned', 'cp-1', ?2, 0, 0, ?4)",
            )?;
            for seq in 1..=EVENTS {
                let id = uuid::Uuid::now_v7();
                let event_id = id.to_string();
                let json = serde_json::json!({
                    "seq": seq, "id": event_id, "kind": "checkpoint_scanned", "site_id": SITE,
                    "device_id": "0195a1b2-0000-7000-8000-000000000001",
                    "guard_id": "guard-1", "shift_id": "0195a1b2-0000-7000-8000-000000000002",
                    "device_seq": seq, "device_time": "2025-03-01T22:00:00.000Z",
                    "boot_id": "00000000-0000-0000-0000-000000000000", "mono_ms": seq,
                    "hlc": {"wall_ms": 1_740_866_400_000u64, "counter": 0}, "config_version": 1,
                    "received_at": "2025-03-01T22:00:01.000Z", "checkpoint": "cp-1",
                    "method": {"nfc": {"tag": "04:A2:2B"}}, "location": null, "note": null
                });
                insert.execute(rusqlite::params![
                    SITE,
                    seq as i64,
                    id.as_bytes().as_slice(),
                    json.to_string()
                ])?;
            }
        }
        tx.execute("UPDATE sites SET next_seq = ?1", [EVENTS as i64 + 1])?;
        tx.commit()?;
    }

    // Time the server alone; parsing the pages afterwards is the test's own cost.
    let started = Instant::now();
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let uri = format!("/api/v1/sites/{SITE}/events?after={after}&limit=10000");
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", server.admin))
            .body(Body::empty())?;
        let (status, _, body) = server.call(request).await?;
        assert_eq!(status, StatusCode::OK);
        // The page ends `"next":N,"more":B}`: read it from the tail rather than parse it all.
        let text = std::str::from_utf8(&body)?;
        let tail = &text[text.rfind("\"next\":").ok_or("no next")? + 7..];
        let (next, more) = tail.split_once(",\"more\":").ok_or("no more")?;
        after = next.parse()?;
        let more = more == "true}";
        pages.push(body);
        if !more {
            break;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "served {EVENTS} events in {} pages in {elapsed:?}",
        pages.len()
    );

    let mut expected = 1;
    for body in &pages {
        let page: serde_json::Value = serde_json::from_slice(body)?;
        for e in page["events"].as_array().ok_or("no events")? {
            assert_eq!(e["seq"], expected);
            expected += 1;
        }
    }
    assert_eq!(expected, EVENTS + 1);
    Ok(())
}
