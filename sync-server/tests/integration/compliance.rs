//! Tour compliance on every backend (the store's contract), with the time of every sync and
//! pass chosen: windows computed as scans arrive, provisional while a device on shift has not
//! delivered past a window's grace, closed and finalised by the periodic pass (by delivery, or
//! by the deadline), amendments when a late sync changes a final window, announcements for the
//! live streams; and the simulation: one night of several guards' logs delivered in random
//! orders and cut points gives, incrementally, exactly the compliance worked out from scratch
//! from all the scans.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use chrono::NaiveDate;
use patrol_core::compliance::{FinalBy, assign_scans, grace_ms};
use patrol_core::protocol::DocOutcome;
use patrol_core::siteconfig::{CheckpointState, SiteConfig, SiteZone};
use patrol_core::{CheckpointId, EventBody, EventId};
use patrol_server::Store;
use patrol_server::store::compliance::{Span, WindowQuery, WindowView, WindowsAnswer};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::{Backend, Phone, SITE, TestResult, TestServer, scan_of, site};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// Saturday 1 March 2025 (GMT) at `hh:mm`, past midnight being the Sunday: the night
/// [`Phone`]s start their shifts in (22:01).
fn night(hh: i64, mm: i64) -> i64 {
    let base = Phone::wall_ms(0); // 22:00
    let h = if hh < 12 { hh + 24 } else { hh };
    base + (h - 22) * HOUR + mm * MIN
}

const DATE: &str = "2025-03-01";

/// site-1 in London: checkpoints cp-1..cp-3; the tour `night`, hourly from 22:00 to 02:00 with
/// 15 minutes' grace, its windows final `finalise_after_hours` after their end.
fn config(finalise_after_hours: u32) -> Result<SiteConfig, Box<dyn std::error::Error>> {
    let mut config: SiteConfig = serde_json::from_value(serde_json::json!({
        "site": SITE, "version": 0, "time_zone": "Europe/London",
        "checkpoints": [
            {"id": "cp-1", "name": "Gate", "tags": ["tag-cp-1"], "location": null, "radius_m": null},
            {"id": "cp-2", "name": "Stairs", "tags": ["tag-cp-2"], "location": null, "radius_m": null},
            {"id": "cp-3", "name": "Roof", "tags": ["tag-cp-3"], "location": null, "radius_m": null},
        ],
        "tours": [{"id": "night", "name": "Night round", "checkpoints": ["cp-1", "cp-2", "cp-3"],
                   "schedule": [{"every_min": 60, "from": "22:00", "to": "02:00"}],
                   "grace_min": 15}],
        "post_orders": [],
    }))?;
    config.rules.finalise_after_hours = finalise_after_hours;
    config.validate()?;
    Ok(config)
}

/// Records a scan of `checkpoint` at `true_ms` (on the phone's clock, which is its offset
/// off).
fn scan(
    phone: &mut Phone,
    checkpoint: &str,
    true_ms: i64,
) -> Result<EventId, Box<dyn std::error::Error>> {
    phone.record_at(true_ms, scan_of(checkpoint)?)
}

/// Syncs what the phone has not delivered, received at `received_ms`, with the site's
/// configuration as the server reads it for a request; the request carries the phone's clock
/// then, so the events' corrected times are their true times.
async fn sync_at(store: &Arc<dyn Store>, phone: &mut Phone, received_ms: i64) -> TestResult {
    let mut batch = phone.batch(received_ms)?;
    batch.config = Arc::new(store.site_config(site()).await?.config);
    let outcomes = store.sync(batch).await?;
    assert!(
        matches!(outcomes[0], DocOutcome::Accepted { .. }),
        "{outcomes:?}"
    );
    phone.on_accepted(&outcomes[0]);
    Ok(())
}

