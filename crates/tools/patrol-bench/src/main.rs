//! `patrol-bench`: runs the shared workloads on the real system and writes the results as JSON.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use patrol_bench::{Params, SiteArgs, run, table, write_results};

#[derive(Parser, Debug)]
#[command(
    name = "patrol-bench",
    about = "Runs workloads W1-W3 (shared/WORKLOADS.md) against the real patrol-server"
)]
struct Args {
    /// The site; its devices record their events offline before W1.
    #[command(flatten)]
    site: SiteArgs,
    /// New events from device 1 before the incremental pull.
    #[arg(long, default_value_t = 1000)]
    w2_new: u64,
    /// Events written one by one in W3.
    #[arg(long, default_value_t = 10_000)]
    w3_n: u64,
    #[arg(long, default_value_t = 3)]
    w3_reps: usize,
    /// Give the site an hourly tour over the workload's checkpoints before W1, so that W1
    /// measures the server's tour compliance at ingest too.
    #[arg(long)]
    tours: bool,
    /// Count the server's instructions over W1 with callgrind: run with
    /// `PATROL_SERVER_WRAPPER="valgrind --tool=callgrind --instr-atstart=no
    /// --callgrind-out-file=DIR/server.%p"`; W1's counts are dumped to `DIR/server.PID.1`.
    #[arg(long)]
    callgrind_w1: bool,
    /// Where to write the results.
    #[arg(long, default_value = "results.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let params = Params {
        seed: args.site.seed,
        w2_new: args.w2_new,
        w3_n: args.w3_n,
        w3_reps: args.w3_reps,
        tours: args.tours,
        callgrind_w1: args.callgrind_w1,
        ..Params::new(args.site.devices, args.site.events)
    };
    // TOTAL_TIMEOUT_S: a bound around the whole run.
    let results = tokio::time::timeout(Duration::from_secs(3600), run(&params))
        .await
        .context("the run took longer than its 3600 s bound")??;
    write_results(&args.out, &results)?;
    print!("{}", table(&results));
    println!("results written to {}", args.out.display());
    Ok(())
}
