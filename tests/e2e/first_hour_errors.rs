//! The phone's errors as a newcomer meets them through the `patrol` command: each says what
//! went wrong and what to do, and a mistake leaves nothing behind. A mistyped store path
//! creates no store, and one naming another file leaves that file where it is; a store that was never enrolled cannot sync and says to enroll first; a
//! server address without its scheme says a URL needs one; a used, expired or unknown
//! enrollment code is an enrollment failure that says to ask for a new code.

use std::path::Path;

use anyhow::{Result, ensure};
use patrol_core::SiteId;
use patrol_e2e::Phone;
use patrol_mobile::DeviceStore;
use patrol_testkit::{Server, run};

const SITE: &str = "site-1";

/// Runs `patrol device --store <store> <args>`, which must fail; returns its stderr.
fn fails(store: &Path, args: &[&str]) -> Result<String> {
    let phone = Phone {
        store: store.to_path_buf(),
    };
    let out = run(&mut phone.command(args)?)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    Ok(stderr)
}

/// Enrolls a phone at `store` with `code`.
fn enroll(store: &Path, server: &Server, code: &str) -> Result<()> {
    let phone = Phone {
        store: store.to_path_buf(),
    };
    phone.run(&["enroll", "--server", &server.url, "--code", code])?;
    Ok(())
}

/// The files in `dir`, by name.
fn files(dir: &Path) -> Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

#[test]
fn a_mistyped_store_path_creates_nothing_and_says_to_enroll_first() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let typo = dir.path().join("typo.db");
    for args in [
        &["log"][..],
        &["status"],
        &["shift", "start", "--guard", "anna"],
    ] {
        let said = fails(&typo, args)?;
        ensure!(
            said.contains(&format!("there is no phone store at {}", typo.display()))
                && said.contains("enroll the phone first")
                && said.contains("enroll --server URL --code CODE")
                && said.contains("check the path"),
            "{args:?}: {said}"
        );
        ensure!(!said.contains("create it with a site"), "{said}");
        ensure!(
            files(dir.path())?.is_empty(),
            "{args:?} left {:?}",
            files(dir.path())?
        );
    }
    Ok(())
}

#[test]
fn a_store_path_naming_another_file_leaves_it_where_it_is() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let notes = dir.path().join("notes.txt");
    let text = "handover: keys to the plant room are in the safe\n".repeat(50);
    std::fs::write(&notes, &text)?;
    let said = fails(&notes, &["log"])?;
    ensure!(
        said.contains("is not a readable phone store") && said.contains("left as it is"),
        "{said}"
    );
    ensure!(std::fs::read_to_string(&notes)? == text, "the file changed");
    ensure!(
        files(dir.path())? == ["notes.txt"],
        "{:?}",
        files(dir.path())?
    );
    Ok(())
}

#[test]
fn a_store_that_was_never_enrolled_says_to_enroll_before_it_syncs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let path = dir.path().join("unenrolled.db");
    drop(DeviceStore::create(&path, SiteId::new(SITE)?)?);
    let said = fails(&path, &["sync", "--server", &server.url])?;
    ensure!(
        said.contains("not enrolled") && said.contains("enroll the phone first"),
        "{said}"
    );
    ensure!(!said.contains("refused"), "{said}");
    Ok(())
}

#[test]
fn a_server_address_without_its_scheme_says_a_url_needs_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let code = server.enrollment_code(SITE)?;
    let bare = server.addr.to_string();
    let phones = dir.path().join("phones");
    std::fs::create_dir(&phones)?;
    let said = fails(
        &phones.join("phone.db"),
        &["enroll", "--server", &bare, "--code", &code],
    )?;
    ensure!(
        said.contains("a server URL needs http:// or https:// in front")
            && said.contains(&format!("http://{bare}")),
        "{said}"
    );
    ensure!(files(&phones)?.is_empty(), "{:?}", files(&phones)?);
    // The code was not spent: it still enrolls a phone.
    enroll(&phones.join("phone.db"), &server, &code)?;
    Ok(())
}

#[test]
fn a_spent_or_unknown_enrollment_code_is_an_enrollment_failure() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("server"), &[SITE])?;
    let phones = dir.path().join("phones");
    std::fs::create_dir(&phones)?;
    let code = server.enrollment_code(SITE)?;
    enroll(&phones.join("first.db"), &server, &code)?;

    let used = fails(
        &phones.join("second.db"),
        &["enroll", "--server", &server.url, "--code", &code],
    )?;
    // An unknown code of the right form, and one whose time ran out (made so in the database,
    // not by waiting).
    let unknown = fails(
        &phones.join("second.db"),
        &[
            "enroll",
            "--server",
            &server.url,
            "--code",
            &format!("pe_{}", "A".repeat(43)),
        ],
    )?;
    let expiring = server.enrollment_code(SITE)?;
    rusqlite::Connection::open(server.db_path())?.execute(
        "UPDATE enrollment_codes SET expires_at = 1 WHERE used_at IS NULL",
        [],
    )?;
    let expired = fails(
        &phones.join("second.db"),
        &["enroll", "--server", &server.url, "--code", &expiring],
    )?;
    for (said, what) in [
        (&used, "was already used"),
        (&unknown, "is not known"),
        (&expired, "expired"),
    ] {
        ensure!(
            said.contains("enrollment failed")
                && said.contains(what)
                && said.contains("ask an administrator for a new one"),
            "{said}"
        );
        ensure!(!said.contains("refused the sync"), "{said}");
    }
    ensure!(files(&phones)? == ["first.db"], "{:?}", files(&phones)?);
    Ok(())
}
