//! The simulation in CI: 200 seeds at the default size (4 phones, 80 steps), the replay check,
//! and the seeds that found bugs, kept by name.

use patrol_sim::{Failure, SimConfig, run};

/// Runs `seeds` and fails with every failing seed's report (each names its replay command).
fn seeds(seeds: std::ops::Range<u64>) {
    let failures: Vec<String> = seeds
        .filter_map(|seed| run(&SimConfig::new(seed)).err())
        .map(|f| f.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// Four ranges, so that the test threads share them.
#[test]
fn seeds_0_to_49() {
    seeds(0..50);
}

#[test]
fn seeds_50_to_99() {
    seeds(50..100);
}

#[test]
fn seeds_100_to_149() {
    seeds(100..150);
}

#[test]
fn seeds_150_to_199() {
    seeds(150..200);
}

#[test]
fn a_seed_replays_step_for_step() -> Result<(), Failure> {
    let first = run(&SimConfig::new(7))?;
    let again = run(&SimConfig::new(7))?;
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.steps_traced, again.steps_traced);
    assert_eq!(first.stats, again.stats);
    let other = run(&SimConfig::new(8))?;
    assert_ne!(first.trace_hash, other.trace_hash);
    Ok(())
}

/// Seed 24 found that a phone holding an incident closed never learnt of a note or assignee
/// written to it afterwards (the phone stopped pushing it; the server sends only open incidents
/// unasked): fixed by pushing every incident held, closed ones heads-only.
#[test]
fn seed_24_a_closed_incident_still_converges() -> Result<(), Failure> {
    run(&SimConfig::new(24))?;
    Ok(())
}

/// The same bug in a longer run (seed 25, 200 steps).
#[test]
fn seed_25_a_closed_incident_still_converges_in_a_longer_run() -> Result<(), Failure> {
    run(&SimConfig {
        steps: 200,
        ..SimConfig::new(25)
    })?;
    Ok(())
}
