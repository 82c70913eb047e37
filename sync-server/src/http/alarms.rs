//! `POST /api/v1/sites/{site}/alarms/{event_id}/acknowledge`: the control room acknowledges a
//! panic alarm, as the authenticated user (`auth::acting_operator`); a user covering the site.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use patrol_core::EventId;
use patrol_core::event::format_time_ms;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{AuthUser, acting_operator};
use super::error::{AppError, ErrorBody};
use super::extract::{MAX_CONTROL_JSON_BODY_BYTES, SlugId, json_body, site_and};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;
use crate::store::AlarmAckRecord;

pub(super) fn routes() -> Vec<Endpoint> {
    vec![endpoint(
        Verb::Post,
        "/api/v1/sites/{site}/alarms/{event}/acknowledge",
        acknowledge_alarm,
        MAX_CONTROL_JSON_BODY_BYTES,
    )]
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The acting operator; if given, must be the authenticated user's name.
    by: Option<String>,
}

/// An alarm acknowledgement as the API serves it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmAckView {
    site_id: String,
    event_id: String,
    /// The device that raised the alarm.
    device_id: String,
    by: String,
    at: String,
}

impl From<AlarmAckRecord> for AlarmAckView {
    fn from(ack: AlarmAckRecord) -> Self {
        AlarmAckView {
            site_id: ack.site.to_string(),
            event_id: ack.event.to_string(),
            device_id: ack.device.to_string(),
            by: ack.by,
            at: format_time_ms(ack.at_ms),
        }
    }
}

/// `POST /api/v1/sites/{site}/alarms/{event_id}/acknowledge`: records the acknowledgement of a
/// panic alarm (404 `unknown_alarm` unless the site's feed has that event, of kind `panic`).
/// Idempotent: the first acknowledgement stands and every call answers it.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/alarms/{event}/acknowledge",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        ("event" = String, Path, format = Uuid, description = "The panic event's id (UUID)"),
    ),
    request_body(content = AckBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The acknowledgement (the first one stands)", body = AlarmAckView),
        (status = 400, description = "`invalid_json`, `invalid_operator`, `invalid_site_id`, `invalid_event_id`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover the site, or `by` names someone else", body = ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_alarm`", body = ErrorBody),
        (status = 413, description = "The body is over the limit (4 MiB)", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
pub async fn acknowledge_alarm(
    operator: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AlarmAckView>, AppError> {
    let (site, event) = site_and::<EventId>(path, "invalid_event_id", "event id")?;
    operator.can_read(&site)?;
    let body: AckBody = json_body(&headers, body)?;
    let by = acting_operator(&operator, body.by)?;
    let ack = state
        .store
        .acknowledge_alarm(site, event, by, now_ms())
        .await?;
    Ok(Json(ack.into()))
}
