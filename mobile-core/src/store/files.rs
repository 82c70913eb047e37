//! The store's files are readable by the app alone (0600): they hold the device credential and
//! the signing key. A new store file is created 0600 before SQLite opens it, because SQLite
//! gives the WAL beside it the database file's permissions; an existing store (or WAL) open to
//! others is tightened when it is opened: it is the phone's own file, so the only reason it
//! would be wider is a copy or an older version of this library.
//!
//! Unix only (Android and iOS are): elsewhere the files get the operating system's defaults.

use std::path::Path;

use crate::error::{Error, Result};

/// Makes the store at `path` and the files SQLite keeps beside it private to the app.
#[cfg(unix)]
pub(super) fn private_store_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // An empty file is a new database to SQLite.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refused(path, "cannot create it", e)),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if file.exists() {
            restrict(file)?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn private_store_file(_path: &Path) -> Result<()> {
    Ok(())
}

/// Sets `path`'s mode to 0600 if group or others have any access to it.
#[cfg(unix)]
fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let found = std::fs::metadata(path)
        .map_err(|e| refused(path, "cannot read its permissions", e))?
        .permissions()
        .mode()
        & 0o7777;
    if found & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        refused(
            path,
            &format!("it is open to other apps (mode {found:04o}) and cannot be restricted"),
            e,
        )
    })?;
    tracing::warn!(
        path = %path.display(),
        was = %format!("{found:04o}"),
        "the store file was open to others; restricted it to the app (0600)"
    );
    Ok(())
}

/// The store refuses to open a file it cannot keep private.
#[cfg(unix)]
fn refused(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Permissions {
        path: path.display().to_string(),
        what: what.to_owned(),
        source: e,
    }
}
