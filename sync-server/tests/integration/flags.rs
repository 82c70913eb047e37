//! Anomaly flags, on every backend: each kind is worked out when the scan arrives, from the
//! site's configuration and rules and the scans the server already holds, stored with the
//! event, shown in the feed and found by `flag=`; a cloned tag ends up on both scans, whichever
//! arrived first.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use patrol_core::flags::EventFlag;
use patrol_core::{CheckpointId, EventBody, EventId, Location, Scan, ScanMethod};
use serde_json::{Value, json};

use crate::common::{Backend, Phone, SITE, TestResult, TestServer, crate_now_ms};

const MIN: i64 = 60_000;
/// A night long past: its window opens then (and the phones' clocks are right).
const LONG_AGO: i64 = 1_740_866_400_000;

/// Degrees of latitude in `metres` north of 51.5 N.
fn north(metres: f64) -> f64 {
    51.5 + metres / 111_195.0
}

/// cp-1 (tag T1, at 51.5 N), cp-2 (T2, 1 km north of it), cp-3 (Q3, QR only), all on the
/// ordered tour `night`, open from `t` for two hours, grace 10 min; cp-9 (T9) on no tour.
fn config(t: i64) -> Value {
    json!({
        "base_version": 0,
        "checkpoints": [
            {"id": "cp-1", "name": "Gate", "tags": ["T1"],
             "location": {"lat": north(0.0), "lon": -0.12, "accuracy_m": null}, "radius_m": 15.0},
            {"id": "cp-2", "name": "Yard", "tags": ["T2"],
             "location": {"lat": north(1000.0), "lon": -0.12, "accuracy_m": null}, "radius_m": 15.0},
            {"id": "cp-3", "name": "Plant room", "tags": ["Q3"], "location": null,
             "radius_m": null, "methods": ["qr"]},
            {"id": "cp-9", "name": "Roof", "tags": ["T9"], "location": null, "radius_m": null}
        ],
        "tours": [{
            "id": "night", "name": "Night round", "checkpoints": ["cp-1", "cp-2", "cp-3"],
            "windows": [{"start_ms": t, "end_ms": t + 120 * MIN}], "grace_min": 10,
            "ordered": true
        }],
        "post_orders": []
    })
}

fn scan(
    checkpoint: &str,
    method: ScanMethod,
    fix: Option<f64>,
) -> Result<EventBody, Box<dyn std::error::Error>> {
    Ok(EventBody::CheckpointScanned(Scan {
        checkpoint: CheckpointId::new(checkpoint)?,
        method,
        location: fix.map(|metres| Location {
            lat: north(metres),
            lon: -0.12,
            accuracy_m: Some(10.0),
        }),
        note: None,
    }))
}

fn nfc(tag: &str) -> ScanMethod {
    ScanMethod::Nfc { tag: tag.into() }
}

/// Delivers what the phone has not, its clock `skew_ms` off the server's.
async fn sync(server: &TestServer, phone: &mut Phone, skew_ms: i64) -> TestResult {
    let mut request = phone.push_request()?;
    request.device_time_ms = crate_now_ms() + skew_ms;
    let response = server.sync(&request).await?;
    phone.on_accepted(&response.docs[0].outcome);
    Ok(())
}

/// The flags of every event of the feed, by id.
async fn flags(server: &TestServer) -> Result<BTreeMap<String, Value>, Box<dyn std::error::Error>> {
    Ok(server
        .whole_feed(100)
        .await?
        .into_iter()
        .filter_map(|e| Some((e["id"].as_str()?.to_owned(), e["flags"].clone())))
        .collect())
}

/// The flags of `id` as the core reads them back.
fn flags_of(all: &BTreeMap<String, Value>, id: EventId) -> Result<Vec<EventFlag>, String> {
    let json = all
        .get(&id.to_string())
        .ok_or_else(|| format!("{id} not in the feed"))?;
    serde_json::from_value(json.clone()).map_err(|e| format!("{json}: {e}"))
}

/// A server with the site configured by `config(t)`, and the phones of anna, bob and carl.
async fn night(
    backend: Backend,
    t: i64,
) -> Result<(TestServer, [Phone; 3]), Box<dyn std::error::Error>> {
    let server = TestServer::new(backend).await?;
    let (status, body) = server
        .send_json("PUT", &format!("/api/v1/sites/{SITE}/config"), &config(t))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let phones = [
        server.phone("anna").await?,
        server.phone("bob").await?,
        server.phone("carl").await?,
    ];
    Ok((server, phones))
}

