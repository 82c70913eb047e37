//! The harness runs end to end at a tiny size, so it cannot rot. No timing is asserted.

use patrol_bench::{Params, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_workload_runs_and_verifies_at_d2_e20() -> anyhow::Result<()> {
    let params = Params {
        w2_new: 10,
        w3_n: 50,
        w3_reps: 1,
        ..Params::new(2, 20)
    };
    let r = run(&params).await?;
    assert!(r.w1.count_ok, "server holds {} of 40", r.w1.server_count);
    assert!(r.w1.wire_up > 0 && r.w1.wire_down > 0 && r.w1.body_up > 0);
    assert!(r.w1.http_requests >= 2);
    assert!(r.w1.server_peak_rss_mb > 0.0);
    assert!(r.w2full.verify.ok, "{:?}", r.w2full.verify);
    assert_eq!(r.w2full.verify.received, 40);
    assert_eq!(r.w2push.server_count, 50);
    assert!(r.w2incr.verify.ok, "{:?}", r.w2incr.verify);
    assert_eq!(r.w2incr.verify.received, 10);
    assert!(r.w3.events_per_sec > 0.0 && r.w3_full.events_per_sec > 0.0);
    assert_eq!(r.w3.reps.len(), 1);
    let json = serde_json::to_value(&r)?;
    for key in [
        "peer",
        "D",
        "E",
        "w1",
        "w2full",
        "w2push",
        "w2incr",
        "w3",
        "w3Reference",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    for key in [
        "wallMs",
        "eventsPerSec",
        "serverCount",
        "countOk",
        "wireUp",
        "wireDown",
        "bodyUp",
        "bodyDown",
        "httpRequests",
        "serverCpuMs",
        "serverPeakRssMB",
    ] {
        assert!(json["w1"].get(key).is_some(), "missing w1.{key}");
    }
    Ok(())
}
