//! The README's main job, `scripts/demo.sh`, as a newcomer runs it: run on this build's
//! binaries (`PATROL_BIN_DIR`) with its output to a pipe, it tells its story in plain text, keeps
//! the server's log in a file, leaves a server the administrator can use as it says, and stops
//! loudly when its port is taken.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, anyhow, ensure};
use patrol_testkit::{bins, run, run_ok};

fn demo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh")
}

/// A port nothing listens on now (the demo fails loudly should another process take it first).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn demo(port: u16, dir: &Path) -> Result<Command> {
    let bin_dir = bins()?
        .patrol
        .parent()
        .ok_or_else(|| anyhow!("patrol has no directory"))?
        .to_path_buf();
    let mut cmd = Command::new("bash");
    cmd.arg(demo_script())
        .env("PATROL_BIN_DIR", bin_dir)
        .env("PATROL_PORT", port.to_string())
        .env("PATROL_DEMO_DIR", dir)
        .env_remove("NO_COLOR")
        .env_remove("PATROL_TOKEN")
        .env_remove("PATROL_SERVER");
    Ok(cmd)
}

/// The demo and the server it leaves running, killed together when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // The demo runs in its own process group: the server goes with it.
        let pgid = self.0.id() as i32;
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_tells_its_story_in_plain_text_and_leaves_a_server_to_use() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("demo");
    let port = free_port()?;
    let mut child = demo(port, &data)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting scripts/demo.sh")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let running = Running(child);

    // Read up to the last line it prints before it waits on the server.
    let mut out = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        out.push_str(&line);
        out.push('\n');
        if line.contains("Ctrl-C stops the server") {
            break;
        }
    }
    ensure!(
        out.contains("Ctrl-C stops the server"),
        "the demo ended early:\n{out}"
    );
    ensure!(
        !out.contains('\x1b'),
        "escape codes in piped output:\n{out}"
    );
    ensure!(
        out.contains("verified: shift"),
        "no verified evidence:\n{out}"
    );

    // The server's log is in the file the demo names, and only there.
    let log = data.join("server.log");
    ensure!(
        out.contains(&log.display().to_string()),
        "the demo does not say where the server's log is:\n{out}"
    );
    let log_text = std::fs::read_to_string(&log).context("reading the server's log")?;
    ensure!(log_text.contains("listening"), "{log_text}");
    ensure!(
        !log_text.contains('\x1b'),
        "escape codes in the log file:\n{log_text}"
    );

    // As the demo says: the administrator's token is in a file only its owner reads, and with
    // it `patrol control` works against the server the demo left running.
    let url = format!("http://127.0.0.1:{port}");
    let token_file = data.join("admin.token");
    ensure!(
        out.contains(&format!(
            "PATROL_SERVER={url} PATROL_TOKEN=$(cat {})",
            token_file.display()
        )),
        "the demo does not say how to act as the administrator:\n{out}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&token_file)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "admin.token has mode {mode:o}");
    let token = std::fs::read_to_string(&token_file)?;
    let users = run_ok(
        Command::new(&bins()?.patrol)
            .args(["control", "user", "list"])
            .env("PATROL_SERVER", &url)
            .env("PATROL_TOKEN", token.trim()),
    )?;
    ensure!(users.contains("control-room"), "{users}");
    drop(running);
    Ok(())
}

#[test]
fn the_demo_stops_loudly_when_its_port_is_taken() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("demo");
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("keep"), "a previous demo's data")?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();

    let out = run(&mut demo(port, &data)?)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "the demo succeeded on a taken port");
    ensure!(
        stderr.contains(&format!("port {port}")) && stderr.contains("PATROL_PORT"),
        "{stderr}"
    );
    ensure!(
        data.join("keep").exists(),
        "the demo deleted its data before finding the port taken"
    );
    Ok(())
}
