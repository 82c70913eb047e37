//! The real `patrol-server` and `patrol` binaries: built once per process by cargo, next to
//! the running executable's profile directory, and run as commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// The built `patrol-server` and `patrol` binaries.
#[derive(Debug)]
pub struct Bins {
    pub server: PathBuf,
    pub patrol: PathBuf,
}

/// Builds both binaries once per test process (a no-op when they are fresh) and returns their
/// paths, next to this test executable's profile directory. `PATROL_SERVER_BIN`, when set,
/// names another `patrol-server` to run instead (a benchmark's A/B against an older build).
pub fn bins() -> Result<&'static Bins> {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    BINS.get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("building binaries: {e}"))
}

fn build() -> Result<Bins> {
    // target/<profile>/deps/<test-exe> or target/<profile>/<bin> -> target/<profile>
    let exe = std::env::current_exe()?;
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| anyhow!("cannot locate the target directory from {}", exe.display()))?;
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let profile_dir = profile_dir.to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The workspace this crate was built in (it sits at crates/patrol-testkit), so the build
    // works from any directory.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "patrol-server",
        "-p",
        "patrol-cli",
        "--manifest-path",
    ])
    .arg(&manifest);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    // Another build of the server (an older commit, for an A/B run of the same benchmark).
    let server = std::env::var_os("PATROL_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir.join("patrol-server"));
    let bins = Bins {
        server,
        patrol: profile_dir.join("patrol"),
    };
    for b in [&bins.server, &bins.patrol] {
        if !b.exists() {
            bail!("{} was not built", b.display());
        }
    }
    Ok(bins)
}

/// Runs a command to completion; fails with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}):\nstdout: {}\nstderr: {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("running {cmd:?}"))
}
