//! The data directory and the database files, readable by the server's user alone: the
//! directory is created 0700 and the database (`patrol.db`, and the `-wal`, `-shm` and
//! `-journal` files SQLite keeps beside it) 0600. They hold every site's guard records and the
//! hashes of every user's and device's credential.
//!
//! An existing directory or file open to other users is tightened at start, with a warning,
//! rather than only warned about: a warning scrolls by in a log nobody reads, while the records
//! stay readable by every account on the machine, and the directory is the server's own (its
//! user must own it, as it writes there). A directory the server cannot tighten (owned by
//! another user) stops it with an error naming the directory: a hospital would rather a server
//! not start than start with its patients' areas and guards' records open to any local user.
//!
//! Unix only: elsewhere the files get the operating system's defaults.

use std::path::Path;

use crate::store::StoreError;

/// The files SQLite may keep for a database at `path`: the file itself, its WAL, the WAL's
/// index and the rollback journal (used only while a new database switches to WAL).
#[cfg(unix)]
fn db_files(path: &Path) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    ["", "-wal", "-shm", "-journal"]
        .into_iter()
        .map(move |suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        })
}

/// Creates `dir` (its missing parents with the usual permissions, `dir` itself 0700), or
/// tightens an existing one that others may read, write or enter.
#[cfg(unix)]
pub(super) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;

    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // The umask can only narrow 0700: a new directory is private already.
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            restrict(dir, 0o700, "data directory")
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
pub(super) fn private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Makes the database at `path` private before SQLite opens it: a new file is created 0600
/// here, because SQLite gives the WAL and its index the database file's permissions (and
/// would otherwise create all three per the umask, typically 0644); existing files open to
/// others are tightened to 0600.
#[cfg(unix)]
pub(super) fn private_db_file(path: &Path) -> Result<(), StoreError> {
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
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", path.display()),
            )
            .into());
        }
    }
    for file in db_files(path) {
        restrict(&file, 0o600, "database file")?;
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn private_db_file(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// Sets `path`'s mode to `mode` if group or others have any access to it, with a warning. A
/// file that is not there (or is gone by the time it is changed) needs nothing: the WAL and
/// shared-memory files come and go with connections, also those of an instance still closing.
#[cfg(unix)]
fn restrict(path: &Path, mode: u32, what: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;

    let found = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if found & 0o077 == 0 {
        return Ok(());
    }
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(());
        }
        return Err(std::io::Error::new(
            e.kind(),
            format!(
                "the {what} {} is open to other users (mode {found:04o}) and cannot be \
                 restricted to its owner ({e}); make the server's user own it, or set its mode \
                 to {mode:04o}",
                path.display()
            ),
        )
        .into());
    }
    tracing::warn!(
        path = %path.display(),
        was = %format!("{found:04o}"),
        now = %format!("{mode:04o}"),
        "the {what} was open to other users; restricted it to its owner"
    );
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use crate::store::sqlite::{DB_FILE, SqliteStore};
    use crate::store::{Site, Store};
    use patrol_core::SiteId;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn mode(path: &Path) -> Result<u32, std::io::Error> {
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
    }

    async fn write_a_site(store: &SqliteStore) -> TestResult {
        store
            .create_site(Site {
                id: SiteId::new("site-1")?,
                name: "Site".into(),
                created_at_ms: 0,
            })
            .await?;
        Ok(())
    }

    /// The modes each file would get from the umask (typically 0022, so 0755 and 0644) are not
    /// what a fresh store gets: the directory is its owner's, and so are the database, its WAL
    /// and the WAL's index, which SQLite creates as it writes.
    #[tokio::test]
    async fn a_fresh_data_dir_and_its_database_are_private() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("nested").join("data");
        let store = SqliteStore::open_dir(&dir)?;
        write_a_site(&store).await?;
        assert_eq!(mode(&dir)?, 0o700);
        let db = dir.join(DB_FILE);
        for file in [
            db.clone(),
            dir.join(format!("{DB_FILE}-wal")),
            dir.join(format!("{DB_FILE}-shm")),
        ] {
            assert_eq!(mode(&file)?, 0o600, "{}", file.display());
        }
        Ok(())
    }

    /// An existing directory and database open to others (as an older server or a copy left
    /// them) are tightened at open, and the store still opens with its data.
    #[tokio::test]
    async fn an_open_data_dir_and_database_are_tightened() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        let store = SqliteStore::open_dir(&dir)?;
        write_a_site(&store).await?;
        let db = dir.join(DB_FILE);
        let wal = dir.join(format!("{DB_FILE}-wal"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644))?;
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o666))?;

        let again = SqliteStore::open_dir(&dir)?;
        assert_eq!(mode(&dir)?, 0o700);
        assert_eq!(mode(&db)?, 0o600);
        assert_eq!(mode(&wal)?, 0o600);
        assert_eq!(again.list_sites().await?.len(), 1);
        Ok(())
    }
}
