//! A site's panic alarms, for a user covering the site: `GET /api/v1/sites/{site}/alarms` lists
//! them (raised, received, acknowledged; `open=true` for those not yet acknowledged), and
//! `POST /api/v1/sites/{site}/alarms/{event_id}/acknowledge` acknowledges one, as the
//! authenticated user (`auth::acting_operator`); the first acknowledgement is announced on the
//! site's live streams at once ([`super::alarm_watch`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use patrol_core::event::format_time_ms;
use patrol_core::{EventId, SiteId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{AuthUser, acting_operator};
use super::error::{AppError, ErrorBody};
use super::extract::{
    MAX_CONTROL_JSON_BODY_BYTES, MAX_JSON_BODY_BYTES, SlugId, json_body, query_bool, query_params,
    site_and, site_from_path,
};
use super::state::AppState;
use super::{Endpoint, Verb, endpoint};
use crate::now_ms;
use crate::store::check_ins::CheckInTimerView;
use crate::store::{AlarmAckRecord, MAX_PANIC_ALARMS, PanicAlarm};

pub(super) fn routes() -> Vec<Endpoint> {
    vec![
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/alarms",
            list_alarms,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Get,
            "/api/v1/sites/{site}/check-ins",
            list_check_ins,
            MAX_JSON_BODY_BYTES,
        ),
        endpoint(
            Verb::Post,
            "/api/v1/sites/{site}/alarms/{event}/acknowledge",
            acknowledge_alarm,
            MAX_CONTROL_JSON_BODY_BYTES,
        ),
    ]
}

/// A panic alarm as the alarms view shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AlarmView {
    #[schema(format = Uuid)]
    event_id: String,
    #[schema(format = Uuid)]
    device_id: String,
    #[schema(value_type = SlugId, inline)]
    guard: String,
    /// The phone's own time of the panic.
    raised_at: String,
    /// That time corrected by the phone's measured clock offset.
    raised_at_corrected: String,
    /// When the server received it.
    received_at: String,
    /// Who acknowledged it, and when; both null while it is open.
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    /// Not acknowledged yet.
    open: bool,
    /// When the server escalated it, nobody having acknowledged it within the site's
    /// `alarm_escalation_after_secs` of its receipt; null if it was not.
    escalated_at: Option<String>,
}

impl From<PanicAlarm> for AlarmView {
    fn from(alarm: PanicAlarm) -> Self {
        let (by, at) = alarm.acknowledged.unzip();
        AlarmView {
            event_id: alarm.event.to_string(),
            device_id: alarm.device.to_string(),
            guard: alarm.guard,
            raised_at: format_time_ms(alarm.raised_at_ms),
            raised_at_corrected: format_time_ms(alarm.corrected_ms),
            received_at: format_time_ms(alarm.received_at_ms),
            open: by.is_none(),
            acknowledged_by: by,
            acknowledged_at: at.map(format_time_ms),
            escalated_at: alarm.escalated_at_ms.map(format_time_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmsView {
    site_id: String,
    /// The latest first, at most 1,000.
    alarms: Vec<AlarmView>,
}

/// Kept as text so that a bad value gets our message. Any other parameter is refused.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AlarmParams {
    /// `true`: only alarms not yet acknowledged.
    #[param(value_type = Option<bool>)]
    open: Option<String>,
}

/// The site's panic alarms, the latest first: when each was raised (the phone's time, and
/// corrected), received, and acknowledged, and by whom.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/alarms",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = SlugId, Path, description = "Site id", example = "site-1"),
        AlarmParams,
    ),
    responses(
        (status = 200, description = "The site's panic alarms, the latest first (at most 1,000)", body = AlarmsView),
        (status = 400, description = "A bad or unknown query parameter, or a bad site id (`invalid_query`, `invalid_site_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn list_alarms(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<AlarmParams>, QueryRejection>,
) -> Result<Json<AlarmsView>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let params = query_params(query)?;
    let open_only = query_bool("open", &params.open)?.unwrap_or(false);
    let Some(alarms) = state
        .store
        .panic_alarms(site.clone(), open_only, MAX_PANIC_ALARMS)
        .await?
    else {
        return Err(AppError::UnknownSite(site.to_string()));
    };
    Ok(Json(AlarmsView {
        site_id: site.to_string(),
        alarms: alarms.into_iter().map(AlarmView::from).collect(),
    }))
}

/// A lone worker's check-in timer running on an open shift, as the server knows it from the
/// phone's synced events (times corrected by its clock offset).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CheckInView {
    site_id: String,
    #[schema(format = Uuid)]
    shift_id: String,
    #[schema(format = Uuid)]
    device_id: String,
    #[schema(value_type = SlugId, inline)]
    guard: String,
    /// Minutes allowed between check-ins.
    every_min: u32,
    /// When the timer started or the guard last checked in.
    since: String,
    /// When the next check-in is due.
    due_at: String,
    /// No check-in reached the server by `due_at` and 2 minutes' grace: the control room
    /// should call the guard.
    overdue: bool,
}

impl CheckInView {
    pub fn of(site: &SiteId, timer: &CheckInTimerView) -> Self {
        CheckInView {
            site_id: site.to_string(),
            shift_id: timer.shift.to_string(),
            device_id: timer.device.to_string(),
            guard: timer.guard.clone(),
            every_min: timer.every_min,
            since: format_time_ms(timer.since_ms),
            due_at: format_time_ms(timer.due_ms),
            overdue: timer.overdue,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckInsView {
    site_id: String,
    /// The timers running on the site's open shifts, by shift.
    check_ins: Vec<CheckInView>,
}

/// The lone-worker check-in timers running on the site's open shifts: when each guard's next
/// check-in is due, and whether it is overdue.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/check-ins",
    tag = "control room",
    security(("user_token" = [])),
    params(("site" = SlugId, Path, description = "Site id", example = "site-1")),
    responses(
        (status = 200, description = "The check-in timers running on the site's open shifts", body = CheckInsView),
        (status = 400, description = "A bad site id (`invalid_site_id`)", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "The token does not cover this site", body = ErrorBody),
        (status = 404, description = "`unknown_site`", body = ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = ErrorBody),
    )
)]
async fn list_check_ins(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CheckInsView>, AppError> {
    let site = site_from_path(path)?;
    user.can_read(&site)?;
    let Some(timers) = state.store.check_in_timers(site.clone(), now_ms()).await? else {
        return Err(AppError::UnknownSite(site.to_string()));
    };
    Ok(Json(CheckInsView {
        check_ins: timers.iter().map(|t| CheckInView::of(&site, t)).collect(),
        site_id: site.to_string(),
    }))
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
    let acknowledged = state
        .store
        .acknowledge_alarm(site, event, by, now_ms())
        .await?;
    if let Some(change) = acknowledged.change {
        let alarm = &change.alarm;
        state.metrics.observe_panic_acknowledged(
            alarm.received_at_ms - alarm.corrected_ms,
            acknowledged.ack.at_ms - alarm.received_at_ms,
        );
        super::alarm_watch::announce_own(&state, change);
    }
    Ok(Json(acknowledged.ack.into()))
}
