//! Attachment blobs: the bytes of the files guards attach to incidents and notes, uploaded by
//! their phones in chunks after the incident documents or notes that reference them.
//!
//! Rules both backends apply, written once here:
//! - A blob is stored once per content (its SHA-256), whichever devices and sites upload it;
//!   who may read it is decided by the references in a site's incidents and notes
//!   ([`attachment_refs`], [`note_refs`]), never by the blob itself.
//! - An upload is kept per (device, blob) until it is whole, and appended only at its end: a
//!   chunk whose offset is not what the server holds is refused with the offset it holds, so a
//!   phone cut off resumes from there ([`check_chunk`]).
//! - When the bytes received reach the declared total, the whole is hashed; a mismatch discards
//!   the upload, a match makes it the stored blob, atomically ([`verify`]).
//! - Unfinished uploads untouched for [`PARTIAL_UPLOAD_TTL_MS`] are dropped.
//!
//! Where the bytes live is the backend's: files under the data directory for SQLite, tables
//! for PostgreSQL (so that every instance sees every upload).

use std::collections::BTreeSet;

use patrol_core::{DeviceId, Event, EventBody, EventId, IncidentId, SiteId};
use sha2::{Digest, Sha256};

use super::StoreError;

/// A blob's content address: its SHA-256.
pub type BlobHash = [u8; 32];

/// How long an unfinished upload is kept since its last chunk (7 days): long enough for a
/// phone off the network over a long weekend, short enough that abandoned ones do not pile up.
pub const PARTIAL_UPLOAD_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// A chunk of a device's upload.
#[derive(Clone, Debug)]
pub struct BlobChunk {
    pub device: DeviceId,
    pub sha256: BlobHash,
    /// The blob's whole size (the size its reference declares).
    pub total: u64,
    /// Where this chunk starts.
    pub offset: u64,
    pub bytes: Vec<u8>,
    /// Server time of the request.
    pub at_ms: i64,
}

/// What the server holds of a device's upload of a blob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadState {
    /// The whole blob is stored (by this device or another).
    pub stored: bool,
    /// Bytes received of this device's unfinished upload (0 when stored or none).
    pub received: u64,
    /// Bytes of every unfinished upload of the device, this one included.
    pub device_partial_bytes: u64,
}

/// What a chunk did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Appended; the upload holds `received` bytes.
    Partial { received: u64 },
    /// The blob is stored (this chunk completed it, or it was already).
    Stored,
    /// The chunk does not start where the upload ends (`received`); nothing changed.
    WrongOffset { received: u64 },
    /// The whole did not hash to its address: the upload was discarded.
    HashMismatch,
}

/// What references an attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AttachedTo {
    Incident(IncidentId),
    /// A note event in a shift log.
    Note(EventId),
}

/// An attachment referenced by one of a site's incidents or notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentRef {
    pub attached_to: AttachedTo,
    pub sha256: BlobHash,
    pub media_type: String,
    pub size: u64,
    pub name: Option<String>,
}

/// The attachments a site's incidents reference, from their stored state JSON
/// (`(incident id, state)` rows, as both backends read them), in incident then hash order.
pub fn attachment_refs(
    site: &SiteId,
    rows: Vec<(String, String)>,
) -> Result<Vec<AttachmentRef>, StoreError> {
    #[derive(serde::Deserialize)]
    struct State {
        #[serde(default)]
        attachments: Vec<View>,
    }
    #[derive(serde::Deserialize)]
    struct View {
        sha256: String,
        media_type: String,
        size: u64,
        name: Option<String>,
    }
    let corrupt = |incident: &str, reason: String| StoreError::CorruptDocument {
        site: site.clone(),
        doc: incident.to_owned(),
        reason,
    };
    let mut refs = Vec::new();
    for (incident_id, state) in rows {
        let incident: IncidentId = incident_id
            .parse()
            .map_err(|e: patrol_core::ValidationError| corrupt(&incident_id, e.to_string()))?;
        let state: State =
            serde_json::from_str(&state).map_err(|e| corrupt(&incident_id, e.to_string()))?;
        for a in state.attachments {
            let sha256 = parse_hash(&a.sha256)
                .ok_or_else(|| corrupt(&incident_id, format!("attachment hash {:?}", a.sha256)))?;
            refs.push(AttachmentRef {
                attached_to: AttachedTo::Incident(incident),
                sha256,
                media_type: a.media_type,
                size: a.size,
                name: a.name,
            });
        }
    }
    refs.sort_by_key(|r| (r.attached_to, r.sha256));
    Ok(refs)
}

