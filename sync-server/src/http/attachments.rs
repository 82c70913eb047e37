//! Attachments: the bytes of files guards attach to incidents and notes (the incident documents
//! and the notes in shift logs hold only references: hash, media type, size, name).
//!
//! - `GET /api/v1/blobs/{sha256}` and `PUT /api/v1/blobs/{sha256}?offset=N`: a phone's upload of
//!   a blob its site's incidents or notes reference, in chunks of at most
//!   [`protocol::ATTACHMENT_CHUNK_BYTES`], resumable from what the server holds; the device's
//!   credential. Uploads take a slot of their own small pool ([`AppState::uploads`]), never the
//!   sync admission's, and are refused (503) rather than queued when it is full: a sync never
//!   waits behind a photo.
//! - `GET /api/v1/sites/{site}/attachments[?incident=I|?note=E]` and `GET
//!   .../attachments/{sha256}`: the site's attachments and their bytes; a user covering the
//!   site, and only blobs the site's incidents or notes reference (404 otherwise, so that a hash known
//!   from another site reads nothing).
//!
//! The rules on the stored bytes are [`crate::store::blobs`]'s.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use patrol_core::protocol::{
    ATTACHMENT_CHUNK_BYTES, MAX_ATTACHMENT_BYTES, MAX_DEVICE_PENDING_ATTACHMENT_BYTES,
};
use patrol_core::{EventId, IncidentId, SiteId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{self, AuthUser};
use super::error::{AppError, ErrorBody};
use super::extract::{
    MAX_JSON_BODY_BYTES, SlugId, body_error, query_params, query_value, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;
use crate::store::blobs::{self, AttachedTo, AttachmentRef, BlobChunk, BlobHash, ChunkOutcome};

/// The `Retry-After` of a chunk refused because every upload slot is taken.
const UPLOAD_RETRY_AFTER_SECS: u64 = 5;

/// The body limit of a chunk: the chunk size itself (a larger body is refused unread).
const CHUNK_LIMIT: usize = ATTACHMENT_CHUNK_BYTES as usize;

pub(super) fn routes() -> Vec<Endpoint> {
    use Verb::{Get, Put};
    let json = MAX_JSON_BODY_BYTES;
    vec![
        endpoint(Get, "/api/v1/blobs/{sha256}", upload_status, json),
        endpoint(Put, "/api/v1/blobs/{sha256}", put_chunk, CHUNK_LIMIT),
        endpoint(
            Get,
            "/api/v1/sites/{site}/attachments",
            list_attachments,
            json,
        ),
        endpoint(
            Get,
            "/api/v1/sites/{site}/attachments/{sha256}",
            get_attachment,
            json,
        ),
    ]
}

fn hash_from(raw: &str) -> Result<BlobHash, AppError> {
    blobs::parse_hash(raw).ok_or_else(|| {
        AppError::bad_request(
            "invalid_sha256",
            format!("{raw:?} is not a SHA-256 (64 hexadecimal digits)"),
        )
    })
}

fn unknown_attachment(sha256: &BlobHash, site: &SiteId) -> AppError {
    AppError::NotFound(format!(
        "no incident or note of site {site} references attachment {}",
        hex::encode(sha256)
    ))
}

/// The device a blob request comes from (its credential checked first), the request's parts,
/// and the blob's address as given and as parsed.
async fn device_upload(
    state: &AppState,
    request: Request,
) -> Result<
    (
        crate::store::DeviceCredential,
        (axum::http::request::Parts, axum::body::Body),
        String,
        BlobHash,
    ),
    AppError,
> {
    let client = state
        .throttle
        .client(request.extensions(), request.headers());
    let credential = auth::authenticate_device(state, request.headers(), client).await?;
    let (mut parts, body) = request.into_parts();
    let Path(raw) = Path::<String>::from_request_parts(&mut parts, state)
        .await
        .map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let sha256 = hash_from(&raw)?;
    Ok((credential, (parts, body), raw, sha256))
}

async fn reference(
    state: &AppState,
    site: &SiteId,
    sha256: &BlobHash,
) -> Result<AttachmentRef, AppError> {
    state
        .store
        .attachment_refs(site.clone())
        .await?
        .into_iter()
        .find(|r| &r.sha256 == sha256)
        .ok_or_else(|| unknown_attachment(sha256, site))
}

/// What the server holds of the device's upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadStatus {
    /// Hex SHA-256 of the blob.
    sha256: String,
    /// Its size, as its reference says.
    size: u64,
    /// Bytes the server holds of this device's upload: the offset to send next. Equals `size`
    /// once stored.
    received: u64,
    /// The whole blob is stored (from this device or another): nothing more to send.
    stored: bool,
}

/// What the server holds of this device's upload of a blob: where to resume.
#[utoipa::path(
    get,
    path = "/api/v1/blobs/{sha256}",
    tag = "sync",
    security(("device_credential" = [])),
    params(("sha256" = String, Path, pattern = r"^[0-9a-fA-F]{64}$", description = "The blob's SHA-256, 64 hex digits")),
    responses(
        (status = 200, description = "How much the server holds", body = UploadStatus),
        (status = 400, description = "`invalid_sha256`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked device credential", body = ErrorBody),
        (status = 404, description = "`not_found`: no incident or note of the device's site references this blob (sync it first)", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn upload_status(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<UploadStatus>, AppError> {
    let (credential, _, raw, sha256) = device_upload(&state, request).await?;
    let reference = reference(&state, &credential.site, &sha256).await?;
    let held = state
        .store
        .blob_upload(credential.device, sha256, now_ms())
        .await?;
    Ok(Json(UploadStatus {
        sha256: raw.to_ascii_lowercase(),
        size: reference.size,
        received: if held.stored {
            reference.size
        } else {
            held.received
        },
        stored: held.stored,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChunkParams {
    /// Where this chunk starts in the blob: what the server said it holds.
    #[param(value_type = u64, format = "uint64", maximum = 18446744073709551615usize)]
    offset: u64,
}

/// Appends a chunk (at most 1 MiB) to this device's upload of a blob its site's incidents
/// reference. The chunk that completes it makes the server hash the whole: stored if it
/// matches, discarded (`422 hash_mismatch`) if not.
#[utoipa::path(
    put,
    path = "/api/v1/blobs/{sha256}",
    tag = "sync",
    security(("device_credential" = [])),
    params(
        ("sha256" = String, Path, pattern = r"^[0-9a-fA-F]{64}$", description = "The blob's SHA-256, 64 hex digits"),
        ChunkParams,
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The chunk's bytes, at most 1 MiB, none past the blob's size"),
    responses(
        (status = 200, description = "Appended (`stored` once the whole arrived and matched)", body = UploadStatus),
        (status = 400, description = "`invalid_sha256`, `invalid_query`, `invalid_chunk` (empty, or past the blob's size)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked device credential", body = ErrorBody),
        (status = 404, description = "`not_found`: no incident or note of the device's site references this blob (sync it first)", body = ErrorBody),
        (status = 409, description = "`wrong_offset`: the chunk does not start where the upload ends; the message and `GET` say where", body = ErrorBody),
        (status = 413, description = "`payload_too_large` (a chunk over 1 MiB), `attachment_too_large` (a blob over 25 MiB), `device_upload_quota` (the device's unfinished uploads would pass 200 MiB)", body = ErrorBody),
        (status = 422, description = "`hash_mismatch`: the whole does not hash to its address; the upload was discarded", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
        (status = 503, description = "`server_busy`: every upload slot is taken; nothing was read. Send the chunk again after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn put_chunk(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<UploadStatus>, AppError> {
    let (credential, (mut parts, body), _, sha256) = device_upload(&state, request).await?;
    let query = Query::<ChunkParams>::from_request_parts(&mut parts, &state).await;
    let offset = query_params(query)?.offset;
    let reference = reference(&state, &credential.site, &sha256).await?;
    let total = reference.size;
    if total > MAX_ATTACHMENT_BYTES {
        return Err(AppError::PayloadTooLargeCode {
            code: "attachment_too_large",
            message: format!(
                "this attachment is {total} bytes; the server takes at most \
                 {MAX_ATTACHMENT_BYTES} bytes per attachment"
            ),
        });
    }
    // Never queued: a busy server answers at once, and the phone tries at its next sync.
    let _slot = state
        .uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::UploadsBusy {
            retry_after_secs: UPLOAD_RETRY_AFTER_SECS,
        })?;
    let now = now_ms();
    let held = state
        .store
        .blob_upload(credential.device, sha256, now)
        .await?;
    let status = |received, stored| UploadStatus {
        sha256: hex::encode(sha256),
        size: total,
        received,
        stored,
    };
    if held.stored {
        return Ok(Json(status(total, true)));
    }
    if held.received == 0 && held.device_partial_bytes + total > MAX_DEVICE_PENDING_ATTACHMENT_BYTES
    {
        return Err(AppError::PayloadTooLargeCode {
            code: "device_upload_quota",
            message: format!(
                "this device's unfinished uploads hold {} bytes; with this {total}-byte \
                 attachment they would pass the limit of {MAX_DEVICE_PENDING_ATTACHMENT_BYTES} \
                 bytes: finish them first",
                held.device_partial_bytes
            ),
        });
    }
    let request = Request::from_parts(parts, body);
    let bytes = Bytes::from_request(request, &state)
        .await
        .map_err(|r| body_error(r, CHUNK_LIMIT))?;
    if bytes.is_empty() || offset.saturating_add(bytes.len() as u64) > total {
        return Err(AppError::bad_request(
            "invalid_chunk",
            format!(
                "a chunk of {} bytes at offset {offset} does not fit in this {total}-byte \
                 attachment",
                bytes.len()
            ),
        ));
    }
    let outcome = state
        .store
        .put_blob_chunk(BlobChunk {
            device: credential.device,
            sha256,
            total,
            offset,
            bytes: bytes.to_vec(),
            at_ms: now,
        })
        .await?;
    match outcome {
        ChunkOutcome::Partial { received } => Ok(Json(status(received, false))),
        ChunkOutcome::Stored => Ok(Json(status(total, true))),
        ChunkOutcome::WrongOffset { received } => Err(AppError::Conflict {
            code: "wrong_offset",
            message: format!(
                "the server holds {received} bytes of this upload; send the chunk at offset \
                 {received}, not {offset}"
            ),
        }),
        ChunkOutcome::HashMismatch => Err(AppError::Unprocessable {
            code: "hash_mismatch",
            message: format!(
                "the {total} bytes received do not hash to {}; the upload was discarded: \
                 send it again from offset 0",
                hex::encode(sha256)
            ),
        }),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AttachmentParams {
    /// Only this incident's attachments.
    #[param(format = Uuid)]
    incident: Option<String>,
    /// Only this note's attachments (the note event's id).
    #[param(format = Uuid)]
    note: Option<String>,
}

/// One attachment of a site's incident or note.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentView {
    /// The incident it is attached to (`null` for a note's).
    incident_id: Option<String>,
    /// The note it is attached to: the note event's id in the feed (`null` for an incident's).
    note_event_id: Option<String>,
    /// Hex SHA-256: the attachment's address.
    sha256: String,
    media_type: String,
    size: u64,
    name: Option<String>,
    /// Its bytes have reached the server (`false`: the phone has not uploaded them yet).
    uploaded: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentList {
    site_id: String,
    /// Incidents' in incident id then hash order, then notes' in feed order.
    attachments: Vec<AttachmentView>,
}

/// The attachments a site's incidents and notes reference, and whether each has been uploaded.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/attachments",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        AttachmentParams,
    ),
    responses(
        (status = 200, description = "The site's attachments", body = AttachmentList),
        (status = 400, description = "`invalid_query`, `invalid_site_id`, `invalid_incident_id`, `invalid_event_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn list_attachments(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<AttachmentParams>, QueryRejection>,
) -> Result<Json<AttachmentList>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let params = query_params(query)?;
    let incident = query_value(&params.incident)
        .map(|s| {
            s.parse::<IncidentId>()
                .map_err(|e| AppError::bad_request("invalid_incident_id", e.to_string()))
        })
        .transpose()?;
    let note = query_value(&params.note)
        .map(|s| {
            s.parse::<EventId>()
                .map_err(|e| AppError::bad_request("invalid_event_id", e.to_string()))
        })
        .transpose()?;
    if state.store.get_site(site.clone()).await?.is_none() {
        return Err(AppError::UnknownSite(site.to_string()));
    }
    let refs: Vec<AttachmentRef> = state
        .store
        .attachment_refs(site.clone())
        .await?
        .into_iter()
        .filter(|r| match r.attached_to {
            AttachedTo::Incident(i) => note.is_none() && incident.is_none_or(|x| x == i),
            AttachedTo::Note(e) => incident.is_none() && note.is_none_or(|x| x == e),
        })
        .collect();
    let stored = state
        .store
        .stored_blobs(blobs::distinct_hashes(&refs))
        .await?;
    let attachments = refs
        .into_iter()
        .map(|r| AttachmentView {
            incident_id: match r.attached_to {
                AttachedTo::Incident(i) => Some(i.to_string()),
                AttachedTo::Note(_) => None,
            },
            note_event_id: match r.attached_to {
                AttachedTo::Note(e) => Some(e.to_string()),
                AttachedTo::Incident(_) => None,
            },
            sha256: hex::encode(r.sha256),
            uploaded: stored.contains(&r.sha256),
            media_type: r.media_type,
            size: r.size,
            name: r.name,
        })
        .collect();
    Ok(Json(AttachmentList {
        site_id: site.to_string(),
        attachments,
    }))
}

/// The media type to serve: the reference's when it is a plain `type/subtype` (a guard's phone
/// wrote it), else `application/octet-stream`.
fn served_type(media_type: &str) -> HeaderValue {
    let plain = media_type.split_once('/').is_some_and(|(t, s)| {
        let token = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        token(t) && token(s)
    });
    if plain && let Ok(v) = HeaderValue::from_str(media_type) {
        return v;
    }
    HeaderValue::from_static("application/octet-stream")
}

/// `attachment; filename="..."` with the reference's name made safe (ASCII letters, digits and
/// `._-`), or the hash.
fn disposition(reference: &AttachmentRef) -> HeaderValue {
    let name: String = reference
        .name
        .as_deref()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = if name.trim_matches('_').is_empty() {
        hex::encode(reference.sha256)
    } else {
        name
    };
    HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// An attachment's bytes.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/attachments/{sha256}",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("sha256" = String, Path, pattern = r"^[0-9a-fA-F]{64}$", description = "The attachment's SHA-256, 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The bytes, with the media type the reference gives (a plain `type/subtype`, else `application/octet-stream`), as a download (`Content-Disposition: attachment`)", content_type = "*/*", body = Vec<u8>),
        (status = 400, description = "`invalid_site_id`, `invalid_sha256`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`not_found`: no incident or note of the site references it; `not_uploaded`: the phone has not uploaded it yet", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn get_attachment(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, AppError> {
    let Path((site, raw)) =
        path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let site =
        SiteId::new(site).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    user.can_read(&site)?;
    let sha256 = hash_from(&raw)?;
    let reference = reference(&state, &site, &sha256).await?;
    let Some(bytes) = state.store.read_blob(sha256).await? else {
        return Err(AppError::NotUploaded(format!(
            "attachment {} has not been uploaded by the phone yet",
            hex::encode(sha256)
        )));
    };
    Ok((
        [
            (header::CONTENT_TYPE, served_type(&reference.media_type)),
            (header::CONTENT_DISPOSITION, disposition(&reference)),
            // A guard's file is never run as a page of the server's origin.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; sandbox"),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_media_types_are_served_as_given() {
        assert_eq!(served_type("image/jpeg"), "image/jpeg");
        assert_eq!(served_type("text/html; x"), "application/octet-stream");
        assert_eq!(served_type("nonsense"), "application/octet-stream");
    }
}
