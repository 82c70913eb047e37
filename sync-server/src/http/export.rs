//! `GET /api/v1/sites/{site}/shift-logs/{shift}/export`: a shift log as evidence, with its
//! device's signatures, for `patrol verify`; a user covering the site.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use patrol_core::evidence::ShiftLogExport;
use patrol_core::{ShiftId, ShiftLog, SiteId};
use utoipa::ToSchema;

use super::auth::AuthUser;
use super::error::{AppError, ErrorBody};
use super::extract::{MAX_JSON_BODY_BYTES, SlugId};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::store::StoreError;

pub(super) fn routes() -> Vec<Endpoint> {
    vec![endpoint(
        Verb::Get,
        "/api/v1/sites/{site}/shift-logs/{shift}/export",
        export_shift_log,
        MAX_JSON_BODY_BYTES,
    )]
}

/// A shift log with its device's signatures (documentation only: the handler serves
/// [`patrol_core::evidence::ShiftLogExport`]).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct ShiftLogExportView {
    /// `patrol-shift-log-export/1`.
    format: String,
    site: String,
    device: String,
    shift: String,
    /// The key the device registered at enrollment (hex), for information: a verifier checks
    /// the log against a key it holds, not this one.
    public_key: Option<String>,
    /// The log's raw automerge changes (hex), each after those it depends on.
    changes: Vec<String>,
    /// Each `{heads: [hex], signed_at_ms, signature: hex, received_at_ms}`.
    signatures: Vec<serde_json::Value>,
}

/// Exports a shift log as evidence: its changes exactly as the device made them and every
/// signature the device made over the log's heads. `patrol verify` checks the file offline
/// against the device's public key.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/shift-logs/{shift}/export",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("shift" = String, Path, format = Uuid, description = "Shift id (UUID): the `shift_id` of its events"),
    ),
    responses(
        (status = 200, description = "The shift log and its signatures", body = ShiftLogExportView),
        (status = 400, description = "`invalid_site_id`, `invalid_shift_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`not_found`: the site has no such shift log", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn export_shift_log(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ShiftLogExport>, AppError> {
    let Path((site, shift)) =
        path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let site =
        SiteId::new(site).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    user.can_read(&site)?;
    let shift: ShiftId = shift.parse().map_err(|e: patrol_core::ValidationError| {
        AppError::bad_request("invalid_shift_id", e.to_string())
    })?;
    let Some(evidence) = state.store.shift_log_evidence(site.clone(), shift).await? else {
        return Err(AppError::NotFound(format!(
            "site {site} has no shift log {shift}"
        )));
    };
    // Loading the document and writing out its changes is CPU work.
    let export = tokio::task::spawn_blocking(move || {
        let mut log = ShiftLog::load(&evidence.bytes, evidence.device)?;
        let changes = log.changes();
        Ok::<_, patrol_core::LogError>(ShiftLogExport::new(
            log.meta(),
            evidence.public_key,
            &changes,
            &evidence.signatures,
        ))
    })
    .await
    .map_err(AppError::internal)?
    .map_err(|e| {
        AppError::from(StoreError::CorruptDocument {
            site,
            doc: shift.to_string(),
            reason: e.to_string(),
        })
    })?;
    Ok(Json(export))
}
