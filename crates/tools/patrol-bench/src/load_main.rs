//! `patrol-load`: many devices recording and syncing at once against the real patrol-server
//! for a while, a control-room probe alongside, then a check that nothing acknowledged was
//! lost; writes the results as JSON. See `patrol_bench::load`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use patrol_bench::load::{LoadParams, load_table, run_load};
use patrol_bench::write_results;

#[derive(Parser, Debug)]
#[command(
    name = "patrol-load",
    about = "Load run: D devices scanning and syncing at once against the real patrol-server"
)]
struct Args {
    /// Devices syncing at once, each its own SQLite store and HTTP client.
    #[arg(long, default_value_t = 1000)]
    devices: u64,
    /// Length of the run, before the final syncs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Mean pause between a device's syncs in ms, jittered per device from the seed
    /// (uniform in [0.5, 1.5) times it); 0 syncs again at once (a closed loop).
    #[arg(long, default_value_t = 1000)]
    think_ms: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Control-room probe interval in ms.
    #[arg(long, default_value_t = 250)]
    probe_ms: u64,
    /// An argument for `patrol-server serve` (repeatable), e.g.
    /// `--server-arg=--max-queued-syncs --server-arg=0`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// One more device raises a panic this often (ms), syncs it at once and an operator
    /// acknowledges it: the panic path's latency amid the load. 0: no panics.
    #[arg(long, default_value_t = 0)]
    panic_every_ms: u64,
    /// Where to write the results.
    #[arg(long, default_value = "load.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let params = LoadParams {
        think_ms: args.think_ms,
        seed: args.seed,
        probe_every: Duration::from_millis(args.probe_ms.max(1)),
        server_args: args.server_args,
        panic_every: (args.panic_every_ms > 0).then(|| Duration::from_millis(args.panic_every_ms)),
        ..LoadParams::new(args.devices, Duration::from_secs(args.seconds))
    };
    // A bound around the whole run: setup, the run, the final syncs.
    let bound = Duration::from_secs(args.seconds + 1800);
    let results = tokio::time::timeout(bound, run_load(&params))
        .await
        .with_context(|| format!("the run took longer than its {} s bound", bound.as_secs()))??;
    write_results(&args.out, &results)?;
    print!("{}", load_table(&results));
    println!("results written to {}", args.out.display());
    if !results.loss.ok {
        bail!("the loss check failed: {:?}", results.loss);
    }
    Ok(())
}