async fn tonight(
    store: &Arc<dyn Store>,
    now_ms: i64,
) -> Result<WindowsAnswer, Box<dyn std::error::Error>> {
    Ok(store
        .tour_windows(
            site(),
            WindowQuery {
                tour: Some("night".into()),
                span: Span::Date(NaiveDate::parse_from_str(DATE, "%Y-%m-%d")?),
            },
            now_ms,
        )
        .await?)
}

/// Each checkpoint's state code, in the tour's order.
fn states(w: &WindowView) -> Vec<&'static str> {
    w.checkpoints.iter().map(|c| c.state.code()).collect()
}

/// The announcements stored so far: (event name, JSON).
async fn announcements(
    store: &Arc<dyn Store>,
) -> Result<Vec<(String, Value)>, Box<dyn std::error::Error>> {
    let (changes, last) = store.window_changes(site(), 0, 1000).await?;
    assert_eq!(changes.last().map_or(0, |c| c.seq), last);
    changes
        .into_iter()
        .map(|c| Ok((c.kind, serde_json::from_str(&c.data)?)))
        .collect()
}

/// Anna scans cp-1 on time and cp-2 late in the 22:00 round, cp-3 in the 23:00 round; Ben has
/// only started his shift. The 22:00 round shows done, done late, and missed once its grace is
/// over, and stays provisional while Ben has delivered nothing past 23:15; once his log
/// reaches 23:40, the pass marks it final by delivery. The pass closes the rounds whose grace
/// ends, the 00:00 round that nobody scanned at all included; they turn final when Anna's end of
/// shift and Ben's next scans arrive. Each change is announced.
async fn a_window_is_provisional_until_every_device_on_shift_delivered(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    store.put_site_config(config(6)?, 0, 0).await?;
    let mut anna = server.phone("anna").await?;
    let mut ben = server.phone("ben").await?;
    sync_at(&store, &mut ben, night(22, 5)).await?;
    let cp1 = scan(&mut anna, "cp-1", night(22, 10))?;
    let cp2 = scan(&mut anna, "cp-2", night(23, 5))?;
    scan(&mut anna, "cp-3", night(23, 20))?;
    sync_at(&store, &mut anna, night(23, 30)).await?;

    let view = tonight(&store, night(23, 31)).await?;
    assert_eq!(view.time_zone, SiteZone::new("Europe/London")?);
    assert_eq!(view.windows.len(), 4, "22:00, 23:00, 00:00, 01:00");
    let first = &view.windows[0];
    assert_eq!(
        (first.window.start_ms, first.window.end_ms),
        (night(22, 0), night(23, 0))
    );
    assert_eq!(states(first), ["done", "done_late", "missed"]);
    let scans: Vec<Option<EventId>> = first
        .checkpoints
        .iter()
        .map(|c| c.scan.as_ref().map(|s| s.event_id))
        .collect();
    assert_eq!(scans, [Some(cp1), Some(cp2), None]);
    assert_eq!(
        first.checkpoints[0].scan.as_ref().map(|s| s.guard.as_str()),
        Some("anna")
    );
    assert_eq!(first.tally.percent(), 66);
    assert_eq!(first.final_, None, "Ben has not delivered past 23:15");
    assert_eq!(states(&view.windows[1]), ["due", "due", "done"]);
    assert_eq!(states(&view.windows[2]), ["upcoming"; 3]);

    scan(&mut ben, "cp-1", night(23, 40))?;
    sync_at(&store, &mut ben, night(23, 45)).await?;
    let report = store.settle_windows(site(), night(23, 46)).await?;
    assert_eq!(report.map(|r| (r.closed, r.finalised)), Some((0, 1)));
    let view = tonight(&store, night(23, 47)).await?;
    let first = &view.windows[0];
    assert_eq!(
        first.final_.map(|f| (f.by, f.at_ms)),
        Some((FinalBy::Delivery, night(23, 46)))
    );
    assert_eq!(states(first), ["done", "done_late", "missed"]);
    assert_eq!(states(&view.windows[1]), ["done", "due", "done"]);
    assert_eq!(view.windows[1].final_, None);

    // Past the graces of the 23:00 and 00:00 rounds: closed, the second without a single scan,
    // and provisional (Anna's log reaches 23:20, Ben's 23:40).
    let report = store.settle_windows(site(), night(1, 20)).await?;
    assert_eq!(report.map(|r| (r.closed, r.finalised)), Some((2, 0)));
    let view = tonight(&store, night(1, 21)).await?;
    assert_eq!(states(&view.windows[1]), ["done", "missed", "done"]);
    assert_eq!(states(&view.windows[2]), ["missed"; 3]);
    assert!(view.windows[1..].iter().all(|w| w.final_.is_none()));
    // A second pass changes nothing.
    let report = store.settle_windows(site(), night(1, 22)).await?;
    assert_eq!(report.map(|r| (r.closed, r.finalised)), Some((0, 0)));

    // Anna's shift ends; Ben's log then reaches 01:25: both delivered past 01:15.
    anna.record_at(night(1, 29), EventBody::ShiftEnded { note: None })?;
    sync_at(&store, &mut anna, night(1, 30)).await?;
    let report = store.settle_windows(site(), night(1, 31)).await?;
    assert_eq!(report.map(|r| r.finalised), Some(0), "Ben's log is behind");
    scan(&mut ben, "cp-2", night(1, 25))?;
    sync_at(&store, &mut ben, night(1, 32)).await?;
    let report = store.settle_windows(site(), night(1, 33)).await?;
    assert_eq!(report.map(|r| r.finalised), Some(2));

    let said = announcements(&store).await?;
    let kinds: Vec<(&str, &str)> = said
        .iter()
        .map(|(k, d)| (k.as_str(), d["start"].as_str().unwrap_or_default()))
        .collect();
    let at = |hh, mm| patrol_core::event::format_time_ms(night(hh, mm));
    let (w1, w2, w3, w4) = (at(22, 0), at(23, 0), at(0, 0), at(1, 0));
    assert_eq!(
        kinds,
        [
            ("window_changed", w1.as_str()), // Anna's sync
            ("window_changed", w2.as_str()),
            ("window_changed", w2.as_str()), // Ben's scan
            ("window_final", w1.as_str()),   // the pass at 23:46
            ("window_changed", w2.as_str()), // the pass at 01:20: cp-2 missed
            ("window_changed", w3.as_str()), // and the round nobody scanned
            ("window_changed", w4.as_str()), // Ben's last scan
            ("window_final", w2.as_str()),   // the pass at 01:33
            ("window_final", w3.as_str()),
        ]
    );
    let first = &said[0].1;
    assert_eq!(first["site_id"], SITE);
    assert_eq!(first["tour_id"], "night");
    assert_eq!(first["changes"][0]["checkpoint_id"], "cp-1");
    assert_eq!(first["changes"][0]["before"]["state"], "pending");
    assert_eq!(first["changes"][0]["after"]["state"], "done");
    assert_eq!(first["changes"][0]["after"]["event_id"], cp1.to_string());
    assert_eq!(first["changes"][2]["after"]["state"], "missed");
    let final_ = &said[3].1;
    assert_eq!(final_["final_by"], "delivery");
    assert_eq!(final_["percent"], 66);
    assert_eq!(
        (final_["done"].clone(), final_["missed"].clone()),
        (1.into(), 1.into())
    );
    Ok(())
}