/// A note's reference to a file as both backends keep it (`note_attachments`, written at
/// ingest from [`note_attachment_rows`]): `(event id, sha256, media type, size, name)`, in the
/// site's feed order then the note's.
pub type NoteRefRow = (Vec<u8>, Vec<u8>, String, i64, Option<String>);

/// The attachments `site`'s notes reference, from their rows.
pub fn note_refs(site: &SiteId, rows: Vec<NoteRefRow>) -> Result<Vec<AttachmentRef>, StoreError> {
    rows.into_iter()
        .map(|(event, sha256, media_type, size, name)| {
            let corrupt = |what: &str| {
                StoreError::CorruptData(format!(
                    "a note attachment of site {site} has a bad {what}"
                ))
            };
            let event = uuid::Uuid::from_slice(&event).map_err(|_| corrupt("event id"))?;
            Ok(AttachmentRef {
                attached_to: AttachedTo::Note(EventId(event)),
                sha256: BlobHash::try_from(sha256.as_slice()).map_err(|_| corrupt("hash"))?,
                media_type,
                size: u64::try_from(size).map_err(|_| corrupt("size"))?,
                name,
            })
        })
        .collect()
}

/// A note's reference to a file, as ingest writes it: its position in the note and the file.
pub type NoteAttachmentRow<'a> = (i64, &'a patrol_core::incident::Attachment);

/// The files `event` references if it is a note with attachments (none for any other event),
/// each with its position in the note.
pub fn note_attachment_rows(event: &Event) -> Vec<NoteAttachmentRow<'_>> {
    match &event.record.body {
        EventBody::NoteWithAttachments { attachments, .. } => {
            (0i64..).zip(attachments.iter()).collect()
        }
        _ => Vec::new(),
    }
}

/// A blob hash from its 64 hex digits.
pub fn parse_hash(hex_digits: &str) -> Option<BlobHash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// The hashes among `refs`, once each.
pub fn distinct_hashes(refs: &[AttachmentRef]) -> Vec<BlobHash> {
    refs.iter()
        .map(|r| r.sha256)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Whether `chunk` may be appended to an upload holding `received` bytes: it must start there.
/// (Its length against the total and the chunk size is the HTTP layer's check, before the body
/// is stored anywhere.)
pub fn check_chunk(received: u64, chunk: &BlobChunk) -> Result<(), ChunkOutcome> {
    if chunk.offset != received {
        return Err(ChunkOutcome::WrongOffset { received });
    }
    Ok(())
}

/// Whether the upload is whole once `chunk` is appended to `received` bytes.
pub fn completes(received: u64, chunk: &BlobChunk) -> bool {
    received + chunk.bytes.len() as u64 >= chunk.total
}

/// A running hash of an upload's bytes, to compare with its address.
#[derive(Clone, Debug, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn matches(self, sha256: &BlobHash) -> bool {
        self.0.finalize().as_slice() == sha256
    }
}

/// Whether `bytes` hash to `sha256`.
pub fn verify(sha256: &BlobHash, bytes: &[u8]) -> bool {
    let mut h = Hasher::default();
    h.update(bytes);
    h.matches(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_appended_only_at_the_end_of_what_is_held() {
        let chunk = |offset| BlobChunk {
            device: DeviceId::generate(),
            sha256: [0; 32],
            total: 10,
            offset,
            bytes: vec![1; 4],
            at_ms: 0,
        };
        assert_eq!(check_chunk(4, &chunk(4)), Ok(()));
        assert_eq!(
            check_chunk(4, &chunk(0)),
            Err(ChunkOutcome::WrongOffset { received: 4 })
        );
        assert!(!completes(4, &chunk(4)));
        assert!(completes(6, &chunk(6)));
    }

    #[test]
    fn the_whole_is_checked_against_its_address() {
        let sha: BlobHash = Sha256::digest(b"photo").into();
        assert!(verify(&sha, b"photo"));
        assert!(!verify(&sha, b"phot0"));
        assert_eq!(parse_hash(&hex::encode(sha)), Some(sha));
        assert_eq!(parse_hash("zz"), None);
    }
}
