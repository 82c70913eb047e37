//! Files a guard attaches to an incident or to a note (photos, short videos, audio), offline.
//!
//! The bytes are kept in the store itself, by content (table `attachment_blobs`, migrations
//! 0010 and 0011), written in the same transaction as the reference to them (an incident's
//! [`patrol_core::incident::Entry::Attach`], or a note's `EventBody::NoteWithAttachments` in
//! the shift log): a reference never exists without its bytes, whatever moment the app dies at,
//! and they are as private as the rest of the store. (Files beside the database would need
//! their own fsync, rename and clean-up of orphans, for no gain at 25 MiB a file.)
//!
//! They are uploaded after what first referenced them is delivered (the server takes only blobs
//! its incidents or notes reference), by [`crate::sync::SyncClient`] after the metadata sync,
//! in chunks read straight from the table ([`DeviceStore::attachment_chunk`]).

use patrol_core::incident::{Attachment, IncidentAction};
use patrol_core::protocol::{MAX_ATTACHMENT_BYTES, MAX_DEVICE_PENDING_ATTACHMENT_BYTES};
use patrol_core::{EventBody, EventId, IncidentId};
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{DeviceStore, LocalIncident, RecordOptions, to_i64};
use crate::error::{Error, Result};

/// An attachment this phone holds whose bytes the server does not have yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    pub sha256: [u8; 32],
    pub size: u64,
}

/// A file to attach to a note: its bytes, media type and, if known, its file name.
#[derive(Clone, Copy, Debug)]
pub struct NewFile<'a> {
    pub bytes: &'a [u8],
    pub media_type: &'a str,
    pub name: Option<&'a str>,
}

/// The bytes of a file a new event references, kept in the event's commit.
pub(crate) struct KeptFile<'a> {
    sha256: [u8; 32],
    bytes: &'a [u8],
}

/// Keeps `files`, first referenced by the event `seq`, in the transaction that records it.
pub(crate) fn keep_files(
    tx: &rusqlite::Transaction<'_>,
    files: &[KeptFile<'_>],
    seq: u64,
    now_ms: i64,
) -> Result<()> {
    for file in files {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO attachment_blobs (sha256, bytes, size, event_seq, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            file.sha256.as_slice(),
            file.bytes,
            to_i64(file.bytes.len() as u64),
            to_i64(seq),
            now_ms
        ])?;
    }
    Ok(())
}

impl DeviceStore {
    /// Records a note with `files` attached (at most
    /// [`patrol_core::event::MAX_NOTE_ATTACHMENTS`]; `text` may be empty), keeping their bytes
    /// in the same commit as the note (durable when this returns). Refused, with nothing
    /// recorded, when a file is over [`MAX_ATTACHMENT_BYTES`] or the attachments not yet
    /// uploaded would pass [`MAX_DEVICE_PENDING_ATTACHMENT_BYTES`]. Returns the note's id and
    /// the references it carries, in the order given.
    pub fn note_with_files(
        &mut self,
        text: impl Into<String>,
        files: &[NewFile<'_>],
        options: RecordOptions,
    ) -> Result<(EventId, Vec<Attachment>)> {
        let mut attachments = Vec::with_capacity(files.len());
        let mut kept: Vec<KeptFile<'_>> = Vec::with_capacity(files.len());
        let mut new_bytes = 0;
        for file in files {
            let size = file.bytes.len() as u64;
            if size > MAX_ATTACHMENT_BYTES {
                return Err(Error::AttachmentTooLarge {
                    size,
                    limit: MAX_ATTACHMENT_BYTES,
                });
            }
            let sha256: [u8; 32] = Sha256::digest(file.bytes).into();
            if !kept.iter().any(|k| k.sha256 == sha256) {
                if !self.holds_blob(&sha256)? {
                    new_bytes += size;
                }
                kept.push(KeptFile {
                    sha256,
                    bytes: file.bytes,
                });
            }
            attachments.push(Attachment {
                sha256,
                media_type: file.media_type.to_owned(),
                size,
                name: file.name.map(str::to_owned),
            });
        }
        self.check_quota(new_bytes)?;
        let body = EventBody::NoteWithAttachments {
            text: text.into(),
            attachments: attachments.clone(),
        };
        let id = self.append(body, options, None, &kept)?;
        Ok((id, attachments))
    }

    fn holds_blob(&self, sha256: &[u8; 32]) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM attachment_blobs WHERE sha256 = ?1",
                [sha256.as_slice()],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Refuses `size` new bytes when the attachments not yet uploaded would pass
    /// [`MAX_DEVICE_PENDING_ATTACHMENT_BYTES`].
    fn check_quota(&self, size: u64) -> Result<()> {
        if size == 0 {
            return Ok(());
        }
        let pending = self.pending_upload_bytes()?;
        if pending + size > MAX_DEVICE_PENDING_ATTACHMENT_BYTES {
            return Err(Error::AttachmentQuota {
                pending,
                size,
                limit: MAX_DEVICE_PENDING_ATTACHMENT_BYTES,
            });
        }
        Ok(())
    }

    /// Attaches `bytes` to incident `id` as the guard on duty: keeps them by their SHA-256 and
    /// adds the reference to the incident, in one transaction (durable when this returns).
    /// Refused over [`MAX_ATTACHMENT_BYTES`], or when the attachments not yet uploaded would
    /// pass [`MAX_DEVICE_PENDING_ATTACHMENT_BYTES`]. The same content attached twice is kept
    /// once.
    pub fn attach_file(
        &mut self,
        id: IncidentId,
        bytes: &[u8],
        media_type: &str,
        name: Option<String>,
    ) -> Result<(Attachment, LocalIncident)> {
        let size = bytes.len() as u64;
        if size > MAX_ATTACHMENT_BYTES {
            return Err(Error::AttachmentTooLarge {
                size,
                limit: MAX_ATTACHMENT_BYTES,
            });
        }
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        if !self.holds_blob(&sha256)? {
            self.check_quota(size)?;
        }
        let attachment = Attachment {
            sha256,
            media_type: media_type.to_owned(),
            size,
            name,
        };
        let now = self.clock.now().wall_ms;
        let incident =
            self.act_on_incident_with(id, IncidentAction::Attach(attachment.clone()), |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO attachment_blobs
                         (sha256, bytes, size, incident_id, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![sha256.as_slice(), bytes, to_i64(size), id.to_string(), now],
                )?;
                Ok(())
            })?;
        Ok((attachment, incident))
    }