/// No device known on shift: provisional until the deadline (an hour here), then final by it,
/// whenever the pass comes by. A phone nobody knew about syncs a scan of the 22:00 round
/// afterwards: the round changes, visibly, with an amendment saying before, after, the scan and
/// when; the answer and the announcements say so.
async fn a_late_scan_amends_a_window_final_by_its_deadline(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    store.put_site_config(config(1)?, 0, 0).await?;
    let mut anna = server.phone("anna").await?;
    scan(&mut anna, "cp-1", night(22, 10))?;
    scan(&mut anna, "cp-2", night(22, 11))?;
    sync_at(&store, &mut anna, night(22, 20)).await?;
    store.settle_windows(site(), night(23, 59)).await?;
    assert_eq!(
        tonight(&store, night(23, 59)).await?.windows[0].final_,
        None
    );
    // Past 00:00, the deadline of the 22:00 round: final as of its deadline, the pass or not.
    let view = tonight(&store, night(0, 1)).await?;
    assert_eq!(
        view.windows[0].final_.map(|f| (f.by, f.at_ms)),
        Some((FinalBy::Deadline, night(0, 0)))
    );
    store.settle_windows(site(), night(0, 2)).await?;
    let view = tonight(&store, night(0, 3)).await?;
    assert_eq!(states(&view.windows[0]), ["done", "done", "missed"]);

    let mut carl = server.phone("carl").await?;
    let late = scan(&mut carl, "cp-3", night(22, 30))?;
    sync_at(&store, &mut carl, night(0, 30)).await?;
    let view = tonight(&store, night(0, 31)).await?;
    let first = &view.windows[0];
    assert_eq!(states(first), ["done", "done", "done"], "changed, visibly");
    assert_eq!(
        first.final_.map(|f| f.by),
        Some(FinalBy::Deadline),
        "still final"
    );
    assert_eq!(first.amendments.len(), 1);
    let amended = first.amendments[0].json();
    assert_eq!(amended.checkpoint_id, "cp-3");
    assert_eq!(amended.before.state, "missed");
    assert_eq!(amended.after.state, "done");
    assert_eq!(amended.after.guard.as_deref(), Some("carl"));
    assert_eq!(amended.event_id, late.to_string());
    assert_eq!(amended.at, patrol_core::event::format_time_ms(night(0, 30)));

    let said = announcements(&store).await?;
    let (kind, data) = said.last().ok_or("no announcement")?;
    assert_eq!(kind, "window_amended");
    assert_eq!(data["amendments"][0]["after"]["state"], "done");
    assert_eq!(data["percent"], 100);
    // The API shows the same.
    let (status, page) = server
        .get_json(&format!(
            "/api/v1/sites/{SITE}/tours/night/windows?date={DATE}"
        ))
        .await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    let w = &page["windows"][0];
    assert_eq!(w["status"], "final");
    assert_eq!(w["final_by"], "deadline");
    assert_eq!(w["amendments"][0]["before"]["state"], "missed");
    assert_eq!(w["checkpoints"][2]["state"], "done");
    assert_eq!(w["checkpoints"][2]["event_id"], late.to_string());
    Ok(())
}