/// Two guards' phones on the night of `config`: anna's scans earn one of each flag of a scan,
/// bob's and anna's scans of one tag ten and twenty seconds apart are cloned (bob's first, then
/// anna's first), and carl's phone, three hours slow, is skewed. Each flag is stored on exactly
/// its events and `flag=` finds them; the cloned tags are on both scans.
/// The server restarts after bob's first scan: what it knew of the stored scans is read again.
async fn flags_of_a_night(backend: Backend, t: i64) -> TestResult {
    let (mut server, [mut anna, mut bob, mut carl]) = night(backend, t).await?;

    let a1 = anna.record_at(t + MIN, scan("cp-2", nfc("T2"), None)?)?;
    let a2 = anna.record_at(t + 5 * MIN, scan("cp-1", nfc("T1"), None)?)?;
    let a3 = anna.record_at(t + 6 * MIN, scan("cp-1", nfc("T1"), None)?)?;
    let a4 = anna.record_at(t + 7 * MIN, scan("cp-9", nfc("T1"), None)?)?;
    let a5 = anna.record_at(t + 8 * MIN, scan("unknown", nfc("T?"), None)?)?;
    let a6 = anna.record_at(t + 20 * MIN, scan("cp-2", ScanMethod::Gps, Some(1300.0))?)?;
    let a7 = anna.record_at(t + 25 * MIN, scan("cp-3", nfc("Q3"), None)?)?;
    let manual = ScanMethod::Manual {
        reason: "tag broken".into(),
    };
    let a8 = anna.record_at(t + 30 * MIN, scan("cp-9", manual, None)?)?;
    let a9 = anna.record_at(t + 40 * MIN, scan("cp-7", ScanMethod::Gps, Some(0.0))?)?;
    sync(&server, &mut anna, 0).await?;

    // Bob's scan of T9 arrives first, then anna's ten seconds later.
    let b1 = bob.record_at(t + 60 * MIN, scan("cp-9", nfc("T9"), None)?)?;
    sync(&server, &mut bob, 0).await?;
    server.reopen().await?;
    let a10 = anna.record_at(t + 60 * MIN + 10_000, scan("cp-9", nfc("T9"), None)?)?;
    sync(&server, &mut anna, 0).await?;
    // Anna's first, then bob's twenty seconds later.
    let a11 = anna.record_at(t + 90 * MIN, scan("cp-9", nfc("T9"), None)?)?;
    sync(&server, &mut anna, 0).await?;
    let b2 = bob.record_at(t + 90 * MIN + 20_000, scan("cp-9", nfc("T9"), None)?)?;
    sync(&server, &mut bob, 0).await?;

    // After the window and its grace; then cp-2, 1 km on, a minute later.
    let a12 = anna.record_at(t + 180 * MIN, scan("cp-1", nfc("T1"), None)?)?;
    let a13 = anna.record_at(t + 181 * MIN, scan("cp-2", nfc("T2"), None)?)?;
    sync(&server, &mut anna, 0).await?;
    let carl_started = carl.recorded[0];
    let c1 = carl.record(EventBody::Note { text: "n".into() })?;
    sync(&server, &mut carl, -3 * 60 * MIN).await?;

    let all = flags(&server).await?;
    let names = |id: EventId| -> Result<Vec<&'static str>, String> {
        Ok(flags_of(&all, id)?.iter().map(EventFlag::name).collect())
    };
    let expected: [(EventId, &[&str]); 15] = [
        (a1, &["out_of_order"]),
        (a2, &[]),
        (a3, &["padding"]),
        (a4, &["tag_of_another_checkpoint"]),
        (a5, &["unknown_tag"]),
        (a6, &["far_from_checkpoint"]),
        (a7, &["method_not_accepted"]),
        (a8, &["manual"]),
        (a9, &["unknown_checkpoint"]),
        (a10, &["cloned_tag"]),
        (a11, &["cloned_tag"]),
        (a12, &["outside_window"]),
        (a13, &["impossible_speed", "outside_window"]),
        (b1, &["cloned_tag"]),
        (b2, &["cloned_tag"]),
    ];
    for (id, want) in expected {
        assert_eq!(names(id)?, want, "{id}: {}", all[&id.to_string()]);
    }
    assert_eq!(names(carl_started)?, ["clock_skew"]);
    assert_eq!(names(c1)?, ["clock_skew"]);

    // What each flag says.
    assert_eq!(
        flags_of(&all, a1)?,
        [EventFlag::OutOfOrder {
            tour: "night".into(),
            missing: CheckpointId::new("cp-1")?
        }]
    );
    assert!(matches!(
        flags_of(&all, a3)?[..],
        [EventFlag::Padding { earlier_event, after_ms }] if earlier_event == a2 && after_ms == MIN
    ));
    assert!(matches!(
        flags_of(&all, a6)?[..],
        [EventFlag::FarFromCheckpoint {
            distance_m: 299..=301,
            accuracy_m: Some(10)
        }]
    ));
    assert!(matches!(
        flags_of(&all, a13)?[0],
        EventFlag::ImpossibleSpeed {
            speed_kmh: 60,
            distance_m: 1000,
            after_ms: 60_000
        }
    ));
    for (mine, theirs, device, apart) in [
        (a10, b1, bob.device, 10_000),
        (b1, a10, anna.device, 10_000),
        (a11, b2, bob.device, 20_000),
        (b2, a11, anna.device, 20_000),
    ] {
        let [
            EventFlag::ClonedTag {
                other_device,
                other_event,
                apart_ms,
            },
        ] = flags_of(&all, mine)?[..]
        else {
            panic!("{mine}: {}", all[&mine.to_string()]);
        };
        assert_eq!((other_device, other_event), (device, theirs));
        // Each sync measures its own offset: a few milliseconds either way.
        assert!((apart_ms - apart).abs() < 1_000, "{apart_ms}");
    }

    // `flag=` finds exactly the events carrying each flag.
    for name in EventFlag::NAMES {
        let want: BTreeSet<String> = all
            .iter()
            .filter(|(_, flags)| {
                flags
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["flag"] == *name))
            })
            .map(|(id, _)| id.clone())
            .collect();
        assert!(!want.is_empty(), "no event flagged {name}");
        assert_eq!(
            server.feed_ids(&format!("flag={name}")).await?,
            want,
            "flag={name}"
        );
    }
    Ok(())
}

