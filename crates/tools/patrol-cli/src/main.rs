//! `patrol`: plays a guard's phone (`patrol device`) and the control room (`patrol control`)
//! from a terminal, through the same library calls and API an app and a console use. A phone
//! store is made by enrolling with a code from an administrator; the control room presents a
//! user token (`--token` or `PATROL_TOKEN`). Output for people: tables and local times; for
//! programs: `--json` (docs/cli.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use patrol_core::evidence::{PublicKey, ShiftLogExport, verify_export};
use patrol_mobile::Transport;

/// `println!` that returns the write's error from the function instead of panicking on it (a
/// reader that closed the pipe, `patrol ... | head -1`); `main` ends such a run quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            return Err(anyhow::Error::from(e));
        }
    }};
}

mod control;
mod device;
mod show;
use patrol_term::{closed_pipe, shown};

#[derive(Parser, Debug)]
#[command(
    name = "patrol",
    version,
    about = "Guard patrol from a terminal: a guard's phone and the control room"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Act as a guard's phone: record a shift offline into a local store, then sync it.
    Device(device::DeviceArgs),
    /// Act as the control room or an administrator: read the merged site record, issue
    /// enrollment codes, manage users and devices.
    Control(control::ControlArgs),
    /// Check an exported shift log (`patrol control export-shift-log`) offline against the
    /// device's public key: every signature holds, and no change of the log was altered,
    /// removed or inserted. Exits non-zero if it does not verify.
    Verify {
        /// The exported file (JSON).
        file: PathBuf,
        /// The device's ed25519 public key, 64 hex digits, as recorded at enrollment (`patrol
        /// device status` on the phone; `patrol control devices` on the server).
        #[arg(long)]
        public_key: String,
    },
}

/// How the server may be reached: `https://` (checked against the system's certificate roots
/// or `--ca-cert`), and `http://` only on this machine unless `--allow-plain-http`.
/// `--json`: one JSON document on stdout instead of a table.
#[derive(Args, Debug)]
pub struct JsonArg {
    /// Print one JSON document instead of a table (fields in docs/cli.md; times RFC 3339 UTC).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TransportArgs {
    /// Trust only the PEM certificates in FILE for the server's HTTPS (the site's own
    /// certificate authority, or the server's self-signed certificate) instead of the system's
    /// roots.
    #[arg(long, env = "PATROL_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<PathBuf>,
    /// Allow plain http:// to a server that is not on this machine, for a lab: anyone on the
    /// network can then read and alter the traffic, credentials included.
    #[arg(long, env = "PATROL_ALLOW_PLAIN_HTTP", global = true,
          value_parser = clap::builder::BoolishValueParser::new())]
    allow_plain_http: bool,
}

impl TransportArgs {
    fn transport(&self) -> Result<Transport> {
        let ca_certificates_pem = match &self.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --ca-cert {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Transport {
            allow_plain_http: self.allow_plain_http,
            ca_certificates_pem,
        })
    }
}

/// `patrol verify`: offline, no server involved.
fn verify(file: &std::path::Path, public_key: &str) -> Result<()> {
    let key: PublicKey = public_key.parse().context("--public-key")?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let export: ShiftLogExport = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a shift-log export", file.display()))?;
    let verified = verify_export(&export, &key)
        .map_err(|e| anyhow!("NOT VERIFIED: {e}"))
        .with_context(|| format!("{}", file.display()))?;
    outln!(
        "verified: shift {} of device {} on site {} (guard {})",
        verified.meta.shift,
        verified.meta.device,
        shown(verified.meta.site.as_str()),
        shown(&verified.meta.guard.to_string())
    );
    outln!(
        "  {} event(s) in {} change(s), exactly those the device signed; {} signature(s), the \
         last made at {} (device clock)",
        verified.events,
        verified.changes,
        verified.signatures,
        show::local_ms(verified.last_signed_at_ms)
    );
    if verified.ended {
        outln!("  the shift's end is among the signed events: the log is complete");
    } else {
        outln!(
            "  the shift's end is not among the signed events: the shift was still open at the \
             device's last sync, or events after that sync are not in this export"
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Device(args) => device::device(args).await,
        Command::Control(args) => control::control(args).await,
        Command::Verify { file, public_key } => verify(&file, &public_key),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever reads the output stopped (`patrol ... | head -1`): nothing is wrong.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // The error can carry a server's message or a store's text.
            eprintln!("error: {}", shown(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The arguments of `command` and of all its subcommands, recursively, that `--help`
    /// shows without a description, as `path: --flag`.
    fn undescribed(command: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let described = arg
                .get_help()
                .is_some_and(|h| !h.to_string().trim().is_empty());
            if !described && !arg.is_hide_set() {
                out.push(format!("{path}: {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            undescribed(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_of_every_command_is_described_in_help() {
        let mut command = Cli::command();
        // Adds the help and version flags, as a run does.
        command.build();
        let mut missing = Vec::new();
        undescribed(&command, "patrol", &mut missing);
        assert!(missing.is_empty(), "without a description: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
