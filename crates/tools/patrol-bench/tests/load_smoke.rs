//! The load run end to end at a tiny size, so it cannot rot: devices sync, the probe answers,
//! and nothing acknowledged is lost. No timing is asserted.

use std::time::Duration;

use patrol_bench::load::{LoadParams, run_load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_run_syncs_and_loses_nothing_at_d4_for_2s() -> anyhow::Result<()> {
    let params = LoadParams {
        think_ms: 100,
        probe_every: Duration::from_millis(100),
        panic_every: Some(Duration::from_millis(500)),
        ..LoadParams::new(4, Duration::from_secs(2))
    };
    let r = run_load(&params).await?;
    assert!(r.syncs.ok + r.syncs.retried > 0, "{:?}", r.syncs);
    assert!(r.syncs.errors.is_empty(), "{:?}", r.syncs.errors);
    assert!(r.events_recorded > 0 && r.events_acknowledged > 0);
    assert!(r.loss.ok, "{:?}", r.loss);
    // Every scan and panic and each shift's start, delivered and on the server once.
    assert_eq!(r.loss.acknowledged, r.events_recorded + 5);
    // The panics went through the panic lane and were acknowledged.
    assert!(r.panics.delivery_ms.n > 0, "{:?}", r.panics);
    assert_eq!(r.panics.acknowledge_ms.n, r.panics.delivery_ms.n);
    assert_eq!(r.panics.panic_lane_syncs, r.panics.delivery_ms.n);
    assert!(r.panics.errors.is_empty(), "{:?}", r.panics.errors);
    assert_eq!(r.loss.on_server, r.loss.acknowledged);
    assert_eq!(r.final_sync.devices_pending, 0);
    assert!(r.probe.feed_page.n > 0 && r.probe.device_list.n > 0);
    assert!(r.probe.errors.is_empty(), "{:?}", r.probe.errors);
    assert!(r.server.peak_rss_mb > 0.0 && r.server.final_rss_mb > 0.0);
    assert!(r.server.sync_requests >= r.syncs.ok + r.syncs.retried);
    let json = serde_json::to_value(&r)?;
    for key in [
        "devices",
        "seconds",
        "thinkMs",
        "syncs",
        "attemptErrors",
        "syncLatencyMs",
        "eventsAcknowledged",
        "syncsPerSec",
        "eventsPerSec",
        "probe",
        "server",
        "loss",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    for key in ["p50", "p90", "p99", "max"] {
        assert!(json["syncLatencyMs"].get(key).is_some(), "missing {key}");
    }
    assert!(json["server"].get("peakRssMB").is_some());
    Ok(())
}

/// With one permit and no waiting place, devices in a closed loop are refused often; the
/// refused syncs are retried by the outbox and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_syncs_are_retried_and_lose_nothing() -> anyhow::Result<()> {
    let params = LoadParams {
        think_ms: 0,
        server_args: ["--max-concurrent-syncs", "1", "--max-queued-syncs", "0"]
            .map(String::from)
            .to_vec(),
        ..LoadParams::new(4, Duration::from_secs(2))
    };
    let r = run_load(&params).await?;
    assert!(r.syncs.ok + r.syncs.retried > 0, "{:?}", r.syncs);
    // A refusal is only ever a 503, and always retried.
    assert!(r.syncs.errors.is_empty(), "{:?}", r.syncs.errors);
    assert!(
        r.attempt_errors.keys().all(|k| k == "http_503"),
        "{:?}",
        r.attempt_errors
    );
    assert!(r.loss.ok, "{:?}", r.loss);
    assert_eq!(r.loss.acknowledged, r.events_recorded + 4);
    Ok(())
}
