//! Attachment blobs of the PostgreSQL backend (migration 0018; the rules are
//! [`crate::store::blobs`]'s): stored blobs in `blobs` and `blob_chunks`, unfinished uploads in
//! `blob_uploads`, so that a phone cut off while talking to one instance resumes with another.
//! Each chunk is appended in a transaction under an advisory lock on its (device, blob), so two
//! requests of one upload (a retry racing its original) are applied one after the other; the
//! chunk that completes an upload hashes the whole and moves it in the same transaction.

use deadpool_postgres::{GenericClient, Transaction};
use patrol_core::{DeviceId, SiteId};

use crate::store::StoreError;
use crate::store::blobs::{
    self, AttachmentRef, BlobChunk, BlobHash, ChunkOutcome, Hasher, UploadState,
};
use crate::store::rows::to_i64;

pub(super) async fn attachment_refs<C: GenericClient>(
    c: &C,
    site: &SiteId,
) -> Result<Vec<AttachmentRef>, StoreError> {
    let rows = c
        .query(
            "SELECT incident_id, state FROM incidents WHERE site_id = $1",
            &[&site.as_str()],
        )
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(String, String)>, tokio_postgres::Error>>()?;
    let mut refs = blobs::attachment_refs(site, rows)?;
    let notes = c
        .query(
            "SELECT event_id, sha256, media_type, size, name FROM note_attachments
              WHERE site_id = $1 ORDER BY seq, position",
            &[&site.as_str()],
        )
        .await?
        .into_iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect::<Result<Vec<blobs::NoteRefRow>, tokio_postgres::Error>>()?;
    refs.extend(blobs::note_refs(site, notes)?);
    Ok(refs)
}

