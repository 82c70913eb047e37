//! Attachment blobs of the embedded backend, as files beside the database (the rules are
//! [`crate::store::blobs`]'s):
//!
//! - `blobs/<first two hex digits>/<hex sha256>`: a stored blob. It appears there only by a
//!   rename of an upload that was fsynced and hashed, followed by an fsync of its directory, so
//!   a file there is always whole and correct; its presence is the only record that the blob
//!   is stored (no table to disagree with the files after a crash).
//! - `blobs/partial/<device>/<hex sha256>`: a device's unfinished upload; its length is what
//!   the server holds, each chunk fsynced before it is acknowledged.
//!
//! Uploads are appended under one lock (the store's [`BlobFiles::lock`]): a chunk is small, and
//! the phone's uploads are few and rare next to its syncs, which never wait on this lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use patrol_core::DeviceId;
use rusqlite::{Connection, params};

use crate::store::StoreError;
use crate::store::blobs::{
    self, AttachmentRef, BlobChunk, BlobHash, ChunkOutcome, Hasher, UploadState,
};
use crate::store::rows::to_i64;
use patrol_core::SiteId;

/// Where the blobs of a store live, and the lock its uploads are appended under.
#[derive(Debug)]
pub(super) struct BlobFiles {
    root: PathBuf,
    lock: Mutex<()>,
}

impl BlobFiles {
    /// The blobs of the database at `db_path`: a `blobs` directory beside it.
    pub(super) fn beside(db_path: &Path) -> Self {
        let dir = db_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        BlobFiles {
            root: dir.join("blobs"),
            lock: Mutex::new(()),
        }
    }

    fn stored_path(&self, sha256: &BlobHash) -> PathBuf {
        let hex = hex::encode(sha256);
        self.root.join(&hex[..2]).join(hex)
    }

    fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    fn partial_path(&self, device: &DeviceId, sha256: &BlobHash) -> PathBuf {
        self.partial_dir()
            .join(device.to_string())
            .join(hex::encode(sha256))
    }

    pub(super) fn is_stored(&self, sha256: &BlobHash) -> bool {
        self.stored_path(sha256).is_file()
    }

    pub(super) fn read(&self, sha256: &BlobHash) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(self.stored_path(sha256)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn upload_state(
        &self,
        device: &DeviceId,
        sha256: &BlobHash,
        now_ms: i64,
    ) -> Result<UploadState, StoreError> {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.drop_stale(now_ms)?;
        let device_partial_bytes = dir_bytes(&self.partial_dir().join(device.to_string()))?;
        if self.is_stored(sha256) {
            return Ok(UploadState {
                stored: true,
                received: 0,
                device_partial_bytes,
            });
        }
        Ok(UploadState {
            stored: false,
            received: file_len(&self.partial_path(device, sha256))?,
            device_partial_bytes,
        })
    }

    pub(super) fn put_chunk(&self, chunk: &BlobChunk) -> Result<ChunkOutcome, StoreError> {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_stored(&chunk.sha256) {
            return Ok(ChunkOutcome::Stored);
        }
        let partial = self.partial_path(&chunk.device, &chunk.sha256);
        let received = file_len(&partial)?;
        if let Err(refused) = blobs::check_chunk(received, chunk) {
            return Ok(refused);
        }
        if let Some(dir) = partial.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)?;
        file.write_all(&chunk.bytes)?;
        file.sync_data()?;
        drop(file);
        if !blobs::completes(received, chunk) {
            return Ok(ChunkOutcome::Partial {
                received: received + chunk.bytes.len() as u64,
            });
        }
        let mut hasher = Hasher::default();
        let mut file = File::open(&partial)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        drop(file);
        if !hasher.matches(&chunk.sha256) {
            fs::remove_file(&partial)?;
            return Ok(ChunkOutcome::HashMismatch);
        }
        let stored = self.stored_path(&chunk.sha256);
        let dir = stored
            .parent()
            .ok_or_else(|| StoreError::CorruptData("a blob path without a directory".into()))?;
        fs::create_dir_all(dir)?;
        // The upload's bytes are on disk (each chunk fsynced); the rename and its directory's
        // fsync make the blob's appearance durable, whole or not at all.
        fs::rename(&partial, &stored)?;
        sync_dir(dir)?;
        Ok(ChunkOutcome::Stored)
    }

    /// Removes unfinished uploads whose last chunk is older than the time to live, and the
    /// device directories they leave empty.
    fn drop_stale(&self, now_ms: i64) -> Result<(), StoreError> {
        let cutoff = SystemTime::UNIX_EPOCH
            + Duration::from_millis(
                u64::try_from(now_ms.saturating_sub(blobs::PARTIAL_UPLOAD_TTL_MS)).unwrap_or(0),
            );
        let devices = match fs::read_dir(self.partial_dir()) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for device in devices {
            let device = device?.path();
            let mut left = 0;
            for upload in fs::read_dir(&device)? {
                let upload = upload?;
                if upload.metadata()?.modified()? < cutoff {
                    fs::remove_file(upload.path())?;
                } else {
                    left += 1;
                }
            }
            if left == 0 {
                // Another upload may have just created it; it is made again if so.
                let _ = fs::remove_dir(&device);
            }
        }
        Ok(())
    }
}

fn file_len(path: &Path) -> Result<u64, StoreError> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn dir_bytes(dir: &Path) -> Result<u64, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut total = 0;
    for entry in entries {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

/// The attachments `site`'s incidents reference, then those its notes do.
pub(super) fn attachment_refs(
    conn: &Connection,
    site: &SiteId,
) -> Result<Vec<AttachmentRef>, StoreError> {
    let rows = conn
        .prepare_cached("SELECT incident_id, state FROM incidents WHERE site_id = ?1")?
        .query_map(params![site.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(String, String)>, _>>()?;
    let mut refs = blobs::attachment_refs(site, rows)?;
    let notes = conn
        .prepare_cached(
            "SELECT event_id, sha256, media_type, size, name FROM note_attachments
              WHERE site_id = ?1 ORDER BY seq, position",
        )?
        .query_map(params![site.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<Vec<blobs::NoteRefRow>, _>>()?;
    refs.extend(blobs::note_refs(site, notes)?);
    Ok(refs)
}

/// Keeps the files a new note references, for [`attachment_refs`].
pub(super) fn insert_note_refs(
    tx: &Connection,
    site: &str,
    seq: i64,
    event: &patrol_core::Event,
) -> Result<(), StoreError> {
    for (position, a) in blobs::note_attachment_rows(event) {
        tx.prepare_cached(
            "INSERT INTO note_attachments
                 (site_id, seq, position, event_id, sha256, media_type, size, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            site,
            seq,
            position,
            event.id.0.as_bytes().as_slice(),
            a.sha256.as_slice(),
            a.media_type,
            to_i64(a.size),
            a.name
        ])?;
    }
    Ok(())
}
