//! The real binary's data directory on disk: `serve` on a fresh directory makes it and its
//! database files private to the server's user, and tightens (saying so) an existing one that
//! other users could read.

#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Each path with its mode.
type Modes = Vec<(PathBuf, u32)>;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol-server"));
    cmd.env_remove("PATROL_LISTEN")
        .env_remove("PATROL_DATA_DIR")
        .env_remove("PATROL_METRICS_LISTEN")
        .env_remove("PATROL_LOG_FORMAT")
        .env("RUST_LOG", "warn");
    cmd
}

fn healthz(addr: &str) -> Result<String, std::io::Error> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

fn mode(path: &Path) -> Result<u32, String> {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The modes of the data directory and of the database, its WAL and the WAL's index, read
/// while `patrol-server serve` runs on `data`, and what the server wrote to stderr.
fn modes_while_serving(data: &Path) -> Result<(Modes, String), Box<dyn std::error::Error>> {
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    // An answer means the server is serving (and handles SIGTERM); the store was open, and its
    // WAL in use, before the address was printed.
    let health = line
        .trim()
        .strip_prefix("listening on http://")
        .map(healthz);
    let modes = [
        data.to_path_buf(),
        data.join("patrol.db"),
        data.join("patrol.db-wal"),
        data.join("patrol.db-shm"),
    ]
    .into_iter()
    .map(|p| mode(&p).map(|m| (p, m)))
    .collect::<Result<Vec<_>, _>>();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    read?;
    let health = health.ok_or_else(|| format!("odd line {line:?}: {stderr}"))??;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(kill?.success());
    assert!(status.success(), "server exited with {status}: {stderr}");
    Ok((modes?, stderr))
}

#[test]
fn serve_on_a_fresh_data_dir_keeps_it_and_its_database_private() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (modes, stderr) = modes_while_serving(&data)?;
    let (dir_mode, files) = modes.split_first().ok_or("no modes")?;
    assert_eq!(dir_mode.1, 0o700, "{}", dir_mode.0.display());
    for (path, mode) in files {
        assert_eq!(*mode, 0o600, "{} is {mode:04o}", path.display());
    }
    assert!(!stderr.contains("restricted"), "{stderr}");
    // The log says a new store was made, and where: a mistyped --data-dir is noticed.
    assert!(
        stderr.contains("creating a new, empty one")
            && stderr.contains(&data.join("patrol.db").display().to_string()),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn serve_tightens_an_existing_data_dir_open_to_others_and_says_so() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let created = bin()
        .args(["site", "create", "mall-1", "--data-dir"])
        .arg(&data)
        .output()?;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // As an older server, or a restored backup, may have left them.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(
        data.join("patrol.db"),
        std::fs::Permissions::from_mode(0o644),
    )?;

    let (modes, stderr) = modes_while_serving(&data)?;
    let (dir_mode, files) = modes.split_first().ok_or("no modes")?;
    assert_eq!(dir_mode.1, 0o700, "{}", dir_mode.0.display());
    for (path, mode) in files {
        assert_eq!(*mode, 0o600, "{} is {mode:04o}", path.display());
    }
    assert!(
        stderr.contains("data directory was open to other users; restricted it to its owner"),
        "{stderr}"
    );
    assert!(
        stderr.contains("database file was open to other users; restricted it to its owner"),
        "{stderr}"
    );
    let list = bin()
        .args(["site", "list", "--data-dir"])
        .arg(&data)
        .output()?;
    assert!(!stderr.contains("creating a new"), "{stderr}");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("mall-1 ")),
        "{listed}"
    );
    Ok(())
}
