//! The control room's JSON API beyond the feed: incidents (list, state, actions), the site
//! configuration (read, replace with a new version) and panic alarm acknowledgements. Shapes
//! are documented in `docs/protocol.md`.
//!
//! Every body is JSON (`Content-Type: application/json`); bad input gets a 4xx with the usual
//! error body and changes nothing. Every call needs the token of a user covering the site
//! ([`AuthUser`]); replacing the configuration needs an administrator of the site. The operator
//! acting on an incident or an alarm is the authenticated user ([`acting_operator`]).

use std::fmt::Write as _;
use std::str::FromStr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use patrol_core::event::format_time_ms;
use patrol_core::incident::{IncidentAction, IncidentStatus, MAX_NAME_LEN};
use patrol_core::siteconfig::{Checkpoint, PostOrder, SiteConfig, Tour};
use patrol_core::{EventId, GuardId, IncidentId, Severity, SiteId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{AppState, check_media_type};
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::now_ms;
use crate::store::{AlarmAckRecord, IncidentQuery, OperatorAction, StoredConfig};

/// Incidents per list when `limit` is not given.
pub const DEFAULT_INCIDENT_LIMIT: u32 = 100;
/// Largest incident list.
pub const MAX_INCIDENT_LIMIT: u32 = 1_000;
/// Largest JSON body of a control-room call (a site configuration is the largest).
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

const JSON: &str = "application/json";

/// The operator acting on a request: the authenticated user, by name. A body may still name
/// them (`by`, as before authentication), but only as themselves.
fn acting_operator(user: &AuthUser, by: Option<String>) -> Result<String, AppError> {
    let name = &user.0.name;
    if name.len() > MAX_NAME_LEN {
        return Err(AppError::bad_request(
            "invalid_operator",
            format!("user names over {MAX_NAME_LEN} bytes cannot act on incidents"),
        ));
    }
    match by {
        Some(by) if &by != name => Err(AppError::Forbidden(format!(
            "user {name} may not act as {by:?}"
        ))),
        _ => Ok(name.clone()),
    }
}

/// Parses a JSON body, refusing other content types (415) and bodies that do not fit `T` (400,
/// with serde's words: which field, where).
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AppError> {
    check_media_type(headers, JSON)?;
    let body = body.map_err(|r| crate::api::body_error(r, MAX_JSON_BODY))?;
    serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, JSON)], body).into_response()
}

fn site_and<T: FromStr>(
    path: Result<Path<(String, String)>, PathRejection>,
    code: &'static str,
    what: &str,
) -> Result<(SiteId, T), AppError>
where
    T::Err: std::fmt::Display,
{
    let Path((site, id)) =
        path.map_err(|e| AppError::bad_request("invalid_path", e.body_text()))?;
    let site =
        SiteId::new(site).map_err(|e| AppError::bad_request("invalid_site_id", e.to_string()))?;
    let id = id
        .parse::<T>()
        .map_err(|e| AppError::bad_request(code, format!("bad {what} {id:?}: {e}")))?;
    Ok((site, id))
}

/// Kept as text so that a bad value gets our message, not the extractor's.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentParams {
    /// Only incidents in this status: open, acknowledged, dispatched, resolved or closed.
    status: Option<String>,
    /// Incidents per list, 1 to 1000; 100 when absent.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

fn parse_status(s: &str) -> Result<IncidentStatus, AppError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
        AppError::bad_request(
            "invalid_query",
            format!(
                "status must be one of open, acknowledged, dispatched, resolved, closed; got {s:?}"
            ),
        )
    })
}

fn parse_incident_params(params: IncidentParams) -> Result<IncidentQuery, AppError> {
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(parse_status(s)?),
    };
    let limit = match params.limit.as_deref() {
        None | Some("") => DEFAULT_INCIDENT_LIMIT,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_INCIDENT_LIMIT).contains(&n) => n,
            _ => {
                return Err(AppError::bad_request(
                    "invalid_query",
                    format!("limit must be an integer from 1 to {MAX_INCIDENT_LIMIT}, got {s:?}"),
                ));
            }
        },
    };
    Ok(IncidentQuery { status, limit })
}

/// A list of incidents (documentation only: the handler writes it from the stored JSON text).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct IncidentList {
    site_id: String,
    incidents: Vec<IncidentState>,
    /// Whether more incidents match than were listed.
    more: bool,
}

/// An incident's state: status, severity, assignee, notes, history (docs/protocol.md; written by
/// `patrol_core::incident`, documentation only).
#[derive(Debug, ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub struct IncidentState(serde_json::Value);

