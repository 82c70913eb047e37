//! `patrol-sim --seeds N [--start S] [--devices D] [--steps K]`: runs seeds S..S+N of the
//! deterministic simulation and reports each failure with the command that replays it.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use patrol_sim::{SimConfig, Stats};

#[derive(Debug, Parser)]
#[command(about = "Deterministic simulation of phones and the patrol server under faults")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Phones on the site.
    #[arg(long, default_value_t = SimConfig::DEFAULT_DEVICES)]
    devices: usize,
    /// Steps of each run before the network heals.
    #[arg(long, default_value_t = SimConfig::DEFAULT_STEPS)]
    steps: usize,
    /// Print each seed's trace hash.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for seed in args.start..args.start.saturating_add(args.seeds) {
        let config = SimConfig {
            seed,
            devices: args.devices.max(1),
            steps: args.steps,
        };
        match patrol_sim::run(&config) {
            Ok(report) => {
                if args.verbose {
                    println!(
                        "seed {seed}: ok, {} steps traced, trace hash {:016x}",
                        report.steps_traced, report.trace_hash
                    );
                }
                total.add(&report.stats);
            }
            Err(failure) => {
                eprintln!("{failure}\n");
                failures.push(seed);
            }
        }
        let done = seed - args.start + 1;
        if done % 1000 == 0 && done < args.seeds {
            // A long run says where it is.
            eprintln!(
                "{done} seeds run, {} failed, {:.0} s",
                failures.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{} seeds from {} ({} phones, {} steps each) in {:.1} s: {} failed",
        args.seeds,
        args.start,
        args.devices,
        args.steps,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    println!("{total}");
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failures:?}");
        ExitCode::FAILURE
    }
}
