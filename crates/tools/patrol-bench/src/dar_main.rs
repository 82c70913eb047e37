//! `patrol-dar`: the daily activity report's cost on the real server for a day of D × E events
//! (`patrol_bench::dar`); prints each format's times and writes them as JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use patrol_bench::dar::{DarParams, run_dar};
use patrol_bench::{SiteArgs, write_results};

#[derive(Parser, Debug)]
#[command(
    name = "patrol-dar",
    about = "The daily activity report of a day of D x E events, timed as CSV and PDF"
)]
struct Args {
    /// The site; each device's scans are spread over the day.
    #[command(flatten)]
    site: SiteArgs,
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
        devices: args.site.devices,
        events: args.site.events,
        seed: args.site.seed,
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
    write_results(&args.out, &results)?;
    Ok(())
}