    /// Bytes of the attachments the server does not have whole yet.
    pub fn pending_upload_bytes(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM attachment_blobs WHERE uploaded_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The attachments to upload now: not uploaded, and first referenced by an incident the
    /// server has (its changes delivered) or by a note it has (within its shift's delivered
    /// events), oldest first.
    pub fn uploads_due(&self) -> Result<Vec<PendingUpload>> {
        let mut stmt = self.conn.prepare(
            "SELECT b.sha256, b.size FROM attachment_blobs b
               LEFT JOIN incidents i ON i.incident_id = b.incident_id
               LEFT JOIN events e ON e.seq = b.event_seq
               LEFT JOIN shifts s ON s.id = e.shift
              WHERE b.uploaded_ms IS NULL
                AND (i.pending = 0 OR e.seq < s.first_seq + s.delivered)
              ORDER BY b.created_ms, b.sha256",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (sha, size) = row?;
            let sha256 = <[u8; 32]>::try_from(sha.as_slice())
                .map_err(|_| Error::Corrupt("an attachment hash is not 32 bytes".into()))?;
            out.push(PendingUpload {
                sha256,
                size: u64::try_from(size).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Attachments not uploaded yet (whether due or waiting for their incident).
    pub fn pending_uploads(&self) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM attachment_blobs WHERE uploaded_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Up to `len` bytes of an attachment from `offset`, read without loading the whole.
    pub fn attachment_chunk(&self, sha256: &[u8; 32], offset: u64, len: u64) -> Result<Vec<u8>> {
        self.conn
            .query_row(
                "SELECT substr(bytes, ?2, ?3) FROM attachment_blobs WHERE sha256 = ?1",
                params![sha256.as_slice(), to_i64(offset) + 1, to_i64(len)],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| Error::Corrupt(format!("no attachment {}", hex::encode(sha256))))
    }

    /// An attachment's whole bytes, if this phone holds it.
    pub fn attachment_bytes(&self, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT bytes FROM attachment_blobs WHERE sha256 = ?1",
                [sha256.as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records that the server holds the whole attachment.
    pub fn attachment_uploaded(&mut self, sha256: &[u8; 32]) -> Result<()> {
        let now = self.clock.now().wall_ms;
        self.conn.execute(
            "UPDATE attachment_blobs SET uploaded_ms = ?2 WHERE sha256 = ?1",
            params![sha256.as_slice(), now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use patrol_core::{GuardId, IncidentCategory, IncidentId, IncidentReport, Severity, SiteId};

    use super::*;
    use crate::store::RecordOptions;

    fn store_with_incident() -> Result<(tempfile::TempDir, DeviceStore, IncidentId)> {
        let dir = tempfile::tempdir().map_err(|e| Error::Corrupt(e.to_string()))?;
        let mut store = DeviceStore::create(dir.path().join("p.db"), SiteId::new("site-1")?)?;
        store.start_shift(GuardId::new("g1")?)?;
        let incident = IncidentId::generate();
        store.report_incident(
            IncidentReport {
                incident,
                category: IncidentCategory::Theft,
                severity: Severity::Low,
                description: "door forced".into(),
                location: None,
            },
            vec![],
            RecordOptions::default(),
        )?;
        Ok((dir, store, incident))
    }

    #[test]
    fn an_attached_file_is_kept_by_content_with_its_reference() -> Result<()> {
        let (_dir, mut store, incident) = store_with_incident()?;
        let photo = vec![7u8; 3_000];
        let (a, local) =
            store.attach_file(incident, &photo, "image/jpeg", Some("door.jpg".into()))?;
        assert_eq!(a.sha256, <[u8; 32]>::from(Sha256::digest(&photo)));
        assert_eq!(local.state.attachments, vec![a.clone()]);
        // Twice: one copy, one reference.
        store.attach_file(incident, &photo, "image/jpeg", None)?;
        assert_eq!(store.attachment_bytes(&a.sha256)?, Some(photo.clone()));
        assert_eq!(store.pending_uploads()?, 1);
        assert_eq!(store.pending_upload_bytes()?, 3_000);
        let status = store.status()?;
        assert_eq!(
            (status.pending_attachments, status.pending_attachment_bytes),
            (1, 3_000)
        );
        assert_eq!(
            store.attachment_chunk(&a.sha256, 2_990, 100)?,
            vec![7u8; 10]
        );
        // Not due before the incident is delivered.
        assert_eq!(store.uploads_due()?, vec![]);
        store.attachment_uploaded(&a.sha256)?;
        assert_eq!(store.pending_uploads()?, 0);
        Ok(())
    }

    #[test]
    fn a_note_keeps_its_files_with_it_and_they_are_due_once_it_is_delivered() -> Result<()> {
        let (_dir, mut store, _) = store_with_incident()?;
        let photo = vec![1u8; 2_000];
        let clip = vec![2u8; 500];
        let files = [
            NewFile {
                bytes: &photo,
                media_type: "image/jpeg",
                name: Some("door.jpg"),
            },
            NewFile {
                bytes: &clip,
                media_type: "audio/ogg",
                name: None,
            },
            // The same photo twice: two references, one copy.
            NewFile {
                bytes: &photo,
                media_type: "image/jpeg",
                name: None,
            },
        ];
        let (id, refs) = store.note_with_files("window broken", &files, Default::default())?;
        assert_eq!(refs.len(), 3);
        let recorded = store
            .events(None)?
            .into_iter()
            .find(|e| e.event.id == id)
            .ok_or_else(|| Error::Corrupt("the note is not in the log".into()))?;
        assert_eq!(
            recorded.event.record.body,
            EventBody::NoteWithAttachments {
                text: "window broken".into(),
                attachments: refs.clone(),
            }
        );
        assert_eq!(store.attachment_bytes(&refs[1].sha256)?, Some(clip.clone()));
        assert_eq!(
            (store.pending_uploads()?, store.pending_upload_bytes()?),
            (2, 2_500)
        );
        // Not due before the note is delivered; due once its shift's delivery covers it.
        assert_eq!(store.uploads_due()?, vec![]);
        store
            .conn
            .execute("UPDATE shifts SET delivered = 1000", [])?;
        let due: Vec<[u8; 32]> = store.uploads_due()?.iter().map(|u| u.sha256).collect();
        assert_eq!(due.len(), 2);
        assert!(due.contains(&refs[0].sha256) && due.contains(&refs[1].sha256));
        Ok(())
    }

    #[test]
    fn a_note_over_a_limit_records_nothing() -> Result<()> {
        let (_dir, mut store, _) = store_with_incident()?;
        let before = store.events(None)?.len();
        let big = vec![0u8; MAX_ATTACHMENT_BYTES as usize + 1];
        let one = |bytes| NewFile {
            bytes,
            media_type: "video/mp4",
            name: None,
        };
        let e = store
            .note_with_files("", &[one(&big)], Default::default())
            .err()
            .ok_or_else(|| Error::Corrupt("a file over the limit was kept".into()))?;
        assert!(matches!(e, Error::AttachmentTooLarge { .. }), "{e}");
        let none = store.note_with_files("text", &[], Default::default());
        assert!(none.is_err(), "a note with attachments needs one");
        let small = [7u8; 10];
        let eleven: Vec<NewFile<'_>> = (0..11).map(|_| one(&small)).collect();
        assert!(
            store
                .note_with_files("", &eleven, Default::default())
                .is_err()
        );
        assert_eq!(store.events(None)?.len(), before);
        assert_eq!(store.pending_uploads()?, 0);
        Ok(())
    }

    #[test]
    fn a_file_over_the_limit_is_refused_with_the_limit() -> Result<()> {
        let (_dir, mut store, incident) = store_with_incident()?;
        let big = vec![0u8; MAX_ATTACHMENT_BYTES as usize + 1];
        let e = store
            .attach_file(incident, &big, "video/mp4", None)
            .err()
            .ok_or_else(|| Error::Corrupt("a file over the limit was attached".into()))?;
        assert!(
            matches!(e, Error::AttachmentTooLarge { limit, .. } if limit == MAX_ATTACHMENT_BYTES)
        );
        assert!(
            e.to_string().contains(&MAX_ATTACHMENT_BYTES.to_string()),
            "{e}"
        );
        assert_eq!(store.pending_uploads()?, 0);
        Ok(())
    }
}
