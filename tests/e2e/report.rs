//! The daily activity report through the real server and the real `patrol` command: two guards'
//! phones (`patrol device`) scan, note and raise a panic, sync, and the control room downloads
//! the day's report as PDF (to a file) and as CSV (to standard output) with `patrol control
//! report dar`; an operator of another site is refused.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use patrol_e2e::Phone;
use patrol_testkit::{Server, run, run_ok};

const SITE: &str = "site-1";

/// The text `pdftotext` (poppler-utils) extracts from the PDF at `path`.
fn pdf_text(path: &std::path::Path) -> Result<String> {
    let out = Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
        .context("pdftotext (poppler-utils) is needed")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn the_control_room_downloads_the_day_s_report() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &[SITE, "mall-2"])?;
    let anna = Phone::enroll(dir.path().join("anna.db"), &server, SITE)?;
    let ben = Phone::enroll(dir.path().join("ben.db"), &server, SITE)?;
    anna.run(&["shift", "start", "--guard", "anna"])?;
    anna.run(&["scan", "cp-1", "--nfc", "04:A1:11"])?;
    anna.run(&["note", "fire door B2 propped open"])?;
    let panic = anna.run(&["panic"])?.trim().to_owned();
    ben.run(&["shift", "start", "--guard", "ben"])?;
    ben.run(&["scan", "cp-2", "--manual", "tag missing"])?;
    anna.run(&["sync"])?;
    ben.run(&["sync"])?;
    run_ok(&mut server.control(&server.admin_token, &["ack-alarm", "--site", SITE, &panic])?)?;
    // The site has no configuration: its day is the UTC day of the events just recorded.
    let date = chrono::Utc::now().date_naive().to_string();

    let pdf = dir.path().join("dar.pdf");
    let pdf_arg = pdf.display().to_string();
    let printed = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "report", "dar", "--site", SITE, "--date", &date, "--format", "pdf", "--out", &pdf_arg,
        ],
    )?)?;
    ensure!(printed.trim() == pdf_arg, "printed {printed:?}");
    let text = pdf_text(&pdf)?;
    for expected in [
        "Daily activity report",
        "anna",
        "ben",
        "fire door B2 propped open",
        "Panic alarms",
        "e2e-admin",
    ] {
        ensure!(text.contains(expected), "{expected:?} not in:\n{text}");
    }

    let csv = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "report", "dar", "--site", SITE, "--date", &date, "--format", "csv", "--out", "-",
        ],
    )?)?;
    let rows = |section: &str| -> Vec<String> {
        csv.lines()
            .filter(|l| l.starts_with(&format!("{section},")))
            .map(str::to_owned)
            .collect()
    };
    ensure!(rows("guards").len() == 2, "{csv}");
    ensure!(
        rows("notes")
            .iter()
            .any(|r| r.contains("fire door B2 propped open")),
        "{csv}"
    );
    let alarms = rows("alarms");
    ensure!(
        alarms.len() == 1 && alarms[0].contains(&panic) && alarms[0].ends_with(",e2e-admin"),
        "{csv}"
    );

    // An operator of the other site may not read this one's report.
    let other = run_ok(&mut server.control(
        &server.admin_token,
        &[
            "user", "create", "op-mall", "--role", "operator", "--site", "mall-2",
        ],
    )?)?;
    let out = run(&mut server.control(
        other.trim(),
        &[
            "report", "dar", "--site", SITE, "--date", &date, "--format", "csv", "--out", "-",
        ],
    )?)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("403"), "{stderr}");
    Ok(())
}