/// Asked for no span, the windows API answers with the windows around now (12 hours either
/// side), not an error: what a supervisor opening the view wants.
async fn without_a_span_the_windows_around_now_are_shown(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    server.store().put_site_config(config(1)?, 0, 0).await?;
    let (status, page) = server
        .get_json(&format!("/api/v1/sites/{SITE}/tours/windows"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    let windows = page["windows"].as_array().ok_or("no windows")?;
    assert!(!windows.is_empty(), "{page}");
    let now = crate::common::crate_now_ms();
    for w in windows {
        let start = chrono::DateTime::parse_from_rfc3339(w["start"].as_str().ok_or("no start")?)?;
        let end = chrono::DateTime::parse_from_rfc3339(w["end"].as_str().ok_or("no end")?)?;
        assert!(
            start.timestamp_millis() < now + 12 * 3_600_000
                && end.timestamp_millis() > now - 12 * 3_600_000,
            "{w}"
        );
    }
    Ok(())
}

/// Carl's phone is 3 hours slow and Dora's 2 hours fast: by their own clocks Carl scanned cp-1
/// at 19:10 and cp-2 at 20:20, before any round, and Dora cp-3 at 00:40 and 01:30. Each sync
/// measures the phone's offset, so the rounds they walked get their scans, worked out by hand:
/// the 22:00 round cp-1 (Carl, 22:10) and cp-3 (Dora, 22:40), cp-2 missed (Carl's 23:20 is past
/// its grace); the 23:00 round cp-2 (Carl) and cp-3 (Dora, 23:30), cp-1 still due.
async fn phones_hours_wrong_are_credited_to_the_rounds_they_walked(backend: Backend) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    store.put_site_config(config(6)?, 0, 0).await?;
    let mut carl = Phone::new_at(server.enroll_on(SITE).await?, "carl", -3 * HOUR)?;
    let mut dora = Phone::new_at(server.enroll_on(SITE).await?, "dora", 2 * HOUR)?;
    let cp1 = scan(&mut carl, "cp-1", night(22, 10))?;
    let cp2 = scan(&mut carl, "cp-2", night(23, 20))?;
    let cp3 = scan(&mut dora, "cp-3", night(22, 40))?;
    let cp3_again = scan(&mut dora, "cp-3", night(23, 30))?;
    sync_at(&store, &mut carl, night(23, 50)).await?;
    sync_at(&store, &mut dora, night(23, 55)).await?;

    let view = tonight(&store, night(23, 56)).await?;
    let taken = |w: &WindowView| -> Vec<Option<(EventId, i64, String)>> {
        w.checkpoints
            .iter()
            .map(|c| {
                c.scan
                    .as_ref()
                    .map(|s| (s.event_id, s.at_ms, s.guard.to_string()))
            })
            .collect()
    };
    assert_eq!(states(&view.windows[0]), ["done", "missed", "done"]);
    assert_eq!(
        taken(&view.windows[0]),
        [
            Some((cp1, night(22, 10), "carl".into())),
            None,
            Some((cp3, night(22, 40), "dora".into())),
        ]
    );
    assert_eq!(states(&view.windows[1]), ["due", "done", "done"]);
    assert_eq!(
        taken(&view.windows[1]),
        [
            None,
            Some((cp2, night(23, 20), "carl".into())),
            Some((cp3_again, night(23, 30), "dora".into())),
        ]
    );
    assert_eq!(states(&view.windows[2]), ["upcoming"; 3]);
    Ok(())
}

/// A window that turns final with a checkpoint missed queues `window.missed` for the endpoints
/// subscribed to it, in the pass that made it final, once; a provisional window does not.
async fn a_window_final_with_a_checkpoint_missed_queues_its_webhook(
    backend: Backend,
) -> TestResult {
    let server = TestServer::new(backend).await?;
    let store = server.store();
    store.put_site_config(config(6)?, 0, 0).await?;
    store
        .create_webhook(patrol_server::store::webhooks::NewWebhook {
            site: site(),
            url: "https://example.org/h".into(),
            events: vec!["window.missed".into()],
            secret: "whsec_test".into(),
            created_at_ms: 0,
            created_by: "admin".into(),
        })
        .await?;
    let mut anna = server.phone("anna").await?;
    let mut ben = server.phone("ben").await?;
    sync_at(&store, &mut ben, night(22, 5)).await?;
    scan(&mut anna, "cp-1", night(22, 10))?;
    scan(&mut anna, "cp-2", night(22, 20))?;
    // The next round's: Anna's log reaches past the 22:00 round's grace.
    scan(&mut anna, "cp-3", night(23, 20))?;
    sync_at(&store, &mut anna, night(23, 30)).await?;
    store.settle_windows(site(), night(23, 31)).await?;
    assert!(
        store.webhook_deliveries(site(), None, 10).await?.is_empty(),
        "provisional: Ben has not delivered past 23:15"
    );

    scan(&mut ben, "cp-1", night(23, 40))?;
    sync_at(&store, &mut ben, night(23, 45)).await?;
    let report = store.settle_windows(site(), night(23, 46)).await?;
    assert_eq!(report.map(|r| r.finalised), Some(1));
    store.settle_windows(site(), night(23, 50)).await?;
    let queued = store.webhook_deliveries(site(), None, 10).await?;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(
        queued[0].key,
        "window.missed:night:2025-03-01T22:00:00.000Z"
    );
    let body: Value = serde_json::from_str(&queued[0].body)?;
    assert_eq!(
        (
            body["type"].clone(),
            body["data"]["missed"].clone(),
            body["data"]["done"].clone()
        ),
        (Value::from("window.missed"), Value::from(1), Value::from(2))
    );
    Ok(())
}

crate::on_every_backend!(
    a_window_final_with_a_checkpoint_missed_queues_its_webhook,
    phones_hours_wrong_are_credited_to_the_rounds_they_walked,
    without_a_span_the_windows_around_now_are_shown,
    a_window_is_provisional_until_every_device_on_shift_delivered,
    a_late_scan_amends_a_window_final_by_its_deadline,
    incremental_compliance_equals_compliance_from_scratch,
);

/// The night's windows as worked out from scratch from every scan in the feed: each window's
/// scan per checkpoint (event id), by the core's rule.
async fn from_scratch(
    server: &TestServer,
    config: &SiteConfig,
) -> Result<BTreeMap<(i64, i64), Vec<Option<String>>>, Box<dyn std::error::Error>> {
    let tour = config.tour("night").ok_or("no tour")?;
    let mut scans: Vec<(i64, [u8; 16], String, String)> = Vec::new();
    for e in server.whole_feed(10_000).await? {
        if e["kind"] != "checkpoint_scanned" {
            continue;
        }
        let at = chrono::DateTime::parse_from_rfc3339(e["corrected_time"].as_str().ok_or("time")?)?
            .timestamp_millis();
        let id: uuid::Uuid = e["id"].as_str().ok_or("id")?.parse()?;
        scans.push((
            at,
            *id.as_bytes(),
            e["checkpoint"].as_str().ok_or("cp")?.to_owned(),
            id.to_string(),
        ));
    }
    // The order the server takes them in: corrected time, then event id.
    scans.sort();
    let pairs: Vec<(CheckpointId, i64)> = scans
        .iter()
        .map(|(at, _, cp, _)| Ok((CheckpointId::new(cp.clone())?, *at)))
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let windows = tour.windows_between(config.time_zone, night(12, 0), night(11, 0))?;
    let mut taken = vec![false; pairs.len()];
    let assigned = assign_scans(
        &tour.checkpoints,
        grace_ms(tour.grace_min),
        &windows,
        &pairs,
        &mut taken,
    );
    Ok(windows
        .iter()
        .zip(assigned)
        .map(|(w, row)| {
            (
                (w.start_ms, w.end_ms),
                row.iter()
                    .map(|t| t.map(|t| scans[t.scan].3.clone()))
                    .collect(),
            )
        })
        .collect())
}

/// The night's windows as the server keeps them: each window's scan per checkpoint.
async fn kept(
    store: &Arc<dyn Store>,
    now_ms: i64,
) -> Result<BTreeMap<(i64, i64), Vec<Option<String>>>, Box<dyn std::error::Error>> {
    Ok(tonight(store, now_ms)
        .await?
        .windows
        .iter()
        .map(|w| {
            (
                (w.window.start_ms, w.window.end_ms),
                w.checkpoints
                    .iter()
                    .map(|c| c.scan.as_ref().map(|s| s.event_id.to_string()))
                    .collect(),
            )
        })
        .collect())
}

/// The simulation: four guards (one with a clock 2 hours fast, one 3 hours slow) scan the
/// night's checkpoints at random, often inside each other's graces and several times over, and
/// end their shifts; their logs reach the server in random cut points and a random
/// interleaving, with the periodic pass run at random moments between (windows final by
/// delivery or by their deadline by then, some amended after). For every seed,
/// after every sync, the windows the server keeps take exactly the scans the rule gives from
/// scratch from every scan delivered so far; and once everything is in, no window is left
/// without the scans it should have.
async fn incremental_compliance_equals_compliance_from_scratch(backend: Backend) -> TestResult {
    let seeds: u64 = match backend {
        Backend::Sqlite(_) => 12,
        Backend::Postgres(_) => 4,
    };
    let mut server = TestServer::new(backend).await?;
    // What the runs went through, so that they are known to cover it: amendments of final
    // windows, and windows final by delivery as well as by their deadline.
    let (mut amended, mut by_delivery, mut by_deadline) = (0, 0, 0);
    for seed in 0..seeds {
        if seed > 0 {
            server = TestServer::new(server.backend.another().await?).await?;
        }
        let store = server.store();
        let config = config(2)?;
        store.put_site_config(config.clone(), 0, 0).await?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let skews = [0, 2 * HOUR, -3 * HOUR, 0];
        let mut guards = Vec::new();
        for (g, skew) in skews.iter().enumerate() {
            let enrolled = server.enroll_on(SITE).await?;
            let phone = Phone::new_at(enrolled, &format!("guard-{g}"), *skew)?;
            // The guard's scans, in the order they happen, in chunks to deliver.
            let mut times: Vec<i64> = (0..rng.random_range(6..16))
                .map(|_| night(22, 2) + rng.random_range(0..(4 * HOUR + 30 * MIN)))
                .collect();
            times.sort();
            let mut chunks: Vec<Vec<(String, i64)>> = vec![Vec::new()];
            for t in times {
                let cp = format!("cp-{}", rng.random_range(1..=3));
                chunks.last_mut().ok_or("no chunk")?.push((cp, t));
                if rng.random_bool(0.3) {
                    chunks.push(Vec::new());
                }
            }
            chunks.reverse();
            guards.push((phone, chunks));
        }
        // Deliveries in a random interleaving, each after the scans it carries and the sync
        // before it.
        let mut received = night(22, 3);
        loop {
            let ready: Vec<usize> = (0..guards.len())
                .filter(|&g| !guards[g].1.is_empty())
                .collect();
            if ready.is_empty() {
                break;
            }
            let g = ready[rng.random_range(0..ready.len())];
            let chunk = guards[g].1.pop().ok_or("no chunk")?;
            let last = guards[g].1.is_empty();
            let phone = &mut guards[g].0;
            let mut latest = received;
            for (cp, t) in chunk {
                scan(phone, &cp, t)?;
                latest = latest.max(t);
            }
            if last {
                latest += MIN;
                phone.record_at(latest, EventBody::ShiftEnded { note: None })?;
            }
            received = latest + rng.random_range(1..40) * MIN;
            sync_at(&store, phone, received).await?;
            if rng.random_bool(0.4) {
                store.settle_windows(site(), received + MIN).await?;
            }
            assert_eq!(
                kept(&store, received + 2 * MIN).await?,
                from_scratch(&server, &config).await?,
                "seed {seed}, after a sync at {received}"
            );
        }
        let received = received.max(night(3, 0));
        store.settle_windows(site(), received + HOUR).await?;
        let view = tonight(&store, received + HOUR).await?;
        assert!(
            view.windows.iter().all(|w| w.final_.is_some()),
            "seed {seed}"
        );
        for w in &view.windows {
            amended += w.amendments.len();
            match w.final_.map(|f| f.by) {
                Some(FinalBy::Delivery) => by_delivery += 1,
                _ => by_deadline += 1,
            }
            for c in &w.checkpoints {
                assert_eq!(
                    matches!(c.state, CheckpointState::Missed),
                    c.scan.is_none(),
                    "seed {seed}: {c:?}"
                );
            }
        }
    }
    assert!(
        amended > 0 && by_delivery > 0 && by_deadline > 0,
        "amended {amended}, final by delivery {by_delivery}, by deadline {by_deadline}"
    );
    Ok(())
}
