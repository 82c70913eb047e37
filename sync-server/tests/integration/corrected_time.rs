//! Time you can trust, on every backend: each event keeps its device's own time and its
//! receipt, and gains a corrected time (the device time moved by the clock offset measured at
//! the sync that delivered it, never past the receipt) and, when the offset is beyond the
//! threshold (2 minutes), a `clock_skew` flag; the feed's time filters use the corrected time
//! and `flag=` finds flagged events.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use patrol_core::EventId;
use patrol_core::event::format_time_ms;
use serde_json::{Value, json};

use crate::common::{Phone, SITE, TestResult, TestServer, crate_now_ms, scan_of};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// Syncs what the phone has not delivered in a request stamped with its clock, `skew_ms` off
/// the true time (negative: slow); returns the clock the request carried.
async fn sync_with_clock(
    server: &TestServer,
    phone: &mut Phone,
    skew_ms: i64,
) -> Result<i64, Box<dyn std::error::Error>> {
    let mut request = phone.push_request()?;
    request.device_time_ms = crate_now_ms() + skew_ms;
    let response = server.sync(&request).await?;
    phone.on_accepted(&response.docs[0].outcome);
    Ok(request.device_time_ms)
}

fn ms(event: &Value, field: &str) -> Result<i64, Box<dyn std::error::Error>> {
    let text = event[field]
        .as_str()
        .ok_or_else(|| format!("no {field} in {event}"))?;
    Ok(chrono::DateTime::parse_from_rfc3339(text)?.timestamp_millis())
}

/// One event of the whole feed, by id.
async fn event(server: &TestServer, id: EventId) -> Result<Value, Box<dyn std::error::Error>> {
    server
        .whole_feed(100)
        .await?
        .into_iter()
        .find(|e| e["id"] == id.to_string())
        .ok_or_else(|| format!("event {id} not in the feed").into())
}

/// A phone 3 hours slow scans 10 minutes ago (by the true time): its event keeps the device's
/// time, 3 hours 10 minutes ago, and is corrected by exactly the offset its sync measured, to
/// between the true time of the scan and its receipt. It is flagged with that offset, and the
/// feed's time filters find it by its corrected time, not its device time.
async fn a_slow_phone_is_corrected_and_flagged(backend: crate::common::Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    let scanned_at = crate_now_ms() - 10 * MINUTE;
    let id = phone.record_at(scanned_at - 3 * HOUR, scan_of("cp-1")?)?;
    let sent = sync_with_clock(&server, &mut phone, -3 * HOUR).await?;

    let e = event(&server, id).await?;
    let (device, corrected, received) = (
        ms(&e, "device_time")?,
        ms(&e, "corrected_time")?,
        ms(&e, "received_at")?,
    );
    let offset = received - sent;
    assert_eq!(device, scanned_at - 3 * HOUR, "{e}");
    assert_eq!(corrected, device + offset, "{e}");
    assert!(
        scanned_at <= corrected && corrected <= received,
        "corrected {corrected} not between the scan {scanned_at} and its receipt {received}"
    );
    assert_eq!(
        e["flags"],
        json!([{"flag": "clock_skew", "offset_ms": offset}])
    );

    let id = id.to_string();
    let an_hour_before = format_time_ms(scanned_at - HOUR);
    assert!(
        server
            .feed_ids(&format!("from={an_hour_before}"))
            .await?
            .contains(&id)
    );
    assert!(
        !server
            .feed_ids(&format!("to={an_hour_before}"))
            .await?
            .contains(&id)
    );
    assert!(server.feed_ids("flag=clock_skew").await?.contains(&id));
    Ok(())
}

/// Clocks 2 minutes 1 second slow and 3 hours fast are beyond the 2-minute threshold: the
/// events of their syncs are flagged. One minute slow is not (nor its events): `flag=` finds
/// exactly the flagged events, and an unknown flag is refused.
async fn only_offsets_beyond_the_threshold_are_flagged(
    backend: crate::common::Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let mut phone = server.phone("guard-1").await?;
    let shift_started = phone.recorded[0];
    let now = crate_now_ms();
    let a = phone.record_at(now - 121_000, scan_of("cp-a")?)?;
    sync_with_clock(&server, &mut phone, -121_000).await?;
    let b = phone.record_at(now - MINUTE, scan_of("cp-b")?)?;
    sync_with_clock(&server, &mut phone, -MINUTE).await?;
    let c = phone.record_at(now + 3 * HOUR, scan_of("cp-c")?)?;
    sync_with_clock(&server, &mut phone, 3 * HOUR).await?;

    let flagged = server.feed_ids("flag=clock_skew").await?;
    let expected: BTreeSet<String> = [shift_started, a, c]
        .iter()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(flagged, expected);
    assert_eq!(event(&server, b).await?["flags"], json!([]));
    let fast = event(&server, c).await?;
    let offset = fast["flags"][0]["offset_ms"].as_i64().ok_or("no offset")?;
    assert!(offset < -3 * HOUR + MINUTE, "{fast}");
    // Corrected back by the offset: before its receipt, though its device time is 3 hours on.
    assert!(ms(&fast, "corrected_time")? <= ms(&fast, "received_at")?);
    assert_eq!(
        ms(&fast, "corrected_time")?,
        ms(&fast, "device_time")? + offset
    );

    let (status, body) = server
        .get_json(&format!("/api/v1/sites/{SITE}/events?flag=nonsense"))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("clock_skew")),
        "{body}"
    );
    Ok(())
}

crate::on_every_backend!(
    a_slow_phone_is_corrected_and_flagged,
    only_offsets_beyond_the_threshold_are_flagged
);
