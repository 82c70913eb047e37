//! The real binary: `site create`/`site list`, and `serve` on port 0 printing its address,
//! answering over TCP and stopping cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patrol-server"));
    cmd.env_remove("PATROL_LISTEN")
        .env_remove("PATROL_DATA_DIR")
        .env_remove("PATROL_METRICS_LISTEN")
        .env("RUST_LOG", "warn");
    cmd
}

fn http_get(addr: &str, path: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn site_commands_and_serve() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    let out = bin()
        .args([
            "site",
            "create",
            "mall-1",
            "--name",
            "City Mall",
            "--data-dir",
        ])
        .arg(&data)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("patrol.db").exists());
    let again = bin()
        .args(["site", "create", "mall-1"])
        .env("PATROL_DATA_DIR", &data)
        .output()?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = bin()
        .args(["site", "create", "bad id"])
        .env("PATROL_DATA_DIR", &data)
        .output()?;
    assert!(!bad.status.success());
    let list = bin()
        .args(["site", "list", "--data-dir"])
        .arg(&data)
        .output()?;
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.starts_with("mall-1\tCity Mall\t"), "{listed}");

    let mut child = bin()
        .args(["--listen", "127.0.0.1:0"])
        .env("PATROL_DATA_DIR", &data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .ok_or_else(|| format!("odd line {line:?}"))?
        .to_string();

    let health = http_get(&addr, "/healthz");
    let devices = http_get(&addr, "/api/v1/sites/mall-1/devices");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    let health = health?;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let devices = devices?;
    assert!(
        devices.contains(r#""site_id":"mall-1""#) && devices.contains(r#""devices":[]"#),
        "{devices}"
    );
    assert!(kill?.success());
    assert!(status.success(), "server exited with {status}");
    Ok(())
}

#[test]
fn serve_prints_the_metrics_address_and_serves_metrics_there() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut child = bin()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("PATROL_METRICS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout);
    let (mut first, mut second) = (String::new(), String::new());
    let read = lines
        .read_line(&mut first)
        .and_then(|_| lines.read_line(&mut second));
    let addrs = read.map(|_| {
        (
            first
                .trim()
                .strip_prefix("listening on http://")
                .map(str::to_string),
            second
                .trim()
                .strip_prefix("metrics on http://")
                .map(str::to_string),
        )
    });
    let fetched = match &addrs {
        Ok((Some(api), Some(side))) => {
            Some((http_get(api, "/healthz"), http_get(side, "/metrics")))
        }
        _ => None,
    };
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    addrs?;
    let (health, metrics) = fetched.ok_or_else(|| format!("odd lines {first:?} {second:?}"))?;
    assert!(health?.starts_with("HTTP/1.1 200"));
    let metrics = metrics?;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    // The health check went through the API port and is counted; the side port is not.
    assert!(
        metrics.contains("\npatrol_http_requests_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\n# TYPE patrol_wire_read_bytes_total counter\n"));
    assert!(kill?.success());
    assert!(status.success(), "server exited with {status}");
    Ok(())
}
