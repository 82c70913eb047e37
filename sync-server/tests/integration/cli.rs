//! The real binary: `site create`/`site list`, `admin create` and `user ...`, and `serve` on
//! port 0 printing its address, answering over TCP and stopping cleanly on SIGTERM.

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
    http_get_as(addr, path, None)
}

fn http_get_as(
    addr: &str,
    path: &str,
    token: Option<&str>,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
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
    // The API's name rules: not blank, at most 200 bytes; a refused name creates nothing.
    for name in ["   ", &"x".repeat(201)] {
        let refused = bin()
            .args(["site", "create", "mall-9", "--name", name])
            .env("PATROL_DATA_DIR", &data)
            .output()?;
        assert!(!refused.status.success(), "{name:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("invalid site name"), "{said}");
    }
    let fresh = dir.path().join("fresh");
    let refused = bin()
        .args(["site", "create", "mall-9", "--name", ""])
        .env("PATROL_DATA_DIR", &fresh)
        .output()?;
    assert!(!refused.status.success());
    assert!(!fresh.exists(), "a refused site made a data directory");
    let list = bin()
        .args(["site", "list", "--data-dir"])
        .arg(&data)
        .output()?;
    let listed = String::from_utf8_lossy(&list.stdout);
    // A header, then one row per site, each column where its header starts.
    assert!(
        listed.starts_with("ID      NAME       CREATED\nmall-1  City Mall  "),
        "{listed}"
    );
    assert!(!listed.contains("mall-9"), "{listed}");
    let list = bin()
        .args(["site", "list", "--json", "--data-dir"])
        .arg(&data)
        .output()?;
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout)?;
    assert_eq!(listed["sites"][0]["site_id"], "mall-1", "{listed}");
    assert_eq!(listed["sites"][0]["name"], "City Mall", "{listed}");
    assert_eq!(
        listed["sites"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // The first administrator: its token alone on stdout, once.
    let out = bin()
        .args(["admin", "create", "root", "--data-dir"])
        .arg(&data)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = String::from_utf8(out.stdout)?.trim().to_string();
    assert!(root.starts_with("pu_") && root.len() == 46, "{root:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown this once"));
    let token_of = |args: &[&str]| -> Result<String, Box<dyn std::error::Error>> {
        let out = bin().args(args).env("PATROL_DATA_DIR", &data).output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    };
    let ann = token_of(&[
        "user", "create", "ann", "--role", "operator", "--site", "mall-1",
    ])?;
    let bob = token_of(&[
        "user", "create", "bob", "--role", "operator", "--site", "mall-1",
    ])?;
    assert!(
        token_of(&["admin", "create", "root"]).is_err(),
        "a name is unique"
    );
    assert!(token_of(&["user", "create", "op", "--role", "operator"]).is_err());
    assert!(
        token_of(&[
            "user", "create", "op", "--role", "operator", "--site", "nowhere"
        ])
        .is_err()
    );
    let revoked = token_of(&["user", "revoke", "bob"])?;
    assert!(revoked.starts_with("revoked user bob"), "{revoked}");
    // An administrator gives a user who lost their token a new one; the old one stops at once.
    let old_ann = ann;
    let ann = token_of(&["user", "rotate", "ann", "--user-token-ttl-days", "2"])?;
    assert!(ann.starts_with("pu_") && ann != old_ann, "{ann:?}");
    let refused = token_of(&["user", "rotate", "bob"])
        .err()
        .ok_or("a revoked user got a token")?;
    assert!(refused.to_string().contains("revoked"), "{refused}");
    assert!(token_of(&["user", "rotate", "nobody"]).is_err());
    // The only administrator over all sites stays.
    let last = token_of(&["user", "revoke", "root"])
        .err()
        .ok_or("root was revoked")?;
    assert!(
        last.to_string()
            .contains("last active administrator over all sites"),
        "{last}"
    );
    let users = token_of(&["user", "list"])?;
    let rows: Vec<Vec<&str>> = users
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4, "{users}");
    let columns = |row: &[&'static str]| row.to_vec();
    assert_eq!(
        rows[0],
        columns(&[
            "ID", "NAME", "ROLE", "SITES", "STATUS", "CREATED", "EXPIRES", "REVOKED"
        ])
    );
    assert_eq!(rows[1][1..5], ["root", "admin", "all", "active"], "{users}");
    assert_eq!(
        rows[2][1..5],
        ["ann", "operator", "mall-1", "active"],
        "{users}"
    );
    assert_eq!(
        rows[3][1..5],
        ["bob", "operator", "mall-1", "revoked"],
        "{users}"
    );
    // Every token shows its expiry: ann's rotated one in two days, the others in thirty.
    let in_days =
        |days: i64| patrol_core::event::format_time_ms(patrol_server::now_ms() + days * 86_400_000);
    let listed: serde_json::Value = serde_json::from_str(&token_of(&["user", "list", "--json"])?)?;
    for (i, days) in [(0, 30), (1, 2)] {
        let expiry = listed["users"][i]["token_expires_at"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(expiry.get(..10), in_days(days).get(..10), "{listed}");
    }
    assert_eq!(listed["users"][2]["name"], "bob", "{listed}");
    assert!(listed["users"][2]["revoked_at"].is_string(), "{listed}");
    // Times in the table are in the local time zone (TZ, here in POSIX form: five and a half
    // hours east of UTC, which needs no time zone database), its offset shown.
    let kolkata = bin()
        .args(["user", "list"])
        .env("PATROL_DATA_DIR", &data)
        .env("TZ", "IST-5:30")
        .output()?;
    let kolkata = String::from_utf8_lossy(&kolkata.stdout);
    assert_eq!(kolkata.matches(" +05:30").count(), 7, "{kolkata}");

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
    let devices = http_get_as(&addr, "/api/v1/sites/mall-1/devices", Some(&ann));
    let anonymous = http_get(&addr, "/api/v1/sites/mall-1/devices");
    let revoked = http_get_as(&addr, "/api/v1/sites/mall-1/devices", Some(&bob));
    let replaced = http_get_as(&addr, "/api/v1/sites/mall-1/devices", Some(&old_ann));
    let as_root = http_get_as(&addr, "/api/v1/users", Some(&root));
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
    let anonymous = anonymous?;
    assert!(
        anonymous.starts_with("HTTP/1.1 401") && anonymous.contains("missing_credential"),
        "{anonymous}"
    );
    let revoked = revoked?;
    assert!(
        revoked.starts_with("HTTP/1.1 401") && revoked.contains("revoked_credential"),
        "{revoked}"
    );
    let replaced = replaced?;
    assert!(
        replaced.starts_with("HTTP/1.1 401") && replaced.contains("invalid_credential"),
        "{replaced}"
    );
    let as_root = as_root?;
    assert!(
        as_root.starts_with("HTTP/1.1 200") && as_root.contains(r#""name":"ann""#),
        "{as_root}"
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

/// `patrol-server ... | head -1`: when the reader closes the pipe, every command that prints
/// ends quietly, with success, instead of panicking on its next write. The read end is closed
/// before the command writes anything, so every write finds it gone.
#[test]
fn a_closed_pipe_ends_the_output_quietly() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    for args in [
        &["site", "create", "mall-1"][..],
        &["admin", "create", "root"],
        &[
            "user", "create", "ann", "--role", "operator", "--site", "mall-1",
        ],
        &["site", "list"],
        &["site", "list", "--json"],
        &["user", "list"],
        &["user", "list", "--json"],
        &["user", "rotate", "ann"],
        &["user", "revoke", "ann"],
    ] {
        let mut child = bin()
            .args(args)
            .env("PATROL_DATA_DIR", &data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        drop(child.stdout.take());
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?} ended {} with {stderr}",
            out.status
        );
    }
    Ok(())
}

/// An error is one line, `error: ` and its causes in words: no `Error: ` with a debug form, no
/// backtrace even when RUST_BACKTRACE asks for one.
#[test]
fn an_error_is_said_in_words_without_a_backtrace() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let made = bin()
        .args(["site", "create", "mall-1"])
        .env("PATROL_DATA_DIR", &data)
        .output()?;
    assert!(made.status.success());
    let again = bin()
        .args(["site", "create", "mall-1"])
        .env("PATROL_DATA_DIR", &data)
        .env("RUST_BACKTRACE", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for debug_form in ["Error: ", "Stack backtrace", "Caused by", "{ "] {
        assert!(!stderr.contains(debug_form), "{stderr}");
    }
    Ok(())
}

/// A data directory without a store: a command that only reads says there is none, naming the
/// whole path, and creates nothing; one that adds to it creates the store and says so.
#[test]
fn a_data_directory_without_a_store_is_named() -> TestResult {
    let dir = tempfile::tempdir()?;
    let typo = dir.path().join("patorl-data");
    let full = typo.join("patrol.db");
    for args in [
        &["site", "list"][..],
        &["user", "list", "--json"],
        &["user", "revoke", "ann"],
    ] {
        let out = bin()
            .args(args)
            .current_dir(dir.path())
            .args(["--data-dir", "patorl-data"])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("there is no store at {}", full.display())),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    let out = bin()
        .args(["site", "create", "mall-1", "--data-dir", "patorl-data"])
        .current_dir(dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "creating a new, empty store at {}",
            full.display()
        )),
        "{stderr}"
    );
    // Once it exists, nothing more is said about it.
    let out = bin()
        .args(["site", "create", "mall-2", "--data-dir", "patorl-data"])
        .current_dir(dir.path())
        .output()?;
    assert!(out.status.success() && out.stderr.is_empty());
    Ok(())
}
