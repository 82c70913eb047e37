//! The README's tour, run as written: the `sh` block under "A tour of the CLI" is taken from
//! README.md and run by bash with `set -euo pipefail`, in a scratch directory holding the
//! example configuration, with three lines adapted to the test: no `cargo build` (this build's
//! binaries are used), `B=` names them, `PORT=` a free port. So the README cannot drift from
//! what works.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail, ensure};
use patrol_testkit::bins;

/// The first ```sh block after the heading `section`.
fn readme_block(readme: &str, section: &str) -> Result<String> {
    let after = readme
        .split_once(&format!("\n## {section}\n"))
        .ok_or_else(|| anyhow!("README.md has no section {section:?}"))?
        .1;
    let body = after
        .split_once("\n```sh\n")
        .ok_or_else(|| anyhow!("section {section:?} has no sh block"))?
        .1;
    let block = body
        .split_once("\n```\n")
        .ok_or_else(|| anyhow!("the sh block of {section:?} does not end"))?
        .0;
    Ok(block.to_owned())
}

/// The block with the build left out and `B=`, `PORT=` set for this test; fails if the README
/// no longer has those lines (the adaptation would silently not apply).
fn adapted(block: &str, bin_dir: &Path, port: u16) -> Result<String> {
    let mut seen = [false; 3];
    let mut script = String::from("set -euo pipefail\n");
    for line in block.lines() {
        if line.trim() == "cargo build --release" {
            seen[0] = true;
            continue;
        }
        if line.starts_with("B=") {
            seen[1] = true;
            script.push_str(&format!("B='{}'\n", bin_dir.display()));
            continue;
        }
        if line.starts_with("PORT=") {
            seen[2] = true;
            script.push_str(&format!("PORT={port}\n"));
            continue;
        }
        script.push_str(line);
        script.push('\n');
    }
    if seen != [true; 3] {
        bail!("the tour lost its `cargo build --release`, `B=` or `PORT=` line: {seen:?}");
    }
    Ok(script)
}

#[test]
fn the_readme_tour_runs_as_written() -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(repo.join("README.md"))?;
    let block = readme_block(&readme, "A tour of the CLI")?;
    let bin_dir = bins()?
        .patrol
        .parent()
        .ok_or_else(|| anyhow!("patrol has no directory"))?
        .to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script = adapted(&block, &bin_dir, port)?;

    // The tour's files land here, as they would in a checkout: the example configuration
    // included.
    let dir = tempfile::tempdir()?;
    let examples = dir.path().join("docs/examples");
    std::fs::create_dir_all(&examples)?;
    std::fs::copy(
        repo.join("docs/examples/site-1.json"),
        examples.join("site-1.json"),
    )
    .context("copying the example configuration")?;

    // Output to files, not pipes: a server the script leaves behind when it fails would hold
    // a pipe open forever.
    let stdout_path = dir.path().join("tour.stdout");
    let stderr_path = dir.path().join("tour.stderr");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env_remove("PATROL_TOKEN")
        .env_remove("PATROL_SERVER")
        .env_remove("PATROL_STORE")
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        // Its own process group, so that whatever the script leaves running goes with it.
        .process_group(0)
        .spawn()
        .context("running the tour with bash")?;
    let status = child.wait()?;
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let stdout = std::fs::read_to_string(&stdout_path)?;
    let stderr = std::fs::read_to_string(&stderr_path)?;
    ensure!(
        status.success(),
        "the README's tour failed ({status}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // What the tour promises along the way.
    ensure!(
        stdout.contains("the log is complete"),
        "verify did not find the shift complete:\n{stdout}"
    );
    ensure!(
        stdout
            .lines()
            .any(|l| l.contains(" OPEN ") && !l.starts_with("DEVICE")),
        "the control room's alarms do not list the panic as open before it is acknowledged:\n{stdout}"
    );
    ensure!(
        stdout.contains("anna") && stdout.to_lowercase().contains("acknowledged"),
        "the phone's alarms do not show anna's acknowledgement:\n{stdout}"
    );
    ensure!(
        !stdout.contains("Some(") && !stdout.contains("at_ms") && !stdout.contains(" { "),
        "a debug form in the tour's output:\n{stdout}"
    );
    Ok(())
}
