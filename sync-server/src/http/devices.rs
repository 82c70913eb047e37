//! A site's devices: `GET /api/v1/sites/{site}/devices` (enrollment, revocation, last sync,
//! pending count, clock skew; a user covering the site) and
//! `POST /api/v1/sites/{site}/devices/{device}/revoke` (an administrator of the site).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use patrol_core::event::format_time_ms;
use patrol_core::{DeviceId, SiteId};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AuthUser;
use super::error::{AppError, ErrorBody};
use super::extract::{MAX_JSON_BODY_BYTES, SlugId, site_from_path};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/devices",
            devices,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Post,
            "/api/v1/sites/{site}/devices/{device}/revoke",
            revoke_device,
            MAX_JSON_BODY_BYTES,
        ),
    ]
}

/// A device as the control room sees it: its enrollment (absent for a device that synced
/// before enrollment existed) and its last sync (absent until its first).
#[derive(Debug, Default, Serialize, ToSchema)]
struct DeviceView {
    device_id: String,
    enrolled_at: Option<String>,
    revoked_at: Option<String>,
    first_seen: Option<String>,
    last_sync_at: Option<String>,
    pending_events: u64,
    clock_skew_ms: Option<i64>,
    /// The ed25519 key (hex) the device registered at enrollment, which its shift logs'
    /// signatures verify against; absent for a device enrolled before keys existed.
    public_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DevicesView {
    site_id: String,
    devices: Vec<DeviceView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/devices",
    tag = "feed",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
    ),
    responses(
        (status = 200, description = "The site's devices", body = DevicesView),
        (status = 400, description = "`invalid_site_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn devices(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DevicesView>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let (Some(synced), Some(enrolled)) = (
        state.store.devices(site.clone()).await?,
        state.store.device_credentials(site.clone()).await?,
    ) else {
        return Err(AppError::UnknownSite(site.to_string()));
    };
    let mut views: BTreeMap<DeviceId, DeviceView> = BTreeMap::new();
    for c in enrolled {
        let view = views.entry(c.device).or_default();
        view.enrolled_at = Some(format_time_ms(c.enrolled_at_ms));
        view.revoked_at = c.revoked_at_ms.map(format_time_ms);
        view.public_key = c.public_key.map(|k| k.to_string());
    }
    for d in synced {
        let view = views.entry(d.device).or_default();
        view.first_seen = Some(format_time_ms(d.first_seen_ms));
        view.last_sync_at = Some(format_time_ms(d.last_sync_at_ms));
        view.pending_events = d.pending_events;
        view.clock_skew_ms = Some(d.clock_skew_ms);
    }
    Ok(Json(DevicesView {
        site_id: site.to_string(),
        devices: views
            .into_iter()
            .map(|(id, view)| DeviceView {
                device_id: id.to_string(),
                ..view
            })
            .collect(),
    }))
}

/// A revoked device (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct RevokedDeviceView {
    site: String,
    device_id: String,
    enrolled_at: String,
    revoked_at: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/devices/{device}/revoke",
    tag = "administration",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("device" = String, Path, format = Uuid, description = "Device id (UUID)"),
    ),
    responses(
        (status = 200, description = "The revoked device", body = RevokedDeviceView),
        (status = 400, description = "`invalid_site_id`, `invalid_device_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = ErrorBody),
        (status = 404, description = "`unknown_device`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn revoke_device(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Path((site, device)) =
        path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let site =
        SiteId::new(site).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    user.administers(&site)?;
    let device: DeviceId = device.parse().map_err(|e: patrol_core::ValidationError| {
        AppError::bad_request("invalid_device_id", e.to_string())
    })?;
    let Some(revoked) = state
        .store
        .revoke_device(site.clone(), device, now_ms())
        .await?
    else {
        return Err(AppError::UnknownDevice {
            site: site.to_string(),
            device: device.to_string(),
        });
    };
    tracing::info!(%site, %device, by = %user.0.name, "revoked a device");
    Ok(Json(serde_json::json!({
        "site": site.as_str(),
        "device_id": device.to_string(),
        "enrolled_at": format_time_ms(revoked.enrolled_at_ms),
        "revoked_at": revoked.revoked_at_ms.map(format_time_ms),
    })))
}