/// A night long past.
async fn every_flag_is_stored_and_found(backend: Backend) -> TestResult {
    flags_of_a_night(backend, LONG_AGO).await
}

/// Tonight.
async fn every_flag_of_tonight_is_stored_and_found(backend: Backend) -> TestResult {
    flags_of_a_night(backend, (crate_now_ms() - 4 * 60 * MIN) / MIN * MIN).await
}

/// Anna's phone delivers its scans of a night a day after the site's newest: they are flagged
/// by the scans around them all the same.
async fn a_log_delivered_days_late_is_flagged_the_same(backend: Backend) -> TestResult {
    let t = LONG_AGO;
    let (server, [mut anna, mut bob, mut carl]) = night(backend, t).await?;
    let a1 = anna.record_at(t, scan("cp-1", nfc("T1"), None)?)?;
    sync(&server, &mut anna, 0).await?;
    let b1 = bob.record_at(t + 60 * MIN, scan("cp-9", nfc("T9"), None)?)?;
    sync(&server, &mut bob, 0).await?;
    carl.record_at(t + 30 * 60 * MIN, scan("cp-2", nfc("T2"), None)?)?;
    sync(&server, &mut carl, 0).await?;

    let a2 = anna.record_at(t + MIN, scan("cp-1", nfc("T1"), None)?)?;
    let a3 = anna.record_at(t + 60 * MIN + 10_000, scan("cp-9", nfc("T9"), None)?)?;
    sync(&server, &mut anna, 0).await?;

    let all = flags(&server).await?;
    let names = |id: EventId| -> Result<Vec<&'static str>, String> {
        Ok(flags_of(&all, id)?.iter().map(EventFlag::name).collect())
    };
    assert_eq!(names(a1)?, Vec::<&str>::new());
    assert!(matches!(
        flags_of(&all, a2)?[..],
        [EventFlag::Padding { earlier_event, .. }] if earlier_event == a1
    ));
    assert!(matches!(
        flags_of(&all, a3)?[..],
        [EventFlag::ClonedTag { other_event, .. }] if other_event == b1
    ));
    assert!(matches!(
        flags_of(&all, b1)?[..],
        [EventFlag::ClonedTag { other_event, .. }] if other_event == a3
    ));
    Ok(())
}

crate::on_every_backend!(
    every_flag_is_stored_and_found,
    every_flag_of_tonight_is_stored_and_found,
    a_log_delivered_days_late_is_flagged_the_same
);