/// `GET /api/v1/sites/{site}/incidents?status=<status>&limit=<n>`:
/// `{"site_id":..,"incidents":[<state>..],"more":bool}`, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/incidents",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
        IncidentParams,
    ),
    responses(
        (status = 200, description = "The site's incidents, newest first", body = IncidentList),
        (status = 400, description = "`invalid_query`, `invalid_site_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
pub async fn list_incidents(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<IncidentParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let site = crate::api::site_from_path(path)?;
    user.can_read(&site)?;
    let Query(params) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let query = parse_incident_params(params)?;
    let list = state.store.incidents(site.clone(), query).await?;
    // Assembled from the stored JSON text, as the feed is.
    let site_json = serde_json::to_string(site.as_str()).map_err(AppError::internal)?;
    let size: usize = list.incidents.iter().map(|s| s.len() + 1).sum();
    let mut body = String::with_capacity(size + site_json.len() + 48);
    body.push_str("{\"site_id\":");
    body.push_str(&site_json);
    body.push_str(",\"incidents\":[");
    for (i, incident) in list.incidents.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(incident);
    }
    // Writing to a String cannot fail.
    let _ = write!(body, "],\"more\":{}}}", list.more);
    Ok(json_text(body))
}

/// `GET /api/v1/sites/{site}/incidents/{id}`: the incident's state.
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/incidents/{incident}",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
        ("incident" = String, Path, description = "Incident id"),
    ),
    responses(
        (status = 200, description = "The incident's state", body = IncidentState),
        (status = 400, description = "`invalid_site_id`, `invalid_incident_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_incident`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
pub async fn get_incident(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, AppError> {
    let (site, incident) = site_and::<IncidentId>(path, "invalid_incident_id", "incident id")?;
    user.can_read(&site)?;
    Ok(json_text(state.store.incident(site, incident).await?))
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The body of an incident action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// acknowledge, dispatch, resolve, close, reopen, assign, set_severity or add_note.
    action: String,
    /// For `assign`: a guard id, or `null` to unassign.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    to: Option<Option<String>>,
    /// For `set_severity`.
    severity: Option<String>,
    /// For `add_note`.
    text: Option<String>,
    /// The acting operator; if given, must be the authenticated user's name.
    by: Option<String>,
}

const ACTIONS: &str =
    "acknowledge, dispatch, resolve, close, reopen, assign, set_severity, add_note";

/// The core's action a body asks for. A field the action does not use is refused rather than
/// ignored: it is most likely a mistake.
fn parse_action(body: &ActionBody) -> Result<IncidentAction, AppError> {
    let bad = |message: String| AppError::bad_request("invalid_action", message);
    let name = body.action.as_str();
    let fields = [
        ("to", body.to.is_some()),
        ("severity", body.severity.is_some()),
        ("text", body.text.is_some()),
    ];
    let uses = match name {
        "acknowledge" | "dispatch" | "resolve" | "close" | "reopen" => "",
        "assign" => "to",
        "set_severity" => "severity",
        "add_note" => "text",
        other => {
            return Err(bad(format!("unknown action {other:?}; one of {ACTIONS}")));
        }
    };
    if let Some((field, _)) = fields.iter().find(|(f, given)| *given && *f != uses) {
        return Err(bad(format!("{name} does not take \"{field}\"")));
    }
    Ok(match name {
        "acknowledge" => IncidentAction::Acknowledge,
        "dispatch" => IncidentAction::Dispatch,
        "resolve" => IncidentAction::Resolve,
        "close" => IncidentAction::Close,
        "reopen" => IncidentAction::Reopen,
        "assign" => match &body.to {
            None => {
                return Err(bad(
                    "assign needs \"to\": a guard id, or null to unassign".into()
                ));
            }
            Some(None) => IncidentAction::Assign(None),
            // A guard id, so that the assignee's phone can be found at its sync.
            Some(Some(to)) => IncidentAction::Assign(Some(
                GuardId::new(to.as_str())
                    .map_err(|e| bad(format!("\"to\" must be a guard id: {e}")))?
                    .to_string(),
            )),
        },
        "set_severity" => {
            let severity = body
                .severity
                .as_deref()
                .ok_or_else(|| bad("set_severity needs \"severity\"".into()))?;
            IncidentAction::SetSeverity(Severity::from_str(severity).map_err(|_| {
                bad(format!(
                    "severity must be one of low, medium, high, critical; got {severity:?}"
                ))
            })?)
        }
        _ => IncidentAction::AddNote(
            body.text
                .clone()
                .ok_or_else(|| bad("add_note needs \"text\"".into()))?,
        ),
    })
}

/// `POST /api/v1/sites/{site}/incidents/{id}/actions`: applies the action and answers the new
/// state; 409 `action_not_allowed` if the status rules refuse it.
#[utoipa::path(
    post,
    path = "/api/v1/sites/{site}/incidents/{incident}/actions",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
        ("incident" = String, Path, description = "Incident id"),
    ),
    request_body(content = ActionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The incident's new state", body = IncidentState),
        (status = 400, description = "`invalid_json`, `invalid_action`, `invalid_operator`, `invalid_site_id`, `invalid_incident_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover the site, or `by` names someone else", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_incident`", body = crate::openapi::ErrorBody),
        (status = 409, description = "`action_not_allowed`: the status rules refuse the action", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit (4 MiB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
pub async fn act_on_incident(
    operator: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let (site, incident) = site_and::<IncidentId>(path, "invalid_incident_id", "incident id")?;
    operator.can_read(&site)?;
    let body: ActionBody = json_body(&headers, body)?;
    let action = parse_action(&body)?;
    let user = acting_operator(&operator, body.by)?;
    let new_state = state
        .store
        .act_on_incident(OperatorAction {
            site,
            incident,
            user,
            action,
            at_ms: now_ms(),
        })
        .await?;
    Ok(json_text(new_state))
}

/// A site configuration as the API serves it: [`SiteConfig`]'s fields and when the version was
/// stored (`null` for the empty version 0).
#[derive(Debug, Serialize)]
pub struct ConfigView {
    #[serde(flatten)]
    config: SiteConfig,
    created_at: Option<String>,
}

impl From<StoredConfig> for ConfigView {
    fn from(stored: StoredConfig) -> Self {
        ConfigView {
            config: stored.config,
            created_at: stored.created_at_ms.map(format_time_ms),
        }
    }
}

/// A site configuration as served, with when its version was stored; the element shapes are in
/// docs/protocol.md. (Documentation only: `ConfigView` flattens the core's `SiteConfig`.)
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct ConfigDoc {
    site: String,
    /// 0 (empty) until the first write.
    version: u64,
    /// Each: `id`, `name`, `tags` (NFC tag ids), `location` (`lat`, `lon`), `radius_m`.
    #[schema(value_type = Vec<Object>)]
    checkpoints: Vec<serde_json::Value>,
    /// Each: `id`, `name`, ordered `checkpoints`, time `windows` (`start_ms`, `end_ms`),
    /// `grace_min`.
    #[schema(value_type = Vec<Object>)]
    tours: Vec<serde_json::Value>,
    /// Each: `id`, `title`, `text`.
    #[schema(value_type = Vec<Object>)]
    post_orders: Vec<serde_json::Value>,
    /// When this version was stored (RFC 3339); `null` for version 0.
    created_at: Option<String>,
}

/// `GET /api/v1/sites/{site}/config`: the latest configuration (version 0, empty, if none).
#[utoipa::path(
    get,
    path = "/api/v1/sites/{site}/config",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
    ),
    responses(
        (status = 200, description = "The configuration in force", body = ConfigDoc),
        (status = 400, description = "`invalid_site_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover this site or action", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
pub async fn get_config(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ConfigView>, AppError> {
    let site = crate::api::site_from_path(path)?;
    user.can_read(&site)?;
    Ok(Json(state.store.site_config(site).await?.into()))
}

/// The body of a configuration write: the whole new configuration and the version it was made
/// from (0 for the first).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    /// As in `ConfigDoc`.
    #[schema(value_type = Vec<Object>)]
    checkpoints: Vec<Checkpoint>,
    #[schema(value_type = Vec<Object>)]
    tours: Vec<Tour>,
    #[schema(value_type = Vec<Object>)]
    post_orders: Vec<PostOrder>,
    /// The version this one was made from; the new one is `base_version + 1`.
    base_version: u64,
}

/// `PUT /api/v1/sites/{site}/config`: stores the configuration as version `base_version + 1`;
/// 409 `stale_config` if `base_version` is not the latest (another write came first), 400
/// `invalid_config` if it is not coherent.
#[utoipa::path(
    put,
    path = "/api/v1/sites/{site}/config",
    tag = "control room",
    security(("user_token" = [])),
    params(
        ("site" = String, Path, description = "Site id"),
    ),
    request_body(content = ConfigBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The stored configuration", body = ConfigDoc),
        (status = 400, description = "`invalid_json`, `invalid_config`, `invalid_site_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not an administrator of the site", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`", body = crate::openapi::ErrorBody),
        (status = 409, description = "`stale_config`: `base_version` is not the latest", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit (4 MiB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
    )
)]
pub async fn put_config(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ConfigView>, AppError> {
    let site = crate::api::site_from_path(path)?;
    user.administers(&site)?;
    let body: ConfigBody = json_body(&headers, body)?;
    let config = SiteConfig {
        site,
        version: body.base_version.saturating_add(1),
        checkpoints: body.checkpoints,
        tours: body.tours,
        post_orders: body.post_orders,
    };
    config
        .validate()
        .map_err(|e| AppError::bad_request("invalid_config", e.to_string()))?;
    let stored = state
        .store
        .put_site_config(config, body.base_version, now_ms())
        .await?;
    Ok(Json(stored.into()))
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
        ("site" = String, Path, description = "Site id"),
        ("event" = String, Path, description = "The panic event's id"),
    ),
    request_body(content = AckBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The acknowledgement (the first one stands)", body = AlarmAckView),
        (status = 400, description = "`invalid_json`, `invalid_operator`, `invalid_site_id`, `invalid_event_id`", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, unknown or revoked token (`WWW-Authenticate: Bearer`)", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token does not cover the site, or `by` names someone else", body = crate::openapi::ErrorBody),
        (status = 404, description = "`unknown_site`, `unknown_alarm`", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over the limit (4 MiB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "The body is not `application/json`", body = crate::openapi::ErrorBody),
        (status = 500, description = "The server failed; details are in its log", body = crate::openapi::ErrorBody),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> ActionBody {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn actions_parse_and_refuse_what_they_do_not_use() {
        use serde_json::json;
        assert_eq!(
            parse_action(&body(json!({"action": "acknowledge", "by": "a"}))).ok(),
            Some(IncidentAction::Acknowledge)
        );
        assert_eq!(
            parse_action(&body(json!({"action": "assign", "to": "guard-2"}))).ok(),
            Some(IncidentAction::Assign(Some("guard-2".into())))
        );
        assert_eq!(
            parse_action(&body(json!({"action": "assign", "to": null}))).ok(),
            Some(IncidentAction::Assign(None))
        );
        assert_eq!(
            parse_action(&body(
                json!({"action": "set_severity", "severity": "critical"})
            ))
            .ok(),
            Some(IncidentAction::SetSeverity(Severity::Critical))
        );
        for bad in [
            json!({"action": "fly"}),
            json!({"action": "assign"}),
            json!({"action": "assign", "to": "guard 2"}),
            json!({"action": "acknowledge", "text": "x"}),
            json!({"action": "set_severity", "severity": "huge"}),
            json!({"action": "add_note"}),
            json!({"action": "add_note", "text": "x", "to": null}),
        ] {
            assert!(
                matches!(
                    parse_action(&body(bad.clone())),
                    Err(AppError::BadRequest {
                        code: "invalid_action",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(
            serde_json::from_value::<ActionBody>(json!({"action": "close", "note": 1})).is_err()
        );
    }

    #[test]
    fn the_operator_acting_is_the_authenticated_user() {
        let user = AuthUser(crate::store::User {
            id: "u".into(),
            name: "anna".into(),
            role: crate::store::Role::Operator,
            scope: crate::store::Scope::AllSites,
            created_at_ms: 0,
            created_by: None,
            revoked_at_ms: None,
        });
        for by in [None, Some("anna".to_owned())] {
            assert_eq!(acting_operator(&user, by).ok().as_deref(), Some("anna"));
        }
        assert!(matches!(
            acting_operator(&user, Some("bob".into())),
            Err(AppError::Forbidden(_))
        ));
    }

    #[test]
    fn incident_params_default_and_reject_bad_values() {
        let p = |status: Option<&str>, limit: Option<&str>| IncidentParams {
            status: status.map(Into::into),
            limit: limit.map(Into::into),
        };
        let q = parse_incident_params(p(Some("closed"), None)).ok();
        assert_eq!(
            q.map(|q| (q.status, q.limit)),
            Some((Some(IncidentStatus::Closed), DEFAULT_INCIDENT_LIMIT))
        );
        for (s, l) in [
            (Some("gone"), None),
            (None, Some("0")),
            (None, Some("1001")),
        ] {
            assert!(parse_incident_params(p(s, l)).is_err(), "{s:?} {l:?}");
        }
    }
}
