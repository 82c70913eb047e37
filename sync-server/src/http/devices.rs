//! A site's devices: `GET /api/v1/sites/{site}/devices` (enrollment, revocation, last sync,
//! pending count and when it was reported, clock skew, the guard of its latest shift, its open
//! shift, and its gaps: silent since, shift overdue, see [`super::gaps`]; a user covering the
//! site) and
//! `POST /api/v1/sites/{site}/devices/{device}/revoke` (an administrator of the site). And a
//! phone's own credential: `GET /api/v1/devices/me` (whether it is due for rotation) and
//! `POST /api/v1/devices/me/credential` (its next credential), both with its device credential.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use patrol_core::event::format_time_ms;
use patrol_core::{DeviceId, SiteId};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::{AuthDevice, AuthUser};
use super::error::{AppError, ErrorBody};
use super::extract::{MAX_JSON_BODY_BYTES, SlugId, site_from_path};
use super::gaps::{device_gap, thresholds};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::credentials::{Secret, TokenKind, rotation_due};
use crate::now_ms;
use crate::store::DeviceCredential;

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
        endpoint(
            Verb::Get,
            "/api/v1/devices/me",
            this_device,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Post,
            "/api/v1/devices/me/credential",
            rotate_credential,
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
    /// The events the phone said it still held undelivered at its last sync.
    pending_events: u64,
    /// When it said so: the server's receive time of that sync (its last); null before its
    /// first sync.
    pending_reported_at: Option<String>,
    clock_skew_ms: Option<i64>,
    /// The guard of the device's most recent shift the server holds a log of (the one the phone
    /// started last); null until its first shift log arrives.
    #[schema(value_type = Option<SlugId>, inline)]
    guard: Option<String>,
    /// The device's open shift: its most recent one, whose end has not reached the server; null
    /// off shift.
    open_shift: Option<OpenShiftView>,
    /// Set while the device is on shift (`open_shift`) and has not synced for longer than the
    /// site's no-contact threshold (`no_contact_after_secs`): its last contact, "no contact
    /// since". Null otherwise.
    silent_since: Option<String>,
    /// Whether its open shift started longer ago than the site's expected shift length
    /// (`shift_overdue_after_secs`) and has not ended.
    overdue: bool,
    /// The ed25519 key (hex) the device registered at enrollment, which its shift logs'
    /// signatures verify against; absent for a device enrolled before keys existed.
    public_key: Option<String>,
}

/// A device's open shift.
#[derive(Debug, Serialize, ToSchema)]
struct OpenShiftView {
    #[schema(format = Uuid)]
    shift_id: String,
    /// The device's time of its `shift_started` event; null until that event arrives.
    started_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DevicesView {
    site_id: String,
    /// The server time the silences and overdue shifts were worked out at.
    as_of: String,
    /// A device on shift without a sync for longer than this is silent: the site's
    /// `no_contact_after_min` (its rules), unless the server overrides it.
    no_contact_after_secs: u64,
    /// A shift open for longer than this is overdue: the site's `shift_overdue_after_hours`,
    /// unless the server overrides it.
    shift_overdue_after_secs: u64,
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
    let limits = thresholds(&state, &site).await?;
    let now = now_ms();
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
        view.pending_reported_at = Some(format_time_ms(d.last_sync_at_ms));
        view.clock_skew_ms = Some(d.clock_skew_ms);
        let gap = device_gap(&d, &limits, now);
        view.silent_since = gap.silent_since_ms.map(format_time_ms);
        view.overdue = gap.overdue;
        view.open_shift = d.open_shift().map(|s| OpenShiftView {
            shift_id: s.shift.to_string(),
            started_at: s.started_at_ms.map(format_time_ms),
        });
        view.guard = d.guard.map(|g| g.to_string());
    }
    Ok(Json(DevicesView {
        site_id: site.to_string(),
        as_of: format_time_ms(now),
        no_contact_after_secs: limits.no_contact_after.as_secs(),
        shift_overdue_after_secs: limits.shift_overdue_after.as_secs(),
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
    state.feed.credentials_changed();
    tracing::info!(%site, %device, by = %user.0.name, "revoked a device");
    Ok(Json(serde_json::json!({
        "site": site.as_str(),
        "device_id": device.to_string(),
        "enrolled_at": format_time_ms(revoked.enrolled_at_ms),
        "revoked_at": revoked.revoked_at_ms.map(format_time_ms),
    })))
}

/// The device a credential belongs to, as the phone sees it (documentation only: the handler
/// builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct ThisDeviceView {
    site: String,
    device_id: String,
    enrolled_at: String,
    /// When the credential presented was issued (at enrollment or by a rotation).
    credential_issued_at: String,
    /// Whether the credential is older than the server's `--device-credential-max-age-days`:
    /// the phone should rotate it (`POST /api/v1/devices/me/credential`).
    credential_rotation_due: bool,
}

fn this_device_json(state: &AppState, d: &DeviceCredential) -> serde_json::Value {
    serde_json::json!({
        "site": d.site.as_str(),
        "device_id": d.device.to_string(),
        "enrolled_at": format_time_ms(d.enrolled_at_ms),
        "credential_issued_at": format_time_ms(d.credential_issued_at_ms),
        "credential_rotation_due": rotation_due(
            d.credential_issued_at_ms,
            now_ms(),
            state.config.device_credential_max_age_ms
        ),
    })
}

/// The device whose credential the request presents. A phone calls it with a credential it just
/// received from a rotation: the first use makes it the device's credential, and the old one
/// stops working.
#[utoipa::path(
    get,
    path = "/api/v1/devices/me",
    tag = "sync",
    security(("device_credential" = [])),
    responses(
        (status = 200, description = "The device and its credential's age", body = ThisDeviceView),
        (status = 401, description = "Missing, unknown or revoked device credential", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn this_device(
    AuthDevice(device): AuthDevice,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(this_device_json(&state, &device)))
}

/// A device's next credential (documentation only: the handler builds it as JSON).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct NextCredentialView {
    /// The next credential (`pd_…`), shown only here.
    credential: String,
    issued_at: String,
}

/// Issues the device its next credential. The one presented keeps working until the next one is
/// used for the first time, so an answer lost on the way changes nothing: the phone asks again
/// (which replaces the unused one) or goes on with the old credential. The phone stores the new
/// one durably before it uses it, and keeps the old one until the new one has worked.
#[utoipa::path(
    post,
    path = "/api/v1/devices/me/credential",
    tag = "sync",
    security(("device_credential" = [])),
    responses(
        (status = 200, description = "The next credential, shown once", body = NextCredentialView),
        (status = 401, description = "Missing, unknown or revoked device credential", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn rotate_credential(
    AuthDevice(device): AuthDevice,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    let next = Secret::generate(TokenKind::Device).map_err(AppError::internal)?;
    let now = now_ms();
    state
        .store
        .stage_device_credential(device.site.clone(), device.device, next.hash(), now)
        .await?
        .ok_or_else(|| AppError::UnknownDevice {
            site: device.site.to_string(),
            device: device.device.to_string(),
        })?;
    tracing::info!(site = %device.site, device = %device.device, "issued a device its next credential");
    Ok(Json(serde_json::json!({
        "credential": next.expose(),
        "issued_at": format_time_ms(now),
    })))
}
