//! What a guard types must not take over the operator's terminal: the control room's `pull` and
//! the phone's own listings print a hostile incident description and note without a single
//! control byte, while `--json` keeps the text exactly.

use anyhow::{Result, anyhow, ensure};
use patrol_e2e::{Phone, control_pull};
use patrol_testkit::{Server, run_ok};

const SITE: &str = "site-1";

/// Clears the line and returns to its start, then draws a row of its own; sets the window
/// title; rings the bell; an 8-bit CSI.
const DESCRIPTION: &str =
    "door\x1b[2K\r    99  2025-01-01  ALL CLEAR\x1b]0;owned\x07\x07\u{9b}31m\x7f end";
const NOTE: &str = "note\x1b[1A\x1b[2Kup\r\nnext";

fn assert_no_control(what: &str, text: &str) -> Result<()> {
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .collect();
    ensure!(
        bad.is_empty(),
        "{what} printed control characters {bad:?}: {text:?}"
    );
    Ok(())
}

#[test]
fn a_guards_text_is_printed_without_control_characters() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let phone = Phone::enroll(dir.path().join("guard.db"), &server, SITE)?;
    phone.run(&["shift", "start", "--guard", "guard-1"])?;
    phone.run(&[
        "incident",
        "--category",
        "theft",
        "--description",
        DESCRIPTION,
    ])?;
    phone.run(&["note", NOTE])?;
    phone.run(&["sync", "--server", &server.url])?;

    let pulled = run_ok(&mut server.control(&server.admin_token, &["pull", "--site", SITE])?)?;
    assert_no_control("pull", &pulled)?;
    ensure!(
        pulled.contains("door") && pulled.contains("end"),
        "{pulled}"
    );
    // One line per event (shift start, incident, note) and the total: no row drawn by the text.
    ensure!(pulled.lines().count() == 4, "{pulled}");

    let listed = phone.run(&["incidents"])?;
    assert_no_control("device incidents", &listed)?;
    let log = phone.run(&["log"])?;
    assert_no_control("device log", &log)?;

    // The JSON output keeps the text as the guard typed it.
    let events = control_pull(&server, SITE, 100)?;
    let incident = events
        .iter()
        .find(|e| e["kind"] == "incident_reported")
        .ok_or_else(|| anyhow!("no incident in {events:?}"))?;
    ensure!(incident["description"] == DESCRIPTION, "{incident}");
    Ok(())
}

/// `patrol ... | head -1`: when the reader closes the pipe, `patrol` stops quietly (exit 0, no
/// panic, nothing on stderr) instead of crashing on its next line of output. The read end is
/// closed before `patrol` writes anything, so every write finds it gone.
#[test]
fn a_closed_pipe_ends_the_output_quietly() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = Server::start(&tmp.path().join("data"), &[SITE])?;
    let phone = Phone::enroll(tmp.path().join("phone.db"), &server, SITE)?;
    phone.run(&["shift", "start", "--guard", "anna"])?;
    phone.run(&["scan", "cp-1", "--nfc", "04:AA"])?;
    phone.run(&["sync"])?;
    let runs = [
        phone.command(&["log"])?,
        phone.command(&["log", "--json"])?,
        server.control(&server.admin_token, &["pull", "--site", SITE])?,
    ];
    for mut cmd in runs {
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        drop(child.stdout.take());
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && stderr.is_empty(),
            "{cmd:?} ended {} with {stderr}",
            out.status
        );
    }
    Ok(())
}
