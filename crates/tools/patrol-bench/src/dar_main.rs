//! `patrol-dar`: the daily activity report's cost on the real server for a day of D × E events
//! (`patrol_bench::dar`); prints each format's times and writes them as JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use patrol_bench::dar::{DarParams, run_dar};

#[derive(Parser, Debug)]
#[command(
    name = "patrol-dar",
    about = "The daily activity report of a day of D x E events, timed as CSV and PDF"
)]
struct Args {
    /// Devices, each with its own shift that day.
    #[arg(long, default_value_t = 100)]
    devices: u64,
    /// Scans per device, spread over the day.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Downloads of each format timed.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Where to write the results.
    #[arg(long, default_value = "dar.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let results = run_dar(&DarParams {
        devices: args.devices,
        events: args.events,
        seed: args.seed,
        reps: args.reps,
    })
    .await?;
    for f in &results.formats {
        println!(
            "DAR of {} events, {}: median {:.0} ms ({} bytes; runs {:?} ms; server CPU {:?} ms)",
            results.events_in_day,
            f.format,
            f.median_ms,
            f.bytes,
            f.wall_ms.iter().map(|ms| ms.round()).collect::<Vec<_>>(),
            f.server_cpu_ms
        );
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}