/// Keeps the files a new note references, for [`attachment_refs`].
pub(super) async fn insert_note_refs<C: GenericClient>(
    c: &C,
    site: &str,
    seq: i64,
    event: &patrol_core::Event,
) -> Result<(), StoreError> {
    for (position, a) in blobs::note_attachment_rows(event) {
        c.execute(
            "INSERT INTO note_attachments
                 (site_id, seq, position, event_id, sha256, media_type, size, name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &site,
                &seq,
                &(position as i32),
                &event.id.0.as_bytes().as_slice(),
                &a.sha256.as_slice(),
                &a.media_type,
                &to_i64(a.size),
                &a.name,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn stored_blobs<C: GenericClient>(
    c: &C,
    hashes: &[BlobHash],
) -> Result<Vec<BlobHash>, StoreError> {
    let keys: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
    let rows = c
        .query("SELECT sha256 FROM blobs WHERE sha256 = ANY($1)", &[&keys])
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let bytes: Vec<u8> = row.try_get(0)?;
        let hash = BlobHash::try_from(bytes.as_slice())
            .map_err(|_| StoreError::CorruptData("a stored blob hash is not 32 bytes".into()))?;
        out.push(hash);
    }
    Ok(out)
}

pub(super) async fn read_blob<C: GenericClient>(
    c: &C,
    sha256: &BlobHash,
) -> Result<Option<Vec<u8>>, StoreError> {
    let key = sha256.as_slice();
    let Some(size) = c
        .query_opt("SELECT size FROM blobs WHERE sha256 = $1", &[&key])
        .await?
    else {
        return Ok(None);
    };
    let size: i64 = size.try_get(0)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    for row in c
        .query(
            "SELECT bytes FROM blob_chunks WHERE sha256 = $1 ORDER BY offset_bytes",
            &[&key],
        )
        .await?
    {
        let chunk: &[u8] = row.try_get(0)?;
        bytes.extend_from_slice(chunk);
    }
    Ok(Some(bytes))
}

async fn stored<C: GenericClient>(c: &C, sha256: &BlobHash) -> Result<bool, StoreError> {
    Ok(c.query_opt(
        "SELECT 1 FROM blobs WHERE sha256 = $1",
        &[&sha256.as_slice()],
    )
    .await?
    .is_some())
}

/// Bytes received of `device`'s upload of `sha256`.
async fn received<C: GenericClient>(
    c: &C,
    device: &str,
    sha256: &BlobHash,
) -> Result<u64, StoreError> {
    let n: i64 = c
        .query_one(
            "SELECT COALESCE(SUM(length(bytes)), 0)::bigint FROM blob_uploads
             WHERE device_id = $1 AND sha256 = $2",
            &[&device, &sha256.as_slice()],
        )
        .await?
        .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn upload_state(
    tx: &Transaction<'_>,
    device: &DeviceId,
    sha256: &BlobHash,
    now_ms: i64,
) -> Result<UploadState, StoreError> {
    tx.execute(
        "DELETE FROM blob_uploads WHERE updated_at < $1",
        &[&now_ms.saturating_sub(blobs::PARTIAL_UPLOAD_TTL_MS)],
    )
    .await?;
    let device = device.to_string();
    let partial: i64 = tx
        .query_one(
            "SELECT COALESCE(SUM(length(bytes)), 0)::bigint FROM blob_uploads
             WHERE device_id = $1",
            &[&device],
        )
        .await?
        .try_get(0)?;
    let device_partial_bytes = u64::try_from(partial).unwrap_or(0);
    if stored(tx, sha256).await? {
        return Ok(UploadState {
            stored: true,
            received: 0,
            device_partial_bytes,
        });
    }
    Ok(UploadState {
        stored: false,
        received: received(tx, &device, sha256).await?,
        device_partial_bytes,
    })
}

pub(super) async fn put_chunk(
    tx: &Transaction<'_>,
    chunk: &BlobChunk,
) -> Result<ChunkOutcome, StoreError> {
    let device = chunk.device.to_string();
    let key = chunk.sha256.as_slice();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || encode($2, 'hex'), 0))",
        &[&device, &key],
    )
    .await?;
    if stored(tx, &chunk.sha256).await? {
        return Ok(ChunkOutcome::Stored);
    }
    let received = received(tx, &device, &chunk.sha256).await?;
    if let Err(refused) = blobs::check_chunk(received, chunk) {
        return Ok(refused);
    }
    tx.execute(
        "INSERT INTO blob_uploads (device_id, sha256, offset_bytes, bytes, updated_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &device,
            &key,
            &to_i64(chunk.offset),
            &chunk.bytes,
            &chunk.at_ms,
        ],
    )
    .await?;
    let upload_rows = "WHERE device_id = $1 AND sha256 = $2";
    let new_received = received + chunk.bytes.len() as u64;
    if !blobs::completes(received, chunk) {
        // Every chunk of the upload counts as touched, so none of it goes stale before the rest.
        tx.execute(
            &format!("UPDATE blob_uploads SET updated_at = $3 {upload_rows}"),
            &[&device, &key, &chunk.at_ms],
        )
        .await?;
        return Ok(ChunkOutcome::Partial {
            received: new_received,
        });
    }
    let mut hasher = Hasher::default();
    for row in tx
        .query(
            &format!("SELECT bytes FROM blob_uploads {upload_rows} ORDER BY offset_bytes"),
            &[&device, &key],
        )
        .await?
    {
        let bytes: &[u8] = row.try_get(0)?;
        hasher.update(bytes);
    }
    if !hasher.matches(&chunk.sha256) {
        tx.execute(
            &format!("DELETE FROM blob_uploads {upload_rows}"),
            &[&device, &key],
        )
        .await?;
        return Ok(ChunkOutcome::HashMismatch);
    }
    // Another device's upload of the same content may have finished meanwhile (it held another
    // lock): then this one is simply dropped.
    let inserted = tx
        .execute(
            "INSERT INTO blobs (sha256, size, stored_at) VALUES ($1, $2, $3)
             ON CONFLICT (sha256) DO NOTHING",
            &[&key, &to_i64(new_received), &chunk.at_ms],
        )
        .await?;
    if inserted == 1 {
        tx.execute(
            &format!(
                "INSERT INTO blob_chunks (sha256, offset_bytes, bytes)
                 SELECT sha256, offset_bytes, bytes FROM blob_uploads {upload_rows}"
            ),
            &[&device, &key],
        )
        .await?;
    }
    tx.execute(
        &format!("DELETE FROM blob_uploads {upload_rows}"),
        &[&device, &key],
    )
    .await?;
    Ok(ChunkOutcome::Stored)
}
